"""cocotb tests of the whole board image (``BoardSoC``), driven through its UART pins only
(run by tests/test_board.py).

A UART model drives ``uart_rx`` bit by bit and samples ``uart_tx`` in the middle of each
bit; :class:`SimLink` turns it into a blocking ``read`` / ``write`` link, so that the very
host code that talks to a real serial port (:func:`viommu.sim.host.run_board_test`,
:class:`~viommu.sim.host.BridgeClient`) runs unchanged in a thread
(``cocotb.task.bridge``), its link calls resuming the simulation (``cocotb.task.resume``).

The configuration comes in ``VIOMMU_TB`` (JSON: ``divisor``, ``bridge_timeout``,
``heartbeat_bit``, ``ram_size``, ``requests``).
"""

import collections
import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.task import bridge, resume
from cocotb.triggers import ClockCycles, Event, FallingEdge, First, Timer

from viommu.boards.soc import BoardReg, Led, CONTROL_BASE, DEVICE_BASE
from viommu.rtl.core.layouts import BridgeByte
from viommu.rtl.transport.mmio import MMIO, MMIO_MAGIC
from viommu.sim.host import BridgeClient, BridgeNak, run_board_test


CFG = json.loads(os.environ.get("VIOMMU_TB", "{}"))
DIVISOR = CFG.get("divisor", 8)
BRIDGE_TIMEOUT = CFG.get("bridge_timeout", 2000)
HEARTBEAT = CFG.get("heartbeat_bit", 6)
RAM_SIZE = CFG.get("ram_size", 65536)
CLK_NS = 10
BIT_NS = DIVISOR * CLK_NS
#: The link gives up when no byte has come for this long: well over the bridge's idle
#: timeout (so that ``BridgeClient.resync`` works) and over any reply's latency.
LINK_TIMEOUT_NS = max(4 * BRIDGE_TIMEOUT * CLK_NS, 40 * BIT_NS)


class UartModel:
    """The host's UART on the board's pins: 8N1 at ``DIVISOR`` clock cycles per bit."""

    def __init__(self, dut):
        self.dut = dut
        self.received = collections.deque()
        self.arrived = Event()
        self.framing_errors = 0
        dut.uart_rx.value = 1
        cocotb.start_soon(self._receive())

    async def _receive(self):
        tx = self.dut.uart_tx
        while True:
            await FallingEdge(tx)
            await Timer(BIT_NS // 2, unit="ns")
            if int(tx.value):
                continue                        # a glitch, not a start bit
            byte = 0
            for i in range(8):
                await Timer(BIT_NS, unit="ns")
                byte |= int(tx.value) << i
            await Timer(BIT_NS, unit="ns")
            if not int(tx.value):
                self.framing_errors += 1
                continue
            self.received.append(byte)
            self.arrived.set()

    async def send(self, data, *, stop=1):
        bits = []
        for byte in data:
            bits += [0] + [byte >> i & 1 for i in range(8)] + [stop]
        k = 0
        while k < len(bits):                    # one Timer per run of equal bits
            n = 1
            while k + n < len(bits) and bits[k + n] == bits[k]:
                n += 1
            self.dut.uart_rx.value = bits[k]
            await Timer(n * BIT_NS, unit="ns")
            k += n
        self.dut.uart_rx.value = 1

    async def recv(self, n, timeout_ns):
        """Up to ``n`` bytes; stops early when none has come for ``timeout_ns``."""
        out = bytearray()
        while len(out) < n:
            if self.received:
                out.append(self.received.popleft())
                continue
            self.arrived.clear()
            timer = Timer(timeout_ns, unit="ns")
            if await First(self.arrived.wait(), timer) is timer and not self.received:
                break
        return bytes(out)


class SimLink:
    """A blocking link (what pyserial's ``Serial`` offers) over :class:`UartModel`, for code
    running in a ``cocotb.task.bridge`` thread."""

    def __init__(self, uart, timeout_ns=LINK_TIMEOUT_NS):
        self._send = resume(uart.send)
        self._recv = resume(uart.recv)
        self.timeout_ns = timeout_ns

    def write(self, data):
        self._send(bytes(data))
        return len(data)

    def read(self, n):
        return self._recv(n, self.timeout_ns)


async def _start(dut):
    # The C++ clock: Python only wakes up for UART bits, not for every cycle. Every
    # input the bench drives goes through a synchronizer or is a synchronous reset, so
    # writes landing on either side of an edge only shift things by a cycle.
    cocotb.start_soon(Clock(dut.clk, CLK_NS, unit="ns", impl="gpi").start())
    uart = UartModel(dut)
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 4)
    return uart


