"""The store's memory in external memory, through a DMA port (an AXI4 master behind it)."""

from amaranth.hdl import Module, Signal, Cat, Const, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .layouts import MemOp, record_layout
from .memory import StoreMemorySignature
from ..bus.dma import DMASignature, DMA_MAX_LEN


__all__ = ["DMAStoreMemory", "RECORD_BYTES", "NEXT_OFFSET", "region_size"]

#: Bytes per record in external memory: the body from byte 0, ``next`` at byte 28.
RECORD_BYTES = 32
NEXT_OFFSET = 28


def region_size(params):
    """Bytes of external memory a store of ``params`` uses: the records, then the heads
    (4 bytes each)."""
    return RECORD_BYTES * params.capacity + 4 * params.n_heads


class DMAStoreMemory(wiring.Component):
    """The store's memory in a region of external memory, reached through a DMA port
    (:mod:`viommu.rtl.bus.dma`; :class:`~viommu.rtl.bus.axi.AXI4DMAMaster` puts it on an
    AXI4 master).

    Layout, from ``base``: record ``i`` at ``base + 32 i`` (its body in bytes 0..27,
    little-endian as :func:`~.layouts.record_layout` orders it, its ``next`` in bytes
    28..31), then head ``h`` at ``base + 32 capacity + 4 h``.

    Ports
    -----
    bus : In(StoreMemorySignature)
        One access at a time: ``cmd`` is taken when the previous access is finished. A read
        is answered on ``rdata`` once its bytes have arrived; a write is finished when its
        DMA write response has arrived, so a later read always sees it.
    dma : Out(DMASignature(width=width))
        Reads of 4 bytes (a head) or 32 (a record); writes of 4 bytes (a head, a ``next``)
        or 32 (a record); CLEAR writes the heads' ``4 n_heads`` bytes in bursts of up to
        4 KiB.
    error : Out(1)
        Sticky: a DMA read or write answered an error. The store's contents can no longer
        be trusted; the device must be reset. Until then every pointer it answers is NULL,
        so no walk follows undefined bytes.
    clear : In(1)
        The engine is being reset (a device reset). The memory is *not* reset with it: a
        bus transaction cannot be abandoned halfway. It finishes the DMA command under
        way, drops what the engine would have been answered, then takes no access until
        it is idle; ``error`` is cleared.

    Latency: a read takes the DMA read latency plus ``32 / width`` beats for a record; a
    write, the DMA write latency. Throughput: one access at a time.
    """

    def __init__(self, params, *, base, width=8):
        if width not in (8, 16):
            raise ValueError(f"width must be 8 or 16 bytes, not {width}")
        if not isinstance(base, int) or base < 0 or base % RECORD_BYTES:
            raise ValueError(f"base must be a nonnegative multiple of {RECORD_BYTES}, "
                             f"not {base!r}")
        if base + region_size(params) > 1 << 64:
            raise ValueError(f"the store's region ({region_size(params)} bytes from "
                             f"{base:#x}) does not fit below 2**64")
        body_bits = record_layout(params).size
        if body_bits > 8 * NEXT_OFFSET:
            raise ValueError(f"a record's body ({body_bits} bits) does not fit in "
                             f"{NEXT_OFFSET} bytes")
        self._p = params
        self._base = base
        self._width = width
        super().__init__({
            "bus":   In(StoreMemorySignature(params)),
            "dma":   Out(DMASignature(width=width, addr_width=64)),
            "error": Out(1),
            "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        p, w = self._p, self._width
        cmd, rdata, dma = self.bus.cmd, self.bus.rdata, self.dma
        c = cmd.payload
        heads_base = self._base + RECORD_BYTES * p.capacity
        beats = RECORD_BYTES // w

        op = Signal(MemOp)
        addr = Signal(64)
        length = Signal(6)
        wbuf = Signal(8 * RECORD_BYTES)     # what a write sends, from byte 0
        rbuf = Signal(8 * RECORD_BYTES)     # what a read received, from byte 0
        beat = Signal(range(max(beats + 1, DMA_MAX_LEN // w + 1)))
        left = Signal(range(4 * p.n_heads + 1))      # CLEAR: head bytes still to write
        clr_beats = Signal(range(DMA_MAX_LEN // w))  # CLEAR: the burst's last beat
        null_words = Cat(Cat(Const(p.null, p.ptr_bits), Const(0, 32 - p.ptr_bits))
                         for _ in range(RECORD_BYTES // 4))
        body_bits = record_layout(p).size

        rec_addr = self._base + c.index * RECORD_BYTES
        head_addr = heads_base + c.index * 4

        m.d.comb += [
            dma.rd_cmd.payload.addr.eq(addr), dma.rd_cmd.payload.len.eq(length),
            dma.wr_cmd.payload.addr.eq(addr), dma.wr_cmd.payload.len.eq(length),
            dma.wr_data.payload.data.eq(wbuf.word_select(beat, 8 * w)),
            dma.wr_data.payload.last.eq(beat == (length - 1) // w),
            # After a bus error every pointer reads NULL: the bytes are undefined, and a
            # walk must not follow them (it could loop forever).
            rdata.payload.ptr.eq(Mux(self.error, p.null,
                                     Mux(op == MemOp.READ_HEAD, rbuf[:p.ptr_bits],
                                         rbuf[8 * NEXT_OFFSET:8 * NEXT_OFFSET + p.ptr_bits]))),
            rdata.payload.body.eq(rbuf[:body_bits]),
        ]
        # After ``clear``: finish the command under way, answer nothing, then go idle
        # (an error of that command is not the new epoch's).
        abort = Signal()
        with m.If(((dma.rd_data.valid & dma.rd_data.ready & dma.rd_data.payload.err) |
                   (dma.wr_resp.valid & dma.wr_resp.payload.err)) & ~abort):
            m.d.sync += self.error.eq(1)
        with m.If(self.clear):
            m.d.sync += [abort.eq(1), self.error.eq(0)]

        def ptr_word(ptr):
            # a pointer as 4 bytes; NULL (all ones in ``ptr_bits``) is stored as such
            return Cat(ptr, Const(0, 32 - p.ptr_bits))

        with m.FSM(name="fsm"):
            with m.State("IDLE"):
                m.d.comb += cmd.ready.eq(~abort & ~self.clear)
                m.d.sync += abort.eq(0)
                with m.If(cmd.valid & cmd.ready):
                    m.d.sync += [op.eq(c.op), beat.eq(0)]
                    with m.Switch(c.op):
                        with m.Case(MemOp.READ_HEAD):
                            m.d.sync += [addr.eq(head_addr), length.eq(4)]
                            m.next = "RD_CMD"
                        with m.Case(MemOp.READ_REC):
                            m.d.sync += [addr.eq(rec_addr), length.eq(RECORD_BYTES)]
                            m.next = "RD_CMD"
                        with m.Case(MemOp.WRITE_HEAD):
                            m.d.sync += [addr.eq(head_addr), length.eq(4),
                                         wbuf.eq(ptr_word(c.ptr))]
                            m.next = "WR_CMD"
                        with m.Case(MemOp.WRITE_NEXT):
                            m.d.sync += [addr.eq(rec_addr + NEXT_OFFSET), length.eq(4),
                                         wbuf.eq(ptr_word(c.ptr))]
                            m.next = "WR_CMD"
                        with m.Case(MemOp.CLEAR):
                            m.d.sync += [addr.eq(heads_base), left.eq(4 * p.n_heads),
                                         wbuf.eq(null_words)]
                            m.next = "CLR_CMD"
                        with m.Case(MemOp.WRITE_REC):
                            m.d.sync += [addr.eq(rec_addr), length.eq(RECORD_BYTES),
                                         wbuf.eq(Cat(c.body.as_value(),
                                                     Const(0, 8 * NEXT_OFFSET - body_bits),
                                                     ptr_word(c.ptr)))]
                            m.next = "WR_CMD"

            # CLEAR: the heads in bursts of up to DMA_MAX_LEN bytes of NULL pointers
            chunk = Mux(left > DMA_MAX_LEN, DMA_MAX_LEN, left)
            with m.State("CLR_CMD"):
                m.d.comb += [dma.wr_cmd.valid.eq(1), dma.wr_cmd.payload.len.eq(chunk)]
                with m.If(dma.wr_cmd.ready):
                    m.d.sync += [clr_beats.eq((chunk - 1) // w), beat.eq(0)]
                    m.next = "CLR_DATA"

            with m.State("CLR_DATA"):
                m.d.comb += [dma.wr_data.valid.eq(1),
                             dma.wr_data.payload.data.eq(wbuf[:8 * w]),
                             dma.wr_data.payload.last.eq(beat == clr_beats)]
                with m.If(dma.wr_data.ready):
                    m.d.sync += beat.eq(beat + 1)
                    with m.If(beat == clr_beats):
                        m.next = "CLR_RESP"

            with m.State("CLR_RESP"):
                m.d.comb += dma.wr_resp.ready.eq(1)
                with m.If(dma.wr_resp.valid):
                    m.d.sync += [addr.eq(addr + chunk), left.eq(left - chunk)]
                    with m.If((left == chunk) | abort | self.clear):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "CLR_CMD"

            with m.State("RD_CMD"):
                m.d.comb += dma.rd_cmd.valid.eq(1)
                with m.If(dma.rd_cmd.ready):
                    m.next = "RD_DATA"

            with m.State("RD_DATA"):
                m.d.comb += dma.rd_data.ready.eq(1)
                with m.If(dma.rd_data.valid):
                    m.d.sync += [rbuf.word_select(beat, 8 * w).eq(dma.rd_data.payload.data),
                                 beat.eq(beat + 1)]
                    with m.If(dma.rd_data.payload.last):
                        m.next = "RD_ANSWER"

            with m.State("RD_ANSWER"):
                m.d.comb += rdata.valid.eq(~abort & ~self.clear)
                with m.If(rdata.ready | abort | self.clear):
                    m.next = "IDLE"

            with m.State("WR_CMD"):
                m.d.comb += dma.wr_cmd.valid.eq(1)
                with m.If(dma.wr_cmd.ready):
                    m.next = "WR_DATA"

            with m.State("WR_DATA"):
                m.d.comb += dma.wr_data.valid.eq(1)
                with m.If(dma.wr_data.ready):
                    m.d.sync += beat.eq(beat + 1)
                    with m.If(dma.wr_data.payload.last):
                        m.next = "WR_RESP"

            with m.State("WR_RESP"):
                m.d.comb += dma.wr_resp.ready.eq(1)
                with m.If(dma.wr_resp.valid):
                    m.next = "IDLE"
        return m

