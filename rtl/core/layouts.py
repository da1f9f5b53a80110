"""Every wire format of the device, defined once.

The virtio-iommu structures (requests, configuration, probe properties, fault reports) and
the split-virtqueue structures are ``amaranth.lib.data.Struct`` layouts. Amaranth packs
struct fields LSB-first in field order, which is exactly the little-endian byte layout of
the C structures in ``<linux/virtio_iommu.h>``: the field at byte offset ``k`` occupies bits
``8*k`` upwards. The RTL views request words through these layouts, and the tests pack and
unpack bytes with :func:`pack` / :func:`unpack`, so a layout error shows up in both.

The internal stream payloads between blocks (request beats, response beats, lookup
requests and responses) live here too, as functions of the elaboration parameters.
"""

import enum

from amaranth.lib import enum as hdl_enum

from amaranth.hdl import unsigned
from amaranth.lib import data


__all__ = [
    # constants
    "ReqType", "Status", "Feature", "AttachFlag", "MapFlag", "ProbeType", "ResvSubtype",
    "FaultReason", "FaultFlag", "DescFlag", "AvailFlag", "UsedFlag", "DeviceStatus",
    "VIRTIO_ID_IOMMU",
    # wire formats
    "ReqHead", "ReqTail", "AttachReq", "DetachReq", "MapReq", "UnmapReq", "ProbeReq",
    "Config", "Range64", "Range32", "ProbePropHeader", "ProbeResvMem", "Fault",
    "QueueConfig", "VirtqDesc", "VirtqUsedElem", "VirtqRingHeader",
    "REQ_READABLE_SIZE", "REQ_TAIL_SIZE",
    # internal stream payloads
    "ReqBeat", "RespBeat", "lookup_request_layout", "LookupVia", "lookup_response_layout",
    "lookup_miss_layout",
    "Features", "mapping_entry_layout", "mapping_tag_layout", "mapping_payload_layout",
    "endpoint_state_layout", "DomainState",
    # board: serial bridge and board control registers
    "BridgeByte", "BridgeHeader", "BRIDGE_MAX_WORDS", "BoardConfig", "BoardStatus",
    "ProbeControl", "ProbeResult",
    # helpers
    "pack", "unpack", "sizeof",
]


VIRTIO_ID_IOMMU = 23


class ReqType(enum.IntEnum):
    ATTACH = 1
    DETACH = 2
    MAP    = 3
    UNMAP  = 4
    PROBE  = 5


class Status(enum.IntEnum):
    OK     = 0
    IOERR  = 1
    UNSUPP = 2
    DEVERR = 3
    INVAL  = 4
    RANGE  = 5
    NOENT  = 6
    FAULT  = 7
    NOMEM  = 8


class Feature(enum.IntEnum):
    """Feature bit numbers (device-specific 0..6, generic 28..34)."""
    INPUT_RANGE    = 0
    DOMAIN_RANGE   = 1
    MAP_UNMAP      = 2
    BYPASS         = 3
    PROBE          = 4
    MMIO           = 5
    BYPASS_CONFIG  = 6
    INDIRECT_DESC  = 28
    EVENT_IDX      = 29
    VERSION_1      = 32
    ACCESS_PLATFORM = 33
    RING_PACKED    = 34


class AttachFlag(enum.IntFlag):
    BYPASS = 1 << 0


class MapFlag(enum.IntFlag):
    READ  = 1 << 0
    WRITE = 1 << 1
    MMIO  = 1 << 2


class ProbeType(enum.IntEnum):
    NONE     = 0
    RESV_MEM = 1


class ResvSubtype(enum.IntEnum):
    RESERVED = 0
    MSI      = 1


class FaultReason(enum.IntEnum):
    UNKNOWN = 0
    DOMAIN  = 1
    MAPPING = 2


class FaultFlag(enum.IntFlag):
    READ    = 1 << 0
    WRITE   = 1 << 1
    EXEC    = 1 << 2
    ADDRESS = 1 << 8


class DescFlag(enum.IntFlag):
    NEXT     = 1
    WRITE    = 2
    INDIRECT = 4


