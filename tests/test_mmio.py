# amaranth: UnusedElaboratable=no
"""Tests of the virtio-mmio register block (rtl/transport/mmio.py) in Amaranth's simulator.

A small AXI4-Lite master drives the slave port: AW and W are presented in any order (or
together) after random delays, B and R are accepted with a random ``ready``. A passive
monitor records the one-cycle pulses (``notify``, ``queue_reset``, ``device_reset``) and
checks the slave's side of the handshakes (``bvalid`` / ``rvalid`` / ``rdata`` stable until
taken, exactly one response per request).

Checked against the component's documented contract:

* identity registers, DeviceFeatures selection, undefined offsets read 0, SHM registers -1;
* feature negotiation: success latches the set and drives ``features`` / ``indirect_desc``
  / ``event_idx``; refusal (unoffered bit, no VERSION_1) leaves FEATURES_OK clear;
* queue setup of both queues, QueueNumMax, QueueNum validation, QueueReady gating,
  QueueReset, QueueNotify pulses with the written index;
* InterruptStatus / InterruptACK / ``irq``, ``needs_reset_set``;
* device reset clears everything except ``bypass`` (and ConfigGeneration); system reset
  restores ``bypass_init``;
* the configuration space matches ``CoreParams.config_bytes`` byte for byte, and only the
  ``bypass`` byte is writable, through its byte lane;
* byte strobes on every writable register;
* cycle timing of a write and a read;
* a random sequence of accesses against a Python model of the register block.
"""

import random

import pytest
from amaranth.hdl import Module, Signal, ResetInserter
from amaranth.sim import Simulator

from viommu.rtl.core.layouts import Feature, DeviceStatus as DS
from viommu.rtl.bus.axi import AXI4LiteSignature
from viommu.rtl.transport.mmio import VirtioMMIORegisters, MMIO, MMIO_MAGIC, DEFAULT_VENDOR_ID
from viommu.rtl.core.params import CoreParams


def F(*bits):
    return sum(1 << int(b) for b in bits)


OFFERED = F(Feature.INPUT_RANGE, Feature.DOMAIN_RANGE, Feature.MAP_UNMAP, Feature.PROBE,
            Feature.MMIO, Feature.BYPASS_CONFIG, Feature.INDIRECT_DESC, Feature.EVENT_IDX,
            Feature.VERSION_1, Feature.ACCESS_PLATFORM)
QMAX = 256
M32 = 0xffffffff
M64 = (1 << 64) - 1

QUEUE_REGS = {   # name -> (low offset, high offset)
    "desc":   (MMIO.QUEUE_DESC_LOW, MMIO.QUEUE_DESC_HIGH),
    "driver": (MMIO.QUEUE_DRIVER_LOW, MMIO.QUEUE_DRIVER_HIGH),
    "device": (MMIO.QUEUE_DEVICE_LOW, MMIO.QUEUE_DEVICE_HIGH),
}


def merge(old, data, strb):
    out = 0
    for i in range(4):
        src = data if strb >> i & 1 else old
        out |= src & (0xff << 8 * i)
    return out


def lanes(strb):
    return sum(0xff << 8 * i for i in range(4) if strb >> i & 1)


# --- reference model --------------------------------------------------------------------

class Model:
    """The register block as documented, in Python."""

    DRIVER_BITS = DS.ACKNOWLEDGE | DS.DRIVER | DS.DRIVER_OK | DS.FEATURES_OK | DS.FAILED

    def __init__(self, params, offered=OFFERED, qmax=QMAX, bypass_init=0,
                 vendor_id=DEFAULT_VENDOR_ID):
        self.params, self.offered, self.qmax = params, offered, qmax
        self.bypass_init, self.vendor_id = bypass_init, vendor_id
        self.system_reset()

    def system_reset(self):
        self.bypass = self.bypass_init
        self.generation = 0
        self.device_reset()

    def device_reset(self):
        self.status = 0
        self.isr = 0
        self.drv = 0
        self.dsel = self.fsel = self.qsel = 0
        self.queues = [self.fresh_queue() for _ in range(2)]

    def fresh_queue(self):
        return dict(ready=0, num=self.qmax, desc=0, driver=0, device=0, reset=0)

    @property
    def q(self):
        return self.queues[self.qsel] if self.qsel < 2 else None

    @property
    def features_ok(self):
        return bool(self.status & DS.FEATURES_OK)

    @property
    def negotiated(self):
        return self.drv if self.features_ok else 0

    @property
    def driver_ok(self):
        s = self.status
        return bool(s & DS.DRIVER_OK and s & DS.FEATURES_OK and
                    not s & (DS.DEVICE_NEEDS_RESET | DS.FAILED))

    def irq_used(self):
        self.isr |= 1

    def needs_reset(self):
        self.isr |= 2
        self.status |= DS.DEVICE_NEEDS_RESET

    def write(self, addr, data, strb):
        """Apply a write; return the pulses it causes."""
        events = []
        if strb == 0:
            return events
        off = addr & ~3
        q = self.q
        if off == MMIO.DEVICE_FEATURES_SEL:
            self.dsel = merge(self.dsel, data, strb)
        elif off == MMIO.DRIVER_FEATURES_SEL:
            self.fsel = merge(self.fsel, data, strb)
        elif off == MMIO.DRIVER_FEATURES:
            if not self.features_ok and self.fsel in (0, 1):
                sh = 32 * self.fsel
                word = merge(self.drv >> sh & M32, data, strb)
                self.drv = self.drv & ~(M32 << sh) | word << sh
        elif off == MMIO.QUEUE_SEL:
            self.qsel = merge(self.qsel, data, strb)
        elif off == MMIO.QUEUE_NUM:
            if q is not None and not q["ready"]:
                n = merge(q["num"], data, strb)
                if n and not n & (n - 1) and n <= self.qmax:
                    q["num"] = n
        elif off == MMIO.QUEUE_READY:
            if q is not None and strb & 1:
                q["ready"] = data & 1
                if data & 1:
                    q["reset"] = 0
        elif off == MMIO.QUEUE_NOTIFY:
            events.append(("notify", data & lanes(strb) & 0xffff))
        elif off == MMIO.INTERRUPT_ACK:
            self.isr &= ~(data & lanes(strb))
        elif off == MMIO.STATUS:
            if strb & 1:
                v = data & 0xff
                if v == 0:
                    self.device_reset()
                    events.append(("device_reset",))
                else:
                    req = v & self.DRIVER_BITS
                    if req & DS.FEATURES_OK and not self.features_ok:
                        ok = (self.drv & ~self.offered) == 0 and self.drv >> 32 & 1
                        if not ok:
                            req &= ~DS.FEATURES_OK
                    self.status |= req
        elif off in (MMIO.QUEUE_DESC_LOW, MMIO.QUEUE_DESC_HIGH, MMIO.QUEUE_DRIVER_LOW,
                     MMIO.QUEUE_DRIVER_HIGH, MMIO.QUEUE_DEVICE_LOW, MMIO.QUEUE_DEVICE_HIGH):
            if q is not None and not q["ready"]:
                name = {0x80: "desc", 0x90: "driver", 0xa0: "device"}[off & ~0xf]
                sh = 32 if off & 4 else 0
                word = merge(q[name] >> sh & M32, data, strb)
                q[name] = q[name] & ~(M32 << sh) | word << sh
        elif off == MMIO.QUEUE_RESET:
            if q is not None and strb & 1 and data & 1:
                self.queues[self.qsel] = dict(self.fresh_queue(), reset=1)
                events.append(("queue_reset", self.qsel))
        elif off == MMIO.CONFIG_BYPASS:
            if strb & 1:
                if data & 0xff != self.bypass:
                    self.generation = (self.generation + 1) & M32
                self.bypass = data & 0xff
        return events

    def read(self, addr):
        off = addr & ~3
        q = self.q
        qval = (lambda f: q[f]) if q is not None else (lambda f: 0)
        if off == MMIO.MAGIC:
            return MMIO_MAGIC
        if off == MMIO.VERSION:
            return 2
        if off == MMIO.DEVICE_ID:
            return 23
        if off == MMIO.VENDOR_ID:
            return self.vendor_id
        if off == MMIO.DEVICE_FEATURES:
            return self.offered >> 32 * self.dsel & M32 if self.dsel < 2 else 0
        if off == MMIO.DEVICE_FEATURES_SEL:
            return self.dsel
        if off == MMIO.DRIVER_FEATURES:
            return self.drv >> 32 * self.fsel & M32 if self.fsel < 2 else 0
        if off == MMIO.DRIVER_FEATURES_SEL:
            return self.fsel
        if off == MMIO.QUEUE_SEL:
            return self.qsel
        if off == MMIO.QUEUE_NUM_MAX:
            return self.qmax if q is not None else 0
        if off == MMIO.QUEUE_NUM:
            return qval("num")
        if off == MMIO.QUEUE_READY:
            return qval("ready")
        if off == MMIO.INTERRUPT_STATUS:
            return self.isr
        if off == MMIO.STATUS:
            return self.status
        for name, (lo, hi) in QUEUE_REGS.items():
            if off == lo:
                return qval(name) & M32
            if off == hi:
                return qval(name) >> 32
        if MMIO.SHM_LEN_LOW <= off <= MMIO.SHM_BASE_HIGH:
            return M32
        if off == MMIO.QUEUE_RESET:
            return qval("reset")
        if off == MMIO.CONFIG_GENERATION:
            return self.generation
        if MMIO.CONFIG <= off < MMIO.CONFIG + 40:
            cfg = self.params.config_bytes(self.bypass)
            return int.from_bytes(cfg[off - MMIO.CONFIG:off - MMIO.CONFIG + 4], "little")
        return 0


