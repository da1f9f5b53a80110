"""Tests of the reference model (sim/model.py), the oracle of every RTL test.

The cases follow the status precedence documented in the model's module docstring and the
device rules of shared/spec/virtio-iommu.md. Every rejected request must leave the whole
model state (``snapshot()``) unchanged. A randomized differential test compares the model
with an independent page-granular brute-force implementation.
"""

import random
from typing import NamedTuple, Optional

import pytest

from viommu.rtl.core.layouts import (
    ReqType, Status, Feature, AttachFlag, MapFlag, ProbeType, ResvSubtype, FaultReason,
    FaultFlag, LookupVia, AttachReq, MapReq, ProbeResvMem, Config, REQ_READABLE_SIZE,
    pack, unpack,
)
from viommu.rtl.core.params import CoreParams, ResvRegion, DEFAULT_MSI_REGION
from viommu.sim.model import (
    DeviceModel, Mapping, Translation, ALL_FEATURES, attach, detach, map_, unmap, probe,
)


G = 4096
U64 = (1 << 64) - 1
U32 = (1 << 32) - 1
RW = MapFlag.READ | MapFlag.WRITE
R = MapFlag.READ
W = MapFlag.WRITE
MSI_START, MSI_END = 0xfee00000, 0xfeefffff

NO_MAP_UNMAP = ALL_FEATURES - {Feature.MAP_UNMAP}
NO_MMIO = ALL_FEATURES - {Feature.MMIO}
NO_PROBE = ALL_FEATURES - {Feature.PROBE}
NO_BYPASS_CONFIG = ALL_FEATURES - {Feature.BYPASS_CONFIG}


# --- helpers ----------------------------------------------------------------------------

def tail_status(out):
    """The status of a 4-byte answer; the tail's reserved bytes must be zero."""
    assert len(out) == 4, out
    assert out[1:] == bytes(3), "tail.reserved must be zero"
    return Status(out[0])


def do(m, req, wlen=None):
    return tail_status(m.execute(req, wlen))


def ok(m, req):
    st = do(m, req)
    assert st == Status.OK, (st, req)


def mappings_of(m, dom):
    """The mappings of domain ``dom`` as seen through snapshot() (None: no such domain)."""
    for dom_id, _bypass, maps in m.snapshot()[1]:
        if dom_id == dom:
            return maps
    return None


def ep_domain(m, ep):
    return dict(m.snapshot()[0]).get(ep)


def std_model(params=None, features=ALL_FEATURES, bypass=0, extra=()):
    """A model with some state, built with every feature, then switched to ``features``.

    Domain 1: endpoints 0 and 1, mapping [0x200000, 0x3fffff] -> 0x40000000 RW.
    Domain 2: endpoint 2, a bypass domain.
    Domain 3: endpoint 3, mapping [0x400000, 0x5fffff] -> 0x50000000 R.
    Endpoint 4 and above: unattached. (Addresses are 2 MiB aligned for big granules.)
    """
    m = DeviceModel(params if params is not None else CoreParams())
    for req in [attach(1, 0), attach(1, 1), attach(2, 2, AttachFlag.BYPASS), attach(3, 3),
                map_(1, 0x200000, 0x3fffff, 0x40000000, RW),
                map_(3, 0x400000, 0x5fffff, 0x50000000, R), *extra]:
        ok(m, req)
    m.features = frozenset(features)
    m.bypass = bypass
    return m


# --- every rejected request -------------------------------------------------------------

class Case(NamedTuple):
    name: str
    req: bytes
    expect: object                 # a Status, or b"" for "nothing written"
    params: Optional[dict] = None
    features: frozenset = ALL_FEATURES
    wlen: Optional[int] = None
    extra: tuple = ()
    bug: Optional[str] = None      # a known model bug: the case is a strict xfail


#: sim/model.py computes the unknown flag bits as ``flags & ~known_flags`` with
#: ``known_flags`` an ``enum.IntFlag``; ``~`` of an IntFlag only complements within the
#: flag's own members (``~AttachFlag.BYPASS == AttachFlag(0)``, ``~(READ|WRITE|MMIO) ==
#: MapFlag(0)``), so undefined bits (ATTACH bits 1..31 with BYPASS_CONFIG, MAP bits 3..31)
#: are accepted instead of answered INVAL.


#: Requests that are fully valid against std_model() (so that one change makes them fail).
VALID = {
    ReqType.ATTACH: attach(5, 4),
    ReqType.DETACH: detach(1, 0),
    ReqType.MAP:    map_(1, 0x1000000, 0x11fffff, 0x60000000),
    ReqType.UNMAP:  unmap(1, 0x200000, 0x3fffff),
    ReqType.PROBE:  probe(0),
}

DR = {"domain_range": (1, 100)}
IR = {"input_range": (0, 2**48 - 1)}
FULL4 = {"entries": 4}
FILL4 = (map_(1, 0x800000, 0x9fffff, 0), map_(3, 0xa00000, 0xbfffff, 0))


