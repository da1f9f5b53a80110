"""A byte-stream to AXI4-Lite bridge: how a host on a serial line reads and writes the
board's 32-bit address space.

The protocol (the contract with :class:`~viommu.sim.host.BridgeClient`)
=======================================================================

Bytes host -> board (``rx``) form frames; the board answers each frame with bytes board ->
host (``tx``). Every multi-byte number is little-endian. A frame starts with the 6-byte
:class:`~viommu.rtl.core.layouts.BridgeHeader`::

    byte 0      cmd     'W' (0x57) write or 'R' (0x52) read
    bytes 1..4  addr    byte address of the first 32-bit word; bits 1..0 are ignored (0)
    byte 5      count   number of words - 1 (1..256 words)

**Write** ``'W' addr count`` followed by ``count + 1`` data words (4 bytes each, LE). Word
``k`` is written to ``addr + 4k`` (mod 2**32) with all four byte strobes, in order, each
write's response awaited before the next write is issued. When every write has been
answered the board sends one byte: ACK (0x06) if every ``bresp`` was OKAY, else NAK
(0x15). All words are written even if an earlier one failed.

**Read** ``'R' addr count``: the board reads words ``addr + 4k``, ``k = 0..count``, in
order, and sends ``4 * (count + 1)`` data bytes followed by one status byte: ACK if every
``rresp`` was OKAY, else NAK. The data of a word whose read failed is what the slave put
on ``rdata`` (0 for this project's decoder and RAM); the number of bytes sent never
depends on errors, so the host stays in step.

**Anything else** as a frame's first byte: the board sends NAK and waits for the next
frame (a host can send a NAK-provoking byte, e.g. 0x00, to see the bridge is alive).

**Resynchronisation.** While a frame is being received (after its first byte and before
its last), a silence of ``timeout`` clock cycles in which the bridge waits for a byte
drops the frame without any answer; words already complete have been written, the
partial word is discarded. A host that lost track (it died mid-frame, or misses a reply)
waits longer than ``timeout`` without sending, discards whatever it receives, and starts
again with a new frame.

**Flow control.** None on the line: the host must wait for a frame's answer before it
sends the next frame. Bytes that arrive while the bridge is sending an answer, or while
it is busy on the bus, are held by the UART receiver (one byte) and then lost (the
receiver's ``overrun``).

Bus behaviour
-------------
An AXI4-Lite master with one transaction in flight at a time: AW and W are presented in
the same cycle and each is dropped after its own handshake; ``bready`` / ``rready`` are
high while a response is awaited. ``wstrb`` = 0b1111, ``awprot`` = ``arprot`` = 0. A
slave that never answers stalls the bridge (the timeout only watches the line).

Cycles
------
Measured in tests/test_bridge.py with a host that sends and takes a byte every cycle and
an always-ready slave whose response comes L cycles after the address handshake:

==================================  =========  =========  ==========
L                                   1          4          11
write frame, cycles per word        5.0        6.0        12.7
read frame, cycles per word         5          7          14
==================================  =========  =========  ==========

Writes: header and data bytes are taken one per cycle, plus one cycle per word to hand it
to the bus; the next word is received while the previous one is written, so the byte
stream only stalls when a write takes longer than that. The ACK/NAK is on ``tx`` 3 cycles
after the last B handshake. Reads: the first data byte is on ``tx`` L + 5 cycles after the
header's last byte; word k + 1 is fetched while word k is sent.

A UART at divisor d moves one byte per 10d >= 40 cycles (a word per 160 or more), so the
bridge keeps up with the line in both directions with any slave that answers within
~150 cycles; at 115200 baud and 100 MHz (d = 868) a byte takes 8680 cycles.
"""

from amaranth.hdl import Module, Signal, Cat, Const, Mux
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out

from ..bus.axi import AXI4LiteSignature, Resp
from ..core.layouts import BridgeByte, BridgeHeader, BRIDGE_MAX_WORDS, sizeof
from ..util import check_int


