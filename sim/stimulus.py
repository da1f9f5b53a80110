"""Randomized stimulus: request sequences and lookups that hit the interesting cases.

Generators take a seeded ``random.Random`` so every run is reproducible. Requests are drawn
against the reference model's current state, so that most of them are meaningful (MAPs
into live domains, UNMAPs of existing mappings, lookups at mapping boundaries) while a
share is malformed on purpose (reserved bytes, unknown flags, short, misaligned, unknown
types, tiny writable parts).
"""

from viommu.rtl.core.layouts import MapFlag, AttachFlag, ReqType, REQ_READABLE_SIZE, REQ_TAIL_SIZE
from viommu.sim import model as M


__all__ = ["RequestGenerator", "LookupGenerator"]

_U64 = (1 << 64) - 1


class RequestGenerator:
    """Draws requests ``(readable bytes, wlen)`` for a :class:`~viommu.sim.model.DeviceModel`.

    ``pages`` bounds the IOVA page numbers of ordinary MAPs so that overlaps and partial
    UNMAPs are frequent; a few requests use the top of the 64-bit space.
    """

    def __init__(self, model, rng, *, domains=6, pages=48):
        self.model = model
        self.rng = rng
        self.params = model.params
        lo, hi = self.params.domain_range
        self.domain_ids = sorted({lo, hi} | {rng.randint(lo, hi) for _ in range(domains - 2)})
        self.pages = pages

    def _ep(self):
        rng, ids = self.rng, self.params.endpoint_ids
        if rng.random() < 0.05:
            return rng.choice([max(ids) + 1, 0xffffffff, rng.getrandbits(32)])
        return rng.choice(ids)

    def _dom(self):
        rng = self.rng
        if rng.random() < 0.03:
            return rng.getrandbits(32)
        live = list(self.model.domains)
        if live and rng.random() < 0.7:
            return rng.choice(live)
        return rng.choice(self.domain_ids)

    def _range(self):
        rng, g = self.rng, self.params.granule
        r = rng.random()
        if r < 0.05:                                     # top of the address space
            n = rng.randint(1, 4)
            return _U64 + 1 - n * g, _U64
        if r < 0.08:                                     # whole space
            return 0, _U64
        if r < 0.11:                                     # MSI window neighbourhood
            base = 0xfee00000 + rng.randint(-4, 260) * g
            return base, base + rng.randint(1, 8) * g - 1
        start = rng.randrange(self.pages)
        n = rng.choice([1, 1, 1, 2, 3, 4, 8])
        return start * g, min((start + n) * g - 1, _U64)

    def _existing(self):
        maps = [(d, m) for d, dom in self.model.domains.items() for m in dom.mappings.values()]
        return self.rng.choice(maps) if maps else None

    def draw(self):
        rng, p = self.rng, self.params
        kind = rng.choices(["attach", "detach", "map", "unmap", "probe", "bad"],
                           [10, 6, 40, 25, 4, 15])[0]
        if kind == "attach":
            flags = AttachFlag.BYPASS if rng.random() < 0.15 else 0
            req = M.attach(self._dom(), self._ep(), flags)
        elif kind == "detach":
            if self.model.endpoints and rng.random() < 0.8:
                ep, dom = rng.choice(sorted(self.model.endpoints.items()))
                req = M.detach(dom, ep)
            else:
                req = M.detach(self._dom(), self._ep())
        elif kind == "map":
            start, end = self._range()
            g = p.granule
            phys = rng.choice([rng.randrange(0, 1 << 20) * g, start,
                               (_U64 + 1 - g) if rng.random() < 0.1 else 0x80000000])
            flags = rng.choice([MapFlag.READ, MapFlag.WRITE, MapFlag.READ | MapFlag.WRITE,
                                MapFlag.READ | MapFlag.WRITE | MapFlag.MMIO, 0])
            req = M.map_(self._dom(), start, end, phys, flags)
        elif kind == "unmap":
            ex = self._existing()
            if ex and rng.random() < 0.6:
                dom, m = ex
                start, end = m.start, m.end
                r = rng.random()
                if r < 0.2:                               # partial: RANGE
                    end = start + (end - start) // 2
                elif r < 0.4:                             # wider, byte-granular ends
                    start = max(0, start - rng.randint(0, 3 * p.granule))
                    end = min(_U64, end + rng.randint(0, 3 * p.granule))
            else:
                dom = self._dom()
                start, end = self._range()
            req = M.unmap(dom, start, end)
        elif kind == "probe":
            wlen = p.probe_size + REQ_TAIL_SIZE
            if rng.random() < 0.2:
                wlen = rng.randint(0, wlen + 16)
            return M.probe(self._ep()), wlen
        else:
            return self._bad()
        return req, REQ_TAIL_SIZE

    def _bad(self):
        """A malformed request: each case one rule of the specification."""
        rng, p = self.rng, self.params
        ep, dom = self._ep(), self._dom()
        g = p.granule
        case = rng.randrange(12)
        if case == 0:
            return M.attach(dom, ep, reserved=1 << rng.randrange(32)), 4
        if case == 1:
            return M.attach(dom, ep, flags=1 << rng.randrange(1, 32)), 4
        if case == 2:
            return M.detach(dom, ep, reserved=1 << rng.randrange(64)), 4
        if case == 3:
            return M.unmap(dom, 0, g - 1, reserved=1 << rng.randrange(32)), 4
        if case == 4:
            return M.probe(ep, reserved=1 << rng.randrange(512)), p.probe_size + 4
        if case == 5:
            return M.map_(dom, 0, g - 1, 0, flags=1 << rng.randrange(2, 32)), 4
        if case == 6:                                    # misaligned
            start, end = self._range()
            which = rng.randrange(3)
            return M.map_(dom, start + (which == 0), end - (which == 2),
                          g * 4 + (which == 1) * rng.randrange(1, g)), 4
        if case == 7:                                    # reversed
            return M.map_(dom, 8 * g, 4 * g - 1, 0), 4
        if case == 8:                                    # short
            t = rng.choice(list(ReqType))
            full = {ReqType.ATTACH: M.attach(dom, ep), ReqType.DETACH: M.detach(dom, ep),
                    ReqType.MAP: M.map_(dom, 0, g - 1, 0), ReqType.UNMAP: M.unmap(dom, 0, 1),
                    ReqType.PROBE: M.probe(ep)}[t]
            wlen = p.probe_size + 4 if t == ReqType.PROBE else 4
            return full[:rng.randrange(1, REQ_READABLE_SIZE[t])], wlen
        if case == 9:                                    # unknown type, or empty
            return (bytes([rng.choice([0, 6, 7, 0x80, 0xff])]) + bytes(rng.randrange(40)),
                    rng.randint(0, 16))
        if case == 10:                                   # longer than needed: ignored
            return M.attach(dom, ep) + bytes(rng.randrange(1, 20)), 4
        return M.map_(dom, 0, g - 1, 0) + bytes([rng.randrange(256)] * rng.randrange(1, 12)), 4


class LookupGenerator:
    """Draws lookups ``(endpoint, iova, write)`` around the model's current mappings."""

    def __init__(self, model, rng):
        self.model = model
        self.rng = rng
        self.params = model.params

    def draw(self):
        rng, p = self.rng, self.params
        ids = p.endpoint_ids
        ep = rng.choice(ids) if rng.random() < 0.95 else max(ids) + 1
        write = rng.random() < 0.5
        r = rng.random()
        dom_id = self.model.endpoints.get(ep)
        maps = list(self.model.domains[dom_id].mappings.values()) if dom_id is not None else []
        if maps and r < 0.6:
            m = rng.choice(maps)
            iova = rng.choice([m.start, m.end, m.start - 1, m.end + 1,
                               rng.randint(m.start, m.end)]) & _U64
        elif r < 0.7:
            iova = rng.choice([0xfee00000, 0xfeefffff, 0xfedfffff, 0xfef00000,
                               0xfee00000 + rng.randrange(0x100000)])
        elif r < 0.8:
            iova = rng.getrandbits(64)
        else:
            iova = rng.randrange(48 * p.granule)
        return ep, iova, write
