"""The split-virtqueue DMA engine: the device side of the requestq and the eventq.

:class:`VirtqueueEngine` is transport independent. A transport (virtio-mmio, virtio-pci)
hands it each queue's configuration, the negotiated generic features, DRIVER_OK, the
doorbells and device reset; the engine does every guest-memory access through one
:mod:`.dma` port, feeds each request's device-readable bytes to the device core
(:class:`~.core.Core`) and scatters the core's answer into the request's device-writable
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

* **Ring unit** (requestq): on a doorbell, reads the available ring header (flags and idx,
  4 bytes at ``driver``); while ``last_avail != avail idx`` it reads up to 4 ring entries
  per command (never across the end of the ring) into a 4-entry ring FIFO. Caught up and
  with VIRTIO_F_EVENT_IDX, it writes ``avail_event`` (= the avail idx it has seen, at
  ``device + 4 + 8*num``), waits for the write to complete and reads the avail idx again,
  so a buffer made available meanwhile is never missed.
* **P1** (descriptor prefetch): takes heads in order (an eventq job first, if any), checks
  ``head < num``, and reads the head descriptor into one of 16 descriptor slots; without
  INDIRECT_DESC it also reads ``desc[head + 1]`` (a Linux chain is two consecutive
  descriptors), so most chains need no dependent read.
* **P2** (indirect prefetch): when a job's head descriptor has arrived and is a valid
  INDIRECT descriptor, it reads the first (up to 4) entries of the indirect table into one
  of 8 table slots. It takes the head descriptor from the returning beats when the job is
  already waiting for them, else from the slot memory.
* **Walker**: walks each chain, one descriptor every two cycles when the descriptor is in
  a slot (else it reads up to 4 descriptors from the current table into its own slot and
  waits). A slot's first descriptor is used as soon as it has arrived (``first``), the
  others once the whole slot read has (``filled``); a job's slots are released, and the
  walker's own slot read again, only once their reads have completed. It checks every
  rule listed under *Bad input*, issues a read for each readable descriptor's bytes (the
  first ``READ_CAP`` = 128 readable bytes of the request; the core never looks past byte
  72, and counts up to 255, so a request is short for the core exactly when its readable
  part is) and queues a packer command for it; it records the
  first two non-empty writable descriptors of the chain (``addr``, ``len``) and, if there
  are more, where the walk must resume (table, index); at the chain's end it queues the
  packer's end command (with ``wlen``, the total writable length saturated at 0xffff) and
  the request's record for the back end.
* **Packer**: concatenates the payload reads' bytes (any byte split, zero-length
  descriptors skipped) into :class:`~.layouts.ReqBeat` beats of 8 bytes in a 128-beat FIFO
  that feeds ``req``; the last beat carries ``last`` and ``wlen``. (This FIFO and the
  payload FIFO in front of the packer pass an entry written while they are empty to
  their registered output in one cycle.) An empty readable part
  is one beat with ``nbytes`` = 0. FIFO space is reserved (credits) before each read.
* **Back end**: takes the records in walk order (an eventq record as soon as there is
  one: it waits for nothing, and the two used rings are independent) and the core's
  ``resp`` beats (for an eventq record, the 24-byte fault report), and writes them into
  the writable descriptors in order, one DMA write per (beat, descriptor) piece; if the
  record's two segments do not suffice it walks the rest of the chain's writable
  descriptors itself (one dependent descriptor read each, every rule checked again). An
  answer longer than the writable part is fatal. Then it writes the used element
  ``{id = head, len = bytes written}`` at ``device + 4 + 8*(used_idx % num)``.
* **Idx publisher**: when the write response of a used element has come back (so the
  element and every buffer write before it are visible: write responses are in order), it
  writes the queue's used idx (``device + 2``), coalescing every element completed by then;
  after that write has completed it reads ``used_event`` (EVENT_IDX) or the avail flags
  and pulses ``irq_used`` if the driver wants an interrupt. Used flags are never written.
* **Eventq unit**: for every report in the fault FIFO not yet given a buffer, it reads
  the eventq's avail idx (once, then after every eventq doorbell), takes the next
  available buffer and sends it through P1/P2/walker/back end as an eventq job, which
  writes the FIFO's oldest report (24 bytes, :class:`~.layouts.Fault`, reserved bytes
  zero; used length 24) into the buffer's writable part (at least 24 bytes, else fatal;
  readable descriptors of an eventq buffer are skipped); the report leaves the FIFO when
  its used element is written. An eventq job enters the pipeline between two requests.
  With EVENT_IDX, before waiting for a buffer it writes the eventq's ``avail_event`` and
  reads the avail idx again.

State machines
--------------
* ring (requestq): ``RUN`` (issue ring reads; on a doorbell request the avail idx read
  and go to ``HDR_WAIT``, which prepares the first ring read as the idx arrives; caught up
  with EVENT_IDX go to ``AE``), ``HDR`` -> ``HDR_WAIT`` (avail idx read), ``AE`` ->
  ``AE_WAIT`` (avail_event written and completed) -> ``HDR``.
* eventq: ``IDLE``, ``HDR`` -> ``HDR_WAIT``, ``RING`` -> ``RING_WAIT`` (one ring entry),
  ``PUSH`` (job to P1), ``AE`` -> ``AE_WAIT`` -> ``HDR``.
* walker: ``IDLE`` (take a job; its head descriptor is read from the slot at once) ->
  ``LATCH``; ``LOOK`` (is the descriptor in a slot? else ``MISS`` reads it and up to 3
  more) -> ``LATCH`` (slot memory -> register) -> ``EXEC`` (checks,
  payload read, segment; the next descriptor of the same slot goes straight to
  ``LATCH``) -> ``END`` (record and packer end command).
* back end: ``IDLE`` (take a record) -> ``BEAT`` (next answer beat) -> ``WRITE`` (one
  piece per cycle; ``MREAD`` -> ``MWAIT`` -> ``MLATCH`` -> ``MCHECK`` fetch writable
  descriptors past the recorded two) -> ``USED`` (used element) -> ``IDLE``.
* publisher: ``IDLE`` (requests the used idx write; ``WRITE`` only if it is not taken
  at once) -> ``WRITE_WAIT`` (used idx) -> ``READ`` ->
  ``READ_WAIT`` (used_event or avail flags; irq decision) -> ``IDLE``.
* P1 (a register stage, then the read), P2 (latch, decide), the packer and the
  head extractor are pipelines without named states.

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
    (:func:`~.util.reset_inserter`); ``clear`` must then be high whenever the domain is in
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
cycle, writes after 1 cycle), cycles per MAP between the 32nd and the 128th used element
(2026-11-24):

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
(a fifth); the issue's target was 4 dependent round trips + 32.
``python -m viommu.sim.vq_timeline`` prints where each cycle goes (README, "Virtqueue
engine and the whole device"). The used element's write response is still awaited before
the used idx is written.

Every path is registered at the slot memory and at the DMA port. Inside the board image
(8-entry core, LFE5UM5G-45F speed 8, measured 2026-11-24, before the latency changes
above, which add no logic in series with the read-port grant but have not been through
place and route since) the engine holds the critical
path: 77.5 MHz, from the walker's ``pay_beats`` counter through the read-port grant to the
request pipeline's head-register enable, mostly routing (README, "Board image"). An
earlier out-of-context figure of about 110 MHz did not survive that measurement.

Bad input
---------
Each of these is fatal (``needs_reset``; the engine then touches no memory until
``clear``). Nothing is ever written but into writable descriptors of a chain and the used
ring (used elements, used idx, ``avail_event``).

* a queue used (doorbell) with ``num`` not a power of two in 1..``queue_size_max``;
* avail idx more than ``num`` ahead of the last entry taken (``last_avail``);
* a head or ``next`` index >= the table size (``num``, or ``len/16`` of an indirect table);
* a chain longer than its table (a loop);
* a readable descriptor after a writable one;
* INDIRECT together with NEXT; INDIRECT inside an indirect table; INDIRECT without
  VIRTIO_F_INDIRECT_DESC; an indirect table whose ``len`` is 0 or not a multiple of 16
  (an INDIRECT descriptor may end a chain of direct ones, as virtio allows);
* an answer longer than the request's writable part (this includes the core's 4-byte
  tail when the writable part is shorter: the core cannot report that itself); an eventq
  buffer with less than 24 writable bytes;
* a DMA error on any read or write.

A request too short for its type is not an error of the ring: the core answers INVAL.
"""

