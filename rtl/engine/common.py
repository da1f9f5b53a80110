"""Layouts, constants and small helpers shared by the virtqueue engine's units.

Every layout that crosses a unit boundary is defined here once; the units import them.
"""

from amaranth.hdl import Signal, Cat, Const, Mux
from amaranth.lib import data, stream
from amaranth.lib.memory import ReadPort

from ..core.layouts import DescFlag


__all__ = ["FaultRecord", "READ_CAP"]


#: A fault report from a lookup port (the fields of :class:`~viommu.rtl.core.layouts.Fault` that carry
#: information).
FaultRecord = data.StructLayout({
    "reason":   8,
    "flags":    32,
    "endpoint": 32,
    "address":  64,
})

#: Readable bytes of a request streamed to the core, at most (the core decodes 72; it must
#: see more than 72 to tell a complete PROBE from a short one, so this must be >= 80).
READ_CAP = 128

_REQ_FIFO_DEPTH = 128       # ReqBeats buffered towards the core
_PK_CMD_DEPTH = 64          # packer commands
_RING_FIFO_DEPTH = 4        # ring reads (of up to 4 heads) buffered
_HEAD_SLOTS = 16            # descriptor slots for head blocks (P1)
_TABLE_SLOTS = 8            # descriptor slots for indirect tables (P2)
_SLOT_MISS = _HEAD_SLOTS + _TABLE_SLOTS          # the walker's own slot
_SLOT_BE = _SLOT_MISS + 1                        # the back end's slot
_N_SLOTS = 32
_SLOT_BITS = 5
_H_BITS = 4                 # log2(_HEAD_SLOTS)
_T_BITS = 3                 # log2(_TABLE_SLOTS)
_SLOT_DESCS = 4             # descriptors per slot
_SLOT_ADDR_BITS = 7         # log2(_N_SLOTS * _SLOT_DESCS): one 16-byte descriptor a word
_RECORDS = 16               # records between walker and back end
_RD_OUTSTANDING = 48
_WR_OUTSTANDING = 32
_EQ_REPORT = 24             # bytes of a fault report

# Read tags: destination and a destination-specific field.
_D_REG, _D_RING, _D_DESC, _D_PAY = range(4)
_REG_RQ, _REG_EQ, _REG_IRQ = range(3)
_RdTag = data.StructLayout({"sub": 6, "dest": 2})
# Write tags: what completes when the write's response comes back.
_K_DATA, _K_USED, _K_IDX, _K_AE = range(4)
_WrTag = data.StructLayout({"kind": 2, "q": 1, "value": 16})

_RdReq = data.StructLayout({"addr": 64, "len": 13, "tag": _RdTag})
_RdRet = data.StructLayout({"data": 64, "last": 1, "err": 1, "tag": _RdTag})
_WrReq = data.StructLayout({"addr": 64, "len": 4, "data": 64, "tag": _WrTag})
_WrRet = data.StructLayout({"err": 1, "tag": _WrTag})

_Seg = data.StructLayout({"addr": 64, "len": 32})
_Resume = data.StructLayout({"ind": 1, "base": 64, "size": 17, "idx": 16})
_Record = data.StructLayout({
    "q": 1, "head": 16, "nseg": 2, "seg0": _Seg, "seg1": _Seg,
    "res_valid": 1, "res": _Resume,
})
_PkCmd = data.StructLayout({"end": 1, "n": 8, "wlen": 16, "reserve": 8})
_JobA = data.StructLayout({"q": 1, "head": 16, "hslot": _H_BITS, "hn": 2})
_JobB = data.StructLayout({"a": _JobA, "has_t": 1, "tslot": _T_BITS, "tn": 3})

#: One ring read's return beat on its way to the ring FIFO: up to 4 heads and how many.
_RingBeat = data.StructLayout({"heads": 64, "n": 3})
#: The router's view of the read return in the current cycle, for P2's snooping.
_Snoop = data.StructLayout({"valid": 1, "data": 64, "tag": _RdTag, "beat": 3})

#: A queue's configuration as the units see it: the transport's fields and the registered
#: values derived from them (see :class:`~.config.QueueRegs`).
QueueInfo = data.StructLayout({
    "live":       1,        # ready and DRIVER_OK
    "num_ok":     1,        # num is a power of two in 1..queue_size_max (registered)
    "num":        16,
    "mask":       16,       # num - 1 (registered)
    "desc":       64,
    "driver":     64,
    "avail_ring": 64,       # the avail ring's first entry (registered, as all below)
    "ae_addr":    64,       # avail_event
    "uidx_addr":  64,       # the used idx
    "used_ring":  64,       # the used ring's first element
    "ue_addr":    64,       # the word the idx publisher reads: used_event or avail flags
})