# --- bench ------------------------------------------------------------------------------

class Bench:
    """AXI4-Lite master, event drivers and output checks around the DUT."""

    def __init__(self, dut, ctx, rst, events, rng):
        self.dut, self.ctx, self.rst, self.events, self.rng = dut, ctx, rst, events, rng
        self.bus = dut.bus
        self.b_ready_p = 0.6        # probability that bready / rready is high in a cycle
        self.max_delay = 3

    async def idle(self, n=1):
        for _ in range(n):
            await self.ctx.tick()

    def _ready(self):
        return self.rng.random() < self.b_ready_p

    async def write(self, addr, data, strb=0xf, aw_delay=None, w_delay=None):
        """One write; AW and W raised after their own (random) delays. Returns the pulses
        the monitor saw during the write."""
        ctx, bus, rng = self.ctx, self.bus, self.rng
        if aw_delay is None:
            aw_delay = rng.randint(0, self.max_delay)
        if w_delay is None:
            w_delay = rng.randint(0, self.max_delay)
        start = len(self.events)
        aw_done = w_done = False
        cycle = 0
        while not (aw_done and w_done):
            aw_v = not aw_done and cycle >= aw_delay
            w_v = not w_done and cycle >= w_delay
            ctx.set(bus.awvalid, aw_v)
            ctx.set(bus.awaddr, addr if aw_v else rng.getrandbits(len(bus.awaddr)))
            ctx.set(bus.awprot, rng.getrandbits(3))
            ctx.set(bus.wvalid, w_v)
            ctx.set(bus.wdata, data if w_v else rng.getrandbits(32))
            ctx.set(bus.wstrb, strb if w_v else rng.getrandbits(4))
            ctx.set(bus.bready, 0)
            aw_hs = aw_v and ctx.get(bus.awready)
            w_hs = w_v and ctx.get(bus.wready)
            assert not ctx.get(bus.bvalid), "bvalid before the write was complete"
            await ctx.tick()
            aw_done |= bool(aw_hs)
            w_done |= bool(w_hs)
            cycle += 1
            assert cycle < 50, "AW/W never accepted"
        ctx.set(bus.awvalid, 0)
        ctx.set(bus.wvalid, 0)
        for _ in range(50):
            ready = self._ready()
            ctx.set(bus.bready, ready)
            assert not ctx.get(bus.awready) and not ctx.get(bus.wready) or \
                not ctx.get(bus.bvalid), "a second write accepted while B is pending"
            got = ctx.get(bus.bvalid) and ready
            resp = ctx.get(bus.bresp)
            await ctx.tick()
            if got:
                break
        else:
            raise AssertionError("no write response")
        ctx.set(bus.bready, 0)
        assert resp == 0, f"bresp {resp}"
        return self.events[start:]

    async def read(self, addr, ar_delay=None):
        ctx, bus, rng = self.ctx, self.bus, self.rng
        if ar_delay is None:
            ar_delay = rng.randint(0, self.max_delay)
        ctx.set(bus.rready, 0)
        for _ in range(ar_delay):
            ctx.set(bus.araddr, rng.getrandbits(len(bus.araddr)))
            await ctx.tick()
        ctx.set(bus.arvalid, 1)
        ctx.set(bus.araddr, addr)
        ctx.set(bus.arprot, rng.getrandbits(3))
        for _ in range(50):
            hs = ctx.get(bus.arready)
            assert not ctx.get(bus.rvalid), "rvalid before the read was accepted"
            await ctx.tick()
            if hs:
                break
        else:
            raise AssertionError("AR never accepted")
        ctx.set(bus.arvalid, 0)
        for _ in range(50):
            ready = self._ready()
            ctx.set(bus.rready, ready)
            got = ctx.get(bus.rvalid) and ready
            data, resp = ctx.get(bus.rdata), ctx.get(bus.rresp)
            await ctx.tick()
            if got:
                break
        else:
            raise AssertionError("no read response")
        ctx.set(bus.rready, 0)
        assert resp == 0, f"rresp {resp}"
        return data

    async def write64(self, lo_off, value):
        await self.write(lo_off, value & M32)
        await self.write(lo_off + 4, value >> 32)

    async def read64(self, lo_off):
        return await self.read(lo_off) | await self.read(lo_off + 4) << 32

    async def pulse(self, sig):
        self.ctx.set(sig, 1)
        await self.ctx.tick()
        self.ctx.set(sig, 0)

    async def system_reset(self):
        self.ctx.set(self.rst, 1)
        await self.ctx.tick()
        self.ctx.set(self.rst, 0)

    def get(self, sig):
        return self.ctx.get(sig)

    def queue_out(self, q):
        v = self.dut.queue[q]
        return dict(ready=self.get(v.ready), num=self.get(v.num), desc=self.get(v.desc),
                    driver=self.get(v.driver), device=self.get(v.device))

    def features_out(self):
        return self.get(self.dut.features.as_value())

    # --- driver-like sequences ---

    async def negotiate(self, features):
        await self.write(MMIO.STATUS, DS.ACKNOWLEDGE)
        await self.write(MMIO.STATUS, DS.ACKNOWLEDGE | DS.DRIVER)
        await self.write(MMIO.DRIVER_FEATURES_SEL, 1)
        await self.write(MMIO.DRIVER_FEATURES, features >> 32)
        await self.write(MMIO.DRIVER_FEATURES_SEL, 0)
        await self.write(MMIO.DRIVER_FEATURES, features & M32)
        await self.write(MMIO.STATUS, DS.ACKNOWLEDGE | DS.DRIVER | DS.FEATURES_OK)
        return bool(await self.read(MMIO.STATUS) & DS.FEATURES_OK)

    async def setup_queue(self, q, num, desc, driver, device, ready=True):
        await self.write(MMIO.QUEUE_SEL, q)
        assert await self.read(MMIO.QUEUE_READY) == 0
        await self.write(MMIO.QUEUE_NUM, num)
        await self.write64(MMIO.QUEUE_DESC_LOW, desc)
        await self.write64(MMIO.QUEUE_DRIVER_LOW, driver)
        await self.write64(MMIO.QUEUE_DEVICE_LOW, device)
        if ready:
            await self.write(MMIO.QUEUE_READY, 1)


