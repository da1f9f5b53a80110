"""Cycle-count measurements of the core in Amaranth's simulator (used by ``viommu bench``).

Each function builds a core, drives it at full rate (a request beat offered every cycle,
responses always accepted, a lookup on every port every cycle) and counts cycles. Results
are checked against the reference model as they are measured, so a fast wrong answer is
not reported as a figure.
"""

from amaranth.sim import Simulator
from amaranth.lib import data

from viommu.rtl.core.top import Core, LOOKUP_LATENCY
from viommu.rtl.core.layouts import lookup_response_layout, MapFlag
from viommu.sim.model import DeviceModel, ALL_FEATURES, attach, map_, unmap
from viommu.sim.core_bench import CoreBench, request_beats, translation_of


__all__ = ["measure_lookups", "measure_map_unmap", "measure_store_lookups", "measure_store_ops"]


def _run(core, tb):
    sim = Simulator(core)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()


async def _store_ready(ctx, core):
    """Wait until a core's mapping store has cleared its heads (none: at once)."""
    if core.store is not None:
        while not ctx.get(core.store.ready):
            await ctx.tick()


def measure_lookups(params, *, n=400):
    """Present ``n`` lookups back to back on every port of a core with live mappings.

    Returns ``{"port": i, "lookups_per_cycle": float, "latency": int}`` per port.
    """
    core = Core(params=params)
    model = DeviceModel(params)
    g = params.granule
    setup = [attach(1, params.endpoint_ids[0])]
    setup += [map_(1, (4 * k) * g, (4 * k + 2) * g - 1, 0x100000 * g + k * g, MapFlag.READ)
              for k in range(min(8, params.entries))]
    resp_layout = data.Layout.cast(lookup_response_layout(params.endpoint_width))
    results = []

    async def tb(ctx):
        bench = CoreBench(core, ctx)
        await bench.setup(ALL_FEATURES)
        for r in setup:
            exp = model.execute(r)
            got, _ = await bench.request(r, 4)
            assert got == exp
        ep = params.endpoint_ids[0]
        presented = [[] for _ in core.lookup]
        answered = [[] for _ in core.lookup]
        for cycle in range(n + LOOKUP_LATENCY + 1):
            for i, port in enumerate(core.lookup):
                if ctx.get(port.resp.valid):
                    got = translation_of(resp_layout.from_bits(
                        ctx.get(port.resp.payload.as_value())))
                    answered[i].append((cycle, got))
                if cycle < n:
                    iova = ((cycle * 7 + i * 3) % (40 * g)) | (cycle & 0xfff)
                    # No request is in progress, so no query takes port 0's comparators.
                    assert ctx.get(port.req.ready), f"port {i} not ready at cycle {cycle}"
                    ctx.set(port.req.valid, 1)
                    ctx.set(port.req.payload.endpoint, ep)
                    ctx.set(port.req.payload.iova, iova)
                    ctx.set(port.req.payload.write, 0)
                    presented[i].append((cycle, model.translate(ep, iova, False)))
                else:
                    ctx.set(port.req.valid, 0)
            await ctx.tick()
        for i in range(len(core.lookup)):
            assert len(answered[i]) == n, f"port {i}: {len(answered[i])} of {n} answered"
            latencies = {a[0] - p[0] for p, a in zip(presented[i], answered[i])}
            assert len(latencies) == 1, f"port {i}: latency varies: {latencies}"
            for p, a in zip(presented[i], answered[i]):
                assert a[1] == p[1], f"port {i}: {a[1]} != model {p[1]}"
            first, last = answered[i][0][0], answered[i][-1][0]
            results.append({"port": i, "lookups_per_cycle": n / (last - first + 1),
                            "latency": latencies.pop()})

    _run(core, tb)
    return results


