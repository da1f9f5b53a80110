"""Translation lookup port: endpoint DMA address in, allow/deny and physical address out."""

from amaranth.hdl import Module, Signal, Cat, Const, Mux
from amaranth.lib import wiring, data, stream
from amaranth.lib.wiring import In, Out

from .layouts import (lookup_request_layout, lookup_response_layout, mapping_tag_layout,
                      mapping_payload_layout, endpoint_state_layout, LookupVia, FaultReason,
                      ResvSubtype, lookup_miss_layout)
from ..util import tree_any, onehot_mux, ceil_log2, uge


__all__ = ["LookupPort", "LOOKUP_LATENCY", "ABSENT_KEYS", "region_checks"]


#: Cycles from a lookup request to its response.
LOOKUP_LATENCY = 3

#: With a mapping store: the pages a port remembers the store does not map (its absent
#: registers). As many as the accesses a port has in flight (the pipeline's 3 and one
#: presented again), so a requester that presents its accesses again in order is never
#: starved by its own other misses.
ABSENT_KEYS = 4


def region_checks(params, addr):
    """Compare ``addr`` against every distinct reserved region of ``params`` (constants).

    Returns ``(regions, hits)``: the distinct regions and, for each, a 1-bit value that is
    set when ``addr`` lies in it.
    """
    regions = sorted({r for rs in params.resv_regions.values() for r in rs},
                     key=lambda r: (r.start, r.end, r.subtype))
    hits = [(addr >= r.start) & (addr <= r.end) for r in regions]
    return regions, hits


