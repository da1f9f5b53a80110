# amaranth: UnusedElaboratable=no
"""The serial bridge's protocol engine (rtl/board/bridge.py) in Amaranth's simulator.

One cycle loop plays the host (a byte source with gaps, a byte sink that stalls) and an
AXI4-Lite slave (random ready, random response latency, an address range answered
SLVERR, a word memory). The slave checks the master's side of AXI: AW/W/AR valid and
payload held until ready, ``wstrb`` all ones, word-aligned addresses, one write and one
read in flight at a time, no response accepted that was not asked for.

Checked: write and read frames of 1..256 words (every reply byte, the memory after),
address wrap past 2**32 - 4, address bits 1..0 ignored, SLVERR on any word -> NAK (the
other words still written / read, the data byte count unchanged), unknown command bytes
-> one NAK each, the idle timeout (a frame cut short is dropped silently, words already
complete are written; a silence shorter than the timeout is not a timeout), a slow slave
(the host's bytes are held, not lost), and the cycle counts behind the documented
throughput and latency.
"""

import random
import struct

import pytest
from amaranth.sim import Simulator

from viommu.rtl.board.bridge import SerialBridge
from viommu.rtl.core.layouts import BridgeByte, BridgeHeader, pack


ACK, NAK = BridgeByte.ACK, BridgeByte.NAK


def wframe(addr, words):
    return (pack(BridgeHeader, cmd=BridgeByte.WRITE, addr=addr, count=len(words) - 1) +
            b"".join(struct.pack("<I", w) for w in words))


def rframe(addr, n):
    return pack(BridgeHeader, cmd=BridgeByte.READ, addr=addr, count=n - 1)


