"""The driver side of a split virtqueue, on any byte-addressed memory.

Bus-agnostic: everything goes through a memory object with ``read(addr, n) -> bytes`` and
``write(addr, data)`` (:class:`~viommu.sim.dma_mem.DMAMemory` in Amaranth simulations, a
cocotb RAM model wrapper elsewhere). :class:`SplitVirtqueue` lays out the descriptor
table, the available and the used ring, adds buffers as descriptor chains split in any way
(readable parts, writable parts, zero-length descriptors, indirect tables, scattered
descriptor indices) and collects used elements with the bytes the device wrote.

Chains and buffers come from :class:`BufferAllocator`; zero-length descriptors point at
``poison`` (an address the test makes faulting), so a device that touches one is caught.
"""

import random
import struct
from dataclasses import dataclass, field


__all__ = ["DESC_F_NEXT", "DESC_F_WRITE", "DESC_F_INDIRECT", "AVAIL_F_NO_INTERRUPT",
           "BufferAllocator", "Chain", "SplitVirtqueue", "ring_sizes", "check_answer"]

DESC_F_NEXT = 1
DESC_F_WRITE = 2
DESC_F_INDIRECT = 4
AVAIL_F_NO_INTERRUPT = 1


def ring_sizes(num):
    """Bytes of the descriptor table, available ring and used ring of a queue of ``num``
    (including used_event / avail_event)."""
    return 16 * num, 6 + 2 * num, 6 + 8 * num


