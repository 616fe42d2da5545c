"""Write small ELF64 files for tests: real headers, chosen segments, anything broken on purpose."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

PF_X, PF_W, PF_R = 1, 2, 4
PT_LOAD, PT_DYNAMIC = 1, 2


@dataclass
class Seg:
    vaddr: int
    memsz: int
    flags: int
    data: bytes = b""
    ptype: int = PT_LOAD
    offset: int | None = None  # default: placed after the headers


@dataclass
class Elf:
    segments: list[Seg] = field(default_factory=list)
    entry: int = 0
    ei_class: int = 2
    ei_data: int = 1
    machine: int = 62  # EM_X86_64
    etype: int = 2  # ET_EXEC

    def build(self) -> bytes:
        phoff, phentsize = 64, 56
        data_off = phoff + phentsize * len(self.segments)
        data_off = (data_off + 0xFFF) & ~0xFFF
        blobs, headers = b"", b""
        for seg in self.segments:
            offset = seg.offset if seg.offset is not None else data_off + len(blobs)
            if seg.offset is None:
                blobs += seg.data + b"\0" * ((-len(seg.data)) % 4096)
            headers += struct.pack("<IIQQQQQQ", seg.ptype, seg.flags, offset, seg.vaddr, seg.vaddr,
                                   len(seg.data), seg.memsz, 0x1000)
        ident = b"\x7fELF" + bytes([self.ei_class, self.ei_data, 1, 0]) + b"\0" * 8
        header = ident + struct.pack("<HHIQQQIHHHHHH", self.etype, self.machine, 1, self.entry, phoff, 0, 0,
                                     64, phentsize, len(self.segments), 64, 0, 0)
        body = header + headers
        body += b"\0" * (data_off - len(body))
        return body + blobs


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
