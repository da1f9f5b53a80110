"""Unit tests of the mapping table (rtl/core/mapping_table.py) in Amaranth's simulator.

Checked against the component's documented contract:

* a write stores the entry presented on ``write_entry`` in the cycle before ``write_en``,
  at the next edge; ``kill`` invalidates the masked entries;
  ``kill_dslot`` invalidates exactly the entries of that domain slot;
* a query presented in cycle t is answered in cycle t+2 (``x_ge_start``, ``y_le_end``,
  ``in_domain``; its operands are registered), against the contents of cycle t+1: a write
  or kill in cycle t is seen, one in cycle t+1 is not. The table has no comparators of
  its own: the queries are answered by a lookup port built with ``query=True`` (as the
  core's port 0 is), which the bench attaches to the table's tags, announcing a query in
  every cycle;
* ``free_valid`` / ``free_index`` are the lowest invalid index of the previous cycle's
  contents, and ``free_valid`` is 0 when every entry is valid.

A random test drives every port at once against a cycle-accurate Python model.
"""

import random

import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import data
from amaranth.sim import Simulator

from viommu.rtl.core.layouts import mapping_entry_layout, mapping_tag_layout, mapping_payload_layout
from viommu.rtl.core.lookup import LookupPort
from viommu.rtl.core.mapping_table import MappingTable
from viommu.rtl.core.params import CoreParams


PB = 52                 # page bits of a 4 KiB granule
DSB = 2                 # domain slot bits
MAXP = (1 << PB) - 1
ENTRY = data.Layout.cast(mapping_entry_layout(PB, DSB, PB))
TAG = data.Layout.cast(mapping_tag_layout(PB, DSB))
PAYLOAD = data.Layout.cast(mapping_payload_layout(PB))
TAG_FIELDS = ("valid", "dslot", "start", "end", "read", "write")
PAYLOAD_FIELDS = ("offset", "mmio")
FIELDS = TAG_FIELDS + PAYLOAD_FIELDS


def entry(valid=1, dslot=0, start=0, end=0, offset=0, read=0, write=0, mmio=0):
    return dict(valid=valid, dslot=dslot, start=start, end=end, offset=offset, read=read,
                write=write, mmio=mmio)


def encode(e):
    return ENTRY.const({"tag": {f: e[f] for f in TAG_FIELDS},
                        "payload": {f: e[f] for f in PAYLOAD_FIELDS}}).as_value().value


def decode(tag_bits, payload_bits):
    t, p = TAG.from_bits(tag_bits), PAYLOAD.from_bits(payload_bits)
    out = {f: int(getattr(t, f)) for f in TAG_FIELDS}
    out.update({f: int(getattr(p, f)) for f in PAYLOAD_FIELDS})
    return out


class TableBench:
    """Cycle-by-cycle driver with a reference model of the table's contents."""

    def __init__(self, dut, ctx, n):
        self.dut, self.ctx, self.n = dut, ctx, n
        self.cycle = 0
        self.staged = None      # the entry on write_entry in the cycle just clocked
        self.contents = [entry(valid=0) for _ in range(n)]   # after reset: all zero

    def read_entries(self):
        """Every entry: its tag (flip-flops) and its payload (LUT RAM contents)."""
        raw = self.ctx.get(self.dut.tags.as_value())
        out = []
        for i in range(self.n):
            mem, addr = self.dut.payload_location(i)
            out.append(decode((raw >> (i * TAG.size)) & ((1 << TAG.size) - 1),
                              self.ctx.get(mem.data[addr]).as_value().value))
        return out

    def bits(self, sig):
        v = self.ctx.get(sig)
        return [(v >> i) & 1 for i in range(self.n)]

    async def step(self, write=None, kill=0, kill_dslot=None, query=None, stage=None):
        """Present inputs for one cycle and clock. ``write`` = (index, entry dict);
        ``query`` = (x, y, dslot); ``stage``: the entry to present on ``write_entry`` in
        this cycle, for a write in the next. A write whose entry was not staged in the
        previous step gets a cycle of its own first that only stages it (nothing else
        presented changes in it). Returns the contents seen in this cycle."""
        ctx, dut = self.ctx, self.dut
        if write is not None and self.staged != write[1]:
            ctx.set(dut.write_en, 0)
            ctx.set(dut.write_sel, 0)
            ctx.set(dut.kill, 0)
            ctx.set(dut.kill_dslot_en, 0)
            ctx.set(dut.write_entry.as_value(), encode(write[1]))
            await ctx.tick()
            self.cycle += 1
        ctx.set(dut.write_en, write is not None)
        ctx.set(dut.write_sel, 0 if write is None else 1 << write[0])
        if write is not None:
            ctx.set(dut.write_index, write[0])
        # In this cycle write_entry carries what the next cycle may write; when nothing is
        # staged, a value no test writes, so that a write of the wrong cycle's entry shows.
        junk = entry(valid=0, dslot=3, start=0x5a5a5, end=0xa5a5a, offset=0x33333, mmio=1)
        ctx.set(dut.write_entry.as_value(), encode(stage if stage is not None else junk))
        self.staged = stage
        ctx.set(dut.kill, kill)
        ctx.set(dut.kill_dslot_en, kill_dslot is not None)
        ctx.set(dut.kill_dslot, kill_dslot or 0)
        if query is not None:
            ctx.set(dut.query_x, query[0])
            ctx.set(dut.query_y, query[1])
            ctx.set(dut.query_dslot, query[2])
        now = self.read_entries()
        await ctx.tick()
        self.cycle += 1
        # free_onehot is free_index as a one-hot vector (0 when the table is full)
        free = ctx.get(dut.free_onehot)
        assert free == ((1 << ctx.get(dut.free_index)) if ctx.get(dut.free_valid) else 0)
        return now

    def idle_query(self, x=0, y=0, dslot=0):
        return (x, y, dslot)


