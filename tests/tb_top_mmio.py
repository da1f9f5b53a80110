"""cocotb tests of the generated ``virtio_iommu_mmio`` Verilog (run by tests/test_top_mmio.py).

The bench attaches cocotbext-axi directly to the top level's ports: ``AxiLiteMaster`` on
``s_axil_*`` (the driver's register accesses) and ``AxiRam`` on ``m_axi_*`` (guest memory).
:class:`~viommu.sim.driver.VirtioIOMMUDriver` plays the Linux driver and checks every
answer against the reference model; lookups are driven on ``lookup_0_*`` and checked
against the model's ``translate``, and denied ones must come back as fault reports on the
eventq. The configuration comes in ``VIOMMU_TB`` (JSON: core parameters, the driver's
feature wishes, queue sizes, the index base).
"""

import json
import logging
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiBus, AxiRam

from viommu.rtl.core.layouts import DeviceStatus, MapFlag, Feature, Status
from viommu.rtl.transport.mmio import MMIO
from viommu.rtl.core.params import CoreParams
from viommu.sim import model as M
from viommu.sim.driver import VirtioIOMMUDriver, AxiLiteRegs, GUEST_LAYOUT
from viommu.sim.stimulus import RequestGenerator, LookupGenerator
from viommu.sim.vring import Chain, DESC_F_NEXT, DESC_F_WRITE


CFG = json.loads(os.environ.get("VIOMMU_TB", "{}"))
PARAMS = CoreParams(**CFG.get("core", {}))
SEED = int(os.environ.get("VIOMMU_TB_SEED", CFG.get("seed", 1)))
SCALE = float(os.environ.get("VIOMMU_RANDOM_SCALE", "1"))
G = PARAMS.granule
#: The RAM behind ``m_axi_store``: a power of two that holds the store's region.
STORE_RAM_SIZE = 1 << 23


