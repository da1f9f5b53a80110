"""cocotb tests of a tiny design for tests/test_cocotb_run.py: one that passes and one that
fails on purpose, to check the runner's waveforms."""

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles


@cocotb.test()
async def passes(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    await ClockCycles(dut.clk, 3)
    assert int(dut.p.value) == 0x74


@cocotb.test()
async def always_fails(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    await ClockCycles(dut.clk, 3)
    assert int(dut.p.value) == 0x00, "fails on purpose"