def _cases():
    c = []
    add = lambda *a, **k: c.append(Case(*a, **k))

    # Short readable parts, every type, every length.
    for rtype, full in VALID.items():
        assert len(full) == REQ_READABLE_SIZE[rtype]
        for n in range(1, len(full)):
            add(f"{rtype.name}-short-{n}", full[:n], Status.INVAL)

    # Reserved fields: every byte position.
    for i in range(4):
        for v in (0x01, 0x80):
            add(f"ATTACH-reserved-byte{i}-{v:#x}", attach(5, 4, reserved=v << 8 * i),
                Status.INVAL)
            add(f"UNMAP-reserved-byte{i}-{v:#x}",
                unmap(1, 0x200000, 0x3fffff, reserved=v << 8 * i), Status.INVAL)
    for i in range(8):
        for v in (0x01, 0x80):
            add(f"DETACH-reserved-byte{i}-{v:#x}", detach(1, 0, reserved=v << 8 * i),
                Status.INVAL)
    for i in range(64):
        add(f"PROBE-reserved-byte{i}", probe(0, reserved=(1 << (i % 8)) << 8 * i),
            Status.INVAL)
    add("PROBE-reserved-all-ones", probe(0, reserved=(1 << 512) - 1), Status.INVAL)

    # Unknown flag bits.
    add("ATTACH-F_BYPASS-without-BYPASS_CONFIG", attach(5, 4, AttachFlag.BYPASS),
        Status.INVAL, features=NO_BYPASS_CONFIG)
    add("ATTACH-F_BYPASS-without-BYPASS_CONFIG-existing-bypass-domain",
        attach(2, 4, AttachFlag.BYPASS), Status.INVAL, features=NO_BYPASS_CONFIG)
    for bit in (1, 2, 31):
        add(f"ATTACH-flag-bit{bit}", attach(5, 4, 1 << bit), Status.INVAL)
        add(f"ATTACH-flag-bit{bit}-without-BYPASS_CONFIG", attach(5, 4, 1 << bit),
            Status.INVAL, features=NO_BYPASS_CONFIG)
    add("MAP-MMIO-without-F_MMIO", map_(1, 0x1000000, 0x1000fff, 0, R | MapFlag.MMIO),
        Status.INVAL, features=NO_MMIO)
    for bit in (3, 4, 8, 31):
        add(f"MAP-flag-bit{bit}", map_(1, 0x1000000, 0x1000fff, 0, RW | (1 << bit)),
            Status.INVAL)
        add(f"MAP-flag-bit{bit}-without-F_MMIO",
            map_(1, 0x1000000, 0x1000fff, 0, RW | (1 << bit)), Status.INVAL,
            features=NO_MMIO)

    # Domain outside domain_range.
    for dom in (0, 101, U32):
        add(f"ATTACH-domain-{dom:#x}-out-of-range", attach(dom, 4), Status.RANGE, params=DR)
        add(f"DETACH-domain-{dom:#x}-out-of-range", detach(dom, 0), Status.RANGE, params=DR)
        add(f"MAP-domain-{dom:#x}-out-of-range", map_(dom, 0x1000000, 0x1000fff, 0),
            Status.RANGE, params=DR)
        add(f"UNMAP-domain-{dom:#x}-out-of-range", unmap(dom, 0x200000, 0x3fffff),
            Status.RANGE, params=DR)

    # Alignment -> RANGE.
    add("MAP-virt_start-misaligned", map_(1, 0x1000800, 0x1001fff, 0), Status.RANGE)
    add("MAP-virt_start-misaligned-by-1", map_(1, 0x1000001, 0x1001fff, 0), Status.RANGE)
    add("MAP-phys_start-misaligned", map_(1, 0x1000000, 0x1000fff, 0x800), Status.RANGE)
    add("MAP-phys_start-misaligned-by-1", map_(1, 0x1000000, 0x1000fff, 1), Status.RANGE)
    add("MAP-virt_end+1-misaligned", map_(1, 0x1000000, 0x1000ffe, 0), Status.RANGE)
    add("MAP-virt_end-page-aligned", map_(1, 0x1000000, 0x1001000, 0), Status.RANGE)
    big = {"page_size_mask": U64 & ~((1 << 21) - 1)}     # 2 MiB granule
    add("MAP-2M-granule-4K-aligned-start", map_(1, 0x1001000, 0x11fffff, 0), Status.RANGE,
        params=big)
    add("MAP-2M-granule-4K-aligned-end", map_(1, 0x1000000, 0x1000fff, 0), Status.RANGE,
        params=big)
    add("MAP-2M-granule-4K-aligned-phys", map_(1, 0x1000000, 0x11fffff, 0x1000),
        Status.RANGE, params=big)

    # virt_end < virt_start -> INVAL.
    add("MAP-end-below-start", map_(1, 0x1001000, 0x1000fff, 0), Status.INVAL)
    add("MAP-end-far-below-start", map_(1, 0x1000000, 0xfff, 0), Status.INVAL)
    add("UNMAP-end-below-start", unmap(1, 0x300000, 0x2fffff), Status.INVAL)
    add("UNMAP-end-below-start-by-1", unmap(1, 0x300001, 0x300000), Status.INVAL)

    # Out of input_range -> RANGE.
    add("MAP-straddles-input-end", map_(1, 2**48 - G, 2**48 + G - 1, 0), Status.RANGE,
        params=IR)
    add("MAP-above-input-end", map_(1, 2**48, 2**48 + G - 1, 0), Status.RANGE, params=IR)
    add("MAP-top-of-64bit-above-input", map_(1, 2**64 - G, U64, 0), Status.RANGE,
        params=IR)
    add("MAP-below-input-start", map_(1, 0xff000, 0x100fff, 0), Status.RANGE,
        params={"input_range": (0x100000, 2**48 - 1)})
    add("UNMAP-straddles-input-end", unmap(1, 0, 2**48), Status.RANGE, params=IR)
    add("UNMAP-above-input-end", unmap(1, 2**48, U64), Status.RANGE, params=IR)
    add("UNMAP-below-input-start", unmap(1, 0xfffff, 0x3fffff), Status.RANGE,
        params={"input_range": (0x100000, 2**48 - 1)})

    # phys_start + size beyond 2**64 -> RANGE.
    add("MAP-phys-overflow", map_(1, 0x1000000, 0x1001fff, 2**64 - G), Status.RANGE)
    add("MAP-phys-overflow-whole-space", map_(1, 0, U64, G), Status.RANGE)

    # NOENT.
    for ep in (8, 0xffff, U32):
        add(f"ATTACH-unknown-endpoint-{ep:#x}", attach(5, ep), Status.NOENT)
        add(f"DETACH-unknown-endpoint-{ep:#x}", detach(1, ep), Status.NOENT)
        add(f"PROBE-unknown-endpoint-{ep:#x}", probe(ep), Status.NOENT)
    sparse = {"endpoints": (0, 1, 2, 3, 0x1234)}
    add("ATTACH-unknown-endpoint-sparse-ids", attach(5, 4), Status.NOENT, params=sparse)
    add("PROBE-unknown-endpoint-sparse-ids", probe(4), Status.NOENT, params=sparse)
    add("MAP-domain-absent", map_(7, 0x1000000, 0x1000fff, 0), Status.NOENT)
    add("UNMAP-domain-absent", unmap(7, 0, U64), Status.NOENT)

    # Bypass domain.
    add("MAP-bypass-domain", map_(2, 0x1000000, 0x1000fff, 0), Status.INVAL)
    add("UNMAP-bypass-domain", unmap(2, 0, U64), Status.INVAL)

    # ATTACH_F_BYPASS mismatch with the existing domain.
    add("ATTACH-bypass-flag-to-translated-domain", attach(1, 4, AttachFlag.BYPASS),
        Status.INVAL)
    add("ATTACH-no-flag-to-bypass-domain", attach(2, 4), Status.INVAL)
    add("ATTACH-member-with-bypass-flag", attach(1, 0, AttachFlag.BYPASS), Status.INVAL)
    add("ATTACH-move-to-mismatched-domain", attach(2, 0), Status.INVAL)
    add("ATTACH-last-member-with-other-flag", attach(3, 3, AttachFlag.BYPASS), Status.INVAL)

    # DETACH of an endpoint that is not in that domain.
    add("DETACH-unattached-endpoint", detach(1, 4), Status.INVAL)
    add("DETACH-endpoint-in-other-domain", detach(3, 0), Status.INVAL)
    add("DETACH-domain-absent", detach(9, 0), Status.INVAL)

    # MAP over the MSI reserved region of an attached endpoint.
    for name, (s, e) in {
        "identical": (MSI_START, MSI_END),
        "first-page": (MSI_START, MSI_START + G - 1),
        "last-page": (MSI_END - G + 1, MSI_END),
        "straddle-start": (0xfe000000, MSI_START + G - 1),
        "straddle-end": (MSI_END - G + 1, 0xfef00fff),
        "enclosing": (0xfe000000, 0xffffffff),
        "whole-space": (0, U64),
    }.items():
        add(f"MAP-over-MSI-{name}", map_(1, s, e, 0), Status.INVAL)
        add(f"MAP-over-MSI-{name}-domain3", map_(3, s, e, 0), Status.INVAL)

    # MAP over a RESERVED region.
    resv = {"resv_regions": (ResvRegion(0x8000000, 0x80fffff), DEFAULT_MSI_REGION)}
    add("MAP-over-RESERVED", map_(1, 0x80ff000, 0x8100fff, 0), Status.INVAL, params=resv)

    # MAP overlapping an existing mapping [0x200000, 0x3fffff] of domain 1.
    for name, (s, e) in {
        "identical": (0x200000, 0x3fffff),
        "inside": (0x300000, 0x300fff),
        "first-page": (0x200000, 0x200fff),
        "last-page": (0x3ff000, 0x3fffff),
        "straddle-start": (0x1ff000, 0x200fff),
        "straddle-end": (0x3ff000, 0x400fff),
        "enclosing": (0x100000, 0x4fffff),
        "enclosing-to-top": (0x100000, MSI_START - 1),
    }.items():
        add(f"MAP-overlap-{name}", map_(1, s, e, 0x70000000), Status.INVAL)
    add("MAP-overlap-domain3-identical", map_(3, 0x400000, 0x5fffff, 0), Status.INVAL)

    # Table full.
    add("MAP-table-full", map_(1, 0x1000000, 0x1000fff, 0), Status.NOMEM,
        params=FULL4, extra=FILL4)
    add("MAP-table-full-other-domain", map_(3, 0x1000000, 0x1000fff, 0), Status.NOMEM,
        params=FULL4, extra=FILL4)

    # MAP_UNMAP not negotiated.
    add("MAP-without-MAP_UNMAP", VALID[ReqType.MAP], Status.UNSUPP, features=NO_MAP_UNMAP)
    add("UNMAP-without-MAP_UNMAP", VALID[ReqType.UNMAP], Status.UNSUPP,
        features=NO_MAP_UNMAP)

    # PROBE without F_PROBE: nothing written, whatever the request.
    for name, req in {"valid": probe(0), "unknown-ep": probe(8), "short": probe(0)[:10],
                      "reserved": probe(0, reserved=1), "head-only": probe(0)[:4]}.items():
        add(f"PROBE-without-F_PROBE-{name}", req, b"", features=NO_PROBE)
    add("PROBE-without-F_PROBE-small-wlen", probe(0), b"", features=NO_PROBE, wlen=4)

    # PROBE with a writable part too small.
    for wlen in (4, 8, 20, 64, 67):
        add(f"PROBE-wlen-{wlen}", probe(0), Status.INVAL, wlen=wlen)

    # UNMAP partly covering a mapping.
    add("UNMAP-partial-head", unmap(1, 0x200000, 0x2fffff), Status.RANGE)
    add("UNMAP-partial-tail", unmap(1, 0x300000, 0x4fffff), Status.RANGE)
    add("UNMAP-partial-middle-byte", unmap(1, 0x300000, 0x300000), Status.RANGE)
    add("UNMAP-partial-unaligned-start", unmap(1, 0x200001, 0x3fffff), Status.RANGE)
    add("UNMAP-partial-one-byte-short", unmap(1, 0x200000, 0x3ffffe), Status.RANGE)
    add("UNMAP-one-whole-one-partial", unmap(1, 0x100000, 0x2fffff), Status.RANGE,
        extra=(map_(1, 0x100000, 0x1fffff, 0),))

    # Unknown request types and the empty request: nothing written.
    for t in (0, 6, 7, 0x80, 255):
        add(f"type-{t}", bytes([t]) + VALID[ReqType.ATTACH][1:], b"")
        add(f"type-{t}-bare", bytes([t]), b"")
        add(f"type-{t}-long", bytes([t]) + bytes(200), b"")
    add("empty", b"", b"")
    add("empty-wlen-0", b"", b"", wlen=0)

    # Precedence (first matching rule decides).
    add("ATTACH-prec-reserved-before-flags", attach(0, 99, 2, reserved=1), Status.INVAL,
        params=DR)
    add("ATTACH-prec-flags-before-domain-range", attach(0, 99, 2), Status.INVAL, params=DR)
    add("ATTACH-prec-flags-before-domain-range-no-BYPASS_CONFIG", attach(0, 99, 1),
        Status.INVAL, params=DR, features=NO_BYPASS_CONFIG)
    add("ATTACH-prec-domain-range-before-endpoint", attach(0, 99), Status.RANGE, params=DR)
    add("ATTACH-prec-endpoint-before-mismatch", attach(1, 99, AttachFlag.BYPASS),
        Status.NOENT)
    add("DETACH-prec-reserved-before-range", detach(0, 99, reserved=1), Status.INVAL,
        params=DR)
    add("DETACH-prec-range-before-endpoint", detach(0, 99), Status.RANGE, params=DR)
    add("DETACH-prec-endpoint-before-membership", detach(3, 99), Status.NOENT)
    add("MAP-prec-unsupp-before-flags", map_(1, 1, 0, 1, 0xff), Status.UNSUPP,
        features=NO_MAP_UNMAP)
    add("MAP-prec-flags-before-domain-range", map_(0, 0x1000, 0x1fff, 0, 8), Status.INVAL,
        params=DR)
    add("MAP-prec-mmio-flag-before-domain-range", map_(0, 0x1000, 0x1fff, 0, 4),
        Status.INVAL, params=DR, features=NO_MMIO)
    add("MAP-prec-domain-range-before-order", map_(0, 0x2000, 0x1fff, 0), Status.RANGE,
        params=DR)
    add("MAP-prec-align-before-order", map_(1, 0x2800, 0x1fff, 0), Status.RANGE)
    add("MAP-prec-order-before-input-range", map_(1, 2**48 + 0x2000, 2**48 + 0xfff, 0),
        Status.INVAL, params=IR)
    add("MAP-prec-input-range-before-noent", map_(7, 2**48, 2**48 + G - 1, 0),
        Status.RANGE, params=IR)
    add("MAP-prec-phys-overflow-before-noent", map_(7, 0, 0x1fff, 2**64 - G),
        Status.RANGE)
    add("MAP-prec-noent-before-table-full", map_(7, 0x1000000, 0x1000fff, 0),
        Status.NOENT, params=FULL4, extra=FILL4)
    add("MAP-prec-bypass-before-msi", map_(2, MSI_START, MSI_END, 0), Status.INVAL)
    add("MAP-prec-overlap-before-table-full", map_(1, 0x200000, 0x200fff, 0), Status.INVAL,
        params=FULL4, extra=FILL4)
    add("MAP-prec-msi-before-table-full", map_(1, MSI_START, MSI_END, 0), Status.INVAL,
        params=FULL4, extra=FILL4)
    add("UNMAP-prec-unsupp-before-reserved", unmap(1, 1, 0, reserved=1), Status.UNSUPP,
        features=NO_MAP_UNMAP)
    add("UNMAP-prec-reserved-before-range", unmap(0, 0, 0xfff, reserved=1), Status.INVAL,
        params=DR)
    add("UNMAP-prec-range-before-order", unmap(0, 0x2000, 0x1fff), Status.RANGE, params=DR)
    add("UNMAP-prec-order-before-input-range", unmap(1, 2**48 + 0x2000, 2**48 + 0xfff),
        Status.INVAL, params=IR)
    add("UNMAP-prec-input-range-before-noent", unmap(7, 0, 2**48), Status.RANGE,
        params=IR)
    add("UNMAP-prec-bypass-before-anything", unmap(2, 0x200000, 0x2fffff), Status.INVAL)
    add("PROBE-prec-reserved-before-endpoint", probe(99, reserved=1 << 100), Status.INVAL)
    add("PROBE-prec-wlen-before-reserved", probe(0, reserved=1), Status.INVAL, wlen=20)
    add("PROBE-prec-wlen-before-endpoint", probe(99), Status.INVAL, wlen=20)
    return c


