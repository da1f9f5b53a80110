"""The virtqueue engine's DMA port alone: tag steering, beat splitting, ``block``.

(``tests/test_virtqueue.py::test_dma_port_discards_exactly_the_stale_returns`` covers
``clear`` and the stale-return counting.)
"""

import random

import pytest
from amaranth.sim import Simulator

from viommu.rtl.engine.dma_port import DMAPort


@pytest.mark.parametrize("width,seed", [(8, 0), (16, 1), (16, 2)])
def test_dma_port_steers_each_beat_with_its_tag(width, seed):
    """Reads of random lengths (not only multiples of 8) and random tags, a bus with
    random stalls and latencies: every 8-byte beat on ``rd_ret`` carries the tag of the
    command it belongs to, a command of ``n`` bytes returns ceil(n/8) beats with ``last``
    on the final one, and with a 16-byte bus each bus beat gives its low half then its
    high half. Write responses come back with their command's tag; each write's data beat
    is its own."""
    rng = random.Random(seed)
    dut = DMAPort(width)
    n_cmds = 150
    reads = [(8 * rng.randrange(1 << 20), rng.randint(1, 64),
              {"dest": rng.randrange(4), "sub": rng.randrange(64)}) for _ in range(n_cmds)]
    writes = [(8 * rng.randrange(1 << 20), rng.randint(1, 8), rng.randrange(1 << 64),
               {"kind": rng.randrange(4), "q": rng.randrange(2),
                "value": rng.randrange(1 << 16)}) for _ in range(n_cmds)]
    got_rd, got_wr, bus_wr = [], [], []

    async def tb(ctx):
        dma = dut.dma
        ri = wi = 0
        bus_rd = []              # commands taken by the bus: [due, addr, len, beats sent]
        bus_wcmds, bus_wdata, wresp = [], [], []
        n_wresp = 0
        for cycle in range(6000):
            ctx.set(dut.rd_req.valid, ri < n_cmds)
            if ri < n_cmds:
                a, n, tag = reads[ri]
                ctx.set(dut.rd_req.payload, {"addr": a, "len": n, "tag": tag})
            ctx.set(dut.wr_req.valid, wi < n_cmds)
            if wi < n_cmds:
                a, n, d, tag = writes[wi]
                ctx.set(dut.wr_req.payload, {"addr": a, "len": n, "data": d, "tag": tag})
            ctx.set(dma.rd_cmd.ready, rng.random() < 0.6)
            ctx.set(dma.wr_cmd.ready, rng.random() < 0.6)
            ctx.set(dma.wr_data.ready, rng.random() < 0.7)
            ctx.set(dut.rd_ret.ready, rng.random() < 0.7)
            # read data: bus beat k of a command at addr holds (addr, k) in each 8 bytes
            head = bus_rd[0] if bus_rd and bus_rd[0][0] <= cycle else None
            ctx.set(dma.rd_data.valid, head is not None)
            if head is not None:
                _due, a, n, k = head
                nb = -(-n // width)
                if width == 8:
                    d = a << 8 | k
                else:
                    d = (a << 8 | 2 * k) | (a << 8 | 2 * k + 1) << 64
                ctx.set(dma.rd_data.payload, {"data": d, "last": k == nb - 1, "err": 0})
            # a write's response once its command and data have both been taken
            resp = bool(wresp) and wresp[0] <= cycle and len(bus_wdata) > n_wresp
            ctx.set(dma.wr_resp.valid, resp)

            if ri < n_cmds and ctx.get(dut.rd_req.ready):
                ri += 1
            if wi < n_cmds and ctx.get(dut.wr_req.ready):
                wi += 1
            if ctx.get(dut.rd_ret.valid) and ctx.get(dut.rd_ret.ready):
                p = ctx.get(dut.rd_ret.payload)
                got_rd.append((p.data >> 8, p.data & 0xff, p.last, p.tag.dest, p.tag.sub))
            if ctx.get(dut.wr_ret.valid):
                p = ctx.get(dut.wr_ret.payload)
                got_wr.append((p.tag.kind, p.tag.q, p.tag.value))
            if head is not None and ctx.get(dma.rd_data.ready):
                head[3] += 1
                if head[3] == -(-head[2] // width):
                    bus_rd.pop(0)
            if resp:
                wresp.pop(0)
                n_wresp += 1
            if ctx.get(dma.rd_cmd.valid) and ctx.get(dma.rd_cmd.ready):
                bus_rd.append([cycle + rng.randint(2, 20), ctx.get(dma.rd_cmd.payload.addr),
                               ctx.get(dma.rd_cmd.payload.len), 0])
            if ctx.get(dma.wr_cmd.valid) and ctx.get(dma.wr_cmd.ready):
                bus_wcmds.append((ctx.get(dma.wr_cmd.payload.addr),
                                  ctx.get(dma.wr_cmd.payload.len)))
                wresp.append(cycle + rng.randint(2, 20))
            if ctx.get(dma.wr_data.valid) and ctx.get(dma.wr_data.ready):
                assert ctx.get(dma.wr_data.payload.last)
                bus_wdata.append(ctx.get(dma.wr_data.payload.data))
            await ctx.tick()
        bus_wr.extend(zip(bus_wcmds, bus_wdata))
        assert ctx.get(dut.idle)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()

    expected = []
    for a, n, tag in reads:
        nb = -(-n // 8)
        expected += [(a, k, int(k == nb - 1), tag["dest"], tag["sub"]) for k in range(nb)]
    assert got_rd == expected
    assert got_wr == [(t["kind"], t["q"], t["value"]) for _a, _n, _d, t in writes]
    assert bus_wr == [((a, n), d) for a, n, d, _t in writes]


def test_dma_port_block_drops_commands_not_yet_presented():
    """A command presented on the bus stays presented through ``block`` until taken; one
    taken from the engine but not yet presented never reaches the bus; no command is
    taken while ``block`` is high."""
    dut = DMAPort(8)

    async def tb(ctx):
        dma = dut.dma
        ctx.set(dma.rd_cmd.ready, 0)
        ctx.set(dut.rd_req.valid, 1)
        ctx.set(dut.rd_req.payload, {"addr": 0x1000, "len": 8, "tag": {"dest": 1, "sub": 1}})
        assert ctx.get(dut.rd_req.ready)
        await ctx.tick()                        # A taken into the head
        ctx.set(dut.rd_req.payload, {"addr": 0x2000, "len": 8, "tag": {"dest": 1, "sub": 2}})
        assert ctx.get(dut.rd_req.ready)
        await ctx.tick()                        # B taken into the tail; A presented
        assert ctx.get(dma.rd_cmd.valid) and ctx.get(dma.rd_cmd.payload.addr) == 0x1000
        ctx.set(dut.rd_req.valid, 0)
        await ctx.tick()                        # A presented for a second cycle
        ctx.set(dut.block, 1)
        ctx.set(dut.rd_req.valid, 1)
        ctx.set(dut.rd_req.payload, {"addr": 0x3000, "len": 8, "tag": {"dest": 1, "sub": 3}})
        seen = []
        for i in range(8):
            assert not ctx.get(dut.rd_req.ready)
            ctx.set(dma.rd_cmd.ready, i >= 3)
            if ctx.get(dma.rd_cmd.valid):
                seen.append((ctx.get(dma.rd_cmd.payload.addr), bool(ctx.get(dma.rd_cmd.ready))))
            await ctx.tick()
        # A, held until taken at i = 3; B and C never
        assert seen == [(0x1000, False)] * 3 + [(0x1000, True)]

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
