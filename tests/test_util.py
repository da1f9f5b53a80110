"""rtl/util.py's combinational building blocks, evaluated in Amaranth's simulator.

For every size n = 1..70 one small design holds all three blocks:

* ``priority_encode(bits, n)`` -> ``(any, index of the lowest set bit)``;
* ``onehot_encode(onehot, n)`` -> index of the set bit (0 when none is set);
* ``tree_or(values, width)`` over n values (and ``tree_any`` over n bits).

Small sizes are checked exhaustively; larger ones with every single-bit input, every
"lowest set bit at i with random bits above" input and random inputs of several densities.
The output widths are checked too: a wider-than-documented index would be silently
truncated by a consumer, a narrower one could not name every entry.
"""

import random

import pytest
from amaranth.hdl import Module, Signal, Const, Elaboratable, Value
from amaranth.sim import Simulator

from viommu.rtl.util import priority_encode, onehot_encode, tree_or, tree_any, ceil_log2


SIZES = list(range(1, 71))
EXHAUSTIVE_MAX = 10         # 2**10 inputs per block
OR_WIDTH = 7


def ref_priority(x, n):
    x &= (1 << n) - 1
    if x == 0:
        return 0, None          # index unspecified when nothing is set
    return 1, (x & -x).bit_length() - 1


class UtilDUT(Elaboratable):
    def __init__(self, n):
        self.n = n
        w = ceil_log2(n)
        self.bits = Signal(n)
        self.onehot = Signal(n)
        self.vals = [Signal(OR_WIDTH, name=f"v{i}") for i in range(n)]
        self.any_bits = Signal(n)

        # The blocks under test, built from the input signals (kept for width checks).
        self.pe_any, self.pe_idx = priority_encode(self.bits, n)
        self.oh_idx = onehot_encode(self.onehot, n)
        self.or_val = tree_or(self.vals, OR_WIDTH)
        self.any_val = tree_any([self.any_bits[i] for i in range(n)])

        self.o_pe_any = Signal(1)
        self.o_pe_idx = Signal(w)
        self.o_oh_idx = Signal(w)
        self.o_or = Signal(OR_WIDTH)
        self.o_any = Signal(1)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [
            self.o_pe_any.eq(self.pe_any),
            self.o_pe_idx.eq(self.pe_idx),
            self.o_oh_idx.eq(self.oh_idx),
            self.o_or.eq(self.or_val),
            self.o_any.eq(self.any_val),
        ]
        return m


def _simulate(dut, body):
    sim = Simulator(dut)

    async def tb(ctx):
        await body(ctx)

    sim.add_testbench(tb)
    sim.run()


def _pe_inputs(n, rng):
    if n <= EXHAUSTIVE_MAX:
        return list(range(1 << n))
    xs = [0, (1 << n) - 1]
    for i in range(n):
        xs.append(1 << i)                                           # single bit
        xs.append(((rng.getrandbits(n) << 1) | 1) << i & ((1 << n) - 1))   # lowest at i
        xs.append(((1 << n) - 1) >> i << i)                         # all ones from i up
    for density in (0.02, 0.1, 0.5, 0.9):
        for _ in range(40):
            xs.append(sum(1 << i for i in range(n) if rng.random() < density))
    return xs


