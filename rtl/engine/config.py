"""The queue configuration as the engine's units see it."""

from amaranth.hdl import Module, Signal, Mux
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

from ..core.layouts import QueueConfig
from .common import QueueInfo


__all__ = ["QueueRegs"]


class QueueRegs(wiring.Component):
    """The two queues' configuration, with the values the units derive from it registered.

    Ports
    -----
    queues : In(ArrayLayout(QueueConfig, 2))
        The transport's queue registers (see :class:`~.virtqueue.VirtqueueEngine`). They
        are stable for at least a cycle before ``ready`` is set and while it is set.
    enable, event_idx : In(1)
        DRIVER_OK; VIRTIO_F_EVENT_IDX negotiated.
    notify : In(stream.Signature(16, always_ready=True))
        Doorbells.
    info : Out(ArrayLayout(QueueInfo, 2))
        Per queue: ``live`` (``ready`` and DRIVER_OK), ``num``, ``desc``, ``driver``
        (combinational copies), and registered: the ring-index ``mask`` = ``num - 1``,
        ``num_ok`` (``num`` a power of two in 1..``queue_size_max``) and the fixed ring
        addresses ``avail_ring`` (the avail ring's first entry), ``ae_addr``
        (``avail_event``), ``uidx_addr`` (the used idx), ``used_ring`` (the first used
        element) and ``ue_addr`` (the word the idx publisher reads: ``used_event`` with
        EVENT_IDX, else the avail flags).
    doorbell : Out(2)
        Bit q: a doorbell for queue q while it is live, this cycle (combinational).

    Cycle: the registered values follow the configuration one cycle late, which the
    configuration's stability before ``ready`` covers. They are registered so that no
    request carries an adder: the carry chain of ``num - 1`` would otherwise feed the ring
    units' address adds, and a 64-bit add behind a unit's queue select would sit in series
    with the request arbitration and the DMA port's head register.
    """

    def __init__(self, *, queue_size_max):
        self._queue_size_max = queue_size_max
        super().__init__({
            "queues":    In(data.ArrayLayout(QueueConfig, 2)),
            "enable":    In(1),
            "event_idx": In(1),
            "notify":    In(stream.Signature(16, always_ready=True)),
            "info":      Out(data.ArrayLayout(QueueInfo, 2)),
            "doorbell":  Out(2),
        })

    def elaborate(self, platform):
        m = Module()
        qc = self.queues
        for q in range(2):
            info = self.info[q]
            num = qc[q].num
            mask = Signal(16, name=f"mask{q}")
            num_ok = Signal(name=f"num_ok{q}")
            # registered: num is stable for a cycle before ready is set
            num_m1 = (num - 1)[:16]
            m.d.sync += [
                mask.eq(num_m1),
                num_ok.eq((num != 0) & ((num & num_m1) == 0) &
                          (num <= self._queue_size_max)),
            ]
            avail_ring = Signal(64, name=f"avail_ring{q}")
            ae_addr = Signal(64, name=f"ae_addr{q}")
            uidx_addr = Signal(64, name=f"uidx_addr{q}")
            used_ring = Signal(64, name=f"used_ring{q}")
            ue_addr = Signal(64, name=f"ue_addr{q}")
            m.d.sync += [
                avail_ring.eq(qc[q].driver + 4),
                ae_addr.eq(qc[q].device + 4 + (num << 3)),
                uidx_addr.eq(qc[q].device + 2),
                used_ring.eq(qc[q].device + 4),
                ue_addr.eq(Mux(self.event_idx, qc[q].driver + 4 + (num << 1),
                               qc[q].driver)),
            ]
            live = qc[q].ready & self.enable
            m.d.comb += [
                info.live.eq(live), info.num_ok.eq(num_ok), info.num.eq(num),
                info.mask.eq(mask), info.desc.eq(qc[q].desc), info.driver.eq(qc[q].driver),
                info.avail_ring.eq(avail_ring), info.ae_addr.eq(ae_addr),
                info.uidx_addr.eq(uidx_addr), info.used_ring.eq(used_ring),
                info.ue_addr.eq(ue_addr),
                self.doorbell[q].eq(self.notify.valid & (self.notify.payload == q) & live),
            ]
        return m
