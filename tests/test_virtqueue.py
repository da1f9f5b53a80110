# amaranth: UnusedElaboratable=no
"""Tests of the split-virtqueue engine (rtl/engine/virtqueue.py) with the real core behind it.

Guest memory is :class:`~viommu.sim.dma_mem.DMAMemory` behind the engine's DMA port; the
driver is :class:`~viommu.sim.vring.SplitVirtqueue`; every answer is checked against
:class:`~viommu.sim.model.DeviceModel` (used length and every byte, and that no byte of
the writable part past the used length changed), and the core's final state against the
model's. Bad rings must end in exactly one ``needs_reset`` pulse, with every changed byte
of memory inside a writable buffer of a chain or the used ring, no write presented from
the ``needs_reset`` cycle on, no further DMA after a doorbell, and a working engine again
after ``clear``.

Randomized tests add random requests and splits (against the model) and random damage to
valid rings (the memory and ``needs_reset`` invariants only). The DMA slave also checks
the stream rules on everything the engine drives.

The simulator of core + engine is built once per configuration and reset between tests.
The 16-bit index wrap is tested with indices starting at 65530 (a test-only elaboration
parameter); the same from 0 needs 65,540 requests (about 13 minutes here) and only runs
with ``VIOMMU_SLOW=1``.
"""

import os
import random
import struct

import pytest

from viommu.rtl.engine.virtqueue import VirtqueueEngine, READ_CAP
from viommu.rtl.core.layouts import Status, FaultReason, FaultFlag, Fault, pack
from viommu.sim.core_bench import CoreBench
from viommu.sim.model import attach, detach, map_, unmap, probe
from viommu.sim.vq_bench import BenchRunner, VQBench, MEMORY_MAP
from viommu.sim.vring import (DESC_F_NEXT, DESC_F_WRITE, DESC_F_INDIRECT,
                              AVAIL_F_NO_INTERRUPT, Chain, ring_sizes)


_RUNNERS = {}


def runner(**kwargs):
    key = tuple(sorted(kwargs.items()))
    if key not in _RUNNERS:
        _RUNNERS[key] = BenchRunner(**kwargs)
    return _RUNNERS[key]


def run(body, *, build=None, **bench_kw):
    """Run ``await body(bench)`` on a freshly reset simulator; returns its result."""
    r = runner(**(build or {}))
    result = {}

    async def testbench(ctx):
        b = VQBench(r.dut, ctx, **bench_kw)
        b.configure()
        await b.tick(2)
        result["value"] = await body(b)

    r.run(testbench)
    return result.get("value")


def core_snapshot(b):
    return CoreBench(b.dut.core, b.ctx).snapshot()


def status_of(chain):
    return chain.written[-4] if chain.used_len >= 4 else None


G = 0x1000


def request_mix(n_maps=12):
    """ATTACH, MAPs, UNMAPs, PROBEs, DETACH and a few answers other than OK."""
    reqs = [attach(1, 0), attach(2, 1)]
    reqs += [map_(1, 0x100000 + 2 * k * G, 0x100000 + (2 * k + 1) * G - 1, 0x4000_0000 + k * G)
             for k in range(n_maps)]
    reqs += [map_(1, 0x100000, 0x100fff, 0),                 # overlap: INVAL
             map_(2, 0x1234, 0x1fff, 0),                     # misaligned: RANGE
             map_(3, 0, 0xfff, 0),                           # no such domain: NOENT
             unmap(1, 0x100000, 0x103fff),                   # removes two mappings: OK
             unmap(1, 0x108000, 0x1087ff),                   # partial: RANGE
             probe(0), probe(7), probe(99),                  # OK, OK, NOENT
             bytes([9]) + bytes(19),                         # unknown type: nothing written
             map_(1, 0, 0xfff, 0)[:20],                      # short: INVAL
             detach(2, 1), detach(2, 1)]                     # OK, INVAL
    return reqs


# --- parameters ------------------------------------------------------------------------------

def test_parameters():
    VirtqueueEngine()
    VirtqueueEngine(width=16, queue_size_max=32768, fault_queue_depth=1)
    for kw in [dict(width=4), dict(width=True), dict(queue_size_max=1),
               dict(queue_size_max=65536), dict(queue_size_max=100),
               dict(fault_queue_depth=0), dict(fault_queue_depth="8")]:
        with pytest.raises(ValueError):
            VirtqueueEngine(**kw)
    assert READ_CAP >= 80


def test_dma_memory_checks_stream_rules():
    """The bench's DMA slave catches a withdrawn valid (so the engine's passes mean
    something)."""
    from amaranth.hdl import Module, Signal
    from amaranth.lib import wiring
    from amaranth.lib.wiring import Out
    from amaranth.sim import Simulator
    from viommu.rtl.bus.dma import DMASignature
    from viommu.sim.dma_mem import DMAMemory, ProtocolError

    class Port(wiring.Component):
        dma: Out(DMASignature(width=8))

        def elaborate(self, platform):
            m = Module()
            m.d.sync += Signal().eq(1)      # a sync domain to tick
            return m

    dut = Port()
    mem = DMAMemory(4096, stall=0.9, seed=1)
    caught = []

    async def testbench(ctx):
        mem.attach(dut.dma)
        ctx.set(dut.dma.rd_cmd.payload.addr, 16)
        ctx.set(dut.dma.rd_cmd.payload.len, 8)
        for _ in range(20):
            ctx.set(dut.dma.rd_cmd.valid, 1)
            mem.pre(ctx)
            await ctx.tick()
            mem.post()
            if not mem.reads:           # not taken: withdraw it
                ctx.set(dut.dma.rd_cmd.valid, 0)
                try:
                    mem.pre(ctx)
                except ProtocolError as e:
                    caught.append(e)
                    return
                await ctx.tick()
                mem.post()
            mem.reads.clear()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    assert caught


# --- requests --------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["direct", "indirect", "scattered"])
def test_requests(layout):
    """The mix through 2-descriptor chains, 2-entry indirect tables, or chains whose
    descriptors are scattered over the table (every descriptor a dependent read)."""
    async def body(b):
        chains = [b.submit(r, scatter=layout == "scattered") for r in request_mix()]
        b.notify(0)
        await b.complete(chains)
        st = [status_of(c) for c in chains]
        n = 12
        assert st[:2 + n] == [Status.OK] * (2 + n)
        assert st[2 + n:2 + n + 5] == [Status.INVAL, Status.RANGE, Status.NOENT, Status.OK,
                                       Status.RANGE]
        assert st[2 + n + 5:2 + n + 8] == [Status.OK, Status.OK, Status.NOENT]
        assert chains[2 + n + 5].used_len == b.dut.params.probe_size + 4
        assert chains[2 + n + 8].used_len == 0
        assert st[-3:] == [Status.INVAL, Status.OK, Status.INVAL]
        assert core_snapshot(b) == b.model.snapshot()
        assert b.irqs and not b.needs_reset
        assert b.rq.used_flags() == 0
    run(body, indirect=layout == "indirect")


