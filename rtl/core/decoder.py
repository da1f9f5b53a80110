"""Request decoder: the executor's DECODE stage, from the request buffer to the decoded
request (see :class:`~.executor.Executor`)."""

from amaranth.hdl import Module, Signal, Cat, Const, Mux
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .layouts import (Features, ReqType, AttachReq, DetachReq, MapReq, UnmapReq, ProbeReq,
                      REQ_READABLE_SIZE, REQ_TAIL_SIZE, DomainState)
from ..util import tree_any, onehot_encode, ceil_log2


__all__ = ["RequestDecoder", "decoded_layout", "BUF_WORDS", "COUNT_MAX"]


#: Request bytes kept for decoding, in 64-bit words (the largest structure but PROBE's
#: reserved tail).
BUF_WORDS = 5
#: Saturation limit of the byte counter (anything above the largest structure will do).
COUNT_MAX = 255


def decoded_layout(params):
    """The decoded request: one flag per rule of the specification that needs no table
    state, and the operands of the checks that do.

    ``type_ok``
        The type is ATTACH .. PROBE and the request has at least one byte.
    ``t_probe``, ``t_attach``, ``t_detach``, ``t_map``
        The request's type (none of them: UNMAP, or a type that ``type_ok`` rejects).
    ``wlen_probe_short``, ``wlen_tail_short``
        The device-writable part is smaller than PROBE's properties plus the tail, or
        than the tail alone.
    ``bypass_mismatch``
        ATTACH's ``ATTACH_F_BYPASS`` differs from the existing domain's bypass bit.
    ``short``
        Fewer readable bytes than the request type's structure.
    ``reserved_nz``
        A reserved field is nonzero (PROBE: anywhere in bytes 8..71).
    ``flags_bad``
        ATTACH or MAP sets a flag bit that is undefined or not negotiated.
    ``dom_out``
        The domain ID is outside ``domain_range``.
    ``ep_known``, ``ep_oh``
        The endpoint ID is a configured one; which one (one-hot over ``endpoint_ids``).
    ``dom_exists``, ``dom_slot``, ``dom_bypass``
        A live domain slot holds the request's domain; its index; its bypass bit.
    ``misaligned``
        MAP: ``virt_start``, ``phys_start`` or ``virt_end + 1`` is not granule-aligned.
    ``reversed``, ``iova_out``, ``vs_zero``
        ``virt_end < virt_start``; the range leaves ``input_range``; ``virt_start == 0``.
    ``phys_over``
        MAP: the physical range wraps past 2**64.
    ``vs_m1``, ``ve_p1``
        ``virt_start - 1`` and ``virt_end + 1`` (65 bits): UNMAP's coverage query.
    ``resv_ovl``
        Per endpoint: the range overlaps one of the endpoint's reserved regions.
    ``offset``
        MAP: ``phys_start - virt_start`` in pages, the entry's payload.
    ``store_ovl``
        MAP: the physical range touches the store's region (0 without one).
    """
    n_eps = params.n_endpoints
    return data.StructLayout({
        "type_ok": 1, "t_probe": 1, "t_attach": 1, "t_detach": 1, "t_map": 1,
        "wlen_probe_short": 1, "wlen_tail_short": 1, "bypass_mismatch": 1,
        "short": 1, "reserved_nz": 1, "flags_bad": 1, "dom_out": 1, "ep_known": 1,
        "ep_oh": n_eps, "dom_exists": 1, "dom_slot": ceil_log2(n_eps), "dom_bypass": 1,
        "misaligned": 1, "reversed": 1, "iova_out": 1, "vs_zero": 1,
        "phys_over": 1, "vs_m1": 64, "ve_p1": 65, "resv_ovl": n_eps,
        "offset": params.phys_page_bits, "store_ovl": 1,
    })


