"""Reading a kernel ELF: its loadable segments, entry point and identity (size, SHA-256).

Everything that can go wrong with a user's file ends in one HighbootError naming the file;
pyelftools' own exceptions never escape.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field, replace
from enum import IntFlag
from itertools import pairwise
from pathlib import Path
from typing import Any

from elftools.common.exceptions import ELFError, ELFParseError, ELFRelocationError
from elftools.elf.elffile import ELFFile

from highboot.errors import HighbootError
from highboot.inputs import fsverity
from highboot.inputs.paths import KERNEL, read_file
from highboot.inputs.relocations import LoadedSegment, Relocation, read_relocations
from highboot.units import align_down, align_up, hex_addr

PF_X = 0x1
PF_W = 0x2
PF_R = 0x4
PAGE = 4096
ELF_MAGIC = b"\x7fELF"
ELF64_EHDR_SIZE, ELF64_PHDR_SIZE, ELF64_SHDR_SIZE = 64, 56, 64
PN_XNUM = 0xFFFF
ELF64_SHDR = "<IIQQQQIIQQ"  # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info, ...
# A kernel larger than this is almost certainly a corrupted header, not a kernel.
MAX_KERNEL_MEMSZ = 1 << 32
#: The largest page is 1 GiB; a segment asking for more alignment has a corrupted header.
MAX_ALIGN = 1 << 30


class SegmentFlags(IntFlag):
    EXECUTE = PF_X
    WRITE = PF_W
    READ = PF_R


@dataclass(frozen=True)
class Segment:
    """One PT_LOAD segment: where it lives in the file and where it goes in memory."""

    index: int
    vaddr: int
    memsz: int
    offset: int
    filesz: int
    flags: SegmentFlags

    @property
    def end(self) -> int:
        return self.vaddr + self.memsz

    def describe(self) -> str:
        perms = "".join(c if self.flags & f else "-" for c, f in (("R", PF_R), ("W", PF_W), ("X", PF_X)))
        return f"PT_LOAD #{self.index} ({perms} {hex_addr(self.vaddr)}..{hex_addr(self.end)})"


@dataclass(frozen=True)
class TlsTemplate:
    """PT_TLS: the initialization image of one thread's TLS block."""

    vaddr: int
    filesz: int
    memsz: int
    align: int


@dataclass(frozen=True)
class LoadedImage:
    """A kernel's initialised image (KernelImage.initialised_image): `size` bytes from `start`, of
    which `chunks` (offset from start, bytes) hold the segments' file bytes; the rest is zero."""

    start: int
    size: int
    chunks: tuple[tuple[int, bytes], ...]

    def read(self, at: int, size: int) -> bytes:
        """`size` bytes at offset `at` (zeros outside the chunks)."""
        out = bytearray(size)
        for off, data in self.chunks:
            lo, hi = max(at, off), min(at + size, off + len(data))
            if lo < hi:
                out[lo - at:hi - at] = data[lo - off:hi - off]
        return bytes(out)

    def find_aligned(self, needle: bytes, align: int = 8) -> list[int]:
        """Offsets of every occurrence of needle in the chunks at an address aligned to `align`."""
        out = []
        for off, data in self.chunks:
            at = data.find(needle)
            while at >= 0:
                if (self.start + off + at) % align == 0:
                    out.append(off + at)
                at = data.find(needle, at + 1)
        return sorted(out)


