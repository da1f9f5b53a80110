"""Elaboration parameters of the device core, validated once.

:class:`CoreParams` is shared by the RTL and by the reference model, so both are always built
for the same configuration. Every parameter is a keyword argument; a bad value raises
:class:`ValueError` (or :class:`TypeError`) with a message that names the parameter.
"""

from dataclasses import dataclass

from .layouts import ResvSubtype, sizeof, ProbeResvMem


__all__ = ["ResvRegion", "CoreParams", "DEFAULT_MSI_REGION"]


@dataclass(frozen=True)
class ResvRegion:
    """A reserved region of an endpoint's IOVA space, ``[start, end]`` inclusive."""
    start: int
    end: int
    subtype: ResvSubtype = ResvSubtype.RESERVED

    def overlaps(self, start, end):
        return start <= self.end and end >= self.start

    def contains(self, addr):
        return self.start <= addr <= self.end


#: The x86 MSI doorbell window, reported by PROBE as a RESV_MEM MSI region.
DEFAULT_MSI_REGION = ResvRegion(0xfee00000, 0xfeefffff, ResvSubtype.MSI)

_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1


def _check_int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if not lo <= value <= hi:
        fmt = (lambda v: f"{v:#x}") if hi >= 1 << 20 else str
        raise ValueError(f"{name} must be in {fmt(lo)}..{fmt(hi)}, not {fmt(value)}")
    return value


