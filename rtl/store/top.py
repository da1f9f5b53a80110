"""The mapping store: the engine and its memory."""

from amaranth.hdl import Module, ResetInserter
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out

from .layouts import StoreParams, op_layout, result_layout
from .engine import StoreEngine
from .memory import BRAMStoreMemory
from .dma_memory import DMAStoreMemory, region_size
from ..bus.axi import AXI4DMAMaster, AXI4Signature


__all__ = ["Store"]


class Store(wiring.Component):
    """Every mapping of every domain (``docs/mapping-store.md``): a
    :class:`~.engine.StoreEngine` over its memory.

    Parameters
    ----------
    params : StoreParams
        The store's shape.
    memory : str
        ``"bram"``: the records and heads in block RAM (:class:`~.memory.BRAMStoreMemory`);
        ``"axi"``: in external memory from ``base`` (:func:`~.dma_memory.region_size`
        bytes), through its own AXI4 master (:class:`~.dma_memory.DMAStoreMemory` and
        :class:`~viommu.rtl.bus.axi.AXI4DMAMaster`).
    base : int
        With ``"axi"``: the region's first byte address, a multiple of 32.
    width : int
        With ``"axi"``: bytes per AXI data beat, 8 or 16.

    Ports
    -----
    op, result, live, nomem_count, epoch, ready
        Those of :class:`~.engine.StoreEngine`.
    m_axi : Out(AXI4Signature)
        With ``"axi"``: the store's AXI4 master.
    error : Out(1)
        With ``"axi"``: a store access was answered with a bus error (sticky until
        ``clear``).
    clear : In(1)
        Device reset: the engine (and a block-RAM memory) restart, forgetting every
        mapping; an external memory's bus side is not reset, but finishes the transaction
        under way first (see :class:`~.dma_memory.DMAStoreMemory`). The domain's reset
        resets everything.

    Throughput and latency are the engine's, with the block RAM's one-cycle reads, or
    each external access's latency.
    """

    def __init__(self, params, *, memory="bram", base=None, width=8):
        if not isinstance(params, StoreParams):
            raise TypeError(f"params must be a StoreParams, not {params!r}")
        if memory not in ("bram", "axi"):
            raise ValueError(f"memory must be 'bram' or 'axi', not {memory!r}")
        if memory == "axi" and base is None:
            raise ValueError("an 'axi' store needs its region's base address")
        self._p = params
        self._memory = memory
        #: The engine and the memory (built here so that testbenches can read them).
        self.engine = StoreEngine(params)
        members = {
            "op":          In(stream.Signature(op_layout(params))),
            "result":      Out(stream.Signature(result_layout(params))),
            "live":        Out(params.ptr_bits),
            "nomem_count": Out(32),
            "epoch":       Out(16),
            "ready":       Out(1),
            "clear":       In(1),
        }
        if memory == "bram":
            self.memory = BRAMStoreMemory(params)
        else:
            self.memory = DMAStoreMemory(params, base=base, width=width)
            self.master = AXI4DMAMaster(width=width, addr_width=64)
            #: The region the store uses: ``(first, last)`` byte addresses.
            self.region = (base, base + region_size(params) - 1)
            members.update({
                "m_axi": Out(AXI4Signature(addr_width=64, data_width=8 * width)),
                "error": Out(1),
            })
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        eng, mem = self.engine, self.memory
        m.submodules.engine = ResetInserter(self.clear)(eng)
        wiring.connect(m, eng.mem, mem.bus)
        if self._memory == "bram":
            m.submodules.memory = ResetInserter(self.clear)(mem)
        else:
            m.submodules.memory = mem
            m.d.comb += mem.clear.eq(self.clear)
            m.submodules.master = master = self.master
            wiring.connect(m, mem.dma, master.dma)
            wiring.connect(m, master.bus, wiring.flipped(self.m_axi))
            m.d.comb += self.error.eq(mem.error)
        wiring.connect(m, wiring.flipped(self.op), eng.op)
        wiring.connect(m, eng.result, wiring.flipped(self.result))
        m.d.comb += [self.live.eq(eng.live), self.nomem_count.eq(eng.nomem_count),
                     self.epoch.eq(eng.epoch), self.ready.eq(eng.ready)]
        return m
