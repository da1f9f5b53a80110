"""Response formatter: the beats of the executor's answer, from its response registers
(see :class:`~.executor.Executor`)."""

from amaranth.hdl import Module, Signal, Cat, Mux
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .layouts import RespBeat, REQ_TAIL_SIZE


__all__ = ["ResponseFormatter"]


class ResponseFormatter(wiring.Component):
    """Lays out one beat of a request's answer: probe properties (from a ROM), then the
    4-byte tail whose first byte is the status, then zeros.

    Ports
    -----
    tail_status : In(8)
        The status byte (the tail's first byte).
    length : In(16)
        Bytes of the answer: 0 (nothing written), the 4-byte tail, or probe properties
        plus tail (``probe_size + 4``; shorter when the writable part is too small).
    props : In(1)
        The bytes in front of the tail are the endpoint's probe properties (a PROBE
        answered OK); else zeros.
    endpoint : In(range(n_endpoints))
        Whose probe properties (the index among ``endpoint_ids``).
    beat_index : In(range(probe_size // 8 + 2))
        The beat to lay out: its byte lane ``j`` is byte ``8 * beat_index + j`` of the
        answer.
    left, last : In(16), In(1)
        Bytes of the answer from this beat on, and whether this beat is the last
        (``left <= 8``): flip-flops of the executor, so that no subtract and compare sit
        in front of what the beat's ``last`` gates.
    payload : Out(RespBeat)
        The beat: ``data``, ``nbytes`` (``left`` in the last beat, else 8) and ``last``.

    The ROM holds ``probe_size`` bytes for every distinct set of probe properties among
    the endpoints (see :meth:`~.params.CoreParams.probe_properties`), read
    asynchronously. Combinational: the beat follows its inputs in the same cycle.
    """

    def __init__(self, params):
        self._params = params
        super().__init__({
            "tail_status": In(8),
            "length":      In(16),
            "props":       In(1),
            "endpoint":    In(range(params.n_endpoints)),
            "beat_index":  In(range(params.probe_size // 8 + 2)),
            "left":        In(16),
            "last":        In(1),
            "payload":     Out(RespBeat),
        })

    def elaborate(self, platform):
        m = Module()
        p = self._params

        # Probe property ROM: one block of probe_size bytes per distinct property set.
        words = p.probe_size // 8
        blobs, blob_of_ep = [], []
        for ep_id in p.endpoint_ids:
            props = p.probe_properties(ep_id)
            if props not in blobs:
                blobs.append(props)
            blob_of_ep.append(blobs.index(props))
        rom_init = [int.from_bytes(b[8 * k:8 * k + 8], "little")
                    for b in blobs for k in range(words)]
        m.submodules.probe_rom = rom = Memory(shape=64, depth=len(rom_init), init=rom_init)
        rom_rd = rom.read_port(domain="comb")
        blob_base = Signal(range(len(rom_init) + 1))
        with m.Switch(self.endpoint):
            for e in range(p.n_endpoints):
                with m.Case(e):
                    m.d.comb += blob_base.eq(blob_of_ep[e] * words)
        m.d.comb += rom_rd.addr.eq(blob_base + self.beat_index)

        # Byte lane j of beat k is byte 8k+j of the answer.
        tail_pos = Signal(16)
        m.d.comb += tail_pos.eq(self.length - REQ_TAIL_SIZE)
        lanes = []
        for j in range(8):
            pos = self.beat_index * 8 + j
            prop = Mux(self.props, rom_rd.data.word_select(j, 8), 0)
            lanes.append(Mux(pos < tail_pos, prop, Mux(pos == tail_pos, self.tail_status, 0)))
        m.d.comb += [
            self.payload.data.eq(Cat(lanes)),
            self.payload.nbytes.eq(Mux(self.last, self.left[:4], 8)),
            self.payload.last.eq(self.last),
        ]
        return m
