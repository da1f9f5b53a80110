"""The virtqueue engine's packer alone: payload bytes to the core's request beats.

The testbench plays the walker (commands, credits) and the router (payload beats), with
random segment lengths, random junk above each read's valid bytes, random gaps on the
payload stream and a random ``ready`` from the core, and checks every beat against a
Python model of the packing: the bytes in order, 8 to a beat, ``last`` and ``wlen`` on
the request's last beat, one empty beat for an empty readable part, and every credit
given back.
"""

import random

import pytest
from amaranth.sim import Simulator

from viommu.rtl.engine.packer import Packer
from viommu.rtl.engine.common import READ_CAP, _REQ_FIFO_DEPTH


def _requests(rng, n):
    """``n`` requests: (segment byte strings, wlen). The readable part is at most READ_CAP
    bytes, as the walker caps it; some requests have none."""
    out = []
    for _ in range(n):
        segs = []
        total = 0
        for _ in range(rng.choice([0, 1, 1, 2, 3, 5])):
            if total == READ_CAP:
                break
            k = min(rng.choice([1, 2, 3, 7, 8, 9, 15, 16, 17, 36, 64, 128]), READ_CAP - total)
            segs.append(bytes(rng.randrange(256) for _ in range(k)))
            total += k
        out.append((segs, rng.randrange(1 << 16)))
    return out


def _expected_beats(reqs):
    beats = []
    for segs, wlen in reqs:
        data = b"".join(segs)
        n = max(1, -(-len(data) // 8))
        for i in range(n):
            chunk = data[8 * i:8 * i + 8]
            last = i == n - 1
            beats.append((chunk, last, wlen if last else None))
    return beats


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_packer_packs_bytes_like_the_model(seed):
    rng = random.Random(seed)
    reqs = _requests(rng, 60)
    expected = _expected_beats(reqs)
    dut = Packer()
    got = []
    credit_log = []

    # the commands the walker would queue, each with the credits it reserves
    cmds = []
    pays = []
    for segs, wlen in reqs:
        reserve = 0
        for s in segs:
            beats = -(-len(s) // 8)
            cmds.append(({"end": 0, "n": len(s), "wlen": 0, "reserve": 0}, beats))
            reserve += beats
            padded = s + bytes(rng.randrange(256) for _ in range(8 * beats - len(s)))
            pays += [int.from_bytes(padded[8 * i:8 * i + 8], "little") for i in range(beats)]
        cmds.append(({"end": 1, "n": 0, "wlen": wlen, "reserve": reserve + 1}, 1))

    async def tb(ctx):
        ci = pi = 0
        for cycle in range(20000):
            credits = ctx.get(dut.credits)
            credit_log.append(credits)
            # walker: one command a cycle while there are credits for it
            take = 0
            if ci < len(cmds) and cmds[ci][1] <= credits and ctx.get(dut.cmd_room) \
                    and rng.random() < 0.7:
                ctx.set(dut.cmd.payload, cmds[ci][0])
                ctx.set(dut.cmd.valid, 1)
                take = cmds[ci][1]
            else:
                ctx.set(dut.cmd.valid, 0)
            ctx.set(dut.cred_take, take)
            # router: payload beats in order, with gaps
            pay_valid = pi < len(pays) and rng.random() < 0.6
            ctx.set(dut.pay.valid, pay_valid)
            if pay_valid:
                ctx.set(dut.pay.payload, pays[pi])
            # core
            ctx.set(dut.req.ready, rng.random() < 0.5)
            if take:
                assert ctx.get(dut.cmd.ready)
                ci += 1
            if pay_valid and ctx.get(dut.pay.ready):
                pi += 1
            if ctx.get(dut.req.valid) and ctx.get(dut.req.ready):
                p = ctx.get(dut.req.payload)
                got.append((p.data.to_bytes(8, "little")[:p.nbytes], bool(p.last),
                            p.wlen if p.last else None))
            await ctx.tick()
            if len(got) == len(expected) and ci == len(cmds):
                break
        for _ in range(4):
            await ctx.tick()
        credit_log.append(ctx.get(dut.credits))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()

    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"beat {i}: got {g}, expected {e}"
    assert max(credit_log) <= _REQ_FIFO_DEPTH
    assert credit_log[-1] == _REQ_FIFO_DEPTH, "credits not all given back"


def test_packer_stops_feeding_the_core_when_fatal():
    dut = Packer()

    async def tb(ctx):
        ctx.set(dut.req.ready, 1)
        ctx.set(dut.cmd.payload, {"end": 1, "n": 0, "wlen": 24, "reserve": 1})
        ctx.set(dut.cmd.valid, 1)
        ctx.set(dut.cred_take, 1)
        await ctx.tick()
        ctx.set(dut.cmd.valid, 0)
        ctx.set(dut.cred_take, 0)
        ctx.set(dut.fatal, 1)
        for _ in range(6):
            assert not ctx.get(dut.req.valid)
            await ctx.tick()
        ctx.set(dut.fatal, 0)
        assert ctx.get(dut.req.valid)
        p = ctx.get(dut.req.payload)
        assert (p.nbytes, p.last, p.wlen) == (0, 1, 24)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
