# amaranth: UnusedElaboratable=no
"""The AXI4-Lite decoder (rtl/bus/interconnect.py) in Amaranth's simulator.

A master issues random reads and writes (AW and W in either order, random gaps, random
``bready``/``rready``) to three windows and to addresses in none; three slave models with
random ready and response latency answer with data derived from the offset they see, one
of them SLVERR on some offsets. Checked: each access reaches exactly the slave of its
window with the offset into the window (and its data/strobes), nothing reaches a slave for
an address in no window (DECERR, ``rdata`` 0 instead), responses come back unchanged,
one write and one read in flight. Plus the parameter checks.
"""

import random
import zlib

import pytest
from amaranth.sim import Simulator

from viommu.rtl.bus.axi import Resp
from viommu.rtl.bus.interconnect import AXI4LiteDecoder


WINDOWS = {"ram": (0x0, 0x10000), "dev": (0x4000_0000, 0x1000), "ctl": (0x4000_1000, 0x1000)}


def _slave_data(name, off):
    return zlib.crc32(f"{name}:{off}".encode())


def test_random_accesses():
    rng = random.Random(11)
    dut = AXI4LiteDecoder(windows=WINDOWS)
    ops = []
    for _ in range(400):
        name = rng.choice(list(WINDOWS) + [None])
        if name is None:
            addr = rng.choice([0x10000, 0x8000_0000, 0x4000_2000, 0xffff_fffc, 0x3fff_fffc])
        else:
            base, size = WINDOWS[name]
            addr = base + rng.randrange(0, size, 4)
        if rng.random() < 0.5:
            ops.append(("w", addr, name, rng.getrandbits(32), rng.randrange(16)))
        else:
            ops.append(("r", addr, name))
    seen = {n: [] for n in WINDOWS}            # what each slave got, in order
    results = []

    async def tb(ctx):
        bus = dut.bus
        slaves = {n: getattr(dut, n) for n in WINDOWS}
        st = {n: {"aw": None, "w": None, "ar": None, "b": None, "r": None} for n in WINDOWS}
        i, phase = 0, None
        cycle = 0
        while i < len(ops):
            op = ops[i]
            if phase is None:
                phase = {"aw": op[0] == "w", "w": op[0] == "w", "ar": op[0] == "r",
                         "aw_delay": rng.randint(0, 3), "w_delay": rng.randint(0, 3)}
            # master
            ctx.set(bus.awvalid, int(phase["aw"] and phase["aw_delay"] == 0))
            ctx.set(bus.wvalid, int(phase["w"] and phase["w_delay"] == 0))
            ctx.set(bus.arvalid, int(phase["ar"]))
            if op[0] == "w":
                ctx.set(bus.awaddr, op[1])
                ctx.set(bus.wdata, op[3])
                ctx.set(bus.wstrb, op[4])
            else:
                ctx.set(bus.araddr, op[1])
            ctx.set(bus.bready, int(rng.random() < 0.7))
            ctx.set(bus.rready, int(rng.random() < 0.7))
            # slaves
            for n, s in slaves.items():
                t = st[n]
                ctx.set(s.awready, int(t["aw"] is None and t["b"] is None and rng.random() < 0.6))
                ctx.set(s.wready, int(t["w"] is None and t["b"] is None and rng.random() < 0.6))
                ctx.set(s.arready, int(t["ar"] is None and t["r"] is None and rng.random() < 0.6))
                b_on = t["b"] is not None and cycle >= t["b"][0]
                r_on = t["r"] is not None and cycle >= t["r"][0]
                ctx.set(s.bvalid, int(b_on))
                ctx.set(s.bresp, t["b"][1] if b_on else 0)
                ctx.set(s.rvalid, int(r_on))
                ctx.set(s.rdata, t["r"][1] if r_on else 0)
                ctx.set(s.rresp, t["r"][2] if r_on else 0)
            # observe slaves
            for n, s in slaves.items():
                t = st[n]
                if ctx.get(s.awvalid) and ctx.get(s.awready):
                    t["aw"] = ctx.get(s.awaddr)
                if ctx.get(s.wvalid) and ctx.get(s.wready):
                    t["w"] = (ctx.get(s.wdata), ctx.get(s.wstrb))
                if ctx.get(s.arvalid) and ctx.get(s.arready):
                    off = ctx.get(s.araddr)
                    t["ar"] = off
                    seen[n].append(("r", off))
                    resp = Resp.SLVERR if n == "dev" and off % 64 == 0 else Resp.OKAY
                    t["r"] = (cycle + rng.randint(1, 3), _slave_data(n, off), resp)
                if t["aw"] is not None and t["w"] is not None and t["b"] is None:
                    seen[n].append(("w", t["aw"], *t["w"]))
                    resp = Resp.SLVERR if n == "dev" and t["aw"] % 64 == 0 else Resp.OKAY
                    t["b"] = (cycle + rng.randint(1, 3), resp)
                if t["b"] is not None and cycle >= t["b"][0] and ctx.get(s.bready):
                    t["aw"] = t["w"] = t["b"] = None
                if t["r"] is not None and cycle >= t["r"][0] and ctx.get(s.rready):
                    t["ar"] = t["r"] = None
            # observe master
            if ctx.get(bus.awvalid) and ctx.get(bus.awready):
                phase["aw"] = False
            if ctx.get(bus.wvalid) and ctx.get(bus.wready):
                phase["w"] = False
            if ctx.get(bus.arvalid) and ctx.get(bus.arready):
                phase["ar"] = False
            if op[0] == "w" and ctx.get(bus.bvalid) and ctx.get(bus.bready):
                assert not phase["aw"] and not phase["w"]
                results.append(("w", ctx.get(bus.bresp)))
                i, phase = i + 1, None
            elif op[0] == "r" and ctx.get(bus.rvalid) and ctx.get(bus.rready):
                assert not phase["ar"]
                results.append(("r", ctx.get(bus.rresp), ctx.get(bus.rdata)))
                i, phase = i + 1, None
            else:
                assert not (ctx.get(bus.bvalid) and op[0] == "r"), "B without a write"
                assert not (ctx.get(bus.rvalid) and op[0] == "w"), "R without a read"
            if phase is not None:
                phase["aw_delay"] = max(0, phase["aw_delay"] - 1)
                phase["w_delay"] = max(0, phase["w_delay"] - 1)
            await ctx.tick()
            cycle += 1
            assert cycle < 100_000

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()

    want_seen = {n: [] for n in WINDOWS}
    for op, res in zip(ops, results):
        name = op[2]
        if name is None:
            assert res[1] == Resp.DECERR and (op[0] == "w" or res[2] == 0), (op, res)
            continue
        off = op[1] - WINDOWS[name][0]
        bad = name == "dev" and off % 64 == 0
        assert res[1] == (Resp.SLVERR if bad else Resp.OKAY), (op, res)
        if op[0] == "w":
            want_seen[name].append(("w", off, op[3], op[4]))
        else:
            want_seen[name].append(("r", off))
            assert res[2] == _slave_data(name, off)
    assert seen == want_seen


@pytest.mark.parametrize("kw, message", [
    (dict(windows={}), "at least one"),
    (dict(windows={"a": (0, 3000)}), "size of window 'a' must be a power of two"),
    (dict(windows={"a": (0x800, 0x1000)}), "is not a multiple of its size"),
    (dict(windows={"a": (0, 0x2000), "b": (0x1000, 0x1000)}), "windows 'a' and 'b' overlap"),
    (dict(windows={"bus": (0, 0x1000)}), "must be an identifier other than 'bus'"),
    (dict(windows={"a": (1 << 32, 0x1000)}), "base of window 'a' must be an integer"),
    (dict(windows={"a": (0, 0x1000)}, data_width=16), "data_width must be 32 or 64"),
])
def test_parameters_validated(kw, message):
    with pytest.raises(ValueError, match=message):
        AXI4LiteDecoder(**kw)
