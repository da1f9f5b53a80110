# amaranth: UnusedElaboratable=no
"""The guest RAM (rtl/board/guest_ram.py) in Amaranth's simulator, against a byte-array model.

Three masters run at the same time, each with random valid/ready gaps: an AXI4 write
master, an AXI4 read master (several bursts in flight: AR runs ahead of R) and an
AXI4-Lite master. They work on disjoint regions in each of two phases (so the expected
data does not depend on how the RAM interleaves them), and the regions swap between the
phases (so the reads see what the writes and the Lite port put there).

Bursts: INCR, FIXED and WRAP, 1..256 beats (WRAP 2..16), every size up to the bus width,
unaligned INCR starts, random ``wstrb``; bursts at addresses outside the RAM (DECERR,
memory untouched, ``rdata`` 0) and with a reserved burst type / a size above the bus /
a bad WRAP length (SLVERR). Checked: every R beat (data, resp, ``rlast``, ``rid``), every
B (resp, ``bid``), the slave's valid/payload held until ready, the error pulses counted,
the whole memory after each phase equal to the model, byte for byte. Cycle counts: a
256-beat read and write at one beat per cycle, back-to-back bursts without a bubble,
reads and writes streaming together at full rate each; the Lite port's latency alone and
while the AXI4 side streams.
"""

import random

import pytest
from amaranth.sim import Simulator

from viommu.rtl.bus.axi import Burst, Resp
from viommu.rtl.board.guest_ram import GuestRAM
from viommu.sim.lite import lite_write


def beat_addrs(addr, size, length, burst):
    """The address of each beat of an AXI4 burst (AXI spec A3.4.1); INCR wraps inside its
    4 KiB page, as the RAM documents (a legal burst never gets there)."""
    n, beats = 1 << size, length + 1
    if burst == Burst.FIXED:
        return [addr] * beats
    if burst == Burst.WRAP:
        total = n * beats
        lower = addr & ~(total - 1)
        out, a = [], addr
        for _ in range(beats):
            out.append(a)
            a += n
            if a >= lower + total:
                a = lower
        return out
    out = [addr]
    a = addr & ~(n - 1)
    for _ in range(beats - 1):
        a = (a & ~0xfff) | ((a + n) & 0xfff)
        out.append(a)
    return out


class Model:
    def __init__(self, size, W, seed):
        self.size, self.W = size, W
        self.mem = bytearray(size)

    def word(self, addr):
        base = addr - addr % self.W
        return int.from_bytes(self.mem[base:base + self.W], "little")

    def write_beat(self, addr, data, strb):
        base = addr - addr % self.W
        for lane in range(self.W):
            if strb >> lane & 1:
                self.mem[base + lane] = data >> 8 * lane & 0xff


def gen_burst(rng, W, region, *, errors=True, size_ram=None):
    """A random burst inside ``region`` (start, end), or sometimes an error burst.
    Returns dict(addr, size, len, burst, resp)."""
    lw = W.bit_length() - 1
    lo, hi = region
    r = rng.random()
    if errors and r < 0.06:                         # outside the RAM: DECERR
        addr = rng.choice([size_ram, size_ram + rng.randrange(0, 4096, 4), 1 << 40,
                           (1 << 64) - 4096, 1 << 63])
        return dict(addr=addr, size=rng.randint(0, lw), len=rng.randint(0, 15),
                    burst=Burst.INCR, resp=Resp.DECERR)
    if errors and r < 0.10:                         # malformed: SLVERR
        kind = rng.randrange(3)
        addr = lo + rng.randrange(0, 64, W)
        if kind == 0:
            return dict(addr=addr, size=lw, len=rng.randint(0, 7), burst=3, resp=Resp.SLVERR)
        if kind == 1 and lw < 7:
            return dict(addr=addr, size=lw + 1, len=0, burst=Burst.INCR, resp=Resp.SLVERR)
        return dict(addr=addr, size=lw, len=rng.choice([0, 2, 4, 5, 6, 8, 14]),
                    burst=Burst.WRAP, resp=Resp.SLVERR)
    for _ in range(1000):
        burst = rng.choice([Burst.INCR] * 5 + [Burst.FIXED, Burst.WRAP, Burst.WRAP])
        size = rng.randint(0, lw)
        if burst == Burst.WRAP:
            length = rng.choice([1, 3, 7, 15])
        elif rng.random() < 0.1:
            length = rng.choice([127, 255, rng.randint(16, 255)])
        else:
            length = rng.randint(0, 15)
        addr = rng.randrange(lo, hi)
        if burst == Burst.WRAP:
            addr &= ~((1 << size) - 1)
        elif rng.random() < 0.5:
            addr &= ~((1 << size) - 1)
        addrs = beat_addrs(addr, size, length, burst)
        if burst == Burst.INCR and (addrs[-1] >> 12 != addr >> 12 or
                                    any(b < a for a, b in zip(addrs, addrs[1:]))):
            continue
        if all(lo <= a and a - a % W + W <= hi for a in addrs):
            return dict(addr=addr, size=size, len=length, burst=burst, resp=Resp.OKAY)
    raise AssertionError("no burst fits")


