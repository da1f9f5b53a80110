"""Static timing analysis of nextpnr SDF files (viommu.boards.sta), on small hand-made SDFs.

The main design, in ps (nextpnr's TIMESCALE), clocked by a DCCA whose 777 ps to the clock
pins must be ignored (ideal clock):

    A  soc.dev.a$r (FF)  CLK->Q 420 (max of rise/fall triples)
    B  soc.dev.b   (FF)  CLK->Q 500
    R  soc.eng.ram (DP16KD) CLKB->DOB0 1400, CLKA->DOB0 900; DIA0 setup 250 (to CLKA)
    C  top.x[1]   (FF)  DI setup 70 (hold 500), CE setup 30   (escaped: top\\.x\\[1\\])
    D  soc.eng.d   (FF)  M setup 40, LSR setup 150 (LSR driven by a constant: untimed)
    L1 lut$1: A->F 200, B->F 150     L2 soc.eng.l2: A->F 100, B->F 120
    L3 soc.eng.l3: A->F 90, B->F 110 L4 soc.eng.l4: A->F 80; L3/F -> L4/A, L4/F -> L3/A loop

    A/Q -300-> L1/A, B/Q -100-> L1/B     L1/F = max(420+300+200, 500+100+150) = 920
    L1/F -250-> C/DI                     C/DI 1170 + 70 = 1240
    L1/F -50-> L2/A, R/DOB0 -60-> L2/B   L2/F = max(970+100, 1460+120) = 1580
    L2/F -10-> C/CE                      C/CE 1590 + 30 = 1620
    L2/F -200-> R/DIA0                   R/DIA0 1780 + 250 = 2030
    A/Q -100-> L3/B -> L3/F 630 -70-> L4/A 700 -> L4/F 780 -20-> L3/A (loop, cut there)
    L4/F -300-> D/M                      D/M 1080 + 40 = 1120

At 1.5 ns: C/CE fails by 0.12, R/DIA0 by 0.53; C/DI and D/M pass.
"""

import json

import pytest

from viommu.boards import sta


def cell(celltype, instance, iopaths=(), checks=()):
    lines = ["  (CELL", f'    (CELLTYPE "{celltype}")', f"    (INSTANCE {instance})"]
    if iopaths:
        lines += ["    (DELAY", "      (ABSOLUTE"]
        lines += [f"        (IOPATH {a} {b} {d})" for a, b, d in iopaths]
        lines += ["      )", "    )"]
    if checks:
        lines += ["    (TIMINGCHECK"]
        lines += [f"      {c}" for c in checks]
        lines += ["    )"]
    lines += ["  )"]
    return "\n".join(lines)


def sdf_text(interconnects, cells, divider="/", timescale="1ps", design="top"):
    head = ["(DELAYFILE", '  (SDFVERSION "3.0")', f'  (DESIGN "{design}")',
            '  (VENDOR "nextpnr")', '  (PROGRAM "nextpnr")', f"  (DIVIDER {divider})",
            f"  (TIMESCALE {timescale})",
            "  (CELL", f'    (CELLTYPE "{design}")', "    (INSTANCE )", "    (DELAY",
            "      (ABSOLUTE"]
    head += [f"        (INTERCONNECT {a} {b} {d})" for a, b, d in interconnects]
    head += ["      )", "    )", "  )"]
    return "\n".join(head + list(cells) + [")"]) + "\n"


def sh(port, clock, setup, kind="SETUPHOLD", clock_edge="posedge", hold="0:0:0"):
    """Both data edges, as nextpnr writes them (the hold value must not count)."""
    if kind == "SETUP":
        return [f"(SETUP (posedge {port}) ({clock_edge} {clock}) ({setup}))"]
    return [f"(SETUPHOLD ({edge} {port}) ({clock_edge} {clock}) ({setup}) ({hold}))"
            for edge in ("posedge", "negedge")]


def d(ps):
    return f"({ps}:{ps}:{ps}) ({ps}:{ps}:{ps})"


A, B, C, D = r"soc.dev.a\$r", "soc.dev.b", r"top\.x\[1\]", "soc.eng.d"
R, L1, L2, L3, L4 = "soc.eng.ram", r"lut\$1", "soc.eng.l2", "soc.eng.l3", "soc.eng.l4"
GND, DCC = r"\$PACKER_GND", r"\$gbuf\$clk"

