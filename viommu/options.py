"""Command-line options for the device's elaboration parameters (shared by every command)."""

import argparse

from viommu.rtl.core.layouts import ResvSubtype
from viommu.rtl.core.params import CoreParams, ResvRegion, DEFAULT_MSI_REGION


__all__ = ["add_core_options", "add_transport_options", "core_params_from_args",
           "parse_int"]


def parse_int(text):
    """An integer in decimal or with a 0x / 0o / 0b prefix (``_`` separators allowed)."""
    try:
        return int(text.replace("_", ""), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _pair(text):
    parts = text.split(":")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected START:END, not {text!r}")
    return parse_int(parts[0]), parse_int(parts[1])


def _endpoints(text):
    if "," in text:
        return tuple(parse_int(t) for t in text.split(",") if t)
    return parse_int(text)


def _resv(text):
    if text == "none":
        return None
    parts = text.split(":")
    if len(parts) != 3 or parts[2].lower() not in ("msi", "reserved"):
        raise argparse.ArgumentTypeError(
            f"expected START:END:msi or START:END:reserved (or 'none'), not {text!r}")
    subtype = ResvSubtype.MSI if parts[2].lower() == "msi" else ResvSubtype.RESERVED
    return ResvRegion(parse_int(parts[0]), parse_int(parts[1]), subtype)


def add_core_options(parser):
    """Add the core's parameters to an ``argparse`` parser, each with its help text."""
    g = parser.add_argument_group("device core parameters")
    g.add_argument("--entries", type=parse_int, default=None, metavar="N",
                   help="mapping table (CAM) entries, 1..1024 (default: 64; the "
                        "ice40_hx8k build target: 8)")
    g.add_argument("--endpoints", type=_endpoints, default=None, metavar="N|ID,ID,...",
                   help="endpoint IDs the device manages: a count N (IDs 0..N-1) or a "
                        "comma-separated list of IDs (default: 8; ice40_hx8k: 4)")
    g.add_argument("--endpoint-width", type=parse_int, default=16, metavar="BITS",
                   help="width of the endpoint ID on the lookup ports, 1..32 (default: 16)")
    g.add_argument("--lookup-ports", type=parse_int, default=1, metavar="N",
                   help="translation lookup ports, 1..8 (default: 1)")
    g.add_argument("--page-size-mask", type=parse_int, default=None, metavar="MASK",
                   help="page_size_mask; its lowest set bit is the granule "
                        "(default: 0xfffffffffffff000, every size from 4 KiB)")
    g.add_argument("--input-range", type=_pair, default=None, metavar="START:END",
                   help="accepted IOVA range, inclusive (default: the whole 64-bit space)")
    g.add_argument("--domain-range", type=_pair, default=None, metavar="START:END",
                   help="accepted domain IDs, inclusive (default: 0:0xffffffff)")
    g.add_argument("--resv", type=_resv, action="append", default=None,
                   metavar="START:END:msi|reserved",
                   help="a reserved region reported by PROBE for every endpoint; repeat for "
                        "several, 'none' for none (default: 0xfee00000:0xfeefffff:msi)")
    g.add_argument("--probe-size", type=parse_int, default=None, metavar="BYTES",
                   help="probe_size, a multiple of 8 (default: smallest that fits, >= 64)")
    g.add_argument("--mappings", type=parse_int, default=None, metavar="N",
                   help="mappings the device holds, in a mapping store with the CAM as its "
                        "cache: 1..1048576, or 0 for the CAM alone (default: 65536 for "
                        "`generate`, in external memory; 0 for the build targets)")
    g.add_argument("--store", choices=["bram", "axi"], default=None,
                   help="where the mapping store lives: block RAM, or external memory "
                        "through its own AXI4 master m_axi_store (default: axi for "
                        "`generate`, bram otherwise)")
    g.add_argument("--store-base", type=parse_int, default=None, metavar="ADDR",
                   help="with --store axi: the store region's base address, a multiple of "
                        "32; MAPs onto the region are refused (default: 0x100000000)")
    g.add_argument("--write-only-reads", action="store_true",
                   help="let reads through write-only mappings (v0.7 rule; default: deny)")
    return g


def _features(text):
    from viommu.rtl.transport.top_mmio import DEFAULT_FEATURES
    names = {f.name.lower(): f for f in DEFAULT_FEATURES}
    out = set()
    for item in text.split(","):
        item = item.strip().lower()
        if not item:
            continue
        if item not in names:
            raise argparse.ArgumentTypeError(
                f"unknown feature {item!r} (choose from {', '.join(sorted(names))})")
        out.add(names[item])
    return frozenset(out)


def add_transport_options(parser):
    """Options of the virtio-mmio device around the core (``--transport mmio``)."""
    from viommu.rtl.transport.top_mmio import DEFAULT_FEATURES
    g = parser.add_argument_group("transport parameters (--transport mmio)")
    g.add_argument("--queue-size", type=parse_int, default=256, metavar="N",
                   help="QueueNumMax of both queues, a power of two in 2..32768 "
                        "(default: 256)")
    g.add_argument("--axi-width", type=parse_int, default=64, choices=[64, 128],
                   metavar="BITS", help="data width of the m_axi DMA master, 64 or 128 "
                                        "(default: 64)")
    g.add_argument("--features", type=_features, default=DEFAULT_FEATURES, metavar="F,F,...",
                   help="features offered, comma-separated from "
                        f"{', '.join(sorted(f.name.lower() for f in DEFAULT_FEATURES))}; "
                        "version_1 and map_unmap are required (default: all of them)")
    g.add_argument("--bypass-init", type=parse_int, default=0, choices=[0, 1], metavar="0|1",
                   help="the `bypass` configuration byte after power-up: 1 lets unattached "
                        "endpoints through until a driver takes over (needs bypass_config; "
                        "default: 0)")
    g.add_argument("--fault-queue-depth", type=parse_int, default=8, metavar="N",
                   help="fault reports held while no eventq buffer is posted, 1..1024 "
                        "(default: 8)")
    g.add_argument("--mmio-base", type=parse_int, default=0x10000000, metavar="ADDR",
                   help="register base address written into the device-tree fragment "
                        "(default: 0x10000000)")
    g.add_argument("--irq", type=parse_int, default=32, metavar="N",
                   help="interrupt number written into the device-tree fragment "
                        "(default: 32)")
    return g


def core_params_from_args(args, defaults=None):
    """Build :class:`CoreParams` from parsed options; ``defaults`` (e.g. a build target's
    reduced configuration) fill the options not given. Raises ValueError/TypeError."""
    defaults = {"entries": 64, "endpoints": 8, **(defaults or {})}
    kwargs = dict(entries=defaults["entries"] if args.entries is None else args.entries,
                  endpoints=defaults["endpoints"] if args.endpoints is None else args.endpoints,
                  endpoint_width=args.endpoint_width, lookup_ports=args.lookup_ports,
                  write_only_reads=args.write_only_reads)
    if args.page_size_mask is not None:
        kwargs["page_size_mask"] = args.page_size_mask
    if args.input_range is not None:
        kwargs["input_range"] = args.input_range
    if args.domain_range is not None:
        kwargs["domain_range"] = args.domain_range
    if args.resv is not None:
        kwargs["resv_regions"] = tuple(r for r in args.resv if r is not None)
    else:
        kwargs["resv_regions"] = (DEFAULT_MSI_REGION,)
    if args.probe_size is not None:
        kwargs["probe_size"] = args.probe_size
    for name in ("mappings", "store", "store_base"):
        value = getattr(args, name, None)
        if value is None:
            value = defaults.get(name)
        if value is not None:
            kwargs[name] = value
    return CoreParams(**kwargs)
