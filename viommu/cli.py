"""The ``viommu`` command: generate Verilog, build, benchmark.

    viommu generate -o DIR     Verilog of the device core (+ its parameters)
    viommu build               generate + synthesize, place and route on the default FPGA,
                               print the resource / timing report (the main job)
    viommu bench [--json]      cycle counts (simulation) and LUT/FF/fmax (synthesis)

Every command takes the core's parameters (``viommu generate --help`` lists them). A bad
value is reported in one line with exit status 2; a tool failure in one line with the log
path and exit status 1; never with a traceback.
"""

import argparse
import json
import os
import sys
import time

from viommu.options import add_core_options, core_params_from_args, parse_int


__all__ = ["main"]

DEFAULT_PART = {"device": "LFE5UM5G-45F", "package": "CABGA381", "speed": 8}


class CliError(Exception):
    """A failure to report in one line (exit status 1)."""


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def _params(parser, args):
    try:
        return core_params_from_args(args)
    except (ValueError, TypeError) as e:
        parser.error(str(e))


def _core_verilog(params, name):
    from amaranth.back import verilog
    from viommu.rtl.core import Core
    from viommu.rtl.util import component_ports
    core = Core(params=params)
    return core, verilog.convert(core, name=name, ports=component_ports(core))


# --- generate ------------------------------------------------------------------------------

def cmd_generate(parser, args):
    params = _params(parser, args)
    os.makedirs(args.output, exist_ok=True)
    name = "virtio_iommu_core"
    t0 = time.monotonic()
    _log(f"[generate] elaborating {params} ...")
    _, text = _core_verilog(params, name)
    path = os.path.join(args.output, f"{name}.v")
    with open(path, "w") as f:
        f.write(text)
    with open(os.path.join(args.output, f"{name}.params.json"), "w") as f:
        json.dump(_params_dict(params), f, indent=2)
    _log(f"[generate] wrote {path} ({len(text) // 1024} KiB) in {time.monotonic() - t0:.1f} s")
    return 0


def _params_dict(params):
    return {
        "entries": params.entries, "endpoint_ids": list(params.endpoint_ids),
        "endpoint_width": params.endpoint_width, "lookup_ports": params.lookup_ports,
        "page_size_mask": hex(params.page_size_mask),
        "input_range": [hex(v) for v in params.input_range],
        "domain_range": list(params.domain_range), "probe_size": params.probe_size,
        "write_only_reads": params.write_only_reads,
        "resv_regions": {str(ep): [[hex(r.start), hex(r.end), r.subtype.name] for r in rs]
                         for ep, rs in params.resv_regions.items()},
    }


# --- build ---------------------------------------------------------------------------------

def _synth_core(params, *, freq, workdir, name="virtio_iommu_core"):
    """Place and route the core inside :class:`~viommu.boards.harness.RegisteredPorts`
    (so that paths from its inputs are timed); the harness's own flip-flops are taken
    out of the FF count."""
    from viommu.boards.synth import synthesize_ooc, SynthError
    from viommu.boards.harness import RegisteredPorts
    from viommu.rtl.core import Core
    from viommu.rtl.util import component_ports
    top = RegisteredPorts(Core(params=params))
    try:
        # abc9 (Yosys 0.70) crashes on the core, and nextpnr's router1 does not converge
        # in reasonable time on it: go straight to the classic mapper and router2.
        report = synthesize_ooc(top, name=name, ports=component_ports(top),
                                freq_mhz=freq, workdir=workdir, log=_log, mapper="abc",
                                nextpnr_args=("--router", "router2"), **DEFAULT_PART)
    except SynthError as e:
        raise CliError(str(e)) from None
    report.harness_ffs = top.harness_ffs
    return report


def _core_ffs(report):
    """Flip-flops of the core alone (the harness registers every port bit)."""
    return report.ffs - getattr(report, "harness_ffs", 0)


def cmd_build(parser, args):
    params = _params(parser, args)
    if args.freq <= 0:
        parser.error(f"--freq must be positive, not {args.freq}")
    t0 = time.monotonic()
    workdir = os.path.join(args.build_dir, "core")
    _log(f"[build] device core {params} on {DEFAULT_PART['device']}-"
         f"{DEFAULT_PART['speed']} at {args.freq} MHz (out of context)")
    report = _synth_core(params, freq=args.freq, workdir=workdir)
    print(report.format_table())
    print(f"(FF includes {report.harness_ffs} harness flip-flops that register every port "
          f"bit so that paths from the ports are timed; the core alone has "
          f"{_core_ffs(report)} FF)")
    if args.json:
        d = report.to_dict()
        d.update(harness_ffs=report.harness_ffs, core_ffs=_core_ffs(report))
        with open(args.json, "w") as f:
            json.dump(d, f, indent=2)
        _log(f"[build] report written to {args.json}")
    _log(f"[build] done in {time.monotonic() - t0:.0f} s; files in {workdir}")
    if report.fmax_mhz < args.freq:
        msg = (f"timing not met: fmax {report.fmax_mhz:.1f} MHz < {args.freq} MHz "
               f"(critical path above)")
        if not args.allow_timing_fail:
            raise CliError(msg + "; pass --allow-timing-fail to accept")
        _log("[build] warning: " + msg)
    return 0


