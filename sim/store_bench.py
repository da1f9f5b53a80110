"""Drive the RTL mapping store (``rtl/store``) in the Amaranth simulator, with the
structure model (``sim/store_model.py``) as the oracle of every answer.

:func:`run_ops` plays a list of operations, one at a time, and returns for each the RTL's
answer, the model's answer and the cycles the RTL took from the operation's acceptance to
its result.
"""

from amaranth.hdl import Module
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from viommu.rtl.bus.dma import DMASignature
from viommu.rtl.store.layouts import StoreOp, StoreStatus, op_layout, result_layout
from viommu.rtl.store.engine import StoreEngine
from viommu.rtl.store.dma_memory import DMAStoreMemory, region_size
from viommu.rtl.store.top import Store
from .store_model import MappingStore, StoreStatus as ModelStatus
from .dma_mem import DMAMemory


class DMAStore(wiring.Component):
    """The store engine over :class:`DMAStoreMemory`, its DMA port left open for a
    :class:`~.dma_mem.DMAMemory` (external memory with a chosen latency and stalls)."""

    def __init__(self, params, base):
        self._p, self._base = params, base
        super().__init__({
            "op":     In(stream.Signature(op_layout(params))),
            "result": Out(stream.Signature(result_layout(params))),
            "live":   Out(params.ptr_bits),
            "ready":  Out(1),
            "error":  Out(1),
            "dma":    Out(DMASignature(width=8, addr_width=64)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = eng = StoreEngine(self._p)
        m.submodules.memory = mem = DMAStoreMemory(self._p, base=self._base)
        wiring.connect(m, eng.mem, mem.bus)
        wiring.connect(m, wiring.flipped(self.op), eng.op)
        wiring.connect(m, eng.result, wiring.flipped(self.result))
        wiring.connect(m, mem.dma, wiring.flipped(self.dma))
        m.d.comb += [self.live.eq(eng.live), self.ready.eq(eng.ready),
                     self.error.eq(mem.error)]
        return m


__all__ = ["run_ops", "model_answer", "rtl_answer"]

_FROM_MODEL = {ModelStatus.OK: StoreStatus.OK, ModelStatus.OVERLAP: StoreStatus.REFUSED,
               ModelStatus.RANGE: StoreStatus.REFUSED, ModelStatus.NOMEM: StoreStatus.NOMEM}


def model_answer(model, op):
    """Apply ``op`` (a tuple, see :func:`run_ops`) to the model: ``(status, extra)`` where
    extra is FIND's ``(start, end, phys, flags)`` or UNMAP's count removed."""
    kind = op[0]
    if kind == "find":
        rec, _ = model.find(op[1], op[2])
        if rec is None:
            return StoreStatus.ABSENT, None
        return StoreStatus.OK, (rec.start, rec.end, rec.phys, rec.flags)
    if kind == "map":
        _, slot, start, end, phys, flags = op
        st, _ = model.map(slot, start, end, phys, flags)
        return _FROM_MODEL[st], None
    if kind == "unmap":
        (st, removed), _ = model.unmap(op[1], op[2], op[3], *op[4:])
        return _FROM_MODEL[st], removed if st == ModelStatus.OK else 0
    if kind == "kill":
        model.kill_domain(op[1])
        return StoreStatus.OK, None
    if kind == "reap":
        return None, None
    raise ValueError(f"unknown op {op!r}")


def run_ops(params, ops, *, model=None, check=True, memory="bram", read_latency=1,
            stall=0.0, base=0x8000_0000):
    """Play ``ops`` on a block-RAM :class:`Store` of ``params``. Each op is one of
    ``("find", slot, page)``, ``("map", slot, start, end, phys, flags)``,
    ``("unmap", slot, start, end[, start_partial, end_partial])``, ``("kill", slot)`` or
    ``("reap", cycles)`` (idle
    cycles in which the engine reaps). Returns ``[(rtl, model, cycles), ...]``; with
    ``check`` every answer, and the live count after it, must equal the model's.
    ``memory="dma"``: the store in external memory at ``base`` behind a DMA port with
    ``read_latency`` cycles and random ``stall``s (a :class:`DMAStore`)."""
    if memory == "dma":
        dut = DMAStore(params, base)
        ext = DMAMemory(region_size(params), base=base, read_latency=read_latency,
                        write_latency=read_latency, stall=stall, seed=1)
    else:
        dut = Store(params)
    if model is None:
        model = MappingStore(capacity=params.capacity, page_bits=params.page_bits,
                             slots=params.slots)
    out = []
    error_seen = []

    async def bench(ctx):
        while not ctx.get(dut.ready):
            await ctx.tick()
        for op in ops:
            kind = op[0]
            if kind == "reap":
                # idle cycles: the model reaps whole chains, the RTL one chain per visit;
                # only the final contents are compared (below)
                await ctx.tick().repeat(op[1])
                continue
            pay = {"op": {"find": StoreOp.FIND, "map": StoreOp.MAP, "unmap": StoreOp.UNMAP,
                          "kill": StoreOp.KILL}[kind], "slot": op[1]}
            if kind == "find":
                pay.update(start=op[2], end=op[2])
            elif kind in ("map", "unmap"):
                pay.update(start=op[2], end=op[3])
            if kind == "unmap" and len(op) > 4:
                pay.update(start_partial=op[4], end_partial=op[5])
            if kind == "map":
                pay.update(phys=op[4], read=op[5] & 1, write=op[5] >> 1 & 1,
                           mmio=op[5] >> 2 & 1)
            ctx.set(dut.op.payload, pay)
            ctx.set(dut.op.valid, 1)
            await ctx.tick().until(dut.op.ready)
            ctx.set(dut.op.valid, 0)
            ctx.set(dut.result.ready, 1)
            cycles = 1
            while not ctx.get(dut.result.valid):
                await ctx.tick()
                cycles += 1
            res = ctx.get(dut.result.payload)
            await ctx.tick()
            ctx.set(dut.result.ready, 0)
            status = StoreStatus(res.status)
            if kind == "find":
                r = res.record
                extra = ((r.start, r.end, r.phys, r.read | r.write << 1 | r.mmio << 2)
                         if status == StoreStatus.OK else None)
            elif kind == "unmap":
                extra = res.removed if status == StoreStatus.OK else 0
            else:
                extra = None
            want = model_answer(model, op)
            out.append(((status, extra), want, cycles))
            if memory == "dma" and ctx.get(dut.error):
                error_seen.append(len(out))
            if check:
                assert (status, extra) == want, (len(out) - 1, op, (status, extra), want)
                assert ctx.get(dut.live) == model.live, (len(out) - 1, op)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    if memory == "dma":
        async def serve(ctx):
            await ext.run(ctx, dut.dma)
        sim.add_testbench(serve, background=True)
    sim.run()
    if memory == "dma":
        assert not error_seen, "the store's memory answered an error"
    return out


def read_store(ctx, store):
    """Every live record of a block-RAM :class:`Store` in a running simulation, as
    ``(slot, start, end, phys, flags)`` tuples (page numbers), read by walking its chains
    as the engine would. While it clears its heads after a reset it holds nothing."""
    p = store._p
    mem = store.memory
    if not ctx.get(store.ready):
        return []        # clearing its heads after a reset: it answers nothing yet
    gens = [ctx.get(g) for g in store.engine.generations]
    out = []
    for h in range(p.n_heads):
        i = ctx.get(mem.heads.data[h])
        seen = 0
        while i != p.null:
            body = ctx.get(mem.bodies.data[i])
            if body.gen == gens[body.slot]:
                out.append((body.slot, body.start, body.end, body.phys,
                            body.read | body.write << 1 | body.mmio << 2))
            i = ctx.get(mem.links.data[i])
            seen += 1
            assert seen <= p.capacity, f"chain {h} loops"
    return out
