"""The mapping table: a CAM of IOVA range entries."""

from amaranth.hdl import Module, Signal, Cat
from amaranth.lib import wiring, data
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .layouts import mapping_entry_layout, mapping_tag_layout, mapping_payload_layout
from ..util import priority_encode, onehot_encode, onehot_mux, ceil_log2


__all__ = ["MappingTable", "PAYLOAD_BANK"]


#: Entries per payload memory. Half the depth of an ECP5 distributed RAM (16): a bank's
#: address is then encoded from 8 select bits, each address bit an OR of 4 (one LUT4
#: level in front of the RAM, where 16 select bits took two), in the lookup's last stage.
PAYLOAD_BANK = 8


class MappingTable(wiring.Component):
    """``entries`` range entries. Each entry is a *tag* ``{valid, dslot, start, end, read,
    write}``, held in flip-flops so that every entry can be compared in the same cycle, and
    a *payload* ``{offset, mmio}``, held in LUT RAM because only the hit entry's is ever
    read (see :func:`~.layouts.mapping_entry_layout`).

    The table has one job: hold the entries. The lookup ports compare :attr:`tags`
    themselves and read the hit entry's payload through a read port (see
    :class:`~.lookup.LookupPort`); lookup port 0's comparators also answer the request
    executor's management queries (MAP's overlap test, UNMAP's), so the table has no
    comparators of its own; the executor decides what to change.

    The payloads are stored in banks of :data:`PAYLOAD_BANK` (8) entries, one LUT RAM each,
    so that a read port selected by a one-hot vector addresses each bank from its own 8
    select bits instead of encoding one index from all of them.

    Ports
    -----
    tags : Out(ArrayLayout(tag, entries))
        Every entry's tag, for the lookup ports.
    payload_sel, payload_en, payload_data : In / In / Out, one set per read port
        Asynchronous read: ``payload_data`` is the payload of the entry whose bit is set
        in ``payload_sel`` (at most one may be; none gives 0), or 0 when ``payload_en``
        is 0 (it is 1 when left unconnected). Each bank encodes its own select bits into
        its RAM's address, and the banks' outputs are combined by
        :func:`~viommu.rtl.util.onehot_mux` with ``payload_en`` folded into each bank's select.
    write_en, write_index : In
        Store the entry presented on ``write_entry`` in the previous cycle at
        ``write_index``, at the next clock edge. The slot must be invalid (the executor
        takes it from ``free_index``).
    write_entry : In
        The entry the next cycle's write stores: ``write_entry`` presented in cycle
        ``t - 1`` is written by ``write_en`` in cycle ``t``. The table registers it (the
        tag once per bank of 8 entries), so that no net fans out from one flip-flop to
        every entry's tag inputs across the whole CAM.
    write_sel : In(entries)
        The same write as a one-hot vector: must be ``write_en << write_index``. Each
        entry's tag flip-flops are enabled by their own bit, so no decoder of
        ``write_index`` sits in front of 64 clock enables (the executor registers it from
        :attr:`free_onehot`); ``write_en``/``write_index`` address the payload RAM.
    kill : In(entries)
        Invalidate every entry whose bit is set, at the next clock edge.
    kill_dslot_en, kill_dslot : In
        Invalidate every entry of domain slot ``kill_dslot`` at the next clock edge (a
        domain died with its last endpoint).
    free_valid, free_index, free_onehot : Out
        Whether an entry is invalid, the lowest such index, and the same as a one-hot
        vector. Registered: they reflect the contents one cycle ago, so they must not be
        used in the cycle right after a change.

    Every cycle: one write, any number of kills, a payload read per port. A reset of the domain invalidates every entry: only the ``valid``
    bits have a reset value (the rest of a tag is don't-care while its entry is invalid).
    """

    def __init__(self, *, entries, page_bits, dslot_bits, phys_page_bits, read_ports=1):
        if entries < 1:
            raise ValueError(f"entries must be at least 1, not {entries}")
        if read_ports < 1:
            raise ValueError(f"read_ports must be at least 1, not {read_ports}")
        self._n = entries
        self._read_ports = read_ports
        tag = mapping_tag_layout(page_bits, dslot_bits)
        self._payload = mapping_payload_layout(phys_page_bits)
        super().__init__({
            "tags":          Out(data.ArrayLayout(tag, entries)),
            "payload_sel":   In(entries).array(read_ports),
            "payload_en":    In(1, init=1).array(read_ports),
            "payload_data":  Out(self._payload).array(read_ports),
            "write_en":      In(1),
            "write_index":   In(range(entries)),
            "write_entry":   In(mapping_entry_layout(page_bits, dslot_bits, phys_page_bits)),
            "write_sel":     In(entries),
            "kill":          In(entries),
            "kill_dslot_en": In(1),
            "kill_dslot":    In(dslot_bits),
            "free_valid":    Out(1),
            "free_index":    Out(range(entries)),
            "free_onehot":   Out(entries),
        })
        #: The payload storage, one memory per bank of :data:`PAYLOAD_BANK` entries
        #: (see :meth:`payload_location`).
        self.payload_memories = [
            Memory(shape=self._payload, depth=min(PAYLOAD_BANK, entries - b), init=[],
                   attrs={"ram_style": "distributed"})
            for b in range(0, entries, PAYLOAD_BANK)]

    def payload_location(self, index):
        """``(memory, address)`` where entry ``index``'s payload is stored (simulation
        testbenches read ``memory.data[address]``; the formal harness adds read ports)."""
        return self.payload_memories[index // PAYLOAD_BANK], index % PAYLOAD_BANK

    def elaborate(self, platform):
        m = Module()
        n = self._n

        # The entry to write arrives a cycle ahead (see ``write_entry``): its payload is
        # registered once (the LUT RAM's write data), its tag once per bank (below).
        payload = Signal.like(self.write_entry.payload, name="write_payload",
                              reset_less=True)
        m.d.sync += payload.eq(self.write_entry.payload)
        PB = PAYLOAD_BANK
        reads = [[] for _ in range(self._read_ports)]     # per port: (bank any, data)
        for b, mem in enumerate(self.payload_memories):
            m.submodules[f"payload{b}"] = mem
            wr = mem.write_port()
            m.d.comb += [
                wr.addr.eq(self.write_index[:ceil_log2(PB)] if n > PB else self.write_index),
                wr.data.eq(payload),
                wr.en.eq(self.write_en & (self.write_index // PB == b)),
            ]
            for k in range(self._read_ports):
                sel = self.payload_sel[k][b * PB:b * PB + mem.depth]
                rd = mem.read_port(domain="comb")
                m.d.comb += rd.addr.eq(onehot_encode(sel, mem.depth))
                reads[k].append((sel.any() & self.payload_en[k], rd.data))
        for k in range(self._read_ports):
            m.d.comb += self.payload_data[k].eq(onehot_mux(*zip(*reads[k])))

        # The tag of the entry the next cycle writes is registered once per bank of BANK
        # entries, so that no net fans out to every entry's tag inputs. "keep" marks the
        # copies as deliberate duplicates (the synthesis flow keeps their flip-flops from
        # being merged, see boards/synth.py).
        BANK = 8
        write_tags = []
        for b in range((n + BANK - 1) // BANK):
            wtag = Signal.like(self.write_entry.tag, name=f"write_tag_bank{b}",
                               reset_less=True, attrs={"keep": 1})
            m.d.sync += wtag.eq(self.write_entry.tag)
            write_tags.append(wtag)

        # Only the valid bits are reset (by a system or device reset): the rest of a tag
        # means nothing while its entry is invalid, and leaving ~100 flip-flops per entry
        # out of the reset keeps the reset net's fan-out, and its delay, small.
        tag_layout = self.tags.shape().elem_shape
        for i in range(n):
            wtag = write_tags[i // BANK]
            tag = self.tags[i]
            valid = Signal(name=f"entry{i}_valid")
            body = {name: Signal(tag_layout[name].shape, name=f"entry{i}_{name}",
                                 reset_less=True)
                    for name in ("dslot", "start", "end", "read", "write")}
            m.d.comb += tag.valid.eq(valid)
            m.d.comb += [getattr(tag, name).eq(sig) for name, sig in body.items()]
            killed = (self.kill[i] |
                      (self.kill_dslot_en & (tag.dslot == self.kill_dslot)))
            with m.If(self.write_sel[i]):
                m.d.sync += valid.eq(wtag.valid)
                m.d.sync += [sig.eq(getattr(wtag, name)) for name, sig in body.items()]
            with m.Elif(killed):
                m.d.sync += valid.eq(0)

        # A named signal: Amaranth lowers an unnamed expression again at every use, and
        # the encoder below takes this vector bit by bit, which would copy all n
        # inverters once per use (text and elaboration time growing as n**2 log n).
        invalid = Signal(n, name="invalid")
        m.d.comb += invalid.eq(Cat(~self.tags[i].valid for i in range(n)))
        any_free, index = priority_encode(invalid, n)
        m.d.sync += [
            self.free_valid.eq(any_free),
            self.free_index.eq(index),
            self.free_onehot.eq(invalid & ~(invalid - 1)),      # the lowest set bit
        ]
        return m
