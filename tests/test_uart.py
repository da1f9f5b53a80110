# amaranth: UnusedElaboratable=no
"""The UART (rtl/board/uart.py) in Amaranth's simulator.

* The transmitter's line is decoded cycle by cycle by a Python receiver that checks the
  frame shape exactly: start bit low for ``divisor`` cycles, 8 data bits LSB first, stop
  bit high, no idle time between back-to-back bytes, idle high.
* The receiver is driven by a Python bit-banger with bit times that are not a whole number
  of cycles (baud mismatch both ways), so mid-bit sampling is what makes it work.
* Loopback (transmitter into receiver) of random bytes at two divisors with random gaps
  and a consumer that stalls: every byte arrives, in order, nothing else.
* Framing errors (stop bit low; a break counts once), start-bit glitches, overrun (the
  waiting byte is kept, the new one dropped, nothing hangs), an idle line.
* Throughput (10 * divisor cycles per byte back to back) and the receiver's latency, as
  documented.
"""

import random

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from viommu.rtl.board.uart import UARTRx, UARTTx


def _run(dut, bench, *, vcd=None):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def frame_bits(byte, stop=1):
    return [0] + [byte >> i & 1 for i in range(8)] + [stop]


class LineDriver:
    """Drives a UART line with a bit time of ``bit_time`` cycles (a float): the value of
    cycle ``c`` is the bit that covers time ``c`` since the frame's start."""

    def __init__(self):
        self.samples = []

    def frame(self, byte, bit_time, stop=1, gap=0.0):
        bits = frame_bits(byte, stop)
        n = round(10 * bit_time + gap)
        for c in range(n):
            k = int(c / bit_time)
            self.samples.append(bits[k] if k < 10 else 1)

    def idle(self, cycles, level=1):
        self.samples += [level] * cycles


# --- validation ------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [UARTRx, UARTTx])
@pytest.mark.parametrize("bad", [3, 0, -8, True, 8.0, 1 << 24])
def test_divisor_validated(cls, bad):
    with pytest.raises(ValueError, match=r"divisor \(clock cycles per bit\) must be an "
                                         r"integer in 4\.\.16777215"):
        cls(divisor=bad)


# --- transmitter -----------------------------------------------------------------------------

@pytest.mark.parametrize("divisor", [4, 7])
def test_tx_frames_exact(divisor):
    """Every byte's frame has exactly the documented shape and timing; back-to-back bytes
    leave no idle time (10 * divisor cycles per byte); the line idles high."""
    rng = random.Random(divisor)
    data = [rng.randrange(256) for _ in range(40)] + [0x00, 0xff, 0x55, 0xaa]
    dut = UARTTx(divisor=divisor)
    line, accepts = [], []

    async def bench(ctx):
        for _ in range(20):                 # idle before anything: high
            line.append(ctx.get(dut.tx))
            await ctx.tick()
        i, cycle = 0, 0
        # stall the source after these bytes: longer than a frame, and just longer
        gaps = {10: 12 * divisor, 25: 10 * divisor}
        wait = 0
        while i < len(data) or cycle < accepts[-1] + 10 * divisor + 20:
            if i < len(data) and wait == 0:
                ctx.set(dut.data.valid, 1)
                ctx.set(dut.data.payload, data[i])
            else:
                ctx.set(dut.data.valid, 0)
            fire = ctx.get(dut.data.valid) and ctx.get(dut.data.ready)
            line.append(ctx.get(dut.tx))
            await ctx.tick()
            if fire:
                accepts.append(cycle)
                i += 1
                wait = gaps.get(i, 0)
            elif wait:
                wait -= 1
            cycle += 1

    _run(dut, bench)
    assert all(line[:20])
    tx = line[20:]
    # decode: frame k starts (start bit on the line) the cycle after its accept
    for k, (byte, t) in enumerate(zip(data, accepts)):
        bits = frame_bits(byte)
        for b in range(10):
            seg = tx[t + 1 + b * divisor:t + 1 + (b + 1) * divisor]
            assert seg == [bits[b]] * divisor, f"byte {k} bit {b}: {seg}"
    for k in range(1, len(data)):
        stall = {10: 12 * divisor, 25: 10 * divisor}.get(k, 0)
        assert accepts[k] - accepts[k - 1] == max(10 * divisor, stall + 1), k
    # between frames (after a stall) and at the end the line is high
    end = accepts[-1] + 1 + 10 * divisor
    assert all(tx[end:])
    assert all(tx[accepts[9] + 1 + 10 * divisor:accepts[10] + 1])


# --- receiver --------------------------------------------------------------------------------

def _rx_bench(dut, driver, got, events, *, ready_fn=lambda c: True, tail=40):
    async def bench(ctx):
        for c, v in enumerate(driver.samples + [1] * tail):
            ctx.set(dut.rx, v)
            ctx.set(dut.data.ready, int(ready_fn(c)))
            if ctx.get(dut.data.valid) and ctx.get(dut.data.ready):
                got.append((c, ctx.get(dut.data.payload)))
            if ctx.get(dut.framing_error):
                events.append(("framing", c))
            if ctx.get(dut.overrun):
                events.append(("overrun", c))
            await ctx.tick()
    return bench


@pytest.mark.parametrize("divisor, ratio", [(16, 0.965), (16, 1.035), (13, 1.0), (4, 1.0),
                                            (5, 0.97)])