class Bench:
    def __init__(self, *, size, data_width, seed):
        self.dut = GuestRAM(size=size, data_width=data_width)
        self.size, self.W = size, data_width // 8
        self.rng = random.Random(seed)
        self.model = Model(size, self.W, seed)
        self.cycle = 0
        self.read_errors = self.write_errors = 0
        self.expected_errors = [0, 0]

    async def dump(self, ctx):
        W = self.W
        mem = self.dut.memory
        out = bytearray()
        for i in range(self.size // W):
            out += ctx.get(mem.data[i]).to_bytes(W, "little")
        return bytes(out)

    async def phase(self, ctx, *, w_region, r_region, l_region, n_w, n_r, n_l,
                    ready_p=0.7, valid_p=0.7, errors=True):
        """Run the three masters until all their work is done; check everything."""
        rng, dut, W, model = self.rng, self.dut, self.W, self.model
        axi, lite = dut.axi, dut.lite
        size_ram = self.size

        # --- AXI4 writes ------------------------------------------------------------------------
        wbursts = []
        for i in range(n_w):
            b = gen_burst(rng, W, w_region, errors=errors, size_ram=size_ram)
            b["id"] = rng.randrange(2)
            b["beats"] = [(rng.getrandbits(8 * W),
                           rng.choice([(1 << W) - 1, rng.getrandbits(W), 0,
                                       rng.getrandbits(W)]))
                          for _ in range(b["len"] + 1)]
            wbursts.append(b)
            self.expected_errors[1] += b["resp"] != Resp.OKAY
        # --- AXI4 reads: expected data from the model as it is now (region is static) -------
        rbursts = []
        for i in range(n_r):
            b = gen_burst(rng, W, r_region, errors=errors, size_ram=size_ram)
            b["id"] = rng.randrange(2)
            if b["resp"] == Resp.OKAY:
                b["data"] = [model.word(a) for a in beat_addrs(b["addr"], b["size"], b["len"],
                                                               b["burst"])]
            else:
                b["data"] = [0] * (b["len"] + 1)
            rbursts.append(b)
            self.expected_errors[0] += b["resp"] != Resp.OKAY
        # --- Lite ops ----------------------------------------------------------------------------
        lops = []
        for i in range(n_l):
            addr = rng.randrange(*l_region) & ~3
            if rng.random() < 0.5:
                lops.append(("w", addr | rng.randrange(4), rng.getrandbits(32),
                             rng.choice([0xf, rng.getrandbits(4)])))
            else:
                lops.append(("r", addr | rng.randrange(4)))

        aw_i = w_i = w_beat = b_i = 0
        ar_i = r_i = r_beat = 0
        l_i = 0
        l_state = None              # None / "aw+w" / "b" / "ar" / "r"
        l_aw_done = l_w_done = False
        present = {}                # channel -> True while valid is held
        hold = {}
        while (b_i < len(wbursts) or r_i < len(rbursts) or l_i < len(lops)):
            assert self.cycle < 2_000_000
            # AW
            if aw_i < len(wbursts) and (present.get("aw") or rng.random() < valid_p):
                b = wbursts[aw_i]
                present["aw"] = True
                ctx.set(axi.awvalid, 1)
                ctx.set(axi.awaddr, b["addr"])
                ctx.set(axi.awlen, b["len"])
                ctx.set(axi.awsize, b["size"])
                ctx.set(axi.awburst, b["burst"])
                ctx.set(axi.awid, b["id"])
            else:
                ctx.set(axi.awvalid, 0)
            # W (may run ahead of AW by one burst)
            if w_i < len(wbursts) and w_i <= aw_i and (present.get("w") or
                                                        rng.random() < valid_p):
                b = wbursts[w_i]
                data, strb = b["beats"][w_beat]
                present["w"] = True
                ctx.set(axi.wvalid, 1)
                ctx.set(axi.wdata, data)
                ctx.set(axi.wstrb, strb)
                ctx.set(axi.wlast, int(w_beat == b["len"]))
            else:
                ctx.set(axi.wvalid, 0)
            ctx.set(axi.bready, int(rng.random() < ready_p))
            # AR (up to 3 bursts ahead of R)
            if ar_i < len(rbursts) and ar_i - r_i < 3 and (present.get("ar") or
                                                            rng.random() < valid_p):
                b = rbursts[ar_i]
                present["ar"] = True
                ctx.set(axi.arvalid, 1)
                ctx.set(axi.araddr, b["addr"])
                ctx.set(axi.arlen, b["len"])
                ctx.set(axi.arsize, b["size"])
                ctx.set(axi.arburst, b["burst"])
                ctx.set(axi.arid, b["id"])
            else:
                ctx.set(axi.arvalid, 0)
            ctx.set(axi.rready, int(rng.random() < ready_p))
            # Lite
            if l_state is None and l_i < len(lops):
                l_state = "aw+w" if lops[l_i][0] == "w" else "ar"
                l_aw_done = l_w_done = False
            op = lops[l_i] if l_i < len(lops) else None
            ctx.set(lite.awvalid, int(l_state == "aw+w" and not l_aw_done))
            ctx.set(lite.wvalid, int(l_state == "aw+w" and not l_w_done))
            ctx.set(lite.arvalid, int(l_state == "ar"))
            if op is not None:
                if op[0] == "w":
                    ctx.set(lite.awaddr, op[1])
                    ctx.set(lite.wdata, op[2])
                    ctx.set(lite.wstrb, op[3])
                else:
                    ctx.set(lite.araddr, op[1])
            ctx.set(lite.bready, int(rng.random() < ready_p))
            ctx.set(lite.rready, int(rng.random() < ready_p))

            # --- observe ---------------------------------------------------------------------
            def fire(ch, bus=axi):
                return ctx.get(getattr(bus, ch + "valid")) and ctx.get(getattr(bus, ch + "ready"))

            for ch, sigs in (("r", ("rdata", "rresp", "rlast", "rid")),
                             ("b", ("bresp", "bid"))):
                valid = ctx.get(getattr(axi, ch + "valid"))
                vals = tuple(ctx.get(getattr(axi, s)) for s in sigs)
                if ch in hold:
                    assert valid and vals == hold[ch], f"{ch} changed while not taken"
                ready = ctx.get(getattr(axi, ch + "ready"))
                if valid and not ready:
                    hold[ch] = vals
                else:
                    hold.pop(ch, None)
            if fire("aw"):
                present.pop("aw")
                aw_i += 1
            if fire("w"):
                present.pop("w")
                b = wbursts[w_i]
                if b["resp"] == Resp.OKAY:
                    a = beat_addrs(b["addr"], b["size"], b["len"], b["burst"])[w_beat]
                    model.write_beat(a, *b["beats"][w_beat])
                w_beat += 1
                if w_beat > b["len"]:
                    w_i, w_beat = w_i + 1, 0
            if fire("b"):
                assert b_i < w_i, "B before the burst's last W beat"
                b = wbursts[b_i]
                assert ctx.get(axi.bresp) == b["resp"], (b, ctx.get(axi.bresp))
                assert ctx.get(axi.bid) == b["id"]
                b_i += 1
            if fire("ar"):
                present.pop("ar")
                ar_i += 1
            if fire("r"):
                assert r_i < ar_i, "R beat before its AR"
                b = rbursts[r_i]
                got = ctx.get(axi.rdata)
                assert ctx.get(axi.rresp) == b["resp"], (b, r_beat)
                assert ctx.get(axi.rid) == b["id"]
                assert ctx.get(axi.rlast) == int(r_beat == b["len"]), (b, r_beat)
                assert got == b["data"][r_beat], \
                    (f"burst {b['addr']:#x} size {b['size']} len {b['len']} burst "
                     f"{b['burst']} beat {r_beat}: {got:#x} != {b['data'][r_beat]:#x}")
                r_beat += 1
                if r_beat > b["len"]:
                    r_i, r_beat = r_i + 1, 0
            if l_state == "aw+w":
                if fire("aw", lite):
                    l_aw_done = True
                if fire("w", lite):
                    l_w_done = True
                if l_aw_done and l_w_done:
                    l_state = "b"
            elif l_state == "b" and fire("b", lite):
                assert ctx.get(lite.bresp) == Resp.OKAY
                _, addr, data, strb = op
                addr &= ~3
                for k in range(4):
                    if strb >> k & 1:
                        model.mem[addr + k] = data >> 8 * k & 0xff
                l_state, l_i = None, l_i + 1
            elif l_state == "ar" and fire("ar", lite):
                l_state = "r"
            elif l_state == "r" and fire("r", lite):
                addr = op[1] & ~3
                want = int.from_bytes(model.mem[addr:addr + 4], "little")
                assert ctx.get(lite.rdata) == want, (hex(addr), ctx.get(lite.rdata), want)
                assert ctx.get(lite.rresp) == Resp.OKAY
                l_state, l_i = None, l_i + 1
            self.read_errors += ctx.get(dut.read_error)
            self.write_errors += ctx.get(dut.write_error)
            await ctx.tick()
            self.cycle += 1
        for _ in range(3):
            self.read_errors += ctx.get(dut.read_error)
            self.write_errors += ctx.get(dut.write_error)
            await ctx.tick()
        assert await self.dump(ctx) == bytes(model.mem), "memory differs from the model"
        assert [self.read_errors, self.write_errors] == self.expected_errors


def _sim(bench, fn):
    sim = Simulator(bench.dut)
    sim.add_clock(1e-8)
    sim.add_testbench(fn)
    sim.run()


@pytest.mark.parametrize("data_width, size, seed", [(64, 65536, 1), (128, 8192, 2),
                                                     (32, 4096, 3)])
def test_random_bursts_three_masters(data_width, size, seed):
    b = Bench(size=size, data_width=data_width, seed=seed)
    q = size // 4

    async def tb(ctx):
        await b.phase(ctx, w_region=(0, 2 * q), r_region=(2 * q, 3 * q),
                      l_region=(3 * q, 4 * q), n_w=60, n_r=60, n_l=60)
        await b.phase(ctx, w_region=(2 * q, 4 * q), r_region=(0, q),
                      l_region=(q, 2 * q), n_w=60, n_r=60, n_l=60)
        # the region the Lite port wrote, read back by AXI4 bursts
        await b.phase(ctx, w_region=(0, q), r_region=(q, 2 * q),
                      l_region=(3 * q, 4 * q), n_w=10, n_r=40, n_l=10, ready_p=1.0,
                      valid_p=1.0)

    _sim(b, tb)
    assert b.read_errors > 0 and b.write_errors > 0


def test_parameters_validated():
    for kw, msg in [(dict(size=1000), "size must be a power of two in 4096"),
                    (dict(size=2048), "size must be a power of two in 4096"),
                    (dict(size=1 << 25), "size must be a power of two"),
                    (dict(data_width=48), "data_width must be 32, 64, 128 or 256"),
                    (dict(addr_width=15), "addr_width must be an integer in 16..64"),
                    (dict(id_width=0), "id_width must be an integer in 1..16")]:
        with pytest.raises(ValueError, match=msg):
            GuestRAM(**kw)


def _cycle_bench(data_width, scenario):
    """Always-ready master; returns the cycles of R and W handshakes for ``scenario``:
    list of ("r"|"w", addr, len) bursts, reads and writes each issued back to back."""
    dut = GuestRAM(size=65536, data_width=data_width)
    W = data_width // 8
    lw = W.bit_length() - 1
    rcyc, wcyc, accepted = [], [], {"ar": [], "aw": []}

    async def tb(ctx):
        reads = [s for s in scenario if s[0] == "r"]
        writes = [s for s in scenario if s[0] == "w"]
        ar_i = aw_i = w_i = w_beat = 0
        nr = sum(s[2] + 1 for s in reads)
        nw = sum(s[2] + 1 for s in writes)
        ctx.set(dut.axi.rready, 1)
        ctx.set(dut.axi.bready, 1)
        cycle = 0
        while len(rcyc) < nr or len(wcyc) < nw:
            ctx.set(dut.axi.arvalid, int(ar_i < len(reads)))
            if ar_i < len(reads):
                ctx.set(dut.axi.araddr, reads[ar_i][1])
                ctx.set(dut.axi.arlen, reads[ar_i][2])
                ctx.set(dut.axi.arsize, lw)
                ctx.set(dut.axi.arburst, Burst.INCR)
            ctx.set(dut.axi.awvalid, int(aw_i < len(writes)))
            if aw_i < len(writes):
                ctx.set(dut.axi.awaddr, writes[aw_i][1])
                ctx.set(dut.axi.awlen, writes[aw_i][2])
                ctx.set(dut.axi.awsize, lw)
                ctx.set(dut.axi.awburst, Burst.INCR)
            ctx.set(dut.axi.wvalid, int(w_i < len(writes)))
            ctx.set(dut.axi.wstrb, (1 << W) - 1)
            if ctx.get(dut.axi.arvalid) and ctx.get(dut.axi.arready):
                accepted["ar"].append(cycle)
                ar_i += 1
            if ctx.get(dut.axi.awvalid) and ctx.get(dut.axi.awready):
                accepted["aw"].append(cycle)
                aw_i += 1
            if ctx.get(dut.axi.rvalid):
                rcyc.append(cycle)
            if ctx.get(dut.axi.wvalid) and ctx.get(dut.axi.wready):
                wcyc.append(cycle)
                w_beat += 1
                if w_beat > writes[w_i][2]:
                    w_i, w_beat = w_i + 1, 0
            await ctx.tick()
            cycle += 1
            assert cycle < 5000

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return rcyc, wcyc, accepted


@pytest.mark.parametrize("data_width", [64, 128])
def test_cycles(data_width):
    """One beat per cycle: a 256-beat read (first beat 2 cycles after AR) and a 256-beat
    write; 16 back-to-back 16-beat bursts without a bubble; reads and writes streaming
    at the same time, each at one beat per cycle."""
    r, w, acc = _cycle_bench(data_width, [("r", 0, 255)])
    assert r == list(range(2, 258))               # AR in cycle 0, first R beat in 2
    r, w, acc = _cycle_bench(data_width, [("w", 0, 255)])
    assert w == list(range(1, 257))               # wready the cycle after AW
    bursts = [("r", 256 * k, 15) for k in range(16)] + [("w", 8192 + 256 * k, 15)
                                                        for k in range(16)]
    r, w, acc = _cycle_bench(data_width, [b for b in bursts if b[0] == "r"])
    assert r == list(range(2, 258))
    r, w, acc = _cycle_bench(data_width, [b for b in bursts if b[0] == "w"])
    assert w == list(range(1, 257))
    r, w, acc = _cycle_bench(data_width, bursts)
    assert r == list(range(2, 258)) and w == list(range(1, 257))   # both at full rate


@pytest.mark.parametrize("stream", [False, True])
def test_lite_latency(stream):
    """Lite write (AW and W in cycle t): bvalid in t+2; Lite read (AR in t): rvalid in
    t+3, with the data just written. With the AXI4 side streaming reads and writes every
    cycle at the same time, each Lite access waits at most one cycle more, and the AXI4
    streams lose one cycle per Lite access."""
    dut = GuestRAM(size=8192, data_width=64)
    out = {}

    async def tb(ctx):
        axi, lite = dut.axi, dut.lite
        if stream:                      # endless INCR bursts both ways, always ready
            ctx.set(axi.arvalid, 1)
            ctx.set(axi.araddr, 0x1000)
            ctx.set(axi.arlen, 255)
            ctx.set(axi.arsize, 3)
            ctx.set(axi.arburst, Burst.INCR)
            ctx.set(axi.awvalid, 1)
            ctx.set(axi.awaddr, 0x800)
            ctx.set(axi.awlen, 255)
            ctx.set(axi.awsize, 3)
            ctx.set(axi.awburst, Burst.INCR)
            ctx.set(axi.wvalid, 1)
            ctx.set(axi.wstrb, 0xff)
            ctx.set(axi.rready, 1)
            ctx.set(axi.bready, 1)
        ctx.set(lite.bready, 1)
        ctx.set(lite.rready, 1)
        for _ in range(20):             # let the streams run
            await ctx.tick()
        lat = []
        for k in range(6):
            # write word k at 0x100 + 4k, then read it back
            t = 0
            ctx.set(lite.awvalid, 1)
            ctx.set(lite.wvalid, 1)
            ctx.set(lite.awaddr, 0x100 + 4 * k)
            ctx.set(lite.wdata, 0x5a000000 + k)
            ctx.set(lite.wstrb, 0xf)
            assert ctx.get(lite.awready) and ctx.get(lite.wready)
            while True:
                await ctx.tick()
                ctx.set(lite.awvalid, 0)
                ctx.set(lite.wvalid, 0)
                t += 1
                if ctx.get(lite.bvalid):
                    break
            wlat = t
            t = 0
            await ctx.tick()
            ctx.set(lite.arvalid, 1)
            ctx.set(lite.araddr, 0x100 + 4 * k)
            assert ctx.get(lite.arready)
            while True:
                await ctx.tick()
                ctx.set(lite.arvalid, 0)
                t += 1
                if ctx.get(lite.rvalid):
                    assert ctx.get(lite.rdata) == 0x5a000000 + k
                    break
            lat.append((wlat, t))
            await ctx.tick()
        out["lat"] = lat

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    if stream:
        assert all(2 <= w <= 3 and 3 <= r <= 4 for w, r in out["lat"]), out["lat"]
    else:
        assert out["lat"] == [(2, 3)] * 6


def test_lite_read_waits_for_held_r_beat():
    """An AXI4 R beat held by ``rready`` low keeps its data (it lives in the memory's
    output register) while a Lite read of another word is pending; the Lite read is served
    once the beat is taken, with its own data."""
    dut = GuestRAM(size=4096, data_width=64)

    async def tb(ctx):
        axi, lite = dut.axi, dut.lite
        for addr, value in ((0x200, 0x11111111), (0x204, 0x22222222), (0x300, 0x99999999)):
            assert await lite_write(ctx, lite, addr, value) == Resp.OKAY
        ctx.set(axi.arvalid, 1)
        ctx.set(axi.araddr, 0x200)
        ctx.set(axi.arlen, 1)
        ctx.set(axi.arsize, 3)
        ctx.set(axi.arburst, Burst.INCR)
        ctx.set(axi.rready, 0)
        await ctx.tick()
        ctx.set(axi.arvalid, 0)
        while not ctx.get(axi.rvalid):
            await ctx.tick()
        ctx.set(lite.arvalid, 1)
        ctx.set(lite.araddr, 0x300)
        ctx.set(lite.rready, 1)
        await ctx.tick()
        ctx.set(lite.arvalid, 0)
        for _ in range(10):
            assert ctx.get(axi.rvalid) and ctx.get(axi.rdata) == 0x22222222_11111111
            assert not ctx.get(lite.rvalid)
            await ctx.tick()
        ctx.set(axi.rready, 1)
        await ctx.tick()
        ctx.set(axi.rready, 0)
        got = None
        for _ in range(6):
            if ctx.get(lite.rvalid):
                got = ctx.get(lite.rdata)
            await ctx.tick()
        assert got == 0x99999999
        assert ctx.get(axi.rvalid) and ctx.get(axi.rdata) == 0   # second beat: unwritten

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
