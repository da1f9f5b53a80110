"""The DMA interface between the virtqueue engine and a bus master.

The engine reads and writes guest memory through byte-addressed, byte-aligned streams; a
bus adapter (:class:`~.axi.AXI4DMAMaster` for AXI4) turns them into bus transactions.
Nothing above this interface knows which bus is in use.

Read: a command ``{addr, len}`` asks for ``len`` bytes (1..4096) from ``addr`` (any byte
alignment, may cross a 4 KiB boundary). The data comes back on ``rd_data``, in command
order, realigned: byte 0 of the first beat is the byte at ``addr``; every beat but the last
carries ``width`` bytes; ``last`` marks the command's final beat. ``err`` is set on a beat
when the bus answered an error (SLVERR/DECERR) for any part of it; the bytes are then
undefined. Several commands may be outstanding.

Write: a command ``{addr, len}`` announces ``len`` bytes (1..4096) to write at ``addr``; the
bytes follow on ``wr_data`` packed from byte 0 (every beat full but the last, ``last`` on
the final beat). One ``wr_resp`` answers each command after every bus write of it has
completed (its data is visible to other bus masters), with ``err`` set if any failed.
Responses come back in command order.
"""

from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out


__all__ = ["DMA_MAX_LEN", "dma_cmd_layout", "dma_rd_data_layout", "dma_wr_data_layout",
           "DMAWrRespLayout", "DMASignature"]

#: Largest ``len`` of one DMA command, in bytes.
DMA_MAX_LEN = 4096


def dma_cmd_layout(addr_width=64):
    return data.StructLayout({"addr": addr_width, "len": 13})


def dma_rd_data_layout(width):
    """``width``: bytes per beat (8 or 16)."""
    return data.StructLayout({"data": 8 * width, "last": 1, "err": 1})


def dma_wr_data_layout(width):
    return data.StructLayout({"data": 8 * width, "last": 1})


DMAWrRespLayout = data.StructLayout({"err": 1})


class DMASignature(wiring.Signature):
    """A DMA master port, seen from the engine (the side that issues commands)."""

    def __init__(self, *, width=8, addr_width=64):
        if width not in (8, 16):
            raise ValueError(f"DMA width must be 8 or 16 bytes, not {width}")
        if not 32 <= addr_width <= 64:
            raise ValueError(f"addr_width must be 32..64, not {addr_width}")
        self.width = width
        self.addr_width = addr_width
        super().__init__({
            "rd_cmd":  Out(stream.Signature(dma_cmd_layout(addr_width))),
            "rd_data": In(stream.Signature(dma_rd_data_layout(width))),
            "wr_cmd":  Out(stream.Signature(dma_cmd_layout(addr_width))),
            "wr_data": Out(stream.Signature(dma_wr_data_layout(width))),
            "wr_resp": In(stream.Signature(DMAWrRespLayout)),
        })

    def __eq__(self, other):
        return (isinstance(other, DMASignature) and self.width == other.width and
                self.addr_width == other.addr_width)

    def __repr__(self):
        return f"DMASignature(width={self.width}, addr_width={self.addr_width})"
