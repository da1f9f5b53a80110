"""The project's wire formats (rtl/core/layouts.py) against the Linux UAPI headers.

A small C program is compiled against ``<linux/virtio_iommu.h>`` (and, for the generic
virtqueue constants, ``<linux/virtio_ring.h>`` / ``virtio_config.h`` / ``virtio_ids.h``).
It prints ``sizeof`` and ``offsetof`` of every member of every struct of the header (nested
members included) and the value of every ``#define`` constant; the test compares them with
the Amaranth layouts and the enums. The list of structs, members and constants is parsed
from the header itself, so a member or constant the project does not model is a failure,
not a silent omission.

The C ``virtio_iommu_req_*`` structs include the tail; the project's ``*Req`` layouts are
only the device-readable part, so the C offset of ``tail`` (of ``properties`` for PROBE) must
equal the project layout's size.
"""

import os
import re
import shutil
import subprocess

import pytest

from amaranth.lib import data

from viommu.rtl.core.layouts import (
    ReqType, Status, Feature, AttachFlag, MapFlag, ProbeType, ResvSubtype, FaultReason,
    FaultFlag, DescFlag, AvailFlag, UsedFlag, DeviceStatus, VIRTIO_ID_IOMMU,
    ReqHead, ReqTail, AttachReq, DetachReq, MapReq, UnmapReq, ProbeReq, Config, Range64,
    Range32, ProbePropHeader, ProbeResvMem, Fault, VirtqDesc, VirtqUsedElem,
    REQ_READABLE_SIZE, REQ_TAIL_SIZE, pack, unpack, sizeof,
)


INCLUDE = "/usr/include"
HEADER = os.path.join(INCLUDE, "linux", "virtio_iommu.h")

#: C struct name -> the project's layout.
STRUCTS = {
    "virtio_iommu_range_64":       Range64,
    "virtio_iommu_range_32":       Range32,
    "virtio_iommu_config":         Config,
    "virtio_iommu_req_head":       ReqHead,
    "virtio_iommu_req_tail":       ReqTail,
    "virtio_iommu_req_attach":     AttachReq,
    "virtio_iommu_req_detach":     DetachReq,
    "virtio_iommu_req_map":        MapReq,
    "virtio_iommu_req_unmap":      UnmapReq,
    "virtio_iommu_req_probe":      ProbeReq,
    "virtio_iommu_probe_property": ProbePropHeader,
    "virtio_iommu_probe_resv_mem": ProbeResvMem,
    "virtio_iommu_fault":          Fault,
}

#: Request structs: the member that starts the device-writable part.
WRITABLE_START = {
    "virtio_iommu_req_attach": "tail",
    "virtio_iommu_req_detach": "tail",
    "virtio_iommu_req_map":    "tail",
    "virtio_iommu_req_unmap":  "tail",
    "virtio_iommu_req_probe":  "properties",
}

#: (C struct, C member) -> project field name, where they differ.
RENAMES = {
    # The header calls the second reserved field of the fault report reserved2; the spec
    # digest and the project call it reserved1. Same offset and size (checked below).
    ("virtio_iommu_fault", "reserved2"): "reserved1",
}

#: (C struct, C member) whose one C integer the project splits into several bit fields:
#: the project fields (in order) that together cover exactly the C member.
SPLIT = {
    # le16 type: 12-bit type + 4 reserved bits (VIRTIO_IOMMU_PROBE_T_MASK = 0xfff).
    ("virtio_iommu_probe_property", "type"): ("type", "reserved"),
}


# --- header parsing ---------------------------------------------------------------------

_STRUCT_RE = re.compile(r"struct\s+(\w+)\s*\{(.*?)\}\s*;", re.S)
_MEMBER_RE = re.compile(r"^\s*(struct\s+\w+|\w+)\s+(\w+)\s*(\[\s*(\w*)\s*\])?\s*;", re.M)
_DEFINE_RE = re.compile(r"^#define\s+(VIRTIO_IOMMU_\w+)\s", re.M)