def run(body, *, params=None, seed=0, **kwargs):
    params = params or CoreParams()
    kwargs.setdefault("features_offered", OFFERED)
    dut = VirtioMMIORegisters(params, **kwargs)
    rst = Signal()
    top = Module()
    top.submodules.dut = ResetInserter(rst)(dut)
    events = []
    sim = Simulator(top)
    sim.add_clock(1e-8)

    async def monitor(ctx):
        """Record pulses; check the slave side of the AXI handshakes."""
        prev = None
        async for _clk, _rst, *v in ctx.tick().sample(
                dut.notify, dut.notify_queue, dut.queue_reset, dut.device_reset,
                dut.bus.bvalid, dut.bus.bready, dut.bus.bresp,
                dut.bus.rvalid, dut.bus.rready, dut.bus.rdata, dut.bus.rresp,
                dut.reset_request, rst):
            notify, nq, qreset, dreset, bvalid, bready, bresp, rvalid, rready, rdata, rresp, \
                reset_req, sysrst = v
            if notify:
                events.append(("notify", nq))
            for q in range(2):
                if qreset >> q & 1:
                    events.append(("queue_reset", q))
            if dreset:
                events.append(("device_reset",))
            if prev is not None and not prev[-1] and not sysrst:
                # A top level copies device_reset by registering reset_request.
                assert dreset == prev[-2], "device_reset is not reset_request a cycle later"
            if prev is not None and not prev[-1]:
                p_bvalid, p_bready, p_bresp, p_rvalid, p_rready, p_rdata, p_rresp = prev[4:11]
                if p_bvalid and not p_bready:
                    assert bvalid and bresp == p_bresp, "B dropped before its handshake"
                if p_rvalid and not p_rready:
                    assert rvalid and (rdata, rresp) == (p_rdata, p_rresp), \
                        "R changed before its handshake"
            prev = v

    async def tb(ctx):
        await body(Bench(dut, ctx, rst, events, random.Random(seed)))

    sim.add_process(monitor)
    sim.add_testbench(tb)
    sim.run()


# --- identity, features -----------------------------------------------------------------

UNDEFINED = [0x018, 0x01c, 0x028, 0x02c, 0x03c, 0x040, 0x048, 0x04c, 0x054, 0x05c, 0x068,
             0x06c, 0x074, 0x078, 0x088, 0x08c, 0x098, 0x0a8, 0x0c4, 0x0d0, 0x0f8, 0x128,
             0x12c, 0x1fc, 0x200, 0x800, 0xffc]


def test_identity_registers():
    async def body(b):
        assert await b.read(MMIO.MAGIC) == 0x74726976
        assert await b.read(MMIO.VERSION) == 2
        assert await b.read(MMIO.DEVICE_ID) == 23
        assert await b.read(MMIO.VENDOR_ID) == 0x1AF4
        assert await b.read(MMIO.CONFIG_GENERATION) == 0
        assert await b.read(MMIO.STATUS) == 0
        assert await b.read(MMIO.INTERRUPT_STATUS) == 0
        # no shared memory regions: length and base read -1
        for off in (MMIO.SHM_LEN_LOW, MMIO.SHM_LEN_HIGH, MMIO.SHM_BASE_LOW, MMIO.SHM_BASE_HIGH):
            assert await b.read(off) == M32
        # doorbells and SHMSel read 0
        for off in (MMIO.QUEUE_NOTIFY, MMIO.INTERRUPT_ACK, MMIO.SHM_SEL):
            assert await b.read(off) == 0
        # the low address bits are ignored
        assert await b.read(MMIO.DEVICE_ID + 3) == 23
        assert b.get(b.dut.irq) == 0 and b.get(b.dut.driver_ok) == 0
    run(body)


def test_vendor_id_parameter():
    async def body(b):
        assert await b.read(MMIO.VENDOR_ID) == 0x554D4551
    run(body, vendor_id=0x554D4551)


def test_undefined_offsets_read_zero_and_ignore_writes():
    async def body(b):
        for off in UNDEFINED:
            await b.write(off, M32)
        # writes to read-only registers are ignored too
        for off in (MMIO.MAGIC, MMIO.VERSION, MMIO.DEVICE_ID, MMIO.VENDOR_ID,
                    MMIO.DEVICE_FEATURES, MMIO.QUEUE_NUM_MAX, MMIO.INTERRUPT_STATUS,
                    MMIO.CONFIG_GENERATION, MMIO.SHM_LEN_LOW):
            await b.write(off, 0x12345678)
        for off in UNDEFINED:
            assert await b.read(off) == 0, hex(off)
        assert await b.read(MMIO.MAGIC) == MMIO_MAGIC
        assert await b.read(MMIO.DEVICE_ID) == 23
        assert await b.read(MMIO.QUEUE_NUM_MAX) == QMAX
        assert await b.read(MMIO.CONFIG_GENERATION) == 0
        assert await b.read(MMIO.STATUS) == 0
    run(body)


def test_device_features_select():
    async def body(b):
        assert await b.read(MMIO.DEVICE_FEATURES_SEL) == 0
        assert await b.read(MMIO.DEVICE_FEATURES) == OFFERED & M32
        await b.write(MMIO.DEVICE_FEATURES_SEL, 1)
        assert await b.read(MMIO.DEVICE_FEATURES_SEL) == 1
        assert await b.read(MMIO.DEVICE_FEATURES) == OFFERED >> 32
        for sel in (2, 3, 0x100, M32):
            await b.write(MMIO.DEVICE_FEATURES_SEL, sel)
            assert await b.read(MMIO.DEVICE_FEATURES_SEL) == sel
            assert await b.read(MMIO.DEVICE_FEATURES) == 0
        await b.write(MMIO.DEVICE_FEATURES_SEL, 0)
        assert await b.read(MMIO.DEVICE_FEATURES) == OFFERED & M32
    run(body)


def test_negotiation_success():
    wanted = F(Feature.MAP_UNMAP, Feature.PROBE, Feature.BYPASS_CONFIG, Feature.INDIRECT_DESC,
               Feature.EVENT_IDX, Feature.VERSION_1)

    async def body(b):
        dut = b.dut
        await b.write(MMIO.DRIVER_FEATURES_SEL, 1)
        await b.write(MMIO.DRIVER_FEATURES, wanted >> 32)
        await b.write(MMIO.DRIVER_FEATURES_SEL, 0)
        await b.write(MMIO.DRIVER_FEATURES, wanted & M32)
        assert b.get(dut.driver_features) == wanted
        # nothing is negotiated before FEATURES_OK
        assert b.features_out() == 0
        assert not b.get(dut.indirect_desc) and not b.get(dut.event_idx)
        assert not b.get(dut.features_ok)
        assert await b.negotiate(wanted)
        assert await b.read(MMIO.STATUS) == DS.ACKNOWLEDGE | DS.DRIVER | DS.FEATURES_OK
        assert b.get(dut.features_ok)
        assert b.features_out() == wanted & 0x7f
        feats = dut.features
        assert b.get(feats.map_unmap) and b.get(feats.probe) and b.get(feats.bypass_config)
        assert not b.get(feats.input_range) and not b.get(feats.mmio)
        assert b.get(dut.indirect_desc) and b.get(dut.event_idx)
        assert b.get(dut.driver_ok) == 0
        # the set is latched: DriverFeatures writes are ignored from now on
        await b.write(MMIO.DRIVER_FEATURES, OFFERED & M32)
        assert await b.read(MMIO.DRIVER_FEATURES) == wanted & M32
        assert b.get(dut.driver_features) == wanted
        await b.write(MMIO.STATUS, DS.ACKNOWLEDGE | DS.DRIVER | DS.FEATURES_OK | DS.DRIVER_OK)
        assert b.get(dut.driver_ok) == 1
        # FAILED drops driver_ok
        await b.write(MMIO.STATUS, DS.FAILED)
        assert await b.read(MMIO.STATUS) == (DS.ACKNOWLEDGE | DS.DRIVER | DS.FEATURES_OK |
                                             DS.DRIVER_OK | DS.FAILED)
        assert b.get(dut.driver_ok) == 0
    run(body)


