"""The virtqueue engine's walker alone, behind the real read-return router.

The testbench plays P1/P2 (it loads each job's head slot, and for some indirect chains
the table slot, through the router, then hands the job over) and the DMA port (it answers
the walker's descriptor misses after a random latency). Random valid chains -- direct,
indirect, a direct chain ending in an INDIRECT descriptor, tables longer than a slot,
zero-length descriptors, more than two writable segments -- are checked against a Python
model of the walk: the payload reads (address, length, the 128-byte cap), the packer
commands, and the record (segments, resume point, ``wlen``). Each rule of a bad chain
must raise ``error`` and emit no record for it.
"""

import random

import pytest
from amaranth.sim import Simulator

from viommu.rtl.engine.walker import Walker
from viommu.rtl.engine.common import (READ_CAP, _D_DESC, _D_PAY, _SLOT_MISS, _HEAD_SLOTS,
                                      _EQ_REPORT)
from engine_bench import NEXT, WRITE, INDIRECT, desc, unpack, RouterHarness, ReturnPath

DESC0, DESC1 = 0x10000, 0x20000          # the two queues' descriptor tables
NUM = 64


class BadChain(Exception):
    pass


def model_walk(mem, q, head, *, num=NUM, indirect_desc=True):
    """The walk of the chain at ``head`` (the walker's rules): returns (payload reads,
    record fields, wlen, reserve) or raises BadChain."""
    base, size, ind = (DESC1 if q else DESC0), num, False
    idx, count, seen_w, rbytes, wtotal = head, 0, False, 0, 0
    pay, segs, res = [], [], None
    while True:
        count += 1
        if count > size:
            raise BadChain("loop")
        addr, length, flags, nxt = unpack(mem[base + 16 * idx])
        if flags & INDIRECT:
            if ind or not indirect_desc or flags & NEXT or length % 16 or length == 0:
                raise BadChain("indirect")
            base, size, ind = addr, min(length // 16, 0x10000), True
            idx, count = 0, 0
            continue
        if flags & WRITE:
            seen_w = True
            wtotal = min(wtotal + length, 0xfffff)
            if length:
                if len(segs) < 2:
                    segs.append((addr, length))
                elif res is None:
                    res = (int(ind), base, size, idx)
        elif seen_w:
            raise BadChain("readable after writable")
        elif not q and length and rbytes < READ_CAP:
            n = min(length, READ_CAP - rbytes)
            pay.append((addr, n))
            rbytes += n
        if flags & NEXT:
            if nxt >= size:
                raise BadChain("next out of range")
            idx = nxt
        else:
            break
    if q and wtotal < _EQ_REPORT:
        raise BadChain("eventq buffer too short")
    reserve = sum(-(-n // 8) for _a, n in pay) + 1
    return pay, {"q": q, "head": head, "segs": segs, "res": res}, min(wtotal, 0xffff), reserve


def random_chain(rng, mem, q, head, free, tables):
    """Write a random valid chain at ``head`` of queue ``q``'s table (``free``: unused
    indices of that table); ``tables``: next free address for indirect tables."""
    base = DESC1 if q else DESC0
    kind = rng.choice(["direct", "direct", "indirect", "tail-indirect"])
    if q:
        kind = rng.choice(["direct", "indirect"])

    def body(n_r, n_w):
        out = []
        for _ in range(n_r):
            out.append((0x100000 + rng.randrange(1 << 20), rng.choice([0, 1, 7, 8, 24, 40,
                                                                       100, 200]), 0))
        for _ in range(n_w):
            out.append((0x400000 + rng.randrange(1 << 20), rng.choice([0, 4, 12, 24, 64,
                                                                       1 << 17]), WRITE))
        return out

    n_r = rng.randint(0, 3)          # an eventq buffer's readable part is skipped
    n_w = rng.randint(1, 4)
    items = body(n_r, n_w)
    if q:
        items.append((0x500000, 24, WRITE))
    if kind == "indirect":
        addr = tables[0]
        tables[0] += 0x1000
        n = len(items)
        order = list(range(n))
        for i, (a, ln, f) in enumerate(items):
            nxt = i + 1 if i + 1 < n else 0
            mem[addr + 16 * i] = desc(a, ln, f | (NEXT if i + 1 < n else 0), nxt)
        mem[base + 16 * head] = desc(addr, 16 * n, INDIRECT)
        del order
        return
    if kind == "tail-indirect":
        split = rng.randint(1, len(items))
        direct, tail = items[:split - 1], items[split - 1:]
    else:
        direct, tail = items, None
    # the direct part: head, then free indices (sometimes head + 1, as Linux does)
    idxs = [head]
    for _ in range(len(direct) - 1 + (tail is not None)):
        i = head + 1 if head + 1 in free and rng.random() < 0.5 else rng.choice(sorted(free))
        free.discard(i)
        idxs.append(i)
    entries = list(direct)
    if tail is not None:
        taddr = tables[0]
        tables[0] += 0x1000
        for i, (a, ln, f) in enumerate(tail):
            mem[taddr + 16 * i] = desc(a, ln, f | (NEXT if i + 1 < len(tail) else 0), i + 1
                                       if i + 1 < len(tail) else 0)
        entries.append((taddr, 16 * len(tail), INDIRECT))
    for k, (a, ln, f) in enumerate(entries):
        last = k == len(entries) - 1
        mem[base + 16 * idxs[k]] = desc(a, ln, f | (0 if last else NEXT),
                                        0 if last else idxs[k + 1])


def run_walker(mem, jobs, *, seed, cycles=6000, indirect_desc=True):
    """Jobs ``(q, head, preload_table)``, one after another; returns what came out."""
    rng = random.Random(seed)
    walker = Walker()
    h = RouterHarness(walker, "slot_walk")
    out = {"pay": [], "pk": [], "rec": [], "error": None, "h_free": 0, "t_free": 0}

    async def tb(ctx):
        ret = ReturnPath(h.router)
        ctx.set(walker.cfg[0].desc, DESC0)
        ctx.set(walker.cfg[0].num, NUM)
        ctx.set(walker.cfg[1].desc, DESC1)
        ctx.set(walker.cfg[1].num, NUM)
        ctx.set(walker.indirect_desc, indirect_desc)
        ctx.set(walker.credits, 128)
        ctx.set(walker.pk_room, 1)
        ctx.set(walker.records.ready, 1)
        ctx.set(walker.eq_records.ready, 1)
        job = None
        issued = 0
        for cycle in range(cycles):
            # P1/P2: load the next job's slots, then offer it
            ctx.set(h.clr, 0)
            if job is None and jobs and issued == out["h_free"]:
                q, head, preload = jobs.pop(0)
                hslot = issued % _HEAD_SLOTS
                tslot = issued % 8
                issued += 1
                base = DESC1 if q else DESC0
                hn = 2 if (q == 0 and head + 1 < NUM) else 1
                ctx.set(h.clr, 1 << hslot | 1 << (_HEAD_SLOTS + tslot))
                ret.descs(cycle, rng.randint(1, 5),
                          [mem.get(base + 16 * (head + i), 0) for i in range(hn)], hslot)
                has_t, tn = 0, 0
                addr, length, flags, _n = unpack(mem[base + 16 * head])
                if preload and flags & INDIRECT and not flags & NEXT and length and \
                        length % 16 == 0:
                    has_t, tn = 1, min(length // 16, 4)
                    ret.descs(cycle, rng.randint(1, 5),
                              [mem.get(addr + 16 * i, 0) for i in range(tn)],
                              _HEAD_SLOTS + tslot)
                job = {"a": {"q": q, "head": head, "hslot": hslot, "hn": hn},
                       "has_t": has_t, "tslot": tslot, "tn": tn}
            ctx.set(walker.job.valid, job is not None)
            if job is not None:
                ctx.set(walker.job.payload, job)
            # the arbiter's grant: ``ready`` only with ``valid``
            ctx.set(walker.rd.ready, ctx.get(walker.rd.valid) and rng.random() < 0.7)
            b = ret.drive(ctx, cycle)

            # this cycle's handshakes
            if job is not None and ctx.get(walker.job.ready):
                job = None
            if ctx.get(walker.rd.valid) and ctx.get(walker.rd.ready):
                p = ctx.get(walker.rd.payload)
                if p.tag.dest == _D_PAY:
                    out["pay"].append((p.addr, p.len))
                else:
                    assert p.tag.dest == _D_DESC and p.tag.sub == _SLOT_MISS
                    assert p.len % 16 == 0 and 16 <= p.len <= 64
                    ret.descs(cycle, rng.randint(1, 8),
                              [mem.get(p.addr + 16 * i, 0) for i in range(p.len // 16)],
                              _SLOT_MISS)
            if ctx.get(walker.pk_cmd.valid):
                p = ctx.get(walker.pk_cmd.payload)
                out["pk"].append((p.end, p.n, p.wlen, p.reserve))
            for s in (walker.records, walker.eq_records):
                if ctx.get(s.valid) and ctx.get(s.ready):
                    r = ctx.get(s.payload)
                    segs = [(r.seg0.addr, r.seg0.len), (r.seg1.addr, r.seg1.len)][:r.nseg]
                    res = (r.res.ind, r.res.base, r.res.size, r.res.idx) \
                        if r.res_valid else None
                    out["rec"].append({"q": r.q, "head": r.head, "segs": segs, "res": res})
            out["h_free"] += ctx.get(walker.h_free)
            out["t_free"] += ctx.get(walker.t_free)
            if ctx.get(walker.error):
                out["error"] = cycle
                return
            ret.after(ctx, b)
            await ctx.tick()

    sim = Simulator(h)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_walker_walks_valid_chains_like_the_model(seed):
    rng = random.Random(100 + seed)
    mem = {}
    jobs, expected = [], []
    tables = [0x80000]
    for q in range(2):
        free = set(range(NUM))
        heads = []
        for _ in range(4 if q == 0 else 2):
            h = rng.choice(sorted(free))
            free.discard(h)
            heads.append(h)
        for h in heads:
            random_chain(rng, mem, q, h, free, tables)
            jobs.append((q, h, rng.random() < 0.5))
    rng.shuffle(jobs)
    for q, h, _p in jobs:
        expected.append(model_walk(mem, q, h))
    n_jobs = len(jobs)
    out = run_walker(mem, list(jobs), seed=seed)

    assert out["error"] is None, "a valid chain raised error"
    assert len(out["rec"]) == n_jobs
    assert out["h_free"] == n_jobs
    assert out["pay"] == [p for e in expected for p in e[0]]
    pk = []
    for pay, rec, wlen, reserve in expected:
        if rec["q"] == 0:
            pk += [(0, n, 0, 0) for _a, n in pay] + [(1, 0, wlen, reserve)]
    assert out["pk"] == pk
    assert out["rec"] == [e[1] for e in expected]


BAD = {
    "bad head next": lambda mem: (
        mem.__setitem__(DESC0 + 16 * 3, desc(0x1000, 8, NEXT, NUM))),
    "loop": lambda mem: (
        mem.__setitem__(DESC0 + 16 * 3, desc(0x1000, 8, NEXT, 5)),
        mem.__setitem__(DESC0 + 16 * 5, desc(0x2000, 8, NEXT, 3))),
    "readable after writable": lambda mem: (
        mem.__setitem__(DESC0 + 16 * 3, desc(0x1000, 8, WRITE | NEXT, 4)),
        mem.__setitem__(DESC0 + 16 * 4, desc(0x2000, 8, 0))),
    "indirect with next": lambda mem: (
        mem.__setitem__(DESC0 + 16 * 3, desc(0x9000, 32, INDIRECT | NEXT, 4)),
        mem.__setitem__(DESC0 + 16 * 4, desc(0x2000, 8, WRITE))),
    "indirect len not a multiple of 16": lambda mem: (
        mem.__setitem__(DESC0 + 16 * 3, desc(0x9000, 24, INDIRECT))),
    "nested indirect": lambda mem: (
        mem.__setitem__(DESC0 + 16 * 3, desc(0x9000, 32, INDIRECT)),
        mem.__setitem__(0x9000, desc(0x1000, 8, NEXT, 1)),
        mem.__setitem__(0x9010, desc(0xa000, 16, INDIRECT))),
    "next out of an indirect table": lambda mem: (
        mem.__setitem__(DESC0 + 16 * 3, desc(0x9000, 32, INDIRECT)),
        mem.__setitem__(0x9000, desc(0x1000, 8, NEXT, 2))),
    "loop in an indirect table": lambda mem: (
        mem.__setitem__(DESC0 + 16 * 3, desc(0x9000, 48, INDIRECT)),
        mem.__setitem__(0x9000, desc(0x1000, 8, NEXT, 1)),
        mem.__setitem__(0x9010, desc(0x1000, 8, NEXT, 2)),
        mem.__setitem__(0x9020, desc(0x1000, 8, NEXT, 0))),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_walker_rejects_bad_chain(name):
    """A good chain, then the bad one at head 3: the good one's record comes out, then
    ``error`` rises before any record of the bad one."""
    mem = {DESC0 + 16 * 0: desc(0x1000, 36, NEXT, 1), DESC0 + 16 * 1: desc(0x2000, 64, WRITE)}
    BAD[name](mem)
    with pytest.raises(BadChain):
        model_walk(mem, 0, 3)
    out = run_walker(mem, [(0, 0, False), (0, 3, True)], seed=7)
    assert out["error"] is not None, f"{name}: no error"
    assert [r["head"] for r in out["rec"]] == [0]


def test_walker_rejects_indirect_without_the_feature():
    mem = {DESC0 + 16 * 2: desc(0x9000, 16, INDIRECT), 0x9000: desc(0x2000, 64, WRITE)}
    out = run_walker(mem, [(0, 2, False)], seed=3, indirect_desc=False)
    assert out["error"] is not None and out["rec"] == []


def test_walker_rejects_short_eventq_buffer():
    mem = {DESC1 + 16 * 1: desc(0x2000, 8, NEXT | WRITE, 2),
           DESC1 + 16 * 2: desc(0x3000, 15, WRITE)}
    with pytest.raises(BadChain):
        model_walk(mem, 1, 1)
    out = run_walker(mem, [(1, 1, False)], seed=4)
    assert out["error"] is not None and out["rec"] == []