from amaranth.hdl import Module, Signal, Cat, Const, Mux
from amaranth.lib import wiring, stream, data
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..bus.dma import DMASignature
from ..bus.fifo import BypassFIFO, WriteAheadFIFO
from ..bus.skid import SkidBuffer
from ..util import check_int, onehot_mux, reset_inserter
from ..core.layouts import ReqBeat, RespBeat, VirtqDesc, DescFlag, QueueConfig


__all__ = ["FaultRecord", "VirtqueueEngine", "READ_CAP"]


#: A fault report from a lookup port (the fields of :class:`~.layouts.Fault` that carry
#: information).
FaultRecord = data.StructLayout({
    "reason":   8,
    "flags":    32,
    "endpoint": 32,
    "address":  64,
})

#: Readable bytes of a request streamed to the core, at most (the core decodes 72; it must
#: see more than 72 to tell a complete PROBE from a short one, so this must be >= 80).
READ_CAP = 128

_REQ_FIFO_DEPTH = 128       # ReqBeats buffered towards the core
_PK_CMD_DEPTH = 64          # packer commands
_RING_FIFO_DEPTH = 4        # ring reads (of up to 4 heads) buffered
_HEAD_SLOTS = 16            # descriptor slots for head blocks (P1)
_TABLE_SLOTS = 8            # descriptor slots for indirect tables (P2)
_SLOT_MISS = _HEAD_SLOTS + _TABLE_SLOTS          # the walker's own slot
_SLOT_BE = _SLOT_MISS + 1                        # the back end's slot
_N_SLOTS = 32
_SLOT_BITS = 5
_H_BITS = 4                 # log2(_HEAD_SLOTS)
_T_BITS = 3                 # log2(_TABLE_SLOTS)
_SLOT_DESCS = 4             # descriptors per slot
_RECORDS = 16               # records between walker and back end
_RD_OUTSTANDING = 48
_WR_OUTSTANDING = 32
_EQ_REPORT = 24             # bytes of a fault report

# Read tags: destination and a destination-specific field.
_D_REG, _D_RING, _D_DESC, _D_PAY = range(4)
_REG_RQ, _REG_EQ, _REG_IRQ = range(3)
_RdTag = data.StructLayout({"sub": 6, "dest": 2})
# Write tags: what completes when the write's response comes back.
_K_DATA, _K_USED, _K_IDX, _K_AE = range(4)
_WrTag = data.StructLayout({"kind": 2, "q": 1, "value": 16})

_RdReq = data.StructLayout({"addr": 64, "len": 13, "tag": _RdTag})
_RdRet = data.StructLayout({"data": 64, "last": 1, "err": 1, "tag": _RdTag})
_WrReq = data.StructLayout({"addr": 64, "len": 4, "data": 64, "tag": _WrTag})
_WrRet = data.StructLayout({"err": 1, "tag": _WrTag})

_Seg = data.StructLayout({"addr": 64, "len": 32})
_Resume = data.StructLayout({"ind": 1, "base": 64, "size": 17, "idx": 16})
_Record = data.StructLayout({
    "q": 1, "head": 16, "nseg": 2, "seg0": _Seg, "seg1": _Seg,
    "res_valid": 1, "res": _Resume,
})
_PkCmd = data.StructLayout({"end": 1, "n": 8, "wlen": 16, "reserve": 8})
_JobA = data.StructLayout({"q": 1, "head": 16, "hslot": _H_BITS, "hn": 2})
_JobB = data.StructLayout({"a": _JobA, "has_t": 1, "tslot": _T_BITS, "tn": 3})

_NEXT = int(DescFlag.NEXT)
_WRITE = int(DescFlag.WRITE)
_INDIRECT = int(DescFlag.INDIRECT)


def _min(a, b):
    return Mux(a < b, a, b)


def _cmd_queue(m, req, stop, *, room, bus_ready):
    """A 2-entry queue of commands from stream ``req`` (see :class:`_DMAPort`).

    Returns ``(head, present, fire, pending)``: the head command (a view of ``req``'s
    payload layout), whether it is presented on the bus, whether it is taken this cycle,
    and whether a presented command is waiting to be taken after this cycle. ``room``
    (space in the caller's queues, which only the caller's pushes at ``fire`` reduce) must
    be high to present a command for the first time; once presented, it stays presented
    whatever ``room`` does.
    """
    layout = req.payload.shape()
    head = Signal(layout)
    tail = Signal(layout)
    h_valid, h_fresh, t_valid = Signal(), Signal(), Signal()
    drop_h = h_valid & h_fresh & stop
    present, fire, pending = Signal(), Signal(), Signal()
    take = Signal()
    m.d.comb += [
        present.eq(h_valid & (room | ~h_fresh) & ~drop_h),
        fire.eq(present & bus_ready),
        pending.eq(h_valid & ~h_fresh & ~fire),
        req.ready.eq(~stop & ~t_valid),
        take.eq(req.valid & req.ready),
    ]
    # The head and tail registers load the request's payload whenever they may take one,
    # whether or not a request is there (only the valid bits follow ``take``): ``take``
    # comes through the requesters' arbitration, and as the clock enable of every bit of
    # both registers it was the complete device's critical path (81.9 MHz).
    # The tail loads in every cycle it is empty, whatever the head does: its enable is
    # then ``t_valid`` alone (through ``fire`` it came from the bus's ready and the tag
    # queue's fill, 30 failing endpoints of the 64-entry board image).
    with m.If(~t_valid):
        m.d.sync += tail.eq(req.payload)
    with m.If(~h_valid | fire | drop_h):
        with m.If(t_valid & ~stop):
            m.d.sync += [head.eq(tail), h_valid.eq(1), h_fresh.eq(1)]
        with m.Else():
            m.d.sync += [head.eq(req.payload), h_valid.eq(take), h_fresh.eq(1)]
        m.d.sync += t_valid.eq(0)
    with m.Else():
        with m.If(present):
            m.d.sync += h_fresh.eq(0)
        with m.If(take):
            m.d.sync += t_valid.eq(1)
        with m.If(stop):
            m.d.sync += t_valid.eq(0)
    return head, present, fire, pending


def _stale_counter(m, clear, level, pending, pop, *, limit):
    """Counts the returns that are stale after ``clear`` and says when to discard one.

    ``level`` is the tag queue's fill (registered), ``pending`` whether a presented command
    is still waiting to be taken, ``pop`` whether a return is consumed this cycle. The
    returns of every command taken by the end of a ``clear`` cycle, and of the command then
    presented (it is taken later, never withdrawn), are stale; so are those of no other.
    Their number is taken in the cycle after ``clear`` from registers alone (the queue's
    level then holds exactly the commands on the bus), and the discarded returns are
    counted up towards it: the ``clear`` cycle's own handshakes, which come through the
    bus and the engine's routing, reach no adder. (Computing ``level + fire - pop +
    pending`` in the ``clear`` cycle was the 64-entry board image's critical path,
    89.0 MHz.) Returns ``discard``, high while a stale return may arrive.
    """
    cleared = Signal()                  # the previous cycle was a clear
    pend_at_clear = Signal()
    stale = Signal(range(limit + 2))    # the number of stale returns
    gone = Signal(range(limit + 2))     # the number discarded so far
    left = Signal()                     # gone != stale, registered
    discard = Signal()
    # ``discard`` is two flip-flops ORed: it gates the bus's read-data ready, whose fanout
    # reaches the bus adapter's wide data registers. ``left`` is computed for the next
    # cycle from registers, selected by this cycle's (late) ``pop`` in one final gate.
    m.d.comb += discard.eq(cleared | left)
    m.d.sync += cleared.eq(clear)
    with m.If(clear):
        m.d.sync += [pend_at_clear.eq(pending), gone.eq(0), left.eq(1)]
    with m.Elif(cleared):
        at_clear = Signal.like(stale)
        m.d.comb += at_clear.eq(level + pend_at_clear)
        m.d.sync += [
            stale.eq(at_clear),
            gone.eq(pop),               # discard is high in this cycle
            left.eq(Mux(pop, at_clear != 1, at_clear != 0)),
        ]
    with m.Else():
        m.d.sync += [
            gone.eq(gone + (discard & pop)),
            left.eq(Mux(discard & pop, gone + 1 != stale, gone != stale)),
        ]
    return discard