CASES = _cases()


def test_case_names_unique():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("case", [
    pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=c.bug)) if c.bug else c
    for c in CASES], ids=[c.name for c in CASES])
def test_rejected_request(case):
    params = CoreParams(**(case.params or {}))
    m = std_model(params, case.features, extra=case.extra)
    before = m.snapshot()
    out = m.execute(case.req, case.wlen)
    if isinstance(case.expect, bytes):
        assert out == case.expect
    elif case.req[0] == ReqType.PROBE:
        size = params.probe_size + 4
        if case.wlen is not None and case.wlen < size:
            size = case.wlen
        assert len(out) == size
        assert out[:-4] == bytes(size - 4), "no property may be written unless OK"
        assert tail_status(out[-4:]) == case.expect
    else:
        assert tail_status(out) == case.expect
    assert m.snapshot() == before, "a rejected request changed the state"


def test_valid_requests_are_valid():
    """The VALID requests (from which the rejection cases are derived) succeed."""
    for rtype, req in VALID.items():
        m = std_model()
        out = m.execute(req)
        if rtype == ReqType.PROBE:
            assert len(out) == m.params.probe_size + 4
            assert tail_status(out[-4:]) == Status.OK
        else:
            assert tail_status(out) == Status.OK
    # ... also under the restricted parameters the cases use.
    for kw in (DR, IR, FULL4):
        m = std_model(CoreParams(**kw))
        for rtype in (ReqType.ATTACH, ReqType.MAP, ReqType.UNMAP, ReqType.DETACH):
            assert do(m, VALID[rtype]) == Status.OK, (kw, rtype)