class AvailFlag(enum.IntFlag):
    NO_INTERRUPT = 1


class UsedFlag(enum.IntFlag):
    NO_NOTIFY = 1


class DeviceStatus(enum.IntFlag):
    ACKNOWLEDGE        = 1
    DRIVER             = 2
    DRIVER_OK          = 4
    FEATURES_OK        = 8
    DEVICE_NEEDS_RESET = 64
    FAILED             = 128


# --- virtio-iommu wire formats ----------------------------------------------------------

class ReqHead(data.Struct):
    type:     8
    reserved: 24


class ReqTail(data.Struct):
    status:   8
    reserved: 24


class AttachReq(data.Struct):
    head:     ReqHead
    domain:   32
    endpoint: 32
    flags:    32
    reserved: 32


class DetachReq(data.Struct):
    head:     ReqHead
    domain:   32
    endpoint: 32
    reserved: 64


class MapReq(data.Struct):
    head:       ReqHead
    domain:     32
    virt_start: 64
    virt_end:   64
    phys_start: 64
    flags:      32


class UnmapReq(data.Struct):
    head:       ReqHead
    domain:     32
    virt_start: 64
    virt_end:   64
    reserved:   32


class ProbeReq(data.Struct):
    head:     ReqHead
    endpoint: 32
    reserved: 512


class Range64(data.Struct):
    start: 64
    end:   64


class Range32(data.Struct):
    start: 32
    end:   32


class Config(data.Struct):
    page_size_mask: 64
    input_range:    Range64
    domain_range:   Range32
    probe_size:     32
    bypass:         8
    reserved:       24


class ProbePropHeader(data.Struct):
    type:     12
    reserved: 4
    length:   16


class ProbeResvMem(data.Struct):
    head:     ProbePropHeader
    subtype:  8
    reserved: 24
    start:    64
    end:      64


class Fault(data.Struct):
    reason:    8
    reserved:  24
    flags:     32
    endpoint:  32
    reserved1: 32
    address:   64


# --- split virtqueue --------------------------------------------------------------------

class QueueConfig(data.Struct):
    """What the driver configured for one virtqueue, as a transport hands it to the
    virtqueue engine.

    ``num`` is the queue size (a power of two, 1..QueueNumMax); ``desc`` / ``driver`` /
    ``device`` are the guest-physical addresses of the descriptor table, the available
    ring and the used ring, as written (alignment is not checked). The fields only change
    while ``ready`` = 0 (or on a device or queue reset, which also clear ``ready``).
    """
    ready:  1
    num:    16
    desc:   64
    driver: 64
    device: 64


class VirtqDesc(data.Struct):
    addr:  64
    len:   32
    flags: 16
    next:  16


class VirtqUsedElem(data.Struct):
    id:  32
    len: 32


class VirtqRingHeader(data.Struct):
    """The first 4 bytes of the available and of the used ring."""
    flags: 16
    idx:   16


def sizeof(layout):
    """Size in bytes of a wire-format layout."""
    size = data.Layout.cast(layout).size
    assert size % 8 == 0, layout
    return size // 8


#: Bytes of the device-readable part of each request type (head included).
REQ_READABLE_SIZE = {
    ReqType.ATTACH: sizeof(AttachReq),
    ReqType.DETACH: sizeof(DetachReq),
    ReqType.MAP:    sizeof(MapReq),
    ReqType.UNMAP:  sizeof(UnmapReq),
    ReqType.PROBE:  sizeof(ProbeReq),
}
REQ_TAIL_SIZE = sizeof(ReqTail)


def _const_bits(layout, fields):
    return data.Layout.cast(layout).const(fields).as_value().value


def pack(layout, fields=None, **kwargs):
    """Pack ``fields`` (a dict, nested dicts for nested structs) into little-endian bytes."""
    fields = dict(fields or {}, **kwargs)
    return _const_bits(layout, fields).to_bytes(sizeof(layout), "little")


