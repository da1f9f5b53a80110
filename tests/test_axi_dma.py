# amaranth: UnusedElaboratable=no
"""The AXI4 DMA master (rtl/bus/axi.py) in Amaranth's simulator, against a Python AXI4 slave.

The bench is one cycle loop that plays every agent around the DUT: the engine (read and
write command sources, the ``wr_data`` source, the ``rd_data`` and ``wr_resp`` sinks) and an
AXI4 memory slave with random ready/valid gaps, a random read latency and optional error
ranges. It checks, besides the DMA contract of rtl/bus/dma.py:

* AXI rules: AR/AW/W hold valid and payload while ``valid & ~ready``; every burst is INCR
  of full-width beats (``AxSIZE = log2(width)``), has at most ``max_burst`` beats, never
  crosses 4 KiB, has ``AxCACHE = 0b0011``, ``AxPROT = 0``, ``AxLOCK = 0``; ``wlast`` is on
  beat ``awlen`` of each burst and nowhere else;
* the bursts of a command cover exactly its bus beats, in order, none shared by two
  commands; every W beat's ``wstrb`` enables exactly the bytes of ``[addr, addr+len)``;
* the engine streams hold valid/payload while not ready; each read command gets exactly
  ``ceil(len/width)`` beats with ``last`` on the final one, data equal to memory, ``err``
  on exactly the beats built from an R beat the slave answered with SLVERR/DECERR;
  each write command gets one ``wr_resp`` in order, ``err`` iff one of its bytes hit an
  error range; memory after the writes equals the expected image (bytes outside the
  written ranges unchanged).

Random commands (fixed seeds): addresses anywhere in the 64-bit space, next to 4 KiB
boundaries and next to 2**64 - 1 (never wrapping), lengths 1..4096; widths 8 and 16.
Cycle counts: latency from command to first beat, and throughput of 4096-byte transfers
and of back-to-back short transfers with a zero-latency, always-ready slave.
"""

import collections
import random

import pytest
from amaranth.back import verilog
from amaranth.hdl import Module, Shape
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from viommu.rtl.bus.axi import (AXI4DMAMaster, AXI4Signature, AXI4LiteSignature, flat_ports,
                            Resp)
from viommu.rtl.bus.dma import DMASignature


PAGE = 4096
TOP = 1 << 64


# --- memory and expectations --------------------------------------------------------------

