"""Static timing analysis of a routed ECP5 design from nextpnr's SDF: every failing endpoint.

nextpnr reports the worst path of each clock and nothing else. This module reads the SDF
that nextpnr-ecp5 (0.11) writes after routing with ``--sdf FILE`` and times *every*
register-to-register path of the design against a clock period, then groups the failing
endpoints so that the few nets and blocks that cause most of them stand out::

    python -m viommu.boards.sta build/versa_ecp5_5g/board.sdf --period 10 --paths 3
    python -m viommu.boards.sta board.sdf --period 10 --json sta.json --depth 4
    python -m viommu.boards.sta board.sdf --period 10 --nextpnr report.json   (cross-check)

``viommu build`` writes no SDF by default: add nextpnr's ``--sdf board.sdf`` to the
nextpnr command line (``commands.txt`` of the build directory has it, to rerun by hand;
``build_ecp5_board(..., nextpnr_args=(*NEXTPNR_ECP5_ARGS, "--sdf", "board.sdf"))`` from
Python). The file is written into the build directory, tens of MB for the 64-entry image.

What it reads (SDF 3.0 as nextpnr writes it; see :func:`parse_sdf`):

* ``(TIMESCALE ..)`` and ``(DIVIDER ..)``. Delays are kept in ps (nextpnr's are whole
  picoseconds, so their sums are exact) and reported in ns.
* ``(CELL (CELLTYPE ..) (INSTANCE ..) ..)``, one per cell of the netlist, with
  ``(IOPATH in out (rise) (fall))`` arcs (combinational, or clock-to-output when ``in`` is
  the cell's clock) and ``(SETUPHOLD (posedge pin) (posedge CLK) (setup) (hold))`` checks
  (also ``SETUP``, and ``RECOVERY``/``RECREM``, read as setup checks).
* ``(INTERCONNECT driver/PORT load/PORT (rise) (fall))`` routing delays, one per net load.

Identifiers may carry SDF escapes (``\\$``, ``\\[``, ``\\.``, ``\\\\``...): a pin name is split
at its last *unescaped* divider and then unescaped, so cell names match their ``INSTANCE``.
Of a ``(min:typ:max)`` triple, and of rise and fall, the largest value is taken (nextpnr's
setup analysis uses the max delays too).

What it computes (:class:`TimingGraph`, :func:`analyse`):

* a graph whose nodes are cell pins: INTERCONNECT arcs join a driver pin to a load pin,
  combinational IOPATHs join a cell's input to its output;
* startpoints: the clock-to-output IOPATHs, i.e. IOPATHs from a clock pin (a pin that a
  timing check of the cell names as its clock, or a clock-like pin name such as CLK,
  CLKA/CLKB, WCK, on a cell that is not a clock buffer): TRELLIS_FF Q, DP16KD DO*, LUT-RAM
  reads; the arrival there is the clock-to-output delay;
* endpoints: every pin with a setup check, required time ``period - setup``;
* arrival times (longest path) in one topological pass; each pin remembers the arc that
  set its arrival, so the worst path to every endpoint can be rebuilt. Combinational loops
  are cut (at the arc a depth-first search meets closing the loop) with a warning; the
  analysis still ends;
* WNS (the worst slack, negative when failing), TNS (sum of the negative slacks), the
  failing endpoints grouped by end block, start block, start register, endpoint pin kind,
  start-block -> end-block pair, and the nets on the failing worst paths that the most
  failing endpoints go through (a net is named by its driver pin: the SDF has no net
  names); and the N worst paths arc by arc.

A block is a prefix of the cell name: its first ``depth`` components split at ``.`` and
``/``, stopping before the cell's own name and before a Yosys-internal component (one that
starts with ``$``), e.g. ``soc.device.engine`` for
``soc.device.engine.logic.walker.w_seen_TRELLIS_FF_Q`` at the default depth 3; cells at the
top get ``(top)``.

Agreement with nextpnr (``--nextpnr report.json`` prints both): the worst path here is
nextpnr's critical path to the picosecond, arc by arc (nextpnr's log rounds to 0.01 ns),
and the slack histogram of every timed endpoint is the one nextpnr prints
(docs/timing-log.md records the check). There is no systematic difference to document:
nextpnr's analyser and its SDF share the cell delays, setup times and routing delays, and
both treat the clock as ideal (below). The ~2,000 checked pins that no timed path reaches are LUT-RAM write
address/data pins and flip-flop inputs driven by constants (``$PACKER_GND``/``VCC``).

What it does not model (nor does nextpnr 0.11's analysis):

* clock skew and insertion delay: the INTERCONNECT arcs into clock pins (the clock
  network) are left out, every register is clocked at time 0. nextpnr-ecp5 writes them as
  0 for a clock on a global network anyway (it gives global routing no delay);
* clock edges: all registers are taken as clocked on the same edge (a check on a
  ``negedge`` clock gives a warning; nextpnr would halve the period between edges), and
  all clocked cells as one clock domain (more than one net driving clock pins gives a
  warning);
* hold checks, I/O paths (pads have no IOPATH, as in nextpnr without I/O constraints),
  clock uncertainty or jitter, multicycle or false paths.
"""

import argparse
import gzip
import json
import math
import re
import sys
import time
from collections import namedtuple
from pathlib import Path


__all__ = ["SDFError", "SDF", "parse_sdf", "read_sdf", "TimingGraph", "Arc", "analyse",
           "format_report", "block_of", "pin_kind", "read_nextpnr_critical", "main"]


class SDFError(ValueError):
    """The text is not an SDF file, or not one this reader understands."""


# --- tokenizer and parser ---------------------------------------------------------------

#: One SDF token: a parenthesis, a quoted string, an identifier or number (a run of
#: characters other than white space, parentheses and quotes, where a backslash escapes
#: the next character, whatever it is), or a stray quote/backslash (an error).
_TOKEN = re.compile(r'[()]'
                    r'|"(?:[^"\\]|\\[\s\S])*"'
                    r'|(?:\\[\s\S]|[^\s()"\\])[^\s()"\\]*(?:\\[\s\S][^\s()"\\]*)*'
                    r'|["\\]')
