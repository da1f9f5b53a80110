"""The mapping table: a CAM of IOVA range entries."""

from amaranth.hdl import Module, Signal, Cat
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .layouts import mapping_entry_layout
from .util import priority_encode


__all__ = ["MappingTable"]


class MappingTable(wiring.Component):
    """``entries`` range entries, each ``{valid, dslot, start, end, offset, read, write, mmio}``
    (see :func:`~.layouts.mapping_entry_layout`), held in flip-flops so that every entry
    can be compared in the same cycle.

    The table has one job: hold the entries and answer management queries about all of them
    in parallel. Translation lookups read :attr:`entries` directly (see
    :class:`~.lookup.LookupPort`); the request executor decides what to change.

    Ports
    -----
    entries : Out(ArrayLayout(entry, entries))
        The table's contents, for the lookup ports.
    write_en, write_index, write_entry : In
        Store ``write_entry`` at ``write_index`` at the next clock edge. The slot must be
        invalid (the executor takes it from ``free_index``).
    kill : In(entries)
        Invalidate every entry whose bit is set, at the next clock edge.
    kill_dslot_en, kill_dslot : In
        Invalidate every entry of domain slot ``kill_dslot`` at the next clock edge (a
        domain died with its last endpoint).
    query_x, query_y, query_dslot : In
        A management query. One cycle later, for every entry ``i``,
        ``x_ge_start[i] = query_x >= start[i]``, ``y_le_end[i] = query_y <= end[i]`` and
        ``in_domain[i] = valid[i] & (dslot[i] == query_dslot)`` (all against the contents
        of the cycle the query was presented in). MAP's overlap test and UNMAP's
        overlap/coverage tests are built from these (two comparators per entry).
    free_valid, free_index : Out
        Whether an entry is invalid and the lowest such index. Registered: they reflect
        the contents one cycle ago, so they must not be used in the cycle right after a
        change.

    Every cycle: one write, any number of kills, one query. Query latency: 1 cycle.
    """

    def __init__(self, *, entries, page_bits, dslot_bits):
        if entries < 1:
            raise ValueError(f"entries must be at least 1, not {entries}")
        self._n = entries
        self._entry = mapping_entry_layout(page_bits, dslot_bits)
        super().__init__({
            "entries":       Out(data.ArrayLayout(self._entry, entries)),
            "write_en":      In(1),
            "write_index":   In(range(entries)),
            "write_entry":   In(self._entry),
            "kill":          In(entries),
            "kill_dslot_en": In(1),
            "kill_dslot":    In(dslot_bits),
            "query_x":       In(page_bits),
            "query_y":       In(page_bits),
            "query_dslot":   In(dslot_bits),
            "x_ge_start":    Out(entries),
            "y_le_end":      Out(entries),
            "in_domain":     Out(entries),
            "free_valid":    Out(1),
            "free_index":    Out(range(entries)),
        })

    def elaborate(self, platform):
        m = Module()
        n = self._n

        for i in range(n):
            entry = self.entries[i]
            killed = (self.kill[i] |
                      (self.kill_dslot_en & (entry.dslot == self.kill_dslot)))
            with m.If(self.write_en & (self.write_index == i)):
                m.d.sync += entry.eq(self.write_entry)
            with m.Elif(killed):
                m.d.sync += entry.valid.eq(0)

            m.d.sync += [
                self.x_ge_start[i].eq(self.query_x >= entry.start),
                self.y_le_end[i].eq(self.query_y <= entry.end),
                self.in_domain[i].eq(entry.valid & (entry.dslot == self.query_dslot)),
            ]

        invalid = Cat(~self.entries[i].valid for i in range(n))
        any_free, index = priority_encode(invalid, n)
        m.d.sync += [
            self.free_valid.eq(any_free),
            self.free_index.eq(index),
        ]
        return m
