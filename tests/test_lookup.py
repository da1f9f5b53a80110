# amaranth: UnusedElaboratable=no
"""Translation lookups (rtl/core/lookup.py) through the device core, against the reference model.

* latency: a lookup presented in cycle t is answered in cycle t+3 and in no other cycle;
* throughput: one lookup per cycle per port, back to back, answered in order, each answer
  echoing its request and equal to the model's;
* two lookup ports work independently (different streams, idle cycles on one port);
* every decision branch of ``DeviceModel.translate``, with the expected answer written out
  (allowed, phys, mmio, via; or reason and fault flags) as well as compared to the model.

The harness is the same as tests/test_core_requests.py's (requests checked against the
model and the full state; every lookup's response checked to arrive exactly 3 cycles later).
"""

import random

import pytest

from viommu.rtl.core.top import LOOKUP_LATENCY
from viommu.rtl.core.layouts import (Status, Feature, AttachFlag, MapFlag, FaultReason, LookupVia,
                                ResvSubtype)
from viommu.rtl.core.params import CoreParams, ResvRegion
from viommu.sim.model import (ALL_FEATURES, attach, detach, map_, unmap)
from viommu.sim.core_harness import allow, deny, run


G = 4096
U64 = (1 << 64) - 1
R, W, RW = MapFlag.READ, MapFlag.WRITE, MapFlag.READ | MapFlag.WRITE
MMIO = MapFlag.MMIO
SMALL = dict(entries=8, endpoints=4)


# --- configuration used by most tests ------------------------------------------------------

RESV = ResvRegion(0x10000000, 0x1000ffff, ResvSubtype.RESERVED)
MSI = ResvRegion(0xfee00000, 0xfeefffff, ResvSubtype.MSI)
EP_T, EP_B, EP_U = 0, 3, 0x1234          # translated domain, bypass domain, unattached
UNKNOWN_EPS = (1, 2, 4, 0x1235, 0x0234, 0xffff)


def branch_params(write_only_reads=False, lookup_ports=1):
    return CoreParams(entries=16, endpoints=[EP_T, EP_B, EP_U], resv_regions=[RESV, MSI],
                      write_only_reads=write_only_reads, lookup_ports=lookup_ports)


#: Domain 1's mappings: (virt_start, virt_end, phys, flags)
MAPS = {
    "R":        (0x100000, 0x101fff, 0x8000000, R),
    "W":        (0x200000, 0x200fff, 0x9000000, W),
    "RW":       (0x300000, 0x303fff, 0xa000000, RW),
    "NONE":     (0x400000, 0x400fff, 0xb000000, 0),
    "MMIO":     (0x500000, 0x500fff, 0xfed00000, RW | MMIO),
    "TOP":      (U64 - 2 * G + 1, U64, 0x7000, RW),
    "CARRY":    (0xfffff000, 0x100000fff, 0x7fffff000, RW),
    "WRAP":     (1 << 63, (1 << 63) + G - 1, 0x1000, RW),
    "PHYS_TOP": (0x700000, 0x700fff, U64 - G + 1, RW),
    "MSI_PREV": (0xfedff000, 0xfedfffff, 0xd000000, RW),
    "MSI_NEXT": (0xfef00000, 0xfef00fff, 0xc000000, RW),
    "RESV_PREV": (0x0ffff000, 0x0fffffff, 0xe000000, RW),
    "RESV_NEXT": (0x10010000, 0x10010fff, 0xf000000, RW),
}


async def setup_branches(h):
    await h.req(attach(1, EP_T), expect=Status.OK)
    await h.req(attach(2, EP_B, AttachFlag.BYPASS), expect=Status.OK)
    for vs, ve, ph, fl in MAPS.values():
        await h.req(map_(1, vs, ve, ph, fl), expect=Status.OK)


