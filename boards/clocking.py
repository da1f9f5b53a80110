"""The board image's clock and reset: the ``sync`` domain at the design clock.

:class:`ClockReset` turns the board's oscillator (the platform's ``default_clk``) into the
``sync`` domain at ``freq_hz``: directly when the oscillator already runs at that frequency
(the Versa board's 100 MHz ``clk100``), else through an ECP5 ``EHXPLLL`` whose dividers
:func:`ecp5_pll_dividers` computes (the ECP5-5G evaluation board's 12 MHz ``clk12`` becomes
100 MHz). ``sync`` is held in reset while the board's reset button (the platform's
``default_rst``, if it has one) is pressed or the PLL is not locked, and leaves reset
synchronously to its own clock (:class:`amaranth.lib.cdc.ResetSynchronizer`).

On ECP5 the synchronized reset reaches the design through a ``DCCA`` global buffer
(:func:`~viommu.rtl.util.global_buffer`): it is one net from one flip-flop to the reset
pin of most flip-flops of the image, too wide for general routing at 100 MHz. nextpnr
routes a ``DCCA`` output that drives logic pins on one of the global networks that reach
every slice.

Each of the image's fabric-driven global buffers (this reset, and the device's core and
engine resets, :mod:`viommu.rtl.transport.top_mmio`) is placed at a fixed ``DCCA`` site
(:data:`GLOBAL_BUFFER_SITES`, per part, which :meth:`~.targets.Target.make_platform`
puts on the platform as ``global_buffer_sites``): on the left, right and bottom edges,
never the top. Left to itself, nextpnr 0.11 puts every buffer at the top edge's first
free ``TDCC``, and its router then often finds no path from the driving flip-flop into
one of them ("Failed to route arc 0.0 of net ... G_CLKI_TDCC0"); at the sites below the
buffers' inputs route (docs/timing-log.md has the runs).

The generated clock gets an explicit constraint (``platform.add_clock_constraint``), so the
LPF carries it and nextpnr times the ``sync`` domain against ``freq_hz``.
"""

from dataclasses import dataclass

from amaranth.hdl import (ClockDomain, ClockSignal, Elaboratable, Instance, Module,
                          ResetSignal, Signal)
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from viommu.rtl.util import global_buffer


__all__ = ["PLLDividers", "ecp5_pll_dividers", "ClockReset", "GLOBAL_BUFFER_SITES",
           "global_buffer_sites"]


#: nextpnr ``DCCA`` bel names for the board image's fabric-driven global buffers, by part
#: and buffer name (see the module docstring). The board's clock input takes its own
#: buffer, which nextpnr places next to the pin (the left edge's ``LDCC0`` on both boards).
GLOBAL_BUFFER_SITES = {
    "LFE5UM5G-45F": {"rst": "X40/Y71/BDCC0", "core_clear": "X87/Y34/RDCC0",
                     "engine_clear": "X87/Y34/RDCC1"},
    "LFE5UM5G-85F": {"rst": "X67/Y95/BDCC0", "core_clear": "X123/Y46/RDCC0",
                     "engine_clear": "X123/Y46/RDCC1"},
}


def global_buffer_sites(device):
    """The :data:`GLOBAL_BUFFER_SITES` of ``device`` (a part name such as
    ``"LFE5UM5G-45F"``); an empty mapping for a part without a table (nextpnr picks)."""
    return dict(GLOBAL_BUFFER_SITES.get(device.upper(), {}))


#: ECP5 EHXPLLL operating ranges (Lattice TN1263 / DS1044), in MHz.
_IN_MHZ = (8.0, 400.0)
_PFD_MHZ = (3.125, 400.0)
_VCO_MHZ = (400.0, 800.0)
_OUT_MHZ = (3.125, 400.0)


@dataclass(frozen=True)
class PLLDividers:
    """EHXPLLL settings with CLKOP fed back: f_out = f_in * clkfb_div / clki_div,
    f_vco = f_out * clkop_div."""
    clki_div: int
    clkfb_div: int
    clkop_div: int
    in_mhz: float
    out_mhz: float     #: the frequency these dividers really give
    vco_mhz: float