class CoreParams:
    """Parameters of the device core (request executor, endpoint and mapping tables, lookups).

    Parameters
    ----------
    entries : int
        Mapping table (CAM) size, 1..1024. Default 64.
    endpoints : int or sequence of int
        The endpoint IDs the device manages: a count ``n`` (IDs ``0..n-1``) or the IDs
        themselves (distinct, each below ``2**endpoint_width``). Default 8. Requests naming
        any other ID are answered NOENT; lookups from any other ID are denied.
    endpoint_width : int
        Width of the endpoint ID on the lookup ports, 1..32. Default 16.
    lookup_ports : int
        Number of translation lookup ports, 1..8. Default 1.
    page_size_mask : int
        ``page_size_mask`` of the device configuration. Its lowest set bit is the granule
        (4 KiB .. 1 GiB). Default: every power of two from 4 KiB up.
    input_range : (int, int)
        Accepted IOVA range, inclusive. Default the whole 64-bit space.
    domain_range : (int, int)
        Accepted domain IDs, inclusive. Default ``(0, 2**32 - 1)``.
    resv_regions : sequence of ResvRegion, or dict of endpoint ID -> sequence
        Reserved regions reported by PROBE: one list for every endpoint, or a list per
        endpoint ID (IDs not in the dict get none). Default: the x86 MSI doorbell.
    probe_size : int or None
        ``probe_size`` of the configuration, a multiple of 8. Default: the smallest that
        holds every endpoint's properties plus an end marker, at least 64.
    write_only_reads : bool
        Allow reads through a mapping with WRITE but not READ (the v0.7 "write-only may
        imply read-write" rule). Default False (strict).
    mappings : int
        0 (the default): the mapping table holds every mapping, and MAP answers NOMEM when
        its ``entries`` are taken. 1..2**20: a mapping store holds up to ``mappings``
        mappings (``docs/mapping-store.md``) and the table is a cache of it, filled on a
        lookup's miss.
    store : str
        Where the store keeps its records: ``"bram"`` (block RAM) or ``"axi"`` (external
        memory from ``store_base``, through the store's own AXI4 master).
    store_base : int
        With ``store="axi"``: the first byte of the store's region, a multiple of 32
        (default ``1 << 32``). The region holds :attr:`store_region`; MAPs onto it are
        refused and no lookup grants an address in it.
    """

    def __init__(self, *, entries=64, endpoints=8, endpoint_width=16, lookup_ports=1,
                 page_size_mask=_U64 & ~0xfff, input_range=(0, _U64),
                 domain_range=(0, _U32), resv_regions=(DEFAULT_MSI_REGION,),
                 probe_size=None, write_only_reads=False, mappings=0, store="bram",
                 store_base=1 << 32):
        self.entries = _check_int("entries", entries, 1, 1024)
        self.endpoint_width = _check_int("endpoint_width", endpoint_width, 1, 32)
        self.lookup_ports = _check_int("lookup_ports", lookup_ports, 1, 8)

        if isinstance(endpoints, int) and not isinstance(endpoints, bool):
            if endpoints < 1:
                raise ValueError(f"endpoints must be at least 1, not {endpoints}")
            if endpoints > 1 << endpoint_width:
                raise ValueError(
                    f"endpoints={endpoints} does not fit in endpoint_width={endpoint_width} "
                    f"(at most {1 << endpoint_width} IDs)")
            endpoint_ids = tuple(range(endpoints))
        else:
            try:
                endpoint_ids = tuple(endpoints)
            except TypeError:
                raise TypeError(f"endpoints must be a count or a sequence of IDs, "
                                f"not {endpoints!r}") from None
            if not endpoint_ids:
                raise ValueError("endpoints must name at least one endpoint ID")
            for ep in endpoint_ids:
                _check_int("endpoint ID", ep, 0, (1 << endpoint_width) - 1)
            if len(set(endpoint_ids)) != len(endpoint_ids):
                raise ValueError(f"endpoint IDs must be distinct: {endpoint_ids}")
        if len(endpoint_ids) > 64:
            raise ValueError(f"at most 64 endpoints are supported, not {len(endpoint_ids)}")
        self.endpoint_ids = endpoint_ids

        _check_int("page_size_mask", page_size_mask, 1, _U64)
        granule = page_size_mask & -page_size_mask
        if not (1 << 12) <= granule <= (1 << 30):
            raise ValueError(f"page_size_mask {page_size_mask:#x}: the granule (lowest set "
                             f"bit) must be 4 KiB .. 1 GiB, not {granule:#x}")
        self.page_size_mask = page_size_mask
        self.page_shift = granule.bit_length() - 1

        try:
            istart, iend = input_range
            dstart, dend = domain_range
        except (TypeError, ValueError):
            raise TypeError("input_range and domain_range must be (start, end) pairs") from None
        _check_int("input_range start", istart, 0, _U64)
        _check_int("input_range end", iend, 0, _U64)
        if istart > iend:
            raise ValueError(f"input_range start {istart:#x} is above its end {iend:#x}")
        if istart % granule or (iend + 1) % granule:
            raise ValueError(f"input_range ({istart:#x}, {iend:#x}) must be aligned to the "
                             f"granule {granule:#x}")
        _check_int("domain_range start", dstart, 0, _U32)
        _check_int("domain_range end", dend, 0, _U32)
        if dstart > dend:
            raise ValueError(f"domain_range start {dstart} is above its end {dend}")
        self.input_range = (istart, iend)
        self.domain_range = (dstart, dend)

        if isinstance(resv_regions, dict):
            unknown = set(resv_regions) - set(endpoint_ids)
            if unknown:
                raise ValueError(f"resv_regions names unknown endpoint IDs {sorted(unknown)}")
            per_ep = {ep: tuple(resv_regions.get(ep, ())) for ep in endpoint_ids}
        else:
            regions = tuple(resv_regions)
            per_ep = {ep: regions for ep in endpoint_ids}
        for ep, regions in per_ep.items():
            for r in regions:
                if not isinstance(r, ResvRegion):
                    raise TypeError(f"reserved regions must be ResvRegion, not {r!r}")
                _check_int("reserved region start", r.start, 0, _U64)
                _check_int("reserved region end", r.end, 0, _U64)
                if r.start > r.end:
                    raise ValueError(f"reserved region {r.start:#x}..{r.end:#x} of endpoint "
                                     f"{ep}: start above end")
                if r.subtype not in (ResvSubtype.RESERVED, ResvSubtype.MSI):
                    raise ValueError(f"reserved region subtype must be RESERVED or MSI, "
                                     f"not {r.subtype!r}")
            for i, a in enumerate(regions):
                for b in regions[i + 1:]:
                    if a.overlaps(b.start, b.end):
                        raise ValueError(
                            f"reserved regions of endpoint {ep} overlap: "
                            f"{a.start:#x}..{a.end:#x} and {b.start:#x}..{b.end:#x}")
            if sum(r.subtype == ResvSubtype.MSI for r in regions) > 1:
                raise ValueError(f"endpoint {ep} has more than one MSI region")
            if len(regions) > 8:
                raise ValueError(f"endpoint {ep} has {len(regions)} reserved regions; "
                                 f"at most 8 are supported")
        self.resv_regions = per_ep

        needed = max(len(r) for r in per_ep.values()) * sizeof(ProbeResvMem)
        if probe_size is None:
            probe_size = max(64, (needed + 4 + 7) // 8 * 8)
        _check_int("probe_size", probe_size, 8, 4096)
        if probe_size % 8:
            raise ValueError(f"probe_size must be a multiple of 8, not {probe_size}")
        if probe_size < needed:
            raise ValueError(f"probe_size {probe_size} cannot hold the {needed} bytes of "
                             f"reserved-region properties")
        self.probe_size = probe_size

        if not isinstance(write_only_reads, bool):
            raise TypeError(f"write_only_reads must be a bool, not {write_only_reads!r}")
        self.write_only_reads = write_only_reads

        self.mappings = _check_int("mappings", mappings, 0, 1 << 20)
        if store not in ("bram", "axi"):
            raise ValueError(f"store must be 'bram' or 'axi', not {store!r}")
        self.store = store
        self.store_base = _check_int("store_base", store_base, 0, _U64)
        if store_base % 32:
            raise ValueError(f"store_base {store_base:#x} must be a multiple of 32")
        self.store_region = None
        if self.mappings and store == "axi":
            from ..store.dma_memory import region_size
            last = store_base + region_size(self.store_params) - 1
            if last > _U64:
                raise ValueError(f"the store's region from {store_base:#x} "
                                 f"({region_size(self.store_params)} bytes) passes 2**64")
            self.store_region = (store_base, last)

    # --- derived ------------------------------------------------------------------------

    @property
    def store_params(self):
        """The store's :class:`~viommu.rtl.store.layouts.StoreParams` (with ``mappings``)."""
        from ..store.layouts import StoreParams
        return StoreParams(capacity=self.mappings, page_bits=self.page_bits,
                           slots=self.n_endpoints, phys_page_bits=self.phys_page_bits)

    @property
    def capacity(self):
        """The most mappings the device holds: ``mappings``, or ``entries`` without a
        store."""
        return self.mappings or self.entries

    def in_store_region(self, start, end=None):
        """Whether ``[start, end]`` (one address if ``end`` is None) touches the store's
        region."""
        if self.store_region is None:
            return False
        end = start if end is None else end
        return start <= self.store_region[1] and end >= self.store_region[0]

    @property
    def granule(self):
        return 1 << self.page_shift

    @property
    def iova_bits(self):
        """IOVA bits the mapping table stores: as many as ``input_range``'s end needs.
        Lookups of addresses above them miss; requests above them are out of range."""
        return max(self.input_range[1].bit_length(), self.page_shift + 1)

    @property
    def page_bits(self):
        """Width of a stored IOVA page number (``iova_bits - page_shift``)."""
        return self.iova_bits - self.page_shift

    @property
    def phys_page_bits(self):
        """Width of a physical page number (``64 - page_shift``)."""
        return 64 - self.page_shift

    @property
    def n_endpoints(self):
        return len(self.endpoint_ids)

    def endpoint_index(self, ep_id):
        """Index of endpoint ``ep_id`` in the tables, or None for an unknown ID."""
        try:
            return self.endpoint_ids.index(ep_id)
        except ValueError:
            return None

    def probe_properties(self, ep_id):
        """The ``probe_size`` property bytes that PROBE answers for a known endpoint."""
        from .layouts import pack, ProbeType
        out = bytearray()
        for r in self.resv_regions[ep_id]:
            out += pack(ProbeResvMem, {
                "head": {"type": ProbeType.RESV_MEM, "length": sizeof(ProbeResvMem) - 4},
                "subtype": r.subtype, "start": r.start, "end": r.end})
        return bytes(out) + bytes(self.probe_size - len(out))

    def config_bytes(self, bypass=0):
        """The 40 bytes of device configuration space."""
        from .layouts import pack, Config
        return pack(Config, {
            "page_size_mask": self.page_size_mask,
            "input_range": {"start": self.input_range[0], "end": self.input_range[1]},
            "domain_range": {"start": self.domain_range[0], "end": self.domain_range[1]},
            "probe_size": self.probe_size,
            "bypass": bypass,
        })

    def __repr__(self):
        store = (f", mappings={self.mappings} in {self.store}" if self.mappings else "")
        return (f"CoreParams(entries={self.entries}, endpoints={self.endpoint_ids}, "
                f"lookup_ports={self.lookup_ports}, page_shift={self.page_shift}{store})")