class _DMAPort(wiring.Component):
    """Issues the engine's DMA commands and routes the returns back with their tags.

    Not reset by device reset: it keeps counting the transactions still outstanding on
    the bus at ``clear`` and discards their data and responses. Converts the 16-byte DMA
    width to the engine's internal 8-byte beats. ``block`` (fatal) and ``clear`` stop new
    commands from being taken and drop those not yet presented on the bus; a command once
    presented stays presented until taken (a stream's ``valid`` is never withdrawn).
    """

    def __init__(self, width):
        self._width = width
        super().__init__({
            "dma":    Out(DMASignature(width=width)),
            "rd_req": In(stream.Signature(_RdReq)),
            "rd_ret": Out(stream.Signature(_RdRet)),
            "wr_req": In(stream.Signature(_WrReq)),
            "wr_ret": Out(stream.Signature(_WrRet)),
            "block":  In(1),
            "clear":  In(1),
            "idle":   Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        dma, W = self.dma, self._width

        # Commands taken from the engine wait in a 2-entry queue (so that the engine-side
        # ``ready`` is a register). A command is dropped if ``block`` or ``clear`` is seen
        # before it has ever been presented on the bus (so nothing decided in or after the
        # cycle a fatal error is detected reaches the bus); once presented it stays
        # presented until taken. Tags (and write data) are queued at the handshake, so the
        # tag queues hold exactly what is outstanding on the bus.
        stop = self.block | self.clear

        # --- reads ------------------------------------------------------------------------
        # The tag queue's head is a register (not a LUT-RAM read): the read return's tag
        # selects where its data goes, and from the queue's read pointer through the
        # LUT RAM and the router's slot memory into a requester's register enable was
        # the 64-entry device's critical path (85.2 MHz). A tag is readable the cycle
        # after its command is taken, before its data can return (two cycles or more);
        # the return waits for it all the same (``r_rdy``) rather than rely on that.
        m.submodules.rtags = rtags = BypassFIFO(width=13 + _RdTag.size,
                                                depth=_RD_OUTSTANDING, write_ahead=True)
        # Room in the tag queues, registered: room for two more in one cycle is room for
        # one in the next (at most one command is taken per cycle). From the queue's fill
        # through ``present`` and ``fire`` into the command queues' enables was 44 failing
        # endpoints of the 64-entry board image. The last entry of each queue is then used
        # only when the queue is not filling.
        r_room = Signal()
        m.d.sync += r_room.eq(rtags.level < _RD_OUTSTANDING - 1)
        rc, r_present, r_fire, r_pending = _cmd_queue(
            m, self.rd_req, stop, room=r_room, bus_ready=dma.rd_cmd.ready)
        m.d.comb += [
            dma.rd_cmd.valid.eq(r_present),
            dma.rd_cmd.payload.addr.eq(rc.addr),
            dma.rd_cmd.payload.len.eq(rc.len),
            rtags.w_en.eq(r_fire),
            rtags.w_data.eq(Cat(rc.len, rc.tag)),
        ]

        head_len = rtags.r_data[:13]
        head_tag = rtags.r_data[13:]
        pop = Signal()
        discard = _stale_counter(m, self.clear, rtags.level, r_pending, pop,
                                 limit=_RD_OUTSTANDING)
        ext = dma.rd_data
        out_ok = (self.rd_ret.ready | discard) & rtags.r_rdy
        if W == 8:
            last = ext.payload.last
            m.d.comb += [
                self.rd_ret.payload.data.eq(ext.payload.data),
                ext.ready.eq(out_ok),
            ]
        else:
            # Split each 16-byte beat into two 8-byte beats, counting the command's bytes.
            rem = Signal(13)
            fresh = Signal(init=1)
            hi = Signal()
            rem_cur = Mux(fresh, head_len, rem)
            last = rem_cur <= 8
            m.d.comb += [
                self.rd_ret.payload.data.eq(Mux(hi, ext.payload.data[64:],
                                                ext.payload.data[:64])),
                ext.ready.eq(out_ok & (hi | last)),
            ]
            with m.If(ext.valid & out_ok):
                with m.If(last):
                    m.d.sync += [fresh.eq(1), hi.eq(0)]
                with m.Else():
                    m.d.sync += [fresh.eq(0), rem.eq(rem_cur - 8), hi.eq(~hi)]
        m.d.comb += [
            self.rd_ret.valid.eq(ext.valid & ~discard & rtags.r_rdy),
            self.rd_ret.payload.last.eq(last),
            self.rd_ret.payload.err.eq(ext.payload.err),
            self.rd_ret.payload.tag.eq(head_tag),
            pop.eq(ext.valid & out_ok & last),
            rtags.r_en.eq(pop),
        ]

        # --- writes (every write is one command and one data beat) ----------------------
        # (write-ahead: the command handshake, which ``block``/``clear`` reach, moves only
        # pointers; it was the LUT-RAM write enable of both tag queues, 41 failing
        # endpoints of the 64-entry board image)
        m.submodules.wtags = wtags = WriteAheadFIFO(width=_WrTag.size, depth=_WR_OUTSTANDING)
        m.submodules.wdata = wdq = WriteAheadFIFO(width=64, depth=4)
        w_room = Signal()
        m.d.sync += w_room.eq((wtags.level < _WR_OUTSTANDING - 1) & (wdq.level < wdq.depth - 1))
        wc, w_present, w_fire, w_pending = _cmd_queue(
            m, self.wr_req, stop, room=w_room, bus_ready=dma.wr_cmd.ready)
        # A presented command's data beat is offered with it when no earlier beat waits in
        # wdq (a command once presented is taken: its beat may go first); otherwise, or
        # if the beat is not taken by then, it waits in wdq from the command's handshake.
        w_dsent = Signal()              # the presented command's beat has been taken
        direct = ~wdq.r_rdy & w_present & ~w_dsent
        direct_take = direct & dma.wr_data.ready
        with m.If(w_fire):
            m.d.sync += w_dsent.eq(0)
        with m.Elif(direct_take):
            m.d.sync += w_dsent.eq(1)
        m.d.comb += [
            dma.wr_cmd.valid.eq(w_present),
            dma.wr_cmd.payload.addr.eq(wc.addr),
            dma.wr_cmd.payload.len.eq(wc.len),
            wtags.w_en.eq(w_fire),
            wtags.w_data.eq(wc.tag),
            wdq.w_en.eq(w_fire & ~w_dsent & ~direct_take),
            wdq.w_data.eq(wc.data),
            dma.wr_data.valid.eq(wdq.r_rdy | direct),
            dma.wr_data.payload.data.eq(Mux(wdq.r_rdy, wdq.r_data, wc.data)),
            dma.wr_data.payload.last.eq(1),
            wdq.r_en.eq(dma.wr_data.ready),
        ]

        wpop = dma.wr_resp.valid
        wdiscard = _stale_counter(m, self.clear, wtags.level, w_pending, wpop,
                                  limit=_WR_OUTSTANDING)
        m.d.comb += [
            dma.wr_resp.ready.eq(1),
            wtags.r_en.eq(wpop),
            self.wr_ret.valid.eq(dma.wr_resp.valid & ~wdiscard),
            self.wr_ret.payload.err.eq(dma.wr_resp.payload.err),
            self.wr_ret.payload.tag.eq(wtags.r_data),
        ]

        m.d.comb += self.idle.eq((rtags.level == 0) & (wtags.level == 0) & ~r_present &
                                 ~w_present & ~wdq.r_rdy & ~r_pending & ~w_pending &
                                 self.rd_req.ready & self.wr_req.ready)
        return m


class _Requester:
    """One client of a DMA request arbiter: drives ``valid``/``p``, sees ``grant``."""

    def __init__(self, name, layout):
        self.valid = Signal(name=f"{name}_valid")
        self.p = Signal(layout, name=f"{name}_p")
        self.grant = Signal(name=f"{name}_grant")


def _arbitrate(m, requesters, out):
    """Fixed priority (first in the list wins) onto the stream ``out``.

    The payload is picked by :func:`~.util.onehot_mux` from the requesters' one-hot
    selects (each valid and no earlier one), not by a seven-deep If/Elif chain."""
    taken = Const(0)
    sels = []
    for r in requesters:
        sel = Signal(name=f"{r.valid.name[:-len('_valid')]}_sel")
        m.d.comb += [sel.eq(r.valid & ~taken), r.grant.eq(sel & out.ready)]
        sels.append(sel)
        taken = taken | r.valid
    m.d.comb += [out.valid.eq(taken),
                 out.payload.eq(onehot_mux(sels, [r.p for r in requesters]))]


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

    def elaborate(self, platform):
        top = Module()
        top.submodules.port = port = _DMAPort(self.width)
        wiring.connect(top, port.dma, wiring.flipped(self.dma))
        logic = Module()
        reset = reset_inserter(top, self.clear, alone=self.reset_by_clear, name="vq_logic")
        top.submodules.logic = reset(logic)

        # Each unit is its own module: Amaranth's simulator then re-evaluates a unit's
        # combinational logic only when that unit's inputs change.
        def unit(name):
            mod = Module()
            logic.submodules[name] = mod
            return mod

        m = unit("ctl")
        #: the engine's state machines by name ("ring", "eventq", "walker", "backend",
        #: "publish"), for traces (see :mod:`viommu.sim.vq_timeline`)
        self.fsms = {}
        top.d.comb += [port.clear.eq(self.clear), self.dma_busy.eq(~port.idle)]
        self._port = port

        fatal = Signal()
        # A copy of ``fatal`` for the DMA port's ``block``: from the one flip-flop to the
        # port's command queues and on into the AXI master's skid buffers failed 70
        # endpoints of the 64-entry board image.
        fatal_port = Signal(attrs={"keep": 1})
        fatal_d = Signal()
        errors = []                     # (condition) list, OR-ed into fatal

        def error(cond=Const(1)):
            sig = Signal(name=f"err{len(errors)}")
            m.d.comb += sig.eq(cond)
            errors.append(sig)

        m.d.comb += port.block.eq(fatal_port)

        # --- queue configuration -------------------------------------------------------------
        qc = self.queues
        num = [qc[q].num for q in range(2)]
        mask = [Signal(16, name=f"mask{q}") for q in range(2)]
        num_ok = [Signal(name=f"num_ok{q}") for q in range(2)]
        live = [Signal(name=f"live{q}") for q in range(2)]
        for q in range(2):
            # The mask and the size check are registered: from QueueNum through the carry
            # chain of num - 1 into the ring units' address adds was the board image's
            # critical path (78.2 MHz). num is stable for a cycle before ready is set.
            num_m1 = (num[q] - 1)[:16]
            m.d.sync += [
                mask[q].eq(num_m1),
                num_ok[q].eq((num[q] != 0) & ((num[q] & num_m1) == 0) &
                             (num[q] <= self.queue_size_max)),
            ]
            m.d.comb += live[q].eq(qc[q].ready & self.enable)
        # The fixed addresses in a queue's rings, registered like ``mask`` (the queue's
        # registers are stable for many cycles before ``ready`` is set): the avail ring's
        # first entry, ``avail_event``, the used idx, the used ring's first element and
        # the word the idx publisher reads (``used_event``, or the avail flags without
        # EVENT_IDX). The DMA requests that use them then carry no adder: a 64-bit add
        # behind the publisher's queue select, in series with the request arbitration and
        # the DMA port's head register, was 76 of the 64-entry board image's 145 failing
        # endpoints (83.8 MHz, seed 1) and its worst path on seed 2 (94.5 MHz).
        avail_ring = [Signal(64, name=f"avail_ring{q}") for q in range(2)]
        ae_addr = [Signal(64, name=f"ae_addr{q}") for q in range(2)]
        uidx_addr = [Signal(64, name=f"uidx_addr{q}") for q in range(2)]
        used_ring = [Signal(64, name=f"used_ring{q}") for q in range(2)]
        ue_addr = [Signal(64, name=f"ue_addr{q}") for q in range(2)]
        for q in range(2):
            m.d.sync += [
                avail_ring[q].eq(qc[q].driver + 4),
                ae_addr[q].eq(qc[q].device + 4 + (num[q] << 3)),
                uidx_addr[q].eq(qc[q].device + 2),
                used_ring[q].eq(qc[q].device + 4),
                ue_addr[q].eq(Mux(self.event_idx, qc[q].driver + 4 + (num[q] << 1),
                                  qc[q].driver)),
            ]
        notify_q = [self.notify.valid & (self.notify.payload == q) & live[q] for q in range(2)]

        # --- DMA request arbitration ----------------------------------------------------------
        m = unit("arbiter")
        r_rq = _Requester("rd_rq", _RdReq)        # requestq ring unit: header, ring entries
        r_eq = _Requester("rd_eq", _RdReq)        # eventq unit
        r_irq = _Requester("rd_irq", _RdReq)      # idx publisher: used_event / flags
        r_be = _Requester("rd_be", _RdReq)        # back end: descriptors past 2 segments
        r_w = _Requester("rd_walk", _RdReq)       # walker: payload, descriptor misses
        r_p2 = _Requester("rd_p2", _RdReq)        # indirect tables
        r_p1 = _Requester("rd_p1", _RdReq)        # head descriptors
        _arbitrate(m, [r_irq, r_eq, r_be, r_w, r_p2, r_p1, r_rq], port.rd_req)

        w_be = _Requester("wr_be", _WrReq)        # back end: answer bytes, used elements
        w_pub = _Requester("wr_pub", _WrReq)      # used idx
        w_rq = _Requester("wr_rq", _WrReq)        # requestq avail_event
        w_eq = _Requester("wr_eq", _WrReq)        # eventq avail_event
        _arbitrate(m, [w_pub, w_rq, w_eq, w_be], port.wr_req)

        def rd(r, addr, length, dest, sub):
            m.d.comb += [r.p.addr.eq(addr), r.p.len.eq(length),
                         r.p.tag.dest.eq(dest), r.p.tag.sub.eq(sub)]

        def wr(r, addr, length, value, kind, q=0, tag_value=0):
            m.d.comb += [r.p.addr.eq(addr), r.p.len.eq(length), r.p.data.eq(value),
                         r.p.tag.kind.eq(kind), r.p.tag.q.eq(q), r.p.tag.value.eq(tag_value)]

        # --- write responses ------------------------------------------------------------------
        wret = port.wr_ret
        m.d.comb += wret.ready.eq(1)
        wtag = wret.payload.tag
        wret_kind = [Signal(name=f"wret_{k}") for k in ("data", "used", "idx", "ae")]
        for k in range(4):
            m.d.comb += wret_kind[k].eq(wret.valid & (wtag.kind == k))
        error(wret.valid & wret.payload.err)

        # --- read returns: the router -----------------------------------------------------------
        m = unit("router")
        # The router's ``ready`` (which FIFO the tag picks, and whether it has room) reaches
        # the DMA port through a flip-flop: from the read-tag queue's head through the
        # router and back into the port's counters and the tag queue was the 64-entry
        # board image's critical path (92.7 MHz).
        m.submodules.ret_skid = ret_skid = SkidBuffer(_RdRet)
        wiring.connect(m, port.rd_ret, ret_skid.i)
        ret = ret_skid.o
        rtag = ret.payload.tag
        rbeat = Signal(3)
        reg_data = [Signal(64, name=f"reg_data{i}") for i in range(3)]
        reg_done = Signal(3)
        filled = Signal(_N_SLOTS)
        filled_set = Signal(_N_SLOTS)
        filled_clr = Signal(_N_SLOTS)
        clr_p1, clr_p2, clr_w, clr_be = (Signal(_N_SLOTS, name=f"filled_clr_{n}")
                                         for n in ("p1", "p2", "w", "be"))
        # ``first``: the slot's first descriptor has arrived (its read may still be going
        # on), so that its consumer can start one beat per further descriptor earlier.
        first = Signal(_N_SLOTS)
        first_set = Signal(_N_SLOTS)
        m.d.comb += filled_clr.eq(clr_p1 | clr_p2 | clr_w | clr_be)
        m.d.sync += [filled.eq((filled & ~filled_clr) | filled_set),
                     first.eq((first & ~filled_clr) | first_set)]

        m.submodules.slots = slots = Memory(shape=128, depth=_N_SLOTS * _SLOT_DESCS, init=[])
        slot_wp = slots.write_port(granularity=64)

        m.submodules.ring_fifo = ring_fifo = WriteAheadFIFO(width=64 + 3, depth=_RING_FIFO_DEPTH)
        # Payload beats wait in a small FIFO for the packer, so that the packer's cycle at
        # the end of each request does not hold up the DMA return path.
        m.submodules.pay_fifo = pay_fifo = BypassFIFO(width=64, depth=4)
        pay_valid = pay_fifo.r_rdy
        pay_ready = pay_fifo.r_en
        ret_fire = ret.valid & ret.ready
        m.d.sync += reg_done.eq(0)
        with m.If(ret_fire):
            m.d.sync += rbeat.eq(Mux(ret.payload.last, 0, rbeat + 1))
        error(ret_fire & ret.payload.err)
        with m.Switch(rtag.dest):
            with m.Case(_D_REG):
                m.d.comb += ret.ready.eq(1)
                with m.If(ret.valid & (rbeat == 0)):
                    for i in range(3):
                        with m.If(rtag.sub == i):
                            m.d.sync += reg_data[i].eq(ret.payload.data)
                with m.If(ret.valid & ret.payload.last):
                    m.d.sync += reg_done.eq(1 << rtag.sub[:2])
            with m.Case(_D_RING):
                m.d.comb += [
                    ret.ready.eq(ring_fifo.w_rdy),
                    ring_fifo.w_en.eq(ret.valid),
                    ring_fifo.w_data.eq(Cat(ret.payload.data, rtag.sub[:2] + 1)),
                ]
            with m.Case(_D_DESC):
                m.d.comb += [
                    ret.ready.eq(1),
                    slot_wp.addr.eq(Cat(rbeat[1:3], rtag.sub[:_SLOT_BITS])),
                    slot_wp.data.eq(Cat(ret.payload.data, ret.payload.data)),
                    slot_wp.en.eq(Mux(ret.valid, Mux(rbeat[0], 0b10, 0b01), 0)),
                ]
                with m.If(ret.valid & ret.payload.last):
                    m.d.comb += filled_set.eq(1 << rtag.sub[:_SLOT_BITS])
                with m.If(ret.valid & (ret.payload.last | (rbeat == 1))):
                    m.d.comb += first_set.eq(1 << rtag.sub[:_SLOT_BITS])
            with m.Case(_D_PAY):
                m.d.comb += [ret.ready.eq(pay_fifo.w_rdy), pay_fifo.w_en.eq(ret.valid),
                             pay_fifo.w_data.eq(ret.payload.data)]

        # --- fault FIFO ---------------------------------------------------------------------------
        m = unit("faults")
        m.submodules.fault_fifo = ffifo = SyncFIFO(width=FaultRecord.size,
                                                   depth=self.fault_queue_depth)
        m.d.comb += [ffifo.w_en.eq(self.faults.valid),
                     ffifo.w_data.eq(self.faults.payload)]
        with m.If(self.faults.valid & ~ffifo.w_rdy & (self.fault_drops != 0xffffffff)):
            m.d.sync += self.fault_drops.eq(self.fault_drops + 1)
        fault = FaultRecord(ffifo.r_data)
        fault_bytes = Cat(fault.reason, Const(0, 24), fault.flags, fault.endpoint,
                          Const(0, 32), fault.address)

        def avail_header_states(q, rq, wq, reg, last, avail, ae_done, pending_clr, resume,
                                on_idx=None):
            """The states both queue units share, in the current unit's FSM. ``HDR`` ->
            ``HDR_WAIT``: read queue ``q``'s avail flags and idx (an idx more than ``num``
            ahead of ``last`` is fatal), then go to ``resume``. ``AE`` -> ``AE_WAIT``: write
            ``avail_event`` (= ``avail``), wait for it to complete, then read the idx again
            (``HDR``), so that a buffer made available meanwhile is not missed. ``on_idx(idx)``
            adds statements for the cycle a valid idx arrives."""
            with m.State("HDR"):
                m.d.comb += rq.valid.eq(1)
                rd(rq, qc[q].driver, 4, _D_REG, reg)
                with m.If(rq.grant):
                    m.d.comb += pending_clr.eq(1)
                    m.next = "HDR_WAIT"
            with m.State("HDR_WAIT"):
                idx = reg_data[reg][16:32]
                with m.If(reg_done[reg]):
                    with m.If((idx - last)[:16] > num[q]):
                        error()
                    if on_idx is not None:
                        with m.Else():
                            on_idx(idx)
                    m.d.sync += avail.eq(idx)
                    with m.If(idx != avail):
                        m.d.sync += ae_done.eq(0)
                    m.next = resume
            with m.State("AE"):
                m.d.comb += wq.valid.eq(1)
                wr(wq, ae_addr[q], 2, avail, _K_AE, q)
                with m.If(wq.grant):
                    m.next = "AE_WAIT"
            with m.State("AE_WAIT"):
                with m.If(wret_kind[_K_AE] & (wtag.q == q)):
                    m.d.sync += ae_done.eq(1)
                    m.next = "HDR"

        # --- requestq ring unit -----------------------------------------------------------------
        m = unit("ring")
        ib = self._index_base
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
        with m.If(notify_q[0]):
            m.d.sync += r_pending.eq(1)
        with m.Elif(r_pending_clr):
            m.d.sync += r_pending.eq(0)
        # A ring read is prepared in one cycle (rr_*) and requested from the next; it is
        # prepared from r_avail in RUN, or from the avail idx itself in the cycle it
        # arrives (HDR_WAIT), which saves a cycle on a lone request's path.
        slot = Signal(16)
        rr_rd_addr = Signal(64)
        m.d.comb += [
            slot.eq(r_fetch & mask[0]),
            rr_rd_addr.eq(avail_ring[0] + (slot << 1)),
        ]

        # The entries up to the ring's end, capped at 4, from the ring index alone: with
        # ``num`` a power of two, fewer than 5 are left when every index bit above bit 1
        # under the mask is set, and then ``num - slot`` (1..4) equals its low 3 bits.
        # (The 16-bit ``num - slot`` and two 16-bit minimums were in series with the avail
        # idx's read data: the 64-entry board image's worst path, 91.1 MHz.)
        to_end4 = Signal(3)
        m.d.comb += to_end4.eq(Mux((slot | ~mask[0])[2:] == 0x3fff,
                                   num[0][:3] - slot[:3], 4))

        def prepare(avail):
            cnt = Signal(16)
            cnt4 = Signal(3)
            m.d.comb += [cnt.eq(avail - r_fetch),
                         cnt4.eq(Mux(cnt[2:] != 0, 4, cnt[:3]))]
            with m.If(live[0] & (avail != r_fetch)):
                m.d.sync += [rr_valid.eq(1), rr_n.eq(_min(cnt4, to_end4)),
                             rr_addr.eq(rr_rd_addr)]

        with m.FSM(name="ring") as fsm:
            self.fsms["ring"] = fsm
            with m.State("RUN"):
                with m.If(rr_valid):
                    m.d.comb += r_rq.valid.eq(r_cred != 0)
                    rd(r_rq, rr_addr, rr_n << 1, _D_RING, rr_n - 1)
                    with m.If(r_rq.grant):
                        m.d.sync += [r_fetch.eq(r_fetch + rr_n), rr_valid.eq(0)]
                        m.d.comb += r_cred_take.eq(1)
                with m.Elif(live[0] & (r_avail != r_fetch)):
                    prepare(r_avail)
                with m.Elif(live[0] & r_pending):
                    # the doorbell: read the avail idx from here (no HDR cycle)
                    with m.If(~num_ok[0]):
                        error()
                    with m.Else():
                        m.d.comb += r_rq.valid.eq(1)
                        rd(r_rq, qc[0].driver, 4, _D_REG, _REG_RQ)
                        with m.If(r_rq.grant):
                            m.d.comb += r_pending_clr.eq(1)
                            m.next = "HDR_WAIT"
                with m.Elif(live[0] & self.event_idx & ~r_ae_done):
                    m.next = "AE"
            avail_header_states(0, r_rq, w_rq, _REG_RQ, r_fetch, r_avail, r_ae_done,
                                r_pending_clr, resume="RUN", on_idx=prepare)

        # head extractor: one head per cycle from the ring FIFO
        rh_pos = Signal(2)
        rh_n = ring_fifo.r_data[64:67]
        rh_valid = ring_fifo.r_rdy
        rh_head = ring_fifo.r_data[:64].word_select(rh_pos, 16)
        rh_accept = Signal()
        with m.If(rh_accept):
            with m.If(rh_pos == rh_n - 1):
                m.d.sync += rh_pos.eq(0)
                m.d.comb += [ring_fifo.r_en.eq(1), r_cred_ret.eq(1)]
            with m.Else():
                m.d.sync += rh_pos.eq(rh_pos + 1)

        # --- eventq unit -------------------------------------------------------------------------
        m = unit("eventq")
        e_avail = Signal(16, init=ib)
        e_last = Signal(16, init=ib)
        e_pending = Signal(init=1)
        e_pending_clr = Signal()
        e_ae_done = Signal()
        e_inflight = Signal(range(self.fault_queue_depth + 1))    # eventq jobs started
        e_done = Signal()                                           # one report written
        e_head = Signal(16)
        ej_valid = Signal()
        ej_accept = Signal()
        m.d.sync += e_inflight.eq(e_inflight + ej_accept - e_done)
        # The ring entry's address, registered: e_last changes in RING_WAIT, two cycles
        # (PUSH, IDLE) before the next RING can use it.
        e_ring_addr = Signal(64)
        m.d.sync += e_ring_addr.eq(avail_ring[1] + ((e_last & mask[1]) << 1))
        with m.If(notify_q[1]):
            m.d.sync += e_pending.eq(1)
        with m.Elif(e_pending_clr):
            m.d.sync += e_pending.eq(0)
        with m.FSM(name="eventq") as fsm:
            self.fsms["eventq"] = fsm
            with m.State("IDLE"):
                with m.If(live[1] & (e_inflight < ffifo.level)):
                    with m.If(e_avail != e_last):
                        m.next = "RING"
                    with m.Elif(e_pending):
                        with m.If(~num_ok[1]):
                            error()
                        with m.Else():
                            m.next = "HDR"
                    with m.Elif(self.event_idx & ~e_ae_done):
                        m.next = "AE"
            avail_header_states(1, r_eq, w_eq, _REG_EQ, e_last, e_avail, e_ae_done,
                                e_pending_clr, resume="IDLE")
            with m.State("RING"):
                m.d.comb += r_eq.valid.eq(1)
                rd(r_eq, e_ring_addr, 2, _D_REG, _REG_EQ)
                with m.If(r_eq.grant):
                    m.next = "RING_WAIT"
            with m.State("RING_WAIT"):
                with m.If(reg_done[_REG_EQ]):
                    m.d.sync += [e_head.eq(reg_data[_REG_EQ][:16]), e_last.eq(e_last + 1)]
                    m.next = "PUSH"
            with m.State("PUSH"):
                m.d.comb += ej_valid.eq(1)
                with m.If(ej_accept):
                    m.next = "IDLE"

        # --- P1: head descriptor prefetch --------------------------------------------------------
        m = unit("p1")
        m.submodules.job_a = fifo_a = WriteAheadFIFO(width=_JobA.size, depth=_HEAD_SLOTS)
        m.submodules.job_b = fifo_b = WriteAheadFIFO(width=_JobB.size, depth=_HEAD_SLOTS)
        h_used = Signal(range(_HEAD_SLOTS + 1))
        h_wr = Signal(_H_BITS)
        h_inc = Signal()
        h_dec = Signal()
        m.d.sync += h_used.eq(h_used + h_inc - h_dec)
        t_used = Signal(range(_TABLE_SLOTS + 1))
        t_wr = Signal(_T_BITS)
        t_inc = Signal()
        t_dec = Signal()
        m.d.sync += t_used.eq(t_used + t_inc - t_dec)

        # Stage 0 takes the next head (an eventq job first) into a register and computes its
        # descriptor address; stage 1 reads the descriptor(s) into the next head slot.
        p1_valid = Signal()
        p1_q = Signal()
        p1_head = Signal(16)
        p1_n = Signal(2)
        p1_addr = Signal(64)
        p1_bad = Signal()
        src_head = Mux(ej_valid, e_head, rh_head)
        src_valid = ej_valid | rh_valid
        with m.If(src_valid & (~p1_valid | r_p1.grant)):
            m.d.comb += [ej_accept.eq(ej_valid), rh_accept.eq(~ej_valid)]
            m.d.sync += [
                p1_valid.eq(1), p1_q.eq(ej_valid), p1_head.eq(src_head),
                p1_n.eq(Mux(~ej_valid & ~self.indirect_desc & (src_head + 1 < num[0]), 2, 1)),
                p1_addr.eq(Mux(ej_valid, qc[1].desc, qc[0].desc) + (src_head << 4)),
                p1_bad.eq(src_head >= Mux(ej_valid, num[1], num[0])),
            ]
        with m.Elif(r_p1.grant):
            m.d.sync += p1_valid.eq(0)
        error(p1_valid & p1_bad)
        m.d.comb += r_p1.valid.eq(p1_valid & ~p1_bad & (h_used != _HEAD_SLOTS) & fifo_a.w_rdy)
        rd(r_p1, p1_addr, p1_n << 4, _D_DESC, h_wr)
        job_a = _JobA(fifo_a.w_data)
        m.d.comb += [job_a.q.eq(p1_q), job_a.head.eq(p1_head), job_a.hslot.eq(h_wr),
                     job_a.hn.eq(p1_n)]
        with m.If(r_p1.grant):
            m.d.comb += [fifo_a.w_en.eq(1), h_inc.eq(1), clr_p1.eq(1 << h_wr)]
            m.d.sync += h_wr.eq(h_wr + 1)

        # --- P2: indirect table prefetch ---------------------------------------------------------
        m = unit("p2")
        a_out = _JobA(fifo_a.r_data)
        # The head descriptor of the job at the head of fifo_a is taken into d2_reg as its
        # two beats come back from the bus (if the job is at the head by then), else read
        # from the slot memory in the cycle after the slot's first descriptor is seen
        # arrived and registered in the next; P2 decides in the cycle after d2_reg is
        # loaded.
        p2_rp = slots.read_port(domain="sync")
        m.d.comb += p2_rp.addr.eq(Cat(Const(0, 2), a_out.hslot, Const(0, _SLOT_BITS - _H_BITS)))
        d2_reg = Signal(128)
        d2 = VirtqDesc(d2_reg)
        d2_ind = (d2.flags[2] & ~d2.flags[0] & self.indirect_desc &
                  (d2.len[:4] == 0) & (d2.len != 0))
        a_ready = fifo_a.r_rdy & first.bit_select(a_out.hslot, 1)
        p2_read = Signal()          # p2_rp.data is the descriptor of the job at the head
        p2_look = Signal()          # d2_reg is
        sn_lo = Signal()            # d2_reg's low half was taken from the bus
        sn_hit = (fifo_a.r_rdy & ~p2_look & ret.valid & (rtag.dest == _D_DESC) &
                  (rtag.sub[:_SLOT_BITS] == a_out.hslot))
        sn_done = sn_hit & (rbeat == 1) & sn_lo
        m.d.sync += [p2_read.eq(a_ready & ~p2_read & ~p2_look),
                     p2_look.eq((p2_read | p2_look | sn_done) & ~fifo_a.r_en)]
        with m.If(p2_read):
            m.d.sync += d2_reg.eq(p2_rp.data)
        with m.If(sn_hit & (rbeat == 0)):
            m.d.sync += [d2_reg[:64].eq(ret.payload.data), sn_lo.eq(1)]
        with m.If(sn_done):
            m.d.sync += [d2_reg[64:].eq(ret.payload.data), sn_lo.eq(0)]
        job_b = _JobB(fifo_b.w_data)
        tn = Signal(3)
        m.d.comb += [
            job_b.a.eq(a_out), job_b.tslot.eq(t_wr),
            tn.eq(Mux(d2.len[4:] > 4, 4, d2.len[4:])),
            job_b.tn.eq(tn),
        ]
        rd(r_p2, d2.addr, tn << 4, _D_DESC, _HEAD_SLOTS + t_wr)
        with m.If(p2_look):
            with m.If(~d2_ind):
                with m.If(fifo_b.w_rdy):
                    m.d.comb += [fifo_b.w_en.eq(1), fifo_a.r_en.eq(1)]
            with m.Else():
                m.d.comb += [r_p2.valid.eq((t_used != _TABLE_SLOTS) & fifo_b.w_rdy),
                             job_b.has_t.eq(1)]
                with m.If(r_p2.grant):
                    m.d.comb += [fifo_b.w_en.eq(1), fifo_a.r_en.eq(1), t_inc.eq(1),
                                 clr_p2.eq(1 << (_HEAD_SLOTS + t_wr))]
                    m.d.sync += t_wr.eq(t_wr + 1)

        # --- packer ------------------------------------------------------------------------------
        m = unit("packer")
        m.submodules.pk_cmds = pk_fifo = SyncFIFOBuffered(width=_PkCmd.size,
                                                  depth=_PK_CMD_DEPTH)
        # The request FIFO's output register drives ``req`` directly, and ``req.ready`` is
        # its read enable: the core's is a flip-flop (the executor keeps its RECV state in
        # one). A skid buffer here put its multiplexer between that register and the
        # executor's decode, across the chip (the 64-entry board image's worst path, seed
        # 1, 83.8 MHz). The response comes through a skid buffer in the back end: from the
        # core's response count through ``resp.ready`` into its own buffer's enable was a
        # failing path.
        m.submodules.req_fifo = req_fifo = BypassFIFO(width=data.Layout.cast(ReqBeat).size,
                                                      depth=_REQ_FIFO_DEPTH)
        credits = Signal(range(_REQ_FIFO_DEPTH + 1), init=_REQ_FIFO_DEPTH)
        cred_take = Signal(range(_REQ_FIFO_DEPTH + 1))
        cred_release = Signal(8)
        req_pop = Signal()
        m.d.sync += credits.eq(credits - cred_take + cred_release + req_pop)
        m.d.comb += [
            self.req.valid.eq(req_fifo.r_rdy & ~fatal),
            self.req.payload.eq(req_fifo.r_data),
            req_fifo.r_en.eq(self.req.ready & ~fatal),
            req_pop.eq(req_fifo.r_rdy & req_fifo.r_en),
        ]

        # The command being worked on, in registers (``cur_left``: bytes still to come).
        pk = _PkCmd(pk_fifo.r_data)
        cur_valid = Signal()
        cur_end = Signal()
        cur_left = Signal(8)
        cur_wlen = Signal(16)
        cur_reserve = Signal(8)
        cur_done = Signal()

        acc = Signal(128)
        cnt = Signal(range(17))
        emitted = Signal(8)
        is_data = cur_valid & ~cur_end
        # A full beat goes out as soon as it is known not to be the request's last: more
        # than 8 bytes held, or 8 while the request's bytes are still coming.
        emit_full = (cnt > 8) | ((cnt == 8) & is_data)
        cnt_e = Signal(range(17))
        acc_e = Signal(128)
        m.d.comb += [
            cnt_e.eq(Mux(emit_full, cnt - 8, cnt)),
            acc_e.eq(Mux(emit_full, acc[64:], acc)),
        ]
        out_beat = ReqBeat(req_fifo.w_data)
        m.d.comb += out_beat.data.eq(acc[:64])
        with m.If(emit_full):
            m.d.comb += [req_fifo.w_en.eq(1), out_beat.nbytes.eq(8)]
            m.d.sync += [acc.eq(acc_e), cnt.eq(cnt_e), emitted.eq(emitted + 1)]
        nb = Signal(4)
        m.d.comb += [
            nb.eq(Mux(cur_left > 8, 8, cur_left)),
            pay_ready.eq(is_data & pay_valid),
        ]
        with m.If(is_data & pay_valid):
            bmask = Cat((nb > j).replicate(8) for j in range(8))
            word = pay_fifo.r_data & bmask
            m.d.sync += [acc.eq(acc_e | (word << (cnt_e * 8))), cnt.eq(cnt_e + nb),
                         cur_left.eq(cur_left - nb)]
            m.d.comb += cur_done.eq(nb == cur_left)
        with m.If(cur_valid & cur_end & ~emit_full):
            m.d.comb += [
                req_fifo.w_en.eq(1),
                out_beat.nbytes.eq(cnt),
                out_beat.last.eq(1),
                out_beat.wlen.eq(cur_wlen),
                cur_done.eq(1),
                cred_release.eq(cur_reserve - emitted - 1),
            ]
            m.d.sync += [acc.eq(0), cnt.eq(0), emitted.eq(0)]
        # (after the updates above: a command loaded in the cycle the last one is done wins)
        with m.If(pk_fifo.r_rdy & (~cur_valid | cur_done)):
            m.d.comb += pk_fifo.r_en.eq(1)
            m.d.sync += [cur_valid.eq(1), cur_end.eq(pk.end), cur_left.eq(pk.n),
                         cur_wlen.eq(pk.wlen), cur_reserve.eq(pk.reserve)]
        with m.Elif(cur_done):
            m.d.sync += cur_valid.eq(0)

        # --- walker --------------------------------------------------------------------------------
        m = unit("walker")
        m.submodules.records = rec_fifo = SyncFIFOBuffered(width=_Record.size,
                                                           depth=_RECORDS)
        b_job = _JobB(fifo_b.r_data)
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
        w_rp = slots.read_port(domain="sync")
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
        w_avail = w_hit & Mux(w_off[:2] == 0, first, filled).bit_select(w_blk_slot, 1)
        w_next_avail = w_next_hit & filled.bit_select(w_blk_slot, 1)
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
        # A payload read may go when the request FIFO has room for its beats and the packer
        # a command slot, decided from flip-flops: ``credits >= pay_beats`` and the packer
        # queue's fill were in series with the read arbitration and the router's slot
        # flags (the 64-entry board image's worst path, 24 endpoints). Only the walker
        # takes credits, at most READ_CAP / 8 = 16 in a cycle, and at most one packer
        # slot, so: 32 credits a cycle ago are enough now for any read; otherwise last
        # cycle's compare holds when last cycle was EXEC too (pay_beats was the same and no
        # credit was taken): in EXEC's first cycle with under 32 credits the read waits a
        # cycle. One packer slot is kept spare. END's end beat needs one credit: it waits
        # for more than 16 a cycle ago (the credit compare in series with END's
        # decision and the records' enables was a 13.0 ns path).
        cred_big = Signal()
        cred_ok = Signal()
        cred_end = Signal()             # END's one credit: more than 16 a cycle ago
        w_first_exec = Signal()
        pk_room = Signal()
        assert READ_CAP // 8 <= 16
        m.d.sync += [
            cred_big.eq(credits >= 32),
            cred_end.eq(credits > READ_CAP // 8),
            cred_ok.eq(credits >= pay_beats),
            w_first_exec.eq(fsm_latch),
            pk_room.eq(pk_fifo.level < _PK_CMD_DEPTH - 1),
        ]
        pk_in = _PkCmd(pk_fifo.w_data)
        m.submodules.eq_records = eq_rec_fifo = WriteAheadFIFO(width=_Record.size, depth=2)
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
                    error()
                with m.Else():
                    m.d.sync += [w_idx.eq(d.next), w_count.eq(count_next)]
                    with m.If(w_next_avail):
                        m.next = "LATCH"
                    with m.Else():
                        m.next = "LOOK"
            with m.Else():
                m.next = "END"

        with m.FSM(name="walker") as fsm:
            self.fsms["walker"] = fsm
            with m.State("IDLE"):
                with m.If(fifo_b.r_rdy):
                    q = b_job.a.q
                    m.d.comb += fifo_b.r_en.eq(1)
                    m.d.sync += [
                        w_q.eq(q), w_head.eq(b_job.a.head), w_has_t.eq(b_job.has_t),
                        w_hslot.eq(b_job.a.hslot),
                        w_tslot.eq(b_job.tslot), w_tn.eq(b_job.tn),
                        w_tbl_ind.eq(0), w_tbl_base.eq(Mux(q, qc[1].desc, qc[0].desc)),
                        w_tbl_size.eq(Mux(q, num[1], num[0])),
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
                    with m.If(first.bit_select(b_job.a.hslot, 1)):
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
                    error()                                  # a loop
                with m.Elif(f_ind):
                    with m.If(x_ind_bad):
                        error()
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
                    error()                                  # readable after writable
                with m.Elif(x_pay):
                    m.d.comb += r_w.valid.eq((cred_big | (cred_ok & ~w_first_exec)) & pk_room)
                    rd(r_w, d.addr, pay_n, _D_PAY, 0)
                    with m.If(r_w.grant):
                        m.d.comb += [cred_take.eq(pay_beats), pk_fifo.w_en.eq(1),
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
                m.d.comb += r_w.valid.eq(~w_miss_used | filled[_SLOT_MISS])
                rd(r_w, w_miss_addr, nread << 4, _D_DESC, _SLOT_MISS)
                with m.If(r_w.grant):
                    m.d.comb += clr_w.eq(1 << _SLOT_MISS)
                    m.d.sync += w_miss_used.eq(1)
                    m.d.sync += [w_blk_valid.eq(1), w_blk_slot.eq(_SLOT_MISS),
                                 w_blk_base.eq(w_idx), w_blk_n.eq(nread)]
                    m.next = "LOOK"
            with m.State("END"):
                # The job's slots are freed once their reads have completed (the walker
                # may have used a slot's first descriptor before the rest arrived).
                slots_done = (filled.bit_select(w_hslot, 1) &
                              (~w_has_t | filled.bit_select(_HEAD_SLOTS + w_tslot, 1)))
                with m.If(~slots_done):
                    pass                                    # wait
                with m.Elif(w_q):
                    with m.If(w_wtotal < _EQ_REPORT):
                        error()
                    with m.Elif(eq_rec_fifo.w_rdy):
                        m.d.comb += [eq_rec_fifo.w_en.eq(1), h_dec.eq(1), t_dec.eq(w_has_t)]
                        m.next = "IDLE"
                with m.Elif(rec_fifo.w_rdy & pk_room & cred_end):
                    m.d.comb += [
                        rec_fifo.w_en.eq(1), h_dec.eq(1), t_dec.eq(w_has_t),
                        pk_fifo.w_en.eq(1), pk_in.end.eq(1),
                        pk_in.wlen.eq(Mux(w_wtotal > 0xffff, 0xffff, w_wtotal)),
                        pk_in.reserve.eq(w_reserve + 1),
                        cred_take.eq(1),
                    ]
                    m.next = "IDLE"

        # --- back end ------------------------------------------------------------------------------
        m = unit("backend")
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
        used_done = [Signal(16, name=f"used_done{q}", init=ib) for q in range(2)]
        # The address of the next used element and the idx that will publish it,
        # registered: used_shadow[q] changes only as USED is left for IDLE, a cycle
        # before USED can come again.
        used_elem = [Signal(64, name=f"used_elem{q}") for q in range(2)]
        used_next = [Signal(16, name=f"used_next{q}") for q in range(2)]
        for q in range(2):
            m.d.sync += [used_elem[q].eq(used_ring[q] + ((used_shadow[q] & mask[q]) << 3)),
                         used_next[q].eq(used_shadow[q] + 1)]
        # pub_due[q]: a used element of queue q has completed since the publisher last
        # took used_done[q] (a flip-flop, so that the publisher's request is one).
        pub_due = Signal(2)
        pub_take = Signal(2)
        for q in range(2):
            with m.If(wret_kind[_K_USED] & (wtag.q == q)):
                m.d.sync += [used_done[q].eq(wtag.value), pub_due[q].eq(1)]
            with m.Elif(pub_take[q]):
                m.d.sync += pub_due[q].eq(0)

        # (``ready`` to the core from a flip-flop: see the packer's ``req_slice``)
        m.submodules.resp_slice = resp_slice = SkidBuffer(RespBeat)
        wiring.connect(m, wiring.flipped(self.resp), resp_slice.i)
        resp = resp_slice.o
        rec_out = _Record(rec_fifo.r_data)
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
        be_rp = slots.read_port(domain="sync")
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
            self.fsms["backend"] = fsm
            with m.State("IDLE"):
                # Eventq records first: they wait for nothing, and the two queues' used
                # rings are independent.
                with m.If(eq_rec_fifo.r_rdy):
                    m.d.comb += eq_rec_fifo.r_en.eq(1)
                    m.d.sync += rec.eq(eq_rec_fifo.r_data)
                with m.Elif(rec_fifo.r_rdy):
                    m.d.comb += rec_fifo.r_en.eq(1)
                    m.d.sync += rec.eq(rec_out)
                with m.If(eq_rec_fifo.r_rdy | rec_fifo.r_rdy):
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
                    wr(w_be, b_seg_addr, b_wn, b_data >> (b_off * 8), _K_DATA)
                    with m.If(w_be.grant):
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
                    error()                  # the answer does not fit the writable part
            with m.State("MREAD"):
                m.d.comb += r_be.valid.eq(1)
                rd(r_be, b_m_addr, 16, _D_DESC, _SLOT_BE)
                with m.If(r_be.grant):
                    m.d.comb += clr_be.eq(1 << _SLOT_BE)
                    m.next = "MWAIT"
            with m.State("MWAIT"):
                with m.If(filled[_SLOT_BE]):
                    m.next = "MLATCH"           # the descriptor is read meanwhile
            with m.State("MLATCH"):
                m.d.sync += bd_reg.eq(be_rp.data)
                m.next = "MCHECK"
            with m.State("MCHECK"):
                bf = bd.flags
                with m.If((b_m_count + 1 > rec.res.size) | ~bf[1] | bf[2] |
                          (bf[0] & (bd.next >= rec.res.size))):
                    error()
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
                wr(w_be, Mux(q, used_elem[1], used_elem[0]), 8,
                   Cat(rec.head, Const(0, 16), b_len, Const(0, 12)), _K_USED, q,
                   Mux(q, used_next[1], used_next[0]))
                with m.If(w_be.grant):
                    for qq in range(2):
                        with m.If(q == qq):
                            m.d.sync += used_shadow[qq].eq(used_shadow[qq] + 1)
                    with m.If(q):
                        m.d.comb += [ffifo.r_en.eq(1), e_done.eq(1)]
                    m.next = "IDLE"

        # --- idx publisher and used-buffer notifications ---------------------------------------
        m = unit("publish")
        irq_old = [Signal(16, name=f"irq_old{q}", init=ib) for q in range(2)]
        p_q = Signal()
        p_new = Signal(16)
        # The word READ reads, selected by p_q a cycle late: p_q changes as IDLE is left,
        # and READ comes after WRITE_WAIT, which lasts until a write has completed.
        irq_addr = Signal(64)
        m.d.sync += irq_addr.eq(Mux(p_q, ue_addr[1], ue_addr[0]))
        irq = Signal()
        m.d.sync += irq.eq(0)
        m.d.comb += self.irq_used.eq(irq)

        def write_used_idx(q, new):
            """Request the write of queue ``q``'s used idx = ``new``; WRITE_WAIT once taken."""
            m.d.comb += w_pub.valid.eq(1)
            wr(w_pub, Mux(q, uidx_addr[1], uidx_addr[0]), 2, new, _K_IDX, q)
            with m.If(w_pub.grant):
                m.next = "WRITE_WAIT"

        with m.FSM(name="publish") as fsm:
            self.fsms["publish"] = fsm
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
                with m.If(wret_kind[_K_IDX]):
                    m.next = "READ"
            with m.State("READ"):
                m.d.comb += r_irq.valid.eq(1)
                rd(r_irq, irq_addr, 2, _D_REG, _REG_IRQ)
                with m.If(r_irq.grant):
                    m.next = "READ_WAIT"
            with m.State("READ_WAIT"):
                with m.If(reg_done[_REG_IRQ]):
                    v = reg_data[_REG_IRQ][:16]
                    old = Mux(p_q, irq_old[1], irq_old[0])
                    want = Mux(self.event_idx,
                               (p_new - v - 1)[:16] < (p_new - old)[:16],
                               ~v[0])
                    m.d.sync += irq.eq(want)
                    for q in range(2):
                        with m.If(p_q == q):
                            m.d.sync += irq_old[q].eq(p_new)
                    m.next = "IDLE"

        # --- fatal errors ----------------------------------------------------------------------
        m = unit("fatal")
        fatal_set = Signal()
        m.d.comb += fatal_set.eq(Cat(errors).any())
        with m.If(fatal_set):
            m.d.sync += [fatal.eq(1), fatal_port.eq(1)]
        m.d.sync += fatal_d.eq(fatal)
        m.d.comb += self.needs_reset.eq(fatal & ~fatal_d)

        self._fatal = fatal      # for tests and debugging
        return top
