"""Formal verification harness of the device core (for SymbiYosys).

:class:`CoreFormal` instantiates a :class:`~.top.Core` whose every input (request beats,
response backpressure, lookup requests, negotiated features, the ``bypass`` byte, device
reset ``clear``) is a free variable in every cycle (``AnySeq``). No ``Assume`` constrains
them: the properties hold for any environment, however it violates stream protocols.

The harness observes the core's architectural state, which it reads from inside the core
after elaborating it: the mapping table's entries, and the executor's endpoint and
domain-slot state. It asserts:

``invariants`` (also asserted with ``lookup``, ``unchanged`` and ``ordering``: the induction
needs them; every cycle)
    I1 no two valid entries of the same domain slot overlap (property 2);
    I2 a valid entry has ``start <= end``;
    I3 a valid entry's domain slot holds a live, non-bypass domain (otherwise: a mapping
       leaked from a dead domain, reachable by the next domain created in that slot);
    I4 a valid entry's physical range does not wrap around the top of the address space;
    I5 an attached endpoint's domain slot holds a live domain, and the endpoint's copy of
       the domain's bypass bit (used by the lookup path) equals the domain's;
    I6 a live domain slot has at least one attached endpoint;
    I7 live domain slots hold distinct domain IDs.

``lookup`` (property 1, lookup soundness), for every lookup port
    A lookup accepted in cycle ``t`` (``valid`` and ``ready``; ``ready`` is free to be 0
    while port 0's comparators answer a management query) is answered in cycle ``t + 3``
    (and only then), with the request echoed. If it is allowed:

    * via MAPPING: the endpoint is known and attached to a live non-bypass domain, the
      address is in none of the endpoint's reserved regions, and a valid entry of that
      domain contains the address's page, with WRITE for a write (READ, or WRITE when
      ``write_only_reads``, for a read); ``phys = iova + (offset << page_shift)`` and
      ``mmio`` are that entry's;
    * via BYPASS: the endpoint is known and either unattached while unattached endpoints
      bypass (``BYPASS_CONFIG & bypass | F_BYPASS``), or attached to a live bypass domain;
      ``phys = iova``;
    * via MSI: a write by a known endpoint attached to a live non-bypass domain into its
      MSI region; ``phys = iova``;
    * never via NONE.

    A denied lookup, and a BYPASS or MSI grant, carries no translation: ``phys = iova``
    and ``mmio = 0``.

    All of it is judged against the state, features and ``bypass`` of cycle ``t`` (the
    harness delays its verdicts by 3 cycles), as the ordering contract of :mod:`.top`
    promises, even though the lookup reads the hit entry's payload in cycle ``t + 1``.

``unchanged`` (property 3)
    The state (entries, endpoints, domains) is snapshotted in the cycle a request's last
    beat is accepted (the executor then leaves RECV: nothing is decided before). While the
    response's last beat is valid, if the answer's status byte is not OK, or nothing is
    written at all (unknown type, PROBE without F_PROBE), the state equals the snapshot.
    Also, while a beat of a multi-beat answer (only PROBE has them) is valid, the state
    equals the snapshot.

``ordering`` (ordering contract, item 2)
    In a cycle where a response is valid, no valid entry, endpoint state or domain state
    has changed in that cycle or the two before it. Every state change that can remove
    access therefore happens at least 3 cycles before the response, so lookups presented
    from 3 cycles before the response on - whose answers are delivered from the response
    on - see it. (A MAP's write into a free slot only adds access and is exempt.)

``overlap``
    I1 and I2 alone (property 2 without the help of the other invariants).

``cover``
    No assertion; ``Cover`` of a lookup allowed via MAPPING (which needs an ATTACH and a
    MAP first), and of a request answered RANGE as the harness of ``unchanged`` decodes
    it, so the proofs are not vacuous.

Mutations (deliberately broken cores, to show that the properties catch real bugs):
``mutation="no_domain_check"`` replaces the lookup ports by a variant that ignores domain
slots (every valid entry matches every attached endpoint): ``lookup`` must then fail.
``mutation="short_wait"`` elaborates the executor as if lookups took 1 cycle, so it answers
removing requests 2 cycles too early: ``ordering`` must then fail.
``mutation="unchecked_fill"`` (with a store) lets a fill install any record the store
answers: ``invariants`` must then fail.

With a mapping store (``params.mappings``) the core is built with ``store_ports``: the
store's every answer (and its ``ready``) is a free input too, so the properties hold
whatever the store, or a corrupted external memory, answers. Strengtheners E4 (between a
removal and its response the answer is the 4-byte OK tail), U1 (a request is pending
exactly while the executor works on one, not while it fills) and U2 (a request changes
nothing before its decision) carry the induction across the store's unbounded waits.
"""