class Bench:
    """Host + AXI4-Lite slave around a :class:`SerialBridge`.

    ``script`` is a list of steps: ``("send", bytes, gap)`` queues bytes (``gap``: idle
    cycles before each byte, an int or a callable), ``("wait", cycles)`` waits that long
    after everything queued so far has been taken, ``("expect", n)`` waits until ``n``
    more reply bytes have arrived (or fails after a bound).
    """

    def __init__(self, *, timeout=200, seed=0, latency=(0, 4), ready_p=0.7, tx_ready_p=0.8,
                 err_ranges=(), mem=None):
        self.dut = SerialBridge(timeout=timeout)
        self.rng = random.Random(seed)
        self.latency = latency
        self.ready_p = ready_p
        self.tx_ready_p = tx_ready_p
        self.err_ranges = list(err_ranges)
        self.mem = dict(mem or {})
        self.replies = []           # (cycle, byte)
        self.aborts = []            # cycles of ``aborted`` pulses
        self.writes = []            # (addr, data, resp) in bus order
        self.reads = []             # (addr, resp)
        self.rx_taken = []          # cycle of each byte taken
        self.b_cycles = []          # cycles of B handshakes
        self.cycle = 0

    def is_err(self, addr):
        return any(a <= addr < b for a, b in self.err_ranges)

    def word(self, addr):
        return self.mem.get(addr, (addr * 0x9e3779b1 + 0x1234567) & 0xffffffff)

    def run(self, script, *, max_cycles=400_000):
        dut, rng = self.dut, self.rng
        outbox = []                 # [byte, gap] for bytes not yet taken

        async def bench(ctx):
            aw = w = None           # captured AW / W of the pending write
            b_due = r_due = None    # cycle at which the response is presented
            b_resp = r_word = r_resp = None
            ar = None
            hold = {}               # valid payloads that must stay stable
            steps = list(script)
            wait_until = None
            expect_at = None
            while True:
                # --- script ------------------------------------------------------------------
                while steps and wait_until is None and expect_at is None:
                    kind, *args = steps.pop(0)
                    if kind == "send":
                        data, gap = args
                        for b in data:
                            outbox.append([b, gap() if callable(gap) else gap])
                    elif kind == "wait":
                        wait_until = ("after_send", args[0])
                    elif kind == "expect":
                        expect_at = (len(self.replies) + args[0], self.cycle + args[1]
                                     if len(args) > 1 else self.cycle + 200_000)
                if isinstance(wait_until, tuple):
                    if not outbox:
                        wait_until = self.cycle + wait_until[1]
                elif wait_until is not None and self.cycle >= wait_until:
                    wait_until = None
                if expect_at is not None:
                    if len(self.replies) >= expect_at[0]:
                        expect_at = None
                    else:
                        assert self.cycle < expect_at[1], \
                            f"reply bytes missing: {len(self.replies)} of {expect_at[0]}"
                if not steps and wait_until is None and expect_at is None and not outbox:
                    break
                assert self.cycle < max_cycles

                # --- host byte source and sink ---------------------------------------------
                if outbox and outbox[0][1] > 0:
                    outbox[0][1] -= 1
                    ctx.set(dut.rx.valid, 0)
                elif outbox:
                    ctx.set(dut.rx.valid, 1)
                    ctx.set(dut.rx.payload, outbox[0][0])
                else:
                    ctx.set(dut.rx.valid, 0)
                ctx.set(dut.tx.ready, int(rng.random() < self.tx_ready_p))

                # --- AXI4-Lite slave inputs --------------------------------------------------
                bus = dut.bus
                ctx.set(bus.awready, int(aw is None and rng.random() < self.ready_p))
                ctx.set(bus.wready, int(w is None and rng.random() < self.ready_p))
                ctx.set(bus.arready, int(ar is None and rng.random() < self.ready_p))
                b_on = b_due is not None and self.cycle >= b_due
                r_on = r_due is not None and self.cycle >= r_due
                ctx.set(bus.bvalid, int(b_on))
                ctx.set(bus.bresp, b_resp if b_on else 0)
                ctx.set(bus.rvalid, int(r_on))
                ctx.set(bus.rdata, r_word if r_on else 0)
                ctx.set(bus.rresp, r_resp if r_on else 0)

                # --- observe -----------------------------------------------------------------
                if ctx.get(dut.rx.valid) and ctx.get(dut.rx.ready):
                    outbox.pop(0)
                    self.rx_taken.append(self.cycle)
                if ctx.get(dut.tx.valid) and ctx.get(dut.tx.ready):
                    self.replies.append((self.cycle, ctx.get(dut.tx.payload)))
                if ctx.get(dut.aborted):
                    self.aborts.append(self.cycle)
                for ch, sigs in (("aw", ("awaddr", "awprot")), ("w", ("wdata", "wstrb")),
                                 ("ar", ("araddr", "arprot"))):
                    valid = ctx.get(getattr(bus, ch + "valid"))
                    ready = ctx.get(getattr(bus, ch + "ready"))
                    vals = tuple(ctx.get(getattr(bus, s)) for s in sigs)
                    if ch in hold:
                        assert valid, f"{ch}valid dropped before ready"
                        assert vals == hold[ch], f"{ch} payload changed while waiting"
                    if valid and not ready:
                        hold[ch] = vals
                    else:
                        hold.pop(ch, None)
                    if valid and ready:
                        if ch == "aw":
                            assert vals[0] % 4 == 0 and vals[1] == 0, vals
                            assert b_due is None, "second write while one is in flight"
                            aw = vals[0]
                        elif ch == "w":
                            assert vals[1] == 0b1111, "wstrb not all ones"
                            assert b_due is None, "second write while one is in flight"
                            w = vals[0]
                        else:
                            assert vals[0] % 4 == 0 and vals[1] == 0, vals
                            assert r_due is None, "second read while one is in flight"
                            ar = vals[0]
                            r_due = self.cycle + 1 + rng.randint(*self.latency)
                            r_resp = 2 if self.is_err(ar) else 0
                            r_word = self.word(ar) if not r_resp else 0xbad0bad0
                            self.reads.append((ar, r_resp))
                if b_on and ctx.get(bus.bready):
                    b_due = aw = w = None
                    self.b_cycles.append(self.cycle)
                if r_on and ctx.get(bus.rready):
                    r_due = ar = None
                if aw is not None and w is not None and b_due is None:
                    b_resp = 2 if self.is_err(aw) else 0
                    if not b_resp:
                        self.mem[aw] = w
                    self.writes.append((aw, w, b_resp))
                    b_due = self.cycle + 1 + rng.randint(*self.latency)
                await ctx.tick()
                self.cycle += 1

        sim = Simulator(self.dut)
        sim.add_clock(1e-8)
        sim.add_testbench(bench)
        sim.run()
        return self

    def reply_bytes(self):
        return bytes(b for _, b in self.replies)


def expected_read(bench, addr, n):
    out = b""
    ok = True
    for k in range(n):
        a = (addr + 4 * k) & 0xffffffff
        if bench.is_err(a):
            ok = False
            out += struct.pack("<I", 0xbad0bad0)
        else:
            out += struct.pack("<I", bench.word(a))
    return out + bytes([ACK if ok else NAK])


# --- tests -------------------------------------------------------------------------------

def test_timeout_validated():
    with pytest.raises(ValueError, match="timeout must be an integer in 16"):
        SerialBridge(timeout=15)
    with pytest.raises(ValueError, match="timeout"):
        SerialBridge(timeout=1.5e3)


