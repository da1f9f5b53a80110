"""The read-return router and the descriptor slots."""

from amaranth.hdl import Module, Signal, Cat, Mux
from amaranth.lib import wiring, stream, data
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..bus.skid import SkidBuffer
from .common import (_RdRet, _RingBeat, _Snoop, SlotReadPort, _N_SLOTS, _SLOT_DESCS,
                     _SLOT_BITS, _D_REG, _D_RING, _D_DESC, _D_PAY)


__all__ = ["Router"]


class Router(wiring.Component):
    """Steers every read-return beat to its destination by its tag, and holds the
    descriptor slot memory.

    Destinations (the tag's ``dest``): ``_D_REG`` -- one of three 64-bit registers
    (``sub``: the requestq's avail header, the eventq's header or ring entry, the
    publisher's used_event/flags word); ``_D_RING`` -- the ring unit's ring FIFO (``sub``:
    the number of heads - 1); ``_D_DESC`` -- descriptor slot ``sub`` (4 descriptors of 16
    bytes, two beats each); ``_D_PAY`` -- the packer's payload FIFO. Every destination has
    its space reserved by the unit that issued the read, so ``ret`` only waits on the ring
    and payload FIFOs, which that reservation keeps from filling.

    Ports
    -----
    ret : In(stream.Signature(_RdRet))
        The DMA port's read return. ``ready`` comes from a flip-flop (a skid buffer), so
        that which FIFO the tag picks and whether it has room do not reach back into the
        DMA port's counters and tag queue.
    reg_data : Out(ArrayLayout(64, 3)), reg_done : Out(3)
        The registers' contents (the first beat of the read) and a one-cycle pulse, bit
        ``sub``, in the cycle after a register read's last beat.
    ring : Out(stream.Signature(_RingBeat))
        Ring entries for the ring FIFO (``ret``'s beat, and ``sub + 1`` heads).
    pay : Out(stream.Signature(64))
        Payload bytes for the packer.
    snoop : Out(_Snoop)
        The beat being taken this cycle (``valid``, data, tag, beat index within its
        read), for P2, which takes a head descriptor from the bus when it is waiting for it.
    filled, first : Out(32)
        Per slot, registered: the slot's read has completed (``filled``), its first
        descriptor has arrived (``first``: its read may still be going on, so that the
        consumer can start a beat per further descriptor earlier).
    slot_clr : In(32)
        Slots whose ``filled``/``first`` to clear (a read into them is being issued).
    slot_p2, slot_walk, slot_be : Out(ReadPort.Signature(addr_width=7, shape=128))
        Synchronous read ports of the slot memory (one descriptor a word) for P2, the
        walker and the back end.
    error : Out(1)
        A beat with ``err`` is taken.

    Cycle: a beat at the skid buffer's output is taken in the cycle its destination has
    room (register and slot destinations always); one beat a cycle; the slot memory is
    written in that cycle and its ``filled``/``first`` flags set in the next.
    """

    def __init__(self):
        super().__init__({
            "ret":       In(stream.Signature(_RdRet)),
            "reg_data":  Out(data.ArrayLayout(64, 3)),
            "reg_done":  Out(3),
            "ring":      Out(stream.Signature(_RingBeat)),
            "pay":       Out(stream.Signature(64)),
            "snoop":     Out(_Snoop),
            "filled":    Out(_N_SLOTS),
            "first":     Out(_N_SLOTS),
            "slot_clr":  In(_N_SLOTS),
            "slot_p2":   Out(SlotReadPort),
            "slot_walk": Out(SlotReadPort),
            "slot_be":   Out(SlotReadPort),
            "error":     Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.ret_skid = ret_skid = SkidBuffer(_RdRet)
        wiring.connect(m, wiring.flipped(self.ret), ret_skid.i)
        ret = ret_skid.o
        rtag = ret.payload.tag
        rbeat = Signal(3)
        reg_data = [Signal(64, name=f"reg_data{i}") for i in range(3)]
        reg_done = Signal(3)
        filled = Signal(_N_SLOTS)
        filled_set = Signal(_N_SLOTS)
        first = Signal(_N_SLOTS)
        first_set = Signal(_N_SLOTS)
        m.d.sync += [filled.eq((filled & ~self.slot_clr) | filled_set),
                     first.eq((first & ~self.slot_clr) | first_set)]
        m.d.comb += [self.filled.eq(filled), self.first.eq(first),
                     self.reg_done.eq(reg_done)]
        m.d.comb += [self.reg_data[i].eq(reg_data[i]) for i in range(3)]

        m.submodules.slots = slots = Memory(shape=128, depth=_N_SLOTS * _SLOT_DESCS, init=[])
        slot_wp = slots.write_port(granularity=64)
        for port in (self.slot_p2, self.slot_walk, self.slot_be):
            rp = slots.read_port(domain="sync")
            m.d.comb += [rp.addr.eq(port.addr), rp.en.eq(port.en), port.data.eq(rp.data)]

        ret_fire = ret.valid & ret.ready
        m.d.sync += reg_done.eq(0)
        with m.If(ret_fire):
            m.d.sync += rbeat.eq(Mux(ret.payload.last, 0, rbeat + 1))
        m.d.comb += self.error.eq(ret_fire & ret.payload.err)
        m.d.comb += [self.snoop.valid.eq(ret.valid), self.snoop.data.eq(ret.payload.data),
                     self.snoop.tag.eq(rtag), self.snoop.beat.eq(rbeat)]
        with m.Switch(rtag.dest):
            with m.Case(_D_REG):
                m.d.comb += ret.ready.eq(1)
                with m.If(ret.valid & (rbeat == 0)):
                    for i in range(3):
                        with m.If(rtag.sub == i):
                            m.d.sync += reg_data[i].eq(ret.payload.data)
                with m.If(ret.valid & ret.payload.last):
                    m.d.sync += reg_done.eq(1 << rtag.sub[:2])
            with m.Case(_D_RING):
                m.d.comb += [
                    ret.ready.eq(self.ring.ready),
                    self.ring.valid.eq(ret.valid),
                    self.ring.payload.eq(Cat(ret.payload.data, rtag.sub[:2] + 1)),
                ]
            with m.Case(_D_DESC):
                m.d.comb += [
                    ret.ready.eq(1),
                    slot_wp.addr.eq(Cat(rbeat[1:3], rtag.sub[:_SLOT_BITS])),
                    slot_wp.data.eq(Cat(ret.payload.data, ret.payload.data)),
                    slot_wp.en.eq(Mux(ret.valid, Mux(rbeat[0], 0b10, 0b01), 0)),
                ]
                with m.If(ret.valid & ret.payload.last):
                    m.d.comb += filled_set.eq(1 << rtag.sub[:_SLOT_BITS])
                with m.If(ret.valid & (ret.payload.last | (rbeat == 1))):
                    m.d.comb += first_set.eq(1 << rtag.sub[:_SLOT_BITS])
            with m.Case(_D_PAY):
                m.d.comb += [ret.ready.eq(self.pay.ready), self.pay.valid.eq(ret.valid),
                             self.pay.payload.eq(ret.payload.data)]
        return m