def _mixed_chain(b, readable_parts, writable_sizes):
    """Direct readable descriptors, then an INDIRECT descriptor whose table holds the
    writable part (virtio allows an indirect descriptor to end a direct chain)."""
    vq, alloc = b.rq, b.alloc
    n_direct = len(readable_parts) + 1
    descs = vq.take_descs(n_direct, scatter=False)
    chain_readable, chain_writable, allocs = [], [], []
    for i, part in enumerate(readable_parts):
        addr = alloc.alloc(len(part))
        allocs.append(addr)
        b.mem.write(addr, part)
        chain_readable.append((addr, len(part)))
        vq.write_desc(descs[i], addr, len(part), DESC_F_NEXT, descs[i + 1])
    table = alloc.alloc(16 * len(writable_sizes), align=16)
    allocs.append(table)
    for i, n in enumerate(writable_sizes):
        addr = alloc.alloc(n)
        allocs.append(addr)
        b.mem.write(addr, b"\xaa" * n)
        chain_writable.append((addr, n))
        last = i == len(writable_sizes) - 1
        vq.write_desc(i, addr, n, DESC_F_WRITE | (0 if last else DESC_F_NEXT),
                      0 if last else i + 1, table=table)
    vq.write_desc(descs[-1], table, 16 * len(writable_sizes), DESC_F_INDIRECT | DESC_F_WRITE)
    readable = b"".join(readable_parts)
    chain = Chain(head=descs[0], descs=descs, readable=chain_readable,
                  writable=chain_writable, table=table, allocs=allocs,
                  tag=b.model.execute(readable, sum(writable_sizes)))
    vq.outstanding[chain.head] = chain
    vq.put_avail(chain.head)
    return chain


@pytest.mark.parametrize("indirect", [False, True])
def test_odd_splits(indirect):
    """Readable and writable parts split at odd byte boundaries, zero-length descriptors
    everywhere, more writable descriptors than the engine records per request, readable
    parts longer than the engine streams, empty parts."""
    async def body(b):
        ps = b.dut.params.probe_size
        sub = b.submit
        m1 = map_(1, 0x10000, 0x1ffff, 0x80000)
        chains = [
            sub(attach(1, 0), split=[1, 0, 3, 0, 16], wsplit=[1, 0, 3]),
            sub(m1, split=[1, 3, 32], wsplit=[1, 3]),
            sub(m1, split=[0, 1, 0, 3, 0, 32, 0], wsplit=[0, 1, 0, 3, 0]),    # INVAL
            sub(map_(1, 0x20000, 0x20fff, 0), split=[7, 9, 20], wsplit=[2, 2]),
            sub(map_(1, 0x30000, 0x30fff, 0) + bytes(range(200)), split=[100, 136]),
            sub(map_(1, 0x40000, 0x40fff, 0) + bytes(READ_CAP), split=[1] * 40 + [124]),
            sub(probe(0), split=[5, 0, 60, 7], wsplit=[1, 2, 3, 4, 5, 6, 7, ps + 4 - 28]),
            sub(probe(0), wsplit=[1] * (ps + 4)),
            sub(probe(0), wlen=ps + 4 + 13, wsplit=[ps, 0, 17]),
            sub(probe(0), wlen=9, wsplit=[4, 5]),                 # INVAL, answer shrinks
            sub(probe(0)[:40], wsplit=[3, ps + 1]),               # short: INVAL
            sub(b"", wlen=4),                                     # empty: nothing written
            sub(bytes([9]), wlen=0),                              # unknown, no writable part
            sub(unmap(1, 0x10000, 0x1ffff), split=[2, 2, 2, 2, 2, 2, 2, 2, 12],
                wsplit=[3, 1]),
        ]
        if indirect:
            chains.append(_mixed_chain(b, [map_(1, 0x50000, 0x50fff, 0)[:5],
                                           map_(1, 0x50000, 0x50fff, 0)[5:]], [1, 0, 3]))
        b.notify(0)
        await b.complete(chains)
        st = [status_of(c) for c in chains]
        assert st[:4] == [Status.OK, Status.OK, Status.INVAL, Status.OK]
        assert st[4:6] == [Status.OK, Status.OK]
        assert chains[6].used_len == chains[7].used_len == chains[8].used_len == ps + 4
        assert st[9] == st[10] == Status.INVAL and chains[9].used_len == 9
        assert chains[11].used_len == chains[12].used_len == 0
        assert st[13] == Status.OK
        assert core_snapshot(b) == b.model.snapshot()
        assert not b.needs_reset
    run(body, indirect=indirect)


def test_queue_wraparound():
    """Several times around a ring of 8, batches of every size, with the core's answers
    checked throughout."""
    async def body(b):
        chains = [b.submit(attach(1, 0))]
        b.notify(0)
        await b.complete(chains)
        k = 0
        for batch in [1, 4, 3, 4, 2, 4, 4, 1, 4, 3, 4, 4]:
            chains = []
            for _ in range(batch):
                j = k // 2
                r = (map_(1, j * G, j * G + G - 1, 0x1000000 + j * G) if k % 2 == 0 else
                     unmap(1, j * G, j * G + G - 1))
                chains.append(b.submit(r))
                k += 1
            b.notify(0)
            await b.complete(chains)
            assert all(status_of(c) == Status.OK for c in chains)
        assert b.rq.used_idx() == k + 1 and k + 1 > 4 * 8
        assert core_snapshot(b) == b.model.snapshot()
    run(body, rq_num=8)


def test_queue_wraparound_indirect():
    async def body(b):
        k = 0
        chains = [b.submit(attach(1, 0))]
        for batch in [7, 8, 8, 5, 8, 8]:
            for _ in range(batch):
                j = k // 2
                r = (map_(1, j * G, j * G + G - 1, 0x1000000 + j * G) if k % 2 == 0 else
                     unmap(1, j * G, j * G + G - 1))
                chains.append(b.submit(r))
                k += 1
            b.notify(0)
            await b.complete(chains)
            assert all(status_of(c) == Status.OK for c in chains)
            chains = []
        assert b.rq.used_idx() == k + 1 and k + 1 > 5 * 8
        assert core_snapshot(b) == b.model.snapshot()
    run(body, rq_num=8, indirect=True)


