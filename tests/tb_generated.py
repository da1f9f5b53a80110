"""cocotb test of the Verilog file exactly as ``viommu generate --transport mmio`` writes it
(run by tests/test_generated.py).

An integrator drops that one file into their own testbench, in whichever simulator they
use, and attaches cocotbext-axi. This bench does that with the default parameters: the first
AXI4-Lite reads after reset (MagicValue, Version), the driver's bring-up, one ATTACH and one
MAP through the rings with their status checked, and a lookup that the MAP allows.
"""

import cocotb

from viommu.rtl.core.layouts import MapFlag, Status
from viommu.rtl.transport.mmio import MMIO, MMIO_MAGIC, MMIO_VERSION
from viommu.sim import model as M

from tb_top_mmio import Bench, PARAMS


@cocotb.test(timeout_time=2, timeout_unit="ms")
async def first_contact(dut):
    b = Bench(dut)
    await b.reset()
    # The very first reads: a register block whose read path sits at X after reset (the
    # combinational blocks never woke at time 0) fails here.
    assert await b.regs.read32(MMIO.MAGIC) == MMIO_MAGIC
    assert await b.regs.read32(MMIO.VERSION) == MMIO_VERSION
    drv = b.driver()
    await drv.init()
    ep = PARAMS.endpoint_ids[0]
    g = PARAMS.granule
    iova, phys = 0x40 * g, 0x1234 * g
    # a mapping store in external memory clears its heads after reset first (65,536
    # heads: 256 KiB in 4 KiB bursts, 33,218 cycles at best); a MAP waits for it
    timeout = 80000 if b.store_ram is not None else 20000
    for req in (M.attach(1, ep), M.map_(1, iova, iova + 2 * g - 1, phys, MapFlag.READ)):
        c = await drv.request(req, timeout=timeout)
        # The tail is the last 4 writable bytes: status, then 3 reserved bytes.
        assert c.used_len == 4 and c.written[0] == Status.OK, (req, c.used_len, c.written)
    (r,) = await b.lookups([(ep, iova + g + 0x10, 0)])
    assert r["allowed"] == 1 and r["phys"] == phys + g + 0x10, r
    (r,) = await b.lookups([(ep, iova + 0x10, 1)])         # the MAP grants no write
    assert r["allowed"] == 0, r
