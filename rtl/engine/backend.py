"""The back end: scatters the core's answers into the writable descriptors."""

from amaranth.hdl import Module, Signal, Cat, Const, Mux
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

from ..bus.skid import SkidBuffer
from ..core.layouts import RespBeat, VirtqDesc
from .common import (FaultRecord, QueueInfo, RdReqStream, WrReqStream, SlotReadPort,
                     _Record, _N_SLOTS, _SLOT_BE, _SLOT_DESCS, _D_DESC, _K_DATA, _K_USED,
                     rd, wr, Errors)


__all__ = ["BackEnd"]


class BackEnd(wiring.Component):
    """Scatters each request's answer into its writable descriptors and writes the used
    element.

    Takes the records in walk order (an eventq record as soon as there is one: it waits for
    nothing, and the two used rings are independent) and the core's ``resp`` beats (for an
    eventq record, the 24-byte fault report from ``report``: :class:`~viommu.rtl.core.layouts.Fault` with
    its reserved bytes zero), and writes them into the writable descriptors in order, one
    DMA write per (beat, descriptor) piece; if the record's two segments do not suffice it
    walks the rest of the chain's writable descriptors itself (one dependent descriptor read
    each, into the back end's own slot, every rule checked again). Then it writes the used
    element ``{id = head, len = bytes written}`` at ``device + 4 + 8*(used_idx % num)``,
    tagged with the used idx that publishes it (for the :class:`~.publisher.Publisher`),
    and, for an eventq record, pops the report.

    Checks (fatal, ``error``): an answer longer than the writable part (this includes the
    core's 4-byte tail when the writable part is shorter); past the recorded segments, a
    descriptor that is not writable, is INDIRECT, has ``next`` >= the table size, or makes
    the chain longer than its table.

    States: ``IDLE`` (take a record) -> ``BEAT`` (next answer beat) -> ``WRITE`` (one piece
    per cycle; ``MREAD`` -> ``MWAIT`` -> ``MLATCH`` -> ``MCHECK`` fetch writable descriptors
    past the recorded two) -> ``USED`` (used element) -> ``IDLE``.

    Ports
    -----
    records, eq_records : In(stream.Signature(_Record))
        Requests' and eventq buffers' records from the walker.
    resp : In(stream.Signature(RespBeat))
        The core's answers, in request order, through a skid buffer (``ready`` to the core is
        a flip-flop). Not taken while ``fatal``.
    report : In(stream.Signature(FaultRecord))
        The oldest fault report (always there for an eventq record); ``ready`` pops it.
    fatal : In(1)
        Take nothing from the core.
    cfg : In(ArrayLayout(QueueInfo, 2))
        Both queues' ``used_ring`` and ``mask``.
    slot : In(ReadPort.Signature(addr_width=7, shape=128)), slot_filled : In(1)
        The slot memory's read port and the back end's own slot's ``filled`` flag.
    rd, wr : Out(stream.Signature(_RdReq / _WrReq))
        Descriptor reads past the recorded segments; answer pieces and used elements.
    slot_clr : Out(32)
        The back end's slot, as a read into it is issued.
    error : Out(1)

    Cycle: per request, 1 cycle per written piece plus 3, when its writes are granted at
    once (a beat that spans two descriptors is two pieces; ``BEAT`` takes a beat from the
    skid buffer into registers, ``WRITE`` issues the pieces). Each descriptor past the
    recorded two costs a read's latency plus 4 cycles (``MREAD`` .. ``MCHECK``).
    """

    def __init__(self, *, index_base=0):
        self._ib = index_base
        self.fsm = None
        super().__init__({
            "records":     In(stream.Signature(_Record)),
            "eq_records":  In(stream.Signature(_Record)),
            "resp":        In(stream.Signature(RespBeat)),
            "report":      In(stream.Signature(FaultRecord)),
            "fatal":       In(1),
            "cfg":         In(data.ArrayLayout(QueueInfo, 2)),
            "slot":        In(SlotReadPort),
            "slot_filled": In(1),
            "rd":          Out(RdReqStream),
            "wr":          Out(WrReqStream),
            "slot_clr":    Out(_N_SLOTS),
            "error":       Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        errors = Errors("backend")
        cfg = self.cfg
        ib = self._ib
        fatal = self.fatal
        r_be, w_be = self.rd, self.wr
        fault = self.report.payload
        fault_bytes = Cat(fault.reason, Const(0, 24), fault.flags, fault.endpoint,
                          Const(0, 32), fault.address)
        rec = Signal(_Record)
        b_len = Signal(20)
        b_data = Signal(64)
        b_n = Signal(4)
        b_last = Signal()
        b_off = Signal(4)
        b_seg_valid = Signal()
        b_seg_addr = Signal(64)
        b_seg_rem = Signal(32)
        b_seg_next = Signal(2)
        b_eqbeat = Signal(2)
        b_m_started = Signal()
        b_m_end = Signal()
        b_m_addr = Signal(64)               # the next descriptor's: rec.res.base + 16 * idx
        b_m_count = Signal(17)
        used_shadow = [Signal(16, name=f"used_shadow{q}", init=ib) for q in range(2)]
        # The address of the next used element and the idx that will publish it,
        # registered: used_shadow[q] changes only as USED is left for IDLE, a cycle
        # before USED can come again.
        used_elem = [Signal(64, name=f"used_elem{q}") for q in range(2)]
        used_next = [Signal(16, name=f"used_next{q}") for q in range(2)]
        for q in range(2):
            m.d.sync += [used_elem[q].eq(cfg[q].used_ring +
                                         ((used_shadow[q] & cfg[q].mask) << 3)),
                         used_next[q].eq(used_shadow[q] + 1)]
        # The core's answer comes through a skid buffer, so that ``resp.ready`` to the core
        # is a flip-flop: the core's response count then does not reach this unit's
        # acceptance logic and back into the core's own buffer's enable.
        m.submodules.resp_slice = resp_slice = SkidBuffer(RespBeat)
        wiring.connect(m, wiring.flipped(self.resp), resp_slice.i)
        resp = resp_slice.o
        rec_out = self.records.payload
        b_left = Signal(4)
        b_wn = Signal(4)
        # min(b_seg_rem, b_left) with b_left <= 8: a 4-bit compare behind a zero test of
        # the upper bits, not a 32-bit compare in front of the 64-bit address add.
        b_rem_small = Signal()
        m.d.comb += [
            b_left.eq(b_n - b_off),
            b_rem_small.eq((b_seg_rem[4:] == 0) & (b_seg_rem[:4] < b_left)),
            b_wn.eq(Mux(b_rem_small, b_seg_rem[:4], b_left)),
        ]
        be_rp = self.slot
        m.d.comb += be_rp.addr.eq(_SLOT_BE * _SLOT_DESCS)
        bd_reg = Signal(128)
        bd = VirtqDesc(bd_reg)
        segs = [rec.seg0, rec.seg1]

        def load_seg():
            """Make the next recorded segment current, if the current one is used up."""
            with m.If(~b_seg_valid & (b_seg_next < rec.nseg)):
                with m.Switch(b_seg_next):
                    for i in range(2):
                        with m.Case(i):
                            m.d.sync += [b_seg_addr.eq(segs[i].addr),
                                         b_seg_rem.eq(segs[i].len)]
                m.d.sync += [b_seg_valid.eq(1), b_seg_next.eq(b_seg_next + 1)]

        with m.FSM(name="backend") as fsm:
            self.fsm = fsm
            with m.State("IDLE"):
                # Eventq records first: they wait for nothing, and the two queues' used
                # rings are independent.
                with m.If(self.eq_records.valid):
                    m.d.comb += self.eq_records.ready.eq(1)
                    m.d.sync += rec.eq(self.eq_records.payload)
                with m.Elif(self.records.valid):
                    m.d.comb += self.records.ready.eq(1)
                    m.d.sync += rec.eq(rec_out)
                with m.If(self.eq_records.valid | self.records.valid):
                    m.d.sync += [
                        b_len.eq(0), b_seg_valid.eq(0),
                        b_seg_next.eq(0), b_eqbeat.eq(0), b_m_started.eq(0),
                        b_m_end.eq(0),
                    ]
                    m.next = "BEAT"
            with m.State("BEAT"):
                load_seg()
                with m.If(rec.q):
                    m.d.sync += [
                        b_data.eq(fault_bytes.word_select(b_eqbeat, 64)),
                        b_n.eq(8), b_last.eq(b_eqbeat == 2), b_off.eq(0),
                        b_eqbeat.eq(b_eqbeat + 1),
                    ]
                    m.next = "WRITE"
                with m.Else():
                    m.d.comb += resp.ready.eq(~fatal)
                    with m.If(resp.valid & ~fatal):
                        m.d.sync += [
                            b_data.eq(resp.payload.data),
                            b_n.eq(Mux(resp.payload.nbytes > 8, 8,
                                       resp.payload.nbytes)),
                            b_last.eq(resp.payload.last), b_off.eq(0),
                        ]
                        m.next = "WRITE"
            with m.State("WRITE"):
                with m.If(b_left == 0):
                    with m.If(b_last):
                        m.next = "USED"
                    with m.Else():
                        m.next = "BEAT"
                with m.Elif(b_seg_valid):
                    m.d.comb += w_be.valid.eq(1)
                    wr(m, w_be, b_seg_addr, b_wn, b_data >> (b_off * 8), _K_DATA)
                    with m.If(w_be.ready):
                        m.d.sync += [
                            b_seg_addr.eq(b_seg_addr + b_wn),
                            b_seg_rem.eq(b_seg_rem - b_wn),
                            b_seg_valid.eq(b_seg_rem != b_wn),
                            b_off.eq(b_off + b_wn),
                            b_len.eq(b_len + b_wn),
                        ]
                        with m.If(b_wn == b_left):
                            with m.If(b_last):
                                m.next = "USED"
                            with m.Else():
                                m.next = "BEAT"
                with m.Elif(b_seg_next < rec.nseg):
                    load_seg()
                with m.Elif(rec.res_valid & ~b_m_end):
                    with m.If(~b_m_started):
                        m.d.sync += [b_m_started.eq(1), b_m_count.eq(0),
                                     b_m_addr.eq(rec.res.base + (rec.res.idx << 4))]
                    m.next = "MREAD"
                with m.Else():
                    errors(m)                  # the answer does not fit the writable part
            with m.State("MREAD"):
                m.d.comb += r_be.valid.eq(1)
                rd(m, r_be, b_m_addr, 16, _D_DESC, _SLOT_BE)
                with m.If(r_be.ready):
                    m.d.comb += self.slot_clr.eq(1 << _SLOT_BE)
                    m.next = "MWAIT"
            with m.State("MWAIT"):
                with m.If(self.slot_filled):
                    m.next = "MLATCH"           # the descriptor is read meanwhile
            with m.State("MLATCH"):
                m.d.sync += bd_reg.eq(be_rp.data)
                m.next = "MCHECK"
            with m.State("MCHECK"):
                bf = bd.flags
                with m.If((b_m_count + 1 > rec.res.size) | ~bf[1] | bf[2] |
                          (bf[0] & (bd.next >= rec.res.size))):
                    errors(m)
                with m.Else():
                    m.d.sync += b_m_count.eq(b_m_count + 1)
                    with m.If(bf[0]):
                        m.d.sync += b_m_addr.eq(rec.res.base + (bd.next << 4))
                    with m.Else():
                        m.d.sync += b_m_end.eq(1)
                    with m.If(bd.len != 0):
                        m.d.sync += [b_seg_valid.eq(1), b_seg_addr.eq(bd.addr),
                                     b_seg_rem.eq(bd.len)]
                        m.next = "WRITE"
                    with m.Elif(bf[0]):
                        m.next = "MREAD"
                    with m.Else():
                        m.next = "WRITE"
            with m.State("USED"):
                q = rec.q
                m.d.comb += w_be.valid.eq(1)
                wr(m, w_be, Mux(q, used_elem[1], used_elem[0]), 8,
                   Cat(rec.head, Const(0, 16), b_len, Const(0, 12)), _K_USED, q,
                   Mux(q, used_next[1], used_next[0]))
                with m.If(w_be.ready):
                    for qq in range(2):
                        with m.If(q == qq):
                            m.d.sync += used_shadow[qq].eq(used_shadow[qq] + 1)
                    with m.If(q):
                        m.d.comb += self.report.ready.eq(1)
                    m.next = "IDLE"
        errors.drive(m, self.error)
        return m
