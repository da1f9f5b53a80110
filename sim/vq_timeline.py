"""Cycle-by-cycle timeline of one lone request through the virtqueue engine and the core.

``python -m viommu.sim.vq_timeline [--latency L] [--indirect]`` prints, for each cycle from
the doorbell of a single MAP until its used idx is written, the engine's state machines
and every handshake on the DMA port (read/write commands, read beats, write responses) and
on the core's ``req``/``resp`` streams, with the memory model of ``viommu bench`` (each read
answered after L cycles, then one beat per cycle; writes after 1 cycle). A tool for
finding the cycles where nothing useful happens between the dependent reads.
"""

import argparse

from viommu.rtl.core.params import CoreParams
from viommu.sim.model import map_
from viommu.sim.vq_bench import EngineWithCore, VQBench, run_bench


__all__ = ["timeline"]


def timeline(*, read_latency=1, indirect=False, out=print):
    """Run the lone MAP of ``measure_engine`` and ``out`` one line per cycle (cycle 0: the
    doorbell is seen). Returns the cycle of the used idx write."""
    params = CoreParams(entries=16)
    dut = EngineWithCore(params)
    result = {}

    async def tb(ctx):
        b = VQBench(dut, ctx, rq_num=256, indirect=indirect, read_latency=read_latency,
                    write_latency=1)
        await b.start_attached()
        eng = dut.engine
        await b.tick(50)
        b.submit(map_(1, 0, params.granule - 1, 0x800000))
        b.notify(0)
        t0 = b.cycle + 1
        d = eng.dma
        idx_area = (b.rq.device + 2, b.rq.device + 4)

        def observe(ctx):
            c = b.cycle - t0
            ev = [f"{n}={f.decoding[ctx.get(f.state)]}" for n, f in eng.fsms.items()]
            if ctx.get(d.rd_cmd.valid) and ctx.get(d.rd_cmd.ready):
                ev.append(f"RD_CMD {ctx.get(d.rd_cmd.payload.addr):#x}+"
                          f"{ctx.get(d.rd_cmd.payload.len)}")
            if ctx.get(d.rd_data.valid) and ctx.get(d.rd_data.ready):
                ev.append(f"RD_DATA{' last' if ctx.get(d.rd_data.payload.last) else ''}")
            if ctx.get(d.wr_cmd.valid) and ctx.get(d.wr_cmd.ready):
                wr_addr = ctx.get(d.wr_cmd.payload.addr)
                ev.append(f"WR_CMD {wr_addr:#x}+{ctx.get(d.wr_cmd.payload.len)}")
                if idx_area[0] <= wr_addr < idx_area[1] and c >= 0:
                    result["idx"] = c
            if ctx.get(d.wr_data.valid) and ctx.get(d.wr_data.ready):
                ev.append("WR_DATA")
            if ctx.get(d.wr_resp.valid) and ctx.get(d.wr_resp.ready):
                ev.append("WR_RESP")
            if ctx.get(eng.req.valid) and ctx.get(eng.req.ready):
                ev.append(f"REQ({ctx.get(eng.req.payload.nbytes)}"
                          f"{' last' if ctx.get(eng.req.payload.last) else ''})")
            if ctx.get(eng.resp.valid) and ctx.get(eng.resp.ready):
                ev.append("RESP")
            if c >= 0:
                out(f"{c:5d} " + " ".join(ev))

        b.observe = observe
        while "idx" not in result:
            await b.tick()
            assert b.cycle - t0 < 10000, "no used idx write"

    run_bench(dut, tb)
    return result["idx"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latency", type=int, default=1, help="read latency (cycles)")
    p.add_argument("--indirect", action="store_true", help="indirect descriptor tables")
    args = p.parse_args(argv)
    idx = timeline(read_latency=args.latency, indirect=args.indirect)
    print(f"used idx written in cycle {idx} after the doorbell")


if __name__ == "__main__":
    main()