import contextlib
import sys

from amaranth.hdl import (Module, Signal, Cat, Mux, Value, Assert, Cover, ClockDomain,
                          Elaboratable, Fragment)
from amaranth.asserts import AnySeq
from amaranth.lib import data

from . import top as _core_module
from . import executor as _executor_module
from .top import Core
from .lookup import LookupPort, LOOKUP_LATENCY
from .layouts import LookupVia, ResvSubtype, Status
from .params import CoreParams
from ..util import ceil_log2, tree_any, tree_or


__all__ = ["CoreFormal", "PROPS", "MUTATIONS", "small_params"]


#: Property sets a harness can be built for.
PROPS = ("invariants", "overlap", "lookup", "unchanged", "ordering", "cover")
#: Deliberately broken variants of the core, to show that a property catches the bug.
MUTATIONS = (None, "no_domain_check", "short_wait", "unchecked_fill")


def small_params(**kwargs):
    """The small configuration the formal runs use: 2 entries, 2 endpoints (IDs 0 and 1 of
    a 2-bit ID space, so unknown IDs exist), one lookup port, 4 KiB granule, full 64-bit
    addresses and 32-bit domain IDs, the default x86 MSI region."""
    args = dict(entries=2, endpoints=2, endpoint_width=2, lookup_ports=1)
    args.update(kwargs)
    return CoreParams(**args)


class _NoDomainCheckLookupPort(LookupPort):
    """Mutant lookup port: the real one, fed with every domain slot forced to 0, so every
    valid entry matches every attached endpoint (domain isolation is gone). Port 0's
    management queries see the same tags, so MAP's and UNMAP's domain tests break too."""

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = LookupPort(self._params, query=self.query)
        m.d.comb += [
            inner.req.valid.eq(self.req.valid),
            self.req.ready.eq(inner.req.ready),
            inner.req.payload.eq(self.req.payload),
            self.resp.valid.eq(inner.resp.valid),
            self.resp.payload.eq(inner.resp.payload),
            inner.unattached_bypass.eq(self.unattached_bypass),
        ]
        m.d.comb += [self.payload_sel.eq(inner.payload_sel),
                     self.payload_en.eq(inner.payload_en),
                     inner.payload_data.eq(self.payload_data)]
        if self.query:
            for name in ("query_next", "query_x", "query_y", "query_dslot"):
                m.d.comb += getattr(inner, name).eq(getattr(self, name))
            for name in ("x_ge_start", "y_le_end", "in_domain"):
                m.d.comb += getattr(self, name).eq(getattr(inner, name))
        for i in range(self._params.entries):
            m.d.comb += [inner.tags[i].eq(self.tags[i]), inner.tags[i].dslot.eq(0)]
        for e in range(self._params.n_endpoints):
            m.d.comb += [inner.endpoints[e].eq(self.endpoints[e]),
                         inner.endpoints[e].dslot.eq(0)]
        return m


#: mutation -> (module, global name, replacement) patched while the core is elaborated.
_MUTANTS = {
    # The lookup ignores domain slots: breaks domain isolation (``lookup`` must fail).
    "no_domain_check": (_core_module, "LookupPort", _NoDomainCheckLookupPort),
    # The executor believes lookups take 1 cycle, so it holds a removing request's
    # response back for 1 cycle instead of 3 (``ordering`` must fail).
    "short_wait": (_executor_module, "LOOKUP_LATENCY", 1),
    # With a store: a fill installs whatever record the store answers, without checking
    # it or the slot's domain (``invariants`` must then fail).
    "unchecked_fill": (_executor_module, "FILL_CHECKS", False),
}


