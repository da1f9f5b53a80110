# amaranth: UnusedElaboratable=no
"""The board image's SoC, independent of the board: the device, block RAM as guest memory,
and a serial bridge so that a host PC drives the device over a UART.

::

    uart_rx -> UARTRx -> SerialBridge -> UARTTx -> uart_tx
                              | AXI4-Lite (32-bit addresses)
                        AXI4LiteDecoder
             0x0000_0000 /    | 0x4000_0000  \\ 0x4000_1000
               GuestRAM.lite  VirtioIOMMUMMIO  BoardControl --- lookup port 0 (probe)
               GuestRAM.axi <----- m_axi          |            --- leds
                                                  irq, fault_drops, error pulses

The host's address map (:data:`RAM_BASE`, :data:`DEVICE_BASE`, :data:`CONTROL_BASE`):

* ``0x0000_0000`` .. ``ram_size - 1``: guest RAM (guest physical address = offset, on
  both ports: the device's DMA address ``a`` is RAM byte ``a``; DMA at ``ram_size`` or
  above is answered DECERR).
* ``0x4000_0000`` .. ``0x4000_0fff``: the device's virtio-mmio registers (``s_axil``).
* ``0x4000_1000`` .. ``0x4000_1fff``: the board control block (:class:`BoardControl`).
* anything else: DECERR (the host sees NAK).

The platform wrapper (``boards/<board>.py``) supplies the ``sync`` clock and reset and
connects ``uart_rx`` / ``uart_tx`` / ``leds`` to pins.
"""

from amaranth.hdl import Module, Signal, Cat, Const, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from viommu.rtl.bus.axi import AXI4LiteSignature, Resp
from viommu.rtl.board.bridge import SerialBridge
from viommu.rtl.board.guest_ram import GuestRAM
from viommu.rtl.bus.interconnect import AXI4LiteDecoder
from viommu.rtl.core.layouts import BoardConfig, BoardStatus, ProbeControl, ProbeResult
from viommu.rtl.transport.mmio import MMIO
from viommu.rtl.transport.top_mmio import VirtioIOMMUMMIO, flat_lookup_signature
from viommu.rtl.board.uart import UARTRx, UARTTx
from viommu.rtl.util import check_int


__all__ = ["BoardSoC", "BoardControl", "BoardReg", "BOARD_ID", "BOARD_VERSION",
           "RAM_BASE", "DEVICE_BASE", "CONTROL_BASE", "Led", "board_config"]


RAM_BASE     = 0x0000_0000
DEVICE_BASE  = 0x4000_0000
CONTROL_BASE = 0x4000_1000
WINDOW = 0x1000

#: The ID register's value: the bytes "VIOB".
BOARD_ID = int.from_bytes(b"VIOB", "little")
#: Version of the board control block and address map (major << 16 | minor).
BOARD_VERSION = 0x0001_0000


class BoardReg:
    """Byte offsets of the board control block's registers (32 bits each)."""
    ID             = 0x000     # RO  BOARD_ID
    VERSION        = 0x004     # RO  BOARD_VERSION
    CONFIG         = 0x008     # RO  BoardConfig
    RAM_SIZE       = 0x00c     # RO  bytes of guest RAM
    STATUS         = 0x010     # RW  BoardStatus; write 1 to clear a *_seen bit
    FAULT_DROPS    = 0x014     # RO  the device's fault_drops
    CYCLES_LO      = 0x018     # RO  free-running cycle counter, bits 31..0; reading it
    CYCLES_HI      = 0x01c     # RO  latches bits 63..32 for CYCLES_HI
    UART_ERRORS    = 0x020     # RO  framing errors [15:0], overruns [31:16] (saturating)
    DMA_ERRORS     = 0x024     # RO  DMA bursts answered DECERR/SLVERR by the RAM (saturating)
    BRIDGE_ABORTS  = 0x028     # RO  frames dropped by the bridge's idle timeout (saturating)
    PROBE_ENDPOINT = 0x030     # RW  probe lookup: endpoint ID
    PROBE_IOVA_LO  = 0x034     # RW  probe lookup: IOVA bits 31..0
    PROBE_IOVA_HI  = 0x038     # RW  probe lookup: IOVA bits 63..32
    PROBE_CTRL     = 0x03c     # RW  ProbeControl: write flag; writing go=1 issues the lookup
    PROBE_RESULT   = 0x040     # RO  ProbeResult of the last probe (done=1 once answered)
    PROBE_PHYS_LO  = 0x044     # RO  its phys, bits 31..0
    PROBE_PHYS_HI  = 0x048     # RO  its phys, bits 63..32
    PROBE_COUNT    = 0x04c     # RO  probe lookups answered (wraps)


