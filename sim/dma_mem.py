"""Guest memory behind the DMA port of :mod:`viommu.rtl.bus.dma`, for Amaranth's simulator.

:class:`DMAMemory` is a bytearray with a slave for the DMA streams: a configurable read
latency (cycles from taking a read command to its first data beat) and write latency (from
the last data beat to the response), random stalls on every ready/valid it drives, DMA
errors by address range, a log of every write so that tests can check which bytes
changed and when, and a check of the stream rules on what the engine drives (a ``valid``
is held, with an unchanged payload, until its handshake).

It is driven one cycle at a time by the caller's testbench::

    mem.pre(ctx)          # drive this cycle's outputs, sample the engine's
    await ctx.tick()
    mem.post()            # apply the handshakes of the cycle that ended

or as a stand-alone testbench with :meth:`DMAMemory.run`. The same object offers
``read(addr, n)`` / ``write(addr, data)`` for the driver-side helpers
(:mod:`viommu.sim.vring`).
"""

import random
from collections import deque
from dataclasses import dataclass


__all__ = ["DMAMemory", "WriteRecord", "MemoryError_", "ProtocolError"]


class MemoryError_(Exception):
    pass


class ProtocolError(AssertionError):
    """The engine broke a stream rule of the DMA port."""


@dataclass
class WriteRecord:
    """One DMA write: when its command was first presented (``valid`` seen) and taken,
    where, what, and whether it failed (then nothing was written)."""
    presented: int
    taken: int
    addr: int
    data: bytes
    err: bool


