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
        for seg in self.segments:
            if seg.offset is None:
                blobs += b"\0" * ((seg.vaddr - data_off - len(blobs)) % 4096)
            offset = seg.offset if seg.offset is not None else data_off + len(blobs)
            if seg.offset is None:
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
