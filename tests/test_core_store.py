"""The core with a mapping store (``mappings``): the table is a cache of the store.

Directed tests on the cycle-accurate harness (sim/core_harness.py: every answer byte and
the full state after every request checked against the reference model, the state read
from the store, and every table entry checked to be a copy of a store record), and
randomized differential runs (sim/core_random.py) in which lookups answered ``retry`` are
presented again, oldest first, until decided.

Knobs: ``VIOMMU_RANDOM_SCALE`` (float, default 1) multiplies the random runs' request
counts and the scale test's mapping count (8 reaches 65,536 live mappings);
``VIOMMU_RANDOM_SEED`` offsets the seeds.
"""

import os

import pytest

from viommu.rtl.core.layouts import Status, MapFlag, FaultReason, LookupVia
from viommu.rtl.core.params import CoreParams
from viommu.rtl.core.lookup import LOOKUP_LATENCY
from viommu.sim.core_harness import run, allow, deny, RETRY
from viommu.sim.core_random import run_random
from viommu.sim.model import attach, detach, map_, unmap, ALL_FEATURES


SCALE = float(os.environ.get("VIOMMU_RANDOM_SCALE", "1"))
SEED_OFFSET = int(os.environ.get("VIOMMU_RANDOM_SEED", "0"))

G = 0x1000
RW = MapFlag.READ | MapFlag.WRITE
#: 4 table entries in front of a 64-mapping store, 32-bit IOVAs (a small store hash).
STORE = dict(entries=4, endpoints=4, mappings=64, input_range=(0, 2**32 - 1))


def scaled(n):
    return max(1, round(n * SCALE))


def test_params_validation():
    with pytest.raises(ValueError, match="mappings must be in"):
        CoreParams(mappings=(1 << 20) + 1)
    with pytest.raises(ValueError, match="store must be"):
        CoreParams(mappings=16, store="dram")
    with pytest.raises(ValueError, match="multiple of 32"):
        CoreParams(mappings=16, store="axi", store_base=0x1004)
    with pytest.raises(ValueError, match="passes 2\\*\\*64"):
        CoreParams(mappings=16, store="axi", store_base=(1 << 64) - 64)
    p = CoreParams(mappings=65536, store="axi", store_base=1 << 32)
    # 32 bytes per record and 4 per head: 2.25 MiB
    assert p.store_region == (1 << 32, (1 << 32) + 32 * 65536 + 4 * 65536 - 1)
    assert p.capacity == 65536 and CoreParams().capacity == 64
    assert CoreParams(mappings=16).store_region is None        # block RAM: no region


def test_miss_fill_hit_and_absent():
    """A mapped page misses once (retry, fill), then hits from the table; an unmapped page
    is asked of the store once, then denied from the port's absent registers, until a MAP."""
    async def body(h):
        await h.req(attach(1, 0), expect=Status.OK)
        await h.req(map_(1, 0x10000, 0x10fff, 0x80000000, RW), expect=Status.OK)
        assert await h.present(0, 0x10123) is RETRY
        await h.expect_lookup(0, 0x10123, False, allow(0x80000123))
        await h.expect_lookup(0, 0x10456, True, allow(0x80000456))
        assert h.tries == 1, "the filled entry answers at once"
        # unmapped: asked once, then denied without asking
        assert await h.present(0, 0x20000) is RETRY
        await h.expect_lookup(0, 0x20000, False, deny(FaultReason.MAPPING, False))
        await h.expect_lookup(0, 0x20000, False, deny(FaultReason.MAPPING, False))
        assert h.tries == 1, "the absent register answers at once"
        # a MAP of that page makes it mapped: the absent register is forgotten
        await h.req(map_(1, 0x20000, 0x20fff, 0x90000000, RW), expect=Status.OK)
        await h.expect_lookup(0, 0x20008, False, allow(0x90000008))
        # a read through a write-only mapping is a denial, not a miss
        await h.req(map_(1, 0x30000, 0x30fff, 0xa0000000, MapFlag.WRITE), expect=Status.OK)
        await h.expect_lookup(0, 0x30000, True, allow(0xa0000000))
        for _ in range(3):
            await h.expect_lookup(0, 0x30000, False, deny(FaultReason.MAPPING, False))
            assert h.tries == 1
    h = run(body, **STORE)
    assert h.requests == 4