@pytest.mark.parametrize("n", SIZES)
def test_util_blocks(n):
    rng = random.Random(1000 + n)
    dut = UtilDUT(n)
    w = ceil_log2(n)

    # Widths: one "any" bit, a ceil_log2(n)-bit index, the OR as wide as its inputs.
    assert len(Value.cast(dut.pe_any)) == 1
    assert len(Value.cast(dut.pe_idx)) == w
    assert len(Value.cast(dut.oh_idx)) == w
    assert len(Value.cast(dut.or_val)) == OR_WIDTH
    assert len(Value.cast(dut.any_val)) == 1

    checked = {"pe": 0, "oh": 0, "or": 0, "any": 0}

    async def body(ctx):
        # priority_encode
        seen_idx = set()
        for x in _pe_inputs(n, rng):
            ctx.set(dut.bits, x)
            got_any, got_idx = ctx.get(dut.o_pe_any), ctx.get(dut.o_pe_idx)
            exp_any, exp_idx = ref_priority(x, n)
            assert got_any == exp_any, f"n={n} x={x:#x}: any={got_any}"
            if exp_any:
                assert got_idx == exp_idx, f"n={n} x={x:#x}: index {got_idx}, want {exp_idx}"
                seen_idx.add(got_idx)
            checked["pe"] += 1
        assert seen_idx == set(range(n))

        # onehot_encode: every one-hot value, and zero -> 0
        ctx.set(dut.onehot, 0)
        assert ctx.get(dut.o_oh_idx) == 0
        for i in range(n):
            ctx.set(dut.onehot, 1 << i)
            assert ctx.get(dut.o_oh_idx) == i, f"n={n} onehot bit {i}"
            checked["oh"] += 1

        # tree_any: exhaustive for small n, else every single bit plus random
        if n <= EXHAUSTIVE_MAX:
            any_inputs = range(1 << n)
        else:
            any_inputs = [0, (1 << n) - 1] + [1 << i for i in range(n)] + \
                         [rng.getrandbits(n) for _ in range(100)]
        for x in any_inputs:
            ctx.set(dut.any_bits, x)
            assert ctx.get(dut.o_any) == int(x != 0), f"n={n} tree_any({x:#x})"
            checked["any"] += 1

        # tree_or: all zero, each input alone (every input reaches the output), random
        for v in dut.vals:
            ctx.set(v, 0)
        assert ctx.get(dut.o_or) == 0
        for i in range(n):
            for v in dut.vals:
                ctx.set(v, 0)
            pattern = rng.randrange(1, 1 << OR_WIDTH)
            ctx.set(dut.vals[i], pattern)
            assert ctx.get(dut.o_or) == pattern, f"n={n}: input {i} alone"
            checked["or"] += 1
        for _ in range(60):
            xs = [rng.getrandbits(OR_WIDTH) if rng.random() < 0.3 else 0 for _ in range(n)]
            for v, x in zip(dut.vals, xs):
                ctx.set(v, x)
            exp = 0
            for x in xs:
                exp |= x
            assert ctx.get(dut.o_or) == exp, f"n={n}: OR of {xs}"
            checked["or"] += 1

    _simulate(dut, body)
    assert checked["pe"] >= min(1 << n, 3 * n)
    assert checked["oh"] == n
    assert checked["or"] == n + 60


def test_tree_or_empty_is_zero_of_width():
    v = tree_or([], 9)
    assert isinstance(v, Const) and v.value == 0 and len(v) == 9
    assert tree_any([]).value == 0


@pytest.mark.parametrize("n,bits", [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (8, 3), (9, 4),
                                    (64, 6), (65, 7), (1024, 10)])
def test_ceil_log2(n, bits):
    assert ceil_log2(n) == bits


# --- uge: unsigned a >= b as a subtraction's borrow ------------------------------------

@pytest.mark.parametrize("wa,wb", [(1, 1), (8, 8), (52, 52), (52, 36), (36, 52), (64, 64)])
def test_uge(wa, wb):
    from viommu.rtl.util import uge
    rng = random.Random(wa * 100 + wb)
    a, b = Signal(wa), Signal(wb)
    m = Module()
    y = Signal()
    m.d.comb += y.eq(uge(a, b))
    ma, mb = (1 << wa) - 1, (1 << wb) - 1
    edge = lambda mx: [0, 1, 2, mx - 1, mx, mx >> 1, (mx >> 1) + 1]
    cases = [(x, z) for x in edge(ma) for z in edge(mb)]
    cases += [(x, x & mb) for x in edge(ma)] + [(z & ma, z) for z in edge(mb)]
    cases += [(rng.getrandbits(wa), rng.getrandbits(wb)) for _ in range(300)]
    cases += [(v & ma, v & mb) for v in (rng.getrandbits(64) for _ in range(100))]
    cases = [(x & ma, z & mb) for x, z in cases]
    sim = Simulator(m)

    async def tb(ctx):
        for x, z in cases:
            ctx.set(a, x)
            ctx.set(b, z)
            assert ctx.get(y) == int(x >= z), f"uge({x:#x}, {z:#x})"

    sim.add_testbench(tb)
    sim.run()


