"""The FIFOs of the engine and the AXI master, beside ``amaranth.lib.fifo``'s.

Both have ``SyncFIFO``'s interface subset (:func:`fifo_signature`) and differ in what
comes from a flip-flop:

* :class:`WriteAheadFIFO`: LUT RAM with an asynchronous read, like ``SyncFIFO``, but the
  memory's write enable is a flip-flop (``~full``) instead of ``w_en``. Where ``w_en`` is a
  handshake (``valid & ready`` of a stream decided late in the cycle), ``SyncFIFO`` puts
  that handshake on every LUT-RAM cell's WRE pin; here it only moves a pointer.
* :class:`BypassFIFO`: the head entry is a register (``r_data`` is a flip-flop), loaded
  straight from the write side when the FIFO is empty.
"""

from amaranth.hdl import Module, Signal, Mux
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..util import check_int


__all__ = ["fifo_signature", "WriteAheadFIFO", "BypassFIFO"]


def fifo_signature(width, depth):
    """The ``SyncFIFO`` interface subset of the engine's own FIFOs (as ports)."""
    return wiring.Signature({
        "w_data": In(width), "w_en": In(1), "w_rdy": Out(1),
        "r_data": Out(width), "r_en": In(1), "r_rdy": Out(1),
        "level": Out(range(depth + 1)),
    })


class _FIFO(wiring.Component):
    """What both FIFOs share: keyword ``width`` and ``depth``, validated, the
    :func:`fifo_signature` ports and ``depth`` (entries held when full, as
    ``SyncFIFO.depth``)."""

    _MIN_DEPTH = 1

    def __init__(self, *, width, depth):
        check_int("width", width, 1, 1 << 16)
        check_int("depth", depth, self._MIN_DEPTH, 1 << 16)
        self._depth = depth
        super().__init__(fifo_signature(width, depth))

    @property
    def depth(self):
        return self._depth


class WriteAheadFIFO(_FIFO):
    """A FIFO of ``depth`` entries in LUT RAM (asynchronous read) whose memory is written in
    every cycle it is not full, at the write pointer, with whatever ``w_data`` holds;
    ``w_en`` only moves the pointer. The slot at the write pointer is free whenever the
    FIFO is not full, so the extra writes change nothing readable, and the memory's write
    enable is a flip-flop (``full``) rather than ``w_en``, which may come late through
    handshakes. The ``SyncFIFO`` interface subset: ``w_data``, ``w_en``, ``w_rdy``,
    ``r_data``, ``r_en``, ``r_rdy``, ``level``; ``r_data`` is the head entry,
    combinationally from the memory.
    """

    def elaborate(self, platform):
        m = Module()
        depth = self._depth
        m.submodules.storage = mem = Memory(shape=len(self.w_data), depth=depth, init=[])
        wp = mem.write_port()
        rp = mem.read_port(domain="comb")
        w_ptr = Signal(range(depth))
        r_ptr = Signal(range(depth))
        full = Signal()         # level == depth, as its own flip-flop: the memory's WE
        do_w = self.w_en & ~full
        do_r = self.r_en & self.r_rdy
        m.d.comb += [
            wp.addr.eq(w_ptr), wp.data.eq(self.w_data), wp.en.eq(~full),
            rp.addr.eq(r_ptr), self.r_data.eq(rp.data),
            self.w_rdy.eq(~full), self.r_rdy.eq(self.level != 0),
        ]

        def step(ptr):
            return Mux(ptr == depth - 1, 0, ptr + 1)

        with m.If(do_w):
            m.d.sync += w_ptr.eq(step(w_ptr))
        with m.If(do_r):
            m.d.sync += r_ptr.eq(step(r_ptr))
        with m.If(do_w & ~do_r):
            m.d.sync += [self.level.eq(self.level + 1), full.eq(self.level == depth - 1)]
        with m.Elif(do_r & ~do_w):
            m.d.sync += [self.level.eq(self.level - 1), full.eq(0)]
        return m


class BypassFIFO(_FIFO):
    """A FIFO of ``depth`` entries with a registered output that is loaded directly from
    the write side when nothing is queued: an entry written into an empty FIFO is readable
    in the next cycle (one cycle earlier than through :class:`SyncFIFOBuffered`, which
    holds the other ``depth - 1`` entries in block RAM behind this output register).
    The ``SyncFIFO`` interface subset: ``w_data``, ``w_en``, ``w_rdy``, ``r_data``,
    ``r_en``, ``r_rdy``, ``level`` (entries held, the output register's included).

    ``write_ahead=True``: the other entries are held in a :class:`WriteAheadFIFO` (LUT
    RAM), and the output register loads in every cycle it may, choosing between the queue
    and ``w_data`` by the queue's fill: ``w_en`` then reaches only pointers and valid
    flags, no memory write enable and no data register's enable.
    """

    _MIN_DEPTH = 2              # the output register and at least one queued entry

    def __init__(self, *, width, depth, write_ahead=False):
        if not isinstance(write_ahead, bool):
            raise TypeError(f"write_ahead must be a bool, not {write_ahead!r}")
        self._write_ahead = write_ahead
        super().__init__(width=width, depth=depth)

    def elaborate(self, platform):
        m = Module()
        fifo = WriteAheadFIFO if self._write_ahead else SyncFIFOBuffered
        m.submodules.inner = inner = fifo(width=len(self.w_data), depth=self._depth - 1)
        load = ~self.r_rdy | self.r_en         # the output register is free next cycle
        bypass = load & (inner.level == 0)
        m.d.comb += [
            self.w_rdy.eq(inner.w_rdy),
            self.level.eq(inner.level + self.r_rdy),
            inner.w_data.eq(self.w_data),
            inner.w_en.eq(self.w_en & ~bypass),
            inner.r_en.eq(load),
        ]
        if self._write_ahead:
            with m.If(load):
                m.d.sync += [
                    self.r_data.eq(Mux(inner.r_rdy, inner.r_data, self.w_data)),
                    self.r_rdy.eq(inner.r_rdy | self.w_en),
                ]
            return m
        with m.If(load):
            with m.If(inner.r_rdy):
                m.d.sync += [self.r_data.eq(inner.r_data), self.r_rdy.eq(1)]
            with m.Elif(self.w_en & bypass):
                m.d.sync += [self.r_data.eq(self.w_data), self.r_rdy.eq(1)]
            with m.Else():
                m.d.sync += self.r_rdy.eq(0)
        return m
