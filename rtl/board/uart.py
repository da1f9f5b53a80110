"""An 8N1 UART: receiver and transmitter with ``lib.stream`` byte interfaces.

Both run from the ``sync`` clock with a fixed integer ``divisor`` (clock cycles per bit):
``divisor = round(f_clk / baud)``, e.g. 868 for 115200 baud at 100 MHz (0.006 % fast).
8N1 tolerates about 4 % of combined clock error between the two ends, so any divisor
above ~25 is exact enough whatever the rounding; small divisors (down to 4) are meant
for simulation.

* :class:`UARTRx`: line -> ``data`` stream, with framing-error and overrun pulses.
* :class:`UARTTx`: ``data`` stream -> line, back to back without idle bits.
"""

from amaranth.hdl import Module, Signal, Cat, Const
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out

from ..util import check_int


__all__ = ["UARTRx", "UARTTx", "MAX_DIVISOR"]

#: The largest divisor accepted (24-bit bit counters; 300 baud at 5 GHz).
MAX_DIVISOR = (1 << 24) - 1


def _check_divisor(divisor):
    return check_int("divisor (clock cycles per bit)", divisor, 4, MAX_DIVISOR)


class UARTRx(wiring.Component):
    """UART receiver, 8 data bits, no parity, 1 stop bit, LSB first.

    The ``rx`` pin goes through a 2-flip-flop synchronizer (it may be driven from any clock
    domain or straight from a pin). A falling edge of the synchronized line starts a frame;
    the start bit is sampled ``divisor // 2`` cycles later (mid-bit) and must still be low,
    otherwise the edge was a glitch and the receiver returns to idle. The 8 data bits and
    the stop bit are then each sampled ``divisor`` cycles apart, in the middle of their bit
    times. The receiver is ready for the next start bit right after the stop bit's sample,
    so a transmitter up to half a bit time faster than ``divisor`` is still received.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, 4..2**24-1.

    Ports
    -----
    rx : In(1), init 1
        The serial line (idle high). Asynchronous to the clock is fine.
    data : Out(stream.Signature(8))
        Received bytes. ``valid`` / ``payload`` come from flip-flops and stay until the
        consumer takes the byte (``ready``); the consumer may hold ``ready`` low for up to
        a whole frame time (10 bits) without losing anything.
    framing_error : Out(1)
        One-cycle pulse: a frame's stop bit was sampled low. The byte is dropped, and the
        receiver waits for the line to go high again before it looks for the next start
        bit (so a break, the line held low, counts once, not once per 10 bits).
    overrun : Out(1)
        One-cycle pulse: a byte was complete while the previous one was still waiting in
        ``data`` and not taken in that cycle. The *new* byte is dropped; the waiting one is
        kept. Nothing stalls: the receiver goes on with the next frame.

    Cycles
    ------
    Throughput: one byte per frame, i.e. per ``10 * divisor`` cycles at the line rate (a
    transmitter may send frames back to back).
    Latency: with ``rx`` low from cycle 0 (the start bit's first cycle), ``data.valid`` is
    high from cycle ``3 + divisor // 2 + 9 * divisor`` (two synchronizer stages, the edge
    detection, the sample in the middle of the stop bit, the output register): 9.5 bit
    times plus 3 cycles. Each bit is sampled ``divisor // 2`` cycles after it began on the
    pin.
    """

    def __init__(self, *, divisor):
        self.divisor = _check_divisor(divisor)
        super().__init__({
            "rx":            In(1, init=1),
            "data":          Out(stream.Signature(8)),
            "framing_error": Out(1),
            "overrun":       Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        div = self.divisor

        sync = Signal(2, init=0b11)                 # 2-FF synchronizer, idle high
        m.d.sync += sync.eq(Cat(self.rx, sync[0]))
        line = sync[1]

        cnt   = Signal(range(div))                  # cycles until the next sample
        nbits = Signal(range(8))                    # data bits still to sample - 1
        shift = Signal(8)

        m.d.sync += [self.framing_error.eq(0), self.overrun.eq(0)]
        with m.If(self.data.ready):
            m.d.sync += self.data.valid.eq(0)

        with m.FSM(name="rx"):
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += cnt.eq(div // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                m.d.sync += cnt.eq(cnt - 1)
                with m.If(cnt == 0):
                    with m.If(line):                # glitch, not a start bit
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [cnt.eq(div - 1), nbits.eq(7)]
                        m.next = "DATA"
            with m.State("DATA"):
                m.d.sync += cnt.eq(cnt - 1)
                with m.If(cnt == 0):
                    m.d.sync += [shift.eq(Cat(shift[1:], line)), cnt.eq(div - 1),
                                 nbits.eq(nbits - 1)]
                    with m.If(nbits == 0):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.sync += cnt.eq(cnt - 1)
                with m.If(cnt == 0):
                    with m.If(line):
                        with m.If(~self.data.valid | self.data.ready):
                            m.d.sync += [self.data.valid.eq(1),
                                         self.data.payload.eq(shift)]
                        with m.Else():
                            m.d.sync += self.overrun.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += self.framing_error.eq(1)
                        m.next = "BREAK"
            with m.State("BREAK"):                  # wait for the line to be idle again
                with m.If(line):
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """UART transmitter, 8 data bits, no parity, 1 stop bit, LSB first.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, 4..2**24-1.

    Ports
    -----
    data : In(stream.Signature(8))
        Bytes to send. ``ready`` is high while the line is idle and in the last cycle of
        a stop bit, so a byte offered then is sent with no idle time in between.
    tx : Out(1), init 1
        The serial line, from a flip-flop; high when idle.

    Cycles
    ------
    A byte taken in cycle t has its start bit on ``tx`` from cycle t+1; the stop bit ends
    after cycle ``t + 10 * divisor``, the cycle in which the next byte can be taken.
    Throughput: one byte per ``10 * divisor`` cycles, the line rate.
    """

    def __init__(self, *, divisor):
        self.divisor = _check_divisor(divisor)
        super().__init__({
            "data": In(stream.Signature(8)),
            "tx":   Out(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        div = self.divisor

        busy  = Signal()
        cnt   = Signal(range(div))          # cycles left in the current bit - 1
        nbits = Signal(range(10))           # bits left after the current one
        shift = Signal(9)                   # those bits, next one at bit 0

        last_cycle = (cnt == 0) & (nbits == 0)
        m.d.comb += self.data.ready.eq(~busy | last_cycle)

        with m.If(self.data.valid & self.data.ready):
            m.d.sync += [
                busy.eq(1),
                self.tx.eq(0),                              # start bit
                shift.eq(Cat(self.data.payload, Const(1, 1))),
                nbits.eq(9),
                cnt.eq(div - 1),
            ]
        with m.Elif(busy):
            m.d.sync += cnt.eq(cnt - 1)
            with m.If(cnt == 0):
                with m.If(nbits == 0):
                    m.d.sync += busy.eq(0)                  # tx stays high (stop bit)
                with m.Else():
                    m.d.sync += [
                        self.tx.eq(shift[0]),
                        shift.eq(shift[1:]),
                        nbits.eq(nbits - 1),
                        cnt.eq(div - 1),
                    ]
        return m
