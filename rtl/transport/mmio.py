"""The virtio-mmio (version 2) transport registers, behind an AXI4-Lite slave."""

from amaranth.hdl import Module, Signal, Cat, Const, Mux
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from ..bus.axi import AXI4LiteSignature
from ..core.layouts import Feature, DeviceStatus, Features, QueueConfig, VIRTIO_ID_IOMMU
from ..core.params import CoreParams
from ..util import check_int


__all__ = ["VirtioMMIORegisters", "MMIO",
           "MMIO_MAGIC", "MMIO_VERSION", "DEFAULT_VENDOR_ID", "NUM_QUEUES"]


#: "virt", little-endian.
MMIO_MAGIC = 0x74726976
MMIO_VERSION = 2
#: Default VendorID: the virtio PCI vendor ID, so both transports report the same vendor.
#: Linux never looks at it (the driver matches any vendor); QEMU reports 0x554D4551 ("QEMU").
DEFAULT_VENDOR_ID = 0x1AF4
#: requestq (0) and eventq (1).
NUM_QUEUES = 2


class MMIO:
    """Byte offsets of the virtio-mmio version 2 registers."""
    MAGIC               = 0x000
    VERSION             = 0x004
    DEVICE_ID           = 0x008
    VENDOR_ID           = 0x00c
    DEVICE_FEATURES     = 0x010
    DEVICE_FEATURES_SEL = 0x014
    DRIVER_FEATURES     = 0x020
    DRIVER_FEATURES_SEL = 0x024
    QUEUE_SEL           = 0x030
    QUEUE_NUM_MAX       = 0x034
    QUEUE_NUM           = 0x038
    QUEUE_READY         = 0x044
    QUEUE_NOTIFY        = 0x050
    INTERRUPT_STATUS    = 0x060
    INTERRUPT_ACK       = 0x064
    STATUS              = 0x070
    QUEUE_DESC_LOW      = 0x080
    QUEUE_DESC_HIGH     = 0x084
    QUEUE_DRIVER_LOW    = 0x090
    QUEUE_DRIVER_HIGH   = 0x094
    QUEUE_DEVICE_LOW    = 0x0a0
    QUEUE_DEVICE_HIGH   = 0x0a4
    SHM_SEL             = 0x0ac
    SHM_LEN_LOW         = 0x0b0
    SHM_LEN_HIGH        = 0x0b4
    SHM_BASE_LOW        = 0x0b8
    SHM_BASE_HIGH       = 0x0bc
    QUEUE_RESET         = 0x0c0
    CONFIG_GENERATION   = 0x0fc
    CONFIG              = 0x100
    #: The ``bypass`` byte of the device configuration (0x100 + 36).
    CONFIG_BYPASS       = 0x124
    #: Device-specific, read-only: fault reports lost (not part of virtio; past the
    #: 40-byte configuration, where no driver looks).
    FAULT_DROPS         = 0x200
    #: Device-specific, read-only: live mappings, and MAPs answered NOMEM.
    LIVE_MAPPINGS       = 0x204
    NOMEM_COUNT         = 0x208


def _one_hot_tree(bits):
    """``(any, many)`` of a list of 1-bit values: whether at least one, and whether more
    than one, is set; a balanced tree (log depth, no carry chain)."""
    if len(bits) == 1:
        return bits[0], Const(0)
    half = len(bits) // 2
    a_any, a_many = _one_hot_tree(bits[:half])
    b_any, b_many = _one_hot_tree(bits[half:])
    return a_any | b_any, a_many | b_many | (a_any & b_any)


def _merge(old, wdata, wstrb):
    """``old`` with the byte lanes enabled in ``wstrb`` replaced by those of ``wdata``."""
    return Cat(*(Mux(wstrb[i], wdata[8 * i:8 * i + 8], old[8 * i:8 * i + 8])
                 for i in range(4)))


def _lanes(wstrb):
    """The 32-bit mask of the byte lanes enabled in ``wstrb``."""
    return Cat(*(wstrb[i].replicate(8) for i in range(4)))


