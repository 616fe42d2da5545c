"""Kernels as their toolchains emit them: PIEs linked at 0 (or anywhere) placed in the kernel
region, RELA relocations against symbols resolved at build time, RELR, RELRO mapped read-only,
PT_GNU_EH_FRAME and PT_TLS handed over. Synthetic ELFs pin each rule down; the real toolchain
kernels (gcc + GNU ld, lld, rustc from a JSON target spec) are booted in test_shape_boots.py."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elfgen import (
    DATA_AT,
    KBASE,
    PF_R,
    PF_W,
    PF_X,
    PT_GNU_EH_FRAME,
    PT_GNU_RELRO,
    PT_TLS,
    R_X86_64_64,
    R_X86_64_GLOB_DAT,
    R_X86_64_JUMP_SLOT,
    R_X86_64_RELATIVE,
    SHF_ALLOC,
    SHN_ABS,
    STB_WEAK,
    TABLES_AT,
    TEXT_AT,
    Sec,
    Seg,
    Sym,
    dyn_pie,
    rela_sym,
    relr,
    sample,
)
from highboot.errors import HighbootError
from highboot.inputs.kernel import read_kernel
from highboot.inputs.layout import load_layout
from highboot.planning.planner import SLIDE_ALIGN, PlannedRange, plan_boot

ROOT = Path(__file__).resolve().parents[1]
LAYOUT = ROOT / "templates" / "layouts" / "linux-x86_64.toml"
LA57 = ROOT / "templates" / "layouts" / "linux-x86_64-la57.toml"
REGION = 0xFFFFFFFF80000000  # the default layout's kernel region
MIB2 = 2 << 20


def write(tmp_path: Path, data: bytes, name: str = "k.elf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def words(*values: int) -> bytes:
    return b"".join(struct.pack("<Q", v % (1 << 64)) for v in values)


def test_rela_resolves_symbols_at_build_time(tmp_path: Path) -> None:
    syms = (Sym("handler", TEXT_AT + 0x40), Sym("absolute", 0x1234, shndx=SHN_ABS),
            Sym("optional", 0, shndx=0, bind=STB_WEAK), Sym("table", DATA_AT + 0x100))
    rel = rela_sym((DATA_AT + 0x00, R_X86_64_RELATIVE, 0, TEXT_AT + 8),
                   (DATA_AT + 0x08, R_X86_64_64, 1, 0x10),      # defined: S + A, moves with the kernel
                   (DATA_AT + 0x10, R_X86_64_64, 2, 4),         # SHN_ABS: fixed
                   (DATA_AT + 0x18, R_X86_64_GLOB_DAT, 3, 0),   # undefined weak: 0, fixed
                   (DATA_AT + 0x20, 0, 0, 0),                   # R_X86_64_NONE: nothing
                   (DATA_AT + 0x28, R_X86_64_GLOB_DAT, 4, 0))
    plt = rela_sym((DATA_AT + 0x30, R_X86_64_JUMP_SLOT, 1, 0))
    k = read_kernel(write(tmp_path, dyn_pie(rela=rel, jmprel=plt, syms=syms).build()))
    assert [(r.vaddr, r.value, r.relative) for r in k.relocations] == [
        (DATA_AT, TEXT_AT + 8, True), (DATA_AT + 8, TEXT_AT + 0x50, True), (DATA_AT + 0x10, 0x1238, False),
        (DATA_AT + 0x18, 0, False), (DATA_AT + 0x28, DATA_AT + 0x100, True), (DATA_AT + 0x30, TEXT_AT + 0x40, True)]


def test_relr_addresses_and_bitmaps_take_their_addend_from_the_file(tmp_path: Path) -> None:
    # An address entry, then a bitmap for words 1, 2 and 62 after it; the last one is in .bss (0).
    data = words(TEXT_AT, 0x10, DATA_AT + 0x20)
    table = relr(DATA_AT, 0b11 << 1 | 1 << 62 | 1)
    k = read_kernel(write(tmp_path, dyn_pie(relr=table, data=data).build()))
    assert [(r.vaddr, r.value, r.relative) for r in k.relocations] == [
        (DATA_AT, TEXT_AT, True), (DATA_AT + 8, 0x10, True), (DATA_AT + 16, DATA_AT + 0x20, True),
        (DATA_AT + 8 + 61 * 8, 0, True)]


@given(st.sets(st.integers(0, 0x3FF), max_size=200))
@settings(max_examples=150, deadline=None)
def test_relr_decodes_any_set_of_words(tmp_path_factory: pytest.TempPathFactory, slots: set[int]) -> None:
    """Encode a set of relocated words the way linkers pack them, decode, get the same set back."""
    targets = sorted(DATA_AT + 8 * s for s in slots)
    entries: list[int] = []
    i = 0
    while i < len(targets):
        entries.append(targets[i])
        where = targets[i] + 8
        i += 1
        while i < len(targets) and targets[i] < where + 63 * 8:
            bitmap = 1
            while i < len(targets) and targets[i] < where + 63 * 8:
                bitmap |= 1 << ((targets[i] - where) // 8 + 1)
                i += 1
            entries.append(bitmap)
            where += 63 * 8
    path = write(tmp_path_factory.mktemp("relr"), dyn_pie(relr=relr(*entries) if entries else b"").build())
    assert [r.vaddr for r in read_kernel(path).relocations] == targets


def test_pie_linked_at_zero_is_placed_at_the_region_start(tmp_path: Path) -> None:
    path = write(tmp_path, dyn_pie(rela=rela_sym((DATA_AT, R_X86_64_RELATIVE, 0, TEXT_AT + 8),
                                                 (DATA_AT + 8, R_X86_64_GLOB_DAT, 1, 0)),
                                   syms=(Sym("weak", 0, shndx=0, bind=STB_WEAK),)).build())
    plan = plan_boot(read_kernel(path), load_layout(LAYOUT))
    assert plan.position_independent and plan.load_bias == REGION
    assert plan.image_va == REGION + TEXT_AT and plan.entry == REGION + TEXT_AT
    # The loader stores value + slide at block offsets: the file's addresses moved by the bias.
    assert plan.relocations == [(DATA_AT - TEXT_AT, REGION + TEXT_AT + 8)]
    assert plan.absolute_relocations == [(DATA_AT + 8 - TEXT_AT, 0)]
    assert [s.vaddr for s in plan.segments] == [REGION + TEXT_AT, REGION + TABLES_AT, REGION + DATA_AT]


def test_pie_goes_to_kernel_base(tmp_path: Path) -> None:
    path = write(tmp_path, dyn_pie().build())
    plan = plan_boot(read_kernel(path), load_layout(LAYOUT), kernel_base=REGION + 0x1000000)
    assert plan.image_va == REGION + 0x1000000 and plan.load_bias == REGION + 0x1000000 - TEXT_AT


def test_pie_linked_inside_the_region_stays_where_it_is_linked(tmp_path: Path) -> None:
    path = write(tmp_path, dyn_pie(base=REGION + 0x400000).build())
    plan = plan_boot(read_kernel(path), load_layout(LAYOUT))
    assert plan.load_bias == 0 and plan.image_va == REGION + 0x400000 + TEXT_AT


def test_pie_linked_above_the_region_moves_down(tmp_path: Path) -> None:
    path = write(tmp_path, dyn_pie(base=0xFFFFFFFFF0000000).build())
    plan = plan_boot(read_kernel(path), load_layout(LAYOUT))
    assert plan.image_va == REGION + TEXT_AT and plan.load_bias == (REGION - 0xFFFFFFFFF0000000) % (1 << 64)


def test_large_p_align_is_kept(tmp_path: Path) -> None:
    """A segment aligned to 4 MiB moves by multiples of 4 MiB; KASLR's 2 MiB steps cannot keep that."""
    elf = dyn_pie()
    elf.segments[0].align = 4 << 20
    path = write(tmp_path, elf.build())
    layout = load_layout(LAYOUT)
    plan = plan_boot(read_kernel(path), layout)
    assert plan.load_bias % (4 << 20) == 0
    with pytest.raises(HighbootError) as err:
        plan_boot(read_kernel(path), layout, kernel_base=REGION + MIB2 + TEXT_AT)
    assert "ask for 4 MiB alignment" in err.value.message and err.value.field == "kernel_base"
    with pytest.raises(HighbootError) as err:
        plan_boot(read_kernel(path), layout, kaslr=True)
    assert "KASLR moves the kernel in 2 MiB steps" in err.value.message