class Led:
    """Bit numbers of ``leds`` (1 = lit)."""
    HEARTBEAT  = 0     # cycle counter bit ``heartbeat_bit``: blinks while the clock runs
    IRQ        = 1     # the device's interrupt line
    DRIVER_OK  = 2     # the host has written DRIVER_OK to the device's Status
    FAULT      = 3     # a probe lookup was denied (sticky: STATUS.fault_seen)
    DMA_ERROR  = 4     # the device's DMA hit an address outside the RAM (sticky)
    LINK_ERROR = 5     # UART framing error/overrun or a frame timed out (sticky)
    RX         = 6     # toggles with every byte received from the host
    ALLOWED    = 7     # the last probe lookup was allowed


def _merge(old, wdata, wstrb):
    return Cat(*(Mux(wstrb[i], wdata[8 * i:8 * i + 8], old[8 * i:8 * i + 8])
                 for i in range(4)))


def _saturating_add(m, counter, inc):
    total = counter + inc
    width = len(counter)
    m.d.sync += counter.eq(Mux(total[width:] != 0, (1 << width) - 1, total[:width]))


class BoardControl(wiring.Component):
    """The board control block: identification, status, counters, LEDs and the lookup
    probe, an AXI4-Lite slave (register map in :class:`BoardReg`).

    Parameters
    ----------
    config : int
        The CONFIG register's value (:class:`~viommu.rtl.core.layouts.BoardConfig` bits).
    ram_size : int
        The RAM_SIZE register's value.
    endpoint_width : int
        Width of the device's endpoint IDs (the lookup port).
    heartbeat_bit : int
        Which cycle counter bit drives the heartbeat LED (25: 0.67 s period at 100 MHz).

    Ports
    -----
    bus : In(AXI4LiteSignature(addr_width=12, data_width=32))
        Register access. Byte strobes honoured on writable registers; every response
        OKAY; undefined offsets read 0 and ignore writes. One write and one read at a time:
        AW and W buffered (either order), the write done in the cycle after both are held,
        ``bvalid`` the cycle after; AR in t gives ``rvalid`` in t+2.
    lookup : In(flat_lookup_signature(endpoint_width))
        The device's lookup port 0, driven by the probe: a write of PROBE_CTRL with go=1
        presents one request (``req_valid`` from the cycle after the write executes until
        ``req_ready``) with PROBE_ENDPOINT / IOVA / the write flag, clears
        PROBE_RESULT.done, and the response three cycles after its acceptance is latched
        (done=1, PROBE_COUNT + 1). The
        host issues one probe at a time (it reads the result before the next go).
    irq, driver_ok : In(1)
        Levels shown in STATUS (and on LEDs).
    fault_drops : In(32)
        Shown in FAULT_DROPS.
    dma_error, framing_error, overrun, bridge_abort : In(1)
        Event pulses, counted (saturating) and made sticky in STATUS. ``dma_error`` is 2
        bits wide: read and write error pulses of the same cycle both count.
    rx_byte : In(1)
        Pulse per byte received from the host (toggles LED 6).
    leds : Out(8)
        See :class:`Led`. Registered.
    """

    def __init__(self, *, config, ram_size, endpoint_width, heartbeat_bit=25):
        check_int("config", config, 0, (1 << 32) - 1)
        check_int("ram_size", ram_size, 0, (1 << 32) - 1)
        check_int("endpoint_width", endpoint_width, 1, 32)
        check_int("heartbeat_bit", heartbeat_bit, 0, 63)
        self.config = config
        self.ram_size = ram_size
        self.endpoint_width = endpoint_width
        self.heartbeat_bit = heartbeat_bit
        super().__init__({
            "bus":          In(AXI4LiteSignature(addr_width=12, data_width=32)),
            "lookup":       In(flat_lookup_signature(endpoint_width)),
            "irq":          In(1),
            "driver_ok":    In(1),
            "fault_drops":  In(32),
            "dma_error":    In(2),
            "framing_error": In(1),
            "overrun":      In(1),
            "bridge_abort": In(1),
            "rx_byte":      In(1),
            "leds":         Out(8),
        })

    def elaborate(self, platform):
        m = Module()
        bus = self.bus

        cycles      = Signal(64)
        cycles_hi   = Signal(32)           # latched at a CYCLES_LO read
        status      = Signal(BoardStatus)
        uart_frm    = Signal(16)
        uart_ovr    = Signal(16)
        dma_errors  = Signal(32)
        aborts      = Signal(32)
        p_ep        = Signal(32)
        p_iova      = Signal(64)
        p_write     = Signal()
        p_result    = Signal(ProbeResult)
        p_phys      = Signal(64)
        p_count     = Signal(32)
        rx_toggle   = Signal()

        m.d.sync += cycles.eq(cycles + 1)
        m.d.comb += [status.irq.eq(self.irq), status.driver_ok.eq(self.driver_ok)]

        # --- events ----------------------------------------------------------------------------
        _saturating_add(m, uart_frm, self.framing_error)
        _saturating_add(m, uart_ovr, self.overrun)
        _saturating_add(m, dma_errors, self.dma_error[0] + self.dma_error[1])
        _saturating_add(m, aborts, self.bridge_abort)
        with m.If(self.rx_byte):
            m.d.sync += rx_toggle.eq(~rx_toggle)

        # --- AXI4-Lite: writes -----------------------------------------------------------------
        aw_full = Signal()
        aw_addr = Signal(12)
        w_full  = Signal()
        w_data  = Signal(32)
        w_strb  = Signal(4)
        m.d.comb += [
            bus.awready.eq(~aw_full & ~bus.bvalid),
            bus.wready.eq(~w_full & ~bus.bvalid),
            bus.bresp.eq(Resp.OKAY),
        ]
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += [aw_full.eq(1), aw_addr.eq(bus.awaddr)]
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += [w_full.eq(1), w_data.eq(bus.wdata), w_strb.eq(bus.wstrb)]
        execute = aw_full & w_full
        with m.If(bus.bready):
            m.d.sync += bus.bvalid.eq(0)
        with m.If(execute):
            m.d.sync += [aw_full.eq(0), w_full.eq(0), bus.bvalid.eq(1)]

        def wr(offset):
            return execute & w_strb.any() & (aw_addr[2:] == offset >> 2)

        with m.If(wr(BoardReg.PROBE_ENDPOINT)):
            m.d.sync += p_ep.eq(_merge(p_ep, w_data, w_strb))
        with m.If(wr(BoardReg.PROBE_IOVA_LO)):
            m.d.sync += p_iova[:32].eq(_merge(p_iova[:32], w_data, w_strb))
        with m.If(wr(BoardReg.PROBE_IOVA_HI)):
            m.d.sync += p_iova[32:].eq(_merge(p_iova[32:], w_data, w_strb))

        ctrl = ProbeControl(_merge(Const(0, 32), w_data, w_strb))
        go = Signal()       # the probe's request is valid until the port accepts it
        with m.If(self.lookup.req_ready):
            m.d.sync += go.eq(0)
        with m.If(wr(BoardReg.PROBE_CTRL)):
            with m.If(w_strb[0]):
                m.d.sync += p_write.eq(ctrl.write)
            with m.If(w_strb[1] & ctrl.go):
                m.d.sync += [go.eq(1), p_result.done.eq(0)]

        # sticky status bits: set by events, cleared by writing 1 (the event wins)
        clear = Signal(BoardStatus)
        with m.If(wr(BoardReg.STATUS)):
            m.d.comb += clear.as_value().eq(_merge(Const(0, 32), w_data, w_strb))
        sticky = {
            "fault_seen":        self.lookup.resp_valid & ~self.lookup.resp_allowed,
            "dma_error_seen":    self.dma_error.any(),
            "uart_error_seen":   self.framing_error | self.overrun,
            "bridge_abort_seen": self.bridge_abort,
        }
        for name, event in sticky.items():
            bit = getattr(status, name)
            m.d.sync += bit.eq((bit & ~getattr(clear, name)) | event)

        # --- the probe ---------------------------------------------------------------------------
        lk = self.lookup
        m.d.comb += [
            lk.req_valid.eq(go),
            lk.req_endpoint.eq(p_ep),
            lk.req_iova.eq(p_iova),
            lk.req_write.eq(p_write),
        ]
        with m.If(lk.resp_valid):
            m.d.sync += [
                p_result.allowed.eq(lk.resp_allowed),
                p_result.mmio.eq(lk.resp_mmio),
                p_result.via.eq(lk.resp_via),
                p_result.reason.eq(lk.resp_reason),
                p_result.flags.eq(lk.resp_flags),
                p_result.done.eq(1),
                p_phys.eq(lk.resp_phys),
                p_count.eq(p_count + 1),
            ]

        # --- AXI4-Lite: reads --------------------------------------------------------------------
        ar_full = Signal()
        ar_addr = Signal(12)
        m.d.comb += [bus.arready.eq(~ar_full & ~bus.rvalid), bus.rresp.eq(Resp.OKAY)]
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += [ar_full.eq(1), ar_addr.eq(bus.araddr)]
        with m.If(bus.rready):
            m.d.sync += bus.rvalid.eq(0)
        regs = {
            BoardReg.ID:             Const(BOARD_ID, 32),
            BoardReg.VERSION:        Const(BOARD_VERSION, 32),
            BoardReg.CONFIG:         Const(self.config, 32),
            BoardReg.RAM_SIZE:       Const(self.ram_size, 32),
            BoardReg.STATUS:         status.as_value(),
            BoardReg.FAULT_DROPS:    self.fault_drops,
            BoardReg.CYCLES_LO:      cycles[:32],
            BoardReg.CYCLES_HI:      cycles_hi,
            BoardReg.UART_ERRORS:    Cat(uart_frm, uart_ovr),
            BoardReg.DMA_ERRORS:     dma_errors,
            BoardReg.BRIDGE_ABORTS:  aborts,
            BoardReg.PROBE_ENDPOINT: p_ep,
            BoardReg.PROBE_IOVA_LO:  p_iova[:32],
            BoardReg.PROBE_IOVA_HI:  p_iova[32:],
            BoardReg.PROBE_CTRL:     Cat(p_write, Const(0, 31)),
            BoardReg.PROBE_RESULT:   p_result.as_value(),
            BoardReg.PROBE_PHYS_LO:  p_phys[:32],
            BoardReg.PROBE_PHYS_HI:  p_phys[32:],
            BoardReg.PROBE_COUNT:    p_count,
        }
        with m.If(ar_full):
            m.d.sync += [ar_full.eq(0), bus.rvalid.eq(1), bus.rdata.eq(0)]
            with m.Switch(ar_addr[2:]):
                for offset, value in regs.items():
                    with m.Case(offset >> 2):
                        m.d.sync += bus.rdata.eq(value)
            with m.If(ar_addr[2:] == BoardReg.CYCLES_LO >> 2):
                m.d.sync += cycles_hi.eq(cycles[32:])

        # --- LEDs ----------------------------------------------------------------------------------
        leds = Signal(8)
        m.d.comb += [
            leds[Led.HEARTBEAT].eq(cycles[self.heartbeat_bit]),
            leds[Led.IRQ].eq(self.irq),
            leds[Led.DRIVER_OK].eq(self.driver_ok),
            leds[Led.FAULT].eq(status.fault_seen),
            leds[Led.DMA_ERROR].eq(status.dma_error_seen),
            leds[Led.LINK_ERROR].eq(status.uart_error_seen | status.bridge_abort_seen),
            leds[Led.RX].eq(rx_toggle),
            leds[Led.ALLOWED].eq(p_result.allowed & p_result.done),
        ]
        m.d.sync += self.leds.eq(leds)
        return m