class Bench:
    def __init__(self, dut):
        self.dut = dut
        # in reset from time 0: a mapping store clears its heads (bus traffic) as soon as
        # it leaves reset, and a RAM that sees a reset in the middle of a burst loses count
        dut.rst.value = 1
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst,
                          size=GUEST_LAYOUT["size"])
        # A mapping store in external memory has its own master: its region in a RAM of
        # its own (addresses taken modulo the RAM's size; the region's base is a multiple
        # of it)
        self.store_ram = None
        if hasattr(dut, "m_axi_store_awvalid"):
            self.store_ram = AxiRam(AxiBus.from_prefix(dut, "m_axi_store"), dut.clk, dut.rst,
                                    size=STORE_RAM_SIZE)
            logging.getLogger(f"cocotb.{dut._name}.m_axi_store").setLevel(logging.WARNING)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        self.regs = AxiLiteRegs(self.axil)
        for name in ("s_axil", "m_axi"):
            logging.getLogger(f"cocotb.{dut._name}.{name}").setLevel(logging.WARNING)
        self.outstanding = 0            # AXI4 reads + writes issued and not yet answered
        self.decisions = 0              # lookup answers so far (fault reports follow them)
        self._drops_before = 0
        cocotb.start_soon(self._count_outstanding())
        dut.lookup_0_req_valid.value = 0
        dut.lookup_0_req_endpoint.value = 0
        dut.lookup_0_req_iova.value = 0
        dut.lookup_0_req_write.value = 0

    async def _count_outstanding(self):
        dut = self.dut
        fire = lambda v, r: int(v.value) & int(r.value)
        while True:
            await FallingEdge(dut.clk)          # handshakes of the coming edge are stable
            self.outstanding += (fire(dut.m_axi_arvalid, dut.m_axi_arready) +
                                 fire(dut.m_axi_awvalid, dut.m_axi_awready) -
                                 (fire(dut.m_axi_rvalid, dut.m_axi_rready) and
                                  int(dut.m_axi_rlast.value)) -
                                 fire(dut.m_axi_bvalid, dut.m_axi_bready))

    async def reset(self, cycles=4):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, cycles)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 2)

    async def wait(self, n):
        await ClockCycles(self.dut.clk, n)

    def driver(self, **kw):
        kw.setdefault("indirect", CFG.get("indirect", False))
        kw.setdefault("event_idx", CFG.get("event_idx", False))
        kw.setdefault("rq_num", CFG.get("rq_num", 64))
        kw.setdefault("eq_num", CFG.get("eq_num", 8))
        kw.setdefault("index_base", CFG.get("index_base", 0))
        return VirtioIOMMUDriver(self.regs, self.ram, self.wait, PARAMS, **kw)

    async def lookups(self, reqs, max_tries=200):
        """Drive ``reqs`` [(endpoint, iova, write)] one per cycle (each held until
        ``req_ready``); returns the responses in order (dicts), checking the fixed 3-cycle
        latency from acceptance. With a mapping store, an access answered ``retry`` is
        then presented again alone, until it is decided."""
        out = await self._lookups(reqs)
        for k, r in enumerate(out):
            tries = 0
            while r["retry"]:
                assert r["allowed"] == 0 and r["reason"] == 0 and r["flags"] == 0, r
                tries += 1
                assert tries < max_tries, f"lookup {reqs[k]} answered retry {tries} times"
                await self.wait(8)
                (r,) = await self._lookups([reqs[k]])
            out[k] = r
        return out

    async def _lookups(self, reqs):
        dut = self.dut
        out, sent = [], []
        cycle = 0
        while len(out) < len(reqs):
            await FallingEdge(dut.clk)
            if int(dut.lookup_0_resp_valid.value):
                self.decisions += 1
                out.append({
                    "allowed": int(dut.lookup_0_resp_allowed.value),
                    "phys": int(dut.lookup_0_resp_phys.value),
                    "mmio": int(dut.lookup_0_resp_mmio.value),
                    "via": int(dut.lookup_0_resp_via.value),
                    "reason": int(dut.lookup_0_resp_reason.value),
                    "flags": int(dut.lookup_0_resp_flags.value),
                    "endpoint": int(dut.lookup_0_resp_endpoint.value),
                    "iova": int(dut.lookup_0_resp_iova.value),
                    "retry": int(dut.lookup_0_resp_retry.value),
                    "cycle": cycle,
                    "seq": self.decisions,          # the order decisions were made in
                })
            if len(sent) < len(reqs):
                ep, iova, write = reqs[len(sent)]
                dut.lookup_0_req_valid.value = 1
                dut.lookup_0_req_endpoint.value = ep
                dut.lookup_0_req_iova.value = iova
                dut.lookup_0_req_write.value = int(write)
                if int(dut.lookup_0_req_ready.value):   # else held: presented again
                    sent.append(cycle)
            else:
                dut.lookup_0_req_valid.value = 0
            cycle += 1
            assert cycle < len(reqs) + 10, "lookup responses missing"
        await FallingEdge(dut.clk)
        dut.lookup_0_req_valid.value = 0
        for s, r in zip(sent, out):
            assert r["cycle"] - s == 3, f"lookup latency {r['cycle'] - s}, not 3"
        return out

    async def check_lookups(self, drv, reqs):
        """Lookups against the model; returns the denied ones (as fault records)."""
        self._drops_before = await self.regs.read32(MMIO.FAULT_DROPS)
        resps = await self.lookups(reqs)
        denied = []
        # fault reports come in the order of the decisions (an access answered retry is
        # decided later, when presented again)
        order = sorted(range(len(reqs)), key=lambda k: resps[k]["seq"])
        for (ep, iova, write), r in ((reqs[k], resps[k]) for k in order):
            t = drv.model.translate(ep, iova, write)
            assert r["allowed"] == int(t.allowed), \
                f"lookup ep {ep} iova {iova:#x} write {write}: allowed {r['allowed']}, " \
                f"model {t}"
            if t.allowed:
                assert r["phys"] == t.phys, f"phys {r['phys']:#x}, model {t.phys:#x}"
                assert r["mmio"] == int(t.mmio) and r["via"] == t.via.value, (r, t)
            else:
                assert (r["reason"], r["flags"]) == (t.reason, t.flags), (r, t)
                assert (r["endpoint"], r["iova"]) == (ep & ((1 << PARAMS.endpoint_width) - 1),
                                                      iova), r
                denied.append({"reason": t.reason, "flags": t.flags,
                               "endpoint": ep & ((1 << PARAMS.endpoint_width) - 1),
                               "address": iova})
        return denied

    async def check_faults(self, drv, denied, settle=800):
        """Collect fault reports, re-posting eventq buffers, until none has come for
        ``settle`` cycles. Every report must be one of ``denied`` (the last
        :meth:`check_lookups`'s denials), in order, and FaultDrops must have grown by
        exactly the number that never came. Returns the reports."""
        got, idle = [], 0
        while idle < settle:
            new = drv.collect_faults()
            got += new
            if new:
                idle = 0
                await drv.kick(1)
            await self.wait(16)
            idle += 16
        rest = iter(denied)
        assert all(any(r == d for d in rest) for r in got), \
            f"fault reports {got} are not the denials {denied} in order"
        drops = await self.regs.read32(MMIO.FAULT_DROPS)
        assert drops - self._drops_before == len(denied) - len(got), \
            (f"FaultDrops grew by {drops - self._drops_before}, but {len(denied) - len(got)} "
             f"of {len(denied)} denials were not reported")
        return got