def test_boundaries_that_are_accepted():
    # domain_range ends are inclusive.
    m = std_model(CoreParams(domain_range=(1, 100)))
    ok(m, attach(100, 4))
    ok(m, map_(100, 0, 0xfff, 0))
    # input_range end is inclusive.
    m = std_model(CoreParams(input_range=(0x100000, 2**48 - 1)))
    ok(m, map_(1, 2**48 - G, 2**48 - 1, 0))
    ok(m, map_(1, 0x100000, 0x100fff, 0))
    ok(m, unmap(1, 0x100000, 2**48 - 1))
    # phys reaching exactly the top of the space.
    m = std_model()
    ok(m, map_(1, 0x1000000, 0x1001fff, 2**64 - 2 * G))
    assert m.translate(0, 0x1001fff, False).phys == U64
    # Mappings adjacent to the MSI region and to an existing mapping.
    ok(m, map_(1, MSI_START - G, MSI_START - 1, 0))
    ok(m, map_(1, MSI_END + 1, MSI_END + G, 0))
    ok(m, map_(1, 0x1ff000, 0x1fffff, 0))
    ok(m, map_(1, 0x400000, 0x400fff, 0))
    # A domain whose endpoints have no MSI region may map over it.
    m = std_model(CoreParams(resv_regions={2: [DEFAULT_MSI_REGION]}))
    ok(m, map_(1, MSI_START, MSI_END, MSI_START))
    # The table holds exactly `entries` mappings.
    m = std_model(CoreParams(entries=4), extra=FILL4)
    assert m.n_mappings == 4
    ok(m, unmap(3, 0xa00000, 0xbfffff))
    ok(m, map_(1, 0x1000000, 0x1000fff, 0))
    assert do(m, map_(1, 0x2000000, 0x2000fff, 0)) == Status.NOMEM
    # MMIO flag with F_MMIO, flags 0 (no access).
    m = std_model()
    ok(m, map_(1, 0x1000000, 0x1000fff, 0x2000, R | W | MapFlag.MMIO))
    ok(m, map_(1, 0x1001000, 0x1001fff, 0x3000, 0))


def test_ignored_bytes():
    """head.reserved and bytes beyond the structure are ignored; wlen beyond the need too."""
    m = std_model()
    req = pack(AttachReq, head={"type": ReqType.ATTACH, "reserved": 0xffffff},
               domain=5, endpoint=4)
    ok(m, req)
    assert ep_domain(m, 4) == 5
    ok(m, map_(5, 0, 0xfff, 0x1000) + b"\xff" * 17)
    assert mappings_of(m, 5) == (Mapping(0, 0xfff, 0x1000, int(RW)),)
    assert m.execute(unmap(5, 0, 0xfff), wlen=100) == bytes(4)
    assert mappings_of(m, 5) == ()
    out = m.execute(probe(0) + b"\xff" * 8, wlen=1000)
    assert len(out) == m.params.probe_size + 4 and tail_status(out[-4:]) == Status.OK


@pytest.mark.parametrize("req,wlen", [
    (probe(0)[:10], 8), (probe(0)[:10], 20), (probe(0), 4), (probe(0), 30),
    (attach(5, 4), 4), (map_(1, 0x1000000, 0x1000fff, 0), 5),
], ids=["probe-short-wlen8", "probe-short-wlen20", "probe-wlen4", "probe-wlen30",
        "attach-wlen4", "map-wlen5"])
def test_used_length_never_exceeds_writable_part(req, wlen):
    m = std_model()
    out = m.execute(req, wlen)
    assert len(out) <= wlen
    if req[0] == ReqType.PROBE:
        assert len(out) == wlen and tail_status(out[-4:]) == Status.INVAL


@pytest.mark.parametrize("req,wlen", [(probe(0), 0), (probe(0), 3), (attach(5, 4), 0),
                                      (map_(1, 0x1000000, 0x1000fff, 0), 2)],
                         ids=["probe-wlen0", "probe-wlen3", "attach-wlen0", "map-wlen2"])
def test_answer_keeps_its_tail_when_writable_part_is_under_4_bytes(req, wlen):
    """The core always answers with a 4-byte tail; a writable part too small for it is a
    ring error that the virtqueue engine reports (DEVICE_NEEDS_RESET)."""
    m = std_model()
    out = m.execute(req, wlen)
    assert len(out) == 4


# --- UNMAP: the spec's seven examples ---------------------------------------------------

PHYS_BASE = 0x100000000

def _pages(a, b):
    return a * G, (b + 1) * G - 1


UNMAP_EXAMPLES = [
    # (maps, unmap, status, remaining maps), page units, inclusive
    ([], (0, 4), Status.OK, []),
    ([(0, 9)], (0, 9), Status.OK, []),
    ([(0, 4), (5, 9)], (0, 9), Status.OK, []),
    ([(0, 9)], (0, 4), Status.RANGE, [(0, 9)]),
    ([(0, 4), (5, 9)], (0, 4), Status.OK, [(5, 9)]),
    ([(0, 4)], (0, 9), Status.OK, []),
    ([(0, 4), (10, 14)], (0, 14), Status.OK, []),
]


@pytest.mark.parametrize("maps,rng,status,remaining", UNMAP_EXAMPLES,
                         ids=[f"example{i + 1}" for i in range(len(UNMAP_EXAMPLES))])
def test_unmap_spec_examples(maps, rng, status, remaining):
    m = DeviceModel()
    ok(m, attach(1, 0))
    for a, b in maps:
        s, e = _pages(a, b)
        ok(m, map_(1, s, e, PHYS_BASE + s))
    before = m.snapshot()
    assert do(m, unmap(1, *_pages(*rng))) == status
    if status != Status.OK:
        assert m.snapshot() == before
    expect = tuple(Mapping(*_pages(a, b), PHYS_BASE + a * G, int(RW)) for a, b in remaining)
    assert mappings_of(m, 1) == expect
    for page in range(16):
        live = any(a <= page <= b for a, b in remaining)
        for off in (0, G - 1):
            iova = page * G + off
            for write in (False, True):
                t = m.translate(0, iova, write)
                assert t.allowed == live, (page, write)
                if live:
                    assert t.phys == PHYS_BASE + iova and t.via == LookupVia.MAPPING
                else:
                    assert t.reason == FaultReason.MAPPING


def test_unmap_all_or_nothing_with_several_mappings():
    m = DeviceModel()
    ok(m, attach(1, 0))
    for a, b in [(0, 1), (2, 3), (4, 9)]:
        ok(m, map_(1, *_pages(a, b), 0))
    before = m.snapshot()
    # Covers (0,1) and (2,3) wholly, (4,9) partly: nothing may be removed.
    assert do(m, unmap(1, *_pages(0, 5))) == Status.RANGE
    assert m.snapshot() == before
    ok(m, unmap(1, *_pages(0, 3)))
    assert [(mp.start, mp.end) for mp in mappings_of(m, 1)] == [_pages(4, 9)]
    # Unmap ranges need no alignment: a byte range enclosing the mapping is fine.
    ok(m, unmap(1, 4 * G - 1, 10 * G))
    assert mappings_of(m, 1) == ()


# --- ATTACH / DETACH semantics ----------------------------------------------------------

def test_reset_state_and_attach_creates_domain():
    m = DeviceModel(bypass=1)
    assert m.snapshot() == ((), ())
    ok(m, attach(7, 3))
    assert m.snapshot() == (((3, 7),), ((7, False, ()),))
    ok(m, attach(8, 4, AttachFlag.BYPASS))
    assert mappings_of(m, 8) == () and (8, True, ()) in m.snapshot()[1]
    m.reset()
    assert m.snapshot() == ((), ()) and m.bypass == 1


def test_reattach_moves_endpoint():
    m = std_model()
    ok(m, attach(3, 0))                      # endpoint 0: domain 1 -> domain 3
    assert ep_domain(m, 0) == 3
    assert ep_domain(m, 1) == 1              # domain 1 survives (endpoint 1 still there)
    assert len(mappings_of(m, 1)) == 1
    t = m.translate(0, 0x400000, False)      # now sees domain 3's mapping
    assert t.allowed and t.phys == 0x50000000
    assert not m.translate(0, 0x200000, False).allowed
    assert m.translate(1, 0x200000, False).allowed


