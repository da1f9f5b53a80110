"""Layouts and constants of the mapping store, shared by the RTL, the structure model and
the tests (see ``docs/mapping-store.md``)."""

import enum

from amaranth.hdl import unsigned
from amaranth.lib import data, enum as hdl_enum


__all__ = ["StoreParams", "record_layout", "StoreOp", "StoreStatus", "MemOp",
           "op_layout", "result_layout", "mem_cmd_layout", "mem_data_layout", "mix_constants",
           "GEN_BITS"]


#: Width of a domain slot's generation: a slot may die ``2**GEN_BITS - 1`` times before
#: the reaper must finish a pass.
GEN_BITS = 8


def mix_constants(count, bits, seed):
    """``count`` constants of ``bits`` bits from a fixed xorshift sequence: the hash's
    per-level and per-slot offsets (a ROM in the hardware, a table in the model)."""
    out, x = [], seed
    for _ in range(count):
        x ^= (x << 13) & 0xffffffffffffffff
        x ^= x >> 7
        x ^= (x << 17) & 0xffffffffffffffff
        out.append(x & ((1 << bits) - 1))
    return out


LEVEL_SEED = 0x2545F4914F6CDD1D
SLOT_SEED = 0x9E3779B97F4A7C15


class StoreParams:
    """The store's shape.

    Parameters
    ----------
    capacity : int
        Records, 1..2**20: the most live mappings the store holds.
    page_bits : int
        Width of a page number, 1..52.
    slots : int
        Domain slots, 1..64.
    phys_page_bits : int
        Width of a physical page number, 1..52.
    """

    def __init__(self, *, capacity, page_bits=52, slots=8, phys_page_bits=52):
        from ..util import check_int
        self.capacity = check_int("capacity", capacity, 1, 1 << 20)
        self.page_bits = check_int("page_bits", page_bits, 1, 52)
        self.slots = check_int("slots", slots, 1, 64)
        self.phys_page_bits = check_int("phys_page_bits", phys_page_bits, 1, 52)
        #: Chain heads: the smallest power of two at least ``capacity`` (and 2).
        self.n_heads = 1 << max((capacity - 1).bit_length(), 1)
        self.hash_bits = self.n_heads.bit_length() - 1
        #: A record pointer; its all-ones value is NULL (at least ``capacity``).
        self.ptr_bits = capacity.bit_length()
        self.null = (1 << self.ptr_bits) - 1
        self.slot_bits = max(1, (slots - 1).bit_length())
        self.levels = page_bits + 1
        self.level_bits = self.levels.bit_length()
        self.level_mix = mix_constants(self.levels, self.hash_bits, LEVEL_SEED)
        self.slot_mix = mix_constants(slots, self.hash_bits, SLOT_SEED)

    def hash(self, slot, level, block):
        """The head of key ``(slot, level, block)`` (integers): the block folded to
        ``hash_bits`` by XOR, offset by the level's and the slot's constant."""
        hb = self.hash_bits
        v, x, mask = 0, block, (1 << hb) - 1
        while x:
            v ^= x & mask
            x >>= hb
        return v ^ self.level_mix[level] ^ self.slot_mix[slot]

    def __repr__(self):
        return (f"StoreParams(capacity={self.capacity}, page_bits={self.page_bits}, "
                f"slots={self.slots}, phys_page_bits={self.phys_page_bits})")


def _mapping_fields(p):
    """A mapping's range, physical page and permissions: the fields a record and an
    operation share."""
    return {
        "start": unsigned(p.page_bits),
        "end":   unsigned(p.page_bits),
        "phys":  unsigned(p.phys_page_bits),
        "read":  unsigned(1),
        "write": unsigned(1),
        "mmio":  unsigned(1),
    }


def record_layout(p):
    """A record's body: a mapping ``[start, end] -> phys`` of domain slot ``slot``, of the
    slot's generation ``gen`` when it was made, at fork level ``level``."""
    return data.StructLayout({
        "slot":  unsigned(p.slot_bits),
        "gen":   unsigned(GEN_BITS),
        "level": unsigned(p.level_bits),
        **_mapping_fields(p),
    })


class StoreOp(hdl_enum.Enum, shape=2):
    """An operation of the store engine."""
    FIND  = 0   # the record holding page ``start`` (a cache fill)
    MAP   = 1   # insert ``[start, end] -> phys`` unless it overlaps
    UNMAP = 2   # remove every mapping inside ``[start, end]``, all or nothing
    KILL  = 3   # the domain in ``slot`` died: its mappings go at once


class StoreStatus(hdl_enum.Enum, shape=2):
    """What an operation answers."""
    OK      = 0   # FIND: found (``record`` valid); MAP: inserted; UNMAP: removed; KILL: done
    ABSENT  = 1   # FIND: no mapping holds the page
    REFUSED = 2   # MAP: overlaps a mapping of the domain; UNMAP: a mapping sticks out
    NOMEM   = 3   # MAP: every record holds a live mapping


def op_layout(p):
    return data.StructLayout({
        "op":    StoreOp,
        "slot":  unsigned(p.slot_bits),
        **_mapping_fields(p),
        # UNMAP: the range starts after the start of page ``start`` / ends before the end
        # of page ``end`` (a mapping holding that page then sticks out of it)
        "start_partial": unsigned(1),
        "end_partial":   unsigned(1),
    })


def result_layout(p):
    return data.StructLayout({
        "status":  StoreStatus,
        "record":  record_layout(p),
        "removed": unsigned(p.ptr_bits),
    })


class MemOp(hdl_enum.Enum, shape=3):
    """An access to the store's memory (see :class:`~.memory.StoreMemorySignature`)."""
    READ_HEAD  = 0   # answer: the head ``index``'s pointer
    READ_REC   = 1   # answer: record ``index``'s body and ``next``
    WRITE_HEAD = 2   # head ``index`` := ``ptr``
    WRITE_NEXT = 3   # record ``index``'s ``next`` := ``ptr`` (its body unchanged)
    WRITE_REC  = 4   # record ``index`` := ``body``, ``next`` := ``ptr``
    CLEAR      = 5   # every head := NULL (after a reset); the next access waits for it


def mem_cmd_layout(p):
    return data.StructLayout({
        "op":    MemOp,
        "index": unsigned(max(p.hash_bits, p.ptr_bits)),
        "ptr":   unsigned(p.ptr_bits),
        "body":  record_layout(p),
    })


def mem_data_layout(p):
    return data.StructLayout({
        "ptr":  unsigned(p.ptr_bits),      # a head, or a record's ``next``
        "body": record_layout(p),
    })
