"""Randomized, cycle-accurate differential run of the core against the reference model.

One testbench drives everything, cycle by cycle: requests from
:class:`~viommu.sim.stimulus.RequestGenerator` (with random gaps on ``req.valid`` and
random backpressure on ``resp.ready``) and a lookup on every port in most cycles from
:class:`~viommu.sim.stimulus.LookupGenerator`. It checks:

* every response byte and used length equals the model's;
* after every request, the core's full table/endpoint/domain state equals the model's;
* lookup port 0 is not ready in exactly one cycle per request and one more per UNMAP
  (its comparators answer the executor's queries then), the other ports always are; a
  lookup not accepted is held until it is;
* every lookup is answered exactly 3 cycles after it was accepted, and the answer is
  the model's for the state the ordering contract (:mod:`viommu.rtl.core.top`) says it sees:
  the old state before the request started, the new state from the cycle its response is
  valid (from 3 cycles earlier for UNMAP/DETACH/ATTACH, whose stale grants must have
  drained), either in between.
"""

import bisect
import random
from dataclasses import dataclass, field

from amaranth.sim import Simulator

from viommu.rtl.core.top import Core, LOOKUP_LATENCY
from viommu.rtl.core.layouts import ReqType, lookup_response_layout
from viommu.sim.model import DeviceModel, ALL_FEATURES
from viommu.sim.core_bench import (CoreBench, request_beats, translation_of)
from viommu.sim.stimulus import RequestGenerator, LookupGenerator
from amaranth.lib import data


__all__ = ["RandomRunStats", "run_random"]


@dataclass
class RandomRunStats:
    requests: int = 0
    lookups: int = 0
    cycles: int = 0
    statuses: dict = field(default_factory=dict)
    allowed: int = 0
    #: Cycles in which port 0 did not accept a lookup (its comparators answered a query).
    not_ready: int = 0
    #: Lookups answered ``retry`` (a miss, with a mapping store) and presented again.
    retries: int = 0


