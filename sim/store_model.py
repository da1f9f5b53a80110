"""Model of the mapping store's structure: a hash of fork keys with chained records.

This is the *structure* model of ``docs/mapping-store.md``: it holds mappings the way the
hardware store does (records in a pool, chained from a table of heads, found by a hash of
each mapping's fork key), counts every memory access an operation makes, and so gives the
design's costs on a workload before any RTL exists. It is not the oracle: its answers must
equal those of :class:`~sim.model.DeviceModel` (``tests/test_store_model.py`` checks that),
which knows nothing of how mappings are stored.

The fork key
------------
Addresses are page numbers (IOVA >> page_shift). A mapping ``[s, e]`` has the *level*
``k = bit_length(s ^ e)``: the smallest ``k`` such that ``s >> k == e >> k``, i.e. the
smallest aligned block of ``2**k`` pages that holds it. Its key is ``(slot, k, s >> k)``.
Within a domain, no two mappings share a key: a mapping of level ``k >= 1`` contains both
pages either side of the middle of its block (bit ``k - 1`` of ``s`` is 0 and of ``e`` is 1),
and two non-overlapping mappings cannot both contain the same page; at level 0 the key is
the page itself. So every mapping is exactly one record, whatever its size.

* A lookup of page ``a`` probes the key ``(slot, j, a >> j)`` at each level ``j`` the domain
  uses (at most one record can contain ``a``).
* Every mapping of the domain that overlaps ``[s, e]`` and has level ``j`` lies in a block
  ``b`` with ``s >> j <= b <= e >> j``: probing those blocks at every level the domain uses
  finds them all (MAP's overlap test, UNMAP's removal). When that is more probes than a
  sweep of the whole store, the store sweeps instead, so the cost of any range operation
  is bounded by the store's size.

Memory
------
``records``: a pool of ``capacity`` records ``{slot, gen, level, start, end, phys, flags,
next}`` (256 bits each). ``heads``: ``n_heads`` pointers (a power of two at least
``capacity``), each the first record of its chain or ``NULL``. Free records form a list
through ``next``; records above the high-water mark have never been used and need no
initialisation. A domain's death increments its slot's generation: its records become
*stale* at once and a background reaper unlinks them later.
"""

from dataclasses import dataclass

from viommu.rtl.store.layouts import StoreParams, GEN_BITS


__all__ = ["MappingStore", "Cost", "fork_level", "StoreStatus"]


NULL = -1


def fork_level(start, end):
    """The level of mapping ``[start, end]`` (page numbers): the bit length of
    ``start ^ end``."""
    return (start ^ end).bit_length()


class StoreStatus:
    OK = "OK"
    OVERLAP = "OVERLAP"      # MAP: a mapping of the domain overlaps (INVAL)
    NOMEM = "NOMEM"          # MAP: every record holds a live mapping
    RANGE = "RANGE"          # UNMAP: a mapping overlaps the range but is not inside it


@dataclass
class Cost:
    """Memory accesses of one operation. ``dependent`` counts the reads whose address
    depends on an earlier read (a chain step): each waits a full read latency."""
    head_reads: int = 0
    record_reads: int = 0
    head_writes: int = 0
    record_writes: int = 0
    dependent: int = 0
    probes: int = 0
    swept: bool = False

    @property
    def reads(self):
        return self.head_reads + self.record_reads

    @property
    def writes(self):
        return self.head_writes + self.record_writes

    def cycles(self, read_latency):
        """Cycles of the operation on a store with one access per cycle and
        ``read_latency`` cycles from a read's address to its data: every probe starts with
        a head read, every record read depends on the read before it, writes are posted."""
        return self.reads * read_latency + self.writes

    def __iadd__(self, other):
        for f in ("head_reads", "record_reads", "head_writes", "record_writes",
                  "dependent", "probes"):
            setattr(self, f, getattr(self, f) + getattr(other, f))
        self.swept |= other.swept
        return self


@dataclass
class _Record:
    slot: int
    gen: int
    level: int
    start: int
    end: int
    phys: int
    flags: int
    next: int = NULL
    index: int = NULL       # where the record is in the pool (the model's bookkeeping)


