"""The complete device on virtio-mmio: register block, virtqueue engine, core, AXI4 master.

Data flow::

    s_axil --> VirtioMMIORegisters --queues, features, notify, reset--> VirtqueueEngine
                      ^  irq_used / needs_reset                           |  ^   |
                      |                                         req beats v  |   | DMA
                    irq                                            Core ----+   v
                                                                    |  ^   AXI4DMAMaster
    lookup[i].req ------------------------------------------------->|  |      |
    lookup[i].resp <------------------------------------------------+  |    m_axi
                          denied lookups -> FaultMerger -> engine.faults

Only the register block knows the transport; the engine and the core would be reused
unchanged behind virtio-pci.
"""

from amaranth.hdl import Module, Signal, Cat, Const, Mux
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

from ..bus.axi import AXI4LiteSignature, AXI4Signature, AXI4DMAMaster
from ..core.top import Core, LookupSignature
from ..core.layouts import Feature, lookup_request_layout, lookup_response_layout
from .mmio import VirtioMMIORegisters
from ..core.params import CoreParams
from ..util import check_int, global_buffer
from ..engine.virtqueue import VirtqueueEngine, FaultRecord


__all__ = ["FaultMerger", "VirtioIOMMUMMIO", "DEFAULT_FEATURES", "flat_lookup_signature"]


#: Features offered by default (each can be left out at elaboration).
DEFAULT_FEATURES = frozenset({
    Feature.VERSION_1, Feature.MAP_UNMAP, Feature.INPUT_RANGE, Feature.DOMAIN_RANGE,
    Feature.PROBE, Feature.MMIO, Feature.BYPASS_CONFIG, Feature.INDIRECT_DESC,
    Feature.EVENT_IDX,
})


