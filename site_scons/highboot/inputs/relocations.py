"""A kernel's dynamic relocations, read the way a loader reads them: from PT_DYNAMIC.

Supported, as Limine and rust-osdev/bootloader load PIE kernels: DT_RELA tables (and DT_JMPREL
with DT_PLTREL = DT_RELA) holding R_X86_64_RELATIVE, R_X86_64_64, R_X86_64_GLOB_DAT and
R_X86_64_JUMP_SLOT against symbols the kernel defines (resolved here, at build time) or undefined
weak ones (0), and R_X86_64_NONE; DT_RELR packed relative relocations. Everything is resolved to
"store this u64 here", with a flag saying whether the value moves with the kernel; the loader only
adds the final load bias. Anything else stops the build with the relocation's type, offset and
symbol and the reason.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from elftools.elf.enums import ENUM_RELOC_TYPE_x64

from highboot.errors import HighbootError
from highboot.units import hex_addr

DT_NULL, DT_NEEDED, DT_PLTRELSZ, DT_STRTAB, DT_SYMTAB = 0, 1, 2, 5, 6
DT_RELA, DT_RELASZ, DT_RELAENT, DT_STRSZ, DT_SYMENT = 7, 8, 9, 10, 11
DT_REL, DT_RELSZ, DT_PLTREL, DT_TEXTREL, DT_JMPREL, DT_FLAGS = 17, 18, 20, 22, 23, 30
DT_RELRSZ, DT_RELR, DT_RELRENT = 35, 36, 37
DF_TEXTREL = 0x4
ELF64_DYN_SIZE, ELF64_RELA_SIZE, ELF64_SYM_SIZE, RELR_ENTRY_SIZE = 16, 24, 24, 8
SHT_RELA, SHT_REL, SHT_RELR = 4, 9, 19
SHF_ALLOC = 0x2
SHN_UNDEF, SHN_LORESERVE, SHN_ABS = 0, 0xFF00, 0xFFF1
STB_WEAK = 2
STT_TLS, STT_GNU_IFUNC = 6, 10

R_X86_64_NONE, R_X86_64_64, R_X86_64_COPY, R_X86_64_GLOB_DAT, R_X86_64_JUMP_SLOT = 0, 1, 5, 6, 7
R_X86_64_RELATIVE, R_X86_64_IRELATIVE, R_X86_64_RELATIVE64 = 8, 37, 38
_TLS_TYPES = {16, 17, 18, 19, 20, 21, 22, 23, 34, 35, 36}  # DTPMOD64, DTPOFF64, TPOFF64, TLSGD, ...
_RELOC_NAMES = {v: k for k, v in ENUM_RELOC_TYPE_x64.items() if isinstance(v, int)}
_DT_NAMES = {DT_RELA: "DT_RELA", DT_JMPREL: "DT_JMPREL", DT_RELR: "DT_RELR", DT_SYMTAB: "DT_SYMTAB",
             DT_STRTAB: "DT_STRTAB"}
_ANDROID_TAGS = {0x6000000F: "DT_ANDROID_REL", 0x60000010: "DT_ANDROID_RELSZ", 0x60000011: "DT_ANDROID_RELA",
                 0x60000012: "DT_ANDROID_RELASZ", 0x6FFFE000: "DT_ANDROID_RELR", 0x6FFFE001: "DT_ANDROID_RELRSZ"}
_ANDROID_SECTIONS = {0x60000001: "SHT_ANDROID_REL", 0x60000002: "SHT_ANDROID_RELA", 0x6FFFFF00: "SHT_ANDROID_RELR"}
#: Undefined symbol names are printed; a corrupted string table must not print megabytes.
MAX_NAME = 200
#: Every relocation is baked into the loader (16 bytes each); a million is several times what a
#: large kernel has, so more is a corrupted table.
MAX_RELOCATIONS = 1 << 20


@dataclass(frozen=True)
class Relocation:
    """Store ``value`` (a u64, for the kernel at its link address) at ``vaddr``. A ``relative`` value
    moves with the kernel: the loader adds the load bias; an absolute one (an undefined weak or
    SHN_ABS symbol) is stored as it is."""

    vaddr: int
    value: int
    relative: bool = True


@dataclass(frozen=True)
class LoadedSegment:
    """What the relocation reader needs of a PT_LOAD: memory range, file range, writability."""

    vaddr: int
    memsz: int
    offset: int
    filesz: int
    writable: bool


def reloc_name(rtype: int) -> str:
    return f"{_RELOC_NAMES.get(rtype, 'unknown')} ({rtype})"


class _Reader:
    """Reads tables by virtual address through the file bytes of the PT_LOAD segments (sorted and
    not overlapping: the one that may hold an address is found by bisection)."""

    def __init__(self, path: Path, data: bytes, segments: Sequence[LoadedSegment]) -> None:
        self.path, self.data = path, data
        self.segments = sorted(segments, key=lambda s: s.vaddr)
        self.starts = [s.vaddr for s in self.segments]

    def fail(self, message: str, field: str) -> HighbootError:
        return HighbootError(message, file=self.path, field=field)

    def segment(self, vaddr: int) -> LoadedSegment | None:
        i = bisect.bisect_right(self.starts, vaddr) - 1
        return self.segments[i] if i >= 0 else None

    def file_range(self, vaddr: int, size: int, what: str, field: str) -> int:
        """File offset of [vaddr, vaddr + size), which must be file-backed bytes of one PT_LOAD."""
        s = self.segment(vaddr)
        if s is not None and vaddr + size <= s.vaddr + s.filesz:
            return s.offset + vaddr - s.vaddr
        raise self.fail(f"{what} ({hex_addr(vaddr % (1 << 64))}+{size:#x}) is not inside the file data of a PT_LOAD "
                        "segment (inconsistent size, or corrupted?)", field)

    def word(self, vaddr: int) -> int:
        """The u64 the file holds at vaddr (0 in a segment's zero-filled tail)."""
        s = self.segment(vaddr)
        if s is None or vaddr + 8 > s.vaddr + s.memsz:
            return 0
        start = s.offset + vaddr - s.vaddr
        present = max(0, min(8, s.vaddr + s.filesz - vaddr))
        return int.from_bytes(self.data[start:start + present].ljust(8, b"\0"), "little")

    def writable_target(self, vaddr: int) -> bool:
        s = self.segment(vaddr)
        return s is not None and s.writable and vaddr + 8 <= s.vaddr + s.memsz


def read_relocations(path: Path, data: bytes, dynamic: tuple[int, int, int, str] | None,
                     segments: Sequence[LoadedSegment],
                     sections: Sequence[tuple[str, int, int, int, int]]) -> tuple[Relocation, ...]:
    """The relocations of a kernel whose PT_DYNAMIC is (p_vaddr, p_offset, p_filesz, header name), or
    None. The dynamic table is read where a loader reads it, at p_vaddr in loaded memory.

    ``sections`` are (name, sh_type, sh_flags, sh_addr, sh_size) from the section headers (empty if
    stripped): every loaded relocation section must be one of the tables PT_DYNAMIC lists, or the
    kernel would run with relocations nobody applied.
    """
    reader = _Reader(path, data, segments)
    tags = _dynamic_tags(reader, dynamic) if dynamic else {}
    tables = _tables(reader, tags)
    _check_sections(reader, sections, tables, dynamic is not None)
    relocs: list[Relocation] = []
    symbols = _Symbols(reader, tags)
    for tag, (vaddr, size) in tables.items():
        field = _DT_NAMES[tag]
        offset = reader.file_range(vaddr, size, f"the {field} table", field)
        if tag == DT_RELR:
            relocs += _relr(reader, data[offset:offset + size], vaddr, MAX_RELOCATIONS - len(relocs))
        else:
            if size // ELF64_RELA_SIZE > MAX_RELOCATIONS - len(relocs):
                raise _too_many(reader, field)
            relocs += _rela(reader, data[offset:offset + size], vaddr, field, symbols)
    _check_overlaps(reader, relocs)
    return tuple(relocs)


def _check_overlaps(reader: _Reader, relocs: list[Relocation]) -> None:
    """Two relocations of the same bytes have an order-dependent result (RELR before RELA in ld.so,
    the tables' order otherwise) that the build's plan would not reproduce: refuse them."""
    ordered = sorted(relocs, key=lambda r: r.vaddr)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if b.vaddr < a.vaddr + 8:
            raise reader.fail(f"two relocations write the same bytes, at {hex_addr(a.vaddr)} and {hex_addr(b.vaddr)}: "
                              "their result would depend on the order they are applied in (corrupted table?)",
                              "relocations")


def _too_many(reader: _Reader, field: str) -> HighbootError:
    return reader.fail(f"more than {MAX_RELOCATIONS:,} relocations: not a plausible kernel (corrupted table?)", field)


def _dynamic_tags(reader: _Reader, dynamic: tuple[int, int, int, str]) -> dict[int, int]:
    vaddr, p_offset, size, header = dynamic
    field = "PT_DYNAMIC"
    if size % ELF64_DYN_SIZE:
        raise reader.fail(f"p_filesz {size:#x} is not a multiple of {ELF64_DYN_SIZE}, the size of an Elf64_Dyn "
                          "(corrupted?)", field)
    if not size:
        return {}
    offset = reader.file_range(vaddr, size, "the dynamic table", header)
    if offset != p_offset:
        raise reader.fail(f"p_offset {p_offset:#x} is not where p_vaddr {hex_addr(vaddr)} is in the file "
                          f"({offset:#x}); a loader reads the dynamic table at p_vaddr (corrupted header?)", header)
    tags: dict[int, int] = {}
    for tag, value in struct.iter_unpack("<qQ", reader.data[offset:offset + size]):
        if tag == DT_NULL:
            break
        if tag in _ANDROID_TAGS:
            raise reader.fail(f"{_ANDROID_TAGS[tag]}: Android's packed relocations are not supported; link without "
                              "--pack-dyn-relocs=android (relr, or none, are fine)", field)
        if tag == DT_NEEDED:
            raise reader.fail("the kernel needs a shared library (DT_NEEDED); a kernel is linked statically: "
                              "link with -static-pie (or ld -pie --no-dynamic-linker) and no shared libraries", field)
        if tag in (DT_REL, DT_RELSZ):
            raise reader.fail("DT_REL relocations (without addends) are not used on x86-64; expected DT_RELA", field)
        if tag == DT_TEXTREL or (tag == DT_FLAGS and value & DF_TEXTREL):
            raise reader.fail("the kernel has text relocations (DT_TEXTREL): relocations in read-only or executable "
                              "memory; compile every object with -fPIE (or -fPIC)", field)
        tags[tag] = value
    return tags


def _tables(reader: _Reader, tags: dict[int, int]) -> dict[int, tuple[int, int]]:
    """(vaddr, size) of each relocation table PT_DYNAMIC lists, sizes checked against entry sizes."""
    tables: dict[int, tuple[int, int]] = {}
    for table, size_tag, ent_tag, entsize in ((DT_RELA, DT_RELASZ, DT_RELAENT, ELF64_RELA_SIZE),
                                              (DT_JMPREL, DT_PLTRELSZ, None, ELF64_RELA_SIZE),
                                              (DT_RELR, DT_RELRSZ, DT_RELRENT, RELR_ENTRY_SIZE)):
        name, size_name = _DT_NAMES[table], {DT_RELASZ: "DT_RELASZ", DT_PLTRELSZ: "DT_PLTRELSZ",
                                             DT_RELRSZ: "DT_RELRSZ"}[size_tag]
        if (table in tags) != (size_tag in tags):
            have, missing = (name, size_name) if table in tags else (size_name, name)
            raise reader.fail(f"{have} without {missing}: the relocation table is incomplete", "PT_DYNAMIC")
        if table not in tags:
            continue
        if ent_tag is not None and tags.get(ent_tag, entsize) != entsize:
            raise reader.fail(f"{'DT_RELAENT' if table == DT_RELA else 'DT_RELRENT'} is {tags[ent_tag]}; expected "
                              f"{entsize}", name)
        if table == DT_JMPREL and tags.get(DT_PLTREL, DT_RELA) != DT_RELA:
            raise reader.fail(f"DT_PLTREL is {tags[DT_PLTREL]}; expected {DT_RELA} (DT_RELA): x86-64 PLT "
                              "relocations have addends", name)
        size = tags[size_tag]
        if size % entsize:
            raise reader.fail(f"{size_name} {size:#x} is not a multiple of the {entsize}-byte entry (inconsistent "
                              "table size)", name)
        if size:
            tables[table] = (tags[table], size)
    return tables


def _check_sections(reader: _Reader, sections: Sequence[tuple[str, int, int, int, int]],
                    tables: dict[int, tuple[int, int]], has_dynamic: bool) -> None:
    for name, stype, flags, addr, size in sections:
        if stype in _ANDROID_SECTIONS and flags & SHF_ALLOC and size:
            raise reader.fail(f"section {name} ({_ANDROID_SECTIONS[stype]}): Android's packed relocations are not "
                              "supported; link without --pack-dyn-relocs=android", name)
        if stype not in (SHT_RELA, SHT_REL, SHT_RELR) or not flags & SHF_ALLOC or not size:
            continue  # .rela.text from --emit-relocs is for tools, not for loading
        if stype == SHT_REL:
            raise reader.fail(f"section {name}: REL relocations (without addends) are not used on x86-64; "
                              "expected RELA", name)
        if not has_dynamic:
            raise reader.fail(f"section {name} holds dynamic relocations but the kernel has no PT_DYNAMIC program "
                              "header to find them by; a custom PHDRS linker script must list one (dynamic "
                              "PT_DYNAMIC) and put .dynamic in it", name)
        kinds = (DT_RELR,) if stype == SHT_RELR else (DT_RELA, DT_JMPREL)
        if not any(t in tables and tables[t][0] <= addr and addr + size <= tables[t][0] + tables[t][1]
                   for t in kinds):
            listed = ", ".join(f"{_DT_NAMES[t]} {hex_addr(tables[t][0])}+{tables[t][1]:#x}" for t in kinds
                               if t in tables) or "none"
            raise reader.fail(f"section {name} ({hex_addr(addr)}+{size:#x}) is not inside the relocation tables "
                              f"PT_DYNAMIC lists ({listed}): inconsistent DT_RELASZ/DT_RELRSZ, its relocations "
                              "would not be applied", name)


class _Symbols:
    """Dynamic symbols by index, resolved to (value at link base, moves with the kernel)."""

    def __init__(self, reader: _Reader, tags: dict[int, int]) -> None:
        self.reader, self.tags = reader, tags

    def name(self, index: int) -> str:
        try:
            offset = self._entry(index)
            st_name = struct.unpack_from("<I", self.reader.data, offset)[0]
            strtab, strsz = self.tags[DT_STRTAB], self.tags.get(DT_STRSZ, 0)
            if st_name >= strsz:
                return f"#{index}"
            start = self.reader.file_range(strtab, strsz, "the DT_STRTAB string table", "DT_STRTAB")
            stop = min(start + strsz, start + st_name + MAX_NAME)
            end = self.reader.data.find(b"\0", start + st_name, stop)
            raw = self.reader.data[start + st_name:end if end >= 0 else stop]
            return raw.decode("ascii", "backslashreplace") or f"#{index}"
        except (HighbootError, KeyError, struct.error):
            return f"#{index}"

    def _entry(self, index: int) -> int:
        if DT_SYMTAB not in self.tags:
            raise self.reader.fail(f"a relocation refers to symbol {index} but PT_DYNAMIC has no DT_SYMTAB",
                                   "DT_SYMTAB")
        if self.tags.get(DT_SYMENT, ELF64_SYM_SIZE) != ELF64_SYM_SIZE:
            raise self.reader.fail(f"DT_SYMENT is {self.tags[DT_SYMENT]}; expected {ELF64_SYM_SIZE}", "DT_SYMTAB")
        vaddr = self.tags[DT_SYMTAB] + index * ELF64_SYM_SIZE
        return self.reader.file_range(vaddr, ELF64_SYM_SIZE, f"dynamic symbol {index}", "DT_SYMTAB")

    def resolve(self, index: int, describe: Callable[[], str]) -> tuple[int, bool]:
        offset = self._entry(index)
        _, info, _, shndx, value, _ = struct.unpack_from("<IBBHQQ", self.reader.data, offset)
        if info & 0xF == STT_GNU_IFUNC:
            raise self.reader.fail(f"{describe()} refers to the ifunc {self.name(index)!r}: its resolver would have "
                                   "to run before the kernel; build without ifuncs", "DT_SYMTAB")
        if info & 0xF == STT_TLS:
            raise self.reader.fail(f"{describe()} refers to the TLS symbol {self.name(index)!r}; use the local-exec "
                                   "TLS model (-ftls-model=local-exec), resolved when the kernel is linked",
                                   "DT_SYMTAB")
        if shndx == SHN_UNDEF:
            if info >> 4 == STB_WEAK:
                return 0, False
            raise self.reader.fail(f"{describe()} refers to the undefined symbol {self.name(index)!r}; a kernel has "
                                   "nothing to import it from: define it, or declare it weak", "DT_SYMTAB")
        if SHN_LORESERVE <= shndx and shndx != SHN_ABS:
            raise self.reader.fail(f"{describe()} refers to {self.name(index)!r} in reserved section {shndx:#x} "
                                   "(COMMON?), which has no address in the kernel", "DT_SYMTAB")
        return value, shndx != SHN_ABS


def _rela(reader: _Reader, table: bytes, table_vaddr: int, field: str, symbols: _Symbols) -> list[Relocation]:
    out: list[Relocation] = []
    for n, (r_offset, r_info, r_addend) in enumerate(struct.iter_unpack("<QQq", table)):
        rtype, sym = r_info & 0xFFFFFFFF, r_info >> 32

        def describe(rtype: int = rtype, r_offset: int = r_offset, sym: int = sym) -> str:
            target = f" against {symbols.name(sym)!r}" if sym else ""
            return f"relocation {reloc_name(rtype)} at {hex_addr(r_offset)}{target}"

        if rtype == R_X86_64_NONE:
            continue
        if rtype not in (R_X86_64_RELATIVE, R_X86_64_RELATIVE64, R_X86_64_64, R_X86_64_GLOB_DAT,
                         R_X86_64_JUMP_SLOT):
            raise reader.fail(f"{describe()} (entry {n} of {field} at {hex_addr(table_vaddr)}): {_why_not(rtype)}",
                              field)
        if not reader.writable_target(r_offset):
            raise reader.fail(f"{describe()} (entry {n} of {field}) is outside every writable PT_LOAD segment: "
                              "a relocation of read-only or executable memory (text relocation); compile with "
                              "-fPIE and keep relocated data (.data.rel.ro, .got) in a writable segment", field)
        if rtype in (R_X86_64_RELATIVE, R_X86_64_RELATIVE64):
            value, relative = r_addend, True
        else:
            value, relative = symbols.resolve(sym, describe) if sym else (0, False)
            if rtype == R_X86_64_64:  # S + A; GLOB_DAT and JUMP_SLOT are S (psABI), whatever the addend
                value += r_addend
        out.append(Relocation(r_offset, value % (1 << 64), relative))
    return out


def _why_not(rtype: int) -> str:
    if rtype == R_X86_64_COPY:
        return "copy relocations copy data out of a shared library; a kernel has none (link with -static-pie)"
    if rtype == R_X86_64_IRELATIVE:
        return "an ifunc resolver would have to run before the kernel; build without ifuncs"
    if rtype in _TLS_TYPES:
        return ("TLS relocations need the kernel's own thread pointer: use the local-exec TLS model "
                "(-ftls-model=local-exec), resolved when the kernel is linked")
    return ("not a type highboot applies (it applies R_X86_64_RELATIVE, R_X86_64_64, R_X86_64_GLOB_DAT, "
            "R_X86_64_JUMP_SLOT, R_X86_64_NONE and DT_RELR)")


def _relr(reader: _Reader, table: bytes, table_vaddr: int, room: int) -> list[Relocation]:
    """DT_RELR: an even entry is an address to relocate; an odd one a bitmap of the 63 words after.
    At most room relocations."""
    out: list[Relocation] = []
    where: int | None = None
    for n, (entry,) in enumerate(struct.iter_unpack("<Q", table)):
        if entry & 1 == 0:
            targets = [entry]
            where = entry + 8
        else:
            if where is None:
                raise reader.fail(f"entry {n} of the DT_RELR table at {hex_addr(table_vaddr)} is a bitmap with no "
                                  "address before it (corrupted?)", "DT_RELR")
            targets = [where + 8 * bit for bit in range(63) if entry >> (bit + 1) & 1]
            where += 63 * 8
        for vaddr in targets:
            if not reader.writable_target(vaddr):
                kind = "address" if entry & 1 == 0 else "bitmap"
                raise reader.fail(f"RELR {kind} entry {n} of the DT_RELR table at {hex_addr(table_vaddr)} relocates "
                                  f"{hex_addr(vaddr % (1 << 64))}, outside every writable PT_LOAD segment (a bitmap "
                                  "running past its section, or a text relocation)", "DT_RELR")
            out.append(Relocation(vaddr, reader.word(vaddr), True))
        if len(out) > room:
            raise _too_many(reader, "DT_RELR")
    return out