@pytest.mark.parametrize("base, message", [
    (REGION + 0x123, "would move the kernel by"),
    (REGION - 0x40000000, "placed at 0xffffffff40000000, PT_LOAD #0"),
    (1 << 64, "is not a 64-bit address"),
])
def test_bad_kernel_base_is_refused(tmp_path: Path, base: int, message: str) -> None:
    path = write(tmp_path, dyn_pie().build())
    with pytest.raises(HighbootError) as err:
        plan_boot(read_kernel(path), load_layout(LAYOUT), kernel_base=base)
    assert message in err.value.message and err.value.file == str(path)


def test_et_exec_runs_only_at_its_link_address(tmp_path: Path) -> None:
    path = write(tmp_path, sample().build())
    assert plan_boot(read_kernel(path), load_layout(LAYOUT), kernel_base=KBASE).load_bias == 0
    with pytest.raises(HighbootError) as err:
        plan_boot(read_kernel(path), load_layout(LAYOUT), kernel_base=KBASE + MIB2)
    assert "this kernel is ET_EXEC and runs only at its link address" in err.value.message
    assert err.value.field == "kernel_base"


def page_flags(ranges: list[PlannedRange]) -> dict[int, str]:
    """The planned permission of every kernel-image page (ranges are coalesced)."""
    return {r.va + off: r.flags for r in ranges if r.name == "kernel image" for off in range(0, r.size, 0x1000)}


