"""The project's Verilog (rtl/verilog.py) from time 0 in Icarus, and the bench runner's
waveforms (sim/cocotb_run.py)."""

import shutil
import subprocess

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.back import verilog as amaranth_verilog

from viommu.rtl.verilog import convert
from viommu.sim import cocotb_run


class _Pieces(wiring.Component):
    """Outputs that depend only on registers that keep their reset values: an output
    assigned piecewise (Yosys's process form writes bits [5:3] as a one-statement
    ``always @*`` block) and a ``case`` on a state register (an ``always @*`` block with a
    ``case``)."""
    a: In(1)
    o: Out(6)
    p: Out(8)

    def elaborate(self, platform):
        m = Module()
        r = Signal(3)
        k = Signal(3, init=5)
        state = Signal(2, init=2)
        with m.If(self.a):
            m.d.sync += r.eq(r + 1)
            m.d.comb += self.o[0].eq(1)
        m.d.comb += self.o[3:6].eq(k)
        m.d.sync += k.eq(k)
        with m.Switch(state):
            with m.Case(0):
                m.d.comb += self.p.eq(0x11)
            with m.Case(2):
                m.d.comb += self.p.eq(0x74)
            with m.Default():
                m.d.comb += self.p.eq(0x99)
        with m.If(self.a & (r == 7)):
            m.d.sync += state.eq(state + 1)
        return m


_TB = """
module tb;
  reg clk = 0, rst = 0, a = 0;
  wire [5:0] o;
  wire [7:0] p;
  t dut(.clk(clk), .rst(rst), .a(a), .o(o), .p(p));
  initial begin #10 $display("o=%b p=%h", o, p); $finish; end
endmodule
"""


def _icarus(tmp_path, text, generation):
    (tmp_path / "t.v").write_text(text + _TB)
    subprocess.run(["iverilog", generation, "-o", str(tmp_path / "sim"), "-s", "tb",
                    str(tmp_path / "t.v")], check=True)
    return subprocess.run(["vvp", "-n", str(tmp_path / "sim")], check=True,
                          capture_output=True, text=True).stdout


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="needs Icarus Verilog")
@pytest.mark.parametrize("generation", ["-g2005", "-g2012"])
def test_outputs_defined_from_time0(tmp_path, generation):
    text = convert(_Pieces(), "t")
    assert "always @*" not in text
    out = _icarus(tmp_path, text, generation)
    assert "o=101000 p=74" in out, out


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="needs Icarus Verilog")
def test_amaranth_process_form_is_x_in_icarus(tmp_path):
    """What the conversion avoids: the same design through Amaranth's own converter sits
    at X in Icarus (if this starts to pass, Icarus or Yosys changed)."""
    out = _icarus(tmp_path, amaranth_verilog.convert(_Pieces(), name="t"), "-g2012")
    assert "o=101000 p=74" not in out and "x" in out, out


@pytest.mark.parametrize("simulator, suffix", [("icarus", ".fst"), ("verilator", ".vcd")])
def test_failing_bench_leaves_a_waveform(tmp_path, monkeypatch, simulator, suffix):
    """A failing bench is run again with waves; the error names a waveform that exists
    and holds the design's signals."""
    monkeypatch.setattr(cocotb_run, "_BUILD", str(tmp_path))
    monkeypatch.delenv("VIOMMU_WAVES", raising=False)
    with pytest.raises(AssertionError) as exc:
        cocotb_run.run_cocotb(_Pieces(), "t", "tb_waves", simulator=simulator)
    message = str(exc.value)
    assert "always_fails" in message and "waveform of the failing run" in message, message
    path = message.rsplit(": ", 1)[1].strip()
    assert path.endswith(suffix) and (tmp_path / path).stat().st_size > 0, path
    if suffix == ".vcd":
        assert " p " in (tmp_path / path).read_text()


def test_waves_on_request(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cocotb_run, "_BUILD", str(tmp_path))
    monkeypatch.setenv("VIOMMU_WAVES", "1")
    assert cocotb_run.run_cocotb(_Pieces(), "t", "tb_waves", simulator="icarus",
                                 testcase="passes") == ["passes"]
    line = [l for l in capsys.readouterr().out.splitlines() if l.startswith("waveform: ")]
    assert line and (tmp_path / line[0].split(": ", 1)[1]).stat().st_size > 0
