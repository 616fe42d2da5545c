"""Reading a kernel ELF: its loadable segments, entry point and identity (size, SHA-256).

Everything that can go wrong with a user's file ends in one HighbootError naming the file;
pyelftools' own exceptions never escape.
"""

from __future__ import annotations

import hashlib
import io
import struct
from dataclasses import dataclass, field
from enum import IntFlag
from itertools import pairwise
from pathlib import Path

from elftools.common.exceptions import ELFError, ELFParseError, ELFRelocationError
from elftools.elf.elffile import ELFFile
from elftools.elf.enums import ENUM_RELOC_TYPE_x64

from highboot.errors import HighbootError
from highboot.units import hex_addr

PF_X = 0x1
PF_W = 0x2
PF_R = 0x4
R_X86_64_RELATIVE = 8
DT_RELA, DT_RELASZ, DT_RELAENT, DT_REL, DT_RELR = 7, 8, 9, 17, 36
ELF_MAGIC = b"\x7fELF"
ELF64_EHDR_SIZE, ELF64_PHDR_SIZE, ELF64_SHDR_SIZE = 64, 56, 64
PN_XNUM = 0xFFFF
ELF64_SHDR = "<IIQQQQIIQQ"  # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info, ...
ELF64_RELA_SIZE = 24
SHT_RELA, SHT_REL, SHT_RELR = 4, 9, 19
SHF_ALLOC = 0x2
_RELOC_NAMES = {v: k for k, v in ENUM_RELOC_TYPE_x64.items() if isinstance(v, int)}
# A kernel larger than this is almost certainly a corrupted header, not a kernel.
MAX_KERNEL_MEMSZ = 1 << 32


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
class Relocation:
    """A dynamic relocation the loader applies: *(u64 *)vaddr = addend + slide."""

    vaddr: int
    addend: int


@dataclass(frozen=True)
class KernelImage:
    path: str
    size: int
    sha256: str
    entry: int
    segments: tuple[Segment, ...]
    position_independent: bool
    relocations: tuple[Relocation, ...] = field(default=())

    @property
    def start(self) -> int:
        return min(s.vaddr for s in self.segments)

    @property
    def end(self) -> int:
        return max(s.end for s in self.segments)


