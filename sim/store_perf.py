"""Play a workload against the mapping store's structure model and a range cache in front
of it, and report what the design costs: accesses and cycles per operation, the peak of
live mappings, the lookup hit rate and the cycles per lookup.

The cache is the CAM of the design (``docs/mapping-store.md``): ``entries`` ranges,
filled on a miss from the store, a MAP's entry installed as it is written
(write-allocate), entries killed by an UNMAP that covers them or their domain's death,
a victim chosen by a clock hand with one reference bit per entry.
"""

from collections import defaultdict

from .store_model import MappingStore, StoreStatus, Cost


__all__ = ["RangeCache", "play", "HIT_LATENCY", "MISS_OVERHEAD"]

#: Cycles from a lookup to its answer when it hits (the lookup port's pipeline).
HIT_LATENCY = 4
#: Cycles a miss adds to the store's own reads: the miss leaving the port, the fill's
#: install, and the lookup's replay through the pipeline.
MISS_OVERHEAD = 3 + HIT_LATENCY


class RangeCache:
    """A fully associative cache of ``entries`` mapping ranges."""

    def __init__(self, entries):
        self.entries = entries
        self.lines = [None] * entries       # (slot, start, end) or None
        self.ref = [False] * entries
        self.hand = 0

    def lookup(self, slot, page):
        for i, line in enumerate(self.lines):
            if line is not None and line[0] == slot and line[1] <= page <= line[2]:
                self.ref[i] = True
                return True
        return False

    def install(self, slot, start, end):
        for i, line in enumerate(self.lines):
            if line is None:
                break
        else:
            while self.ref[self.hand]:
                self.ref[self.hand] = False
                self.hand = (self.hand + 1) % self.entries
            i = self.hand
            self.hand = (self.hand + 1) % self.entries
        self.lines[i] = (slot, start, end)
        self.ref[i] = False

    def kill(self, slot, start=0, end=None):
        for i, line in enumerate(self.lines):
            if (line is not None and line[0] == slot
                    and (end is None or (start <= line[2] and line[1] <= end))):
                self.lines[i] = None


def play(events, *, store=None, capacity=65536, cache_entries=64, read_latency=1,
         oracle=None):
    """Play ``events`` (see :mod:`.linux_workload`). Returns a dict of statistics;
    ``oracle``, if given, is called with each request event and its result."""
    store = store if store is not None else MappingStore(capacity=capacity)
    cache = RangeCache(cache_entries) if cache_entries else None
    n = defaultdict(int)
    costs = defaultdict(Cost)
    cycles = defaultdict(int)
    worst = defaultdict(int)
    removed_total = peak = hits = lookups = lookup_cycles = 0
    for ev in events:
        kind = ev[0]
        if kind == "lookup":
            _, slot, page = ev
            lookups += 1
            if cache is not None and cache.lookup(slot, page):
                hits += 1
                lookup_cycles += 1
                continue
            rec, c = store.find(slot, page)
            cyc = c.cycles(read_latency) + MISS_OVERHEAD
            lookup_cycles += cyc
            n["miss"] += 1
            costs["miss"] += c
            cycles["miss"] += cyc
            worst["miss"] = max(worst["miss"], cyc)
            if rec is not None and cache is not None:
                cache.install(slot, rec.start, rec.end)
            continue
        if kind == "map":
            _, slot, start, end, phys = ev
            st, c = store.map(slot, start, end, phys)
            if st == StoreStatus.OK and cache is not None:
                cache.install(slot, start, end)
            result = st
        elif kind == "unmap":
            _, slot, start, end = ev
            (st, removed), c = store.unmap(slot, start, end)
            if st == StoreStatus.OK and cache is not None:
                cache.kill(slot, start, end)
            removed_total += removed
            result = (st, removed)
        elif kind == "kill":
            _, slot = ev
            c = store.kill_domain(slot)
            if cache is not None:
                cache.kill(slot)
            result = None
        else:
            raise ValueError(f"unknown event {ev!r}")
        if oracle is not None:
            oracle(ev, result)
        cyc = c.cycles(read_latency)
        n[kind] += 1
        costs[kind] += c
        cycles[kind] += cyc
        worst[kind] = max(worst[kind], cyc)
        peak = max(peak, store.live)
    chains = [x for x in store.chain_lengths() if x]
    return {
        "ops": dict(n),
        "accesses": {k: (c.reads + c.writes) / n[k] for k, c in costs.items()},
        "cycles": {k: cycles[k] / n[k] for k in n},
        "worst_cycles": dict(worst),
        "probes": {k: c.probes / n[k] for k, c in costs.items()},
        "peak_live": peak,
        "live": store.live,
        "removed": removed_total,
        "lookups": lookups,
        "hit_rate": hits / lookups if lookups else None,
        "cycles_per_lookup": lookup_cycles / lookups if lookups else None,
        "chain_mean": sum(chains) / len(chains) if chains else 0,
        "chain_max": max(chains, default=0),
        "requests": n["map"] + n["unmap"],
    }
