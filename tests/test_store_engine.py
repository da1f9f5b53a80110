# amaranth: UnusedElaboratable=no
"""The RTL mapping store (rtl/store: engine and block-RAM memory) against its structure
model (sim/store_model.py), answer by answer, in the Amaranth simulator.

Every answer (status, FIND's record, UNMAP's count) and the live count after it must be
the model's. The random runs mix MAPs of every shape (single pages, aligned runs, ranges
straddling a large power of two, huge ranges), UNMAPs (exact, covering many, sticking
out, wide enough to sweep), FINDs, domain deaths and idle gaps in which the engine reaps;
a small store makes NOMEM and reaping-for-room common. ``VIOMMU_RANDOM_SCALE`` scales them.
"""

import os
import random

import pytest

from viommu.rtl.store.layouts import StoreParams, StoreStatus
from viommu.rtl.store.top import Store
from viommu.sim.store_bench import run_ops
from viommu.sim.store_model import MappingStore


SCALE = float(os.environ.get("VIOMMU_RANDOM_SCALE", "1"))


def _params(capacity=32, page_bits=20, slots=4):
    return StoreParams(capacity=capacity, page_bits=page_bits, slots=slots,
                       phys_page_bits=20)


def test_directed():
    ops = [("map", 0, 5, 5, 100, 3), ("find", 0, 5), ("find", 0, 6),
           ("map", 0, 4, 7, 1, 3),                       # overlaps 5
           ("map", 0, 8, 15, 7, 5),                      # level 3, read + mmio
           ("map", 1, 5, 5, 9, 2),                       # same page, other domain
           ("find", 0, 9), ("find", 1, 5),
           ("unmap", 0, 9, 9),                           # 8..15 sticks out
           ("unmap", 0, 0, 7),                           # removes 5 only
           ("find", 0, 5), ("find", 1, 5),
           ("unmap", 0, 0, (1 << 20) - 1),               # a sweep: removes 8..15
           ("find", 0, 9),
           ("kill", 1), ("find", 1, 5), ("map", 1, 5, 5, 3, 3), ("find", 1, 5),
           ("unmap", 1, 5, 5, True, False),              # starts inside page 5: RANGE
           ("unmap", 1, 5, 5, False, True),              # ends inside it: RANGE
           ("unmap", 1, 4, 6, True, True)]               # holds page 5 whole: OK
    got = run_ops(_params(), ops)
    assert [g[0][0] for g in got] == [
        StoreStatus.OK, StoreStatus.OK, StoreStatus.ABSENT, StoreStatus.REFUSED,
        StoreStatus.OK, StoreStatus.OK, StoreStatus.OK, StoreStatus.OK,
        StoreStatus.REFUSED, StoreStatus.OK, StoreStatus.ABSENT, StoreStatus.OK,
        StoreStatus.OK, StoreStatus.ABSENT, StoreStatus.OK, StoreStatus.ABSENT,
        StoreStatus.OK, StoreStatus.OK, StoreStatus.REFUSED, StoreStatus.REFUSED,
        StoreStatus.OK]
    assert got[-1][0] == (StoreStatus.OK, 1)
    assert got[9][0] == (StoreStatus.OK, 1) and got[12][0] == (StoreStatus.OK, 1)
    assert got[6][0][1] == (8, 15, 7, 5)


def _random_range(rng, pages, page_bits):
    r = rng.random()
    if r < 0.55:
        n = rng.choice([1, 1, 1, 2, 3, 4, 8])
        base = rng.randrange(pages) & ~((1 << (n - 1).bit_length()) - 1)
        return base, base + n - 1
    if r < 0.8:
        base = rng.randrange(pages)
        return base, base + rng.randrange(12)
    if r < 0.95:
        k = rng.randrange(3, 12)
        mid = (rng.randrange(pages) >> k << k) | (1 << (k - 1))
        return mid - rng.randrange(1, 4), mid + rng.randrange(3)
    start = rng.randrange(1 << (page_bits - 1))
    return start, min(start + rng.randrange(1 << (page_bits - 2)), (1 << page_bits) - 1)