def test_last_endpoint_leaving_kills_domain_and_mappings():
    m = std_model()
    ok(m, attach(3, 0))
    ok(m, attach(3, 1))                      # last endpoint leaves domain 1 by moving
    assert mappings_of(m, 1) is None
    assert do(m, map_(1, 0, 0xfff, 0)) == Status.NOENT
    ok(m, attach(1, 4))                      # a new domain 1 has no mappings
    assert mappings_of(m, 1) == ()
    assert not m.translate(4, 0x200000, False).allowed
    ok(m, map_(1, 0x200000, 0x3fffff, 0x1234000))   # and the old range is free again
    assert m.translate(4, 0x200000, False).phys == 0x1234000
    # Last endpoint leaving by DETACH.
    ok(m, detach(3, 3))
    ok(m, detach(3, 0))
    assert len(mappings_of(m, 3)) == 1       # endpoint 1 still in domain 3
    ok(m, detach(3, 1))
    assert mappings_of(m, 3) is None
    assert do(m, unmap(3, 0, U64)) == Status.NOENT
    ok(m, attach(3, 0))
    assert mappings_of(m, 3) == ()
    # Bypass domain dies too, and may come back as a translated one.
    ok(m, detach(2, 2))
    assert mappings_of(m, 2) is None
    ok(m, attach(2, 2))
    assert (2, False, ()) in m.snapshot()[1]


def test_attach_same_domain_is_noop():
    m = std_model()
    before = m.snapshot()
    ok(m, attach(1, 0))
    ok(m, attach(2, 2, AttachFlag.BYPASS))
    ok(m, attach(3, 3))                      # the only endpoint: the domain must survive
    assert m.snapshot() == before


def test_detach_then_unattached_reaches_nothing():
    m = std_model()
    ok(m, detach(1, 0))
    assert ep_domain(m, 0) is None
    t = m.translate(0, 0x200000, False)
    assert not t.allowed and t.reason == FaultReason.DOMAIN
    assert m.translate(1, 0x200000, False).allowed


# --- full 64-bit ------------------------------------------------------------------------

def test_map_top_page_of_64bit_space():
    m = DeviceModel()
    ok(m, attach(1, 0))
    ok(m, map_(1, 2**64 - G, U64, 0x7000))
    assert mappings_of(m, 1) == (Mapping(2**64 - G, U64, 0x7000, int(RW)),)
    t = m.translate(0, U64, True)
    assert t.allowed and t.phys == 0x7fff and t.via == LookupVia.MAPPING
    assert m.translate(0, 2**64 - G, False).phys == 0x7000
    assert not m.translate(0, 2**64 - G - 1, False).allowed
    assert do(m, map_(1, 2**64 - 2 * G, U64, 0)) == Status.INVAL    # overlap
    assert do(m, unmap(1, 2**64 - 2 * G, U64 - 1)) == Status.RANGE
    ok(m, unmap(1, 2**64 - G, U64))
    assert mappings_of(m, 1) == ()


def test_identity_map_whole_space():
    m = DeviceModel(CoreParams(resv_regions={}))
    ok(m, attach(1, 0))
    ok(m, map_(1, 0, U64, 0))
    assert mappings_of(m, 1) == (Mapping(0, U64, 0, int(RW)),)
    for iova in (0, 1, 0xfee00000, 2**63, U64 - 1, U64):
        for write in (False, True):
            t = m.translate(0, iova, write)
            assert t.allowed and t.phys == iova and t.via == LookupVia.MAPPING
    assert do(m, map_(1, 0x1000, 0x1fff, 0)) == Status.INVAL
    assert do(m, unmap(1, 0, U64 - 1)) == Status.RANGE
    ok(m, unmap(1, 0, U64))
    assert mappings_of(m, 1) == ()


def test_identity_map_around_msi_region():
    """With the default MSI region, the identity domain is two MAPs around it."""
    m = DeviceModel()
    ok(m, attach(1, 0))
    assert do(m, map_(1, 0, U64, 0)) == Status.INVAL
    ok(m, map_(1, 0, MSI_START - 1, 0))
    ok(m, map_(1, MSI_END + 1, U64, MSI_END + 1))
    for iova in (0, MSI_START - 1, MSI_END + 1, U64):
        t = m.translate(0, iova, True)
        assert t.allowed and t.phys == iova and t.via == LookupVia.MAPPING
    t = m.translate(0, MSI_START + 0x1000, True)
    assert t.allowed and t.via == LookupVia.MSI and t.phys == MSI_START + 0x1000
    assert not m.translate(0, MSI_START + 0x1000, False).allowed


# --- translate() ------------------------------------------------------------------------

def _denied(t, reason, write):
    assert not t.allowed
    assert t.reason == reason
    access = FaultFlag.WRITE if write else FaultFlag.READ
    assert t.flags == int(access | FaultFlag.ADDRESS)
    assert t.via == LookupVia.NONE


@pytest.mark.parametrize("write", [False, True])
def test_translate_unknown_endpoint(write):
    for features, bypass in [(ALL_FEATURES, 0), (ALL_FEATURES, 1),
                             (ALL_FEATURES | {Feature.BYPASS}, 1)]:
        m = std_model(features=features, bypass=bypass)
        _denied(m.translate(8, 0x200000, write), FaultReason.UNKNOWN, write)
        _denied(m.translate(0xffff, 0, write), FaultReason.UNKNOWN, write)
    m = DeviceModel(CoreParams(endpoints=(0, 5)))
    _denied(m.translate(1, 0, write), FaultReason.UNKNOWN, write)


@pytest.mark.parametrize("write", [False, True])
def test_translate_unattached(write):
    # No bypass: denied, reason DOMAIN.
    for features, bypass in [(ALL_FEATURES, 0), (NO_BYPASS_CONFIG, 1),
                             (NO_BYPASS_CONFIG, 0)]:
        m = std_model(features=features, bypass=bypass)
        assert not m.unattached_bypass()
        _denied(m.translate(4, 0x200000, write), FaultReason.DOMAIN, write)
    # bypass config byte with BYPASS_CONFIG: identity.
    m = std_model(bypass=1)
    assert m.unattached_bypass()
    t = m.translate(4, 0x123456789, write)
    assert t == Translation(True, phys=0x123456789, via=LookupVia.BYPASS)
    t = m.translate(4, MSI_START, write)     # reserved regions do not apply in bypass
    assert t.allowed and t.via == LookupVia.BYPASS
    # Attached endpoints are not affected by the bypass byte.
    assert not m.translate(0, 0x100000, write).allowed
    # F_BYPASS (superseded) negotiated: identity too.
    m = std_model(features=NO_BYPASS_CONFIG | {Feature.BYPASS})
    t = m.translate(4, U64, write)
    assert t == Translation(True, phys=U64, via=LookupVia.BYPASS)


@pytest.mark.parametrize("write", [False, True])
def test_translate_bypass_domain(write):
    for bypass in (0, 1):
        m = std_model(bypass=bypass)
        for iova in (0, 0x200000, MSI_START, U64):
            t = m.translate(2, iova, write)
            assert t == Translation(True, phys=iova, via=LookupVia.BYPASS)


def test_translate_msi_window():
    m = std_model()
    for iova in (MSI_START, MSI_START + 0x1004, MSI_END):
        t = m.translate(0, iova, True)
        assert t == Translation(True, phys=iova, via=LookupVia.MSI)
        _denied(m.translate(0, iova, False), FaultReason.MAPPING, False)
    _denied(m.translate(0, MSI_START - 1, True), FaultReason.MAPPING, True)
    _denied(m.translate(0, MSI_END + 1, True), FaultReason.MAPPING, True)
    # MSI region of an endpoint in a domain that maps over it (attached later): the
    # region wins for that endpoint.
    m = DeviceModel(CoreParams(resv_regions={1: [DEFAULT_MSI_REGION]}))
    ok(m, attach(1, 0))
    ok(m, map_(1, MSI_START, MSI_END, 0x10000000, R))
    ok(m, attach(1, 1))
    assert m.translate(0, MSI_START, False).phys == 0x10000000
    _denied(m.translate(1, MSI_START, False), FaultReason.MAPPING, False)
    assert m.translate(1, MSI_START, True).via == LookupVia.MSI