@pytest.mark.parametrize("case", ["unoffered", "no_version_1", "unoffered_high",
                                  "bypass_without_offer"])
def test_negotiation_refused(case):
    good = F(Feature.MAP_UNMAP, Feature.VERSION_1)
    bad = {
        "unoffered":            good | F(Feature.BYPASS),
        "no_version_1":         F(Feature.MAP_UNMAP),
        "unoffered_high":       good | F(Feature.RING_PACKED),
        "bypass_without_offer": good | (1 << 63),
    }[case]

    async def body(b):
        dut = b.dut
        assert not await b.negotiate(bad)
        assert await b.read(MMIO.STATUS) == DS.ACKNOWLEDGE | DS.DRIVER
        assert b.features_out() == 0 and not b.get(dut.features_ok)
        assert not b.get(dut.indirect_desc) and not b.get(dut.event_idx)
        # DRIVER_OK without FEATURES_OK does not make the device run
        await b.write(MMIO.STATUS, DS.ACKNOWLEDGE | DS.DRIVER | DS.DRIVER_OK)
        assert b.get(dut.driver_ok) == 0
        # still not latched: the driver may retry (here after a reset, as a driver would)
        await b.write(MMIO.STATUS, 0)
        assert await b.negotiate(good)
        assert b.features_out() == good & 0x7f
    run(body)


# --- queues -----------------------------------------------------------------------------

def test_queue_setup_both_queues():
    setups = {0: (64, 0x1_2345_6000, 0x1_2345_7000, 0xfedc_ba98_7654_3000),
              1: (256, 0x8000, 0xdead_beef_0000_0002, 0x4_0000_0004)}

    async def body(b):
        dut = b.dut
        for q in (0, 1):
            await b.write(MMIO.QUEUE_SEL, q)
            assert await b.read(MMIO.QUEUE_SEL) == q
            assert await b.read(MMIO.QUEUE_NUM_MAX) == QMAX
            assert await b.read(MMIO.QUEUE_NUM) == QMAX          # reset value
            assert await b.read(MMIO.QUEUE_RESET) == 0
        for sel in (2, 3, 0x10000, M32):
            await b.write(MMIO.QUEUE_SEL, sel)
            assert await b.read(MMIO.QUEUE_NUM_MAX) == 0
        for q, (num, desc, drv, dev) in setups.items():
            await b.setup_queue(q, num, desc, drv, dev)
        for q, (num, desc, drv, dev) in setups.items():
            assert b.queue_out(q) == dict(ready=1, num=num, desc=desc, driver=drv, device=dev)
            await b.write(MMIO.QUEUE_SEL, q)
            assert await b.read(MMIO.QUEUE_READY) == 1
            assert await b.read(MMIO.QUEUE_NUM) == num
            assert await b.read64(MMIO.QUEUE_DESC_LOW) == desc
            assert await b.read64(MMIO.QUEUE_DRIVER_LOW) == drv
            assert await b.read64(MMIO.QUEUE_DEVICE_LOW) == dev
        # an unavailable queue: writes ignored, everything reads 0
        await b.write(MMIO.QUEUE_SEL, 2)
        for off in (MMIO.QUEUE_NUM, MMIO.QUEUE_DESC_LOW, MMIO.QUEUE_DESC_HIGH,
                    MMIO.QUEUE_DRIVER_LOW, MMIO.QUEUE_DEVICE_HIGH, MMIO.QUEUE_READY,
                    MMIO.QUEUE_RESET):
            await b.write(off, 1)
            assert await b.read(off) == 0
        for q, (num, desc, drv, dev) in setups.items():
            assert b.queue_out(q) == dict(ready=1, num=num, desc=desc, driver=drv, device=dev)
        assert b.events == []
    run(body)


@pytest.mark.parametrize("qmax", [1, 32768])
def test_queue_num_max_parameter(qmax):
    async def body(b):
        for q in (0, 1):
            await b.write(MMIO.QUEUE_SEL, q)
            assert await b.read(MMIO.QUEUE_NUM_MAX) == qmax
            assert await b.read(MMIO.QUEUE_NUM) == qmax
            await b.write(MMIO.QUEUE_NUM, 1)
            assert await b.read(MMIO.QUEUE_NUM) == 1
            await b.write(MMIO.QUEUE_NUM, qmax)
            assert await b.read(MMIO.QUEUE_NUM) == qmax
            await b.write(MMIO.QUEUE_NUM, qmax * 2)
            assert await b.read(MMIO.QUEUE_NUM) == qmax
    run(body, queue_num_max=qmax)


def test_queue_num_validation():
    async def body(b):
        await b.write(MMIO.QUEUE_SEL, 1)
        await b.write(MMIO.QUEUE_NUM, 16)
        for bad in (0, 3, 17, 255, 512, 1 << 16, 1 << 31, M32, 0x10010):
            await b.write(MMIO.QUEUE_NUM, bad)
            assert await b.read(MMIO.QUEUE_NUM) == 16, bad
            assert b.queue_out(1)["num"] == 16
        for good in (1, 2, 128, 256):
            await b.write(MMIO.QUEUE_NUM, good)
            assert await b.read(MMIO.QUEUE_NUM) == good
        # the check applies to the merged value: a byte write of 0x00 into lane 1 of 256
        # (0x0100) would leave 0: ignored
        await b.write(MMIO.QUEUE_NUM, 0, strb=0b0010)
        assert await b.read(MMIO.QUEUE_NUM) == 256
        await b.write(MMIO.QUEUE_NUM, 0x0000_0040, strb=0b0011)
        assert await b.read(MMIO.QUEUE_NUM) == 64
        # queue 0 untouched
        assert b.queue_out(0)["num"] == QMAX
    run(body)


@pytest.mark.parametrize("qmax", [1, 2, 64, 32768])
def test_queue_num_rule_every_bit_pattern(qmax):
    """QueueNum takes exactly the powers of two up to QueueNumMax: every single-bit and
    every two-bit value of the 32-bit register, plus 0 and all-ones, against the rule
    written the obvious way."""
    values = [0, M32] + [1 << i for i in range(32)] + \
        [(1 << i) | (1 << j) for i in range(0, 32, 3) for j in range(i + 1, 32, 2)]

    async def body(b):
        cur = qmax
        for v in values:
            await b.write(MMIO.QUEUE_NUM, v)
            if v and not v & (v - 1) and v <= qmax:
                cur = v
            assert await b.read(MMIO.QUEUE_NUM) == cur, hex(v)
    run(body, queue_num_max=qmax)