def interesting_iovas():
    out = {0, 1, U64, 1 << 63, 0x600000}
    for vs, ve, _, _ in MAPS.values():
        out |= {vs, ve, (vs - 1) & U64, (ve + 1) & U64, (vs + ve) // 2}
    for r in (RESV, MSI):
        out |= {r.start, r.end, r.start - 1, r.end + 1}
    return sorted(out)


# --- latency and throughput ---------------------------------------------------------------

def test_latency_exactly_three_cycles():
    async def body(h):
        await setup_branches(h)
        await h.drain()
        ctx, port = h.ctx, h.core.lookup[0]
        ctx.set(port.req.valid, 1)
        ctx.set(port.req.payload.endpoint, EP_T)
        ctx.set(port.req.payload.iova, 0x300123)
        ctx.set(port.req.payload.write, 1)
        seen = []
        for k in range(6):
            seen.append(ctx.get(port.resp.valid))
            if k == 3:
                resp = ctx.get(port.resp.payload)
            await ctx.tick()
            ctx.set(port.req.valid, 0)
        assert seen == [0, 0, 0, 1, 0, 0]
        assert resp.allowed == 1 and resp.phys == 0xa000123
        assert resp.endpoint == EP_T and resp.iova == 0x300123 and resp.write == 1
        assert resp.via == LookupVia.MAPPING
    run(body, params=branch_params())


def test_back_to_back_lookups_in_order():
    rng = random.Random(7)
    iovas = interesting_iovas()
    eps = [EP_T, EP_T, EP_T, EP_B, EP_U, 0x1235]

    async def body(h):
        await setup_branches(h)
        await h.drain()
        stream = [(rng.choice(eps), rng.choice(iovas), rng.getrandbits(1)) for _ in range(300)]
        start = h.cycle
        h.feed[0] = list(stream)
        await h.tick()
        while h.feed[0] or h.inflight[0]:
            await h.tick()
        answers = [a for a in h.answers[0] if a[0] >= start]
        assert len(answers) == len(stream)
        for k, ((t0, t1, req, got), sent) in enumerate(zip(answers, stream)):
            assert t0 == start + k and t1 == t0 + LOOKUP_LATENCY
            assert req == sent
            assert got == h.model.translate(*sent), f"lookup {k} {sent}: {got}"
        outcomes = {(a[3].allowed, a[3].via, a[3].reason) for a in answers}
        assert len(outcomes) >= 5       # the stream mixes the decision branches
    run(body, params=branch_params())


def test_two_ports_independent():
    rng = random.Random(11)
    iovas = interesting_iovas()
    eps = [EP_T, EP_T, EP_B, EP_U, 0xffff]

    async def body(h):
        await setup_branches(h)
        await h.drain()
        # Port 0: back to back. Port 1: a different stream with idle cycles, shorter.
        s0 = [(rng.choice(eps), rng.choice(iovas), rng.getrandbits(1)) for _ in range(200)]
        s1 = [None if rng.random() < 0.3 else
              (rng.choice(eps), rng.choice(iovas), rng.getrandbits(1)) for _ in range(120)]
        h.feed[0], h.feed[1] = list(s0), list(s1)
        start = h.cycle
        while h.feed[0] or h.feed[1] or any(h.inflight):
            await h.tick()
        for port, stream in ((0, s0), (1, s1)):
            answers = [a for a in h.answers[port] if a[0] >= start]
            sent = [(start + k, s) for k, s in enumerate(stream) if s is not None]
            assert len(answers) == len(sent), port
            for (t0, t1, req, got), (ts, s) in zip(answers, sent):
                assert (t0, req) == (ts, s) and t1 == t0 + LOOKUP_LATENCY
                assert got == h.model.translate(*s), f"port {port} {s}: {got}"
        # The same lookup on both ports in the same cycle gets the same answer, and two
        # different lookups in the same cycle get their own answers.
        h.feed[0] = [(EP_T, 0x300010, 1), (EP_T, 0x100010, 1)]
        h.feed[1] = [(EP_T, 0x300010, 1), (EP_T, 0x100010, 0)]
        n0, n1 = len(h.answers[0]), len(h.answers[1])
        await h.flush()
        a0, a1 = h.answers[0][n0:], h.answers[1][n1:]
        assert [a[3] for a in a0] == [allow(0xa000010), deny(FaultReason.MAPPING, True)]
        assert [a[3] for a in a1] == [allow(0xa000010), allow(0x8000010)]
    run(body, params=branch_params(lookup_ports=2))


# --- every decision branch ----------------------------------------------------------------

def _branch_checks(wor):
    d = lambda reason, w: deny(reason, w)
    M = FaultReason.MAPPING
    checks = []
    add = lambda ep, iova, w, exp: checks.append((ep, iova, w, exp))
    # Unknown endpoint.
    for ep in UNKNOWN_EPS:
        for w in (0, 1):
            add(ep, 0x300000, w, d(FaultReason.UNKNOWN, w))
    # Unattached, no bypass.
    for w in (0, 1):
        add(EP_U, 0x300000, w, d(FaultReason.DOMAIN, w))
        add(EP_U, 0xfee00000, w, d(FaultReason.DOMAIN, w))
    # Bypass domain: identity everywhere, reserved and MSI regions included.
    for iova in (0, 0x300000, RESV.start, MSI.start, MSI.end, U64):
        for w in (0, 1):
            add(EP_B, iova, w, allow(iova, via=LookupVia.BYPASS))
    # MSI region of a translated domain: writes pass untranslated, reads are denied.
    for iova in (MSI.start, MSI.start + 0x4567, MSI.end):
        add(EP_T, iova, 1, allow(iova, via=LookupVia.MSI))
        add(EP_T, iova, 0, d(M, 0))
    add(EP_T, MSI.start - 1, 1, allow(0xd000fff))              # MSI_PREV mapping
    add(EP_T, MSI.end + 1, 0, allow(0xc000000))                # MSI_NEXT mapping
    # RESERVED region: denied both ways; its neighbours are ordinary mappings.
    for iova in (RESV.start, RESV.start + 0x8000, RESV.end):
        for w in (0, 1):
            add(EP_T, iova, w, d(M, w))
    add(EP_T, RESV.start - 1, 1, allow(0xe000fff))
    add(EP_T, RESV.end + 1, 0, allow(0xf000000))
    # Permissions.
    add(EP_T, 0x100000, 0, allow(0x8000000))                   # R
    add(EP_T, 0x101fff, 0, allow(0x8001fff))
    add(EP_T, 0x100000, 1, d(M, 1))
    add(EP_T, 0x101fff, 1, d(M, 1))
    add(EP_T, 0x200abc, 1, allow(0x9000abc))                   # W
    add(EP_T, 0x200abc, 0, allow(0x9000abc) if wor else d(M, 0))
    add(EP_T, 0x200000, 0, allow(0x9000000) if wor else d(M, 0))
    for w in (0, 1):                                            # no permission
        add(EP_T, 0x400000, w, d(M, w))
        add(EP_T, 0x400fff, w, d(M, w))
    # RW: first and last page, first and last byte, one byte outside.
    for iova in (0x300000, 0x300fff, 0x301000, 0x303000, 0x303fff):
        for w in (0, 1):
            add(EP_T, iova, w, allow(0xa000000 + iova - 0x300000))
    for iova in (0x2fffff, 0x304000):
        for w in (0, 1):
            add(EP_T, iova, w, d(M, w))
    # MMIO flag travels with the answer.
    add(EP_T, 0x500010, 1, allow(0xfed00010, mmio=True))
    add(EP_T, 0x500fff, 0, allow(0xfed00fff, mmio=True))
    add(EP_T, 0x501000, 0, d(M, 0))
    # Miss.
    for iova in (0, 0x600000, (1 << 63) - 1, U64 - 2 * G):
        add(EP_T, iova, 0, d(M, 0))
    # Top page of the 64-bit space.
    add(EP_T, U64, 0, allow(0x8fff))
    add(EP_T, U64, 1, allow(0x8fff))
    add(EP_T, U64 - G + 1, 1, allow(0x8000))
    add(EP_T, U64 - 2 * G + 1, 0, allow(0x7000))
    # Carries of iova + offset across page-number bits; offsets that wrap.
    add(EP_T, 0xfffffabc, 0, allow(0x7fffffabc))
    add(EP_T, 0x100000abc, 1, allow(0x800000abc))
    add(EP_T, (1 << 63) + 0x123, 0, allow(0x1123))
    add(EP_T, (1 << 63) + 0xfff, 1, allow(0x1fff))
    add(EP_T, 0x700000, 0, allow(U64 - G + 1))
    add(EP_T, 0x700fff, 1, allow(U64))
    return checks


@pytest.mark.parametrize("wor", [False, True], ids=["strict", "write_only_reads"])
def test_decision_branches(wor):
    checks = _branch_checks(wor)

    async def body(h):
        await setup_branches(h)
        for ep, iova, w, exp in checks:
            await h.expect_lookup(ep, iova, w, exp)
        assert {c[3].via for c in checks if c[3].allowed} == \
               {LookupVia.MAPPING, LookupVia.BYPASS, LookupVia.MSI}
        assert {c[3].reason for c in checks if not c[3].allowed} == \
               {FaultReason.UNKNOWN, FaultReason.DOMAIN, FaultReason.MAPPING}
    run(body, params=branch_params(write_only_reads=wor))


def test_unattached_bypass_modes():
    BC = Feature.BYPASS_CONFIG
    modes = [  # (features, bypass byte, unattached endpoints bypass?)
        (ALL_FEATURES, 0, False),
        (ALL_FEATURES, 1, True),
        (ALL_FEATURES - {BC}, 1, False),                   # the byte needs BYPASS_CONFIG
        (ALL_FEATURES - {BC}, 0, False),
        ((ALL_FEATURES - {BC}) | {Feature.BYPASS}, 0, True),   # legacy F_BYPASS
        ((ALL_FEATURES - {BC}) | {Feature.BYPASS}, 1, True),
        (ALL_FEATURES | {Feature.BYPASS}, 0, True),
        (ALL_FEATURES, 1, True),
        (ALL_FEATURES, 0, False),
    ]

    async def body(h):
        await setup_branches(h)
        for features, byte, byp in modes:
            await h.set_features(features, byte)
            for w in (0, 1):
                for iova in (0x300000, MSI.start, RESV.start, U64):
                    exp = (allow(iova, via=LookupVia.BYPASS) if byp
                           else deny(FaultReason.DOMAIN, w))
                    await h.expect_lookup(EP_U, iova, w, exp)
                # Unknown and attached endpoints are not affected.
                await h.expect_lookup(0x1235, 0x300000, w, deny(FaultReason.UNKNOWN, w))
                await h.expect_lookup(EP_T, 0x600000, w, deny(FaultReason.MAPPING, w))
                await h.expect_lookup(EP_T, 0x300000, w, allow(0xa000000))
        # A detached endpoint follows the unattached rule.
        await h.set_features(ALL_FEATURES, 1)
        await h.req(detach(1, EP_T), expect=Status.OK)
        await h.expect_lookup(EP_T, 0x300000, 0, allow(0x300000, via=LookupVia.BYPASS))
        await h.set_features(ALL_FEATURES, 0)
        await h.expect_lookup(EP_T, 0x300000, 0, deny(FaultReason.DOMAIN, 0))
    run(body, params=branch_params())


def test_reserved_regions_are_per_endpoint():
    """Endpoint 0 has a RESERVED and an MSI region, endpoint 3 none. Both share a domain
    whose mappings cover those ranges (mapped before endpoint 0 joined)."""
    params = CoreParams(entries=4, endpoints=[0, 3], resv_regions={0: [RESV, MSI]})

    async def body(h):
        await h.req(attach(1, 3), expect=Status.OK)
        await h.req(map_(1, 0x0ffff000, 0x10010fff, 0x40000000, RW), expect=Status.OK)
        await h.req(map_(1, MSI.start, MSI.end, 0x50000000, RW), expect=Status.OK)
        await h.req(attach(1, 0), expect=Status.OK)
        for w in (0, 1):
            await h.expect_lookup(3, RESV.start, w, allow(0x40001000))
            await h.expect_lookup(0, RESV.start, w, deny(FaultReason.MAPPING, w))
            await h.expect_lookup(0, RESV.end, w, deny(FaultReason.MAPPING, w))
            await h.expect_lookup(0, RESV.end + 1, w, allow(0x40011000))
            await h.expect_lookup(3, MSI.start + 8, w, allow(0x50000008))
        await h.expect_lookup(0, MSI.start + 8, 1, allow(MSI.start + 8, via=LookupVia.MSI))
        await h.expect_lookup(0, MSI.start + 8, 0, deny(FaultReason.MAPPING, 0))
        # With endpoint 0 in the domain, a MAP overlapping its regions is refused...
        await h.req(unmap(1, MSI.start, MSI.end), expect=Status.OK)
        await h.req(map_(1, MSI.end - G + 1, MSI.end + G, 0), expect=Status.INVAL)
        await h.req(map_(1, MSI.end + 1, MSI.end + G, 0), expect=Status.OK)
        # ...and accepted again once it left.
        await h.req(detach(1, 0), expect=Status.OK)
        await h.req(map_(1, MSI.end - G + 1, MSI.end, 0x60000000), expect=Status.OK)
        await h.expect_lookup(3, MSI.end, 1, allow(0x60000fff))
    run(body, params=params)


@pytest.mark.parametrize("shift", [12, 16, 21, 30])
def test_granules_keep_offset_bits_and_carry(shift):
    g = 1 << shift
    params = CoreParams(entries=4, endpoints=2, page_size_mask=U64 & ~(g - 1),
                        resv_regions=())

    async def body(h):
        await h.req(attach(1, 0), expect=Status.OK)
        # virt pages [1, 2] -> phys pages [2**(40-shift) - 1, 2**(40-shift)]: a carry out of
        # the low page-number bits inside the mapping.
        phys = (1 << 40) - g
        await h.req(map_(1, g, 3 * g - 1, phys, RW), expect=Status.OK)
        await h.req(map_(1, U64 - g + 1, U64, 0, R), expect=Status.OK)
        await h.expect_lookup(0, g, 0, allow(phys))
        await h.expect_lookup(0, 2 * g - 1, 1, allow(phys + g - 1))
        await h.expect_lookup(0, 2 * g, 1, allow(1 << 40))
        await h.expect_lookup(0, 3 * g - 1, 0, allow((1 << 40) + g - 1))
        await h.expect_lookup(0, g - 1, 0, deny(FaultReason.MAPPING, 0))
        await h.expect_lookup(0, 3 * g, 1, deny(FaultReason.MAPPING, 1))
        await h.expect_lookup(0, U64, 0, allow(g - 1))
        await h.expect_lookup(0, U64, 1, deny(FaultReason.MAPPING, 1))
        await h.expect_lookup(0, U64 - g + 1, 0, allow(0))
    run(body, params=params)


def test_lookups_follow_state_changes():
    """Answers track requests: map, unmap, detach, re-attach, move."""
    async def body(h):
        await h.req(attach(1, 0), expect=Status.OK)
        await h.expect_lookup(0, 0x1000, 0, deny(FaultReason.MAPPING, 0))
        await h.req(map_(1, 0x1000, 0x1fff, 0x5000, R), expect=Status.OK)
        await h.expect_lookup(0, 0x1000, 0, allow(0x5000))
        await h.expect_lookup(1, 0x1000, 0, deny(FaultReason.DOMAIN, 0))
        await h.req(attach(1, 1), expect=Status.OK)
        await h.expect_lookup(1, 0x1abc, 0, allow(0x5abc))
        await h.req(unmap(1, 0x1000, 0x1fff), expect=Status.OK)
        await h.expect_lookup(1, 0x1abc, 0, deny(FaultReason.MAPPING, 0))
        await h.req(map_(1, 0x1000, 0x1fff, 0x6000, W), expect=Status.OK)
        await h.expect_lookup(0, 0x1abc, 1, allow(0x6abc))
        await h.req(attach(2, 0), expect=Status.OK)
        await h.expect_lookup(0, 0x1abc, 1, deny(FaultReason.MAPPING, 1))
        await h.expect_lookup(1, 0x1abc, 1, allow(0x6abc))
    run(body)


def test_port0_gives_up_one_cycle_per_request_two_per_unmap():
    """While MAPs and UNMAPs stream back to back, lookup port 0 (presented a lookup in
    every cycle) accepts in all but one cycle per MAP and two per UNMAP: the cycles its
    comparators answer the executor's queries (``sim/perf.py`` checks every accepted
    lookup is answered)."""
    from viommu.sim.perf import measure_map_unmap
    r = measure_map_unmap(CoreParams(entries=8, endpoints=2), batch=8)
    assert r["map_lookup_rate"] == pytest.approx(1 - 1 / r["map_cycles"], abs=0.02)
    assert r["unmap_lookup_rate"] == pytest.approx(1 - 2 / r["unmap_cycles"], abs=0.02)
    assert r["map_lookup_rate"] < 1 and r["unmap_lookup_rate"] < r["map_lookup_rate"]


def test_lookup_port_query_parameter_is_checked():
    from viommu.rtl.core.lookup import LookupPort
    with pytest.raises(TypeError, match="query must be True or False"):
        LookupPort(CoreParams(entries=2, endpoints=1), query=1)
    plain = LookupPort(CoreParams(entries=2, endpoints=1))
    assert not plain.query and not hasattr(plain, "query_next")
