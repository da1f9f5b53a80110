"""The walker: follows each descriptor chain and checks it."""

from amaranth.hdl import Module, Signal, Cat, Const, Mux
from amaranth.lib import wiring, stream, data
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..bus.fifo import WriteAheadFIFO
from ..core.layouts import VirtqDesc
from .common import (QueueInfo, RdReqStream, SlotReadPort, _JobB, _PkCmd, _Record, _Seg,
                     _Resume, READ_CAP, _RECORDS, _REQ_FIFO_DEPTH, _HEAD_SLOTS, _N_SLOTS,
                     _SLOT_BITS, _SLOT_DESCS, _SLOT_MISS, _H_BITS, _T_BITS, _EQ_REPORT,
                     _D_DESC, _D_PAY, rd, Errors)


__all__ = ["Walker"]


class Walker(wiring.Component):
    """Walks each descriptor chain, checks it, and issues the reads of its readable bytes.

    For each job (from P2) it follows the chain one descriptor at a time: from a slot when
    the descriptor is in one (the job's head slot, its table slot, or the walker's own slot),
    else it reads up to 4 descriptors from the current table into its own slot and waits. A
    slot's first descriptor is used as soon as it has arrived (``first``), the others once
    the whole slot read has (``filled``); a job's slots are released (``h_free``,
    ``t_free``), and the walker's own slot read again, only once their reads have completed.

    For every readable descriptor it issues a read of its bytes (the first ``READ_CAP`` =
    128 readable bytes of the request; the core never looks past byte 72, and counts up to
    255, so a request is short for the core exactly when its readable part is) and queues a
    packer command for it, having reserved the packer's FIFO space (credits). It records the
    first two non-empty writable descriptors of the chain (``addr``, ``len``) and, if there
    are more, where the walk must resume (table, index); at the chain's end it queues the
    packer's end command (with ``wlen``, the total writable length saturated at 0xffff) and
    the request's record for the back end. Readable descriptors of an eventq buffer are
    skipped (no payload read) and its record goes to ``eq_records``.

    Checks (each fatal, ``error``): a ``next`` index >= the table size; a chain longer than
    its table (a loop); a readable descriptor after a writable one; INDIRECT together with
    NEXT, inside an indirect table, without VIRTIO_F_INDIRECT_DESC, or with a ``len`` that
    is 0 or not a multiple of 16; an eventq buffer with less than 24 writable bytes.

    States: ``IDLE`` (take a job; its head descriptor is read from the slot at once) ->
    ``LATCH``; ``LOOK`` (is the descriptor in a slot? else ``MISS`` reads it and up to 3
    more) -> ``LATCH`` (slot memory -> register, and the checks that need only the
    descriptor are registered) -> ``EXEC`` (checks, payload read, segment; the next
    descriptor of the same slot goes straight to ``LATCH``) -> ``END`` (record and packer
    end command) -> ``IDLE``.

    Ports
    -----
    job : In(stream.Signature(_JobB))
        Jobs from P2 (queue, head, head slot and how many descriptors it holds, table slot).
    cfg : In(ArrayLayout(QueueInfo, 2))
        Both queues' ``desc`` and ``num``.
    indirect_desc : In(1)
        VIRTIO_F_INDIRECT_DESC.
    slot : In(ReadPort.Signature(addr_width=7, shape=128))
        A read port of the slot memory (data the cycle after the address).
    filled, first : In(32)
        The router's slot flags.
    rd : Out(stream.Signature(_RdReq))
        Payload reads (tag ``_D_PAY``) and descriptor misses (into slot ``_SLOT_MISS``).
    pk_cmd : Out(stream.Signature(_PkCmd))
        Packer commands: one per payload read (``n`` bytes) and one end command per request.
        Written only while ``pk_room`` was high, so ``ready`` is not looked at.
    pk_room : In(1)
        Registered: the packer's command FIFO has room for two more.
    credits : In(range(129)), cred_take : Out(range(129))
        The packer's free request-FIFO entries; the entries reserved this cycle.
    records, eq_records : Out(stream.Signature(_Record))
        Each request's record (head, up to two writable segments, where to resume) to the
        back end, from a 16-entry FIFO; eventq records from a 2-entry FIFO.
    h_free, t_free : Out(1)
        One-cycle pulses: the job's head slot (and table slot) may be reused.
    slot_clr : Out(32)
        The walker's own slot, as a read into it is issued.
    error : Out(1)
        A chain broke one of the rules above.

    Cycle: two cycles per descriptor in a slot (``LATCH``, ``EXEC``), plus ``IDLE`` and
    ``END`` per chain: a 2-descriptor chain takes 6 cycles when its reads are granted at
    once. A miss costs a read's latency plus 3 cycles. The first ``EXEC`` with fewer than 32
    credits waits a cycle for the registered credit compare.
    """

    def __init__(self):
        self.fsm = None
        super().__init__({
            "job":           In(stream.Signature(_JobB)),
            "cfg":           In(data.ArrayLayout(QueueInfo, 2)),
            "indirect_desc": In(1),
            "slot":          In(SlotReadPort),
            "filled":        In(_N_SLOTS),
            "first":         In(_N_SLOTS),
            "rd":            Out(RdReqStream),
            "pk_cmd":        Out(stream.Signature(_PkCmd)),
            "pk_room":       In(1),
            "credits":       In(range(_REQ_FIFO_DEPTH + 1)),
            "cred_take":     Out(range(_REQ_FIFO_DEPTH + 1)),
            "records":       Out(stream.Signature(_Record)),
            "eq_records":    Out(stream.Signature(_Record)),
            "h_free":        Out(1),
            "t_free":        Out(1),
            "slot_clr":      Out(_N_SLOTS),
            "error":         Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        errors = Errors("walker")
        cfg = self.cfg
        r_w = self.rd
        rec_fifo, eq_rec_fifo = self._record_fifos(m)
        b_job = self.job.payload
        w_q = Signal()
        w_head = Signal(16)
        w_has_t = Signal()
        w_tslot = Signal(_T_BITS)
        w_tn = Signal(3)
        w_tbl_ind = Signal()
        w_tbl_base = Signal(64)
        w_tbl_size = Signal(17)
        w_idx = Signal(16)
        w_count = Signal(17)
        w_seen_w = Signal()
        w_blk_valid = Signal()
        w_blk_slot = Signal(_SLOT_BITS)
        w_blk_base = Signal(16)
        w_blk_n = Signal(3)
        w_rbytes = Signal(8)
        w_reserve = Signal(8)
        w_wtotal = Signal(20)
        w_nseg = Signal(2)
        w_seg = [Signal(_Seg, name=f"w_seg{i}") for i in range(2)]
        w_res_valid = Signal()
        w_res = Signal(_Resume)
        w_hslot = Signal(_H_BITS)
        w_miss_used = Signal()          # a read into the walker's slot has been issued

        # LOOK finds the descriptor in a slot, LATCH takes it from the slot memory into a
        # register, EXEC processes it; from EXEC the next descriptor of the same slot goes
        # straight to LATCH: two cycles per descriptor.
        w_rp = self.slot
        w_off = Signal(16)
        w_noff = Signal(16)
        d_reg = Signal(128)
        d = VirtqDesc(d_reg)
        m.d.comb += [
            w_off.eq(w_idx - w_blk_base),
            w_noff.eq(d.next - w_blk_base),
        ]
        w_hit = w_blk_valid & (w_off < w_blk_n)
        w_next_hit = w_noff < w_blk_n
        fsm_latch = Signal()
        # the descriptor at w_off is in the slot memory (the first one may be before the
        # rest of the slot's read)
        w_avail = w_hit & Mux(w_off[:2] == 0, self.first, self.filled).bit_select(w_blk_slot, 1)
        w_next_avail = w_next_hit & self.filled.bit_select(w_blk_slot, 1)
        count_next = w_count + 1
        f_next, f_write, f_ind = d.flags[0], d.flags[1], d.flags[2]
        # Decided in LATCH, from the descriptor as it leaves the slot memory (w_count,
        # w_rbytes and the table are already those of this descriptor then).
        ld = VirtqDesc(w_rp.data)
        room = Signal(8)
        m.d.comb += room.eq(READ_CAP - w_rbytes)
        x_loop = Signal()           # the chain is longer than its table
        x_next_oob = Signal()       # next >= table size
        x_len_zero = Signal()
        x_ind_bad = Signal()        # an INDIRECT descriptor that may not be followed
        x_pay = Signal()            # a payload read is due
        pay_n = Signal(8)
        pay_beats = Signal(5)
        ld_small = (ld.len[8:] == 0) & (ld.len[:8] < room)
        ld_pay_n = Mux(ld_small, ld.len[:8], room)
        with m.If(fsm_latch):
            m.d.sync += [
                x_loop.eq(count_next > w_tbl_size),
                x_next_oob.eq(ld.next >= w_tbl_size),
                x_len_zero.eq(ld.len == 0),
                x_ind_bad.eq(w_tbl_ind | ~self.indirect_desc | ld.flags[0] |
                             (ld.len[:4] != 0) | (ld.len == 0)),
                x_pay.eq(~w_q & (ld.len != 0) & (room != 0)),
                pay_n.eq(ld_pay_n),
                pay_beats.eq((ld_pay_n + 7) >> 3),
            ]
        wtot_sum = w_wtotal + d.len
        cred_big, cred_ok, cred_end, w_first_exec = self._credit_flags(m, pay_beats,
                                                                        fsm_latch)
        pk_room = self.pk_room
        pk_in = self.pk_cmd.payload
        rec_in = _Record(rec_fifo.w_data)
        m.d.comb += eq_rec_fifo.w_data.eq(rec_fifo.w_data)
        m.d.comb += [
            rec_in.q.eq(w_q), rec_in.head.eq(w_head), rec_in.nseg.eq(w_nseg),
            rec_in.seg0.eq(w_seg[0]), rec_in.seg1.eq(w_seg[1]),
            rec_in.res_valid.eq(w_res_valid), rec_in.res.eq(w_res),
        ]

        # The address a descriptor miss reads, registered: MISS is entered only from LOOK,
        # and w_idx and w_tbl_base change only on the way into LOOK (or into LATCH).
        w_miss_addr = Signal(64)
        m.d.sync += w_miss_addr.eq(w_tbl_base + (w_idx << 4))

        def advance():
            with m.If(f_next):
                with m.If(x_next_oob):
                    errors(m)
                with m.Else():
                    m.d.sync += [w_idx.eq(d.next), w_count.eq(count_next)]
                    with m.If(w_next_avail):
                        m.next = "LATCH"
                    with m.Else():
                        m.next = "LOOK"
            with m.Else():
                m.next = "END"

        with m.FSM(name="walker") as fsm:
            self.fsm = fsm
            with m.State("IDLE"):
                with m.If(self.job.valid):
                    q = b_job.a.q
                    m.d.comb += self.job.ready.eq(1)
                    m.d.sync += [
                        w_q.eq(q), w_head.eq(b_job.a.head), w_has_t.eq(b_job.has_t),
                        w_hslot.eq(b_job.a.hslot),
                        w_tslot.eq(b_job.tslot), w_tn.eq(b_job.tn),
                        w_tbl_ind.eq(0), w_tbl_base.eq(Mux(q, cfg[1].desc, cfg[0].desc)),
                        w_tbl_size.eq(Mux(q, cfg[1].num, cfg[0].num)),
                        w_idx.eq(b_job.a.head), w_count.eq(0), w_seen_w.eq(0),
                        w_blk_valid.eq(1), w_blk_slot.eq(b_job.a.hslot),
                        w_blk_base.eq(b_job.a.head), w_blk_n.eq(b_job.a.hn),
                        w_rbytes.eq(0), w_reserve.eq(0), w_wtotal.eq(0), w_nseg.eq(0),
                        w_res_valid.eq(0),
                    ]
                    # The head descriptor is first in its slot, and P2 has seen it there:
                    # read it now (no LOOK).
                    m.d.comb += w_rp.addr.eq(Cat(Const(0, 2), b_job.a.hslot,
                                                 Const(0, _SLOT_BITS - _H_BITS)))
                    with m.If(self.first.bit_select(b_job.a.hslot, 1)):
                        m.next = "LATCH"
                    with m.Else():
                        m.next = "LOOK"
            with m.State("LOOK"):
                m.d.comb += w_rp.addr.eq(Cat(w_off[:2], w_blk_slot))
                with m.If(~w_hit):
                    m.next = "MISS"
                with m.Elif(w_avail):
                    m.next = "LATCH"
            with m.State("LATCH"):
                m.d.comb += fsm_latch.eq(1)
                m.d.sync += d_reg.eq(w_rp.data)
                m.next = "EXEC"
            with m.State("EXEC"):
                # read the next descriptor, in case it is in the same slot
                m.d.comb += w_rp.addr.eq(Cat(w_noff[:2], w_blk_slot))
                with m.If(x_loop):
                    errors(m)                                  # a loop
                with m.Elif(f_ind):
                    with m.If(x_ind_bad):
                        errors(m)
                    with m.Else():
                        size = d.len[4:]
                        m.d.sync += [
                            w_tbl_ind.eq(1), w_tbl_base.eq(d.addr),
                            w_tbl_size.eq(Mux(size > 0x10000, 0x10000, size)),
                            w_idx.eq(0), w_count.eq(0),
                        ]
                        with m.If((w_count == 0) & w_has_t):
                            m.d.sync += [w_blk_slot.eq(_HEAD_SLOTS + w_tslot),
                                         w_blk_base.eq(0), w_blk_n.eq(w_tn)]
                        with m.Else():
                            m.d.sync += w_blk_valid.eq(0)
                        m.next = "LOOK"
                with m.Elif(f_write):
                    m.d.sync += [
                        w_seen_w.eq(1),
                        w_wtotal.eq(Mux(wtot_sum[20:] != 0, 0xfffff, wtot_sum[:20])),
                    ]
                    with m.If(~x_len_zero):
                        with m.If(w_nseg < 2):
                            with m.Switch(w_nseg):
                                for i in range(2):
                                    with m.Case(i):
                                        m.d.sync += [w_seg[i].addr.eq(d.addr),
                                                     w_seg[i].len.eq(d.len)]
                            m.d.sync += w_nseg.eq(w_nseg + 1)
                        with m.Elif(~w_res_valid):
                            m.d.sync += [
                                w_res_valid.eq(1), w_res.ind.eq(w_tbl_ind),
                                w_res.base.eq(w_tbl_base), w_res.size.eq(w_tbl_size),
                                w_res.idx.eq(w_idx),
                            ]
                    advance()
                with m.Elif(w_seen_w):
                    errors(m)                                  # readable after writable
                with m.Elif(x_pay):
                    m.d.comb += r_w.valid.eq((cred_big | (cred_ok & ~w_first_exec)) & pk_room)
                    rd(m, r_w, d.addr, pay_n, _D_PAY, 0)
                    with m.If(r_w.ready):
                        m.d.comb += [self.cred_take.eq(pay_beats), self.pk_cmd.valid.eq(1),
                                     pk_in.n.eq(pay_n)]
                        m.d.sync += [w_rbytes.eq(w_rbytes + pay_n),
                                     w_reserve.eq(w_reserve + pay_beats)]
                        advance()
                with m.Else():
                    advance()
            with m.State("MISS"):
                nleft = w_tbl_size - w_idx
                nread = Mux(nleft > _SLOT_DESCS, _SLOT_DESCS, nleft)
                # (not before the slot's last read has completed: the walker may have left
                # it after its first descriptor)
                m.d.comb += r_w.valid.eq(~w_miss_used | self.filled[_SLOT_MISS])
                rd(m, r_w, w_miss_addr, nread << 4, _D_DESC, _SLOT_MISS)
                with m.If(r_w.ready):
                    m.d.comb += self.slot_clr.eq(1 << _SLOT_MISS)
                    m.d.sync += w_miss_used.eq(1)
                    m.d.sync += [w_blk_valid.eq(1), w_blk_slot.eq(_SLOT_MISS),
                                 w_blk_base.eq(w_idx), w_blk_n.eq(nread)]
                    m.next = "LOOK"
            with m.State("END"):
                # The job's slots are freed once their reads have completed (the walker
                # may have used a slot's first descriptor before the rest arrived).
                slots_done = (self.filled.bit_select(w_hslot, 1) &
                              (~w_has_t | self.filled.bit_select(_HEAD_SLOTS + w_tslot, 1)))
                with m.If(~slots_done):
                    pass                                    # wait
                with m.Elif(w_q):
                    with m.If(w_wtotal < _EQ_REPORT):
                        errors(m)
                    with m.Elif(eq_rec_fifo.w_rdy):
                        m.d.comb += [eq_rec_fifo.w_en.eq(1), self.h_free.eq(1),
                                     self.t_free.eq(w_has_t)]
                        m.next = "IDLE"
                with m.Elif(rec_fifo.w_rdy & pk_room & cred_end):
                    m.d.comb += [
                        rec_fifo.w_en.eq(1), self.h_free.eq(1), self.t_free.eq(w_has_t),
                        self.pk_cmd.valid.eq(1), pk_in.end.eq(1),
                        pk_in.wlen.eq(Mux(w_wtotal > 0xffff, 0xffff, w_wtotal)),
                        pk_in.reserve.eq(w_reserve + 1),
                        self.cred_take.eq(1),
                    ]
                    m.next = "IDLE"
        errors.drive(m, self.error)
        return m

    def _credit_flags(self, m, pay_beats, fsm_latch):
        """The registered flags that let a payload read or an end command go."""
        # A payload read may go when the request FIFO has room for its beats and the packer
        # a command slot, decided from flip-flops, so that ``credits >= pay_beats`` and the
        # packer queue's fill are not in series with the read arbitration and the router's
        # slot flags. Only the walker takes credits, at most READ_CAP / 8 = 16 in a cycle,
        # and at most one packer slot, so: 32 credits a cycle ago are enough now for any
        # read; otherwise last cycle's compare holds when last cycle was EXEC too
        # (pay_beats was the same and no credit was taken): in EXEC's first cycle with
        # under 32 credits the read waits a cycle. One packer slot is kept spare. END's end
        # beat needs one credit: it waits for more than 16 a cycle ago (registered, so that
        # the credit compare is not in series with END's decision and the records'
        # enables).
        cred_big = Signal()
        cred_ok = Signal()
        cred_end = Signal()             # END's one credit: more than 16 a cycle ago
        w_first_exec = Signal()
        credits = self.credits
        assert READ_CAP // 8 <= 16
        m.d.sync += [
            cred_big.eq(credits >= 32),
            cred_end.eq(credits > READ_CAP // 8),
            cred_ok.eq(credits >= pay_beats),
            w_first_exec.eq(fsm_latch),
        ]
        return cred_big, cred_ok, cred_end, w_first_exec

    def _record_fifos(self, m):
        """The record FIFOs, whose read sides are ``records`` and ``eq_records``."""
        m.submodules.records = rec_fifo = SyncFIFOBuffered(width=_Record.size,
                                                           depth=_RECORDS)
        m.submodules.eq_records = eq_rec_fifo = WriteAheadFIFO(width=_Record.size, depth=2)
        for fifo, out in ((rec_fifo, self.records), (eq_rec_fifo, self.eq_records)):
            m.d.comb += [out.valid.eq(fifo.r_rdy), out.payload.eq(fifo.r_data),
                         fifo.r_en.eq(out.ready)]
        return rec_fifo, eq_rec_fifo
