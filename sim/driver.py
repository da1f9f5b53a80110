"""A virtio-iommu driver model: what the Linux driver does, on any bus.

:class:`VirtioIOMMUDriver` talks to the device through two objects:

* ``regs``: the virtio-mmio register window, ``await regs.read32(offset)`` and
  ``await regs.write32(offset, value)`` (cocotbext-axi's ``AxiLiteMaster`` behind
  :class:`AxiLiteRegs` in the cocotb benches, a UART bridge on a board);
* ``mem``: guest memory, ``read(addr, n) -> bytes`` and ``write(addr, data)``, synchronous
  (cocotbext-axi's ``AxiRam``), shared with the device's DMA master;

plus ``wait(cycles)``, a coroutine that lets device time pass (busy-polling: the driver
looks at the used ring in memory between waits, like Linux with interrupts off).

It does what ``drivers/iommu/virtio-iommu.c`` does: reset, ACKNOWLEDGE, DRIVER, feature
negotiation (VERSION_1, MAP_UNMAP and what it knows, INDIRECT_DESC / EVENT_IDX if asked),
FEATURES_OK (checked on re-read), the configuration read, both queues set up, DRIVER_OK,
every eventq slot filled with a 24-byte buffer; then requests as 2-descriptor chains (or
one slot pointing at a 2-entry indirect table), queued in batches with one kick, the
kick suppressed exactly as EVENT_IDX's ``avail_event`` says. Every answer is checked
against the reference model (:class:`~viommu.sim.model.DeviceModel`): used length and
every byte written, and nothing written past the used length.
"""

import struct

from viommu.rtl.core.layouts import Feature, DeviceStatus, Fault, unpack
from viommu.rtl.transport.mmio import MMIO, MMIO_MAGIC, MMIO_VERSION
from viommu.sim.model import DeviceModel
from viommu.sim.vring import SplitVirtqueue, BufferAllocator, check_answer


__all__ = ["VirtioIOMMUDriver", "DriverError", "AxiLiteRegs", "GUEST_LAYOUT",
           "need_event", "LINUX_FEATURES"]


#: Features the Linux driver accepts (besides INDIRECT_DESC and EVENT_IDX, which are the
#: virtio core's and which the benches switch on and off).
LINUX_FEATURES = frozenset({
    Feature.VERSION_1, Feature.MAP_UNMAP, Feature.INPUT_RANGE, Feature.DOMAIN_RANGE,
    Feature.PROBE, Feature.MMIO, Feature.BYPASS_CONFIG,
})

#: Where the driver puts its rings and buffers in guest memory.
GUEST_LAYOUT = {
    "rq_desc": 0x10000, "rq_driver": 0x18000, "rq_device": 0x1c000,
    "eq_desc": 0x20000, "eq_driver": 0x24000, "eq_device": 0x26000,
    "buffers": (0x30000, 0x80000),
    "size": 0x80000,
}


class DriverError(AssertionError):
    """The device did something a driver would reject."""


def need_event(event, new, old):
    """virtio's ``vring_need_event``: does moving the index from ``old`` to ``new`` pass
    ``event``?"""
    return ((new - event - 1) & 0xffff) < ((new - old) & 0xffff)


class AxiLiteRegs:
    """``read32`` / ``write32`` over cocotbext-axi's ``AxiLiteMaster``."""

    def __init__(self, master):
        self.master = master

    async def read32(self, offset):
        return int.from_bytes((await self.master.read(offset, 4)).data, "little")

    async def write32(self, offset, value):
        await self.master.write(offset, int(value & 0xffffffff).to_bytes(4, "little"))