def test_index_wrap_16bit():
    """Every 16-bit index across 65535 -> 0: avail idx / last_avail, used idx, the
    EVENT_IDX comparisons and avail_event, on both queues. (Indices restart at 0 after a
    device reset; a test-only elaboration parameter starts them at 65530 instead.)"""
    base = 65530

    async def body(b):
        rq, eq = b.rq, b.eq
        assert rq.used_idx() == base
        # used_event = 0: exactly one interrupt, when used idx moves past 0.
        chains = [b.submit(attach(1, 0))]
        b.notify(0)
        await b.complete(chains)
        k = 0
        for batch in [3, 4, 4, 2]:
            chains = []
            for _ in range(batch):
                j = k // 2
                r = (map_(1, j * G, j * G + G - 1, 0x1000000 + j * G) if k % 2 == 0 else
                     unmap(1, j * G, j * G + G - 1))
                chains.append(b.submit(r))
                k += 1
            b.notify(0)
            await b.complete(chains)
            assert all(status_of(c) == Status.OK for c in chains)
        await b.tick(60)
        assert rq.used_idx() == (base + 1 + k) & 0xffff == 8
        assert len(b.irqs) == 1
        assert rq.avail_event() == 8
        # eventq: 4 + 4 reports across the wrap
        for rnd in range(2):
            for _ in range(4):
                eq.add([], [24])
            b.notify(1)
            for i in range(4):
                b.fault(FaultReason.MAPPING, FaultFlag.WRITE, rnd * 4 + i, 0x1000 * i)
                await b.tick()
            want = (base + 4 * (rnd + 1)) & 0xffff
            await b.run_until(lambda: eq.used_idx() == want, 3000)
            got = eq.collect()
            assert [c.written for c in got] == [
                _fault_bytes(FaultReason.MAPPING, FaultFlag.WRITE, rnd * 4 + i, 0x1000 * i)
                for i in range(4)]
        assert eq.used_idx() == 2 and not b.needs_reset
    run(body, build=dict(index_base=base), rq_num=8, eq_num=8, event_idx=True)


@pytest.mark.skipif(not os.environ.get("VIOMMU_SLOW"), reason="set VIOMMU_SLOW=1: 65,540 "
                    "requests take about 13 minutes in Amaranth's simulator")
def test_index_wrap_16bit_from_reset():
    """The same wrap from index 0, the honest way: 65,540 requests."""
    async def body(b):
        done = 0
        while done < 65540:
            chains = [b.submit(bytes([9]), wlen=0) for _ in range(128)]
            b.notify(0)
            await b.complete(chains, timeout=100000)
            done += 128
        chains = [b.submit(attach(1, 0)), b.submit(map_(1, 0, G - 1, 0))]
        b.notify(0)
        await b.complete(chains)
        assert b.rq.used_idx() == (done + 2) & 0xffff
    run(body, rq_num=256, indirect=True)


def test_random_stalls_and_latency():
    """The mix and odd splits with random stalls on every DMA stream and some latency."""
    async def body(b):
        chains = [b.submit(r, split=[1, len(r) - 1] if len(r) > 1 else None)
                  for r in request_mix(8)]
        chains += [b.submit(probe(0), wsplit=[3, 5, b.dut.params.probe_size - 4])]
        b.notify(0)
        await b.complete(chains, timeout=20000)
        assert core_snapshot(b) == b.model.snapshot()
        assert not b.needs_reset
    run(body, stall=0.3, read_latency=7, write_latency=4, seed=5)


def test_width16():
    """16-byte DMA beats: direct, indirect and odd splits, with stalls."""
    async def body(b):
        ps = b.dut.params.probe_size
        chains = [b.submit(r, indirect=False) for r in request_mix(6)]
        chains += [b.submit(r) for r in request_mix(4)[2:]]
        chains += [b.submit(map_(1, 0x900000, 0x900fff, 0), split=[1, 0, 3, 32],
                            wsplit=[1, 3]),
                   b.submit(probe(0), split=[17, 55], wsplit=[1, 2, 30, ps - 29])]
        b.notify(0)
        await b.complete(chains, timeout=20000)
        assert core_snapshot(b) == b.model.snapshot()
        assert not b.needs_reset
    run(body, build=dict(width=16), indirect=True, stall=0.2, read_latency=3, seed=3)


# --- notifications -----------------------------------------------------------------------------

def test_doorbell_ignored_unless_ready_and_enabled():
    async def body(b):
        chains = [b.submit(attach(1, 0))]
        b.configure(ready=(0, 1))
        b.notify(0)
        await b.tick(60)
        b.configure(ready=(1, 1), enable=0)
        b.notify(0)
        await b.tick(60)
        b.configure(ready=(1, 1), enable=1)
        b.notify(1)                 # the other queue's doorbell
        b.notify(2)                 # no such queue (written over the previous one)
        await b.tick(60)
        assert b.mem.reads == [] and b.mem.writes == []
        b.notify(0)
        await b.complete(chains)
    run(body)


def test_no_interrupt_flag():
    async def body(b):
        chains = [b.submit(attach(1, 0))]
        b.rq.set_avail_flags(AVAIL_F_NO_INTERRUPT)
        chains += [b.submit(map_(1, k * G, k * G + G - 1, 0)) for k in range(6)]
        b.notify(0)
        await b.complete(chains)
        await b.tick(40)
        assert b.irqs == []
        b.rq.set_avail_flags(0)
        chains = [b.submit(map_(1, k * G, k * G + G - 1, 0)) for k in range(6, 9)]
        b.notify(0)
        await b.complete(chains)
        await b.tick(40)
        assert b.irqs
        assert b.rq.avail_event() == 0 and b.rq.used_flags() == 0
    run(body)


def test_event_idx():
    async def body(b):
        vq = b.rq
        # Interrupt wanted once used idx passes 2 (entry 3 used), whatever the coalescing.
        vq.set_used_event(2)
        chains = [b.submit(attach(1, 0))]
        chains += [b.submit(map_(1, k * G, k * G + G - 1, 0)) for k in range(5)]
        b.notify(0)
        await b.complete(chains)
        await b.tick(60)
        assert len(b.irqs) == 1
        # Idle: avail_event tells the driver which avail idx to notify at.
        assert vq.avail_event() == 6 and vq.used_flags() == 0
        # used_event far ahead: no interrupt.
        vq.set_used_event(1000)
        chains = [b.submit(map_(1, k * G, k * G + G - 1, 0)) for k in range(5, 9)]
        b.notify(0)
        await b.complete(chains)
        await b.tick(60)
        assert len(b.irqs) == 1 and vq.avail_event() == 10
        # used_event = the current used idx: the next used buffer interrupts.
        vq.set_used_event(10)
        chains = [b.submit(map_(1, 9 * G, 10 * G - 1, 0))]
        b.notify(0)
        await b.complete(chains)
        await b.tick(60)
        assert len(b.irqs) == 2
        assert vq.avail_event() == 11
    run(body, event_idx=True)


def test_event_idx_race_closed():
    """A buffer published while the engine writes avail_event is seen without a doorbell
    (the engine re-reads avail idx after avail_event is visible)."""
    async def body(b):
        vq = b.rq
        chains = [b.submit(attach(1, 0))]
        b.notify(0)
        # Publish the next buffer, without a doorbell, as soon as the engine writes
        # avail_event (before the write completes).
        ae = vq.device + 4 + 8 * vq.num
        await b.run_until(lambda: any(w.addr == ae for w in b.mem.writes) or
                          b.mem._wq and b.mem._wq[0][0] == ae, 2000)
        chains.append(b.submit(map_(1, 0, G - 1, 0)))
        await b.complete(chains)
    run(body, event_idx=True, write_latency=20)


# --- eventq ----------------------------------------------------------------------------------

def _fault_bytes(reason, flags, endpoint, address):
    return pack(Fault, reason=reason, flags=flags, endpoint=endpoint, address=address)


