"""Write small ELF64 files for tests: real headers, chosen segments, anything broken on purpose."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

PF_X, PF_W, PF_R = 1, 2, 4
PT_LOAD, PT_DYNAMIC = 1, 2
SHT_RELA, SHT_REL, SHT_RELR = 4, 9, 19
SHF_ALLOC = 0x2
R_X86_64_64, R_X86_64_GLOB_DAT, R_X86_64_JUMP_SLOT, R_X86_64_RELATIVE = 1, 6, 7, 8


@dataclass
class Seg:
    vaddr: int
    memsz: int
    flags: int
    data: bytes = b""
    ptype: int = PT_LOAD
    offset: int | None = None  # default: placed after the headers, congruent to vaddr modulo 4 KiB
    align: int = 0x1000
    within: int | None = None  # a header for part of segment number `within` (PT_DYNAMIC...): its file offset


@dataclass
class Sec:
    """A section (only written when an Elf has any): a header and its bytes after the segments."""

    name: str
    sh_type: int
    data: bytes = b""
    flags: int = 0
    entsize: int = 0
    addr: int = 0


def rela(*entries: tuple[int, int, int]) -> bytes:
    """Elf64_Rela entries from (r_offset, type, addend); symbol 0; the addend as a u64 or an i64."""
    return b"".join(struct.pack("<QQQ", offset, rtype, addend % (1 << 64)) for offset, rtype, addend in entries)


@dataclass
class Elf:
    segments: list[Seg] = field(default_factory=list)
    entry: int = 0
    ei_class: int = 2
    ei_data: int = 1
    machine: int = 62  # EM_X86_64
    etype: int = 2  # ET_EXEC
    sections: list[Sec] = field(default_factory=list)

    def build(self) -> bytes:
        phoff, phentsize = 64, 56
        data_off = phoff + phentsize * len(self.segments)
        data_off = (data_off + 0xFFF) & ~0xFFF
        blobs, headers = b"", b""
        offsets: list[int] = []
        for seg in self.segments:
            if seg.offset is None and seg.within is None:
                blobs += b"\0" * ((seg.vaddr - data_off - len(blobs)) % 4096)
            if seg.within is not None:
                host = self.segments[seg.within]
                offset = offsets[seg.within] + seg.vaddr - host.vaddr
            else:
                offset = seg.offset if seg.offset is not None else data_off + len(blobs)
            offsets.append(offset)
            if seg.offset is None and seg.within is None:
                blobs += seg.data
            headers += struct.pack("<IIQQQQQQ", seg.ptype, seg.flags, offset, seg.vaddr, seg.vaddr,
                                   len(seg.data), seg.memsz, seg.align)
        blobs += b"\0" * ((-len(blobs)) % 4096)
        tail, shoff, shnum, shstrndx = self._sections(data_off + len(blobs))
        ident = b"\x7fELF" + bytes([self.ei_class, self.ei_data, 1, 0]) + b"\0" * 8
        header = ident + struct.pack("<HHIQQQIHHHHHH", self.etype, self.machine, 1, self.entry, phoff, shoff, 0,
                                     64, phentsize, len(self.segments), 64, shnum, shstrndx)
        body = header + headers
        body += b"\0" * (data_off - len(body))
        return body + blobs + tail

    def _sections(self, at: int) -> tuple[bytes, int, int, int]:
        """Section contents, .shstrtab and the section header table, written from file offset at."""
        if not self.sections:
            return b"", 0, 0, 0
        names = b"\0"
        tail = b""
        table = bytes(64)  # SHN_UNDEF
        for sec in [*self.sections, Sec(".shstrtab", 3)]:
            name_off = len(names)
            names += sec.name.encode() + b"\0"
            data = names if sec.name == ".shstrtab" else sec.data
            tail += b"\0" * ((-len(tail)) % 8)
            table += struct.pack("<IIQQQQIIQQ", name_off, sec.sh_type, sec.flags, sec.addr, at + len(tail),
                                 len(data), 0, 0, 8, sec.entsize)
            tail += data
        tail += b"\0" * ((-len(tail)) % 8)
        return tail + table, at + len(tail), len(self.sections) + 2, len(self.sections) + 1


KBASE = 0xFFFFFFFF80000000


def sample(text: int = 0x3000, rodata: int = 0x1000, data: int = 0x2000, bss: int = 0x4000,
           base: int = KBASE) -> Elf:
    """A plausible kernel: text RX, rodata R, data+bss RW, each on its own pages."""
    segs = [Seg(base, text, PF_R | PF_X, b"\x90" * text)]
    at = base + text
    if rodata:
        segs.append(Seg(at, rodata, PF_R, b"r" * rodata))
        at += rodata
    if data or bss:
        segs.append(Seg(at, data + bss, PF_R | PF_W, b"d" * data))
    return Elf(segs, entry=base)


# ----------------------------------------------------------------------------- PIE kernels with PT_DYNAMIC

PT_INTERP, PT_TLS = 3, 7
PT_GNU_EH_FRAME, PT_GNU_RELRO = 0x6474E550, 0x6474E552
DT_NULL, DT_NEEDED, DT_PLTRELSZ, DT_STRTAB, DT_SYMTAB = 0, 1, 2, 5, 6
DT_RELA, DT_RELASZ, DT_RELAENT, DT_STRSZ, DT_SYMENT = 7, 8, 9, 10, 11
DT_REL, DT_PLTREL, DT_TEXTREL, DT_JMPREL, DT_FLAGS = 17, 20, 22, 23, 30
DT_RELRSZ, DT_RELR, DT_RELRENT = 35, 36, 37
SHN_UNDEF, SHN_ABS = 0, 0xFFF1
STB_GLOBAL, STB_WEAK = 1, 2
# Where dyn_pie puts things, from its base: text, the read-only tables, the writable data.
TEXT_AT, TABLES_AT, DATA_AT = 0x1000, 0x2000, 0x6000
DYN_AT, SYM_AT, STR_AT, RELA_AT, JMPREL_AT, RELR_AT = 0x0, 0x400, 0x800, 0x1000, 0x2000, 0x3000


@dataclass
class Sym:
    name: str
    value: int = 0
    shndx: int = 1  # SHN_UNDEF (0), a section (1), SHN_ABS
    bind: int = STB_GLOBAL
    stype: int = 0


def rela_sym(*entries: tuple[int, int, int, int]) -> bytes:
    """Elf64_Rela entries from (r_offset, type, symbol index, addend)."""
    return b"".join(struct.pack("<QQQ", offset, sym << 32 | rtype, addend % (1 << 64))
                    for offset, rtype, sym, addend in entries)


def relr(*words: int) -> bytes:
    return b"".join(struct.pack("<Q", w) for w in words)


def dyn_pie(*, rela: bytes = b"", jmprel: bytes = b"", relr: bytes = b"", syms: tuple[Sym, ...] = (),
            tags: dict[int, int | None] | None = None, extra: tuple[Seg, ...] = (), base: int = 0,
            data: bytes = b"", sections: bool = True) -> Elf:
    """A PIE kernel as a toolchain emits one: linked at base (0 by default), text RX, a read-only
    segment holding PT_DYNAMIC and the relocation tables, and 0x2000 bytes of RW data (0x1000 of
    them in the file) at base + DATA_AT. tags adds, changes or (None) removes dynamic entries."""
    t = base + TABLES_AT
    strtab = b"\0"
    symtab = bytes(24)
    for s in syms:
        symtab += struct.pack("<IBBHQQ", len(strtab), s.bind << 4 | s.stype, 0, s.shndx, s.value, 8)
        strtab += s.name.encode() + b"\0"
    dyn: dict[int, int | None] = {DT_SYMTAB: t + SYM_AT, DT_STRTAB: t + STR_AT, DT_STRSZ: len(strtab),
                                  DT_SYMENT: 24}
    if rela:
        dyn.update({DT_RELA: t + RELA_AT, DT_RELASZ: len(rela), DT_RELAENT: 24})
    if jmprel:
        dyn.update({DT_JMPREL: t + JMPREL_AT, DT_PLTRELSZ: len(jmprel), DT_PLTREL: DT_RELA})
    if relr:
        dyn.update({DT_RELR: t + RELR_AT, DT_RELRSZ: len(relr), DT_RELRENT: 8})
    dyn.update(tags or {})
    dynamic = b"".join(struct.pack("<qQ", k, v) for k, v in dyn.items() if v is not None) + bytes(16)
    tables = bytearray(0x4000)
    for at, blob in ((DYN_AT, dynamic), (SYM_AT, symtab), (STR_AT, strtab), (RELA_AT, rela),
                     (JMPREL_AT, jmprel), (RELR_AT, relr)):
        tables[at:at + len(blob)] = blob
    segs = [Seg(base + TEXT_AT, 0x1000, PF_R | PF_X, b"\x90" * 0x1000),
            Seg(t, 0x4000, PF_R, bytes(tables)),
            Seg(base + DATA_AT, 0x2000, PF_R | PF_W, data.ljust(0x1000, b"\0")),
            Seg(t + DYN_AT, len(dynamic), PF_R | PF_W, dynamic, ptype=PT_DYNAMIC, offset=TABLES_AT + DYN_AT, align=8),
            *extra]
    secs = []
    if sections:
        for name, stype, at, blob, entsize in ((".rela.dyn", SHT_RELA, RELA_AT, rela, 24),
                                               (".rela.plt", SHT_RELA, JMPREL_AT, jmprel, 24),
                                               (".relr.dyn", SHT_RELR, RELR_AT, relr, 8)):
            if blob:
                secs.append(Sec(name, stype, blob, SHF_ALLOC, entsize, addr=t + at))
    return Elf(segs, entry=base + TEXT_AT, etype=3, sections=secs)


def with_rela(segs: list[Seg], relocs: list[tuple[int, int]], entry: int | None = None) -> Elf:
    """A PIE of the given segments plus one read-only segment after them holding PT_DYNAMIC and a
    DT_RELA table of R_X86_64_RELATIVE relocations (r_offset, addend)."""
    table = rela(*[(o, R_X86_64_RELATIVE, a) for o, a in relocs])
    at = (max(s.vaddr + s.memsz for s in segs) + 0xFFF) & ~0xFFF
    dynamic = struct.pack("<qQqQqQ", DT_RELA, at + 0x100, DT_RELASZ, len(table), DT_RELAENT, 24) + bytes(16)
    blob = dynamic.ljust(0x100, b"\0") + table
    tables = Seg(at, len(blob), PF_R, blob)
    elf = Elf([*segs, tables], entry=entry if entry is not None else next(s.vaddr for s in segs if s.flags & PF_X),
              etype=3)
    elf.segments.append(Seg(at, len(dynamic), PF_R, dynamic, ptype=PT_DYNAMIC, within=len(segs), align=8))
    return elf