class VirtioIOMMUDriver:
    """The driver. ``params`` (:class:`~viommu.rtl.core.params.CoreParams`) is the device's
    configuration, for the model; ``indirect`` / ``event_idx`` ask for those features;
    ``rq_num`` / ``eq_num`` are the queue sizes the driver picks (<= QueueNumMax);
    ``refuse`` lists features the driver does not accept even if offered."""

    def __init__(self, regs, mem, wait, params, *, indirect=False, event_idx=False,
                 rq_num=64, eq_num=8, layout=GUEST_LAYOUT, index_base=0, refuse=(),
                 log=None):
        self.regs, self.mem, self.wait = regs, mem, wait
        self.params = params
        self.want_indirect, self.want_event_idx = indirect, event_idx
        self.refuse = frozenset(refuse)     # features not to accept (an older driver)
        self.rq_num, self.eq_num = rq_num, eq_num
        self.layout = layout
        self.index_base = index_base
        self.log = log or (lambda msg: None)
        self.alloc = BufferAllocator(*layout["buffers"])
        self.model = None
        self.features = 0
        self.faults = []            # fault reports read from the eventq, as dicts

    # --- setup -------------------------------------------------------------------------------

    async def status(self):
        return await self.regs.read32(MMIO.STATUS)

    async def set_status(self, bits):
        await self.regs.write32(MMIO.STATUS, (await self.status()) | bits)

    async def reset(self):
        await self.regs.write32(MMIO.STATUS, 0)
        for _ in range(1000):
            if await self.status() == 0:
                return
        raise DriverError("Status does not read 0 after a reset")

    async def probe_device(self):
        """Check the identification registers, as virtio_mmio_probe does."""
        magic = await self.regs.read32(MMIO.MAGIC)
        if magic != MMIO_MAGIC:
            raise DriverError(f"MagicValue {magic:#x}")
        version = await self.regs.read32(MMIO.VERSION)
        if version != MMIO_VERSION:
            raise DriverError(f"Version {version}")
        dev = await self.regs.read32(MMIO.DEVICE_ID)
        if dev != 23:
            raise DriverError(f"DeviceID {dev}, not 23 (iommu)")

    async def read_features(self):
        await self.regs.write32(MMIO.DEVICE_FEATURES_SEL, 0)
        lo = await self.regs.read32(MMIO.DEVICE_FEATURES)
        await self.regs.write32(MMIO.DEVICE_FEATURES_SEL, 1)
        hi = await self.regs.read32(MMIO.DEVICE_FEATURES)
        return lo | hi << 32

    async def write_features(self, value):
        await self.regs.write32(MMIO.DRIVER_FEATURES_SEL, 0)
        await self.regs.write32(MMIO.DRIVER_FEATURES, value & 0xffffffff)
        await self.regs.write32(MMIO.DRIVER_FEATURES_SEL, 1)
        await self.regs.write32(MMIO.DRIVER_FEATURES, value >> 32)

    async def read_config(self):
        raw = b""
        for i in range(0, 40, 4):
            raw += (await self.regs.read32(MMIO.CONFIG + i)).to_bytes(4, "little")
        return {
            "page_size_mask": int.from_bytes(raw[0:8], "little"),
            "input_range": (int.from_bytes(raw[8:16], "little"),
                            int.from_bytes(raw[16:24], "little")),
            "domain_range": (int.from_bytes(raw[24:28], "little"),
                             int.from_bytes(raw[28:32], "little")),
            "probe_size": int.from_bytes(raw[32:36], "little"),
            "bypass": raw[36],
            "raw": raw,
        }

    async def setup_queue(self, q, num, desc, driver, device):
        r = self.regs
        await r.write32(MMIO.QUEUE_SEL, q)
        if await r.read32(MMIO.QUEUE_READY):
            raise DriverError(f"queue {q} is ready before setup")
        qmax = await r.read32(MMIO.QUEUE_NUM_MAX)
        if num > qmax:
            raise DriverError(f"queue {q}: QueueNumMax {qmax} < {num}")
        await r.write32(MMIO.QUEUE_NUM, num)
        for lo, addr in ((MMIO.QUEUE_DESC_LOW, desc), (MMIO.QUEUE_DRIVER_LOW, driver),
                         (MMIO.QUEUE_DEVICE_LOW, device)):
            await r.write32(lo, addr & 0xffffffff)
            await r.write32(lo + 4, addr >> 32)
        await r.write32(MMIO.QUEUE_READY, 1)

    async def init(self, *, bypass=None, fill_eventq=True):
        """Bring the device up as Linux does; returns the configuration read."""
        await self.probe_device()
        await self.reset()
        await self.set_status(DeviceStatus.ACKNOWLEDGE)
        await self.set_status(DeviceStatus.DRIVER)
        offered = await self.read_features()
        want = sum(1 << f for f in LINUX_FEATURES)
        if self.want_indirect:
            want |= 1 << Feature.INDIRECT_DESC
        if self.want_event_idx:
            want |= 1 << Feature.EVENT_IDX
        for needed in (Feature.VERSION_1, Feature.MAP_UNMAP):
            if not offered >> needed & 1:
                raise DriverError(f"device does not offer {needed.name}")
        for f in self.refuse:
            want &= ~(1 << f)
        self.features = offered & want
        await self.write_features(self.features)
        await self.set_status(DeviceStatus.FEATURES_OK)
        if not await self.status() & DeviceStatus.FEATURES_OK:
            raise DriverError("FEATURES_OK refused")
        self.config = await self.read_config()
        if bypass is not None:
            if not self.has(Feature.BYPASS_CONFIG):
                raise DriverError("bypass needs BYPASS_CONFIG")
            await self.regs.write32(MMIO.CONFIG_BYPASS, bypass)
            self.config["bypass"] = bypass
        self.model = DeviceModel(self.params, features=self.negotiated(),
                                 bypass=self.config["bypass"])
        L = self.layout
        self.rq = SplitVirtqueue(self.mem, self.rq_num, L["rq_desc"], L["rq_driver"],
                                 L["rq_device"], self.alloc, avail_idx=self.index_base)
        self.eq = SplitVirtqueue(self.mem, self.eq_num, L["eq_desc"], L["eq_driver"],
                                 L["eq_device"], self.alloc, seed=1,
                                 avail_idx=self.index_base)
        self._kicked_at = {0: self.index_base, 1: self.index_base}
        await self.setup_queue(0, self.rq_num, L["rq_desc"], L["rq_driver"], L["rq_device"])
        await self.setup_queue(1, self.eq_num, L["eq_desc"], L["eq_driver"], L["eq_device"])
        await self.set_status(DeviceStatus.DRIVER_OK)
        if fill_eventq:
            for _ in range(self.eq_num):
                self.eq.add([], [24])
            await self.kick(1)
        return self.config

    def has(self, feature):
        return bool(self.features >> feature & 1)

    def negotiated(self):
        return frozenset(f for f in Feature if self.has(f))

    # --- requests ----------------------------------------------------------------------------

    def submit(self, readable, wlen=None, *, split=None, wsplit=None):
        """Queue a request (no kick). The answer the model expects is the chain's ``tag``."""
        readable = bytes(readable)
        if wlen is None:
            probe = readable[:1] == b"\x05"
            wlen = (self.config["probe_size"] if probe else 0) + 4
        parts, o = [], 0
        for n in (split or [len(readable)]):
            parts.append(readable[o:o + n])
            o += n
        assert o == len(readable)
        if wsplit is None:
            wsplit = [wlen] if wlen else []
        assert sum(wsplit) == wlen
        expect = self.model.execute(readable, wlen)
        return self.rq.add(parts, wsplit, indirect=self.has(Feature.INDIRECT_DESC),
                           tag=expect)

    async def kick(self, q=0):
        """Notify queue ``q`` unless the device said it does not need it (EVENT_IDX's
        ``avail_event``, else the used ring's NO_NOTIFY flag)."""
        vq = self.rq if q == 0 else self.eq
        old, new = self._kicked_at[q], vq.avail_idx
        self._kicked_at[q] = new
        if self.has(Feature.EVENT_IDX):
            if not need_event(vq.avail_event(), new, old):
                return False
        elif vq.used_flags() & 1:
            return False
        await self.regs.write32(MMIO.QUEUE_NOTIFY, q)
        return True

    async def wait_used(self, chains, timeout=20000, step=8):
        """Busy-poll the used ring until every chain is back; check each answer."""
        pending = {id(c) for c in chains}
        done = []
        waited = 0
        while pending:
            for c in self.rq.collect():
                done.append(c)
                pending.discard(id(c))
            if not pending:
                break
            if waited > timeout:
                st = await self.status()
                raise DriverError(f"{len(pending)} requests not answered after {timeout} "
                                  f"cycles (Status {st:#x})")
            await self.wait(step)
            waited += step
        for c in done:
            check_answer(c)
        return done

    async def request(self, readable, timeout=20000, **kw):
        """One synchronous request (ATTACH/DETACH/PROBE style): submit, kick, wait (at
        most ``timeout`` cycles)."""
        c = self.submit(readable, **kw)
        await self.kick()
        (c,) = await self.wait_used([c], timeout=timeout)
        return c

    async def batch(self, requests, **kw):
        """Queue every request, kick once, wait for all (what Linux does with MAPs); when
        the queue is full, kick and wait for what is queued first (as Linux does)."""
        done, chains = [], []
        per_request = 1 if self.has(Feature.INDIRECT_DESC) else 2
        for r in requests:
            if len(self.rq.free) < per_request:
                await self.kick()
                done += await self.wait_used(chains, **kw)
                chains = []
            chains.append(self.submit(r))
        await self.kick()
        return done + await self.wait_used(chains, **kw)

    # --- events ------------------------------------------------------------------------------

    def collect_faults(self):
        """Fault reports the device wrote since the last call; each buffer is re-posted
        (the kick is the caller's, :meth:`kick` (1))."""
        out = []
        for c in self.eq.collect():
            if c.used_len != 24:
                raise DriverError(f"fault report with used length {c.used_len}")
            f = unpack(Fault, c.written)
            if any(c.written[1:4]) or any(c.written[12:16]):
                raise DriverError(f"fault report with reserved bytes set: {c.written.hex()}")
            rec = {"reason": int(f.reason), "flags": int(f.flags),
                   "endpoint": int(f.endpoint), "address": int(f.address)}
            out.append(rec)
            self.eq.add([], [24])
        self.faults.extend(out)
        return out

