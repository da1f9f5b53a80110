"""The host side of the board (sim/host.py, viommu/board_test.py) without a simulator.

A fake board speaks the bridge protocol over a byte array (guest RAM) and a few control
registers, written from the protocol's description (rtl/board/bridge.py), so that the client's
framing, word splitting, read-modify-write of partial words and error handling are
checked quickly; the whole board image runs against the same client in tests/tb_board.py.
The ``viommu board-test`` command's argument and port errors are checked here too.
"""

import argparse
import random
import struct
import sys

import pytest

from viommu import board_test
from viommu.boards.soc import BoardReg, BOARD_ID, BOARD_VERSION, CONTROL_BASE
from viommu.rtl.core.layouts import BridgeByte
from viommu.sim.host import (BridgeClient, BridgeError, BridgeNak, board_layout, run_sync,
                             BoardInfo)
from viommu.sim.vring import ring_sizes


class FakeBoard:
    """A link whose other end is a bridge over ``ram`` (at 0) and an ID block at
    CONTROL_BASE; ``reply_override`` replaces the next reply."""

    def __init__(self, ram_size=4096, ident=BOARD_ID):
        self.ram = bytearray(random.Random(1).randbytes(ram_size))
        self.ident = ident
        self.rx = bytearray()
        self.tx = bytearray()
        self.frames = []
        self.truncate = None        # answer only this many bytes of the next reply

    def _word(self, addr):
        if addr + 4 <= len(self.ram):
            return struct.unpack_from("<I", self.ram, addr)[0], True
        regs = {BoardReg.ID: self.ident, BoardReg.VERSION: BOARD_VERSION,
                BoardReg.CONFIG: 0, BoardReg.RAM_SIZE: len(self.ram)}
        if addr - CONTROL_BASE in regs:
            return regs[addr - CONTROL_BASE], True
        return 0, False

    def write(self, data):
        self.rx += data
        while self.rx:
            cmd = self.rx[0]
            if cmd not in (BridgeByte.WRITE, BridgeByte.READ):
                del self.rx[0]
                self.tx.append(BridgeByte.NAK)
                continue
            if len(self.rx) < 6:
                return len(data)
            addr, n = struct.unpack_from("<IB", self.rx, 1)
            n += 1
            if cmd == BridgeByte.WRITE:
                if len(self.rx) < 6 + 4 * n:
                    return len(data)
                ok = True
                for k in range(n):
                    a = (addr & ~3) + 4 * k
                    w = struct.unpack_from("<I", self.rx, 6 + 4 * k)[0]
                    if a + 4 <= len(self.ram):
                        struct.pack_into("<I", self.ram, a, w)
                    else:
                        ok = False
                self.frames.append(("W", addr, n))
                del self.rx[:6 + 4 * n]
                reply = bytes([BridgeByte.ACK if ok else BridgeByte.NAK])
            else:
                ok, out = True, b""
                for k in range(n):
                    w, good = self._word((addr & ~3) + 4 * k)
                    ok &= good
                    out += struct.pack("<I", w)
                self.frames.append(("R", addr, n))
                del self.rx[:6]
                reply = out + bytes([BridgeByte.ACK if ok else BridgeByte.NAK])
            if self.truncate is not None:
                reply, self.truncate = reply[:self.truncate], None
            self.tx += reply
        return len(data)

    def read(self, n):
        out = bytes(self.tx[:n])
        del self.tx[:n]
        return out


