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

from highboot.errors import HighbootError
from highboot.units import hex_addr

PF_X = 0x1
PF_W = 0x2
PF_R = 0x4
R_X86_64_RELATIVE = 8
DT_RELA, DT_RELASZ, DT_RELAENT, DT_REL, DT_RELR = 7, 8, 9, 17, 36
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
    if len(data) < 64 or data[:4] != b"\x7fELF":
        raise HighbootError("not an ELF file (no \\x7fELF magic)", file=path, field="e_ident")
    if data[4] != 2:
        raise HighbootError("32-bit ELF; expected an ELF64 x86-64 kernel", file=path, field="e_ident[EI_CLASS]")
    if data[5] != 1:
        raise HighbootError("big-endian ELF; expected little-endian x86-64", file=path, field="e_ident[EI_DATA]")
    elf = ELFFile(io.BytesIO(data))
    if elf["e_machine"] != "EM_X86_64":
        raise HighbootError(f"machine is {elf['e_machine']}; expected EM_X86_64", file=path, field="e_machine")
    etype = elf["e_type"]
    if etype not in ("ET_EXEC", "ET_DYN"):
        raise HighbootError(f"ELF type {etype}; expected an executable (ET_EXEC, or ET_DYN for PIE)",
                            file=path, field="e_type")
    if elf["e_phnum"] == 0:
        raise HighbootError("no program headers; link the kernel as an executable", file=path, field="e_phnum")
    phend = elf["e_phoff"] + elf["e_phnum"] * elf["e_phentsize"]
    if elf["e_phentsize"] < 56 or phend > len(data):
        raise HighbootError("program header table runs past the end of the file (truncated?)",
                            file=path, field="e_phoff")

    segments: list[Segment] = []
    for index, seg in enumerate(elf.iter_segments()):
        if seg["p_type"] != "PT_LOAD":
            continue
        s = Segment(index, seg["p_vaddr"], seg["p_memsz"], seg["p_offset"], seg["p_filesz"],
                    SegmentFlags(seg["p_flags"] & 7))
        where = f"program header {index}"
        if s.memsz == 0:
            continue
        if s.filesz > s.memsz:
            raise HighbootError(f"p_filesz {s.filesz:#x} is larger than p_memsz {s.memsz:#x}", file=path, field=where)
        if s.offset + s.filesz > len(data):
            raise HighbootError(f"segment data ({s.offset:#x}+{s.filesz:#x}) runs past the end of the "
                                f"{len(data):#x}-byte file (truncated?)", file=path, field=where)
        if s.memsz > MAX_KERNEL_MEMSZ or s.vaddr + s.memsz > (1 << 64):
            raise HighbootError(f"p_memsz {s.memsz:#x} is not a plausible kernel size (over 4 GiB)",
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
        relocations = _relative_relocations(path, elf)

    return KernelImage(
        path=str(path), size=len(data), sha256=hashlib.sha256(data).hexdigest(), entry=entry,
        segments=tuple(ordered), position_independent=etype == "ET_DYN", relocations=relocations,
    )


def _relative_relocations(path: Path, elf: ELFFile) -> tuple[Relocation, ...]:
    """The R_X86_64_RELATIVE relocations of a PIE kernel; any other kind is a clear error."""
    relocs: list[Relocation] = []
    for section in elf.iter_sections():
        stype = section["sh_type"]
        if stype == "SHT_REL":
            raise HighbootError(f"section {section.name}: REL relocations are not used on x86-64; expected RELA",
                                file=path, field=section.name)
        if stype == "SHT_RELR":
            raise HighbootError(f"section {section.name}: RELR relocations are not supported; link without "
                                "-z pack-relative-relocs", file=path, field=section.name)
        if stype != "SHT_RELA" or not section["sh_flags"] & 0x2:  # SHF_ALLOC: dynamic, not .rela.text
            continue
        for rel in section.iter_relocations():
            rtype = rel["r_info_type"]
            if rtype == 0:
                continue
            if rtype != R_X86_64_RELATIVE:
                raise HighbootError(f"relocation type {rtype} at {hex_addr(rel['r_offset'])} is not "
                                    "R_X86_64_RELATIVE; link the kernel with -static-pie / no symbol imports",
                                    file=path, field=section.name)
            relocs.append(Relocation(rel["r_offset"], rel["r_addend"] & ((1 << 64) - 1)))
    return tuple(relocs)