@pytest.mark.parametrize("write", [False, True])
def test_translate_reserved_region(write):
    rr = ResvRegion(0x8000000, 0x80fffff, ResvSubtype.RESERVED)
    m = DeviceModel(CoreParams(resv_regions={0: [rr, DEFAULT_MSI_REGION], 1: []}))
    ok(m, attach(1, 1))
    ok(m, map_(1, 0x8000000, 0x80fffff, 0x8000000))      # endpoint 1 has no region
    ok(m, attach(1, 0))
    for iova in (rr.start, rr.start + 0x800, rr.end):
        _denied(m.translate(0, iova, write), FaultReason.MAPPING, write)
        assert m.translate(1, iova, write).phys == iova
    assert do(m, map_(1, 0x7fff000, 0x7ffffff, 0)) == Status.OK
    assert m.translate(0, 0x7fff000, write).allowed
    # With the endpoint attached, the region cannot be mapped in its domain.
    assert do(m, map_(1, 0x80ff000, 0x8100fff, 0)) == Status.INVAL


def test_translate_permissions():
    m = std_model()
    ok(m, map_(1, 0x1000000, 0x1000fff, 0xa000, R))
    ok(m, map_(1, 0x1001000, 0x1001fff, 0xb000, W))
    ok(m, map_(1, 0x1002000, 0x1002fff, 0xc000, 0))
    ok(m, map_(1, 0x1003000, 0x1003fff, 0xd000, RW))
    ok(m, map_(1, 0x1004000, 0x1004fff, 0xe000, R | MapFlag.MMIO))
    assert m.translate(0, 0x1000010, False) == Translation(True, 0xa010, False,
                                                           LookupVia.MAPPING)
    _denied(m.translate(0, 0x1000010, True), FaultReason.MAPPING, True)
    assert m.translate(0, 0x1001010, True) == Translation(True, 0xb010, False,
                                                          LookupVia.MAPPING)
    _denied(m.translate(0, 0x1001010, False), FaultReason.MAPPING, False)
    for write in (False, True):
        _denied(m.translate(0, 0x1002000, write), FaultReason.MAPPING, write)
        assert m.translate(0, 0x1003fff, write).phys == 0xdfff
        _denied(m.translate(0, 0x1005000, write), FaultReason.MAPPING, write)
    t = m.translate(1, 0x1004abc, False)      # second endpoint of the same domain
    assert t == Translation(True, 0xeabc, True, LookupVia.MAPPING)
    _denied(m.translate(0, 0x1004abc, True), FaultReason.MAPPING, True)
    # Endpoint 3's domain is separate.
    _denied(m.translate(3, 0x1000010, False), FaultReason.MAPPING, False)
    assert m.translate(3, 0x4abcde, False).phys == 0x500abcde

    # write_only_reads: reads through a write-only mapping are allowed.
    m = std_model(CoreParams(write_only_reads=True))
    ok(m, map_(1, 0x1001000, 0x1001fff, 0xb000, W))
    ok(m, map_(1, 0x1002000, 0x1002fff, 0xc000, 0))
    ok(m, map_(1, 0x1000000, 0x1000fff, 0xa000, R))
    assert m.translate(0, 0x1001010, False) == Translation(True, 0xb010, False,
                                                           LookupVia.MAPPING)
    _denied(m.translate(0, 0x1002000, False), FaultReason.MAPPING, False)
    _denied(m.translate(0, 0x1000000, True), FaultReason.MAPPING, True)   # never writes


def test_translate_phys_offset_large_mapping():
    m = DeviceModel(CoreParams(resv_regions={}))
    ok(m, attach(9, 0))
    vs, ve, ps = 0x7f0000000000, 0x7f00ffffffff, 0x123400000000
    ok(m, map_(9, vs, ve, ps))
    rng = random.Random(5)
    for _ in range(200):
        iova = rng.randint(vs, ve)
        assert m.translate(0, iova, rng.random() < 0.5).phys == ps + (iova - vs)
    _denied(m.translate(0, vs - 1, False), FaultReason.MAPPING, False)
    _denied(m.translate(0, ve + 1, True), FaultReason.MAPPING, True)


# --- PROBE answer -----------------------------------------------------------------------

def _check_resv_prop(raw, subtype, start, end):
    assert raw[0:2] == (ProbeType.RESV_MEM).to_bytes(2, "little")
    assert raw[2:4] == (20).to_bytes(2, "little")
    assert raw[4] == subtype
    assert raw[5:8] == bytes(3)
    assert raw[8:16] == start.to_bytes(8, "little")
    assert raw[16:24] == end.to_bytes(8, "little")
    v = unpack(ProbeResvMem, raw)
    assert (v.head.type, v.head.reserved, v.head.length) == (1, 0, 20)
    assert (v.subtype, v.start, v.end) == (subtype, start, end)


def test_probe_default_msi():
    m = DeviceModel()
    assert m.params.probe_size == 64
    out = m.execute(probe(3))
    assert len(out) == 64 + 4
    _check_resv_prop(out[:24], ResvSubtype.MSI, MSI_START, MSI_END)
    assert out[24:64] == bytes(40)
    assert out[64:] == bytes(4)              # status OK, tail reserved zero
    assert m.snapshot() == ((), ())          # PROBE changes nothing
    assert m.execute(probe(3), wlen=68) == out
    assert m.execute(probe(3), wlen=4096) == out


def test_probe_several_regions_and_none():
    regions = [ResvRegion(0x1000, 0x1fff), DEFAULT_MSI_REGION,
               ResvRegion(2**64 - 2**20, U64)]
    p = CoreParams(resv_regions={0: regions, 1: []})
    assert p.probe_size == 80                  # 3 * 24 + 4-byte end marker, rounded to 8
    m = DeviceModel(p)
    out = m.execute(probe(0))
    assert len(out) == 84
    _check_resv_prop(out[0:24], ResvSubtype.RESERVED, 0x1000, 0x1fff)
    _check_resv_prop(out[24:48], ResvSubtype.MSI, MSI_START, MSI_END)
    _check_resv_prop(out[48:72], ResvSubtype.RESERVED, 2**64 - 2**20, U64)
    assert out[72:] == bytes(12)
    assert m.execute(probe(1)) == bytes(84)    # no region: all zero, status OK
    # An explicit probe_size that just holds the properties is allowed (no end marker).
    m = DeviceModel(CoreParams(probe_size=24))
    out = m.execute(probe(0))
    assert len(out) == 28 and out[24:] == bytes(4)
    _check_resv_prop(out[:24], ResvSubtype.MSI, MSI_START, MSI_END)


def test_probe_error_answers():
    m = DeviceModel()
    out = m.execute(probe(8))
    assert out == bytes(64) + bytes([Status.NOENT, 0, 0, 0])
    out = m.execute(probe(0), wlen=12)
    assert out == bytes(8) + bytes([Status.INVAL, 0, 0, 0])


def test_config_bytes():
    p = CoreParams(domain_range=(1, 100), input_range=(0x1000, 2**48 - 1))
    raw = p.config_bytes(bypass=1)
    assert len(raw) == 40
    assert raw[0:8] == (U64 & ~0xfff).to_bytes(8, "little")
    assert raw[8:16] == (0x1000).to_bytes(8, "little")
    assert raw[16:24] == (2**48 - 1).to_bytes(8, "little")
    assert raw[24:28] == (1).to_bytes(4, "little")
    assert raw[28:32] == (100).to_bytes(4, "little")
    assert raw[32:36] == (64).to_bytes(4, "little")
    assert raw[36:40] == bytes([1, 0, 0, 0])
    assert unpack(Config, raw).domain_range.end == 100


# --- CoreParams validation --------------------------------------------------------------

def _msi(s, e):
    return ResvRegion(s, e, ResvSubtype.MSI)