def test_nomem_only_when_full_and_counters():
    """NOMEM when ``mappings`` mappings are live (not when the table is full); ``live``
    and ``nomem_count`` count them."""
    async def body(h):
        core = h.core
        await h.req(attach(1, 0), expect=Status.OK)
        for k in range(8):
            await h.req(map_(1, k * G, k * G + G - 1, 0x100000 + k * G, RW),
                        expect=Status.OK)
        assert h.ctx.get(core.live) == 8
        await h.req(map_(1, 100 * G, 100 * G + G - 1, 0, RW), expect=Status.NOMEM)
        await h.req(map_(1, 101 * G, 101 * G + G - 1, 0, RW), expect=Status.NOMEM)
        assert h.ctx.get(core.nomem_count) == 2
        for k in range(8):       # all 8 through a 4-entry table
            await h.expect_lookup(0, k * G + 4, False, allow(0x100000 + k * G + 4))
        await h.req(unmap(1, 0, 8 * G - 1), expect=Status.OK)
        assert h.ctx.get(core.live) == 0
        for k in range(8):
            await h.expect_lookup(0, k * G + 4, False, deny(FaultReason.MAPPING, False))
        await h.req(map_(1, 100 * G, 100 * G + G - 1, 0, RW), expect=Status.OK)
    run(body, **dict(STORE, mappings=8))


def test_unmap_all_or_nothing_and_many():
    """UNMAP removes every mapping inside its range from the store and its copies from the
    table, or nothing when one sticks out (RANGE)."""
    async def body(h):
        await h.req(attach(1, 0), expect=Status.OK)
        await h.req(attach(2, 1), expect=Status.OK)
        for k in range(40):
            await h.req(map_(1, k * G, k * G + G - 1, 0x100000 + k * G, RW), expect=Status.OK)
        await h.req(map_(1, 0x100000, 0x13ffff, 0x40000000, RW), expect=Status.OK)
        await h.req(map_(2, 0, 0xfff, 0x2000, RW), expect=Status.OK)     # another domain
        for k in (0, 1, 2, 39):          # cached copies
            await h.lookup(0, k * G)
        await h.req(unmap(1, 0x100000, 0x11ffff), expect=Status.RANGE)     # sticks out
        await h.req(unmap(1, 0x1000, 0x1000 + 38 * G - 1), expect=Status.OK)   # 38 of 40
        for k in (0, 1, 2, 39):
            await h.lookup(0, k * G + 8)
        await h.req(unmap(1, 0, 2**32 - 1), expect=Status.OK)               # the rest
        await h.lookup(1, 0x10)                                              # domain 2 kept
        await h.lookup(0, 0x100000)
    run(body, **dict(STORE, mappings=64))


def test_domain_death_and_slot_reuse():
    """The last endpoint's DETACH kills the domain's mappings at once (store and table); a
    new domain in the same slot starts empty."""
    async def body(h):
        await h.req(attach(7, 0), expect=Status.OK)
        for k in range(30):
            await h.req(map_(7, k * G, k * G + G - 1, 0x500000 + k * G, RW), expect=Status.OK)
        for k in range(4):
            await h.lookup(0, k * G)
        assert h.ctx.get(h.core.live) == 30
        await h.req(detach(7, 0), expect=Status.OK)
        assert h.ctx.get(h.core.live) == 0
        await h.req(attach(8, 0), expect=Status.OK)        # the same slot, a new domain
        for k in range(4):
            await h.lookup(0, k * G)                       # nothing: denied
        await h.req(map_(8, 0, G - 1, 0x7000, RW), expect=Status.OK)
        await h.lookup(0, 0x10)
        # a moving ATTACH kills the old domain too
        await h.req(attach(9, 0), expect=Status.OK)
        await h.lookup(0, 0x10)
        assert h.ctx.get(h.core.live) == 0
    run(body, **STORE)


