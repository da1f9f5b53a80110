"""Command-line options for the device's elaboration parameters (shared by every command)."""

import argparse

from viommu.rtl.layouts import ResvSubtype
from viommu.rtl.params import CoreParams, ResvRegion, DEFAULT_MSI_REGION


__all__ = ["add_core_options", "core_params_from_args", "parse_int"]


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
    g.add_argument("--entries", type=parse_int, default=64, metavar="N",
                   help="mapping table (CAM) entries, 1..1024 (default: 64)")
    g.add_argument("--endpoints", type=_endpoints, default=8, metavar="N|ID,ID,...",
                   help="endpoint IDs the device manages: a count N (IDs 0..N-1) or a "
                        "comma-separated list of IDs (default: 8)")
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
    g.add_argument("--write-only-reads", action="store_true",
                   help="let reads through write-only mappings (v0.7 rule; default: deny)")
    return g


def core_params_from_args(args):
    """Build :class:`CoreParams` from parsed options; raises ValueError/TypeError."""
    kwargs = dict(entries=args.entries, endpoints=args.endpoints,
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
    return CoreParams(**kwargs)
