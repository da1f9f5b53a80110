#!/usr/bin/env python3
"""FuseSoC generator ``viommu_gen`` (registered by ``viommu.core`` at the repository root).

FuseSoC runs this script as ``python3 scripts/fusesoc_gen.py INPUT.yml`` in a fresh working
directory. INPUT.yml holds ``files_root``, ``parameters``, ``vlnv`` and ``gapi``. The script
maps ``parameters`` to options of ``viommu generate`` (``entries: 32`` -> ``--entries 32``),
runs it with the output directory set to the working directory, and writes a ``.core`` file
named ``vlnv`` that lists the Verilog (``virtio_iommu_mmio.v`` or, with ``transport: none``,
``virtio_iommu_core.v``) and, as ``user`` files, the ``.params.json`` summary and the
``.dtsi`` device-tree fragment.

Parameters (every one optional; the defaults are those of ``viommu generate``):

    transport          mmio (default: the complete virtio-mmio device, module
                       virtio_iommu_mmio) or none (the bare core, module virtio_iommu_core)
    entries            mapping-table entries, 1..1024
    endpoints          a count N (IDs 0..N-1) or a list of endpoint IDs
    endpoint_width, lookup_ports, page_size_mask, probe_size
    input_range        [START, END] or "START:END"
    domain_range       [START, END] or "START:END"
    resv               a list of reserved regions, each [START, END, msi|reserved] or
                       "START:END:msi"; an empty list (or "none") for none
    write_only_reads   true / false
  transport: mmio only:
    queue_size, axi_width, fault_queue_depth, mmio_base, irq
    features           a list of feature names or "F,F,..."
    bypass_init        0 / 1 (or false / true)

The script needs a Python that imports both ``viommu`` and ``yaml`` (the venv the project
and FuseSoC are installed in). FuseSoC starts it with the ``python3`` found on PATH; if that
one lacks them, the script re-runs itself with $VIOMMU_PYTHON, else the Python of the
``viommu`` command on PATH, else ``<repository>/.venv/bin/python``.

It can also be run by hand: ``python3 scripts/fusesoc_gen.py input.yml``.
"""

import importlib.util
import os
import shutil
import subprocess
import sys


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_REEXEC = "VIOMMU_FUSESOC_GEN_REEXEC"

# parameter -> (option of `viommu generate`, kind)
CORE_PARAMS = {
    "entries": ("--entries", "int"),
    "endpoints": ("--endpoints", "endpoints"),
    "endpoint_width": ("--endpoint-width", "int"),
    "lookup_ports": ("--lookup-ports", "int"),
    "page_size_mask": ("--page-size-mask", "int"),
    "input_range": ("--input-range", "range"),
    "domain_range": ("--domain-range", "range"),
    "resv": ("--resv", "resv"),
    "probe_size": ("--probe-size", "int"),
    "write_only_reads": ("--write-only-reads", "flag"),
}
MMIO_PARAMS = {
    "queue_size": ("--queue-size", "int"),
    "axi_width": ("--axi-width", "int"),
    "features": ("--features", "list"),
    "bypass_init": ("--bypass-init", "bit"),
    "fault_queue_depth": ("--fault-queue-depth", "int"),
    "mmio_base": ("--mmio-base", "int"),
    "irq": ("--irq", "int"),
}
MODULES = {"mmio": "virtio_iommu_mmio", "none": "virtio_iommu_core"}


class GenError(Exception):
    pass


