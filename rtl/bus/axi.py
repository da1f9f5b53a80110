"""AMBA AXI4 and AXI4-Lite interfaces, and a DMA master on AXI4.

* :class:`AXI4LiteSignature` and :class:`AXI4Signature` describe the buses with the AMBA
  signal names, without prefix, seen from the master.
* :func:`flat_ports` names a component's ports for Verilog generation the way
  cocotbext-axi's ``AxiLiteBus.from_prefix`` / ``AxiBus.from_prefix`` expect them
  (``s_axil_awaddr``, ``m_axi_rdata``, ...).
* :class:`AXI4DMAMaster` implements the byte-stream DMA contract of :mod:`.dma` on an AXI4
  master port.
"""

from amaranth.hdl import Module, Signal, Const, Cat, Mux, Value
from amaranth.hdl._ir import PortDirection
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

from .dma import DMASignature, dma_cmd_layout, DMA_MAX_LEN
from .fifo import WriteAheadFIFO
from .skid import SkidBuffer


__all__ = ["AXI4LiteSignature", "AXI4Signature", "flat_ports", "AXI4DMAMaster",
           "Resp", "Burst", "CACHE_NORMAL_NC_BUFFERABLE"]


class Resp:
    """``xRESP`` encodings."""
    OKAY   = 0
    EXOKAY = 1
    SLVERR = 2
    DECERR = 3


class Burst:
    """``AxBURST`` encodings."""
    FIXED = 0
    INCR  = 1
    WRAP  = 2


#: ``AxCACHE`` of the DMA master: Normal Non-cacheable Bufferable.
CACHE_NORMAL_NC_BUFFERABLE = 0b0011