class VirtioMMIORegisters(wiring.Component):
    """The virtio-mmio version 2 register block of the virtio-iommu (device ID 23).

    An AXI4-Lite slave (32-bit data) holding every transport register, plus the 40-byte
    device configuration at 0x100. It knows nothing of virtqueue contents: it hands the
    driver's queue setup, the negotiated features and the doorbells to a
    transport-independent virtqueue engine, and takes back "used buffer" and "needs reset"
    events to raise the interrupt.

    Parameters
    ----------
    params : CoreParams
        The configuration space is ``params.config_bytes(bypass)``.
    features_offered : int
        The 64-bit DeviceFeatures set. Must contain VERSION_1 (bit 32) and must not offer
        BYPASS (3) together with BYPASS_CONFIG (6).
    queue_num_max : int
        QueueNumMax of queues 0 and 1: a power of two, 1..32768. Default 256.
    addr_width : int
        Width of the AXI addresses, 10..32 (the register block needs 0x000..0x20b). Offsets
        are taken modulo ``2**addr_width``; everything not listed below reads 0. Default 12.
    bypass_init : int
        Value of the ``bypass`` configuration byte after a system reset, 0..255. Default 0.
    vendor_id : int
        VendorID. Default 0x1AF4 (see :data:`DEFAULT_VENDOR_ID`).

    Register map
    ------------
    Offsets in bytes; every register is 32 bits wide and honours AXI byte strobes (a lane
    whose strobe is clear keeps its old value; a write with no strobe set changes nothing and
    has no side effect). ``addr[1:0]`` is ignored. "RO" writes are ignored; a register that
    the virtio spec calls write-only reads back the value last written (the spec leaves such
    reads undefined), except the doorbells, which read 0.

    ======  ====================  ==  ===========================================================
    0x000   MagicValue            RO  0x74726976
    0x004   Version               RO  2
    0x008   DeviceID              RO  23
    0x00c   VendorID              RO  ``vendor_id``
    0x010   DeviceFeatures        RO  bits ``32*sel`` .. ``32*sel+31`` of ``features_offered``
                                      for DeviceFeaturesSel ``sel`` = 0/1; 0 for any other sel
    0x014   DeviceFeaturesSel     RW  32 bits
    0x020   DriverFeatures        RW  word ``sel`` (0/1) of the driver's 64-bit feature set;
                                      other sels: writes ignored, reads 0. Writes are ignored
                                      once FEATURES_OK is set (the set is latched).
    0x024   DriverFeaturesSel     RW  32 bits
    0x030   QueueSel              RW  32 bits; queues 0 (requestq) and 1 (eventq) exist. For any
                                      other value every Queue* register reads 0 and ignores
                                      writes.
    0x034   QueueNumMax           RO  ``queue_num_max`` for queues 0/1, else 0
    0x038   QueueNum              RW  The merged value (old value with the strobed lanes
                                      replaced) is kept only if it is a power of two
                                      <= QueueNumMax; otherwise the write is ignored and the
                                      previous size stays. Resets to QueueNumMax.
    0x044   QueueReady            RW  bit 0 (lane 0); writable at any time. Writing 1 also
                                      ends the queue-reset state (QueueReset reads 0 again).
    0x050   QueueNotify           WO  Any write (some strobe set) pulses ``notify`` for one
                                      cycle with ``notify_queue`` = bits 0..15 of the write
                                      (lanes not strobed count as 0), whatever the index; the
                                      engine ignores indices other than 0/1. Reads 0.
    0x060   InterruptStatus       RO  bit 0 used buffer, bit 1 configuration change
    0x064   InterruptACK          WO  write-1-to-clear of InterruptStatus (per strobed lane);
                                      an ``irq_*_set`` event in the same cycle wins. Reads 0.
    0x070   Status                RW  8 bits, lane 0 only (other lanes ignored; a write whose
                                      lane 0 strobe is clear changes nothing). See below.
    0x080   QueueDescLow/High     RW  desc[31:0] / desc[63:32]    } writable only while the
    0x090   QueueDriverLow/High   RW  driver[31:0] / ...         } selected queue's QueueReady
    0x0a0   QueueDeviceLow/High   RW  device[31:0] / ...         } is 0 (also QueueNum)
    0x0ac   SHMSel                WO  ignored, reads 0
    0x0b0   SHMLenLow/High        RO  0xffffffff: no shared memory region (virtio 1.2: a length
    0x0b8   SHMBaseLow/High       RO  0xffffffff   of -1 means the region does not exist)
    0x0c0   QueueReset            RW  virtio 1.2 per-queue reset (VIRTIO_F_RING_RESET, bit 40,
                                      which only matters if it is in ``features_offered``; the
                                      register works whether or not it was negotiated). Writing
                                      bit 0 = 1 resets the selected queue at once: QueueReady 0,
                                      QueueNum = QueueNumMax, addresses 0, and pulses
                                      ``queue_reset[q]`` for one cycle. It then reads 1 until
                                      QueueReady is written 1 or the device is reset; writing 0
                                      does nothing.
    0x0fc   ConfigGeneration      RO  counts (mod 2**32) the writes that changed the
                                      ``bypass`` byte, the only configuration field that can
                                      change; the device itself never changes the
                                      configuration. Reset by system reset only.
    0x100   Config                    the 40 bytes of ``params.config_bytes(bypass)``; RO
    ..0x127                           except the ``bypass`` byte at 0x124 (lane 0 of the word at
                                      0x124): the whole byte is stored and read back as written
                                      (the driver should only write 0/1; bit 0 drives the
                                      ``bypass`` output). It survives device reset (Status 0);
                                      system reset restores ``bypass_init``. 0x125..0x127
                                      (reserved) read 0.
    0x200   FaultDrops            RO  ``fault_drops``: fault reports the device had to drop
                                      (no eventq buffer and the fault queue full, or several
                                      lookup ports denied in the same cycle). Not a virtio
                                      register; saturates at 0xffffffff; cleared by device
                                      reset.
    0x204   LiveMappings          RO  ``live_mappings``: mappings the device holds now (the
                                      mapping store's count, or the table's valid entries).
    0x208   NomemCount            RO  ``nomem_count``: MAPs answered NOMEM, which the guest
                                      never reads (Linux ignores MAP's status); saturates;
                                      cleared by device reset.
    ======  ====================  ==  ===========================================================

    Status
        The driver can only set bits ACKNOWLEDGE (1), DRIVER (2), DRIVER_OK (4),
        FEATURES_OK (8) and FAILED (128); bits stay set until a device reset (the spec
        forbids the driver to clear them, so a write ORs into the register). 16 and 32
        read 0. DEVICE_NEEDS_RESET (64) belongs to the device (``needs_reset_set``);
        writes of it are ignored. Writing 0 (lane 0 strobed, byte 0) resets the device.

    Feature negotiation
        A Status write that newly sets FEATURES_OK is refused (FEATURES_OK stays clear on
        re-read, the other written bits are kept) when the driver features contain a bit
        not in ``features_offered`` or lack VERSION_1. Otherwise FEATURES_OK is set and the
        DriverFeatures register, frozen from then on, is the negotiated set.

    Device reset (Status written 0)
        Clears Status, DriverFeatures, both feature selects, QueueSel, every queue's
        registers (QueueReady 0, QueueNum = QueueNumMax, addresses 0, queue-reset state)
        and InterruptStatus, and pulses ``device_reset`` for one cycle. ``bypass`` and
        ConfigGeneration are kept. The reset happens one cycle after the write's execute
        cycle E: ``device_reset`` (driven by a flip-flop) pulses during E+1 and the
        registers read as reset from E+2. An ``irq_used_set`` / ``needs_reset_set`` in E or
        E+1 is dropped (it belongs to the old epoch).

    AXI4-Lite behaviour
        Every response is OKAY: reads of undefined offsets return 0, writes to read-only or
        undefined offsets are accepted and ignored (no SLVERR/DECERR). ``awprot`` /
        ``arprot`` are ignored. One write and one read are handled at a time, independently
        of each other.

    Ports
    -----
    bus : In(AXI4LiteSignature(addr_width, 32))
        The slave port.
    queue : Out(ArrayLayout(QueueConfig, 2))
        The driver's setup of queue 0 (requestq) and 1 (eventq).
    notify, notify_queue : Out(1), Out(16)
        QueueNotify doorbell: one-cycle pulse and the written queue index.
    queue_reset : Out(2)
        Bit ``q`` pulses for one cycle when queue ``q`` is reset through QueueReset: the
        engine abandons that queue's state (the registers already read as reset).
    device_reset : Out(1)
        One-cycle pulse on a device reset: the core's ``clear`` and the engine's reset.
    reset_request : Out(1)
        High in the cycle before ``device_reset`` (the Status = 0 write's execute cycle).
        A top level registers it to make copies of ``device_reset`` with the same timing,
        one per block it resets, so that no single net fans out to every flip-flop of the
        device.
    driver_ok : Out(1)
        Status has DRIVER_OK and FEATURES_OK and neither FAILED nor DEVICE_NEEDS_RESET: the
        device may process the queues. (FEATURES_OK is required too, so that ``features``
        is valid whenever ``driver_ok`` is.)
    features_ok : Out(1)
        FEATURES_OK has been accepted.
    features : Out(Features)
        Negotiated device-specific features (bits 0..6); 0 until FEATURES_OK is accepted.
    driver_features : Out(64)
        The raw DriverFeatures register (meaningful once ``features_ok``).
    indirect_desc, event_idx : Out(1)
        VIRTIO_F_INDIRECT_DESC / VIRTIO_F_EVENT_IDX negotiated (0 until FEATURES_OK).
    bypass : Out(1)
        Bit 0 of the ``bypass`` configuration byte, for the core. The core only honours it
        when BYPASS_CONFIG is in ``features`` (i.e. negotiated), so there is no bypass
        before feature negotiation whatever ``bypass_init`` is: a boot-bypass device would
        have to feed the core the offered BYPASS_CONFIG bit until FEATURES_OK.
    irq_used_set : In(1)
        Set InterruptStatus bit 0 (used buffer notification).
    needs_reset_set : In(1)
        Set Status DEVICE_NEEDS_RESET and InterruptStatus bit 1 (configuration change).
    irq : Out(1)
        Interrupt line, level: InterruptStatus != 0. Registered.
    fault_drops : In(32)
        Read back at 0x200 (FaultDrops).
    live_mappings, nomem_count : In(32)
        Read back at 0x204 (LiveMappings) and 0x208 (NomemCount).

    Timing
    ------
    ``awready`` / ``wready`` are high while their one-entry buffer is empty and no write
    response is pending; AW and W are taken independently, in either order or in the same
    cycle. In the cycle after both are held (the *execute* cycle E) the write takes effect:
    ``notify`` / ``queue_reset`` pulse during E, the registers and every output show the
    new state from E+1 (a device reset: one cycle later, see above), and ``bvalid`` rises
    in E+1. With AW and W in the
    same cycle t, ``bvalid`` is high in t+2; the next AW/W is taken in the cycle after the
    B handshake, so a master that keeps everything valid/ready writes once per 3 cycles.

    ``arready`` is high while no read is in progress. An AR handshake in cycle t reads the
    registers as they are in t+1 and presents ``rdata`` with ``rvalid`` in t+2; the next AR
    is taken in the cycle after the R handshake: one read per 3 cycles. Reads have no side
    effects; a read whose AR handshake comes after a write's B handshake sees that write.
    ``bvalid``/``bresp`` and ``rvalid``/``rdata``/``rresp`` are registered and stay stable
    until their handshake.

    ``irq_used_set`` / ``needs_reset_set`` asserted in cycle c show in InterruptStatus,
    Status and ``irq`` from c+1.
    """

    def __init__(self, params, *, features_offered, queue_num_max=256, addr_width=12,
                 bypass_init=0, vendor_id=DEFAULT_VENDOR_ID):
        if not isinstance(params, CoreParams):
            raise TypeError(f"params must be a CoreParams, not {params!r}")
        if isinstance(features_offered, bool) or not isinstance(features_offered, int):
            raise TypeError(f"features_offered must be an integer, not {features_offered!r}")
        if not 0 <= features_offered < 1 << 64:
            raise ValueError(f"features_offered must fit in 64 bits, not {features_offered:#x}")
        if not features_offered >> Feature.VERSION_1 & 1:
            raise ValueError("features_offered must contain VERSION_1 (bit 32): the device "
                             "is modern-only")
        if (features_offered >> Feature.BYPASS & 1 and
                features_offered >> Feature.BYPASS_CONFIG & 1):
            raise ValueError("features_offered must not offer BYPASS together with "
                             "BYPASS_CONFIG")
        check_int("queue_num_max", queue_num_max, 1, 32768, power_of_two=True)
        check_int("addr_width", addr_width, 10, 32)
        check_int("bypass_init", bypass_init, 0, 255)
        check_int("vendor_id", vendor_id, 0, (1 << 32) - 1)

        self.params = params
        self.features_offered = features_offered
        self.queue_num_max = queue_num_max
        self.addr_width = addr_width
        self.bypass_init = bypass_init
        self.vendor_id = vendor_id
        super().__init__({
            "bus":             In(AXI4LiteSignature(addr_width=addr_width, data_width=32)),
            "queue":           Out(data.ArrayLayout(QueueConfig, NUM_QUEUES)),
            "notify":          Out(1),
            "notify_queue":    Out(16),
            "queue_reset":     Out(NUM_QUEUES),
            "device_reset":    Out(1),
            "reset_request":   Out(1),
            "driver_ok":       Out(1),
            "features_ok":     Out(1),
            "features":        Out(Features),
            "driver_features": Out(64),
            "indirect_desc":   Out(1),
            "event_idx":       Out(1),
            "bypass":          Out(1),
            "irq_used_set":    In(1),
            "needs_reset_set": In(1),
            "irq":             Out(1),
            "fault_drops":     In(32),
            "live_mappings":   In(32),
            "nomem_count":     In(32),
        })

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        aw = self.addr_width
        offered = self.features_offered
        nq = NUM_QUEUES

        # --- state ------------------------------------------------------------------------
        dev_feat_sel = Signal(32)
        drv_feat_sel = Signal(32)
        drv_feat     = Signal(64)
        queue_sel    = Signal(32)
        status       = Signal(8)
        int_status   = Signal(2)
        bypass       = Signal(8, init=self.bypass_init)
        generation   = Signal(32)
        q_ready  = [Signal(1, name=f"q{q}_ready") for q in range(nq)]
        q_num    = [Signal(16, name=f"q{q}_num", init=self.queue_num_max) for q in range(nq)]
        q_desc   = [Signal(64, name=f"q{q}_desc") for q in range(nq)]
        q_driver = [Signal(64, name=f"q{q}_driver") for q in range(nq)]
        q_device = [Signal(64, name=f"q{q}_device") for q in range(nq)]
        q_reset  = [Signal(1, name=f"q{q}_reset") for q in range(nq)]
        # QueueSel == q, registered (loaded with QueueSel): the queue registers' enables
        # and the QueueReset clear (their reset pins) are decoded from this flip-flop, so
        # they do not wait on a 32-bit compare of QueueSel.
        q_is     = [Signal(name=f"q{q}_is", init=(q == 0)) for q in range(nq)]

        features_ok = status[3]     # DeviceStatus.FEATURES_OK

        # --- outputs ----------------------------------------------------------------------
        negotiated = Mux(features_ok, drv_feat, 0)
        m.d.comb += [
            self.features.as_value().eq(negotiated[:len(self.features.as_value())]),
            self.driver_features.eq(drv_feat),
            self.features_ok.eq(features_ok),
            self.indirect_desc.eq(negotiated[Feature.INDIRECT_DESC]),
            self.event_idx.eq(negotiated[Feature.EVENT_IDX]),
            self.driver_ok.eq(status[2] & features_ok & ~status[6] & ~status[7]),
            self.bypass.eq(bypass[0]),
            self.irq.eq(int_status.any()),
        ]
        for q in range(nq):
            m.d.comb += [
                self.queue[q].ready.eq(q_ready[q]),
                self.queue[q].num.eq(q_num[q]),
                self.queue[q].desc.eq(q_desc[q]),
                self.queue[q].driver.eq(q_driver[q]),
                self.queue[q].device.eq(q_device[q]),
            ]

        # --- AXI write channel ------------------------------------------------------------
        aw_full = Signal()
        aw_addr = Signal(aw)
        w_full  = Signal()
        w_data  = Signal(32)
        w_strb  = Signal(4)
        bvalid  = Signal()
        m.d.comb += [
            bus.awready.eq(~aw_full & ~bvalid),
            bus.wready.eq(~w_full & ~bvalid),
            bus.bvalid.eq(bvalid),
            bus.bresp.eq(0),
        ]
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += [aw_full.eq(1), aw_addr.eq(bus.awaddr)]
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += [w_full.eq(1), w_data.eq(bus.wdata), w_strb.eq(bus.wstrb)]

        execute = Signal()          # the buffered write takes effect at the end of this cycle
        m.d.comb += execute.eq(aw_full & w_full)
        with m.If(execute):
            m.d.sync += [aw_full.eq(0), w_full.eq(0), bvalid.eq(1)]
        with m.If(bvalid & bus.bready):
            m.d.sync += bvalid.eq(0)

        wword = aw_addr[2:]
        def wr(offset):
            return execute & w_strb.any() & (wword == offset >> 2)

        def merged(old):
            return _merge(old, w_data, w_strb)

        # --- register writes --------------------------------------------------------------
        # Later assignments win: plain writes, then device events, then device reset.
        with m.If(wr(MMIO.DEVICE_FEATURES_SEL)):
            m.d.sync += dev_feat_sel.eq(merged(dev_feat_sel))
        with m.If(wr(MMIO.DRIVER_FEATURES_SEL)):
            m.d.sync += drv_feat_sel.eq(merged(drv_feat_sel))
        with m.If(wr(MMIO.DRIVER_FEATURES) & ~features_ok):
            with m.If(drv_feat_sel == 0):
                m.d.sync += drv_feat[:32].eq(merged(drv_feat[:32]))
            with m.Elif(drv_feat_sel == 1):
                m.d.sync += drv_feat[32:].eq(merged(drv_feat[32:]))
        with m.If(wr(MMIO.QUEUE_SEL)):
            m.d.sync += queue_sel.eq(merged(queue_sel))
            m.d.sync += [q_is[q].eq(merged(queue_sel) == q) for q in range(nq)]

        num_new = Signal(32)
        num_old = Signal(32)
        m.d.comb += [
            num_old.eq(Mux(q_is[1], q_num[1], q_num[0])),
            num_new.eq(merged(num_old)),
        ]
        # A power of two no larger than QueueNumMax (itself a power of two): exactly one
        # bit set, none above QueueNumMax's. Written without carry chains (no subtract,
        # no magnitude compare): this check sits between QueueSel and the QueueNum
        # registers' enables, where a subtract and a compare would be a long carry path.
        top = self.queue_num_max.bit_length()           # bits 0..top-1 may be set
        any_set, many_set = _one_hot_tree([num_new[i] for i in range(top)])
        num_ok = any_set & ~many_set & (num_new[top:] == 0)

        for q in range(nq):
            idle = q_is[q] & ~q_ready[q]
            with m.If(wr(MMIO.QUEUE_NUM) & idle & num_ok):
                m.d.sync += q_num[q].eq(num_new)
            for reg, lo in ((q_desc[q], MMIO.QUEUE_DESC_LOW),
                            (q_driver[q], MMIO.QUEUE_DRIVER_LOW),
                            (q_device[q], MMIO.QUEUE_DEVICE_LOW)):
                with m.If(wr(lo) & idle):
                    m.d.sync += reg[:32].eq(merged(reg[:32]))
                with m.If(wr(lo + 4) & idle):
                    m.d.sync += reg[32:].eq(merged(reg[32:]))
            with m.If(wr(MMIO.QUEUE_READY) & q_is[q] & w_strb[0]):
                m.d.sync += q_ready[q].eq(w_data[0])
                with m.If(w_data[0]):
                    m.d.sync += q_reset[q].eq(0)
            with m.If(wr(MMIO.QUEUE_RESET) & q_is[q] & w_strb[0] & w_data[0]):
                m.d.sync += [
                    q_ready[q].eq(0),
                    q_num[q].eq(self.queue_num_max),
                    q_desc[q].eq(0),
                    q_driver[q].eq(0),
                    q_device[q].eq(0),
                    q_reset[q].eq(1),
                ]
                m.d.comb += self.queue_reset[q].eq(1)

        with m.If(wr(MMIO.QUEUE_NOTIFY)):
            m.d.comb += [
                self.notify.eq(1),
                self.notify_queue.eq((w_data & _lanes(w_strb))[:16]),
            ]

        with m.If(wr(MMIO.CONFIG_BYPASS) & w_strb[0]):
            m.d.sync += bypass.eq(w_data[:8])
            with m.If(w_data[:8] != bypass):
                m.d.sync += generation.eq(generation + 1)

        # Status: the driver sets bits, never clears them (except by writing 0).
        status_wr = wr(MMIO.STATUS) & w_strb[0]
        driver_bits = (DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.DRIVER_OK |
                       DeviceStatus.FEATURES_OK | DeviceStatus.FAILED)
        status_req = Signal(8)
        m.d.comb += status_req.eq(w_data[:8] & int(driver_bits))
        features_acceptable = (((drv_feat & ~Const(offered, 64)) == 0) &
                               drv_feat[Feature.VERSION_1])
        fo_refused = status_req[3] & ~features_ok & ~features_acceptable
        dev_reset = Signal()
        m.d.comb += dev_reset.eq(status_wr & (w_data[:8] == 0))
        status_set = Signal(8)
        m.d.comb += status_set.eq(status_req)
        with m.If(fo_refused):
            m.d.comb += status_set[3].eq(0)
        with m.If(status_wr):
            m.d.sync += status.eq(status | status_set)

        with m.If(wr(MMIO.INTERRUPT_ACK)):
            m.d.sync += int_status.eq(int_status & ~(w_data & _lanes(w_strb))[:2])

        # --- device events ----------------------------------------------------------------
        with m.If(self.irq_used_set):
            m.d.sync += int_status[0].eq(1)
        with m.If(self.needs_reset_set):
            m.d.sync += [int_status[1].eq(1), status[6].eq(1)]

        # --- device reset -----------------------------------------------------------------
        # The Status = 0 write is registered before it takes effect (in E+1): the
        # ``device_reset`` pulse then comes straight from a flip-flop, because it fans out
        # to the synchronous reset of the whole core and engine (a decode in front of that
        # net limited the device's fmax). The registers reset in the same cycle, so the
        # device is one consistent epoch at every cycle edge.
        reset_pulse = Signal()
        m.d.sync += reset_pulse.eq(dev_reset)
        m.d.comb += [self.device_reset.eq(reset_pulse), self.reset_request.eq(dev_reset)]
        with m.If(reset_pulse):
            m.d.sync += [
                status.eq(0),
                int_status.eq(0),
                drv_feat.eq(0),
                dev_feat_sel.eq(0),
                drv_feat_sel.eq(0),
                queue_sel.eq(0),
            ]
            m.d.sync += [q_is[q].eq(q == 0) for q in range(nq)]
            for q in range(nq):
                m.d.sync += [
                    q_ready[q].eq(0),
                    q_num[q].eq(self.queue_num_max),
                    q_desc[q].eq(0),
                    q_driver[q].eq(0),
                    q_device[q].eq(0),
                    q_reset[q].eq(0),
                ]

        # --- AXI read channel -------------------------------------------------------------
        ar_full = Signal()
        ar_addr = Signal(aw)
        rvalid  = Signal()
        rdata   = Signal(32)
        m.d.comb += [
            bus.arready.eq(~ar_full & ~rvalid),
            bus.rvalid.eq(rvalid),
            bus.rdata.eq(rdata),
            bus.rresp.eq(0),
        ]
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += [ar_full.eq(1), ar_addr.eq(bus.araddr)]
        with m.If(rvalid & bus.rready):
            m.d.sync += rvalid.eq(0)

        def sel_q(regs):
            return Mux(q_is[1], regs[1], Mux(q_is[0], regs[0], 0))

        qmax = Mux(q_is[0] | q_is[1], self.queue_num_max, 0)
        config = self.params.config_bytes(0)
        assert len(config) == 40
        reads = {
            MMIO.MAGIC:               MMIO_MAGIC,
            MMIO.VERSION:             MMIO_VERSION,
            MMIO.DEVICE_ID:           VIRTIO_ID_IOMMU,
            MMIO.VENDOR_ID:           self.vendor_id,
            MMIO.DEVICE_FEATURES:     Mux(dev_feat_sel == 0, offered & 0xffffffff,
                                          Mux(dev_feat_sel == 1, offered >> 32, 0)),
            MMIO.DEVICE_FEATURES_SEL: dev_feat_sel,
            MMIO.DRIVER_FEATURES:     Mux(drv_feat_sel == 0, drv_feat[:32],
                                          Mux(drv_feat_sel == 1, drv_feat[32:], 0)),
            MMIO.DRIVER_FEATURES_SEL: drv_feat_sel,
            MMIO.QUEUE_SEL:           queue_sel,
            MMIO.QUEUE_NUM_MAX:       qmax,
            MMIO.QUEUE_NUM:           sel_q(q_num),
            MMIO.QUEUE_READY:         sel_q(q_ready),
            MMIO.INTERRUPT_STATUS:    int_status,
            MMIO.STATUS:              status,
            MMIO.QUEUE_DESC_LOW:      sel_q([r[:32] for r in q_desc]),
            MMIO.QUEUE_DESC_HIGH:     sel_q([r[32:] for r in q_desc]),
            MMIO.QUEUE_DRIVER_LOW:    sel_q([r[:32] for r in q_driver]),
            MMIO.QUEUE_DRIVER_HIGH:   sel_q([r[32:] for r in q_driver]),
            MMIO.QUEUE_DEVICE_LOW:    sel_q([r[:32] for r in q_device]),
            MMIO.QUEUE_DEVICE_HIGH:   sel_q([r[32:] for r in q_device]),
            MMIO.SHM_LEN_LOW:         0xffffffff,
            MMIO.SHM_LEN_HIGH:        0xffffffff,
            MMIO.SHM_BASE_LOW:        0xffffffff,
            MMIO.SHM_BASE_HIGH:       0xffffffff,
            MMIO.QUEUE_RESET:         sel_q(q_reset),
            MMIO.CONFIG_GENERATION:   generation,
            MMIO.FAULT_DROPS:         self.fault_drops,
            MMIO.LIVE_MAPPINGS:       self.live_mappings,
            MMIO.NOMEM_COUNT:         self.nomem_count,
        }
        for i in range(0, 36, 4):
            reads[MMIO.CONFIG + i] = int.from_bytes(config[i:i + 4], "little")
        reads[MMIO.CONFIG_BYPASS] = bypass      # reserved bytes 37..39 read 0

        # The read multiplexer sits in the clocked process (not a combinational one): with
        # an address that never changes after reset, Icarus never evaluates a
        # combinational ``always @*`` block, and the first read of offset 0 would return 0.
        with m.If(ar_full):
            m.d.sync += [ar_full.eq(0), rvalid.eq(1), rdata.eq(0)]
            with m.Switch(ar_addr[2:]):
                for offset, value in reads.items():
                    with m.Case(offset >> 2):
                        m.d.sync += rdata.eq(value)

        return m