def test_miss_fill_races_unmap():
    """A fill under way when an UNMAP arrives: the UNMAP waits for the fill (which installs
    the mapping), then removes it from the store and kills the copy, and no lookup
    presented after the UNMAP's response is granted the range. (The race the RISC-V IOMMU's
    walker loses: it has no kill on invalidation.)"""
    async def body(h):
        core, ctx = h.core, h.ctx
        await h.req(attach(1, 0), expect=Status.OK)
        await h.req(map_(1, 0x40000, 0x40fff, 0x60000000, RW), expect=Status.OK)
        installed = []

        def cached():
            return any(t.valid and t.start == 0x40 for t in ctx.get(core.table.tags))

        # present the lookup, then wait until the executor has taken the miss
        h.feed[0].append((0, 0x40010, 0))
        for _ in range(LOOKUP_LATENCY + 2):
            await h.tick()
        assert h.answers[0][-1][3] is RETRY
        assert ctx.get(core.busy) and not cached(), "the fill should be under way"
        # the UNMAP arrives during the fill; watch the table while it is executed
        orig_tick = h.tick

        async def watching_tick():
            installed.append(cached())
            await orig_tick()
        h.tick = watching_tick
        await h.req(unmap(1, 0x40000, 0x40fff), expect=Status.OK)
        h.tick = orig_tick
        assert any(installed), "the fill installed the mapping during the UNMAP's wait"
        assert not cached(), "the UNMAP killed the copy"
        await h.expect_lookup(0, 0x40010, False, deny(FaultReason.MAPPING, False))
    run(body, **STORE)


def test_store_region_protected():
    """With the store in external memory, a MAP onto its region is INVAL, and no access
    let through untranslated (bypass) reaches it. (Checked before the store is asked,
    so this core runs without a memory behind its m_axi_store.)"""
    base = 1 << 31
    params = CoreParams(**dict(STORE, mappings=1024, store="axi", store_base=base))
    lo, hi = params.store_region
    from viommu.sim.model import DeviceModel
    m = DeviceModel(params)
    m.execute(attach(1, 0), 4)
    assert m.execute(map_(1, 0, G - 1, lo & ~(G - 1), RW), 4)[0] == Status.INVAL
    assert m.execute(map_(1, 0, 4 * G - 1, lo - 2 * G, RW), 4)[0] == Status.INVAL
    assert m.execute(map_(1, 0, G - 1, (hi + G) & ~(G - 1), RW), 4)[0] == Status.OK
    m.execute(attach(2, 1, flags=1), 4)                   # a bypass domain
    assert not m.translate(1, lo + 0x40, True).allowed
    assert m.translate(1, hi + 1, True).allowed

    async def body(h):
        await h.req(attach(1, 0), expect=Status.OK)
        await h.req(map_(1, 0, G - 1, lo & ~(G - 1), RW), expect=Status.INVAL)
        await h.req(map_(1, 0, 4 * G - 1, lo - 2 * G, RW), expect=Status.INVAL)
        await h.req(attach(2, 1, flags=1), expect=Status.OK)
        await h.expect_lookup(1, lo + 0x40, True, deny(FaultReason.MAPPING, True))
        await h.expect_lookup(1, hi, False, deny(FaultReason.MAPPING, False))
        await h.expect_lookup(1, hi + 1, False, allow(hi + 1, via=LookupVia.BYPASS))
    run(body, params=params, snapshot=False)


# --- randomized differential runs ------------------------------------------------------------