MAIN_CELLS = [
    cell("DCCA", DCC, [("CLKI", "CLKO", d(0))]),
    cell("TRELLIS_FF", A, [("CLK", "Q", "(300:350:400) (300:380:420)")]),
    cell("TRELLIS_FF", B, [("CLK", "Q", d(500))]),
    cell("DP16KD", R, [("CLKB", "DOB0", d(1400)), ("CLKA", "DOB0", d(900))],
         sh("DIA0", "CLKA", "200:230:250")),
    cell("TRELLIS_FF", C, [], sh("DI", "CLK", "50:60:70", hold="400:450:500")
         + sh("CE", "CLK", "30", "SETUP")),
    cell("TRELLIS_FF", D, [], sh("M", "CLK", "0:20:40") + sh("LSR", "CLK", "150:150:150")),
    cell("TRELLIS_COMB", GND),
    cell("TRELLIS_COMB", L1, [("A", "F", d(200)), ("B", "F", "(150:150:150) (100:120:140)")]),
    cell("TRELLIS_COMB", L2, [("A", "F", d(100)), ("B", "F", d(120))]),
    cell("TRELLIS_COMB", L3, [("A", "F", d(90)), ("B", "F", d(110))]),
    cell("TRELLIS_COMB", L4, [("A", "F", d(80))]),
]
MAIN_NETS = [
    (f"{A}/Q", f"{L1}/A", "(100:150:200) (100:250:300)"),
    (f"{B}/Q", f"{L1}/B", d(100)),
    (f"{L1}/F", f"{C}/DI", d(250)),
    (f"{L1}/F", f"{L2}/A", d(50)),
    (f"{R}/DOB0", f"{L2}/B", d(60)),
    (f"{L2}/F", f"{C}/CE", d(10)),
    (f"{L2}/F", f"{R}/DIA0", d(200)),
    (f"{A}/Q", f"{L3}/B", d(100)),
    (f"{L3}/F", f"{L4}/A", d(70)),
    (f"{L4}/F", f"{L3}/A", d(20)),
    (f"{L4}/F", f"{D}/M", d(300)),
    (f"{GND}/F", f"{D}/LSR", d(100)),
] + [(f"{DCC}/CLKO", f"{x}/{p}", d(777))
     for x, p in ((A, "CLK"), (B, "CLK"), (C, "CLK"), (D, "CLK"), (R, "CLKA"), (R, "CLKB"))]
MAIN = sdf_text(MAIN_NETS, MAIN_CELLS)


@pytest.fixture(scope="module")
def graph():
    return sta.TimingGraph(sta.parse_sdf(MAIN))


@pytest.fixture(scope="module")
def report(graph):
    return sta.analyse(graph, 1.5, paths=3)


def test_parse_unescapes_names_and_takes_max_delays():
    sdf = sta.parse_sdf(MAIN)
    assert sdf.divider == "/" and sdf.timescale_ps == 1.0 and sdf.design == "top"
    assert sdf.celltypes["top.x[1]"] == "TRELLIS_FF"
    assert sdf.celltypes["soc.dev.a$r"] == "TRELLIS_FF"
    assert sdf.celltypes["$gbuf$clk"] == "DCCA"
    assert ("soc.dev.a$r", "CLK", "Q", 420.0) in sdf.iopaths          # max of both triples
    assert ("lut$1", "B", "F", 150.0) in sdf.iopaths
    assert ("soc.dev.a$r", "Q", "lut$1", "A", 300.0) in sdf.interconnects
    # setup = max of the first (setup) triple, one entry per data edge
    assert sdf.checks.count(("top.x[1]", "DI", "CLK", "posedge", 70.0)) == 2
    assert ("top.x[1]", "CE", "CLK", "posedge", 30.0) in sdf.checks


def test_split_pin_honours_escapes():
    assert sta._split_pin(r"a\/b/C", "/") == ("a/b", "C")
    assert sta._split_pin(r"a/b\/C", "/") == ("a", "b/C")         # the last '/' is escaped
    assert sta._split_pin(r"x\\/Q", "/") == ("x\\", "Q")          # escaped backslash
    assert sta._split_pin(r"soc\.a\[3\].Q", ".") == ("soc.a[3]", "Q")
    assert sta._split_pin(r"a\$b\:c/D", "/") == ("a$b:c", "D")
    assert sta._split_pin("clk", "/") == ("", "clk")               # a top-level port