_QUERY_PORTS = ("query_x", "query_y", "query_dslot", "x_ge_start", "y_le_end", "in_domain")


class TableWithQueries(Elaboratable):
    """The table and a lookup port whose comparators answer queries about its tags (as
    in the core), the port announcing a query in every cycle. Attributes are the table's,
    and the port's query operands and answers."""

    def __init__(self, n):
        self.table = MappingTable(entries=n, page_bits=PB, dslot_bits=DSB, phys_page_bits=PB)
        params = CoreParams(entries=n, endpoints=1 << DSB)
        assert (params.page_bits, params.phys_page_bits) == (PB, PB)
        self.cam = LookupPort(params, query=True)

    def __getattr__(self, name):
        if name in _QUERY_PORTS:
            return getattr(self.cam, name)
        return getattr(self.__dict__["table"], name)

    def elaborate(self, platform):
        m = Module()
        m.submodules.table = self.table
        m.submodules.cam = self.cam
        m.d.comb += [self.cam.tags.eq(self.table.tags), self.cam.query_next.eq(1)]
        return m


def run(n, body):
    dut = TableWithQueries(n)
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def tb(ctx):
        await ctx.tick()        # the port takes query_next from the cycle after reset
        await body(TableBench(dut, ctx, n))

    sim.add_testbench(tb)
    sim.run()
    return dut


def expected_query(contents, x, y, dslot):
    ge = sum(int(x >= e["start"]) << i for i, e in enumerate(contents))
    le = sum(int(y <= e["end"]) << i for i, e in enumerate(contents))
    dom = sum(int(e["valid"] and e["dslot"] == dslot) << i for i, e in enumerate(contents))
    return ge, le, dom


# --- writes and kills -----------------------------------------------------------------

def test_write_then_read_every_field():
    n = 8
    rng = random.Random(1)
    written = [entry(valid=1, dslot=rng.randrange(4), start=rng.getrandbits(PB),
                     end=rng.getrandbits(PB), offset=rng.getrandbits(PB),
                     read=i & 1, write=(i >> 1) & 1, mmio=(i >> 2) & 1) for i in range(n)]
    written[0].update(start=0, end=MAXP, offset=MAXP)     # extreme values survive

    async def body(tb):
        assert tb.read_entries() == [entry(valid=0)] * n           # reset: empty
        for i in range(n):
            before = await tb.step(write=(i, written[i]))
            # Not visible in the cycle of the write...
            assert before[i]["valid"] == 0
        got = tb.read_entries()
        assert got == written
        # ...and held without further writes.
        for _ in range(3):
            await tb.step()
        assert tb.read_entries() == written

    run(n, body)