class RequestDecoder(wiring.Component):
    """Decodes the request in the executor's buffer: field checks that need no table
    state, endpoint and domain matching, and the operands of the table queries.

    Ports
    -----
    req_bytes : In(64 * BUF_WORDS)
        The request's first 40 readable bytes, byte ``k`` at bits ``8k``; bytes not
        received are 0.
    req_count : In(range(COUNT_MAX + 1))
        Readable bytes received (saturating at :data:`COUNT_MAX`).
    req_extra_nz : In(1)
        A nonzero byte was received at offset 40..71 (PROBE's reserved tail).
    req_wlen : In(16)
        The request's device-writable bytes.
    domains : In(ArrayLayout(DomainState, n_endpoints))
        The domain slots.
    features : In(Features)
        Negotiated features (``bypass_config``, ``mmio``).
    decoded : Out(decoded_layout(params))
        The decoded request (see :func:`decoded_layout`).
    query_x, query_y, query_dslot : Out
        The overlap query for MAP and UNMAP: ``x = virt_end``, ``y = virt_start`` (page
        numbers), ``dslot`` the request's domain slot.
    t_unmap : Out(1)
        The request is an UNMAP (its CHECK queries the table once more).

    Every cycle, the domain field of :attr:`req_bytes` (bytes 4..7) is compared with every
    domain slot and the match is registered; everything else is combinational. The
    outputs are valid one cycle after the buffer and the domain slots last changed: the
    executor takes them in DECODE, the cycle after a request's last beat, and holds them
    in its decode registers (``d``) until the request is answered. Every request that
    carries a domain and is not short (INVAL before any rule looks at the domain) has at
    least 20 bytes, 3 beats, so beat 0 has been in the buffer for a cycle when the last
    beat arrives; the domain slots change in neither RECV nor DECODE. Throughput: one request
    per cycle; latency 1 cycle from the buffer to the domain flags, 0 for the rest.
    """

    def __init__(self, params):
        self._params = params
        n_eps = params.n_endpoints
        super().__init__({
            "req_bytes":    In(64 * BUF_WORDS),
            "req_count":    In(range(COUNT_MAX + 1)),
            "req_extra_nz": In(1),
            "req_wlen":     In(16),
            "domains":     In(data.ArrayLayout(DomainState, n_eps)),
            "features":    In(Features),
            "decoded":     Out(decoded_layout(params)),
            "query_x":     Out(params.page_bits),
            "query_y":     Out(params.page_bits),
            "query_dslot": Out(ceil_log2(n_eps)),
            "t_unmap":     Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self._params
        n_eps, shift, ib = p.n_endpoints, p.page_shift, p.iova_bits
        feat, doms, buf, count = self.features, self.domains, self.req_bytes, self.req_count
        assert all(REQ_READABLE_SIZE[t] > 8 for t in
                   (ReqType.ATTACH, ReqType.DETACH, ReqType.MAP, ReqType.UNMAP))

        attach = AttachReq(buf[:160])
        detach = DetachReq(buf[:160])
        map_ = MapReq(buf[:288])
        unmap = UnmapReq(buf[:224])
        # PROBE's reserved[] beyond the buffer is covered by req_extra_nz.
        probe = ProbeReq(Cat(buf, Const(0, 576 - len(buf))))
        rtype = buf[:8]

        # Which domain slot holds the request's domain (bytes 4..7): the buffer's domain
        # field compared with every slot, registered every cycle, so that DECODE's table
        # query and slot decode start from flip-flops. The compare reads the buffer, not
        # beat 0's data as it arrives, so the beat's byte mask and multiplexer stay out of
        # the path from the engine's request FIFO into these eight 32-bit compares.
        dom_hit_r = Signal(n_eps)
        m.d.sync += dom_hit_r.eq(Cat(doms[s].valid & (doms[s].id == buf[32:64])
                                     for s in range(n_eps)))

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
        # The overlap query (the table answers in the cycle after CHECK). MAP and UNMAP
        # share the offsets of virt_start and virt_end; only requests inside input_range
        # use the answer, so iova_bits suffice.
        m.d.comb += [
            self.query_x.eq(map_.virt_end[shift:ib]),
            self.query_y.eq(map_.virt_start[shift:ib]),
            self.query_dslot.eq(onehot_encode(Cat(dom_hit), n_eps)),
            self.t_unmap.eq(is_(ReqType.UNMAP)),
        ]
        dom_bypass = tree_any([dom_hit[s] & doms[s].bypass for s in range(n_eps)])
        # MAP's physical range wraps past 2**64: phys_start + (ve - vs) >= 2**64, decided
        # from the buffer alone, as phys_start + ve + ~vs + 1 >= 2**65 (the same when
        # ve >= vs; a reversed range is INVAL first). The three operands go through one
        # carry-save level and one carry chain, here rather than in CHECK, so that CHECK
        # reads a flag and no add sits in front of its status chain.
        cs_a, cs_b, cs_c = map_.phys_start, ve, ~vs
        cs_sum = cs_a ^ cs_b ^ cs_c
        cs_carry = (cs_a & cs_b) | (cs_a & cs_c) | (cs_b & cs_c)
        phys_sum = Signal(66, name="phys_sum")      # phys_start + ve - vs, 66 bits
        m.d.comb += phys_sum.eq(Cat(cs_sum, Const(0, 2)) +
                                Cat(Const(1, 1), cs_carry, Const(0, 1)))
        phys_over = phys_sum[65]
        if p.store_region is None:
            store_ovl = Const(0)
        else:
            # the last physical byte is phys_sum[:64] (phys_over is answered first)
            store_ovl = ((map_.phys_start <= p.store_region[1]) &
                         (phys_sum[:64] >= p.store_region[0]))
        d = self.decoded
        m.d.comb += [
            d.type_ok.eq((rtype >= ReqType.ATTACH) & (rtype <= ReqType.PROBE) &
                         (count != 0)),
            d.t_probe.eq(is_(ReqType.PROBE)),
            d.t_attach.eq(is_(ReqType.ATTACH)),
            d.t_detach.eq(is_(ReqType.DETACH)),
            d.t_map.eq(is_(ReqType.MAP)),
            d.wlen_probe_short.eq(self.req_wlen < p.probe_size + REQ_TAIL_SIZE),
            d.wlen_tail_short.eq(self.req_wlen < REQ_TAIL_SIZE),
            d.bypass_mismatch.eq(dom_bypass != attach.flags[0]),
            d.short.eq(short),
            d.reserved_nz.eq(Mux(is_(ReqType.ATTACH), attach.reserved != 0,
                             Mux(is_(ReqType.DETACH), detach.reserved != 0,
                             Mux(is_(ReqType.UNMAP), unmap.reserved != 0,
                             Mux(is_(ReqType.PROBE),
                                 (buf[64:320] != 0) | self.req_extra_nz, 0))))),
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
            d.store_ovl.eq(store_ovl),
            d.offset.eq(map_.phys_start[shift:] - map_.virt_start[shift:]),
            d.vs_m1.eq(vs - 1),
            d.ve_p1.eq(ve + 1),
            d.resv_ovl.eq(Cat(
                tree_any([reg_ovl[k] for k, r in enumerate(regions)
                          if r in p.resv_regions[ep_id]])
                for ep_id in p.endpoint_ids)),
        ]
        return m