class BufferAllocator:
    """First-fit allocator over ``[start, end)`` that remembers what is live."""

    def __init__(self, start, end, align=8):
        self.start, self.end, self.align = start, end, align
        self.live = {}          # addr -> size
        self.next = start

    def alloc(self, size, align=None):
        align = align or self.align
        size = max(size, 1)
        for attempt in range(2):
            addr = -(-self.next // align) * align
            while addr + size <= self.end:
                clash = [a for a, s in self.live.items() if a < addr + size and addr < a + s]
                if not clash:
                    self.live[addr] = size
                    self.next = addr + size
                    return addr
                a = max(clash)
                addr = -(-(a + self.live[a]) // align) * align
            self.next = self.start
        raise MemoryError("buffer area exhausted")

    def free(self, addr):
        del self.live[addr]


@dataclass
class Chain:
    """One buffer made available: where its pieces are, and what came back."""
    head: int
    descs: list                     # ring descriptor indices used
    readable: list                  # (addr, len)
    writable: list                  # (addr, len)
    table: int = None               # indirect table address
    allocs: list = field(default_factory=list)
    tag: object = None              # free for the caller
    used_len: int = None
    written: bytes = None           # the first used_len bytes of the writable part
    writable_data: bytes = None     # the whole writable part, when collected

    @property
    def writable_len(self):
        return sum(n for _, n in self.writable)


class SplitVirtqueue:
    """A split virtqueue as a driver sees it.

    ``desc``, ``driver`` and ``device`` are the guest addresses of the descriptor table,
    the available ring and the used ring. ``fill`` is the byte pre-written into every
    writable buffer (so that tests can see exactly which bytes the device wrote).
    """

    def __init__(self, mem, num, desc, driver, device, alloc, *, fill=0xAA,
                 poison=0xdead0000, seed=0, avail_idx=0):
        if num < 1 or num & (num - 1) or num > 32768:
            raise ValueError(f"queue size must be a power of two up to 32768, not {num}")
        self.mem, self.num = mem, num
        self.desc, self.driver, self.device = desc, driver, device
        self.alloc, self.fill, self.poison = alloc, fill, poison
        self.rng = random.Random(seed)
        self._avail_idx0 = avail_idx
        self.reset(avail_idx)

    # --- layout ------------------------------------------------------------------------------

    def reset(self, avail_idx=None):
        """Zero the three areas; every descriptor free; indices at ``avail_idx`` (0 after
        a device reset; by default the value given at construction)."""
        if avail_idx is None:
            avail_idx = self._avail_idx0
        self._avail_idx0 = avail_idx
        d, a, u = ring_sizes(self.num)
        self.mem.write(self.desc, bytes(d))
        self.mem.write(self.driver, bytes(a))
        self.mem.write(self.device, bytes(u))
        self.free = list(range(self.num))
        self.avail_idx = avail_idx & 0xffff
        self.last_used = avail_idx & 0xffff
        self.outstanding = {}
        self.write16(self.driver + 2, self.avail_idx)
        self.write16(self.device + 2, self.last_used)

    def areas(self):
        """``[(start, end), ...]`` of the descriptor table, available ring, used ring."""
        d, a, u = ring_sizes(self.num)
        return [(self.desc, self.desc + d), (self.driver, self.driver + a),
                (self.device, self.device + u)]

    def read16(self, addr):
        return struct.unpack("<H", self.mem.read(addr, 2))[0]

    def write16(self, addr, v):
        self.mem.write(addr, struct.pack("<H", v & 0xffff))

    # --- descriptors ---------------------------------------------------------------------------

    def write_desc(self, index, addr, length, flags, next_=0, table=None):
        """Write descriptor ``index`` of the ring's table (or of the table at ``table``)."""
        base = self.desc if table is None else table
        self.mem.write(base + 16 * index, struct.pack("<QIHH", addr, length, flags, next_))

    def read_desc(self, index, table=None):
        base = self.desc if table is None else table
        return struct.unpack("<QIHH", self.mem.read(base + 16 * index, 16))

    def take_descs(self, n, scatter=False):
        """Take ``n`` free descriptor indices (in random order if ``scatter``)."""
        if len(self.free) < n:
            raise RuntimeError(f"no {n} free descriptors")
        if scatter:
            picks = self.rng.sample(range(len(self.free)), n)
            descs = [self.free[i] for i in picks]
            for i in sorted(picks, reverse=True):
                del self.free[i]
        else:
            descs, self.free = self.free[:n], self.free[n:]
        return descs

    def add(self, readable, writable, *, indirect=False, scatter=False, publish=True,
            tag=None, poison_zero=True):
        """Make a buffer available.

        ``readable``: list of byte strings, one descriptor each (``b""`` = zero-length).
        ``writable``: list of sizes, one descriptor each. ``indirect``: put the chain in an
        indirect table referenced from one ring descriptor. ``scatter``: take ring
        descriptors in random order (chains then jump around the table). Returns the
        :class:`Chain`.
        """
        parts = [(bytes(r), False) for r in readable] + [(int(w), True) for w in writable]
        if not parts:
            raise ValueError("a chain needs at least one descriptor")
        chain = Chain(head=None, descs=[], readable=[], writable=[], tag=tag)
        entries = []
        for p, is_w in parts:
            n = p if is_w else len(p)
            if n == 0 and poison_zero:
                addr = self.poison
            else:
                addr = self.alloc.alloc(n)
                chain.allocs.append(addr)
                self.mem.write(addr, bytes([self.fill]) * n if is_w else p)
            (chain.writable if is_w else chain.readable).append((addr, n))
            entries.append((addr, n, DESC_F_WRITE if is_w else 0))
        if indirect:
            table = self.alloc.alloc(16 * len(entries), align=16)
            chain.allocs.append(table)
            chain.table = table
            for i, (addr, n, fl) in enumerate(entries):
                last = i == len(entries) - 1
                self.write_desc(i, addr, n, fl | (0 if last else DESC_F_NEXT),
                                0 if last else i + 1, table=table)
            descs = self.take_descs(1, scatter)
            self.write_desc(descs[0], table, 16 * len(entries), DESC_F_INDIRECT, 0)
        else:
            descs = self.take_descs(len(entries), scatter)
            for i, (addr, n, fl) in enumerate(entries):
                last = i == len(entries) - 1
                self.write_desc(descs[i], addr, n, fl | (0 if last else DESC_F_NEXT),
                                0 if last else descs[i + 1])
        chain.descs = descs
        chain.head = descs[0]
        self.outstanding[chain.head] = chain
        self.put_avail(chain.head, publish=publish)
        return chain

    def set_ring_entry(self, slot, head):
        """Write available ring entry ``slot`` (raw)."""
        self.write16(self.driver + 4 + 2 * (slot % self.num), head)

    def put_avail(self, head, publish=True):
        """Put ``head`` in the next available ring slot (raw: no descriptor bookkeeping)."""
        self.set_ring_entry(self.avail_idx, head)
        self.avail_idx = (self.avail_idx + 1) & 0xffff
        if publish:
            self.publish()

    def publish(self, idx=None):
        """Write the available ring's idx (``idx`` overrides, for bad-input tests)."""
        self.write16(self.driver + 2, self.avail_idx if idx is None else idx)

    # --- notification suppression -------------------------------------------------------------

    def set_avail_flags(self, flags):
        self.write16(self.driver, flags)

    def set_used_event(self, v):
        self.write16(self.driver + 4 + 2 * self.num, v)

    def avail_event(self):
        return self.read16(self.device + 4 + 8 * self.num)

    def used_flags(self):
        return self.read16(self.device)

    def avail_idx_published(self):
        return self.read16(self.driver + 2)

    def used_idx(self):
        return self.read16(self.device + 2)

    def pending(self):
        return (self.avail_idx - self.last_used) & 0xffff

    # --- completions ---------------------------------------------------------------------------

    def used_elem(self, k):
        return struct.unpack("<II", self.mem.read(self.device + 4 + 8 * (k % self.num), 8))

    def collect(self, free=True):
        """Every used element published since the last call, as completed :class:`Chain`s
        (``used_len`` and ``written``: the first ``used_len`` bytes of the writable part)."""
        done = []
        idx = self.used_idx()
        while self.last_used != idx:
            head, length = self.used_elem(self.last_used)
            self.last_used = (self.last_used + 1) & 0xffff
            chain = self.outstanding.pop(head, None)
            if chain is None:
                raise AssertionError(f"used element for head {head}, which is not outstanding")
            chain.used_len = length
            chain.writable_data = self.writable_bytes(chain)
            chain.written = chain.writable_data[:length]
            if free:
                self.release(chain)
            done.append(chain)
        return done

    def writable_bytes(self, chain):
        return b"".join(self.mem.read(a, n) if n else b"" for a, n in chain.writable)

    def release(self, chain):
        self.free.extend(chain.descs)
        for a in chain.allocs:
            self.alloc.free(a)
        chain.allocs = []


def check_answer(c, fill=0xAA):
    """The device wrote exactly the expected answer (the chain's ``tag``) into a collected
    chain, and nothing past it (those bytes still hold the ``fill`` byte)."""
    expect = c.tag
    assert c.used_len == len(expect) and c.written == expect, (
        f"answer {c.written.hex()} (used length {c.used_len}), expected {expect.hex()} "
        f"({len(expect)})")
    rest = c.writable_data[c.used_len:]
    assert rest == bytes([fill]) * len(rest), "bytes past the used length were written"