def measure_map_unmap(params, *, batch=32):
    """Stream a batch of MAPs, then a batch of UNMAPs, back to back at full rate.

    Returns ``{"map_cycles": float, "unmap_cycles": float, "map_latency": int,
    "map_lookup_rate": float, "unmap_lookup_rate": float}``: steady cycles per request
    (first beat of the first request to last response beat of the last, divided by the
    count), the cycles from the first beat of a lone MAP to its first response beat, and
    the lookups per cycle lookup port 0 accepts (a lookup presented in every cycle) while
    the batch streams, its comparators answering the executor's queries in the others.
    """
    core = Core(params=params)
    model = DeviceModel(params)
    g = params.granule
    batch = min(batch, params.entries)
    maps = [map_(1, 2 * k * g, (2 * k + 1) * g - 1, k * g) for k in range(batch)]
    unmaps = [unmap(1, 2 * k * g, (2 * k + 1) * g - 1) for k in range(batch)]
    out = {}

    async def stream(ctx, reqs):
        beats = [b for r in reqs for b in request_beats(r, 4)]
        expected = b"".join(model.execute(r) for r in reqs)
        got = bytearray()
        k = cycle = 0
        first_resp = None
        ctx.set(core.resp.ready, 1)
        lk = core.lookup[0]
        ctx.set(lk.req.payload.endpoint, params.endpoint_ids[0])
        ctx.set(lk.req.payload.iova, 0)
        accepted = answered = 0
        while len(got) < len(expected):
            ctx.set(lk.req.valid, 1)
            accepted += ctx.get(lk.req.ready)
            answered += ctx.get(lk.resp.valid)
            if k < len(beats):
                ctx.set(core.req.valid, 1)
                ctx.set(core.req.payload.as_value(), beats[k])
            else:
                ctx.set(core.req.valid, 0)
            fire = k < len(beats) and ctx.get(core.req.ready)
            rv = ctx.get(core.resp.valid)
            rp = ctx.get(core.resp.payload)
            if rv and first_resp is None:
                first_resp = cycle
            await ctx.tick()
            cycle += 1
            k += bool(fire)
            if rv:
                got += rp.data.to_bytes(8, "little")[:rp.nbytes]
            assert cycle < 100 * len(reqs) + 100, "no progress"
        ctx.set(core.req.valid, 0)
        ctx.set(lk.req.valid, 0)
        for _ in range(LOOKUP_LATENCY):
            answered += ctx.get(lk.resp.valid)
            await ctx.tick()
        assert bytes(got) == expected, "answers differ from the model"
        assert answered == accepted, f"{accepted} lookups accepted, {answered} answered"
        return cycle, first_resp, accepted / cycle

    async def tb(ctx):
        bench = CoreBench(core, ctx)
        await bench.setup(ALL_FEATURES)
        await _store_ready(ctx, core)
        await stream(ctx, [attach(1, params.endpoint_ids[0])])
        _, out["map_latency"], _ = await stream(ctx, maps[:1])
        await stream(ctx, unmaps[:1])
        cycles, _, out["map_lookup_rate"] = await stream(ctx, maps)
        out["map_cycles"] = cycles / len(maps)
        cycles, _, out["unmap_lookup_rate"] = await stream(ctx, unmaps)
        out["unmap_cycles"] = cycles / len(unmaps)
        assert bench.snapshot() == model.snapshot()

    _run(core, tb)
    return out


def measure_engine(*, read_latency=1, indirect=False, batch=128, params=None):
    """The virtqueue engine with the core behind it, guest memory answering each read
    command after ``read_latency`` cycles (then one 8-byte beat per cycle, 64-bit DMA).

    Returns ``{"steady": cycles per MAP between the 32nd and the last used element of a
    batch of ``batch`` MAPs queued with one doorbell, "batch": cycles per MAP over the whole
    batch, "lone": cycles from the doorbell of a single MAP to the write of the used idx
    that publishes it}``. Every answer is checked against the reference model.
    """
    from viommu.rtl.core.params import CoreParams
    from viommu.sim.vq_bench import EngineWithCore, VQBench, run_bench
    params = params or CoreParams(entries=max(16, batch + 1))
    dut = EngineWithCore(params)
    g = params.granule
    out = {}

    def used_writes(b, first, area):
        return [w.taken for w in b.mem.writes[first:] if area[0] <= w.addr < area[1]]

    async def tb(ctx):
        b = VQBench(dut, ctx, rq_num=256, indirect=indirect, read_latency=read_latency,
                    write_latency=1)
        await b.start_attached()
        vq = b.rq
        elems = (vq.device + 4, vq.device + 4 + 8 * vq.num)
        # a lone MAP: doorbell -> used idx published
        await b.tick(50)
        chains = [b.submit(map_(1, 0, g - 1, 0x800000))]
        first = len(b.mem.writes)
        b.notify(0)
        t0 = b.cycle + 1                        # the doorbell is seen at the next edge
        await b.complete(chains)
        idx = used_writes(b, first, (vq.device + 2, vq.device + 4))
        out["lone"] = idx[0] - t0
        # a batch
        await b.tick(50)
        chains = [b.submit(map_(1, (0x100 + k) * g, (0x101 + k) * g - 1, (0x800 + k) * g))
                  for k in range(batch)]
        first = len(b.mem.writes)
        b.notify(0)
        t0 = b.cycle + 1
        await b.complete(chains, timeout=100000)
        used = used_writes(b, first, elems)
        out["batch"] = (used[-1] - t0) / batch
        out["steady"] = (used[batch - 1] - used[31]) / (batch - 32)

    run_bench(dut, tb)
    return out