async def _bring_up(dut, **kw):
    b = Bench(dut)
    await b.reset()
    drv = b.driver(**kw)
    await drv.init()
    return b, drv


@cocotb.test()
async def linux_flow(dut):
    """Probe, attach, a batch of MAPs with one kick, lookups (+ fault reports), UNMAP,
    DETACH: every answer, lookup and report against the model."""
    b, drv = await _bring_up(dut)
    eps = list(PARAMS.endpoint_ids)
    for ep in eps:
        c = await drv.request(M.probe(ep))
        assert c.used_len == drv.config["probe_size"] + 4
    doms = {ep: 1 + i % 3 for i, ep in enumerate(eps)}
    for ep, dom in doms.items():
        await drv.request(M.attach(dom, ep))
    rng = random.Random(SEED)
    maps = []
    for i in range(min(PARAMS.entries, 24)):
        dom = 1 + i % 3
        start = (0x100 + 4 * i) * G
        maps.append(M.map_(dom, start, start + rng.choice([1, 2, 4]) * G - 1,
                           rng.getrandbits(40) * G,
                           rng.choice([MapFlag.READ, MapFlag.WRITE,
                                       MapFlag.READ | MapFlag.WRITE,
                                       MapFlag.READ | MapFlag.WRITE | MapFlag.MMIO])))
    await drv.batch(maps)
    gen = LookupGenerator(drv.model, rng)
    reqs = [gen.draw() for _ in range(200)]
    denied = await b.check_lookups(drv, reqs)
    # The eventq has eq_num buffers and the device queues fault_queue_depth more: the
    # rest of a burst of denials is dropped and counted.
    got = await b.check_faults(drv, denied)
    assert len(got) >= min(len(denied), drv.eq_num)
    # Unmap everything again, in one batch, then detach.
    await drv.batch([M.unmap(1 + i % 3, (0x100 + 4 * i) * G, (0x100 + 4 * i + 4) * G - 1)
                     for i in range(len(maps))])
    assert drv.model.n_mappings == 0
    for ep, dom in doms.items():
        await drv.request(M.detach(dom, ep))
    denied = await b.check_lookups(drv, [gen.draw() for _ in range(50)])
    assert all(d["reason"] in (0, 1) for d in denied)      # UNKNOWN / DOMAIN only now
    st = await drv.status()
    assert st & DeviceStatus.DEVICE_NEEDS_RESET == 0


