"""The eventq unit: the fault FIFO and the eventq's buffers."""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring, stream
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from .common import (FaultRecord, QueueInfo, RdReqStream, WrReqStream, WrDoneStream,
                     _D_REG, _REG_EQ, rd, Errors, avail_header_states)


__all__ = ["EventqUnit"]


class EventqUnit(wiring.Component):
    """Queues fault reports and finds an eventq buffer for each.

    For every report in the fault FIFO not yet given a buffer, it reads the eventq's avail
    idx (once, then after every eventq doorbell), takes the next available buffer (one
    ring entry read) and hands its head to P1 as an eventq job; P1, P2, the walker and the
    back end then write the FIFO's oldest report into the buffer's writable part. The
    report leaves the FIFO when the back end writes its used element (``report.ready``).
    With EVENT_IDX, before waiting for a buffer it writes the eventq's ``avail_event`` and
    reads the avail idx again. Checks: ``num`` valid when a buffer is first looked for, and
    the avail idx at most ``num`` ahead.

    States: ``IDLE``, ``HDR`` -> ``HDR_WAIT``, ``RING`` -> ``RING_WAIT`` (one ring entry),
    ``PUSH`` (job to P1), ``AE`` -> ``AE_WAIT`` -> ``HDR``.

    Ports
    -----
    cfg : In(QueueInfo)
        The eventq's configuration.
    event_idx : In(1)
        VIRTIO_F_EVENT_IDX.
    doorbell : In(1)
        A doorbell for the eventq (one cycle).
    reg_data : In(64), reg_done : In(1)
        The router's register for this unit's reads (header and ring entry).
    wr_done : In(WrDoneStream)
        Write completions (the unit waits for its ``avail_event`` write's).
    faults : In(stream.Signature(FaultRecord, always_ready=True))
        Fault reports, at most one a cycle; dropped (and counted) when the FIFO is full.
    fault_drops : Out(32)
        Reports dropped, saturating.
    rd, wr : Out(stream.Signature(_RdReq / _WrReq))
        Read and write requests.
    job : Out(stream.Signature(16))
        The head of an eventq buffer, to P1 (``valid`` is the ``PUSH`` state).
    report : Out(stream.Signature(FaultRecord))
        The fault FIFO's oldest report, for the back end; ``ready`` is a one-cycle pulse
        as its used element is written, and pops it.
    error : Out(1)
        A bad ``num`` or avail idx.

    Cycle: one buffer takes ``IDLE``, ``RING``, ``RING_WAIT`` (until the entry returns),
    ``PUSH`` (until P1 takes it): at least 4 cycles plus a read's latency per report.
    """

    Q = 1

    def __init__(self, *, depth, index_base=0):
        self._depth = depth
        self._ib = index_base
        self.fsm = None
        super().__init__({
            "cfg":         In(QueueInfo),
            "event_idx":   In(1),
            "doorbell":    In(1),
            "reg_data":    In(64),
            "reg_done":    In(1),
            "wr_done":     In(WrDoneStream),
            "faults":      In(stream.Signature(FaultRecord, always_ready=True)),
            "fault_drops": Out(32),
            "rd":          Out(RdReqStream),
            "wr":          Out(WrReqStream),
            "job":         Out(stream.Signature(16)),
            "report":      Out(stream.Signature(FaultRecord)),
            "error":       Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        errors = Errors("eventq")
        cfg = self.cfg
        ib = self._ib

        m.submodules.fault_fifo = ffifo = SyncFIFO(width=FaultRecord.size, depth=self._depth)
        m.d.comb += [ffifo.w_en.eq(self.faults.valid),
                     ffifo.w_data.eq(self.faults.payload)]
        with m.If(self.faults.valid & ~ffifo.w_rdy & (self.fault_drops != 0xffffffff)):
            m.d.sync += self.fault_drops.eq(self.fault_drops + 1)
        m.d.comb += [self.report.valid.eq(ffifo.r_rdy), self.report.payload.eq(ffifo.r_data),
                     ffifo.r_en.eq(self.report.ready)]

        e_avail = Signal(16, init=ib)
        e_last = Signal(16, init=ib)
        e_pending = Signal(init=1)
        e_pending_clr = Signal()
        e_ae_done = Signal()
        e_inflight = Signal(range(self._depth + 1))    # eventq jobs started
        e_done = self.report.ready                     # one report written
        e_head = Signal(16)
        ej_accept = self.job.ready
        m.d.sync += e_inflight.eq(e_inflight + ej_accept - e_done)
        m.d.comb += self.job.payload.eq(e_head)
        # The ring entry's address, registered: e_last changes in RING_WAIT, two cycles
        # (PUSH, IDLE) before the next RING can use it.
        e_ring_addr = Signal(64)
        m.d.sync += e_ring_addr.eq(cfg.avail_ring + ((e_last & cfg.mask) << 1))
        with m.If(self.doorbell):
            m.d.sync += e_pending.eq(1)
        with m.Elif(e_pending_clr):
            m.d.sync += e_pending.eq(0)
        r_eq = self.rd
        with m.FSM(name="eventq") as fsm:
            self.fsm = fsm
            with m.State("IDLE"):
                with m.If(cfg.live & (e_inflight < ffifo.level)):
                    with m.If(e_avail != e_last):
                        m.next = "RING"
                    with m.Elif(e_pending):
                        with m.If(~cfg.num_ok):
                            errors(m)
                        with m.Else():
                            m.next = "HDR"
                    with m.Elif(self.event_idx & ~e_ae_done):
                        m.next = "AE"
            avail_header_states(m, self, errors, reg=_REG_EQ, last=e_last, avail=e_avail,
                                ae_done=e_ae_done, pending_clr=e_pending_clr,
                                resume="IDLE")
            with m.State("RING"):
                m.d.comb += r_eq.valid.eq(1)
                rd(m, r_eq, e_ring_addr, 2, _D_REG, _REG_EQ)
                with m.If(r_eq.ready):
                    m.next = "RING_WAIT"
            with m.State("RING_WAIT"):
                with m.If(self.reg_done):
                    m.d.sync += [e_head.eq(self.reg_data[:16]), e_last.eq(e_last + 1)]
                    m.next = "PUSH"
            with m.State("PUSH"):
                m.d.comb += self.job.valid.eq(1)
                with m.If(ej_accept):
                    m.next = "IDLE"
        errors.drive(m, self.error)
        return m
