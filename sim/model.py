"""Python reference model of the virtio-iommu device core: the oracle of every test.

The model applies requests (the device-readable bytes of a request plus the size of its
device-writable part) and answers translation lookups, following
``shared/spec/virtio-iommu.md``. Where the specification leaves a choice, the model makes
the one documented here, and the RTL must make the same.

Status precedence (the first rule that matches decides):

* every type: readable part shorter than the type's structure -> INVAL;
* ATTACH:  reserved != 0 -> INVAL; unknown flag bit (ATTACH_F_BYPASS is known only with
  BYPASS_CONFIG) -> INVAL; domain outside domain_range -> RANGE; unknown endpoint -> NOENT;
  domain exists with the other bypass setting -> INVAL; otherwise OK (the endpoint leaves
  its old domain first, which dies with its mappings if it was the last endpoint; attaching
  to the domain it is already in changes nothing).
* DETACH:  reserved != 0 -> INVAL; domain outside domain_range -> RANGE; unknown endpoint ->
  NOENT; endpoint not attached to that domain -> INVAL; otherwise OK.
* MAP:     MAP_UNMAP not negotiated -> UNSUPP; unknown flag bit (MMIO is known only with
  F_MMIO) -> INVAL; domain outside domain_range -> RANGE; virt_start, phys_start or
  virt_end + 1 not granule-aligned -> RANGE; virt_end < virt_start -> INVAL; IOVA range not
  inside input_range -> RANGE; phys_start + size beyond 2**64 -> RANGE; domain absent ->
  NOENT; bypass domain -> INVAL; overlaps a reserved region of an endpoint attached to the
  domain -> INVAL; physical range touches the store's region -> INVAL; overlaps a mapping
  of the domain -> INVAL; ``capacity`` mappings held -> NOMEM; else OK.
* UNMAP:   MAP_UNMAP not negotiated -> UNSUPP; reserved != 0 -> INVAL; domain outside
  domain_range -> RANGE; virt_end < virt_start -> INVAL; range not inside input_range ->
  RANGE; domain absent -> NOENT; bypass domain -> INVAL; a mapping of the domain overlaps
  but is not inside the range -> RANGE (nothing removed); else OK, every mapping inside the
  range removed.
* PROBE:   without F_PROBE nothing is written (used length 0). Otherwise the answer is
  ``probe_size`` property bytes and the tail (used length probe_size + 4), properties zero
  unless OK: writable part < probe_size + 4 -> INVAL and the answer shrinks to the
  writable size (zero bytes, then the tail in its last 4 bytes); short request -> INVAL;
  reserved != 0 -> INVAL; unknown endpoint -> NOENT.
* Any other type (or an empty readable part): nothing is written, used length 0.

Bytes of the readable part beyond the type's structure are ignored. The answer never
exceeds the writable part, except that every answer of a known type has its 4-byte tail:
a writable part under 4 bytes is an error of the ring, which the virtqueue engine reports
(the core cannot). Translation decisions
are described in :meth:`DeviceModel.translate`.
"""

from dataclasses import dataclass, field

from viommu.rtl.core.layouts import (
    ReqType, Status, Feature, AttachFlag, MapFlag, ResvSubtype, FaultReason, FaultFlag,
    LookupVia, AttachReq, DetachReq, MapReq, UnmapReq, ProbeReq, ReqTail,
    REQ_READABLE_SIZE, REQ_TAIL_SIZE, pack, unpack,
)
from viommu.rtl.core.params import CoreParams


__all__ = ["Mapping", "Translation", "DeviceModel", "ALL_FEATURES"]

_U64 = (1 << 64) - 1

#: Every device-specific feature this model understands except the superseded F_BYPASS.
ALL_FEATURES = frozenset({Feature.INPUT_RANGE, Feature.DOMAIN_RANGE, Feature.MAP_UNMAP,
                          Feature.PROBE, Feature.MMIO, Feature.BYPASS_CONFIG})


@dataclass(frozen=True, order=True)
class Mapping:
    """A mapping of a domain: IOVA ``[start, end]`` (inclusive) -> ``phys``."""
    start: int
    end: int
    phys: int
    flags: int