def _usable(python=None):
    if python is None:
        try:
            return all(importlib.util.find_spec(m) is not None for m in ("viommu.cli", "yaml"))
        except ImportError:     # find_spec("viommu.cli") without a package viommu
            return False
    return subprocess.run([python, "-c", "import viommu.cli, yaml"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def _shebang_python(cmd):
    path = shutil.which(cmd)
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            line = f.readline().decode(errors="replace").strip()
    except OSError:
        return None
    if line.startswith("#!") and " " not in line[2:].strip():
        return line[2:].strip()
    return None


def _find_python():
    """Re-run this script under a Python that has viommu and PyYAML, unless this one has."""
    if _usable():
        return
    if os.environ.get(_REEXEC):
        raise GenError(f"{sys.executable} cannot import viommu and yaml")
    candidates = [os.environ.get("VIOMMU_PYTHON"), _shebang_python("viommu"),
                  os.path.join(REPO, ".venv", "bin", "python")]
    for python in candidates:
        if python and os.path.isfile(python) and _usable(python):
            env = dict(os.environ, **{_REEXEC: "1"})
            os.execve(python, [python, os.path.abspath(__file__), *sys.argv[1:]], env)
    raise GenError(f"no Python with viommu and PyYAML found ({sys.executable} lacks them; "
                   "activate the project's venv or set VIOMMU_PYTHON)")


def _int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise GenError(f"parameter {name}: expected an integer, not {value!r}")
    return str(value)


def _option_values(name, kind, value):
    """The value(s) of one option, as a list of strings (one per occurrence); None for a
    flag that is off; [] for a flag that is on."""
    if kind == "int":
        return [_int(name, value)]
    if kind == "flag":
        if not isinstance(value, bool):
            raise GenError(f"parameter {name}: expected true or false, not {value!r}")
        return [] if value else None
    if kind == "bit":
        if value in (0, 1):        # also False / True
            return [str(int(value))]
        raise GenError(f"parameter {name}: expected 0 or 1, not {value!r}")
    if kind == "endpoints":
        if isinstance(value, list):
            if not value:
                raise GenError(f"parameter {name}: empty list")
            # a trailing comma makes a one-ID list a list, not a count
            return [",".join(_int(name, v) for v in value) + ","]
        return [_int(name, value)]
    if kind == "range":
        if isinstance(value, list):
            if len(value) != 2:
                raise GenError(f"parameter {name}: expected [START, END], not {value!r}")
            return [":".join(_int(name, v) for v in value)]
        if isinstance(value, str):
            return [value]
        raise GenError(f"parameter {name}: expected [START, END] or 'START:END'")
    if kind == "list":
        if isinstance(value, list):
            return [",".join(str(v) for v in value)]
        if isinstance(value, str):
            return [value]
        raise GenError(f"parameter {name}: expected a list or 'A,B,...', not {value!r}")
    if kind == "resv":
        if value in ("none", [], None):
            return ["none"]
        if not isinstance(value, list):
            value = [value]
        out = []
        for region in value:
            if isinstance(region, list):
                if len(region) != 3:
                    raise GenError(f"parameter {name}: expected [START, END, msi|reserved], "
                                   f"not {region!r}")
                region = ":".join([_int(name, region[0]), _int(name, region[1]),
                                   str(region[2])])
            elif not isinstance(region, str):
                raise GenError(f"parameter {name}: bad region {region!r}")
            out.append(region)
        return out
    raise AssertionError(kind)


def generate_args(parameters):
    """The arguments of ``viommu generate`` (without ``-o``) for the generator parameters,
    and the Verilog module name."""
    params = {str(k).replace("-", "_"): v for k, v in (parameters or {}).items()}
    transport = params.pop("transport", "mmio")
    if transport not in MODULES:
        raise GenError(f"parameter transport: expected mmio or none, not {transport!r}")
    known = dict(CORE_PARAMS, **MMIO_PARAMS)
    args = ["--transport", transport]
    for name, value in params.items():
        if name not in known:
            raise GenError(f"unknown parameter {name!r} (known: transport, "
                           f"{', '.join(known)})")
        if name in MMIO_PARAMS and transport != "mmio":
            raise GenError(f"parameter {name} needs transport: mmio")
        option, kind = known[name]
        values = _option_values(name, kind, value)
        if values is None:
            continue
        if not values:
            args.append(option)
        for v in values:
            args.append(f"{option}={v}")
    return args, MODULES[transport]


def core_file_text(vlnv, module):
    dtsi = f"      - {module}.dtsi\n" if module == "virtio_iommu_mmio" else ""
    return f"""CAPI=2:
# Written by the viommu FuseSoC generator (scripts/fusesoc_gen.py); do not edit.
name: {vlnv}
description: virtio-iommu device, module {module} (generated by viommu generate)

filesets:
  rtl:
    files:
      - {module}.v
    file_type: verilogSource-2005
  info:
    files:
      - {module}.params.json
{dtsi}    file_type: user

targets:
  default:
    filesets: [rtl, info]
"""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: fusesoc_gen.py INPUT.yml  (run by FuseSoC)", file=sys.stderr)
        return 2
    try:
        _find_python()
        import yaml
        with open(argv[0]) as f:
            data = yaml.safe_load(f) or {}
        vlnv = data.get("vlnv")
        if not vlnv:
            raise GenError(f"{argv[0]}: no vlnv")
        args, module = generate_args(data.get("parameters"))
        cmd = [sys.executable, "-m", "viommu.cli", "generate", "-o", os.getcwd(), *args]
        print("[viommu_gen] viommu " + " ".join(cmd[3:]), file=sys.stderr, flush=True)
        rc = subprocess.run(cmd).returncode
        if rc != 0:
            raise GenError(f"viommu generate failed (exit status {rc})")
        if not os.path.isfile(f"{module}.v"):
            raise GenError(f"viommu generate wrote no {module}.v")
        name = vlnv.split(":")[2] if vlnv.count(":") >= 2 else "viommu"
        with open(f"{name}.core", "w") as f:
            f.write(core_file_text(vlnv, module))
        # Keep FuseSoC's library scan out of this directory (when the build root lies
        # inside a library, e.g. `build/` of this repository): the core above is handed to
        # FuseSoC directly and must not turn up a second time as a library core.
        open("FUSESOC_IGNORE", "w").close()
    except GenError as e:
        print(f"viommu_gen: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