def test_memory_read_modify_write():
    """Random byte ranges (any alignment, any length) written and read back through the
    client equal a byte-array model; whole words cost no read; a partial first or last
    word costs exactly one read each (one when both are the same word)."""
    board = FakeBoard(ram_size=4096)
    model = bytearray(board.ram)
    c = BridgeClient(board)
    c.identify()
    rng = random.Random(5)
    for _ in range(300):
        addr = rng.randrange(0, 4000)
        n = rng.randint(1, min(90, 4096 - addr))
        data = rng.randbytes(n)
        before = len(board.frames)
        c.mem.write(addr, data)
        model[addr:addr + n] = data
        frames = board.frames[before:]
        first, end = addr & ~3, (addr + n + 3) & ~3
        partial = {first} if first != addr else set()
        if end != addr + n:
            partial.add(end - 4)
        assert [f for f in frames if f[0] == "R"] == [("R", a, 1) for a in sorted(partial)]
        assert [f for f in frames if f[0] == "W"] == [("W", first, (end - first) // 4)]
        a2 = rng.randrange(0, 4000)
        n2 = rng.randint(0, 64)
        assert c.mem.read(a2, n2) == bytes(model[a2:a2 + n2])
    assert bytes(board.ram) == bytes(model)
    with pytest.raises(ValueError, match="outside"):
        c.mem.write(4094, b"abc")


def test_frames_split_at_256_words():
    board = FakeBoard(ram_size=8192)
    c = BridgeClient(board)
    words = list(range(600))
    c.write_words(0x100, words)
    assert board.frames == [("W", 0x100, 256), ("W", 0x500, 256), ("W", 0x900, 88)]
    assert c.read_words(0x100, 600) == words
    assert board.frames[3:] == [("R", 0x100, 256), ("R", 0x500, 256), ("R", 0x900, 88)]
    assert c.frames == 6
    assert c.bytes_sent == 3 * 6 + 4 * 600 + 3 * 6 and c.bytes_received == 3 + 4 * 600 + 3
    with pytest.raises(ValueError, match="not a 32-bit word address"):
        c.read_words(0x102, 1)


def test_errors():
    board = FakeBoard()
    c = BridgeClient(board)
    with pytest.raises(BridgeNak, match="read of 1 words at 0x80000000: NAK"):
        c.read_words(0x8000_0000, 1)
    with pytest.raises(BridgeNak, match="write of 2 words at 0x00000ffc: NAK"):
        c.write_words(0xffc, [1, 2])            # the second word is past the RAM
    board.truncate = 3
    with pytest.raises(BridgeError, match="answered 3 of 9 bytes before the link timed out"):
        c.read_words(0, 2)
    c.ping()
    board.tx += b"\x06"                         # a stray byte: ping sees ACK, not NAK
    with pytest.raises(BridgeError, match="ping: expected NAK, got 0x06"):
        c.ping()
    with pytest.raises(BridgeError, match="not a viommu board image"):
        BridgeClient(FakeBoard(ident=0x12345678)).identify()
    info = BoardInfo(0, 65536, BOARD_VERSION)
    with pytest.raises(BridgeError, match="endpoint IDs are not 0..n-1"):
        info.core_params()


def test_board_layout():
    L = board_layout(65536, 64, 8)
    areas = []
    for q, num in (("rq", 64), ("eq", 8)):
        d, a, u = ring_sizes(num)
        assert L[f"{q}_desc"] % 16 == 0 and L[f"{q}_driver"] % 2 == 0
        assert L[f"{q}_device"] % 4 == 0
        areas += [(L[f"{q}_desc"], d), (L[f"{q}_driver"], a), (L[f"{q}_device"], u)]
    start, end = L["buffers"]
    areas.append((start, end - start))
    areas.sort()
    for (a, n), (b, _) in zip(areas, areas[1:]):
        assert a + n <= b
    assert end == L["size"] == 65536 and end - start >= 32768
    with pytest.raises(ValueError, match="too small"):
        board_layout(4096, 256, 8)


def test_run_sync():
    async def plain():
        return 7
    assert run_sync(plain()) == 7

    class Suspend:
        def __await__(self):
            yield "real suspension"

    async def suspends():
        await Suspend()
    with pytest.raises(RuntimeError, match="cannot run on a blocking link"):
        run_sync(suspends())


# --- the command -------------------------------------------------------------------------

def _cli(argv):
    parser = argparse.ArgumentParser(prog="viommu")
    sub = parser.add_subparsers(dest="command", required=True)
    board_test.add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args.subparser, args)


def test_cli_without_pyserial(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "serial", None)
    assert _cli(["board-test", "--port", "/dev/ttyUSB0"]) == 2
    err = capsys.readouterr().err
    assert "board-test needs pyserial: pip install 'viommu[board]'" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_port_errors(capsys):
    pytest.importorskip("serial")
    assert _cli(["board-test", "--port", "/dev/no-such-tty-here"]) == 2
    err = capsys.readouterr().err
    assert "cannot open /dev/no-such-tty-here" in err and len(err.strip().splitlines()) == 1
    # a loopback "board" echoes the host's bytes: the bridge check fails in one line
    assert _cli(["board-test", "--port", "loop://", "--timeout", "0.05"]) == 1
    err = capsys.readouterr().err
    assert "viommu board-test: FAILED: ping: expected NAK, got 0x00" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["--requests", "0"], "--requests must be at least 1"),
    (["--baud", "0"], "--baud must be positive"),
    (["--timeout", "0"], "--timeout must be positive"),
])
def test_cli_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        _cli(["board-test", "--port", "x"] + argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