def _strip_comments(text):
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def parse_header(path):
    """``({struct: [(ctype, member, array_len_or_None_or_'')]}, [define names])``."""
    text = _strip_comments(open(path).read())
    structs = {}
    for name, body in _STRUCT_RE.findall(text):
        members = []
        for ctype, member, arr, n in _MEMBER_RE.findall(body):
            members.append((" ".join(ctype.split()), member, (n if arr else None)))
        structs[name] = members
    defines = _DEFINE_RE.findall(text)
    return structs, defines


# --- C program --------------------------------------------------------------------------

def _need_toolchain():
    if not os.path.exists(HEADER):
        pytest.skip(f"{HEADER} not installed (Debian package linux-libc-dev)")
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (cc) on PATH")
    return cc


def _compile_and_run(tmp_path, source):
    cc = _need_toolchain()
    src = tmp_path / "probe.c"
    exe = tmp_path / "probe"
    src.write_text(source)
    build = subprocess.run([cc, "-std=gnu11", "-Wall", "-Werror", "-o", str(exe), str(src)],
                           capture_output=True, text=True)
    assert build.returncode == 0, f"C compile failed:\n{build.stderr}"
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    result = {}
    for line in out.splitlines():
        key, value = line.rsplit(" ", 1)
        result[key] = int(value, 0)
    return result


def _member_paths(structs, sname, prefix=""):
    """Every member path of C struct ``sname``, nested structs expanded (pre-order).

    Yields ``(path, ctype, array)``.
    """
    for ctype, member, arr in structs[sname]:
        path = prefix + member
        yield path, ctype, arr
        if ctype.startswith("struct ") and arr is None:
            yield from _member_paths(structs, ctype.split()[1], path + ".")


def _c_program(structs, defines):
    lines = [
        "#include <stddef.h>",
        "#include <stdio.h>",
        "#include <linux/virtio_iommu.h>",
        "",
        "#define MSIZE(s, m) sizeof(((struct s *)0)->m)",
        "int main(void) {",
    ]
    for sname in structs:
        lines.append(f'    printf("sizeof {sname} %zu\\n", sizeof(struct {sname}));')
        for path, ctype, arr in _member_paths(structs, sname):
            lines.append(f'    printf("offsetof {sname}.{path} %zu\\n", '
                         f'offsetof(struct {sname}, {path}));')
            if arr != "":           # a flexible array member has no size
                lines.append(f'    printf("sizeof {sname}.{path} %zu\\n", '
                             f'MSIZE({sname}, {path}));')
    for d in defines:
        lines.append(f'    printf("{d} %lld\\n", (long long)({d}));')
    lines += ["    return 0;", "}", ""]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def c_facts(tmp_path_factory):
    _need_toolchain()
    structs, defines = parse_header(HEADER)
    tmp = tmp_path_factory.mktemp("c_layouts")
    return structs, defines, _compile_and_run(tmp, _c_program(structs, defines))


# --- project layouts, flattened ---------------------------------------------------------

def flatten(layout, prefix="", base=0):
    """``{path: (bit_offset, bit_width)}`` of every field of a (nested) struct layout."""
    layout = data.Layout.cast(layout)
    out = {}
    for name, fld in layout:
        path = prefix + name
        off = base + fld.offset
        out[path] = (off, fld.width)
        shape = fld.shape
        try:
            inner = data.Layout.cast(shape)
        except TypeError:
            inner = None
        if isinstance(inner, data.StructLayout):
            out.update(flatten(inner, path + ".", off))
    return out


