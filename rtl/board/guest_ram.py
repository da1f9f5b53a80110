"""Guest memory for a board: block RAM with an AXI4 slave port (the device's DMA) and an
AXI4-Lite slave port (the host's view, through the serial bridge)."""

from amaranth.hdl import Module, Signal, Cat, Const, Mux
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..bus.axi import AXI4Signature, AXI4LiteSignature, Resp, Burst
from ..util import check_int


__all__ = ["GuestRAM", "axi_next_address"]


def _log2(n):
    return n.bit_length() - 1


def axi_next_address(addr, size, burst, wrap_mask):
    """The address of the next beat of an AXI4 burst, for the 12 low bits of ``addr``
    (the bits above are carried unchanged: a burst never crosses a 4 KiB boundary, so a
    burst that would is kept inside its 4 KiB page).

    FIXED: the same address. INCR: ``addr`` aligned down to the transfer size, plus the
    size. WRAP: the INCR address, its bits in ``wrap_mask`` (= ``len * 2**size - 1``, the
    burst's byte count minus one) replacing those of ``addr``.
    """
    lo = addr[:12]
    step = (Const(1, 13) << size)[:13]
    incr = ((lo & ~(step - 1)[:12]) + step)[:12]
    wrap = (lo & ~wrap_mask) | (incr & wrap_mask)
    return Cat(Mux(burst == Burst.FIXED, lo, Mux(burst == Burst.WRAP, wrap, incr)), addr[12:])