class FaultMerger(wiring.Component):
    """Turns denied lookup responses of ``ports`` lookup ports into fault records.

    Each cycle at most one record leaves on :attr:`faults` (the lowest-numbered port with a
    denial); denials of other ports in the same cycle are counted in :attr:`drops`
    (saturating) and lost. Latency: 1 cycle. Throughput: one fault per cycle.
    """

    def __init__(self, *, ports, endpoint_width):
        self._ports = ports
        resp = stream.Signature(lookup_response_layout(endpoint_width), always_ready=True)
        super().__init__({
            "lookups": In(resp).array(ports),
            "faults":  Out(stream.Signature(FaultRecord, always_ready=True)),
            "drops":   Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        # a lookup answered ``retry`` decided nothing: it is presented again
        denied = [lk.valid & ~lk.payload.allowed & ~lk.payload.retry for lk in self.lookups]
        m.d.sync += self.faults.valid.eq(0)
        for i in reversed(range(self._ports)):
            lk = self.lookups[i].payload
            with m.If(denied[i]):
                m.d.sync += [
                    self.faults.valid.eq(1),
                    self.faults.payload.reason.eq(lk.reason),
                    self.faults.payload.flags.eq(lk.flags),
                    self.faults.payload.endpoint.eq(lk.endpoint),
                    self.faults.payload.address.eq(lk.iova),
                ]
        n_denied = sum(d.as_unsigned() for d in denied) if denied else Const(0)
        lost = Signal(4)
        m.d.comb += lost.eq(Mux(n_denied > 0, n_denied - 1, 0) if self._ports > 1 else 0)
        with m.If(lost != 0):
            total = self.drops + lost
            m.d.sync += self.drops.eq(Mux(total[32:] != 0, 0xffffffff, total[:32]))
        return m



def flat_lookup_signature(endpoint_width):
    """A lookup port with one Verilog port per field (``lookup_0_req_iova``, ...).

    The same port as :func:`~viommu.rtl.core.top.LookupSignature` (request in, accepted when
    ``req_valid`` and ``req_ready`` are both 1, response 3 cycles later; ``req_ready``
    comes from a flip-flop and is 0 only in the cycles port 0's comparators answer a
    management query), the payload fields of
    :func:`~viommu.rtl.core.layouts.lookup_request_layout` / :func:`~viommu.rtl.core.layouts.lookup_response_layout`
    spelt out so that a Verilog integrator needs no bit offsets.
    """
    members = {"req_valid": In(1), "req_ready": Out(1)}
    for name, field in lookup_request_layout(endpoint_width):
        members[f"req_{name}"] = In(field.shape)
    members["resp_valid"] = Out(1)
    for name, field in lookup_response_layout(endpoint_width):
        members[f"resp_{name}"] = Out(field.shape)
    return wiring.Signature(members)


class VirtioIOMMUMMIO(wiring.Component):
    """The virtio-iommu device behind virtio-mmio (module ``virtio_iommu_mmio``).

    Ports (flattened with ``_`` at the top level: ``s_axil_awaddr``, ``m_axi_arvalid``...)
    -----
    s_axil : In(AXI4LiteSignature(12, 32))
        Register block (virtio-mmio version 2, device configuration at 0x100).
    m_axi : Out(AXI4Signature(64, 8 * axi_width, 1))
        DMA into guest memory: rings, descriptors, request buffers.
    irq : Out(1)
        Level interrupt: InterruptStatus != 0.
    lookup : Out(flat_lookup_signature(endpoint_width)).array(lookup_ports)
        Translation lookups (see :class:`~viommu.rtl.core.top.Core`): ``lookup_<i>_req_valid``,
        ``_req_ready`` (out: 0 for one cycle per request, two per UNMAP, on port 0; with
        a store, one per request and one per fill that finds a record),
        ``_req_endpoint``, ``_req_iova``, ``_req_write`` in; ``lookup_<i>_resp_valid``,
        ``_resp_allowed``, ``_resp_phys``, ``_resp_mmio``, ``_resp_via``, ``_resp_reason``,
        ``_resp_flags``, ``_resp_endpoint``, ``_resp_iova``, ``_resp_write``, ``_resp_retry``
        out, 3 cycles after the request is accepted. One lookup per cycle per port. With
        a mapping store, ``_resp_retry`` = 1 means the mapping table missed and the store
        is being asked: present the same access again (oldest first).
    fault_drops : Out(32)
        Fault reports lost because no eventq buffer was available and the fault queue was
        full, plus those lost to simultaneous denials on several lookup ports.
    m_axi_store : Out(AXI4Signature(64, 64))
        With a mapping store in external memory (``mappings``, ``store="axi"``): the
        store's own AXI4 master (``m_axi_store_awaddr``...), to its region. A bus error
        on it sets DEVICE_NEEDS_RESET (the store can no longer be trusted); the device
        reset clears the store.
    clk, rst
        The ``sync`` domain; ``rst`` is synchronous, active high, and must be held for at
        least two cycles (the core and the engine are reset by their own reset
        flip-flops, which follow ``rst`` one cycle late). When elaborated for an ECP5
        platform, those two reset nets are put on global buffers (``DCCA``).
    """

    def __init__(self, *, params=None, features=DEFAULT_FEATURES, queue_size=256,
                 axi_width=8, bypass_init=0, fault_queue_depth=8, _index_base=0,
                 **core_kwargs):
        if params is None:
            params = CoreParams(**core_kwargs)
        elif core_kwargs:
            raise TypeError("give either params= or core keyword parameters, not both")
        features = frozenset(Feature(f) for f in features)
        for needed in (Feature.VERSION_1, Feature.MAP_UNMAP):
            if needed not in features:
                raise ValueError(f"features must include {needed.name} (Linux needs it)")
        unknown = features - DEFAULT_FEATURES
        if unknown:
            raise ValueError(f"features not supported: {sorted(f.name for f in unknown)}")
        if axi_width not in (8, 16):
            raise ValueError(f"axi_width must be 8 or 16 bytes (64 or 128 bits), "
                             f"not {axi_width}")
        check_int("queue_size", queue_size, 2, 32768, power_of_two=True)
        check_int("bypass_init", bypass_init, 0, 1)
        if bypass_init and Feature.BYPASS_CONFIG not in features:
            raise ValueError("bypass_init=1 needs the BYPASS_CONFIG feature")
        check_int("fault_queue_depth", fault_queue_depth, 1, 1024)
        self.params = params
        self.features = features
        self.queue_size = queue_size
        self.axi_width = axi_width
        self.bypass_init = bypass_init
        self.fault_queue_depth = fault_queue_depth
        self._index_base = _index_base         # test only: queue indices start there
        super().__init__({
            "s_axil": In(AXI4LiteSignature(addr_width=12, data_width=32)),
            "m_axi":  Out(AXI4Signature(addr_width=64, data_width=8 * axi_width, id_width=1)),
            "irq":    Out(1),
            "lookup": Out(flat_lookup_signature(params.endpoint_width)).array(
                params.lookup_ports),
            "fault_drops": Out(32),
            **({"m_axi_store": Out(AXI4Signature(addr_width=64, data_width=64))}
               if params.mappings and params.store == "axi" else {}),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        feature_bits = sum(1 << f for f in self.features)

        m.submodules.regs = regs = VirtioMMIORegisters(
            p, features_offered=feature_bits, queue_num_max=self.queue_size,
            addr_width=12, bypass_init=self.bypass_init)
        m.submodules.engine = engine = VirtqueueEngine(
            width=self.axi_width, queue_size_max=self.queue_size,
            fault_queue_depth=self.fault_queue_depth, reset_by_clear=True,
            _index_base=self._index_base)
        m.submodules.core = core = Core(params=p, reset_by_clear=True)
        m.submodules.dma = dma = AXI4DMAMaster(width=self.axi_width, addr_width=64,
                                               id_width=1)
        m.submodules.faults = merger = FaultMerger(ports=p.lookup_ports,
                                                   endpoint_width=p.endpoint_width)

        wiring.connect(m, dma.bus, wiring.flipped(self.m_axi))
        wiring.connect(m, engine.dma, dma.dma)
        wiring.connect(m, engine.req, core.req)
        wiring.connect(m, core.resp, engine.resp)

        for q in range(2):
            m.d.comb += engine.queues[q].as_value().eq(regs.queue[q].as_value())

        # Boot bypass: until the driver has negotiated, the core sees the *offered*
        # BYPASS_CONFIG, so ``bypass`` (sticky over device reset) decides what unattached
        # endpoints may do before and between drivers. Once FEATURES_OK is accepted it sees
        # the negotiated set: a driver that did not accept BYPASS_CONFIG cannot see or
        # change ``bypass``, so it is not honoured then (unattached endpoints are denied).
        boot_features = Signal.like(regs.features)
        if Feature.BYPASS_CONFIG in self.features:
            m.d.comb += boot_features.bypass_config.eq(1)
        m.d.comb += core.features.eq(Mux(regs.features_ok, regs.features, boot_features))

        # Device reset: the engine drains the DMA transactions it has outstanding. Until
        # they are all answered the register block takes no AXI4-Lite transaction, so that
        # nothing the driver sets up after the reset can meet a write of the old epoch.
        # (The Status=0 write itself completes; the next access waits.)
        draining = Signal()
        with m.If(regs.device_reset):
            m.d.sync += draining.eq(1)
        with m.Elif(~engine.dma_busy):
            m.d.sync += draining.eq(0)
        for path, member, port in self.s_axil.signature.flatten(self.s_axil):
            (name,) = path
            inner = getattr(regs.bus, name)
            if name in ("awvalid", "wvalid", "arvalid"):
                m.d.comb += inner.eq(port & ~draining)
            elif name in ("awready", "wready", "arready"):
                m.d.comb += port.eq(inner & ~draining)
            elif member.flow == In:                 # master -> register block
                m.d.comb += inner.eq(port)
            else:                                   # register block -> master
                m.d.comb += port.eq(inner)

        # The core and the engine each take their own copy of the device-reset pulse (the
        # same cycle as ``regs.device_reset``), and each copy alone resets its block's
        # logic (``reset_by_clear``); reset value 1, so a copy is also high while the
        # domain is in reset and in the cycle after. Each reset net is then driven by one
        # flip-flop, which a global buffer carries on ECP5, rather than by an OR of the
        # pulse and the domain reset in a LUT whose output would reach the register
        # block's, the engine's and the core's reset pins on general routing. (So the
        # domain reset must last two cycles or more, as a reset synchronizer's does.)
        store_failed = Const(0)
        if "m_axi_store" in self.signature.members:
            wiring.connect(m, core.m_axi_store, wiring.flipped(self.m_axi_store))
            # the error is sticky until the device reset: raise the flag on its edge
            failed_seen = Signal()
            m.d.sync += failed_seen.eq(core.store_error)
            store_failed = core.store_error & ~failed_seen
        engine_clear = Signal(init=1, attrs={"keep": 1})
        core_clear = Signal(init=1, attrs={"keep": 1})
        m.d.sync += [engine_clear.eq(regs.reset_request), core_clear.eq(regs.reset_request)]

        m.d.comb += [
            engine.indirect_desc.eq(regs.indirect_desc),
            engine.event_idx.eq(regs.event_idx),
            engine.enable.eq(regs.driver_ok),
            engine.notify.valid.eq(regs.notify),
            engine.notify.payload.eq(regs.notify_queue),
            engine.clear.eq(global_buffer(m, platform, engine_clear, name="engine_clear")),
            core.clear.eq(global_buffer(m, platform, core_clear, name="core_clear")),
            core.bypass.eq(regs.bypass),
            regs.irq_used_set.eq(engine.irq_used),
            regs.needs_reset_set.eq(engine.needs_reset | store_failed),
            regs.fault_drops.eq(self.fault_drops),
            regs.live_mappings.eq(core.live),
            regs.nomem_count.eq(core.nomem_count),
            self.irq.eq(regs.irq),
        ]

        for i in range(p.lookup_ports):
            port, inner = self.lookup[i], core.lookup[i]
            m.d.comb += [inner.req.valid.eq(port.req_valid), port.req_ready.eq(inner.req.ready)]
            for name, _ in inner.req.payload.shape():
                m.d.comb += getattr(inner.req.payload, name).eq(getattr(port, f"req_{name}"))
            m.d.comb += port.resp_valid.eq(inner.resp.valid)
            for name, _ in inner.resp.payload.shape():
                m.d.comb += getattr(port, f"resp_{name}").eq(getattr(inner.resp.payload, name))
            m.d.comb += [
                merger.lookups[i].valid.eq(inner.resp.valid),
                merger.lookups[i].payload.eq(inner.resp.payload),
            ]
        wiring.connect(m, merger.faults, engine.faults)
        total = engine.fault_drops + merger.drops
        m.d.comb += self.fault_drops.eq(Mux(total[32:] != 0, 0xffffffff, total[:32]))
        return m