def ecp5_pll_dividers(in_mhz, out_mhz):
    """The EHXPLLL dividers that bring ``in_mhz`` closest to ``out_mhz`` (exact if possible;
    among equals, the highest VCO frequency, for the least jitter). Raises ValueError when
    either frequency is outside what the PLL can take or make, or nothing comes within
    0.5 %."""
    if not _IN_MHZ[0] <= in_mhz <= _IN_MHZ[1]:
        raise ValueError(f"ECP5 PLL input must be 8..400 MHz, not {in_mhz} MHz")
    if not _OUT_MHZ[0] <= out_mhz <= _OUT_MHZ[1]:
        raise ValueError(f"ECP5 PLL output must be 3.125..400 MHz, not {out_mhz} MHz")
    best = None
    for clki_div in range(1, 129):
        pfd = in_mhz / clki_div
        if pfd < _PFD_MHZ[0]:
            break
        if pfd > _PFD_MHZ[1]:
            continue
        for clkfb_div in range(1, 81):
            f_out = pfd * clkfb_div
            if f_out > _OUT_MHZ[1]:
                break
            for clkop_div in range(1, 129):
                vco = f_out * clkop_div
                if vco > _VCO_MHZ[1]:
                    break
                if vco < _VCO_MHZ[0]:
                    continue
                key = (abs(f_out - out_mhz), -vco)
                if best is None or key < best[0]:
                    best = (key, PLLDividers(clki_div, clkfb_div, clkop_div, in_mhz, f_out, vco))
    if best is None or best[0][0] > out_mhz * 0.005:
        raise ValueError(f"no ECP5 PLL setting makes {out_mhz} MHz from {in_mhz} MHz")
    return best[1]


class ClockReset(Elaboratable):
    """Drives the ``sync`` domain (which its parent defines) at ``freq_hz`` from the
    platform's default clock, and its reset.

    Parameters
    ----------
    freq_hz : int
        Frequency of ``sync``. Equal to the oscillator's: no PLL. Otherwise the platform must
        be an ECP5 (an ``EHXPLLL`` is instantiated).

    Attributes
    ----------
    pll : PLLDividers or None
        The PLL settings used (None without a PLL); known after construction, so the build
        report can print them.
    locked : Signal(1)
        PLL lock (constant 1 without a PLL); for a status LED.
    """

    def __init__(self, *, freq_hz, platform):
        if not isinstance(freq_hz, (int, float)) or freq_hz <= 0:
            raise ValueError(f"freq_hz must be a positive number, not {freq_hz!r}")
        if platform.default_clk is None:
            raise ValueError(f"{type(platform).__name__} names no default clock")
        self.freq_hz = freq_hz
        self.in_hz = platform.default_clk_frequency
        if abs(self.in_hz - freq_hz) < 1:
            self.pll = None
        else:
            if getattr(platform, "family", None) != "ecp5":
                raise ValueError(f"{type(platform).__name__}: a PLL to make {freq_hz / 1e6} MHz "
                                 f"from {self.in_hz / 1e6} MHz is only written for ECP5")
            self.pll = ecp5_pll_dividers(self.in_hz / 1e6, freq_hz / 1e6)
        self.locked = Signal()

    def elaborate(self, platform):
        m = Module()
        m.submodules.clk_buf = clk_buf = io.Buffer(
            "i", platform.request(platform.default_clk, 0, dir="-"))
        clk_in = clk_buf.i
        button = Signal()
        if platform.default_rst is not None:
            m.submodules.rst_buf = rst_buf = io.Buffer(
                "i", platform.request(platform.default_rst, 0, dir="-"))
            m.d.comb += button.eq(rst_buf.i)

        if self.pll is None:
            m.d.comb += [ClockSignal("sync").eq(clk_in), self.locked.eq(1)]
        else:
            p = self.pll
            clk_out = Signal()
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{p.in_mhz:g}",
                a_FREQUENCY_PIN_CLKOP=f"{p.out_mhz:g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8",
                a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED",
                p_STDBY_ENABLE="DISABLED", p_DPHASE_SOURCE="DISABLED",
                p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
                p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
                p_CLKI_DIV=p.clki_div, p_CLKFB_DIV=p.clkfb_div,
                p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p.clkop_div,
                p_CLKOP_CPHASE=p.clkop_div - 1, p_CLKOP_FPHASE=0,
                p_FEEDBK_PATH="CLKOP",
                i_CLKI=clk_in, i_CLKFB=clk_out, i_RST=0, i_STDBY=0,
                i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=0, i_PHASESTEP=0,
                i_PHASELOADREG=0, i_PLLWAKESYNC=0, i_ENCLKOP=0,
                o_CLKOP=clk_out, o_LOCK=self.locked)
            m.d.comb += ClockSignal("sync").eq(clk_out)
            platform.add_clock_constraint(clk_out, p.out_mhz * 1e6)

        # The synchronizer works in a private domain on the same clock; its output is
        # ``sync``'s reset, through a global buffer where the platform has one.
        m.domains.crg_rst = ClockDomain("crg_rst", local=True)
        m.d.comb += ClockSignal("crg_rst").eq(ClockSignal("sync"))
        m.submodules.rst_sync = ResetSynchronizer(button | ~self.locked, domain="crg_rst")
        m.d.comb += ResetSignal("sync").eq(
            global_buffer(m, platform, ResetSignal("crg_rst"), name="rst"))
        return m