def _resolve(structs, sname, c_path):
    """Project field path for C member path ``c_path`` of struct ``sname``, and the
    project sub-fields that together make up the C member (``SPLIT``), or None."""
    out = []
    cur = sname
    split = None
    for p in c_path.split("."):
        declaring = cur
        out.append(RENAMES.get((declaring, p), p))
        split = SPLIT.get((declaring, p))
        ctype = next(t for t, m, _ in structs[declaring] if m == p)
        if ctype.startswith("struct "):
            cur = ctype.split()[1]
    return ".".join(out), split


# --- tests ------------------------------------------------------------------------------

def test_header_has_the_structs_we_model(c_facts):
    structs, _, _ = c_facts
    assert set(structs) == set(STRUCTS), \
        "the header's structs and the project's layouts do not correspond one to one"


@pytest.mark.parametrize("sname", sorted(STRUCTS))
def test_struct_layout_matches_c(c_facts, sname):
    structs, _, c = c_facts
    layout = STRUCTS[sname]
    flat = flatten(layout)
    proj_size = sizeof(layout)
    wstart = WRITABLE_START.get(sname)

    # Total size: for requests, the readable part ends where the C writable part starts.
    if wstart is None:
        assert c[f"sizeof {sname}"] == proj_size, sname
    else:
        assert c[f"offsetof {sname}.{wstart}"] == proj_size, \
            f"{sname}: C offset of {wstart} != size of the project's readable layout"
        if wstart == "tail":
            assert c[f"sizeof {sname}.tail"] == sizeof(ReqTail) == REQ_TAIL_SIZE
            assert c[f"sizeof {sname}"] == proj_size + REQ_TAIL_SIZE
        else:   # PROBE: flexible properties[] array, the C struct is the readable part
            assert c[f"sizeof {sname}"] == proj_size

    # Every C member (nested ones too) has a project field at the same offset and size.
    seen = set()
    for path, ctype, arr in _member_paths(structs, sname):
        if wstart is not None and path.split(".")[0] == wstart:
            continue
        off = c[f"offsetof {sname}.{path}"]
        size = c[f"sizeof {sname}.{path}"]
        ppath, split = _resolve(structs, sname, path)
        assert ppath in flat, f"{sname}.{path}: no project field {ppath!r}"
        if split is None:
            poff, pwidth = flat[ppath]
            assert (poff, pwidth) == (8 * off, 8 * size), \
                f"{sname}.{path}: C offset {off} size {size}, project bits {poff}+{pwidth}"
            seen.add(ppath)
        else:
            prefix = ppath.rsplit(".", 1)[0] + "." if "." in ppath else ""
            bit = 8 * off
            for part in split:
                poff, pwidth = flat[prefix + part]
                assert poff == bit, f"{sname}.{path}: project {prefix + part} at bit {poff}"
                bit += pwidth
                seen.add(prefix + part)
            assert bit == 8 * (off + size), f"{sname}.{path}: split fields do not cover it"

    # ... and the project has no field the C struct lacks.
    assert seen == set(flat), f"{sname}: project-only fields {sorted(set(flat) - seen)}"


def _expected_constant(name):
    """The project's value for ``VIRTIO_IOMMU_<name>``."""
    n = name[len("VIRTIO_IOMMU_"):]
    table = [
        ("F_", Feature), ("T_", ReqType), ("S_", Status), ("ATTACH_F_", AttachFlag),
        ("MAP_F_", MapFlag), ("PROBE_T_", ProbeType), ("RESV_MEM_T_", ResvSubtype),
        ("FAULT_R_", FaultReason), ("FAULT_F_", FaultFlag),
    ]
    if n == "MAP_F_MASK":
        mask = 0
        for f in MapFlag:
            mask |= int(f)
        return mask
    if n == "PROBE_T_MASK":
        return (1 << flatten(ProbePropHeader)["type"][1]) - 1
    for prefix, enum_cls in table:
        if n.startswith(prefix):
            return int(enum_cls[n[len(prefix):]])
    raise AssertionError(f"constant {name} has no counterpart in rtl/core/layouts.py")


