"""The split-virtqueue DMA engine: the device side of the requestq and the eventq.

:class:`VirtqueueEngine` is transport independent. A transport (virtio-mmio, virtio-pci)
hands it each queue's configuration, the negotiated generic features, DRIVER_OK, the
doorbells and device reset; the engine does every guest-memory access through one
:mod:`..bus.dma` port, feeds each request's device-readable bytes to the device core
(:class:`~viommu.rtl.core.top.Core`) and scatters the core's answer into the request's device-writable
buffers. Fault reports from the lookup ports go to the eventq.

Overview
--------
::

                  +-------------+    heads     +----+  job  +----+  job   +--------+
    notify ------>| ring unit   |------------->| P1 |------>| P2 |------->| walker |
                  | (requestq)  |  (4/read)    +----+       +----+        +--------+
                  +-------------+                 ^ eventq job            | | |
    faults -> FIFO -> eventq unit ----------------+                       | | | payload
                                                         descriptor slots | | | reads
                          record FIFO (head, writable segments) <---------+ | v
                                  |                      packer commands <--+ packer
                                  v                                           |
    resp (core) -----------> back end: scatter, used element                  v
                                  |                         req FIFO --> req (core)
                                  v
                           idx publisher: used idx, used_event/flags, irq_used

Every stage issues its DMA reads without waiting for earlier ones to return; all reads
share the DMA port's in-order return path, and a tag recorded with each command steers the
returning beats to their destination (a register, the ring FIFO, a descriptor slot or the
packer). Every destination has its space reserved when the read is issued, so returns never
wait on a stage that itself waits for a later return (no deadlock).

The units, one component each (their docstrings give each port, what the unit does in a
cycle, its throughput and latency):

* :class:`~.config.QueueRegs` (``config.py``): the queue configuration and the ring
  addresses derived from it, registered.
* :class:`~.ring.RingUnit` (``ring.py``): the requestq's avail ring; heads, one a cycle.
* :class:`~.prefetch.HeadPrefetch` (P1) and :class:`~.prefetch.TablePrefetch` (P2)
  (``prefetch.py``): head descriptors into 16 head slots, the start of indirect tables
  into 8 table slots.
* :class:`~.walker.Walker` (``walker.py``): walks and checks each chain, reads the
  request's readable bytes, records its writable segments.
* :class:`~.packer.Packer` (``packer.py``): payload bytes into 8-byte request beats.
* :class:`~.backend.BackEnd` (``backend.py``): the answer into the writable descriptors,
  then the used element.
* :class:`~.publisher.Publisher` (``publisher.py``): the used idx and ``irq_used``.
* :class:`~.eventq.EventqUnit` (``eventq.py``): the fault FIFO and the eventq's buffers;
  an eventq job enters the pipeline between two requests.
* :class:`~.router.Router` (``router.py``): read returns to their destinations by tag;
  the descriptor slot memory.
* :class:`~.dma_port.DMAPort` and :class:`~.dma_port.Arbiter` (``dma_port.py``): the DMA
  commands and their returns; the fixed-priority request arbiters (reads: publisher,
  eventq, back end, walker, P2, P1, ring; writes: publisher, ring, eventq, back end).

Layouts, constants and helpers they share are in ``common.py``. Between the units,
``amaranth.lib.stream`` interfaces carry every valid/ready handoff (heads, jobs, packer
commands, payload and ring beats, records, fault reports, DMA requests, write
completions); the few shared signals are the queue configuration, the slot flags and
read ports, the router's registers, the packer's credits, ``fatal`` and ``clear`` (the
reset of every unit but the DMA port).

Ports
-----
dma : Out(DMASignature(width=width))
    Every guest-memory access. Reads: at most 48 outstanding; writes are at most 8 bytes
    each (one data beat), at most 32 outstanding. The engine's internal beats are 8 bytes
    wide also when ``width`` = 16. The engine drains the port's outstanding transactions
    itself after ``clear``: the DMA adapter must *not* be reset with it.
req : Out(stream.Signature(ReqBeat))
    Requests' device-readable bytes, to the core. ``valid`` and ``payload`` come from the
    request FIFO's output register; ``ready`` is its read enable (keep it a flip-flop, as
    the core's is, or the path runs from the consumer's logic into that enable).
resp : In(stream.Signature(RespBeat))
    The core's answers, in request order.
queues : In(ArrayLayout(QueueConfig, 2))
    Queue 0 (requestq) and 1 (eventq): ``ready``, ``num`` (a power of two up to
    ``queue_size_max``), ``desc``, ``driver``, ``device``. They must not change while
    ``ready`` is set, and must be set at least one cycle before ``ready`` (the engine
    registers the ring-index mask ``num - 1`` and the fixed addresses derived from them;
    a transport writes them with separate register writes).
indirect_desc, event_idx : In(1)
    VIRTIO_F_INDIRECT_DESC / VIRTIO_F_EVENT_IDX negotiated.
enable : In(1)
    DRIVER_OK. Doorbells are ignored while it is low; so are the eventq's buffers.
notify : In(stream.Signature(16, always_ready=True))
    Doorbell: ``valid`` for one cycle with the queue index as payload (virtio-mmio's
    QueueNotify value; indices other than 0 and 1, and queues that are not ``ready``, are
    ignored).
clear : In(1)
    Device reset: everything is abandoned, every index restarts at 0, the fault FIFO is
    emptied and ``fault_drops`` cleared. DMA commands already presented on the bus
    complete; their data and responses are discarded. With ``reset_by_clear=True`` the
    engine's logic (not its DMA port) is reset by ``clear`` alone, not also by the
    ``sync`` domain's reset, so that its reset net has one driver
    (:func:`~viommu.rtl.util.reset_inserter`); ``clear`` must then be high whenever the domain is in
    reset.
irq_used : Out(1)
    One-cycle pulse: the driver wants a used-buffer notification (set InterruptStatus
    bit 0 / send the queue's MSI).
needs_reset : Out(1)
    One-cycle pulse, in the cycle after the first fatal error is detected (set
    DEVICE_NEEDS_RESET and raise a configuration-change interrupt). A DMA command not yet
    presented on the bus by then is dropped, and from then on the engine presents no DMA
    command, feeds the core nothing and takes nothing from it, until ``clear``.
faults : In(stream.Signature(FaultRecord, always_ready=True))
    Fault reports, one per cycle at most.
fault_drops : Out(32)
    Reports dropped because the fault FIFO (``fault_queue_depth`` entries) was full;
    saturates at 2**32 - 1.
dma_busy : Out(1)
    DMA transactions are outstanding (including those being drained after ``clear``). A
    transport should let a device reset complete (Status reads back 0) only once this is
    low, so that no write issued before the reset lands in rings the driver sets up anew.

Cycles
------
Measured by ``viommu bench`` (:func:`~viommu.sim.perf.measure_engine`: engine + a
129-entry core, so that every MAP succeeds; 64-bit DMA, 128 MAPs queued at once, one
doorbell, memory answering each read command after the given latency and one beat per
cycle, writes after 1 cycle), cycles per MAP between the 32nd and the 128th used element:

==============  ==========  ==========
read latency     2-desc      indirect
==============  ==========  ==========
1 cycle          9.56        10.97
100 cycles       9.39        13.75
==============  ==========  ==========

The core takes 9 cycles per MAP; the DMA read data (about 9.3 beats per MAP with
2-descriptor chains: descriptors, 36 request bytes and a quarter of a ring read; 11 with
indirect tables: head descriptor, table, request bytes) is the limit at low latency, with
indirect tables the 8 table slots at high latency. Per request the walker spends 2 cycles
per descriptor plus 2, the back end 1 cycle per written piece plus 3, the packer 1 cycle
per payload beat plus 1.

A lone request (doorbell to the write of the used idx that publishes it; same bench and
memory model, asserted exactly by ``tests/test_virtqueue.py::test_map_batch_cycles``)
takes 4 × L + 30 cycles for read latency L with a 2-descriptor chain (4 dependent reads:
avail idx, ring entry, descriptors, request bytes) and 5 × L + 32 with an indirect table
(a fifth). ``python -m viommu.sim.vq_timeline`` prints where each cycle goes
(docs/performance.md, "The virtqueue engine and the whole device"). The used element's
write response is awaited before the used idx is written.

Every path is registered at the slot memory and at the DMA port; docs/timing-log.md
records the engine's place-and-route history.

Bad input
---------
Each of these is fatal (``needs_reset``; the engine then touches no memory until
``clear``). Nothing is ever written but into writable descriptors of a chain and the used
ring (used elements, used idx, ``avail_event``).

* a queue used (doorbell) with ``num`` not a power of two in 1..``queue_size_max``
  (checked by :class:`~.ring.RingUnit` and :class:`~.eventq.EventqUnit`);
* avail idx more than ``num`` ahead of the last entry taken (``last_avail``) (the same
  two, in :func:`~.common.avail_header_states`);
* a head or ``next`` index >= the table size (``num``, or ``len/16`` of an indirect
  table) (heads: :class:`~.prefetch.HeadPrefetch`; ``next``: :class:`~.walker.Walker`,
  and :class:`~.backend.BackEnd` past the recorded segments);
* a chain longer than its table (a loop) (walker; back end);
* a readable descriptor after a writable one (walker; back end);
* INDIRECT together with NEXT; INDIRECT inside an indirect table; INDIRECT without
  VIRTIO_F_INDIRECT_DESC; an indirect table whose ``len`` is 0 or not a multiple of 16
  (an INDIRECT descriptor may end a chain of direct ones, as virtio allows) (walker;
  the back end allows no INDIRECT past the recorded segments);
* an answer longer than the request's writable part (this includes the core's 4-byte
  tail when the writable part is shorter: the core cannot report that itself) (back
  end); an eventq buffer with less than 24 writable bytes (walker);
* a DMA error on any read (:class:`~.router.Router`) or write (the engine's ``fatal``
  logic, :meth:`VirtqueueEngine.elaborate`).

A request too short for its type is not an error of the ring: the core answers INVAL.
"""