def test_eventq_reports_and_drops():
    async def body(b):
        eq = b.eq
        for wsplit in ([8, 0, 8, 8], [1, 23], [0, 24, 0], [40]):   # split, padded, too big
            eq.add([], wsplit)
        b.notify(1)
        await b.tick(5)
        reports = [(FaultReason.MAPPING, FaultFlag.READ | FaultFlag.ADDRESS, 3, 0x1234_5000),
                   (FaultReason.DOMAIN, FaultFlag.WRITE | FaultFlag.ADDRESS, 7, 0xffff_ffff_f000),
                   (FaultReason.UNKNOWN, FaultFlag.WRITE, 0xdead, 1 << 63)]
        # requests run at the same time
        chains = [b.submit(attach(1, 0))]
        chains += [b.submit(map_(1, k * G, k * G + G - 1, 0)) for k in range(40)]
        b.notify(0)
        for r in reports:
            b.fault(*r)
            await b.tick()
        await b.run_until(lambda: eq.used_idx() == 3, 3000)
        # the event reports did not wait for the whole request batch
        assert b.rq.used_idx() < len(chains)
        done = eq.collect()
        for c, r in zip(done, reports):
            assert c.used_len == 24 and c.written == _fault_bytes(*r)
        await b.complete(chains)
        # One buffer left: the next report uses it; then 8 wait in the FIFO, 4 are dropped.
        more = [(FaultReason.MAPPING, FaultFlag.READ, 100 + i, i * G) for i in range(13)]
        b.fault(*more[0])
        await b.run_until(lambda: eq.used_idx() == 4, 3000)
        for r in more[1:]:
            b.fault(*r)
            await b.tick()
        await b.tick(50)
        assert b.ctx.get(b.eng.fault_drops) == 4
        (c,) = eq.collect()
        assert c.used_len == 24 and c.writable_data[:24] == _fault_bytes(*more[0])
        assert c.writable_data[24:] == b"\xaa" * 16
        # Post buffers: the 8 queued reports come out, in order.
        for _ in range(8):
            eq.add([], [24])
        b.notify(1)
        await b.run_until(lambda: eq.used_idx() == 12, 5000)
        done = eq.collect()
        assert [c.written for c in done] == [_fault_bytes(*r) for r in more[1:9]]
        assert b.ctx.get(b.eng.fault_drops) == 4
        assert not b.needs_reset
    run(body, eq_num=16)


def test_eventq_event_idx():
    """With EVENT_IDX the engine writes the eventq's avail_event before waiting for a
    buffer, and finds the buffer when the driver notifies."""
    async def body(b):
        eq = b.eq
        b.fault(FaultReason.MAPPING, FaultFlag.READ, 1, 0x5000)
        await b.tick(80)
        assert eq.avail_event() == 0 and eq.used_idx() == 0
        ae_writes = [w for w in b.mem.writes if w.addr == eq.device + 4 + 8 * eq.num]
        assert ae_writes
        eq.add([], [24])
        b.notify(1)
        await b.run_until(lambda: eq.used_idx() == 1, 2000)
        (c,) = eq.collect()
        assert c.written == _fault_bytes(FaultReason.MAPPING, FaultFlag.READ, 1, 0x5000)
    run(body, event_idx=True)


# --- clear ---------------------------------------------------------------------------------

def test_clear_mid_flight():
    async def body(b):
        chains = [b.submit(attach(1, 0))]
        chains += [b.submit(map_(1, k * G, k * G + G - 1, 0)) for k in range(40)]
        b.notify(0)
        await b.run_until(lambda: b.rq.used_idx() >= 1, 2000)
        await b.tick(30)
        assert b.rq.used_idx() < len(chains)
        await b.clear()
        # A transport completes the reset once the engine's DMA has drained.
        await b.run_until(lambda: not b.ctx.get(b.eng.dma_busy), 2000)
        n_writes = len(b.mem.writes)
        await b.tick(20)
        assert len(b.mem.writes) == n_writes
        b.alloc.__init__(*MEMORY_MAP["buffers"])
        b.rq.reset()
        b.eq.reset()
        b.configure()
        chains = [b.submit(attach(1, 0))] + [b.submit(map_(1, k * G, k * G + G - 1, 0))
                                             for k in range(5)]
        b.notify(0)
        await b.complete(chains)
        assert b.rq.used_idx() == 6
        assert core_snapshot(b) == b.model.snapshot()
    run(body, read_latency=30, write_latency=10)


# --- bad input -------------------------------------------------------------------------------

BAD = {}


def bad(name, **bench_kw):
    def register(setup):
        BAD[name] = (setup, bench_kw)
        return setup
    return register


def _good(b, n=2):
    return [b.submit(attach(1, 0))] + [b.submit(map_(1, k * G, k * G + G - 1, 0))
                                       for k in range(n - 1)]


@bad("head_out_of_range")
def _(b):
    chains = _good(b)
    b.rq.put_avail(b.rq.num + 3)
    b.notify(0)
    return chains


@bad("next_out_of_range")
def _(b):
    chains = _good(b)
    c = b.submit(map_(1, 0x80000, 0x80fff, 0))
    a, n, fl, _nx = b.rq.read_desc(c.head)
    b.rq.write_desc(c.head, a, n, fl, b.rq.num + 1)
    b.notify(0)
    return chains + [c]


@bad("loop")
def _(b):
    chains = _good(b)
    c = b.submit(map_(1, 0x80000, 0x80fff, 0), split=[20, 16])
    d0, d1 = c.descs[0], c.descs[1]
    a, n, fl, _ = b.rq.read_desc(d1)
    b.rq.write_desc(d1, a, n, DESC_F_NEXT, d0)       # readable, back to the head
    b.notify(0)
    return chains + [c]


@bad("loop_in_indirect_table", indirect=True)
def _(b):
    c = b.submit(map_(1, 0x80000, 0x80fff, 0), split=[20, 16])
    a, n, fl, _ = b.rq.read_desc(1, table=c.table)
    b.rq.write_desc(1, a, n, DESC_F_NEXT, 0, table=c.table)
    b.notify(0)
    return [c]


@bad("readable_after_writable")
def _(b):
    chains = _good(b)
    c = b.submit(map_(1, 0x80000, 0x80fff, 0), split=[20, 16], wsplit=[4])
    # reorder: writable first, then the readable pieces
    (r0, r1), (w,) = c.readable, c.writable
    d = c.descs
    b.rq.write_desc(d[0], w[0], w[1], DESC_F_WRITE | DESC_F_NEXT, d[1])
    b.rq.write_desc(d[1], r0[0], r0[1], DESC_F_NEXT, d[2])
    b.rq.write_desc(d[2], r1[0], r1[1], 0, 0)
    b.notify(0)
    return chains + [c]


@bad("indirect_with_next", indirect=True)
def _(b):
    chains = _good(b)
    c = b.submit(map_(1, 0x80000, 0x80fff, 0))
    a, n, fl, _ = b.rq.read_desc(c.head)
    b.rq.write_desc(c.head, a, n, fl | DESC_F_NEXT, (c.head + 1) % b.rq.num)
    b.notify(0)
    return chains + [c]


