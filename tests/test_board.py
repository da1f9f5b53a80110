# amaranth: UnusedElaboratable=no
"""The board image's SoC (boards/soc.py): the whole of it as generated Verilog under
cocotb (tests/tb_board.py, on Verilator), driven through its UART pins by the same host
code that talks to a real board; and its parameters' validation.

The image is built with the smallest UART divisor, 4 (40 ns bits at 100 MHz), a bridge
timeout of 1000 cycles and a fast heartbeat so that the simulation is short (the device
simulates at only ~20k cycles/s on Verilator, so the run time is proportional to the
UART's bit time), and a 16-entry, 4-endpoint device (the host learns that from the board
control block).
"""

import json

import pytest

from viommu.boards.soc import BoardSoC
from viommu.sim.cocotb_run import run_cocotb


TB = dict(divisor=4, bridge_timeout=1000, heartbeat_bit=6, ram_size=65536, requests=10,
          seed=1)


def _soc():
    return BoardSoC(divisor=TB["divisor"], bridge_timeout=TB["bridge_timeout"],
                    heartbeat_bit=TB["heartbeat_bit"], ram_size=TB["ram_size"],
                    entries=16, endpoints=4)


def test_board_image_verilator():
    run_cocotb(_soc(), "viommu_board", "tb_board", simulator="verilator",
               env={"VIOMMU_TB": json.dumps(TB)})


@pytest.mark.parametrize("kw, message", [
    (dict(divisor=3), r"divisor \(clock cycles per bit\) must be an integer in 4"),
    (dict(ram_size=3000), "ram_size must be a power of two in 4096"),
    (dict(ram_size=1 << 25), "ram_size must be a power of two"),
    (dict(bridge_timeout=10), "timeout must be an integer in 16"),
    (dict(heartbeat_bit=64), "heartbeat_bit must be an integer in 0..63"),
    (dict(queue_size=48), "queue_size must be a power of two"),
    (dict(axi_width=4), "axi_width must be 8 or 16"),
    (dict(entries=0), "entries must be in 1..1024"),
])
def test_parameters_validated(kw, message):
    with pytest.raises(ValueError, match=message):
        BoardSoC(**kw)
