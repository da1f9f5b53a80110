"""The store's memory port, and the block-RAM memory behind it."""

from amaranth.hdl import Module, Signal, Mux
from amaranth.lib import wiring, stream
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .layouts import MemOp, mem_cmd_layout, mem_data_layout, record_layout


__all__ = ["StoreMemorySignature", "BRAMStoreMemory"]


def StoreMemorySignature(p):
    """The store engine's port to its memory, seen from the engine.

    ``cmd`` carries one access per beat (see :class:`~.layouts.MemOp`); every read is
    answered on ``rdata`` in order, and the engine takes the answer before it sends the
    next read. Writes are not answered: a read after a write sees it.
    """
    return wiring.Signature({
        "cmd":   Out(stream.Signature(mem_cmd_layout(p))),
        "rdata": In(stream.Signature(mem_data_layout(p))),
    })


class BRAMStoreMemory(wiring.Component):
    """The store's memory in block RAM: three memories, the heads
    (``n_heads`` x ``ptr_bits``), the records' ``next`` links (``capacity`` x ``ptr_bits``)
    and the records' bodies (``capacity`` x the record layout), so that every write is a
    whole word of one memory.

    Ports
    -----
    bus : In(StoreMemorySignature)
        ``cmd`` is taken when no read answer is waiting; a read accepted in cycle ``t`` is
        answered (``rdata.valid``) in cycle ``t + 1``, straight from the memories' read
        registers, and held until taken. A write accepted in cycle ``t`` is in the memory
        at the end of ``t``.

    Throughput: one access per cycle while answers are taken at once; latency of a read: 1
    cycle. The contents are not reset: after a reset the engine asks for CLEAR, which
    writes NULL to one head per cycle (``n_heads`` cycles, no access taken meanwhile).
    """

    def __init__(self, params):
        self._p = params
        super().__init__({"bus": In(StoreMemorySignature(params))})
        p = params
        self.heads = Memory(shape=p.ptr_bits, depth=p.n_heads, init=[])
        self.links = Memory(shape=p.ptr_bits, depth=p.capacity, init=[])
        self.bodies = Memory(shape=record_layout(p), depth=p.capacity, init=[])

    def elaborate(self, platform):
        m = Module()
        p = self._p
        m.submodules.heads = self.heads
        m.submodules.links = self.links
        m.submodules.bodies = self.bodies
        cmd, rdata = self.bus.cmd, self.bus.rdata
        c = cmd.payload

        rvalid = Signal()
        was_head = Signal()
        # CLEAR: one head per cycle, no access taken meanwhile
        clearing = Signal()
        clr = Signal(range(p.n_heads))
        m.d.comb += cmd.ready.eq((~rvalid | rdata.ready) & ~clearing)
        take = cmd.valid & cmd.ready
        with m.If(take & (c.op == MemOp.CLEAR)):
            m.d.sync += [clearing.eq(1), clr.eq(0)]
        with m.If(clearing):
            m.d.sync += clr.eq(clr + 1)
            with m.If(clr == p.n_heads - 1):
                m.d.sync += clearing.eq(0)
        is_read = (c.op == MemOp.READ_HEAD) | (c.op == MemOp.READ_REC)
        with m.If(rdata.ready):
            m.d.sync += rvalid.eq(0)
        with m.If(take & is_read):
            m.d.sync += [rvalid.eq(1), was_head.eq(c.op == MemOp.READ_HEAD)]

        hr = self.heads.read_port(transparent_for=())
        lr = self.links.read_port(transparent_for=())
        br = self.bodies.read_port(transparent_for=())
        m.d.comb += [
            hr.addr.eq(c.index), lr.addr.eq(c.index), br.addr.eq(c.index),
            hr.en.eq(take & (c.op == MemOp.READ_HEAD)),
            lr.en.eq(take & (c.op == MemOp.READ_REC)),
            br.en.eq(take & (c.op == MemOp.READ_REC)),
            rdata.valid.eq(rvalid),
            rdata.payload.ptr.eq(Mux(was_head, hr.data, lr.data)),
            rdata.payload.body.eq(br.data),
        ]

        hw = self.heads.write_port()
        lw = self.links.write_port()
        bw = self.bodies.write_port()
        m.d.comb += [
            hw.addr.eq(Mux(clearing, clr, c.index)), lw.addr.eq(c.index),
            bw.addr.eq(c.index),
            hw.data.eq(Mux(clearing, p.null, c.ptr)), lw.data.eq(c.ptr), bw.data.eq(c.body),
            hw.en.eq((take & (c.op == MemOp.WRITE_HEAD)) | clearing),
            lw.en.eq(take & ((c.op == MemOp.WRITE_NEXT) | (c.op == MemOp.WRITE_REC))),
            bw.en.eq(take & (c.op == MemOp.WRITE_REC)),
        ]
        return m