_UNESCAPE = re.compile(r'\\([\s\S])')
_TIMESCALE = re.compile(r'^(\d+(?:\.\d*)?)\s*(fs|ps|ns|us|ms|s)$', re.IGNORECASE)
_TIMESCALE_PS = {"fs": 1e-3, "ps": 1.0, "ns": 1e3, "us": 1e6, "ms": 1e9, "s": 1e12}
#: Tokenize this many characters at a time (cut after a newline), to bound the memory.
_CHUNK = 1 << 22


def _unescape(name):
    return _UNESCAPE.sub(r"\1", name) if "\\" in name else name


def _split_pin(raw, divider):
    """``cell<divider>port`` (still escaped) -> (cell, port), unescaped, split at the last
    unescaped divider."""
    i = raw.rfind(divider)
    if "\\" in raw:
        while i > 0:
            j = i
            while j > 0 and raw[j - 1] == "\\":
                j -= 1
            if (i - j) % 2 == 0:
                break
            i = raw.rfind(divider, 0, i)
    if i == len(raw) - 1:
        raise SDFError(f"pin name {raw!r} ends with the divider {divider!r}")
    if i <= 0:                  # a top-level port: no cell
        return "", _unescape(raw[i + 1:])
    return _unescape(raw[:i]), _unescape(raw[i + 1:])


def _port_of(item):
    """An IOPATH or timing-check port: ``PORT``, ``(posedge PORT)`` or ``(COND .. PORT)``;
    -> (port, edge or None)."""
    if item.__class__ is str:
        return _unescape(item), None
    if len(item) >= 2 and item[0].__class__ is str:
        head = item[0].lower()
        if head in ("posedge", "negedge", "01", "10", "0z", "z1", "1z", "z0"):
            port, _ = _port_of(item[1])
            return port, head
        if head == "cond":
            return _port_of(item[-1])
    raise SDFError(f"cannot read port specification {item!r}")


class SDF:
    """What :func:`parse_sdf` keeps of an SDF file. All delays in ps (nextpnr's are whole
    picoseconds, so sums of them are exact in floating point).

    * ``celltypes``: instance name -> cell type
    * ``iopaths``: (cell, from_port, to_port, delay)
    * ``checks``: (cell, port, clock_port, clock_edge, setup) -- setup checks only
    * ``interconnects``: (from_cell, from_port, to_cell, to_port, delay)
    """

    def __init__(self):
        self.design = None
        self.timescale_ps = 1000.0  # the SDF default unit is 1 ns
        self.divider = "."          # the SDF default hierarchy divider
        self.celltypes = {}
        self.iopaths = []
        self.checks = []
        self.interconnects = []