def _random_ops(seed, n, *, slots, pages, page_bits, kill_rate=0.02):
    rng = random.Random(seed)
    ops, maps = [], []
    for _ in range(n):
        slot = rng.randrange(slots)
        r = rng.random()
        if r < 0.45:
            s, e = _random_range(rng, pages, page_bits)
            ops.append(("map", slot, s, e, rng.randrange(1 << 20), rng.randrange(8)))
            maps.append((slot, s, e))
        elif r < 0.7:
            if maps and rng.random() < 0.6:
                sl, s, e = rng.choice(maps)
                ops.append(("unmap", sl, s, e))
            else:
                s, e = _random_range(rng, pages, page_bits)
                if rng.random() < 0.2:
                    e = min(s + rng.randrange(4 * pages), (1 << page_bits) - 1)
                if rng.random() < 0.2:
                    # byte bounds inside the first or last page
                    ops.append(("unmap", slot, s, e, rng.random() < 0.5,
                                rng.random() < 0.5))
                else:
                    ops.append(("unmap", slot, s, e))
        elif r < 0.95:
            if maps and rng.random() < 0.5:
                sl, s, e = rng.choice(maps)
                ops.append(("find", sl, rng.randint(s, e)))
            else:
                ops.append(("find", slot, rng.randrange(pages)))
        elif r < 0.95 + kill_rate:
            ops.append(("kill", slot))
        else:
            ops.append(("reap", rng.randrange(1, 40)))
    return ops


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_random_small_store(seed):
    """32 records, 64 heads: NOMEM, reaping for room, sweeps (ranges of 32 pages or more)."""
    p = _params()
    run_ops(p, _random_ops(seed, int(1500 * SCALE), slots=4, pages=256, page_bits=20))


def test_random_larger_store():
    """1,024 records filled to several hundred live mappings over 2 domains."""
    p = _params(capacity=1024, slots=2)
    rng = random.Random(9)
    fill = []
    for i in range(600):
        s = rng.randrange(1 << 14)
        fill.append(("map", i % 2, s, s + rng.choice([0, 0, 1, 3]), i, 3))
    ops = fill + _random_ops(10, int(1500 * SCALE), slots=2, pages=1 << 14, page_bits=20,
                             kill_rate=0.002)
    out = run_ops(p, ops)
    assert sum(o[0][0] == StoreStatus.OK for o in out[:600]) >= 550   # few collide


def test_nomem_only_when_full_and_stale_records_make_room():
    p = _params(capacity=16, slots=2)
    ops = [("map", i % 2, 10 * i, 10 * i, i, 3) for i in range(16)]
    ops += [("map", 0, 500, 500, 0, 3),                  # full: NOMEM
            ("kill", 1),                                 # 8 stale records
            ("map", 0, 500, 500, 0, 3),                  # reaped to make room: OK
            ("find", 0, 500), ("find", 1, 10)]
    out = run_ops(p, ops)
    assert out[16][0][0] == StoreStatus.NOMEM
    assert out[18][0][0] == StoreStatus.OK
    assert out[20][0][0] == StoreStatus.ABSENT


def test_generation_wrap_waits_for_the_reaper():
    """A slot that dies 300 times back to back, a record stale from each life: its
    generation wraps, and no dead record ever answers a FIND."""
    p = _params(capacity=512, slots=2)
    ops = []
    for i in range(300):
        ops += [("map", 1, i, i, i, 3), ("kill", 1), ("find", 1, i)]
    ops += [("find", 1, page) for page in range(0, 300, 7)]
    out = run_ops(p, ops)
    assert all(o[0][0] == StoreStatus.ABSENT for o, op in zip(out, ops) if op[0] == "find")