@dataclass(frozen=True)
class KernelImage:
    path: str
    size: int
    digest: str  # fs-verity digest (highboot.fsverity): what the loader checks
    entry: int
    segments: tuple[Segment, ...]
    position_independent: bool
    relocations: tuple[Relocation, ...] = field(default=())
    relro: tuple[int, int] | None = None  # PT_GNU_RELRO (vaddr, memsz)
    eh_frame_hdr: tuple[int, int] | None = None  # PT_GNU_EH_FRAME (vaddr, memsz)
    tls: TlsTemplate | None = None
    align: int = PAGE  # the largest p_align of PT_LOAD and PT_TLS: a PIE moves by multiples of it
    load_bias: int = 0  # added to every address of the file by placed()
    #: The file's bytes as read (the ones digest describes): a protocol looks for its marks in them.
    data: bytes = field(default=b"", repr=False, compare=False)

    def initialised_image(self) -> LoadedImage:
        """The loaded image from its lowest address up to the end of the last segment's file bytes
        (the trailing zero-fill left out), with every relocation applied: where a loader looks for a
        boot protocol's requests. Held as each segment's file bytes (what lies between reads as
        zeros), never as one buffer of the image's span."""
        start, last = self.start, max(self.segments, key=lambda s: s.end)
        size = max(0, last.vaddr + last.filesz - start)
        chunks = []
        for s in sorted(self.segments, key=lambda s: s.vaddr):
            data = bytearray(self.data[s.offset:s.offset + s.filesz][:max(0, size - (s.vaddr - start))])
            for r in self.relocations:
                if s.vaddr <= r.vaddr and r.vaddr + 8 <= s.vaddr + len(data):
                    data[r.vaddr - s.vaddr:r.vaddr - s.vaddr + 8] = r.value.to_bytes(8, "little")
            if data:
                chunks.append((s.vaddr - start, bytes(data)))
        return LoadedImage(start, size, tuple(chunks))

    @property
    def start(self) -> int:
        return min(s.vaddr for s in self.segments)

    @property
    def end(self) -> int:
        return max(s.end for s in self.segments)

    def placed(self, bias: int) -> KernelImage:
        """The same kernel moved by bias bytes (a PIE placed by the build): every address shifted,
        relative relocation values too; file offsets and absolute values stay."""
        def move(va: int) -> int:
            return (va + bias) % (1 << 64)

        return replace(
            self, entry=move(self.entry),
            segments=tuple(replace(s, vaddr=move(s.vaddr)) for s in self.segments),
            relocations=tuple(Relocation(move(r.vaddr), move(r.value) if r.relative else r.value, r.relative)
                              for r in self.relocations),
            relro=(move(self.relro[0]), self.relro[1]) if self.relro else None,
            eh_frame_hdr=(move(self.eh_frame_hdr[0]), self.eh_frame_hdr[1]) if self.eh_frame_hdr else None,
            tls=replace(self.tls, vaddr=move(self.tls.vaddr)) if self.tls else None,
            load_bias=(self.load_bias + bias) % (1 << 64),
        )


def read_kernel(path: str | Path) -> KernelImage:
    """Read and check a kernel ELF; raise HighbootError naming the file and the problem."""
    path = Path(path)
    data = read_file(path, KERNEL)
    try:
        return _parse(path, data)
    except HighbootError:
        raise
    except (ELFError, ELFParseError, ELFRelocationError, struct.error, ValueError, KeyError,
            IndexError, TypeError, AttributeError, AssertionError, OverflowError, MemoryError) as exc:
        detail = str(exc) or type(exc).__name__
        raise HighbootError(f"not a readable ELF file (truncated or corrupted?): {detail}", file=path) from None