def run_random(params, *, seed, requests, min_lookups=0, features=ALL_FEATURES, bypass=0,
               lookup_rate=0.9, vcd=None):
    """Run ``requests`` random requests (and at least ``min_lookups`` lookups); raise
    AssertionError on the first disagreement. Returns :class:`RandomRunStats`."""
    core = Core(params=params)
    model = DeviceModel(params, features=features, bypass=bypass)
    rng = random.Random(seed)
    reqgen = RequestGenerator(model, rng)
    stats = RandomRunStats()
    resp_layout = data.Layout.cast(lookup_response_layout(params.endpoint_width))

    async def tb(ctx):
        bench = CoreBench(core, ctx)
        await bench.setup(features, bypass)
        cycle = 0
        cur = None            # current request: dict
        old_model = model
        pending = [[] for _ in range(params.lookup_ports)]   # (cycle, old_t, new_t, req)
        held = [None] * params.lookup_ports       # a lookup presented, not yet accepted
        queries = 0                               # cycles the executor queries in
        again = [[] for _ in range(params.lookup_ports)]     # lookups answered retry
        store = core.store is not None
        lookgen = LookupGenerator(model, rng)
        while (stats.requests < requests or stats.lookups < min_lookups or cur is not None
               or any(again) or any(pending)):
            # --- request stream ---------------------------------------------------------
            if cur is None and stats.requests < requests:
                readable, wlen = reqgen.draw()
                old_model = model.copy()
                expected = model.execute(readable, wlen)
                cur = {"readable": readable, "beats": request_beats(readable, wlen),
                       "k": 0, "expected": expected, "got": bytearray(), "start": None,
                       "c": None, "old": old_model, "new": model.copy(),
                       "unmap": readable[:1] == bytes([ReqType.UNMAP]),
                       "removal": readable[:1] in (bytes([ReqType.UNMAP]),
                                                   bytes([ReqType.DETACH]),
                                                   bytes([ReqType.ATTACH]))}
            req_fire = False
            if cur is not None and cur["k"] < len(cur["beats"]) and rng.random() < 0.9:
                ctx.set(core.req.valid, 1)
                ctx.set(core.req.payload.as_value(), cur["beats"][cur["k"]])
                if cur["start"] is None:
                    cur["start"] = cycle
                req_fire = bool(ctx.get(core.req.ready))
            else:
                ctx.set(core.req.valid, 0)
            resp_ready = rng.random() < 0.85
            ctx.set(core.resp.ready, resp_ready)
            resp_valid = ctx.get(core.resp.valid)
            resp_payload = ctx.get(core.resp.payload)

            # --- lookups: present new ones, check the ones answered now --------------------
            for i in range(params.lookup_ports):
                port = core.lookup[i]
                rvalid = ctx.get(port.resp.valid)
                queue = pending[i]
                due = queue and queue[0][0] == cycle - LOOKUP_LATENCY
                assert bool(rvalid) == bool(due), \
                    f"cycle {cycle} port {i}: response valid={rvalid}, expected {bool(due)}"
                raw = None
                if due:
                    t0, old_t, new_t, req, lk = queue.pop(0)
                    raw = resp_layout.from_bits(ctx.get(port.resp.payload.as_value()))
                if raw is not None and raw.retry:
                    # a miss: nothing decided; the same access is presented again
                    assert store, f"cycle {cycle} port {i}: retry without a store"
                    assert not raw.allowed and raw.reason == 0 and raw.flags == 0
                    assert lk[3] < 500, f"seed {seed}: lookup {lk[:3]} retried 500 times"
                    # presented again in the order first presented (a requester
                    # retries its oldest access first)
                    bisect.insort(again[i], lk[:3] + (lk[3] + 1, lk[4]), key=lambda x: x[4])
                    stats.retries += 1
                elif raw is not None:
                    got = translation_of(raw)
                    if req is None:
                        allowed = [old_t]
                    else:
                        c = req["c"]
                        exact_from = None if c is None else (
                            c - LOOKUP_LATENCY if req["removal"] else c)
                        if exact_from is not None and t0 >= exact_from:
                            allowed = [new_t]
                        else:
                            allowed = [old_t, new_t]
                    assert got in allowed, (
                        f"seed {seed} cycle {cycle} port {i}: lookup presented at {t0} "
                        f"answered {got}, expected one of {allowed} "
                        f"(request in flight: {req and req['readable'].hex()})")
                    stats.allowed += got.allowed
                if held[i] is None and again[i]:
                    # a port with accesses answered retry presents only its oldest one
                    # again, until it is decided (the others wait behind it)
                    if not any(q[4][3] > 0 for q in queue):
                        held[i] = again[i].pop(0)
                elif (held[i] is None and rng.random() < lookup_rate and
                      (stats.requests < requests or stats.lookups < min_lookups)):
                    held[i] = lookgen.draw() + (0, stats.lookups + cycle * 1000)
                ready = bool(ctx.get(port.req.ready))
                if not ready:
                    assert i == 0, f"cycle {cycle} port {i}: not ready (only port 0 queries)"
                    stats.not_ready += 1
                if held[i] is not None:
                    ep, iova, write, _, _ = held[i]
                    ctx.set(port.req.valid, 1)
                    ctx.set(port.req.payload.endpoint, ep & ((1 << params.endpoint_width) - 1))
                    ctx.set(port.req.payload.iova, iova)
                    ctx.set(port.req.payload.write, write)
                if held[i] is not None and ready:
                    lk, held[i] = held[i], None
                    ep_eff = ep & ((1 << params.endpoint_width) - 1)
                    if cur is not None and cur["start"] is not None:
                        queue.append((cycle, cur["old"].translate(ep_eff, iova, write),
                                      cur["new"].translate(ep_eff, iova, write), cur, lk))
                    else:
                        # Not started yet: the model already holds the drawn request's
                        # effect, so decide against the state before it.
                        state = cur["old"] if cur is not None else model
                        t = state.translate(ep_eff, iova, write)
                        queue.append((cycle, t, t, None, lk))
                    stats.lookups += 1
                elif held[i] is None:
                    ctx.set(port.req.valid, 0)

            if store:
                queries += bool(ctx.get(core.executor.table_query_next))
            # --- response stream ------------------------------------------------------
            if resp_valid:
                assert cur is not None and cur["k"] == len(cur["beats"]), \
                    f"cycle {cycle}: response before the request was fully sent"
                if cur["c"] is None:
                    cur["c"] = cycle
            await ctx.tick()
            cycle += 1
            if req_fire:
                cur["k"] += 1
            if resp_valid and resp_ready:
                cur["got"] += resp_payload.data.to_bytes(8, "little")[:resp_payload.nbytes]
                if resp_payload.last:
                    got, exp = bytes(cur["got"]), cur["expected"]
                    assert got == exp, (f"seed {seed} request {stats.requests} "
                                        f"{cur['readable'].hex()}: answered {got.hex()}, "
                                        f"model {exp.hex()}")
                    snap = bench.snapshot()
                    assert snap == model.snapshot(), (
                        f"seed {seed} request {stats.requests} {cur['readable'].hex()}: "
                        f"state differs\n rtl   {snap}\n model {model.snapshot()}")
                    status = got[-4] if len(got) >= 4 else None
                    stats.statuses[status] = stats.statuses.get(status, 0) + 1
                    stats.requests += 1
                    if not store:
                        queries += 1 + cur["unmap"]
                    cur = None
        stats.cycles = cycle
        assert stats.not_ready == queries, (
            f"seed {seed}: port 0 not ready in {stats.not_ready} cycles, expected {queries} "
            f"(one per request, two per UNMAP)")

    sim = Simulator(core)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return stats