def test_costs_do_not_grow_with_the_store():
    """MAP of a page, FIND and UNMAP of one mapping take the same cycles at 10 and at 900
    live single-page mappings of the domain (consecutive pages: chains of one, as the
    hash folds consecutive blocks onto consecutive heads)."""
    p = _params(capacity=1024, slots=2)

    def costs(n):
        ops = [("map", 0, i, i, i, 3) for i in range(n)]
        ops += [("map", 0, 1000, 1000, 0, 3), ("find", 0, 1000), ("unmap", 0, 1000, 1000)]
        return [c for _, _, c in run_ops(p, ops)[-3:]]

    assert costs(10) == costs(900)
    # the figures docs/mapping-store.md gives for block RAM
    assert costs(10) == [18, 9, 13]


def test_params_checked():
    with pytest.raises(ValueError, match="capacity"):
        StoreParams(capacity=0)
    with pytest.raises(ValueError, match="memory"):
        Store(_params(), memory="sram")
    with pytest.raises(TypeError, match="StoreParams"):
        Store(32)


@pytest.mark.parametrize("latency,stall", [(1, 0.0), (6, 0.3)])
def test_random_external_store(latency, stall):
    """The same answers with the store in external memory (DMAStoreMemory behind a DMA
    port) whatever the memory's latency and stalls."""
    run_ops(_params(), _random_ops(7, int(400 * SCALE), slots=4, pages=256, page_bits=20),
            memory="dma", read_latency=latency, stall=stall)


def test_external_store_errors_are_reported():
    """A bus error on the store's region raises ``error``."""
    from amaranth.sim import Simulator
    from viommu.sim.store_bench import DMAStore
    from viommu.sim.dma_mem import DMAMemory
    from viommu.rtl.store.dma_memory import region_size
    p = _params()
    dut = DMAStore(p, 0x1000)
    ext = DMAMemory(region_size(p), base=0x1000)
    ext.add_error(0x1000 + 32 * 32, 0x1000 + region_size(p))     # the heads
    seen = []

    async def bench(ctx):
        for _ in range(400):
            await ctx.tick()
        seen.append(ctx.get(dut.error))

    async def serve(ctx):
        await ext.run(ctx, dut.dma)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.add_testbench(serve, background=True)
    sim.run()
    assert seen == [1]


def test_external_heads_cleared_in_bursts():
    """After a reset the heads of a store in external memory are cleared in 4 KiB bursts:
    4,096 heads (16 KiB, 2,048 beats of 64 bits) are cleared in little more than 2,048
    cycles behind a slave that never stalls, every burst with its wlast on its last beat
    and every byte written NULL (the 65,536-mapping default: 33,218 cycles)."""
    from amaranth.sim import Simulator
    from viommu.rtl.store.top import Store
    from viommu.rtl.store.dma_memory import RECORD_BYTES
    sp = StoreParams(capacity=4096, page_bits=20, slots=4)
    base = 1 << 32
    dut = Store(sp, memory="axi", base=base)
    heads = base + RECORD_BYTES * sp.capacity
    written = {}
    out = {}

    async def tb(ctx):
        bus = dut.m_axi
        ctx.set(bus.awready, 1)
        ctx.set(bus.wready, 1)
        bursts, beat, bq, cycle = [], 0, [], 0
        while not ctx.get(dut.ready):
            if ctx.get(bus.awvalid):
                bursts.append((ctx.get(bus.awaddr), ctx.get(bus.awlen)))
            if ctx.get(bus.wvalid):
                addr, length = bursts[0]
                assert ctx.get(bus.wlast) == (beat == length), (cycle, beat, length)
                assert ctx.get(bus.wstrb) == 0xff
                written[addr + 8 * beat] = ctx.get(bus.wdata)
                beat += 1
                if beat > length:
                    bursts.pop(0)
                    beat = 0
                    bq.append(cycle + 3)
            ctx.set(bus.bvalid, bool(bq) and bq[0] <= cycle)
            if bq and bq[0] <= cycle and ctx.get(bus.bready):
                bq.pop(0)
            await ctx.tick()
            cycle += 1
            assert cycle < 10000, "the heads were not cleared"
        out["cycles"] = cycle

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    null = sp.null | sp.null << 32
    assert sorted(written) == [heads + 8 * k for k in range(sp.n_heads // 2)]
    assert set(written.values()) == {null}
    assert 2048 <= out["cycles"] <= 2150, out