class DMAMemory:
    """Byte-addressed memory ``[base, base + size)`` behind a DMA port of ``width`` bytes.

    Parameters
    ----------
    read_latency, write_latency : int
        Cycles (>= 1) from a read command's acceptance to its first data beat; from a
        write's last data beat to its response.
    stall : float
        Probability that each ready/valid this slave drives is held low in a cycle.
    """

    def __init__(self, size, *, base=0, width=8, read_latency=1, write_latency=1,
                 stall=0.0, seed=0, max_reads=64, max_writes=64):
        if width not in (8, 16):
            raise ValueError("width must be 8 or 16")
        self.base = base
        self.size = size
        self.mem = bytearray(size)
        self.width = width
        self.read_latency = max(1, read_latency)
        self.write_latency = max(1, write_latency)
        self.stall = stall
        self.rng = random.Random(seed)
        self.max_reads = max_reads
        self.max_writes = max_writes
        self.err_ranges = []        # (start, end, reads, writes), end exclusive
        self.writes = []            # WriteRecord
        self.reads = []             # (cycle, addr, len) of every read command taken
        self.reads_done = []        # cycle each read's last beat was taken, in order
        self.cycle = 0
        self._dma = None
        self._rq = deque()          # [addr, len, due, beat]
        self._wq = deque()          # [addr, len, presented, taken]
        self._wdata = deque()       # beats (int)
        self._wresp = deque()       # [due, err]
        self._wcmd_seen = None      # cycle the pending wr_cmd was first seen valid
        self._rd_present = False    # a rd_data beat is presented and not yet taken
        self._wr_present = False
        self._set_cache = {}
        self._sampled = None
        self._held = {}

    # --- memory access for the driver side -------------------------------------------------

    def _check(self, addr, n):
        if addr < self.base or addr + n > self.base + self.size:
            raise MemoryError_(f"access {addr:#x}+{n} outside memory")

    def read(self, addr, n):
        self._check(addr, n)
        o = addr - self.base
        return bytes(self.mem[o:o + n])

    def write(self, addr, data):
        data = bytes(data)
        self._check(addr, len(data))
        o = addr - self.base
        self.mem[o:o + len(data)] = data

    def snapshot(self):
        return bytes(self.mem)

    def add_error(self, start, end, *, reads=True, writes=True):
        """DMA accesses touching ``[start, end)`` fail (reads answer ``err``, writes are
        dropped and answered ``err``)."""
        self.err_ranges.append((start, end, reads, writes))

    def clear_errors(self):
        self.err_ranges = []

    def _faulty(self, addr, n, write):
        if n <= 0:
            return False
        if addr < self.base or addr + n > self.base + self.size:
            return True
        for start, end, r, w in self.err_ranges:
            if (w if write else r) and addr < end and addr + n > start:
                return True
        return False

    # --- the DMA slave ---------------------------------------------------------------------------

    def attach(self, dma):
        self._dma = dma
        self._set_cache = {}
        self._s = {
            "rc_ready": dma.rd_cmd.ready, "rc_valid": dma.rd_cmd.valid,
            "rc_addr": dma.rd_cmd.payload.addr, "rc_len": dma.rd_cmd.payload.len,
            "rd_valid": dma.rd_data.valid, "rd_ready": dma.rd_data.ready,
            "rd_data": dma.rd_data.payload.data, "rd_last": dma.rd_data.payload.last,
            "rd_err": dma.rd_data.payload.err,
            "wc_ready": dma.wr_cmd.ready, "wc_valid": dma.wr_cmd.valid,
            "wc_addr": dma.wr_cmd.payload.addr, "wc_len": dma.wr_cmd.payload.len,
            "wd_valid": dma.wr_data.valid, "wd_ready": dma.wr_data.ready,
            "wd_data": dma.wr_data.payload.data,
            "wr_valid": dma.wr_resp.valid, "wr_ready": dma.wr_resp.ready,
            "wr_err": dma.wr_resp.payload.err,
        }

    def _set(self, ctx, key, value):
        if self._set_cache.get(key) != value:
            self._set_cache[key] = value
            ctx.set(self._s[key], value)

    def _go(self):
        return self.stall == 0 or self.rng.random() >= self.stall

    def pre(self, ctx):
        """Drive this cycle's outputs and sample the engine's; call before ``ctx.tick()``."""
        S, W, cyc, set_ = self._s, self.width, self.cycle, self._set
        get = ctx.get
        # read command
        rc_ready = len(self._rq) < self.max_reads and self._go()
        set_(ctx, "rc_ready", int(rc_ready))
        # read data
        rq = self._rq
        if not self._rd_present and rq and rq[0][2] <= cyc and self._go():
            self._rd_present = True
            addr, n, _due, k = rq[0]
            lo = k * W
            hi = min(n, lo + W)
            a = addr + lo
            err = self._faulty(a, hi - lo, False)
            if err:
                chunk = bytes(self.rng.randrange(256) for _ in range(hi - lo))
            else:
                o = a - self.base
                chunk = bytes(self.mem[o:o + hi - lo])
            junk = bytes(self.rng.randrange(256) for _ in range(W - (hi - lo)))
            self._rd_beat = (int.from_bytes(chunk + junk, "little"), int(hi >= n), int(err))
        rd_valid = self._rd_present
        set_(ctx, "rd_valid", int(rd_valid))
        if rd_valid:
            val, last, err = self._rd_beat
            set_(ctx, "rd_data", val)
            set_(ctx, "rd_last", last)
            set_(ctx, "rd_err", err)
        # write command / data
        wc_ready = len(self._wq) < self.max_writes and self._go()
        set_(ctx, "wc_ready", int(wc_ready))
        wd_ready = self._go()
        set_(ctx, "wd_ready", int(wd_ready))
        # write response
        if not self._wr_present:
            self._wr_present = bool(self._wresp) and self._wresp[0][0] <= cyc and self._go()
        set_(ctx, "wr_valid", int(self._wr_present))
        if self._wr_present:
            set_(ctx, "wr_err", int(self._wresp[0][1]))

        # sample the engine, checking the stream rules: a valid is never withdrawn before
        # its handshake, and the payload does not change meanwhile
        rc_valid = get(S["rc_valid"])
        rc = None
        if rc_valid:
            rc = (get(S["rc_addr"]), get(S["rc_len"]))
        self._check_held("rd_cmd", rc_valid, rc, rc_ready)
        if not rc_ready:
            rc = None
        rd_ready = get(S["rd_ready"]) if rd_valid else 0
        wc_valid = get(S["wc_valid"])
        wc = None
        if wc_valid:
            if self._wcmd_seen is None:
                self._wcmd_seen = cyc
            wc = (get(S["wc_addr"]), get(S["wc_len"]))
        self._check_held("wr_cmd", wc_valid, wc, wc_ready)
        if not wc_ready:
            wc = None
        wd_valid = get(S["wd_valid"])
        wd = get(S["wd_data"]) if wd_valid else None
        self._check_held("wr_data", wd_valid, wd, wd_ready)
        if not wd_ready:
            wd = None
        wr_ready = get(S["wr_ready"]) if self._wr_present else 0
        self._sampled = (rc is not None, rc, rd_valid and rd_ready,
                         wc is not None, wc, wd, self._wr_present and wr_ready)

    def _check_held(self, name, valid, payload, ready):
        held = self._held.get(name)
        if held is not None:
            if not valid:
                raise ProtocolError(f"cycle {self.cycle}: {name}.valid withdrawn before "
                                    f"its handshake")
            if payload != held:
                raise ProtocolError(f"cycle {self.cycle}: {name}.payload changed while "
                                    f"waiting for ready")
        self._held[name] = payload if valid and not ready else None

    def post(self):
        """Apply the handshakes of the cycle that just ended; call after ``ctx.tick()``."""
        rc_fire, rc, rd_fire, wc_fire, wc, wd, wr_fire = self._sampled
        cyc = self.cycle
        if rc_fire:
            addr, n = rc
            assert 1 <= n <= 4096, f"read of {n} bytes"
            self._rq.append([addr, n, cyc + self.read_latency, 0])
            self.reads.append((cyc, addr, n))
        if rd_fire:
            self._rd_present = False
            r = self._rq[0]
            r[3] += 1
            if r[3] * self.width >= r[1]:
                self._rq.popleft()
                self.reads_done.append(cyc)
        if wc_fire:
            addr, n = wc
            assert 1 <= n <= 4096, f"write of {n} bytes"
            self._wq.append([addr, n, self._wcmd_seen, cyc])
            self._wcmd_seen = None
        if wd is not None:
            self._wdata.append(wd)
        if wr_fire:
            self._wr_present = False
            self._wresp.popleft()
        # complete writes whose data has all arrived
        W = self.width
        while self._wq:
            addr, n, presented, taken = self._wq[0]
            beats = -(-n // W)
            if len(self._wdata) < beats:
                break
            self._wq.popleft()
            raw = b"".join(self._wdata.popleft().to_bytes(W, "little") for _ in range(beats))
            payload = raw[:n]
            err = self._faulty(addr, n, True)
            if not err:
                self.write(addr, payload)
            self.writes.append(WriteRecord(presented, taken, addr, payload, err))
            self._wresp.append([cyc + self.write_latency, err])
        self.cycle += 1

    def idle(self):
        return not (self._rq or self._wq or self._wdata or self._wresp)

    async def run(self, ctx, dma):
        """Serve ``dma`` forever (a stand-alone testbench)."""
        self.attach(dma)
        while True:
            self.pre(ctx)
            await ctx.tick()
            self.post()