def test_write_lands_at_its_index_only():
    n = 5

    async def body(tb):
        for i in range(n):
            await tb.step(write=(i, entry(dslot=1, start=i, end=i + 10, offset=i)))
        await tb.step(kill=0b00100)
        before = tb.read_entries()
        await tb.step(write=(2, entry(dslot=3, start=77, end=88, offset=5, read=1)))
        after = tb.read_entries()
        for i in range(n):
            if i == 2:
                assert after[i] == entry(dslot=3, start=77, end=88, offset=5, read=1)
            else:
                assert after[i] == before[i]

    run(n, body)


def test_write_stores_the_entry_of_the_cycle_before():
    """``write_entry`` is taken a cycle ahead of ``write_en``: the entry presented in the
    write's own cycle is not the one stored (it is the next write's)."""
    n = 2
    a = entry(dslot=1, start=10, end=20, offset=7, read=1)
    b = entry(dslot=2, start=30, end=40, offset=9, write=1, mmio=1)

    async def body(tb):
        await tb.step(stage=a)
        await tb.step(write=(0, a), stage=b)        # stores a, with b on write_entry
        assert tb.read_entries()[0] == a
        await tb.step(write=(1, b))                 # b staged: no staging cycle
        assert tb.read_entries() == [a, b]
        assert tb.cycle == 3

    run(n, body)


def test_kill_mask():
    n = 8

    async def body(tb):
        full = [entry(dslot=i % 4, start=i, end=i, read=1) for i in range(n)]
        for i in range(n):
            await tb.step(write=(i, full[i]))
        await tb.step(kill=0b10100101)
        got = tb.read_entries()
        for i in range(n):
            if 0b10100101 >> i & 1:
                # Invalidated, payload kept: a lookup that matched the entry in the kill
                # cycle reads its payload one cycle later (rtl/core/lookup.py, stage 2).
                assert got[i] == dict(full[i], valid=0), i
            else:
                assert got[i] == full[i], i
        # Killing an already-invalid entry is harmless; kill=0 changes nothing.
        await tb.step(kill=0b00000001)
        await tb.step(kill=0)
        got2 = tb.read_entries()
        assert [e["valid"] for e in got2] == [e["valid"] for e in got]
        # Kill everything.
        await tb.step(kill=(1 << n) - 1)
        assert all(e["valid"] == 0 for e in tb.read_entries())

    run(n, body)


@pytest.mark.parametrize("slot", range(4))
def test_kill_dslot_kills_only_that_slot(slot):
    n = 12

    async def body(tb):
        full = [entry(dslot=i % 4, start=100 + i, end=200 + i, offset=i, write=1)
                for i in range(n)]
        for i in range(n):
            await tb.step(write=(i, full[i]))
        # kill_dslot without kill_dslot_en does nothing.
        tb.ctx.set(tb.dut.kill_dslot, slot)
        await tb.step()
        assert tb.read_entries() == full
        await tb.step(kill_dslot=slot)
        got = tb.read_entries()
        for i in range(n):
            if i % 4 == slot:
                assert got[i]["valid"] == 0, i
            else:
                assert got[i] == full[i], i

    run(n, body)


def test_kill_and_kill_dslot_together():
    n = 8

    async def body(tb):
        full = [entry(dslot=i % 2, start=i, end=i) for i in range(n)]
        for i in range(n):
            await tb.step(write=(i, full[i]))
        await tb.step(kill=0b00000010 | 0b00010000, kill_dslot=0)   # odd 1, even 4, all even
        got = tb.read_entries()
        assert [e["valid"] for e in got] == [0, 0, 0, 1, 0, 1, 0, 1]

    run(n, body)


def test_write_and_kill_of_other_entries_in_one_cycle():
    n = 4

    async def body(tb):
        for i in range(3):
            await tb.step(write=(i, entry(dslot=1, start=i, end=i)))
        await tb.step(write=(3, entry(dslot=1, start=9, end=9)), kill=0b0001, kill_dslot=None)
        got = tb.read_entries()
        assert [e["valid"] for e in got] == [0, 1, 1, 1]
        assert got[3]["start"] == 9

    run(n, body)


# --- queries --------------------------------------------------------------------------

QUERY_ENTRIES = [
    entry(dslot=0, start=10, end=20),
    entry(dslot=1, start=10, end=20),
    entry(dslot=0, start=0, end=0),
    entry(dslot=0, start=MAXP, end=MAXP),
    entry(dslot=2, start=0, end=MAXP),
    entry(valid=0, dslot=0, start=10, end=20),     # invalid, same slot: not in the domain
    entry(dslot=3, start=MAXP - 1, end=MAXP),
    entry(dslot=0, start=21, end=21),
]