def test_arrival_times(graph):
    arr = graph.arrival_ns
    assert arr("soc.dev.a$r", "Q") == pytest.approx(0.42, abs=1e-12)
    assert arr("lut$1", "A") == pytest.approx(0.72, abs=1e-12)
    assert arr("lut$1", "F") == pytest.approx(0.92, abs=1e-12)     # via A, not B (0.75)
    assert arr("top.x[1]", "DI") == pytest.approx(1.17, abs=1e-12)
    assert arr("soc.eng.l2", "F") == pytest.approx(1.58, abs=1e-12)  # via the RAM output
    assert arr("soc.eng.ram", "DIA0") == pytest.approx(1.78, abs=1e-12)
    assert arr("soc.eng.d", "M") == pytest.approx(1.08, abs=1e-12)
    assert arr("soc.eng.d", "LSR") is None                           # constant driver
    # clock pins get no arrival from the 777 ps clock net: it is not in the graph
    assert arr("soc.dev.a$r", "CLK") is None
    # exact in ps (integer sums)
    assert graph.arrival[graph.pin("soc.eng.ram", "DIA0")] == 1780.0


def test_combinational_loop_is_cut_with_a_warning(graph):
    assert len(graph.cut_arcs) == 1
    e = graph.cut_arcs[0]
    assert (graph.pin_name(graph.e_src[e]), graph.pin_name(graph.e_dst[e])) == \
        ("soc.eng.l3/A", "soc.eng.l3/F")
    assert graph.arrival_ns("soc.eng.l3", "F") == pytest.approx(0.63, abs=1e-12)
    assert graph.arrival_ns("soc.eng.l4", "F") == pytest.approx(0.78, abs=1e-12)
    assert graph.arrival_ns("soc.eng.l3", "A") == pytest.approx(0.80, abs=1e-12)
    assert any("combinational loops: 1 arcs cut" in w for w in graph.warnings)


def test_wns_tns_and_counts(report):
    assert report["endpoints"] == 4
    assert report["unconstrained_endpoints"] == 1
    assert report["failing_endpoints"] == 2
    assert report["wns_ns"] == pytest.approx(-0.53, abs=1e-9)
    assert report["tns_ns"] == pytest.approx(-0.65, abs=1e-9)
    assert report["worst_delay_ns"] == pytest.approx(2.03, abs=1e-9)
    assert report["fmax_mhz"] == pytest.approx(1000 / 2.03, abs=1e-3)
    assert report["clock_nets"] == [{"driver": "$gbuf$clk/CLKO", "clock_pins": 6,
                                     "max_delay_ns": 0.777}]


def test_zero_slack_is_not_failing(graph):
    r = sta.analyse(graph, 1.24)            # C/DI: 1.17 + 0.07 setup, exactly the period
    assert [(p["endpoint"], p["slack_ns"]) for p in r["paths"]][2] == ("top.x[1]/DI", 0.0)
    assert r["failing_endpoints"] == 2
    assert r["tns_ns"] == pytest.approx(-0.38 - 0.79, abs=1e-9)


def test_passing_design_has_positive_wns(graph):
    r = sta.analyse(graph, 2.5)
    assert r["failing_endpoints"] == 0 and r["tns_ns"] == 0.0
    assert r["wns_ns"] == pytest.approx(0.47, abs=1e-9)
    assert all(t["rows"] == [] for t in r["groups"].values())


def rows(report, table, key):
    return [(row[key], row["failing"], row["worst_slack_ns"], row["tns_ns"])
            for row in report["groups"][table]["rows"]]


def test_groupings(report):
    assert rows(report, "end_block", "block") == [("soc.eng", 1, -0.53, -0.53),
                                                  ("top", 1, -0.12, -0.12)]
    assert rows(report, "start_block", "block") == [("soc.eng", 2, -0.53, -0.65)]
    assert rows(report, "start_register", "cell") == [("soc.eng.ram", 2, -0.53, -0.65)]
    assert report["groups"]["start_register"]["rows"][0]["type"] == "DP16KD"
    assert rows(report, "pin_kind", "kind") == [("RAM data", 1, -0.53, -0.53),
                                                ("CE", 1, -0.12, -0.12)]
    assert rows(report, "block_pairs", "pair") == [("soc.eng -> soc.eng", 1, -0.53, -0.53),
                                                   ("soc.eng -> top", 1, -0.12, -0.12)]
    nets = report["groups"]["nets"]["rows"]
    assert [(n["driver"], n["failing"], n["fanout"], n["driver_type"]) for n in nets] == [
        ("soc.eng.l2/F", 2, 2, "TRELLIS_COMB"), ("soc.eng.ram/DOB0", 2, 1, "DP16KD")]