__all__ = ["SerialBridge"]


class SerialBridge(wiring.Component):
    """The bridge's protocol engine (see the module documentation for the protocol).

    Parameters
    ----------
    timeout : int
        Idle timeout in clock cycles, 16..2**32-1: mid-frame silence after which a frame
        is dropped. At 100 MHz and 115200 baud one byte takes 8680 cycles; 100_000 (1 ms,
        ~11 byte times) is a good value.

    Ports
    -----
    rx : In(stream.Signature(8))
        Bytes from the host (a UART receiver's ``data``).
    tx : Out(stream.Signature(8))
        Bytes to the host (a UART transmitter's ``data``); ``valid`` and ``payload`` come
        from flip-flops.
    bus : Out(AXI4LiteSignature(addr_width=32, data_width=32))
        The AXI4-Lite master.
    busy : Out(1)
        A frame is being received or executed (not idle).
    aborted : Out(1)
        One-cycle pulse: a frame was dropped by the idle timeout.
    """

    def __init__(self, *, timeout):
        self.timeout = check_int("timeout", timeout, 16, (1 << 32) - 1)
        super().__init__({
            "rx":      In(stream.Signature(8)),
            "tx":      Out(stream.Signature(8)),
            "bus":     Out(AXI4LiteSignature(addr_width=32, data_width=32)),
            "busy":    Out(1),
            "aborted": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        bus, rx, tx = self.bus, self.rx, self.tx
        hdr_bits = 8 * sizeof(BridgeHeader)

        hdr   = Signal(hdr_bits)            # header bytes, shifted in from the top
        write = Signal()                    # the frame is a write
        addr  = Signal(32)                  # next word's address
        left  = Signal(range(BRIDGE_MAX_WORDS + 1))     # words not yet issued
        bcnt  = Signal(range(sizeof(BridgeHeader)))     # bytes still to come in the field
        err   = Signal()                    # a response of this frame was not OKAY
        quiet = Signal(range(self.timeout))

        wbuf  = Signal(32)                  # write data word being received
        wfull = Signal()                    # wbuf complete, not yet issued
        bwait = Signal()                    # a write's B is awaited
        w_idle = ~bus.awvalid & ~bus.wvalid & ~bwait

        rbuf  = Signal(32)                  # read word, waiting for the serializer
        rfull = Signal()
        rwait = Signal()                    # a read's R is awaited

        sreg  = Signal(32)                  # bytes to send, next at bits 7..0
        scnt  = Signal(range(5))            # how many bytes sreg still holds

        byte = rx.payload
        take = rx.valid & rx.ready
        m.d.sync += self.aborted.eq(0)

        # --- write unit: one AW+W at a time, then its B --------------------------------------
        m.d.comb += [
            bus.wstrb.eq(0b1111),
            bus.awprot.eq(0),
            bus.arprot.eq(0),
            bus.bready.eq(bwait),
            bus.rready.eq(rwait),
        ]
        with m.If(bus.awready):
            m.d.sync += bus.awvalid.eq(0)
        with m.If(bus.wready):
            m.d.sync += bus.wvalid.eq(0)
        with m.If(bus.bvalid & bwait):
            m.d.sync += [bwait.eq(0), err.eq(err | (bus.bresp != Resp.OKAY))]

        # --- read unit: one AR at a time, its R into rbuf ------------------------------------
        with m.If(bus.arready):
            m.d.sync += bus.arvalid.eq(0)
        with m.If(bus.rvalid & rwait):
            m.d.sync += [rwait.eq(0), rbuf.eq(bus.rdata), rfull.eq(1),
                         err.eq(err | (bus.rresp != Resp.OKAY))]

        # --- serializer: sreg -> tx, one byte per cycle when tx is free ----------------------
        with m.If(tx.ready):
            m.d.sync += tx.valid.eq(0)
        with m.If((~tx.valid | tx.ready) & (scnt != 0)):
            m.d.sync += [tx.valid.eq(1), tx.payload.eq(sreg[:8]), sreg.eq(sreg[8:]),
                         scnt.eq(scnt - 1)]

        def reply(ok):
            m.d.sync += [sreg.eq(Mux(ok, BridgeByte.ACK, BridgeByte.NAK)), scnt.eq(1)]

        # --- idle timeout: counts cycles spent waiting for a byte in the middle of a frame -----
        waiting = Signal()
        with m.If(take | ~waiting):
            m.d.sync += quiet.eq(0)
        with m.Elif(rx.ready):
            m.d.sync += quiet.eq(quiet + 1)
        timed_out = waiting & rx.ready & ~rx.valid & (quiet == self.timeout - 1)

        with m.FSM(name="bridge") as fsm:
            with m.State("IDLE"):
                # No new frame before the previous one's bus traffic and answer are out.
                m.d.comb += rx.ready.eq(w_idle & (scnt == 0))
                with m.If(take):
                    with m.If((byte == BridgeByte.WRITE) | (byte == BridgeByte.READ)):
                        m.d.sync += [
                            hdr.eq(Cat(hdr[8:], byte)),
                            write.eq(byte == BridgeByte.WRITE),
                            bcnt.eq(sizeof(BridgeHeader) - 2),
                            err.eq(0),
                        ]
                        m.next = "HEADER"
                    with m.Else():
                        reply(0)

            with m.State("HEADER"):
                m.d.comb += [rx.ready.eq(1), waiting.eq(1)]
                with m.If(take):
                    full = BridgeHeader(Cat(hdr[8:], byte))
                    m.d.sync += [hdr.eq(full.as_value()), bcnt.eq(bcnt - 1)]
                    with m.If(bcnt == 0):
                        m.d.sync += [
                            addr.eq(Cat(Const(0, 2), full.addr[2:])),
                            left.eq(full.count + 1),
                            bcnt.eq(3),
                        ]
                        with m.If(write):
                            m.next = "DATA"
                        with m.Else():
                            m.next = "READ"
                with m.Elif(timed_out):
                    m.d.sync += self.aborted.eq(1)
                    m.next = "IDLE"

            with m.State("DATA"):
                m.d.comb += [rx.ready.eq(~wfull), waiting.eq(1)]
                with m.If(take):
                    m.d.sync += [wbuf.eq(Cat(wbuf[8:], byte)), bcnt.eq(bcnt - 1)]
                    with m.If(bcnt == 0):
                        m.d.sync += [wfull.eq(1), bcnt.eq(3)]
                with m.Elif(timed_out):
                    m.d.sync += [self.aborted.eq(1), wfull.eq(0)]
                    m.next = "IDLE"
                with m.If(wfull & w_idle):
                    m.d.sync += [
                        bus.awvalid.eq(1), bus.awaddr.eq(addr),
                        bus.wvalid.eq(1), bus.wdata.eq(wbuf),
                        bwait.eq(1),
                        addr.eq(addr + 4),
                        left.eq(left - 1),
                        wfull.eq(0),
                    ]
                    with m.If(left == 1):
                        m.next = "WFINISH"

            with m.State("WFINISH"):
                with m.If(w_idle):
                    reply(~err)
                    m.next = "IDLE"

            with m.State("READ"):
                with m.If((left != 0) & ~bus.arvalid & ~rwait & ~rfull):
                    m.d.sync += [
                        bus.arvalid.eq(1), bus.araddr.eq(addr),
                        rwait.eq(1),
                        addr.eq(addr + 4),
                        left.eq(left - 1),
                    ]
                with m.If((scnt == 0) & rfull):
                    m.d.sync += [sreg.eq(rbuf), scnt.eq(4), rfull.eq(0)]
                with m.If((scnt == 0) & (left == 0) & ~bus.arvalid & ~rwait & ~rfull):
                    reply(~err)
                    m.next = "IDLE"

        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m
