# amaranth: UnusedElaboratable=no
"""The ``viommu`` command line: generated files, and one-line errors for bad parameters."""

import json

import pytest

from viommu.cli import main


def test_generate_mmio(tmp_path, capsys):
    out = tmp_path / "v"
    assert main(["generate", "--transport", "mmio", "-o", str(out), "--entries", "4",
                 "--endpoints", "3,9", "--queue-size", "32", "--axi-width", "128",
                 "--mmio-base", "0x4000_0000", "--irq", "40"]) == 0
    text = (out / "virtio_iommu_mmio.v").read_text()
    assert "module virtio_iommu_mmio(" in text
    for port in ("s_axil_awaddr", "s_axil_rdata", "m_axi_arvalid", "m_axi_wstrb", "irq",
                 "lookup_0_req_iova", "lookup_0_resp_allowed", "fault_drops"):
        assert f" {port}" in text, port
    assert "input [127:0] m_axi_rdata;" in text
    info = json.loads((out / "virtio_iommu_mmio.params.json").read_text())
    assert info["queue_size"] == 32 and info["axi_data_width"] == 128
    assert info["endpoint_ids"] == [3, 9]
    dts = (out / "virtio_iommu_mmio.dtsi").read_text()
    assert 'compatible = "virtio,mmio";' in dts
    assert "#iommu-cells = <1>;" in dts
    assert "reg = <0x0 0x40000000 0x0 0x1000>;" in dts
    assert "interrupts = <0 40 4>;" in dts
    assert "3, 9" in dts


@pytest.mark.parametrize("args, message", [
    (["--queue-size", "100"], "queue_size must be a power of two"),
    (["--queue-size", "65536"], "queue_size must be a power of two"),
    (["--axi-width", "32"], "invalid choice"),
    (["--features", "probe"], "must include VERSION_1"),
    (["--features", "version_1,map_unmap,bogus"], "unknown feature 'bogus'"),
    (["--bypass-init", "2"], "invalid choice"),
    (["--bypass-init", "1", "--features", "version_1,map_unmap"], "needs the BYPASS_CONFIG"),
    (["--fault-queue-depth", "0"], "fault_queue_depth must be an integer in 1..1024"),
    (["--entries", "0"], "entries"),
    (["--mappings", "2000000"], "mappings must be in"),
    (["--store", "dram"], "invalid choice"),
    (["--store-base", "0x1004"], "store_base 0x1004 must be a multiple of 32"),
])
def test_generate_mmio_bad_parameters(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--transport", "mmio", "-o", str(tmp_path / "out")] + args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_generate_has_no_icarus_copy(tmp_path):
    """One file per top level: the simulation-only copy and its option are gone."""
    out = tmp_path / "v"
    with pytest.raises(SystemExit):
        main(["generate", "--transport", "mmio", "-o", str(out), "--icarus"])
    assert main(["generate", "--transport", "mmio", "-o", str(out), "--entries", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "virtio_iommu_mmio.dtsi", "virtio_iommu_mmio.params.json", "virtio_iommu_mmio.v"]
