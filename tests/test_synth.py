"""Out-of-context ECP5 synthesis of a tiny component (runs yosys and nextpnr: marked slow)."""

import pytest
from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from viommu.boards.synth import synthesize_ooc


class RegisteredAdder(wiring.Component):
    """o <= a_q + b_q, with a and b registered first: two register stages, one 8-bit adder."""
    a: In(8)
    b: In(8)
    o: Out(9)

    def elaborate(self, platform):
        m = Module()
        a_q = Signal(8)
        b_q = Signal(8)
        m.d.sync += [a_q.eq(self.a), b_q.eq(self.b), self.o.eq(a_q + b_q)]
        return m


@pytest.mark.slow
def test_synthesize_ooc_registered_adder(tmp_path):
    messages = []
    report = synthesize_ooc(RegisteredAdder(), name="adder8", workdir=tmp_path, log=messages.append)
    assert report.luts > 0
    assert report.ffs >= 8
    assert report.fmax_mhz is not None and report.fmax_mhz > 0
    assert report.clock == "clk"
    assert "fmax" in report.format_table()
    assert any(m.startswith("[synth] nextpnr-ecp5 done in") for m in messages)
    assert report.to_dict()["luts"] == report.luts