class MappingStore:
    """The store: ``capacity`` records, ``n_heads`` chain heads, ``slots`` domain slots.

    Operations return ``(result, Cost)``. ``gen_bits`` is the width of a slot's
    generation: a slot may die ``2**gen_bits - 1`` times before the reaper has to finish a
    pass (the death then waits for it, and the wait is counted in its cost).
    """

    def __init__(self, *, capacity, page_bits=52, slots=8, gen_bits=GEN_BITS):
        self.params = StoreParams(capacity=capacity, page_bits=page_bits, slots=slots)
        self.capacity = capacity
        self.page_bits = page_bits
        self.slots = slots
        self.n_heads = self.params.n_heads
        self.hash_bits = self.params.hash_bits
        self.gen_mod = 1 << gen_bits
        self.reset()

    def reset(self):
        self.records = [None] * self.capacity
        self.heads = [NULL] * self.n_heads
        self.free_head = NULL
        self.hwm = 0                     # records [hwm, capacity) were never used
        self.gen = [0] * self.slots
        self.oldest = [0] * self.slots   # the oldest generation that may still have records
        self.level_count = [[0] * (self.page_bits + 1) for _ in range(self.slots)]
        self.live_per_slot = [0] * self.slots
        self.stale = 0
        self.used = 0                    # live + stale records
        self.nomem_count = 0
        self.reaper_cost = Cost()
        self._reap_head = 0              # the next head the reaper visits
        self._pass_snap = list(self.gen)
        self._pass_started = False

    # --- what the hardware keeps in registers ------------------------------------------

    @property
    def live(self):
        """Live mappings (the read-only register the device exposes)."""
        return sum(self.live_per_slot)

    def levels(self, slot):
        """The levels domain slot ``slot`` uses (a bit mask per slot in the hardware)."""
        return [j for j, c in enumerate(self.level_count[slot]) if c]

    # --- hashing -----------------------------------------------------------------------

    def hash(self, slot, level, block):
        """The head of key ``(slot, level, block)`` (see :meth:`StoreParams.hash`)."""
        return self.params.hash(slot, level, block)

    def _live(self, rec):
        return rec.gen == self.gen[rec.slot]

    # --- probes ------------------------------------------------------------------------

    def _probe(self, slot, level, block, cost):
        """Find the live record of key ``(slot, level, block)``: returns ``(index, prev)``
        (``prev`` is the record before it in its chain, or NULL) or ``(NULL, NULL)``."""
        cost.probes += 1
        cost.head_reads += 1
        prev, i = NULL, self.heads[self.hash(slot, level, block)]
        while i != NULL:
            cost.record_reads += 1
            cost.dependent += 1
            r = self.records[i]
            if (r.slot == slot and r.level == level and r.start >> level == block
                    and self._live(r)):
                return i, prev
            prev, i = i, r.next
        return NULL, NULL

    def find(self, slot, page):
        """Lookup (a cache miss): the live record of ``slot`` that contains ``page``.
        Returns ``(record or None, Cost)``."""
        cost = Cost()
        for j in self.levels(slot):
            i, _ = self._probe(slot, j, page >> j, cost)
            if i != NULL:
                r = self.records[i]
                if r.start <= page <= r.end:
                    return r, cost
        return None, cost

    def _sweep_cost(self):
        return self.n_heads + self.used

    def _range_probes(self, slot, start, end):
        return sum((end >> j) - (start >> j) + 1 for j in self.levels(slot))

    def _overlapping(self, slot, start, end, cost, first_only=False):
        """The live records of ``slot`` overlapping ``[start, end]`` (indices): found by
        probing each block of the range at each level the slot uses, or by a sweep of
        every chain when that is cheaper. ``first_only`` stops at the first."""
        found = []
        if self._range_probes(slot, start, end) <= self._sweep_cost():
            for j in self.levels(slot):
                for b in range(start >> j, (end >> j) + 1):
                    i, _ = self._probe(slot, j, b, cost)
                    if i != NULL:
                        r = self.records[i]
                        if r.start <= end and r.end >= start:
                            found.append(i)
                            if first_only:
                                return found
            return found
        cost.swept = True
        for h in range(self.n_heads):
            for i, r in self._chain(h, cost):
                if (r.slot == slot and self._live(r) and r.start <= end
                        and r.end >= start):
                    found.append(i)
                    if first_only:
                        return found
        return found

    def _chain(self, h, cost):
        """Walk chain ``h``, counting its reads: yields ``(index, record)``; the caller
        may unlink the record it was given (the walk has read its ``next`` already)."""
        cost.head_reads += 1
        i = self.heads[h]
        while i != NULL:
            cost.record_reads += 1
            cost.dependent += 1
            r = self.records[i]
            nxt = r.next
            yield i, r
            i = nxt

    # --- changes -----------------------------------------------------------------------

    def _unlink(self, h, i, cost):
        """Remove record ``i`` from the chain of head ``h`` and put it on the free list.
        The walk that found ``i`` knows the record before it, so finding it here costs
        nothing; the unlink writes that record's ``next`` (or the head)."""
        prev, j = NULL, self.heads[h]
        while j != i:
            prev, j = j, self.records[j].next
        r = self.records[i]
        if prev == NULL:
            self.heads[h] = r.next
            cost.head_writes += 1
        else:
            self.records[prev].next = r.next
            cost.record_writes += 1
        self._free_push(i, cost)
        self.used -= 1

    def _free_push(self, i, cost):
        self.records[i] = _Record(slot=0, gen=0, level=0, start=0, end=0, phys=0, flags=0,
                                  next=self.free_head)
        self.free_head = i
        cost.record_writes += 1

    def _alloc(self, cost):
        if self.free_head != NULL:
            i = self.free_head
            cost.record_reads += 1
            cost.dependent += 1
            self.free_head = self.records[i].next
            return i
        if self.hwm < self.capacity:
            self.hwm += 1
            return self.hwm - 1
        return NULL

    def map(self, slot, start, end, phys, flags=3):
        """MAP ``[start, end] -> phys`` (page numbers) in domain slot ``slot``."""
        cost = Cost()
        if self._overlapping(slot, start, end, cost, first_only=True):
            return StoreStatus.OVERLAP, cost
        if self.used == self.capacity and self.stale:
            self._reap_until_free(cost)
        if self.used == self.capacity:
            self.nomem_count += 1
            return StoreStatus.NOMEM, cost
        i = self._alloc(cost)
        level = fork_level(start, end)
        h = self.hash(slot, level, start >> level)
        cost.head_reads += 1
        self.records[i] = _Record(slot, self.gen[slot], level, start, end, phys, flags,
                                  next=self.heads[h], index=i)
        cost.record_writes += 1
        self.heads[h] = i
        cost.head_writes += 1
        self.used += 1
        self.level_count[slot][level] += 1
        self.live_per_slot[slot] += 1
        return StoreStatus.OK, cost

    def unmap(self, slot, start, end, start_partial=False, end_partial=False):
        """UNMAP ``[start, end]``: RANGE if a mapping overlaps it without being inside it
        (nothing removed), else every mapping inside it removed. Returns
        ``((status, removed), Cost)``. ``start_partial`` / ``end_partial``: the range
        covers its first / last page only in part (an UNMAP's byte bounds)."""
        cost = Cost()
        # Partial overlaps: only a mapping that holds ``start`` or ``end`` can stick out.
        r, c = self.find(slot, start)
        cost += c
        if r is not None and (r.start < start or start_partial):
            return (StoreStatus.RANGE, 0), cost
        if r is not None and r.end >= end:
            # The mapping holding ``start`` reaches ``end``: it is the only one the range
            # overlaps (Linux's case: one UNMAP per MAP). The walk that found it knows
            # the record before it, so it is unlinked at once.
            if r.end > end or end_partial:
                return (StoreStatus.RANGE, 0), cost
            self._remove(slot, r, cost)
            return (StoreStatus.OK, 1), cost
        r, c = self.find(slot, end)
        cost += c
        if r is not None and (r.end > end or end_partial):
            return (StoreStatus.RANGE, 0), cost
        removed = 0
        for i in self._overlapping(slot, start, end, cost):
            self._remove(slot, self.records[i], cost)
            removed += 1
        return (StoreStatus.OK, removed), cost

    def _remove(self, slot, r, cost):
        """Unlink live record ``r`` of ``slot`` and free it."""
        i = r.index
        self.level_count[slot][r.level] -= 1
        self.live_per_slot[slot] -= 1
        self._unlink(self.hash(slot, r.level, r.start >> r.level), i, cost)

    def kill_domain(self, slot):
        """The domain in ``slot`` died with its last endpoint: its records become stale at
        once (O(1)); the reaper frees them later. Returns the Cost of the wait when the
        generation would wrap onto records not yet reaped."""
        cost = Cost()
        new = (self.gen[slot] + 1) % self.gen_mod
        while new == self.oldest[slot] and self.stale:
            self.reap(self.n_heads, cost)
        self.stale += self.live_per_slot[slot]
        self.live_per_slot[slot] = 0
        self.level_count[slot] = [0] * (self.page_bits + 1)
        self.gen[slot] = new
        if not self.stale:
            self.oldest[slot] = new
        return cost

    def reap(self, heads=1, cost=None):
        """The reaper: visit ``heads`` chains, unlinking stale records. A pass over every
        head ends with every generation older than those current at its start gone."""
        cost = self.reaper_cost if cost is None else cost
        for _ in range(heads):
            if not self.stale:
                self.oldest = list(self.gen)
                self._reap_head = 0
                self._pass_started = False
                return cost
            if not self._pass_started:
                self._pass_snap = list(self.gen)
                self._pass_started = True
            h = self._reap_head
            for i, r in list(self._chain(h, cost)):
                if not self._live(r):
                    self._unlink(h, i, cost)
                    self.stale -= 1
            self._reap_head = (h + 1) % self.n_heads
            if self._reap_head == 0:
                self.oldest = list(self._pass_snap)
                self._pass_started = False
        return cost

    def _reap_until_free(self, cost):
        while self.used == self.capacity and self.stale:
            self.reap(1, cost)

    # --- inspection --------------------------------------------------------------------

    def mappings(self, slot):
        """Every live mapping of ``slot`` as sorted ``(start, end, phys, flags)``."""
        out = []
        for h in range(self.n_heads):
            i = self.heads[h]
            while i != NULL:
                r = self.records[i]
                if r.slot == slot and self._live(r):
                    out.append((r.start, r.end, r.phys, r.flags))
                i = r.next
        return sorted(out)

    def chain_lengths(self):
        """The length of every chain (live and stale records)."""
        out = []
        for h in range(self.n_heads):
            n, i = 0, self.heads[h]
            while i != NULL:
                n += 1
                i = self.records[i].next
            out.append(n)
        return out