class _Parser:
    """Builds an :class:`SDF` from a token stream. Lists are built only for the small
    statements; a handled statement is consumed when it closes (not kept in its parent),
    so memory stays proportional to the data kept, not to the file."""

    def __init__(self):
        self.sdf = SDF()
        self.top = []
        self.stack = []
        self.cur = self.top
        self.seen_delayfile = False
        self.cell_type = None
        self.cell_instance = None
        self.values = {}                # value atom ("1:2:3") -> its max in ps (or None)
        self.handlers = {
            "INTERCONNECT": self._interconnect, "PORT": self._port_delay,
            "IOPATH": self._iopath,
            "SETUPHOLD": self._setup, "SETUP": self._setup,
            "RECOVERY": self._setup, "RECREM": self._setup,
            "CELLTYPE": self._celltype, "INSTANCE": self._instance, "CELL": self._cell,
            "TIMESCALE": self._timescale, "DIVIDER": self._divider, "DESIGN": self._design,
            # containers: their children were consumed already, drop them
            "DELAY": None, "ABSOLUTE": None, "INCREMENT": None, "TIMINGCHECK": None,
            "TIMINGENV": None, "LABEL": None, "HOLD": None, "REMOVAL": None, "WIDTH": None,
            "PERIOD": None, "SKEW": None, "NOCHANGE": None,
            "SDFVERSION": None, "DATE": None, "VENDOR": None, "PROGRAM": None,
            "VERSION": None, "VOLTAGE": None, "PROCESS": None, "TEMPERATURE": None,
        }

    def feed(self, tokens):
        stack, handlers = self.stack, self.handlers
        cur = self.cur
        if not self.seen_delayfile:
            if len(tokens) < 2 or tokens[0] != "(" or tokens[1].upper() != "DELAYFILE":
                raise SDFError("not an SDF file (it does not start with '(DELAYFILE')")
            self.seen_delayfile = True
        for tok in tokens:
            if tok == "(":
                stack.append(cur)
                cur = []
            elif tok == ")":
                if not stack:
                    raise SDFError("unbalanced parentheses: ')' with no open '('")
                done = cur
                cur = stack.pop()
                if done:
                    head = done[0]
                    if head.__class__ is str:
                        if head in handlers:
                            handler = handlers[head]
                            if handler is not None:
                                handler(done)
                            continue
                        if head[:1].isalpha() and head.upper() in handlers:
                            handler = handlers[head.upper()]
                            if handler is not None:
                                handler(done)
                            continue
                cur.append(done)
            elif tok == '"' or tok == "\\":
                raise SDFError("unterminated quoted string or dangling backslash")
            else:
                cur.append(tok)
        self.cur = cur

    def finish(self):
        if not self.seen_delayfile:
            raise SDFError("not an SDF file (it is empty)")
        if self.stack:
            raise SDFError(f"unexpected end of file ({len(self.stack)} '(' not closed)")
        return self.sdf

    # values

    def _max_value(self, items):
        """Largest number of the value lists in ``items`` (``(1:2:3)``, ``(4)``, ``()``),
        in ps; 0.0 when none has a number. Lists with a keyword head (RETAIN..) are
        skipped."""
        values = self.values
        best = None
        for item in items:
            if item.__class__ is not list or not item:
                continue
            atom = item[0]
            if atom.__class__ is not str:
                continue
            v = values.get(atom, False)
            if v is False:
                v = None
                for part in atom.split(":"):
                    if part:
                        try:
                            x = float(part)
                        except ValueError:
                            v = None
                            break
                        if v is None or x > v:
                            v = x
                if v is not None and self.sdf.timescale_ps != 1.0:
                    v *= self.sdf.timescale_ps
                values[atom] = v
            if v is not None and (best is None or v > best):
                best = v
        return 0.0 if best is None else best

    # statements

    def _timescale(self, s):
        text = "".join(x for x in s[1:] if x.__class__ is str)
        m = _TIMESCALE.match(text)
        if not m:
            raise SDFError(f"cannot read (TIMESCALE {text})")
        self.sdf.timescale_ps = float(m.group(1)) * _TIMESCALE_PS[m.group(2).lower()]
        self.values.clear()

    def _divider(self, s):
        if len(s) != 2 or s[1] not in ("/", "."):
            raise SDFError(f"cannot read DIVIDER {s[1:]!r}")
        self.sdf.divider = s[1]

    def _design(self, s):
        if len(s) > 1 and s[1].__class__ is str:
            self.sdf.design = s[1].strip('"')

    def _celltype(self, s):
        self.cell_type = s[1].strip('"') if len(s) > 1 and s[1].__class__ is str else "?"

    def _instance(self, s):
        name = s[1] if len(s) > 1 and s[1].__class__ is str else ""
        self.cell_instance = _unescape(name)
        if name and name != "*":
            self.sdf.celltypes[self.cell_instance] = self.cell_type or "?"

    def _cell(self, s):
        self.cell_type = self.cell_instance = None

    def _full_pin(self, raw):
        cell, port = _split_pin(raw, self.sdf.divider)
        if self.cell_instance:      # INTERCONNECT inside a hierarchical CELL: relative names
            cell = self.cell_instance + self.sdf.divider + cell
        return cell, port

    def _interconnect(self, s):
        if len(s) < 3 or s[1].__class__ is not str or s[2].__class__ is not str:
            raise SDFError(f"cannot read INTERCONNECT {s[1:3]!r}")
        fc, fp = self._full_pin(s[1])
        tc, tp = self._full_pin(s[2])
        self.sdf.interconnects.append((fc, fp, tc, tp, self._max_value(s[3:])))

    def _port_delay(self, s):
        # (PORT load (delay)): a delay to a load pin without a named driver; kept as an
        # interconnect from an unknown driver so that the load's time includes it.
        if len(s) >= 2 and s[1].__class__ is str:
            tc, tp = self._full_pin(s[1])
            self.sdf.interconnects.append((None, None, tc, tp, self._max_value(s[2:])))

    def _iopath(self, s):
        if self.cell_instance is None or len(s) < 3:
            raise SDFError("IOPATH outside a CELL")
        frm, _ = _port_of(s[1])
        to, _ = _port_of(s[2])
        self.sdf.iopaths.append((self.cell_instance, frm, to, self._max_value(s[3:])))

    def _setup(self, s):
        if self.cell_instance is None or len(s) < 4:
            raise SDFError(f"{s[0]} outside a CELL or without a value")
        port, _ = _port_of(s[1])
        clock, edge = _port_of(s[2])
        # SETUPHOLD/RECREM: (setup) (hold); SETUP/RECOVERY: (setup); the first value counts
        value = self._max_value(s[3:4])
        self.sdf.checks.append((self.cell_instance, port, clock, edge or "posedge", value))


def _chunks(text):
    """Split ``text`` after newlines (not escaped ones) into pieces of about _CHUNK
    characters; yields (piece, is_last)."""
    n = len(text)
    pos = 0
    while pos < n:
        end = pos + _CHUNK
        if end < n:
            end = text.find("\n", end)
            while end > 0 and text[end - 1] == "\\":
                end = text.find("\n", end + 1)
        if end < 0 or end + 1 >= n:
            yield text[pos:], True
            return
        yield text[pos:end + 1], False
        pos = end + 1


def parse_sdf(text):
    """Parse the SDF ``text`` (a str) into an :class:`SDF`; :class:`SDFError` if it is not
    one."""
    parser = _Parser()
    findall = _TOKEN.findall
    pending = ""
    for chunk, last in _chunks(text):
        if pending:
            chunk = pending + chunk
            pending = ""
        tokens = findall(chunk)
        if not last and ('"' in tokens or "\\" in tokens):
            # a quoted string that goes on past this piece (only possible with a newline
            # in a string): tokenize it again together with the next piece
            pending = chunk
            continue
        if tokens:
            parser.feed(tokens)
    return parser.finish()


