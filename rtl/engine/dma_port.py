"""The engine's DMA port and the request arbiters in front of it.

:class:`DMAPort` issues every DMA command of the engine and routes the returns back with
their tags; :class:`Arbiter` picks one of the units' requests per cycle for each of its two
request streams (reads, writes).
"""

from amaranth.hdl import Module, Signal, Cat, Const, Mux
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out

from ..bus.dma import DMASignature
from ..bus.fifo import BypassFIFO, WriteAheadFIFO
from ..util import onehot_mux
from .common import (_RdReq, _RdRet, _WrReq, _WrRet, _RdTag, _WrTag, _RD_OUTSTANDING,
                     _WR_OUTSTANDING)


__all__ = ["DMAPort", "Arbiter"]


def _cmd_queue(m, req, stop, *, room, bus_ready):
    """A 2-entry queue of commands from stream ``req`` (see :class:`DMAPort`).

    Returns ``(head, present, fire, pending)``: the head command (a view of ``req``'s
    payload layout), whether it is presented on the bus, whether it is taken this cycle,
    and whether a presented command is waiting to be taken after this cycle. ``room``
    (space in the caller's queues, which only the caller's pushes at ``fire`` reduce) must
    be high to present a command for the first time; once presented, it stays presented
    whatever ``room`` does.
    """
    layout = req.payload.shape()
    head = Signal(layout)
    tail = Signal(layout)
    h_valid, h_fresh, t_valid = Signal(), Signal(), Signal()
    drop_h = h_valid & h_fresh & stop
    present, fire, pending = Signal(), Signal(), Signal()
    take = Signal()
    m.d.comb += [
        present.eq(h_valid & (room | ~h_fresh) & ~drop_h),
        fire.eq(present & bus_ready),
        pending.eq(h_valid & ~h_fresh & ~fire),
        req.ready.eq(~stop & ~t_valid),
        take.eq(req.valid & req.ready),
    ]
    # The head and tail registers load the request's payload whenever they may take one,
    # whether or not a request is there (only the valid bits follow ``take``), so that
    # ``take``, which comes through the requesters' arbitration, is not the clock enable
    # of every bit of both registers.
    # The tail loads in every cycle it is empty, whatever the head does: its enable is
    # ``t_valid`` alone, not ``fire`` (which comes from the bus's ready and the tag
    # queue's fill).
    with m.If(~t_valid):
        m.d.sync += tail.eq(req.payload)
    with m.If(~h_valid | fire | drop_h):
        with m.If(t_valid & ~stop):
            m.d.sync += [head.eq(tail), h_valid.eq(1), h_fresh.eq(1)]
        with m.Else():
            m.d.sync += [head.eq(req.payload), h_valid.eq(take), h_fresh.eq(1)]
        m.d.sync += t_valid.eq(0)
    with m.Else():
        with m.If(present):
            m.d.sync += h_fresh.eq(0)
        with m.If(take):
            m.d.sync += t_valid.eq(1)
        with m.If(stop):
            m.d.sync += t_valid.eq(0)
    return head, present, fire, pending