__all__ += ["measure_engine"]


def measure_store_lookups(params, *, hit_rate, n=300, hot=None, cold=256, seed=1):
    """Lookups on port 0 of a core with a mapping store, at a given share of table hits.

    ``hot`` pages (half the table) and ``cold`` pages are mapped; the hot ones are looked
    up once first, so the table holds them. Then ``n`` accesses are presented, each a hot
    page with probability ``hit_rate``, else a cold page the table does not hold. The
    requester presents one access per cycle and, when one is answered ``retry``, presents
    it again at once, before anything else (its later accesses wait). Every decided answer
    is checked against the model.

    Returns ``{"lookups_per_cycle", "hits", "miss_latency", "miss_latency_max",
    "miss_latency_lone"}``: decided accesses per cycle; the share decided at their first
    presentation; the mean and largest cycles from a miss's first presentation to its
    decided answer (queueing behind other misses included: one fill at a time); the same
    for a lone miss with nothing else in flight, presented again as soon as it is
    answered retry.
    """
    import random
    assert params.mappings, "measure_store_lookups needs a core with a mapping store"
    core = Core(params=params)
    model = DeviceModel(params)
    g = params.granule
    rng = random.Random(seed)
    hot = params.entries // 2 if hot is None else hot
    ep = params.endpoint_ids[0]
    pages = [2 * k for k in range(hot + cold + 1)]        # one page in two is mapped
    lone = pages.pop()                                    # looked up once, at the end
    setup = [attach(1, ep)] + [map_(1, p * g, p * g + g - 1, (p + 0x100000) * g,
                                    MapFlag.READ) for p in pages + [lone]]
    resp_layout = data.Layout.cast(lookup_response_layout(params.endpoint_width))
    out = {}

    async def tb(ctx):
        bench = CoreBench(core, ctx)
        await bench.setup(ALL_FEATURES)
        await _store_ready(ctx, core)
        for r in setup:
            exp = model.execute(r)
            got, _ = await bench.request(r, 4, max_cycles=100000)
            assert got == exp
        port = core.lookup[0]
        todo = [pages[k] for k in range(hot)]              # warm-up: the hot pages
        todo += [pages[rng.randrange(hot)] if rng.random() < hit_rate
                 else pages[hot + rng.randrange(cold)]
                 for k in range(n)]
        todo = [p * g + rng.randrange(g) for p in todo]
        inflight = []        # (presented cycle, index)
        first_seen = {}      # index -> cycle of its first presentation
        decided = []         # (index, cycle, decided at its first presentation?)
        retry = set()        # indices answered retry, to present again
        k = cycle = start = 0
        while len(decided) < len(todo):
            if ctx.get(port.resp.valid):
                t0, idx = inflight.pop(0)
                raw = resp_layout.from_bits(ctx.get(port.resp.payload.as_value()))
                if raw.retry:
                    retry.add(idx)
                else:
                    want = model.translate(ep, todo[idx], False)
                    assert translation_of(raw) == want, (hex(todo[idx]), raw, want)
                    decided.append((idx, cycle, first_seen[idx] == t0))
                    if len(decided) == hot:
                        start = cycle
            # accesses answered retry go first, oldest first; new ones wait behind them
            nxt = None
            if retry:
                waiting = [i for i in sorted(retry) if all(i != j for _, j in inflight)]
                nxt = waiting[0] if waiting else None
            elif k < len(todo):
                nxt = k
            if nxt is not None:
                ctx.set(port.req.valid, 1)
                ctx.set(port.req.payload.endpoint, ep)
                ctx.set(port.req.payload.iova, todo[nxt])
                ctx.set(port.req.payload.write, 0)
                if ctx.get(port.req.ready):
                    inflight.append((cycle, nxt))
                    first_seen.setdefault(nxt, cycle)
                    if nxt in retry:
                        retry.discard(nxt)
                    else:
                        k += 1
            else:
                ctx.set(port.req.valid, 0)
            await ctx.tick()
            cycle += 1
            assert cycle < 2000 * len(todo), "no progress"
        # a lone miss: one access, nothing else in flight, presented again at once
        while inflight:
            if ctx.get(port.resp.valid):
                inflight.pop(0)
            ctx.set(port.req.valid, 0)
            await ctx.tick()
        t0 = None
        for c in range(2000):
            if ctx.get(port.resp.valid):
                raw = resp_layout.from_bits(ctx.get(port.resp.payload.as_value()))
                if not raw.retry:
                    assert raw.allowed and raw.phys == (lone + 0x100000) * g
                    out["miss_latency_lone"] = c - t0
                    break
                ctx.set(port.req.valid, 1)
            elif t0 is None:
                ctx.set(port.req.valid, 1)
                ctx.set(port.req.payload.iova, lone * g)
                t0 = c
            else:
                ctx.set(port.req.valid, 0)
            await ctx.tick()
        measured = [d for d in decided if d[0] >= hot]
        misses = [c - first_seen[i] for i, c, first in measured if not first]
        import os
        if os.environ.get("DBGMISS"):
            worst = max(measured, key=lambda d: d[1] - first_seen[d[0]])
            print("WORST", worst, first_seen[worst[0]], hex(todo[worst[0]]), sorted(c - first_seen[i] for i, c, f in measured if not f)[-10:])
        out["lookups_per_cycle"] = len(measured) / (cycle - start)
        out["hits"] = sum(first for _, _, first in measured) / len(measured)
        out["miss_latency"] = sum(misses) / len(misses) if misses else None
        out["miss_latency_max"] = max(misses) if misses else None

    _run(core, tb)
    return out


