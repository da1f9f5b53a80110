"""The idx publisher: used idx writes and used-buffer notifications."""

from amaranth.hdl import Module, Signal, Mux
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .common import (QueueInfo, RdReqStream, WrReqStream, WrDoneStream, _D_REG, _REG_IRQ,
                     _K_USED, _K_IDX, rd, wr)


__all__ = ["Publisher"]


class Publisher(wiring.Component):
    """Publishes completed used elements and decides on used-buffer notifications.

    When the write response of a used element has come back (so the element and every
    buffer write before it are visible: write responses are in order), it writes the
    queue's used idx (``device + 2``), coalescing every element completed by then; after
    that write has completed it reads ``used_event`` (EVENT_IDX) or the avail flags and
    pulses ``irq_used`` if the driver wants an interrupt. Used flags are never written.
    The requestq goes first when both queues have elements to publish.

    States: ``IDLE`` (requests the used idx write; ``WRITE`` only if it is not taken at
    once) -> ``WRITE_WAIT`` (used idx) -> ``READ`` -> ``READ_WAIT`` (used_event or avail
    flags; irq decision) -> ``IDLE``.

    Ports
    -----
    wr_done : In(WrDoneStream)
        Write completions: a used element's (its tag's ``value`` is the used idx that
        publishes it) and the unit's own used idx writes.
    cfg : In(ArrayLayout(QueueInfo, 2))
        Both queues' ``uidx_addr`` and ``ue_addr``.
    event_idx : In(1)
        VIRTIO_F_EVENT_IDX.
    reg_data : In(64), reg_done : In(1)
        The router's register for the used_event/flags read.
    rd, wr : Out(stream.Signature(_RdReq / _WrReq))
        The used_event/flags read and the used idx write.
    irq_used : Out(1)
        One-cycle pulse (a flip-flop): the driver wants a used-buffer notification.

    Cycle: a used element's completion sets a per-queue flag (``pub_due``) in the next
    cycle, from which ``IDLE`` requests the used idx write in the same cycle. One
    publication lasts two DMA round trips (the idx write's response, the used_event read)
    plus a cycle in each of ``IDLE`` and ``READ``; completions meanwhile are coalesced into
    the next one. ``irq_used`` pulses in the cycle after ``reg_done``.
    """

    def __init__(self, *, index_base=0):
        self._ib = index_base
        self.fsm = None
        super().__init__({
            "wr_done":   In(WrDoneStream),
            "cfg":       In(data.ArrayLayout(QueueInfo, 2)),
            "event_idx": In(1),
            "reg_data":  In(64),
            "reg_done":  In(1),
            "rd":        Out(RdReqStream),
            "wr":        Out(WrReqStream),
            "irq_used":  Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        ib = self._ib
        done = self.wr_done
        wtag = done.payload.tag
        # pub_due[q]: a used element of queue q has completed since the publisher last
        # took used_done[q] (a flip-flop, so that the publisher's request is one).
        used_done = [Signal(16, name=f"used_done{q}", init=ib) for q in range(2)]
        pub_due = Signal(2)
        pub_take = Signal(2)
        for q in range(2):
            with m.If(done.valid & (wtag.kind == _K_USED) & (wtag.q == q)):
                m.d.sync += [used_done[q].eq(wtag.value), pub_due[q].eq(1)]
            with m.Elif(pub_take[q]):
                m.d.sync += pub_due[q].eq(0)

        irq_old = [Signal(16, name=f"irq_old{q}", init=ib) for q in range(2)]
        p_q = Signal()
        p_new = Signal(16)
        # The word READ reads, selected by p_q a cycle late: p_q changes as IDLE is left,
        # and READ comes after WRITE_WAIT, which lasts until a write has completed.
        irq_addr = Signal(64)
        m.d.sync += irq_addr.eq(Mux(p_q, cfg[1].ue_addr, cfg[0].ue_addr))
        irq = Signal()
        m.d.sync += irq.eq(0)
        m.d.comb += self.irq_used.eq(irq)
        w_pub, r_irq = self.wr, self.rd

        def write_used_idx(q, new):
            """Request the write of queue ``q``'s used idx = ``new``; WRITE_WAIT once taken."""
            m.d.comb += w_pub.valid.eq(1)
            wr(m, w_pub, Mux(q, cfg[1].uidx_addr, cfg[0].uidx_addr), 2, new, _K_IDX, q)
            with m.If(w_pub.ready):
                m.next = "WRITE_WAIT"

        with m.FSM(name="publish") as fsm:
            self.fsm = fsm
            with m.State("IDLE"):
                # The write is requested from here (WRITE only if it is not taken at once).
                i_q = ~pub_due[0]
                i_new = Mux(pub_due[0], used_done[0], used_done[1])
                with m.If(pub_due.any()):
                    m.d.comb += pub_take.eq(Mux(i_q, 0b10, 0b01))
                    m.d.sync += [p_q.eq(i_q), p_new.eq(i_new)]
                    m.next = "WRITE"
                    write_used_idx(i_q, i_new)
            with m.State("WRITE"):
                write_used_idx(p_q, p_new)
            with m.State("WRITE_WAIT"):
                with m.If(done.valid & (wtag.kind == _K_IDX)):
                    m.next = "READ"
            with m.State("READ"):
                m.d.comb += r_irq.valid.eq(1)
                rd(m, r_irq, irq_addr, 2, _D_REG, _REG_IRQ)
                with m.If(r_irq.ready):
                    m.next = "READ_WAIT"
            with m.State("READ_WAIT"):
                with m.If(self.reg_done):
                    v = self.reg_data[:16]
                    old = Mux(p_q, irq_old[1], irq_old[0])
                    want = Mux(self.event_idx,
                               (p_new - v - 1)[:16] < (p_new - old)[:16],
                               ~v[0])
                    m.d.sync += irq.eq(want)
                    for q in range(2):
                        with m.If(p_q == q):
                            m.d.sync += irq_old[q].eq(p_new)
                    m.next = "IDLE"
        return m
