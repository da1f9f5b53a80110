"""Drive the RTL mapping store (``rtl/store``) in the Amaranth simulator, with the
structure model (``sim/store_model.py``) as the oracle of every answer.

:func:`run_ops` plays a list of operations, one at a time, and returns for each the RTL's
answer, the model's answer and the cycles the RTL took from the operation's acceptance to
its result.
"""

from amaranth.sim import Simulator

from viommu.rtl.store.layouts import StoreOp, StoreStatus
from viommu.rtl.store.top import Store
from .store_model import MappingStore, StoreStatus as ModelStatus


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
        (st, removed), _ = model.unmap(op[1], op[2], op[3])
        return _FROM_MODEL[st], removed if st == ModelStatus.OK else 0
    if kind == "kill":
        model.kill_domain(op[1])
        return StoreStatus.OK, None
    if kind == "reap":
        return None, None
    raise ValueError(f"unknown op {op!r}")


def run_ops(params, ops, *, model=None, check=True):
    """Play ``ops`` on a block-RAM :class:`Store` of ``params``. Each op is one of
    ``("find", slot, page)``, ``("map", slot, start, end, phys, flags)``,
    ``("unmap", slot, start, end)``, ``("kill", slot)`` or ``("reap", cycles)`` (idle
    cycles in which the engine reaps). Returns ``[(rtl, model, cycles), ...]``; with
    ``check`` every answer, and the live count after it, must equal the model's."""
    dut = Store(params)
    if model is None:
        model = MappingStore(capacity=params.capacity, page_bits=params.page_bits,
                             slots=params.slots)
    out = []

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
            if check:
                assert (status, extra) == want, (len(out) - 1, op, (status, extra), want)
                assert ctx.get(dut.live) == model.live, (len(out) - 1, op)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out
