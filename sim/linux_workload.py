"""A Linux-like DMA-mapping workload, for the mapping store's design and benches.

It plays what ``drivers/iommu/dma-iommu.c`` and ``virtio-iommu.c`` send for two kinds of
device (``../shared/notes/dma-enforcement-scale-pcie.md``):

* a NIC: ``queues`` receive rings of ``ring`` one-page buffers, all mapped all the time;
  a completed buffer is unmapped (one UNMAP) and a fresh page mapped in its place (one
  MAP), its IOVA recycled from the allocator's per-size cache as Linux's ``rcache`` does;
* an NVMe-like disk: ``jobs`` x ``depth`` I/Os in flight, each ``io_pages`` pages of
  scattered memory (physically contiguous runs of random length) mapped at one
  contiguous, size-aligned IOVA range, one MAP per run (or per aligned power-of-two
  chunk when the device offers every page size), and one UNMAP covering the whole I/O
  when it completes.

The device's accesses are lookups: one per page a buffer's DMA touches (a burst never
crosses 4 KiB). Events come out in a fixed order from a seeded generator, as
``("map", slot, start, end, phys)``, ``("unmap", slot, start, end)`` and
``("lookup", slot, page)`` tuples (page numbers).
"""

import random


__all__ = ["IovaAllocator", "split_pow2", "nic_events", "nvme_events", "mixed_events"]


def _roundup_pow2(n):
    return 1 << (n - 1).bit_length()


class IovaAllocator:
    """Linux's IOVA allocator in brief: top-down below ``limit``, each allocation aligned to
    its size rounded up to a power of two (sizes under 32 pages are rounded up too), freed
    ranges kept per size and handed out again first."""

    def __init__(self, limit=1 << 20):
        self.top = limit            # page number: allocations go below it
        self.cache = {}             # rounded size -> freed starts

    def _size(self, pages):
        return _roundup_pow2(pages) if pages < 32 else pages

    def alloc(self, pages):
        size = self._size(pages)
        cached = self.cache.get(size)
        if cached:
            return cached.pop()
        align = _roundup_pow2(pages)
        start = (self.top - size) & ~(align - 1)
        if start < 0:
            raise RuntimeError("IOVA space exhausted")
        self.top = start
        return start

    def free(self, start, pages):
        self.cache.setdefault(self._size(pages), []).append(start)


def split_pow2(iova, phys, pages):
    """Split a run the way ``iommu_pgsize`` does when every power of two is a page size:
    the largest power of two that divides both addresses and fits. Yields
    ``(iova, phys, pages)`` chunks."""
    while pages:
        size = 1 << (pages.bit_length() - 1)
        while (iova | phys) & (size - 1):
            size >>= 1
        yield iova, phys, size
        iova, phys, pages = iova + size, phys + size, pages - size


class _Phys:
    """Physical pages: fresh page numbers, or runs of contiguous ones."""

    def __init__(self, rng):
        self.rng = rng
        self.next = 0x100000

    def run(self, pages):
        start = self.next
        self.next += pages + self.rng.randrange(1, 64)
        return start


def nic_events(*, seed=1, slot=0, queues=1, ring=4096, completions=20000, lookups=1):
    """A NIC's receive rings: map ``queues * ring`` one-page buffers, then complete
    ``completions`` of them in a round-robin over the queues (each buffer is hit by
    ``lookups`` lookups when the NIC writes it), unmapping and remapping each."""
    rng = random.Random(seed)
    alloc, phys = IovaAllocator(), _Phys(rng)
    rings = []
    for q in range(queues):
        bufs = []
        for _ in range(ring):
            iova = alloc.alloc(1)
            bufs.append(iova)
            yield ("map", slot, iova, iova, phys.run(1))
        rings.append(bufs)
    heads = [0] * queues
    for n in range(completions):
        q = n % queues if queues > 1 else 0
        i = heads[q]
        heads[q] = (i + 1) % ring
        iova = rings[q][i]
        for _ in range(lookups):
            yield ("lookup", slot, iova)
        yield ("unmap", slot, iova, iova)
        alloc.free(iova, 1)
        iova = alloc.alloc(1)
        rings[q][i] = iova
        yield ("map", slot, iova, iova, phys.run(1))


def nvme_events(*, seed=2, slot=1, jobs=4, depth=32, io_pages=32, ios=4000,
                mean_run=2.0, all_sizes=False):
    """An NVMe-like disk: ``jobs * depth`` I/Os in flight, ``ios`` in all. Each I/O maps
    ``io_pages`` pages in physically contiguous runs (lengths geometric with mean
    ``mean_run``) at one aligned IOVA range: one MAP per run, or per power-of-two chunk
    with ``all_sizes``. The device touches each page once; the I/O's completion is one
    UNMAP of the whole range."""
    rng = random.Random(seed)
    alloc, phys = IovaAllocator(), _Phys(rng)
    inflight = []

    def start_io():
        iova = alloc.alloc(io_pages)
        off = 0
        while off < io_pages:
            run = 1
            while rng.random() > 1 / mean_run and off + run < io_pages:
                run += 1
            pa = phys.run(run)
            chunks = split_pow2(iova + off, pa, run) if all_sizes else [(iova + off, pa, run)]
            for v, p, n in chunks:
                yield ("map", slot, v, v + n - 1, p)
            off += run
        inflight.append(iova)

    for _ in range(jobs * depth):
        yield from start_io()
    for _ in range(ios):
        iova = inflight.pop(rng.randrange(len(inflight)))
        for pg in range(io_pages):
            yield ("lookup", slot, iova + pg)
        yield ("unmap", slot, iova, iova + io_pages - 1)
        alloc.free(iova, io_pages)
        yield from start_io()


def mixed_events(*, seed=3, **kwargs):
    """A NIC (slot 0) and a disk (slot 1) interleaved event by event."""
    rng = random.Random(seed)
    streams = [nic_events(seed=seed, slot=0, completions=kwargs.get("completions", 20000)),
               nvme_events(seed=seed + 1, slot=1, ios=kwargs.get("ios", 4000),
                           all_sizes=kwargs.get("all_sizes", False))]
    while streams:
        s = rng.choice(streams)
        try:
            yield next(s)
        except StopIteration:
            streams.remove(s)
