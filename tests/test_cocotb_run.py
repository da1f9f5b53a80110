"""The Icarus compatibility patch applied to generated Verilog (sim/cocotb_run.py)."""

import shutil
import subprocess

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.back import verilog

from viommu.sim.cocotb_run import icarus_compatible


class _Pieces(wiring.Component):
    """An output assigned piecewise: Yosys writes bits [2:1] as a one-statement
    ``always @*`` block with a constant, which Icarus never evaluates unpatched."""
    a: In(1)
    o: Out(6)

    def elaborate(self, platform):
        m = Module()
        r = Signal(3)
        k = Signal(3, init=5)
        with m.If(self.a):
            m.d.sync += r.eq(r + 1)
            m.d.comb += self.o[0].eq(1)
        m.d.comb += self.o[3:6].eq(k)
        m.d.sync += k.eq(k)
        return m


_TB = """
module tb;
  reg clk = 0, rst = 0, a = 0;
  wire [5:0] o;
  t dut(.clk(clk), .rst(rst), .a(a), .o(o));
  initial begin #10 $display("o=%b", o); $finish; end
endmodule
"""


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="needs Icarus Verilog")
def test_one_statement_blocks_are_woken(tmp_path):
    text = verilog.convert(_Pieces(), name="t")
    assert "always @*\n" in text            # the case the patch is for is present
    patched = icarus_compatible(text)
    assert "always @*\n" not in patched
    (tmp_path / "t.v").write_text(patched + _TB)
    subprocess.run(["iverilog", "-o", str(tmp_path / "sim"), "-s", "tb", str(tmp_path / "t.v")],
                   check=True)
    out = subprocess.run(["vvp", "-n", str(tmp_path / "sim")], check=True,
                         capture_output=True, text=True).stdout
    assert "o=101000" in out, out