def read_kernel(path: str | Path) -> KernelImage:
    """Read and check a kernel ELF; raise HighbootError naming the file and the problem."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise HighbootError("kernel file not found", file=path) from None
    except IsADirectoryError:
        raise HighbootError("expected a kernel ELF file, found a directory", file=path) from None
    except OSError as exc:
        raise HighbootError(f"cannot read kernel: {exc.strerror}", file=path) from None
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
    for index, seg in enumerate(elf.iter_segments()):
        if seg["p_type"] != "PT_LOAD":
            continue
        s = Segment(index, seg["p_vaddr"], seg["p_memsz"], seg["p_offset"], seg["p_filesz"],
                    SegmentFlags(seg["p_flags"] & 7))
        where = f"program header {index}"
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
        align = seg["p_align"]
        if align > 1 and align & (align - 1):
            raise HighbootError(f"p_align {align:#x} is not a power of two (corrupted header?)", file=path, field=where)
        if align > 1 and (s.vaddr - s.offset) % align:
            raise HighbootError(f"p_vaddr {hex_addr(s.vaddr)} and p_offset {s.offset:#x} differ modulo p_align "
                                f"{align:#x}; the ELF format requires them congruent (corrupted header?)",
                                file=path, field=where)
        if s.flags & PF_W and s.flags & PF_X:
            raise HighbootError(f"{s.describe()} is writable and executable; split it (W^X: text RX, "
                                "data RW)", file=path, field=where)
        segments.append(s)
    if not segments:
        raise HighbootError("no PT_LOAD segment with memory; nothing to load", file=path, field="program headers")

    ordered = sorted(segments, key=lambda s: s.vaddr)
    for a, b in pairwise(ordered):
        if b.vaddr < a.end:
            raise HighbootError(f"{a.describe()} overlaps {b.describe()}", file=path, field="program headers")
    # Pages shared by two segments get both permissions; refuse where that would be W+X.
    for a, b in pairwise(ordered):
        if (a.end - 1) >> 12 == b.vaddr >> 12:
            union = a.flags | b.flags
            if union & PF_W and union & PF_X:
                raise HighbootError(f"{a.describe()} and {b.describe()} share the page at "
                                    f"{hex_addr(b.vaddr & ~0xfff)}, which would be writable and executable; "
                                    "align segments to 4 KiB in the linker script", file=path,
                                    field="program headers")

    entry = elf["e_entry"]
    if not any(s.flags & PF_X and s.vaddr <= entry < s.end for s in segments):
        raise HighbootError(f"entry point {hex_addr(entry)} is not inside an executable PT_LOAD segment",
                            file=path, field="e_entry")

    relocations: tuple[Relocation, ...] = ()
    if etype == "ET_DYN":
        relocations = _relative_relocations(path, data, elf, segments)

    return KernelImage(
        path=str(path), size=len(data), sha256=hashlib.sha256(data).hexdigest(), entry=entry,
        segments=tuple(ordered), position_independent=etype == "ET_DYN", relocations=relocations,
    )


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
    if etype == "ET_DYN":
        # A PIE's relocations are read from its SHF_ALLOC RELA sections: without section headers they
        # would silently be skipped and the kernel would run unrelocated.
        shnum, shentsize, shoff = elf["e_shnum"], elf["e_shentsize"], elf["e_shoff"]
        if shnum == 0 or shoff == 0:
            raise HighbootError("position-independent kernel (ET_DYN) without section headers: its relocations "
                                "cannot be found; do not strip the section headers", file=path, field="e_shnum")
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


def _relative_relocations(path: Path, data: bytes, elf: ELFFile,
                          segments: list[Segment]) -> tuple[Relocation, ...]:
    """The R_X86_64_RELATIVE relocations of a PIE kernel; any other kind is a clear error.

    Section headers are read with struct (their table was bounds-checked in _check_header): a
    corrupted one must give a message naming it, not whatever pyelftools trips over first.
    """
    shoff, shnum = elf["e_shoff"], elf["e_shnum"]
    headers = [struct.unpack_from(ELF64_SHDR, data, shoff + i * ELF64_SHDR_SIZE) for i in range(shnum)]
    relocs: list[Relocation] = []
    for index, (_, stype, flags, _, offset, size, _, _, _, entsize) in enumerate(headers):
        if stype not in (SHT_RELA, SHT_REL, SHT_RELR):
            continue
        name = _section_name(data, headers, elf["e_shstrndx"], index)
        if stype == SHT_REL:
            raise HighbootError(f"section {name}: REL relocations are not used on x86-64; expected RELA",
                                file=path, field=name)
        if stype == SHT_RELR:
            raise HighbootError(f"section {name}: RELR relocations are not supported; link without "
                                "-z pack-relative-relocs", file=path, field=name)
        if not flags & SHF_ALLOC:  # dynamic relocations only, not .rela.text from --emit-relocs
            continue
        if entsize != ELF64_RELA_SIZE:
            raise HighbootError(f"sh_entsize is {entsize}; expected {ELF64_RELA_SIZE}, the size of an Elf64_Rela "
                                "(corrupted header?)", file=path, field=name)
        if size % ELF64_RELA_SIZE:
            raise HighbootError(f"sh_size {size:#x} is not a multiple of {ELF64_RELA_SIZE} (truncated table?)",
                                file=path, field=name)
        if offset + size > len(data):
            raise HighbootError(f"relocation table ({offset:#x}+{size:#x}) runs past the end of the "
                                f"{len(data):#x}-byte file (truncated?)", file=path, field=name)
        for r_offset, r_info, r_addend in struct.iter_unpack("<QQq", data[offset:offset + size]):
            rtype = r_info & 0xFFFFFFFF
            if rtype == 0:  # R_X86_64_NONE
                continue
            if rtype != R_X86_64_RELATIVE:
                raise HighbootError(f"relocation type {_RELOC_NAMES.get(rtype, 'unknown')} ({rtype}) at "
                                    f"{hex_addr(r_offset)} is not R_X86_64_RELATIVE; link the kernel with "
                                    "-static-pie / no symbol imports", file=path, field=name)
            if not any(s.vaddr <= r_offset and r_offset + 8 <= s.end for s in segments):
                raise HighbootError(f"relocation at {hex_addr(r_offset)} is outside every PT_LOAD segment",
                                    file=path, field=name)
            relocs.append(Relocation(r_offset, r_addend & ((1 << 64) - 1)))
    return tuple(relocs)


def _section_name(data: bytes, headers: list[tuple[int, ...]], shstrndx: int, index: int) -> str:
    """A section's name from .shstrtab, or "section N" when the string table cannot be trusted."""
    if 0 < shstrndx < len(headers):
        table, table_size = headers[shstrndx][4], headers[shstrndx][5]
        start = table + headers[index][0]
        if headers[index][0] < table_size and table + table_size <= len(data):
            end = data.find(b"\0", start, table + table_size)
            if end > start:
                return data[start:end].decode("ascii", "replace")
    return f"section {index}"