#: A unit's DMA requests, to an :class:`~.dma_port.Arbiter`. ``ready`` is the arbiter's
#: grant, which is high only while ``valid`` is: the units take ``ready`` alone as the
#: transfer (one gate fewer in front of their state registers' enables).
RdReqStream = stream.Signature(_RdReq)
WrReqStream = stream.Signature(_WrReq)
#: Write completions, fanned out to every unit that waits for one (always taken).
WrDoneStream = stream.Signature(_WrRet, always_ready=True)
SlotReadPort = ReadPort.Signature(addr_width=_SLOT_ADDR_BITS, shape=128)

_NEXT = int(DescFlag.NEXT)
_WRITE = int(DescFlag.WRITE)
_INDIRECT = int(DescFlag.INDIRECT)


def _min(a, b):
    return Mux(a < b, a, b)


def rd(m, r, addr, length, dest, sub):
    """Drive read requester ``r``'s payload (in the current control context)."""
    m.d.comb += [r.payload.addr.eq(addr), r.payload.len.eq(length),
                 r.payload.tag.dest.eq(dest), r.payload.tag.sub.eq(sub)]


def wr(m, r, addr, length, value, kind, q=0, tag_value=0):
    """Drive write requester ``r``'s payload (in the current control context)."""
    m.d.comb += [r.payload.addr.eq(addr), r.payload.len.eq(length),
                 r.payload.data.eq(value), r.payload.tag.kind.eq(kind),
                 r.payload.tag.q.eq(q), r.payload.tag.value.eq(tag_value)]


class Errors:
    """A unit's fatal-error conditions: ``errors(m)`` (in a control context) or
    ``errors(m, cond)`` adds one; :meth:`drive` ORs them all onto the unit's ``error``."""

    def __init__(self, prefix):
        self._prefix = prefix
        self._sigs = []

    def __call__(self, m, cond=Const(1)):
        sig = Signal(name=f"{self._prefix}_err{len(self._sigs)}")
        m.d.comb += sig.eq(cond)
        self._sigs.append(sig)

    def drive(self, m, error):
        m.d.comb += error.eq(Cat(self._sigs).any() if self._sigs else 0)


def avail_header_states(m, u, errors, *, reg, last, avail, ae_done, pending_clr, resume,
                        on_idx=None):
    """The states both queue units (:class:`~.ring.RingUnit`, :class:`~.eventq.EventqUnit`)
    share, in the current FSM of unit ``u`` (which has ``cfg``, ``rd``, ``wr``, ``wr_done``,
    ``reg_data``, ``reg_done`` and a ``Q`` attribute).

    ``HDR`` -> ``HDR_WAIT``: read the queue's avail flags and idx (an idx more than ``num``
    ahead of ``last`` is fatal), then go to ``resume``. ``AE`` -> ``AE_WAIT``: write
    ``avail_event`` (= ``avail``), wait for it to complete, then read the idx again
    (``HDR``), so that a buffer made available meanwhile is not missed. ``on_idx(idx)``
    adds statements for the cycle a valid idx arrives."""
    cfg = u.cfg
    with m.State("HDR"):
        m.d.comb += u.rd.valid.eq(1)
        rd(m, u.rd, cfg.driver, 4, _D_REG, reg)
        with m.If(u.rd.ready):
            m.d.comb += pending_clr.eq(1)
            m.next = "HDR_WAIT"
    with m.State("HDR_WAIT"):
        idx = u.reg_data[16:32]
        with m.If(u.reg_done):
            with m.If((idx - last)[:16] > cfg.num):
                errors(m)
            if on_idx is not None:
                with m.Else():
                    on_idx(idx)
            m.d.sync += avail.eq(idx)
            with m.If(idx != avail):
                m.d.sync += ae_done.eq(0)
            m.next = resume
    with m.State("AE"):
        m.d.comb += u.wr.valid.eq(1)
        wr(m, u.wr, cfg.ae_addr, 2, avail, _K_AE, u.Q)
        with m.If(u.wr.ready):
            m.next = "AE_WAIT"
    with m.State("AE_WAIT"):
        done = u.wr_done
        with m.If(done.valid & (done.payload.tag.kind == _K_AE) &
                  (done.payload.tag.q == u.Q)):
            m.d.sync += ae_done.eq(1)
            m.next = "HDR"
