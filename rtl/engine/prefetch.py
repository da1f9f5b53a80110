"""P1 (head descriptor prefetch) and P2 (indirect table prefetch)."""

from amaranth.hdl import Module, Signal, Cat, Const, Mux
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

from ..bus.fifo import WriteAheadFIFO
from ..core.layouts import VirtqDesc
from .common import (QueueInfo, RdReqStream, SlotReadPort, _Snoop, _JobA, _JobB,
                     _HEAD_SLOTS, _TABLE_SLOTS, _N_SLOTS, _SLOT_BITS, _H_BITS, _T_BITS,
                     _D_DESC, rd, Errors)


__all__ = ["HeadPrefetch", "TablePrefetch"]


class HeadPrefetch(wiring.Component):
    """P1: reads each chain's head descriptor into one of 16 head slots.

    Takes heads in order (an eventq job first, if any), checks ``head < num``, and reads
    the head descriptor into the next head slot; without INDIRECT_DESC it also reads
    ``desc[head + 1]`` (a Linux chain is two consecutive descriptors), so most chains need
    no dependent read. A slot is reserved until the walker releases it (``free``).

    Ports
    -----
    heads : In(stream.Signature(16))
        Requestq heads from the ring unit.
    ejob : In(stream.Signature(16))
        Eventq heads from the eventq unit; they go first.
    cfg : In(ArrayLayout(QueueInfo, 2))
        Both queues' configuration (``desc``, ``num``).
    indirect_desc : In(1)
        VIRTIO_F_INDIRECT_DESC.
    rd : Out(stream.Signature(_RdReq))
        The descriptor reads (tag: the slot).
    job : Out(stream.Signature(_JobA))
        Jobs (queue, head, slot, descriptors read), from a 16-entry FIFO (LUT RAM), to P2.
    free : In(1)
        The walker is done with the oldest head slot.
    slot_clr : Out(32)
        The slot a read is issued into (its ``filled``/``first`` flags are cleared).
    error : Out(1)
        A head >= ``num``.

    Cycle: stage 0 takes the next head into a register and computes its descriptor
    address; stage 1 requests the read into the next head slot, while a slot and a job
    FIFO entry are free. Throughput: one head a cycle while its reads are granted at once;
    latency: 1 cycle from ``heads``/``ejob`` to the read request, which pushes the job.
    """

    def __init__(self):
        super().__init__({
            "heads":         In(stream.Signature(16)),
            "ejob":          In(stream.Signature(16)),
            "cfg":           In(data.ArrayLayout(QueueInfo, 2)),
            "indirect_desc": In(1),
            "rd":            Out(RdReqStream),
            "job":           Out(stream.Signature(_JobA)),
            "free":          In(1),
            "slot_clr":      Out(_N_SLOTS),
            "error":         Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        errors = Errors("p1")
        cfg = self.cfg
        m.submodules.job_a = fifo_a = WriteAheadFIFO(width=_JobA.size, depth=_HEAD_SLOTS)
        m.d.comb += [self.job.valid.eq(fifo_a.r_rdy), self.job.payload.eq(fifo_a.r_data),
                     fifo_a.r_en.eq(self.job.ready)]
        h_used = Signal(range(_HEAD_SLOTS + 1))
        h_wr = Signal(_H_BITS)
        h_inc = Signal()
        m.d.sync += h_used.eq(h_used + h_inc - self.free)

        p1_valid = Signal()
        p1_q = Signal()
        p1_head = Signal(16)
        p1_n = Signal(2)
        p1_addr = Signal(64)
        p1_bad = Signal()
        ej_valid = self.ejob.valid
        src_head = Mux(ej_valid, self.ejob.payload, self.heads.payload)
        src_valid = ej_valid | self.heads.valid
        r_p1 = self.rd
        with m.If(src_valid & (~p1_valid | r_p1.ready)):
            m.d.comb += [self.ejob.ready.eq(ej_valid), self.heads.ready.eq(~ej_valid)]
            m.d.sync += [
                p1_valid.eq(1), p1_q.eq(ej_valid), p1_head.eq(src_head),
                p1_n.eq(Mux(~ej_valid & ~self.indirect_desc & (src_head + 1 < cfg[0].num),
                            2, 1)),
                p1_addr.eq(Mux(ej_valid, cfg[1].desc, cfg[0].desc) + (src_head << 4)),
                p1_bad.eq(src_head >= Mux(ej_valid, cfg[1].num, cfg[0].num)),
            ]
        with m.Elif(r_p1.ready):
            m.d.sync += p1_valid.eq(0)
        errors(m, p1_valid & p1_bad)
        m.d.comb += r_p1.valid.eq(p1_valid & ~p1_bad & (h_used != _HEAD_SLOTS) & fifo_a.w_rdy)
        rd(m, r_p1, p1_addr, p1_n << 4, _D_DESC, h_wr)
        job_a = _JobA(fifo_a.w_data)
        m.d.comb += [job_a.q.eq(p1_q), job_a.head.eq(p1_head), job_a.hslot.eq(h_wr),
                     job_a.hn.eq(p1_n)]
        with m.If(r_p1.ready):
            m.d.comb += [fifo_a.w_en.eq(1), h_inc.eq(1), self.slot_clr.eq(1 << h_wr)]
            m.d.sync += h_wr.eq(h_wr + 1)
        errors.drive(m, self.error)
        return m


class TablePrefetch(wiring.Component):
    """P2: reads the start of each job's indirect table into one of 8 table slots.

    When a job's head descriptor has arrived and is a valid INDIRECT descriptor (INDIRECT
    without NEXT, INDIRECT_DESC negotiated, ``len`` a non-zero multiple of 16), it reads
    the first (up to 4) entries of the table into the next table slot. Other jobs pass
    without a read (the walker reports a bad INDIRECT descriptor). It takes the head
    descriptor from the returning beats when the job is already waiting for them, else
    from the slot memory.

    Ports
    -----
    job_a : In(stream.Signature(_JobA))
        Jobs from P1.
    slot : In(ReadPort.Signature(addr_width=7, shape=128))
        A read port of the slot memory.
    first : In(32)
        The router's per-slot "first descriptor arrived" flags.
    snoop : In(_Snoop)
        The read-return beat being taken this cycle.
    indirect_desc : In(1)
        VIRTIO_F_INDIRECT_DESC.
    rd : Out(stream.Signature(_RdReq))
        The table reads (tag: the table slot).
    job : Out(stream.Signature(_JobB))
        Jobs with their table slot, from a 16-entry FIFO (LUT RAM), to the walker.
    free : In(1)
        The walker is done with the oldest table slot.
    slot_clr : Out(32)
        The slot a table read is issued into.

    Cycle: the head descriptor is taken into ``d2_reg`` as its two beats come back from the
    bus (if the job is at the head of ``job_a`` by then), else read from the slot memory
    in the cycle after the slot's first descriptor is seen arrived and registered in the
    next; P2 decides in the cycle after ``d2_reg`` is loaded, and passes the job on (with
    its table read, if any) in that cycle. Throughput: one job every 3 cycles when the
    descriptor is read from the slot (read, latch, decide); a snooped descriptor is
    decided on in the cycle after its second beat.
    """

    def __init__(self):
        super().__init__({
            "job_a":         In(stream.Signature(_JobA)),
            "slot":          In(SlotReadPort),
            "first":         In(_N_SLOTS),
            "snoop":         In(_Snoop),
            "indirect_desc": In(1),
            "rd":            Out(RdReqStream),
            "job":           Out(stream.Signature(_JobB)),
            "free":          In(1),
            "slot_clr":      Out(_N_SLOTS),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.job_b = fifo_b = WriteAheadFIFO(width=_JobB.size, depth=_HEAD_SLOTS)
        m.d.comb += [self.job.valid.eq(fifo_b.r_rdy), self.job.payload.eq(fifo_b.r_data),
                     fifo_b.r_en.eq(self.job.ready)]
        t_used = Signal(range(_TABLE_SLOTS + 1))
        t_wr = Signal(_T_BITS)
        t_inc = Signal()
        m.d.sync += t_used.eq(t_used + t_inc - self.free)

        a_valid = self.job_a.valid
        a_out = self.job_a.payload
        a_take = self.job_a.ready
        sn = self.snoop
        p2_rp = self.slot
        m.d.comb += p2_rp.addr.eq(Cat(Const(0, 2), a_out.hslot, Const(0, _SLOT_BITS - _H_BITS)))
        d2_reg = Signal(128)
        d2 = VirtqDesc(d2_reg)
        d2_ind = (d2.flags[2] & ~d2.flags[0] & self.indirect_desc &
                  (d2.len[:4] == 0) & (d2.len != 0))
        a_ready = a_valid & self.first.bit_select(a_out.hslot, 1)
        p2_read = Signal()          # p2_rp.data is the descriptor of the job at the head
        p2_look = Signal()          # d2_reg is
        sn_lo = Signal()            # d2_reg's low half was taken from the bus
        sn_hit = (a_valid & ~p2_look & sn.valid & (sn.tag.dest == _D_DESC) &
                  (sn.tag.sub[:_SLOT_BITS] == a_out.hslot))
        sn_done = sn_hit & (sn.beat == 1) & sn_lo
        m.d.sync += [p2_read.eq(a_ready & ~p2_read & ~p2_look),
                     p2_look.eq((p2_read | p2_look | sn_done) & ~a_take)]
        with m.If(p2_read):
            m.d.sync += d2_reg.eq(p2_rp.data)
        with m.If(sn_hit & (sn.beat == 0)):
            m.d.sync += [d2_reg[:64].eq(sn.data), sn_lo.eq(1)]
        with m.If(sn_done):
            m.d.sync += [d2_reg[64:].eq(sn.data), sn_lo.eq(0)]
        job_b = _JobB(fifo_b.w_data)
        tn = Signal(3)
        m.d.comb += [
            job_b.a.eq(a_out), job_b.tslot.eq(t_wr),
            tn.eq(Mux(d2.len[4:] > 4, 4, d2.len[4:])),
            job_b.tn.eq(tn),
        ]
        r_p2 = self.rd
        rd(m, r_p2, d2.addr, tn << 4, _D_DESC, _HEAD_SLOTS + t_wr)
        with m.If(p2_look):
            with m.If(~d2_ind):
                with m.If(fifo_b.w_rdy):
                    m.d.comb += [fifo_b.w_en.eq(1), a_take.eq(1)]
            with m.Else():
                m.d.comb += [r_p2.valid.eq((t_used != _TABLE_SLOTS) & fifo_b.w_rdy),
                             job_b.has_t.eq(1)]
                with m.If(r_p2.ready):
                    m.d.comb += [fifo_b.w_en.eq(1), a_take.eq(1), t_inc.eq(1),
                                 self.slot_clr.eq(1 << (_HEAD_SLOTS + t_wr))]
                    m.d.sync += t_wr.eq(t_wr + 1)
        return m
