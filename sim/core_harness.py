"""A cycle-by-cycle harness for the device core in Amaranth's simulator, for directed tests.

:func:`run` builds a core and a reference model and runs an async ``body(h)``; the
:class:`Harness` ``h`` streams requests (checking each answer and the full state against the
model), feeds lookups on every port (one per cycle) and checks that each is answered exactly
``LOOKUP_LATENCY`` cycles after it was presented. :func:`allow` / :func:`deny` build the
expected :class:`~viommu.sim.model.Translation`.
"""

from amaranth.lib import data
from amaranth.sim import Simulator

from viommu.rtl.core.top import Core, LOOKUP_LATENCY
from viommu.rtl.core.layouts import ReqType, Status, LookupVia, FaultFlag, lookup_response_layout
from viommu.rtl.core.params import CoreParams
from viommu.sim.model import DeviceModel, Translation, ALL_FEATURES
from viommu.sim.core_bench import CoreBench, request_beats, translation_of


__all__ = ["Harness", "allow", "deny", "run", "SMALL", "RETRY"]

#: A small configuration for directed tests (fast to elaborate and simulate).
SMALL = dict(entries=8, endpoints=4)


class Harness:
    def __init__(self, core, ctx, model):
        self.core, self.ctx, self.model = core, ctx, model
        self.params = core.params
        self.bench = CoreBench(core, ctx)
        self.cycle = 0
        n = self.params.lookup_ports
        self.feed = [[] for _ in range(n)]        # lookups to present, one per cycle
        self.inflight = [[] for _ in range(n)]    # (presented cycle, (ep, iova, write))
        self.answers = [[] for _ in range(n)]     # (presented, answered, req, Translation)
        self.resp_layout = data.Layout.cast(lookup_response_layout(self.params.endpoint_width))
        self.requests = 0
        #: compare the full state with the model around every request (see :func:`run`)
        self.check_state = True

    async def set_features(self, features, bypass=None):
        self.model.features = frozenset(features)
        if bypass is not None:
            self.model.bypass = bypass
        await self.bench.setup(self.model.features, self.model.bypass)

    async def tick(self):
        """One clock cycle: present the next fed lookup on each port (held until the port
        is ready), collect the answers due in this cycle (exactly LOOKUP_LATENCY cycles
        after acceptance)."""
        ctx = self.ctx
        for i, port in enumerate(self.core.lookup):
            q = self.inflight[i]
            due = bool(q) and q[0][0] == self.cycle - LOOKUP_LATENCY
            valid = ctx.get(port.resp.valid)
            assert bool(valid) == due, \
                f"cycle {self.cycle} port {i}: resp.valid={valid}, expected {int(due)}"
            if due:
                t0, req = q.pop(0)
                raw = self.resp_layout.from_bits(ctx.get(port.resp.payload.as_value()))
                assert (raw.endpoint, raw.iova, raw.write) == req, \
                    f"port {i}: response echoes {raw.endpoint, raw.iova, raw.write}, not {req}"
                if raw.retry:
                    # a miss (with a mapping store): nothing decided, no fault
                    assert self.core.store is not None, "retry without a store"
                    assert not raw.allowed and raw.reason == 0 and raw.flags == 0
                    t = RETRY
                else:
                    t = translation_of(raw)
                    if not t.allowed:
                        assert raw.via == LookupVia.NONE
                self.answers[i].append((t0, self.cycle, req, t))
            req = self.feed[i][0] if self.feed[i] else None
            if req is None:                         # an idle cycle (or nothing fed)
                ctx.set(port.req.valid, 0)
                if self.feed[i]:
                    self.feed[i].pop(0)
            else:
                ep, iova, write = req
                ctx.set(port.req.valid, 1)
                ctx.set(port.req.payload.endpoint, ep)
                ctx.set(port.req.payload.iova, iova)
                ctx.set(port.req.payload.write, write)
                if ctx.get(port.req.ready):         # else held until accepted
                    self.feed[i].pop(0)
                    q.append((self.cycle, (ep, iova, int(write))))
        await ctx.tick()
        self.cycle += 1

    async def drain(self):
        for f in self.feed:
            f.clear()
        while any(self.inflight):
            await self.tick()

    async def flush(self):
        """Present every fed lookup, then wait for every answer."""
        while any(self.feed) or any(self.inflight):
            await self.tick()

    async def raw_request(self, readable, wlen):
        """Stream one request, collect its answer. Returns (answer, first valid cycle)."""
        ctx, core = self.ctx, self.core
        beats = request_beats(readable, wlen)
        ctx.set(core.resp.ready, 1)
        out, first, k, start = bytearray(), None, 0, self.cycle
        while True:
            if k < len(beats):
                ctx.set(core.req.valid, 1)
                ctx.set(core.req.payload.as_value(), beats[k])
                fire = bool(ctx.get(core.req.ready))
            else:
                ctx.set(core.req.valid, 0)
                fire = False
            rvalid = ctx.get(core.resp.valid)
            payload = ctx.get(core.resp.payload)
            if rvalid:
                assert k == len(beats), "response before the request was fully sent"
                if first is None:
                    first = self.cycle
            await self.tick()
            if fire:
                k += 1
            if rvalid:
                out += payload.data.to_bytes(8, "little")[:payload.nbytes]
                if payload.last:
                    break
            assert self.cycle - start < 2000, "core did not answer"
        ctx.set(core.req.valid, 0)
        return bytes(out), first

    async def req(self, readable, wlen=None, expect=None):
        """One request, checked against the model (see the module docstring).

        ``expect``: a Status (the answer must be exactly that 4-byte tail), or bytes (the
        whole answer). Returns the answer."""
        readable = bytes(readable)
        if wlen is None:
            wlen = (self.params.probe_size if readable[:1] == bytes([ReqType.PROBE]) else 0) + 4
        if not self.check_state:
            want = self.model.execute(readable, wlen)
            got, self.last_first_valid = await self.raw_request(readable, wlen)
            self.requests += 1
            assert got == want, f"{readable.hex()}: answered {got.hex()}, model {want.hex()}"
            return got
        before = self.bench.snapshot()
        assert before == self.model.snapshot(), "state differs before the request"
        model_before = self.model.snapshot()
        want = self.model.execute(readable, wlen)
        got, first = await self.raw_request(readable, wlen)
        self.last_first_valid = first
        self.requests += 1
        assert got == want, f"{readable.hex()} wlen={wlen}: answered {got.hex()}, " \
                            f"model {want.hex()}"
        after = self.bench.snapshot()
        assert after == self.model.snapshot(), \
            f"{readable.hex()}: state\n rtl   {after}\n model {self.model.snapshot()}"
        if not got or got[-4] != Status.OK:
            assert after == before, f"rejected {readable.hex()} changed the state"
            assert after == model_before
        if expect is not None:
            if isinstance(expect, Status):
                assert got == bytes([expect, 0, 0, 0]), \
                    f"{readable.hex()}: answered {got.hex()}, expected {expect.name}"
            else:
                assert got == expect, f"{readable.hex()}: answered {got.hex()}"
        return got

    async def present(self, ep, iova, write=False, port=0):
        """One lookup alone in the pipeline; returns its answer: a Translation, or
        :data:`RETRY`."""
        await self.drain()
        self.feed[port].append((ep, iova, int(write)))
        n = len(self.answers[port])
        for _ in range(LOOKUP_LATENCY + 1):
            await self.tick()
        # held while port 0's comparators answer a query (a fill's, with a store)
        for _ in range(8):
            if len(self.answers[port]) > n:
                break
            await self.tick()
        assert len(self.answers[port]) == n + 1
        t0, t1, _, got = self.answers[port][-1]
        assert t1 - t0 == LOOKUP_LATENCY
        return got

    async def lookup(self, ep, iova, write=False, port=0, max_tries=100):
        """One lookup alone in the pipeline, presented again while it is answered retry;
        returns its Translation (checked vs model). ``self.tries`` tells how many
        presentations it took."""
        for self.tries in range(1, max_tries + 1):
            got = await self.present(ep, iova, write, port)
            if got is not RETRY:
                break
        else:
            raise AssertionError(f"lookup ep={ep} iova={iova:#x}: retry {max_tries} times")
        want = self.model.translate(ep, iova, write)
        assert got == want, f"lookup ep={ep} iova={iova:#x} write={write}: {got}, model {want}"
        return got

    async def expect_lookup(self, ep, iova, write, expected, port=0):
        got = await self.lookup(ep, iova, write, port)
        assert got == expected, f"lookup ep={ep} iova={iova:#x} write={write}: {got}"


#: A lookup answered ``retry`` (a mapping-table miss with a store).
RETRY = "retry"


def allow(phys, via=LookupVia.MAPPING, mmio=False):
    return Translation(True, phys=phys, mmio=mmio, via=via)


def deny(reason, write):
    flags = (FaultFlag.WRITE if write else FaultFlag.READ) | FaultFlag.ADDRESS
    return Translation(False, reason=int(reason), flags=int(flags))


def run(body, *, params=None, features=ALL_FEATURES, bypass=0, snapshot=True, **kw):
    """Run ``body(h)`` on a fresh core and model. ``snapshot=False``: compare answers
    only, not the state (for a store in external memory, which the harness cannot
    read)."""
    params = params if params is not None else CoreParams(**(kw or SMALL))
    core = Core(params=params)
    model = DeviceModel(params, features=features, bypass=bypass)
    done = []

    async def tb(ctx):
        h = Harness(core, ctx, model)
        h.check_state = snapshot
        await h.bench.setup(model.features, bypass)
        await body(h)
        await h.drain()
        done.append(h)

    sim = Simulator(core)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert done, "testbench did not finish"
    return done[0]