@bad("nested_indirect", indirect=True)
def _(b):
    c = b.submit(map_(1, 0x80000, 0x80fff, 0))
    inner = b.submit(attach(1, 0))       # its table is a valid table to point at
    b.rq.write_desc(1, inner.table, 32, DESC_F_INDIRECT, 0, table=c.table)
    a, n, fl, nx = b.rq.read_desc(0, table=c.table)
    b.rq.write_desc(0, a, n, fl | DESC_F_NEXT, 1, table=c.table)
    b.notify(0)
    return [c, inner]


@bad("indirect_not_negotiated")
def _(b):
    chains = _good(b)
    c = b.submit(map_(1, 0x80000, 0x80fff, 0), indirect=True)
    b.notify(0)
    return chains + [c]


@bad("indirect_len_not_multiple_of_16", indirect=True)
def _(b):
    c = b.submit(map_(1, 0x80000, 0x80fff, 0))
    a, n, fl, nx = b.rq.read_desc(c.head)
    b.rq.write_desc(c.head, a, 40, fl, nx)
    b.notify(0)
    return [c]


@bad("indirect_len_zero", indirect=True)
def _(b):
    chains = _good(b)
    c = b.submit(map_(1, 0x80000, 0x80fff, 0))
    a, n, fl, nx = b.rq.read_desc(c.head)
    b.rq.write_desc(c.head, a, 0, fl, nx)
    b.notify(0)
    return chains + [c]


@bad("indirect_next_out_of_range", indirect=True)
def _(b):
    c = b.submit(map_(1, 0x80000, 0x80fff, 0))
    a, n, fl, nx = b.rq.read_desc(0, table=c.table)
    b.rq.write_desc(0, a, n, fl, 2, table=c.table)    # a table of 2 entries
    b.notify(0)
    return [c]


@bad("writable_too_short")
def _(b):
    chains = _good(b)
    c = b.submit(map_(1, 0x80000, 0x80fff, 0), wlen=3, wsplit=[1, 2])
    b.notify(0)
    return chains + [c]


@bad("no_writable_part")
def _(b):
    chains = _good(b)
    c = b.submit(map_(1, 0x80000, 0x80fff, 0), wlen=0)
    b.notify(0)
    return chains + [c]


@bad("probe_writable_too_short_many_descriptors")
def _(b):
    chains = _good(b)
    c = b.submit(probe(0), wlen=3, wsplit=[1, 0, 1, 1])
    b.notify(0)
    return chains + [c]


@bad("avail_idx_jump")
def _(b):
    chains = _good(b, 3)
    b.rq.publish(b.rq.num + 1)
    b.notify(0)
    return chains


@bad("queue_size_not_power_of_two")
def _(b):
    chains = _good(b)
    b.ctx.set(b.eng.queues[0].num, 12)
    b.notify(0)
    return chains


@bad("queue_size_above_max")
def _(b):
    chains = _good(b)
    b.ctx.set(b.eng.queues[0].num, 512)
    b.notify(0)
    return chains


@bad("eventq_buffer_too_short")
def _(b):
    c = b.eq.add([], [8, 8])
    b.notify(1)
    b.fault(FaultReason.MAPPING, FaultFlag.READ, 1, 0)
    return [c]


@bad("eventq_readable_after_writable")
def _(b):
    c = b.eq.add([], [24])
    a, n, fl, nx = b.eq.read_desc(c.head)
    extra = b.eq.take_descs(1, False)[0]
    b.eq.write_desc(c.head, a, n, fl | DESC_F_NEXT, extra)
    b.eq.write_desc(extra, a, 8, 0, 0)
    b.notify(1)
    b.fault(FaultReason.MAPPING, FaultFlag.READ, 1, 0)
    return [c]


@bad("eventq_avail_idx_jump")
def _(b):
    c = b.eq.add([], [24])
    b.eq.publish(b.eq.num + 2)
    b.notify(1)
    b.fault(FaultReason.MAPPING, FaultFlag.READ, 1, 0)
    return [c]


@bad("read_error_descriptor_table")
def _(b):
    chains = _good(b)
    b.mem.add_error(b.rq.desc, b.rq.desc + 16 * b.rq.num)
    b.notify(0)
    return chains


@bad("read_error_avail_ring")
def _(b):
    chains = _good(b)
    b.mem.add_error(b.rq.driver + 4, b.rq.driver + 6)
    b.notify(0)
    return chains


@bad("read_error_payload")
def _(b):
    chains = _good(b)
    c = b.submit(map_(1, 0x80000, 0x80fff, 0), split=[3, 33])
    b.mem.add_error(c.readable[1][0] + 30, c.readable[1][0] + 31)
    b.notify(0)
    return chains + [c]


@bad("write_error_buffer")
def _(b):
    chains = _good(b)
    c = b.submit(map_(1, 0x80000, 0x80fff, 0))
    b.mem.add_error(c.writable[0][0], c.writable[0][0] + 4, reads=False)
    b.notify(0)
    return chains + [c]


@bad("write_error_used_ring")
def _(b):
    chains = _good(b)
    b.mem.add_error(b.rq.device + 4 + 8, b.rq.device + 4 + 16, reads=False)
    b.notify(0)
    return chains


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input(case):
    setup, kw = BAD[case]

    async def body(b):
        chains = setup(b)
        before = b.mem.snapshot()
        await b.run_until(lambda: b.needs_reset, 3000, "needs_reset")
        nr = b.needs_reset[0]
        await b.tick(200)
        assert b.needs_reset == [nr], "needs_reset must pulse once"
        # Only writable buffers of the chains and the used rings may have changed.
        allowed = bytearray(len(before))
        base = b.mem.base
        for c in chains:
            for a, n in c.writable:
                if n:
                    allowed[a - base:a - base + n] = b"\x01" * n
        for vq in (b.rq, b.eq):
            u = ring_sizes(vq.num)[2]
            allowed[vq.device - base:vq.device - base + u] = b"\x01" * u
        after = b.mem.snapshot()
        bad_bytes = [hex(base + i) for i in range(len(before))
                     if before[i] != after[i] and not allowed[i]]
        assert not bad_bytes, f"bytes changed outside writable buffers: {bad_bytes[:8]}"
        for w in b.mem.writes:
            assert w.presented < nr, f"write to {w.addr:#x} presented after needs_reset"
            for i in range(len(w.data)):
                assert allowed[w.addr + i - base], f"write to {w.addr + i:#x}"
        # Dead until clear: a doorbell does nothing.
        n_reads, n_writes = len(b.mem.reads), len(b.mem.writes)
        b.notify(0)
        b.notify(1)
        await b.tick(50)
        assert (len(b.mem.reads), len(b.mem.writes)) == (n_reads, n_writes)
        # After clear the engine works again.
        await b.clear()
        await b.run_until(lambda: not b.ctx.get(b.eng.dma_busy), 2000)
        b.mem.clear_errors()
        b.alloc.__init__(*MEMORY_MAP["buffers"])
        b.rq.reset()
        b.eq.reset()
        b.configure()
        chains = _good(b, 3)
        b.notify(0)
        await b.complete(chains)
        assert b.needs_reset == [nr]
    run(body, **kw)


