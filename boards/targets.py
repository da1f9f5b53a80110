"""The build targets of ``viommu build --board NAME``.

===============  =====================================================================
name             what is built
===============  =====================================================================
versa_ecp5_5g    (default) Lattice ECP5 Versa-5G, LFE5UM5G-45F-8: the board image
                 (:class:`~.soc.BoardSoC`: device + block-RAM guest memory + UART
                 bridge) at 100 MHz from the board's 100 MHz oscillator; bitstream.
ecp5_5g_evn      Lattice ECP5-5G Evaluation Board, LFE5UM5G-85F-8: the same image at
                 100 MHz from the 12 MHz oscillator through an EHXPLLL; bitstream.
ice40_hx8k       iCE40 HX8K (CT256): resources and timing only, of the device *core* in
                 a reduced configuration (default 8 mapping entries, 4 endpoints); the
                 core's ports go through :class:`~.harness.SerialPorts` since
                 nextpnr-ice40 has no out-of-context mode. No bitstream: nothing on the
                 part talks to it.
core             the device core alone, out of context on LFE5UM5G-45F-8, every port
                 registered (:class:`~.harness.RegisteredPorts`): the figure the core's
                 benchmarks report.
device           the complete device (``virtio_iommu_mmio``: core, virtqueue engine,
                 register block, AXI master) out of context on LFE5UM5G-45F-8, every
                 port registered: what an SoC integrator adds to a design.
===============  =====================================================================

A board image's top level is :class:`BoardImage`: :class:`~.clocking.ClockReset` makes the
``sync`` domain, the board's first UART and its eight LEDs go to the SoC. The pins and the
oscillator constraint come from amaranth-boards; the PLL output's constraint the top adds
itself (``platform.add_clock_constraint``); what else a board needs (configuration options
of its bitstream) is in ``constraints/<board>.lpf``, appended to the generated LPF.
"""

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from amaranth.build import ResourceError
from amaranth.hdl import ClockDomain, Elaboratable, Module
from amaranth.lib import io

from .clocking import ClockReset, global_buffer_sites


__all__ = ["Target", "TARGETS", "DEFAULT_TARGET", "get_target", "BoardImage"]

#: Where extra per-board constraint files live (``<board>.lpf``).
CONSTRAINTS_DIR = Path(__file__).resolve().parent.parent / "constraints"


@dataclass(frozen=True)
class Target:
    name: str
    summary: str
    kind: str                          #: "board" (image + bitstream), "core-ice40", "core", "device"
    platform: Optional[str] = None     #: "module:Class" of amaranth-boards (kind "board")
    freq_mhz: float = 100.0            #: the design clock (constraint)
    device: Optional[str] = None       #: part, for the kinds without a platform
    package: Optional[str] = None
    speed: Optional[int] = None
    #: core parameters this target uses unless the command line gives them
    core_defaults: dict = field(default_factory=dict)

    @property
    def constraints(self):
        """Text of ``constraints/<name>.lpf`` ('' if there is none)."""
        path = CONSTRAINTS_DIR / f"{self.name}.lpf"
        return path.read_text() if path.exists() else ""

    def make_platform(self):
        """The board's amaranth-boards platform, with ``global_buffer_sites`` set for its
        part (read by every :func:`~viommu.rtl.util.global_buffer` of an elaboration)."""
        module, cls = self.platform.split(":")
        platform = getattr(importlib.import_module(module), cls)()
        platform.global_buffer_sites = global_buffer_sites(platform.device)
        return platform

    @property
    def part(self):
        """The FPGA as a string, e.g. 'LFE5UM5G-45F-8 (CABGA381)'."""
        if self.platform:
            p = self.make_platform()
            return f"{p.device}-{p.speed} ({p.package})"
        speed = f"-{self.speed}" if self.speed is not None else ""
        return f"{self.device}{speed} ({self.package})"


TARGETS = {t.name: t for t in (
    Target("versa_ecp5_5g", "ECP5 Versa-5G board image (device + guest RAM + UART bridge)",
           "board", "amaranth_boards.versa_ecp5_5g:VersaECP55GPlatform"),
    Target("ecp5_5g_evn", "ECP5-5G Evaluation Board image, 12 MHz -> 100 MHz PLL",
           "board", "amaranth_boards.ecp5_5g_evn:ECP55GEVNPlatform"),
    Target("ice40_hx8k", "iCE40 HX8K, resources and timing of a reduced core",
           "core-ice40", freq_mhz=48.0, device="hx8k", package="ct256",
           core_defaults={"entries": 8, "endpoints": 4}),
    Target("core", "device core alone, out of context, ECP5 LFE5UM5G-45F-8",
           "core", device="LFE5UM5G-45F", package="CABGA381", speed=8),
    Target("device", "complete virtio-mmio device, out of context, ECP5 LFE5UM5G-45F-8",
           "device", device="LFE5UM5G-45F", package="CABGA381", speed=8),
)}

DEFAULT_TARGET = "versa_ecp5_5g"


def get_target(name):
    """The :class:`Target` called ``name``; ValueError listing the known ones otherwise."""
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"unknown board {name!r}; known: {', '.join(TARGETS)}") from None


class BoardImage(Elaboratable):
    """A board's top level: clock and reset, then ``soc`` on the board's UART and LEDs.

    ``soc`` is a :class:`~.soc.BoardSoC` (ports ``uart_rx``, ``uart_tx``, ``leds``) built for
    ``freq_hz``. The platform must have ``uart`` 0 and ``led`` 0..7 resources (the supported
    boards do); fewer LEDs are tolerated (the rest stay unconnected).
    """

    def __init__(self, soc, *, freq_hz):
        self.soc = soc
        self.freq_hz = freq_hz

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain("sync")
        m.submodules.crg = ClockReset(freq_hz=self.freq_hz, platform=platform)
        m.submodules.soc = soc = self.soc
        uart = platform.request("uart", 0, dir={"rx": "-", "tx": "-"})
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [soc.uart_rx.eq(rx.i), tx.o.eq(soc.uart_tx)]
        for i in range(len(soc.leds)):
            try:
                led = platform.request("led", i, dir="-")
            except ResourceError:       # the board has fewer LEDs
                break
            m.submodules[f"led_{i}"] = buf = io.Buffer("o", led)
            m.d.comb += buf.o.eq(soc.leds[i])
        return m