class GuestRAM(wiring.Component):
    """Block RAM of ``size`` bytes behind two slave ports, for a board's guest memory.

    The memory is an ``amaranth.lib.memory.Memory`` of ``size / (data_width / 8)`` words
    with byte write enables and one write port and one read port (simple dual port), which
    Yosys maps to ECP5 block RAM (DP16KD; 32 of them for 64 KiB). Both slave ports share
    them: AXI4 writes and AXI4-Lite writes take turns on the write port, AXI4 reads and
    AXI4-Lite reads on the read port, alternating when both want the same port in the same
    cycle. (A true dual-port arrangement, one read/write port per side, cannot be used:
    Amaranth's memory promises old data when one side reads what the other writes in the
    same cycle, which the block RAM does not do, so Yosys builds it from flip-flops.)

    Parameters
    ----------
    size : int
        Bytes, a power of two, 4 KiB .. 16 MiB. Default 64 KiB.
    data_width : int
        Data width of the AXI4 port: 32, 64, 128 or 256 bits. Default 64.
    addr_width : int
        Address width of the AXI4 port, ``log2(size)`` .. 64. Default 64.
    id_width : int
        ID width of the AXI4 port, 1..16. Default 1.

    Ports
    -----
    axi : In(AXI4Signature(addr_width, data_width, id_width))
        The DMA port. Byte ``a`` of the RAM is at AXI address ``a``. Any access with an
        address at or above ``size`` is answered DECERR (reads return 0, writes change
        nothing), every beat of its burst. Bursts: INCR, FIXED and WRAP of 1..256 beats
        (WRAP: 2, 4, 8 or 16), every transfer size up to ``data_width`` (narrow transfers:
        the beat's address advances by the transfer size; reads return the whole bus
        word, writes store the bytes whose ``wstrb`` bit is set). An unaligned INCR start
        address is honoured as AXI says (the first beat is the bus word that holds it;
        ``wstrb`` chooses the bytes). Bursts with a reserved AxBURST (3), a size above
        the bus width or a WRAP length other than 2/4/8/16 are answered SLVERR in every
        beat, nothing written. Addresses advance within their 4 KiB page (AXI forbids
        crossing it). ``wlast`` is not looked at: beats are counted against ``awlen``.
        ``awlock`` / ``awcache`` / ``awprot`` (and AR's) are ignored. Reads and writes
        are independent: one read burst and one write burst in progress at a time, each
        the next one accepted in the cycle its predecessor's last beat goes (no bubble);
        the next burst's AR / AW may be taken earlier, into a holding register, and
        ``arready`` / ``awready`` are flip-flops (low only while that register is full).
    lite : In(AXI4LiteSignature(addr_width=log2(size), data_width=32))
        The host's port: one 32-bit word per access (bits 1..0 of the address are
        ignored), byte strobes honoured, always OKAY. One write and one read are handled
        at a time, independently.
    read_error, write_error : Out(1)
        One-cycle pulses: an AXI4 read / write burst was accepted that will be answered
        DECERR or SLVERR.

    Cycles
    ------
    AXI4 reads: an AR handshake in cycle t gives the first R beat in t+2 (the burst is
    registered in t+1, the memory read in t+1, ``rdata`` comes straight from the memory's
    output register in t+2); then one beat per cycle while ``rready`` is high, and the
    next burst follows its predecessor's last beat without a gap. AXI4 writes: ``wready``
    rises in the cycle after the AW handshake; one W beat per cycle; ``bvalid`` the cycle
    after the last beat. Reads and writes stream at the same time, one beat per cycle
    each. Error beats do not use the memory and never wait for it.

    AXI4-Lite: AW and W (in any order) are buffered; the write happens in the cycle after
    both are held and ``bvalid`` rises the cycle after (AW and W in cycle t: ``bvalid`` in
    t+2); an AR in t is read in t+1 and answered in t+3. The next access of the same kind
    is taken after the response handshake. When the AXI4 side streams, each Lite access
    waits at most one cycle for its port (a Lite read also waits while an AXI4 R beat is
    held by ``rready`` low, since that beat's data sits in the memory's output register).

    Accesses to the same bytes from both ports at the same time have no defined order; a
    read in the cycle of a write to the same word returns the old data.
    """

    def __init__(self, *, size=65536, data_width=64, addr_width=64, id_width=1):
        check_int("size", size, 4096, 1 << 24, power_of_two=True)
        if data_width not in (32, 64, 128, 256):
            raise ValueError(f"data_width must be 32, 64, 128 or 256, not {data_width!r}")
        check_int("addr_width", addr_width, _log2(size), 64)
        check_int("id_width", id_width, 1, 16)
        self.size = size
        self.data_width = data_width
        self.addr_width = addr_width
        self.id_width = id_width
        #: The storage: ``size / (data_width / 8)`` words, byte ``a`` in word
        #: ``a // (data_width / 8)`` at bits ``8 * (a % (data_width / 8))`` up.
        self.memory = Memory(shape=data_width, depth=size // (data_width // 8), init=[])
        self._rd = self.memory.read_port()
        self._wr = self.memory.write_port(granularity=8)
        super().__init__({
            "axi":  In(AXI4Signature(addr_width=addr_width, data_width=data_width,
                                     id_width=id_width)),
            "lite": In(AXI4LiteSignature(addr_width=_log2(size), data_width=32)),
            "read_error":  Out(1),
            "write_error": Out(1),
        })

    def _burst_check(self, m, lw, aw, addr, size, burst, length, name):
        """(resp, wrap_mask) of a burst being accepted."""
        out_of_range = Signal(name=f"{name}_oob")
        if self.addr_width > aw:
            m.d.comb += out_of_range.eq(addr[aw:] != 0)
        bad = Signal(name=f"{name}_bad")
        m.d.comb += bad.eq((burst == 3) | (size > lw) |
                           ((burst == Burst.WRAP) &
                            ~((length == 1) | (length == 3) | (length == 7) | (length == 15))))
        resp = Mux(out_of_range, Resp.DECERR, Mux(bad, Resp.SLVERR, Resp.OKAY))
        wrap_mask = Signal(12, name=f"{name}_wrap_mask")
        m.d.comb += wrap_mask.eq((((length + 1) << size) - 1)[:12])
        return resp, wrap_mask

    @staticmethod
    def _held_burst(m, name, *, busy, free, state, req, valid, ready, error):
        """Accepts bursts for one direction through a one-entry holding register.

        ``state`` are the burst registers (the last one the burst's response), ``req``
        the values to load into them from the address channel, ``busy`` the flag of a
        burst in progress, ``free`` whether that burst ends in this cycle (or none is in
        progress). ``ready`` is the holding register's emptiness. A burst starts from the holding register when there is one, else
        straight from the channel. ``error`` pulses in the cycle after a burst that will
        be answered with an error response is taken.
        """
        full = Signal(name=f"{name}_held")
        held = [Signal.like(s, name=f"{name}_held_{i}") for i, s in enumerate(state)]
        take = Signal(name=f"{name}_take")
        m.d.comb += [ready.eq(~full), take.eq(valid & ~full)]
        m.d.sync += error.eq(take & (req[-1] != Resp.OKAY))
        with m.If(free & full):
            m.d.sync += [busy.eq(1), full.eq(0)]
            m.d.sync += [s.eq(h) for s, h in zip(state, held)]
        with m.Elif(free & take):
            m.d.sync += busy.eq(1)
            m.d.sync += [s.eq(r) for s, r in zip(state, req)]
        with m.Elif(take):
            m.d.sync += full.eq(1)
            m.d.sync += [h.eq(r) for h, r in zip(held, req)]

    def elaborate(self, platform):
        m = Module()
        W = self.data_width // 8
        lw = _log2(W)
        aw = _log2(self.size)
        keep = max(aw, 12)          # address bits kept per burst (the rest only decide range)
        lanes = W // 4
        axi, lite = self.axi, self.lite
        rd, wr = self._rd, self._wr
        m.submodules.mem = self.memory

        def lane_of(a):
            return a[2:lw] if lw > 2 else Const(0, 1)

        # --- AXI4 read burst state -----------------------------------------------------------
        r_busy  = Signal()
        r_addr  = Signal(keep)
        r_len   = Signal(8)         # beats left - 1
        r_size  = Signal(3)
        r_burst = Signal(2)
        r_wmask = Signal(12)
        r_id    = Signal(self.id_width)
        r_resp  = Signal(2)
        r_out_resp = Signal(2)      # rresp of the beat on R

        # --- AXI4 write burst state ----------------------------------------------------------
        w_busy  = Signal()
        w_addr  = Signal(keep)
        w_len   = Signal(8)
        w_size  = Signal(3)
        w_burst = Signal(2)
        w_wmask = Signal(12)
        w_id    = Signal(self.id_width)
        w_resp  = Signal(2)

        # --- AXI4-Lite buffers ---------------------------------------------------------------
        l_aw_full = Signal()
        l_aw_addr = Signal(aw)
        l_w_full  = Signal()
        l_w_data  = Signal(32)
        l_w_strb  = Signal(4)
        l_ar_full = Signal()
        l_ar_addr = Signal(aw)
        l_capture = Signal()        # the read port's output holds the Lite read's word
        l_lane    = Signal(range(lanes))

        # --- who wants which memory port -----------------------------------------------------
        r_free = ~axi.rvalid | axi.rready           # the R register can take a beat
        b_free = ~axi.bvalid | axi.bready
        r_can  = r_busy & r_free
        w_can  = w_busy & ((w_len != 0) | b_free)   # the last beat needs room for B
        r_ok, w_ok = r_resp == Resp.OKAY, w_resp == Resp.OKAY
        want_ar = r_can & r_ok                                  # AXI4 read beat
        want_aw = w_can & w_ok & axi.wvalid                     # AXI4 write beat
        # The AXI4 R beat on the bus takes its data from the read port's output register:
        # a Lite read must not overwrite it before it is taken.
        r_held = axi.rvalid & (r_out_resp == Resp.OKAY) & ~axi.rready
        want_lr = l_ar_full & ~l_capture & ~lite.rvalid & ~r_held
        want_lw = l_aw_full & l_w_full & ~lite.bvalid

        def arbiter(want_axi, want_lite, name):
            """Round robin between the AXI4 and the Lite side: the side served last loses
            the next contested cycle."""
            lite_first = Signal(name=f"{name}_lite_first")
            g_axi = want_axi & (~want_lite | ~lite_first)
            g_lite = want_lite & (~want_axi | lite_first)
            with m.If(g_axi):
                m.d.sync += lite_first.eq(1)
            with m.Elif(g_lite):
                m.d.sync += lite_first.eq(0)
            return g_axi, g_lite

        grant_ar, grant_lr = arbiter(want_ar, want_lr, "rd")
        grant_aw, grant_lw = arbiter(want_aw, want_lw, "wr")

        l_en = Signal(W)
        for lane in range(lanes):
            m.d.comb += l_en[4 * lane:4 * lane + 4].eq(
                Mux(lane_of(l_aw_addr) == lane, l_w_strb, 0))
        m.d.comb += [
            rd.addr.eq(Mux(grant_lr, l_ar_addr[lw:aw], r_addr[lw:aw])),
            rd.en.eq(grant_ar | grant_lr),
            wr.addr.eq(Mux(grant_lw, l_aw_addr[lw:aw], w_addr[lw:aw])),
            wr.data.eq(Mux(grant_lw, l_w_data.replicate(lanes), axi.wdata)),
            wr.en.eq(Mux(grant_lw, l_en, Mux(grant_aw, axi.wstrb, 0))),
        ]

        # --- AXI4 R ----------------------------------------------------------------------------
        r_go = r_can & (~r_ok | grant_ar)
        r_next = axi_next_address(r_addr, r_size, r_burst, r_wmask)
        m.d.comb += [
            axi.rdata.eq(Mux(r_out_resp == Resp.OKAY, rd.data, 0)),
            axi.rresp.eq(r_out_resp),
        ]
        with m.If(axi.rready):
            m.d.sync += axi.rvalid.eq(0)
        with m.If(r_go):
            m.d.sync += [
                axi.rvalid.eq(1), axi.rlast.eq(r_len == 0), axi.rid.eq(r_id),
                r_out_resp.eq(r_resp),
                r_len.eq(r_len - 1), r_addr.eq(r_next),
            ]
            with m.If(r_len == 0):
                m.d.sync += r_busy.eq(0)

        # As for AW below: an AR taken while a burst is in progress waits in a holding
        # register, and ``arready`` is a flip-flop (the register is empty), so that a
        # master's AR acceptance does not wait on ``rready`` and the Lite arbitration.
        ar_resp, ar_wmask = self._burst_check(m, lw, aw, axi.araddr, axi.arsize,
                                              axi.arburst, axi.arlen, "ar")
        self._held_burst(m, "ar", busy=r_busy, free=~r_busy | (r_go & (r_len == 0)),
                         state=(r_addr, r_len, r_size, r_burst, r_wmask, r_id, r_resp),
                         req=(axi.araddr[:keep], axi.arlen, axi.arsize, axi.arburst,
                              ar_wmask, axi.arid, ar_resp),
                         valid=axi.arvalid, ready=axi.arready, error=self.read_error)

        # --- AXI4 W and B ----------------------------------------------------------------------
        w_take = axi.wvalid & axi.wready
        w_next = axi_next_address(w_addr, w_size, w_burst, w_wmask)
        m.d.comb += axi.wready.eq(w_can & (~w_ok | grant_aw))
        with m.If(axi.bready):
            m.d.sync += axi.bvalid.eq(0)
        with m.If(w_take):
            m.d.sync += [w_len.eq(w_len - 1), w_addr.eq(w_next)]
            with m.If(w_len == 0):
                m.d.sync += [axi.bvalid.eq(1), axi.bresp.eq(w_resp), axi.bid.eq(w_id),
                             w_busy.eq(0)]

        # An AW taken while a burst is in progress waits in a holding register
        # (``_held_burst``), and ``awready`` is that register's emptiness, a flip-flop: a
        # master's AW acceptance (an AXI master's burst splitter, its widest enable) does
        # not wait on this port's W, B and Lite arbitration, as it would if ``awready``
        # were decoded from them. The held burst starts in the cycle its predecessor's
        # last beat goes, so bursts still follow without a bubble; an AW into an idle port
        # starts its burst directly.
        aw_resp, aw_wmask = self._burst_check(m, lw, aw, axi.awaddr, axi.awsize,
                                              axi.awburst, axi.awlen, "aw")
        self._held_burst(m, "aw", busy=w_busy, free=~w_busy | (w_take & (w_len == 0)),
                         state=(w_addr, w_len, w_size, w_burst, w_wmask, w_id, w_resp),
                         req=(axi.awaddr[:keep], axi.awlen, axi.awsize, axi.awburst,
                              aw_wmask, axi.awid, aw_resp),
                         valid=axi.awvalid, ready=axi.awready, error=self.write_error)

        # --- AXI4-Lite -------------------------------------------------------------------------
        m.d.comb += [
            lite.awready.eq(~l_aw_full & ~lite.bvalid),
            lite.wready.eq(~l_w_full & ~lite.bvalid),
            lite.arready.eq(~l_ar_full & ~l_capture & ~lite.rvalid),
            lite.bresp.eq(Resp.OKAY),
            lite.rresp.eq(Resp.OKAY),
        ]
        with m.If(lite.awvalid & lite.awready):
            m.d.sync += [l_aw_full.eq(1), l_aw_addr.eq(lite.awaddr)]
        with m.If(lite.wvalid & lite.wready):
            m.d.sync += [l_w_full.eq(1), l_w_data.eq(lite.wdata), l_w_strb.eq(lite.wstrb)]
        with m.If(lite.arvalid & lite.arready):
            m.d.sync += [l_ar_full.eq(1), l_ar_addr.eq(lite.araddr)]
        with m.If(lite.bready):
            m.d.sync += lite.bvalid.eq(0)
        with m.If(grant_lw):
            m.d.sync += [l_aw_full.eq(0), l_w_full.eq(0), lite.bvalid.eq(1)]
        with m.If(lite.rready):
            m.d.sync += lite.rvalid.eq(0)
        with m.If(grant_lr):
            m.d.sync += [l_ar_full.eq(0), l_capture.eq(1), l_lane.eq(lane_of(l_ar_addr))]
        with m.If(l_capture):
            m.d.sync += [l_capture.eq(0), lite.rvalid.eq(1),
                         lite.rdata.eq(rd.data.word_select(l_lane, 32))]
        return m