# --- performance ---------------------------------------------------------------------------

@pytest.mark.parametrize("latency,indirect", [(1, False), (1, True), (100, False),
                                              (100, True)])
def test_map_batch_cycles(latency, indirect):
    """The issue's targets, on a 16-entry core (``viommu bench`` measures with 129 entries,
    so every MAP of the batch succeeds): at most 24 cycles per MAP at steady state (twice
    that with 100 cycles of read latency). Every answer is checked against the model."""
    from viommu.sim.perf import measure_engine
    from viommu.rtl.core.params import CoreParams
    r = measure_engine(read_latency=latency, indirect=indirect, params=CoreParams(entries=16))
    print(f"\nlatency {latency}, {'indirect' if indirect else 'direct'}: {r}")
    assert r["steady"] <= (24 if latency <= 1 else 48)
    # a lone MAP: the dependent reads (avail idx, ring entry, descriptor[, indirect
    # table], request bytes), the core, the answer, the used element and the used idx.
    # The target is reads * latency + 32; these are the exact figures measured.
    reads = 5 if indirect else 4
    assert r["lone"] == reads * latency + (32 if indirect else 30)


@pytest.mark.parametrize("indirect", [False, True])
def test_timeline_agrees_with_the_bench(indirect):
    """``python -m viommu.sim.vq_timeline`` traces the same lone MAP the bench measures:
    it ends on the used idx write at the bench's cycle, after the dependent reads."""
    from viommu.sim.vq_timeline import timeline
    lines = []
    t = timeline(read_latency=1, indirect=indirect, out=lines.append)
    assert t == (5 + 32 if indirect else 4 + 30)
    text = "\n".join(lines)
    assert text.count("RD_CMD") >= (5 if indirect else 4)
    assert "WR_RESP" in text


# --- randomized ----------------------------------------------------------------------------

def _random_request(rng, params):
    """A random request and a writable size the core's answer fits in."""
    ps = params.probe_size
    kind = rng.randrange(8)
    dom, ep = rng.randrange(1, 4), rng.randrange(10)
    page = lambda: rng.randrange(64) * G
    if kind == 0:
        r = attach(dom, ep, flags=rng.choice([0, 0, 0, 1, 2]))
    elif kind == 1:
        r = detach(dom, ep)
    elif kind in (2, 3):
        start = page()
        r = map_(dom, start, start + rng.randrange(1, 4) * G - 1, page(),
                 rng.choice([1, 2, 3, 3, 4, 7]))
    elif kind == 4:
        start = page()
        r = unmap(dom, start, start + rng.randrange(1, 8) * G - 1)
    elif kind == 5:
        r = probe(ep)
    elif kind == 6:
        r = bytes([rng.randrange(256)]) + bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
    else:
        r = map_(dom, page(), page() + G - 1, page())[:rng.randrange(1, 36)]
    r += bytes(rng.randrange(256) for _ in range(rng.choice([0, 0, 0, 3, 60, 150])))
    if r[0] == 5:
        wlen = rng.choice([ps + 4, ps + 4, 4, 9, ps + 20])
    elif 1 <= r[0] <= 4:
        wlen = rng.choice([4, 4, 4, 5, 12])
    else:
        wlen = rng.choice([0, 4, 7])
    return r, wlen


def _random_split(rng, total, pieces_max):
    """``total`` bytes in 1..pieces_max pieces, zero-length ones sprinkled in."""
    cuts = sorted(rng.randrange(total + 1) for _ in range(rng.randrange(pieces_max)))
    sizes = [b - a for a, b in zip([0] + cuts, cuts + [total])]
    for _ in range(rng.choice([0, 0, 1, 2])):
        sizes.insert(rng.randrange(len(sizes) + 1), 0)
    return sizes


def _submit_random(b, rng):
    r, wlen = _random_request(rng, b.dut.params)
    split = _random_split(rng, len(r), 4)
    wsplit = _random_split(rng, wlen, 4) if wlen else []
    return b.submit(r, wlen, split=split, wsplit=wsplit,
                    indirect=b.indirect and rng.random() < 0.5,
                    scatter=rng.random() < 0.3)


@pytest.mark.parametrize("seed", range(3))
def test_random_requests(seed):
    """Random requests (valid, invalid, truncated, unknown, with trailing bytes), split
    at random with zero-length descriptors, direct / indirect / scattered, random DMA
    timing; every answer and the final state against the model."""
    rng = random.Random(seed)

    async def body(b):
        for _ in range(3):
            chains = [_submit_random(b, rng) for _ in range(rng.randrange(1, 24))]
            b.notify(0)
            await b.complete(chains, timeout=30000)
        assert core_snapshot(b) == b.model.snapshot()
        assert not b.needs_reset
    run(body, indirect=True, stall=[0, 0.25, 0.1][seed], read_latency=[1, 4, 40][seed],
        write_latency=[1, 9, 2][seed], seed=seed)