def read_sdf(path):
    """Read and parse the SDF file ``path`` (``.gz`` is decompressed)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="surrogateescape") as f:
        text = f.read()
    return parse_sdf(text)


# --- timing graph ---------------------------------------------------------------------------

#: Pin names of clock inputs, for a clocked cell that has no timing check naming its clock.
_CLOCK_PORT = re.compile(r"(?:CLK|CK|CLOCK|WCK|SCLK|ECLK|WCLK|RCLK)\d*|CLK[AB]|\w*_CLK")
#: Cell types whose clock-named inputs drive outputs combinationally (clock buffers).
_CLOCK_BUFFERS = frozenset({
    "DCCA", "DCSC", "DCC", "ECLKSYNCB", "TRELLIS_ECLKBUF", "ECLKBRIDGECS", "CLKDIVF",
    "EHXPLLL", "PCSCLKDIV", "OSCG", "DQSBUFM", "DDRDLL", "DLLDELD", "EXTREFB", "DCUA",
})

#: One arc of a path. ``kind``: "clk-to-q", "cell", "net" or "setup" (then ``to`` is
#: None); ``delay`` and ``cumulative`` in ns.
Arc = namedtuple("Arc", "kind from_pin to_pin delay cumulative")

_NET, _CELL, _LAUNCH = 0, 1, 2
_KIND = {_NET: "net", _CELL: "cell", _LAUNCH: "clk-to-q"}


class TimingGraph:
    """The timing graph of an :class:`SDF` and its arrival times (longest path from any
    startpoint; they do not depend on the clock period).

    Times are in ps, as in :class:`SDF`. ``endpoints``: list of (pin id, setup), one per
    checked pin (the largest setup of its checks). Pins are ids into ``pins`` ((cell, port)
    pairs); :meth:`pin` looks one up. ``arrival[pin]`` is None where no timed path arrives
    (:meth:`arrival_ns` by name, in ns). ``cut_arcs``: the arcs (ids into ``e_src``,
    ``e_dst``...) left out to break combinational loops. ``warnings``: list of str.
    """

    def __init__(self, sdf):
        self.sdf = sdf
        self.celltypes = sdf.celltypes
        self.warnings = []
        self.pins = []
        self._pin_ids = {}
        pid = self._pin_id
        # arcs: parallel lists
        self.e_src, self.e_dst, self.e_delay, self.e_kind = [], [], [], []

        # clock pins: the clock of a check, or a clock-named input of a clocked cell
        check_clocks = {}
        endpoints = {}
        negedge = 0
        for cell, port, clock, edge, setup in sdf.checks:
            check_clocks.setdefault(cell, set()).add(clock)
            if edge == "negedge":
                negedge += 1
            key = pid(cell, port)
            clk = pid(cell, clock)
            old = endpoints.get(key)
            if old is None or setup > old[0]:
                endpoints[key] = (setup, clk)
        if negedge:
            self.warnings.append(
                f"{negedge} timing checks are on a negedge clock: all registers are "
                "analysed as clocked on the same edge")
        clock_pins = set()
        launches = []
        comb = []
        for cell, frm, to, delay in sdf.iopaths:
            clocks = check_clocks.get(cell)
            if (clocks is not None and frm in clocks) or (
                    _CLOCK_PORT.fullmatch(frm) and self.celltypes.get(cell) not in _CLOCK_BUFFERS):
                launches.append((pid(cell, frm), pid(cell, to), delay))
            else:
                comb.append((pid(cell, frm), pid(cell, to), delay))
        for cell, clocks in check_clocks.items():
            for clock in clocks:
                clock_pins.add(pid(cell, clock))
        for clk, _q, _d in launches:
            clock_pins.add(clk)

        n_edges = 0
        e_src, e_dst, e_delay, e_kind = self.e_src, self.e_dst, self.e_delay, self.e_kind
        self.clock_loads = {}       # driver pin -> [clock pins it drives, largest delay]
        self.fanout = {}            # driver pin -> number of loads (data nets)
        unknown_driver = 0
        for fc, fp, tc, tp, delay in sdf.interconnects:
            dst = pid(tc, tp)
            if fc is None:
                unknown_driver += 1
                continue
            src = pid(fc, fp)
            if dst in clock_pins:
                load = self.clock_loads.get(src)
                if load is None:
                    self.clock_loads[src] = [1, delay]
                else:
                    load[0] += 1
                    load[1] = max(load[1], delay)
                continue
            self.fanout[src] = self.fanout.get(src, 0) + 1
            e_src.append(src), e_dst.append(dst), e_delay.append(delay), e_kind.append(_NET)
        for src, dst, delay in comb:
            e_src.append(src), e_dst.append(dst), e_delay.append(delay), e_kind.append(_CELL)
        n_edges = len(e_src)
        for src, dst, delay in launches:
            e_src.append(src), e_dst.append(dst), e_delay.append(delay), e_kind.append(_LAUNCH)
        if unknown_driver:
            self.warnings.append(f"{unknown_driver} PORT delays without a driver pin ignored")
        if len(self.clock_loads) > 1:
            names = ", ".join(self.pin_name(p) for p in sorted(
                self.clock_loads, key=lambda p: -self.clock_loads[p][0])[:4])
            self.warnings.append(
                f"{len(self.clock_loads)} nets drive clock pins ({names}): all analysed as "
                "one clock domain")

        n = len(self.pins)
        succ = [[] for _ in range(n)]
        for e in range(n_edges):
            succ[e_src[e]].append(e)
        self.endpoints = sorted((pin, setup) for pin, (setup, _clk) in endpoints.items())
        self._propagate(succ, n_edges)

    def _pin_id(self, cell, port):
        key = (cell, port)
        i = self._pin_ids.get(key)
        if i is None:
            i = self._pin_ids[key] = len(self.pins)
            self.pins.append(key)
        return i

    def pin(self, cell, port):
        """The id of pin ``cell``/``port``; KeyError if the SDF does not name it."""
        return self._pin_ids[(cell, port)]

    def arrival_ns(self, cell, port):
        """Arrival time at pin ``cell``/``port`` in ns (None: no timed path reaches it)."""
        a = self.arrival[self.pin(cell, port)]
        return None if a is None else a / 1000.0

    def pin_name(self, pin):
        cell, port = self.pins[pin]
        return f"{cell}/{port}"

    def _propagate(self, succ, n_edges):
        n = len(self.pins)
        e_src, e_dst, e_delay = self.e_src, self.e_dst, self.e_delay
        NEG = -math.inf
        arrival = [NEG] * n
        pred = [-1] * n         # arc that set the arrival
        start = [-1] * n        # launch arc of the worst path to here
        roots = []
        for e in range(n_edges, len(e_src)):
            q = e_dst[e]
            if e_delay[e] > arrival[q]:
                if arrival[q] == NEG:
                    roots.append(q)
                arrival[q] = e_delay[e]
                pred[q] = e
                start[q] = e
        # depth-first search from the startpoints: postorder, reversed, is a topological
        # order of what they reach; an arc to a pin still on the search path closes a loop
        color = bytearray(n)
        order = []
        cut = []
        for root in sorted(roots):
            if color[root]:
                continue
            color[root] = 1
            stack = [(root, iter(succ[root]))]
            while stack:
                node, it = stack[-1]
                for e in it:
                    d = e_dst[e]
                    c = color[d]
                    if c == 0:
                        color[d] = 1
                        stack.append((d, iter(succ[d])))
                        break
                    if c == 1:
                        cut.append(e)
                else:
                    color[node] = 2
                    order.append(node)
                    stack.pop()
        cut_set = set(cut)
        self.cut_arcs = cut
        if cut:
            examples = "; ".join(f"{self.pin_name(e_src[e])} -> {self.pin_name(e_dst[e])}"
                                 for e in cut[:3])
            self.warnings.append(f"combinational loops: {len(cut)} arcs cut to break them "
                                 f"({examples}{'; ...' if len(cut) > 3 else ''})")
        for node in reversed(order):
            a = arrival[node]
            s = start[node]
            for e in succ[node]:
                t = a + e_delay[e]
                d = e_dst[e]
                if t > arrival[d]:
                    if cut_set and e in cut_set:
                        continue
                    arrival[d] = t
                    pred[d] = e
                    start[d] = s
        self.arrival = [None if a == NEG else a for a in arrival]
        self.pred = pred
        self.start = start
        self.n_timed = len(order)

    def start_of(self, pin):
        """(clock pin, output pin) of the launch of the worst path to ``pin``, or None."""
        e = self.start[pin]
        return None if e < 0 else (self.e_src[e], self.e_dst[e])

    def path(self, pin):
        """The worst path to ``pin``: list of (kind, from pin, to pin, delay), launch first."""
        arcs = []
        seen = set()
        e = self.pred[pin]
        while e >= 0:
            if e in seen:           # cannot happen on a cut graph; do not hang if it does
                break
            seen.add(e)
            arcs.append((self.e_kind[e], self.e_src[e], self.e_dst[e], self.e_delay[e]))
            if self.e_kind[e] == _LAUNCH:
                break
            e = self.pred[self.e_src[e]]
        arcs.reverse()
        return arcs

    def worst_path(self, pin, setup=None):
        """The worst path to ``pin`` as a list of :class:`Arc` (pin names as "cell/port",
        times in ns), ending with the setup check when ``setup`` (ps) is given."""
        out = []
        total = 0.0
        for kind, src, dst, delay in self.path(pin):
            total += delay
            out.append(Arc(_KIND[kind], self.pin_name(src), self.pin_name(dst),
                           delay / 1000.0, total / 1000.0))
        if setup is not None:
            out.append(Arc("setup", self.pin_name(pin), None, setup / 1000.0,
                           (total + setup) / 1000.0))
        return out


# --- grouping -------------------------------------------------------------------------------

_HIER = re.compile(r"[./]")


def block_of(cell, depth=3):
    """The block of cell name ``cell``: its first ``depth`` hierarchy components (split at
    ``.`` and ``/``), never the last one (the cell's own name) nor any from the first
    Yosys-internal one (``$...``) on; "(top)" when none is left."""
    name = cell
    if name.startswith("$flatten"):      # Yosys' flatten names: $flatten\a.\b.$procdff$1
        name = name[len("$flatten"):].replace("\\", "")
    parts = _HIER.split(name)
    keep = []
    for part in parts[:-1]:
        if len(keep) >= depth or not part or part.startswith("$"):
            break
        keep.append(part)
    return ".".join(keep) if keep else "(top)"


_RAM_PIN_KINDS = (("DI", "RAM data"), ("AD", "RAM address"), ("OCE", "RAM CE"),
                  ("CE", "RAM CE"), ("WE", "RAM WE"), ("CS", "RAM CS"), ("RST", "RAM reset"))
_FF_PIN_KINDS = {"DI": "D/DI", "D": "D/DI", "M": "M", "CE": "CE", "SP": "CE", "LSR": "LSR",
                 "CD": "LSR", "PD": "LSR"}
_LUTRAM_PIN_KINDS = {"WD": "LUT-RAM data", "WAD": "LUT-RAM address", "WRE": "LUT-RAM WE"}


def pin_kind(celltype, port):
    """A short class of an endpoint pin: "D/DI", "M", "CE", "LSR" (flip-flops), "RAM data",
    "RAM address", "RAM CE", "RAM WE"... (DP16KD), "LUT-RAM data/address/WE", else
    "<celltype> <port without its bit number>"."""
    base = port.rstrip("0123456789")
    if celltype == "DP16KD":
        stem = base[:-1] if base[-1:] in ("A", "B") else base
        for prefix, kind in _RAM_PIN_KINDS:
            if stem.startswith(prefix):
                return kind
        return f"RAM {base}"
    if base in _LUTRAM_PIN_KINDS and celltype in ("TRELLIS_COMB", "TRELLIS_RAMW",
                                                  "TRELLIS_SLICE", "TRELLIS_DPR16X4"):
        return _LUTRAM_PIN_KINDS[base]
    if base in _FF_PIN_KINDS and ("FF" in celltype or celltype in ("TRELLIS_SLICE",)
                                  or celltype.startswith("FD1")):
        return _FF_PIN_KINDS[base]
    if celltype in ("MULT18X18D", "ALU54B"):
        return f"DSP {base}"
    return f"{celltype} {base}"


def _ns(ps):
    """ps -> ns for the report, rounded to 0.1 ps (and no negative zero)."""
    return None if ps is None else round(ps / 1000.0, 4) + 0.0


class _Group:
    __slots__ = ("count", "worst", "tns")

    def __init__(self):
        self.count, self.worst, self.tns = 0, math.inf, 0.0

    def add(self, slack):
        self.count += 1
        self.tns += slack
        if slack < self.worst:
            self.worst = slack


def _table(groups, top, key_name, extra=None):
    rows = sorted(groups.items(), key=lambda kv: (-kv[1].count, kv[1].worst, kv[0]))
    out = []
    for name, g in rows[:top]:
        row = {key_name: name, "failing": g.count, "worst_slack_ns": _ns(g.worst),
               "tns_ns": _ns(g.tns)}
        if extra is not None:
            row.update(extra(name))
        out.append(row)
    return {"rows": out, "groups": len(rows)}


def analyse(graph, period, *, depth=3, paths=5, top=20):
    """Slacks of every endpoint of ``graph`` (a :class:`TimingGraph`) against the clock
    period ``period`` (ns); returns the report as a JSON-able dict, times in ns:

    * ``endpoints`` (timed), ``unconstrained_endpoints`` (a setup check that no timed path
      reaches), ``failing_endpoints``; ``wns_ns`` (worst slack, also when positive),
      ``tns_ns`` (sum of the negative slacks), ``worst_delay_ns`` (clock-to-Q to setup of
      the worst path, nextpnr's critical path delay) and ``fmax_mhz``;
    * ``groups``: tables of the failing endpoints, each ``{"rows": [...], "groups": n}``
      with the ``top`` largest groups by count: ``end_block``, ``start_block``,
      ``start_register``, ``pin_kind``, ``block_pairs`` and ``nets`` (per driver pin: the
      failing endpoints whose worst path goes through its net); a row has ``failing``,
      ``worst_slack_ns``, ``tns_ns``;
    * ``paths``: the ``paths`` endpoints of least slack with their worst paths, arc by arc
      (the last arc is the setup check);
    * ``clock_nets`` and ``warnings``.
    """
    if isinstance(period, bool) or not isinstance(period, (int, float)) \
            or not math.isfinite(period) or period <= 0:
        raise ValueError(f"period must be a positive number of ns, not {period!r}")
    period_ps = round(period * 1000.0, 6)      # 1.1 ns -> 1100.0 ps exactly
    celltypes = graph.celltypes
    pins = graph.pins
    arrival = graph.arrival
    timed = []
    unconstrained = 0
    for pin, setup in graph.endpoints:
        a = arrival[pin]
        if a is None:
            unconstrained += 1
            continue
        timed.append((period_ps - setup - a, pins[pin], pin, setup, a))
    timed.sort()
    failing = [t for t in timed if t[0] < 0]

    by_end, by_start, by_reg, by_kind, by_pair, by_net = {}, {}, {}, {}, {}, {}

    def group(d, key):
        g = d.get(key)
        if g is None:
            g = d[key] = _Group()
        return g

    for slack, (end_cell, end_port), pin, _setup, _a in failing:
        start_cell = pins[graph.start_of(pin)[0]][0]
        end_block, start_block = block_of(end_cell, depth), block_of(start_cell, depth)
        group(by_end, end_block).add(slack)
        group(by_start, start_block).add(slack)
        group(by_reg, start_cell).add(slack)
        group(by_kind, pin_kind(celltypes.get(end_cell, "?"), end_port)).add(slack)
        group(by_pair, f"{start_block} -> {end_block}").add(slack)
        for kind, src, _dst, _delay in graph.path(pin):   # a path meets a net only once
            if kind == _NET:
                group(by_net, src).add(slack)

    net_pins = {graph.pin_name(src): src for src in by_net}

    def net_extra(name):
        src = net_pins[name]
        cell, port = pins[src]
        return {"driver_cell": cell, "driver_port": port,
                "driver_type": celltypes.get(cell, "?"), "fanout": graph.fanout.get(src, 0)}

    worst = timed[0] if timed else None
    worst_delay = None if worst is None else worst[4] + worst[3]
    report = {
        "sdf": None,
        "design": graph.sdf.design,
        "period_ns": period,
        "depth": depth,
        "cells": len(celltypes),
        "interconnects": len(graph.sdf.interconnects),
        "endpoints": len(timed),
        "unconstrained_endpoints": unconstrained,
        "failing_endpoints": len(failing),
        "wns_ns": None if worst is None else _ns(worst[0]),
        "tns_ns": _ns(sum(t[0] for t in failing)),
        "worst_delay_ns": _ns(worst_delay),
        "fmax_mhz": None if not worst_delay or worst_delay <= 0 else
        round(1e6 / worst_delay, 3),
        "clock_nets": [{"driver": graph.pin_name(p), "clock_pins": c, "max_delay_ns": _ns(d)}
                       for p, (c, d) in sorted(graph.clock_loads.items(),
                                               key=lambda kv: (-kv[1][0], kv[0]))],
        "warnings": list(graph.warnings),
        "groups": {
            "end_block": _table(by_end, top, "block"),
            "start_block": _table(by_start, top, "block"),
            "start_register": _table(by_reg, top, "cell",
                                     lambda name: {"type": celltypes.get(name, "?")}),
            "pin_kind": _table(by_kind, top, "kind"),
            "block_pairs": _table(by_pair, top, "pair"),
            "nets": _table({name: by_net[src] for name, src in net_pins.items()}, top,
                           "driver", net_extra),
        },
        "paths": [],
    }
    for slack, (cell, port), pin, setup, a in timed[:paths]:
        launch = graph.start_of(pin)
        report["paths"].append({
            "endpoint": graph.pin_name(pin),
            "endpoint_type": celltypes.get(cell, "?"),
            "endpoint_kind": pin_kind(celltypes.get(cell, "?"), port),
            "startpoint": graph.pin_name(launch[1]),
            "start_register": pins[launch[0]][0],
            "slack_ns": _ns(slack),
            "arrival_ns": _ns(a),
            "setup_ns": _ns(setup),
            "required_ns": _ns(period_ps - setup),
            "arcs": [{"kind": arc.kind, "from": arc.from_pin, "to": arc.to_pin,
                      "delay_ns": round(arc.delay, 4) + 0.0,
                      "cumulative_ns": round(arc.cumulative, 4) + 0.0}
                     for arc in graph.worst_path(pin, setup)],
        })
    return report


# --- nextpnr's own critical path, for a cross-check ----------------------------------------

_FMAX_LINE = re.compile(r"Max frequency for clock\s+'([^']*)':\s*([\d.]+) MHz")
_CRIT_HEAD = re.compile(r"Critical path report for clock '([^']*)'")
_CRIT_ROW = re.compile(r"^Info:\s+([a-z-]+)\s+(-?\d+\.\d+)\s+(-?\d+\.\d+)\s+Source\s+(\S+)")


def _dotted_pin(name):
    """nextpnr's ``cell.PORT`` -> ``cell/PORT`` (port names have no dots)."""
    cell, _, port = name.rpartition(".")
    return f"{cell}/{port}" if cell else name


def read_nextpnr_critical(path):
    """nextpnr's worst path of a clock, from its ``--report`` JSON or its log: a dict with
    ``clock``, ``total_ns`` (the path's delay, clock-to-Q to setup), ``fmax_mhz``,
    ``start`` and ``end`` ("cell/port"), as far as the file has them (the log's figures
    have 0.01 ns / 0.01 MHz resolution; its last report counts, the one after routing).
    Of several clocks, the one with the lowest fmax."""
    text = Path(path).read_text(errors="replace")
    if text.lstrip().startswith("{"):
        data = json.loads(text)
        fmax = data.get("fmax", {})
        best = None
        for cp in data.get("critical_paths", []):
            if cp.get("from") != cp.get("to") or "<async>" in str(cp.get("from")):
                continue            # cross-domain or unconstrained I/O
            segs = cp.get("path", [])
            if not segs:
                continue
            clock = str(cp.get("from")).split(" ", 1)[-1]   # "posedge $glbnet$clk"
            total = round(sum(float(seg.get("delay", 0.0)) for seg in segs), 4)
            if best is None or total > best["total_ns"]:
                first, last = segs[0].get("from", {}), segs[-1].get("to", {})
                best = {"clock": clock, "total_ns": total,
                        "start": f"{first.get('cell')}/{first.get('port')}",
                        "end": f"{last.get('cell')}/{last.get('port')}"}
                if clock in fmax:
                    best["fmax_mhz"] = round(float(fmax[clock].get("achieved")), 3)
        if best is None and fmax:
            clock, f = min(fmax.items(), key=lambda kv: kv[1].get("achieved", math.inf))
            best = {"clock": clock, "fmax_mhz": f.get("achieved")}
        return best
    reports = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _CRIT_HEAD.search(line)
        if m:
            rows = []
            for row in lines[i + 1:]:
                r = _CRIT_ROW.match(row)
                if r:
                    rows.append(r)
                elif "ns logic" in row or "Critical path report" in row \
                        or not row.startswith("Info:"):
                    break
            if rows:
                reports[m.group(1)] = {"clock": m.group(1), "total_ns": float(rows[-1].group(3)),
                                       "start": _dotted_pin(rows[0].group(4)),
                                       "end": _dotted_pin(rows[-1].group(4))}
        m = _FMAX_LINE.search(line)
        if m:
            reports.setdefault(m.group(1), {"clock": m.group(1)})["fmax_mhz"] = float(m.group(2))
    if not reports:
        return None
    return min(reports.values(), key=lambda r: r.get("fmax_mhz", math.inf))


# --- text output ----------------------------------------------------------------------------

_GROUP_TITLES = (
    ("end_block", "by end block (depth {depth})", "block"),
    ("start_block", "by start block (depth {depth})", "block"),
    ("start_register", "by start register", "cell"),
    ("pin_kind", "by endpoint pin kind", "kind"),
    ("block_pairs", "by start block -> end block", "pair"),
)


def _counted(table, what):
    shown = len(table["rows"])
    return f"{table['groups']} {what}" + (f", top {shown}" if shown < table["groups"] else "")


def _arc_text(arc):
    """``cell/A -> cell/F`` as ``cell/A -> F`` (an arc through one cell)."""
    if arc["to"] is None:
        return arc["from"]
    cell, _, port = arc["from"].rpartition("/")
    to_cell, _, to_port = arc["to"].rpartition("/")
    if cell == to_cell:
        return f"{arc['from']} -> {to_port}"
    return f"{arc['from']} -> {arc['to']}"


def format_report(data):
    """The text form of an :func:`analyse` report."""
    out = []
    w = out.append
    timing = data.get("timing_s")
    w(f"SDF: {data['sdf']}" + (f" (design {data['design']})" if data.get("design") else ""))
    w(f"  {data['cells']} cells, {data['interconnects']} interconnects"
      + (f"; read in {timing['parse']:.1f} s, analysed in {timing['analyse']:.1f} s"
         if timing else ""))
    for c in data["clock_nets"][:4]:
        w(f"  clock net from {c['driver']}: {c['clock_pins']} clock pins, SDF delay to them "
          f"up to {c['max_delay_ns']:.3f} ns (not used: clocks are ideal)")
    for warning in data["warnings"]:
        w(f"  warning: {warning}")
    w(f"clock period {data['period_ns']:.3f} ns: {data['endpoints']} endpoints timed, "
      f"{data['unconstrained_endpoints']} reached by no timed path (constants, pads)")
    if data["worst_delay_ns"] is not None:
        w(f"worst path {data['worst_delay_ns']:.3f} ns (clock-to-Q, logic, routing, setup):"
          f" fmax {data['fmax_mhz']:.2f} MHz")
    nx = data.get("nextpnr")
    if nx:
        parts = []
        if nx.get("total_ns") is not None:
            parts.append(f"critical path {nx['total_ns']:.3f} ns")
        if nx.get("fmax_mhz") is not None:
            parts.append(f"fmax {nx['fmax_mhz']:.2f} MHz")
        w(f"nextpnr, clock {nx.get('clock')}: {', '.join(parts) or 'no figures found'}")
        if nx.get("total_ns") is not None and data["worst_delay_ns"] is not None:
            w(f"  worst path here - nextpnr's critical path: "
              f"{round(data['worst_delay_ns'] - nx['total_ns'], 4) + 0.0:+.4f} ns")
        if nx.get("end"):
            at = nx.get("this_at_end_ns")
            w(f"  at nextpnr's endpoint {nx['end']}: "
              + ("not timed here" if at is None else
                 f"{at:.3f} ns here ({round(at - nx['total_ns'], 4) + 0.0:+.4f} ns)"
                 if nx.get("total_ns") is not None else f"{at:.3f} ns here"))
    if data["wns_ns"] is None:
        w("no timed endpoint")
    else:
        w(f"WNS {data['wns_ns']:.3f} ns   TNS {data['tns_ns']:.3f} ns   "
          f"failing endpoints {data['failing_endpoints']} of {data['endpoints']}")
    groups = data["groups"]
    if data["failing_endpoints"]:
        for key, title, col in _GROUP_TITLES:
            table = groups[key]
            w("")
            w(f"Failing endpoints {title.format(depth=data['depth'])}: "
              + _counted(table, "groups"))
            w(f"  {'count':>6} {'worst':>8} {'TNS':>9}  {col}")
            for row in table["rows"]:
                name = row[col] + (f" ({row['type']})" if "type" in row else "")
                w(f"  {row['failing']:>6} {row['worst_slack_ns']:>8.3f} {row['tns_ns']:>9.3f}"
                  f"  {name}")
        table = groups["nets"]
        w("")
        w("Nets on the failing endpoints' worst paths, by the failing endpoints through them: "
          + _counted(table, "nets"))
        w(f"  {'count':>6} {'worst':>8} {'fanout':>6}  driver pin (driver cell type)")
        for row in table["rows"]:
            w(f"  {row['failing']:>6} {row['worst_slack_ns']:>8.3f} {row['fanout']:>6}  "
              f"{row['driver']} ({row['driver_type']})")
    for i, p in enumerate(data["paths"], 1):
        w("")
        w(f"Path {i}: slack {p['slack_ns']:.3f} ns = required {p['required_ns']:.3f} "
          f"(period - setup {p['setup_ns']:.3f}) - arrival {p['arrival_ns']:.3f}")
        w(f"  from {p['startpoint']}")
        w(f"  to   {p['endpoint']} ({p['endpoint_type']}, {p['endpoint_kind']})")
        w(f"  {'delay':>7} {'total':>7}  {'kind':<8}  arc")
        for arc in p["arcs"]:
            w(f"  {arc['delay_ns']:>7.3f} {arc['cumulative_ns']:>7.3f}  {arc['kind']:<8}  "
              f"{_arc_text(arc)}")
    return "\n".join(out) + "\n"


# --- command line ---------------------------------------------------------------------------

def _delay_to(graph, name):
    """Arrival + setup at endpoint ``name`` ("cell/port"), in ns; None if not timed."""
    cell, _, port = name.rpartition("/")
    try:
        pin = graph.pin(cell, port)
    except KeyError:
        return None
    setups = dict(graph.endpoints)
    a = graph.arrival[pin]
    if a is None or pin not in setups:
        return None
    return _ns(a + setups[pin])


class _Usage(Exception):
    pass


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        raise _Usage(message)


def _positive(name, text, kind=float, allow_zero=False):
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        what = "a positive number of ns" if kind is float else \
            ("a whole number >= 0" if allow_zero else "a whole number >= 1")
        raise _Usage(f"{name}: {text!r} is not {what}")
    return value


def main(argv=None):
    prog = "python -m viommu.boards.sta"
    parser = _ArgumentParser(
        prog=prog, description="Time every endpoint of a nextpnr SDF against a clock period.")
    parser.add_argument("sdf", metavar="FILE.sdf", help="SDF written by nextpnr --sdf")
    parser.add_argument("--period", required=True, metavar="NS", help="clock period in ns")
    parser.add_argument("--paths", default="5", metavar="N",
                        help="worst paths to print in full (default 5)")
    parser.add_argument("--json", metavar="OUT", help="also write the report as JSON ('-': "
                        "to stdout, instead of the text)")
    parser.add_argument("--depth", default="3", metavar="K",
                        help="hierarchy levels of a block name (default 3)")
    parser.add_argument("--top", default="20", metavar="N",
                        help="rows of each grouping table (default 20)")
    parser.add_argument("--nextpnr", metavar="REPORT",
                        help="nextpnr's report.json or log: print its critical path beside ours")
    try:
        args = parser.parse_args(argv)
        period = _positive("--period", args.period)
        paths = _positive("--paths", args.paths, int, allow_zero=True)
        depth = _positive("--depth", args.depth, int)
        top = _positive("--top", args.top, int)
    except _Usage as e:
        print(f"sta: error: {e}", file=sys.stderr)
        return 2
    try:
        t0 = time.perf_counter()
        sdf = read_sdf(args.sdf)
        t1 = time.perf_counter()
        graph = TimingGraph(sdf)
        data = analyse(graph, period, depth=depth, paths=paths, top=top)
        t2 = time.perf_counter()
        data["sdf"] = str(args.sdf)
        data["timing_s"] = {"parse": round(t1 - t0, 2), "analyse": round(t2 - t1, 2)}
        if args.nextpnr:
            nx = data["nextpnr"] = read_nextpnr_critical(args.nextpnr)
            if nx is None:
                data["warnings"].append(f"no critical path or fmax found in {args.nextpnr}")
            elif nx.get("end"):
                nx["this_at_end_ns"] = _delay_to(graph, nx["end"])
    except OSError as e:
        print(f"sta: error: cannot read {e.filename or args.sdf}: {e.strerror or e}",
              file=sys.stderr)
        return 2
    except (SDFError, UnicodeError, EOFError, gzip.BadGzipFile) as e:
        print(f"sta: error: {args.sdf}: {e}", file=sys.stderr)
        return 2
    except (ValueError, KeyError) as e:     # a malformed --nextpnr file
        print(f"sta: error: {args.nextpnr}: cannot read nextpnr's report: {e}", file=sys.stderr)
        return 2
    if args.json:
        text = json.dumps(data, indent=1) + "\n"
        if args.json == "-":
            sys.stdout.write(text)
            return 0
        try:
            Path(args.json).write_text(text)
        except OSError as e:
            print(f"sta: error: cannot write {args.json}: {e.strerror or e}", file=sys.stderr)
            return 2
    sys.stdout.write(format_report(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
