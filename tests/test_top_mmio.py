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

from viommu.rtl.transport.top_mmio import VirtioIOMMUMMIO
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


#: A small cache in front of a small store in external memory (``m_axi_store``).
STORE_AXI = {"entries": 4, "endpoints": 4, "mappings": 64, "store": "axi",
             "input_range": [0, 0xffffffff]}


def _run(config, simulator, testcase=None, core=SMALL):
    top_kw, tb = CONFIGS[config]
    core = {k: tuple(v) if isinstance(v, list) else v for k, v in core.items()}
    top = VirtioIOMMUMMIO(**top_kw, **core)
    env = {"VIOMMU_TB": json.dumps(dict(tb, core=core,
                                        fault_queue_depth=top.fault_queue_depth))}
    return run_cocotb(top, "virtio_iommu_mmio", "tb_top_mmio", simulator=simulator,
                      testcase=testcase, env=env)


@pytest.mark.parametrize("config", ["plain", "indirect-eventidx", "wrap", "axi128"])
def test_verilator(config):
    _run(config, "verilator")


@pytest.mark.parametrize("config", ["plain", "indirect-eventidx"])
def test_icarus(config):
    _run(config, "icarus")


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_store_in_external_memory(simulator):
    """The device with a mapping store behind ``m_axi_store`` (a RAM of its own): the
    driver flow, random requests and lookups (misses answered retry, presented again),
    fault reports, the registers and the store's region."""
    tests = ["linux_flow", "random_requests", "live_and_nomem_registers", "store_bus_error"]
    if simulator == "icarus":
        tests = ["live_and_nomem_registers"]
    for t in tests:
        _run("plain", simulator, testcase=t, core=STORE_AXI)


def test_fault_merger_several_ports():
    """Denials on several lookup ports in one cycle: the lowest port's is reported (one
    cycle later), the others are counted in ``drops``; allowed lookups report nothing."""
    from amaranth.sim import Simulator
    from viommu.rtl.transport.top_mmio import FaultMerger

    dut = FaultMerger(ports=3, endpoint_width=8)
    seen = []

    def resp(k, allowed, ep, iova):
        return dict(valid=1, allowed=allowed, reason=2, flags=0x101 + k, endpoint=ep,
                    iova=iova)

    async def tb(ctx):
        steps = [
            [resp(0, 0, 1, 0x1000), resp(1, 1, 2, 0x2000), resp(2, 0, 3, 0x3000)],
            [resp(0, 1, 1, 0), resp(1, 0, 5, 0x5000), resp(2, 1, 3, 0)],
            [None, None, None],
            [resp(0, 0, 7, 0x7000), resp(1, 0, 8, 0x8000), resp(2, 0, 9, 0x9000)],
            [None, None, None],
        ]
        for step in steps:
            for k, r in enumerate(step):
                port = dut.lookups[k]
                ctx.set(port.valid, 0 if r is None else 1)
                if r is not None:
                    for name in ("allowed", "reason", "flags", "endpoint", "iova"):
                        ctx.set(getattr(port.payload, name), r[name])
            await ctx.tick()
            if ctx.get(dut.faults.valid):
                f = dut.faults.payload
                seen.append((ctx.get(f.endpoint), ctx.get(f.address), ctx.get(f.flags)))
        assert seen == [(1, 0x1000, 0x101), (5, 0x5000, 0x102), (7, 0x7000, 0x101)]
        assert ctx.get(dut.drops) == 1 + 2

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()


def test_reset_nets_on_global_buffers_for_ecp5():
    """Elaborated for an ECP5 platform, the core's and the engine's reset flip-flops each
    drive a DCCA (their nets go on global networks); elsewhere there is none."""
    from viommu.sim.netlist import instances

    class _ECP5:
        family = "ecp5"

    def dccas(platform):
        return instances(VirtioIOMMUMMIO(queue_size=64, **SMALL), platform, type="DCCA")

    assert len(dccas(_ECP5())) == 2
    assert dccas(None) == []