def test_rx_baud_tolerance(divisor, ratio):
    """Frames whose bit time is off by up to 3.5 % (not a whole number of cycles), some
    back to back, some separated: every byte received, no error."""
    rng = random.Random(divisor * 1000 + int(ratio * 1000))
    data = [rng.randrange(256) for _ in range(30)] + [0, 0xff]
    drv = LineDriver()
    drv.idle(7)
    for i, b in enumerate(data):
        drv.frame(b, divisor * ratio, gap=rng.choice([0, 0, divisor * 2.3]))
    dut = UARTRx(divisor=divisor)
    got, events = [], []
    _run(dut, _rx_bench(dut, drv, got, events))
    assert [b for _, b in got] == data
    assert events == []


def test_rx_latency():
    """The line low from cycle 0 (the start bit's first cycle) gives data.valid in cycle
    3 + divisor // 2 + 9 * divisor (as documented)."""
    for divisor in (4, 9, 10):
        drv = LineDriver()
        drv.idle(5)
        drv.frame(0xa5, divisor)
        dut = UARTRx(divisor=divisor)
        got, events = [], []
        _run(dut, _rx_bench(dut, drv, got, events))
        assert [b for _, b in got] == [0xa5]
        assert got[0][0] - 5 == 3 + divisor // 2 + 9 * divisor, (divisor, got)


def test_rx_framing_error_and_break():
    """Stop bit low: the byte is dropped and framing_error pulses once; a break (line held
    low for 40 bit times) after it counts no more; the next good frame is received."""
    div = 8
    drv = LineDriver()
    drv.idle(10)
    drv.frame(0x3c, div)
    drv.frame(0x81, div, stop=0)            # framing error, then the line goes high
    drv.idle(3 * div)
    drv.frame(0x00, div, stop=0)            # framing error followed by a break
    drv.idle(40 * div, level=0)
    drv.idle(2 * div)
    drv.frame(0x7e, div)
    dut = UARTRx(divisor=div)
    got, events = [], []
    _run(dut, _rx_bench(dut, drv, got, events))
    assert [b for _, b in got] == [0x3c, 0x7e]
    assert [e for e, _ in events] == ["framing", "framing"]


def test_rx_glitch_is_not_a_start_bit():
    """A low pulse shorter than half a bit is ignored (no byte, no error)."""
    div = 10
    drv = LineDriver()
    drv.idle(10)
    drv.samples += [0] * 3
    drv.idle(3 * div)
    drv.frame(0x42, div)
    dut = UARTRx(divisor=div)
    got, events = [], []
    _run(dut, _rx_bench(dut, drv, got, events))
    assert [b for _, b in got] == [0x42]
    assert events == []


def test_rx_overrun_keeps_waiting_byte():
    """The consumer is not ready for two frames: the first byte waits, the second is
    dropped with one overrun pulse; once the consumer takes the first, the third frame is
    received normally. The receiver never stalls."""
    div = 6
    drv = LineDriver()
    drv.idle(5)
    for b in (0x11, 0x22, 0x33):
        drv.frame(b, div)
        drv.idle(div)
    release = 5 + 2 * 11 * div + 2               # after the second frame, before the third
    dut = UARTRx(divisor=div)
    got, events = [], []
    _run(dut, _rx_bench(dut, drv, got, events, ready_fn=lambda c: c >= release))
    assert [b for _, b in got] == [0x11, 0x33]
    assert [e for e, _ in events] == ["overrun"]
    assert got[0][0] == release                   # held until taken


def test_rx_idle_line():
    """An idle line (high) gives nothing; nor does the line at reset."""
    dut = UARTRx(divisor=4)
    drv = LineDriver()
    drv.idle(2000)
    got, events = [], []
    _run(dut, _rx_bench(dut, drv, got, events))
    assert got == [] and events == []


# --- loopback --------------------------------------------------------------------------------

@pytest.mark.parametrize("divisor, n", [(4, 300), (11, 80)])
def test_loopback(divisor, n):
    """Transmitter into receiver: random bytes with random source gaps and a consumer
    that stalls now and then (never for a whole frame): all bytes, in order, no error;
    back-to-back bytes at exactly the line rate."""
    rng = random.Random(divisor)
    data = [rng.randrange(256) for _ in range(n)]
    m = Module()
    m.submodules.tx = tx = UARTTx(divisor=divisor)
    m.submodules.rx = rx = UARTRx(divisor=divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    got, accepts, errors = [], [], []

    async def bench(ctx):
        i, cycle, idle = 0, 0, 0
        gap = 0
        while len(got) < n and idle < 30 * divisor:
            if i < n and gap == 0:
                ctx.set(tx.data.valid, 1)
                ctx.set(tx.data.payload, data[i])
            else:
                ctx.set(tx.data.valid, 0)
            ctx.set(rx.data.ready, int(rng.random() < 0.3))
            if ctx.get(tx.data.valid) and ctx.get(tx.data.ready):
                accepts.append(cycle)
                i += 1
                gap = rng.choice([0] * 6 + [1, 5, 3 * divisor])
            elif gap:
                gap -= 1
            if ctx.get(rx.data.valid) and ctx.get(rx.data.ready):
                got.append(ctx.get(rx.data.payload))
                idle = 0
            if ctx.get(rx.framing_error) or ctx.get(rx.overrun):
                errors.append(cycle)
            await ctx.tick()
            cycle += 1
            idle += 1

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert got == data
    assert errors == []
    steps = [b - a for a, b in zip(accepts, accepts[1:])]
    assert min(steps) == 10 * divisor
    assert steps.count(10 * divisor) > n // 2