def test_queue_ready_gating():
    async def body(b):
        await b.setup_queue(0, 32, 0x1000, 0x2000, 0x3000)
        before = b.queue_out(0)
        await b.write(MMIO.QUEUE_NUM, 64)
        for name, (lo, hi) in QUEUE_REGS.items():
            await b.write(lo, 0xaaaa_0000)
            await b.write(hi, 0xbbbb)
        assert b.queue_out(0) == before
        assert await b.read(MMIO.QUEUE_NUM) == 32
        assert await b.read64(MMIO.QUEUE_DESC_LOW) == 0x1000
        # the other queue is not gated by queue 0's ready
        await b.write(MMIO.QUEUE_SEL, 1)
        await b.write(MMIO.QUEUE_NUM, 8)
        assert b.queue_out(1)["num"] == 8
        # QueueReady is itself writable at any time; with 0 the registers open again
        await b.write(MMIO.QUEUE_SEL, 0)
        await b.write(MMIO.QUEUE_READY, 0)
        assert await b.read(MMIO.QUEUE_READY) == 0
        await b.write(MMIO.QUEUE_NUM, 64)
        await b.write64(MMIO.QUEUE_DESC_LOW, 0x5_0000_0000)
        assert b.queue_out(0) == dict(ready=0, num=64, desc=0x5_0000_0000, driver=0x2000,
                                      device=0x3000)
        # QueueReady: only bit 0 of lane 0 counts
        await b.write(MMIO.QUEUE_READY, 0xffff_fffe)
        assert await b.read(MMIO.QUEUE_READY) == 0
        await b.write(MMIO.QUEUE_READY, 1, strb=0b1110)
        assert await b.read(MMIO.QUEUE_READY) == 0
        await b.write(MMIO.QUEUE_READY, 0x0101, strb=0b0001)
        assert await b.read(MMIO.QUEUE_READY) == 1
    run(body)


def test_queue_reset():
    async def body(b):
        await b.setup_queue(0, 32, 0x1000, 0x2000, 0x3000)
        await b.setup_queue(1, 16, 0x4000, 0x5000, 0x6000)
        q0 = b.queue_out(0)
        # writing 0 does nothing
        ev = await b.write(MMIO.QUEUE_RESET, 0)
        assert ev == [] and b.queue_out(1)["ready"] == 1
        ev = await b.write(MMIO.QUEUE_RESET, 1)
        assert ev == [("queue_reset", 1)]
        assert b.queue_out(1) == dict(ready=0, num=QMAX, desc=0, driver=0, device=0)
        assert b.queue_out(0) == q0
        assert await b.read(MMIO.QUEUE_RESET) == 1
        assert await b.read(MMIO.QUEUE_READY) == 0
        await b.write(MMIO.QUEUE_SEL, 0)
        assert await b.read(MMIO.QUEUE_RESET) == 0
        await b.write(MMIO.QUEUE_SEL, 1)
        # re-enabling ends the reset state
        await b.write(MMIO.QUEUE_NUM, 8)
        await b.write(MMIO.QUEUE_READY, 1)
        assert await b.read(MMIO.QUEUE_RESET) == 0
        assert b.queue_out(1)["ready"] == 1 and b.queue_out(1)["num"] == 8
        # queue 0 via a byte write; a device reset also ends the reset state
        await b.write(MMIO.QUEUE_SEL, 0)
        ev = await b.write(MMIO.QUEUE_RESET, 0x01, strb=0b0001)
        assert ev == [("queue_reset", 0)]
        assert await b.read(MMIO.QUEUE_RESET) == 1
        await b.write(MMIO.STATUS, 0)
        assert await b.read(MMIO.QUEUE_RESET) == 0
    run(body)


def test_notify_pulse_and_index():
    async def body(b):
        dut = b.dut
        for idx in (0, 1, 0, 5, 0xffff):
            ev = await b.write(MMIO.QUEUE_NOTIFY, idx)
            assert ev == [("notify", idx)]
        assert b.get(dut.notify) == 0
        # upper 16 bits (notification data, not offered) are ignored
        assert await b.write(MMIO.QUEUE_NOTIFY, 0xabcd_0001) == [("notify", 1)]
        # strobes: lanes not written count as 0
        assert await b.write(MMIO.QUEUE_NOTIFY, 0x0000_0101, strb=0b0001) == [("notify", 1)]
        assert await b.write(MMIO.QUEUE_NOTIFY, 0x0000_0101, strb=0b0010) == \
            [("notify", 0x100)]
        # no strobe: no write, no pulse
        assert await b.write(MMIO.QUEUE_NOTIFY, 1, strb=0) == []
        # the pulse lasts exactly one cycle, with the registers unaffected
        assert await b.read(MMIO.QUEUE_NOTIFY) == 0
        assert b.events.count(("notify", 1)) == 3
    run(body)


# --- interrupts, needs reset ------------------------------------------------------------

def test_interrupt_status_ack_and_irq():
    async def body(b):
        dut = b.dut
        assert b.get(dut.irq) == 0
        await b.pulse(dut.irq_used_set)
        assert b.get(dut.irq) == 1
        assert await b.read(MMIO.INTERRUPT_STATUS) == 1
        # reading does not clear
        assert await b.read(MMIO.INTERRUPT_STATUS) == 1
        # ACK of the other bit, or with the lane disabled, does nothing
        await b.write(MMIO.INTERRUPT_ACK, 2)
        await b.write(MMIO.INTERRUPT_ACK, 1, strb=0b1110)
        assert await b.read(MMIO.INTERRUPT_STATUS) == 1 and b.get(dut.irq) == 1
        await b.write(MMIO.INTERRUPT_ACK, 1)
        assert await b.read(MMIO.INTERRUPT_STATUS) == 0 and b.get(dut.irq) == 0
        # a used-buffer event during the ACK wins
        b.ctx.set(dut.irq_used_set, 1)
        await b.write(MMIO.INTERRUPT_ACK, 1)
        b.ctx.set(dut.irq_used_set, 0)
        assert await b.read(MMIO.INTERRUPT_STATUS) == 1 and b.get(dut.irq) == 1
        await b.write(MMIO.INTERRUPT_ACK, M32)
        assert b.get(dut.irq) == 0
        # the status register is not touched by a used-buffer event
        assert await b.read(MMIO.STATUS) == 0
    run(body)


def test_needs_reset():
    async def body(b):
        dut = b.dut
        assert await b.negotiate(F(Feature.MAP_UNMAP, Feature.VERSION_1))
        ok = DS.ACKNOWLEDGE | DS.DRIVER | DS.FEATURES_OK | DS.DRIVER_OK
        await b.write(MMIO.STATUS, ok)
        assert b.get(dut.driver_ok) == 1
        await b.pulse(dut.needs_reset_set)
        assert b.get(dut.irq) == 1 and b.get(dut.driver_ok) == 0
        assert await b.read(MMIO.STATUS) == ok | DS.DEVICE_NEEDS_RESET
        assert await b.read(MMIO.INTERRUPT_STATUS) == 2
        # the driver cannot clear DEVICE_NEEDS_RESET, nor set it
        await b.write(MMIO.STATUS, ok)
        assert await b.read(MMIO.STATUS) == ok | DS.DEVICE_NEEDS_RESET
        await b.write(MMIO.INTERRUPT_ACK, 2)
        assert b.get(dut.irq) == 0
        assert await b.read(MMIO.STATUS) == ok | DS.DEVICE_NEEDS_RESET
        ev = await b.write(MMIO.STATUS, 0)
        assert ev == [("device_reset",)]
        assert await b.read(MMIO.STATUS) == 0
        await b.write(MMIO.STATUS, DS.DEVICE_NEEDS_RESET | DS.ACKNOWLEDGE)
        assert await b.read(MMIO.STATUS) == DS.ACKNOWLEDGE
        # both events in one cycle
        b.ctx.set(dut.irq_used_set, 1)
        b.ctx.set(dut.needs_reset_set, 1)
        await b.idle()
        b.ctx.set(dut.irq_used_set, 0)
        b.ctx.set(dut.needs_reset_set, 0)
        assert await b.read(MMIO.INTERRUPT_STATUS) == 3
    run(body)


# --- device reset, system reset, bypass -------------------------------------------------

