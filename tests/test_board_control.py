# amaranth: UnusedElaboratable=no
"""The board control block (boards/soc.py ``BoardControl``) in Amaranth's simulator: the
register map, the lookup probe's handshake with a device lookup port (played by the
bench: ready in every other cycle, a response exactly 3 cycles after each accepted
request), the sticky status bits and their
write-1-to-clear, the event counters (saturating), the cycle counter and the LEDs."""

from amaranth.sim import Simulator

from viommu.boards.soc import BoardControl, BoardReg, BOARD_ID, BOARD_VERSION, Led
from viommu.rtl.core.layouts import ProbeControl, ProbeResult, BoardStatus, pack, unpack
from viommu.sim.lite import lite_write, lite_read


def _word(layout, **fields):
    return int.from_bytes(pack(layout, **fields), "little")


def test_board_control():
    dut = BoardControl(config=0x1234_5678, ram_size=65536, endpoint_width=16,
                       heartbeat_bit=4)
    bus, lk = dut.bus, dut.lookup
    requests = []

    async def write(ctx, reg, value, strb=0xf):
        assert await lite_write(ctx, bus, reg, value, strb) == 0

    async def read(ctx, reg):
        value, resp = await lite_read(ctx, bus, reg)
        assert resp == 0
        return value

    async def device(ctx):
        """The device's lookup port: ready in every other cycle (as if port 0's
        comparators answered queries in the others), answers each accepted request 3
        cycles later; allowed for even IOVA pages."""
        pipe = [None, None]         # a request accepted at the end of cycle c: valid in c+3
        cycle = 0
        ctx.set(lk.req_ready, 1)
        async for _clk, _rst, req_valid, req_ready, ep, iova, write_ in ctx.tick().sample(
                lk.req_valid, lk.req_ready, lk.req_endpoint, lk.req_iova, lk.req_write):
            accepted = req_valid and req_ready
            pipe.append((ep, iova, write_) if accepted else None)
            if accepted:
                requests.append((ep, iova, write_))
            cycle += 1
            ctx.set(lk.req_ready, cycle % 2 == 0)
            out = pipe.pop(0)
            ctx.set(lk.resp_valid, int(out is not None))
            if out is not None:
                ep, iova, write_ = out
                allowed = int(iova >> 12 & 1 == 0)
                ctx.set(lk.resp_allowed, allowed)
                ctx.set(lk.resp_phys, iova + 0x1_0000_0000 if allowed else 0)
                ctx.set(lk.resp_mmio, int(allowed and write_))
                ctx.set(lk.resp_via, 1 if allowed else 0)
                ctx.set(lk.resp_reason, 0 if allowed else 2)
                ctx.set(lk.resp_flags, 0 if allowed else 0x101 + write_)

    async def tb(ctx):
        assert [await read(ctx, r) for r in (BoardReg.ID, BoardReg.VERSION, BoardReg.CONFIG,
                                             BoardReg.RAM_SIZE)] == \
            [BOARD_ID, BOARD_VERSION, 0x1234_5678, 65536]
        assert await read(ctx, 0x800) == 0                  # undefined offsets read 0

        # probe: endpoint / iova / write flag, go; result latched with done
        for k, (ep, iova, wr) in enumerate([(5, 0x2000_0000_0000, 1), (7, 0xdead_f000, 0),
                                            (9, 0x4000, 0)]):
            await write(ctx, BoardReg.PROBE_ENDPOINT, ep)
            await write(ctx, BoardReg.PROBE_IOVA_LO, iova & 0xffffffff)
            await write(ctx, BoardReg.PROBE_IOVA_HI, iova >> 32)
            await write(ctx, BoardReg.PROBE_CTRL, _word(ProbeControl, write=wr, go=1))
            # the answer comes 4 cycles after the write's execution (a read started right
            # after the B handshake may still see done = 0, cleared by go)
            for polls in range(1, 4):
                res = unpack(ProbeResult, (await read(ctx, BoardReg.PROBE_RESULT))
                             .to_bytes(4, "little"))
                if res.done:
                    break
            assert polls <= 2
            allowed = iova >> 12 & 1 == 0
            assert res.done == 1 and res.allowed == allowed
            assert res.mmio == int(allowed and wr)
            assert (res.reason, res.flags) == ((0, 0) if allowed else (2, 0x101 + wr))
            phys = await read(ctx, BoardReg.PROBE_PHYS_LO) | \
                await read(ctx, BoardReg.PROBE_PHYS_HI) << 32
            assert phys == (iova + 0x1_0000_0000 if allowed else 0)
            assert await read(ctx, BoardReg.PROBE_COUNT) == k + 1
            assert ctx.get(dut.leds) >> Led.ALLOWED & 1 == int(allowed)
        assert requests == [(5, 0x2000_0000_0000, 1), (7, 0xdead_f000, 0), (9, 0x4000, 0)]
        # writing PROBE_CTRL without go issues nothing; byte strobes are honoured
        await write(ctx, BoardReg.PROBE_CTRL, _word(ProbeControl, write=1, go=0))
        await write(ctx, BoardReg.PROBE_ENDPOINT, 0xaabbccdd, strb=0b0101)
        assert await read(ctx, BoardReg.PROBE_ENDPOINT) == 0x00bb00dd
        assert await read(ctx, BoardReg.PROBE_CTRL) == 1
        assert len(requests) == 3

        # sticky status bits, set by events and the denied probe, cleared by writing 1
        st = unpack(BoardStatus, (await read(ctx, BoardReg.STATUS)).to_bytes(4, "little"))
        assert st.fault_seen == 1 and st.dma_error_seen == 0
        for sig in (dut.dma_error, dut.framing_error, dut.overrun, dut.bridge_abort):
            ctx.set(sig, 1 if sig is not dut.dma_error else 0b11)
        ctx.set(dut.irq, 1)
        ctx.set(dut.driver_ok, 1)
        await ctx.tick()
        for sig in (dut.dma_error, dut.framing_error, dut.overrun, dut.bridge_abort):
            ctx.set(sig, 0)
        st = await read(ctx, BoardReg.STATUS)
        assert st == 0b111111
        await ctx.tick()
        assert ctx.get(dut.leds) & 0b111110 == 0b111110
        await write(ctx, BoardReg.STATUS, _word(BoardStatus, fault_seen=1, uart_error_seen=1))
        assert await read(ctx, BoardReg.STATUS) == 0b101011
        ctx.set(dut.irq, 0)
        ctx.set(dut.driver_ok, 0)
        await write(ctx, BoardReg.STATUS, 0xffffffff)
        assert await read(ctx, BoardReg.STATUS) == 0
        assert await read(ctx, BoardReg.DMA_ERRORS) == 2      # both pulses of one cycle
        assert await read(ctx, BoardReg.UART_ERRORS) == 1 | 1 << 16
        assert await read(ctx, BoardReg.BRIDGE_ABORTS) == 1
        # the framing error counter saturates at 0xffff
        ctx.set(dut.framing_error, 1)
        for _ in range(0x10005):
            await ctx.tick()
        ctx.set(dut.framing_error, 0)
        assert await read(ctx, BoardReg.UART_ERRORS) == 0xffff | 1 << 16

        # cycle counter: two reads 20 cycles apart differ by 20 + the read's own cycles
        c0 = await read(ctx, BoardReg.CYCLES_LO)
        for _ in range(20):
            await ctx.tick()
        c1 = await read(ctx, BoardReg.CYCLES_LO)
        assert c1 - c0 == 20 + 3 and c0 > 0x10005
        assert await read(ctx, BoardReg.CYCLES_HI) == 0
        # heartbeat: cycle counter bit 4; RX LED toggles per rx_byte pulse
        hb = set()
        for _ in range(40):
            await ctx.tick()
            hb.add(ctx.get(dut.leds) & 1)
        assert hb == {0, 1}
        before = ctx.get(dut.leds) >> Led.RX & 1
        ctx.set(dut.rx_byte, 1)
        await ctx.tick()
        ctx.set(dut.rx_byte, 0)
        await ctx.tick()
        await ctx.tick()
        assert ctx.get(dut.leds) >> Led.RX & 1 != before

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(device)
    sim.add_testbench(tb)
    sim.run()