def test_every_define_matches(c_facts):
    _, defines, c = c_facts
    assert len(defines) >= 38, defines   # 38 in the v0.12 header
    for d in defines:
        assert c[d] == _expected_constant(d), d


@pytest.mark.parametrize("prefix,enum_cls,skip", [
    ("F_", Feature, {"INDIRECT_DESC", "EVENT_IDX", "VERSION_1", "ACCESS_PLATFORM",
                     "RING_PACKED"}),
    ("T_", ReqType, set()), ("S_", Status, set()), ("ATTACH_F_", AttachFlag, set()),
    ("MAP_F_", MapFlag, set()), ("PROBE_T_", ProbeType, set()),
    ("RESV_MEM_T_", ResvSubtype, set()), ("FAULT_R_", FaultReason, set()),
    ("FAULT_F_", FaultFlag, set()),
])
def test_every_enum_member_is_in_header(c_facts, prefix, enum_cls, skip):
    """The reverse direction: no project constant that the header does not define."""
    _, defines, c = c_facts
    for member in enum_cls:
        if member.name in skip:
            continue
        name = f"VIRTIO_IOMMU_{prefix}{member.name}"
        assert name in c, f"{enum_cls.__name__}.{member.name} is not in the header"
        assert c[name] == int(member)


def test_readable_sizes_table():
    assert REQ_READABLE_SIZE == {ReqType.ATTACH: 20, ReqType.DETACH: 20, ReqType.MAP: 36,
                                 ReqType.UNMAP: 28, ReqType.PROBE: 72}
    assert REQ_TAIL_SIZE == 4
    assert sizeof(Config) == 40 and sizeof(Fault) == 24 and sizeof(ProbeResvMem) == 24


# --- bytes: pack/unpack and the C compiler's own encoding -------------------------------

MAP_FIELDS = dict(head={"type": ReqType.MAP, "reserved": 0xabcdef}, domain=0x89abcdef,
                  virt_start=0x0123456789abc000, virt_end=(1 << 64) - 1,
                  phys_start=0xfedcba9876543000, flags=MapFlag.READ | MapFlag.MMIO)


def test_map_pack_unpack_roundtrip_full_64bit():
    raw = pack(MapReq, MAP_FIELDS)
    assert len(raw) == 36
    assert raw[0] == 3 and raw[1:4] == bytes([0xef, 0xcd, 0xab])
    assert raw[4:8] == (0x89abcdef).to_bytes(4, "little")
    assert raw[8:16] == (0x0123456789abc000).to_bytes(8, "little")
    assert raw[16:24] == b"\xff" * 8
    assert raw[24:32] == (0xfedcba9876543000).to_bytes(8, "little")
    assert raw[32:36] == bytes([5, 0, 0, 0])
    v = unpack(MapReq, raw)
    assert v.head.type == 3 and v.head.reserved == 0xabcdef
    assert v.domain == 0x89abcdef
    assert v.virt_start == 0x0123456789abc000
    assert v.virt_end == (1 << 64) - 1
    assert v.phys_start == 0xfedcba9876543000
    assert v.flags == 5
    assert pack(MapReq, {
        "head": {"type": v.head.type, "reserved": v.head.reserved}, "domain": v.domain,
        "virt_start": v.virt_start, "virt_end": v.virt_end, "phys_start": v.phys_start,
        "flags": v.flags}) == raw
    # Bytes beyond the layout are ignored; missing bytes read as zero.
    assert unpack(MapReq, raw + b"\xff" * 8).virt_end == (1 << 64) - 1
    assert unpack(MapReq, raw[:20]).virt_end == 0xffffffff
    assert unpack(MapReq, raw[:20]).phys_start == 0


