"""Shared pieces of the engine unit tests (``tests/test_engine_*.py``): descriptors in a
guest-memory dictionary, and a harness that puts a unit behind the real read-return router
so that its descriptor slots fill the way they do in the engine."""

from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.lib import wiring

from viommu.rtl.engine.router import Router
from viommu.rtl.engine.common import _N_SLOTS, _SLOT_BE

NEXT, WRITE, INDIRECT = 1, 2, 4


def desc(addr, length, flags=0, nxt=0):
    """A 16-byte descriptor as an int (VirtqDesc: addr, len, flags, next; LSB first)."""
    return addr | length << 64 | flags << 96 | nxt << 112


def unpack(d):
    return (d & (1 << 64) - 1, d >> 64 & 0xffffffff, d >> 96 & 0xffff, d >> 112 & 0xffff)


class RouterHarness(Elaboratable):
    """``unit`` (a walker or a back end) with a :class:`Router`: the unit's ``slot`` read
    port is the router's, ``clr`` adds slot clears (as P1/P2 would)."""

    def __init__(self, unit, port):
        self.unit = unit
        self.router = Router()
        self.clr = Signal(_N_SLOTS)
        self._port = port

    def elaborate(self, platform):
        m = Module()
        m.submodules.router = r = self.router
        m.submodules.unit = u = self.unit
        wiring.connect(m, getattr(r, self._port), u.slot)
        m.d.comb += r.slot_clr.eq(u.slot_clr | self.clr)
        if hasattr(u, "filled"):
            m.d.comb += [u.filled.eq(r.filled), u.first.eq(r.first)]
        else:
            m.d.comb += u.slot_filled.eq(r.filled[_SLOT_BE])
        return m


class ReturnPath:
    """Plays the DMA port's read return into ``router.ret``: beats queued with a due cycle
    go out in order, one a cycle, when the router takes them."""

    def __init__(self, router):
        self.ret = router.ret
        self.beats = []          # (due cycle, data, last, dest, sub)

    def read(self, cycle, latency, words, dest, sub):
        """Queue the return of a read of the 64-bit ``words``."""
        for i, w in enumerate(words):
            self.beats.append((cycle + latency + i, w, i == len(words) - 1, dest, sub))

    def descs(self, cycle, latency, descs, sub, dest=2):
        words = []
        for d in descs:
            words += [d & (1 << 64) - 1, d >> 64]
        self.read(cycle, latency, words, dest, sub)

    def drive(self, ctx, cycle):
        """Before the cycle's handshakes: present the head beat if due."""
        b = self.beats[0] if self.beats and self.beats[0][0] <= cycle else None
        ctx.set(self.ret.valid, b is not None)
        if b is not None:
            ctx.set(self.ret.payload, {"data": b[1], "last": b[2], "err": 0,
                                       "tag": {"dest": b[3], "sub": b[4]}})
        return b

    def after(self, ctx, b):
        """After settling: drop the beat if it was taken."""
        if b is not None and ctx.get(self.ret.ready):
            self.beats.pop(0)