def _writable_areas(snapshot, base, vq, indirect_ok=True):
    """Byte mask of every buffer the descriptors of ``vq`` (as in ``snapshot``) offer for
    writing, directly or through one level of indirect table."""
    allowed = set()

    def desc(table, i):
        o = table + 16 * i - base
        return struct.unpack("<QIHH", snapshot[o:o + 16])

    def in_mem(a, n):
        return base <= a and a + n <= base + len(snapshot)

    for i in range(vq.num):
        addr, n, fl, _ = desc(vq.desc, i)
        if fl & DESC_F_INDIRECT:
            if indirect_ok and in_mem(addr, n):
                for j in range(min(n // 16, 4096)):
                    a2, n2, f2, _ = desc(addr, j)
                    if f2 & DESC_F_WRITE and not f2 & DESC_F_INDIRECT:
                        allowed.add((a2, n2))
        elif fl & DESC_F_WRITE:
            allowed.add((addr, n))
    return allowed


@pytest.mark.parametrize("seed", range(4))
def test_corrupted_rings(seed):
    """Valid batches with random damage (flags, next, len, addr of a descriptor, a ring
    entry, avail idx): the engine either completes every available buffer or pulses
    needs_reset, never hangs, and never writes outside a buffer some descriptor offers
    for writing or the used ring; after needs_reset it writes nothing. Then clear."""
    corruption_campaign(seed, rounds=5, read_latency=[1, 3, 20, 1][seed],
                        stall=[0, 0.2, 0, 0.3][seed])


def corruption_campaign(seed, *, rounds, read_latency, stall):
    rng = random.Random(1000 + seed)

    async def body(b):
        vq = b.rq
        for rnd in range(rounds):
            chains = [_submit_random(b, rng) for _ in range(rng.randrange(1, 8))]
            descs = [(None, d) for c in chains for d in c.descs]
            descs += [(c.table, j) for c in chains if c.table is not None
                      for j in range(len(c.readable) + len(c.writable))]
            for _ in range(rng.randrange(1, 3)):
                what = rng.randrange(7)
                table, i = rng.choice(descs)
                addr, n, fl, nx = vq.read_desc(i, table=table)
                if what == 0:
                    fl ^= rng.choice([DESC_F_NEXT, DESC_F_WRITE, DESC_F_INDIRECT])
                elif what == 1:
                    nx = rng.randrange(vq.num + 3)
                elif what == 2:
                    n = rng.choice([0, 1, 3, 16, 32, 48, 200])
                elif what == 3:
                    addr = rng.choice([vq.poison, vq.desc, vq.device, MEMORY_MAP["size"] - 8])
                elif what == 4:
                    slot = (vq.avail_idx - 1 - rng.randrange(len(chains))) % vq.num
                    vq.set_ring_entry(slot, rng.randrange(vq.num + 2))
                    continue
                elif what == 5:
                    vq.publish(vq.avail_idx + rng.choice([-1, 1, vq.num, vq.num + 1]))
                    continue
                else:
                    fl = rng.randrange(8)
                vq.write_desc(i, addr, n, fl, nx, table=table)
            before = b.mem.snapshot()
            allowed = set()
            for r in _writable_areas(before, b.mem.base, vq):
                allowed.add(r)
            first_write = len(b.mem.writes)
            published = vq.avail_idx_published()
            b.notify(0)
            await b.run_until(lambda: b.needs_reset or vq.used_idx() == published, 8000,
                              "completion or needs_reset")
            await b.tick(150)
            mask = bytearray(len(before))
            base = b.mem.base
            for a, n in allowed:
                lo, hi = max(a, base), min(a + n, base + len(before))
                if lo < hi:
                    mask[lo - base:hi - base] = b"\x01" * (hi - lo)
            u = ring_sizes(vq.num)[2]
            mask[vq.device - base:vq.device - base + u] = b"\x01" * u
            after = b.mem.snapshot()
            bad_bytes = [hex(base + i) for i in range(len(before))
                         if before[i] != after[i] and not mask[i]]
            assert not bad_bytes, f"round {rnd}: bytes changed outside: {bad_bytes[:8]}"
            if b.needs_reset:
                nr = b.needs_reset[0]
                late = [(w.presented, w.taken, hex(w.addr), w.data.hex()) for w in b.mem.writes[first_write:] if w.presented >= nr]
                assert not late, f"needs_reset at {nr}, writes presented later: {late}"
                assert len(b.needs_reset) == 1
            # start over
            await b.clear()
            await b.run_until(lambda: not b.ctx.get(b.eng.dma_busy), 2000)
            b.needs_reset.clear()
            b.alloc.__init__(*MEMORY_MAP["buffers"])
            vq.reset()
            b.configure()
    run(body, indirect=True, rq_num=64, read_latency=read_latency, stall=stall, seed=seed)


# --- the bypass FIFO -------------------------------------------------------------------------

def test_fifo_parameters_rejected():
    """A bad width, depth or ``write_ahead`` is a clear error, not a broken FIFO."""
    from viommu.rtl.bus.fifo import BypassFIFO, WriteAheadFIFO
    with pytest.raises(ValueError, match="depth must be an integer in 1"):
        WriteAheadFIFO(width=8, depth=0)
    with pytest.raises(ValueError, match="depth must be an integer in 2"):
        BypassFIFO(width=8, depth=1)
    with pytest.raises(ValueError, match="width must be an integer"):
        WriteAheadFIFO(width=0, depth=4)
    with pytest.raises(TypeError, match="write_ahead must be a bool"):
        BypassFIFO(width=8, depth=4, write_ahead=1)
    assert WriteAheadFIFO(width=8, depth=5).depth == 5
    assert BypassFIFO(width=8, depth=4).depth == 4


@pytest.mark.parametrize("kind,depth", [("bypass", 4), ("bypass_wa", 2), ("bypass_wa", 4),
                                         ("bypass_wa", 6), ("write_ahead", 1),
                                         ("write_ahead", 2), ("write_ahead", 5),
                                         ("write_ahead", 8)])
@pytest.mark.parametrize("seed", range(3))
def test_bypass_fifo(seed, kind, depth):
    """``BypassFIFO`` (the engine's payload, request and read-tag FIFOs) and
    ``WriteAheadFIFO`` (the engine's and the AXI master's LUT-RAM FIFOs, down to the
    2-entry eventq record FIFO): every entry comes out once, in order, never
    more than ``depth`` held, ``level`` always the number held; an entry written into an
    empty FIFO is readable in the next cycle; random write and read enables, and random
    ``w_data`` in the cycles without a write (the write-ahead FIFOs write their memory
    then too: it must not show)."""
    from amaranth.sim import Simulator
    from viommu.rtl.bus.fifo import BypassFIFO, WriteAheadFIFO
    if kind == "write_ahead":
        dut = WriteAheadFIFO(width=16, depth=depth)
    else:
        dut = BypassFIFO(width=16, depth=depth, write_ahead=kind == "bypass_wa")
    rng = random.Random(seed)
    out, held_max, lat = [], [0], []

    async def tb(ctx):
        nxt, pending = 0, []            # pending: (value, cycle written)
        for cycle in range(3000):
            w = rng.random() < 0.6 and nxt < 1000
            r = rng.random() < (0.9 if cycle % 400 < 200 else 0.3)
            ctx.set(dut.w_en, w)
            ctx.set(dut.w_data, nxt if w else rng.randrange(1000, 1 << 16))
            ctx.set(dut.r_en, r)
            assert ctx.get(dut.level) == len(pending)
            if kind == "bypass":        # block RAM behind the register: a cycle late
                assert ctx.get(dut.r_rdy) <= (len(pending) > 0)
            else:
                assert ctx.get(dut.r_rdy) == (len(pending) > 0)
            assert ctx.get(dut.w_rdy) == (len(pending) < depth)
            if ctx.get(dut.r_rdy) and r:
                value, when = pending.pop(0)
                assert ctx.get(dut.r_data) == value
                out.append(value)
                lat.append(cycle - when)
            if w and ctx.get(dut.w_rdy):
                pending.append((nxt, cycle))
                nxt += 1
            held_max[0] = max(held_max[0], len(pending))
            await ctx.tick()
        ctx.set(dut.w_en, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert out == list(range(len(out))) and len(out) > 500
    assert held_max[0] == depth     # full capacity used, never exceeded
    assert 1 in lat                 # written into an empty FIFO: out the next cycle
    assert min(lat) >= 1


# --- the DMA port's drain at clear -----------------------------------------------------------

@pytest.mark.parametrize("width,seed,latency", [(16, 0, (2, 12)), (16, 1, (2, 12)),
                                                (16, 2, (60, 140)), (8, 3, (2, 12)),
                                                (8, 4, (60, 140))])
def test_dma_port_discards_exactly_the_stale_returns(width, seed, latency):
    """``_DMAPort`` under random ``clear`` pulses, bus stalls and latencies. A command is
    stale from the first clear at which the bus has taken it and not yet returned all of
    it, or at which it is presented (a presented command is taken later, never
    withdrawn). No return of a stale command reaches ``rd_ret``/``wr_ret`` after that
    clear; every return of every other command does, once, in order, with its tag. A stale
    count that is one short lets stale data into the engine after a device reset; one too
    many swallows a return of the re-initialised device. With long bus latencies the
    tag queues fill up: no tag may be lost when they are full."""
    from amaranth.sim import Simulator
    from viommu.rtl.engine.virtqueue import _DMAPort, _RD_OUTSTANDING, _WR_OUTSTANDING
    dut = _DMAPort(width)
    rng = random.Random(seed)
    cmds = {"rd": [], "wr": []}         # in bus order: {"id", "n", "stale" (cycle or None)}
    got = {"rd": [], "wr": []}          # (cycle, id, beat, last, tag) / (cycle, id)
    peak = {"rd": 0, "wr": 0}           # most commands outstanding on the bus

    async def tb(ctx):
        dma = dut.dma
        nxt = {"rd": 0, "wr": 0}
        req = {"rd": None, "wr": None}          # the (id, bytes) offered to the port
        done = {"rd": 0, "wr": 0}               # commands fully returned on the bus
        next_stale = {"rd": False, "wr": False}
        held = {"rd": None, "wr": None}         # the address presented and not taken
        rbeats, wresp = [], []                  # queued on the bus: (due cycle, ...)
        wdata_taken = 0
        for cycle in range(6000):
            for k in ("rd", "wr"):
                peak[k] = max(peak[k], len(cmds[k]) - done[k])
            quiet = cycle >= 5000               # no new requests, no clears: drain
            clear = not quiet and rng.random() < 0.004
            for k in ("rd", "wr"):
                if req[k] is None and not quiet and rng.random() < 0.5:
                    req[k] = (nxt[k], 8 * rng.randint(1, 4))
                    nxt[k] += 1
            ctx.set(dut.clear, clear)
            if req["rd"] is not None:
                i, n = req["rd"]
                ctx.set(dut.rd_req.payload, {"addr": i << 6, "len": n,
                                             "tag": {"sub": i & 63, "dest": (i >> 6) & 3}})
            ctx.set(dut.rd_req.valid, req["rd"] is not None)
            if req["wr"] is not None:
                i = req["wr"][0]
                ctx.set(dut.wr_req.payload, {"addr": i << 6, "len": 8, "data": i,
                                             "tag": {"kind": 1, "q": i & 1,
                                                     "value": i & 0xffff}})
            ctx.set(dut.wr_req.valid, req["wr"] is not None)
            ctx.set(dma.rd_cmd.ready, rng.random() < 0.6)
            ctx.set(dma.wr_cmd.ready, rng.random() < 0.6)
            ctx.set(dma.wr_data.ready, rng.random() < 0.7)
            ctx.set(dut.rd_ret.ready, rng.random() < 0.8)
            ctx.set(dut.wr_ret.ready, 1)
            beat = rbeats[0] if rbeats and rbeats[0][0] <= cycle else None
            ctx.set(dma.rd_data.valid, beat is not None)
            if beat is not None:
                ctx.set(dma.rd_data.payload, {"data": beat[1], "last": beat[2], "err": 0})
            resp = bool(wresp) and wresp[0] <= cycle and wdata_taken > done["wr"]
            ctx.set(dma.wr_resp.valid, resp)
            ctx.set(dma.wr_resp.payload.err, 0)

            # This cycle's handshakes, in the order the port sees them.
            if ctx.get(dut.rd_ret.valid) and ctx.get(dut.rd_ret.ready):
                p = ctx.get(dut.rd_ret.payload)
                got["rd"].append((cycle, p.data >> 16, p.data & 0xffff, p.last,
                                  p.tag.sub | p.tag.dest << 6))
            if ctx.get(dut.wr_ret.valid):
                got["wr"].append((cycle, ctx.get(dut.wr_ret.payload.tag.value)))
            if beat is not None and ctx.get(dma.rd_data.ready):
                rbeats.pop(0)
                done["rd"] += beat[2]
            if resp:
                wresp.pop(0)
                done["wr"] += 1
            if ctx.get(dma.wr_data.valid) and ctx.get(dma.wr_data.ready):
                wdata_taken += 1
            for k in ("rd", "wr"):
                cmd = getattr(dma, f"{k}_cmd")
                take = ctx.get(cmd.valid) and ctx.get(cmd.ready)
                if held[k] is not None:         # a stream's valid is never withdrawn
                    assert ctx.get(cmd.valid) and ctx.get(cmd.payload.addr) == held[k]
                held[k] = ctx.get(cmd.payload.addr) if ctx.get(cmd.valid) and not take \
                    else None
                if take:
                    i = ctx.get(cmd.payload.addr) >> 6
                    n = ctx.get(cmd.payload.len)
                    cmds[k].append({"id": i, "n": n,
                                    "stale": cycle if next_stale[k] else None})
                    next_stale[k] = False
                    if k == "rd":
                        due, nb = cycle + rng.randint(*latency), -(-n // width)
                        for b in range(nb):
                            d = (i << 16 | 2 * b) | (i << 16 | 2 * b + 1) << 64 \
                                if width == 16 else i << 16 | b
                            rbeats.append((due + b, d, b == nb - 1))
                    else:
                        wresp.append(cycle + rng.randint(*latency))
                if clear:
                    for c in cmds[k][done[k]:]:
                        if c["stale"] is None:
                            c["stale"] = cycle
                    next_stale[k] = next_stale[k] or (ctx.get(cmd.valid) and not take)
                if req[k] is not None and ctx.get(getattr(dut, f"{k}_req").ready):
                    req[k] = None
            await ctx.tick()
        assert not rbeats and not wresp, "the bus did not drain"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()

    rd = {c["id"]: c for c in cmds["rd"]}
    for cycle, i, b, last, tag in got["rd"]:
        c = rd[i]
        assert c["stale"] is None or cycle <= c["stale"], f"stale read {i} delivered"
        assert tag == i & 0xff and last == (b == c["n"] // 8 - 1)
    beats = [(i, b) for _cy, i, b, *_x in got["rd"]]
    assert beats == sorted(set(beats)), "read returns out of order or repeated"
    delivered = set(beats)
    for c in cmds["rd"]:
        if c["stale"] is None:
            assert all((c["id"], b) in delivered for b in range(c["n"] // 8)), \
                f"fresh read {c['id']} lost"
    wr = {c["id"] & 0xffff: c for c in cmds["wr"]}
    assert all(wr[v]["stale"] is None for _cy, v in got["wr"]), "stale write delivered"
    assert [v for _cy, v in got["wr"]] == [c["id"] & 0xffff for c in cmds["wr"]
                                         if c["stale"] is None]
    n_stale = sum(c["stale"] is not None for c in cmds["rd"] + cmds["wr"])
    n_fresh = len(cmds["rd"]) + len(cmds["wr"]) - n_stale
    assert n_stale > 100 and n_fresh > (1000 if latency[0] < 10 else 300)
    if latency[0] > 10:
        # The tag queues were full (one entry is kept free while they fill).
        assert peak["rd"] >= _RD_OUTSTANDING - 1 and peak["wr"] >= _WR_OUTSTANDING - 1