def test_grouping_depth_and_top(graph):
    r = sta.analyse(graph, 1.5, depth=1, top=1)
    assert rows(r, "end_block", "block") == [("soc", 1, -0.53, -0.53)]
    assert r["groups"]["end_block"]["groups"] == 2            # one more not shown


def test_worst_path_reconstruction(report, graph):
    p = report["paths"][0]
    assert (p["endpoint"], p["startpoint"], p["start_register"]) == \
        ("soc.eng.ram/DIA0", "soc.eng.ram/DOB0", "soc.eng.ram")
    assert p["endpoint_kind"] == "RAM data"
    assert (p["slack_ns"], p["arrival_ns"], p["setup_ns"], p["required_ns"]) == \
        (-0.53, 1.78, 0.25, 1.25)
    assert [(a["kind"], a["from"], a["to"], a["delay_ns"], a["cumulative_ns"])
            for a in p["arcs"]] == [
        ("clk-to-q", "soc.eng.ram/CLKB", "soc.eng.ram/DOB0", 1.4, 1.4),
        ("net", "soc.eng.ram/DOB0", "soc.eng.l2/B", 0.06, 1.46),
        ("cell", "soc.eng.l2/B", "soc.eng.l2/F", 0.12, 1.58),
        ("net", "soc.eng.l2/F", "soc.eng.ram/DIA0", 0.2, 1.78),
        ("setup", "soc.eng.ram/DIA0", None, 0.25, 2.03),
    ]
    assert [q["endpoint"] for q in report["paths"]] == [
        "soc.eng.ram/DIA0", "top.x[1]/CE", "top.x[1]/DI"]        # by slack
    # the path through the cut loop goes round it once at most
    path = graph.worst_path(graph.pin("soc.eng.d", "M"), 40.0)
    assert [(a.kind, a.to_pin) for a in path] == [
        ("clk-to-q", "soc.dev.a$r/Q"), ("net", "soc.eng.l3/B"), ("cell", "soc.eng.l3/F"),
        ("net", "soc.eng.l4/A"), ("cell", "soc.eng.l4/F"), ("net", "soc.eng.d/M"),
        ("setup", None)]
    assert path[-1].cumulative == pytest.approx(1.12, abs=1e-12)


def test_block_of_and_pin_kind():
    assert sta.block_of("soc.device.engine.logic.walker.w_TRELLIS_FF_Q") == "soc.device.engine"
    assert sta.block_of("soc.device.engine.logic.x", 4) == "soc.device.engine.logic"
    assert sta.block_of("soc.a_FF") == "soc"
    assert sta.block_of("lone_FF") == "(top)"
    assert sta.block_of("$abc$12$auto$blifparse.cc:396$5") == "(top)"
    assert sta.block_of("soc.dev.$procdff$3") == "soc.dev"
    assert sta.block_of("$flatten\\soc.\\dev.$procdff$1") == "soc.dev"
    assert sta.block_of("soc.core.endpoints$71[0].attached_FF", 4) == "soc.core.endpoints$71[0]"
    assert [sta.pin_kind("TRELLIS_FF", p) for p in ("DI", "M", "CE", "LSR")] == \
        ["D/DI", "M", "CE", "LSR"]
    assert [sta.pin_kind("DP16KD", p) for p in ("DIA3", "ADB12", "CEB", "OCEA", "WEA")] == \
        ["RAM data", "RAM address", "RAM CE", "RAM CE", "RAM WE"]
    assert [sta.pin_kind("TRELLIS_COMB", p) for p in ("WRE", "WAD2", "WD")] == \
        ["LUT-RAM WE", "LUT-RAM address", "LUT-RAM data"]
    assert sta.pin_kind("MULT18X18D", "A17") == "DSP A"


