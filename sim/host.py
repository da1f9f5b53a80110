"""The host side of a board image: the serial bridge's client and the board test.

Transport-independent: everything goes through a ``link`` with blocking ``write(bytes)``
and ``read(n) -> bytes`` (at most ``n`` bytes; fewer means the link timed out). pyserial's
``Serial`` is such a link (``viommu board-test`` opens one); the cocotb bench of the board
image (tests/tb_board.py) provides one that drives the simulated UART pins.

* :class:`BridgeClient` speaks the bridge protocol (:mod:`viommu.rtl.board.bridge`): word reads
  and writes, the device's registers as the driver model wants them (``regs``), guest RAM
  as a byte-addressed memory (``mem``), the board control block, and translation lookups
  through its probe.
* :func:`run_board_test` runs the Linux-like driver flow of :mod:`viommu.sim.driver`
  against the board and checks every answer, lookup and fault report against the
  reference model.
"""

import random
import struct
import time

from viommu.boards.soc import (BoardReg, BOARD_ID, BOARD_VERSION, RAM_BASE, DEVICE_BASE,
                               CONTROL_BASE)
from viommu.rtl.core.layouts import (BridgeByte, BridgeHeader, BRIDGE_MAX_WORDS, BoardConfig,
                                BoardStatus, ProbeControl, ProbeResult, DeviceStatus, MapFlag,
                                Status, pack, unpack)
from viommu.rtl.transport.mmio import MMIO
from viommu.rtl.core.params import CoreParams
from viommu.sim import model as M
from viommu.sim.driver import VirtioIOMMUDriver, DriverError
from viommu.sim.stimulus import LookupGenerator
from viommu.sim.vring import ring_sizes


__all__ = ["BridgeError", "BridgeNak", "BridgeClient", "BoardInfo", "board_layout",
           "run_board_test", "run_sync"]


class BridgeError(Exception):
    """The link or the bridge misbehaved: no answer in time, or an unexpected byte."""


class BridgeNak(BridgeError):
    """The board answered NAK: a bus error (an address nothing answers, or a slave's
    SLVERR/DECERR)."""


