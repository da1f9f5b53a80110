"""The virtqueue engine's back end alone, behind the real read-return router.

The testbench plays the walker (records: up to two writable segments and where the chain
resumes), the core (answer beats, with random gaps), the eventq unit (fault reports) and
the DMA port (random grants; it answers the back end's descriptor reads past the recorded
segments after a random latency). The DMA writes must be exactly the model's: one write
per (beat, segment) piece, in order, with the answer's bytes, then the used element
``{head, bytes written}`` at ``used_ring + 8 * (idx % num)`` tagged with the idx that
publishes it; an eventq record writes the 24-byte fault report. An answer longer than the
writable part, and a non-writable descriptor past the recorded segments, raise ``error``
and write no used element.
"""

import random

import pytest
from amaranth.sim import Simulator

from viommu.rtl.engine.backend import BackEnd
from viommu.rtl.engine.common import _D_DESC, _SLOT_BE, _K_DATA, _K_USED
from engine_bench import NEXT, WRITE, desc, unpack, RouterHarness, ReturnPath

USED_RING = (0x30000, 0x31000)
NUM = 8
TABLE = 0x50000


def model_segments(mem, rec):
    """Every writable segment the answer may use, in order (the recorded ones, then the
    rest of the chain from the resume point, zero-length ones skipped)."""
    segs = list(rec["segs"])
    if rec["res"] is not None:
        base, idx = rec["res"]
        while True:
            addr, length, flags, nxt = unpack(mem[base + 16 * idx])
            if length:
                segs.append((addr, length))
            if not flags & NEXT:
                break
            idx = nxt
    return segs


def model_writes(beats, segs):
    """The data writes (addr, len, bytes) for answer ``beats`` (byte strings) over
    ``segs``, and the used length."""
    out, si, off_in_seg, total = [], 0, 0, 0
    for beat in beats:
        pos = 0
        while pos < len(beat):
            addr, length = segs[si]
            if off_in_seg == length:
                si, off_in_seg = si + 1, 0
                continue
            n = min(length - off_in_seg, len(beat) - pos)
            out.append((addr + off_in_seg, n, beat[pos:pos + n]))
            pos += n
            off_in_seg += n
            total += n
    return out, total


def fault_bytes(f):
    v = f["reason"] | f["flags"] << 32 | f["endpoint"] << 64 | f["address"] << 128
    return [v.to_bytes(24, "little")[8 * i:8 * i + 8] for i in range(3)]


def run_backend(mem, jobs, *, seed, cycles=8000):
    """``jobs``: dicts with ``q``, ``head``, ``segs``, ``res`` ((base, idx) or None),
    ``beats`` (requestq: the answer's byte strings) or ``fault`` (eventq)."""
    rng = random.Random(seed)
    be = BackEnd()
    h = RouterHarness(be, "slot_be")
    out = {"writes": [], "error": None, "pops": 0}

    async def tb(ctx):
        ret = ReturnPath(h.router)
        for q in range(2):
            ctx.set(be.cfg[q].used_ring, USED_RING[q])
            ctx.set(be.cfg[q].mask, NUM - 1)
            ctx.set(be.cfg[q].num, NUM)
        rq = [j for j in jobs if j["q"] == 0]
        eq = [j for j in jobs if j["q"] == 1]
        beats = [(b, i == len(j["beats"]) - 1) for j in rq for i, b in enumerate(j["beats"])]
        bi = 0
        for cycle in range(cycles):
            # the walker's record streams (valid held until taken)
            for s, lst in ((be.records, rq), (be.eq_records, eq)):
                ctx.set(s.valid, bool(lst))
                if lst:
                    j = lst[0]
                    segs = j["segs"] + [(0, 0)] * (2 - len(j["segs"]))
                    ctx.set(s.payload, {
                        "q": j["q"], "head": j["head"], "nseg": len(j["segs"]),
                        "seg0": {"addr": segs[0][0], "len": segs[0][1]},
                        "seg1": {"addr": segs[1][0], "len": segs[1][1]},
                        "res_valid": j["res"] is not None,
                        "res": {"ind": 1, "base": j["res"][0] if j["res"] else 0,
                                "size": 64, "idx": j["res"][1] if j["res"] else 0}})
            # the core's answer beats
            resp_valid = bi < len(beats) and rng.random() < 0.6
            ctx.set(be.resp.valid, resp_valid)
            if resp_valid:
                b, last = beats[bi]
                ctx.set(be.resp.payload, {"data": int.from_bytes(b, "little"),
                                          "nbytes": len(b), "last": last})
            # the eventq unit's oldest report
            ctx.set(be.report.valid, bool(eq_reports))
            if eq_reports:
                ctx.set(be.report.payload, eq_reports[0])
            # the arbiters' grants
            ctx.set(be.rd.ready, ctx.get(be.rd.valid) and rng.random() < 0.7)
            ctx.set(be.wr.ready, ctx.get(be.wr.valid) and rng.random() < 0.7)
            rb = ret.drive(ctx, cycle)

            for s, lst in ((be.records, rq), (be.eq_records, eq)):
                if lst and ctx.get(s.ready):
                    lst.pop(0)
            if resp_valid and ctx.get(be.resp.ready):
                bi += 1
            if ctx.get(be.report.ready):
                eq_reports.pop(0)
                out["pops"] += 1
            if ctx.get(be.rd.ready):
                p = ctx.get(be.rd.payload)
                assert (p.tag.dest, p.tag.sub, p.len) == (_D_DESC, _SLOT_BE, 16)
                ret.descs(cycle, rng.randint(1, 6), [mem[p.addr]], _SLOT_BE)
            if ctx.get(be.wr.ready):
                p = ctx.get(be.wr.payload)
                out["writes"].append((p.addr, p.len, p.data, p.tag.kind, p.tag.q,
                                      p.tag.value))
            if ctx.get(be.error):
                out["error"] = cycle
                return
            ret.after(ctx, rb)
            await ctx.tick()

    eq_reports = [j["fault"] for j in jobs if j["q"] == 1]
    sim = Simulator(h)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return out