def test_encodings_match_c(tmp_path):
    """The C compiler fills the structs; the bytes must equal pack()'s."""
    src = r"""
#include <endian.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <linux/virtio_iommu.h>

static void dump(const char *name, const void *p, size_t n) {
    const unsigned char *b = p;
    printf("%s 0x", name);
    for (size_t i = n; i-- > 0;) printf("%02x", b[i]);   /* little-endian integer */
    printf("\n");
}

int main(void) {
    struct virtio_iommu_req_map m;
    memset(&m, 0, sizeof m);
    m.head.type = VIRTIO_IOMMU_T_MAP;
    m.head.reserved[0] = 0xef; m.head.reserved[1] = 0xcd; m.head.reserved[2] = 0xab;
    m.domain = htole32(0x89abcdef);
    m.virt_start = htole64(0x0123456789abc000ULL);
    m.virt_end = htole64(0xffffffffffffffffULL);
    m.phys_start = htole64(0xfedcba9876543000ULL);
    m.flags = htole32(VIRTIO_IOMMU_MAP_F_READ | VIRTIO_IOMMU_MAP_F_MMIO);
    m.tail.status = 0x77;
    dump("map", &m, offsetof(struct virtio_iommu_req_map, tail));

    struct virtio_iommu_req_attach a;
    memset(&a, 0, sizeof a);
    a.head.type = VIRTIO_IOMMU_T_ATTACH;
    a.domain = htole32(0x11223344); a.endpoint = htole32(0x55667788);
    a.flags = htole32(VIRTIO_IOMMU_ATTACH_F_BYPASS); a.reserved[3] = 0x9a;
    dump("attach", &a, offsetof(struct virtio_iommu_req_attach, tail));

    struct virtio_iommu_probe_resv_mem r;
    memset(&r, 0, sizeof r);
    r.head.type = htole16(VIRTIO_IOMMU_PROBE_T_RESV_MEM | 0x3000);
    r.head.length = htole16(sizeof r - sizeof r.head);
    r.subtype = VIRTIO_IOMMU_RESV_MEM_T_MSI;
    r.start = htole64(0xfee00000ULL); r.end = htole64(0xfeefffffULL);
    dump("resv", &r, sizeof r);

    struct virtio_iommu_config c;
    memset(&c, 0, sizeof c);
    c.page_size_mask = htole64(0xfffffffffffff000ULL);
    c.input_range.start = htole64(0x1000); c.input_range.end = htole64(0xffffffffffffULL);
    c.domain_range.start = htole32(1); c.domain_range.end = htole32(100);
    c.probe_size = htole32(64); c.bypass = 1;
    dump("config", &c, sizeof c);

    struct virtio_iommu_fault f;
    memset(&f, 0, sizeof f);
    f.reason = VIRTIO_IOMMU_FAULT_R_MAPPING;
    f.flags = htole32(VIRTIO_IOMMU_FAULT_F_WRITE | VIRTIO_IOMMU_FAULT_F_ADDRESS);
    f.endpoint = htole32(0xdeadbeef); f.address = htole64(0x8000000123ULL);
    dump("fault", &f, sizeof f);
    return 0;
}
"""
    c = _compile_and_run(tmp_path, src)
    as_bytes = lambda key, n: c[key].to_bytes(n, "little")

    assert as_bytes("map", 36) == pack(MapReq, MAP_FIELDS)
    assert as_bytes("attach", 20) == pack(AttachReq, head={"type": ReqType.ATTACH},
                                          domain=0x11223344, endpoint=0x55667788,
                                          flags=AttachFlag.BYPASS, reserved=0x9a << 24)
    resv = as_bytes("resv", 24)
    assert resv == pack(ProbeResvMem, head={"type": ProbeType.RESV_MEM, "reserved": 3,
                                            "length": 20},
                        subtype=ResvSubtype.MSI, start=0xfee00000, end=0xfeefffff)
    v = unpack(ProbeResvMem, resv)
    assert (v.head.type, v.head.reserved, v.head.length) == (1, 3, 20)
    assert as_bytes("config", 40) == pack(Config, {
        "page_size_mask": 0xfffffffffffff000,
        "input_range": {"start": 0x1000, "end": 0xffffffffffff},
        "domain_range": {"start": 1, "end": 100}, "probe_size": 64, "bypass": 1})
    assert as_bytes("fault", 24) == pack(Fault, reason=FaultReason.MAPPING,
                                         flags=FaultFlag.WRITE | FaultFlag.ADDRESS,
                                         endpoint=0xdeadbeef, address=0x8000000123)


