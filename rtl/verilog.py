"""The project's Verilog: one file per top level, for every simulator and for synthesis.

:func:`convert` turns an elaboratable into Verilog-2005 through Amaranth's RTLIL and the
Yosys that Amaranth ships. It differs from ``amaranth.back.verilog.convert`` in one step:
every process is lowered to multiplexers (``proc``) before ``write_verilog``, where
Amaranth keeps them as ``always @*`` blocks with ``case`` statements (``proc -nomux``).

Why: Yosys wakes each such ``always @*`` block at time 0 through a register declared
``reg t = 0`` that the block lists in its sensitivity. Icarus Verilog applies that
initializer before the blocks wait on it, so no event reaches them; a block whose inputs
never change after reset (a state register that stays at its reset value) then keeps its
outputs at X, and the first AXI4-Lite read of the device returns X. Continuous assignments
have no such start-up rule: every simulator evaluates them at time 0. The lowered netlist
has only ``assign`` statements, ``always @(posedge ...)`` flip-flops and memories, which
Icarus, Verilator and synthesis tools all read the same way, and it is the same logic
that a synthesis flow's own ``proc`` produces.
"""

from amaranth.back import rtlil
from amaranth.lib import wiring

from .bus.axi import flat_ports


__all__ = ["convert", "YOSYS_SCRIPT"]


# ``-norom``: a case statement stays logic instead of becoming a ROM memory, as in
# Amaranth's own flow. ``opt_clean`` drops the wires the lowering leaves unused; wires with
# the design's names are kept.
YOSYS_SCRIPT = ["proc -norom", "memory_collect", "opt_clean", "write_verilog"]


def convert(elaboratable, name, *, ports=None):
    """The Verilog text of ``elaboratable`` as module ``name``.

    ``ports`` is the port dict of ``amaranth.back.rtlil.convert``; by default a
    ``wiring.Component``'s signature members become ports named as
    :func:`~viommu.rtl.bus.axi.flat_ports` names them (``s_axil_araddr``, ...).
    """
    from amaranth._toolchain.yosys import find_yosys
    if ports is None:
        if not isinstance(getattr(elaboratable, "signature", None), wiring.Signature):
            raise TypeError(f"{elaboratable!r} is not a wiring.Component: pass ports=")
        ports = flat_ports(elaboratable)
    text = rtlil.convert(elaboratable, name=name, ports=ports)
    yosys = find_yosys(lambda version: version >= (0, 40))
    script = [f"read_rtlil <<rtlil\n{text}\nrtlil", *YOSYS_SCRIPT]
    return yosys.run(["-q", "-"], "\n".join(script))
