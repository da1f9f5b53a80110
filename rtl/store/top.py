"""The mapping store: the engine and its memory."""

from amaranth.hdl import Module
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out

from .layouts import StoreParams, op_layout, result_layout
from .engine import StoreEngine
from .memory import BRAMStoreMemory


__all__ = ["Store"]


class Store(wiring.Component):
    """Every mapping of every domain (``docs/mapping-store.md``): a
    :class:`~.engine.StoreEngine` over its memory.

    Parameters
    ----------
    params : StoreParams
        The store's shape.
    memory : str
        ``"bram"``: the records and heads in block RAM (:class:`~.memory.BRAMStoreMemory`).

    Ports
    -----
    op, result, live, nomem_count, epoch, ready
        Those of :class:`~.engine.StoreEngine`.

    Throughput and latency are the engine's, with the block RAM's one-cycle reads.
    """

    def __init__(self, params, *, memory="bram"):
        if not isinstance(params, StoreParams):
            raise TypeError(f"params must be a StoreParams, not {params!r}")
        if memory != "bram":
            raise ValueError(f"memory must be 'bram', not {memory!r}")
        self._p = params
        self._memory = memory
        super().__init__({
            "op":          In(stream.Signature(op_layout(params))),
            "result":      Out(stream.Signature(result_layout(params))),
            "live":        Out(params.ptr_bits),
            "nomem_count": Out(32),
            "epoch":       Out(16),
            "ready":       Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = eng = StoreEngine(self._p)
        m.submodules.memory = mem = BRAMStoreMemory(self._p)
        wiring.connect(m, eng.mem, mem.bus)
        wiring.connect(m, wiring.flipped(self.op), eng.op)
        wiring.connect(m, eng.result, wiring.flipped(self.result))
        m.d.comb += [self.live.eq(eng.live), self.nomem_count.eq(eng.nomem_count),
                     self.epoch.eq(eng.epoch), self.ready.eq(eng.ready)]
        return m
