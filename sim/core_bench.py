"""Testbench helpers for the device core in Amaranth's simulator.

:class:`CoreBench` drives a :class:`~viommu.rtl.core.top.Core` cycle by cycle from one async
testbench: it streams requests into ``req``, collects ``resp``, presents lookups on every
port, and decodes the core's internal tables into the reference model's snapshot format.
"""

import copy
import random

from amaranth.lib import data

from viommu.rtl.core.layouts import (ReqBeat, RespBeat, LookupVia, mapping_tag_layout,
                                mapping_payload_layout,
                                endpoint_state_layout, DomainState, Features, Feature)
from viommu.rtl.core.lookup import LOOKUP_LATENCY
from viommu.rtl.util import ceil_log2
from viommu.sim.model import Mapping, Translation


__all__ = ["request_beats", "features_value", "CoreBench", "rtl_snapshot",
           "translation_of"]


def request_beats(readable, wlen):
    """The :class:`ReqBeat` payloads (as ints) that carry ``readable``."""
    readable = bytes(readable)
    layout = data.Layout.cast(ReqBeat)
    beats = []
    chunks = [readable[i:i + 8] for i in range(0, len(readable), 8)] or [b""]
    for k, chunk in enumerate(chunks):
        last = k == len(chunks) - 1
        beats.append(layout.const({
            "data": int.from_bytes(chunk, "little"), "nbytes": len(chunk), "last": last,
            "wlen": min(wlen, 0xffff)}).as_value().value)
    return beats


_FEATURE_FIELDS = {
    Feature.INPUT_RANGE: "input_range", Feature.DOMAIN_RANGE: "domain_range",
    Feature.MAP_UNMAP: "map_unmap", Feature.BYPASS: "bypass", Feature.PROBE: "probe",
    Feature.MMIO: "mmio", Feature.BYPASS_CONFIG: "bypass_config",
}


def features_value(features):
    """The :class:`Features` struct value for a set of :class:`Feature` bits."""
    return data.Layout.cast(Features).const(
        {name: int(f in features) for f, name in _FEATURE_FIELDS.items()}).as_value().value


def rtl_snapshot(params, tags, payloads, endpoints, domains):
    """Decode the raw values of the core's tables into ``DeviceModel.snapshot()`` form.

    ``tags``, ``endpoints``, ``domains``: the raw values of the table's ``tags`` and the
    executor's ``endpoints`` / ``domains``; ``payloads``: the payload memory's words.
    """
    dsb = ceil_log2(params.n_endpoints)
    tag_l = data.Layout.cast(mapping_tag_layout(params.page_bits, dsb))
    pay_l = data.Layout.cast(mapping_payload_layout(params.phys_page_bits))
    ep_l = data.Layout.cast(endpoint_state_layout(dsb))
    dom_l = data.Layout.cast(DomainState)
    shift, ppbits = params.page_shift, params.phys_page_bits
    field = lambda raw, k, size: (raw >> (k * size)) & ((1 << size) - 1)
    doms = {}
    for s in range(params.n_endpoints):
        dom = dom_l.from_bits(field(domains, s, dom_l.size))
        if dom.valid:
            doms[s] = (dom.id, bool(dom.bypass), [])
    eps = []
    for e, ep_id in enumerate(params.endpoint_ids):
        ep = ep_l.from_bits(field(endpoints, e, ep_l.size))
        if ep.attached:
            assert ep.dslot in doms, f"endpoint {ep_id} attached to dead slot {ep.dslot}"
            eps.append((ep_id, doms[ep.dslot][0]))
    for i in range(params.entries):
        tag = tag_l.from_bits(field(tags, i, tag_l.size))
        if tag.valid:
            assert tag.dslot in doms, f"entry {i} in dead domain slot {tag.dslot}"
            pay = pay_l.from_bits(payloads[i])
            phys_page = (tag.start + pay.offset) & ((1 << ppbits) - 1)
            flags = tag.read | tag.write << 1 | pay.mmio << 2
            doms[tag.dslot][2].append(Mapping(
                tag.start << shift, (tag.end << shift) | ((1 << shift) - 1),
                phys_page << shift, flags))
    return (tuple(sorted(eps)),
            tuple(sorted((dom_id, bypass, tuple(sorted(maps)))
                         for dom_id, bypass, maps in doms.values())))