@dataclass(frozen=True)
class Translation:
    """The answer to a lookup (same fields as the RTL's lookup response)."""
    allowed: bool
    phys: int = 0
    mmio: bool = False
    via: LookupVia = LookupVia.NONE
    reason: int = 0
    flags: int = 0


@dataclass
class _Domain:
    bypass: bool
    mappings: dict = field(default_factory=dict)   # start -> Mapping


class DeviceModel:
    """The device's translation state and its request/lookup semantics.

    ``features`` is the set of negotiated :class:`Feature` bits that matter to the core;
    ``bypass`` is the configuration byte. Both may be changed at any time.
    """

    def __init__(self, params=None, *, features=ALL_FEATURES, bypass=0):
        self.params = params if params is not None else CoreParams()
        self.features = frozenset(features)
        self.bypass = bypass
        self.reset()

    # --- state --------------------------------------------------------------------------

    def reset(self):
        """Device reset: no endpoint attached, no domain, no mapping (``bypass`` is kept)."""
        self.endpoints = {}    # endpoint ID -> domain ID, for attached endpoints only
        self.domains = {}      # domain ID -> _Domain

    @property
    def n_mappings(self):
        return sum(len(d.mappings) for d in self.domains.values())

    def snapshot(self):
        """A comparable picture of the whole state."""
        return (
            tuple(sorted(self.endpoints.items())),
            tuple(sorted((dom_id, d.bypass, tuple(sorted(d.mappings.values())))
                         for dom_id, d in self.domains.items())),
        )

    def has(self, feature):
        return feature in self.features

    # --- requests -----------------------------------------------------------------------

    def execute(self, readable, wlen=None):
        """Apply one request; return the bytes the device writes (their count is the used
        length). ``wlen`` is the size of the device-writable part (default: what the
        request type needs)."""
        readable = bytes(readable)
        if not readable or readable[0] not in ReqType._value2member_map_:
            return b""
        rtype = ReqType(readable[0])
        if wlen is None:
            wlen = (self.params.probe_size if rtype == ReqType.PROBE else 0) + REQ_TAIL_SIZE
        if rtype == ReqType.PROBE:
            return self._probe(readable, wlen)
        if len(readable) < REQ_READABLE_SIZE[rtype]:
            status = Status.INVAL
        else:
            status = {
                ReqType.ATTACH: self._attach,
                ReqType.DETACH: self._detach,
                ReqType.MAP:    self._map,
                ReqType.UNMAP:  self._unmap,
            }[rtype](readable)
        return pack(ReqTail, status=status)

    def _domain_out_of_range(self, dom):
        lo, hi = self.params.domain_range
        return not lo <= dom <= hi

    def _iova_out_of_range(self, start, end):
        lo, hi = self.params.input_range
        return start < lo or end > hi

    def _leave(self, ep):
        """Detach ``ep`` from its domain; the domain dies with its last endpoint."""
        dom = self.endpoints.pop(ep)
        if dom not in self.endpoints.values():
            del self.domains[dom]

    def _attach(self, raw):
        req = unpack(AttachReq, raw)
        known_flags = int(AttachFlag.BYPASS) if self.has(Feature.BYPASS_CONFIG) else 0
        if req.reserved:
            return Status.INVAL
        if req.flags & ~known_flags:
            return Status.INVAL
        if self._domain_out_of_range(req.domain):
            return Status.RANGE
        if self.params.endpoint_index(req.endpoint) is None:
            return Status.NOENT
        bypass = bool(req.flags & AttachFlag.BYPASS)
        dom = self.domains.get(req.domain)
        if dom is not None and dom.bypass != bypass:
            return Status.INVAL
        if self.endpoints.get(req.endpoint) == req.domain:
            return Status.OK
        if req.endpoint in self.endpoints:
            self._leave(req.endpoint)
        if req.domain not in self.domains:
            self.domains[req.domain] = _Domain(bypass)
        self.endpoints[req.endpoint] = req.domain
        return Status.OK

    def _detach(self, raw):
        req = unpack(DetachReq, raw)
        if req.reserved:
            return Status.INVAL
        if self._domain_out_of_range(req.domain):
            return Status.RANGE
        if self.params.endpoint_index(req.endpoint) is None:
            return Status.NOENT
        if self.endpoints.get(req.endpoint) != req.domain:
            return Status.INVAL
        self._leave(req.endpoint)
        return Status.OK

    def _resv_conflict(self, dom_id, start, end):
        for ep, d in self.endpoints.items():
            if d == dom_id:
                for r in self.params.resv_regions[ep]:
                    if r.overlaps(start, end):
                        return True
        return False

    def _map(self, raw):
        req = unpack(MapReq, raw)
        g = self.params.granule
        known_flags = int(MapFlag.READ | MapFlag.WRITE)     # ints: ~IntFlag drops bits
        if self.has(Feature.MMIO):
            known_flags |= int(MapFlag.MMIO)
        if not self.has(Feature.MAP_UNMAP):
            return Status.UNSUPP
        if req.flags & ~known_flags:
            return Status.INVAL
        if self._domain_out_of_range(req.domain):
            return Status.RANGE
        if req.virt_start % g or req.phys_start % g or (req.virt_end + 1) % g:
            return Status.RANGE
        if req.virt_end < req.virt_start:
            return Status.INVAL
        if self._iova_out_of_range(req.virt_start, req.virt_end):
            return Status.RANGE
        if req.phys_start + (req.virt_end - req.virt_start) > _U64:
            return Status.RANGE
        dom = self.domains.get(req.domain)
        if dom is None:
            return Status.NOENT
        if dom.bypass:
            return Status.INVAL
        if self._resv_conflict(req.domain, req.virt_start, req.virt_end):
            return Status.INVAL
        if self.params.in_store_region(req.phys_start,
                                       req.phys_start + req.virt_end - req.virt_start):
            return Status.INVAL     # the store's own memory is never mapped
        for m in dom.mappings.values():
            if req.virt_start <= m.end and req.virt_end >= m.start:
                return Status.INVAL
        if self.n_mappings >= self.params.capacity:
            return Status.NOMEM
        dom.mappings[req.virt_start] = Mapping(req.virt_start, req.virt_end,
                                               req.phys_start, int(req.flags))
        return Status.OK

    def _unmap(self, raw):
        req = unpack(UnmapReq, raw)
        if not self.has(Feature.MAP_UNMAP):
            return Status.UNSUPP
        if req.reserved:
            return Status.INVAL
        if self._domain_out_of_range(req.domain):
            return Status.RANGE
        if req.virt_end < req.virt_start:
            return Status.INVAL
        if self._iova_out_of_range(req.virt_start, req.virt_end):
            return Status.RANGE
        dom = self.domains.get(req.domain)
        if dom is None:
            return Status.NOENT
        if dom.bypass:
            return Status.INVAL
        covered = []
        for m in dom.mappings.values():
            if req.virt_start <= m.end and req.virt_end >= m.start:
                if not (req.virt_start <= m.start and m.end <= req.virt_end):
                    return Status.RANGE
                covered.append(m.start)
        for start in covered:
            del dom.mappings[start]
        return Status.OK

    def _probe(self, raw, wlen):
        if not self.has(Feature.PROBE):
            return b""
        size = self.params.probe_size
        props = bytes(size)
        if wlen < size + REQ_TAIL_SIZE:
            status = Status.INVAL
            props = bytes(max(wlen - REQ_TAIL_SIZE, 0))
        elif len(raw) < REQ_READABLE_SIZE[ReqType.PROBE]:
            status = Status.INVAL
        else:
            req = unpack(ProbeReq, raw)
            if req.reserved:
                status = Status.INVAL
            elif self.params.endpoint_index(req.endpoint) is None:
                status = Status.NOENT
            else:
                status = Status.OK
                props = self.params.probe_properties(req.endpoint)
        return props + pack(ReqTail, status=status)

    # --- translation --------------------------------------------------------------------

    def unattached_bypass(self):
        """Do unattached endpoints bypass translation?"""
        return ((self.has(Feature.BYPASS_CONFIG) and self.bypass & 1 == 1)
                or self.has(Feature.BYPASS))

    def translate(self, ep, iova, write):
        """Decide an access by endpoint ``ep`` to ``iova`` (a write if ``write``).

        In order: an unknown endpoint is denied (reason UNKNOWN); an unattached endpoint is
        let through untranslated in bypass mode, otherwise denied (reason DOMAIN); an
        endpoint of a bypass domain is let through untranslated. For an endpoint of a
        translated domain: a write into its MSI region passes untranslated (address bypass),
        a read of it is denied; an access into one of its RESERVED regions is denied; then
        the domain's mapping containing ``iova`` decides: a write needs WRITE, a read needs
        READ (or WRITE when ``write_only_reads``); no mapping, or no permission, is denied
        (reason MAPPING). Fault flags: READ or WRITE, and ADDRESS (the address is valid).
        An access let through untranslated (bypass, MSI) into the store's region is denied
        (reason MAPPING).
        """
        t = self._translate(ep, iova, write)
        if t.allowed and t.via != LookupVia.MAPPING and self.params.in_store_region(iova):
            # an untranslated access never reaches the store's own memory (a mapping
            # never points into it: MAP refuses that)
            access = FaultFlag.WRITE if write else FaultFlag.READ
            return Translation(False, reason=int(FaultReason.MAPPING),
                               flags=int(access | FaultFlag.ADDRESS))
        return t

    def _translate(self, ep, iova, write):
        access = FaultFlag.WRITE if write else FaultFlag.READ
        fflags = int(access | FaultFlag.ADDRESS)
        deny = lambda reason: Translation(False, reason=int(reason), flags=fflags)
        if self.params.endpoint_index(ep) is None:
            return deny(FaultReason.UNKNOWN)
        if ep not in self.endpoints:
            if self.unattached_bypass():
                return Translation(True, phys=iova, via=LookupVia.BYPASS)
            return deny(FaultReason.DOMAIN)
        dom = self.domains[self.endpoints[ep]]
        if dom.bypass:
            return Translation(True, phys=iova, via=LookupVia.BYPASS)
        for r in self.params.resv_regions[ep]:
            if r.contains(iova):
                if r.subtype == ResvSubtype.MSI and write:
                    return Translation(True, phys=iova, via=LookupVia.MSI)
                return deny(FaultReason.MAPPING)
        for m in dom.mappings.values():
            if m.start <= iova <= m.end:
                if write:
                    ok = m.flags & MapFlag.WRITE
                else:
                    ok = (m.flags & MapFlag.READ or
                          (self.params.write_only_reads and m.flags & MapFlag.WRITE))
                if not ok:
                    return deny(FaultReason.MAPPING)
                return Translation(True, phys=(m.phys + iova - m.start) & _U64,
                                   mmio=bool(m.flags & MapFlag.MMIO), via=LookupVia.MAPPING)
        return deny(FaultReason.MAPPING)