from amaranth.hdl import Module, Signal, Cat
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

from ..bus.dma import DMASignature
from ..util import check_int, reset_inserter
from ..core.layouts import ReqBeat, RespBeat, QueueConfig
from .common import FaultRecord, READ_CAP, _RdReq, _WrReq, _REG_RQ, _REG_EQ, _REG_IRQ, _SLOT_BE
# (re-exported: tests import the DMA port's limits from here)
from .common import _RD_OUTSTANDING, _WR_OUTSTANDING  # noqa: F401
from .dma_port import DMAPort, Arbiter
from .config import QueueRegs
from .router import Router
from .ring import RingUnit
from .eventq import EventqUnit
from .prefetch import HeadPrefetch, TablePrefetch
from .walker import Walker
from .packer import Packer
from .backend import BackEnd
from .publisher import Publisher

#: The DMA port, by the name the engine tests import it under.
_DMAPort = DMAPort


__all__ = ["FaultRecord", "VirtqueueEngine", "READ_CAP"]


class VirtqueueEngine(wiring.Component):
    __doc__ = __doc__

    def __init__(self, *, width=8, queue_size_max=256, fault_queue_depth=8,
                 reset_by_clear=False, _index_base=0):
        if not isinstance(reset_by_clear, bool):
            raise TypeError(f"reset_by_clear must be a bool, not {reset_by_clear!r}")
        self.reset_by_clear = reset_by_clear
        if isinstance(width, bool) or width not in (8, 16):
            raise ValueError(f"width must be 8 or 16 (bytes per DMA beat), not {width!r}")
        check_int("queue_size_max", queue_size_max, 2, 32768, power_of_two=True)
        check_int("fault_queue_depth", fault_queue_depth, 1, 1024)
        self.width = width
        self.queue_size_max = queue_size_max
        self.fault_queue_depth = fault_queue_depth
        # Tests only: the value every 16-bit ring index restarts at (virtio says 0), so that
        # the wrap at 65536 can be simulated without 65,536 requests.
        self._index_base = _index_base & 0xffff
        self._fsm_units = {}
        super().__init__({
            "dma":           Out(DMASignature(width=width)),
            "req":           Out(stream.Signature(ReqBeat)),
            "resp":          In(stream.Signature(RespBeat)),
            "queues":        In(data.ArrayLayout(QueueConfig, 2)),
            "indirect_desc": In(1),
            "event_idx":     In(1),
            "enable":        In(1),
            "notify":        In(stream.Signature(16, always_ready=True)),
            "clear":         In(1),
            "irq_used":      Out(1),
            "needs_reset":   Out(1),
            "faults":        In(stream.Signature(FaultRecord, always_ready=True)),
            "fault_drops":   Out(32),
            "dma_busy":      Out(1),
        })

    @property
    def fsms(self):
        """The engine's state machines by name ("ring", "eventq", "walker", "backend",
        "publish"), for traces (see :mod:`viommu.sim.vq_timeline`); filled in as the
        units are elaborated."""
        return {name: unit.fsm for name, unit in self._fsm_units.items()}

    def elaborate(self, platform):
        top = Module()
        top.submodules.port = port = DMAPort(self.width)
        wiring.connect(top, port.dma, wiring.flipped(self.dma))
        m = Module()
        reset = reset_inserter(top, self.clear, alone=self.reset_by_clear, name="vq_logic")
        top.submodules.logic = reset(m)
        top.d.comb += [port.clear.eq(self.clear), self.dma_busy.eq(~port.idle)]
        self._port = port

        # The units, each a component of its own (Amaranth's simulator then re-evaluates
        # a unit's combinational logic only when that unit's inputs change).
        ib = self._index_base
        m.submodules.ctl = ctl = QueueRegs(queue_size_max=self.queue_size_max)
        m.submodules.rd_arbiter = rd_arb = Arbiter(
            _RdReq, ["publisher", "eventq", "backend", "walker", "p2", "p1", "ring"])
        m.submodules.wr_arbiter = wr_arb = Arbiter(
            _WrReq, ["publisher", "ring", "eventq", "backend"])
        m.submodules.router = router = Router()
        m.submodules.ring = ring = RingUnit(index_base=ib)
        m.submodules.eventq = eventq = EventqUnit(depth=self.fault_queue_depth,
                                                  index_base=ib)
        m.submodules.p1 = p1 = HeadPrefetch()
        m.submodules.p2 = p2 = TablePrefetch()
        m.submodules.packer = packer = Packer()
        m.submodules.walker = walker = Walker()
        m.submodules.backend = backend = BackEnd(index_base=ib)
        m.submodules.publish = publish = Publisher(index_base=ib)
        self._fsm_units = {"ring": ring, "eventq": eventq, "walker": walker,
                           "backend": backend, "publish": publish}

        # configuration, doorbells
        wiring.connect(m, wiring.flipped(self.notify), ctl.notify)
        m.d.comb += [ctl.queues.eq(self.queues), ctl.enable.eq(self.enable),
                     ctl.event_idx.eq(self.event_idx)]
        for u in (p1, walker, backend, publish):
            m.d.comb += u.cfg.eq(ctl.info)
        for u in (ring, eventq, publish):
            m.d.comb += u.event_idx.eq(self.event_idx)
        for u in (p1, p2, walker):
            m.d.comb += u.indirect_desc.eq(self.indirect_desc)
        for q, u in ((0, ring), (1, eventq)):
            m.d.comb += [u.cfg.eq(ctl.info[q]), u.doorbell.eq(ctl.doorbell[q])]

        # DMA requests and write completions
        for name, u in (("publisher", publish), ("eventq", eventq), ("backend", backend),
                        ("walker", walker), ("p2", p2), ("p1", p1), ("ring", ring)):
            wiring.connect(m, u.rd, getattr(rd_arb, name))
        for name, u in (("publisher", publish), ("ring", ring), ("eventq", eventq),
                        ("backend", backend)):
            wiring.connect(m, u.wr, getattr(wr_arb, name))
        wiring.connect(m, rd_arb.out, port.rd_req)
        wiring.connect(m, wr_arb.out, port.wr_req)
        m.d.comb += port.wr_ret.ready.eq(1)
        for u in (ring, eventq, publish):
            m.d.comb += [u.wr_done.valid.eq(port.wr_ret.valid),
                         u.wr_done.payload.eq(port.wr_ret.payload)]

        # read returns
        wiring.connect(m, port.rd_ret, router.ret)
        for reg, u in ((_REG_RQ, ring), (_REG_EQ, eventq), (_REG_IRQ, publish)):
            m.d.comb += [u.reg_data.eq(router.reg_data[reg]),
                         u.reg_done.eq(router.reg_done[reg])]
        wiring.connect(m, router.ring, ring.ring)
        wiring.connect(m, router.pay, packer.pay)
        m.d.comb += [
            router.slot_clr.eq(p1.slot_clr | p2.slot_clr | walker.slot_clr |
                               backend.slot_clr),
            p2.snoop.eq(router.snoop), p2.first.eq(router.first),
            walker.filled.eq(router.filled), walker.first.eq(router.first),
            backend.slot_filled.eq(router.filled[_SLOT_BE]),
        ]
        wiring.connect(m, router.slot_p2, p2.slot)
        wiring.connect(m, router.slot_walk, walker.slot)
        wiring.connect(m, router.slot_be, backend.slot)

        # the pipeline: heads -> P1 -> P2 -> walker -> packer / back end
        wiring.connect(m, ring.heads, p1.heads)
        wiring.connect(m, eventq.job, p1.ejob)
        wiring.connect(m, p1.job, p2.job_a)
        wiring.connect(m, p2.job, walker.job)
        m.d.comb += [p1.free.eq(walker.h_free), p2.free.eq(walker.t_free)]
        wiring.connect(m, walker.pk_cmd, packer.cmd)
        m.d.comb += [walker.pk_room.eq(packer.cmd_room), walker.credits.eq(packer.credits),
                     packer.cred_take.eq(walker.cred_take)]
        wiring.connect(m, packer.req, wiring.flipped(self.req))
        wiring.connect(m, walker.records, backend.records)
        wiring.connect(m, walker.eq_records, backend.eq_records)
        wiring.connect(m, wiring.flipped(self.resp), backend.resp)
        wiring.connect(m, eventq.report, backend.report)
        wiring.connect(m, wiring.flipped(self.faults), eventq.faults)
        m.d.comb += [self.fault_drops.eq(eventq.fault_drops),
                     self.irq_used.eq(publish.irq_used)]

        # fatal errors: any unit's error, a DMA error on a write
        m.submodules.fatal = fm = Module()
        fatal = Signal()
        # A copy of ``fatal`` for the DMA port's ``block``, kept apart so that the port's
        # command queues and the AXI master's skid buffers behind them have a flip-flop
        # of their own.
        fatal_port = Signal(attrs={"keep": 1})
        fatal_d = Signal()
        fatal_set = Signal()
        wr_err = port.wr_ret.valid & port.wr_ret.payload.err
        fm.d.comb += fatal_set.eq(Cat(router.error, ring.error, eventq.error, p1.error,
                                      walker.error, backend.error, wr_err).any())
        with fm.If(fatal_set):
            fm.d.sync += [fatal.eq(1), fatal_port.eq(1)]
        fm.d.sync += fatal_d.eq(fatal)
        fm.d.comb += [self.needs_reset.eq(fatal & ~fatal_d), port.block.eq(fatal_port),
                      packer.fatal.eq(fatal), backend.fatal.eq(fatal)]

        self._fatal = fatal      # for tests and debugging
        return top