def relro_kernel(tmp_path: Path, relro_size: int) -> Path:
    """dyn_pie with PT_GNU_RELRO over the start of its data segment."""
    relro = Seg(DATA_AT, relro_size, PF_R, ptype=PT_GNU_RELRO, within=2, align=1)
    return write(tmp_path, dyn_pie(rela=rela_sym((DATA_AT, R_X86_64_RELATIVE, 0, 0)), extra=(relro,)).build())


def test_relro_pages_are_read_only_and_a_page_shared_with_data_stays_writable(tmp_path: Path) -> None:
    plan = plan_boot(read_kernel(relro_kernel(tmp_path, 0x1800)), load_layout(LAYOUT))
    pages = page_flags(plan.ranges)
    assert (pages[REGION + DATA_AT], pages[REGION + DATA_AT + 0x1000]) == ("R", "RW")
    assert plan.relro == (REGION + DATA_AT, 0x1800)


def test_relro_rounded_to_a_page_past_the_segment_is_accepted(tmp_path: Path) -> None:
    """ld.lld rounds PT_GNU_RELRO's p_memsz up to a page even where the segment ends earlier."""
    elf = dyn_pie(extra=(Seg(DATA_AT, 0x2000, PF_R, ptype=PT_GNU_RELRO, within=2, align=1),))
    elf.segments[2].memsz = 0x1800
    plan = plan_boot(read_kernel(write(tmp_path, elf.build())), load_layout(LAYOUT))
    assert page_flags(plan.ranges)[REGION + DATA_AT + 0x1000] == "R"


def test_eh_frame_hdr_and_tls_are_placed_with_the_kernel(tmp_path: Path) -> None:
    extra = (Seg(TABLES_AT + 0x3800, 0x40, PF_R, bytes(0x40), ptype=PT_GNU_EH_FRAME, within=1, align=4),
             Seg(DATA_AT + 0x200, 0x30, PF_R, bytes(0x10), ptype=PT_TLS, within=2, align=16))
    k = read_kernel(write(tmp_path, dyn_pie(extra=extra).build()))
    assert k.eh_frame_hdr == (TABLES_AT + 0x3800, 0x40)
    assert (k.tls.vaddr, k.tls.filesz, k.tls.memsz, k.tls.align) == (DATA_AT + 0x200, 0x10, 0x30, 16)
    plan = plan_boot(k, load_layout(LA57), kaslr=True)
    bias = plan.load_bias
    assert plan.eh_frame_hdr == (TABLES_AT + 0x3800 + bias, 0x40)
    assert plan.tls == (DATA_AT + 0x200 + bias, 0x10, 0x30, 16)
    assert bias % SLIDE_ALIGN == 0 and plan.levels == 5