def _query_cases():
    xs = [0, 1, 9, 10, 11, 19, 20, 21, 22, MAXP - 2, MAXP - 1, MAXP]
    cases = [(x, y, s) for x in xs for y in (0, 9, 10, 20, 21, MAXP - 1, MAXP)
             for s in (0, 1, 2, 3)]
    return cases


def test_query_boundaries_two_cycles_later():
    n = len(QUERY_ENTRIES)

    async def body(tb):
        for i, e in enumerate(QUERY_ENTRIES):
            await tb.step(write=(i, e))
        contents = tb.read_entries()
        assert contents == QUERY_ENTRIES
        prev = None
        for q in _query_cases():
            await tb.step(query=q)
            await tb.step()
            got = (tb.ctx.get(tb.dut.x_ge_start), tb.ctx.get(tb.dut.y_le_end),
                   tb.ctx.get(tb.dut.in_domain))
            assert got == expected_query(contents, *q), f"query {q}"
        # Spot checks written out, independent of expected_query():
        await tb.step(query=(10, 20, 0))
        await tb.step()
        assert tb.bits(tb.dut.x_ge_start) == [1, 1, 1, 0, 1, 1, 0, 0]
        assert tb.bits(tb.dut.y_le_end) == [1, 1, 0, 1, 1, 1, 1, 1]
        assert tb.bits(tb.dut.in_domain) == [1, 0, 1, 1, 0, 0, 0, 1]
        await tb.step(query=(9, 21, 3))
        await tb.step()
        assert tb.bits(tb.dut.x_ge_start) == [0, 0, 1, 0, 1, 0, 0, 0]
        assert tb.bits(tb.dut.y_le_end) == [0, 0, 0, 1, 1, 0, 1, 1]
        assert tb.bits(tb.dut.in_domain) == [0, 0, 0, 0, 0, 0, 1, 0]

    run(n, body)


def test_query_latency_is_exactly_two_cycles():
    n = 2

    async def body(tb):
        await tb.step(write=(0, entry(start=10, end=20)))
        await tb.step(write=(1, entry(start=30, end=40, dslot=1)))
        # Alternate two queries with different answers: each answer appears exactly two
        # cycles after its query, and is replaced one cycle later.
        qa, qb = (25, 25, 0), (5, 45, 1)    # a: ge=[1,0] le=[0,1]; b: ge=[0,0] le=[0,0]
        await tb.step(query=qa)
        await tb.step(query=qb)
        assert tb.bits(tb.dut.x_ge_start) == [1, 0]       # qa's answer, qb in flight
        assert tb.bits(tb.dut.y_le_end) == [0, 1]
        assert tb.bits(tb.dut.in_domain) == [1, 0]
        await tb.step(query=qa)
        assert tb.bits(tb.dut.x_ge_start) == [0, 0]       # qb's answer
        assert tb.bits(tb.dut.y_le_end) == [0, 0]
        assert tb.bits(tb.dut.in_domain) == [0, 1]
        await tb.step(query=qa)
        assert tb.bits(tb.dut.x_ge_start) == [1, 0]
        assert tb.bits(tb.dut.in_domain) == [1, 0]

    run(n, body)


def test_query_sees_contents_of_the_next_cycle():
    """A write, kill or kill_dslot in the query's cycle is seen by its answer; one in the
    following cycle is not."""
    n = 4

    async def body(tb):
        await tb.step(write=(0, entry(dslot=1, start=10, end=20)))
        await tb.step(write=(1, entry(dslot=1, start=30, end=40)))
        # Query together with a write of entry 2: the answer includes it.
        await tb.step(write=(2, entry(dslot=1, start=50, end=60)), query=(55, 55, 1))
        await tb.step()
        assert tb.bits(tb.dut.in_domain) == [1, 1, 1, 0]
        assert tb.bits(tb.dut.y_le_end) == [0, 0, 1, 0]
        # A kill in the cycle after the query is not seen; one in the query's cycle is.
        await tb.step(query=(15, 15, 1))
        await tb.step(kill=0b0001)
        assert tb.bits(tb.dut.in_domain) == [1, 1, 1, 0]
        await tb.step(kill_dslot=1, query=(15, 15, 1))
        await tb.step()
        assert tb.bits(tb.dut.in_domain) == [0, 0, 0, 0]
        # A write changing start/end of an (invalid) entry in the query's cycle is seen.
        await tb.step(write=(0, entry(dslot=1, start=0, end=MAXP)), query=(5, MAXP, 1))
        await tb.step()
        assert tb.bits(tb.dut.x_ge_start)[0] == 1 and tb.bits(tb.dut.y_le_end)[0] == 1
        assert tb.bits(tb.dut.in_domain) == [1, 0, 0, 0]

    run(n, body)


