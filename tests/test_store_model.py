"""Tests of the mapping store's structure model (sim/store_model.py) and of the design
claims docs/mapping-store.md makes from it.

The structure model must give the answers of the semantics every other model gives (MAP
refuses overlaps within a domain, NOMEM only when full, UNMAP all-or-nothing, a domain's
mappings gone with it): a plain interval oracle here, sorted lists and bisection, checks
it op by op in randomized runs with fixed seeds. ``VIOMMU_RANDOM_SCALE`` scales the runs;
the 65,536-mapping run is reached at scale >= 8 (a long run), 10,000 live mappings at 1.
"""

import bisect
import os
import random

import pytest

from viommu.sim.store_model import MappingStore, StoreStatus, fork_level
from viommu.sim.store_perf import play, RangeCache
from viommu.sim.linux_workload import nic_events, nvme_events, split_pow2, IovaAllocator


SCALE = float(os.environ.get("VIOMMU_RANDOM_SCALE", "1"))
PAGE_BITS = 52


class IntervalOracle:
    """Per slot, the live mappings as a sorted list of starts and a dict start -> tuple."""

    def __init__(self, capacity, slots=8):
        self.capacity = capacity
        self.starts = [[] for _ in range(slots)]
        self.maps = [{} for _ in range(slots)]

    @property
    def live(self):
        return sum(len(m) for m in self.maps)

    def _overlapping(self, slot, start, end):
        starts, maps = self.starts[slot], self.maps[slot]
        i = bisect.bisect_right(starts, end)
        out = []
        while i > 0:
            i -= 1
            m = maps[starts[i]]
            if m[1] < start:
                break            # mappings do not overlap: earlier ones end earlier
            out.append(m)
        return out

    def map(self, slot, start, end, phys):
        if self._overlapping(slot, start, end):
            return StoreStatus.OVERLAP
        if self.live >= self.capacity:
            return StoreStatus.NOMEM
        bisect.insort(self.starts[slot], start)
        self.maps[slot][start] = (start, end, phys, 3)
        return StoreStatus.OK

    def unmap(self, slot, start, end):
        ovl = self._overlapping(slot, start, end)
        if any(m[0] < start or m[1] > end for m in ovl):
            return StoreStatus.RANGE, 0
        for m in ovl:
            self.starts[slot].remove(m[0])
            del self.maps[slot][m[0]]
        return StoreStatus.OK, len(ovl)

    def kill(self, slot):
        self.starts[slot], self.maps[slot] = [], {}

    def find(self, slot, page):
        ovl = self._overlapping(slot, page, page)
        return ovl[0] if ovl else None

    def mappings(self, slot):
        return sorted(self.maps[slot].values())


def _random_range(rng, anchor_pages):
    """A range of pages: mostly small and aligned as Linux makes them, some unaligned,
    some straddling a large power-of-two boundary, a few huge."""
    r = rng.random()
    if r < 0.6:
        n = rng.choice([1, 1, 1, 2, 3, 4, 8, 16, 32])
        base = rng.randrange(anchor_pages) & ~((1 << (n - 1).bit_length()) - 1)
        return base, base + n - 1
    if r < 0.85:
        n = rng.randrange(1, 40)
        base = rng.randrange(anchor_pages)
        return base, base + n - 1
    if r < 0.97:
        k = rng.randrange(4, 30)
        mid = (rng.randrange(anchor_pages) >> k << k) | (1 << (k - 1))
        return mid - rng.randrange(1, 5), mid + rng.randrange(0, 4)
    start = rng.randrange(1 << 40)
    return start, start + rng.randrange(1 << 30)