def test_stripped_pie_is_relocated_from_pt_dynamic(tmp_path: Path) -> None:
    """Section headers are optional: PT_DYNAMIC is what a loader reads."""
    path = write(tmp_path, dyn_pie(rela=rela_sym((DATA_AT, R_X86_64_RELATIVE, 0, 8)), sections=False).build())
    assert [(r.vaddr, r.value) for r in read_kernel(path).relocations] == [(DATA_AT, 8)]


def test_sample_kernel_shape(built: dict) -> None:
    """The sample kernel is a PIE with PT_DYNAMIC and PT_GNU_RELRO; its .data.rel.ro is read-only."""
    k = read_kernel(built["kernel"])
    assert k.position_independent and k.relocations and k.relro
    plan = built["plan"]
    start, size = plan.relro
    relro_pages = [flags for va, flags in page_flags(plan.ranges).items() if start <= va < start + size]
    assert relro_pages and set(relro_pages) == {"R"}


def test_wx_union_is_checked_over_every_segment_on_a_page(tmp_path: Path) -> None:
    """R, RX and RW all on one page: each neighbour pair is fine, the union is not."""
    elf = sample()
    elf.segments = [Seg(KBASE, 0x400, PF_R | PF_X, b"\x90"), Seg(KBASE + 0x400, 0x400, PF_R, b"r"),
                    Seg(KBASE + 0x800, 0x800, PF_R | PF_W, b"d")]
    with pytest.raises(HighbootError) as err:
        read_kernel(write(tmp_path, elf.build()))
    assert "share the page at 0xffffffff80000000, which would be writable and executable" in err.value.message