def unpack(layout, raw):
    """Unpack little-endian ``raw`` bytes into a ``data.Const`` view of ``layout``.

    Fields are read as attributes: ``unpack(MapReq, b).virt_start``. Bytes beyond the layout
    are ignored; missing bytes read as zero.
    """
    layout = data.Layout.cast(layout)
    value = int.from_bytes(bytes(raw)[:sizeof(layout)], "little")
    return layout.from_bits(value)


# --- internal stream payloads -----------------------------------------------------------

#: Width of a request/response data beat, in bytes.
BEAT_BYTES = 8


class ReqBeat(data.Struct):
    """One beat of a request's device-readable bytes, engine -> executor.

    ``data`` holds bytes ``8*k .. 8*k+7`` of the readable part, byte 0 in bits 0..7. Every
    beat but the last carries 8 bytes; the last (``last`` = 1) carries ``nbytes`` bytes
    (0..8; 0 only for an empty readable part). ``wlen`` is the size in bytes of the
    request's device-writable part (saturated at 0xffff); it must be valid on the last beat.
    """
    data:   64
    nbytes: 4
    last:   1
    wlen:   16


class RespBeat(data.Struct):
    """One beat of the bytes the device writes back, executor -> engine.

    Same packing as :class:`ReqBeat`. The sum of ``nbytes`` over a response is the used
    length; a response that writes nothing is a single beat with ``nbytes`` = 0.
    """
    data:   64
    nbytes: 4
    last:   1


class Features(data.Struct):
    """Negotiated device features that change how requests and lookups are answered."""
    input_range:   1
    domain_range:  1
    map_unmap:     1
    bypass:        1
    probe:         1
    mmio:          1
    bypass_config: 1


def lookup_request_layout(endpoint_width):
    """Translation lookup request: which endpoint accesses which address, how."""
    return data.StructLayout({
        "endpoint": unsigned(endpoint_width),
        "iova":     unsigned(64),
        "write":    unsigned(1),
    })


class LookupVia(hdl_enum.Enum, shape=2):
    """Why a lookup was allowed (``NONE`` when denied)."""
    NONE    = 0
    MAPPING = 1
    BYPASS  = 2
    MSI     = 3


def lookup_response_layout(endpoint_width):
    """Translation lookup response.

    ``allowed``: the access may proceed to ``phys``. ``mmio``: the hit mapping is MMIO (device
    memory type: do not buffer, combine or split). ``via``: why it was allowed. When denied,
    ``reason`` / ``flags`` are the fault report's fields (:class:`FaultReason`,
    :class:`FaultFlag`), ``phys`` is ``iova`` and ``mmio`` is 0 (a denial carries no
    translation), and ``endpoint`` / ``iova`` echo the request for the report.
    ``retry``: with a mapping store, the mapping table missed and the store is being asked:
    nothing is decided (``allowed`` 0, ``reason`` and ``flags`` 0, no fault to report);
    present the same access again. Always 0 without a store.
    """
    return data.StructLayout({
        "allowed":  unsigned(1),
        "phys":     unsigned(64),
        "mmio":     unsigned(1),
        "via":      LookupVia,
        "reason":   unsigned(2),
        "flags":    unsigned(9),
        "endpoint": unsigned(endpoint_width),
        "iova":     unsigned(64),
        "write":    unsigned(1),
        "retry":    unsigned(1),
    })


def lookup_miss_layout(params):
    """A lookup port's miss, waiting for a fill from the mapping store: the domain slot
    and the IOVA page number."""
    return data.StructLayout({
        "dslot": unsigned(max(1, (params.n_endpoints - 1).bit_length())),
        "page":  unsigned(params.page_bits),
    })


# --- internal state of the core ----------------------------------------------------------

def mapping_tag_layout(page_bits, dslot_bits):
    """The part of a mapping-table entry that every lookup looks at (kept in flip-flops).

    ``start`` / ``end`` are inclusive page numbers (IOVA >> page_shift), so the last page of
    the 64-bit space is representable; ``dslot`` names the entry's domain slot; ``read`` /
    ``write`` are the mapping's permissions (each lookup decides them per entry, beside
    the range compare, so that no payload read sits in front of the allow/deny decision).
    """
    return data.StructLayout({
        "valid":  unsigned(1),
        "dslot":  unsigned(dslot_bits),
        "start":  unsigned(page_bits),
        "end":    unsigned(page_bits),
        "read":   unsigned(1),
        "write":  unsigned(1),
    })