# --- generic virtio constants and split-ring structs ------------------------------------

def test_generic_virtio_constants_and_ring(tmp_path):
    for h in ("virtio_ring.h", "virtio_config.h", "virtio_ids.h"):
        if not os.path.exists(os.path.join(INCLUDE, "linux", h)):
            pytest.skip(f"<linux/{h}> not installed")
    consts = {
        "VIRTIO_RING_F_INDIRECT_DESC": Feature.INDIRECT_DESC,
        "VIRTIO_RING_F_EVENT_IDX": Feature.EVENT_IDX,
        "VIRTIO_F_VERSION_1": Feature.VERSION_1,
        "VIRTIO_F_ACCESS_PLATFORM": Feature.ACCESS_PLATFORM,
        "VIRTIO_F_RING_PACKED": Feature.RING_PACKED,
        "VRING_DESC_F_NEXT": DescFlag.NEXT, "VRING_DESC_F_WRITE": DescFlag.WRITE,
        "VRING_DESC_F_INDIRECT": DescFlag.INDIRECT,
        "VRING_USED_F_NO_NOTIFY": UsedFlag.NO_NOTIFY,
        "VRING_AVAIL_F_NO_INTERRUPT": AvailFlag.NO_INTERRUPT,
        "VIRTIO_CONFIG_S_ACKNOWLEDGE": DeviceStatus.ACKNOWLEDGE,
        "VIRTIO_CONFIG_S_DRIVER": DeviceStatus.DRIVER,
        "VIRTIO_CONFIG_S_DRIVER_OK": DeviceStatus.DRIVER_OK,
        "VIRTIO_CONFIG_S_FEATURES_OK": DeviceStatus.FEATURES_OK,
        "VIRTIO_CONFIG_S_NEEDS_RESET": DeviceStatus.DEVICE_NEEDS_RESET,
        "VIRTIO_CONFIG_S_FAILED": DeviceStatus.FAILED,
        "VIRTIO_ID_IOMMU": VIRTIO_ID_IOMMU,
    }
    fields = {
        ("vring_desc", VirtqDesc): ("addr", "len", "flags", "next"),
        ("vring_used_elem", VirtqUsedElem): ("id", "len"),
    }
    lines = ["#include <stddef.h>", "#include <stdio.h>", "#include <linux/virtio_ring.h>",
             "#include <linux/virtio_config.h>", "#include <linux/virtio_ids.h>",
             "int main(void) {"]
    for k in consts:
        lines.append(f'    printf("{k} %lld\\n", (long long)({k}));')
    for (s, _), names in fields.items():
        lines.append(f'    printf("sizeof {s} %zu\\n", sizeof(struct {s}));')
        for n in names:
            lines.append(f'    printf("offsetof {s}.{n} %zu\\n", offsetof(struct {s}, {n}));')
            lines.append(f'    printf("sizeof {s}.{n} %zu\\n", '
                         f'sizeof(((struct {s} *)0)->{n}));')
    lines += ["    return 0;", "}", ""]
    c = _compile_and_run(tmp_path, "\n".join(lines))
    for k, v in consts.items():
        assert c[k] == int(v), k
    for (s, layout), names in fields.items():
        flat = flatten(layout)
        assert c[f"sizeof {s}"] == sizeof(layout)
        assert set(flat) == set(names)
        for n in names:
            assert flat[n] == (8 * c[f"offsetof {s}.{n}"], 8 * c[f"sizeof {s}.{n}"]), n