# --- bench ---------------------------------------------------------------------------------

def cmd_bench(parser, args):
    from viommu.rtl.params import CoreParams
    from viommu.sim.perf import measure_lookups, measure_map_unmap
    base = _params(parser, args)
    try:
        sizes = [parse_int(s) for s in args.sizes.split(",") if s]
    except argparse.ArgumentTypeError as e:
        parser.error(f"--sizes: {e}")
    records = []

    def record(bench, metric, value, unit, config):
        records.append({"bench": bench, "metric": metric, "value": value, "unit": unit,
                        "config": config})
        if not args.json or args.json != "-":
            print(f"{bench:<10} {metric:<28} {value:>10} {unit:<14} {config}", flush=True)

    def with_entries(n):
        return CoreParams(entries=n, endpoints=base.endpoint_ids,
                          endpoint_width=base.endpoint_width, lookup_ports=base.lookup_ports,
                          page_size_mask=base.page_size_mask, input_range=base.input_range,
                          domain_range=base.domain_range, resv_regions=base.resv_regions,
                          probe_size=base.probe_size, write_only_reads=base.write_only_reads)

    cfg = f"entries={base.entries},ports={base.lookup_ports}"
    _log("[bench] lookups ...")
    for r in measure_lookups(base):
        record("lookup", f"lookups_per_cycle[port{r['port']}]", round(r["lookups_per_cycle"], 3),
               "lookups/cycle", cfg)
        record("lookup", f"latency[port{r['port']}]", r["latency"], "cycles", cfg)
    for n in sizes:
        _log(f"[bench] MAP/UNMAP with {n} entries ...")
        r = measure_map_unmap(with_entries(n))
        c = f"entries={n}"
        record("request", "cycles_per_map", round(r["map_cycles"], 2), "cycles", c)
        record("request", "cycles_per_unmap", round(r["unmap_cycles"], 2), "cycles", c)
        record("request", "map_first_beat_to_status", r["map_latency"], "cycles", c)
    if not args.no_synth:
        for n in sizes:
            _log(f"[bench] synthesizing the core with {n} entries ...")
            rep = _synth_core(with_entries(n), freq=args.freq,
                              workdir=os.path.join(args.build_dir, f"bench-{n}"))
            c = f"entries={n},{DEFAULT_PART['device']}-{DEFAULT_PART['speed']}"
            record("synth", "luts", rep.luts, "LUT4", c)
            record("synth", "ffs", _core_ffs(rep), "FF", c)
            record("synth", "carry", rep.carry, "CCU2C", c)
            record("synth", "fmax", round(rep.fmax_mhz, 1), "MHz", c)
    if args.json:
        text = json.dumps(records, indent=2)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text)
    return 0


# --- entry point ---------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(
        prog="viommu", description="A hardware virtio-iommu device (virtio 1.2).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("generate", help="write the Verilog of the device",
                       description="Write the Verilog of the device core.")
    p.add_argument("-o", "--output", default="build/verilog", metavar="DIR",
                   help="output directory (default: build/verilog)")
    p.add_argument("--transport", choices=["none"], default="none",
                   help="bus transport around the core: 'none' = the bare core "
                        "(module virtio_iommu_core)")
    add_core_options(p)
    p.set_defaults(func=cmd_generate, subparser=p)

    p = sub.add_parser("build", help="synthesize, place and route; print the report",
                       description="Generate the Verilog, synthesize, place and route it "
                                   "for the default part (LFE5UM5G-45F speed 8) and print "
                                   "the resource and timing report.")
    p.add_argument("--freq", type=float, default=100.0, metavar="MHZ",
                   help="clock constraint in MHz (default: 100)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--build-dir", default="build", metavar="DIR",
                   help="where tool files go (default: build)")
    p.add_argument("--allow-timing-fail", action="store_true",
                   help="exit 0 even when fmax is below --freq")
    add_core_options(p)
    p.set_defaults(func=cmd_build, subparser=p)

    p = sub.add_parser("bench", help="measure cycles, resources and fmax",
                       description="Measure lookup throughput and latency, cycles per "
                                   "MAP/UNMAP versus table size (simulation) and LUT/FF "
                                   "counts and fmax versus table size (synthesis).")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="emit a JSON list of {bench, metric, value, unit, config} "
                        "(to FILE, or stdout)")
    p.add_argument("--sizes", default="16,32,64,128", metavar="N,N,...",
                   help="table sizes to measure (default: 16,32,64,128)")
    p.add_argument("--no-synth", action="store_true", help="skip the synthesis figures")
    p.add_argument("--freq", type=float, default=100.0, metavar="MHZ",
                   help="clock constraint for synthesis (default: 100)")
    p.add_argument("--build-dir", default="build", metavar="DIR",
                   help="where tool files go (default: build)")
    add_core_options(p)
    p.set_defaults(func=cmd_bench, subparser=p)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args.subparser, args)
    except CliError as e:
        print(f"viommu {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"viommu {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