def _led(dut, bit):
    return int(dut.leds.value) >> bit & 1


async def _in_thread(fn, *args, **kwargs):
    return await bridge(fn)(*args, **kwargs)


@cocotb.test()
async def board_test_flow(dut):
    """``run_board_test``, the code behind ``viommu board-test``, through the UART pins:
    the Linux-like driver flow, lookups and fault reports against the model, a DMA outside
    the RAM; then the LEDs it leaves lit."""
    uart = await _start(dut)
    link = SimLink(uart)
    summary = await _in_thread(run_board_test, link, requests=CFG.get("requests", 10),
                               seed=CFG.get("seed", 1), log=dut._log.info)
    dut._log.info(f"summary: {summary}")
    assert summary["lookups"] >= 30 and summary["denied"] >= 1
    assert summary["faults"] == summary["denied"]
    assert summary["requests"] >= 10
    assert uart.framing_errors == 0
    # the run ends with a DMA error (device reset afterwards): FAULT and DMA_ERROR stay lit,
    # DRIVER_OK and IRQ are off, the link had no error
    await ClockCycles(dut.clk, 2)
    assert _led(dut, Led.FAULT) == 1
    assert _led(dut, Led.DMA_ERROR) == 1
    assert _led(dut, Led.DRIVER_OK) == 0
    assert _led(dut, Led.IRQ) == 0
    assert _led(dut, Led.LINK_ERROR) == 0


@cocotb.test()
async def leds(dut):
    """Heartbeat blinks with the cycle counter; ALLOWED shows the last probe's answer,
    FAULT a denied probe until STATUS is written; DRIVER_OK follows the Status writes; the
    RX LED toggles per received byte."""
    uart = await _start(dut)
    seen = set()
    for _ in range(1 << (HEARTBEAT - 1)):
        await ClockCycles(dut.clk, 8)
        seen.add(_led(dut, Led.HEARTBEAT))
    assert seen == {0, 1}

    async def leds_now():
        await ClockCycles(dut.clk, 2)
        return {name: _led(dut, getattr(Led, name)) for name in
                ("ALLOWED", "FAULT", "DRIVER_OK", "IRQ", "DMA_ERROR", "LINK_ERROR")}

    def body(link, leds_now):
        c = BridgeClient(link)
        c.identify()
        regs = DEVICE_BASE
        out = {}
        c.write_words(regs + MMIO.STATUS, [0])
        c.write_words(regs + MMIO.CONFIG_BYPASS, [1])   # boot bypass: lookups pass
        out["allowed"] = (c.lookup(0, 0x1000, True)["allowed"], leds_now())
        out["denied"] = (c.lookup(0xffff, 0x1000, True)["allowed"], leds_now())
        c.clear_status()
        out["cleared"] = leds_now()
        c.write_words(regs + MMIO.STATUS, [1 | 2 | 4])   # DRIVER_OK (without FEATURES_OK)
        out["driver_ok"] = (c.status()["driver_ok"], leds_now())
        c.write_words(regs + MMIO.STATUS, [0])
        c.write_words(regs + MMIO.CONFIG_BYPASS, [0])
        out["reset"] = (c.status()["driver_ok"], leds_now())
        return out

    out = await _in_thread(body, SimLink(uart), resume(leds_now))
    allowed, lit = out["allowed"]
    assert allowed == 1 and lit["ALLOWED"] == 1 and lit["FAULT"] == 0
    allowed, lit = out["denied"]
    assert allowed == 0 and lit["ALLOWED"] == 0 and lit["FAULT"] == 1
    assert out["cleared"]["FAULT"] == 0
    status, lit = out["driver_ok"]
    assert status == 1 and lit["DRIVER_OK"] == 1
    status, lit = out["reset"]
    assert status == 0 and lit["DRIVER_OK"] == 0
    assert lit["IRQ"] == lit["DMA_ERROR"] == lit["LINK_ERROR"] == 0
    # every received byte toggles the RX LED
    for _ in range(3):
        before = _led(dut, Led.RX)
        await uart.send(b"\x00")
        assert await uart.recv(1, LINK_TIMEOUT_NS) == bytes([BridgeByte.NAK])
        assert _led(dut, Led.RX) != before


