"""An AXI4-Lite address decoder: one master, several slaves at fixed windows."""

from amaranth.hdl import Module, Signal, Cat, Const
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .axi import AXI4LiteSignature, Resp
from ..util import check_int, tree_any, onehot_mux


__all__ = ["AXI4LiteDecoder"]


class AXI4LiteDecoder(wiring.Component):
    """Routes an AXI4-Lite master to the slave whose window holds the address.

    Parameters
    ----------
    windows : dict of str -> (base, size)
        One slave port per entry, named after the key. ``size`` is a power of two (4 bytes
        or more) and ``base`` a multiple of it; windows must not overlap and must fit in
        ``2**addr_width``. The key must be a Python identifier other than ``bus``.
    addr_width : int
        Address width of the master port, 2..64. Default 32.
    data_width : int
        32 or 64. Default 32.

    Ports
    -----
    bus : In(AXI4LiteSignature(addr_width, data_width))
        The master's port.
    <name> : Out(AXI4LiteSignature(log2(size), data_width)), one per window
        The slave of that window; it sees the offset into its window (the address bits
        below ``log2(size)``).

    Behaviour
    ---------
    One write and one read are in flight at a time, independently. AW and AR pass through
    combinationally to the slave the address selects (``awready`` is that slave's); W is
    passed to the same slave from the cycle after the AW handshake (a slave may take AW
    and W in either order, so a slave that insists on both at once would deadlock: the
    project's slaves buffer each); B and R come back combinationally, and the next AW / AR
    is taken after the B / R handshake. An address in no window is answered by the
    decoder itself: AW and W are taken, then B with DECERR; AR is taken, then R with
    DECERR and ``rdata`` 0.

    Cycles: no latency is added to AW, AR, B and R; W leaves one cycle after AW at the
    earliest. A decode error is answered in the cycle after the W (write) or AR (read)
    handshake.
    """

    def __init__(self, *, windows, addr_width=32, data_width=32):
        check_int("addr_width", addr_width, 2, 64)
        if data_width not in (32, 64):
            raise ValueError(f"data_width must be 32 or 64, not {data_width!r}")
        if not windows:
            raise ValueError("windows must name at least one slave")
        spans = []
        for name, (base, size) in windows.items():
            if not isinstance(name, str) or not name.isidentifier() or name == "bus":
                raise ValueError(f"window name {name!r} must be an identifier other than 'bus'")
            check_int(f"size of window {name!r}", size, 4, 1 << addr_width, power_of_two=True)
            check_int(f"base of window {name!r}", base, 0, (1 << addr_width) - size)
            if base % size:
                raise ValueError(f"base {base:#x} of window {name!r} is not a multiple of its "
                                 f"size {size:#x}")
            for other, (obase, osize) in spans:
                if base < obase + osize and obase < base + size:
                    raise ValueError(f"windows {other!r} and {name!r} overlap")
            spans.append((name, (base, size)))
        self.windows = dict(spans)
        self.addr_width = addr_width
        self.data_width = data_width
        members = {"bus": In(AXI4LiteSignature(addr_width=addr_width, data_width=data_width))}
        for name, (base, size) in self.windows.items():
            members[name] = Out(AXI4LiteSignature(addr_width=max(1, size.bit_length() - 1),
                                                  data_width=data_width))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        names = list(self.windows)
        n = len(names)
        slaves = [getattr(self, name) for name in names]

        def decode(addr):
            hits = []
            for name in names:
                base, size = self.windows[name]
                lo = size.bit_length() - 1
                hits.append(addr[lo:] == base >> lo if lo < self.addr_width else Const(1))
            return Cat(*hits)

        # --- writes --------------------------------------------------------------------------
        aw_hit = decode(bus.awaddr)
        w_busy = Signal()               # AW taken, its B not yet
        w_sel  = Signal(n)              # one-hot slave of the write; 0 = decode error
        w_got  = Signal()               # decode error: W taken, B pending
        miss_w = w_busy & (w_sel == 0)
        for i, s in enumerate(slaves):
            m.d.comb += [
                s.awaddr.eq(bus.awaddr),
                s.awprot.eq(bus.awprot),
                s.awvalid.eq(bus.awvalid & ~w_busy & aw_hit[i]),
                s.wdata.eq(bus.wdata),
                s.wstrb.eq(bus.wstrb),
                s.wvalid.eq(bus.wvalid & w_busy & w_sel[i]),
                s.bready.eq(bus.bready & w_busy & w_sel[i]),
            ]
        m.d.comb += [
            bus.awready.eq(~w_busy & (tree_any([aw_hit[i] & slaves[i].awready
                                                for i in range(n)]) | (aw_hit == 0))),
            bus.wready.eq(tree_any([w_busy & w_sel[i] & slaves[i].wready for i in range(n)]) |
                          (miss_w & ~w_got)),
            bus.bvalid.eq(tree_any([w_busy & w_sel[i] & slaves[i].bvalid for i in range(n)]) |
                          (miss_w & w_got)),
            bus.bresp.eq(onehot_mux(w_sel, [s.bresp for s in slaves]) |
                         (miss_w.replicate(2) & Resp.DECERR)),
        ]
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += [w_busy.eq(1), w_sel.eq(aw_hit), w_got.eq(0)]
        with m.If(miss_w & bus.wvalid & bus.wready):
            m.d.sync += w_got.eq(1)
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += w_busy.eq(0)

        # --- reads ---------------------------------------------------------------------------
        ar_hit = decode(bus.araddr)
        r_busy = Signal()
        r_sel  = Signal(n)
        miss_r = r_busy & (r_sel == 0)
        for i, s in enumerate(slaves):
            m.d.comb += [
                s.araddr.eq(bus.araddr),
                s.arprot.eq(bus.arprot),
                s.arvalid.eq(bus.arvalid & ~r_busy & ar_hit[i]),
                s.rready.eq(bus.rready & r_busy & r_sel[i]),
            ]
        m.d.comb += [
            bus.arready.eq(~r_busy & (tree_any([ar_hit[i] & slaves[i].arready
                                                for i in range(n)]) | (ar_hit == 0))),
            bus.rvalid.eq(tree_any([r_busy & r_sel[i] & slaves[i].rvalid for i in range(n)]) |
                          miss_r),
            bus.rdata.eq(onehot_mux(r_sel, [s.rdata for s in slaves])),
            bus.rresp.eq(onehot_mux(r_sel, [s.rresp for s in slaves]) |
                         (miss_r.replicate(2) & Resp.DECERR)),
        ]
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += [r_busy.eq(1), r_sel.eq(ar_hit)]
        with m.If(bus.rvalid & bus.rready):
            m.d.sync += r_busy.eq(0)
        return m