def _differential(seed, *, ops, capacity, target_live, slots=4, gen_bits=8, kills=True,
                  lookups=200, check_every=2000):
    """Random MAP / UNMAP / domain deaths on the store and the oracle, every answer
    compared; returns the peak of live mappings."""
    rng = random.Random(seed)
    store = MappingStore(capacity=capacity, page_bits=PAGE_BITS, slots=slots,
                         gen_bits=gen_bits)
    oracle = IntervalOracle(capacity, slots)
    anchor = max(64 * target_live, 4096)
    peak = 0
    for n in range(ops):
        slot = rng.randrange(slots)
        r = rng.random()
        filling = oracle.live < target_live
        if r < (0.9 if filling else 0.45):
            s, e = _random_range(rng, anchor)
            got, _ = store.map(slot, s, e, rng.randrange(1 << 40))
            assert got == oracle.map(slot, s, e, 0), (n, "map", slot, s, e)
        elif r < 0.99 or not kills:
            kind = rng.random()
            if kind < 0.6 and oracle.maps[slot]:
                m = rng.choice(list(oracle.maps[slot].values()))
                s, e = m[0], m[1]                     # exact, Linux's case
            elif kind < 0.95:
                s, e = _random_range(rng, anchor)
            else:
                s = rng.randrange(anchor)
                e = s + rng.randrange(anchor // 256)
            (got, removed), _ = store.unmap(slot, s, e)
            assert (got, removed) == oracle.unmap(slot, s, e), (n, "unmap", slot, s, e)
        else:
            store.kill_domain(slot)
            oracle.kill(slot)
        if rng.random() < 0.3:
            store.reap(rng.randrange(1, 64))
        assert store.live == oracle.live
        peak = max(peak, store.live)
        if n % check_every == 0:
            for sl in range(slots):
                for _ in range(lookups // slots):
                    page = rng.randrange(anchor)
                    rec, _ = store.find(sl, page)
                    want = oracle.find(sl, page)
                    assert (None if rec is None else (rec.start, rec.end)) == \
                        (None if want is None else want[:2]), (n, sl, page)
    for sl in range(slots):
        assert [m[:2] for m in store.mappings(sl)] == [m[:2] for m in oracle.mappings(sl)]
    return peak, store


def test_fork_keys_are_unique_per_domain():
    """Non-overlapping mappings never share a (level, block) key: the claim that makes
    one record per mapping enough."""
    rng = random.Random(5)
    for _ in range(200):
        taken = IntervalOracle(10 ** 6, 1)
        for _ in range(300):
            s, e = _random_range(rng, 1 << 16)
            taken.map(0, s, e, 0)
        keys = [(fork_level(s, e), s >> fork_level(s, e)) for s, e, _, _ in taken.mappings(0)]
        assert len(keys) == len(set(keys))


def test_fork_level():
    assert fork_level(5, 5) == 0
    assert fork_level(4, 5) == 1
    assert fork_level(3, 4) == 3          # straddles the 8-page boundary's middle
    assert fork_level(0, (1 << 52) - 1) == 52


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_differential_small_store(seed):
    """A 300-record store under churn: NOMEM exactly when full, stale records of dead
    domains reaped to make room, 2-bit generations wrapping onto unreaped records."""
    peak, store = _differential(seed, ops=int(6000 * SCALE), capacity=300, target_live=400,
                                gen_bits=2, check_every=200)
    assert peak == 300
    assert store.nomem_count > 0


def test_differential_10k_live():
    """At least 10,000 live mappings reached, every answer equal to the oracle's."""
    peak, store = _differential(11, ops=int(30000 * SCALE), capacity=12000,
                                target_live=10500, kills=False)
    assert peak >= 10000
    assert max(store.chain_lengths()) <= 8


@pytest.mark.skipif(SCALE < 8, reason="the 65,536-mapping run is a long run "
                                      "(VIOMMU_RANDOM_SCALE >= 8)")
def test_differential_65536_live():
    peak, _ = _differential(12, ops=int(14000 * SCALE), capacity=65536,
                            target_live=65536, kills=False, check_every=20000)
    assert peak == 65536


def _filled(n, slot=0, stride=1, capacity=None):
    store = MappingStore(capacity=capacity or n + 16)
    for i in range(n):
        st, _ = store.map(slot, i * stride, i * stride, i)
        assert st == StoreStatus.OK
    return store


@pytest.mark.parametrize("k", [1, 10, 1000, 4096])
def test_unmap_covering_k(k):
    """One UNMAP covering k of 4,096 single-page mappings removes exactly those; its cost
    grows with the range, not the store."""
    store = _filled(4096)
    (st, removed), cost = store.unmap(0, 100 if k < 4096 else 0, (100 if k < 4096 else 0) + k - 1)
    assert (st, removed) == (StoreStatus.OK, k)
    assert store.live == 4096 - k
    assert cost.reads <= 4 * k + 8 or cost.swept
    assert cost.reads <= 2 * (store.n_heads + 4096)


def test_unmap_everything_over_a_full_store():
    """UNMAP [0, 2**52 - 1] over a full store: a sweep, bounded by the store's size."""
    store = _filled(4096, stride=3)
    (st, removed), cost = store.unmap(0, 0, (1 << 52) - 1)
    assert (st, removed) == (StoreStatus.OK, 4096) and store.live == 0
    assert cost.swept and cost.reads <= store.n_heads + 4096 + 8
    assert store.map(0, 7, 7, 0)[0] == StoreStatus.OK


def test_unmap_partial_changes_nothing():
    store = _filled(1000)
    store.map(0, 5000, 5007, 0)
    before = store.mappings(0)
    assert store.unmap(0, 5001, 6000)[0] == (StoreStatus.RANGE, 0)
    assert store.unmap(0, 0, 5003)[0] == (StoreStatus.RANGE, 0)
    assert store.mappings(0) == before


def test_overlapping_map_against_full_neighbourhood():
    """A MAP overlapping one of 4,095 neighbours is refused, nothing changes, and the
    check costs one probe per level in use plus the range's blocks."""
    store = _filled(4095)
    before = store.live
    st, cost = store.map(0, 2000, 2000, 0)
    assert st == StoreStatus.OVERLAP and store.live == before
    st, cost = store.map(0, 4090, 4200, 0)
    assert st == StoreStatus.OVERLAP and cost.probes <= 111
    st, cost = store.map(0, 1 << 30, (1 << 30) + 15, 0)
    assert st == StoreStatus.OK and cost.probes == 16


def test_domain_death_is_constant_and_reaped_lazily():
    store = _filled(2000, slot=2)
    cost = store.kill_domain(2)
    assert cost.reads == 0 and store.live == 0 and store.stale == 2000
    assert store.find(2, 5)[0] is None
    store.reap(store.n_heads)
    assert store.stale == 0 and store.used == 0
    assert store.mappings(2) == []


def test_generation_wrap_waits_for_the_reaper():
    """With 1-bit generations the second death of a slot before a reaper pass would make
    the first death's records live again: the death waits for the reaper instead."""
    store = MappingStore(capacity=64, gen_bits=1)
    store.map(3, 10, 10, 0)
    store.kill_domain(3)                     # record of gen 0 now stale
    store.map(3, 20, 20, 0)                  # gen 1
    cost = store.kill_domain(3)              # gen would be 0 again
    assert cost.reads > 0 and store.stale == 1
    assert store.find(3, 10)[0] is None and store.find(3, 20)[0] is None


def test_nomem_only_when_full():
    store = MappingStore(capacity=8)
    for i in range(8):
        assert store.map(i % 2, i, i, 0)[0] == StoreStatus.OK
    assert store.map(0, 100, 100, 0)[0] == StoreStatus.NOMEM
    assert store.nomem_count == 1
    store.kill_domain(1)                     # 4 stale records: room without a reaper pass
    assert store.map(0, 100, 100, 0)[0] == StoreStatus.OK


def test_range_cache_kill_and_clock():
    c = RangeCache(2)
    c.install(0, 1, 5)
    c.install(0, 10, 10)
    assert c.lookup(0, 3) and not c.lookup(1, 3)
    c.install(0, 20, 20)                     # evicts the unreferenced entry (10..10)
    assert c.lookup(0, 3) and not c.lookup(0, 10) and c.lookup(0, 20)
    c.kill(0, 4, 4)
    assert not c.lookup(0, 3)


def test_allocator_and_split():
    a = IovaAllocator(limit=1 << 20)
    x = a.alloc(3)
    assert x % 4 == 0
    a.free(x, 3)
    assert a.alloc(4) == x                   # same rounded size: recycled
    assert list(split_pow2(4, 4, 12)) == [(4, 4, 4), (8, 8, 8)]
    assert list(split_pow2(1, 2, 3)) == [(1, 2, 1), (2, 3, 1), (3, 4, 1)]


def test_nic_workload_holds_65536():
    """16 queues x 4,096 one-page receive buffers: all 65,536 live, chains of one."""
    r = play(nic_events(queues=16, ring=4096, completions=int(2000 * SCALE)),
             capacity=65536, cache_entries=0)
    assert r["peak_live"] == 65536 and r["live"] == 65536
    assert r["chain_max"] <= 2
    assert r["cycles"]["unmap"] <= 4 and r["cycles"]["map"] <= 5


def test_page_size_mask_granule_only_sends_fewer_maps():
    """The measurement behind the default page_size_mask: with the granule alone a run is
    one MAP; with every size it is split into aligned power-of-two chunks."""
    g = play(nvme_events(ios=int(300 * SCALE)), capacity=65536, cache_entries=64)
    a = play(nvme_events(ios=int(300 * SCALE), all_sizes=True), capacity=65536,
             cache_entries=64)
    assert g["ops"]["map"] < a["ops"]["map"]
    assert g["peak_live"] < a["peak_live"]
    assert g["hit_rate"] > a["hit_rate"]