def check_store_stats(stats, requests, label):
    decided = stats.lookups - stats.retries
    info = (f"{label}: {stats.requests} requests, {stats.lookups} presentations, "
            f"{stats.retries} retries, {stats.allowed} allowed, {stats.cycles} cycles, "
            f"statuses {stats.statuses}")
    print(info)
    assert stats.requests == requests, info
    if requests >= 200:
        assert stats.retries > 0.05 * stats.lookups, info       # misses happen
        assert 0.03 * decided < stats.allowed < 0.97 * decided, info
        assert {Status.OK, Status.INVAL, Status.RANGE, Status.NOENT} <= \
            set(stats.statuses), info


@pytest.mark.parametrize("seed,entries,mappings,ports", [
    (501, 4, 64, 2),       # a small cache, evictions
    (502, 8, 6, 1),        # a store smaller than the table: NOMEM from the store
    (503, 4, 200, 3),      # three ports filling in turn
])
def test_random_with_store(seed, entries, mappings, ports):
    requests = scaled(1200)
    params = CoreParams(entries=entries, endpoints=4, mappings=mappings, lookup_ports=ports,
                        input_range=(0, 2**32 - 1))
    stats = run_random(params, seed=seed + SEED_OFFSET, requests=requests)
    check_store_stats(stats, requests, f"store {mappings} seed {seed}")
    if mappings < 16 and requests >= 200:
        assert Status.NOMEM in stats.statuses


# --- the benchmark's measurements (viommu bench) ---------------------------------------------

def test_store_measurements():
    """The figures `viommu bench` prints for the store: a lone miss decided within a fill's
    cycles (FIND, query, install) and a few presentations; every lookup a hit once the
    table holds the hot set; the engine's costs flat as the store fills."""
    from viommu.sim.perf import measure_store_lookups, measure_store_ops
    params = CoreParams(**dict(STORE, entries=8, mappings=128))
    r = measure_store_lookups(params, hit_rate=1.0, n=40, cold=16)
    assert 15 <= r["miss_latency_lone"] <= 40, r
    assert r["hits"] >= 0.95 and r["lookups_per_cycle"] > 0.5, r
    r = measure_store_lookups(params, hit_rate=0.5, n=40, cold=16)
    assert r["hits"] < 0.9 and r["lookups_per_cycle"] < 0.5, r
    ops = measure_store_ops(params, live=(16, 400), samples=4)
    assert [o["live"] for o in ops] == [16, 400]
    for o in ops:
        assert 10 <= o["map"] <= 40 and 8 <= o["unmap"] <= 30, ops


def test_bench_rejects_bad_store_live(capsys):
    from viommu.cli import main
    with pytest.raises(SystemExit) as e:
        main(["bench", "--no-synth", "--no-engine", "--sizes", "8", "--store-live", "0"])
    assert e.value.code != 0
    assert "--store-live" in capsys.readouterr().err


def test_unsound_record_is_not_installed():
    """A record the store answers is checked before it reaches the table: one whose
    physical range wraps past the top (a corrupted memory, say) is not installed, and the
    access is denied, not granted and not retried forever."""
    async def body(h):
        core, ctx = h.core, h.ctx
        await h.req(attach(1, 0), expect=Status.OK)
        await h.req(map_(1, 0x50000, 0x53fff, 0x7000000, RW), expect=Status.OK)
        mem = core.store.memory
        (i,) = [i for i in range(core.params.mappings)
                if ctx.get(mem.bodies.data[i]).start == 0x50]
        body_ = ctx.get(mem.bodies.data[i])
        top = (1 << core.params.phys_page_bits) - 1
        ctx.set(mem.bodies.data[i], {"slot": body_.slot, "gen": body_.gen,
                                     "level": body_.level, "start": body_.start,
                                     "end": body_.end, "phys": top - 1, "read": 1,
                                     "write": 1, "mmio": 0})
        for _ in range(20):
            got = await h.present(0, 0x51000)
            if got is not RETRY:
                break
        assert got is not RETRY and not got.allowed, got
        assert not any(t.valid for t in ctx.get(core.table.tags))
    run(body, **STORE, snapshot=False)