PARAM_ERRORS = [
    ("entries-0", dict(entries=0), ValueError, r"entries"),
    ("entries-1025", dict(entries=1025), ValueError, r"entries"),
    ("entries-bool", dict(entries=True), TypeError, r"entries"),
    ("entries-float", dict(entries=4.0), TypeError, r"entries"),
    ("endpoints-0", dict(endpoints=0), ValueError, r"endpoints"),
    ("endpoints-negative", dict(endpoints=-1), ValueError, r"endpoints"),
    ("endpoints-300-width-8", dict(endpoints=300, endpoint_width=8), ValueError,
     r"endpoints=300.*endpoint_width=8"),
    ("endpoints-65", dict(endpoints=65), ValueError, r"64 endpoints"),
    ("endpoints-bool", dict(endpoints=True), TypeError, r"endpoints"),
    ("endpoints-empty", dict(endpoints=()), ValueError, r"endpoint"),
    ("endpoints-duplicate", dict(endpoints=(1, 2, 1)), ValueError, r"endpoint IDs"),
    ("endpoint-id-too-wide", dict(endpoints=(0, 256), endpoint_width=8), ValueError,
     r"endpoint ID"),
    ("endpoint-id-bool", dict(endpoints=(0, True)), TypeError, r"endpoint ID"),
    ("endpoint_width-0", dict(endpoint_width=0), ValueError, r"endpoint_width"),
    ("endpoint_width-33", dict(endpoint_width=33), ValueError, r"endpoint_width"),
    ("lookup_ports-0", dict(lookup_ports=0), ValueError, r"lookup_ports"),
    ("lookup_ports-9", dict(lookup_ports=9), ValueError, r"lookup_ports"),
    ("lookup_ports-bool", dict(lookup_ports=True), TypeError, r"lookup_ports"),
    ("page_size_mask-0", dict(page_size_mask=0), ValueError, r"page_size_mask"),
    ("granule-2K", dict(page_size_mask=0x800 | 0x1000), ValueError, r"page_size_mask"),
    ("granule-2G", dict(page_size_mask=1 << 31), ValueError, r"page_size_mask"),
    ("page_size_mask-bool", dict(page_size_mask=True), TypeError, r"page_size_mask"),
    ("input_range-start-misaligned", dict(input_range=(0x800, U64)), ValueError,
     r"input_range"),
    ("input_range-end-misaligned", dict(input_range=(0, 2**48)), ValueError,
     r"input_range"),
    ("input_range-reversed", dict(input_range=(0x2000, 0xfff)), ValueError,
     r"input_range"),
    ("input_range-end-too-big", dict(input_range=(0, 2**64)), ValueError, r"input_range"),
    ("input_range-not-pair", dict(input_range=5), TypeError, r"input_range"),
    ("input_range-bool", dict(input_range=(False, U64)), TypeError, r"input_range"),
    ("domain_range-reversed", dict(domain_range=(5, 4)), ValueError, r"domain_range"),
    ("domain_range-too-big", dict(domain_range=(0, 2**32)), ValueError, r"domain_range"),
    ("domain_range-bool", dict(domain_range=(True, 5)), TypeError, r"domain_range"),
    ("resv-overlap", dict(resv_regions=(ResvRegion(0x1000, 0x1fff),
                                        ResvRegion(0x1800, 0x2fff))),
     ValueError, r"reserved regions .*overlap"),
    ("resv-overlap-one-byte", dict(resv_regions={3: (ResvRegion(0x1000, 0x1fff),
                                                     _msi(0x1fff, 0x1fff))}),
     ValueError, r"reserved regions of endpoint 3 overlap"),
    ("resv-two-msi", dict(resv_regions=(_msi(0x1000, 0x1fff), _msi(0x3000, 0x3fff))),
     ValueError, r"more than one MSI region"),
    ("resv-start-above-end", dict(resv_regions=(ResvRegion(0x2000, 0x1fff),)), ValueError,
     r"reserved region"),
    ("resv-not-ResvRegion", dict(resv_regions=((0, 1),)), TypeError, r"ResvRegion"),
    ("resv-unknown-endpoint", dict(resv_regions={9: ()}), ValueError, r"resv_regions"),
    ("resv-too-many", dict(resv_regions=tuple(ResvRegion(i * G, i * G + 1)
                                              for i in range(9))),
     ValueError, r"reserved regions"),
    ("resv-bad-subtype", dict(resv_regions=(ResvRegion(0, 1, 2),)), ValueError,
     r"subtype"),
    ("probe_size-not-multiple-of-8", dict(probe_size=60), ValueError,
     r"probe_size must be a multiple of 8"),
    ("probe_size-0", dict(probe_size=0), ValueError, r"probe_size"),
    ("probe_size-too-big", dict(probe_size=4104), ValueError, r"probe_size"),
    ("probe_size-too-small", dict(probe_size=64, resv_regions=(
        ResvRegion(0, 0xfff), ResvRegion(0x1000, 0x1fff), ResvRegion(0x2000, 0x2fff))),
     ValueError, r"probe_size 64 cannot hold"),
    ("probe_size-too-small-default-msi", dict(probe_size=16), ValueError, r"probe_size"),
    ("probe_size-bool", dict(probe_size=True), TypeError, r"probe_size"),
    ("write_only_reads-int", dict(write_only_reads=1), TypeError, r"write_only_reads"),
]


@pytest.mark.parametrize("kw,exc,match", [p[1:] for p in PARAM_ERRORS],
                         ids=[p[0] for p in PARAM_ERRORS])
def test_params_validation(kw, exc, match):
    with pytest.raises(exc, match=match):
        CoreParams(**kw)


def test_params_accepted_and_derived():
    p = CoreParams()
    assert (p.entries, p.endpoint_ids, p.granule, p.page_shift, p.page_bits) == \
        (64, tuple(range(8)), 4096, 12, 52)
    assert p.input_range == (0, U64) and p.domain_range == (0, U32)
    assert p.resv_regions[0] == (DEFAULT_MSI_REGION,)
    p = CoreParams(endpoints=(5, 0x1234, 0), endpoint_width=13, entries=1, lookup_ports=8,
                   page_size_mask=(1 << 21) | (1 << 30), resv_regions={0x1234: []})
    assert p.n_endpoints == 3 and p.endpoint_index(0x1234) == 1
    assert p.endpoint_index(1) is None
    assert p.granule == 1 << 21 and p.page_bits == 43
    assert p.resv_regions == {5: (), 0x1234: (), 0: ()}
    assert p.probe_size == 64
    assert CoreParams(endpoints=64).n_endpoints == 64
    assert CoreParams(endpoints=(255,), endpoint_width=8).endpoint_ids == (255,)
    assert CoreParams(page_size_mask=1 << 30).granule == 1 << 30


# --- differential test against a page-granular brute force ------------------------------