def test_device_reset_clears_all_but_bypass():
    async def body(b):
        dut = b.dut
        await b.write(MMIO.CONFIG_BYPASS, 1, strb=0b0001)
        gen = await b.read(MMIO.CONFIG_GENERATION)
        assert gen == 1
        wanted = F(Feature.MAP_UNMAP, Feature.BYPASS_CONFIG, Feature.INDIRECT_DESC,
                   Feature.VERSION_1)
        assert await b.negotiate(wanted)
        await b.setup_queue(0, 64, 0x1000, 0x2000, 0x3000)
        await b.setup_queue(1, 128, 0x4000, 0x5000, 0x6000)
        await b.write(MMIO.STATUS, DS.ACKNOWLEDGE | DS.DRIVER | DS.FEATURES_OK | DS.DRIVER_OK)
        await b.write(MMIO.DEVICE_FEATURES_SEL, 1)
        await b.write(MMIO.DRIVER_FEATURES_SEL, 1)
        await b.pulse(dut.irq_used_set)
        await b.pulse(dut.needs_reset_set)
        assert b.get(dut.driver_ok) == 0 and b.get(dut.irq) == 1
        assert b.get(dut.bypass) == 1

        ev = await b.write(MMIO.STATUS, 0)
        assert ev == [("device_reset",)]
        assert await b.read(MMIO.STATUS) == 0
        assert await b.read(MMIO.INTERRUPT_STATUS) == 0
        assert b.get(dut.irq) == 0 and b.get(dut.driver_ok) == 0
        assert b.get(dut.features_ok) == 0 and b.features_out() == 0
        assert b.get(dut.driver_features) == 0
        assert not b.get(dut.indirect_desc)
        for sel_off in (MMIO.DEVICE_FEATURES_SEL, MMIO.DRIVER_FEATURES_SEL, MMIO.QUEUE_SEL):
            assert await b.read(sel_off) == 0
        for q in (0, 1):
            assert b.queue_out(q) == dict(ready=0, num=QMAX, desc=0, driver=0, device=0)
        # QueueSel was 1 before the reset: the queue registers now address queue 0
        await b.write(MMIO.QUEUE_NUM, 32)
        await b.write(MMIO.QUEUE_DESC_LOW, 0x7000)
        assert b.queue_out(0) == dict(ready=0, num=32, desc=0x7000, driver=0, device=0)
        assert b.queue_out(1) == dict(ready=0, num=QMAX, desc=0, driver=0, device=0)
        assert await b.read(MMIO.QUEUE_NUM_MAX) == QMAX
        assert await b.read(MMIO.DRIVER_FEATURES) == 0
        # bypass and ConfigGeneration survive
        assert await b.read(MMIO.CONFIG_BYPASS) == 1 and b.get(dut.bypass) == 1
        assert await b.read(MMIO.CONFIG_GENERATION) == gen
        # a Status write whose lane 0 is not strobed is not a reset
        await b.write(MMIO.STATUS, DS.ACKNOWLEDGE)
        assert await b.write(MMIO.STATUS, 0, strb=0b1110) == []
        assert await b.read(MMIO.STATUS) == DS.ACKNOWLEDGE
        # only byte 0 counts: byte 0 = 0 with other bytes set is a reset
        assert await b.write(MMIO.STATUS, 0x100) == [("device_reset",)]
        assert await b.read(MMIO.STATUS) == 0
    run(body)


async def raw_write(b, addr, data, strb=0xf, during_execute=(), after_execute=(),
                    two_after=()):
    """AW and W together in cycle t (always accepted when idle), so the write executes in
    t+1; ``during_execute`` signals are held high in t+1 only, ``after_execute`` in t+2,
    ``two_after`` in t+3."""
    ctx, bus = b.ctx, b.bus
    assert ctx.get(bus.awready) and ctx.get(bus.wready)
    ctx.set(bus.awvalid, 1)
    ctx.set(bus.wvalid, 1)
    ctx.set(bus.awaddr, addr)
    ctx.set(bus.wdata, data)
    ctx.set(bus.wstrb, strb)
    await ctx.tick()                            # t: handshakes
    ctx.set(bus.awvalid, 0)
    ctx.set(bus.wvalid, 0)
    for sig in during_execute:
        ctx.set(sig, 1)
    await ctx.tick()                            # t+1: execute
    for sig in during_execute:
        ctx.set(sig, 0)
    for sig in after_execute:
        ctx.set(sig, 1)
    assert ctx.get(bus.bvalid)
    ctx.set(bus.bready, 1)
    await ctx.tick()                            # t+2: B handshake
    for sig in after_execute:
        ctx.set(sig, 0)
    ctx.set(bus.bready, 0)
    if two_after:
        for sig in two_after:
            ctx.set(sig, 1)
        await ctx.tick()                        # t+3
        for sig in two_after:
            ctx.set(sig, 0)


def test_events_in_the_reset_cycle_are_dropped():
    """A Status = 0 write executed in E resets the device in E+1: events in E and E+1
    belong to the old epoch, events from E+2 on to the new one."""
    async def body(b):
        dut = b.dut
        events = (dut.irq_used_set, dut.needs_reset_set)
        for when in ("during_execute", "after_execute"):
            await b.write(MMIO.STATUS, DS.ACKNOWLEDGE)
            await raw_write(b, MMIO.STATUS, 0, **{when: events})
            assert b.events == [("device_reset",)]
            b.events.clear()
            assert await b.read(MMIO.INTERRUPT_STATUS) == 0
            assert await b.read(MMIO.STATUS) == 0
            assert b.get(dut.irq) == 0
        # two cycles after the execute cycle they count again
        await b.write(MMIO.STATUS, DS.ACKNOWLEDGE)
        await raw_write(b, MMIO.STATUS, 0, two_after=events)
        assert await b.read(MMIO.INTERRUPT_STATUS) == 3
        assert await b.read(MMIO.STATUS) == DS.DEVICE_NEEDS_RESET
        # and against an ACK in the same cycle, the event wins
        await b.write(MMIO.STATUS, 0)
        await raw_write(b, MMIO.INTERRUPT_ACK, 3, during_execute=[dut.irq_used_set])
        assert await b.read(MMIO.INTERRUPT_STATUS) == 1
    run(body)


def test_bypass_byte_strobes_and_system_reset():
    params = CoreParams()

    async def body(b):
        dut = b.dut
        assert await b.read(MMIO.CONFIG_BYPASS) == 1 and b.get(dut.bypass) == 1
        # an 8-bit write of 0 at 0x124
        await b.write(MMIO.CONFIG_BYPASS, 0x0000_0000, strb=0b0001)
        assert await b.read(MMIO.CONFIG_BYPASS) == 0 and b.get(dut.bypass) == 0
        assert await b.read(MMIO.CONFIG_GENERATION) == 1
        # lanes 1..3 (reserved bytes) are ignored, lane 0 is taken
        await b.write(MMIO.CONFIG_BYPASS, 0xffff_ff01)
        assert await b.read(MMIO.CONFIG_BYPASS) == 1 and b.get(dut.bypass) == 1
        assert await b.read(MMIO.CONFIG_GENERATION) == 2
        await b.write(MMIO.CONFIG_BYPASS, 0xffff_ff00, strb=0b1110)
        assert await b.read(MMIO.CONFIG_BYPASS) == 1
        # same value: no generation change
        await b.write(MMIO.CONFIG_BYPASS, 1, strb=0b0001)
        assert await b.read(MMIO.CONFIG_GENERATION) == 2
        # the whole byte is stored; bit 0 drives the output
        await b.write(MMIO.CONFIG_BYPASS, 0x02, strb=0b0001)
        assert await b.read(MMIO.CONFIG_BYPASS) == 2 and b.get(dut.bypass) == 0
        await b.write(MMIO.CONFIG_BYPASS, 0xff, strb=0b0001)
        assert await b.read(MMIO.CONFIG_BYPASS) == 0xff and b.get(dut.bypass) == 1
        await b.write(MMIO.CONFIG_BYPASS, 0, strb=0b0001)
        # every other config byte is read-only
        for off in range(MMIO.CONFIG, MMIO.CONFIG_BYPASS, 4):
            await b.write(off, 0x5a5a_5a5a)
        for i in range(10):
            raw = await b.read(MMIO.CONFIG + 4 * i)
            assert raw.to_bytes(4, "little") == params.config_bytes(0)[4 * i:4 * i + 4]
        # device reset keeps it, system reset restores bypass_init
        await b.write(MMIO.STATUS, 0)
        assert await b.read(MMIO.CONFIG_BYPASS) == 0
        await b.write(MMIO.STATUS, DS.ACKNOWLEDGE)
        await b.system_reset()
        assert b.get(dut.bypass) == 1
        assert await b.read(MMIO.CONFIG_BYPASS) == 1
        assert await b.read(MMIO.CONFIG_GENERATION) == 0
        assert await b.read(MMIO.STATUS) == 0
    run(body, params=params, bypass_init=1)