# --- free slot ------------------------------------------------------------------------

def test_free_index_lowest_invalid_registered():
    n = 6

    async def body(tb):
        dut, ctx = tb.dut, tb.ctx
        await tb.step()
        assert ctx.get(dut.free_valid) == 1 and ctx.get(dut.free_index) == 0
        for i in range(n):
            await tb.step(write=(i, entry(start=i, end=i)))
            # The entry is written now, but free_* still reflect the previous cycle.
            assert tb.read_entries()[i]["valid"] == 1
            assert ctx.get(dut.free_valid) == 1 and ctx.get(dut.free_index) == i
        await tb.step()
        assert ctx.get(dut.free_valid) == 0, "full table must report no free entry"
        for _ in range(3):
            await tb.step()
            assert ctx.get(dut.free_valid) == 0
        # Kill 4 then 1: lowest invalid wins, one cycle after the contents change.
        await tb.step(kill=1 << 4)
        assert ctx.get(dut.free_valid) == 0
        await tb.step()
        assert ctx.get(dut.free_valid) == 1 and ctx.get(dut.free_index) == 4
        await tb.step(kill=1 << 1)
        assert ctx.get(dut.free_index) == 4
        await tb.step()
        assert ctx.get(dut.free_valid) == 1 and ctx.get(dut.free_index) == 1
        await tb.step(write=(1, entry(start=1, end=1)))
        assert ctx.get(dut.free_index) == 1
        await tb.step()
        assert ctx.get(dut.free_index) == 4
        await tb.step(kill_dslot=0)
        await tb.step()
        assert ctx.get(dut.free_valid) == 1 and ctx.get(dut.free_index) == 0
        # The last entry alone free.
        for i in range(n - 1):
            await tb.step(write=(i, entry(start=i, end=i)))
        await tb.step()
        assert ctx.get(dut.free_valid) == 1 and ctx.get(dut.free_index) == n - 1

    run(n, body)


def test_single_entry_table():
    async def body(tb):
        dut, ctx = tb.dut, tb.ctx
        await tb.step()
        assert ctx.get(dut.free_valid) == 1 and ctx.get(dut.free_index) == 0
        await tb.step(write=(0, entry(dslot=2, start=5, end=7)))
        await tb.step(query=(7, 5, 2))
        assert ctx.get(dut.free_valid) == 0
        await tb.step(query=(4, 8, 2))
        assert (ctx.get(dut.x_ge_start), ctx.get(dut.y_le_end), ctx.get(dut.in_domain)) == \
               (1, 1, 1)
        await tb.step(kill_dslot=2)
        assert (ctx.get(dut.x_ge_start), ctx.get(dut.y_le_end), ctx.get(dut.in_domain)) == \
               (0, 0, 1)
        await tb.step()
        assert ctx.get(dut.free_valid) == 1

    run(1, body)


# --- random, every port, against a model ---------------------------------------------