class BruteForce:
    """An independent page-by-page implementation over a small address space."""

    def __init__(self, n_eps, entries, dom_max, input_pages, resv):
        self.n_eps = n_eps
        self.entries = entries
        self.dom_max = dom_max
        self.input_end = input_pages * G - 1
        self.resv = resv          # ep -> {page: subtype}
        self.ep_dom = {}
        self.dom_bypass = {}
        self.pages = {}           # dom -> {page: map id}
        self.maps = {}            # map id -> (dom, first, last, phys_start, flags)
        self.next_id = 0

    def _leave(self, ep):
        dom = self.ep_dom.pop(ep)
        if dom not in self.ep_dom.values():
            del self.dom_bypass[dom]
            for mid in set(self.pages.pop(dom).values()):
                del self.maps[mid]

    def attach(self, dom, ep, flags):
        if flags & ~1:
            return Status.INVAL
        if dom > self.dom_max:
            return Status.RANGE
        if ep >= self.n_eps:
            return Status.NOENT
        if dom in self.dom_bypass and self.dom_bypass[dom] != bool(flags):
            return Status.INVAL
        if self.ep_dom.get(ep) == dom:
            return Status.OK
        if ep in self.ep_dom:
            self._leave(ep)
        if dom not in self.dom_bypass:
            self.dom_bypass[dom] = bool(flags)
            self.pages[dom] = {}
        self.ep_dom[ep] = dom
        return Status.OK

    def detach(self, dom, ep):
        if dom > self.dom_max:
            return Status.RANGE
        if ep >= self.n_eps:
            return Status.NOENT
        if self.ep_dom.get(ep) != dom:
            return Status.INVAL
        self._leave(ep)
        return Status.OK

    def map(self, dom, vs, ve, ps, flags):
        if flags & ~7:
            return Status.INVAL
        if dom > self.dom_max:
            return Status.RANGE
        if vs % G or ps % G or (ve + 1) % G:
            return Status.RANGE
        if ve < vs:
            return Status.INVAL
        if ve > self.input_end:
            return Status.RANGE
        if ps + (ve - vs) > U64:
            return Status.RANGE
        if dom not in self.dom_bypass:
            return Status.NOENT
        if self.dom_bypass[dom]:
            return Status.INVAL
        first, last = vs // G, ve // G
        span = range(first, last + 1)
        for ep, d in self.ep_dom.items():
            if d == dom and any(p in self.resv.get(ep, {}) for p in span):
                return Status.INVAL
        if any(p in self.pages[dom] for p in span):
            return Status.INVAL
        if len(self.maps) >= self.entries:
            return Status.NOMEM
        mid = self.next_id
        self.next_id += 1
        self.maps[mid] = (dom, first, last, ps, flags)
        for p in span:
            self.pages[dom][p] = mid
        return Status.OK

    def unmap(self, dom, vs, ve):
        if dom > self.dom_max:
            return Status.RANGE
        if ve < vs:
            return Status.INVAL
        if ve > self.input_end:
            return Status.RANGE
        if dom not in self.dom_bypass:
            return Status.NOENT
        if self.dom_bypass[dom]:
            return Status.INVAL
        hit = {self.pages[dom][p] for p in range(vs // G, ve // G + 1)
               if p in self.pages[dom]}
        for mid in hit:
            _, first, last, _, _ = self.maps[mid]
            if first * G < vs or (last + 1) * G - 1 > ve:
                return Status.RANGE
        for mid in hit:
            _, first, last, _, _ = self.maps.pop(mid)
            for p in range(first, last + 1):
                del self.pages[dom][p]
        return Status.OK

    def translate(self, ep, iova, write):
        """(allowed, phys, via, reason, mmio)"""
        if ep >= self.n_eps:
            return (False, 0, LookupVia.NONE, FaultReason.UNKNOWN, False)
        if ep not in self.ep_dom:
            return (False, 0, LookupVia.NONE, FaultReason.DOMAIN, False)
        dom = self.ep_dom[ep]
        if self.dom_bypass[dom]:
            return (True, iova, LookupVia.BYPASS, 0, False)
        page = iova // G
        sub = self.resv.get(ep, {}).get(page)
        if sub is not None:
            if sub == ResvSubtype.MSI and write:
                return (True, iova, LookupVia.MSI, 0, False)
            return (False, 0, LookupVia.NONE, FaultReason.MAPPING, False)
        mid = self.pages[dom].get(page)
        if mid is None:
            return (False, 0, LookupVia.NONE, FaultReason.MAPPING, False)
        _, first, _, ps, flags = self.maps[mid]
        if not flags & (2 if write else 1):
            return (False, 0, LookupVia.NONE, FaultReason.MAPPING, False)
        return (True, ps + iova - first * G, LookupVia.MAPPING, 0, bool(flags & 4))

    def mappings(self):
        return sorted((dom, first * G, (last + 1) * G - 1, ps, flags)
                      for dom, first, last, ps, flags in self.maps.values())


def test_differential_random():
    rng = random.Random(0x5eed)
    n_eps, entries, dom_max, input_pages = 6, 20, 7, 56
    resv = {0: {20: ResvSubtype.RESERVED, 21: ResvSubtype.RESERVED},
            1: {30: ResvSubtype.MSI}}
    params = CoreParams(
        entries=entries, endpoints=n_eps, domain_range=(0, dom_max),
        input_range=(0, input_pages * G - 1),
        resv_regions={0: [ResvRegion(20 * G, 22 * G - 1)],
                      1: [ResvRegion(30 * G, 31 * G - 1, ResvSubtype.MSI)]})
    model = DeviceModel(params)
    bf = BruteForce(n_eps, entries, dom_max, input_pages, resv)
    counts = {}

    def rand_page_range():
        a = rng.randrange(64)
        n = rng.choice([1, 1, 2, 3, 4, 8])
        b = min(a + n - 1, 63) if rng.random() < 0.95 else max(a - rng.randint(1, 3), 0)
        return a, b

    for step in range(2000):
        op = rng.choices(["attach", "detach", "map", "unmap"], [1, 0.4, 5, 3])[0]
        dom = rng.choice([0, 1, 1, 2, 2, 3, 3, 4, 8])
        ep = rng.randrange(n_eps + 1)
        if op == "attach":
            # Undefined flag bits are covered by test_rejected_request.
            flags = rng.choices([0, 1], [8, 2])[0]
            req, want = attach(dom, ep, flags), bf.attach(dom, ep, flags)
        elif op == "detach":
            req, want = detach(dom, ep), bf.detach(dom, ep)
        elif op == "map":
            a, b = rand_page_range()
            vs, ve = a * G, (b + 1) * G - 1
            if rng.random() < 0.03:
                vs += rng.choice([1, 0x800])
            if rng.random() < 0.03:
                ve -= 1
            ps = rng.randrange(1 << 20) * G
            if rng.random() < 0.03:
                ps = 2**64 - rng.randint(1, 4) * G
            if rng.random() < 0.03:
                ps += 0x10
            flags = rng.choices([0, 1, 2, 3, 5, 7], [1, 3, 2, 6, 1, 1])[0]
            req, want = map_(dom, vs, ve, ps, flags), bf.map(dom, vs, ve, ps, flags)
        else:
            a, b = rand_page_range()
            vs, ve = a * G, (b + 1) * G - 1
            if rng.random() < 0.2:
                vs += rng.randrange(G)
            if rng.random() < 0.2:
                ve -= rng.randrange(G)
            req, want = unmap(dom, vs, ve), bf.unmap(dom, vs, ve)
        got = do(model, req)
        assert got == want, (step, op, req.hex())
        counts[(op, want)] = counts.get((op, want), 0) + 1

        for _ in range(4):
            t_ep = rng.randrange(n_eps + 1)
            iova = rng.randrange(64 * G)
            write = rng.random() < 0.5
            allowed, phys, via, reason, mmio = bf.translate(t_ep, iova, write)
            t = model.translate(t_ep, iova, write)
            access = FaultFlag.WRITE if write else FaultFlag.READ
            expect = (Translation(True, phys=phys, mmio=mmio, via=via) if allowed else
                      Translation(False, reason=int(reason),
                                  flags=int(access | FaultFlag.ADDRESS)))
            assert t == expect, (step, t_ep, hex(iova), write)
            tkey = ("translate", t.via if allowed else FaultReason(t.reason))
            counts[tkey] = counts.get(tkey, 0) + 1

        if step % 50 == 0 or step == 1999:
            snap_eps, snap_doms = model.snapshot()
            assert dict(snap_eps) == bf.ep_dom
            assert {d: b for d, b, _ in snap_doms} == bf.dom_bypass
            got_maps = sorted((d, mp.start, mp.end, mp.phys, mp.flags)
                              for d, _, maps in snap_doms for mp in maps)
            assert got_maps == bf.mappings()
            assert model.n_mappings == len(bf.maps)

    # The random walk must have exercised the interesting outcomes.
    for key in [("map", Status.OK), ("map", Status.INVAL), ("map", Status.RANGE),
                ("map", Status.NOENT), ("map", Status.NOMEM), ("unmap", Status.OK),
                ("unmap", Status.RANGE), ("unmap", Status.INVAL), ("unmap", Status.NOENT),
                ("attach", Status.OK), ("attach", Status.INVAL), ("attach", Status.NOENT),
                ("attach", Status.RANGE), ("detach", Status.OK), ("detach", Status.INVAL),
                ("translate", LookupVia.MAPPING), ("translate", LookupVia.BYPASS),
                ("translate", LookupVia.MSI), ("translate", FaultReason.UNKNOWN),
                ("translate", FaultReason.DOMAIN), ("translate", FaultReason.MAPPING)]:
        assert counts.get(key, 0) >= 3, (key, counts)
