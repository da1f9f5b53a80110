"""The device core: request executor, mapping table and translation lookup ports.

Data flow::

    req (ReqBeat stream) --> Executor --> resp (RespBeat stream)
                             |   |  ^
                  write/kill |   |  | query results (x_ge_start, y_le_end, in_domain)
                             v   |  |
                    MappingTable |  |
                             |   |  |
                     entries +---|--|----------+
                                 v  |          v
                         query   LookupPort[0] ... LookupPort[i] --> lookup[i].resp
             Executor --endpoints--^               ^-- lookup[i].req

Lookup port 0's CAM comparators answer the executor's management queries in the cycles
it announces (``ready`` is 0 on that port then), so the table itself compares nothing.

The core knows nothing of virtqueues or transports: a virtqueue engine streams it each
request's readable bytes and writes back what it answers; the transport provides the
negotiated features, the ``bypass`` configuration bit and ``clear`` (device reset).

Ordering contract
-----------------
Let a request's response be first valid (``resp.valid``) in cycle ``c``.

1. Every lookup *presented* in cycle ``c`` or later is decided against a state that
   includes the request's effect (and the effects of all earlier requests). (A lookup
   presented in cycle ``t`` is decided against the state of cycle ``t + 1``.)
2. For requests that can remove access (UNMAP, DETACH, ATTACH that moves an endpoint),
   every lookup *response* delivered in cycle ``c`` or later reflects the request: the
   executor holds the response back until lookups decided against the old state have left
   the 3-cycle pipeline. A transport therefore only has to complete an UNMAP (write its
   used-ring entry) after it has taken the response, and no lookup response granting the
   removed range can appear after that.
3. Lookup responses delivered between the request's first beat and cycle ``c`` reflect
   either the old or the new state, never a mixture: each request changes the state at a
   single clock edge.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out

from .layouts import (ReqBeat, RespBeat, Features, lookup_request_layout,
                      lookup_response_layout)
from .params import CoreParams
from .executor import Executor
from .mapping_table import MappingTable
from .lookup import LookupPort, LOOKUP_LATENCY
from ..util import ceil_log2, reset_inserter
from ..bus.axi import AXI4Signature


__all__ = ["Core", "LookupSignature", "LOOKUP_LATENCY"]


def LookupSignature(endpoint_width):
    """A lookup port seen from the core: requests in (``ready`` is 0 in the cycles the
    port's comparators answer a management query, see :class:`~.lookup.LookupPort`),
    responses out (3 cycles after the request is accepted)."""
    return wiring.Signature({
        "req":  In(stream.Signature(lookup_request_layout(endpoint_width))),
        "resp": Out(stream.Signature(lookup_response_layout(endpoint_width),
                                     always_ready=True)),
    })


class Core(wiring.Component):
    """The virtio-iommu device core.

    Parameters are those of :class:`~.params.CoreParams`, given as keyword arguments or as
    a ready ``params=CoreParams(...)``.

    Ports
    -----
    req : In(stream.Signature(ReqBeat))
        Requests' device-readable bytes (see :class:`~.layouts.ReqBeat`).
    resp : Out(stream.Signature(RespBeat))
        What to write into each request's device-writable part, in request order.
    lookup : Out(LookupSignature).array(lookup_ports)
        Translation lookup ports, one lookup per cycle each, answered 3 cycles later.
        Port 0's comparators also answer the executor's management queries: its
        ``req.ready`` is 0 for one cycle per request (two per UNMAP; with a store, one
        per request and one per fill that finds a record); the other ports' ``ready`` is
        always 1.
    features : In(Features)
        Negotiated features (only the device-specific ones matter here).
    bypass : In(1)
        Bit 0 of the ``bypass`` configuration byte.
    clear : In(1)
        Device reset: every endpoint detached, every domain and mapping gone, the request
        in progress abandoned (its response is never produced).
    busy : Out(1)
        A request is being worked on, or a lookup's miss filled.
    live : Out(32)
        Live mappings: the store's count, or without a store the table's valid entries
        (counted over a few registered adder stages, so it trails a change by up to
        ``ceil(log8(entries)) + 1`` cycles).
    nomem_count : Out(32)
        MAPs answered NOMEM (saturating): the guest never reads a MAP's status.

    With a mapping store (``mappings``), the table is a cache of the store
    (``docs/mapping-store.md``): a lookup that misses is answered with ``retry`` and
    filled from the store between requests (see :class:`~.lookup.LookupPort` and
    :class:`~.executor.Executor`), and with ``store="axi"``:

    m_axi_store : Out(AXI4Signature)
        The store's AXI4 master, 64-bit data, to its region (``params.store_region``).
    store_error : Out(1)
        The store's memory answered a bus error (sticky until ``clear``): its contents
        can no longer be trusted; the transport asks for a device reset.

    With ``store_ports=True`` (and a store), the store is not built: the core has the
    executor's ``store_op`` (out) and ``store_result`` (in) streams as ports instead, for a
    harness that answers for any store (the formal proofs).

    With ``reset_by_clear=True`` the core's flip-flops are reset by ``clear`` alone, not
    also by the ``sync`` domain's reset: their reset net then has one driver (see
    :func:`~viommu.rtl.util.reset_inserter`). ``clear`` must then be high whenever the domain is in
    reset (as the device's reset flip-flop is, reset value 1).
    """

    def __init__(self, *, params=None, reset_by_clear=False, store_ports=False, **kwargs):
        if not isinstance(reset_by_clear, bool):
            raise TypeError(f"reset_by_clear must be a bool, not {reset_by_clear!r}")
        if not isinstance(store_ports, bool):
            raise TypeError(f"store_ports must be a bool, not {store_ports!r}")
        self.reset_by_clear = reset_by_clear
        if params is None:
            params = CoreParams(**kwargs)
        elif kwargs:
            raise TypeError("give either params= or keyword parameters, not both")
        elif not isinstance(params, CoreParams):
            raise TypeError(f"params must be a CoreParams, not {params!r}")
        self.params = params
        if store_ports and not params.mappings:
            raise ValueError("store_ports needs a mapping store (mappings > 0)")
        self.store_ports = store_ports
        if store_ports:
            from ..store.layouts import op_layout, result_layout
            sp = params.store_params
            store_members = {"store_op": Out(stream.Signature(op_layout(sp))),
                             "store_result": In(stream.Signature(result_layout(sp)))}
        elif params.mappings and params.store == "axi":
            store_members = {"m_axi_store": Out(AXI4Signature(addr_width=64, data_width=64)),
                             "store_error": Out(1)}
        else:
            store_members = {}
        super().__init__({
            "req":      In(stream.Signature(ReqBeat)),
            "resp":     Out(stream.Signature(RespBeat)),
            "lookup":   Out(LookupSignature(params.endpoint_width)).array(params.lookup_ports),
            "features": In(Features),
            "bypass":   In(1),
            "clear":    In(1),
            "busy":     Out(1),
            "live":     Out(32),
            "nomem_count": Out(32),
            **store_members,
        })
        # The blocks are built here, not in elaborate(), so that a testbench or a formal
        # harness can reach them (the table's payload memory, the executor's state).
        self.executor = Executor(params)
        self.table = MappingTable(entries=params.entries, page_bits=params.page_bits,
                                  dslot_bits=ceil_log2(params.n_endpoints),
                                  phys_page_bits=params.phys_page_bits,
                                  read_ports=params.lookup_ports)
        self.lookup_ports = [LookupPort(params, query=i == 0)
                             for i in range(params.lookup_ports)]
        #: The mapping store, or None (built here for testbenches that read it).
        self.store = None
        if params.mappings and not store_ports:
            from ..store.top import Store
            self.store = Store(params.store_params, memory=params.store,
                               base=params.store_base if params.store == "axi" else None)

    def elaborate(self, platform):
        m = Module()
        p = self.params
        executor, table = self.executor, self.table
        reset = reset_inserter(m, self.clear, alone=self.reset_by_clear, name="core_logic")
        m.submodules.executor = reset(executor)
        m.submodules.table = reset(table)

        wiring.connect(m, wiring.flipped(self.req), executor.req)
        wiring.connect(m, executor.resp, wiring.flipped(self.resp))
        m.d.comb += [
            executor.features.eq(self.features),
            executor.bypass.eq(self.bypass),
            self.busy.eq(executor.busy),
        ]
        for name in ("write_en", "write_index", "write_sel", "write_entry", "kill",
                     "kill_dslot_en", "kill_dslot"):
            m.d.comb += getattr(table, name).eq(getattr(executor, f"table_{name}"))
        for name in ("free_valid", "free_index", "free_onehot"):
            m.d.comb += getattr(executor, f"table_{name}").eq(getattr(table, name))
        # The management queries are answered by lookup port 0's comparators.
        cam = self.lookup_ports[0]
        for name in ("query_next", "query_x", "query_y", "query_dslot"):
            m.d.comb += getattr(cam, name).eq(getattr(executor, f"table_{name}"))
        for name in ("x_ge_start", "y_le_end", "in_domain"):
            m.d.comb += getattr(executor, f"table_{name}").eq(getattr(cam, name))

        m.d.comb += self.nomem_count.eq(executor.nomem_count)
        if self.store is not None:
            # The store's reset: ``clear`` restarts its engine; an external memory's bus
            # side finishes its transaction first (a bus burst cannot be cut short), so
            # the store is not under the core's reset transform.
            store = self.store
            m.submodules.store = store
            m.d.comb += store.clear.eq(self.clear)
            wiring.connect(m, executor.store_op, store.op)
            wiring.connect(m, store.result, executor.store_result)
            m.d.comb += self.live.eq(store.live)
            if p.store == "axi":
                wiring.connect(m, store.m_axi, wiring.flipped(self.m_axi_store))
                m.d.comb += [self.store_error.eq(store.error),
                             executor.store_failed.eq(store.error)]
        elif self.store_ports:
            # the store outside (a formal harness answers for it)
            wiring.connect(m, executor.store_op, wiring.flipped(self.store_op))
            wiring.connect(m, wiring.flipped(self.store_result), executor.store_result)
        if p.mappings:
            for i, port in enumerate(self.lookup_ports):
                m.d.comb += [
                    executor.miss_valid[i].eq(port.miss_valid),
                    executor.miss[i].eq(port.miss),
                    port.miss_ack.eq(executor.miss_ack[i]),
                    port.absent_set.eq(executor.absent_set[i]),
                    port.absent_key.eq(executor.absent_key),
                    # a device reset forgets them too (every domain is gone)
                    port.absent_clear.eq(executor.absent_clear | self.clear),
                    port.clear.eq(self.clear),
                ]
        else:
            m.d.comb += self.live.eq(self._count_valid(m, table))

        for i, port in enumerate(self.lookup_ports):
            m.submodules[f"lookup{i}"] = port
            wiring.connect(m, wiring.flipped(self.lookup[i].req), port.req)
            wiring.connect(m, port.resp, wiring.flipped(self.lookup[i].resp))
            m.d.comb += [
                port.tags.eq(table.tags),
                table.payload_sel[i].eq(port.payload_sel),
                table.payload_en[i].eq(port.payload_en),
                port.payload_data.eq(table.payload_data[i]),
                port.endpoints.eq(executor.endpoints),
                port.unattached_bypass.eq(executor.unattached_bypass),
            ]
        return m

    def _count_valid(self, m, table):
        """The number of valid entries, summed in groups of 8 per registered stage."""
        vals = [table.tags[i].valid for i in range(self.params.entries)]
        stage = 0
        while len(vals) > 1:
            out = []
            for k in range(0, len(vals), 8):
                group = vals[k:k + 8]
                acc = group[0]
                for v in group[1:]:
                    acc = acc + v
                reg = Signal(range(self.params.entries + 1), name=f"live_sum{stage}_{k // 8}")
                m.d.sync += reg.eq(acc)
                out.append(reg)
            vals, stage = out, stage + 1
        return vals[0]