def _parse(path: Path, data: bytes) -> KernelImage:
    elf = _check_header(path, data)
    etype = elf["e_type"]
    segments: list[Segment] = []
    special: dict[str, tuple[int, Any]] = {}  # PT_DYNAMIC, PT_GNU_RELRO, ...: (index, header)
    align = PAGE
    for index, seg in enumerate(_program_headers(data, elf)):
        ptype = seg["p_type"]
        where = f"program header {index}"
        if ptype == "PT_INTERP":
            raise HighbootError("PT_INTERP asks for a dynamic linker (ld.so); a kernel has none: link with "
                                "-static-pie, or ld -pie --no-dynamic-linker", file=path, field=where)
        if ptype in ("PT_DYNAMIC", "PT_GNU_RELRO", "PT_GNU_EH_FRAME", "PT_TLS"):
            if ptype in special:
                raise HighbootError(f"a second {ptype} (the first is program header {special[ptype][0]}); "
                                    "expected at most one", file=path, field=where)
            special[ptype] = (index, seg)
            if ptype == "PT_TLS":
                align = max(align, _check_align(path, seg["p_align"], where))
            continue
        if ptype != "PT_LOAD":
            continue
        s = Segment(index, seg["p_vaddr"], seg["p_memsz"], seg["p_offset"], seg["p_filesz"],
                    SegmentFlags(seg["p_flags"] & 7))
        if s.filesz > s.memsz:
            raise HighbootError(f"p_filesz {s.filesz:#x} is larger than p_memsz {s.memsz:#x}", file=path, field=where)
        if s.memsz == 0:
            continue  # an empty PT_LOAD loads nothing (linkers emit them for empty output sections)
        if s.offset + s.filesz > len(data):
            raise HighbootError(f"segment data ({s.offset:#x}+{s.filesz:#x}) runs past the end of the "
                                f"{len(data):#x}-byte file (truncated?)", file=path, field=where)
        if s.memsz > MAX_KERNEL_MEMSZ:
            raise HighbootError(f"p_memsz {s.memsz:#x} is not a plausible kernel size (over 4 GiB)",
                                file=path, field=where)
        if s.vaddr + s.memsz > (1 << 64):
            raise HighbootError(f"segment {hex_addr(s.vaddr)} + p_memsz {s.memsz:#x} runs past the top of the "
                                "64-bit address space", file=path, field=where)
        seg_align = _check_align(path, seg["p_align"], where)
        if (s.vaddr - s.offset) % seg_align:
            raise HighbootError(f"p_vaddr {hex_addr(s.vaddr)} and p_offset {s.offset:#x} differ modulo p_align "
                                f"{seg_align:#x}; the ELF format requires them congruent (corrupted header?)",
                                file=path, field=where)
        align = max(align, seg_align)
        if s.flags & PF_W and s.flags & PF_X:
            raise HighbootError(f"{s.describe()} is writable and executable; highboot maps no page both (W^X), "
                                "where other loaders (Limine among them) would: split it (text RX, data RW) in "
                                "the linker script", file=path, field=where)
        segments.append(s)
    if not segments:
        raise HighbootError("no PT_LOAD segment with memory; nothing to load", file=path, field="program headers")

    ordered = sorted(segments, key=lambda s: s.vaddr)
    for a, b in pairwise(ordered):
        if b.vaddr < a.end:
            raise HighbootError(f"{a.describe()} overlaps {b.describe()}", file=path, field="program headers")
    _check_shared_pages(path, ordered)

    entry = elf["e_entry"]
    if not any(s.flags & PF_X and s.vaddr <= entry < s.end for s in segments):
        raise HighbootError(f"entry point {hex_addr(entry)} is not inside an executable PT_LOAD segment",
                            file=path, field="e_entry")

    loaded = [LoadedSegment(s.vaddr, s.memsz, s.offset, s.filesz, bool(s.flags & PF_W)) for s in ordered]
    dynamic = None
    if "PT_DYNAMIC" in special:
        index, header = special["PT_DYNAMIC"]
        dynamic = (header["p_vaddr"], header["p_offset"], header["p_filesz"], f"program header {index}")
    sections = _sections(path, data, elf)
    if etype == "ET_DYN" and (dynamic is None or dynamic[2] == 0) and not sections:
        raise HighbootError("a position-independent kernel (ET_DYN) without a PT_DYNAMIC to read and without section "
                            "headers: whether it needs relocations cannot be told; link it with its PT_DYNAMIC "
                            "(a PHDRS linker script must list one)", file=path, field="program headers")
    relocations = read_relocations(path, data, dynamic, loaded, sections)

    def inside(ptype: str, size_key: str, what: str) -> tuple[int, int] | None:
        if ptype not in special:
            return None
        index, header = special[ptype]
        vaddr, size = header["p_vaddr"], header[size_key]
        # ld.lld rounds PT_GNU_RELRO up to a whole page, past the end of the segment.
        end = align_up(vaddr + size, PAGE) if ptype == "PT_GNU_RELRO" else vaddr + size
        if size and not _covered(ordered, vaddr, end, page=ptype == "PT_GNU_RELRO"):
            raise HighbootError(f"{ptype} ({hex_addr(vaddr)}+{size:#x}, {what}) is not inside the PT_LOAD segments",
                                file=path, field=f"program header {index}")
        return (vaddr, size) if size else None

    relro = inside("PT_GNU_RELRO", "p_memsz", "memory made read-only after relocation")
    eh_frame_hdr = inside("PT_GNU_EH_FRAME", "p_memsz", ".eh_frame_hdr")
    inside("PT_TLS", "p_filesz", "the TLS initialization image")
    tls = None
    if "PT_TLS" in special:
        index, header = special["PT_TLS"]
        if header["p_filesz"] > header["p_memsz"]:
            raise HighbootError(f"PT_TLS p_filesz {header['p_filesz']:#x} is larger than p_memsz "
                                f"{header['p_memsz']:#x}", file=path, field=f"program header {index}")
        if header["p_memsz"] > MAX_KERNEL_MEMSZ:
            raise HighbootError(f"PT_TLS p_memsz {header['p_memsz']:#x} is not a plausible TLS block size (over "
                                "4 GiB)", file=path, field=f"program header {index}")
        if header["p_memsz"] and not _covered(ordered, header["p_vaddr"], header["p_vaddr"] + 1, page=True):
            raise HighbootError(f"PT_TLS template at {hex_addr(header['p_vaddr'])} is not in the PT_LOAD segments",
                                file=path, field=f"program header {index}")
        if header["p_memsz"]:
            tls = TlsTemplate(header["p_vaddr"], header["p_filesz"], header["p_memsz"], max(header["p_align"], 1))

    return KernelImage(
        path=str(path), size=len(data), digest=fsverity.digest(data).hex(), entry=entry,
        segments=tuple(ordered), position_independent=etype == "ET_DYN", relocations=relocations,
        relro=relro, eh_frame_hdr=eh_frame_hdr, tls=tls, align=align, data=data,
    )


