"""A skid buffer: cuts a stream's ``ready`` path without adding latency."""

from amaranth.hdl import Module, Signal, Mux
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out


__all__ = ["SkidBuffer"]


class SkidBuffer(wiring.Component):
    """Passes stream ``i`` to stream ``o`` with ``i.ready`` driven by a flip-flop.

    ``o.ready`` reaches no logic before ``i``: a producer whose ``ready`` input would
    otherwise run through the consumer's acceptance logic (counters, compares) sees a
    register instead. The forward path is not registered: while the buffer is empty,
    ``o.valid`` and ``o.payload`` are ``i.valid`` and ``i.payload`` (one multiplexer in the
    payload path), so a transfer costs no cycle.

    Ports
    -----
    i : In(stream.Signature(shape))
        Input. ``i.ready`` is high exactly while the buffer is empty.
    o : Out(stream.Signature(shape))
        Output. Offers the buffered payload while the buffer holds one, otherwise ``i``.

    Cycle: if ``i`` transfers while ``o.ready`` is low, the payload is caught in the
    buffer and offered on ``o`` from the next cycle (so ``o.valid`` is never withdrawn while
    ``i.valid`` was held); ``i.ready`` stays low until ``o`` takes it. Throughput: one
    transfer per cycle while ``o.ready`` stays high; after a cycle with ``o.ready`` low, the
    buffered payload goes first and ``i`` waits one cycle.
    """

    def __init__(self, shape):
        self._shape = shape
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
        })

    def elaborate(self, platform):
        m = Module()
        full = Signal()
        buf = Signal(self._shape, reset_less=True)
        m.d.comb += [
            self.i.ready.eq(~full),
            self.o.valid.eq(full | self.i.valid),
            self.o.payload.eq(Mux(full, buf, self.i.payload)),
        ]
        with m.If(full):
            with m.If(self.o.ready):
                m.d.sync += full.eq(0)
        with m.Elif(self.i.valid & ~self.o.ready):
            m.d.sync += [full.eq(1), buf.eq(self.i.payload)]
        return m