class AXI4LiteSignature(wiring.Signature):
    """An AXI4-Lite port, seen from the master.

    Members carry the AMBA names without prefix: ``awaddr awprot awvalid awready``,
    ``wdata wstrb wvalid wready``, ``bresp bvalid bready``, ``araddr arprot arvalid
    arready``, ``rdata rresp rvalid rready``. Valid and payload of AW/W/AR and the ready of
    B/R are ``Out``; the rest are ``In``. A slave port is ``In(AXI4LiteSignature(...))``.

    Parameters
    ----------
    addr_width : int
        Width of ``awaddr`` / ``araddr`` (1..64).
    data_width : int
        Width of ``wdata`` / ``rdata``: 32 or 64; ``wstrb`` has ``data_width // 8`` bits.
    """

    def __init__(self, *, addr_width, data_width=32):
        if not 1 <= addr_width <= 64:
            raise ValueError(f"addr_width must be 1..64, not {addr_width}")
        if data_width not in (32, 64):
            raise ValueError(f"AXI4-Lite data_width must be 32 or 64, not {data_width}")
        self.addr_width = addr_width
        self.data_width = data_width
        super().__init__({
            "awaddr":  Out(addr_width),
            "awprot":  Out(3),
            "awvalid": Out(1),
            "awready": In(1),
            "wdata":   Out(data_width),
            "wstrb":   Out(data_width // 8),
            "wvalid":  Out(1),
            "wready":  In(1),
            "bresp":   In(2),
            "bvalid":  In(1),
            "bready":  Out(1),
            "araddr":  Out(addr_width),
            "arprot":  Out(3),
            "arvalid": Out(1),
            "arready": In(1),
            "rdata":   In(data_width),
            "rresp":   In(2),
            "rvalid":  In(1),
            "rready":  Out(1),
        })

    def __eq__(self, other):
        return (isinstance(other, AXI4LiteSignature) and
                self.addr_width == other.addr_width and self.data_width == other.data_width)

    def __repr__(self):
        return f"AXI4LiteSignature(addr_width={self.addr_width}, data_width={self.data_width})"


class AXI4Signature(wiring.Signature):
    """An AXI4 port, seen from the master.

    Members carry the AMBA names without prefix:

    * AW: ``awid awaddr awlen awsize awburst awlock awcache awprot [awqos] awvalid awready``
    * W:  ``wdata wstrb wlast wvalid wready``
    * B:  ``bid bresp bvalid bready``
    * AR: ``arid araddr arlen arsize arburst arlock arcache arprot [arqos] arvalid arready``
    * R:  ``rid rdata rresp rlast rvalid rready``

    Valid and payload of AW/W/AR and the ready of B/R are ``Out``; the rest are ``In``.
    There are no region or user signals.

    Parameters
    ----------
    addr_width : int
        Width of ``awaddr`` / ``araddr`` (1..64).
    data_width : int
        Width of ``wdata`` / ``rdata``: 32, 64, 128 or 256 (the DMA master uses 64 or 128).
    id_width : int
        Width of the ID signals (1..16).
    qos : bool
        Whether ``awqos`` / ``arqos`` (4 bits each) are present.
    """

    def __init__(self, *, addr_width, data_width=64, id_width=1, qos=False):
        if not 1 <= addr_width <= 64:
            raise ValueError(f"addr_width must be 1..64, not {addr_width}")
        if data_width not in (32, 64, 128, 256):
            raise ValueError(f"data_width must be 32, 64, 128 or 256, not {data_width}")
        if not 1 <= id_width <= 16:
            raise ValueError(f"id_width must be 1..16, not {id_width}")
        self.addr_width = addr_width
        self.data_width = data_width
        self.id_width = id_width
        self.qos = bool(qos)
        aw = {
            "awid":    Out(id_width),
            "awaddr":  Out(addr_width),
            "awlen":   Out(8),
            "awsize":  Out(3),
            "awburst": Out(2),
            "awlock":  Out(1),
            "awcache": Out(4),
            "awprot":  Out(3),
        }
        ar = {
            "arid":    Out(id_width),
            "araddr":  Out(addr_width),
            "arlen":   Out(8),
            "arsize":  Out(3),
            "arburst": Out(2),
            "arlock":  Out(1),
            "arcache": Out(4),
            "arprot":  Out(3),
        }
        if self.qos:
            aw["awqos"] = Out(4)
            ar["arqos"] = Out(4)
        super().__init__({
            **aw,
            "awvalid": Out(1),
            "awready": In(1),
            "wdata":   Out(data_width),
            "wstrb":   Out(data_width // 8),
            "wlast":   Out(1),
            "wvalid":  Out(1),
            "wready":  In(1),
            "bid":     In(id_width),
            "bresp":   In(2),
            "bvalid":  In(1),
            "bready":  Out(1),
            **ar,
            "arvalid": Out(1),
            "arready": In(1),
            "rid":     In(id_width),
            "rdata":   In(data_width),
            "rresp":   In(2),
            "rlast":   In(1),
            "rvalid":  In(1),
            "rready":  Out(1),
        })

    def __eq__(self, other):
        return (isinstance(other, AXI4Signature) and
                self.addr_width == other.addr_width and
                self.data_width == other.data_width and
                self.id_width == other.id_width and self.qos == other.qos)

    def __repr__(self):
        qos = ", qos=True" if self.qos else ""
        return (f"AXI4Signature(addr_width={self.addr_width}, data_width={self.data_width}, "
                f"id_width={self.id_width}{qos})")


def flat_ports(component, sep="_"):
    """The ports of ``component`` as ``{name: (signal, PortDirection)}``.

    For ``amaranth.back.verilog.convert(component, name=..., ports=flat_ports(component))``.
    Each name joins the member's signature path with ``sep``: a member
    ``m_axi: Out(AXI4Signature(...))`` becomes ports ``m_axi_awaddr``, ``m_axi_rdata``, ...,
    which is what cocotbext-axi's ``AxiBus.from_prefix(dut, "m_axi")`` looks for. A
    ``data.View`` payload stands for its underlying signal (``dma_rd_cmd_payload``);
    constant members (the ``ready`` of an ``always_ready`` stream) are left out. The
    direction is the component's: ``In`` members are inputs.
    """
    ports = {}
    for path, member, value in component.signature.flatten(component):
        value = Value.cast(value)
        if not isinstance(value, Signal):
            continue
        name = sep.join(str(part) for part in path)
        if name in ports:
            raise NameError(f"Port name {name!r} is used twice; choose another separator")
        direction = PortDirection.Input if member.flow == In else PortDirection.Output
        ports[name] = (value, direction)
    return ports


def _log2(n):
    assert n > 0 and n & (n - 1) == 0, n
    return n.bit_length() - 1


def _burst_layout(addr_width, width):
    """One burst of a command, as the splitter hands it out.

    ``addr``: the burst's first beat address (aligned to ``width``); ``len``: beats - 1
    (AxLEN); ``o``: the command's start offset in the first beat (``addr % width``);
    ``e``: the offset of the command's last byte in its last beat; ``first`` / ``last``:
    first / last burst of the command; ``extra``: the command spans one bus beat more than
    ``ceil(len / width)``.
    """
    lw = _log2(width)
    return data.StructLayout({
        "addr":  addr_width,
        "len":   8,
        "o":     lw,
        "e":     lw,
        "first": 1,
        "last":  1,
        "extra": 1,
    })


class _BurstSplitter(wiring.Component):
    """Cuts ``{addr, len}`` commands into INCR bursts of full-width beats.

    A burst never crosses a ``max_burst * width``-byte aligned boundary (hence never a
    4 KiB one, as ``max_burst * width`` divides 4096) and has at most ``max_burst`` beats.

    ``burst`` changes only after a transfer, and every field of it comes straight from a
    flip-flop: the next burst's ``len`` and ``last`` are computed when the previous one is
    transferred (or the command taken), not decoded from the beat and length registers in
    the cycle they are used (that decode, a boundary distance, a compare and a mux, would
    otherwise sit in front of the AW/W paths). Every
    burst but a command's last ends on a boundary, so the next one starts on it and can
    run ``min(left, max_burst)`` beats. One burst per cycle; a new command is taken in the
    cycle its predecessor's last burst is transferred, so a stream of one-burst commands
    gives one burst per cycle. A command accepted in cycle t has its first burst valid in
    t+1.
    """

    def __init__(self, *, width, addr_width, max_burst):
        self._width = width
        self._addr_width = addr_width
        self._max_burst = max_burst
        self._layout = _burst_layout(addr_width, width)
        super().__init__({
            "cmd":   In(stream.Signature(dma_cmd_layout(addr_width))),
            "burst": Out(stream.Signature(self._layout)),
        })

    def elaborate(self, platform):
        m = Module()
        W = self._width
        lw = _log2(W)
        mb = _log2(self._max_burst)
        max_beats = DMA_MAX_LEN // W + 1

        MB = self._max_burst
        beat   = Signal(self._addr_width - lw)      # this burst's first beat (addr >> lw)
        left_1 = Signal(range(max_beats + 1))       # beats left in the command (this burst's
                                                    # too), minus one
        len_   = Signal(8)                          # this burst's beats - 1 (AxLEN)
        last   = Signal()                           # this burst is the command's last
        o      = Signal(lw)
        e      = Signal(lw)
        extra  = Signal()
        first  = Signal()
        busy   = Signal()

        burst = self.burst
        m.d.comb += [
            burst.valid.eq(busy),
            burst.p.addr.eq(Cat(Const(0, lw), beat)),
            burst.p.len.eq(len_),
            burst.p.o.eq(o),
            burst.p.e.eq(e),
            burst.p.first.eq(first),
            burst.p.last.eq(last),
            burst.p.extra.eq(extra),
        ]
        advance = burst.valid & burst.ready
        # After a burst that is not the command's last: it ended on a boundary, so the next
        # one starts there (the upper beat bits advance by one) and runs min(rest, MB)
        # beats, rest = left - (len + 1) >= 1; rest - 1 = left_1 + ~len is one carry
        # chain, and rest <= MB is rest - 1 < MB, a test of its upper bits.
        minus_n = Cat(~len_, Const(1, 1)).as_signed()     # -(len + 1), 9 bits
        rest_1 = Signal.like(left_1)
        m.d.comb += rest_1.eq(left_1 + minus_n)     # the write truncates to left_1's width
        rest_last = rest_1[mb:] == 0
        with m.If(advance):
            m.d.sync += [
                beat.eq(Cat(Const(0, mb), beat[mb:] + 1) if mb else beat + 1),
                left_1.eq(rest_1),
                last.eq(rest_last),
                len_.eq(Mux(rest_last, rest_1, MB - 1)),
                first.eq(0),
            ]
            with m.If(last):
                m.d.sync += busy.eq(0)

        cmd = self.cmd
        m.d.comb += cmd.ready.eq(~busy | (advance & last))
        c_o = cmd.p.addr[:lw]
        end = Signal(14)            # offset of the last byte from the first beat's address
        n_bus = Signal(range(max_beats + 1))
        n_out = Signal(range(max_beats + 1))
        # The first burst is the command's last when its bytes end by the next boundary:
        # addr % (MB * W) + len <= MB * W (one adder; the compare is on its upper bits).
        k = lw + mb
        span = Signal(14)
        m.d.comb += [
            end.eq(c_o + cmd.p.len - 1),
            n_bus.eq(end[lw:] + 1),
            n_out.eq((cmd.p.len + (W - 1))[lw:]),
            span.eq(cmd.p.addr[:k] + cmd.p.len),
        ]
        first_last = (span[k:] == 0) | ((span[k:] == 1) & (span[:k] == 0))
        # Not the last: it runs to the boundary, MB - addr's beat within it beats.
        to_bnd_1 = ~cmd.p.addr[lw:k] if mb else Const(0, 1)
        # The burst registers load the command's payload whenever a command may be taken,
        # whether or not one is there (only ``busy`` follows ``cmd.valid``): their clock
        # enable then comes from the splitter's own state and the bus's ready, not from
        # the engine's command valid, which comes through the bypassing skid buffer
        # from the engine's stop logic and would put that logic in front of every one of
        # these enables. Their values matter only while ``busy``.
        with m.If(cmd.ready):
            m.d.sync += [
                beat.eq(cmd.p.addr[lw:]),
                left_1.eq(end[lw:]),
                last.eq(first_last),
                len_.eq(Mux(first_last, end[lw:], to_bnd_1)),
                o.eq(c_o),
                e.eq(end[:lw]),
                extra.eq(n_bus != n_out),
                first.eq(1),
                busy.eq(cmd.valid),
            ]
        return m


class AXI4DMAMaster(wiring.Component):
    """The DMA contract of :mod:`.dma` on an AXI4 master port.

    Reads and writes are independent: each has its own burst splitter, and the two run
    concurrently.

    Parameters
    ----------
    width : int
        Bytes per beat, 8 or 16; the AXI data bus is ``8 * width`` bits wide and every
        burst uses full-width beats (``AxSIZE = log2(width)``).
    addr_width : int
        Address bits, 32..64.
    id_width : int
        ID bits, 1..8. Every transaction uses ID 0, so responses return in issue order.
    max_burst : int
        Most beats per burst: a power of two, 1..256 (default 16).
    max_outstanding : int
        Most bursts in flight per direction (default 8): read bursts whose data has not all
        arrived, write bursts whose response has not arrived.

    Ports
    -----
    dma : In(DMASignature(width=width, addr_width=addr_width))
        The engine's side; see :mod:`.dma` for the stream contract.
    bus : Out(AXI4Signature(addr_width=addr_width, data_width=8*width, id_width=id_width))
        The AXI4 master port. ``AxBURST`` = INCR, ``AxCACHE`` = 0b0011 (normal
        non-cacheable bufferable), ``AxPROT`` = 0, ``AxLOCK`` = 0, ``AxID`` = 0;
        ``AxADDR`` is always aligned to ``width``. ``rid``, ``bid`` and ``rlast`` are not
        looked at: beats are counted against ``AxLEN``.

    Reads
    -----
    A command ``{addr, len}`` is cut into INCR bursts that never cross a
    ``max_burst * width``-byte aligned boundary (hence never a 4 KiB one) covering the
    beats from ``addr`` rounded down to ``addr + len - 1``. AR requests are issued one per
    cycle, ahead of the data, for this and the following commands, as long as fewer than
    ``max_outstanding`` bursts are in flight. The R beats go through a byte-lane realigner
    (the previous beat's upper bytes joined to the current beat's lower ones), which drops
    the bytes outside ``[addr, addr + len)`` and emits exactly ``ceil(len / width)`` beats,
    ``last`` on the final one. An output beat has ``err`` set when either R beat it was
    built from carried SLVERR or DECERR; the command's beats keep flowing (same count,
    same ``last``), the data of an ``err`` beat is undefined.

    Writes
    ------
    Same cut into bursts. An AW request and the burst's W descriptor are issued
    independently (W never waits for AWREADY, as AXI requires, and AW may run ahead of W
    by up to ``max_outstanding`` bursts). The packed ``wr_data`` bytes are shifted to the
    address's byte lanes; ``wstrb`` enables exactly the bytes in ``[addr, addr + len)``.
    The adapter consumes exactly ``ceil(len / width)`` ``wr_data`` beats per command; their
    ``last`` flag is not checked. The B responses of a command's bursts are counted, and one
    ``wr_resp`` is emitted per command, in order, after its final B response, with ``err``
    set if any ``bresp`` was SLVERR or DECERR.

    Cycles
    ------
    Throughput: one R beat in and one ``rd_data`` beat out per cycle, and one ``wr_data``
    beat in and one W beat out per cycle, for as long as the bus and the engine keep up.
    The read realigner needs a flush cycle (an output beat without an R beat) at the end
    of a command whose ``addr`` is unaligned and whose bytes fit in ``ceil(len / width)``
    bus beats; it shares that cycle with the next command's first R beat when that command
    is unaligned too (such a beat only fills the realigner), and otherwise loses a cycle.
    Back-to-back one-beat commands thus run at one per cycle whether aligned or not. A
    4096-byte command costs at most ``4096 / width + 1`` cycles of R or W traffic. AR/AW
    requests go out one per cycle, and the splitter takes a new command in the cycle its
    predecessor's last AR/AW request goes out (the engine's command is taken earlier, into
    the skid buffer, while the splitter is busy).

    Latency, with a slave that answers AR in the cycle it sees it and delivers the first R
    beat in the next cycle: a read command accepted in cycle t has ``arvalid`` in t+1, its
    first R beat in t+2 and its first ``rd_data`` beat valid in t+3 when ``addr`` is
    aligned to ``width``, t+4 when not (the first output beat needs the second R beat, or
    the flush cycle). A write command accepted in t has ``awvalid`` in t+1 and its first
    W beat valid in t+3 (if ``wr_data`` is valid); ``wr_resp`` is valid the cycle after
    the command's last B response is accepted.

    Combinational paths from inputs to outputs: ``dma.wr_resp.ready -> bready`` and
    ``wready -> dma.wr_data.ready`` (a few gates each). ``rready`` comes from a
    :class:`~.skid.SkidBuffer` on R (a flip-flop), so no slave sees the engine's
    read-return logic in front of its next read; after a cycle in which the adapter
    cannot take an R beat, the next one is taken a cycle late. ``dma.rd_cmd.ready`` and ``dma.wr_cmd.ready`` come from a
    :class:`~.skid.SkidBuffer` in front of each burst splitter (a flip-flop: the splitter's
    acceptance, a boundary compare and AR/AW ready, stays inside the adapter), which adds
    no cycle to a command. Every other output is a function of flip-flops only: valid and
    payload of AR/AW/W and of
    ``rd_data``/``wr_resp`` (AR/AW payloads through the burst-length arithmetic, data
    through the byte shifter before its register).

    Limits
    ------
    The engine must offer ``wr_cmd`` without waiting for ``wr_data`` to be taken: a
    ``wr_data`` beat is taken only once its command's burst descriptor is queued.
    ``len`` must be 1..4096 (0 is not supported) and ``addr + len`` must not exceed
    ``2**addr_width``. Exclusive accesses, QoS, regions and user signals are not used.
    """

    def __init__(self, *, width=8, addr_width=64, id_width=1, max_burst=16,
                 max_outstanding=8):
        if width not in (8, 16):
            raise ValueError(f"width must be 8 or 16 bytes, not {width}")
        if not 32 <= addr_width <= 64:
            raise ValueError(f"addr_width must be 32..64, not {addr_width}")
        if not 1 <= id_width <= 8:
            raise ValueError(f"id_width must be 1..8, not {id_width}")
        if not (1 <= max_burst <= 256 and max_burst & (max_burst - 1) == 0):
            raise ValueError(f"max_burst must be a power of two 1..256, not {max_burst}")
        if max_burst * width > 4096:
            raise ValueError(f"max_burst * width must not exceed 4096, not {max_burst * width}")
        if max_outstanding < 1:
            raise ValueError(f"max_outstanding must be at least 1, not {max_outstanding}")
        self.width = width
        self.addr_width = addr_width
        self.id_width = id_width
        self.max_burst = max_burst
        self.max_outstanding = max_outstanding
        super().__init__({
            "dma": In(DMASignature(width=width, addr_width=addr_width)),
            "bus": Out(AXI4Signature(addr_width=addr_width, data_width=8 * width,
                                     id_width=id_width)),
        })

    def elaborate(self, platform):
        m = Module()
        self._elaborate_read(m)
        self._elaborate_write(m)
        return m

    def _splitter(self, m, side, cmd):
        """The burst splitter of ``side`` ("rd" or "wr"), fed from the engine's ``cmd``
        stream through a skid buffer: the splitter takes a command when its last burst goes
        out (a boundary compare and AR/AW ready), which stays out of ``cmd.ready``."""
        m.submodules[f"{side}_skid"] = skid = SkidBuffer(dma_cmd_layout(self.addr_width))
        m.submodules[f"{side}_split"] = split = _BurstSplitter(
            width=self.width, addr_width=self.addr_width, max_burst=self.max_burst)
        wiring.connect(m, wiring.flipped(cmd), skid.i)
        wiring.connect(m, skid.o, split.cmd)
        return split

    # --- reads ---------------------------------------------------------------------------

    def _elaborate_read(self, m):
        W = self.width
        lw = _log2(W)
        bus = self.bus
        dma = self.dma

        split = self._splitter(m, "rd", dma.rd_cmd)

        # Per-burst descriptors for the R side, written when AR is transferred.
        rdesc_layout = data.StructLayout({
            "len": 8, "o": lw, "first": 1, "last": 1, "extra": 1})
        m.submodules.rd_desc = fifo = WriteAheadFIFO(width=rdesc_layout.size,
                                                     depth=self.max_outstanding)
        burst = split.burst
        m.d.comb += [
            bus.arid.eq(0),
            bus.araddr.eq(burst.p.addr),
            bus.arlen.eq(burst.p.len),
            bus.arsize.eq(lw),
            bus.arburst.eq(Burst.INCR),
            bus.arlock.eq(0),
            bus.arcache.eq(CACHE_NORMAL_NC_BUFFERABLE),
            bus.arprot.eq(0),
            # The FIFO's level only falls while no AR is transferred, so arvalid, once
            # raised, stays up until the transfer.
            bus.arvalid.eq(burst.valid & fifo.w_rdy),
            burst.ready.eq(bus.arready & fifo.w_rdy),
        ]
        wdesc = rdesc_layout(fifo.w_data)
        m.d.comb += [
            wdesc.len.eq(burst.p.len),
            wdesc.o.eq(burst.p.o),
            wdesc.first.eq(burst.p.first),
            wdesc.last.eq(burst.p.last),
            wdesc.extra.eq(burst.p.extra),
            fifo.w_en.eq(bus.arvalid & bus.arready),
        ]

        # R side. The R channel enters through a skid buffer, so that ``rready`` is a
        # flip-flop: the acceptance below (the descriptor FIFO, the engine's
        # ``rd_data.ready``) reaches no slave logic. Without it, a slave whose next read
        # depends on ``rready`` (a block RAM's address) would have the engine's
        # read-return logic in front of it.
        m.submodules.r_skid = r_skid = SkidBuffer(data.StructLayout({
            "data": 8 * W, "resp": 2}))
        m.d.comb += [
            r_skid.i.valid.eq(bus.rvalid),
            r_skid.i.payload.data.eq(bus.rdata),
            r_skid.i.payload.resp.eq(bus.rresp),
            bus.rready.eq(r_skid.i.ready),
        ]
        r_in = r_skid.o
        d = rdesc_layout(fifo.r_data)
        cnt = Signal(8)                 # beat within the burst
        first_beat = Signal()
        end_burst = Signal()
        last_beat = Signal()
        unaligned = Signal()
        m.d.comb += [
            first_beat.eq(d.first & (cnt == 0)),
            end_burst.eq(cnt == d.len),
            last_beat.eq(d.last & end_burst),
            unaligned.eq(d.o != 0),
        ]
        # An unaligned command's final output beat is made of its last R beat's upper bytes
        # alone when the command spans no extra bus beat: it goes out in a flush cycle.
        flush_cmd = unaligned & ~d.extra
        # An unaligned command's first R beat only fills `prev`.
        produces = ~unaligned | ~first_beat

        prev = Signal(8 * W)
        prev_err = Signal()
        pending = Signal()              # a flush beat is owed
        pend_o = Signal(lw)

        out = dma.rd_data
        out_free = ~out.valid | out.ready
        r_err = r_in.payload.resp[1]    # SLVERR or DECERR

        # The combinational controls are plain expressions rather than `m.If` blocks: the
        # Verilog then has `assign`s, which event-driven simulators evaluate at time 0.
        r_hs = Signal()
        shift = Signal(lw + 1)          # bytes of `prev` to skip: 1..W
        load = Signal()
        load_last = Signal()
        load_err = Signal()
        m.d.comb += [
            # While a flush beat is owed, only an R beat that feeds no output may come in,
            # in the cycle the flush beat goes out.
            r_in.ready.eq(Mux(pending,
                              fifo.r_rdy & out_free & first_beat & unaligned,
                              fifo.r_rdy & (out_free | ~produces))),
            r_hs.eq(r_in.valid & r_in.ready),
            load.eq(Mux(pending, out_free, r_hs & produces)),
            shift.eq(Mux(pending, pend_o, Cat(d.o, ~unaligned))),   # o, or W when aligned
            load_last.eq(pending | (last_beat & ~flush_cmd)),
            load_err.eq(Mux(pending, prev_err, (unaligned & prev_err) | r_err)),
            fifo.r_en.eq(r_hs & end_burst),
        ]

        with m.If(pending & out_free):
            m.d.sync += pending.eq(0)
        with m.If(r_hs):
            m.d.sync += [
                prev.eq(r_in.payload.data),
                prev_err.eq(r_err),
                cnt.eq(Mux(end_burst, 0, cnt + 1)),
            ]
            with m.If(last_beat & flush_cmd):
                m.d.sync += [
                    pending.eq(1),
                    pend_o.eq(d.o),
                ]

        with m.If(out.ready):
            m.d.sync += out.valid.eq(0)
        with m.If(load):
            m.d.sync += [
                out.valid.eq(1),
                out.p.data.eq(Cat(prev, r_in.payload.data).bit_select(Cat(Const(0, 3), shift),
                                                                       8 * W)),
                out.p.last.eq(load_last),
                out.p.err.eq(load_err),
            ]

    # --- writes --------------------------------------------------------------------------

    def _elaborate_write(self, m):
        W = self.width
        lw = _log2(W)
        bus = self.bus
        dma = self.dma

        split = self._splitter(m, "wr", dma.wr_cmd)
        burst = split.burst

        # W descriptors, one per burst, written independently of AW.
        wdesc_layout = data.StructLayout({
            "len": 8, "o": lw, "e": lw, "first": 1, "last": 1, "extra": 1})
        m.submodules.wr_desc = wfifo = WriteAheadFIFO(width=wdesc_layout.size,
                                                      depth=self.max_outstanding)
        # B descriptors: whether the burst is its command's last. Written with AW.
        m.submodules.b_desc = bfifo = WriteAheadFIFO(width=1, depth=self.max_outstanding)

        aw_done = Signal()              # this burst's AW went out already
        w_done = Signal()               # this burst's W descriptor was queued already
        aw_hs = Signal()
        w_push = Signal()
        m.d.comb += [
            bus.awid.eq(0),
            bus.awaddr.eq(burst.p.addr),
            bus.awlen.eq(burst.p.len),
            bus.awsize.eq(lw),
            bus.awburst.eq(Burst.INCR),
            bus.awlock.eq(0),
            bus.awcache.eq(CACHE_NORMAL_NC_BUFFERABLE),
            bus.awprot.eq(0),
            # bfifo's level only falls while AW is pending, so awvalid stays up once raised.
            bus.awvalid.eq(burst.valid & ~aw_done & bfifo.w_rdy),
            aw_hs.eq(bus.awvalid & bus.awready),
            w_push.eq(burst.valid & ~w_done & wfifo.w_rdy),
            burst.ready.eq((aw_done | aw_hs) & (w_done | w_push)),
            bfifo.w_en.eq(aw_hs),
            bfifo.w_data.eq(burst.p.last),
            wfifo.w_en.eq(w_push),
        ]
        wd_in = wdesc_layout(wfifo.w_data)
        m.d.comb += [
            wd_in.len.eq(burst.p.len),
            wd_in.o.eq(burst.p.o),
            wd_in.e.eq(burst.p.e),
            wd_in.first.eq(burst.p.first),
            wd_in.last.eq(burst.p.last),
            wd_in.extra.eq(burst.p.extra),
        ]
        with m.If(burst.valid & burst.ready):
            m.d.sync += [aw_done.eq(0), w_done.eq(0)]
        with m.Else():
            with m.If(aw_hs):
                m.d.sync += aw_done.eq(1)
            with m.If(w_push):
                m.d.sync += w_done.eq(1)

        # W side.
        d = wdesc_layout(wfifo.r_data)
        cnt = Signal(8)
        first_beat = Signal()
        end_burst = Signal()
        last_beat = Signal()
        consume = Signal()              # this bus beat takes a wr_data beat
        m.d.comb += [
            first_beat.eq(d.first & (cnt == 0)),
            end_burst.eq(cnt == d.len),
            last_beat.eq(d.last & end_burst),
            # A command spanning an extra bus beat ends with one made of the previous
            # input beat's upper bytes alone.
            consume.eq(~(last_beat & d.extra)),
        ]
        inp = dma.wr_data
        prev = Signal(8 * W)
        w_free = ~bus.wvalid | bus.wready
        go = Signal()
        m.d.comb += [
            go.eq(wfifo.r_rdy & w_free & (inp.valid | ~consume)),
            inp.ready.eq(wfifo.r_rdy & w_free & consume),
            wfifo.r_en.eq(go & end_burst),
        ]
        shift = Signal(lw + 1)          # W - o: 1..W
        m.d.comb += shift.eq(W - d.o)
        strb = Signal(W)
        for lane in range(W):
            m.d.comb += strb[lane].eq((~first_beat | (lane >= d.o)) &
                                      (~last_beat | (lane <= d.e)))

        with m.If(bus.wready):
            m.d.sync += bus.wvalid.eq(0)
        with m.If(go):
            m.d.sync += [
                bus.wvalid.eq(1),
                bus.wdata.eq(Cat(prev, inp.p.data).bit_select(Cat(Const(0, 3), shift), 8 * W)),
                bus.wstrb.eq(strb),
                bus.wlast.eq(end_burst),
                cnt.eq(Mux(end_burst, 0, cnt + 1)),
            ]
            with m.If(consume):
                m.d.sync += prev.eq(inp.p.data)

        # B side.
        resp = dma.wr_resp
        resp_free = ~resp.valid | resp.ready
        b_last = bfifo.r_data[0]
        b_err = bus.bresp[1]
        acc_err = Signal()
        m.d.comb += [
            bus.bready.eq(bfifo.r_rdy & (resp_free | ~b_last)),
            bfifo.r_en.eq(bus.bvalid & bus.bready),
        ]
        with m.If(resp.ready):
            m.d.sync += resp.valid.eq(0)
        with m.If(bus.bvalid & bus.bready):
            with m.If(b_last):
                m.d.sync += [
                    resp.valid.eq(1),
                    resp.p.err.eq(acc_err | b_err),
                    acc_err.eq(0),
                ]
            with m.Else():
                m.d.sync += acc_err.eq(acc_err | b_err)
