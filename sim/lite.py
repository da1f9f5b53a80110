"""AXI4-Lite master transactions for Amaranth-simulator testbenches.

``await lite_write(ctx, bus, addr, data)`` and ``await lite_read(ctx, bus, addr)`` drive an
AXI4-Lite slave's ports (an ``amaranth.lib.wiring`` interface with the AMBA names:
``awaddr``, ``awvalid``, ...) one transaction at a time: AW and W together, then wait for
B; AR, then wait for R. Both return when the response has been taken (the cycle after
its handshake), with the response code (and, for a read, the data). They do not time the
slave: benches that check cycle counts drive the channels themselves.
"""

__all__ = ["lite_write", "lite_read"]


async def lite_write(ctx, bus, addr, data, strb=0xf, *, timeout=1000):
    """One write; returns ``bresp``."""
    ctx.set(bus.awaddr, addr)
    ctx.set(bus.wdata, data)
    ctx.set(bus.wstrb, strb)
    ctx.set(bus.awvalid, 1)
    ctx.set(bus.wvalid, 1)
    ctx.set(bus.bready, 1)
    aw = w = False
    for _ in range(timeout):
        aw |= bool(ctx.get(bus.awready))
        w |= bool(ctx.get(bus.wready))
        b = ctx.get(bus.bvalid)
        resp = ctx.get(bus.bresp)
        await ctx.tick()
        if aw:
            ctx.set(bus.awvalid, 0)
        if w:
            ctx.set(bus.wvalid, 0)
        if b:
            return resp
    raise AssertionError(f"AXI4-Lite write of {addr:#x}: no response in {timeout} cycles")


async def lite_read(ctx, bus, addr, *, timeout=1000):
    """One read; returns ``(rdata, rresp)``."""
    ctx.set(bus.araddr, addr)
    ctx.set(bus.arvalid, 1)
    ctx.set(bus.rready, 1)
    ar = False
    for _ in range(timeout):
        ar |= bool(ctx.get(bus.arready))
        r = ctx.get(bus.rvalid)
        data, resp = ctx.get(bus.rdata), ctx.get(bus.rresp)
        await ctx.tick()
        if ar:
            ctx.set(bus.arvalid, 0)
        if r:
            return data, resp
    raise AssertionError(f"AXI4-Lite read of {addr:#x}: no response in {timeout} cycles")