def measure_store_ops(params, *, live=(64, 1000, 10000, 65536), samples=16, seed=1):
    """Cycles of the mapping store's engine (block RAM) per MAP of one page and per UNMAP
    of one mapping, with ``live`` mappings held: the store is filled with single-page MAPs
    of a NIC-like pattern (16 rings of pages at scattered IOVAs), then ``samples`` MAPs and
    as many UNMAPs are timed. Every answer is checked against the structure model.

    Returns ``[{"live": n, "map": float, "unmap": float}, ...]`` (operation-to-result
    cycles, the engine's idle reaping excluded)."""
    import random
    from viommu.rtl.store.layouts import StoreParams
    from viommu.sim.store_bench import run_ops
    rng = random.Random(seed)
    cap = max(live) + samples
    sp = StoreParams(capacity=cap, page_bits=params.page_bits, slots=params.n_endpoints,
                     phys_page_bits=params.phys_page_bits)
    span = 1 << min(params.page_bits, 36)
    pages = rng.sample(range(span), cap + samples)
    ops, marks = [], []
    n = 0
    for target in sorted(live):
        while n < target:
            ops.append(("map", 0, pages[n], pages[n], n, 3))
            n += 1
        marks.append((target, len(ops)))
        for s in range(samples):
            ops.append(("map", 0, pages[cap + s], pages[cap + s], s, 3))
        for s in range(samples):
            ops.append(("unmap", 0, pages[cap + s], pages[cap + s]))
    res = run_ops(sp, ops)
    out = []
    for target, at in marks:
        maps = [res[at + s][2] for s in range(samples)]
        unmaps = [res[at + samples + s][2] for s in range(samples)]
        out.append({"live": target, "map": sum(maps) / samples,
                    "unmap": sum(unmaps) / samples})
    return out