def test_divider_dot_timescale_and_chunking(monkeypatch):
    # cvc style: '.' divider, escaped dots in names; 100 ps units; a quoted string with a
    # newline that straddles the tokenizer's pieces
    text = sdf_text(
        [(r"soc\.a.Q", r"soc\.b.DI", "(3:4:5) (5)")],
        [cell("TRELLIS_FF", r"soc\.a", [("CLK", "Q", "(2.5) (2)")]),
         cell("TRELLIS_FF", r"soc\.b", [], sh("DI", "CLK", "1"))],
        divider=".", timescale="100 ps", design="long\nname")
    monkeypatch.setattr(sta, "_CHUNK", 7)
    g = sta.TimingGraph(sta.parse_sdf(text))
    assert g.sdf.design == "long\nname"
    assert g.arrival_ns("soc.b", "DI") == pytest.approx(0.75, abs=1e-12)
    r = sta.analyse(g, 0.8)
    assert r["worst_delay_ns"] == pytest.approx(0.85) and r["failing_endpoints"] == 1
    # the main SDF in 7-character pieces gives the same result as in one
    small = sta.analyse(sta.TimingGraph(sta.parse_sdf(MAIN)), 1.5, paths=3)
    monkeypatch.setattr(sta, "_CHUNK", 1 << 22)
    whole = sta.analyse(sta.TimingGraph(sta.parse_sdf(MAIN)), 1.5, paths=3)
    assert small == whole


def test_negedge_and_second_clock_warn():
    text = sdf_text(
        [("ck1/O", "a/CLK", d(0)), ("ck2/O", "b/CLK", d(0)), ("a/Q", "b/DI", d(100))],
        [cell("TRELLIS_FF", "a", [("CLK", "Q", d(100))]),
         cell("TRELLIS_FF", "b", [], sh("DI", "CLK", "10", clock_edge="negedge"))])
    g = sta.TimingGraph(sta.parse_sdf(text))
    assert any("negedge" in w for w in g.warnings)
    assert any("2 nets drive clock pins" in w for w in g.warnings)
    assert g.arrival_ns("b", "DI") == pytest.approx(0.2)


@pytest.mark.parametrize("text, message", [
    ("", "not an SDF file"),
    ("hello world\n", "not an SDF file"),
    ("(DELAYFILE (DESIGN \"x\")\n", "unexpected end of file"),
    ("(DELAYFILE (DESIGN \"x\")))\n", "unbalanced parentheses"),
    ('(DELAYFILE (DESIGN "x)\n', "unterminated"),
])
def test_parse_errors(text, message):
    with pytest.raises(sta.SDFError, match=message):
        sta.parse_sdf(text)


def test_analyse_rejects_bad_period(graph):
    for bad in (0, -1.0, float("nan"), float("inf"), True):
        with pytest.raises(ValueError):
            sta.analyse(graph, bad)