def test_random_frames_against_model():
    """Random write and read frames (1..256 words, random addresses, random byte gaps,
    a stalling reply sink, random slave timing): every reply byte and the memory match
    a model of the protocol; no frame times out."""
    rng = random.Random(7)
    script, expect = [], b""
    model = {}
    b = Bench(seed=1, timeout=500)
    frames = []
    for i in range(24):
        n = rng.choice([1, 1, 2, 3, 7, 16, 64, rng.randint(1, 256)])
        addr = rng.randrange(0, 1 << 20) * 4
        if rng.random() < 0.5:
            words = [rng.getrandbits(32) for _ in range(n)]
            frames.append(("W", addr, words))
        else:
            frames.append(("R", addr, n))
    for kind, addr, arg in frames:
        if kind == "W":
            script += [("send", wframe(addr, arg), lambda: rng.choice([0, 0, 0, 1, 5])),
                       ("expect", 1)]
            for k, wd in enumerate(arg):
                model[addr + 4 * k] = wd
            expect += bytes([ACK])
        else:
            script += [("send", rframe(addr, arg), lambda: rng.choice([0, 3])),
                       ("expect", 4 * arg + 1)]
            words = [model.get(addr + 4 * k, b.word(addr + 4 * k)) for k in range(arg)]
            expect += b"".join(struct.pack("<I", wd) for wd in words) + bytes([ACK])
    b.run(script)
    assert b.reply_bytes() == expect
    assert b.aborts == []
    for a, wd in model.items():
        assert b.mem[a] == wd
    # bus order: every write frame's words in order, at consecutive addresses
    wr = [(a, d) for a, d, _ in b.writes]
    exp_wr = [(addr + 4 * k, wd) for kind, addr, arg in frames if kind == "W"
              for k, wd in enumerate(arg)]
    assert wr == exp_wr


def test_max_frames_and_address_wrap():
    """256-word frames, the largest, starting 8 bytes below 2**32 (wrapping to 0), and
    address bits 1..0 ignored."""
    rng = random.Random(3)
    words = [rng.getrandbits(32) for _ in range(256)]
    start = 0xfffffff8
    b = Bench(seed=2)
    b.run([("send", wframe(start | 3, words), 0), ("expect", 1),
           ("send", rframe(start + 2, 256), 0), ("expect", 4 * 256 + 1)])
    addrs = [(start + 4 * k) & 0xffffffff for k in range(256)]
    assert [a for a, _, _ in b.writes] == addrs
    assert [a for a, _ in b.reads] == addrs
    data = b"".join(struct.pack("<I", w) for w in words)
    assert b.reply_bytes() == bytes([ACK]) + data + bytes([ACK])


def test_error_responses_nak():
    """SLVERR on one word of a write frame: every word still written in order (the good
    ones stored), NAK. On a read frame: all 4n data bytes, the good words right, NAK.
    The next frames, without errors, ACK again (the error does not stick)."""
    err = (0x2008, 0x200c)
    b = Bench(seed=4, err_ranges=[err])
    words = [0x11111111, 0x22222222, 0x33333333, 0x44444444]
    b.run([
        ("send", wframe(0x2000, words), 0), ("expect", 1),
        ("send", rframe(0x2000, 4), 0), ("expect", 17),
        ("send", wframe(0x3000, [5, 6]), 0), ("expect", 1),
        ("send", rframe(0x3000, 2), 0), ("expect", 9),
    ])
    assert [(a, r) for a, _, r in b.writes[:4]] == [(0x2000, 0), (0x2004, 0), (0x2008, 2),
                                                     (0x200c, 0)]
    rep = b.reply_bytes()
    assert rep[0] == NAK
    got = rep[1:18]
    assert got == (struct.pack("<IIII", *words[:2], 0xbad0bad0, words[3]) + bytes([NAK]))
    assert rep[18:] == bytes([ACK]) + struct.pack("<II", 5, 6) + bytes([ACK])
    assert 0x2008 not in b.mem


def test_unknown_commands_nak():
    """Each byte that cannot start a frame is answered by one NAK; nothing reaches the
    bus; a frame right after works."""
    junk = bytes([0x00, 0xff, ord("w"), ord("r"), ACK, NAK, 0x56, 0x53])
    b = Bench(seed=5)
    b.run([("send", junk, 2), ("expect", len(junk)),
           ("send", wframe(0x40, [0xcafe]), 0), ("expect", 1)])
    assert b.reply_bytes() == bytes([NAK]) * len(junk) + bytes([ACK])
    assert [(a, d) for a, d, _ in b.writes] == [(0x40, 0xcafe)]
    assert b.reads == []