def _stale_counter(m, clear, level, pending, pop, *, limit):
    """Counts the returns that are stale after ``clear`` and says when to discard one.

    ``level`` is the tag queue's fill (registered), ``pending`` whether a presented command
    is still waiting to be taken, ``pop`` whether a return is consumed this cycle. The
    returns of every command taken by the end of a ``clear`` cycle, and of the command then
    presented (it is taken later, never withdrawn), are stale; so are those of no other.
    Their number is taken in the cycle after ``clear`` from registers alone (the queue's
    level then holds exactly the commands on the bus), and the discarded returns are
    counted up towards it: the ``clear`` cycle's own handshakes, which come through the
    bus and the engine's routing, reach no adder (rather than ``level + fire - pop +
    pending`` computed in the ``clear`` cycle). Returns ``discard``, high while a stale
    return may arrive.
    """
    cleared = Signal()                  # the previous cycle was a clear
    pend_at_clear = Signal()
    stale = Signal(range(limit + 2))    # the number of stale returns
    gone = Signal(range(limit + 2))     # the number discarded so far
    left = Signal()                     # gone != stale, registered
    discard = Signal()
    # ``discard`` is two flip-flops ORed: it gates the bus's read-data ready, whose fanout
    # reaches the bus adapter's wide data registers. ``left`` is computed for the next
    # cycle from registers, selected by this cycle's (late) ``pop`` in one final gate.
    m.d.comb += discard.eq(cleared | left)
    m.d.sync += cleared.eq(clear)
    with m.If(clear):
        m.d.sync += [pend_at_clear.eq(pending), gone.eq(0), left.eq(1)]
    with m.Elif(cleared):
        at_clear = Signal.like(stale)
        m.d.comb += at_clear.eq(level + pend_at_clear)
        m.d.sync += [
            stale.eq(at_clear),
            gone.eq(pop),               # discard is high in this cycle
            left.eq(Mux(pop, at_clear != 1, at_clear != 0)),
        ]
    with m.Else():
        m.d.sync += [
            gone.eq(gone + (discard & pop)),
            left.eq(Mux(discard & pop, gone + 1 != stale, gone != stale)),
        ]
    return discard


