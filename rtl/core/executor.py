"""Request executor: request bytes in, table updates and status/probe bytes out."""

from amaranth.hdl import Module, Signal, Cat, Const, Mux
from amaranth.lib import wiring, data, stream
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .layouts import (ReqBeat, RespBeat, Features, ReqType, Status,
                      AttachReq, DetachReq, MapReq, UnmapReq, ProbeReq, REQ_READABLE_SIZE,
                      REQ_TAIL_SIZE, mapping_entry_layout, endpoint_state_layout, DomainState)
from .lookup import LOOKUP_LATENCY
from ..util import tree_any, onehot_mux, onehot_encode, priority_encode, ceil_log2


__all__ = ["Executor"]

_U64 = (1 << 64) - 1
#: Request bytes kept for decoding (the largest structure but PROBE's reserved tail).
_BUF_WORDS = 5
#: Saturation limit of the byte counter (anything above the largest structure will do).
_COUNT_MAX = 255


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

    Timing (cycles, one beat per cycle on both streams)::

        request  beats  decode  table  apply  wait  response
        ATTACH     3      2       -      1     3     1
        DETACH     3      2       -      1     3     1
        MAP        5      2       1      1     -     (in apply)
        UNMAP      4      2       2      1     3     1
        PROBE      9      2       -      -     -     probe_size / 8 + 1

    i.e. 9 cycles per MAP and 13 per UNMAP, independent of the table size. A successful
    MAP's OK status is offered in the cycle its entry is written (8 cycles after its first
    beat): a MAP removes no access, and a lookup presented in that cycle already sees the
    entry; a failed MAP answers from RESP, one cycle later. Decisions that reduce over
    every entry are registered before the change fans out to every entry (the "apply"
    cycle), so neither path limits the clock. The "wait" of
    requests that can remove access lets lookups already in the pipeline drain, so that
    from the cycle the response's first beat is valid every lookup *response* reflects the
    request (see :mod:`.core`).
    """

    def __init__(self, params):
        self._params = params
        n_eps = params.n_endpoints
        self._dslot_bits = ceil_log2(n_eps)
        entry = mapping_entry_layout(params.page_bits, self._dslot_bits,
                                     params.phys_page_bits)
        super().__init__({
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
        })

    def elaborate(self, platform):
        m = Module()
        p = self._params
        n, n_eps, shift = p.entries, p.n_endpoints, p.page_shift
        ib = p.iova_bits
        dsb = self._dslot_bits
        feat = self.features

        m.d.comb += self.unattached_bypass.eq((feat.bypass_config & self.bypass) | feat.bypass)

        # --- request buffer ---------------------------------------------------------------
        buf = Signal(64 * _BUF_WORDS)
        count = Signal(range(_COUNT_MAX + 1))      # readable bytes (saturating)
        beat = Signal(range(16))                   # beat index (saturating)
        extra_nz = Signal()                        # a nonzero byte at offset 40..71
        # Which domain slot holds the request's domain (bytes 4..7): the buffer's domain
        # field compared with every slot, registered every cycle, so that DECODE's table
        # query and slot decode start from flip-flops. Exact in DECODE for every request
        # that carries a domain and is not short (INVAL before any rule that looks at
        # the domain): those are at least 20 bytes, 3 beats, so beat 0 has been in the
        # buffer for a cycle when the last beat arrives; the domain state changes in
        # neither RECV nor DECODE. (Comparing beat 0's data as it arrived put the beat's
        # byte mask and a multiplexer between the engine's request FIFO and these eight
        # 32-bit compares: the 64-entry board image's worst path with the heap placer.)
        dom_hit_r = Signal(n_eps)
        assert all(REQ_READABLE_SIZE[t] > 8 for t in
                   (ReqType.ATTACH, ReqType.DETACH, ReqType.MAP, ReqType.UNMAP))
        wlen = Signal(16)

        attach = AttachReq(buf[:160])
        detach = DetachReq(buf[:160])
        map_ = MapReq(buf[:288])
        unmap = UnmapReq(buf[:224])
        probe = ProbeReq(Cat(buf, Const(0, 576 - len(buf))))   # reserved[] beyond buf: extra_nz
        rtype = buf[:8]

        # --- decoded request (stage D1 registers) -------------------------------------------
        d = Signal(data.StructLayout({
            "type_ok": 1, "t_probe": 1, "t_attach": 1, "t_detach": 1, "t_map": 1,
            "wlen_probe_short": 1, "wlen_tail_short": 1, "bypass_mismatch": 1,
            "short": 1, "reserved_nz": 1, "flags_bad": 1, "dom_out": 1, "ep_known": 1,
            "ep_oh": n_eps, "dom_exists": 1, "dom_slot": dsb, "dom_bypass": 1,
            "misaligned": 1, "reversed": 1, "iova_out": 1, "vs_zero": 1,
            "phys_over": 1, "vs_m1": 64, "ve_p1": 65, "resv_ovl": n_eps,
            "offset": p.phys_page_bits,
        }))

        # --- table-dependent results ----------------------------------------------------
        overlap = Signal(n)

        # --- response -------------------------------------------------------------------
        status = Signal(8)
        resp_len = Signal(16)       # bytes to write
        resp_props = Signal()       # properties come from the ROM (PROBE OK)
        resp_ep = Signal(range(n_eps))
        resp_beat = Signal(range(p.probe_size // 8 + 2))
        wait = Signal(range(LOOKUP_LATENCY + 1))

        eps = self.endpoints
        doms = self.domains

        # Probe property ROM: one block of probe_size bytes per distinct property set.
        words = p.probe_size // 8
        blobs, blob_of_ep = [], []
        for ep_id in p.endpoint_ids:
            props = p.probe_properties(ep_id)
            if props not in blobs:
                blobs.append(props)
            blob_of_ep.append(blobs.index(props))
        rom_init = [int.from_bytes(b[8 * k:8 * k + 8], "little")
                    for b in blobs for k in range(words)]
        m.submodules.probe_rom = rom = Memory(shape=64, depth=len(rom_init), init=rom_init)
        rom_rd = rom.read_port(domain="comb")
        blob_base = Signal(range(len(rom_init) + 1))
        with m.Switch(resp_ep):
            for e in range(n_eps):
                with m.Case(e):
                    m.d.comb += blob_base.eq(blob_of_ep[e] * words)
        m.d.comb += rom_rd.addr.eq(blob_base + resp_beat)

        # Response beat generation: byte lane j of beat k is byte 8k+j of the answer.
        tail_pos = Signal(16)
        m.d.comb += tail_pos.eq(resp_len - REQ_TAIL_SIZE)
        lanes = []
        for j in range(8):
            pos = resp_beat * 8 + j
            prop = Mux(resp_props, rom_rd.data.word_select(j, 8), 0)
            lanes.append(Mux(pos < tail_pos, prop, Mux(pos == tail_pos, status, 0)))
        # The bytes still to send and whether this beat is the last, in flip-flops (set
        # by ``respond``, stepped by ``present``): ``last`` gates the buffer's clear and
        # the state change with the engine's ``ready``, and through a subtract and a
        # compare it was a failing path of the board image.
        resp_left = Signal(16)
        resp_last = Signal()
        m.d.comb += [
            self.resp.payload.data.eq(Cat(lanes)),
            self.resp.payload.nbytes.eq(Mux(resp_last, resp_left[:4], 8)),
            self.resp.payload.last.eq(resp_last),
        ]

        # The entry a MAP writes, from the request buffer and the decode registers, which
        # hold the MAP from CHECK to MAP_WRITE: the table takes it a cycle ahead of the
        # write (in MAP) and registers it once per bank of entries, so that only write_en
        # depends on the MAP's decision (see the MAP and MAP_WRITE states) and no
        # flip-flop drives every entry's tag inputs (see ``MappingTable.write_entry``).
        free_slot = Signal(range(n))
        # The same slot one-hot, nonzero only in MAP_WRITE: it enables the slot's tag
        # flip-flops directly (no decoder of the index in front of every entry).
        write_sel = Signal(n)
        m.d.sync += write_sel.eq(0)
        entry = self.table_write_entry
        m.d.comb += [
            self.table_write_index.eq(free_slot),
            self.table_write_sel.eq(write_sel),
            entry.tag.valid.eq(1),
            entry.tag.dslot.eq(d.dom_slot),
            entry.tag.start.eq(map_.virt_start[shift:ib]),
            entry.tag.end.eq(map_.virt_end[shift:ib]),
            entry.payload.offset.eq(d.offset),
            entry.tag.read.eq(map_.flags[0]),
            entry.tag.write.eq(map_.flags[1]),
            entry.payload.mmio.eq(map_.flags[2]),
        ]

        # Helpers for endpoint / domain state.
        ep_index = onehot_encode(d.ep_oh, n_eps)
        ep_cur = eps[0].shape()(onehot_mux(d.ep_oh, [eps[e] for e in range(n_eps)]))

        def others_in(slot):
            """Another attached endpoint than the request's is in domain slot ``slot``."""
            return tree_any([~d.ep_oh[e] & eps[e].attached & (eps[e].dslot == slot)
                             for e in range(n_eps)])

        # The request's endpoint's state, and whether it is the last endpoint in its
        # domain, registered every cycle: APPLY (the only state that changes endpoints or
        # domains) follows CHECK directly, so in APPLY both are exact. The domain kill they
        # decide reaches every entry's valid flip-flop; from the endpoint state through
        # this comparison and reduction, it was the 64-entry core's critical path (83.7 MHz
        # in one run).
        last_in_dom = Signal()
        cur = Signal.like(ep_cur, name="cur_ep")      # the same for the endpoint's state
        m.d.sync += [last_in_dom.eq(~others_in(ep_cur.dslot)), cur.eq(ep_cur)]

        def respond(st, length=REQ_TAIL_SIZE, props=0, then="RESP"):
            m.d.sync += [status.eq(st), resp_len.eq(length), resp_props.eq(props),
                         resp_beat.eq(0), wait.eq(0),
                         resp_left.eq(length), resp_last.eq(length <= 8)]
            m.next = then

        def present():
            """Offer the response beat (RESP, or MAP_WRITE for a MAP's status)."""
            m.d.comb += self.resp.valid.eq(1)
            with m.If(self.resp.ready):
                m.d.sync += [resp_beat.eq(resp_beat + 1), resp_left.eq(resp_left - 8),
                             resp_last.eq(resp_left <= 16)]
                with m.If(self.resp.payload.last):
                    m.d.sync += [beat.eq(0), count.eq(0), extra_nz.eq(0), buf.eq(0),
                                 ready.eq(1)]
                    m.next = "RECV"

        m.d.sync += dom_hit_r.eq(Cat(doms[s].valid & (doms[s].id == buf[32:64])
                                     for s in range(n_eps)))
        # req.ready: the state is RECV, kept in its own flip-flop (set where RECV is
        # entered, cleared where it is left).
        ready = Signal(init=1)
        m.d.comb += self.req.ready.eq(ready)
        with m.FSM(name="fsm") as fsm:
            with m.State("RECV"):
                beat_in = self.req.payload
                nb = Mux(beat_in.last, Mux(beat_in.nbytes > 8, 8, beat_in.nbytes), 8)
                mask = Cat((nb > j).replicate(8) for j in range(8))
                word = beat_in.data & mask
                with m.If(self.req.valid):
                    for k in range(_BUF_WORDS):
                        with m.If(beat == k):
                            m.d.sync += buf.word_select(k, 64).eq(word)
                    with m.If((beat >= _BUF_WORDS) & (beat < 9) & (word != 0)):
                        m.d.sync += extra_nz.eq(1)
                    m.d.sync += [
                        count.eq(Mux(count + nb > _COUNT_MAX, _COUNT_MAX, count + nb)),
                        beat.eq(Mux(beat == 15, 15, beat + 1)),
                    ]
                    with m.If(beat_in.last):
                        m.d.sync += [wlen.eq(beat_in.wlen), ready.eq(0)]
                        m.d.comb += self.table_query_next.eq(1)     # DECODE queries
                        m.next = "DECODE"

            with m.State("DECODE"):
                # D1: field checks that need no table state, endpoint and domain matching.
                is_ = lambda t: rtype == t
                short = Mux(count == 0, 1, 0)
                for t, size in REQ_READABLE_SIZE.items():
                    short = Mux(is_(t), count < size, short)
                ep_field = Mux(is_(ReqType.PROBE), probe.endpoint, attach.endpoint)
                dom_field = attach.domain       # offset 4 in ATTACH, DETACH, MAP and UNMAP
                dom_hit = [dom_hit_r[s] for s in range(n_eps)]    # slots matching dom_field
                vs = map_.virt_start    # MAP and UNMAP share these offsets
                ve = map_.virt_end
                # 32-bit masks: every undefined bit of the flags field must be caught.
                attach_known = Cat(feat.bypass_config, Const(0, 31))     # ATTACH_F_BYPASS
                map_known = Cat(Const(0b11, 2), feat.mmio, Const(0, 29))  # READ WRITE MMIO
                regions, reg_ovl = [], []
                if p.resv_regions:
                    regions = sorted({r for rs in p.resv_regions.values() for r in rs},
                                     key=lambda r: (r.start, r.end, r.subtype))
                    reg_ovl = [(vs <= r.end) & (ve >= r.start) for r in regions]
                # Ask the table about the range now (query latency 2: the answer is there
                # in the cycle after CHECK). MAP and UNMAP share the offsets of virt_start
                # and virt_end; only requests inside input_range use the answer, so
                # iova_bits suffice.
                m.d.comb += [
                    self.table_query_x.eq(map_.virt_end[shift:ib]),
                    self.table_query_y.eq(map_.virt_start[shift:ib]),
                    self.table_query_dslot.eq(onehot_encode(Cat(dom_hit), n_eps)),
                ]
                # CHECK queries again for UNMAP's coverage test.
                m.d.comb += self.table_query_next.eq(is_(ReqType.UNMAP))
                dom_bypass = tree_any([dom_hit[s] & doms[s].bypass for s in range(n_eps)])
                # MAP's physical range wraps past 2**64: phys_start + (ve - vs) >= 2**64,
                # decided here from the buffer alone, as phys_start + ve + ~vs + 1 >= 2**65
                # (the same when ve >= vs; a reversed range is INVAL first). The three
                # operands go through one carry-save level and one carry chain; CHECK only
                # reads the flag (the add there, with the status chain behind it, was the
                # board image's worst path on two seeds).
                cs_a, cs_b, cs_c = map_.phys_start, ve, ~vs
                cs_sum = cs_a ^ cs_b ^ cs_c
                cs_carry = (cs_a & cs_b) | (cs_a & cs_c) | (cs_b & cs_c)
                phys_over = (Cat(cs_sum, Const(0, 2)) +
                             Cat(Const(1, 1), cs_carry, Const(0, 1)))[65]
                m.d.sync += [
                    d.type_ok.eq((rtype >= ReqType.ATTACH) & (rtype <= ReqType.PROBE) &
                                 (count != 0)),
                    # CHECK's decisions come from these registers, not from the buffer.
                    d.t_probe.eq(is_(ReqType.PROBE)),
                    d.t_attach.eq(is_(ReqType.ATTACH)),
                    d.t_detach.eq(is_(ReqType.DETACH)),
                    d.t_map.eq(is_(ReqType.MAP)),
                    d.wlen_probe_short.eq(wlen < p.probe_size + REQ_TAIL_SIZE),
                    d.wlen_tail_short.eq(wlen < REQ_TAIL_SIZE),
                    d.bypass_mismatch.eq(dom_bypass != attach.flags[0]),
                    d.short.eq(short),
                    d.reserved_nz.eq(Mux(is_(ReqType.ATTACH), attach.reserved != 0,
                                     Mux(is_(ReqType.DETACH), detach.reserved != 0,
                                     Mux(is_(ReqType.UNMAP), unmap.reserved != 0,
                                     Mux(is_(ReqType.PROBE),
                                         (buf[64:320] != 0) | extra_nz, 0))))),
                    d.flags_bad.eq(Mux(is_(ReqType.ATTACH), (attach.flags & ~attach_known) != 0,
                                   Mux(is_(ReqType.MAP), (map_.flags & ~map_known) != 0, 0))),
                    d.dom_out.eq((dom_field < p.domain_range[0]) |
                                 (dom_field > p.domain_range[1])),
                    d.ep_known.eq(tree_any([ep_field == ep_id for ep_id in p.endpoint_ids])),
                    d.ep_oh.eq(Cat(ep_field == ep_id for ep_id in p.endpoint_ids)),
                    d.dom_exists.eq(tree_any(dom_hit)),
                    d.dom_slot.eq(onehot_encode(Cat(dom_hit), n_eps)),
                    d.dom_bypass.eq(dom_bypass),
                    d.misaligned.eq((map_.virt_start[:shift] != 0) |
                                    (map_.phys_start[:shift] != 0) |
                                    (~map_.virt_end[:shift] != 0)),
                    d.reversed.eq(ve < vs),
                    d.vs_zero.eq(vs == 0),
                    d.iova_out.eq((vs < p.input_range[0]) | (ve > p.input_range[1])),
                    d.phys_over.eq(phys_over),
                    d.offset.eq(map_.phys_start[shift:] - map_.virt_start[shift:]),
                    d.vs_m1.eq(vs - 1),
                    d.ve_p1.eq(ve + 1),
                    d.resv_ovl.eq(Cat(
                        tree_any([reg_ovl[k] for k, r in enumerate(regions)
                                  if r in p.resv_regions[ep_id]])
                        for ep_id in p.endpoint_ids)),
                ]
                m.next = "CHECK"

            with m.State("CHECK"):
                # D2: the specification's checks, in the reference model's order. The
                # second table query, UNMAP's coverage test (answer in UNMAP_COVER):
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
                                                         REQ_TAIL_SIZE, wlen))
                    with m.Elif(d.short):
                        respond(Status.INVAL, length=p.probe_size + REQ_TAIL_SIZE)
                    with m.Elif(d.reserved_nz):
                        respond(Status.INVAL, length=p.probe_size + REQ_TAIL_SIZE)
                    with m.Elif(~d.ep_known):
                        respond(Status.NOENT, length=p.probe_size + REQ_TAIL_SIZE)
                    with m.Else():
                        m.d.sync += resp_ep.eq(ep_index)
                        respond(Status.OK, length=p.probe_size + REQ_TAIL_SIZE, props=1)
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
                    with m.Elif(d.dom_bypass | resv_conflict):
                        respond(Status.INVAL)
                    with m.Else():
                        m.next = "MAP"
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

            with m.State("MAP"):
                # Decide here, write in the next cycle: the decision (a reduction over every
                # entry) and the write (a fan-out to every entry) would not fit in one.
                # Every outcome answers a tail-only status, so only ``status``, the slot
                # and the next state depend on the table's answer (a 64-entry reduction);
                # the other response registers load unconditionally.
                ovl = (self.table_x_ge_start & self.table_y_le_end & self.table_in_domain)
                ovl_any = ovl.any()
                respond(Mux(ovl_any, Status.INVAL,
                            Mux(~self.table_free_valid, Status.NOMEM, Status.OK)),
                        then="RESP")
                with m.If(~ovl_any & self.table_free_valid):
                    m.d.sync += [free_slot.eq(self.table_free_index),
                                 write_sel.eq(self.table_free_onehot)]
                    m.next = "MAP_WRITE"

            with m.State("MAP_WRITE"):
                # The entry is written at the end of this cycle, and the OK status is
                # offered in it already: a lookup presented in this cycle is decided
                # against the state after the write (see the ordering contract in
                # :mod:`.core`). (The table registered the MAP's entry at the end of
                # MAP, so ``buf`` may be cleared at this edge if the status is taken now.)
                m.d.comb += self.table_write_en.eq(1)
                m.next = "RESP"
                present()

            with m.State("UNMAP_OVERLAP"):
                # Overlap: virt_start <= end_i and virt_end >= start_i (asked in DECODE).
                m.d.sync += overlap.eq(self.table_x_ge_start & self.table_y_le_end &
                                       self.table_in_domain)
                m.next = "UNMAP_COVER"

            with m.State("UNMAP_COVER"):
                # Both flags come from registers: the buffer's 64-bit zero test in front
                # of this reduction was the core's critical path (89 MHz at 64 entries).
                ve_max = d.ve_p1[ib]        # virt_end is the last address iova_bits hold
                covered = (Mux(d.vs_zero, Const(-1, n), ~self.table_x_ge_start) &
                           Mux(ve_max, Const(-1, n), ~self.table_y_le_end))
                partial = (overlap & ~covered).any()
                # As in MAP, only ``status`` and the next state depend on the reduction.
                respond(Mux(partial, Status.RANGE, Status.OK))
                with m.If(~partial):
                    m.next = "UNMAP_KILL"

            with m.State("UNMAP_KILL"):
                m.d.comb += self.table_kill.eq(overlap)
                respond(Status.OK, then="WAIT")

            with m.State("APPLY"):
                # ATTACH / DETACH, decided in CHECK, applied here at one clock edge.
                with m.If(d.t_attach):
                    self._attach(m, d, attach, ep_index, last_in_dom, cur)
                with m.Else():
                    self._leave(m, ep_index, last_in_dom, cur)
                respond(Status.OK, then="WAIT")

            with m.State("WAIT"):
                # Let lookups decided against the old state leave the pipeline.
                m.d.sync += wait.eq(wait + 1)
                with m.If(wait == LOOKUP_LATENCY - 1):
                    m.next = "RESP"

            with m.State("RESP"):
                present()

        m.d.comb += self.busy.eq(~self.req.ready)
        #: internal registers the formal harness ties together (induction strengtheners)
        self.formal_view = {
            "count": count, "beat": beat, "ready": ready, "in_recv": fsm.ongoing("RECV"),
            "resp_len": resp_len, "resp_beat": resp_beat, "resp_left": resp_left,
            "resp_last": resp_last,
            # the states a response has been set up for and not finished in
            "resp_set": fsm.ongoing("RESP") | fsm.ongoing("MAP_WRITE") | fsm.ongoing("WAIT"),
        }
        return m

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