def run_sync(coro):
    """Run a coroutine that never really suspends (the driver model's methods, whose
    register accesses are blocking bridge transactions here) to completion."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("the driver model awaited something that is not a bridge "
                       "transaction; it cannot run on a blocking link")


class BoardInfo:
    """What the board control block says about the board (``BridgeClient.identify``)."""

    def __init__(self, config, ram_size, version):
        c = unpack(BoardConfig, config.to_bytes(4, "little"))
        self.version = version
        self.ram_size = ram_size
        self.entries = int(c.entries_m1) + 1
        self.endpoints = int(c.endpoints_m1) + 1
        self.endpoint_width = int(c.endpoint_width_m1) + 1
        self.lookup_ports = int(c.lookup_ports_m1) + 1
        self.axi_width = 1 << int(c.axi_bytes_log2)
        self.queue_size = 1 << int(c.queue_size_log2)
        self.ids_0_to_n = bool(c.ids_0_to_n)

    def core_params(self):
        """The device's :class:`~viommu.rtl.core.params.CoreParams`, as far as the board tells
        them; everything else is the default (the driver checks the configuration space
        against it)."""
        if not self.ids_0_to_n:
            raise BridgeError("the board's endpoint IDs are not 0..n-1: give params= "
                              "explicitly")
        return CoreParams(entries=self.entries, endpoints=self.endpoints,
                          endpoint_width=self.endpoint_width, lookup_ports=self.lookup_ports)

    def __repr__(self):
        return (f"BoardInfo(ram {self.ram_size // 1024} KiB, {self.entries} entries, "
                f"{self.endpoints} endpoints, queue {self.queue_size}, "
                f"DMA {8 * self.axi_width} bits)")


class _Registers:
    """``read32`` / ``write32`` coroutines over a window of the bridge's address space (what
    :class:`~viommu.sim.driver.VirtioIOMMUDriver` expects of ``regs``)."""

    def __init__(self, client, base):
        self.client, self.base = client, base

    async def read32(self, offset):
        return self.client.read_words(self.base + offset, 1)[0]

    async def write32(self, offset, value):
        self.client.write_words(self.base + offset, [value & 0xffffffff])


class _Memory:
    """Guest RAM as ``read(addr, n) -> bytes`` / ``write(addr, data)`` (what the driver
    model and :class:`~viommu.sim.vring.SplitVirtqueue` expect of ``mem``).

    A byte range that does not cover whole words is written by reading the partial words
    first (read-modify-write of 32-bit words). That is not atomic against the device's DMA:
    callers must not write a partial word whose other bytes the device may be writing at the
    same time (the driver model never does: every buffer starts on an 8-byte boundary and
    ring fields shared between driver and device are written by one side only).
    """

    def __init__(self, client, base):
        self.client, self.base = client, base

    def _check(self, addr, n):
        size = self.client.ram_size
        if addr < 0 or (size is not None and addr + n > size):
            raise ValueError(f"guest RAM access {addr:#x}+{n} outside 0..{size:#x}")

    def read(self, addr, n):
        if n == 0:
            return b""
        self._check(addr, n)
        first, end = addr & ~3, (addr + n + 3) & ~3
        words = self.client.read_words(self.base + first, (end - first) // 4)
        raw = b"".join(struct.pack("<I", w) for w in words)
        return raw[addr - first:addr - first + n]

    def write(self, addr, data):
        data = bytes(data)
        if not data:
            return
        n = len(data)
        self._check(addr, n)
        first, end = addr & ~3, (addr + n + 3) & ~3
        buf = bytearray(end - first)
        if first != addr:                                   # partial first word
            buf[:4] = self.read(first, 4)
        if end != addr + n and (end - 4 != first or first == addr):    # partial last word
            buf[-4:] = self.read(end - 4, 4)
        buf[addr - first:addr - first + n] = data
        self.client.write_words(self.base + first,
                                list(struct.unpack(f"<{len(buf) // 4}I", buf)))


class BridgeClient:
    """The bridge protocol over ``link`` (see :mod:`viommu.rtl.board.bridge`).

    Attributes: ``regs`` (the device's registers at :data:`DEVICE_BASE`, coroutines),
    ``mem`` (guest RAM, synchronous), ``frames`` / ``bytes_sent`` / ``bytes_received``
    (traffic counters). Every method raises :class:`BridgeNak` on a NAK and
    :class:`BridgeError` on a link failure.
    """

    def __init__(self, link):
        self.link = link
        self.frames = self.bytes_sent = self.bytes_received = 0
        self.ram_size = None            # known after identify()
        self.regs = _Registers(self, DEVICE_BASE)
        self.mem = _Memory(self, RAM_BASE)

    # --- the protocol ----------------------------------------------------------------------

    def _send(self, data):
        self.link.write(data)
        self.bytes_sent += len(data)

    def _receive(self, n, what):
        data = bytes(self.link.read(n))
        self.bytes_received += len(data)
        if len(data) != n:
            raise BridgeError(f"{what}: the board answered {len(data)} of {n} bytes before "
                              f"the link timed out (is the board image loaded, the port and "
                              f"baud rate right?)")
        return data

    @staticmethod
    def _chunks(addr, n):
        if addr % 4 or not 0 <= addr < 1 << 32:
            raise ValueError(f"bridge address {addr:#x} is not a 32-bit word address")
        for k in range(0, n, BRIDGE_MAX_WORDS):
            yield (addr + 4 * k) & 0xffffffff, k, min(BRIDGE_MAX_WORDS, n - k)

    def write_words(self, addr, words):
        """Write 32-bit ``words`` to consecutive word addresses from ``addr`` (frames of up
        to 256 words)."""
        words = list(words)
        for a, k, n in self._chunks(addr, len(words)):
            frame = pack(BridgeHeader, cmd=BridgeByte.WRITE, addr=a, count=n - 1)
            frame += struct.pack(f"<{n}I", *(w & 0xffffffff for w in words[k:k + n]))
            self._send(frame)
            self.frames += 1
            reply = self._receive(1, f"write of {n} words at {a:#010x}")[0]
            if reply == BridgeByte.NAK:
                raise BridgeNak(f"write of {n} words at {a:#010x}: NAK (bus error)")
            if reply != BridgeByte.ACK:
                raise BridgeError(f"write of {n} words at {a:#010x}: reply byte {reply:#04x} "
                                  f"is neither ACK nor NAK")

    def read_words(self, addr, n):
        """Read ``n`` 32-bit words from consecutive word addresses from ``addr``."""
        out = []
        for a, _, k in self._chunks(addr, n):
            self._send(pack(BridgeHeader, cmd=BridgeByte.READ, addr=a, count=k - 1))
            self.frames += 1
            data = self._receive(4 * k + 1, f"read of {k} words at {a:#010x}")
            if data[-1] == BridgeByte.NAK:
                raise BridgeNak(f"read of {k} words at {a:#010x}: NAK (bus error)")
            if data[-1] != BridgeByte.ACK:
                raise BridgeError(f"read of {k} words at {a:#010x}: status byte "
                                  f"{data[-1]:#04x} is neither ACK nor NAK")
            out += struct.unpack(f"<{k}I", data[:-1])
        return out

    def resync(self, nbytes=1 << 16):
        """Get the bridge back to the start of a frame: stay silent while reading (and
        dropping) whatever comes, until the link times out. The link's timeout must be
        longer than the bridge's idle timeout (1 ms on the default board)."""
        self.link.read(nbytes)

    def ping(self):
        """Send a byte that starts no frame; the bridge must answer NAK."""
        self._send(b"\x00")
        reply = self._receive(1, "ping")[0]
        if reply != BridgeByte.NAK:
            raise BridgeError(f"ping: expected NAK, got {reply:#04x}")

    # --- the board control block -----------------------------------------------------------

    def control_read(self, reg, n=1):
        words = self.read_words(CONTROL_BASE + reg, n)
        return words[0] if n == 1 else words

    def control_write(self, reg, value):
        self.write_words(CONTROL_BASE + reg, [value])

    def identify(self):
        """Check the board control block's ID and version; returns a :class:`BoardInfo`."""
        ident, version, config, ram_size = self.control_read(BoardReg.ID, 4)
        if ident != BOARD_ID:
            raise BridgeError(f"board ID {ident:#010x}, expected {BOARD_ID:#010x} "
                              f"(not a viommu board image?)")
        if version >> 16 != BOARD_VERSION >> 16:
            raise BridgeError(f"board control block version {version:#x}; this host "
                              f"speaks {BOARD_VERSION:#x}")
        self.ram_size = ram_size
        return BoardInfo(config, ram_size, version)

    def status(self):
        """The STATUS register as a dict of its fields."""
        v = unpack(BoardStatus, self.control_read(BoardReg.STATUS).to_bytes(4, "little"))
        return {name: int(getattr(v, name)) for name in
                ("irq", "driver_ok", "fault_seen", "dma_error_seen", "uart_error_seen",
                 "bridge_abort_seen")}

    def clear_status(self):
        """Clear every sticky STATUS bit."""
        self.control_write(BoardReg.STATUS, 0xffffffff)

    def cycles(self):
        lo, hi = self.control_read(BoardReg.CYCLES_LO, 2)
        return lo | hi << 32

    def lookup(self, endpoint, iova, write, *, polls=20):
        """One translation lookup on the device's lookup port 0 through the probe; returns
        ``{allowed, phys, mmio, via, reason, flags}``."""
        ctrl = int.from_bytes(pack(ProbeControl, write=int(bool(write)), go=1), "little")
        self.write_words(CONTROL_BASE + BoardReg.PROBE_ENDPOINT,
                         [endpoint, iova & 0xffffffff, iova >> 32 & 0xffffffff, ctrl])
        for _ in range(polls):
            res, lo, hi = self.control_read(BoardReg.PROBE_RESULT, 3)
            r = unpack(ProbeResult, res.to_bytes(4, "little"))
            if r.done:
                return {"allowed": int(r.allowed), "phys": lo | hi << 32, "mmio": int(r.mmio),
                        "via": int(r.via), "reason": int(r.reason), "flags": int(r.flags)}
        raise BridgeError(f"probe lookup ({endpoint}, {iova:#x}) not answered")


def board_layout(ram_size, rq_num=64, eq_num=8):
    """Where the driver puts rings and buffers in a board's guest RAM of ``ram_size``
    bytes (the board's counterpart of :data:`viommu.sim.driver.GUEST_LAYOUT`): the rings
    from address 0, each aligned as virtio requires, buffers from the next 4 KiB boundary
    to the end."""
    at = 0

    def place(n, align):
        nonlocal at
        at = -(-at // align) * align
        start, at = at, at + n
        return start

    layout = {}
    for q, num in (("rq", rq_num), ("eq", eq_num)):
        d, a, u = ring_sizes(num)
        layout[f"{q}_desc"] = place(d, 16)
        layout[f"{q}_driver"] = place(a, 2)
        layout[f"{q}_device"] = place(u, 4)
    start = -(-at // 4096) * 4096
    if start + 4096 > ram_size:
        raise ValueError(f"guest RAM of {ram_size} bytes is too small for queues of "
                         f"{rq_num} and {eq_num}")
    layout["buffers"] = (start, ram_size)
    layout["size"] = ram_size
    return layout


async def _no_wait(cycles):
    """The driver's ``wait``: nothing to do, each bridge transaction takes far longer."""


class _Checker:
    """Lookups through the probe against the model, and their fault reports."""

    def __init__(self, client, drv, params, log):
        self.client, self.drv, self.params, self.log = client, drv, params, log
        self.lookups = self.denied = self.faults = 0
        self.pending = []               # denials whose reports have not arrived yet

    def lookup(self, ep, iova, write):
        got = self.client.lookup(ep, iova, write)
        t = self.drv.model.translate(ep, iova, write)
        what = f"lookup (endpoint {ep}, iova {iova:#x}, {'write' if write else 'read'})"
        if got["allowed"] != int(t.allowed):
            raise DriverError(f"{what}: allowed={got['allowed']}, the model says {t}")
        if t.allowed:
            want = (t.phys, int(t.mmio), t.via.value)
            if (got["phys"], got["mmio"], got["via"]) != want:
                raise DriverError(f"{what}: phys/mmio/via {got['phys']:#x}/{got['mmio']}/"
                                  f"{got['via']}, the model says {t}")
        else:
            if (got["reason"], got["flags"]) != (t.reason, t.flags):
                raise DriverError(f"{what}: reason/flags {got['reason']}/{got['flags']:#x}, "
                                  f"the model says {t}")
            self.denied += 1
            self.pending.append({"reason": t.reason, "flags": t.flags,
                                 "endpoint": ep & ((1 << self.params.endpoint_width) - 1),
                                 "address": iova})
        self.lookups += 1
        if len(self.pending) >= self.drv.eq_num:
            self.collect()
        return got

    def collect(self, polls=50):
        """Every pending denial must come back as a fault report on the eventq, in order
        (each buffer is re-posted)."""
        got = []
        for _ in range(polls):
            if len(got) >= len(self.pending):
                break
            new = self.drv.collect_faults()
            if new:
                run_sync(self.drv.kick(1))
            got += new
        if got != self.pending:
            raise DriverError(f"fault reports {got} are not the denied lookups "
                              f"{self.pending}")
        self.faults += len(got)
        self.pending = []


def run_board_test(link, *, requests=16, lookups=None, seed=1, params=None, bad_dma=True,
                   log=print):
    """The Linux-like driver flow against a board, over ``link``; raises on any mismatch.

    Steps: resynchronise the bridge, identify the board, reset and bring up the device
    (negotiation, both queues, eventq filled, DRIVER_OK), PROBE every endpoint, ATTACH all
    but the last endpoint to 3 domains, ``requests`` MAPs in batches of up to 8 (plus one
    overlapping MAP that must be rejected with INVAL), lookups through the probe checked
    against the model (``lookups``, default ``3 * requests + 8``, at least one denied) with
    every denial's fault report read from the eventq, the interrupt line checked and
    acknowledged, UNMAP of everything, DETACH, lookups again (all denied, all reported);
    FaultDrops must stay 0. With ``bad_dma``, last, a request whose buffer lies outside the
    guest RAM: the device must end in DEVICE_NEEDS_RESET with the DMA error counted (then
    it is reset). ``params`` (:class:`~viommu.rtl.core.params.CoreParams`) defaults to what the
    board control block reports.

    Returns ``{"requests", "lookups", "denied", "faults", "frames", "bytes_moved",
    "bytes_sent", "bytes_received", "board_cycles", "elapsed"}`` (requests answered,
    lookups checked, of them denied, fault reports received, bridge frames, bytes over the
    link, board clock cycles from the cycle counter, seconds).
    """
    t0 = time.monotonic()
    rng = random.Random(seed)
    client = BridgeClient(link)
    client.resync()
    client.ping()
    info = client.identify()
    params = params or info.core_params()
    log(f"board: {info}")
    client.clear_status()
    cycles0 = client.cycles()

    run_sync(client.regs.write32(MMIO.QUEUE_SEL, 0))
    qmax = run_sync(client.regs.read32(MMIO.QUEUE_NUM_MAX))
    rq_num, eq_num = min(64, qmax), min(8, qmax)
    drv = VirtioIOMMUDriver(client.regs, client.mem, _no_wait, params, rq_num=rq_num,
                            eq_num=eq_num, layout=board_layout(info.ram_size, rq_num, eq_num),
                            log=log)
    config = run_sync(drv.init())
    if config["raw"][:36] != params.config_bytes(config["bypass"])[:36]:
        raise DriverError(f"the device's configuration {config['raw'][:36].hex()} is not "
                          f"that of {params}: give params= explicitly")
    if not client.status()["driver_ok"]:
        raise DriverError("the board does not show DRIVER_OK")
    log(f"device up: features {drv.features:#x}, queues {rq_num}/{eq_num}")
    done = 0
    chk = _Checker(client, drv, params, log)
    G = params.granule
    eps = list(params.endpoint_ids)

    for ep in eps:
        run_sync(drv.request(M.probe(ep)))
        done += 1
    attached = eps[:-1] if len(eps) > 1 else eps
    doms = {ep: 1 + i % 3 for i, ep in enumerate(attached)}
    for ep, dom in doms.items():
        run_sync(drv.request(M.attach(dom, ep)))
        done += 1
    log(f"PROBE x{len(eps)}, ATTACH x{len(doms)}")

    # MAPs in batches, one of them rejected
    maps = []
    for i in range(requests):
        dom = 1 + i % min(3, len(doms))
        start = (0x100 + 4 * i) * G
        flags = rng.choice([MapFlag.READ, MapFlag.WRITE, MapFlag.READ | MapFlag.WRITE,
                            MapFlag.READ | MapFlag.WRITE | MapFlag.MMIO])
        maps.append(M.map_(dom, start, start + rng.choice([1, 2, 4]) * G - 1,
                           rng.getrandbits(40) * G, flags))
    bad = M.map_(1, 0x100 * G, 0x101 * G - 1, 0)        # overlaps the first mapping
    maps.insert(min(3, len(maps)), bad)
    rejected = 0
    for k in range(0, len(maps), 8):
        for c in run_sync(drv.batch(maps[k:k + 8])):
            status = c.written[-4]          # the tail's status (the model agreed already)
            if status != Status.OK:
                rejected += 1
                if status != Status.INVAL:
                    raise DriverError(f"MAP answered {Status(status).name}")
        done += len(maps[k:k + 8])
    if rejected != 1:
        raise DriverError(f"{rejected} MAPs rejected; exactly the overlapping one should be")
    log(f"MAP x{len(maps)} ({drv.model.n_mappings} mappings, 1 rejected as it should)")

    # lookups: one surely denied (an unmapped IOVA), one surely allowed (a read of the
    # first readable mapping), then random ones around the mappings
    gen = LookupGenerator(drv.model, rng)
    n_lookups = 3 * requests + 8 if lookups is None else lookups
    reqs = [(eps[0], 0x10 * G, False)]
    readable = [(ep, m.start) for ep, dom in doms.items()
                for m in drv.model.domains[dom].mappings.values() if m.flags & MapFlag.READ]
    if readable:
        reqs.append((readable[0][0], readable[0][1], False))
    reqs += [gen.draw() for _ in range(max(0, n_lookups - len(reqs)))]
    for ep, iova, write in reqs:
        chk.lookup(ep, iova, write)
    chk.collect()
    if chk.denied == 0 or chk.denied == chk.lookups:
        raise DriverError(f"{chk.denied} of {chk.lookups} lookups denied: the test needs "
                          f"both outcomes")
    log(f"{chk.lookups} lookups checked, {chk.denied} denied, {chk.faults} fault reports")

    # the interrupt line follows InterruptStatus, InterruptACK clears it
    isr = run_sync(drv.regs.read32(MMIO.INTERRUPT_STATUS))
    if not isr & 1 or client.status()["irq"] != 1:
        raise DriverError(f"no used-buffer interrupt (InterruptStatus {isr:#x}, board irq "
                          f"{client.status()['irq']})")
    run_sync(drv.regs.write32(MMIO.INTERRUPT_ACK, isr))
    if client.status()["irq"] != 0:
        raise DriverError("irq still high after InterruptACK")

    # UNMAP everything, DETACH, lookups denied
    unmaps = [M.unmap(dom, m.start, m.end) for dom, d in sorted(drv.model.domains.items())
              for m in d.mappings.values()]
    for k in range(0, len(unmaps), 8):
        run_sync(drv.batch(unmaps[k:k + 8]))
        done += len(unmaps[k:k + 8])
    if drv.model.n_mappings:
        raise DriverError("mappings left after UNMAP")
    for ep, dom in doms.items():
        run_sync(drv.request(M.detach(dom, ep)))
        done += 1
    log(f"UNMAP x{len(unmaps)}, DETACH x{len(doms)}")
    before = chk.denied
    for ep, iova, write in [gen.draw() for _ in range(8)] + [(eps[0], 0x100 * G, True)]:
        got = chk.lookup(ep, iova, write)
        if got["allowed"]:
            raise DriverError(f"lookup ({ep}, {iova:#x}) allowed after DETACH")
    chk.collect()
    if chk.denied - before != 9:
        raise DriverError("lookups after DETACH were not all denied")

    drops = client.control_read(BoardReg.FAULT_DROPS)
    if drops or run_sync(drv.regs.read32(MMIO.FAULT_DROPS)):
        raise DriverError(f"{drops} fault reports dropped")
    st = run_sync(drv.status())
    if st & DeviceStatus.DEVICE_NEEDS_RESET:
        raise DriverError("DEVICE_NEEDS_RESET")
    if not client.status()["fault_seen"]:
        raise DriverError("the board does not show the denied lookups (fault_seen)")

    if bad_dma:
        _bad_dma(client, drv, info)
        log("DMA outside the guest RAM: DECERR -> DEVICE_NEEDS_RESET, counted")

    summary = {
        "requests": done,
        "lookups": chk.lookups,
        "denied": chk.denied,
        "faults": chk.faults,
        "frames": client.frames,
        "bytes_moved": client.bytes_sent + client.bytes_received,
        "bytes_sent": client.bytes_sent,
        "bytes_received": client.bytes_received,
        "board_cycles": client.cycles() - cycles0,
        "elapsed": round(time.monotonic() - t0, 3),
    }
    return summary


def _bad_dma(client, drv, info):
    """A request whose readable buffer lies past the end of the guest RAM: the device reads
    it, the RAM answers DECERR, the device must go to DEVICE_NEEDS_RESET and raise the
    configuration-change interrupt; the board counts the DMA error. The device is reset
    afterwards."""
    errors0 = client.control_read(BoardReg.DMA_ERRORS)
    (head,) = drv.rq.take_descs(1)
    drv.rq.write_desc(head, info.ram_size + 0x1000, 24, 0, 0)
    drv.rq.put_avail(head)
    run_sync(drv.regs.write32(MMIO.QUEUE_NOTIFY, 0))
    for _ in range(50):
        if run_sync(drv.status()) & DeviceStatus.DEVICE_NEEDS_RESET:
            break
    else:
        raise DriverError("a DMA outside the guest RAM did not end in DEVICE_NEEDS_RESET")
    if not run_sync(drv.regs.read32(MMIO.INTERRUPT_STATUS)) & 2:
        raise DriverError("no configuration-change interrupt after the DMA error")
    errors = client.control_read(BoardReg.DMA_ERRORS)
    if errors <= errors0 or not client.status()["dma_error_seen"]:
        raise DriverError(f"the board did not count the DMA error ({errors0} -> {errors})")
    run_sync(drv.reset())
