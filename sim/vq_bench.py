"""Test bench of the virtqueue engine with the real device core behind it.

:class:`EngineWithCore` connects a :class:`~viommu.rtl.engine.virtqueue.VirtqueueEngine` to a
:class:`~viommu.rtl.core.top.Core` (``req``/``resp``) with one ``clear`` for both.
:class:`VQBench` drives it from one Amaranth async testbench: guest memory
(:class:`~viommu.sim.dma_mem.DMAMemory`) behind the DMA port, the queue configuration,
doorbells and fault reports, and it watches ``irq_used`` / ``needs_reset``. Tests use
:class:`~viommu.sim.vring.SplitVirtqueue` on the same memory as the driver.
"""

from amaranth.hdl import Module, Signal, Elaboratable
from amaranth.lib import wiring
from amaranth.sim import Simulator

from viommu.rtl.core.top import Core
from viommu.rtl.core.params import CoreParams
from viommu.rtl.engine.virtqueue import VirtqueueEngine
from viommu.sim.core_bench import features_value
from viommu.sim.dma_mem import DMAMemory
from viommu.sim.model import DeviceModel, ALL_FEATURES
from viommu.sim.vring import SplitVirtqueue, BufferAllocator, check_answer


__all__ = ["EngineWithCore", "VQBench", "BenchRunner", "run_bench", "check_answer",
           "MEMORY_MAP"]


class EngineWithCore(Elaboratable):
    """Core + virtqueue engine, ``req``/``resp`` connected, one ``clear``."""

    def __init__(self, params=None, *, width=8, queue_size_max=256, fault_queue_depth=8,
                 index_base=0):
        self.params = params if params is not None else CoreParams(entries=16)
        self.core = Core(params=self.params)
        self.engine = VirtqueueEngine(width=width, queue_size_max=queue_size_max,
                                      fault_queue_depth=fault_queue_depth,
                                      _index_base=index_base)
        self.clear = Signal()

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = self.core
        m.submodules.engine = self.engine
        wiring.connect(m, self.engine.req, self.core.req)
        wiring.connect(m, self.core.resp, self.engine.resp)
        m.d.comb += [self.engine.clear.eq(self.clear), self.core.clear.eq(self.clear)]
        return m


#: Where the bench puts things in guest memory (queue areas sized for up to 4096 entries).
MEMORY_MAP = {
    "rq_desc": 0x10000, "rq_driver": 0x20000, "rq_device": 0x28000,
    "eq_desc": 0x40000, "eq_driver": 0x50000, "eq_device": 0x58000,
    "buffers": (0x60000, 0x100000),
    "size": 0x100000,
}


