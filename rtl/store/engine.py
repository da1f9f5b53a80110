"""The store engine: FIND, MAP, UNMAP and domain deaths over the hash of fork keys."""

from amaranth.hdl import Module, Signal, Cat, Const, Mux, Array
from amaranth.lib import wiring, stream
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .layouts import (StoreOp, StoreStatus, MemOp, GEN_BITS, op_layout, result_layout,
                      record_layout)
from .memory import StoreMemorySignature
from ..util import priority_encode


__all__ = ["StoreEngine"]


def _bit_length(value, width):
    """``value.bit_length()`` of a ``width``-bit value: 0 when it is 0."""
    any_, idx = priority_encode(value[::-1], width)
    return Mux(any_, width - idx, 0)


def _fold(value, bits):
    """``value`` folded to ``bits`` bits by XOR of its ``bits``-wide chunks."""
    out = Const(0, bits)
    for lo in range(0, len(value), bits):
        out = out ^ value[lo:lo + bits]
    return out


class StoreEngine(wiring.Component):
    """Executes store operations one at a time against the store's memory
    (``docs/mapping-store.md`` describes the structure; ``sim/store_model.py`` is its
    model, and this engine answers as it does).

    Ports
    -----
    op : In(stream.Signature(op_layout))
        One operation (:class:`~.layouts.StoreOp`): FIND of the page ``start``; MAP of
        ``[start, end] -> phys`` with ``read``/``write``/``mmio``; UNMAP of
        ``[start, end]``, whose first (last) page it covers only in part when
        ``start_partial`` (``end_partial``) is set; KILL of ``slot``. ``start <= end`` (the
        executor answers a reversed range before it reaches the store). Taken in the
        engine's idle cycle.
    result : Out(stream.Signature(result_layout))
        The operation's answer (:class:`~.layouts.StoreStatus`), with the record FIND
        found and the number of mappings UNMAP removed.
    mem : Out(StoreMemorySignature)
        The store's memory (block RAM or external, see :mod:`.memory`).
    live : Out
        Live mappings (every record not yet removed, of a domain not dead).
    nomem_count : Out(32)
        MAPs refused because every record held a live mapping (saturating).
    epoch : Out(16)
        Incremented at every removal and every domain death: a cache fill that read the
        store before the change sees it moved and drops what it read.
    ready : Out(1)
        The heads are cleared: low after a reset while the memory writes NULL to every
        head (``n_heads`` cycles in block RAM; ``4 n_heads`` bytes in 4 KiB bursts in
        external memory); no operation is taken meanwhile.

    In a cycle, the engine does one step of its state machine: it sends at most one
    memory access and takes at most one answer. Each chain step is a record read, its
    answer, and a cycle that compares the record with the key (3 cycles with block RAM);
    each key probed adds a head read and its answer. Costs per operation are those of
    the model's accounting (``docs/mapping-store.md``): one probe per level the domain
    uses for FIND, MAP of a page and UNMAP of one mapping; one probe per covered block
    otherwise, or a sweep of every chain when the range holds ``n_heads / 2`` pages or
    more. KILL is one cycle unless the slot's generation would wrap onto records not yet
    reaped. When idle with stale records, the engine reaps one chain at a time, taking a
    new operation between chains.
    """

    def __init__(self, params):
        self._p = params
        p = params
        super().__init__({
            "op":          In(stream.Signature(op_layout(p))),
            "result":      Out(stream.Signature(result_layout(p))),
            "mem":         Out(StoreMemorySignature(p)),
            "live":        Out(p.ptr_bits),
            "nomem_count": Out(32),
            "epoch":       Out(16),
            "ready":       Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self._p
        pb, hb, pw, S, L = p.page_bits, p.hash_bits, p.ptr_bits, p.slots, p.levels
        NULL = p.null
        cmd, rdata = self.mem.cmd, self.mem.rdata
        rec_shape = record_layout(p)

        # --- per-slot state ---------------------------------------------------------------
        gens = [Signal(GEN_BITS, name=f"gen{s}") for s in range(S)]
        #: the slots' generations, for testbenches that read the store's contents
        self.generations = gens
        gen = Array(gens)
        oldest = Array(Signal(GEN_BITS, name=f"oldest{s}") for s in range(S))
        snap = Array(Signal(GEN_BITS, name=f"snap{s}") for s in range(S))
        mask = Array(Signal(L, name=f"levels{s}") for s in range(S))
        live_slot = Array(Signal(pw, name=f"live{s}") for s in range(S))
        # count per (slot, level) of live records, tagged with the slot's generation so
        # that a domain's death zeroes all of them at once
        counts = Memory(shape=GEN_BITS + pw, depth=S * 64, init=[])
        m.submodules.counts = counts
        cnt_rd = counts.read_port(transparent_for=())
        cnt_wr = counts.write_port()

        # --- engine registers -------------------------------------------------------------
        o = Signal(op_layout(p), name="o")
        used = Signal(pw)                 # live + stale records
        stale = Signal(pw)
        free_head = Signal(pw, init=NULL)
        hwm = Signal(pw + 1)              # records [hwm, capacity) were never used
        reap_head = Signal(hb)
        pass_started = Signal()

        lo = Signal(pb)                   # the range the current task compares with
        hi = Signal(pb)
        todo = Signal(L)                  # levels still to probe
        j = Signal(p.level_bits)          # the level being probed
        lowmask = Signal(pb)              # (1 << j) - 1
        blk = Signal(pb)                  # the block being probed (at level j)
        blk_hi = Signal(pb)
        kbase = Signal(pb)                # blk << j
        sweep = Signal()                  # walk every chain rather than keys
        h = Signal(hb)                    # the head of the chain being walked
        cur = Signal(pw)
        prev = Signal(pw)
        rec = Signal(rec_shape, name="rec")
        rec_next = Signal(pw)
        removed = Signal(pw)
        status = Signal(StoreStatus)
        ins_idx = Signal(pw)
        ins_next = Signal(pw)
        ins_level = Signal(p.level_bits)
        cnt_up = Signal()                 # the count update adds (MAP) or subtracts

        # the task the walker serves
        T_FIND, T_MAP, T_UNMAP_S, T_UNMAP_E, T_UNMAP_RM, T_REAP = range(6)
        task = Signal(range(6))
        # where a removal returns to, and where a reaped chain returns to
        reap_ret = Signal(range(3))       # 0: idle, 1: MAP's insert, 2: KILL
        single = Signal()                 # UNMAP's single-mapping removal

        slot = o.slot
        live = Signal(pw)
        m.d.comb += self.live.eq(live)

        level_mix = Array(Const(v, hb) for v in p.level_mix)
        slot_mix = Array(Const(v, hb) for v in p.slot_mix)
        key_head = Signal(hb)
        m.d.comb += key_head.eq(_fold(blk, hb) ^ level_mix[j] ^ slot_mix[slot])

        def respond(st):
            m.d.sync += status.eq(st)
            m.next = "RESULT"

        def start_levels(t, page_lo, page_hi):
            m.d.sync += [task.eq(t), lo.eq(page_lo), hi.eq(page_hi), todo.eq(mask[slot]),
                         sweep.eq(0)]
            m.next = "LEVEL"

        def start_enumeration(t, start, end):
            """Probe every block of [start, end] at every level in use, or sweep."""
            m.d.sync += [task.eq(t), lo.eq(start), hi.eq(end), todo.eq(mask[slot])]
            with m.If(end - start >= p.n_heads // 2):
                m.d.sync += [sweep.eq(1), h.eq(0)]
                m.next = "SWEEP_HEAD"
            with m.Else():
                m.d.sync += sweep.eq(0)
                m.next = "LEVEL"

        def read(op, index):
            m.d.comb += [cmd.valid.eq(1), cmd.payload.op.eq(op), cmd.payload.index.eq(index)]

        def read_key_head(then):
            """Read the head of key ``(slot, j, blk)``, remembering which head it is."""
            read(MemOp.READ_HEAD, key_head)
            with m.If(cmd.ready):
                m.d.sync += h.eq(key_head)
                m.next = then

        def write(op, index, ptr, body=None):
            m.d.comb += [cmd.valid.eq(1), cmd.payload.op.eq(op), cmd.payload.index.eq(index),
                         cmd.payload.ptr.eq(ptr)]
            if body is not None:
                m.d.comb += cmd.payload.body.eq(body)

        def chain_end():
            with m.If(task == T_REAP):
                m.next = "REAP_END"
            with m.Elif(sweep):
                m.next = "SWEEP_NEXT"
            with m.Else():
                m.next = "KEY_NEXT"

        def step_to(nxt):
            m.d.sync += cur.eq(nxt)
            with m.If(nxt == NULL):
                chain_end()
            with m.Else():
                m.next = "REC_RD"

        m.d.comb += [self.result.payload.status.eq(status),
                     self.result.payload.record.eq(rec),
                     self.result.payload.removed.eq(removed)]

        # While no pass is under way and nothing is stale, every slot's oldest generation
        # is its current one.
        with m.If(stale == 0):
            m.d.sync += [oldest[s].eq(gen[s]) for s in range(S)]

        with m.FSM(name="fsm", init="CLEAR"):
            # After a reset: the memory sets every head to NULL (in bursts, in external
            # memory); it takes the next access once it has finished.
            with m.State("CLEAR"):
                write(MemOp.CLEAR, 0, NULL)
                with m.If(cmd.ready):
                    m.next = "CLEAR_WAIT"

            with m.State("CLEAR_WAIT"):
                with m.If(cmd.ready):
                    m.d.sync += self.ready.eq(1)
                    m.next = "IDLE"

            with m.State("IDLE"):
                m.d.comb += self.op.ready.eq(1)
                m.d.sync += [removed.eq(0), single.eq(0)]
                with m.If(stale == 0):
                    m.d.sync += [reap_head.eq(0), pass_started.eq(0)]
                with m.If(self.op.valid):
                    m.d.sync += o.eq(self.op.payload)
                    m.next = "DISPATCH"
                with m.Elif(stale != 0):
                    m.d.sync += reap_ret.eq(0)
                    m.next = "REAP_START"

            with m.State("DISPATCH"):
                with m.Switch(o.op):
                    with m.Case(StoreOp.FIND):
                        start_levels(T_FIND, o.start, o.start)
                    with m.Case(StoreOp.MAP):
                        start_enumeration(T_MAP, o.start, o.end)
                    with m.Case(StoreOp.UNMAP):
                        start_levels(T_UNMAP_S, o.start, o.start)
                    with m.Case(StoreOp.KILL):
                        m.next = "KILL"

            # --- key probes: each level in ``todo``, each block of [lo, hi] at it ---------
            with m.State("LEVEL"):
                any_, jn = priority_encode(todo, L)
                m.d.sync += [j.eq(jn),
                             lowmask.eq(Cat(Const(1, 1).replicate(pb) << jn)[:pb] ^
                                        Const((1 << pb) - 1, pb))]
                with m.If(any_):
                    m.next = "LEVEL_SET"
                with m.Else():
                    m.next = "LEVELS_DONE"

            with m.State("LEVEL_SET"):
                m.d.sync += [blk.eq(lo >> j), blk_hi.eq(hi >> j), kbase.eq(lo & ~lowmask)]
                m.next = "KEY_HEAD"

            with m.State("KEY_HEAD"):
                read_key_head("HEAD_WAIT")

            with m.State("KEY_NEXT"):
                with m.If(blk != blk_hi):
                    m.d.sync += [blk.eq(blk + 1), kbase.eq(kbase + lowmask + 1)]
                    m.next = "KEY_HEAD"
                with m.Else():
                    m.d.sync += todo.eq(todo & ~(Const(1, L) << j))
                    m.next = "LEVEL"

            # --- sweeps: every chain -----------------------------------------------------
            with m.State("SWEEP_HEAD"):
                read(MemOp.READ_HEAD, h)
                with m.If(cmd.ready):
                    m.next = "HEAD_WAIT"

            with m.State("SWEEP_NEXT"):
                with m.If(h == p.n_heads - 1):
                    m.next = "LEVELS_DONE"
                with m.Else():
                    m.d.sync += h.eq(h + 1)
                    m.next = "SWEEP_HEAD"

            # --- the chain walk ------------------------------------------------------------
            with m.State("HEAD_WAIT"):
                m.d.comb += rdata.ready.eq(1)
                with m.If(rdata.valid):
                    m.d.sync += prev.eq(NULL)
                    step_to(rdata.payload.ptr)

            with m.State("REC_RD"):
                read(MemOp.READ_REC, cur)
                with m.If(cmd.ready):
                    m.next = "REC_WAIT"

            with m.State("REC_WAIT"):
                m.d.comb += rdata.ready.eq(1)
                with m.If(rdata.valid):
                    m.d.sync += [rec.eq(rdata.payload.body), rec_next.eq(rdata.payload.ptr)]
                    m.next = "CHECK"

            with m.State("CHECK"):
                # Decide on the record just read, for the task.
                rec_live = rec.gen == gen[rec.slot]
                mine = (rec.slot == slot) & rec_live
                key = mine & (rec.level == j) & ((rec.start & ~lowmask) == kbase)
                ovl = (rec.start <= hi) & (rec.end >= lo)
                with m.If(sweep):
                    # a sweep or the reaper: every record of the chain
                    with m.If(task == T_REAP):
                        with m.If(~rec_live):
                            m.next = "RM_LINK"
                        with m.Else():
                            m.d.sync += prev.eq(cur)
                            step_to(rec_next)
                    with m.Elif(mine & ovl):
                        with m.If(task == T_MAP):
                            respond(StoreStatus.REFUSED)
                        with m.Else():
                            m.next = "RM_LINK"
                    with m.Else():
                        m.d.sync += prev.eq(cur)
                        step_to(rec_next)
                with m.Elif(~key):
                    m.d.sync += prev.eq(cur)
                    step_to(rec_next)
                with m.Elif(~ovl):
                    m.next = "KEY_NEXT"     # the key's one record lies elsewhere in its block
                with m.Else():
                    with m.Switch(task):
                        with m.Case(T_FIND):
                            respond(StoreStatus.OK)
                        with m.Case(T_MAP):
                            respond(StoreStatus.REFUSED)
                        with m.Case(T_UNMAP_S):
                            # the mapping holding ``start``: it sticks out if it starts
                            # before it, or the range starts inside its first page
                            with m.If((rec.start < o.start) | o.start_partial |
                                      (rec.end > o.end) |
                                      ((rec.end == o.end) & o.end_partial)):
                                respond(StoreStatus.REFUSED)
                            with m.Elif(rec.end == o.end):
                                m.d.sync += single.eq(1)     # the only one: remove it
                                m.next = "RM_LINK"
                            with m.Else():
                                start_levels(T_UNMAP_E, o.end, o.end)
                        with m.Case(T_UNMAP_E):
                            # the mapping holding ``end``
                            with m.If((rec.end > o.end) | o.end_partial):
                                respond(StoreStatus.REFUSED)
                            with m.Else():
                                start_enumeration(T_UNMAP_RM, o.start, o.end)
                        with m.Case(T_UNMAP_RM):
                            m.next = "RM_LINK"

            # --- removal of record ``cur`` (after ``prev`` in chain ``h``) ---------------
            with m.State("RM_LINK"):
                with m.If(prev == NULL):
                    write(MemOp.WRITE_HEAD, h, rec_next)
                with m.Else():
                    write(MemOp.WRITE_NEXT, prev, rec_next)
                with m.If(cmd.ready):
                    m.next = "RM_FREE"

            with m.State("RM_FREE"):
                write(MemOp.WRITE_NEXT, cur, free_head)
                with m.If(cmd.ready):
                    m.d.sync += [free_head.eq(cur), used.eq(used - 1)]
                    with m.If(task == T_REAP):
                        m.d.sync += stale.eq(stale - 1)
                        step_to(rec_next)
                    with m.Else():
                        m.d.sync += [live.eq(live - 1), removed.eq(removed + 1),
                                     self.epoch.eq(self.epoch + 1),
                                     cnt_up.eq(0), ins_level.eq(rec.level)]
                        with m.Switch(slot):
                            for s in range(S):
                                with m.Case(s):
                                    m.d.sync += live_slot[s].eq(live_slot[s] - 1)
                        m.next = "CNT_RD"

            # --- the count of (slot, level): read, then write with the change -------------
            with m.State("CNT_RD"):
                m.d.comb += [cnt_rd.addr.eq(Cat(ins_level, slot)), cnt_rd.en.eq(1)]
                m.next = "CNT_WR"

            with m.State("CNT_WR"):
                cur_gen = gen[slot]
                old = Mux(cnt_rd.data[pw:] == cur_gen, cnt_rd.data[:pw], 0)
                new = Mux(cnt_up, old + 1, old - 1)
                m.d.comb += [cnt_wr.addr.eq(Cat(ins_level, slot)), cnt_wr.en.eq(1),
                             cnt_wr.data.eq(Cat(new[:pw], cur_gen))]
                bit = Const(1, L) << ins_level
                with m.Switch(slot):
                    for s in range(S):
                        with m.Case(s):
                            with m.If(cnt_up):
                                m.d.sync += mask[s].eq(mask[s] | bit)
                            with m.Elif(new[:pw] == 0):
                                m.d.sync += mask[s].eq(mask[s] & ~bit)
                with m.If(cnt_up):
                    respond(StoreStatus.OK)                  # MAP done
                with m.Elif(single):
                    respond(StoreStatus.OK)                  # the one mapping removed
                with m.Elif(sweep):
                    step_to(rec_next)
                with m.Else():
                    m.next = "KEY_NEXT"

            with m.State("LEVELS_DONE"):
                with m.Switch(task):
                    with m.Case(T_FIND):
                        respond(StoreStatus.ABSENT)
                    with m.Case(T_UNMAP_S):
                        start_levels(T_UNMAP_E, o.end, o.end)
                    with m.Case(T_UNMAP_E):
                        start_enumeration(T_UNMAP_RM, o.start, o.end)
                    with m.Case(T_UNMAP_RM):
                        respond(StoreStatus.OK)
                    with m.Case(T_MAP):
                        m.next = "INS_CHECK"

            # --- MAP's insertion -----------------------------------------------------------
            with m.State("INS_CHECK"):
                with m.If(used == p.capacity):
                    with m.If(stale != 0):
                        m.d.sync += reap_ret.eq(1)
                        m.next = "REAP_START"
                    with m.Else():
                        m.d.sync += self.nomem_count.eq(
                            self.nomem_count + (self.nomem_count != 0xffffffff))
                        respond(StoreStatus.NOMEM)
                with m.Elif(free_head != NULL):
                    read(MemOp.READ_REC, free_head)
                    with m.If(cmd.ready):
                        m.next = "INS_FREE_WAIT"
                with m.Else():
                    m.d.sync += [ins_idx.eq(hwm), hwm.eq(hwm + 1)]
                    m.next = "INS_LEVEL"

            with m.State("INS_FREE_WAIT"):
                m.d.comb += rdata.ready.eq(1)
                with m.If(rdata.valid):
                    m.d.sync += [ins_idx.eq(free_head), free_head.eq(rdata.payload.ptr)]
                    m.next = "INS_LEVEL"

            with m.State("INS_LEVEL"):
                m.d.sync += [j.eq(_bit_length(o.start ^ o.end, pb))]
                m.next = "INS_BLOCK"

            with m.State("INS_BLOCK"):
                m.d.sync += [blk.eq(o.start >> j), ins_level.eq(j)]
                m.next = "INS_HEAD"

            with m.State("INS_HEAD"):
                read_key_head("INS_HEAD_WAIT")

            with m.State("INS_HEAD_WAIT"):
                m.d.comb += rdata.ready.eq(1)
                with m.If(rdata.valid):
                    m.d.sync += ins_next.eq(rdata.payload.ptr)
                    m.next = "INS_WRITE"

            with m.State("INS_WRITE"):
                body = Signal(rec_shape)
                m.d.comb += [body.slot.eq(slot), body.gen.eq(gen[slot]),
                             body.level.eq(ins_level), body.start.eq(o.start),
                             body.end.eq(o.end), body.phys.eq(o.phys), body.read.eq(o.read),
                             body.write.eq(o.write), body.mmio.eq(o.mmio)]
                write(MemOp.WRITE_REC, ins_idx, ins_next, body)
                with m.If(cmd.ready):
                    m.next = "INS_LINK"

            with m.State("INS_LINK"):
                write(MemOp.WRITE_HEAD, h, ins_idx)
                with m.If(cmd.ready):
                    m.d.sync += [used.eq(used + 1), live.eq(live + 1), cnt_up.eq(1)]
                    with m.Switch(slot):
                        for s in range(S):
                            with m.Case(s):
                                m.d.sync += live_slot[s].eq(live_slot[s] + 1)
                    m.next = "CNT_RD"

            # --- a domain's death ----------------------------------------------------------
            with m.State("KILL"):
                with m.If((gen[slot] + 1)[:GEN_BITS] == oldest[slot]):
                    # the new generation would be that of records not yet reaped
                    m.d.sync += reap_ret.eq(2)
                    m.next = "REAP_START"
                with m.Else():
                    m.d.sync += [stale.eq(stale + live_slot[slot]),
                                 live.eq(live - live_slot[slot]),
                                 self.epoch.eq(self.epoch + 1)]
                    with m.Switch(slot):
                        for s in range(S):
                            with m.Case(s):
                                m.d.sync += [gen[s].eq(gen[s] + 1), live_slot[s].eq(0),
                                             mask[s].eq(0)]
                    respond(StoreStatus.OK)

            # --- the reaper: one chain, unlinking stale records ----------------------------
            with m.State("REAP_START"):
                with m.If(~pass_started):
                    m.d.sync += [snap[s].eq(gen[s]) for s in range(S)]
                    m.d.sync += pass_started.eq(1)
                m.d.sync += [task.eq(T_REAP), sweep.eq(1), h.eq(reap_head)]
                m.next = "SWEEP_HEAD"

            with m.State("REAP_END"):
                m.d.sync += reap_head.eq(reap_head + 1)
                with m.If(reap_head == p.n_heads - 1):
                    m.d.sync += [oldest[s].eq(snap[s]) for s in range(S)]
                    m.d.sync += pass_started.eq(0)
                with m.Switch(reap_ret):
                    with m.Case(0):
                        m.next = "IDLE"
                    with m.Case(1):
                        m.d.sync += task.eq(T_MAP)
                        m.next = "INS_CHECK"
                    with m.Case(2):
                        m.next = "KILL"

            with m.State("RESULT"):
                m.d.comb += self.result.valid.eq(1)
                with m.If(self.result.ready):
                    m.next = "IDLE"
        return m