_PT_NAMES = {1: "PT_LOAD", 2: "PT_DYNAMIC", 3: "PT_INTERP", 7: "PT_TLS", 0x6474E550: "PT_GNU_EH_FRAME",
             0x6474E552: "PT_GNU_RELRO"}
_PHDR_FIELDS = ("p_type", "p_flags", "p_offset", "p_vaddr", "p_paddr", "p_filesz", "p_memsz", "p_align")


def _program_headers(data: bytes, elf: ELFFile) -> list[dict[str, Any]]:
    """The program headers, read with struct (their table was bounds-checked in _check_header):
    pyelftools would also parse every section a segment holds, slowly, and fail on odd ones."""
    phoff = elf["e_phoff"]
    out = []
    for i in range(elf["e_phnum"]):
        header = dict(zip(_PHDR_FIELDS, struct.unpack_from("<IIQQQQQQ", data, phoff + i * ELF64_PHDR_SIZE),
                          strict=True))
        header["p_type"] = _PT_NAMES.get(header["p_type"], header["p_type"])
        out.append(header)
    return out


def _check_align(path: Path, align: int, where: str) -> int:
    """p_align as a power of two of at least one page (0 and 1 mean no constraint)."""
    if align > 1 and align & (align - 1):
        raise HighbootError(f"p_align {align:#x} is not a power of two (corrupted header?)", file=path, field=where)
    if align > MAX_ALIGN:
        raise HighbootError(f"p_align {align:#x} is not a plausible alignment (over 1 GiB)", file=path, field=where)
    return max(align, 1)


def _covered(ordered: list[Segment], start: int, end: int, page: bool = False) -> bool:
    """True when [start, end) lies in PT_LOAD memory (segments may abut), or in the pages they
    touch when page is set."""
    pos = start
    for s in ordered:
        lo, hi = (align_down(s.vaddr, PAGE), align_up(s.end, PAGE)) if page else (s.vaddr, s.end)
        if lo <= pos < hi:
            pos = hi
    return pos >= end


def _check_shared_pages(path: Path, ordered: list[Segment]) -> None:
    """A page gets the union of the rights of every segment touching it: refuse a W+X union.

    Only a segment's first and last pages can be shared (segments do not overlap), so those are
    the pages to look at, however many segments share one.
    """
    pages: dict[int, list[Segment]] = {}
    for s in ordered:
        for page in {s.vaddr >> 12, (s.end - 1) >> 12}:
            pages.setdefault(page, []).append(s)
    for page, segs in sorted(pages.items()):
        union = SegmentFlags(0)
        for s in segs:
            union |= s.flags
        if len(segs) > 1 and union & PF_W and union & PF_X:
            names = ", ".join(s.describe() for s in segs)
            raise HighbootError(f"{names} share the page at {hex_addr(page << 12)}, which would be writable and "
                                "executable; align segments to 4 KiB in the linker script", file=path,
                                field="program headers")