class VQBench:
    """Everything a test needs, driven from one testbench coroutine.

    Time only advances in :meth:`tick`; between ticks a test may change guest memory
    freely (it is the driver).
    """

    def __init__(self, dut, ctx, *, mem=None, rq_num=256, eq_num=8, features=ALL_FEATURES,
                 indirect=False, event_idx=False, read_latency=1, write_latency=1,
                 stall=0.0, seed=0, model=None):
        self.dut, self.ctx = dut, ctx
        self.eng = dut.engine
        mm = MEMORY_MAP
        self.mem = mem or DMAMemory(mm["size"], width=dut.engine.width,
                                    read_latency=read_latency, write_latency=write_latency,
                                    stall=stall, seed=seed)
        self.mem.attach(self.eng.dma)
        self.alloc = BufferAllocator(*mm["buffers"])
        self.index_base = dut.engine._index_base
        self.rq = SplitVirtqueue(self.mem, rq_num, mm["rq_desc"], mm["rq_driver"],
                                 mm["rq_device"], self.alloc, seed=seed,
                                 avail_idx=self.index_base)
        self.eq = SplitVirtqueue(self.mem, eq_num, mm["eq_desc"], mm["eq_driver"],
                                 mm["eq_device"], self.alloc, seed=seed + 1,
                                 avail_idx=self.index_base)
        self.model = model or DeviceModel(dut.params, features=features)
        self.features = frozenset(features)
        self.indirect, self.event_idx = indirect, event_idx
        self.cycle = 0
        self.irqs = []                # cycles with irq_used
        self.needs_reset = []         # cycles with needs_reset
        #: if set, called as ``observe(ctx)`` every cycle of :meth:`tick`, after the memory
        #: model has driven its outputs and before the clock edge (handshakes are visible)
        self.observe = None
        self._oneshot = []

    # --- setup -------------------------------------------------------------------------------

    def configure(self, ready=(1, 1), enable=1):
        ctx, eng = self.ctx, self.eng
        ctx.set(self.dut.core.features.as_value(), features_value(self.features))
        ctx.set(eng.indirect_desc, int(self.indirect))
        ctx.set(eng.event_idx, int(self.event_idx))
        for q, vq in enumerate((self.rq, self.eq)):
            cfg = eng.queues[q]
            ctx.set(cfg.ready, ready[q])
            ctx.set(cfg.num, vq.num)
            ctx.set(cfg.desc, vq.desc)
            ctx.set(cfg.driver, vq.driver)
            ctx.set(cfg.device, vq.device)
        ctx.set(eng.enable, enable)

    # --- time --------------------------------------------------------------------------------

    async def tick(self, n=1):
        ctx, eng, mem = self.ctx, self.eng, self.mem
        for _ in range(n):
            mem.pre(ctx)
            if self.observe is not None:
                self.observe(ctx)
            if ctx.get(eng.irq_used):
                self.irqs.append(self.cycle)
            if ctx.get(eng.needs_reset):
                self.needs_reset.append(self.cycle)
            await ctx.tick()
            mem.post()
            self.cycle += 1
            if self._oneshot:
                for sig in self._oneshot:
                    ctx.set(sig, 0)
                self._oneshot = []

    async def run_until(self, cond, timeout=20000, what="condition"):
        start = self.cycle
        while not cond():
            if self.cycle - start > timeout:
                raise TimeoutError(f"{what} not reached in {timeout} cycles")
            await self.tick()
        return self.cycle - start

    # --- stimuli -----------------------------------------------------------------------------

    def notify(self, q, index=None):
        """Ring queue ``q``'s doorbell (for one cycle, from the next tick)."""
        self.ctx.set(self.eng.notify.payload, q if index is None else index)
        self.ctx.set(self.eng.notify.valid, 1)
        self._oneshot.append(self.eng.notify.valid)

    def fault(self, reason, flags, endpoint, address):
        p = self.eng.faults.payload
        self.ctx.set(p.reason, reason)
        self.ctx.set(p.flags, flags)
        self.ctx.set(p.endpoint, endpoint)
        self.ctx.set(p.address, address)
        self.ctx.set(self.eng.faults.valid, 1)
        self._oneshot.append(self.eng.faults.valid)

    async def clear(self):
        self.ctx.set(self.dut.clear, 1)
        await self.tick()
        self.ctx.set(self.dut.clear, 0)
        self.model.reset()

    # --- requests ----------------------------------------------------------------------------

    def submit(self, readable, wlen=None, *, split=None, wsplit=None, indirect=None,
               scatter=False, publish=True):
        """Queue one request on the requestq; returns its chain (``tag`` = the model's
        expected answer). ``split`` / ``wsplit``: sizes of the readable / writable
        descriptors (default one each); ``wlen``: writable size (default: what the
        request type needs)."""
        readable = bytes(readable)
        if wlen is None:
            wlen = (self.dut.params.probe_size + 4 if readable[:1] == b"\x05" else 4)
        if split is None:
            split = [len(readable)]
        assert sum(split) == len(readable)
        parts, o = [], 0
        for n in split:
            parts.append(readable[o:o + n])
            o += n
        if wsplit is None:
            wsplit = [wlen] if wlen else []
        assert sum(wsplit) == wlen
        expect = self.model.execute(readable, wlen)
        return self.rq.add(parts, wsplit, indirect=self.indirect if indirect is None
                           else indirect, scatter=scatter, publish=publish, tag=expect)

    async def start_attached(self, domain=1, endpoint=0):
        """Configure both queues, then ATTACH ``endpoint`` to ``domain`` through the
        requestq and wait for its (checked) answer: the usual start of a MAP benchmark."""
        from viommu.sim.model import attach
        self.configure()
        await self.tick(2)
        chains = [self.submit(attach(domain, endpoint))]
        self.notify(0)
        await self.complete(chains)

    async def complete(self, chains, timeout=50000):
        """Wait until every chain is used; check each answer against the model."""
        pending = {id(c) for c in chains}
        done = []

        def collect():
            for c in self.rq.collect():
                done.append(c)
                pending.discard(id(c))
            return not pending

        await self.run_until(collect, timeout, "completion of the requests")
        for c in done:
            check_answer(c)
        return done


class BenchRunner:
    """One simulator, reused: building one for core + engine takes seconds, so tests run
    their testbenches one after the other on the same simulator, reset in between
    (every signal and memory back to its initial value)."""

    def __init__(self, **kwargs):
        self.dut = EngineWithCore(**kwargs)
        self.sim = Simulator(self.dut)
        self.sim.add_clock(1e-8)
        self._fn = None
        runner = self

        async def testbench(ctx):
            if runner._fn is not None:
                await runner._fn(ctx)

        self.sim.add_testbench(testbench)
        self._fresh = True

    def run(self, fn):
        """Run ``fn(ctx)`` from a fresh reset."""
        self._fn = fn
        try:
            if not self._fresh:
                self.sim.reset()
            self._fresh = False
            self.sim.run()
        finally:
            self._fn = None


def run_bench(dut, testbench):
    """Run ``testbench(ctx)`` on ``dut`` (an :class:`EngineWithCore`)."""
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