# --- request builders (tests and driver models) -------------------------------------------

def attach(domain, endpoint, flags=0, reserved=0):
    return pack(AttachReq, head={"type": ReqType.ATTACH}, domain=domain, endpoint=endpoint,
                flags=flags, reserved=reserved)


def detach(domain, endpoint, reserved=0):
    return pack(DetachReq, head={"type": ReqType.DETACH}, domain=domain, endpoint=endpoint,
                reserved=reserved)


def map_(domain, virt_start, virt_end, phys_start, flags=MapFlag.READ | MapFlag.WRITE):
    return pack(MapReq, head={"type": ReqType.MAP}, domain=domain, virt_start=virt_start,
                virt_end=virt_end, phys_start=phys_start, flags=flags)


def unmap(domain, virt_start, virt_end, reserved=0):
    return pack(UnmapReq, head={"type": ReqType.UNMAP}, domain=domain,
                virt_start=virt_start, virt_end=virt_end, reserved=reserved)


def probe(endpoint, reserved=0):
    return pack(ProbeReq, head={"type": ReqType.PROBE}, endpoint=endpoint, reserved=reserved)


__all__ += ["attach", "detach", "map_", "unmap", "probe"]


def _model_copy(self):
    """An independent copy of the model's state (same params, features, bypass)."""
    new = DeviceModel.__new__(DeviceModel)
    new.params, new.features, new.bypass = self.params, self.features, self.bypass
    new.endpoints = dict(self.endpoints)
    new.domains = {k: _Domain(d.bypass, dict(d.mappings)) for k, d in self.domains.items()}
    return new


DeviceModel.copy = _model_copy
