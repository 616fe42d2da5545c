"""A catalogue of bad inputs. Each one is refused with one HighbootError that names the file (and
the field, where there is one) and says what is wrong; never a traceback. The end-to-end cases run
the real build and check the refusal comes before anything is built and nothing is left behind."""

from __future__ import annotations

import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import build_dir
from test_layout import BASE

from elfgen import (
    DATA_AT,
    DT_FLAGS,
    DT_NEEDED,
    DT_PLTREL,
    DT_REL,
    DT_RELAENT,
    DT_RELASZ,
    DT_RELRENT,
    DT_RELRSZ,
    DT_SYMTAB,
    DT_TEXTREL,
    KBASE,
    PF_R,
    PF_W,
    PF_X,
    PT_DYNAMIC,
    PT_GNU_RELRO,
    PT_INTERP,
    PT_TLS,
    R_X86_64_64,
    R_X86_64_GLOB_DAT,
    R_X86_64_JUMP_SLOT,
    R_X86_64_RELATIVE,
    SHF_ALLOC,
    SHT_REL,
    SHT_RELA,
    TABLES_AT,
    TEXT_AT,
    Elf,
    Sec,
    Seg,
    Sym,
    dyn_pie,
    rela,
    rela_sym,
    relr,
    sample,
)
from highboot.build.steps import render_context
from highboot.errors import HighbootError
from highboot.inputs.kernel import read_kernel
from highboot.inputs.layout import load_layout
from highboot.options.project import read_project
from highboot.planning.planner import plan_boot
from highboot.rendering.templates import render, template_files

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LAYOUT = ROOT / "templates" / "layouts" / "linux-x86_64.toml"
ET_DYN, ET_REL, ET_CORE = 3, 1, 4
EM_AARCH64, EM_RISCV = 183, 243
PT_PHDR = 6
R_X86_64_COPY, R_X86_64_DTPMOD64, R_X86_64_TPOFF64, R_X86_64_IRELATIVE = 5, 16, 18, 37