def _check_header(path: Path, data: bytes) -> ELFFile:
    """The ELF header and program header table, checked field by field before pyelftools reads them."""
    if not data:
        raise HighbootError("empty file; expected a kernel ELF", file=path)
    if not data.startswith(ELF_MAGIC) and not ELF_MAGIC.startswith(data):
        raise HighbootError("not an ELF file (no \\x7fELF magic)", file=path, field="e_ident")
    if len(data) < ELF64_EHDR_SIZE:
        raise HighbootError(f"the file is only {len(data)} bytes, shorter than the {ELF64_EHDR_SIZE}-byte ELF64 "
                            "header (truncated?)", file=path, field="e_ident" if len(data) < 16 else "ELF header")
    ei_class, ei_data, ei_version = data[4], data[5], data[6]
    if ei_class == 1:
        raise HighbootError("32-bit ELF; expected an ELF64 x86-64 kernel", file=path, field="e_ident[EI_CLASS]")
    if ei_class != 2:
        raise HighbootError(f"invalid ELF class {ei_class}; expected 2 (ELFCLASS64)", file=path,
                            field="e_ident[EI_CLASS]")
    if ei_data == 2:
        raise HighbootError("big-endian ELF; expected little-endian x86-64", file=path, field="e_ident[EI_DATA]")
    if ei_data != 1:
        raise HighbootError(f"invalid data encoding {ei_data}; expected 1 (ELFDATA2LSB, little-endian)",
                            file=path, field="e_ident[EI_DATA]")
    if ei_version != 1:
        raise HighbootError(f"ELF version {ei_version}; expected 1 (EV_CURRENT): corrupted header?", file=path,
                            field="e_ident[EI_VERSION]")
    elf = ELFFile(io.BytesIO(data))
    if elf["e_machine"] != "EM_X86_64":
        raise HighbootError(f"machine is {elf['e_machine']}; expected EM_X86_64", file=path, field="e_machine")
    if elf["e_version"] not in ("EV_CURRENT", 1):
        raise HighbootError(f"ELF version {elf['e_version']}; expected 1 (EV_CURRENT): corrupted header?",
                            file=path, field="e_version")
    etype = elf["e_type"]
    if etype not in ("ET_EXEC", "ET_DYN"):
        raise HighbootError(f"ELF type {etype}; expected an executable (ET_EXEC, or ET_DYN for PIE)",
                            file=path, field="e_type")
    phnum, phentsize, phoff = elf["e_phnum"], elf["e_phentsize"], elf["e_phoff"]
    if phnum == 0:
        raise HighbootError("no program headers; link the kernel as an executable", file=path, field="e_phnum")
    if phnum == PN_XNUM:
        raise HighbootError("e_phnum is PN_XNUM (over 65534 program headers): not a kernel, or corrupted",
                            file=path, field="e_phnum")
    _check_header_table(path, data, "program", "ph", phnum, phentsize, phoff, ELF64_PHDR_SIZE)
    shnum, shentsize, shoff = elf["e_shnum"], elf["e_shentsize"], elf["e_shoff"]
    if shnum and shoff:  # optional; when present, relocation sections are checked against PT_DYNAMIC
        _check_header_table(path, data, "section", "sh", shnum, shentsize, shoff, ELF64_SHDR_SIZE)
    return elf


def _check_header_table(path: Path, data: bytes, kind: str, prefix: str, count: int, entsize: int, offset: int,
                        expected: int) -> None:
    """The program or section header table: entries of the ELF64 size, all inside the file."""
    if entsize != expected:
        raise HighbootError(f"e_{prefix}entsize is {entsize}; expected {expected}, the size of an ELF64 {kind} "
                            "header (corrupted header?)", file=path, field=f"e_{prefix}entsize")
    if offset + count * entsize > len(data):
        raise HighbootError(f"{kind} header table ({count} entries at offset {offset:#x}) runs past the end of the "
                            f"{len(data):#x}-byte file (truncated?)", file=path, field=f"e_{prefix}off")


def _sections(path: Path, data: bytes, elf: ELFFile) -> list[tuple[str, int, int, int, int]]:
    """(name, sh_type, sh_flags, sh_addr, sh_size) of every section; none when the headers are stripped.

    Read with struct (the table was bounds-checked in _check_header): a corrupted header must give a
    message naming it, not whatever pyelftools trips over first.
    """
    shoff, shnum = elf["e_shoff"], elf["e_shnum"]
    if not shnum or not shoff:
        return []
    headers = [struct.unpack_from(ELF64_SHDR, data, shoff + i * ELF64_SHDR_SIZE) for i in range(shnum)]
    return [(_section_name(data, headers, elf["e_shstrndx"], i), h[1], h[2], h[3], h[5]) for i, h in enumerate(headers)]


def _section_name(data: bytes, headers: list[tuple[int, ...]], shstrndx: int, index: int) -> str:
    """A section's name from .shstrtab, or "section N" when the string table cannot be trusted."""
    if 0 < shstrndx < len(headers):
        table, table_size = headers[shstrndx][4], headers[shstrndx][5]
        start = table + headers[index][0]
        if headers[index][0] < table_size and table + table_size <= len(data):
            end = data.find(b"\0", start, min(table + table_size, start + 256))
            if end > start:
                return data[start:end].decode("ascii", "replace")
    return f"section {index}"