def check(mem, jobs, out):
    """Split the writes at the used elements and compare each record's with the model."""
    groups, cur = [], []
    for w in out["writes"]:
        cur.append(w)
        if w[3] == _K_USED:
            groups.append(cur)
            cur = []
    assert cur == [], "data writes after the last used element"
    assert len(groups) == len(jobs)
    used_idx = [0, 0]
    by_q = {0: [j for j in jobs if j["q"] == 0], 1: [j for j in jobs if j["q"] == 1]}
    for g in groups:
        *data_writes, used = g
        q = used[4]
        j = by_q[q].pop(0)
        beats = j["beats"] if q == 0 else fault_bytes(j["fault"])
        exp, total = model_writes(beats, model_segments(mem, j))
        got = [(a, n, (d & (1 << 8 * n) - 1).to_bytes(n, "little"))
               for a, n, d, kind, _q, _v in data_writes]
        assert all(w[3] == _K_DATA for w in data_writes)
        assert got == exp, f"head {j['head']}: data writes differ"
        i = used_idx[q]
        assert used[:2] == (USED_RING[q] + 8 * (i % NUM), 8)
        assert used[2] == j["head"] | total << 32
        assert used[5] == (i + 1) & 0xffff, "used element tagged with the wrong idx"
        used_idx[q] += 1
    assert out["pops"] == sum(j["q"] == 1 for j in jobs)


def random_jobs(rng, mem, n):
    jobs = []
    table_idx = 0
    for k in range(n):
        q = 1 if rng.random() < 0.2 else 0
        n_seg = rng.randint(0, 2)
        segs = [(0x100000 * (k + 1) + 0x1000 * s + rng.randrange(64),
                 rng.choice([1, 3, 8, 13, 24, 40])) for s in range(n_seg)]
        # the rest of the chain, in a table (zero-length descriptors included)
        res = None
        if n_seg == 2 and rng.random() < 0.6 or n_seg < 2 and rng.random() < 0.3:
            start = table_idx
            n_more = rng.randint(1, 3)
            for i in range(n_more):
                last = i == n_more - 1
                ln = rng.choice([0, 5, 16, 64])
                mem[TABLE + 16 * table_idx] = desc(0x900000 + 0x1000 * table_idx, ln,
                                                    WRITE | (0 if last else NEXT),
                                                    0 if last else table_idx + 1)
                table_idx += 1
            res = (TABLE, start)
        j = {"q": q, "head": rng.randrange(1 << 16), "segs": segs, "res": res}
        room = sum(s[1] for s in model_segments(mem, j))
        if q:
            # at least 24 writable bytes (the walker's rule), in one or two segments
            cut = rng.choice([24, 1, 8, 13])
            j["segs"] = [(0x800000 + 0x100 * k, cut)]
            if cut < 24:
                j["segs"].append((0x880000 + 0x100 * k, 24 - cut + rng.randrange(8)))
            j["res"] = None
            j["fault"] = {"reason": rng.randrange(256), "flags": rng.randrange(1 << 32),
                          "endpoint": rng.randrange(1 << 32), "address": rng.randrange(1 << 64)}
        else:
            length = rng.randint(0, room)
            data = bytes(rng.randrange(256) for _ in range(length))
            j["beats"] = [data[i:i + 8] for i in range(0, len(data), 8)] or [b""]
        jobs.append(j)
    return jobs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_backend_scatters_answers_like_the_model(seed):
    rng = random.Random(200 + seed)
    mem = {}
    jobs = random_jobs(rng, mem, 14)
    out = run_backend(mem, [dict(j) for j in jobs], seed=seed)
    assert out["error"] is None
    check(mem, jobs, out)


def test_backend_rejects_an_answer_longer_than_the_writable_part():
    mem = {}
    ok = {"q": 0, "head": 5, "segs": [(0x1000, 10)], "res": None, "beats": [b"0123456789"[:8],
                                                                             b"89"]}
    long = {"q": 0, "head": 6, "segs": [(0x2000, 4), (0x3000, 5)], "res": None,
            "beats": [b"abcdefgh", b"ij"]}
    out = run_backend(mem, [ok, long], seed=1)
    assert out["error"] is not None
    assert [w for w in out["writes"] if w[3] == _K_USED] == [
        (USED_RING[0], 8, 5 | 10 << 32, _K_USED, 0, 1)]


def test_backend_rejects_a_readable_descriptor_past_the_segments():
    mem = {TABLE: desc(0x7000, 8, WRITE | NEXT, 1), TABLE + 16: desc(0x8000, 8, 0)}
    j = {"q": 0, "head": 9, "segs": [(0x1000, 4)], "res": (TABLE, 0),
         "beats": [b"abcdefgh", b"ijklmn"]}
    out = run_backend(mem, [j], seed=2)
    assert out["error"] is not None
    assert not any(w[3] == _K_USED for w in out["writes"])