def image_size(kernel: Path) -> int:
    """Bytes of the page-aligned image of a kernel linked at the start of its region: a region of
    exactly this size holds the image but not its stack."""
    image = read_kernel(kernel)
    return -(-(image.end - image.start) // 4096) * 4096


def refusal(call: Callable[[], object]) -> HighbootError:
    with pytest.raises(HighbootError) as err:
        call()
    assert err.value.message, "a refusal says what is wrong"
    return err.value


def patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def pie(*sections: Sec) -> Elf:
    elf = sample()
    elf.etype = ET_DYN
    elf.sections = list(sections)
    return elf


def exec_kernel(tmp: Path) -> Path:
    """A valid ET_EXEC kernel linked at the default kernel region's start."""
    path = tmp / "kernel.elf"
    path.write_bytes(GOOD)
    return path


def patched_dynamic_size(size: int) -> bytes:
    """dyn_pie() with the PT_DYNAMIC header's p_filesz changed (program header 3)."""
    return patched(dyn_pie().build(), 64 + 3 * 56 + 32, "<Q", size)


def with_segments(*segs: Seg, entry: int = KBASE) -> Elf:
    return Elf(list(segs), entry=entry)


GOOD = sample().build()
TEXT = Seg(KBASE, 0x3000, PF_R | PF_X, b"\x90" * 0x3000)
# e_ident is 16 bytes, the ELF64 header 64, each program header 56 (sample() has three, from offset 64).
E_VERSION, E_PHOFF, E_PHENTSIZE, E_PHNUM = 0x14, 0x20, 0x36, 0x38

# (id, the file's bytes, field named in the error, part of the message)
ELF_CASES: list[tuple[str, Callable[[], bytes], str, str]] = [
    ("empty-file", lambda: b"", "", "empty file"),
    ("text-file", lambda: b"#!/bin/sh\necho this is not a kernel\n" * 4, "e_ident", "not an ELF file"),
    ("truncated-inside-magic", lambda: GOOD[:3], "e_ident", "shorter than the 64-byte ELF64 header"),
    ("truncated-inside-e_ident", lambda: GOOD[:10], "e_ident", "only 10 bytes"),
    ("truncated-inside-elf-header", lambda: GOOD[:40], "ELF header", "only 40 bytes"),
    ("truncated-inside-program-headers", lambda: GOOD[:64 + 56 + 20], "e_phoff", "runs past the end"),
    ("truncated-segment-data", lambda: GOOD[:0x2000], "program header 0", "segment data (0x1000+0x3000) runs past"),
    ("truncated-last-byte", lambda: GOOD[:-1], "program header 2", "truncated?"),
    ("bad-magic", lambda: b"\x7fELV" + GOOD[4:], "e_ident", "no \\x7fELF magic"),
    ("bad-e_ident-version", lambda: GOOD[:6] + b"\x00" + GOOD[7:], "e_ident[EI_VERSION]", "expected 1 (EV_CURRENT)"),
    ("bad-e_version", lambda: patched(GOOD, E_VERSION, "<I", 7), "e_version", "ELF version 7"),
    ("bad-e_phentsize", lambda: patched(GOOD, E_PHENTSIZE, "<H", 32), "e_phentsize", "e_phentsize is 32; expected 56"),
    ("e_phoff-past-eof", lambda: patched(GOOD, E_PHOFF, "<Q", 1 << 40), "e_phoff", "runs past the end"),
    ("e_phnum-pn_xnum", lambda: patched(GOOD, E_PHNUM, "<H", 0xFFFF), "e_phnum", "PN_XNUM"),
    ("invalid-class", lambda: GOOD[:4] + b"\x07" + GOOD[5:], "e_ident[EI_CLASS]", "invalid ELF class 7"),
    ("elfclass32", lambda: Elf(sample().segments, KBASE, ei_class=1).build(), "e_ident[EI_CLASS]", "32-bit ELF"),
    ("big-endian", lambda: Elf(sample().segments, KBASE, ei_data=2).build(), "e_ident[EI_DATA]", "big-endian"),
    ("invalid-data-encoding", lambda: Elf(sample().segments, KBASE, ei_data=0).build(), "e_ident[EI_DATA]",
     "invalid data encoding 0"),
    ("aarch64", lambda: Elf(sample().segments, KBASE, machine=EM_AARCH64).build(), "e_machine",
     "machine is EM_AARCH64; expected EM_X86_64"),
    ("riscv", lambda: Elf(sample().segments, KBASE, machine=EM_RISCV).build(), "e_machine", "machine is EM_RISCV"),
    ("et_rel", lambda: Elf(sample().segments, KBASE, etype=ET_REL).build(), "e_type", "ELF type ET_REL"),
    ("et_core", lambda: Elf(sample().segments, KBASE, etype=ET_CORE).build(), "e_type", "ELF type ET_CORE"),
    ("no-program-headers", lambda: Elf([], KBASE).build(), "e_phnum", "no program headers"),
    ("no-pt_load", lambda: with_segments(Seg(KBASE, 0x1000, PF_R | PF_X, b"\x90", ptype=PT_PHDR)).build(),
     "program headers", "no PT_LOAD segment"),
    ("only-empty-pt_loads", lambda: with_segments(Seg(KBASE, 0, PF_R | PF_X), Seg(KBASE + 0x1000, 0, PF_R)).build(),
     "program headers", "no PT_LOAD segment with memory"),
    ("empty-pt_load-with-file-bytes", lambda: with_segments(TEXT, Seg(KBASE + 0x4000, 0, PF_R, b"x" * 16)).build(),
     "program header 1", "p_filesz 0x10 is larger than p_memsz 0x0"),
    ("filesz-over-memsz", lambda: with_segments(TEXT, Seg(KBASE + 0x4000, 0x10, PF_R, b"x" * 0x20)).build(),
     "program header 1", "p_filesz 0x20 is larger than p_memsz 0x10"),
    ("overlapping-pt_loads", lambda: with_segments(TEXT, Seg(KBASE + 0x2000, 0x2000, PF_R, b"r")).build(),
     "program headers", "overlaps PT_LOAD #1"),
    ("w+x-segment", lambda: with_segments(Seg(KBASE, 0x3000, PF_R | PF_W | PF_X, b"\x90")).build(),
     "program header 0", "writable and executable"),
    ("w+x-shared-page", lambda: with_segments(Seg(KBASE, 0x800, PF_R | PF_X, b"\x90"),
                                              Seg(KBASE + 0x800, 0x800, PF_R | PF_W, b"d")).build(),
     "program headers", "share the page at 0xffffffff80000000"),
    ("huge-memsz", lambda: with_segments(TEXT, Seg(KBASE + 0x100000, 1 << 47, PF_R | PF_W)).build(),
     "program header 1", "p_memsz 0x800000000000 is not a plausible kernel size"),
    ("segment-wraps-past-2**64", lambda: with_segments(TEXT, Seg((1 << 64) - 0x1000, 0x2000, PF_R)).build(),
     "program header 1", "runs past the top of the 64-bit address space"),
    ("entry-outside-every-segment", lambda: with_segments(TEXT, entry=KBASE + 0x100000).build(), "e_entry",
     "entry point 0xffffffff80100000 is not inside an executable PT_LOAD"),
    ("entry-in-non-exec-segment", lambda: Elf(sample().segments, entry=KBASE + 0x3000).build(), "e_entry",
     "not inside an executable PT_LOAD segment"),
    ("p_vaddr-p_offset-misaligned", lambda: with_segments(Seg(KBASE + 0x10, 0x1000, PF_R | PF_X, b"\x90",
                                                              offset=0), entry=KBASE + 0x10).build(),
     "program header 0", "differ modulo p_align 0x1000"),
    ("p_align-not-power-of-two", lambda: with_segments(Seg(KBASE, 0x3000, PF_R | PF_X, b"\x90", align=0x3000)).build(),
     "program header 0", "p_align 0x3000 is not a power of two"),
    ("w+x-union-of-three", lambda: with_segments(Seg(KBASE, 0x400, PF_R | PF_X, b"\x90"),
                                                 Seg(KBASE + 0x400, 0x400, PF_R, b"r"),
                                                 Seg(KBASE + 0x800, 0x800, PF_R | PF_W, b"d")).build(),
     "program headers", "share the page at 0xffffffff80000000"),
    ("w+x-union-rx-last", lambda: with_segments(Seg(KBASE, 0x1000, PF_R | PF_X, b"\x90"),
                                                Seg(KBASE + 0x1000, 0x400, PF_R | PF_W, b"d"),
                                                Seg(KBASE + 0x1400, 0x400, PF_R, b"r"),
                                                Seg(KBASE + 0x1800, 0x800, PF_R | PF_X, b"\x90")).build(),
     "program headers", "share the page at 0xffffffff80001000"),
    # Position-independent kernels: what PT_DYNAMIC lists, as a loader reads it.
    ("pie-tpoff64", lambda: dyn_pie(rela=rela_sym((DATA_AT, R_X86_64_TPOFF64, 0, 0))).build(), "DT_RELA",
     "R_X86_64_TPOFF64 (18) at 0x0000000000006000 (entry 0 of DT_RELA at 0x0000000000003000): TLS"),
    ("pie-dtpmod64", lambda: dyn_pie(rela=rela_sym((DATA_AT, R_X86_64_DTPMOD64, 1, 0)), syms=(Sym("t"),)).build(),
     "DT_RELA", "relocation R_X86_64_DTPMOD64 (16) at 0x0000000000006000 against 't'"),
    ("pie-copy", lambda: dyn_pie(rela=rela_sym((DATA_AT, R_X86_64_COPY, 1, 0)), syms=(Sym("environ"),)).build(),
     "DT_RELA", "R_X86_64_COPY (5) at 0x0000000000006000 against 'environ' (entry 0 of DT_RELA at "
     "0x0000000000003000): copy relocations"),
    ("pie-irelative", lambda: dyn_pie(rela=rela_sym((DATA_AT + 8, R_X86_64_IRELATIVE, 0, TEXT_AT))).build(),
     "DT_RELA", "R_X86_64_IRELATIVE (37) at 0x0000000000006008 (entry 0 of DT_RELA at 0x0000000000003000): an ifunc"),
    ("pie-unknown-relocation", lambda: dyn_pie(rela=rela_sym((DATA_AT, 999, 0, 0))).build(), "DT_RELA",
     "relocation unknown (999) at 0x0000000000006000"),
    ("pie-pc32-relocation", lambda: dyn_pie(rela=rela_sym((DATA_AT, 2, 1, 0)), syms=(Sym("f", TEXT_AT),)).build(),
     "DT_RELA", "R_X86_64_PC32 (2) at 0x0000000000006000 against 'f' (entry 0 of DT_RELA at 0x0000000000003000): "
     "not a type highboot applies"),
    ("pie-undefined-symbol", lambda: dyn_pie(rela=rela_sym((DATA_AT, R_X86_64_GLOB_DAT, 1, 0)),
                                             syms=(Sym("missing_fn", shndx=0),)).build(),
     "DT_SYMTAB", "R_X86_64_GLOB_DAT (6) at 0x0000000000006000 against 'missing_fn' refers to the undefined symbol"),
    ("pie-undefined-jump_slot", lambda: dyn_pie(jmprel=rela_sym((DATA_AT + 0x10, R_X86_64_JUMP_SLOT, 1, 0)),
                                                syms=(Sym("printf", shndx=0),)).build(),
     "DT_SYMTAB", "R_X86_64_JUMP_SLOT (7) at 0x0000000000006010 against 'printf' refers to the undefined "
     "symbol 'printf'"),
    ("pie-ifunc-symbol", lambda: dyn_pie(rela=rela_sym((DATA_AT, R_X86_64_64, 1, 0)),
                                         syms=(Sym("memcpy", TEXT_AT, stype=10),)).build(),
     "DT_SYMTAB", "refers to the ifunc 'memcpy'"),
    ("pie-symbol-index-past-table", lambda: dyn_pie(rela=rela_sym((DATA_AT, R_X86_64_64, 5000, 0))).build(),
     "DT_SYMTAB", "dynamic symbol 5000"),
    ("pie-symbol-without-symtab", lambda: dyn_pie(rela=rela_sym((DATA_AT, R_X86_64_64, 1, 0)), syms=(Sym("f"),),
                                                  tags={DT_SYMTAB: None}).build(),
     "DT_SYMTAB", "refers to symbol 1 but PT_DYNAMIC has no DT_SYMTAB"),
    ("pie-textrel", lambda: dyn_pie(rela=rela_sym((DATA_AT, R_X86_64_RELATIVE, 0, 0)),
                                    tags={DT_TEXTREL: 0}).build(), "PT_DYNAMIC", "text relocations (DT_TEXTREL)"),
    ("pie-df_textrel", lambda: dyn_pie(tags={DT_FLAGS: 0x4}).build(), "PT_DYNAMIC", "text relocations"),
    ("pie-relocation-in-text", lambda: dyn_pie(rela=rela_sym((TEXT_AT + 0x10, R_X86_64_RELATIVE, 0, 0))).build(),
     "DT_RELA", "R_X86_64_RELATIVE (8) at 0x0000000000001010 (entry 0 of DT_RELA) is outside every writable"),
    ("pie-relocation-in-rodata", lambda: dyn_pie(rela=rela_sym((TABLES_AT + 0x3ff8, R_X86_64_RELATIVE, 0, 0))).build(),
     "DT_RELA", "at 0x0000000000005ff8 (entry 0 of DT_RELA) is outside every writable PT_LOAD"),
    ("pie-relocation-outside-segments", lambda: dyn_pie(rela=rela_sym((0x400000, R_X86_64_RELATIVE, 0, 0))).build(),
     "DT_RELA", "at 0x0000000000400000 (entry 0 of DT_RELA) is outside every writable PT_LOAD"),
    ("pie-relocation-straddles-segment-end", lambda: dyn_pie(rela=rela_sym((DATA_AT + 0x1ffc, R_X86_64_RELATIVE, 0,
                                                                              0))).build(),
     "DT_RELA", "at 0x0000000000007ffc (entry 0 of DT_RELA) is outside every writable PT_LOAD"),
    ("pie-relasz-not-multiple", lambda: dyn_pie(rela=rela_sym((DATA_AT, R_X86_64_RELATIVE, 0, 0)),
                                                tags={DT_RELASZ: 20}).build(), "DT_RELA",
     "DT_RELASZ 0x14 is not a multiple of the 24-byte entry (inconsistent table size)"),
    ("pie-relasz-past-segment", lambda: dyn_pie(rela=rela_sym((DATA_AT, R_X86_64_RELATIVE, 0, 0)),
                                                tags={DT_RELASZ: 0x100008}).build(), "DT_RELA",
     "the DT_RELA table (0x0000000000003000+0x100008) is not inside the file data of a PT_LOAD segment"),
    ("pie-relasz-smaller-than-section", lambda: dyn_pie(rela=rela_sym((DATA_AT, R_X86_64_RELATIVE, 0, 0),
                                                                      (DATA_AT + 8, R_X86_64_RELATIVE, 0, 0)),
                                                        tags={DT_RELASZ: 24}).build(), ".rela.dyn",
     "section .rela.dyn (0x0000000000003000+0x30) is not inside the relocation tables PT_DYNAMIC lists "
     "(DT_RELA 0x0000000000003000+0x18)"),
    ("pie-rela-without-relasz", lambda: dyn_pie(rela=rela_sym((DATA_AT, R_X86_64_RELATIVE, 0, 0)),
                                                tags={DT_RELASZ: None}).build(), "PT_DYNAMIC",
     "DT_RELA without DT_RELASZ"),
    ("pie-relaent", lambda: dyn_pie(rela=rela_sym((DATA_AT, R_X86_64_RELATIVE, 0, 0)),
                                    tags={DT_RELAENT: 16}).build(), "DT_RELA", "DT_RELAENT is 16; expected 24"),
    ("pie-pltrel-rel", lambda: dyn_pie(jmprel=rela_sym((DATA_AT, R_X86_64_JUMP_SLOT, 0, 0)),
                                       tags={DT_PLTREL: DT_REL}).build(), "DT_JMPREL", "DT_PLTREL is 17"),
    ("pie-dt_rel", lambda: dyn_pie(tags={DT_REL: TABLES_AT}).build(), "PT_DYNAMIC", "DT_REL relocations"),
    ("pie-dt_needed", lambda: dyn_pie(tags={DT_NEEDED: 0}).build(), "PT_DYNAMIC", "needs a shared library"),
    ("pie-relrsz-not-multiple", lambda: dyn_pie(relr=relr(DATA_AT), tags={DT_RELRSZ: 12}).build(), "DT_RELR",
     "DT_RELRSZ 0xc is not a multiple of the 8-byte entry"),
    ("pie-relrent", lambda: dyn_pie(relr=relr(DATA_AT), tags={DT_RELRENT: 16}).build(), "DT_RELR",
     "DT_RELRENT is 16; expected 8"),
    ("pie-relr-bitmap-first", lambda: dyn_pie(relr=relr(0b111)).build(), "DT_RELR",
     "entry 0 of the DT_RELR table at 0x0000000000005000 is a bitmap with no address before it"),
    ("pie-relr-bitmap-past-section", lambda: dyn_pie(relr=relr(DATA_AT + 0x1f00, (1 << 63) | 1)).build(), "DT_RELR",
     "RELR bitmap entry 1 of the DT_RELR table at 0x0000000000005000 relocates 0x00000000000080f8, "
     "outside every writable PT_LOAD segment"),
    ("pie-relr-address-in-text", lambda: dyn_pie(relr=relr(TEXT_AT)).build(), "DT_RELR",
     "RELR address entry 0 of the DT_RELR table at 0x0000000000005000 relocates 0x0000000000001000"),
    ("pie-relrsz-smaller-than-section", lambda: dyn_pie(relr=relr(DATA_AT, 0b11), tags={DT_RELRSZ: 8}).build(),
     ".relr.dyn", "section .relr.dyn (0x0000000000005000+0x10) is not inside the relocation tables PT_DYNAMIC lists"),
    ("pie-pt_interp", lambda: dyn_pie(extra=(Seg(TABLES_AT + 0x3f00, 0x1c, PF_R, b"/lib64/ld-linux-x86-64.so.2\0",
                                                 ptype=PT_INTERP, offset=TABLES_AT + 0x3f00, align=1),)).build(),
     "program header 4", "PT_INTERP asks for a dynamic linker"),
    ("pie-two-pt_dynamic", lambda: dyn_pie(extra=(Seg(TABLES_AT, 16, PF_R, bytes(16), ptype=PT_DYNAMIC,
                                                      offset=TABLES_AT, align=8),)).build(),
     "program header 4", "a second PT_DYNAMIC (the first is program header 3)"),
    ("pie-pt_dynamic-odd-size", lambda: patched_dynamic_size(20), "PT_DYNAMIC",
     "p_filesz 0x14 is not a multiple of 16"),
    ("pie-relro-outside-segments", lambda: dyn_pie(extra=(Seg(DATA_AT + 0x1000, 0x4000, PF_R, ptype=PT_GNU_RELRO,
                                                              offset=0, align=1),)).build(),
     "program header 4", "PT_GNU_RELRO (0x0000000000007000+0x4000, memory made read-only after relocation) is not"),
    ("pie-tls-filesz-over-memsz", lambda: dyn_pie(extra=(Seg(DATA_AT, 0x8, PF_R, bytes(16), ptype=PT_TLS,
                                                             offset=DATA_AT, align=8),)).build(),
     "program header 4", "PT_TLS p_filesz 0x10 is larger than p_memsz 0x8"),
    ("pie-tls-align-not-power-of-two", lambda: dyn_pie(extra=(Seg(DATA_AT, 0x8, PF_R, bytes(16), ptype=PT_TLS,
                                                           offset=DATA_AT, align=3),)).build(),
     "program header 4", "p_align 0x3 is not a power of two"),
    ("pie-relocations-without-pt_dynamic", lambda: pie(Sec(".rela.dyn", SHT_RELA,
                                                           rela((KBASE + 0x4000, R_X86_64_RELATIVE, 0)), SHF_ALLOC,
                                                           24)).build(),
     ".rela.dyn", "holds dynamic relocations but the kernel has no PT_DYNAMIC program header"),
    ("pie-rel-section", lambda: pie(Sec(".rel.dyn", SHT_REL, bytes(16), SHF_ALLOC, 16)).build(), ".rel.dyn",
     "REL relocations (without addends) are not used on x86-64"),
    ("pie-section-headers-past-eof", lambda: pie(Sec(".rela.dyn", SHT_RELA, b"", SHF_ALLOC, 24)).build()[:-1],
     "e_shoff", "section header table (3 entries"),
]


@pytest.mark.parametrize("data, field, message", [c[1:] for c in ELF_CASES], ids=[c[0] for c in ELF_CASES])
def test_bad_kernel_elf(tmp_path: Path, data: Callable[[], bytes], field: str, message: str) -> None:
    path = tmp_path / "kernel.elf"
    path.write_bytes(data())
    err = refusal(lambda: read_kernel(path))
    assert message in err.message, err.format()
    assert err.file == str(path)
    assert err.field == (field or None)
    assert str(path) in str(err)


def test_valid_pie_relocations_are_read(tmp_path: Path) -> None:
    """The PIE cases above fail for their mistake, not for being PIEs: the same file with one
    R_X86_64_RELATIVE is read."""
    path = tmp_path / "kernel.elf"
    path.write_bytes(dyn_pie(rela=rela_sym((DATA_AT, R_X86_64_RELATIVE, 0, TEXT_AT + 8))).build())
    kernel = read_kernel(path)
    assert kernel.position_independent
    assert [(r.vaddr, r.value, r.relative) for r in kernel.relocations] == [(DATA_AT, TEXT_AT + 8, True)]


def test_empty_pt_loads_are_ignored(tmp_path: Path) -> None:
    """A zero-size PT_LOAD (filesz = memsz = 0) loads nothing and is not an error by itself."""
    path = tmp_path / "kernel.elf"
    path.write_bytes(with_segments(TEXT, Seg(KBASE + 0x100000, 0, PF_R | PF_W | PF_X)).build())
    assert [s.vaddr for s in read_kernel(path).segments] == [KBASE]


@pytest.mark.parametrize("what", ["missing", "directory"])
def test_kernel_file_missing_or_directory(tmp_path: Path, what: str) -> None:
    path = tmp_path / "kernel.elf"
    if what == "directory":
        path.mkdir()
    err = refusal(lambda: read_kernel(path))
    assert err.file == str(path)
    assert err.message == ("kernel file not found" if what == "missing" else
                           "kernel file is a directory; expected a kernel file")


# ---------------------------------------------------------------------------------- kernel vs layout

# (id, segments' base address, message); the default layout's kernel region is 0xffffffff80000000 + 512 MiB.
PLACEMENT_CASES = [
    ("below-the-kernel-region", 0xFFFFFFFF7FFF0000, "outside the layout's kernel region 'kernel-text'"),
    ("above-the-kernel-region", 0xFFFFFFFFA0000000, "outside the layout's kernel region"),
    ("straddling-the-region-end", 0xFFFFFFFF9FFFE000, "outside the layout's kernel region"),
    ("in-the-lower-half", 0x0000000000400000, "outside the layout's kernel region"),
    ("non-canonical", 0x0000800000000000, "outside the layout's kernel region"),
    ("in-the-direct-map", 0xFFFF888000000000, "outside the layout's kernel region"),
]


@pytest.mark.parametrize("base, message", [c[1:] for c in PLACEMENT_CASES], ids=[c[0] for c in PLACEMENT_CASES])
def test_kernel_outside_its_region(tmp_path: Path, base: int, message: str) -> None:
    path = tmp_path / "kernel.elf"
    path.write_bytes(sample(base=base).build())
    kernel = read_kernel(path)
    err = refusal(lambda: plan_boot(kernel, load_layout(DEFAULT_LAYOUT)))
    assert message in err.message
    assert str(DEFAULT_LAYOUT) in err.message  # which layout's region
    assert err.file == str(path) and err.field == "program header 0"


# ------------------------------------------------------------------------------------------ layouts

BASE_LAYOUT = BASE  # the layout tests' valid two-region layout


def region(name: str, role: str, start: str, size: str = '"1 GiB"', extra: str = "") -> str:
    return f'[[region]]\nname = "{name}"\nrole = "{role}"\nstart = {start}\nsize = {size}\n{extra}'


def edit(old: str, new: str) -> str:
    assert old in BASE_LAYOUT, old
    return BASE_LAYOUT.replace(old, new, 1)


# (id, layout text, field, part of the message)
LAYOUT_CASES = [
    ("invalid-toml", 'name = "t"\n[[region]\n', "", "not valid TOML"),
    ("unknown-top-level-key", edit('name = "t"', 'name = "t"\ncolour = 1'), "colour", "unknown key 'colour'"),
    ("unknown-region-key", edit('name = "k"\n', 'name = "k"\nflavour = "mint"\n'), "region 'k'.flavour",
     "unknown key 'flavour'"),
    ("non-canonical-start", edit("start = 0xffff888000000000", "start = 0xffff088000000000"), "region 'dm'.start",
     "not a canonical 48-bit address"),
    ("end-in-the-canonical-hole", BASE_LAYOUT + region("low", "reserved", "0x00007fff00000000", '"8 GiB"'),
     "region 'low'.size", "not canonical for 48-bit addresses"),
    ("region-crossing-the-canonical-hole", BASE_LAYOUT + region("x", "reserved", "0x00007ffffffff000",
                                                                "0xffff000000002000"),
     "region 'x'.size", "crosses the canonical hole"),
    ("past-the-top-of-the-address-space", edit('start = 0xffffffff80000000\nsize = "512 MiB"',
                                               'start = 0xffffffffc0000000\nsize = "2 GiB"'),
     "region 'k'.size", "past the top of the 64-bit address space"),
    ("overlapping-regions", BASE_LAYOUT + region("x", "reserved", "0xffffffff90000000", '"4 MiB"'), "region 'x'",
     "overlaps region 'k'"),
    ("misaligned-for-2m-pages", edit("start = 0xffffffff80000000", 'start = 0xffffffff80001000\npage_size = "2M"'),
     "region 'k'.start", "page_size 2M needs 2 MiB alignment"),
    ("size-not-a-multiple-of-the-page-size", edit('size = "512 MiB"', 'size = "513 KiB"'), "region 'k'.size",
     "not a multiple of 4 KiB"),
    ("direct-map-not-1g-aligned", edit("start = 0xffff888000000000", "start = 0xffff888000200000"),
     "region 'dm'.start", "must be 1 GiB aligned"),
    ("unknown-page-size", edit('name = "k"\n', 'name = "k"\npage_size = "3M"\n'), "region 'k'.page_size",
     "expected one of 4K, 2M, 1G"),
    ("string-where-int", edit('name = "t"', 'name = "t"\nlevels = "4"'), "levels", "expected 4 or 5 paging levels"),
    ("junk-string-where-address", edit("start = 0xffffffff80000000", 'start = "the top"'), "region 'k'.start",
     "expected a number such as 4096"),
    ("int-where-string", edit('name = "t"', "name = 42"), "name", "expected a string, got int 42"),
    ("int-where-role-string", edit('role = "kernel"', "role = 3"), "region 'k'.role", "expected a string, got int 3"),
    ("list-where-table", 'name = "t"\nregion = [1, 2]\n', "region[0]", "expected a table"),
    ("string-where-region-list", 'name = "t"\nregion = "dm, k"\n', "region", "expected at least one [[region]]"),
    ("table-where-int", edit("start = 0xffffffff80000000", "start = { at = 1 }"), "region 'k'.start",
     "expected an address"),
    ("bool-where-size", edit('size = "64 TiB"', "size = true"), "region 'dm'.size", "got bool True"),
    ("missing-name", edit('name = "k"\n', ""), "region[1]", "missing key 'name'"),
    ("missing-role", edit('role = "kernel"\n', ""), "region 'k'", "missing key 'role'"),
    ("missing-start", edit("start = 0xffffffff80000000\n", ""), "region 'k'", "missing key 'start'"),
    ("missing-size-and-end", edit('size = "512 MiB"\n', ""), "region 'k'", "give exactly one of 'size' or 'end'"),
    ("no-regions", 'name = "t"\n', "region", "expected at least one [[region]] table"),
    ("no-kernel-region", edit('role = "kernel"', 'role = "reserved"'), "region", 'no region has role = "kernel"'),
    ("bad-size-unit", edit('size = "512 MiB"', 'size = "12 XB"'), "region 'k'.size", "unknown size unit 'XB'"),
    ("hex-without-digits", edit('size = "512 MiB"', 'size = "0x_"'), "region 'k'.size",
     "expected a number such as 4096"),
    ("unknown-role", edit('role = "kernel"', 'role = "kernal"'), "region 'k'.role", "unknown role 'kernal'"),
    ("negative-size", edit('size = "512 MiB"', "size = -4096"), "region 'k'.size", "negative number -4096"),
    ("zero-size", edit('size = "512 MiB"', "size = 0"), "region 'k'.size", "size is zero"),
    ("end-below-start", edit('size = "512 MiB"', "end = 0xffffffff70000000"), "region 'k'.end",
     "is not above start"),
    ("two-kernel-regions", BASE_LAYOUT + region("k2", "kernel", "0xffffffffc0000000", '"4 MiB"'), "region 'k2'.role",
     "at most one is allowed"),
    ("duplicate-region-name", BASE_LAYOUT + region("dm", "reserved", "0xffffc90000000000", '"4 MiB"'),
     "region 'dm'", "two regions are named 'dm'"),
    ("kernel-region-in-the-lower-half", edit("start = 0xffffffff80000000", "start = 0x00007fff80000000"),
     "region 'k'.start", "must be in the higher half"),
    ("levels-3", edit('name = "t"', 'name = "t"\nlevels = 3'), "levels", "expected 4 or 5 paging levels, got 3"),
    ("stack-size-not-4k-multiple", edit('name = "t"', 'name = "t"\nstack_size = 100'), "stack_size",
     "multiple of 4 KiB"),
    ("stack-size-zero", edit('name = "t"', 'name = "t"\nstack_size = 0'), "stack_size", "got 0x0"),
    # Mistakes the fuzzing and this catalogue found the layout loader letting through (now refused).
    # The plan then maps the kernel stack in the lower half, which the entry ABI promises is empty.
    ("stack-region-in-the-lower-half", BASE_LAYOUT + region("s", "stack", "0x0000700000000000", '"1 MiB"'),
     "region 's'.start", "higher half"),
    # The loader would map EFI runtime services in the lower half.
    ("efi-region-in-the-lower-half", BASE_LAYOUT + region("e", "efi_runtime", "0x0000100000000000", '"64 GiB"'),
     "region 'e'.start", "higher half"),
    # TOML 4.0 is a float: once accepted (4.0 == 4), then rendered as `pub const LEVELS: usize = 4.0;`
    # and refused by rustc after a cargo build.
    ("levels-float", edit('name = "t"', 'name = "t"\nlevels = 4.0'), "levels", "4 or 5"),
    # tomllib lets int() raise ValueError (not TOMLDecodeError) for a literal of over 4300 digits.
    ("integer-literal-too-long", edit('name = "t"', 'name = "t"\nstack_size = ' + "9" * 5000), "", "not valid TOML"),
]


@pytest.mark.parametrize("text, field, message", [c[1:] for c in LAYOUT_CASES], ids=[c[0] for c in LAYOUT_CASES])
def test_bad_layout(tmp_path: Path, text: str, field: str, message: str) -> None:
    path = tmp_path / "layout.toml"
    path.write_text(text)
    err = refusal(lambda: load_layout(path))
    assert message in err.message, err.format()
    assert err.file == str(path)
    assert err.field == (field or None)




@pytest.mark.parametrize("what, message", [("missing", "layout file not found"),
                                           ("directory", "layout file is a directory; expected a layout file"),
                                           ("not-utf8", "layout file is not UTF-8 text")])
def test_layout_file_unreadable(tmp_path: Path, what: str, message: str) -> None:
    path = tmp_path / "layout.toml"
    if what == "directory":
        path.mkdir()
    elif what == "not-utf8":
        path.write_bytes(b'name = "\xff\xfe"\n')
    err = refusal(lambda: load_layout(path))
    assert message in err.message and err.file == str(path)


@pytest.mark.parametrize("kernel_region, message", [
    ('size = "16 KiB"', "has no room after the kernel image"),
    ('size = "40 KiB"', "for the 64 KiB stack, its guard page and the trampoline page"),
])
def test_kernel_does_not_fit_its_region(tmp_path: Path, kernel_region: str, message: str) -> None:
    """The image fits, but not with its stack, guard page and trampoline: the layout is at fault."""
    layout = tmp_path / "layout.toml"
    layout.write_text(edit('size = "512 MiB"', kernel_region))
    kernel = tmp_path / "kernel.elf"
    kernel.write_bytes(sample(text=0x1000, rodata=0, data=0x1000, bss=0).build())
    err = refusal(lambda: plan_boot(read_kernel(kernel), load_layout(layout)))
    assert message in err.message
    assert err.file == str(layout) and err.field == "region 'k'.size"


# A kernel linked (or placed) high in the default layout's region (0xffffffff80000000 + 512 MiB): what
# must follow it (stack, trampoline page, AP stacks) does not fit. The kernel could go lower: it is named.
REGION_END = 0xFFFFFFFFA0000000


@pytest.mark.parametrize("pie, start, message", [
    (False, REGION_END - 0x10000, "for the 64 KiB stack, its guard page and the trampoline page"),
    (False, REGION_END - 0x100000, "no room after the trampoline alias for 255 AP stacks of 16 KiB"),
    (True, REGION_END - 0x10000, "for the 64 KiB stack, its guard page and the trampoline page"),
], ids=["exec-stack", "exec-ap-stacks", "pie-kernel-base"])
def test_a_kernel_too_high_in_its_region_is_named(tmp_path: Path, pie: bool, start: int, message: str) -> None:
    kernel = tmp_path / "kernel.elf"
    kernel.write_bytes((dyn_pie() if pie else sample(text=0x1000, rodata=0, data=0x1000, bss=0, base=start)).build())
    err = refusal(lambda: plan_boot(read_kernel(kernel), load_layout(DEFAULT_LAYOUT),
                                    kernel_base=start if pie else None))
    assert err.file == str(kernel) and err.field == "program headers"
    assert message in err.message and f"the kernel at {start:#x}" in err.message
    assert ("place it lower (KERNEL_BASE)" if pie else "link it lower") in err.message
    assert "the region starts at 0xffffffff80000000" in err.message and str(DEFAULT_LAYOUT) in err.message


def test_ap_stacks_that_fit_nowhere_in_the_region_are_the_options(tmp_path: Path) -> None:
    """255 AP stacks of 4 MiB (about 1 GiB) fit nowhere in a 512 MiB region: placing the kernel
    lower would not help, so the refusal names the options (and the region), not the kernel."""
    kernel = tmp_path / "kernel.elf"
    kernel.write_bytes(dyn_pie().build())
    err = refusal(lambda: plan_boot(read_kernel(kernel), load_layout(DEFAULT_LAYOUT), kernel_base=0xFFFFFFFF80200000,
                                    ap_stack_size=4 << 20))
    assert err.file is None and err.field == "ap_stack_size"
    assert err.message == ("255 AP stacks of 4 MiB and their guard pages (1045500 KiB) do not fit in the 512 MiB "
                           f"kernel region 'kernel-text' of {DEFAULT_LAYOUT} at all; lower max_cpus or "
                           "ap_stack_size, or turn SMP off")


def test_stack_region_too_small(tmp_path: Path) -> None:
    layout = tmp_path / "layout.toml"
    layout.write_text(BASE_LAYOUT + region("s", "stack", "0xffffffffa0000000", '"64 KiB"'))
    kernel = tmp_path / "kernel.elf"
    kernel.write_bytes(sample().build())
    err = refusal(lambda: plan_boot(read_kernel(kernel), load_layout(layout)))
    assert "is too small for a 64 KiB stack and its guard page" in err.message
    assert err.file == str(layout) and err.field == "region 's'.size"


# ------------------------------------------------------------------------------------- project file

PROJECT_CASES = [
    ("unknown-key", 'kernal = "k.elf"\n', "kernal", "unknown key 'kernal'"),
    ("int-where-path", "kernel = 5\n", "kernel", "expected a string, got int 5"),
    ("list-where-string", 'cmdline = ["console=ttyS0"]\n', "cmdline", "expected a string, got list"),
    ("table-where-string", '[layout]\npath = "l.toml"\n', "layout", "expected a string, got dict"),
    ("templates-not-strings", "templates = [1, 2]\n", "templates", "expected a directory or a list of directories"),
    ("framebuffer-not-a-resolution", 'framebuffer = "1024 x 768"\n', "framebuffer", "expected WIDTHxHEIGHT"),
    ("framebuffer-a-number", "framebuffer = 1024\n", "framebuffer", 'expected a string "WIDTHxHEIGHT"'),
    ("invalid-toml", 'kernel = "k.elf\n', "", "not valid TOML"),
    ("integer-literal-too-long", "kernel_base = " + "9" * 5000 + "\n", "", "not valid TOML"),
]


@pytest.mark.parametrize("text, field, message", [c[1:] for c in PROJECT_CASES], ids=[c[0] for c in PROJECT_CASES])
def test_bad_project_file(tmp_path: Path, text: str, field: str, message: str) -> None:
    path = tmp_path / "highboot.toml"
    path.write_text(text)
    err = refusal(lambda: read_project(path))
    assert message in err.message, err.format()
    assert err.file == str(path)
    assert err.field == (field or None)


@pytest.mark.parametrize("what, message", [("missing", "project file not found"),
                                           ("not-utf8", "project file is not UTF-8 text")])
def test_project_file_unreadable(tmp_path: Path, what: str, message: str) -> None:
    path = tmp_path / "highboot.toml"
    if what == "not-utf8":
        path.write_bytes(b'cmdline = "\xff"\n')
    err = refusal(lambda: read_project(path))
    assert message in err.message and err.file == str(path)


# ---------------------------------------------------------------------------------------- templates

TEMPLATE = "include/highboot.h.j2"


def override(tmp_path: Path, content: bytes | None, name: str = TEMPLATE) -> Path:
    """A project template directory overriding name with content (None: a directory by that name)."""
    target = tmp_path / "templates" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if content is None:
        target.mkdir()
    else:
        target.write_bytes(content)
    return tmp_path / "templates"


# (id, template bytes, field, part of the message); checked both by the dependency scan and by rendering.
TEMPLATE_CASES = [
    ("jinja-syntax-error", b"/* ok */\n{% if %}\n", "line 2", "template syntax error"),
    ("unclosed-block", b"{% for x in y %}\n", "line 1", "template syntax error"),
    ("not-utf8", b"/* \xff\xfe */\n", "", "template is not UTF-8 text"),
    # Running as root, chmod 000 cannot make a template unreadable; a directory in its place can.
    ("directory-instead-of-file", None, "", "expected a template file, found a directory"),
]


@pytest.mark.parametrize("content, field, message", [c[1:] for c in TEMPLATE_CASES],
                         ids=[c[0] for c in TEMPLATE_CASES])
@pytest.mark.parametrize("step", ["scan", "render"])
def test_bad_template(tmp_path: Path, content: bytes | None, field: str, message: str, step: str) -> None:
    dirs = [override(tmp_path, content)]
    if step == "scan":
        err = refusal(lambda: template_files(dirs, TEMPLATE))
    else:
        err = refusal(lambda: render(dirs, TEMPLATE, render_context(None, {})))
    assert message in err.message, err.format()
    assert err.file == str(dirs[0] / TEMPLATE)
    assert err.field == (field or None)


def test_template_undefined_variable(tmp_path: Path) -> None:
    dirs = [override(tmp_path, b"#define X {{ no_such_variable }}\n")]
    assert template_files(dirs, TEMPLATE) == [dirs[0] / TEMPLATE]  # only rendering can tell
    err = refusal(lambda: render(dirs, TEMPLATE, render_context(None, {})))
    assert "undefined variable: 'no_such_variable' is undefined" in err.message
    assert err.file == str(dirs[0] / TEMPLATE)


@pytest.mark.parametrize("content, missing", [(b'{% include "parts/missing.h.j2" %}\n', "parts/missing.h.j2"),
                                              (b'{% extends "base:include/nope.h.j2" %}\n', "base:include/nope.h.j2")])
def test_template_refers_to_a_missing_one(tmp_path: Path, content: bytes, missing: str) -> None:
    dirs = [override(tmp_path, content)]
    err = refusal(lambda: template_files(dirs, TEMPLATE))
    assert err.file == missing and "template not found" in err.message
    assert f"used by {dirs[0] / TEMPLATE}" in err.message
    err = refusal(lambda: render(dirs, TEMPLATE, render_context(None, {})))
    assert f"template {missing!r} not found" in err.message and err.file == str(dirs[0] / TEMPLATE)


def test_template_not_found_anywhere(tmp_path: Path) -> None:
    err = refusal(lambda: template_files([tmp_path], "loader/nope.rs.j2"))
    assert err.file == "loader/nope.rs.j2" and f"template not found in {tmp_path}" in err.message


# ------------------------------------------------------------------------------- end to end (scons)


@pytest.fixture(scope="module")
def built_kernel() -> Path:
    """A valid kernel to pair with other bad inputs, so that no case needs a cargo build."""
    path = build_dir() / "kernel" / "kernel.elf"
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `scons` first (the end-to-end cases pass it as KERNEL=)")
    return path


def scons(tmp_path: Path, **options: str) -> subprocess.CompletedProcess[str]:
    args = [f"{k}={v}" for k, v in options.items()]
    return subprocess.run([sys.executable, "-m", "SCons", "-Q", f"BUILD_DIR={tmp_path / 'b'}",
                           f"CARGO_DIR={ROOT / 'build' / 'cargo'}", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def bad_kernel(tmp_path: Path, data: bytes) -> dict[str, str]:
    path = tmp_path / "bad-kernel.elf"
    path.write_bytes(data)
    return {"KERNEL": str(path)}


def bad_layout(tmp_path: Path, text: str, kernel: Path) -> dict[str, str]:
    path = tmp_path / "bad-layout.toml"
    path.write_text(text)
    return {"KERNEL": str(kernel), "LAYOUT": str(path)}


def bad_project(tmp_path: Path, text: str, kernel: Path) -> dict[str, str]:
    path = tmp_path / "bad-project.toml"
    path.write_text(text)
    return {"KERNEL": str(kernel), "PROJECT": str(path)}


def bad_templates(tmp_path: Path, name: str, content: bytes | None, kernel: Path) -> dict[str, str]:
    return {"KERNEL": str(kernel), "TEMPLATES": str(override(tmp_path, content, name))}


# (id, options for scons from (tmp_path, kernel), the file the error must name, part of the message)
E2E_CASES: list[tuple[str, Callable[[Path, Path], dict[str, str]], str, str]] = [
    ("kernel-truncated", lambda t, k: bad_kernel(t, GOOD[:0x2000]), "bad-kernel.elf", "runs past the end"),
    ("kernel-elfclass32", lambda t, k: bad_kernel(t, Elf(sample().segments, KBASE, ei_class=1).build()),
     "bad-kernel.elf", "32-bit ELF"),
    ("pie-undefined-symbol", lambda t, k: bad_kernel(t, dyn_pie(rela=rela_sym((DATA_AT, R_X86_64_GLOB_DAT, 1, 0)),
                                                                 syms=(Sym("missing_fn", shndx=0),)).build()),
     "bad-kernel.elf: DT_SYMTAB", "against 'missing_fn' refers to the undefined symbol"),
    ("pie-relr-bitmap-past-segment", lambda t, k: bad_kernel(t, dyn_pie(relr=relr(DATA_AT + 0x1f00,
                                                                                   (1 << 63) | 1)).build()),
     "bad-kernel.elf: DT_RELR", "outside every writable PT_LOAD segment"),
    ("pie-kernel-base-misaligned", lambda t, k: {**bad_kernel(t, dyn_pie().build()),
                                                 "KERNEL_BASE": "0xffffffff80000800"},
     "bad-kernel.elf: kernel_base", "would move the kernel by"),
    ("kernel-base-not-a-number", lambda t, k: {"KERNEL": str(k), "KERNEL_BASE": "banana"}, "KERNEL_BASE",
     "expected a number"),
    ("fb-mode-not-a-resolution", lambda t, k: {"KERNEL": str(k), "FB_MODE": "1024*768"}, "FB_MODE: '1024*768'",
     "expected WIDTHxHEIGHT in decimal pixels (e.g. 1024x768)"),
    ("fb-mode-too-large", lambda t, k: {"KERNEL": str(k), "FB_MODE": "1024x99999"}, "FB_MODE",
     "the height must be 1 to 16384 pixels"),
    ("kernel-w+x", lambda t, k: bad_kernel(t, with_segments(Seg(KBASE, 0x1000, PF_R | PF_W | PF_X, b"\x90")).build()),
     "bad-kernel.elf", "writable and executable"),
    ("kernel-text-file", lambda t, k: bad_kernel(t, b"not a kernel\n"), "bad-kernel.elf", "not an ELF file"),
    ("kernel-missing", lambda t, k: {"KERNEL": str(t / "no-such-kernel.elf")}, "KERNEL: kernel file '",
     "no-such-kernel.elf' not found"),
    ("layout-invalid-toml", lambda t, k: bad_layout(t, "name = [\n", k), "bad-layout.toml", "not valid TOML"),
    ("layout-unknown-key", lambda t, k: bad_layout(t, edit('name = "t"', 'name = "t"\ncolour = 1'), k),
     "bad-layout.toml", "colour: unknown key"),
    ("layout-overlap", lambda t, k: bad_layout(t, BASE_LAYOUT + region("x", "reserved", "0xffffffff90000000"), k),
     "bad-layout.toml", "overlaps region 'k'"),
    ("layout-missing", lambda t, k: {"KERNEL": str(k), "LAYOUT": str(t / "no-such-layout.toml")},
     "LAYOUT: layout file '", "no-such-layout.toml' not found"),
    # Found when planning (the kernel is valid, the layout is valid, they do not go together).
    # (An ET_EXEC kernel: a PIE would be placed in the region.)
    ("kernel-outside-the-layouts-region", lambda t, k: bad_layout(
        t, edit("start = 0xffffffff80000000", "start = 0xffffffffc0000000").replace('"512 MiB"', '"256 MiB"'),
        exec_kernel(t)),
     "kernel.elf", "outside the layout's kernel region 'k'"),
    ("layout-region-too-small", lambda t, k: bad_layout(t, edit('size = "512 MiB"', f'size = {image_size(k)}'), k),
     "bad-layout.toml", "has no room after the kernel image"),
    ("project-unknown-key", lambda t, k: bad_project(t, 'kernal = "k.elf"\n', k), "bad-project.toml",
     "unknown key 'kernal'"),
    ("project-wrong-type", lambda t, k: bad_project(t, "templates = 3\n", k), "bad-project.toml",
     "expected a directory or a list of directories"),
    ("project-framebuffer-zero", lambda t, k: bad_project(t, 'framebuffer = "0x0"\n', k),
     "bad-project.toml: framebuffer", "the width must be 1 to 16384 pixels"),
    ("project-missing", lambda t, k: {"KERNEL": str(k), "PROJECT": str(t / "no-such-project.toml")},
     "PROJECT: project file '", "no-such-project.toml' not found"),
    ("templates-dir-missing", lambda t, k: {"KERNEL": str(k), "TEMPLATES": str(t / "no-such-templates")},
     "no-such-templates", "template directory not found"),
    ("template-syntax-error", lambda t, k: bad_templates(t, "loader/plan.rs.j2", b"{% if %}\n", k), "plan.rs.j2",
     "template syntax error"),
    ("template-not-utf8", lambda t, k: bad_templates(t, "loader/trampoline.S.j2", b"\xff\n", k), "trampoline.S.j2",
     "not UTF-8"),
]


@pytest.mark.parametrize("options, named, message", [c[1:] for c in E2E_CASES], ids=[c[0] for c in E2E_CASES])
def test_build_refuses_before_building(tmp_path: Path, built_kernel: Path,
                                       options: Callable[[Path, Path], dict[str, str]], named: str,
                                       message: str) -> None:
    out = scons(tmp_path, **options(tmp_path, built_kernel))
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    assert "highboot: error:" in text, text
    assert named in text and message in text, text
    assert "Traceback" not in text, text
    assert "cargo" not in text, text  # refused before any cargo build
    assert not (tmp_path / "b" / "plan.json").exists()
    assert not (tmp_path / "b" / "esp" / "EFI" / "BOOT" / "BOOTX64.EFI").exists()


def test_build_refuses_template_with_undefined_variable(tmp_path: Path, built_kernel: Path) -> None:
    """Only rendering finds an undefined variable, so the (valid) plan is made first; the file that
    failed to render is not left behind, and neither is a loader."""
    out = scons(tmp_path, **bad_templates(tmp_path, "loader/plan.rs.j2", b"{{ no_such_variable }}\n", built_kernel))
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    assert "highboot: error:" in text and "plan.rs.j2: template uses an undefined variable" in text, text
    assert "Traceback" not in text and "cargo" not in text, text
    assert not (tmp_path / "b" / "gen" / "plan.rs").exists()
    assert not (tmp_path / "b" / "esp" / "EFI" / "BOOT" / "BOOTX64.EFI").exists()