@cocotb.test()
async def fault_reports_and_drops(dut):
    """More denials than eventq buffers + fault queue: the rest are counted in FaultDrops;
    re-posted buffers get the queued reports in order."""
    b, drv = await _bring_up(dut)
    ep = PARAMS.endpoint_ids[0]
    await drv.request(M.attach(7, ep))
    depth = CFG.get("fault_queue_depth", 8)
    n = drv.eq_num + depth + 5
    reqs = [(ep, (0x4000 + i) * G, i % 2 == 1) for i in range(n)]
    # Space the lookups so the eventq unit keeps up; only buffers limit what is reported.
    denied = []
    for r in reqs:
        denied += await b.check_lookups(drv, [r])
        await b.wait(40)
    assert len(denied) == n
    got = drv.collect_faults()
    assert got == denied[:drv.eq_num], (got, denied[:drv.eq_num])
    for _ in range(depth // drv.eq_num + 2):    # re-post buffers until the queue is empty
        await drv.kick(1)
        await b.wait(400)
        got += drv.collect_faults()
    want = denied[:drv.eq_num + depth]
    assert got == want, (f"{len(got)} reports, expected {len(want)}; first difference at "
                         f"{next((i for i, (x, y) in enumerate(zip(got, want)) if x != y), None)}")
    assert await b.regs.read32(MMIO.FAULT_DROPS) == n - drv.eq_num - depth
    # a device reset clears the counter
    await drv.init()
    assert await b.regs.read32(MMIO.FAULT_DROPS) == 0


@cocotb.test()
async def random_requests(dut):
    """Random request sequences (valid and malformed), random descriptor splits, batches
    with one kick, lookups between batches; queue indices run past 65535 when the bench's
    index base is near it."""
    b, drv = await _bring_up(dut)
    rng = random.Random(SEED * 7919)
    gen = RequestGenerator(drv.model, rng)
    lgen = LookupGenerator(drv.model, rng)
    total = int(CFG.get("random_requests", 300) * SCALE)
    done = 0
    while done < total:
        chains = []
        for _ in range(rng.randint(1, min(24, drv.rq_num // 2))):
            for _ in range(20):
                readable, wlen = gen.draw()
                answer = drv.model.copy().execute(readable, wlen)
                if len(answer) <= wlen:
                    break
            else:
                continue
            split = _split(rng, len(readable))
            wsplit = _split(rng, wlen, allow_empty=False) if wlen else []
            if len(drv.rq.free) < len(split) + len(wsplit):
                break
            chains.append(drv.submit(readable, wlen, split=split, wsplit=wsplit))
        await drv.kick()
        await drv.wait_used(chains, timeout=40000)
        done += len(chains)
        denied = await b.check_lookups(drv, [lgen.draw() for _ in range(rng.randint(5, 40))])
        await b.check_faults(drv, denied)
    st = await drv.status()
    assert st & DeviceStatus.DEVICE_NEEDS_RESET == 0
    dut._log.info(f"{done} random requests, used idx {drv.rq.used_idx()}")
    if drv.index_base + done > 0xffff:
        assert drv.rq.used_idx() < drv.index_base, "the used idx did not wrap past 65535"


@cocotb.test()
async def live_and_nomem_registers(dut):
    """LiveMappings (0x204) follows the mappings the device holds; NomemCount (0x208)
    counts the MAPs refused because the device is full (its ``capacity``: the table's
    entries, or the store's mappings), and a device reset clears both. With a store in
    external memory, a MAP onto the store's region is INVAL and a bypass access into it
    is denied."""
    b, drv = await _bring_up(dut)
    ep = PARAMS.endpoint_ids[0]
    await drv.request(M.attach(3, ep))
    cap = PARAMS.capacity
    maps = [M.map_(3, (0x1000 + 2 * k) * G, (0x1000 + 2 * k + 1) * G - 1, (0x40 + k) * G,
                   MapFlag.READ) for k in range(cap + 3)]
    await drv.batch(maps)
    assert drv.model.n_mappings == cap
    assert await b.regs.read32(MMIO.LIVE_MAPPINGS) == cap
    assert await b.regs.read32(MMIO.NOMEM_COUNT) == 3
    await drv.batch([M.unmap(3, 0x1000 * G, (0x1000 + 8) * G - 1)])
    assert await b.regs.read32(MMIO.LIVE_MAPPINGS) == cap - 4 == drv.model.n_mappings
    # the table holds copies of what the store holds: lookups through it, and misses
    await b.check_lookups(drv, [(ep, (0x1000 + 2 * k) * G + 8, 0) for k in range(cap)])
    if PARAMS.store_region is not None:
        lo, hi = PARAMS.store_region
        c = await drv.request(M.map_(3, 0x10 * G, 0x11 * G - 1, lo & ~(G - 1)))
        assert c.written[0] == Status.INVAL
        bypass_ep = PARAMS.endpoint_ids[1]
        await drv.request(M.attach(9, bypass_ep, flags=1))
        (r,) = await b.lookups([(bypass_ep, lo + 0x100, 1)])
        assert r["allowed"] == 0 and r["retry"] == 0, r
        (r,) = await b.lookups([(bypass_ep, hi + 1, 1)])
        assert r["allowed"] == 1 and r["phys"] == hi + 1, r
    await drv.init()                                        # device reset
    assert await b.regs.read32(MMIO.NOMEM_COUNT) == 0
    for _ in range(40):
        if await b.regs.read32(MMIO.LIVE_MAPPINGS) == 0:
            break
    assert await b.regs.read32(MMIO.LIVE_MAPPINGS) == 0


def _split(rng, n, allow_empty=True):
    """Random descriptor sizes summing to ``n``: up to 6 pieces, zero-length ones among
    them if ``allow_empty`` (then ``[0]`` for ``n`` = 0; else ``[]``)."""
    if n == 0:
        return [0] if allow_empty else []
    cuts = sorted(rng.randint(0 if allow_empty else 1, n) for _ in range(rng.randint(0, 5)))
    pieces = [b - a for a, b in zip([0] + cuts, cuts + [n])]
    return pieces if allow_empty else [p for p in pieces if p]


# --- bad input -------------------------------------------------------------------------------

async def _watch_dma(dut, cycles):
    """Count DMA commands (AR/AW handshakes) presented in the next ``cycles`` cycles."""
    n = 0
    for _ in range(cycles):
        await RisingEdge(dut.clk)
        n += int(dut.m_axi_arvalid.value) + int(dut.m_axi_awvalid.value)
    return n


def _allowed_areas(drv, chains):
    """Where the device may write: the used rings and the chains' writable buffers."""
    areas = [drv.rq.areas()[2], drv.eq.areas()[2]]
    for vq in (drv.rq, drv.eq):
        for c in list(vq.outstanding.values()) + list(chains):
            areas += [(a, a + n) for a, n in c.writable if n]
    return areas


def _check_memory(before, after, areas):
    for i, (x, y) in enumerate(zip(before, after)):
        if x != y and not any(a <= i < e for a, e in areas):
            raise AssertionError(f"guest memory changed at {i:#x} ({x:#x} -> {y:#x}), "
                                 f"outside every writable buffer and used ring")


def _bad_cases():
    """name -> (needs INDIRECT_DESC, function(drv) making the bad ring; returns chains)."""
    cases = {}

    def case(name, indirect=False):
        def deco(fn):
            cases[name] = (indirect, fn)
            return fn
        return deco

    @case("head index >= queue size")
    def _(drv):
        drv.rq.put_avail(drv.rq_num + 3)
        return []

    @case("next index >= table size")
    def _(drv):
        c = drv.submit(M.attach(1, PARAMS.endpoint_ids[0]))
        if c.table is not None:                 # the indirect table has 2 entries
            d = drv.rq.read_desc(0, table=c.table)
            drv.rq.write_desc(0, d[0], d[1], d[2], 2, table=c.table)
        else:
            d = drv.rq.read_desc(c.head)
            drv.rq.write_desc(c.head, d[0], d[1], d[2], drv.rq_num)
        return [c]

    @case("chain loop")
    def _(drv):
        c = drv.submit(M.attach(1, PARAMS.endpoint_ids[0]))
        if c.table is not None:
            d = drv.rq.read_desc(1, table=c.table)
            drv.rq.write_desc(1, d[0], d[1], d[2] | DESC_F_NEXT, 0, table=c.table)
        else:
            d = drv.rq.read_desc(c.descs[-1])
            drv.rq.write_desc(c.descs[-1], d[0], d[1], d[2] | DESC_F_NEXT, c.head)
        return [c]

    @case("readable after writable")
    def _(drv):
        a, r = drv.rq.take_descs(2)
        buf, req = drv.alloc.alloc(4), drv.alloc.alloc(24)
        drv.mem.write(buf, b"\xaa" * 4)
        drv.mem.write(req, M.attach(1, PARAMS.endpoint_ids[0]))
        drv.rq.write_desc(a, buf, 4, DESC_F_WRITE | DESC_F_NEXT, r)
        drv.rq.write_desc(r, req, 24, 0, 0)
        drv.rq.put_avail(a)
        return [Chain(head=a, descs=[a, r], readable=[(req, 24)], writable=[(buf, 4)])]

    @case("writable part shorter than the answer")
    def _(drv):
        return [drv.rq.add([M.attach(1, PARAMS.endpoint_ids[0])], [2], tag=b"")]

    @case("avail idx more than queue size ahead")
    def _(drv):
        drv.rq.publish((drv.rq.avail_idx + drv.rq_num + 1) & 0xffff)
        return []

    @case("INDIRECT with NEXT", indirect=True)
    def _(drv):
        c = drv.submit(M.attach(1, PARAMS.endpoint_ids[0]))
        d = drv.rq.read_desc(c.head)
        drv.rq.write_desc(c.head, d[0], d[1], d[2] | 1, 0)
        return [c]

    @case("indirect length not a multiple of 16", indirect=True)
    def _(drv):
        c = drv.submit(M.attach(1, PARAMS.endpoint_ids[0]))
        d = drv.rq.read_desc(c.head)
        drv.rq.write_desc(c.head, d[0], d[1] - 4, d[2], 0)
        return [c]

    @case("nested indirect table", indirect=True)
    def _(drv):
        c = drv.submit(M.attach(1, PARAMS.endpoint_ids[0]))
        d = drv.rq.read_desc(c.head)
        drv.rq.write_desc(0, d[0], d[1], 4, 0, table=d[0])     # entry 0 -> INDIRECT
        return [c]

    return cases


#: A mapping that no fatal error may remove: domain 9, one page.
_LIVE = (0x7000 * G, 0x7001 * G - 1, 0x1234 * G)


async def _live_mapping(drv, ep):
    await drv.request(M.attach(9, ep))
    await drv.batch([M.map_(9, *_LIVE)])


async def _expect_fatal(b, drv, chains, what, ep):
    """Ring the requestq's doorbell over a ring the caller broke: DEVICE_NEEDS_RESET and a
    configuration-change interrupt must follow, then no DMA even after another doorbell,
    guest memory unchanged outside the writable buffers and used rings, and the
    :data:`_LIVE` mapping of ``ep`` still translating."""
    dut = b.dut
    before = b.ram.read(0, GUEST_LAYOUT["size"])
    drv.rq.outstanding.clear()
    await b.regs.write32(MMIO.QUEUE_NOTIFY, 0)
    for _ in range(400):
        if await drv.status() & DeviceStatus.DEVICE_NEEDS_RESET:
            break
    else:
        raise AssertionError(f"{what}: no DEVICE_NEEDS_RESET")
    assert int(dut.irq.value) == 1, what
    assert await b.regs.read32(MMIO.INTERRUPT_STATUS) & 2, what
    await b.regs.write32(MMIO.QUEUE_NOTIFY, 0)
    assert await _watch_dma(dut, 100) == 0, f"{what}: DMA after the fatal error"
    _check_memory(before, b.ram.read(0, GUEST_LAYOUT["size"]), _allowed_areas(drv, chains))
    await b.check_lookups(drv, [(ep, _LIVE[0] + 8, True)])
    dut._log.info(f"{what}: DEVICE_NEEDS_RESET, memory intact, mapping kept")


@cocotb.test()
async def bad_rings(dut):
    """Each malformed ring ends in DEVICE_NEEDS_RESET + a configuration-change interrupt,
    no DMA afterwards, guest memory unchanged outside writable buffers and used rings, the
    mapping table untouched; a device reset brings the device back."""
    b, drv = await _bring_up(dut)
    ep = PARAMS.endpoint_ids[-1]
    for name, (need_ind, make) in _bad_cases().items():
        if need_ind and not drv.has(Feature.INDIRECT_DESC):
            continue
        await _live_mapping(drv, ep)
        chains = make(drv)
        await _expect_fatal(b, drv, chains, f"bad ring '{name}'", ep)
        await drv.init()
        await drv.request(M.probe(ep))


@cocotb.test()
async def notify_not_ready(dut):
    """Doorbells of a queue that is not ready, of a queue index that does not exist, and
    before DRIVER_OK, do nothing."""
    b = Bench(dut)
    await b.reset()
    for q in (0, 1, 2, 0xffff):
        await b.regs.write32(MMIO.QUEUE_NOTIFY, q)
    assert await _watch_dma(dut, 100) == 0
    drv = b.driver()
    await drv.init()
    for q in (2, 7, 0xffff):
        await b.regs.write32(MMIO.QUEUE_NOTIFY, q)
    assert await _watch_dma(dut, 100) == 0
    await drv.request(M.probe(PARAMS.endpoint_ids[0]))


@cocotb.test()
async def reset_mid_batch(dut):
    """A device reset while a batch is in flight (memory made slow so that reads are
    outstanding): Status reads 0 only once every AXI transaction of the old epoch has been
    answered, every mapping is gone, and the device works again after re-initialization."""
    b, drv = await _bring_up(dut)
    ep = PARAMS.endpoint_ids[0]
    await drv.request(M.attach(3, ep))
    n = min(PARAMS.entries, 12, len(drv.rq.free) // 2)
    chains = [drv.submit(M.map_(3, i * G, (i + 1) * G - 1, (0x100 + i) * G))
              for i in range(n)]
    undo = _slow_reads(b, 100)
    await drv.kick()
    await b.wait(20)
    assert b.outstanding > 0, "nothing in flight: the reset would not test the drain"
    await drv.reset()                               # polls Status until it reads 0
    assert b.outstanding == 0, "Status read 0 while old-epoch DMA was outstanding"
    undo()
    assert await _watch_dma(dut, 50) == 0
    await drv.init()                                # new model: nothing attached
    denied = await b.check_lookups(drv, [(ep, i * G, False) for i in range(12)])
    assert len(denied) == 12
    await drv.request(M.attach(3, ep))
    await drv.batch([M.map_(3, 0, G - 1, 0x5000 * G)])
    await b.check_lookups(drv, [(ep, 5, True), (ep, G, True)])


@cocotb.test()
async def system_reset(dut):
    """The domain reset (``rst``, held the shortest allowed time, two cycles) after a
    working session resets the core and the engine (each is reset by its own reset
    flip-flop, which follows ``rst``), with no driver action: the mappings are gone and
    FaultDrops reads 0 straight after it; then the device works again from ring index 0."""
    b, drv = await _bring_up(dut)
    ep = PARAMS.endpoint_ids[0]
    await drv.request(M.attach(3, ep))
    await drv.batch([M.map_(3, i * G, (i + 1) * G - 1, (0x200 + i) * G) for i in range(4)])
    await b.check_lookups(drv, [(ep, i * G, True) for i in range(4)])
    n = drv.eq_num + CFG.get("fault_queue_depth", 8) + 3
    for i in range(n):                              # more denials than can be reported
        await b.check_lookups(drv, [(ep, (0x4000 + i) * G, False)])
        await b.wait(40)
    assert await b.regs.read32(MMIO.FAULT_DROPS) == 3
    await b.wait(50)
    await b.reset(cycles=2)
    assert await b.regs.read32(MMIO.FAULT_DROPS) == 0           # the engine was reset
    resps = await b.lookups([(ep, i * G, True) for i in range(4)])
    assert [r["allowed"] for r in resps] == [0] * 4              # the core was reset
    drv = b.driver()
    await drv.init()                                # new model: nothing attached
    await drv.request(M.attach(3, ep))              # served from avail index 0 again
    await drv.batch([M.map_(3, 0, G - 1, 0x6000 * G)])
    await b.check_lookups(drv, [(ep, 5, True), (ep, G, False)])


@cocotb.test()
async def boot_bypass(dut):
    """``bypass`` before and after negotiation: with bypass_init = 1 unattached endpoints
    pass before a driver is there; a driver that accepts BYPASS_CONFIG and writes 0 closes
    it; a driver that does not accept BYPASS_CONFIG gets no bypass."""
    b = Bench(dut)
    await b.reset()
    ep = PARAMS.endpoint_ids[0]
    resps = await b.lookups([(ep, 0x1000, True)])
    assert resps[0]["allowed"] == CFG.get("bypass_init", 0)
    drv = b.driver()
    await drv.init(bypass=0)
    assert len(await b.check_lookups(drv, [(ep, 0x1000, True)])) == 1
    await b.regs.write32(MMIO.CONFIG_BYPASS, 1)
    drv.model.bypass = 1
    assert len(await b.check_lookups(drv, [(ep, 0x1000, True)])) == 0
    await drv.reset()                               # bypass is sticky over device reset
    resps = await b.lookups([(ep, 0x1000, False)])
    assert resps[0]["allowed"] == 1
    old = b.driver(refuse={Feature.BYPASS_CONFIG})  # bypass still 1, but not negotiated
    await old.init()
    assert not old.has(Feature.BYPASS_CONFIG)
    assert len(await b.check_lookups(old, [(ep, 0x1000, True)])) == 1


@cocotb.test()
async def interrupts(dut):
    """Used-buffer interrupts: raised when the driver wants one (avail flags without
    NO_INTERRUPT, or EVENT_IDX's used_event crossed), not otherwise; InterruptACK clears
    the level ``irq``."""
    b, drv = await _bring_up(dut)
    ep = PARAMS.endpoint_ids[0]
    event_idx = drv.has(Feature.EVENT_IDX)

    async def one(want):
        await b.regs.write32(MMIO.INTERRUPT_ACK, 3)
        assert int(dut.irq.value) == 0
        if event_idx:
            # interrupt when the used idx passes used_event: the next element, or never
            nxt = drv.rq.used_idx()
            drv.rq.set_used_event(nxt if want else (nxt - 100) & 0xffff)
        else:
            drv.rq.set_avail_flags(0 if want else 1)
        await drv.request(M.probe(ep))
        await b.wait(20)
        status = await b.regs.read32(MMIO.INTERRUPT_STATUS)
        assert (status & 1) == int(want) and int(dut.irq.value) == int(want), (want, status)

    for want in (True, False, True, False):
        await one(want)
    await b.regs.write32(MMIO.INTERRUPT_ACK, 1)
    assert await b.regs.read32(MMIO.INTERRUPT_STATUS) == 0 and int(dut.irq.value) == 0


def _inject_errors(b, start, end, *, reads=True, writes=True, ram=None):
    """Make the AxiRam (``b.ram``, or ``ram``) answer SLVERR for accesses touching
    ``[start, end)`` (cocotbext-axi turns an exception of ``_read`` / ``_write`` into
    SLVERR). Returns an undo function."""
    ram = b.ram if ram is None else ram
    rd, wr = ram.read_if, ram.write_if
    orig_r, orig_w = rd._read, wr._write

    async def _read(address, length):
        if reads and address < end and start < address + length:
            raise IOError("injected read error")
        return await orig_r(address, length)

    async def _write(address, data):
        if writes and address < end and start < address + len(data):
            raise IOError("injected write error")
        return await orig_w(address, data)

    rd._read, wr._write = _read, _write

    def undo():
        del rd._read, wr._write
    return undo


@cocotb.test()
async def store_bus_error(dut):
    """With a store in external memory: a bus error on a store read sets
    DEVICE_NEEDS_RESET, and nothing read from the failing store is granted (the access is
    denied, not left to retry); a device reset brings the store back, empty."""
    b, drv = await _bring_up(dut)
    if b.store_ram is None:
        dut._log.info("no store in external memory: nothing to check")
        return
    ep = PARAMS.endpoint_ids[0]
    await drv.request(M.attach(2, ep))
    await drv.request(M.map_(2, 0x300 * G, 0x301 * G - 1, 0x5000 * G))
    lo, hi = PARAMS.store_region
    undo = _inject_errors(b, lo, hi + 1, writes=False, ram=b.store_ram)
    (r,) = await b.lookups([(ep, 0x300 * G + 4, 0)])
    assert r["allowed"] == 0 and r["retry"] == 0, r
    assert await drv.status() & DeviceStatus.DEVICE_NEEDS_RESET
    undo()
    await drv.init()                                      # device reset
    assert not await drv.status() & DeviceStatus.DEVICE_NEEDS_RESET
    await drv.request(M.attach(2, ep), timeout=80000)
    await drv.request(M.map_(2, 0x300 * G, 0x301 * G - 1, 0x5000 * G), timeout=80000)
    (r,) = await b.lookups([(ep, 0x300 * G + 4, 0)])
    assert r["allowed"] == 1 and r["phys"] == 0x5000 * G + 4, r


def _slow_reads(b, cycles):
    """Make the AxiRam wait ``cycles`` clock cycles before each word it reads. Returns an
    undo function."""
    rd = b.ram.read_if
    orig = rd._read

    async def _read(address, length):
        await ClockCycles(b.dut.clk, cycles)
        return await orig(address, length)

    rd._read = _read
    return lambda: delattr(rd, "_read")


@cocotb.test()
async def dma_errors(dut):
    """SLVERR on a ring, a descriptor, a request's readable bytes or its writable buffer:
    DEVICE_NEEDS_RESET + interrupt, no DMA after, memory outside writable buffers and used
    rings unchanged, mappings intact; a device reset brings the device back."""
    b, drv = await _bring_up(dut)
    ep = PARAMS.endpoint_ids[-1]
    cases = {
        "available ring": lambda c: (drv.rq.driver + 4, drv.rq.driver + 4 + 2 * drv.rq_num),
        "descriptor": lambda c: (drv.rq.desc + 16 * c.head, drv.rq.desc + 16 * c.head + 16),
        "request bytes": lambda c: (c.readable[0][0], c.readable[0][0] + c.readable[0][1]),
        "writable buffer": lambda c: (c.writable[0][0], c.writable[0][0] + c.writable[0][1]),
    }
    for name, where in cases.items():
        await _live_mapping(drv, ep)
        c = drv.submit(M.map_(9, 0x9000 * G, 0x9001 * G - 1, 0))
        undo = _inject_errors(b, *where(c))
        try:
            await _expect_fatal(b, drv, [c], f"SLVERR on the {name}", ep)
        finally:
            undo()
        await drv.init()
