"""The requestq's ring unit: avail ring reads and the head extractor."""

from amaranth.hdl import Module, Signal, Mux
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out

from ..bus.fifo import WriteAheadFIFO
from .common import (QueueInfo, RdReqStream, WrReqStream, WrDoneStream, _RingBeat,
                     _RING_FIFO_DEPTH, _D_REG, _D_RING, _REG_RQ, _min, rd, Errors,
                     avail_header_states)


__all__ = ["RingUnit"]


class RingUnit(wiring.Component):
    """Reads the requestq's available ring and hands out its heads, one a cycle.

    On a doorbell it reads the available ring header (flags and idx, 4 bytes at
    ``driver``); while ``last_avail != avail idx`` it reads up to 4 ring entries per
    command (never across the end of the ring) into a 4-entry ring FIFO, whose space it
    reserves (credits) before each read. Caught up and with VIRTIO_F_EVENT_IDX, it writes
    ``avail_event`` (= the avail idx it has seen, at ``device + 4 + 8*num``), waits for the
    write to complete and reads the avail idx again, so a buffer made available meanwhile
    is never missed. Checks: ``num`` must be valid when the doorbell is served, and the
    avail idx may be at most ``num`` ahead of ``last_avail``.

    States: ``RUN`` (issue ring reads; on a doorbell request the avail idx read and go to
    ``HDR_WAIT``, which prepares the first ring read as the idx arrives; caught up with
    EVENT_IDX go to ``AE``), ``HDR`` -> ``HDR_WAIT`` (avail idx read), ``AE`` ->
    ``AE_WAIT`` (avail_event written and completed) -> ``HDR``.

    Ports
    -----
    cfg : In(QueueInfo)
        The requestq's configuration (:class:`~.config.QueueRegs`).
    event_idx : In(1)
        VIRTIO_F_EVENT_IDX.
    doorbell : In(1)
        A doorbell for the requestq (one cycle).
    reg_data : In(64), reg_done : In(1)
        The router's register for this unit's header reads, and its completion pulse.
    wr_done : In(WrDoneStream)
        Write completions (the unit waits for its ``avail_event`` write's).
    ring : In(stream.Signature(_RingBeat))
        Ring entries returning from the bus, into the ring FIFO.
    rd, wr : Out(stream.Signature(_RdReq / _WrReq))
        Read and write requests (``ready`` is the arbiter's grant).
    heads : Out(stream.Signature(16))
        The heads, in ring order; ``valid`` and ``payload`` come from the ring FIFO's
        LUT RAM and a 2-bit position register.
    error : Out(1)
        A bad ``num`` or avail idx.

    Cycle: a ring read is prepared in one cycle (``rr_*`` registers, from ``r_avail`` in
    ``RUN`` or from the avail idx itself in the cycle it arrives in ``HDR_WAIT``, which
    saves a cycle on a lone request's path) and requested from the next. Throughput: one
    head a cycle out of ``heads``; a ring read of up to 4 heads each time a FIFO entry is
    free. Latency: doorbell to the avail idx read request, 1 cycle; the idx's arrival to
    the ring read request, 1 cycle; a ring beat to its first head on ``heads``, 1 cycle
    (the FIFO's write-ahead).
    """

    Q = 0

    def __init__(self, *, index_base=0):
        self._ib = index_base
        self.fsm = None
        super().__init__({
            "cfg":       In(QueueInfo),
            "event_idx": In(1),
            "doorbell":  In(1),
            "reg_data":  In(64),
            "reg_done":  In(1),
            "wr_done":   In(WrDoneStream),
            "ring":      In(stream.Signature(_RingBeat)),
            "rd":        Out(RdReqStream),
            "wr":        Out(WrReqStream),
            "heads":     Out(stream.Signature(16)),
            "error":     Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        errors = Errors("ring")
        cfg = self.cfg
        ib = self._ib
        m.submodules.ring_fifo = ring_fifo = WriteAheadFIFO(width=64 + 3,
                                                            depth=_RING_FIFO_DEPTH)
        m.d.comb += [ring_fifo.w_en.eq(self.ring.valid),
                     ring_fifo.w_data.eq(self.ring.payload),
                     self.ring.ready.eq(ring_fifo.w_rdy)]

        r_avail = Signal(16, init=ib)
        r_fetch = Signal(16, init=ib)              # last_avail: ring entries taken so far
        r_pending = Signal()
        r_ae_done = Signal()
        r_cred = Signal(range(_RING_FIFO_DEPTH + 1), init=_RING_FIFO_DEPTH)
        rr_valid = Signal()
        rr_n = Signal(3)
        rr_addr = Signal(64)
        r_cred_ret = Signal()             # a ring FIFO entry was used up
        r_cred_take = Signal()
        r_pending_clr = Signal()
        m.d.sync += r_cred.eq(r_cred + r_cred_ret - r_cred_take)
        with m.If(self.doorbell):
            m.d.sync += r_pending.eq(1)
        with m.Elif(r_pending_clr):
            m.d.sync += r_pending.eq(0)
        slot = Signal(16)
        rr_rd_addr = Signal(64)
        m.d.comb += [
            slot.eq(r_fetch & cfg.mask),
            rr_rd_addr.eq(cfg.avail_ring + (slot << 1)),
        ]

        # The entries up to the ring's end, capped at 4, from the ring index alone: with
        # ``num`` a power of two, fewer than 5 are left when every index bit above bit 1
        # under the mask is set, and then ``num - slot`` (1..4) equals its low 3 bits.
        # This keeps a 16-bit ``num - slot`` and two 16-bit minimums out of the path
        # from the avail idx's read data.
        to_end4 = Signal(3)
        m.d.comb += to_end4.eq(Mux((slot | ~cfg.mask)[2:] == 0x3fff,
                                   cfg.num[:3] - slot[:3], 4))

        def prepare(avail):
            cnt = Signal(16)
            cnt4 = Signal(3)
            m.d.comb += [cnt.eq(avail - r_fetch),
                         cnt4.eq(Mux(cnt[2:] != 0, 4, cnt[:3]))]
            with m.If(cfg.live & (avail != r_fetch)):
                m.d.sync += [rr_valid.eq(1), rr_n.eq(_min(cnt4, to_end4)),
                             rr_addr.eq(rr_rd_addr)]

        r_rq = self.rd
        with m.FSM(name="ring") as fsm:
            self.fsm = fsm
            with m.State("RUN"):
                with m.If(rr_valid):
                    m.d.comb += r_rq.valid.eq(r_cred != 0)
                    rd(m, r_rq, rr_addr, rr_n << 1, _D_RING, rr_n - 1)
                    with m.If(r_rq.ready):
                        m.d.sync += [r_fetch.eq(r_fetch + rr_n), rr_valid.eq(0)]
                        m.d.comb += r_cred_take.eq(1)
                with m.Elif(cfg.live & (r_avail != r_fetch)):
                    prepare(r_avail)
                with m.Elif(cfg.live & r_pending):
                    # the doorbell: read the avail idx from here (no HDR cycle)
                    with m.If(~cfg.num_ok):
                        errors(m)
                    with m.Else():
                        m.d.comb += r_rq.valid.eq(1)
                        rd(m, r_rq, cfg.driver, 4, _D_REG, _REG_RQ)
                        with m.If(r_rq.ready):
                            m.d.comb += r_pending_clr.eq(1)
                            m.next = "HDR_WAIT"
                with m.Elif(cfg.live & self.event_idx & ~r_ae_done):
                    m.next = "AE"
            avail_header_states(m, self, errors, reg=_REG_RQ, last=r_fetch, avail=r_avail,
                                ae_done=r_ae_done, pending_clr=r_pending_clr,
                                resume="RUN", on_idx=prepare)

        # head extractor: one head per cycle from the ring FIFO
        rh_pos = Signal(2)
        rh_n = ring_fifo.r_data[64:67]
        m.d.comb += [self.heads.valid.eq(ring_fifo.r_rdy),
                     self.heads.payload.eq(ring_fifo.r_data[:64].word_select(rh_pos, 16))]
        with m.If(self.heads.ready):
            with m.If(rh_pos == rh_n - 1):
                m.d.sync += rh_pos.eq(0)
                m.d.comb += [ring_fifo.r_en.eq(1), r_cred_ret.eq(1)]
            with m.Else():
                m.d.sync += rh_pos.eq(rh_pos + 1)
        errors.drive(m, self.error)
        return m