@pytest.mark.parametrize("variant", ["default", "custom"])
def test_config_space_matches_config_bytes(variant):
    params = {
        "default": CoreParams(),
        "custom": CoreParams(page_size_mask=0x40201000, input_range=(0x10000, 0xffff_ffff),
                             domain_range=(5, 0x1234), probe_size=128, endpoints=3),
    }[variant]

    async def body(b):
        for bypass in (0, 1):
            await b.write(MMIO.CONFIG_BYPASS, bypass, strb=0b0001)
            raw = b""
            for i in range(10):
                raw += (await b.read(MMIO.CONFIG + 4 * i)).to_bytes(4, "little")
            assert raw == params.config_bytes(bypass)
            # and through unaligned addresses (low bits ignored), e.g. a byte read of bypass
            assert await b.read(MMIO.CONFIG_BYPASS + 1) & 0xff == bypass
        assert await b.read(MMIO.CONFIG + 40) == 0
    run(body, params=params)


# --- byte strobes -----------------------------------------------------------------------

STROBES = [0b0001, 0b0010, 0b0100, 0b1000, 0b0011, 0b1100, 0b0110, 0b1111, 0b1010, 0b0101]


def test_partial_strobes_on_rw_registers():
    async def body(b):
        rng = b.rng
        model = {}

        async def check(off, strb, key=None):
            key = off if key is None else key
            data = rng.getrandbits(32)
            await b.write(off, data, strb=strb)
            model[key] = merge(model.get(key, 0), data, strb)
            assert await b.read(off) == model[key], (hex(off), bin(strb))

        for off in (MMIO.DRIVER_FEATURES, MMIO.QUEUE_DESC_LOW, MMIO.QUEUE_DESC_HIGH,
                    MMIO.QUEUE_DRIVER_LOW, MMIO.QUEUE_DRIVER_HIGH, MMIO.QUEUE_DEVICE_LOW,
                    MMIO.QUEUE_DEVICE_HIGH):
            for strb in STROBES:
                await check(off, strb)
        # the high DriverFeatures word, then the 64-bit outputs
        await b.write(MMIO.DRIVER_FEATURES_SEL, 1)
        for strb in STROBES:
            await check(MMIO.DRIVER_FEATURES, strb, key="drv_hi")
        assert b.get(b.dut.driver_features) == \
            model[MMIO.DRIVER_FEATURES] | model["drv_hi"] << 32
        q = b.queue_out(0)
        for name, (lo, hi) in QUEUE_REGS.items():
            assert q[name] == model[lo] | model[hi] << 32
        # selectors (QueueSel last: the queue registers follow it)
        for off in (MMIO.DEVICE_FEATURES_SEL, MMIO.DRIVER_FEATURES_SEL, MMIO.QUEUE_SEL):
            for strb in STROBES:
                await check(off, strb)
    run(body, seed=3)


def test_driver_features_byte_lanes():
    async def body(b):
        dut = b.dut
        value = 0
        for sel in (0, 1):
            await b.write(MMIO.DRIVER_FEATURES_SEL, sel)
            for lane in range(4):
                byte = 0x11 * (lane + 1 + 4 * sel) & 0xff
                # the other lanes carry junk that must not land
                await b.write(MMIO.DRIVER_FEATURES, (0xa5a5a5a5 & ~(0xff << 8 * lane)) |
                              byte << 8 * lane, strb=1 << lane)
                value |= byte << (8 * lane + 32 * sel)
                assert b.get(dut.driver_features) == value
        # sel 2: ignored
        await b.write(MMIO.DRIVER_FEATURES_SEL, 2)
        await b.write(MMIO.DRIVER_FEATURES, M32)
        assert await b.read(MMIO.DRIVER_FEATURES) == 0
        assert b.get(dut.driver_features) == value
    run(body)


def test_zero_strobe_write_changes_nothing():
    async def body(b):
        for off in (MMIO.STATUS, MMIO.QUEUE_SEL, MMIO.QUEUE_DESC_LOW, MMIO.DRIVER_FEATURES,
                    MMIO.CONFIG_BYPASS, MMIO.QUEUE_RESET, MMIO.QUEUE_READY):
            before = await b.read(off)
            assert await b.write(off, M32, strb=0) == []
            assert await b.read(off) == before
        await b.write(MMIO.STATUS, DS.ACKNOWLEDGE)
        assert await b.write(MMIO.STATUS, 0, strb=0) == []
        assert await b.read(MMIO.STATUS) == DS.ACKNOWLEDGE
    run(body)


# --- timing -----------------------------------------------------------------------------

def test_cycle_timing():
    """AW+W in cycle t -> bvalid in t+2; AR in t -> rvalid in t+2; ready again one cycle
    after the response handshake; AW long before W; W long before AW."""
    async def body(b):
        ctx, bus, dut = b.ctx, b.bus, b.dut

        async def write(addr, data, aw_at, w_at):
            """Return the cycle (relative to the first one) of bvalid, and the notify cycle."""
            ctx.set(bus.bready, 1)
            aw_done = w_done = False
            cycle, b_cycle, n_cycle = 0, None, None
            while b_cycle is None:
                ctx.set(bus.awvalid, not aw_done and cycle >= aw_at)
                ctx.set(bus.awaddr, addr)
                ctx.set(bus.wvalid, not w_done and cycle >= w_at)
                ctx.set(bus.wdata, data)
                ctx.set(bus.wstrb, 0xf)
                aw_hs = ctx.get(bus.awvalid) and ctx.get(bus.awready)
                w_hs = ctx.get(bus.wvalid) and ctx.get(bus.wready)
                if ctx.get(dut.notify):
                    n_cycle = cycle
                if ctx.get(bus.bvalid):
                    b_cycle = cycle
                await ctx.tick()
                aw_done |= bool(aw_hs)
                w_done |= bool(w_hs)
                cycle += 1
            ctx.set(bus.awvalid, 0)
            ctx.set(bus.wvalid, 0)
            # the cycle after the B handshake, AW/W are accepted again
            assert ctx.get(bus.awready) and ctx.get(bus.wready)
            return b_cycle, n_cycle

        assert await write(MMIO.QUEUE_NOTIFY, 1, 0, 0) == (2, 1)
        assert await write(MMIO.QUEUE_NOTIFY, 1, 0, 5) == (7, 6)
        assert await write(MMIO.QUEUE_NOTIFY, 1, 4, 0) == (6, 5)
        # back-to-back with everything valid/ready: one write per 3 cycles
        ctx.set(bus.bready, 1)
        ctx.set(bus.awvalid, 1)
        ctx.set(bus.wvalid, 1)
        ctx.set(bus.awaddr, MMIO.QUEUE_NOTIFY)
        ctx.set(bus.wdata, 0)
        bs = []
        for cycle in range(12):
            if ctx.get(bus.bvalid):
                bs.append(cycle)
            await ctx.tick()
        ctx.set(bus.awvalid, 0)
        ctx.set(bus.wvalid, 0)
        assert bs == [2, 5, 8, 11]
        await b.idle(3)

        # read
        ctx.set(bus.rready, 1)
        ctx.set(bus.arvalid, 1)
        ctx.set(bus.araddr, MMIO.MAGIC)
        rs = []
        for cycle in range(9):
            assert ctx.get(bus.arready) == (cycle % 3 == 0)
            if ctx.get(bus.rvalid):
                rs.append(cycle)
                assert ctx.get(bus.rdata) == MMIO_MAGIC
            await ctx.tick()
        ctx.set(bus.arvalid, 0)
        assert rs == [2, 5, 8]
        # a write's effect is visible to a read issued after its B handshake
        ctx.set(bus.rready, 0)
        await b.write(MMIO.QUEUE_SEL, 1, aw_delay=0, w_delay=0)
        assert await b.read(MMIO.QUEUE_SEL, ar_delay=0) == 1
    run(body)