@pytest.mark.parametrize("cut", [1, 3, 6, 6 + 4 + 2, 6 + 4 * 3 - 1])
def test_idle_timeout_resync(cut):
    """A frame cut after ``cut`` bytes, then silence: after ``timeout`` cycles the frame
    is dropped (``aborted`` pulses once, nothing is sent), words already complete were
    written, the partial one not. A frame sent afterwards is understood."""
    timeout = 300
    words = [0xa0a0a0a0, 0xb1b1b1b1, 0xc2c2c2c2]
    frame = wframe(0x100, words)[:cut]
    b = Bench(seed=6, timeout=timeout)
    b.run([("send", frame, 0), ("wait", timeout + 20),
           ("send", rframe(0x100, 1), 0), ("expect", 5)])
    assert len(b.aborts) == 1
    complete = max(0, (cut - 6) // 4)
    assert [(a, d) for a, d, _ in b.writes] == [(0x100 + 4 * k, words[k])
                                                for k in range(complete)]
    first = words[0] if complete else b.word(0x100)
    assert b.reply_bytes() == struct.pack("<I", first) + bytes([ACK])
    # the timeout counts from the last byte taken; the FSM is idle again ``timeout``
    # cycles later (the pulse, registered, shows one cycle after)
    assert b.aborts[0] - b.rx_taken[len(frame) - 1] == timeout + 1


def test_silence_shorter_than_timeout_is_not_a_timeout():
    """Gaps of timeout - 2 cycles between every byte of a frame: no abort, ACK."""
    timeout = 64
    b = Bench(seed=8, timeout=timeout, ready_p=1.0, tx_ready_p=1.0, latency=(0, 0))
    b.run([("send", wframe(0x10, [1, 2]), timeout - 2), ("expect", 1)])
    assert b.aborts == []
    assert b.reply_bytes() == bytes([ACK])
    assert b.mem[0x10] == 1 and b.mem[0x14] == 2


def test_slow_slave_holds_bytes():
    """A slave answering after 40..60 cycles while the host sends at full speed: the
    bridge stalls the byte stream (nothing lost), the words are written, ACK; the stall is
    not counted as host silence (timeout 32 < slave latency)."""
    b = Bench(seed=9, timeout=32, latency=(40, 60), ready_p=1.0)
    words = list(range(1, 11))
    b.run([("send", wframe(0x800, words), 0), ("expect", 1),
           ("send", rframe(0x800, 10), 0), ("expect", 41)])
    assert b.aborts == []
    assert b.reply_bytes() == bytes([ACK]) + b"".join(struct.pack("<I", w)
                                                       for w in words) + bytes([ACK])


@pytest.mark.parametrize("latency, write_cpw, read_cpw", [(0, 5.0, 5), (3, 6.0, 7),
                                                       (10, 12.8, 14)])
def test_cycles(latency, write_cpw, read_cpw):
    """Throughput and latency as documented, with a host that sends and takes a byte every
    cycle and an always-ready slave answering L = latency + 1 cycles after the address
    handshake: cycles per word of a 64-word write and read frame, the ACK 3 cycles after
    the last B, the first read byte L + 5 cycles after the header."""
    b = Bench(seed=10, latency=(latency, latency), ready_p=1.0, tx_ready_p=1.0)
    n = 64
    b.run([("send", wframe(0, list(range(n))), 0), ("expect", 1),
           ("send", rframe(0, n), 0), ("expect", 4 * n + 1)])
    taken = b.rx_taken
    hdr_end = taken[5]
    data_end = taken[6 + 4 * n - 1]
    assert (data_end - hdr_end) / n <= write_cpw, (data_end - hdr_end) / n
    if latency == 0:                        # one stall cycle per word, none more
        assert data_end - hdr_end == 5 * n - 1
    ack_cycle = b.replies[0][0]
    assert ack_cycle - b.b_cycles[n - 1] == 3
    rd_hdr_end = taken[6 + 4 * n + 5]
    data_cycles = [c for c, _ in b.replies[1:-1]]          # without ACK and status
    assert data_cycles[0] - rd_hdr_end == latency + 1 + 5
    words = data_cycles[::4]
    steady = [y - x for x, y in zip(words[1:], words[2:])]     # after the prefetched one
    assert set(steady) == {read_cpw}, steady
    # the bytes of a word leave back to back
    assert all(data_cycles[4 * k + 3] - data_cycles[4 * k] == 3 for k in range(n))