class Memory:
    """Sparse byte memory over 64-bit addresses; a page not yet touched holds bytes derived
    from its number (two instances with the same seed start out identical)."""

    def __init__(self, seed):
        self.seed = seed
        self.pages = {}

    def page(self, pn):
        p = self.pages.get(pn)
        if p is None:
            p = self.pages[pn] = bytearray(random.Random(self.seed * 1_000_003 + pn)
                                           .randbytes(PAGE))
        return p

    def read(self, addr, n):
        out = bytearray()
        while n:
            off = addr % PAGE
            k = min(n, PAGE - off)
            out += self.page(addr // PAGE)[off:off + k]
            addr, n = addr + k, n - k
        return bytes(out)

    def write(self, addr, data):
        i = 0
        while i < len(data):
            off = addr % PAGE
            k = min(len(data) - i, PAGE - off)
            self.page(addr // PAGE)[off:off + k] = data[i:i + k]
            addr, i = addr + k, i + k

    def write_byte(self, addr, value):
        self.page(addr // PAGE)[addr % PAGE] = value

    def same_as(self, other):
        for pn in set(self.pages) | set(other.pages):
            if self.page(pn) != other.page(pn):
                a, b = self.page(pn), other.page(pn)
                i = next(i for i in range(PAGE) if a[i] != b[i])
                return f"byte {pn * PAGE + i:#x}: {a[i]:#04x} != {b[i]:#04x}"
        return None


def hits(ranges, lo, hi):
    """Whether [lo, hi) meets one of the half-open ``ranges``."""
    return any(a < hi and lo < b for a, b in ranges)


def bus_beats(addr, n, W):
    """Beat-aligned bus addresses spanned by [addr, addr+n)."""
    first = addr - addr % W
    last = (addr + n - 1) - (addr + n - 1) % W
    return list(range(first, last + W, W))


def expected_strobe(beat, addr, n, W):
    return sum(1 << lane for lane in range(W) if addr <= beat + lane < addr + n)


def expected_read_errs(addr, n, W, err_ranges):
    """``err`` of each output beat: set when an R beat it takes bytes from was an error."""
    beats = bus_beats(addr, n, W)
    berr = [hits(err_ranges, b, b + W) for b in beats]
    nout = -(-n // W)
    o = addr % W
    out = []
    for k in range(nout):
        # output beat k holds bytes addr + kW .. addr + kW + W - 1 (clipped to the command)
        lo = addr + k * W
        hi = min(lo + W, addr + n)
        used = {(a - beats[0]) // W for a in (lo, hi - 1)}
        assert o or len(used) == 1
        out.append(any(berr[j] for j in used))
    return out


# --- the bench ----------------------------------------------------------------------------

class Bench:
    """One cycle loop driving every agent around an :class:`AXI4DMAMaster`."""

    def __init__(self, dut, *, seed, mem, err_ranges=(), read_latency=(1, 10),
                 b_latency=(1, 6), p_arready=0.6, p_awready=0.6, p_wready=0.7,
                 p_rvalid=0.75, p_bvalid=0.75, p_rd_ready=0.75, p_resp_ready=0.75,
                 p_cmd=0.5, p_wdata=0.8):
        self.dut = dut
        self.W = dut.width
        self.rng = random.Random(seed)
        self.mem = mem
        self.err_ranges = list(err_ranges)
        self.read_latency = read_latency
        self.b_latency = b_latency
        self.p = dict(arready=p_arready, awready=p_awready, wready=p_wready,
                      rvalid=p_rvalid, bvalid=p_bvalid, rd_ready=p_rd_ready,
                      resp_ready=p_resp_ready, cmd=p_cmd, wdata=p_wdata)
        self.cycle = 0
        # cycle stamps for latency/throughput measurements
        self.rd_cmd_accepted = []
        self.rd_beat_cycles = []        # per command: cycles of its output beats
        self.wr_cmd_accepted = []
        self.w_beat_cycles = []         # cycles of W handshakes
        self.aw_cycles = []
        self.wr_resp_cycles = []
        # situations seen (to show that the random traffic reaches them)
        self.cov = collections.Counter()

    def _chance(self, name):
        p = self.p[name]
        return p >= 1 or self.rng.random() < p

    async def run(self, ctx, rd_cmds=(), wr_cmds=(), max_cycles=200_000):
        """Run ``rd_cmds`` [(addr, len)] and ``wr_cmds`` [(addr, len, data)] to completion.
        Returns (read results [[(data bytes, err)] per command], write errs [bool])."""
        dut, W, rng = self.dut, self.W, self.rng
        bus, dma = dut.bus, dut.dma
        aw_bits = dut.addr_width
        data_mask = (1 << (8 * W)) - 1

        # engine side
        rd_q = collections.deque(rd_cmds)
        wr_q = collections.deque((a, n) for a, n, _ in wr_cmds)
        wdata_q = collections.deque()
        for a, n, payload in wr_cmds:
            assert len(payload) == n
            nb = -(-n // W)
            for k in range(nb):
                chunk = payload[k * W:(k + 1) * W]
                chunk += rng.randbytes(W - len(chunk))      # bytes past len: garbage
                wdata_q.append((int.from_bytes(chunk, "little"), int(k == nb - 1)))
        rd_results = [[] for _ in rd_cmds]
        rd_idx = 0
        wr_errs = []
        self.rd_beat_cycles = [[] for _ in rd_cmds]

        # expected bus beats, in command order: (beat address, command index)
        rd_exp = collections.deque((b, i) for i, (a, n) in enumerate(rd_cmds)
                                   for b in bus_beats(a, n, W))
        wr_exp = collections.deque((b, i) for i, (a, n, _) in enumerate(wr_cmds)
                                   for b in bus_beats(a, n, W))

        # slave state
        r_q = collections.deque()       # (available cycle, beat addr, rlast)
        r_bursts = 0                    # bursts accepted on AR and not finished on R
        aw_bursts = collections.deque() # bursts whose W beats are not all in
        w_pending = collections.deque() # W beats received before their AW
        b_q = collections.deque()       # (available cycle, err)

        # driven values
        rc = wc = wd = None             # payload being presented (held until accepted)
        r_cur = b_cur = None
        prev = {}                       # channel -> payload if valid & ~ready last cycle

        def stable(ch, valid, ready, payload):
            held = prev.pop(ch, None)
            if held is not None:
                assert valid, f"cycle {self.cycle}: {ch} valid dropped before ready"
                assert payload == held, \
                    f"cycle {self.cycle}: {ch} payload changed while stalled: {held} -> {payload}"
            if valid and not ready:
                prev[ch] = payload

        # resolve every signal once; set only what changes
        S = {name: getattr(bus, name) for name in bus.signature.members}
        for ch in ("rd_cmd", "rd_data", "wr_cmd", "wr_data", "wr_resp"):
            st = getattr(dma, ch)
            S[ch + ".valid"] = st.valid
            S[ch + ".ready"] = st.ready
            S[ch + ".payload"] = st.payload.as_value()
        get = ctx.get
        driven = {}

        def set_(name, value):
            value = int(value)
            if driven.get(name) != value:
                driven[name] = value
                ctx.set(S[name], value)

        def sig(name):
            return get(S[name])
        done_at = None
        while True:
            cy = self.cycle
            assert cy < max_cycles, "timeout"
            # ---- what the bench presents this cycle
            if rc is None and rd_q and self._chance("cmd"):
                rc = rd_q[0]
                set_("rd_cmd.payload", rc[0] | (rc[1] << aw_bits))
            set_("rd_cmd.valid", rc is not None)
            if wc is None and wr_q and self._chance("cmd"):
                wc = wr_q[0]
                set_("wr_cmd.payload", wc[0] | (wc[1] << aw_bits))
            set_("wr_cmd.valid", wc is not None)
            if wd is None and wdata_q and self._chance("wdata"):
                wd = wdata_q[0]
                set_("wr_data.payload", wd[0] | (wd[1] << (8 * W)))
            set_("wr_data.valid", wd is not None)
            rd_ready = self._chance("rd_ready")
            resp_ready = self._chance("resp_ready")
            set_("rd_data.ready", rd_ready)
            set_("wr_resp.ready", resp_ready)

            arready = self._chance("arready")
            awready = self._chance("awready")
            wready = self._chance("wready")
            set_("arready", arready)
            set_("awready", awready)
            set_("wready", wready)
            if r_cur is None and r_q and r_q[0][0] <= cy and self._chance("rvalid"):
                _, baddr, rlast = r_q.popleft()
                if hits(self.err_ranges, baddr, baddr + W):
                    rdata = rng.getrandbits(8 * W)
                    rresp = rng.choice((Resp.SLVERR, Resp.DECERR))
                else:
                    rdata = int.from_bytes(self.mem.read(baddr, W), "little")
                    rresp = Resp.OKAY
                r_cur = (rdata, rresp, rlast)
                set_("rdata", rdata)
                set_("rresp", rresp)
                set_("rlast", rlast)
                set_("rid", 0)
            set_("rvalid", r_cur is not None)
            if b_cur is None and b_q and b_q[0][0] <= cy and self._chance("bvalid"):
                _, berr = b_q.popleft()
                b_cur = rng.choice((Resp.SLVERR, Resp.DECERR)) if berr else Resp.OKAY
                set_("bresp", b_cur)
                set_("bid", 0)
            set_("bvalid", b_cur is not None)

            # ---- what the DUT does this cycle
            # engine side
            if rc is not None and sig("rd_cmd.ready"):
                rd_q.popleft()
                self.rd_cmd_accepted.append(cy)
                rc = None
            if wc is not None and sig("wr_cmd.ready"):
                wr_q.popleft()
                self.wr_cmd_accepted.append(cy)
                wc = None
            if wd is not None and sig("wr_data.ready"):
                wdata_q.popleft()
                wd = None
            v = sig("rd_data.valid")
            raw = sig("rd_data.payload") if v else None
            stable("rd_data", v, rd_ready, raw)
            if v and rd_ready:
                assert rd_idx < len(rd_cmds), f"cycle {cy}: rd_data beat beyond the commands"
                a, n = rd_cmds[rd_idx]
                beats = rd_results[rd_idx]
                k = len(beats)
                nout = -(-n // W)
                last = (raw >> (8 * W)) & 1
                err = (raw >> (8 * W + 1)) & 1
                assert last == (k == nout - 1), \
                    f"cycle {cy}: read {rd_idx} ({a:#x}+{n}) beat {k}/{nout}: last={last}"
                beats.append(((raw & data_mask).to_bytes(W, "little"), bool(err)))
                self.rd_beat_cycles[rd_idx].append(cy)
                if last:
                    rd_idx += 1
            v = sig("wr_resp.valid")
            raw = sig("wr_resp.payload") if v else None
            stable("wr_resp", v, resp_ready, raw)
            if v and resp_ready:
                assert len(wr_errs) < len(wr_cmds), f"cycle {cy}: wr_resp beyond the commands"
                wr_errs.append(bool(raw & 1))
                self.wr_resp_cycles.append(cy)

            # AR
            v = sig("arvalid")
            ar = None
            if v:
                ar = (sig("araddr"), sig("arlen"), sig("arsize"), sig("arburst"),
                      sig("arcache"), sig("arprot"), sig("arlock"), sig("arid"))
            stable("ar", v, arready, ar)
            if v and arready:
                self._check_burst("AR", ar, rd_exp)
                lat = rng.randint(*self.read_latency)
                r_bursts += 1
                if r_bursts == dut.max_outstanding:
                    self.cov["ar_at_max_outstanding"] += 1
                for i in range(ar[1] + 1):
                    r_q.append((cy + lat, ar[0] + i * W, int(i == ar[1])))
            # R
            if r_cur is not None and sig("rready"):
                r_bursts -= r_cur[2]
                r_cur = None
            elif r_cur is not None:
                self.cov["r_stalled"] += 1
            # AW
            v = sig("awvalid")
            aw = None
            if v:
                aw = (sig("awaddr"), sig("awlen"), sig("awsize"), sig("awburst"),
                      sig("awcache"), sig("awprot"), sig("awlock"), sig("awid"))
            stable("aw", v, awready, aw)
            if v and awready:
                cmds = self._check_burst("AW", aw, wr_exp)
                if aw_bursts:
                    self.cov["aw_ahead_of_w"] += 1
                aw_bursts.append(dict(addr=aw[0], beats=aw[1] + 1, idx=0, cmd=cmds[0],
                                      err=False))
                self.aw_cycles.append(cy)
            # W
            v = sig("wvalid")
            w = (sig("wdata"), sig("wstrb"), sig("wlast")) if v else None
            stable("w", v, wready, w)
            if v and wready:
                if not aw_bursts:
                    self.cov["w_before_aw"] += 1
                w_pending.append(w)
                self.w_beat_cycles.append(cy)
            while aw_bursts and w_pending:
                b = aw_bursts[0]
                wdata, wstrb, wlast = w_pending.popleft()
                i = b["idx"]
                baddr = b["addr"] + i * W
                a, n, payload = wr_cmds[b["cmd"]]
                assert wlast == (i == b["beats"] - 1), \
                    f"cycle {cy}: W beat {i} of a {b['beats']}-beat burst has wlast={wlast}"
                exp = expected_strobe(baddr, a, n, W)
                assert wstrb == exp, \
                    (f"cycle {cy}: write {b['cmd']} ({a:#x}+{n}) beat {baddr:#x}: "
                     f"wstrb {wstrb:#x}, expected {exp:#x}")
                for lane in range(W):
                    if wstrb >> lane & 1:
                        byte = (wdata >> (8 * lane)) & 0xff
                        assert byte == payload[baddr + lane - a], \
                            f"cycle {cy}: write {b['cmd']} byte {baddr + lane:#x} wrong"
                        if hits(self.err_ranges, baddr + lane, baddr + lane + 1):
                            b["err"] = True
                        else:
                            self.mem.write_byte(baddr + lane, byte)
                b["idx"] += 1
                if b["idx"] == b["beats"]:
                    aw_bursts.popleft()
                    b_q.append((cy + rng.randint(*self.b_latency), b["err"]))
            # B
            if b_cur is not None and sig("bready"):
                b_cur = None

            # ---- done?
            if (done_at is None and rd_idx == len(rd_cmds) and len(wr_errs) == len(wr_cmds)):
                done_at = cy
            if done_at is not None and cy >= done_at + 20:
                break
            await ctx.tick()
            self.cycle += 1

        # nothing left over, nothing more offered
        assert not rd_exp and not wr_exp, "bus beats left uncovered"
        assert not r_q and r_cur is None and not aw_bursts and not w_pending and not b_q
        assert not wdata_q, f"{len(wdata_q)} wr_data beats were not consumed"
        for s in (dma.rd_data.valid, dma.wr_resp.valid, bus.arvalid, bus.awvalid, bus.wvalid):
            assert not get(s), f"{s} still valid after the last command"
        return rd_results, wr_errs

    def _check_burst(self, ch, ax, expect):
        addr, length, size, burst, cache, prot, lock, id_ = ax
        W = self.W
        beats = length + 1
        cy = self.cycle
        assert size == W.bit_length() - 1, f"cycle {cy}: {ch} size {size}"
        assert burst == 1, f"cycle {cy}: {ch} burst type {burst} is not INCR"
        assert (cache, prot, lock, id_) == (0b0011, 0, 0, 0), f"cycle {cy}: {ch} {ax}"
        assert beats <= self.dut.max_burst, f"cycle {cy}: {ch} of {beats} beats"
        assert addr % W == 0, f"cycle {cy}: {ch} address {addr:#x} not aligned"
        assert addr % PAGE + beats * W <= PAGE, \
            f"cycle {cy}: {ch} {addr:#x} x {beats} crosses 4 KiB"
        cmds = set()
        for i in range(beats):
            assert expect, f"cycle {cy}: {ch} {addr:#x} x {beats} beyond the commands"
            eaddr, cmd = expect.popleft()
            assert addr + i * W == eaddr, \
                f"cycle {cy}: {ch} beat {addr + i * W:#x}, expected {eaddr:#x}"
            cmds.add(cmd)
        assert len(cmds) == 1, f"cycle {cy}: {ch} burst spans commands {cmds}"
        return sorted(cmds)


def simulate(dut, body):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    out = {}

    async def tb(ctx):
        out["result"] = await body(ctx)

    sim.add_testbench(tb)
    sim.run()
    return out["result"]


# --- stimulus -----------------------------------------------------------------------------

def random_len(rng):
    r = rng.random()
    if r < 0.35:
        return rng.randint(1, 2 * 16)
    if r < 0.65:
        return rng.randint(33, 300)
    if r < 0.9:
        return rng.randint(301, 1500)
    if r < 0.95:
        return 4096
    return rng.randint(1501, 4096)


def random_addr(rng, n, lo=0, hi=TOP):
    """An address for n bytes within [lo, hi): random, or next to a 4 KiB boundary, or at
    the top of the range."""
    r = rng.random()
    if r < 0.35:                # around a page boundary
        page = rng.randrange(lo // PAGE + 1, hi // PAGE)
        addr = page * PAGE + rng.randint(-min(n, 40) - 8, 8)
    elif r < 0.5:               # at the top, ending exactly at hi or just below
        addr = hi - n - rng.choice((0, 0, rng.randint(1, 40)))
    elif r < 0.6:               # low addresses
        addr = lo + rng.randint(0, 3 * PAGE)
    else:
        addr = rng.randrange(lo, hi - n + 1)
    return max(lo, min(addr, hi - n))


def make_dut(W, **kw):
    return AXI4DMAMaster(width=W, addr_width=64, id_width=4, **kw)


# --- tests: random traffic ----------------------------------------------------------------

def check_reads(rd_cmds, results, mem, W, err_ranges=()):
    nerr = 0
    for i, ((a, n), beats) in enumerate(zip(rd_cmds, results)):
        nout = -(-n // W)
        assert len(beats) == nout
        exp_err = expected_read_errs(a, n, W, err_ranges)
        got_err = [e for _, e in beats]
        assert got_err == exp_err, f"read {i} ({a:#x}+{n}): err {got_err} != {exp_err}"
        data = b"".join(d for d, _ in beats)
        ref = mem.read(a, n)
        for k in range(nout):
            if not exp_err[k]:
                lo, hi = k * W, min(n, k * W + W)
                assert data[lo:hi] == ref[lo:hi], \
                    f"read {i} ({a:#x}+{n}) beat {k}: {data[lo:hi].hex()} != {ref[lo:hi].hex()}"
        nerr += sum(exp_err)
    return nerr


@pytest.mark.parametrize("W", [8, 16])
@pytest.mark.parametrize("seed", [1, 2])
def test_random_reads(W, seed):
    rng = random.Random(seed * 100 + W)
    cmds = []
    for _ in range(32):
        n = random_len(rng)
        cmds.append((random_addr(rng, n), n))
    mem = Memory(seed)
    dut = make_dut(W, max_burst=(4, 16)[seed % 2], max_outstanding=(2, 8)[seed % 2])
    bench = Bench(dut, seed=seed, mem=mem, read_latency=(1, 12))

    async def body(ctx):
        return await bench.run(ctx, rd_cmds=cmds)

    results, _ = simulate(dut, body)
    check_reads(cmds, results, mem, W)
    assert bench.cov["ar_at_max_outstanding"] > 0 and bench.cov["r_stalled"] > 0


@pytest.mark.parametrize("W", [8, 16])
@pytest.mark.parametrize("seed", [1, 2])
def test_random_writes(W, seed):
    rng = random.Random(seed * 100 + W + 7)
    cmds = []
    for _ in range(32):
        n = random_len(rng)
        cmds.append((random_addr(rng, n), n, rng.randbytes(n)))
    # some writes overlap an earlier one: applied in command order
    for k in range(4):
        a, n, _ = cmds[rng.randrange(len(cmds))]
        n2 = rng.randint(1, 64)
        a2 = min(max(0, a + rng.randint(-8, n)), TOP - n2)
        cmds.insert(rng.randrange(len(cmds) + 1), (a2, n2, rng.randbytes(n2)))
    mem = Memory(seed)
    ref = Memory(seed)
    dut = make_dut(W, max_burst=(8, 16)[seed % 2], max_outstanding=(2, 8)[seed % 2])
    # seed 2: AW often refused, so W runs ahead of AW; seed 1: AW runs ahead of W
    bench = Bench(dut, seed=seed, mem=mem, p_awready=(0.8, 0.3)[seed % 2],
                  p_wready=(0.5, 0.8)[seed % 2])

    async def body(ctx):
        return await bench.run(ctx, wr_cmds=cmds)

    _, errs = simulate(dut, body)
    assert errs == [False] * len(cmds)
    assert bench.cov["aw_ahead_of_w"] > 0
    if seed == 2:
        assert bench.cov["w_before_aw"] > 0
    for a, n, payload in cmds:
        ref.write(a, payload)
    diff = mem.same_as(ref)
    assert diff is None, diff


@pytest.mark.parametrize("W", [8, 16])
def test_concurrent_reads_and_writes(W):
    """Reads of the lower half of the address space while writes go to the upper half;
    a mix of short and long commands, the slave mostly fast."""
    rng = random.Random(55 + W)
    half = TOP // 2
    rd, wr = [], []
    for _ in range(30):
        n = random_len(rng)
        rd.append((random_addr(rng, n, 0, half), n))
        n = random_len(rng)
        wr.append((random_addr(rng, n, half, TOP), n, rng.randbytes(n)))
    mem, ref = Memory(9), Memory(9)
    dut = make_dut(W)
    bench = Bench(dut, seed=3, mem=mem, read_latency=(1, 4), p_arready=0.9, p_awready=0.9,
                  p_wready=0.9, p_rvalid=0.9, p_bvalid=0.9, p_rd_ready=0.9, p_resp_ready=0.9,
                  p_cmd=0.9, p_wdata=0.95)

    async def body(ctx):
        return await bench.run(ctx, rd_cmds=rd, wr_cmds=wr)

    results, errs = simulate(dut, body)
    check_reads(rd, results, ref, W)
    assert errs == [False] * len(wr)
    for a, n, payload in wr:
        ref.write(a, payload)
    diff = mem.same_as(ref)
    assert diff is None, diff


@pytest.mark.parametrize("W", [8, 16])
def test_error_injection(W):
    """Error ranges placed on some of the commands (inside, across their start or end, a
    single byte); err must mark exactly the read beats built from an erroring R beat and
    exactly the write commands with a byte in an error range, and the streams stay
    well-formed (same beat counts, ``last`` where it belongs)."""
    rng = random.Random(77 + W)
    err_ranges = []
    rd, wr = [], []
    for i in range(24):
        n = random_len(rng) if i % 3 else rng.randint(1, 3 * W)
        a = random_addr(rng, n, 0, TOP // 2)
        rd.append((a, n))
        n2 = random_len(rng) if i % 3 else rng.randint(1, 3 * W)
        a2 = random_addr(rng, n2, TOP // 2, TOP)
        wr.append((a2, n2, rng.randbytes(n2)))
        for base, size in ((a, n), (a2, n2)):
            kind = i % 4
            if kind == 0:       # a single byte somewhere inside
                p = base + rng.randrange(size)
                err_ranges.append((p, p + 1))
            elif kind == 1:     # across the start
                err_ranges.append((max(0, base - rng.randint(0, 20)),
                                   base + rng.randint(1, min(size, 24))))
            elif kind == 2:     # across the end
                err_ranges.append((base + size - rng.randint(1, min(size, 24)),
                                   min(TOP, base + size + rng.randint(0, 20))))
            # kind 3: no error on this command (unless a neighbouring range hits it)
        if i % 7 == 5:          # bytes just outside the command: reads may still see the
            err_ranges.append((a + n, a + n + 1))       # error (same bus beat), writes not
            err_ranges.append((max(0, a2 - 1), a2))
    mem, ref = Memory(4), Memory(4)
    dut = make_dut(W, max_burst=8)
    bench = Bench(dut, seed=5, mem=mem, err_ranges=err_ranges, read_latency=(1, 6))

    async def body(ctx):
        return await bench.run(ctx, rd_cmds=rd, wr_cmds=wr)

    results, errs = simulate(dut, body)
    nerr = check_reads(rd, results, ref, W, err_ranges)
    assert nerr > 0
    exp = [hits(err_ranges, a, a + n) for a, n, _ in wr]
    assert errs == exp
    assert 0 < sum(exp) < len(exp)
    # error bytes are not written, the others are
    for a, n, payload in wr:
        for j in range(n):
            if not hits(err_ranges, a + j, a + j + 1):
                ref.write_byte(a + j, payload[j])
    diff = mem.same_as(ref)
    assert diff is None, diff


def test_address_width_32():
    """A 32-bit address bus: writes then reads next to the top of the 4 GiB space."""
    W = 8
    rng = random.Random(32)
    wr = [(2**32 - 37, 37, rng.randbytes(37)), (0x1000 - 1, 2, b"\xaa\x55"),
          (2**32 - 4096 - 100, 300, rng.randbytes(300))]
    rd = [(2**32 - 4096, 4096), (2**32 - 5, 5), (0xffff_f000 - 3, 7), (0xfff, 1)]
    dut = AXI4DMAMaster(width=W, addr_width=32, id_width=1)
    mem, ref = Memory(1), Memory(1)
    bench = Bench(dut, seed=1, mem=mem)

    async def body(ctx):
        _, errs = await bench.run(ctx, wr_cmds=wr)
        results, _ = await bench.run(ctx, rd_cmds=rd)
        return results, errs

    results, errs = simulate(dut, body)
    assert errs == [False] * len(wr)
    for a, n, payload in wr:
        ref.write(a, payload)
    assert mem.same_as(ref) is None
    check_reads(rd, results, ref, W)


# --- tests: cycle counts ------------------------------------------------------------------

FAST = dict(read_latency=(1, 1), b_latency=(1, 1), p_arready=1, p_awready=1, p_wready=1,
            p_rvalid=1, p_bvalid=1, p_rd_ready=1, p_resp_ready=1, p_cmd=1, p_wdata=1)


@pytest.mark.parametrize("W", [8, 16])
def test_latency(W):
    """With a slave answering AR at once and R one cycle later: first rd_data beat 3 cycles
    after the command is accepted when addr is aligned, 4 when not; awvalid 1 cycle after a
    write command, its first W beat 3 cycles after."""
    measured = {}
    for addr, n in ((0x1000, 64), (0x1003, 64), (0x1003, 2)):
        dut = make_dut(W)
        bench = Bench(dut, seed=0, mem=Memory(0), **FAST)

        async def body(ctx):
            return await bench.run(ctx, rd_cmds=[(addr, n)])

        simulate(dut, body)
        measured[addr, n] = bench.rd_beat_cycles[0][0] - bench.rd_cmd_accepted[0]
    assert measured == {(0x1000, 64): 3, (0x1003, 64): 4, (0x1003, 2): 4}, measured

    dut = make_dut(W)
    bench = Bench(dut, seed=0, mem=Memory(0), **FAST)

    async def body(ctx):
        return await bench.run(ctx, wr_cmds=[(0x2005, 100, bytes(100))])

    simulate(dut, body)
    t0 = bench.wr_cmd_accepted[0]
    assert bench.aw_cycles[0] - t0 == 1
    assert bench.w_beat_cycles[0] - t0 == 3
    # one B per burst, wr_resp the cycle after the last B
    assert bench.wr_resp_cycles[0] > bench.w_beat_cycles[-1]


@pytest.mark.parametrize("W", [8, 16])
@pytest.mark.parametrize("offset", [0, 5])
def test_throughput_4k(W, offset):
    """A 4096-byte read and a 4096-byte write with a zero-latency always-ready slave: about
    one beat per cycle from command to last beat."""
    addr = 0x10_0000 + offset
    dut = make_dut(W)
    bench = Bench(dut, seed=0, mem=Memory(0), **FAST)

    async def body(ctx):
        return await bench.run(ctx, rd_cmds=[(addr, 4096)])

    results, _ = simulate(dut, body)
    check_reads([(addr, 4096)], results, Memory(0), W)
    beats = 4096 // W
    cycles = bench.rd_beat_cycles[0][-1] - bench.rd_cmd_accepted[0] + 1
    assert beats / cycles >= 0.9, (beats, cycles)
    # once started, one beat every cycle
    c = bench.rd_beat_cycles[0]
    assert c[-1] - c[0] == len(c) - 1

    dut = make_dut(W)
    mem = Memory(0)
    bench = Bench(dut, seed=0, mem=mem, **FAST)
    payload = random.Random(1).randbytes(4096)

    async def body(ctx):
        return await bench.run(ctx, wr_cmds=[(addr, 4096, payload)])

    simulate(dut, body)
    assert mem.read(addr, 4096) == payload
    wbeats = len(bus_beats(addr, 4096, W))
    c = bench.w_beat_cycles
    assert len(c) == wbeats
    cycles = c[-1] - bench.wr_cmd_accepted[0] + 1
    assert wbeats / cycles >= 0.9, (wbeats, cycles)
    assert c[-1] - c[0] == len(c) - 1


@pytest.mark.parametrize("W", [8, 16])
@pytest.mark.parametrize("kind", ["aligned-beat", "unaligned-in-beat", "unaligned-2-beats"])
def test_throughput_short_commands(W, kind):
    """Back-to-back one-beat commands run at one beat per cycle, including unaligned ones
    whose output beat needs a flush cycle (it shares the cycle with the next command's
    first R beat). Two-bus-beat unaligned reads of one output beat cost two R beats each."""
    n_cmds = 64
    if kind == "aligned-beat":
        cmds = [(0x4000 + i * W, W) for i in range(n_cmds)]
    elif kind == "unaligned-in-beat":
        cmds = [(0x4000 + i * W + 1, W - 2) for i in range(n_cmds)]
    else:
        cmds = [(0x4000 + i * 2 * W + W // 2, W) for i in range(n_cmds)]
    dut = make_dut(W)
    bench = Bench(dut, seed=0, mem=Memory(0), **FAST)

    async def body(ctx):
        return await bench.run(ctx, rd_cmds=cmds,
                               wr_cmds=[(a, n, bytes(range(n))) for a, n in cmds])

    results, errs = simulate(dut, body)
    check_reads(cmds, results, Memory(0), W)
    assert errs == [False] * n_cmds
    first = bench.rd_beat_cycles[0][0]
    last = bench.rd_beat_cycles[-1][-1]
    rate = n_cmds / (last - first + 1)
    r_beats = sum(len(bus_beats(a, n, W)) for a, n in cmds)
    assert rate >= 0.9 * n_cmds / r_beats, (kind, rate)
    wc = bench.w_beat_cycles
    assert len(wc) / (wc[-1] - wc[0] + 1) >= 0.9


# --- tests: interfaces --------------------------------------------------------------------

class _Top(wiring.Component):
    def __init__(self):
        self.dmac = AXI4DMAMaster(width=16, addr_width=48, id_width=3)
        super().__init__({
            "s_axil": In(AXI4LiteSignature(addr_width=12)),
            "dma":    In(DMASignature(width=16, addr_width=48)),
            "m_axi":  Out(AXI4Signature(addr_width=48, data_width=128, id_width=3)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.dmac = self.dmac
        wiring.connect(m, wiring.flipped(self.dma), self.dmac.dma)
        wiring.connect(m, self.dmac.bus, wiring.flipped(self.m_axi))
        m.d.comb += [self.s_axil.awready.eq(0), self.s_axil.wready.eq(0),
                     self.s_axil.arready.eq(0), self.s_axil.bvalid.eq(0),
                     self.s_axil.rvalid.eq(0)]
        return m


AXI4_NAMES = """awid awaddr awlen awsize awburst awlock awcache awprot awvalid awready
    wdata wstrb wlast wvalid wready bid bresp bvalid bready arid araddr arlen arsize arburst
    arlock arcache arprot arvalid arready rid rdata rresp rlast rvalid rready""".split()
AXIL_NAMES = """awaddr awprot awvalid awready wdata wstrb wvalid wready bresp bvalid bready
    araddr arprot arvalid arready rdata rresp rvalid rready""".split()


def test_signatures():
    sig = AXI4Signature(addr_width=64, data_width=128, id_width=4)
    assert list(sig.members) == AXI4_NAMES
    assert Shape.cast(sig.members["wstrb"].shape).width == 16
    assert sig.members["awvalid"].flow == Out and sig.members["awready"].flow == In
    assert sig.members["rdata"].flow == In and sig.members["rready"].flow == Out
    assert Shape.cast(sig.members["bid"].shape).width == 4
    assert "awqos" in AXI4Signature(addr_width=32, qos=True).members
    assert sig == AXI4Signature(addr_width=64, data_width=128, id_width=4)
    lite = AXI4LiteSignature(addr_width=12)
    assert list(lite.members) == AXIL_NAMES
    assert Shape.cast(lite.members["wstrb"].shape).width == 4
    with pytest.raises(ValueError):
        AXI4LiteSignature(addr_width=12, data_width=128)
    with pytest.raises(ValueError):
        AXI4DMAMaster(width=4)
    with pytest.raises(ValueError):
        AXI4DMAMaster(width=8, max_burst=12)
    with pytest.raises(ValueError):
        AXI4DMAMaster(width=8, id_width=9)


def test_flat_ports_verilog():
    """Port names come out as cocotbext-axi's from_prefix expects them."""
    top = _Top()
    ports = flat_ports(top)
    for name in AXI4_NAMES:
        assert f"m_axi_{name}" in ports
    for name in AXIL_NAMES:
        assert f"s_axil_{name}" in ports
    assert ports["m_axi_awaddr"][1].value == "output"
    assert ports["m_axi_awready"][1].value == "input"
    assert ports["s_axil_awaddr"][1].value == "input"
    assert ports["s_axil_rdata"][1].value == "output"
    assert ports["dma_rd_cmd_payload"][1].value == "input"
    text = verilog.convert(top, name="axi_top", ports=ports)
    for name in ("m_axi_awaddr", "m_axi_rdata", "m_axi_wstrb", "s_axil_araddr",
                 "dma_rd_data_payload"):
        assert f" {name};" in text or f" {name}," in text, name
    assert "output [47:0] m_axi_awaddr;" in text
    assert "input [127:0] m_axi_rdata;" in text


# --- tests: registered command ready ------------------------------------------------------

@pytest.mark.parametrize("side", ["rd", "wr"])
def test_cmd_ready_does_not_follow_bus_ready(side):
    """``rd_cmd.ready`` / ``wr_cmd.ready`` come from the skid buffers' flip-flops: in every
    cycle they are the same whether ``arready``/``awready`` is high or low, while a stream
    of multi-burst commands keeps the splitter busy. No R/B responses come back, so the
    outstanding-burst limit stops the splitter after a few commands; by then at least
    three were accepted (one finished, one in the splitter, one caught by the skid)."""
    W = 8
    dut = make_dut(W)
    cmd = getattr(dut.dma, f"{side}_cmd")
    bus_ready = getattr(dut.bus, "arready" if side == "rd" else "awready")
    rng = random.Random(5)

    async def body(ctx):
        taken = 0
        ctx.set(dut.bus.wready, 1)
        ctx.set(dut.bus.bvalid, 0)
        ctx.set(dut.dma.rd_data.ready, 1)
        for cycle in range(200):
            ctx.set(cmd.valid, 1)
            ctx.set(cmd.payload, {"addr": 0x1000 * cycle + 3, "len": 300})
            ctx.set(bus_ready, 0)
            r0 = ctx.get(cmd.ready)
            ctx.set(bus_ready, 1)
            r1 = ctx.get(cmd.ready)
            assert r0 == r1, f"cycle {cycle}: {side}_cmd.ready follows the bus ready"
            ctx.set(bus_ready, rng.random() < 0.5)
            taken += r0
            await ctx.tick()
        return taken

    assert simulate(dut, body) >= 3