def test_cli_text_and_json(tmp_path, capsys):
    path = tmp_path / "board.sdf"
    path.write_text(MAIN)
    out = tmp_path / "sta.json"
    assert sta.main([str(path), "--period", "1.5", "--paths", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "WNS -0.530 ns   TNS -0.650 ns   failing endpoints 2 of 4" in text
    assert "worst path 2.030 ns" in text and "fmax 492.61 MHz" in text
    assert "Path 1: slack -0.530 ns = required 1.250" in text
    assert "    0.120   1.580  cell      soc.eng.l2/B -> F" in text
    assert "Path 2" not in text
    data = json.loads(out.read_text())
    expected = sta.analyse(sta.TimingGraph(sta.parse_sdf(MAIN)), 1.5, paths=1)
    assert data["sdf"] == str(path)
    assert data["groups"] == json.loads(json.dumps(expected["groups"]))
    assert data["paths"] == json.loads(json.dumps(expected["paths"]))
    assert (data["wns_ns"], data["tns_ns"], data["failing_endpoints"]) == (-0.53, -0.65, 2)
    # '-' puts the JSON on stdout instead of the text
    assert sta.main([str(path), "--period", "1.5", "--json", "-", "--depth", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["depth"] == 1 and data["groups"]["end_block"]["rows"][0]["block"] == "soc"


def test_cli_compares_with_nextpnr(tmp_path, capsys):
    path = tmp_path / "board.sdf"
    path.write_text(MAIN)
    report = tmp_path / "report.json"
    report.write_text(json.dumps({
        "fmax": {"$glbnet$clk": {"achieved": 492.6108, "constraint": 666}},
        "critical_paths": [
            {"from": "posedge $glbnet$clk", "to": "posedge $glbnet$clk", "path": [
                {"type": "clk-to-q", "delay": 1.4,
                 "from": {"cell": "soc.eng.ram", "port": "CLKB"},
                 "to": {"cell": "soc.eng.ram", "port": "DOB0"}},
                {"type": "routing", "delay": 0.38,
                 "from": {"cell": "soc.eng.ram", "port": "DOB0"},
                 "to": {"cell": "soc.eng.ram", "port": "DIA0"}},
                {"type": "setup", "delay": 0.25,
                 "from": {"cell": "soc.eng.ram", "port": "DIA0"},
                 "to": {"cell": "soc.eng.ram", "port": "DIA0"}}]},
            {"from": "<async>", "to": "posedge $glbnet$clk", "path": [
                {"type": "source", "delay": 9.0, "from": {}, "to": {}}]}]}))
    assert sta.main([str(path), "--period", "1.5", "--paths", "0",
                     "--nextpnr", str(report)]) == 0
    text = capsys.readouterr().out
    assert "nextpnr, clock $glbnet$clk: critical path 2.030 ns, fmax 492.61 MHz" in text
    assert "worst path here - nextpnr's critical path: +0.0000 ns" in text
    assert "at nextpnr's endpoint soc.eng.ram/DIA0: 2.030 ns here (+0.0000 ns)" in text
    log = tmp_path / "nextpnr.log"
    log.write_text(
        "Info: Critical path report for clock 'clk' (posedge -> posedge):\n"
        "Info:       type curr  total name\n"
        "Info:   clk-to-q  1.40  1.40 Source soc.eng.ram.DOB0\n"
        "Info:    routing  0.38  1.78 Net x (1,1) -> (2,2)\n"
        "Info:                          Sink soc.eng.ram.DIA0\n"
        "Info:      setup  0.25  2.03 Source soc.eng.ram.DIA0\n"
        "Info: 1.65 ns logic, 0.38 ns routing\n\n"
        "Warning: Max frequency for clock 'clk': 492.61 MHz (FAIL at 666.00 MHz)\n")
    assert sta.read_nextpnr_critical(log) == {
        "clock": "clk", "total_ns": 2.03, "start": "soc.eng.ram/DOB0",
        "end": "soc.eng.ram/DIA0", "fmax_mhz": 492.61}


@pytest.mark.parametrize("args, message", [
    (["{missing}", "--period", "10"], "sta: error: cannot read {missing}: No such file"),
    (["{notsdf}", "--period", "10"], "not an SDF file"),
    (["{truncated}", "--period", "10"], "unexpected end of file"),
    (["{sdf}", "--period", "abc"], "sta: error: --period: 'abc' is not a positive number"),
    (["{sdf}", "--period", "0"], "--period: '0' is not a positive number"),
    (["{sdf}", "--period", "nan"], "--period: 'nan' is not a positive number"),
    (["{sdf}"], "required: --period"),
    (["{sdf}", "--period", "10", "--paths", "x"], "--paths: 'x' is not a whole number"),
    (["{sdf}", "--period", "10", "--depth", "0"], "--depth: '0' is not a whole number >= 1"),
    (["{sdf}", "--period", "10", "--json", "{tmp}/no/such/dir/x.json"], "cannot write"),
])
def test_cli_errors(tmp_path, capsys, args, message):
    files = {"missing": tmp_path / "missing.sdf", "notsdf": tmp_path / "board.lpf",
             "truncated": tmp_path / "cut.sdf", "sdf": tmp_path / "ok.sdf", "tmp": tmp_path}
    files["notsdf"].write_text("LOCATE COMP \"clk\" SITE \"P3\";\n")
    files["truncated"].write_text(MAIN[:len(MAIN) // 2])
    files["sdf"].write_text(MAIN)
    args = [a.format(**files) for a in args]
    message = message.format(**files)
    assert sta.main(args) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_module_entry_point(tmp_path):
    import subprocess
    import sys
    missing = tmp_path / "none.sdf"
    proc = subprocess.run([sys.executable, "-m", "viommu.boards.sta", str(missing),
                           "--period", "10"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == f"sta: error: cannot read {missing}: No such file or directory\n"
    assert proc.stdout == ""