@contextlib.contextmanager
def _mutated(mutation):
    """While elaborating the core, swap in the mutant named ``mutation`` (if any)."""
    if mutation is None:
        yield
        return
    module, name, replacement = _MUTANTS[mutation]
    saved = getattr(module, name)
    setattr(module, name, replacement)
    try:
        yield
    finally:
        setattr(module, name, saved)


class CoreFormal(Elaboratable):
    """Formal harness around :class:`~.top.Core` (see the module documentation).

    Parameters
    ----------
    params : CoreParams
        The core's configuration (keep it small: see :func:`small_params`).
    prop : str
        Which property set to assert, one of :data:`PROPS`.
    mutation : str or None
        Build a deliberately broken core instead (one of :data:`MUTATIONS`).
    invariants : bool or None
        Assert the invariants I1..I7 along with ``prop`` (default: yes, except for
        ``overlap`` and ``cover`` and when hunting). Induction needs them.
    hunt : bool
        Look for a violation instead of proving: every check of ``prop`` becomes part of a
        single ``Cover`` of "some check fails", to run in sby's cover mode. Reaching it
        (sby PASS) yields a counterexample trace from reset, as short as possible. Cover
        mode gets there faster than BMC (which proves every earlier step clean with all
        the checks), and with sby's ``skip`` the early steps are not searched at all.
    """

    def __init__(self, params=None, prop="lookup", *, mutation=None, invariants=None,
                 hunt=False):
        if prop not in PROPS or mutation not in MUTATIONS:
            self._MustUse__silence = True       # no "created but never used" warning
            if prop not in PROPS:
                raise ValueError(f"prop must be one of {PROPS}, not {prop!r}")
            raise ValueError(f"mutation must be one of {MUTATIONS}, not {mutation!r}")
        self.params = params if params is not None else small_params()
        self.prop = prop
        self.mutation = mutation
        if invariants is None:
            invariants = prop in ("invariants", "lookup", "unchanged", "ordering") and not hunt
        self.invariants = invariants
        self.hunt = hunt
        #: The harness's only clock domain, without reset: registers start from their
        #: initial values (bounded checks) or from any state (induction); the core's own
        #: reset is ``clear``, a free input. Its ``clk`` must be a port of the converted
        #: design (see :meth:`ports`), or Yosys sees a constant clock and freezes the FFs.
        self.sync = ClockDomain("sync", reset_less=True)

    def ports(self):
        """The ports to give ``amaranth.back.rtlil.convert``: the clock only."""
        return [self.sync.clk]

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = self.sync

        p = self.params
        # Build and elaborate the core here (mutants are patched in while it is built) so
        # that its tables can be observed.
        with _mutated(self.mutation):
            # with a mapping store: the store's answers are free inputs too
            self.core = core = Core(params=p, store_ports=bool(p.mappings))
            # One read port per entry on the table's payload memories, so that the
            # properties see every entry's payload (offset, memory type) as it is stored.
            payload_loc = [core.table.payload_location(i) for i in range(p.entries)]
            payload_rd = [mem.read_port(domain="comb") for mem, _addr in payload_loc]
            m.submodules.core = Fragment.get(core, platform)

        # --- free inputs ----------------------------------------------------------------
        def anyseq(*values):
            for v in values:
                m.d.comb += v.eq(AnySeq(len(Value.cast(v))))

        anyseq(core.req.valid, core.req.payload, core.resp.ready, core.features,
               core.bypass, core.clear)
        for port in core.lookup:
            anyseq(port.req.valid, port.req.payload)
        if p.mappings:
            anyseq(core.store_op.ready, core.store_result.valid, core.store_result.payload)

        # --- observed state -------------------------------------------------------------
        # Every entry as one record: its tag (flip-flops) and its payload (LUT RAM).
        entry_l = data.StructLayout({
            "valid": 1, "dslot": ceil_log2(p.n_endpoints), "start": p.page_bits,
            "end": p.page_bits, "offset": p.phys_page_bits, "read": 1, "write": 1, "mmio": 1})
        self.entries = entries = Signal(data.ArrayLayout(entry_l, p.entries))
        for i in range(p.entries):
            tag, rd = core.table.tags[i], payload_rd[i]
            m.d.comb += [
                rd.addr.eq(payload_loc[i][1]),
                entries[i].valid.eq(tag.valid), entries[i].dslot.eq(tag.dslot),
                entries[i].start.eq(tag.start), entries[i].end.eq(tag.end),
                entries[i].offset.eq(rd.data.offset), entries[i].read.eq(tag.read),
                entries[i].write.eq(tag.write), entries[i].mmio.eq(rd.data.mmio),
            ]
        self.endpoints = eps = core.executor.endpoints
        self.domains = doms = core.executor.domains
        state = Cat(entries.as_value(), eps.as_value(), doms.as_value())

        self._checks = []
        #: ``"file:line"`` of each check -> its message (filled in by elaboration).
        self.check_messages = {}
        prop = self.prop
        self._executor_invariants(m)
        if self.invariants or prop == "invariants":
            self._invariants(m, overlap_only=False)
        elif prop == "overlap":
            self._invariants(m, overlap_only=True)
        if prop in ("lookup", "cover"):
            self._lookup(m, cover=prop == "cover")
        if prop in ("unchanged", "cover"):
            self._unchanged(m, state, cover=prop == "cover")
        if prop == "ordering":
            self._ordering(m, state)
        if self.hunt:
            m.d.comb += Cover(~Cat(ok for ok, _msg in self._checks).all(),
                              f"a {prop} check fails")
        return m

    def _check(self, m, ok, message):
        """A property: ``ok`` holds in every cycle (asserted, or collected when hunting).

        The assertion carries the caller's source location, which is how sby names it;
        :attr:`check_messages` maps ``"file:line"`` back to ``message``."""
        caller = sys._getframe(1)
        where = f"{caller.f_code.co_filename}:{caller.f_lineno}"
        self._checks.append((ok, message))
        self.check_messages.setdefault(where, message)
        if not self.hunt:
            m.d.comb += Assert(ok, message, src_loc_at=1)

    # --- helpers ------------------------------------------------------------------------

    def _slot_valid(self, slot):
        """The domain slot ``slot`` exists and holds a live domain."""
        doms = self.domains
        return tree_any([(slot == s) & doms[s].valid for s in range(self.params.n_endpoints)])

    def _slot_bypass(self, slot):
        doms = self.domains
        return tree_any([(slot == s) & doms[s].bypass for s in range(self.params.n_endpoints)])

    # --- invariants (property 2 and the induction strengtheners) ------------------------

    def _invariants(self, m, *, overlap_only):
        p = self.params
        n, n_eps, pb = p.entries, p.n_endpoints, p.page_bits
        entries, eps, doms = self.entries, self.endpoints, self.domains

        for i in range(n):
            e = entries[i]
            self._check(m, ~e.valid | (e.start <= e.end), f"I2: entry {i} start > end")
            for j in range(i + 1, n):
                f = entries[j]
                self._check(m, ~(e.valid & f.valid & (e.dslot == f.dslot) &
                                 (e.start <= f.end) & (f.start <= e.end)),
                            f"I1: entries {i} and {j} of one domain overlap")
        if overlap_only:
            return

        for i in range(n):
            e = entries[i]
            self._check(m, ~e.valid | (self._slot_valid(e.dslot) &
                                       ~self._slot_bypass(e.dslot)),
                        f"I3: entry {i} in a dead or bypass domain slot")
            ppb = p.phys_page_bits
            phys_start = Signal(ppb, name=f"inv_phys_start{i}")
            phys_last = Signal(ppb + 1, name=f"inv_phys_last{i}")
            m.d.comb += [
                phys_start.eq(e.start + e.offset),
                phys_last.eq(phys_start + (e.end - e.start)[:pb]),
            ]
            self._check(m, ~e.valid | ~phys_last[ppb], f"I4: entry {i}'s physical range wraps")
        for k in range(n_eps):
            ep = eps[k]
            self._check(m, ~ep.attached | (self._slot_valid(ep.dslot) &
                                           (ep.bypass == self._slot_bypass(ep.dslot))),
                        f"I5: endpoint {k} attached to a dead slot or bypass mismatch")
        for s in range(n_eps):
            self._check(m, ~doms[s].valid | tree_any([eps[k].attached & (eps[k].dslot == s)
                                                       for k in range(n_eps)]),
                        f"I6: domain slot {s} live without an endpoint")
            for t in range(s + 1, n_eps):
                self._check(m, ~(doms[s].valid & doms[t].valid & (doms[s].id == doms[t].id)),
                            f"I7: domain slots {s} and {t} hold the same domain")

    def _executor_invariants(self, m):
        """Strengtheners for the induction, each true in every reachable state; without
        them the induction starts from states where they are not. E1: the executor never
        counts more than 8 request bytes per beat received (until its beat counter
        saturates), so a request whose beat 0 is its last is short (else: a 24-byte
        request in one beat, whose domain the executor compares a cycle late, from the
        buffer). E2: its ``req.ready`` flip-flop is high exactly in RECV (else: request
        beats taken in the middle of another request). E3: from the cycle a response is
        set up until its last beat, the bytes left and the ``last`` flag (flip-flops of
        their own, for timing) agree with the response's length and the beats sent, and
        no more beats have gone than the length allows (else: a last beat with bytes
        left, or a multi-beat answer to a MAP)."""
        v = self.core.executor.formal_view
        self._check(m, (v["beat"] == 15) | (v["count"] <= v["beat"] * 8),
                    "E1: more request bytes counted than beats received")
        self._check(m, v["ready"] == v["in_recv"],
                    "E2: the executor's req.ready flip-flop disagrees with its RECV state")
        left = Signal(16, name="inv_resp_left")
        m.d.comb += left.eq(v["resp_len"] - v["resp_beat"] * 8)
        self._check(m, ~v["resp_set"] | ((v["resp_left"] == left) &
                                          (v["resp_last"] == (left <= 8)) &
                                          (v["resp_beat"] * 8 <= v["resp_len"]) &
                                          (v["resp_len"] <= self.params.probe_size + 4)),
                    "E3: a response's bytes left or last flag disagree with its length")
        if self.params.mappings:
            # E4 (with a store, whose KILL may take any time): between APPLY or
            # UNMAP_KILL and RESP the response is the tail alone, status OK.
            self._check(m, ~v["tail_only"] | ((v["resp_len"] == 4) &
                                              (v["status"] == Status.OK)),
                        "E4: a removal's response is not the 4-byte OK tail")

    # --- property 1: lookup soundness ---------------------------------------------------

    def _lookup(self, m, *, cover):
        p = self.params
        core = self.core
        n, n_eps, shift, pb = p.entries, p.n_endpoints, p.page_shift, p.page_bits
        dsb = ceil_log2(n_eps)
        entries, eps = self.entries, self.endpoints
        feat = core.features
        ub = (feat.bypass_config & core.bypass) | feat.bypass

        for k, port in enumerate(core.lookup):
            # The lookup port registers its request and decides against the state of the
            # next cycle: the verdict is computed from the request one cycle late.
            req = Signal.like(port.req.payload, name=f"req{k}_d1")
            req_valid = Signal(name=f"req{k}_valid_d1")
            m.d.sync += [req.eq(port.req.payload),
                         req_valid.eq(port.req.valid & port.req.ready)]
            ep_hit = [req.endpoint == ep_id for ep_id in p.endpoint_ids]
            known = tree_any(ep_hit)
            attached = tree_any([ep_hit[e] & eps[e].attached for e in range(n_eps)])
            dslot = tree_or([Mux(ep_hit[e], eps[e].dslot, 0) for e in range(n_eps)], dsb)
            dvalid = self._slot_valid(dslot)
            dbypass = self._slot_bypass(dslot)

            def in_region(r):
                return (req.iova >= r.start) & (req.iova <= r.end)
            in_msi = tree_any([ep_hit[e] & in_region(r)
                               for e, ep_id in enumerate(p.endpoint_ids)
                               for r in p.resv_regions[ep_id] if r.subtype == ResvSubtype.MSI])
            in_resv = tree_any([ep_hit[e] & in_region(r)
                                for e, ep_id in enumerate(p.endpoint_ids)
                                for r in p.resv_regions[ep_id]])

            translated = known & attached & dvalid & ~dbypass
            page = req.iova[shift:]
            hits = []
            for i in range(n):
                e = entries[i]
                readable = e.read | (e.write if p.write_only_reads else 0)
                perm = Mux(req.write, e.write, readable)
                hits.append(translated & ~in_resv & e.valid & (e.dslot == dslot) &
                            (page >= e.start) & (page <= e.end) & perm)

            verdict = data.StructLayout({
                "valid": 1, "endpoint": len(req.endpoint), "iova": 64, "write": 1,
                "ok_bypass": 1, "ok_msi": 1, "hit": n,
                "offset": data.ArrayLayout(p.phys_page_bits, n), "mmio": n,
            })
            now = Signal(verdict, name=f"verdict{k}_t")
            m.d.comb += [
                now.valid.eq(req_valid),
                now.endpoint.eq(req.endpoint),
                now.iova.eq(req.iova),
                now.write.eq(req.write),
                now.ok_bypass.eq(known & ((~attached & ub) | (attached & dvalid & dbypass))),
                now.ok_msi.eq(translated & req.write & in_msi),
                now.hit.eq(Cat(hits)),
                now.mmio.eq(Cat(entries[i].mmio for i in range(n))),
            ]
            for i in range(n):
                m.d.comb += now.offset[i].eq(entries[i].offset)
            # The verdict travels alongside the lookup: ``then`` is the verdict of the
            # lookup whose response is on the port now.
            then = now
            for stage in range(LOOKUP_LATENCY - 1):
                nxt = Signal(verdict, name=f"verdict{k}_d{stage + 1}")
                m.d.sync += nxt.eq(then)
                then = nxt

            resp = port.resp.payload
            allowed = port.resp.valid & resp.allowed
            if cover:
                m.d.comb += Cover(allowed & (resp.via == LookupVia.MAPPING),
                                  f"port {k}: a lookup allowed via MAPPING")
                continue

            self._check(m, port.resp.valid == then.valid,
                        f"port {k}: response not exactly {LOOKUP_LATENCY} cycles after request")
            self._check(m, ~port.resp.valid | ((resp.endpoint == then.endpoint) &
                                               (resp.iova == then.iova) &
                                               (resp.write == then.write)),
                        f"port {k}: response does not echo its request")
            # Modulo 2**64, like the lookup (I4 says a valid entry never wraps anyway).
            phys_of = [Cat(then.iova[:shift],
                           (then.iova[shift:] + then.offset[i])[:p.phys_page_bits])
                       for i in range(n)]
            mapping_ok = tree_any([then.hit[i] & (resp.phys == phys_of[i]) &
                                   (resp.mmio == then.mmio[i]) for i in range(n)])
            via = resp.via
            self._check(m, ~(allowed & (via == LookupVia.MAPPING)) | mapping_ok,
                        f"port {k}: unjustified MAPPING grant")
            self._check(m, ~(allowed & (via == LookupVia.BYPASS)) |
                        (then.ok_bypass & (resp.phys == then.iova)),
                        f"port {k}: unjustified BYPASS grant")
            self._check(m, ~(allowed & (via == LookupVia.MSI)) |
                        (then.ok_msi & (resp.phys == then.iova)),
                        f"port {k}: unjustified MSI grant")
            self._check(m, ~(allowed & (via == LookupVia.NONE)), f"port {k}: grant via NONE")
            # Only a MAPPING grant carries a translation: a denial, and a BYPASS or MSI
            # grant, answer ``phys = iova`` and no MMIO memory type.
            self._check(m, ~port.resp.valid | (allowed & (via == LookupVia.MAPPING)) |
                        ((resp.phys == then.iova) & ~resp.mmio),
                        f"port {k}: a translation on an answer that is not a MAPPING grant")

    # --- property 3: failed requests change nothing -------------------------------------

    def _unchanged(self, m, state, *, cover):
        core = self.core
        beat = core.req.payload
        req_fire = core.req.valid & core.req.ready
        resp = core.resp.payload
        resp_fire = core.resp.valid & core.resp.ready

        snap = Signal(len(state))       # the state when the request's last beat came in
        pending = Signal()              # a request is accepted and not yet answered
        prev_data = Signal(64)          # the response's previous beat
        with m.If(req_fire & beat.last):
            m.d.sync += [pending.eq(1), snap.eq(state)]
        with m.If(resp_fire):
            m.d.sync += prev_data.eq(resp.data)
            with m.If(resp.last):
                m.d.sync += pending.eq(0)
        with m.If(core.clear):      # the request in progress is abandoned
            m.d.sync += pending.eq(0)

        # The status is the first byte of the 4-byte tail, which ends the response: in its
        # last beat, or (a PROBE answer cut short by a small writable part) in the one
        # before. Only an empty answer (unknown type, PROBE without F_PROBE) has an empty
        # last beat: no status, nothing written.
        nb = resp.nbytes
        status = Signal(8)
        m.d.comb += status.eq(Mux(nb >= 4, resp.data.word_select((nb - 4)[:3], 8),
                                  prev_data.word_select((nb + 4)[:3], 8)))
        failed = resp.last & ((nb == 0) | (status != Status.OK))

        if cover:
            m.d.comb += Cover(pending & core.resp.valid & failed & (status == Status.RANGE),
                              "a request answered RANGE")
            return
        self._check(m, ~(pending & core.resp.valid & failed) | (state == snap),
                    "a request answered with an error status (or nothing) changed the state")
        if self.params.mappings:
            # Strengtheners with a store, whose answers may take any time: U1 a request is
            # pending exactly while the executor works on one (not receiving, not
            # filling); U2 until the request's decision the state is the snapshot's.
            v = core.executor.formal_view
            self._check(m, pending == (~v["in_recv"] & ~v["in_fill"]),
                        "U1: the harness's pending request disagrees with the executor")
            self._check(m, ~(pending & v["unchanged_yet"]) | (state == snap),
                        "U2: a request changed the state before its decision")
        # Only PROBE answers span several beats, and PROBE changes nothing. (This also
        # carries the property over a stalled multi-beat answer in the induction.)
        self._check(m, ~(pending & core.resp.valid & ~resp.last) | (state == snap),
                    "a request with a multi-beat answer (PROBE) changed the state")

    # --- ordering contract, item 2 ------------------------------------------------------

    def _ordering(self, m, state):
        p = self.params
        core = self.core
        entry_l = self.entries.shape()
        prev = Signal(len(state))
        m.d.sync += prev.eq(state)
        n_ent = entry_l.size
        prev_entries = entry_l(prev[:n_ent])
        changed = tree_any(
            [prev_entries[i].valid &
             (prev_entries[i].as_value() != self.entries[i].as_value())
             for i in range(p.entries)] +
            [prev[n_ent:] != state[n_ent:]])      # endpoints and domains
        # changed_d[j]: a change at the clock edge j cycles before this cycle's.
        changed_d = [changed]
        for j in range(LOOKUP_LATENCY - 1):
            r = Signal(name=f"changed_d{j + 1}")
            m.d.sync += r.eq(changed_d[-1])
            changed_d.append(r)
        self._check(m, ~core.resp.valid | ~tree_any(changed_d),
                    "access removed less than 3 cycles before the response")
