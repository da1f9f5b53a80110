"""Request executor: request bytes in, table updates and status/probe bytes out."""

from amaranth.hdl import Module, Signal, Cat, Const, Mux
from amaranth.lib import wiring, data, stream
from amaranth.lib.wiring import In, Out

from .layouts import (ReqBeat, RespBeat, Features, Status, AttachReq, MapReq, UnmapReq,
                      REQ_TAIL_SIZE, mapping_entry_layout, endpoint_state_layout, DomainState,
                      lookup_miss_layout)
from .lookup import LOOKUP_LATENCY
from .decoder import RequestDecoder, decoded_layout, BUF_WORDS, COUNT_MAX
from .response import ResponseFormatter
from ..store.layouts import StoreOp, StoreStatus, op_layout, result_layout, record_layout
from ..util import tree_any, onehot_mux, onehot_encode, priority_encode, ceil_log2


__all__ = ["Executor"]


#: A fill checks the store's record and the slot's domain before it installs the record
#: (see ``Executor._fill``). Only the formal harness's ``unchecked_fill`` mutation turns
#: this off, to show that the proofs catch a fill that trusts the store.
FILL_CHECKS = True


class _Registers:
    """The executor's registers, made in one place and handed to the methods that build
    each part of it (the FSM's state register is the FSM's own)."""

    def __init__(self, params, dslot_bits):
        n, n_eps = params.entries, params.n_endpoints
        # --- request buffer (RECV) ------------------------------------------------------
        self.buf = Signal(64 * BUF_WORDS)           # the first 40 readable bytes
        self.count = Signal(range(COUNT_MAX + 1))   # readable bytes (saturating)
        self.beat = Signal(range(16))               # beat index (saturating)
        self.extra_nz = Signal()                    # a nonzero byte at offset 40..71
        self.wlen = Signal(16)                      # the request's writable bytes
        # req.ready: the state is RECV, kept in its own flip-flop (set where RECV is
        # entered, cleared where it is left).
        self.ready = Signal(init=1)
        # --- decoded request (DECODE, held until the request is answered) ----------------
        self.d = Signal(decoded_layout(params))
        # --- the request's endpoint, registered every cycle (see ``_endpoint``) ----------
        self.last_in_dom = Signal()
        self.cur = Signal(endpoint_state_layout(dslot_bits), name="cur_ep")
        # --- table ----------------------------------------------------------------------
        self.free_slot = Signal(range(n))           # the slot a MAP writes
        self.write_sel = Signal(n)                  # the same, one-hot, in MAP_WRITE only
        self.overlap = Signal(n)                    # UNMAP: the entries it overlaps
        # --- response -------------------------------------------------------------------
        self.status = Signal(8)
        self.resp_len = Signal(16)      # bytes to write
        self.resp_props = Signal()      # properties come from the ROM (PROBE OK)
        self.resp_ep = Signal(range(n_eps))
        self.resp_beat = Signal(range(params.probe_size // 8 + 2))
        self.wait = Signal(range(LOOKUP_LATENCY + 1))
        # The bytes still to send and whether this beat is the last, in flip-flops of
        # their own (set by ``_respond``, stepped by ``_present``): ``last`` gates the
        # buffer's clear and the state change with the engine's ``ready``, and these
        # registers keep a subtract and a compare out of that path.
        self.resp_left = Signal(16)
        self.resp_last = Signal()
        # --- statistics -----------------------------------------------------------------
        self.nomem = Signal(32)         # MAPs answered NOMEM (saturating)
        # --- mapping store (params.mappings) --------------------------------------------
        if params.mappings:
            sp = params.store_params
            self.kill_slot = Signal(dslot_bits)
            self.fill_port = Signal(params.lookup_ports)    # one-hot: whose miss
            self.fill_key = Signal(lookup_miss_layout(params))
            self.fill_rec = Signal(record_layout(sp))
            self.fill_offset = Signal(params.phys_page_bits)
            self.fill_sound = Signal()              # the record may be installed
            self.victim = Signal(range(n))          # the next entry a fill evicts


class Executor(wiring.Component):
    """Decodes requests, checks them against the specification's rules and applies them.

    The executor owns the endpoint and domain-slot state, drives the
    :class:`~.mapping_table.MappingTable`'s write and kill ports, and asks lookup port 0's
    comparators its management queries (see :class:`~.lookup.LookupPort`).

    Ports
    -----
    req : In(stream.Signature(ReqBeat))
        The device-readable bytes of one request after another, 8 per beat
        (see :class:`~.layouts.ReqBeat`). Accepted one beat per cycle while the executor is
        receiving; held off (``ready`` low) while it works on a request. ``ready`` is a
        flip-flop (high exactly in RECV), so a producer's FIFO may take it as the clock
        enable of its output register, and the beat's data may come straight from that
        register: no multiplexer in front of the decode across the chip.
    resp : Out(stream.Signature(RespBeat))
        For each request, the bytes to write into its device-writable part
        (see :class:`~.layouts.RespBeat`): the 4-byte tail, or probe properties plus tail,
        or a single empty beat when nothing is written.
    features, bypass : In
        Negotiated features and the ``bypass`` configuration byte's bit 0.
    busy : Out(1)
        A request is being worked on (``req.ready`` is low).
    endpoints, domains : Out
        Endpoint and domain-slot state, for the lookup ports.
    unattached_bypass : Out(1)
        Unattached endpoints bypass translation (BYPASS_CONFIG and bypass = 1, or F_BYPASS).
    table_* : Out/In
        Connected to the mapping table (see :class:`~.mapping_table.MappingTable`), except
        ``table_query_*`` and the answers ``table_x_ge_start``, ``table_y_le_end``,
        ``table_in_domain``: those go to lookup port 0, whose comparators answer the
        queries (see :class:`~.lookup.LookupPort`). ``table_query_next`` announces a query
        one cycle ahead: it is 1 in RECV's last beat (DECODE queries for MAP's and UNMAP's
        overlap) and in an UNMAP's DECODE (CHECK queries for its coverage), so a lookup
        stream loses one cycle per request and two per UNMAP.

    Structure
    ---------
    One FSM steps through a request; each state takes one cycle but RECV (one per beat),
    WAIT and RESP:

    * RECV (:meth:`_receive`): beats go into the request buffer (``buf``, 40 bytes), with
      the byte count, the beat index and a flag for nonzero bytes beyond the buffer.
    * DECODE (:meth:`_decode`): the :class:`~.decoder.RequestDecoder` turns the buffer
      into the decoded request, registered in ``d``; the table is asked for overlaps.
    * CHECK (:meth:`_check`): the specification's rules in the reference model's order,
      from ``d`` and the endpoint and domain state. A failed rule sets up the response
      (:meth:`_respond`); a request that passes goes on to MAP, UNMAP_OVERLAP or APPLY.
    * MAP, MAP_WRITE (:meth:`_map`): decide from the table's overlap answer and free slot,
      then write the entry.
    * UNMAP_OVERLAP, UNMAP_COVER, UNMAP_KILL (:meth:`_unmap`): register the overlap,
      decide from the coverage answer, kill the entries.
    * APPLY (:meth:`_apply`): ATTACH or DETACH changes the endpoint and domain state.
    * WAIT, RESP (:meth:`_answer`): let the lookup pipeline drain, then offer the answer's
      beats, laid out by the :class:`~.response.ResponseFormatter` from the response
      registers (:meth:`_present`); after the last beat, back to RECV.

    Timing (cycles, one beat per cycle on both streams)::

        request  beats  decode  table  apply  wait  response
        ATTACH     3      2       -      1     3     1
        DETACH     3      2       -      1     3     1
        MAP        5      2       1      1     -     (in apply)
        UNMAP      4      2       2      1     3     1
        PROBE      9      2       -      -     -     probe_size / 8 + 1

    i.e. 9 cycles per MAP and 13 per UNMAP, independent of the table size; one request at
    a time. A successful MAP's OK status is offered in the cycle its entry is written (8
    cycles after its first beat): a MAP removes no access, and a lookup presented in that
    cycle already sees the entry; a failed MAP answers from RESP, one cycle later.
    Decisions that reduce over every entry are registered before the change fans out to
    every entry (the "apply" cycle), so neither path limits the clock. The "wait" of
    requests that can remove access lets lookups already in the pipeline drain, so that
    from the cycle the response's first beat is valid every lookup *response* reflects the
    request (see :mod:`.top`).
    """

    def __init__(self, params):
        self._params = params
        n_eps = params.n_endpoints
        self._dslot_bits = ceil_log2(n_eps)
        entry = mapping_entry_layout(params.page_bits, self._dslot_bits,
                                     params.phys_page_bits)
        members = {
            "req":  In(stream.Signature(ReqBeat)),
            "resp": Out(stream.Signature(RespBeat)),
            "features": In(Features),
            "bypass":   In(1),
            "busy":     Out(1),
            "endpoints": Out(data.ArrayLayout(endpoint_state_layout(self._dslot_bits), n_eps)),
            "domains":   Out(data.ArrayLayout(DomainState, n_eps)),
            "unattached_bypass": Out(1),
            "table_write_en":      Out(1),
            "table_write_index":   Out(range(params.entries)),
            "table_write_sel":     Out(params.entries),
            "table_write_entry":   Out(entry),
            "table_kill":          Out(params.entries),
            "table_kill_dslot_en": Out(1),
            "table_kill_dslot":    Out(self._dslot_bits),
            "table_query_next":    Out(1),
            "table_query_x":       Out(params.page_bits),
            "table_query_y":       Out(params.page_bits),
            "table_query_dslot":   Out(self._dslot_bits),
            "table_x_ge_start":    In(params.entries),
            "table_y_le_end":      In(params.entries),
            "table_in_domain":     In(params.entries),
            "table_free_valid":    In(1),
            "table_free_index":    In(range(params.entries)),
            "table_free_onehot":   In(params.entries),
            "nomem_count":         Out(32),
        }
        if params.mappings:
            sp = params.store_params
            ports = params.lookup_ports
            members.update({
                "store_op":      Out(stream.Signature(op_layout(sp))),
                "store_result":  In(stream.Signature(result_layout(sp))),
                "miss_valid":    In(ports),
                "miss":          In(lookup_miss_layout(params)).array(ports),
                "miss_ack":      Out(ports),
                "absent_set":    Out(ports),
                "absent_key":    Out(lookup_miss_layout(params)),
                "absent_clear":  Out(1),
                # the store's memory answered a bus error: its records are not trusted
                "store_failed":  In(1),
            })
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        p = self._params
        feat = self.features
        r = _Registers(p, self._dslot_bits)

        m.d.comb += self.unattached_bypass.eq((feat.bypass_config & self.bypass) | feat.bypass)

        m.submodules.decoder = dec = RequestDecoder(p)
        m.d.comb += [
            dec.req_bytes.eq(r.buf), dec.req_count.eq(r.count),
            dec.req_extra_nz.eq(r.extra_nz), dec.req_wlen.eq(r.wlen),
            dec.domains.eq(self.domains), dec.features.eq(feat),
        ]
        m.submodules.response = fmt = ResponseFormatter(p)
        m.d.comb += [
            fmt.tail_status.eq(r.status), fmt.length.eq(r.resp_len),
            fmt.props.eq(r.resp_props), fmt.endpoint.eq(r.resp_ep),
            fmt.beat_index.eq(r.resp_beat),
            fmt.left.eq(r.resp_left), fmt.last.eq(r.resp_last),
            self.resp.payload.eq(fmt.payload),
        ]

        self._map_entry(m, r)
        ep_index, ep_cur = self._endpoint(m, r)
        m.d.comb += self.req.ready.eq(r.ready)
        # The states are numbered in the order they are first named here (RECV, the reset
        # state, is 0).
        with m.FSM(name="fsm") as fsm:
            self._receive(m, r)                     # RECV
            self._decode(m, r, dec)                 # DECODE
            self._check(m, r, ep_index, ep_cur)     # CHECK
            self._map(m, r)                         # MAP, MAP_WRITE
            self._unmap(m, r)                       # UNMAP_OVERLAP, UNMAP_COVER, UNMAP_KILL
            self._apply(m, r, ep_index)             # APPLY
            self._answer(m, r)                      # WAIT, RESP
            if self._params.mappings:
                self._store_states(m, r)            # MAP_STORE ... KILL_RESULT
                self._fill(m, r)                    # FILL ... FILL_WRITE

        m.d.comb += [self.busy.eq(~self.req.ready), self.nomem_count.eq(r.nomem)]
        #: internal registers the formal harness ties together (induction strengtheners)
        self.formal_view = {
            "count": r.count, "beat": r.beat, "ready": r.ready,
            "in_recv": fsm.ongoing("RECV"),
            "resp_len": r.resp_len, "resp_beat": r.resp_beat, "resp_left": r.resp_left,
            "resp_last": r.resp_last, "status": r.status,
            # the states a response has been set up for and not finished in
            "resp_set": (fsm.ongoing("RESP") | fsm.ongoing("WAIT") |
                         fsm.ongoing("KILL_STORE") | fsm.ongoing("KILL_RESULT")
                         if p.mappings else
                         fsm.ongoing("RESP") | fsm.ongoing("MAP_WRITE") | fsm.ongoing("WAIT")),
        }
        if p.mappings:
            self.formal_view.update({
                # a fill is under way (no request is)
                "in_fill": tree_any([fsm.ongoing(name) for name in (
                    "FILL", "FILL_FIND", "FILL_WAIT", "FILL_PREP", "FILL_QUERY",
                    "FILL_QWAIT", "FILL_CHECK", "FILL_EVICT", "FILL_WRITE")]),
                # a response set up as the 4-byte tail alone (the states between
                # APPLY or UNMAP_KILL and RESP)
                "tail_only": (fsm.ongoing("WAIT") | fsm.ongoing("KILL_STORE") |
                              fsm.ongoing("KILL_RESULT")),
                # a request is under way and has changed nothing yet
                "unchanged_yet": tree_any([fsm.ongoing(name) for name in (
                    "DECODE", "CHECK", "MAP_STORE", "MAP_RESULT", "UNMAP_OVERLAP",
                    "UNMAP_STORE", "UNMAP_RESULT", "APPLY")]),
            })
        return m

    # --- shared pieces ------------------------------------------------------------------

    def _map_entry(self, m, r):
        """Drive the table's write ports: the entry a MAP writes, its slot and the slot's
        one-hot (nonzero only in MAP_WRITE, set in MAP)."""
        p = self._params
        shift, ib = p.page_shift, p.iova_bits
        map_ = MapReq(r.buf[:288])
        # The entry comes from the request buffer and the decode registers, which hold the
        # MAP from CHECK to MAP_WRITE: the table takes it a cycle ahead of the write (in
        # MAP) and registers it once per bank of entries, so that only write_en depends on
        # the MAP's decision (see ``_map``) and no flip-flop drives every entry's tag
        # inputs (see ``MappingTable.write_entry``).
        # The one-hot slot enables the slot's tag flip-flops directly (no decoder of the
        # index in front of every entry).
        m.d.sync += r.write_sel.eq(0)
        entry = self.table_write_entry
        if p.mappings:
            # With a store, only fills write the table (a MAP goes to the store): the
            # entry is the record the fill found, held from FILL_PREP to FILL_WRITE.
            rec = r.fill_rec
            m.d.comb += [
                self.table_write_index.eq(r.free_slot),
                self.table_write_sel.eq(r.write_sel),
                entry.tag.valid.eq(1),
                entry.tag.dslot.eq(r.fill_key.dslot),
                entry.tag.start.eq(rec.start),
                entry.tag.end.eq(rec.end),
                entry.payload.offset.eq(r.fill_offset),
                entry.tag.read.eq(rec.read),
                entry.tag.write.eq(rec.write),
                entry.payload.mmio.eq(rec.mmio),
            ]
            return
        m.d.comb += [
            self.table_write_index.eq(r.free_slot),
            self.table_write_sel.eq(r.write_sel),
            entry.tag.valid.eq(1),
            entry.tag.dslot.eq(r.d.dom_slot),
            entry.tag.start.eq(map_.virt_start[shift:ib]),
            entry.tag.end.eq(map_.virt_end[shift:ib]),
            entry.payload.offset.eq(r.d.offset),
            entry.tag.read.eq(map_.flags[0]),
            entry.tag.write.eq(map_.flags[1]),
            entry.payload.mmio.eq(map_.flags[2]),
        ]

    def _endpoint(self, m, r):
        """The request's endpoint (from the decoded request): returns its index and its
        state, and registers its state (``r.cur``) and whether it is the last endpoint in
        its domain (``r.last_in_dom``) every cycle."""
        n_eps = self._params.n_endpoints
        eps, d = self.endpoints, r.d
        ep_index = onehot_encode(d.ep_oh, n_eps)
        ep_cur = eps[0].shape()(onehot_mux(d.ep_oh, [eps[e] for e in range(n_eps)]))

        def others_in(slot):
            """Another attached endpoint than the request's is in domain slot ``slot``."""
            return tree_any([~d.ep_oh[e] & eps[e].attached & (eps[e].dslot == slot)
                             for e in range(n_eps)])

        # APPLY (the only state that changes endpoints or domains) follows CHECK directly,
        # so in APPLY both registers are exact. The domain kill they decide reaches every
        # entry's valid flip-flop: registering them keeps the endpoint state's selection,
        # comparison and reduction out of that path.
        m.d.sync += [r.last_in_dom.eq(~others_in(ep_cur.dslot)), r.cur.eq(ep_cur)]
        return ep_index, ep_cur

    def _respond(self, m, r, st, length=REQ_TAIL_SIZE, props=0, then="RESP"):
        """Set up the answer: status ``st``, ``length`` bytes, probe properties or not;
        go to state ``then``."""
        m.d.sync += [r.status.eq(st), r.resp_len.eq(length), r.resp_props.eq(props),
                     r.resp_beat.eq(0), r.wait.eq(0),
                     r.resp_left.eq(length), r.resp_last.eq(length <= 8)]
        m.next = then

    def _present(self, m, r):
        """Offer the response beat (RESP, or MAP_WRITE for a MAP's status); after the
        last, empty the request buffer and go back to RECV."""
        m.d.comb += self.resp.valid.eq(1)
        with m.If(self.resp.ready):
            m.d.sync += [r.resp_beat.eq(r.resp_beat + 1), r.resp_left.eq(r.resp_left - 8),
                         r.resp_last.eq(r.resp_left <= 16)]
            with m.If(self.resp.payload.last):
                m.d.sync += [r.beat.eq(0), r.count.eq(0), r.extra_nz.eq(0), r.buf.eq(0)]
                if self._params.mappings:
                    # a waiting miss is filled before the next request (requests and
                    # fills take turns)
                    with m.If(self.miss_valid.any()):
                        m.next = "FILL"
                    with m.Else():
                        m.d.sync += r.ready.eq(1)
                        m.next = "RECV"
                else:
                    m.d.sync += r.ready.eq(1)
                    m.next = "RECV"

    # --- the FSM's states ---------------------------------------------------------------

    def _receive(self, m, r):
        """RECV: take one beat per cycle into the request buffer."""
        with m.State("RECV"):
            beat_in = self.req.payload
            nb = Mux(beat_in.last, Mux(beat_in.nbytes > 8, 8, beat_in.nbytes), 8)
            mask = Cat((nb > j).replicate(8) for j in range(8))
            word = beat_in.data & mask
            with m.If(self.req.valid):
                for k in range(BUF_WORDS):
                    with m.If(r.beat == k):
                        m.d.sync += r.buf.word_select(k, 64).eq(word)
                with m.If((r.beat >= BUF_WORDS) & (r.beat < 9) & (word != 0)):
                    m.d.sync += r.extra_nz.eq(1)
                m.d.sync += [
                    r.count.eq(Mux(r.count + nb > COUNT_MAX, COUNT_MAX, r.count + nb)),
                    r.beat.eq(Mux(r.beat == 15, 15, r.beat + 1)),
                ]
                with m.If(beat_in.last):
                    m.d.sync += [r.wlen.eq(beat_in.wlen), r.ready.eq(0)]
                    m.d.comb += self.table_query_next.eq(1)     # DECODE queries
                    m.next = "DECODE"
            if self._params.mappings:
                # between requests (no beat of one taken yet), a waiting miss is filled
                with m.Elif((r.beat == 0) & self.miss_valid.any()):
                    m.d.sync += r.ready.eq(0)
                    m.next = "FILL"

    def _decode(self, m, r, dec):
        """DECODE (D1): register the decoded request; ask the table about its range (the
        answer is there in the cycle after CHECK)."""
        with m.State("DECODE"):
            # CHECK's decisions come from these registers, not from the buffer.
            m.d.sync += r.d.eq(dec.decoded)
            m.d.comb += [
                self.table_query_x.eq(dec.query_x),
                self.table_query_y.eq(dec.query_y),
                self.table_query_dslot.eq(dec.query_dslot),
            ]
            # CHECK queries again for UNMAP's coverage test (without a store: with one, the
            # store decides coverage).
            if not self._params.mappings:
                m.d.comb += self.table_query_next.eq(dec.t_unmap)
            m.next = "CHECK"

    def _check(self, m, r, ep_index, ep_cur):
        """CHECK (D2): the specification's checks, in the reference model's order. A
        failed check sets up the response; a request that passes goes on to the state that
        applies it."""
        p = self._params
        n_eps, shift, ib = p.n_endpoints, p.page_shift, p.iova_bits
        feat, eps, d = self.features, self.endpoints, r.d

        def respond(st, **kwargs):
            self._respond(m, r, st, **kwargs)

        probe_len = p.probe_size + REQ_TAIL_SIZE
        with m.State("CHECK"):
            # The second table query, UNMAP's coverage test (answer in UNMAP_COVER):
            # virt_start <= start_i  <=>  not (virt_start - 1 >= start_i), and
            # end_i <= virt_end      <=>  not (virt_end + 1 <= end_i).
            m.d.comb += [
                self.table_query_x.eq(d.vs_m1[shift:ib]),
                self.table_query_y.eq(d.ve_p1[shift:ib]),
                self.table_query_dslot.eq(d.dom_slot),
            ]
            resv_conflict = tree_any([d.resv_ovl[e] & eps[e].attached &
                                      (eps[e].dslot == d.dom_slot) for e in range(n_eps)])
            with m.If(~d.type_ok):
                respond(0, length=0)
            with m.Elif(d.t_probe):
                with m.If(~feat.probe):
                    respond(0, length=0)
                with m.Elif(d.wlen_probe_short):
                    respond(Status.INVAL, length=Mux(d.wlen_tail_short,
                                                     REQ_TAIL_SIZE, r.wlen))
                with m.Elif(d.short):
                    respond(Status.INVAL, length=probe_len)
                with m.Elif(d.reserved_nz):
                    respond(Status.INVAL, length=probe_len)
                with m.Elif(~d.ep_known):
                    respond(Status.NOENT, length=probe_len)
                with m.Else():
                    m.d.sync += r.resp_ep.eq(ep_index)
                    respond(Status.OK, length=probe_len, props=1)
            with m.Elif(d.short):
                respond(Status.INVAL)
            with m.Elif(d.t_attach):
                with m.If(d.reserved_nz | d.flags_bad):
                    respond(Status.INVAL)
                with m.Elif(d.dom_out):
                    respond(Status.RANGE)
                with m.Elif(~d.ep_known):
                    respond(Status.NOENT)
                with m.Elif(d.dom_exists & d.bypass_mismatch):
                    respond(Status.INVAL)
                with m.Elif(ep_cur.attached & d.dom_exists & (ep_cur.dslot == d.dom_slot)):
                    respond(Status.OK)
                with m.Else():
                    m.next = "APPLY"
            with m.Elif(d.t_detach):
                with m.If(d.reserved_nz):
                    respond(Status.INVAL)
                with m.Elif(d.dom_out):
                    respond(Status.RANGE)
                with m.Elif(~d.ep_known):
                    respond(Status.NOENT)
                with m.Elif(~(ep_cur.attached & d.dom_exists &
                              (ep_cur.dslot == d.dom_slot))):
                    respond(Status.INVAL)
                with m.Else():
                    m.next = "APPLY"
            with m.Elif(~feat.map_unmap):
                respond(Status.UNSUPP)
            with m.Elif(d.t_map):
                with m.If(d.flags_bad):
                    respond(Status.INVAL)
                with m.Elif(d.dom_out | d.misaligned):
                    respond(Status.RANGE)
                with m.Elif(d.reversed):
                    respond(Status.INVAL)
                with m.Elif(d.iova_out | d.phys_over):
                    respond(Status.RANGE)
                with m.Elif(~d.dom_exists):
                    respond(Status.NOENT)
                with m.Elif(d.dom_bypass | resv_conflict | d.store_ovl):
                    respond(Status.INVAL)
                with m.Else():
                    m.next = "MAP_STORE" if p.mappings else "MAP"
            with m.Else():   # UNMAP
                with m.If(d.reserved_nz):
                    respond(Status.INVAL)
                with m.Elif(d.dom_out):
                    respond(Status.RANGE)
                with m.Elif(d.reversed):
                    respond(Status.INVAL)
                with m.Elif(d.iova_out):
                    respond(Status.RANGE)
                with m.Elif(~d.dom_exists):
                    respond(Status.NOENT)
                with m.Elif(d.dom_bypass):
                    respond(Status.INVAL)
                with m.Else():
                    m.next = "UNMAP_OVERLAP"

    def _map(self, m, r):
        """MAP: decide from the overlap answer and the free slot; MAP_WRITE: write.
        (Without a store only: with one, a MAP goes to the store.)"""
        if self._params.mappings:
            return
        with m.State("MAP"):
            # Decide here, write in the next cycle: the decision (a reduction over every
            # entry) and the write (a fan-out to every entry) would not fit in one.
            # Every outcome answers a tail-only status, so only ``status``, the slot
            # and the next state depend on the table's answer (a 64-entry reduction);
            # the other response registers load unconditionally.
            ovl = (self.table_x_ge_start & self.table_y_le_end & self.table_in_domain)
            ovl_any = ovl.any()
            self._respond(m, r, Mux(ovl_any, Status.INVAL,
                                    Mux(~self.table_free_valid, Status.NOMEM, Status.OK)),
                          then="RESP")
            with m.If(~ovl_any & self.table_free_valid):
                m.d.sync += [r.free_slot.eq(self.table_free_index),
                             r.write_sel.eq(self.table_free_onehot)]
                m.next = "MAP_WRITE"
            with m.If(~ovl_any & ~self.table_free_valid):
                self._count_nomem(m, r)

        with m.State("MAP_WRITE"):
            # The entry is written at the end of this cycle, and the OK status is
            # offered in it already: a lookup presented in this cycle is decided
            # against the state after the write (see the ordering contract in
            # :mod:`.top`). (The table registered the MAP's entry at the end of
            # MAP, so ``buf`` may be cleared at this edge if the status is taken now.)
            m.d.comb += self.table_write_en.eq(1)
            m.next = "RESP"
            self._present(m, r)

    def _unmap(self, m, r):
        """UNMAP_OVERLAP: register the overlap; UNMAP_COVER: decide from the coverage
        answer; UNMAP_KILL: invalidate the overlapping entries."""
        p = self._params
        n, ib, d = p.entries, p.iova_bits, r.d
        with m.State("UNMAP_OVERLAP"):
            # Overlap: virt_start <= end_i and virt_end >= start_i (asked in DECODE).
            m.d.sync += r.overlap.eq(self.table_x_ge_start & self.table_y_le_end &
                                     self.table_in_domain)
            # With a store, the store decides (its UNMAP is all or nothing over every
            # mapping); the table's overlapping entries are copies of mappings inside
            # the range, killed once the store has removed them.
            m.next = "UNMAP_STORE" if p.mappings else "UNMAP_COVER"

        if p.mappings:
            self._unmap_kill(m, r)
            return
        with m.State("UNMAP_COVER"):
            # Both flags come from the decode registers, so that no zero test of the
            # buffer's 64-bit address sits in front of this reduction.
            ve_max = d.ve_p1[ib]        # virt_end is the last address iova_bits hold
            covered = (Mux(d.vs_zero, Const(-1, n), ~self.table_x_ge_start) &
                       Mux(ve_max, Const(-1, n), ~self.table_y_le_end))
            partial = (r.overlap & ~covered).any()
            # As in MAP, only ``status`` and the next state depend on the reduction.
            self._respond(m, r, Mux(partial, Status.RANGE, Status.OK))
            with m.If(~partial):
                m.next = "UNMAP_KILL"

        self._unmap_kill(m, r)

    def _unmap_kill(self, m, r):
        with m.State("UNMAP_KILL"):
            m.d.comb += self.table_kill.eq(r.overlap)
            self._respond(m, r, Status.OK, then="WAIT")

    def _apply(self, m, r, ep_index):
        """APPLY: ATTACH / DETACH, decided in CHECK, applied here at one clock edge."""
        with m.State("APPLY"):
            attach = AttachReq(r.buf[:160])
            with m.If(r.d.t_attach):
                self._attach(m, r.d, attach, ep_index, r.last_in_dom, r.cur)
            with m.Else():
                self._leave(m, ep_index, r.last_in_dom, r.cur)
            self._respond(m, r, Status.OK, then="WAIT")
            if self._params.mappings:
                # a dying domain's mappings leave the store too, before anything else
                # (a fill) can read them; the absent registers are forgotten
                m.d.comb += self.absent_clear.eq(1)
                m.d.sync += r.kill_slot.eq(r.cur.dslot)
                with m.If(self.table_kill_dslot_en):
                    m.next = "KILL_STORE"

    def _answer(self, m, r):
        """WAIT: let lookups decided against the old state leave the pipeline; RESP: offer
        the answer's beats."""
        with m.State("WAIT"):
            m.d.sync += r.wait.eq(r.wait + 1)
            with m.If(r.wait == LOOKUP_LATENCY - 1):
                m.next = "RESP"

        with m.State("RESP"):
            self._present(m, r)

    def _count_nomem(self, m, r):
        """Count a MAP answered NOMEM (the guest never reads MAP's status)."""
        with m.If(~r.nomem.all()):
            m.d.sync += r.nomem.eq(r.nomem + 1)

    # --- with a mapping store -----------------------------------------------------------

    def _ask_store(self, m, then, **fields):
        """Offer the store the operation whose payload fields are ``fields``; once it is
        taken, go to state ``then`` (which takes the result)."""
        op = self.store_op
        m.d.comb += op.valid.eq(1)
        m.d.comb += [getattr(op.payload, name).eq(value) for name, value in fields.items()]
        with m.If(op.ready):
            m.next = then

    def _store_states(self, m, r):
        """MAP_STORE, MAP_RESULT: the store inserts the mapping unless it overlaps one of
        the domain's or the store is full. UNMAP_STORE, UNMAP_RESULT: the store removes
        every mapping inside the range, or none; then UNMAP_KILL kills the table's copies.
        KILL_STORE, KILL_RESULT: a domain died; its mappings leave the store."""
        p = self._params
        shift, ib = p.page_shift, p.iova_bits
        res = self.store_result
        map_ = MapReq(r.buf[:288])
        unmap = UnmapReq(r.buf[:224])

        with m.State("MAP_STORE"):
            self._ask_store(m, "MAP_RESULT", op=StoreOp.MAP, slot=r.d.dom_slot,
                            start=map_.virt_start[shift:ib], end=map_.virt_end[shift:ib],
                            phys=map_.phys_start[shift:], read=map_.flags[0],
                            write=map_.flags[1], mmio=map_.flags[2])

        with m.State("MAP_RESULT"):
            m.d.comb += res.ready.eq(1)
            with m.If(res.valid):
                st = res.payload.status
                self._respond(m, r, Mux(st == StoreStatus.OK, Status.OK,
                                        Mux(st == StoreStatus.NOMEM, Status.NOMEM,
                                            Status.INVAL)))
                with m.If(st == StoreStatus.OK):
                    # the page may be absent no more (the response is valid from the
                    # next cycle, when no absent register holds it)
                    m.d.comb += self.absent_clear.eq(1)
                with m.If(st == StoreStatus.NOMEM):
                    self._count_nomem(m, r)

        with m.State("UNMAP_STORE"):
            self._ask_store(m, "UNMAP_RESULT", op=StoreOp.UNMAP, slot=r.d.dom_slot,
                            start=unmap.virt_start[shift:ib], end=unmap.virt_end[shift:ib],
                            start_partial=unmap.virt_start[:shift] != 0,
                            end_partial=~unmap.virt_end[:shift] != 0)

        with m.State("UNMAP_RESULT"):
            m.d.comb += res.ready.eq(1)
            with m.If(res.valid):
                with m.If(res.payload.status == StoreStatus.OK):
                    m.next = "UNMAP_KILL"
                with m.Else():
                    self._respond(m, r, Status.RANGE)

        with m.State("KILL_STORE"):
            self._ask_store(m, "KILL_RESULT", op=StoreOp.KILL, slot=r.kill_slot)

        with m.State("KILL_RESULT"):
            m.d.comb += res.ready.eq(1)
            with m.If(res.valid):
                m.next = "WAIT"

    def _fill(self, m, r):
        """Fill the table from the store for a lookup port's miss, between requests.

        FILL takes the first waiting miss; FILL_FIND, FILL_WAIT ask the store for the
        mapping holding the page (none: the port's absent register takes the page, and
        its next presentation is denied). FILL_PREP checks the record (see there),
        computes the entry's offset and announces a table query; FILL_QUERY, FILL_QWAIT, FILL_CHECK ask whether an entry
        already holds the mapping (another port's fill), else take a free entry, or evict
        the next victim: killed in FILL_CHECK, rewritten two cycles later, so that no
        lookup reads the new payload for the old entry's hit; FILL_WRITE writes it. Then
        back to RECV. A fill installs a mapping that is in the store at that moment:
        requests wait for it to finish, and no request's change happens during one."""
        p = self._params
        n, ports = p.entries, p.lookup_ports
        res = self.store_result
        key = r.fill_key

        def back():
            m.d.sync += r.ready.eq(1)
            m.next = "RECV"

        with m.State("FILL"):
            # the first waiting miss after the port served last (round robin: no port
            # waits behind another's stream of misses)
            waiting = self.miss_valid
            after = Signal(ports, name="fill_after")
            m.d.comb += after.eq(waiting & ~((r.fill_port << 1) - 1))
            pick = Mux(after.any(), after, waiting)
            onehot = Signal(ports, name="fill_onehot")
            m.d.comb += onehot.eq(pick & ~(pick - 1))
            m.d.comb += self.miss_ack.eq(onehot)
            m.d.sync += [r.fill_port.eq(onehot),
                         key.eq(onehot_mux(onehot, [self.miss[i] for i in range(ports)]))]
            m.next = "FILL_FIND"

        with m.State("FILL_FIND"):
            self._ask_store(m, "FILL_WAIT", op=StoreOp.FIND, slot=key.dslot, start=key.page)

        with m.State("FILL_WAIT"):
            m.d.comb += res.ready.eq(1)
            with m.If(res.valid):
                m.d.sync += r.fill_rec.eq(res.payload.record)
                # nothing read from a store whose memory failed is installed
                with m.If((res.payload.status == StoreStatus.OK) & ~self.store_failed):
                    m.next = "FILL_PREP"
                with m.Else():
                    m.d.comb += [self.absent_set.eq(r.fill_port), self.absent_key.eq(key)]
                    back()

        with m.State("FILL_PREP"):
            # The record is checked before it can reach the table, whatever the store
            # answered (its memory may be external): it is the key's slot's, it holds
            # the page, its physical range neither wraps nor touches the store's region.
            # Otherwise nothing is installed and the page is treated as absent.
            rec = r.fill_rec
            ppb = p.phys_page_bits
            top = Signal(ppb + 1, name="fill_phys_top")     # last physical page (+ wrap)
            m.d.comb += top.eq(rec.phys + (rec.end - rec.start)[:ppb])
            sound = ((rec.slot == key.dslot) & (rec.start <= key.page) &
                     (key.page <= rec.end) & ~top[ppb])
            if p.store_region is not None:
                lo, hi = p.store_region
                sound &= ~((rec.phys <= hi >> p.page_shift) & (top >= lo >> p.page_shift))
            m.d.sync += [r.fill_offset.eq(rec.phys - rec.start), r.fill_sound.eq(sound)]
            m.d.comb += self.table_query_next.eq(1)
            m.next = "FILL_QUERY"

        with m.State("FILL_QUERY"):
            # overlap of [start, end]: end >= start_i and start <= end_i
            m.d.comb += [self.table_query_x.eq(r.fill_rec.end),
                         self.table_query_y.eq(r.fill_rec.start),
                         self.table_query_dslot.eq(key.dslot)]
            m.next = "FILL_QWAIT"

        with m.State("FILL_QWAIT"):
            m.next = "FILL_CHECK"

        with m.State("FILL_CHECK"):
            held = (self.table_x_ge_start & self.table_y_le_end & self.table_in_domain).any()
            # and the slot's domain is live and translated (the store answers nothing for
            # a dead one; this holds whatever it answers)
            dom = self.domains[0].shape()(onehot_mux(
                Cat(key.dslot == s for s in range(p.n_endpoints)),
                [self.domains[s] for s in range(p.n_endpoints)]))
            reject = ~r.fill_sound | ~dom.valid | dom.bypass
            with m.If(reject if FILL_CHECKS else Const(0)):
                m.d.comb += [self.absent_set.eq(r.fill_port), self.absent_key.eq(key)]
                back()
            with m.Elif(held):
                back()
            with m.Elif(self.table_free_valid):
                m.d.sync += [r.free_slot.eq(self.table_free_index),
                             r.write_sel.eq(self.table_free_onehot)]
                m.next = "FILL_WRITE"
            with m.Else():
                m.d.comb += self.table_kill.eq(Const(1, n) << r.victim)
                m.d.sync += [r.free_slot.eq(r.victim),
                             r.victim.eq(Mux(r.victim == n - 1, 0, r.victim + 1))]
                m.next = "FILL_EVICT"

        with m.State("FILL_EVICT"):
            m.d.sync += r.write_sel.eq(Const(1, n) << r.free_slot)
            m.next = "FILL_WRITE"

        with m.State("FILL_WRITE"):
            m.d.comb += self.table_write_en.eq(1)
            back()

    # --- APPLY's changes to the endpoint and domain state -------------------------------

    def _leave(self, m, ep_index, last_in_dom, cur):
        """The request's endpoint leaves its domain, which dies if it was the last one."""
        eps, doms = self.endpoints, self.domains
        with m.Switch(ep_index):
            for e in range(len(eps)):
                with m.Case(e):
                    m.d.sync += eps[e].attached.eq(0)
        with m.If(last_in_dom):
            with m.Switch(cur.dslot):
                for s in range(len(doms)):
                    with m.Case(s):
                        m.d.sync += doms[s].valid.eq(0)
            m.d.comb += [self.table_kill_dslot_en.eq(1),
                         self.table_kill_dslot.eq(cur.dslot)]

    def _attach(self, m, d, attach, ep_index, last_in_dom, cur):
        """Attach the request's endpoint to the request's domain (created if absent)."""
        eps, doms = self.endpoints, self.domains
        n_eps = len(eps)
        with m.If(cur.attached):
            self._leave(m, ep_index, last_in_dom, cur)
        # A free slot always exists: live domains never outnumber attached endpoints, so
        # if every slot is live the endpoint's old domain is the one dying now.
        free_any, free_slot = priority_encode(Cat(~doms[s].valid for s in range(n_eps)), n_eps)
        slot = Signal(self._dslot_bits)
        m.d.comb += slot.eq(Mux(d.dom_exists, d.dom_slot,
                                Mux(free_any, free_slot, cur.dslot)))
        bypass = attach.flags[0]
        with m.If(~d.dom_exists):
            with m.Switch(slot):
                for s in range(n_eps):
                    with m.Case(s):
                        m.d.sync += [doms[s].valid.eq(1), doms[s].id.eq(attach.domain),
                                     doms[s].bypass.eq(bypass)]
        with m.Switch(ep_index):
            for e in range(n_eps):
                with m.Case(e):
                    m.d.sync += [eps[e].attached.eq(1), eps[e].dslot.eq(slot),
                                 eps[e].bypass.eq(bypass)]
