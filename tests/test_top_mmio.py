# amaranth: UnusedElaboratable=no
"""End-to-end tests of the complete device: the generated ``virtio_iommu_mmio`` Verilog
under cocotb (tests/tb_top_mmio.py), on Icarus and on Verilator.

Each configuration is converted to Verilog once, built once per simulator (cached under
``build/cocotb`` by a hash of the Verilog) and runs the bench's tests: the Linux driver
flow, fault reports and drops, randomized request sequences (``VIOMMU_RANDOM_SCALE``
scales their number, ``VIOMMU_TB_SEED`` changes the seed), bad rings and resets.
"""

import json

import pytest

from viommu.rtl.top_mmio import VirtioIOMMUMMIO
from viommu.sim.cocotb_run import run_cocotb


SMALL = {"entries": 16, "endpoints": 4}

CONFIGS = {
    # name: (top kwargs, bench config)
    "plain": (dict(queue_size=64), dict(rq_num=64, eq_num=8)),
    "indirect-eventidx": (dict(queue_size=64), dict(rq_num=32, eq_num=4, indirect=True,
                                                     event_idx=True)),
    "wrap": (dict(queue_size=64, _index_base=65500), dict(rq_num=16, eq_num=4,
                                                         event_idx=True, index_base=65500,
                                                         random_requests=200)),
    "axi128": (dict(queue_size=64, axi_width=16), dict(rq_num=64, eq_num=8, indirect=True)),
}


def _run(config, simulator, testcase=None, core=SMALL):
    top_kw, tb = CONFIGS[config]
    top = VirtioIOMMUMMIO(**top_kw, **core)
    env = {"VIOMMU_TB": json.dumps(dict(tb, core=core,
                                        fault_queue_depth=top.fault_queue_depth))}
    return run_cocotb(top, "virtio_iommu_mmio", "tb_top_mmio", simulator=simulator,
                      testcase=testcase, env=env)


@pytest.mark.parametrize("config", ["plain", "indirect-eventidx", "wrap", "axi128"])
def test_verilator(config):
    _run(config, "verilator")


@pytest.mark.parametrize("config", ["plain"])
def test_icarus(config):
    _run(config, "icarus")