def mapping_payload_layout(phys_page_bits):
    """The part of a mapping-table entry read only for the hit entry (kept in LUT RAM).

    ``offset`` is ``phys_page - start`` modulo ``2**phys_page_bits``: the translation is
    ``iova + (offset << page_shift)``; ``mmio``: the mapping's memory type.
    """
    return data.StructLayout({
        "offset": unsigned(phys_page_bits),
        "mmio":   unsigned(1),
    })


def mapping_entry_layout(page_bits, dslot_bits, phys_page_bits):
    """One mapping-table entry: its tag and its payload."""
    return data.StructLayout({
        "tag":     mapping_tag_layout(page_bits, dslot_bits),
        "payload": mapping_payload_layout(phys_page_bits),
    })


def endpoint_state_layout(dslot_bits):
    """State of one endpoint: attached or not, to which domain slot, and whether that
    domain was created with ATTACH_F_BYPASS (copied here for the lookup path)."""
    return data.StructLayout({
        "attached": unsigned(1),
        "dslot":    unsigned(dslot_bits),
        "bypass":   unsigned(1),
    })


class DomainState(data.Struct):
    """State of one domain slot: whether it holds a live domain, its ID and bypass type."""
    valid:  1
    id:     32
    bypass: 1


# --- board: the serial bridge's frames and the board control registers -------------------

class BridgeByte(enum.IntEnum):
    """Command and reply bytes of the serial bridge (:mod:`~viommu.rtl.board.bridge`)."""
    WRITE = 0x57        # 'W'
    READ  = 0x52        # 'R'
    ACK   = 0x06
    NAK   = 0x15


#: Most 32-bit words one bridge frame moves (``count`` is one byte holding count - 1).
BRIDGE_MAX_WORDS = 256


class BridgeHeader(data.Struct):
    """The first 6 bytes of every bridge frame, host -> board: the command byte
    (:class:`BridgeByte` WRITE or READ), the byte address of the first word (bits 1..0
    must be 0) and the number of words minus one."""
    cmd:   8
    addr:  32
    count: 8


class BoardConfig(data.Struct):
    """The board control block's CONFIG register: how the device on the board was built,
    so that a host can set up its reference model without being told.

    ``ids_0_to_n`` is 1 when the endpoint IDs are ``0 .. endpoints_m1`` (otherwise the
    host needs the list). ``axi_bytes_log2``: 3 for a 64-bit, 4 for a 128-bit DMA bus.
    """
    entries_m1:        10
    endpoints_m1:      6
    endpoint_width_m1: 5
    lookup_ports_m1:   3
    axi_bytes_log2:    3
    queue_size_log2:   4
    ids_0_to_n:        1


class BoardStatus(data.Struct):
    """The board control block's STATUS register. ``irq`` and ``driver_ok`` are levels;
    the ``*_seen`` bits are sticky (set by the event, cleared by writing 1)."""
    irq:               1
    driver_ok:         1
    fault_seen:        1
    dma_error_seen:    1
    uart_error_seen:   1
    bridge_abort_seen: 1
    reserved:          26


class ProbeControl(data.Struct):
    """The board control block's PROBE_CTRL register: ``write`` is the access type of the
    probe lookup; writing ``go`` = 1 issues it (``go`` reads 0)."""
    write:     1
    reserved0: 7
    go:        1
    reserved1: 23


class ProbeResult(data.Struct):
    """The board control block's PROBE_RESULT register: the last probe lookup's answer
    (the fields of :func:`lookup_response_layout`), ``done`` once it has arrived."""
    allowed:   1
    mmio:      1
    via:       2
    reason:    2
    reserved0: 2
    flags:     9
    reserved1: 14
    done:      1