@cocotb.test()
async def bridge_errors_and_resync(dut):
    """A frame cut short is dropped after the idle timeout (counted, LINK_ERROR lit) and the
    next frame works; so does a host that resynchronises by waiting; unknown command bytes
    and a framing error on the line; addresses nothing answers give NAK; the guest RAM's
    end is the end of its window."""
    uart = await _start(dut)
    link = SimLink(uart)
    # a write frame cut after 3 of its 10 bytes, then silence
    await uart.send(bytes([BridgeByte.WRITE, 0x00, 0x10]))
    await ClockCycles(dut.clk, BRIDGE_TIMEOUT + 100)
    assert not uart.received                   # dropped without an answer

    def after_abort(link):
        c = BridgeClient(link)
        c.identify()
        return c.control_read(BoardReg.BRIDGE_ABORTS), c.status()

    aborts, status = await _in_thread(after_abort, link)
    assert aborts == 1 and status["bridge_abort_seen"] == 1
    assert _led(dut, Led.LINK_ERROR) == 1

    # a host that died in the middle of a 64-word write; the next one resynchronises
    await uart.send(bytes([BridgeByte.WRITE, 0, 0x20, 0, 0, 63]) + bytes(range(37)))

    def next_host(link):
        c = BridgeClient(link)
        c.resync()
        c.ping()
        c.identify()
        c.mem.write(0x2001, b"\xaa\xbb\xcc")                  # RMW of one word
        c.mem.write(0x2006, bytes(range(1, 10)))               # partial words at both ends
        got = c.mem.read(0x2000, 20)
        errors = []
        for addr, what in ((0x8000_0000, "nothing there"), (RAM_SIZE, "past the RAM"),
                           (CONTROL_BASE + 0x1000, "past the control block")):
            try:
                c.read_words(addr, 1)
                errors.append(f"read {what}: no NAK")
            except BridgeNak:
                pass
            try:
                c.write_words(addr, [1])
                errors.append(f"write {what}: no NAK")
            except BridgeNak:
                pass
        magic = c.read_words(DEVICE_BASE + MMIO.MAGIC, 1)[0]
        return got, errors, magic, c.control_read(BoardReg.BRIDGE_ABORTS)

    got, errors, magic, aborts = await _in_thread(next_host, link)
    assert errors == []
    assert magic == MMIO_MAGIC
    assert aborts == 2
    # the 37 data bytes of the dead frame wrote words 0x2000.. (9 whole words: 36 bytes),
    # then the 3-byte and the 9-byte write landed on top
    dead = bytes(range(36))
    want = bytearray(dead[:20])
    want[1:4] = b"\xaa\xbb\xcc"
    want[6:15] = bytes(range(1, 10))
    assert got == bytes(want), (got.hex(), bytes(want).hex())

    # unknown command bytes: one NAK each; a framing error is counted
    await uart.send(b"\xff\x01w")
    assert await uart.recv(3, LINK_TIMEOUT_NS) == bytes([BridgeByte.NAK]) * 3
    await uart.send(b"\x57", stop=0)
    await ClockCycles(dut.clk, BRIDGE_TIMEOUT + 20 * DIVISOR)

    def framing(link):
        c = BridgeClient(link)
        return c.control_read(BoardReg.UART_ERRORS), c.identify().ram_size

    errs, ram_size = await _in_thread(framing, link)
    assert errs & 0xffff == 1 and errs >> 16 == 0
    assert ram_size == RAM_SIZE