def test_reads_and_writes_overlap():
    """Reads proceed while a write waits for bready (independent channels)."""
    async def body(b):
        ctx, bus = b.ctx, b.bus
        ctx.set(bus.awvalid, 1)
        ctx.set(bus.wvalid, 1)
        ctx.set(bus.awaddr, MMIO.QUEUE_SEL)
        ctx.set(bus.wdata, 1)
        ctx.set(bus.wstrb, 0xf)
        await ctx.tick()
        ctx.set(bus.awvalid, 0)
        ctx.set(bus.wvalid, 0)
        await ctx.tick()
        assert ctx.get(bus.bvalid)
        # B is held (bready low) while reads go on
        for _ in range(3):
            assert await b.read(MMIO.QUEUE_SEL) == 1
            assert await b.read(MMIO.DEVICE_ID) == 23
            assert ctx.get(bus.bvalid)
        ctx.set(bus.bready, 1)
        await ctx.tick()
        ctx.set(bus.bready, 0)
        assert not ctx.get(bus.bvalid)
    run(body)


# --- random test against the model ------------------------------------------------------

WRITABLE = [MMIO.DEVICE_FEATURES_SEL, MMIO.DRIVER_FEATURES, MMIO.DRIVER_FEATURES_SEL,
            MMIO.QUEUE_SEL, MMIO.QUEUE_NUM, MMIO.QUEUE_READY, MMIO.QUEUE_NOTIFY,
            MMIO.INTERRUPT_ACK, MMIO.STATUS, MMIO.QUEUE_DESC_LOW, MMIO.QUEUE_DESC_HIGH,
            MMIO.QUEUE_DRIVER_LOW, MMIO.QUEUE_DRIVER_HIGH, MMIO.QUEUE_DEVICE_LOW,
            MMIO.QUEUE_DEVICE_HIGH, MMIO.QUEUE_RESET, MMIO.CONFIG_BYPASS]
READABLE = ([MMIO.MAGIC, MMIO.VERSION, MMIO.DEVICE_ID, MMIO.VENDOR_ID, MMIO.DEVICE_FEATURES,
             MMIO.QUEUE_NUM_MAX, MMIO.INTERRUPT_STATUS, MMIO.SHM_LEN_LOW,
             MMIO.CONFIG_GENERATION] + WRITABLE + list(range(MMIO.CONFIG, MMIO.CONFIG + 40, 4)))


def random_write(rng, model):
    off = rng.choice(WRITABLE + [rng.choice(UNDEFINED + [MMIO.MAGIC, MMIO.CONFIG])])
    strb = rng.choice([0xf] * 6 + STROBES + [0])
    data = rng.getrandbits(32)
    if off in (MMIO.QUEUE_SEL, MMIO.DEVICE_FEATURES_SEL, MMIO.DRIVER_FEATURES_SEL):
        data = rng.choice([0, 0, 1, 1, 2, data])
    elif off == MMIO.QUEUE_NUM:
        data = rng.choice([1, 2, 4, 64, 128, 256, 512, 0, 3, 100, data])
    elif off in (MMIO.QUEUE_READY, MMIO.QUEUE_RESET, MMIO.INTERRUPT_ACK):
        data = rng.choice([0, 1, 2, 3, data])
    elif off == MMIO.STATUS:
        cur = model.status
        nxt = cur | (1 << rng.choice([0, 1, 2, 3, 6, 7]))
        data = rng.choice([nxt, nxt, nxt, 0, data])
    elif off == MMIO.DRIVER_FEATURES:
        offered_word = OFFERED >> 32 * (model.fsel & 1) & M32
        data = rng.choice([offered_word, offered_word & data, data])
    elif off == MMIO.CONFIG_BYPASS:
        data = rng.choice([0, 1, data])
    return off, data, strb


@pytest.mark.parametrize("seed", [1, 2])
def test_random_against_model(seed):
    params = CoreParams(endpoints=4, probe_size=64)

    async def body(b):
        rng, dut = b.rng, b.dut
        model = Model(params, bypass_init=1)
        b.b_ready_p = 0.7
        b.max_delay = 2
        for step in range(250):
            r = rng.random()
            if r < 0.45:
                off, data, strb = random_write(rng, model)
                if rng.random() < 0.3:
                    off |= rng.randrange(4)         # low address bits are ignored
                expected = model.write(off, data, strb)
                got = await b.write(off, data, strb)
                assert got == expected, (step, hex(off), hex(data), bin(strb))
            elif r < 0.9:
                off = rng.choice(READABLE) | (rng.randrange(4) if rng.random() < 0.2 else 0)
                assert await b.read(off) == model.read(off), (step, hex(off))
            elif r < 0.95:
                await b.pulse(dut.irq_used_set)
                model.irq_used()
            elif r < 0.98:
                await b.pulse(dut.needs_reset_set)
                model.needs_reset()
            else:
                await b.system_reset()
                model.system_reset()
            # outputs
            for q in (0, 1):
                mq = {k: v for k, v in model.queues[q].items() if k != "reset"}
                assert b.queue_out(q) == mq, step
            assert b.get(dut.driver_features) == model.drv
            assert b.features_out() == model.negotiated & 0x7f
            assert b.get(dut.indirect_desc) == model.negotiated >> 28 & 1
            assert b.get(dut.event_idx) == model.negotiated >> 29 & 1
            assert b.get(dut.features_ok) == model.features_ok
            assert b.get(dut.driver_ok) == model.driver_ok
            assert b.get(dut.irq) == (model.isr != 0)
            assert b.get(dut.bypass) == model.bypass & 1
    run(body, params=params, seed=seed, bypass_init=1)


# --- elaboration parameters -------------------------------------------------------------

@pytest.mark.parametrize("kwargs, exc", [
    (dict(features_offered=F(Feature.MAP_UNMAP)), ValueError),              # no VERSION_1
    (dict(features_offered=OFFERED | F(Feature.BYPASS)), ValueError),       # with BYPASS_CONFIG
    (dict(features_offered=1 << 64), ValueError),
    (dict(features_offered=True), TypeError),
    (dict(features_offered=OFFERED, queue_num_max=0), ValueError),
    (dict(features_offered=OFFERED, queue_num_max=100), ValueError),
    (dict(features_offered=OFFERED, queue_num_max=65536), ValueError),
    (dict(features_offered=OFFERED, addr_width=9), ValueError),
    (dict(features_offered=OFFERED, bypass_init=256), ValueError),
    (dict(features_offered=OFFERED, vendor_id=-1), ValueError),
])
def test_bad_parameters(kwargs, exc):
    with pytest.raises(exc):
        VirtioMMIORegisters(CoreParams(), **kwargs)


def test_params_must_be_core_params():
    with pytest.raises(TypeError):
        VirtioMMIORegisters(None, features_offered=OFFERED)


def test_signature_and_verilog():
    from amaranth.back import verilog
    dut = VirtioMMIORegisters(CoreParams(), features_offered=OFFERED, addr_width=16)
    assert dut.signature.members["bus"].signature.flip().members.keys() == \
        AXI4LiteSignature(addr_width=16).members.keys()
    assert len(dut.bus.awaddr) == 16 and len(dut.bus.wstrb) == 4
    text = verilog.convert(dut, name="virtio_mmio")
    assert "bus__awaddr" in text and "device_reset" in text