class DMAPort(wiring.Component):
    """Issues the engine's DMA commands and routes the returns back with their tags.

    Not reset by device reset: it keeps counting the transactions still outstanding on
    the bus at ``clear`` and discards their data and responses. Converts the 16-byte DMA
    width to the engine's internal 8-byte beats. ``block`` (fatal) and ``clear`` stop new
    commands from being taken and drop those not yet presented on the bus; a command once
    presented stays presented until taken (a stream's ``valid`` is never withdrawn).

    Ports
    -----
    dma : Out(DMASignature(width=width))
        The bus. At most 48 reads and 32 writes outstanding; every write is one command
        and one data beat of at most 8 bytes.
    rd_req : In(stream.Signature(_RdReq))
        Read commands (address, length in bytes, tag). ``ready`` is a register's output
        (the command queue's tail is free).
    rd_ret : Out(stream.Signature(_RdRet))
        Read data in 8-byte beats, in command order, each with its command's tag,
        ``last`` on a command's last beat and ``err`` from the bus.
    wr_req : In(stream.Signature(_WrReq))
        Write commands with their data beat and tag.
    wr_ret : Out(stream.Signature(_WrRet))
        Write responses with the tag of their command (``ready`` is ignored: the engine
        takes each response in the cycle it arrives).
    block : In(1)
        Fatal error: take no more commands; drop those taken but not yet presented.
    clear : In(1)
        Device reset: as ``block`` for one cycle, and every return still to come for a
        command presented by then is discarded.
    idle : Out(1)
        Nothing outstanding on the bus, queued or being discarded.

    Cycle: a command taken from ``rd_req``/``wr_req`` is presented on the bus from the
    next cycle (``_cmd_queue``'s head register); one read and one write command a cycle.
    Read data passes combinationally from the bus to ``rd_ret`` (the tag from a register
    at the tag queue's head); a 16-byte beat becomes two 8-byte beats in two cycles.
    """

    def __init__(self, width):
        self._width = width
        super().__init__({
            "dma":    Out(DMASignature(width=width)),
            "rd_req": In(stream.Signature(_RdReq)),
            "rd_ret": Out(stream.Signature(_RdRet)),
            "wr_req": In(stream.Signature(_WrReq)),
            "wr_ret": Out(stream.Signature(_WrRet)),
            "block":  In(1),
            "clear":  In(1),
            "idle":   Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        dma, W = self.dma, self._width

        # Commands taken from the engine wait in a 2-entry queue (so that the engine-side
        # ``ready`` is a register). A command is dropped if ``block`` or ``clear`` is seen
        # before it has ever been presented on the bus (so nothing decided in or after the
        # cycle a fatal error is detected reaches the bus); once presented it stays
        # presented until taken. Tags (and write data) are queued at the handshake, so the
        # tag queues hold exactly what is outstanding on the bus.
        stop = self.block | self.clear

        # --- reads ------------------------------------------------------------------------
        # The tag queue's head is a register (not a LUT-RAM read): the read return's tag
        # selects where its data goes, and a LUT-RAM read would put the queue's read
        # pointer in series with the router's slot memory and a requester's register
        # enable. A tag is readable the cycle
        # after its command is taken, before its data can return (two cycles or more);
        # the return waits for it all the same (``r_rdy``) rather than rely on that.
        m.submodules.rtags = rtags = BypassFIFO(width=13 + _RdTag.size,
                                                depth=_RD_OUTSTANDING, write_ahead=True)
        # Room in the tag queues, registered: room for two more in one cycle is room for
        # one in the next (at most one command is taken per cycle), so that the queue's
        # fill does not reach ``present`` and ``fire`` and the command queues' enables.
        # The last entry of each queue is then used only when the queue is not filling.
        r_room = Signal()
        m.d.sync += r_room.eq(rtags.level < _RD_OUTSTANDING - 1)
        rc, r_present, r_fire, r_pending = _cmd_queue(
            m, self.rd_req, stop, room=r_room, bus_ready=dma.rd_cmd.ready)
        m.d.comb += [
            dma.rd_cmd.valid.eq(r_present),
            dma.rd_cmd.payload.addr.eq(rc.addr),
            dma.rd_cmd.payload.len.eq(rc.len),
            rtags.w_en.eq(r_fire),
            rtags.w_data.eq(Cat(rc.len, rc.tag)),
        ]

        head_len = rtags.r_data[:13]
        head_tag = rtags.r_data[13:]
        pop = Signal()
        discard = _stale_counter(m, self.clear, rtags.level, r_pending, pop,
                                 limit=_RD_OUTSTANDING)
        ext = dma.rd_data
        out_ok = (self.rd_ret.ready | discard) & rtags.r_rdy
        if W == 8:
            last = ext.payload.last
            m.d.comb += [
                self.rd_ret.payload.data.eq(ext.payload.data),
                ext.ready.eq(out_ok),
            ]
        else:
            # Split each 16-byte beat into two 8-byte beats, counting the command's bytes.
            rem = Signal(13)
            fresh = Signal(init=1)
            hi = Signal()
            rem_cur = Mux(fresh, head_len, rem)
            last = rem_cur <= 8
            m.d.comb += [
                self.rd_ret.payload.data.eq(Mux(hi, ext.payload.data[64:],
                                                ext.payload.data[:64])),
                ext.ready.eq(out_ok & (hi | last)),
            ]
            with m.If(ext.valid & out_ok):
                with m.If(last):
                    m.d.sync += [fresh.eq(1), hi.eq(0)]
                with m.Else():
                    m.d.sync += [fresh.eq(0), rem.eq(rem_cur - 8), hi.eq(~hi)]
        m.d.comb += [
            self.rd_ret.valid.eq(ext.valid & ~discard & rtags.r_rdy),
            self.rd_ret.payload.last.eq(last),
            self.rd_ret.payload.err.eq(ext.payload.err),
            self.rd_ret.payload.tag.eq(head_tag),
            pop.eq(ext.valid & out_ok & last),
            rtags.r_en.eq(pop),
        ]

        # --- writes (every write is one command and one data beat) ----------------------
        # (write-ahead: the command handshake, which ``block``/``clear`` reach, moves only
        # pointers and is not the LUT-RAM write enable of either queue)
        m.submodules.wtags = wtags = WriteAheadFIFO(width=_WrTag.size, depth=_WR_OUTSTANDING)
        m.submodules.wdata = wdq = WriteAheadFIFO(width=64, depth=4)
        w_room = Signal()
        m.d.sync += w_room.eq((wtags.level < _WR_OUTSTANDING - 1) & (wdq.level < wdq.depth - 1))
        wc, w_present, w_fire, w_pending = _cmd_queue(
            m, self.wr_req, stop, room=w_room, bus_ready=dma.wr_cmd.ready)
        # A presented command's data beat is offered with it when no earlier beat waits in
        # wdq (a command once presented is taken: its beat may go first); otherwise, or
        # if the beat is not taken by then, it waits in wdq from the command's handshake.
        w_dsent = Signal()              # the presented command's beat has been taken
        direct = ~wdq.r_rdy & w_present & ~w_dsent
        direct_take = direct & dma.wr_data.ready
        with m.If(w_fire):
            m.d.sync += w_dsent.eq(0)
        with m.Elif(direct_take):
            m.d.sync += w_dsent.eq(1)
        m.d.comb += [
            dma.wr_cmd.valid.eq(w_present),
            dma.wr_cmd.payload.addr.eq(wc.addr),
            dma.wr_cmd.payload.len.eq(wc.len),
            wtags.w_en.eq(w_fire),
            wtags.w_data.eq(wc.tag),
            wdq.w_en.eq(w_fire & ~w_dsent & ~direct_take),
            wdq.w_data.eq(wc.data),
            dma.wr_data.valid.eq(wdq.r_rdy | direct),
            dma.wr_data.payload.data.eq(Mux(wdq.r_rdy, wdq.r_data, wc.data)),
            dma.wr_data.payload.last.eq(1),
            wdq.r_en.eq(dma.wr_data.ready),
        ]

        wpop = dma.wr_resp.valid
        wdiscard = _stale_counter(m, self.clear, wtags.level, w_pending, wpop,
                                  limit=_WR_OUTSTANDING)
        m.d.comb += [
            dma.wr_resp.ready.eq(1),
            wtags.r_en.eq(wpop),
            self.wr_ret.valid.eq(dma.wr_resp.valid & ~wdiscard),
            self.wr_ret.payload.err.eq(dma.wr_resp.payload.err),
            self.wr_ret.payload.tag.eq(wtags.r_data),
        ]

        m.d.comb += self.idle.eq((rtags.level == 0) & (wtags.level == 0) & ~r_present &
                                 ~w_present & ~wdq.r_rdy & ~r_pending & ~w_pending &
                                 self.rd_req.ready & self.wr_req.ready)
        return m


class Arbiter(wiring.Component):
    """Fixed-priority arbiter of request streams onto one stream.

    ``Arbiter(layout, names)``: one ``In(stream.Signature(layout))`` member per name, in
    priority order (the first wins), and ``out``. A requester's ``ready`` is its grant:
    high in the cycle its ``valid`` is high, no earlier requester's is, and ``out.ready``
    is; ``ready`` therefore depends on ``valid`` (the stream rule allows it). Purely
    combinational: no latency, one grant per cycle. The payload is picked by
    :func:`~viommu.rtl.util.onehot_mux` from the requesters' one-hot selects (each valid and no
    earlier one), an AND-OR tree rather than an If/Elif chain as deep as the list.
    """

    def __init__(self, layout, names):
        self._names = list(names)
        members = {n: In(stream.Signature(layout)) for n in self._names}
        members["out"] = Out(stream.Signature(layout))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        taken = Const(0)
        sels = []
        for n in self._names:
            r = getattr(self, n)
            sel = Signal(name=f"{n}_sel")
            m.d.comb += [sel.eq(r.valid & ~taken), r.ready.eq(sel & self.out.ready)]
            sels.append(sel)
            taken = taken | r.valid
        m.d.comb += [self.out.valid.eq(taken),
                     self.out.payload.eq(onehot_mux(
                         sels, [getattr(self, n).payload for n in self._names]))]
        return m