@pytest.mark.parametrize("n,seed", [(1, 1), (3, 2), (8, 3), (17, 4), (33, 5)])
def test_random_against_model(n, seed):
    rng = random.Random(seed)
    interesting = [0, 1, 2, 100, 101, 102, MAXP - 1, MAXP]

    def page():
        return rng.choice(interesting) if rng.random() < 0.7 else rng.getrandbits(PB)

    async def body(tb):
        dut, ctx = tb.dut, tb.ctx
        model = [entry(valid=0) for _ in range(n)]
        queries = [None, None]          # presented 2 cycles ago, 1 cycle ago
        prev_contents = None
        write_next = None               # drawn a cycle ahead: its entry is staged first
        for cycle in range(400):
            # Check this cycle's outputs against the model.
            assert tb.read_entries() == model, f"cycle {cycle}"
            if queries[0] is not None:
                exp = expected_query(prev_contents, *queries[0])
                got = (ctx.get(dut.x_ge_start), ctx.get(dut.y_le_end), ctx.get(dut.in_domain))
                assert got == exp, f"cycle {cycle} query {queries[0]}"
            if prev_contents is not None:
                invalid = [i for i, e in enumerate(prev_contents) if not e["valid"]]
                assert ctx.get(dut.free_valid) == bool(invalid), f"cycle {cycle}"
                if invalid:
                    assert ctx.get(dut.free_index) == invalid[0], f"cycle {cycle}"
            # Draw inputs.
            # Writes go to invalid entries only (the documented precondition), and are
            # drawn a cycle ahead, so that their entry is presented in the cycle before:
            # an entry free now and not written now is still free in the next cycle.
            write = write_next
            write_next = None
            free = [i for i, e in enumerate(model)
                    if not e["valid"] and (write is None or i != write[0])]
            if free and rng.random() < 0.4:
                i = rng.choice(free)
                write_next = (i, entry(valid=1, dslot=rng.randrange(4), start=page(),
                                       end=page(), offset=rng.getrandbits(PB),
                                       read=rng.getrandbits(1), write=rng.getrandbits(1),
                                       mmio=rng.getrandbits(1)))
            kill = rng.getrandbits(n) if rng.random() < 0.2 else 0
            if write is not None:
                kill &= ~(1 << write[0])      # write + kill of one entry: unspecified
            kdslot = rng.randrange(4) if rng.random() < 0.1 else None
            if write is not None and kdslot == model[write[0]]["dslot"]:
                kdslot = None                 # (same: write + kill of one entry)
            query = (page(), page(), rng.randrange(4))
            prev_contents = [dict(e) for e in model]
            queries = [queries[1], query]
            await tb.step(write=write, kill=kill, kill_dslot=kdslot, query=query,
                          stage=None if write_next is None else write_next[1])
            # Apply to the model.
            for i in range(n):
                if kill >> i & 1 or (kdslot is not None and model[i]["dslot"] == kdslot):
                    model[i]["valid"] = 0
            if write is not None:
                model[write[0]] = dict(write[1])

    run(n, body)


# --- payload read ports ---------------------------------------------------------------

@pytest.mark.parametrize("n", [5, 16, 21])
def test_payload_read_by_one_hot_select(n):
    """A read port returns the payload of the entry whose ``payload_sel`` bit is set, in
    the same cycle, across the 8-entry payload banks (21 entries: banks of 8, 8 and 5),
    and 0 when no bit is set or the port's ``payload_en`` is 0; every port reads
    independently."""
    rng = random.Random(n)
    written = [entry(valid=1, dslot=i % 4, start=i, end=i, offset=rng.getrandbits(PB),
                     mmio=rng.getrandbits(1)) for i in range(n)]
    dut = MappingTable(entries=n, page_bits=PB, dslot_bits=DSB, phys_page_bits=PB,
                       read_ports=2)
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def tb(ctx):
        bench = TableBench(dut, ctx, n)
        for i in range(n):
            await bench.step(write=(i, written[i]))
        await bench.step()                          # write_en low from here on
        for i in list(range(n)) + [None]:
            j = rng.randrange(n)
            ctx.set(dut.payload_sel[0], 0 if i is None else 1 << i)
            ctx.set(dut.payload_sel[1], 1 << j)
            got0 = PAYLOAD.from_bits(ctx.get(dut.payload_data[0].as_value()))
            got1 = PAYLOAD.from_bits(ctx.get(dut.payload_data[1].as_value()))
            if i is None:
                assert (got0.offset, got0.mmio) == (0, 0)
            else:
                assert (got0.offset, got0.mmio) == (written[i]["offset"], written[i]["mmio"])
            assert (got1.offset, got1.mmio) == (written[j]["offset"], written[j]["mmio"])
            ctx.set(dut.payload_en[0], 0)           # port 0 disabled, port 1 unaffected
            got0 = PAYLOAD.from_bits(ctx.get(dut.payload_data[0].as_value()))
            got1 = PAYLOAD.from_bits(ctx.get(dut.payload_data[1].as_value()))
            assert (got0.offset, got0.mmio) == (0, 0)
            assert (got1.offset, got1.mmio) == (written[j]["offset"], written[j]["mmio"])
            ctx.set(dut.payload_en[0], 1)
            await bench.step()

    sim.add_testbench(tb)
    sim.run()