def translation_of(resp):
    """A model :class:`Translation` from a lookup response view (``data.Const``).

    Also checks what the model does not: a denied lookup carries no translation (``phys``
    is the request's ``iova``, ``mmio`` is 0), so a consumer that ignores ``allowed``
    learns no other address space's address."""
    if resp.allowed:
        return Translation(True, phys=resp.phys, mmio=bool(resp.mmio), via=LookupVia(resp.via))
    assert resp.phys == resp.iova and not resp.mmio, \
        f"denied lookup of {resp.iova:#x} answers phys={resp.phys:#x} mmio={resp.mmio}"
    return Translation(False, reason=resp.reason, flags=resp.flags)


class CoreBench:
    """Drives a core from an Amaranth async testbench (``ctx``)."""

    def __init__(self, core, ctx):
        self.core = core
        self.ctx = ctx
        self.params = core.params

    async def setup(self, features, bypass=0):
        self.ctx.set(self.core.features.as_value(), features_value(features))
        self.ctx.set(self.core.bypass, bypass)

    def snapshot(self):
        """The core's full translation state, in ``DeviceModel.snapshot()`` form."""
        ex, table = self.core.executor, self.core.table
        get = lambda v: self.ctx.get(v.as_value())
        payloads = []
        for i in range(self.params.entries):
            mem, addr = table.payload_location(i)
            payloads.append(self.ctx.get(mem.data[addr]).as_value().value)
        snap = rtl_snapshot(self.params, get(table.tags), payloads, get(ex.endpoints),
                            get(ex.domains))
        if self.core.store is None:
            return snap
        return self._store_snapshot(snap)

    def _store_snapshot(self, cached):
        """With a mapping store: the domains' mappings are the store's records; the
        table (``cached``) must hold only copies of them (the cache is coherent)."""
        from viommu.sim.store_bench import read_store
        p = self.params
        shift, ppmask = p.page_shift, (1 << p.phys_page_bits) - 1
        ex = self.core.executor
        dom_l = data.Layout.cast(DomainState)
        raw = self.ctx.get(ex.domains.as_value())
        slot_of = {}
        for s_ in range(p.n_endpoints):
            dom = dom_l.from_bits((raw >> (s_ * dom_l.size)) & ((1 << dom_l.size) - 1))
            if dom.valid:
                slot_of[dom.id] = s_
        per_slot = {s_: [] for s_ in slot_of.values()}
        for slot, start, end, phys, flags in read_store(self.ctx, self.core.store):
            assert slot in per_slot, f"store record {start:#x}..{end:#x} of dead slot {slot}"
            per_slot[slot].append(Mapping(start << shift, (end << shift) | ((1 << shift) - 1),
                                          (phys & ppmask) << shift, flags))
        eps, doms = cached
        out = []
        for dom_id, bypass, maps in doms:
            stored = tuple(sorted(per_slot[slot_of[dom_id]]))
            stale = set(maps) - set(stored)
            assert not stale, f"the table caches {sorted(stale)} of domain {dom_id}, " \
                              f"which the store does not hold"
            out.append((dom_id, bypass, stored))
        return eps, tuple(sorted(out))

    async def request(self, readable, wlen, max_cycles=1000):
        """Stream one request and collect its answer. Returns ``(bytes, cycles)``."""
        ctx, core = self.ctx, self.core
        beats = request_beats(readable, wlen)
        out = bytearray()
        ctx.set(core.resp.ready, 1)
        cycles = 0
        k = 0
        while True:
            if k < len(beats):
                ctx.set(core.req.valid, 1)
                ctx.set(core.req.payload.as_value(), beats[k])
            else:
                ctx.set(core.req.valid, 0)
            req_fire = k < len(beats) and ctx.get(core.req.ready)
            resp_valid = ctx.get(core.resp.valid)
            resp = ctx.get(core.resp.payload)
            await ctx.tick()
            cycles += 1
            if req_fire:
                k += 1
            if resp_valid:
                out += resp.data.to_bytes(8, "little")[:resp.nbytes]
                if resp.last:
                    break
            assert cycles < max_cycles, "core did not answer"
        ctx.set(core.req.valid, 0)
        return bytes(out), cycles
