"""The packer: payload bytes to the core's request beats."""

from amaranth.hdl import Module, Signal, Cat, Mux
from amaranth.lib import wiring, stream, data
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..bus.fifo import BypassFIFO
from ..core.layouts import ReqBeat
from .common import _PkCmd, _PK_CMD_DEPTH, _REQ_FIFO_DEPTH


__all__ = ["Packer"]


class Packer(wiring.Component):
    """Concatenates the payload reads' bytes into :class:`~viommu.rtl.core.layouts.ReqBeat` beats of 8
    bytes for the core.

    Each data command (``end`` = 0) says how many bytes (``n``, 1..128) its payload read
    returns: ``ceil(n/8)`` beats on ``pay``, of which the low ``n`` bytes count (any byte
    split; the walker issues no command for an empty descriptor). An end command
    (``end`` = 1) closes the request: the beat holding its last bytes carries ``last`` and
    the command's ``wlen``; an empty readable part is one beat with ``nbytes`` = 0. Beats
    wait in a 128-beat FIFO whose space the walker reserves before each read (credits:
    ``ceil(n/8)`` per data command and one for the end beat, taken with ``cred_take``);
    the end command's ``reserve`` (the request's reservation) lets the packer give back
    what the request did not use. The request FIFO and the payload FIFO in front of the
    packer pass an entry written while they are empty to their registered output in one
    cycle.

    Ports
    -----
    cmd : In(stream.Signature(_PkCmd))
        Commands, into a 64-entry FIFO. The walker writes one only while ``cmd_room`` was
        high (so ``ready``, the FIFO's ``w_rdy``, is high whenever it does): ``cmd_room``
        is a flip-flop, where ``ready`` would put the FIFO's fill in series with the read
        arbitration.
    cmd_room : Out(1)
        Registered: the command FIFO has room for at least two more.
    pay : In(stream.Signature(64))
        Payload beats from the router, into a 4-entry FIFO (so that the packer's cycle at
        the end of each request does not hold up the DMA return path).
    req : Out(stream.Signature(ReqBeat))
        Beats to the core. ``valid`` and ``payload`` come from the request FIFO's output
        register and ``ready`` is its read enable (the core's ``ready`` is a flip-flop;
        a skid buffer here would put its multiplexer between that register and the core's
        decode). Gated by ``fatal``.
    fatal : In(1)
        Feed the core nothing.
    credits : Out(range(129))
        Request FIFO entries not reserved (a register).
    cred_take : In(range(129))
        Entries the walker reserves this cycle.

    Cycle: one payload beat a cycle (``acc`` holds up to 16 bytes; a full beat goes out as
    soon as it is known not to be the request's last); the end command takes one cycle
    more (two if a full beat is still held). The next command is loaded in the cycle the
    current one is done. Latency: a payload beat to the request FIFO, 1 cycle; to ``req``,
    1 more (the FIFO's registered output).
    """

    def __init__(self):
        super().__init__({
            "cmd":       In(stream.Signature(_PkCmd)),
            "cmd_room":  Out(1),
            "pay":       In(stream.Signature(64)),
            "req":       Out(stream.Signature(ReqBeat)),
            "fatal":     In(1),
            "credits":   Out(range(_REQ_FIFO_DEPTH + 1)),
            "cred_take": In(range(_REQ_FIFO_DEPTH + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        fatal = self.fatal
        m.submodules.pk_cmds = pk_fifo = SyncFIFOBuffered(width=_PkCmd.size,
                                                          depth=_PK_CMD_DEPTH)
        m.d.comb += [pk_fifo.w_en.eq(self.cmd.valid), pk_fifo.w_data.eq(self.cmd.payload),
                     self.cmd.ready.eq(pk_fifo.w_rdy)]
        pk_room = Signal()
        m.d.sync += pk_room.eq(pk_fifo.level < _PK_CMD_DEPTH - 1)
        m.d.comb += self.cmd_room.eq(pk_room)
        m.submodules.pay_fifo = pay_fifo = BypassFIFO(width=64, depth=4)
        m.d.comb += [pay_fifo.w_en.eq(self.pay.valid), pay_fifo.w_data.eq(self.pay.payload),
                     self.pay.ready.eq(pay_fifo.w_rdy)]
        pay_valid = pay_fifo.r_rdy
        pay_ready = pay_fifo.r_en

        m.submodules.req_fifo = req_fifo = BypassFIFO(width=data.Layout.cast(ReqBeat).size,
                                                      depth=_REQ_FIFO_DEPTH)
        credits = Signal(range(_REQ_FIFO_DEPTH + 1), init=_REQ_FIFO_DEPTH)
        cred_release = Signal(8)
        req_pop = Signal()
        m.d.sync += credits.eq(credits - self.cred_take + cred_release + req_pop)
        m.d.comb += [
            self.credits.eq(credits),
            self.req.valid.eq(req_fifo.r_rdy & ~fatal),
            self.req.payload.eq(req_fifo.r_data),
            req_fifo.r_en.eq(self.req.ready & ~fatal),
            req_pop.eq(req_fifo.r_rdy & req_fifo.r_en),
        ]

        # The command being worked on, in registers (``cur_left``: bytes still to come).
        pk = _PkCmd(pk_fifo.r_data)
        cur_valid = Signal()
        cur_end = Signal()
        cur_left = Signal(8)
        cur_wlen = Signal(16)
        cur_reserve = Signal(8)
        cur_done = Signal()

        acc = Signal(128)
        cnt = Signal(range(17))
        emitted = Signal(8)
        is_data = cur_valid & ~cur_end
        # A full beat goes out as soon as it is known not to be the request's last: more
        # than 8 bytes held, or 8 while the request's bytes are still coming.
        emit_full = (cnt > 8) | ((cnt == 8) & is_data)
        cnt_e = Signal(range(17))
        acc_e = Signal(128)
        m.d.comb += [
            cnt_e.eq(Mux(emit_full, cnt - 8, cnt)),
            acc_e.eq(Mux(emit_full, acc[64:], acc)),
        ]
        out_beat = ReqBeat(req_fifo.w_data)
        m.d.comb += out_beat.data.eq(acc[:64])
        with m.If(emit_full):
            m.d.comb += [req_fifo.w_en.eq(1), out_beat.nbytes.eq(8)]
            m.d.sync += [acc.eq(acc_e), cnt.eq(cnt_e), emitted.eq(emitted + 1)]
        nb = Signal(4)
        m.d.comb += [
            nb.eq(Mux(cur_left > 8, 8, cur_left)),
            pay_ready.eq(is_data & pay_valid),
        ]
        with m.If(is_data & pay_valid):
            bmask = Cat((nb > j).replicate(8) for j in range(8))
            word = pay_fifo.r_data & bmask
            m.d.sync += [acc.eq(acc_e | (word << (cnt_e * 8))), cnt.eq(cnt_e + nb),
                         cur_left.eq(cur_left - nb)]
            m.d.comb += cur_done.eq(nb == cur_left)
        with m.If(cur_valid & cur_end & ~emit_full):
            m.d.comb += [
                req_fifo.w_en.eq(1),
                out_beat.nbytes.eq(cnt),
                out_beat.last.eq(1),
                out_beat.wlen.eq(cur_wlen),
                cur_done.eq(1),
                cred_release.eq(cur_reserve - emitted - 1),
            ]
            m.d.sync += [acc.eq(0), cnt.eq(0), emitted.eq(0)]
        # (after the updates above: a command loaded in the cycle the last one is done wins)
        with m.If(pk_fifo.r_rdy & (~cur_valid | cur_done)):
            m.d.comb += pk_fifo.r_en.eq(1)
            m.d.sync += [cur_valid.eq(1), cur_end.eq(pk.end), cur_left.eq(pk.n),
                         cur_wlen.eq(pk.wlen), cur_reserve.eq(pk.reserve)]
        with m.Elif(cur_done):
            m.d.sync += cur_valid.eq(0)
        return m