def test_an_implausible_number_of_relocations_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A corrupted table cannot make the build bake millions of relocations into the loader."""
    monkeypatch.setattr("highboot.inputs.relocations.MAX_RELOCATIONS", 100)
    many = relr(DATA_AT, *[(1 << 64) - 1] * 2)  # 1 + 2 * 63 words
    with pytest.raises(HighbootError) as err:
        read_kernel(write(tmp_path, dyn_pie(relr=many).build()))
    assert "more than 100 relocations" in err.value.message and err.value.field == "DT_RELR"
    rel = rela_sym(*[(DATA_AT + 8 * i, R_X86_64_RELATIVE, 0, 0) for i in range(101)])
    with pytest.raises(HighbootError) as err:
        read_kernel(write(tmp_path, dyn_pie(rela=rel).build()))
    assert "more than 100 relocations" in err.value.message and err.value.field == "DT_RELA"


# ------------------------------------------------------------------ found by a red-team read


def phdr_patched(elf_bytes: bytes, index: int, field: str, value: int) -> bytes:
    offsets = {"p_offset": 8, "p_vaddr": 16, "p_filesz": 32, "p_memsz": 40, "p_align": 48}
    out = bytearray(elf_bytes)
    struct.pack_into("<Q", out, 64 + 56 * index + offsets[field], value)
    return bytes(out)


@pytest.mark.parametrize("make, field, message", [
    (lambda: dyn_pie(tags={0x60000011: TABLES_AT, 0x60000012: 16}).build(), "PT_DYNAMIC",
     "DT_ANDROID_RELA: Android's packed relocations are not supported"),
    (lambda: phdr_patched(dyn_pie().build(), 3, "p_vaddr", 0xDEAD0000), "program header 3",
     "the dynamic table (0x00000000dead0000+0x50) is not inside the file data of a PT_LOAD segment"),
    (lambda: phdr_patched(dyn_pie().build(), 3, "p_offset", 0x2100), "program header 3",
     "p_offset 0x2100 is not where p_vaddr 0x0000000000002000 is in the file (0x2000)"),
    (lambda: dyn_pie(rela=rela_sym((DATA_AT, R_X86_64_RELATIVE, 0, 0)), relr=relr(DATA_AT)).build(), "relocations",
     "two relocations write the same bytes, at 0x0000000000006000 and 0x0000000000006000"),
    (lambda: dyn_pie(rela=rela_sym((DATA_AT, R_X86_64_RELATIVE, 0, 0), (DATA_AT + 4, R_X86_64_64, 0, 5))).build(),
     "relocations", "two relocations write the same bytes, at 0x0000000000006000 and 0x0000000000006004"),
    (lambda: dyn_pie(relr=relr(DATA_AT, DATA_AT)).build(), "relocations", "two relocations write the same bytes"),
    (lambda: dyn_pie(rela=rela_sym((DATA_AT, R_X86_64_64, 1, 0)), syms=(Sym("c", 16, shndx=0xFFF2),)).build(),
     "DT_SYMTAB", "refers to 'c' in reserved section 0xfff2 (COMMON?)"),
    (lambda: dyn_pie(extra=(Seg(0xDEA5BEEF000, 0x40, PF_R, ptype=PT_TLS, offset=0, align=8),)).build(),
     "program header 4", "PT_TLS template at 0x00000dea5beef000 is not in the PT_LOAD segments"),
    (lambda: dyn_pie(extra=(Seg(DATA_AT, (1 << 64) - 1, PF_R, ptype=PT_TLS, offset=0, align=8),)).build(),
     "program header 4", "is not a plausible TLS block size"),
    (lambda: phdr_patched(dyn_pie().build(), 0, "p_align", 1 << 31), "program header 0",
     "p_align 0x80000000 is not a plausible alignment (over 1 GiB)"),
])
def test_hostile_dynamic_tables_are_refused(tmp_path: Path, make, field: str, message: str) -> None:
    with pytest.raises(HighbootError) as err:
        read_kernel(write(tmp_path, make()))
    assert message in err.value.message, err.value.format()
    assert err.value.field == field


def test_android_packed_relocation_section_is_refused(tmp_path: Path) -> None:
    elf = dyn_pie()
    elf.sections.append(Sec(".rela.dyn", 0x60000002, b"APS2" + bytes(12), SHF_ALLOC, 1, addr=TABLES_AT + 0x1000))
    with pytest.raises(HighbootError) as err:
        read_kernel(write(tmp_path, elf.build()))
    assert "(SHT_ANDROID_RELA): Android's packed relocations are not supported" in err.value.message


def test_stripped_pie_without_pt_dynamic_cannot_be_moved(tmp_path: Path) -> None:
    """Its relocations, if any, cannot be found: it is not placed as if it had none."""
    elf = dyn_pie(sections=False)
    elf.segments = elf.segments[:3]
    with pytest.raises(HighbootError) as err:
        read_kernel(write(tmp_path, elf.build()))
    assert "without a PT_DYNAMIC to read and without section headers" in err.value.message


def test_glob_dat_and_jump_slot_are_the_symbol_whatever_the_addend(tmp_path: Path) -> None:
    """psABI: GLOB_DAT and JUMP_SLOT are S (glibc and FreeBSD's rtld ignore the addend); R_X86_64_64 is S + A."""
    path = write(tmp_path, dyn_pie(rela=rela_sym((DATA_AT, R_X86_64_GLOB_DAT, 1, 0x10),
                                                 (DATA_AT + 8, R_X86_64_64, 1, 0x10)),
                                   jmprel=rela_sym((DATA_AT + 16, R_X86_64_JUMP_SLOT, 1, 0x20)),
                                   syms=(Sym("f", TEXT_AT + 0x40),)).build())
    assert [r.value for r in read_kernel(path).relocations] == [TEXT_AT + 0x40, TEXT_AT + 0x50, TEXT_AT + 0x40]


def test_odd_section_headers_are_only_cross_checked(tmp_path: Path) -> None:
    """A relocation section with sh_entsize 0 is not a reason to refuse: PT_DYNAMIC is what counts."""
    elf = dyn_pie(rela=rela_sym((DATA_AT, R_X86_64_RELATIVE, 0, 8)))
    elf.sections[0].entsize = 0
    assert [r.value for r in read_kernel(write(tmp_path, elf.build())).relocations] == [8]