# --- onehot_mux: the AND-OR select -----------------------------------------------------

@pytest.mark.parametrize("n", [1, 3, 8])
def test_onehot_mux(n):
    from viommu.rtl.util import onehot_mux
    rng = random.Random(n)
    sels = Signal(n)
    vals = [Signal(12, name=f"v{i}") for i in range(n)]
    m = Module()
    y = Signal(12)
    m.d.comb += y.eq(onehot_mux(sels, vals))
    sim = Simulator(m)

    async def tb(ctx):
        for _ in range(50):
            words = [rng.getrandbits(12) for _ in range(n)]
            for v, w in zip(vals, words):
                ctx.set(v, w)
            for i in range(n):
                ctx.set(sels, 1 << i)
                assert ctx.get(y) == words[i]
            ctx.set(sels, 0)
            assert ctx.get(y) == 0

    sim.add_testbench(tb)
    sim.run()


def test_global_buffer_only_on_ecp5():
    """A DCCA on an ECP5 platform (the net then goes on a global network), nothing else
    anywhere else (simulation, generic Verilog)."""
    from amaranth.hdl import Instance, Module, Signal
    from viommu.rtl.util import global_buffer
    from viommu.sim.netlist import instances

    class _ECP5:
        family = "ecp5"

    sig = Signal()
    m = Module()
    assert global_buffer(m, None, sig, name="x") is sig
    assert global_buffer(m, object(), sig, name="x") is sig
    out = global_buffer(m, _ECP5(), sig, name="x")
    assert out is not sig
    from amaranth.hdl import Fragment
    frag = Fragment.get(m, None)
    dccas = [sub for sub, *_ in frag.subfragments if isinstance(sub, Instance)]
    assert len(dccas) == 1 and dccas[0].type == "DCCA"
    assert dccas[0].ports["CLKI"][0] is sig and dccas[0].ports["CLKO"][0] is out
    assert "BEL" not in dccas[0].attrs          # no site given: nextpnr places it

    class _Sited(_ECP5):
        global_buffer_sites = {"y": "X87/Y34/RDCC0"}

    m = Module()
    global_buffer(m, _Sited(), sig, name="x")
    global_buffer(m, _Sited(), sig, name="y")
    bels = [i.attrs.get("BEL") for i in instances(m, type="DCCA")]
    assert bels == [None, "X87/Y34/RDCC0"]      # the named buffer at its site only


def test_reset_inserter_alone_ignores_the_domain_reset():
    """``reset_inserter(alone=True)``: the logic is reset by ``clear`` and not by the
    domain reset; ``alone=False``: by either."""
    from amaranth.hdl import ClockDomain, Module, Signal
    from amaranth.sim import Simulator
    from viommu.rtl.util import reset_inserter

    for alone in (False, True):
        clear = Signal()
        count = Signal(8)
        top = Module()
        top.domains.sync = cd = ClockDomain("sync")
        inner = Module()
        inner.d.sync += count.eq(count + 1)
        top.submodules.inner = reset_inserter(top, clear, alone=alone, name="logic")(inner)
        seen = {}

        async def bench(ctx):
            await ctx.tick().repeat(5)
            ctx.set(cd.rst, 1)
            await ctx.tick()
            ctx.set(cd.rst, 0)
            seen["after_rst"] = ctx.get(count)
            ctx.set(clear, 1)
            await ctx.tick()
            ctx.set(clear, 0)
            seen["after_clear"] = ctx.get(count)

        sim = Simulator(top)
        sim.add_clock(1e-8)
        sim.add_testbench(bench)
        sim.run()
        assert seen["after_rst"] == (6 if alone else 0), alone
        assert seen["after_clear"] == 0