def board_config(device, *, ids_0_to_n=None):
    """The CONFIG register value (:class:`~viommu.rtl.core.layouts.BoardConfig`) for ``device``,
    a :class:`~viommu.rtl.transport.top_mmio.VirtioIOMMUMMIO`."""
    p = device.params
    ids = p.endpoint_ids
    return BoardConfig.const({
        "entries_m1": p.entries - 1,
        "endpoints_m1": len(ids) - 1,
        "endpoint_width_m1": p.endpoint_width - 1,
        "lookup_ports_m1": p.lookup_ports - 1,
        "axi_bytes_log2": device.axi_width.bit_length() - 1,
        "queue_size_log2": device.queue_size.bit_length() - 1,
        "ids_0_to_n": int(ids == tuple(range(len(ids)))),
    }).as_value().value


class BoardSoC(wiring.Component):
    """The board image, board-independent: device + guest RAM + UART bridge + control block.

    Parameters (keyword only)
    ----------
    divisor : int
        UART clock cycles per bit (default 868: 115200 baud at 100 MHz).
    ram_size : int
        Guest RAM in bytes, a power of two, 4 KiB .. 16 MiB (default 64 KiB: 32 DP16KD).
    bridge_timeout : int
        The bridge's mid-frame idle timeout in cycles (default 100_000: 1 ms at 100 MHz).
    heartbeat_bit : int
        Cycle counter bit on the heartbeat LED (default 25: a 0.67 s period at 100 MHz).
    queue_size : int
        The device's QueueNumMax (default 64).
    fault_queue_depth : int
        The device's fault queue (default 4).
    **device_kwargs
        Passed to :class:`~viommu.rtl.transport.top_mmio.VirtioIOMMUMMIO` as they are: ``params`` or
        the core's keyword parameters (``entries``, ``endpoints``, ...), ``features``,
        ``axi_width``, ``bypass_init``. Everything not given is the device's default
        (64 mapping entries, 8 endpoints, 1 lookup port, 64-bit DMA).

    Ports
    -----
    uart_rx : In(1), init 1
        Serial data from the host (idle high); synchronized inside.
    uart_tx : Out(1), init 1
        Serial data to the host (idle high), from a flip-flop.
    leds : Out(8)
        1 = lit; see :class:`Led`. Registered.

    Notes
    -----
    The DRIVER_OK LED and STATUS bit come from watching the register writes that go to the
    device: a write of Status (0x070) with byte 0 = 0 clears it, one with bit 2 set sets
    it (what the device itself does with the bit).
    Every lookup port but 0 is idle (``req_valid`` = 0).
    """

    def __init__(self, *, divisor=868, ram_size=65536, bridge_timeout=100_000,
                 heartbeat_bit=25, queue_size=64, fault_queue_depth=4, **device_kwargs):
        check_int("ram_size", ram_size, 4096, 1 << 24, power_of_two=True)
        self.device = VirtioIOMMUMMIO(queue_size=queue_size,
                                      fault_queue_depth=fault_queue_depth, **device_kwargs)
        self.rx = UARTRx(divisor=divisor)
        self.tx = UARTTx(divisor=divisor)
        self.bridge = SerialBridge(timeout=bridge_timeout)
        self.ram = GuestRAM(size=ram_size, data_width=8 * self.device.axi_width,
                            addr_width=64, id_width=1)
        self.decoder = AXI4LiteDecoder(windows={
            "ram":     (RAM_BASE, ram_size),
            "device":  (DEVICE_BASE, WINDOW),
            "control": (CONTROL_BASE, WINDOW),
        })
        self.control = BoardControl(config=board_config(self.device), ram_size=ram_size,
                                    endpoint_width=self.device.params.endpoint_width,
                                    heartbeat_bit=heartbeat_bit)
        self.divisor = divisor
        self.ram_size = ram_size
        self.bridge_timeout = bridge_timeout
        super().__init__({
            "uart_rx": In(1, init=1),
            "uart_tx": Out(1, init=1),
            "leds":    Out(8),
        })

    @property
    def params(self):
        """The device's :class:`~viommu.rtl.core.params.CoreParams`."""
        return self.device.params

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = rx = self.rx
        m.submodules.uart_tx = tx = self.tx
        m.submodules.bridge = bridge = self.bridge
        m.submodules.decoder = dec = self.decoder
        m.submodules.ram = ram = self.ram
        m.submodules.device = dev = self.device
        m.submodules.control = ctl = self.control

        m.d.comb += [rx.rx.eq(self.uart_rx), self.uart_tx.eq(tx.tx)]
        wiring.connect(m, rx.data, bridge.rx)
        wiring.connect(m, bridge.tx, tx.data)
        wiring.connect(m, bridge.bus, dec.bus)
        wiring.connect(m, dec.ram, ram.lite)
        wiring.connect(m, dec.device, dev.s_axil)
        wiring.connect(m, dec.control, ctl.bus)
        wiring.connect(m, dev.m_axi, ram.axi)
        wiring.connect(m, ctl.lookup, dev.lookup[0])
        for port in list(dev.lookup)[1:]:
            m.d.comb += port.req_valid.eq(0)

        # DRIVER_OK: watch Status writes on the device's register port.
        s = dec.device
        aw_status = Signal()
        driver_ok = Signal()
        with m.If(s.awvalid & s.awready):
            m.d.sync += aw_status.eq(s.awaddr[2:] == MMIO.STATUS >> 2)
        with m.If(s.wvalid & s.wready & aw_status & s.wstrb[0]):
            with m.If(s.wdata[:8] == 0):
                m.d.sync += driver_ok.eq(0)
            with m.Elif(s.wdata[2]):
                m.d.sync += driver_ok.eq(1)

        m.d.comb += [
            ctl.irq.eq(dev.irq),
            ctl.driver_ok.eq(driver_ok),
            ctl.fault_drops.eq(dev.fault_drops),
            ctl.dma_error.eq(Cat(ram.read_error, ram.write_error)),
            ctl.framing_error.eq(rx.framing_error),
            ctl.overrun.eq(rx.overrun),
            ctl.bridge_abort.eq(bridge.aborted),
            ctl.rx_byte.eq(rx.data.valid & rx.data.ready),
            self.leds.eq(ctl.leds),
        ]
        return m