class LookupPort(wiring.Component):
    """One translation lookup port, fully pipelined.

    A request ``{endpoint, iova, write}`` accepted on :attr:`req` (``valid`` and ``ready``
    high) in cycle ``t`` is answered on :attr:`resp` in cycle ``t + 3``; one request per
    cycle. The request is decided against the table state of cycle ``t + 1`` (see the
    ordering contract in :mod:`.top`). ``ready`` is a flip-flop: it is 1 in every cycle
    but those in which the port's comparators answer a management query (below).

    With ``query=True`` the port's CAM comparators also answer the request executor's
    management queries (MAP's overlap test, UNMAP's overlap and coverage tests), so that
    the table needs no second set of comparators: two 52-bit carry chains per entry, a
    third of the 64-entry core's logic. A query announced by ``query_next`` in cycle
    ``t - 1`` takes the comparators in cycle ``t``: ``req.ready`` is 0 in that cycle (no
    lookup is accepted) and the query's operands, presented in cycle ``t``, are loaded
    where a lookup's page number would be. In cycle ``t + 2``, for every entry ``i``,
    ``x_ge_start[i] = query_x >= start[i]``, ``y_le_end[i] = query_y <= end[i]`` and
    ``in_domain[i] = valid[i] & (dslot[i] == query_dslot)``, against the table of cycle
    ``t + 1`` (query latency 2). The executor queries once per request, twice per UNMAP,
    so a lookup stream loses at most 2 cycles per request (a request takes 9 or more).
    Without ``query`` ``ready`` is always 1.

    Pipeline:

    * cycle t: the request is registered: its page number, the access direction and the
      endpoint ID decoded against the configured IDs once per bank of 8 entries (no net
      fans out to more than 16 comparators), the reserved regions (MSI window, RESERVED)
      checked. In a query's cycle the banks load the query's operands instead.
    * cycle t+1: the endpoint's state (attached, bypass domain) is selected, and each bank
      selects the endpoint's domain slot from its own copy of the decoded ID;
      every CAM entry compares its page copy with its ``[start, end]`` and its
      domain slot with the endpoint's (two carry chains and a small equality per entry)
      and takes the permission the access needs from its ``read`` / ``write`` bits.
      Entries of one domain never overlap, so at most one entry hits. Each entry's
      verdict (in range, in the domain, permitted) is registered beside its comparators
      (one flip-flop per entry): no reduction across entries follows the carry chains in
      this cycle.
    * cycle t+2: the one-hot verdict vector reads the entry's offset and memory type from
      the table's LUT RAM (each bank of 8 entries addressed by its own 8 bits, see
      :class:`~.mapping_table.MappingTable`) and adds
      ``phys = iova + (offset << page_shift)``, the offset read as 0 unless the table
      decides (``payload_en``, registered in cycle t+1), so the sum is the response's
      ``phys`` as it stands. The decision from the endpoint's state and the reserved regions is made
      from flip-flops alongside; the table's verdict (any bit set) enters only its last
      multiplexer. Everything is registered onto :attr:`resp` for cycle t+3.

    The state inputs (:attr:`tags`, :attr:`payload_data`, :attr:`endpoints`,
    :attr:`unattached_bypass`) come
    from the core's tables. The request inputs feed the comparators directly, so they
    should be driven from flip-flops.

    With a mapping store (``params.mappings``), the table is a cache and a lookup that
    finds no entry whose range holds the page (``s1_range``, beside ``s1_hit``: an entry in
    range without the permission is a denial, not a miss) is a *miss*, unless one of the
    port's :data:`ABSENT_KEYS` *absent* registers holds its (domain slot, page): the store
    was asked and holds no such mapping, so the lookup is denied. A miss is answered with ``retry`` (nothing
    decided, no fault) and, if the port has no miss waiting, recorded in :attr:`miss`
    (:attr:`miss_valid`) for the executor, which fills the table from the store between
    requests; a later presentation of the same access then hits, or is denied by the
    absent register. A miss does not stop the port: the following lookups are answered
    as usual, hits at once, other misses with ``retry`` (one miss waits per port).

    * ``miss_valid``, ``miss`` (Out): the waiting miss; ``miss_ack`` (In) takes it;
      ``clear`` (In, a device reset) drops it.
    * ``absent_set`` (In): the next absent register in turn := ``absent_key`` (In);
      ``absent_clear`` (In, wins): forget them all (a MAP or an ATTACH may have made a
      page mapped).

    With a store region (``params.store_region``), an access the port lets through
    untranslated (bypass, MSI window) into that region is denied (reason MAPPING).
    """

    def __init__(self, params, *, query=False):
        if not isinstance(query, bool):
            raise TypeError(f"query must be True or False, not {query!r}")
        self._params = params
        self._query = query
        n_eps = params.n_endpoints
        self._dslot_bits = ceil_log2(n_eps)
        ew = params.endpoint_width
        members = {
            "req":  In(stream.Signature(lookup_request_layout(ew))),
            "resp": Out(stream.Signature(lookup_response_layout(ew), always_ready=True)),
            "tags": In(data.ArrayLayout(
                mapping_tag_layout(params.page_bits, self._dslot_bits), params.entries)),
            "payload_sel": Out(params.entries),
            "payload_en": Out(1),
            "payload_data": In(mapping_payload_layout(params.phys_page_bits)),
            "endpoints": In(data.ArrayLayout(endpoint_state_layout(self._dslot_bits), n_eps)),
            "unattached_bypass": In(1),
        }
        if params.mappings:
            members.update({
                "miss_valid":   Out(1),
                "miss":         Out(lookup_miss_layout(params)),
                "miss_ack":     In(1),
                "absent_set":   In(1),
                "absent_key":   In(lookup_miss_layout(params)),
                "absent_clear": In(1),
                "clear":        In(1),
            })
        if query:
            members.update({
                "query_next":  In(1),
                "query_x":     In(params.page_bits),
                "query_y":     In(params.page_bits),
                "query_dslot": In(self._dslot_bits),
                "x_ge_start":  Out(params.entries),
                "y_le_end":    Out(params.entries),
                "in_domain":   Out(params.entries),
            })
        super().__init__(members)

    @property
    def query(self):
        """Whether the port's comparators also answer management queries."""
        return self._query

    def elaborate(self, platform):
        m = Module()
        p = self._params
        n, n_eps, shift = p.entries, p.n_endpoints, p.page_shift
        req = self.req.payload

        # --- stage 1: register the request, one copy of its page number per entry -----
        BANK = 8
        n_banks = (n + BANK - 1) // BANK
        # A management query takes the comparators in the cycle after ``query_next``:
        # ``ready`` is 0 then, and each bank loads the query's operands instead of the
        # request's page number, selected by its own copy of the flag (no net fans out
        # to every bank's 104 operand flip-flops).
        if self._query:
            querying = Signal(name="querying")
            m.d.sync += querying.eq(self.query_next)
            m.d.comb += self.req.ready.eq(~querying)
            qsel = []
            for b in range(n_banks):
                q = Signal(name=f"query_sel_bank{b}", attrs={"keep": 1})
                m.d.sync += q.eq(self.query_next)
                qsel.append(q)
        else:
            m.d.comb += self.req.ready.eq(1)
        accept = self.req.valid & self.req.ready
        ep_hit_in = Cat(req.endpoint == ep_id for ep_id in p.endpoint_ids)
        regions, region_hit = region_checks(p, req.iova)
        msi_by_ep, resv_by_ep = [], []
        for ep_id in p.endpoint_ids:
            mine = p.resv_regions[ep_id]
            msi_by_ep.append(tree_any([region_hit[k] for k, r in enumerate(regions)
                                       if r in mine and r.subtype == ResvSubtype.MSI]))
            resv_by_ep.append(tree_any([region_hit[k] for k, r in enumerate(regions)
                                        if r in mine and r.subtype == ResvSubtype.RESERVED]))
        s0 = Signal(data.StructLayout({
            "valid": 1, "ep_hit": n_eps, "msi": n_eps, "resv": n_eps, "in_range": 1,
            "store": 1, "endpoint": len(req.endpoint), "iova": 64, "write": 1}))
        if p.store_region is not None:
            m.d.sync += s0.store.eq((req.iova >= p.store_region[0]) &
                                    (req.iova <= p.store_region[1]))
        m.d.sync += [
            s0.valid.eq(accept),
            s0.ep_hit.eq(ep_hit_in),
            s0.msi.eq(Cat(msi_by_ep)),
            s0.resv.eq(Cat(resv_by_ep)),
            s0.in_range.eq(req.iova[p.iova_bits:] == 0 if p.iova_bits < 64 else 1),
            s0.endpoint.eq(req.endpoint),
            s0.iova.eq(req.iova),
            s0.write.eq(req.write),
        ]
        # One copy of the page number per bank of 8 entries (16 comparators), not per entry
        # or per pair of entries: finer copies mean thousands of copy flip-flops on the
        # 64-entry core, each input bit fanned out across the whole CAM, which congests
        # the routing. Two copies when the port answers queries: the start comparators'
        # operand ``x`` and the end comparators' ``y`` (both the page number for a lookup).
        # The access direction too (it selects each entry's permission bit).
        # And the decoded endpoint: each bank selects the endpoint's domain slot itself,
        # so the selected slot does not fan out from one net to all 64 entries. In a query
        # cycle the decoded endpoint is loaded as 0 and the query's slot is ORed in instead.
        page_in = req.iova[shift:p.iova_bits]
        xs, ys, writes, ep_hits, qdslots = [], [], [], [], []
        for b in range(n_banks):
            def copy(name, width):
                return Signal(width, name=f"{name}_bank{b}", reset_less=True,
                              attrs={"keep": 1})
            write = copy("write", 1)
            ep_hit_b = copy("ep_hit", n_eps)
            m.d.sync += write.eq(req.write)
            if self._query:
                x, y, qd = copy("x", p.page_bits), copy("y", p.page_bits), \
                    copy("qdslot", self._dslot_bits)
                m.d.sync += [
                    x.eq(Mux(qsel[b], self.query_x, page_in)),
                    y.eq(Mux(qsel[b], self.query_y, page_in)),
                    ep_hit_b.eq(Mux(qsel[b], 0, ep_hit_in)),
                    qd.eq(Mux(qsel[b], self.query_dslot, 0)),
                ]
                qdslots.append(qd)
            else:
                x = y = copy("page", p.page_bits)
                m.d.sync += [x.eq(page_in), ep_hit_b.eq(ep_hit_in)]
                qdslots.append(0)
            xs.append(x)
            ys.append(y)
            writes.append(write)
            ep_hits.append(ep_hit_b)

        # --- stage 2: decode the endpoint, compare every entry ---------------------------
        ep_hit = s0.ep_hit
        ep_state = self.endpoints[0].shape()(onehot_mux(
            ep_hit, [self.endpoints[e] for e in range(n_eps)]))
        s1_hit = Signal(n)
        s1_range = Signal(n)        # with a store: the entry's range holds the page
        s1 = Signal(data.StructLayout({
            "valid": 1, "known": 1, "attached": 1, "bypass": 1, "ub": 1, "msi": 1, "resv": 1,
            "in_range": 1, "map_en": 1, "endpoint": len(req.endpoint), "iova": 64,
            "write": 1, "store": 1, "dslot": self._dslot_bits, "absent": 1}))
        store = bool(p.mappings)
        if store:
            # the absent registers (see the class docstring), compared here with the
            # endpoint's domain slot and the page; replaced in turn
            absent_valid = Signal(ABSENT_KEYS, name="absent_valid")
            absent = [Signal(lookup_miss_layout(p), name=f"absent{k}")
                      for k in range(ABSENT_KEYS)]
            turn = Signal(range(ABSENT_KEYS), name="absent_turn")
            with m.If(self.absent_clear):
                m.d.sync += absent_valid.eq(0)
            known = tree_any([absent_valid[k] & (absent[k].as_value() ==
                                                  self.absent_key.as_value())
                              for k in range(ABSENT_KEYS)])
            with m.Elif(self.absent_set & ~known):      # a page is remembered once
                m.d.sync += turn.eq(turn + 1)
                with m.Switch(turn):
                    for k in range(ABSENT_KEYS):
                        with m.Case(k):
                            m.d.sync += [absent_valid[k].eq(1), absent[k].eq(self.absent_key)]
            page = s0.iova[shift:p.iova_bits]
            m.d.sync += [
                s1.dslot.eq(ep_state.dslot),
                s1.absent.eq(tree_any([absent_valid[k] & (absent[k].dslot == ep_state.dslot) &
                                       (absent[k].page == page)
                                       for k in range(ABSENT_KEYS)])),
            ]
        m.d.sync += [
            s1.store.eq(s0.store),
            s1.valid.eq(s0.valid),
            # The table decides: stage 3's ``use_map`` (the Else of its decision chain,
            # written out here once more from the same stage-1 flags) and the input range.
            # A mismatch would show: formal's "no translation unless MAPPING" and every
            # test's ``translation_of`` check on denials.
            # Not in a cycle without a lookup (a query's, whose hits mean nothing).
            s1.map_en.eq(s0.valid & ep_hit.any() & ep_state.attached & ~ep_state.bypass &
                         ~(ep_hit & s0.msi).any() & ~(ep_hit & s0.resv).any() &
                         s0.in_range),
            s1.known.eq(ep_hit.any()),
            s1.attached.eq(ep_state.attached),
            s1.bypass.eq(ep_state.bypass),
            s1.ub.eq(self.unattached_bypass),
            s1.msi.eq((ep_hit & s0.msi).any()),
            s1.resv.eq((ep_hit & s0.resv).any()),
            s1.in_range.eq(s0.in_range),
            s1.endpoint.eq(s0.endpoint),
            s1.iova.eq(s0.iova),
            s1.write.eq(s0.write),
        ]
        bank_dslot = [onehot_mux(ep_hits[b], [self.endpoints[e].dslot for e in range(n_eps)])
                      | qdslots[b] for b in range(n_banks)]
        for i in range(n):
            t, b = self.tags[i], i // BANK
            readable = t.read | t.write if p.write_only_reads else t.read
            perm = Mux(writes[b], t.write, readable)
            ge_start = uge(xs[b], t.start)
            le_end = uge(t.end, ys[b])
            in_domain = t.valid & (t.dslot == bank_dslot[b])
            m.d.sync += s1_hit[i].eq(in_domain & perm & ge_start & le_end)
            if store:
                m.d.sync += s1_range[i].eq(in_domain & ge_start & le_end)
            if self._query:
                m.d.sync += [self.x_ge_start[i].eq(ge_start), self.y_le_end[i].eq(le_end),
                             self.in_domain[i].eq(in_domain)]

        # --- stage 3: read the hit entry's payload (LUT RAM), add, decide ----------------
        # At most one entry hits: the table reads its payload by the one-hot vector.
        m.d.comb += [self.payload_sel.eq(s1_hit), self.payload_en.eq(s1.map_en)]
        c = s1
        resp = self.resp.payload
        access = Cat(~c.write, c.write, Const(0, 6), Const(1, 1))
        # The decision when the mapping table is not consulted, from flip-flops only
        # (in priority order: unknown endpoint, unattached, bypass domain, MSI window,
        # RESERVED region); the table's verdict (an OR of the 64 hit bits) and the
        # translated address (LUT RAM read and add) enter only at the last multiplexer.
        d_allowed, d_via, d_reason = Signal(), Signal(LookupVia), Signal(FaultReason)
        use_map = Signal()
        with m.If(~c.known):
            m.d.comb += d_reason.eq(FaultReason.UNKNOWN)
        with m.Elif(~c.attached):
            with m.If(c.ub):
                m.d.comb += [d_allowed.eq(1), d_via.eq(LookupVia.BYPASS)]
            with m.Else():
                m.d.comb += d_reason.eq(FaultReason.DOMAIN)
        with m.Elif(c.bypass):
            m.d.comb += [d_allowed.eq(1), d_via.eq(LookupVia.BYPASS)]
        with m.Elif(c.msi):
            with m.If(c.write):
                m.d.comb += [d_allowed.eq(1), d_via.eq(LookupVia.MSI)]
            with m.Else():
                m.d.comb += d_reason.eq(FaultReason.MAPPING)
        with m.Elif(c.resv):
            m.d.comb += d_reason.eq(FaultReason.MAPPING)
        with m.Else():
            m.d.comb += use_map.eq(1)
        map_ok = s1_hit.any() & c.in_range
        if store:
            # a miss: no entry's range holds the page, and the store was not found
            # without it (the absent register); one miss waits per port
            retry = use_map & c.in_range & ~s1_range.any() & ~c.absent
            miss_valid = Signal(name="miss_valid")
            with m.If(self.miss_ack | self.clear):
                m.d.sync += miss_valid.eq(0)
            with m.If(c.valid & retry & ~miss_valid):
                m.d.sync += [miss_valid.eq(1), self.miss.dslot.eq(c.dslot),
                             self.miss.page.eq(c.iova[shift:p.iova_bits])]
            m.d.comb += self.miss_valid.eq(miss_valid)
        else:
            retry = Const(0)
        if p.store_region is not None:
            # nothing untranslated reaches the store's own memory
            into_store = d_allowed & c.store
            d_allowed_final = Signal()
            d_reason_final = Signal(FaultReason)
            m.d.comb += [d_allowed_final.eq(d_allowed & ~c.store),
                         d_reason_final.eq(Mux(into_store, FaultReason.MAPPING, d_reason))]
            d_allowed, d_reason = d_allowed_final, d_reason_final
            d_via = Mux(c.store, LookupVia.NONE, d_via)
        allowed = Mux(use_map, map_ok, d_allowed)
        # The table reads 0 when no entry hits, and when ``payload_en`` (``map_en``) is 0:
        # its payload is 0 unless the access is translated (``use_map & map_ok``), so the
        # untranslated ``phys = iova`` is ``iova + 0``, and the adder's sum goes straight
        # into the response register, with no multiplexer behind the carry chain.
        payload = self.payload_data
        phys = Cat(c.iova[:shift], c.iova[shift:] + payload.offset)
        m.d.sync += [
            self.resp.valid.eq(c.valid),
            resp.endpoint.eq(c.endpoint),
            resp.iova.eq(c.iova),
            resp.write.eq(c.write),
            resp.allowed.eq(allowed),
            resp.via.eq(Mux(use_map, Mux(map_ok, LookupVia.MAPPING, LookupVia.NONE), d_via)),
            resp.reason.eq(Mux(use_map, Mux(map_ok | retry, 0, FaultReason.MAPPING),
                               d_reason)),
            resp.flags.eq(Mux(allowed | (use_map & retry), 0, access)),
            resp.retry.eq(use_map & retry),
            resp.phys.eq(phys),
            resp.mmio.eq(payload.mmio),
        ]
        return m
