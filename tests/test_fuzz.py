"""Fuzzing the ELF reader, the layout loader and the planner: whatever the input, each either
succeeds or raises highboot's own HighbootError with a message; anything else fails. Plans that
succeed are checked for self-consistency (no W+X page, nothing mapped outside the kernel's regions,
tables as planned). HIGHBOOT_FUZZ_EXAMPLES sets the examples per test (tools/bench: 10,000)."""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from elfgen import (
    DATA_AT,
    KBASE,
    PF_R,
    PF_W,
    PF_X,
    R_X86_64_64,
    R_X86_64_GLOB_DAT,
    R_X86_64_JUMP_SLOT,
    R_X86_64_RELATIVE,
    SHF_ALLOC,
    SHN_ABS,
    SHT_RELA,
    STB_WEAK,
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
    with_rela,
)
from highboot.errors import HighbootError
from highboot.inputs.kernel import KernelImage, read_kernel
from highboot.inputs.layout import ROLES, Layout, load_layout, parse_layout
from highboot.planning.paging import PAGE, PageFlags, SparseMemory, minimum_tables, paging_levels, walk
from highboot.planning.planner import BootPlan, plan_boot

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = int(os.environ.get("HIGHBOOT_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
DEFAULT_LAYOUT = load_layout(ROOT / "templates" / "layouts" / "linux-x86_64.toml")
T = TypeVar("T")


@contextmanager
def scratch() -> Iterator[Path]:
    """A fresh directory per example (pytest's tmp_path is one per test, not per example)."""
    with tempfile.TemporaryDirectory(prefix="highboot-fuzz-") as d:
        yield Path(d)


def refused_or(call: Callable[[], T], what: str) -> T | None:
    """call()'s result, or None when it raised a HighbootError with a message; anything else escapes."""
    try:
        result = call()
    except HighbootError as exc:
        assert exc.message.strip(), f"empty message: {exc!r}"
        event(f"{what}: refused")
        return None
    event(f"{what}: accepted")
    return result


def read_bytes_as_kernel(data: bytes) -> KernelImage | None:
    with scratch() as d:
        path = d / "kernel.elf"
        path.write_bytes(data)
        try:
            kernel = read_kernel(path)
        except HighbootError as exc:
            assert exc.message.strip() and exc.file == str(path), exc.format()  # every refusal names the file
            event("kernel: refused")
            return None
        event("kernel: accepted")
        check_kernel(kernel, data)
        return kernel


def check_kernel(kernel: KernelImage, data: bytes) -> None:
    """What an accepted kernel promises the planner and the loader."""
    assert kernel.size == len(data) and kernel.segments
    for s in kernel.segments:
        assert 0 < s.memsz <= 1 << 32 and s.filesz <= s.memsz and s.offset + s.filesz <= len(data), s
        assert s.end <= 1 << 64, s
        assert not (s.flags & PF_W and s.flags & PF_X), s
    for a, b in zip(kernel.segments, kernel.segments[1:], strict=False):
        assert a.end <= b.vaddr, (a, b)
        if (a.end - 1) >> 12 == b.vaddr >> 12:
            assert not ((a.flags | b.flags) & PF_W and (a.flags | b.flags) & PF_X), (a, b)
    assert any(s.flags & PF_X and s.vaddr <= kernel.entry < s.end for s in kernel.segments)
    for r in kernel.relocations:  # only writable memory is relocated (no text relocations)
        assert any(s.flags & PF_W and s.vaddr <= r.vaddr and r.vaddr + 8 <= s.end for s in kernel.segments), r


def check_plan(plan: BootPlan, kernel: KernelImage, layout: Layout) -> None:
    """What a plan promises, checked from the plan alone (and a walk of its encoded tables)."""
    # It crosses plan.json unchanged.
    assert BootPlan.from_json(json.loads(json.dumps(plan.to_json()))) == plan
    region = layout.require("kernel")
    stack_region = layout.role("stack")
    allowed = [region] + ([stack_region] if stack_region else [])
    assert plan.placement.entry == (kernel.entry + plan.placement.load_bias) % (1 << 64)
    assert plan.placement.load_bias == 0 or kernel.position_independent
    ranges = sorted(plan.tables.mapped, key=lambda r: r.va)
    for r in ranges:
        assert r.flags in ("R", "RW", "RX"), r  # never W+X
        assert r.size > 0 and r.va % PAGE == 0 and r.size % PAGE == 0, r
        assert any(a.start <= r.va and r.va + r.size <= a.end for a in allowed), f"{r} outside the kernel's regions"
    for a, b in zip(ranges, ranges[1:], strict=False):
        assert a.va + a.size <= b.va, f"{a} overlaps {b}"
    assert any(r.flags == "RX" and r.va <= plan.placement.entry < r.va + r.size for r in ranges), "entry not executable"
    assert not any(r.va <= plan.ranges.stack_guard_va < r.va + r.size for r in ranges), "stack guard page mapped"
    assert plan.ranges.stack_top_va - plan.ranges.stack_bottom_va == plan.ranges.stack_size == layout.stack_size
    for seg in plan.rights.segments:
        assert 0 <= seg.block_offset and seg.block_offset + seg.memsz <= plan.placement.image_size
    for offset, _ in plan.placement.relocations + plan.placement.absolute_relocations:
        assert 0 <= offset and offset + 8 <= plan.placement.image_size
    levels = paging_levels(plan.tables.levels)
    assert plan.block.table_count == sum(minimum_tables([(r.va, r.size, PAGE) for r in ranges], levels).values())
    assert plan.block.static_size == plan.block.identity_tables_offset + plan.block.identity_tables_count * PAGE
    # The encoded tables, walked as the CPU would (block at physical 0): exactly the planned pages.
    mem = SparseMemory()
    mem.place(plan.block.tables_offset, plan.block.entries)
    mapped = {m.va: m for m in walk(mem.read_u64, plan.block.tables_offset, levels)}
    for m in mapped.values():
        assert not (m.flags & PageFlags.WRITABLE and not m.flags & PageFlags.NO_EXECUTE), f"W+X page {m.va:#x}"
    planned = {r.va + off for r in ranges if r.block_offset is not None for off in range(0, r.size, PAGE)}
    assert set(mapped) == planned


# ------------------------------------------------------------------ (a) mutations of a valid ELF


def pie_sample() -> Elf:
    return with_rela(sample().segments, [(KBASE + 0x4000, KBASE), (KBASE + 0x4008, KBASE + 0x10)])


def toolchain_pie() -> Elf:
    """A PIE linked at 0 with every relocation kind highboot applies: RELA with symbols, a PLT, RELR."""
    syms = (Sym("f", TEXT_AT + 0x10), Sym("w", 0, shndx=0, bind=STB_WEAK), Sym("a", 0x40, shndx=SHN_ABS))
    return dyn_pie(rela=rela_sym((DATA_AT, R_X86_64_RELATIVE, 0, TEXT_AT), (DATA_AT + 8, R_X86_64_64, 1, 4),
                                 (DATA_AT + 16, R_X86_64_GLOB_DAT, 2, 0), (DATA_AT + 24, R_X86_64_64, 3, 0)),
                   jmprel=rela_sym((DATA_AT + 32, R_X86_64_JUMP_SLOT, 1, 0)),
                   relr=relr(DATA_AT + 0x100, 0b1011, DATA_AT + 0x800), syms=syms,
                   data=struct.pack("<Q", TEXT_AT) * 0x100)


SEEDS = [sample().build(), pie_sample().build(), toolchain_pie().build(),
         Elf([Seg(KBASE, 0x800, PF_R | PF_X, b"\xc3" * 0x800), Seg(KBASE + 0x800, 0x800, PF_R, b"r" * 16),
              Seg(KBASE + 0x2000, 0, PF_R | PF_W), Seg(KBASE + 0x3000, 0x1000, PF_R, ptype=4)], KBASE).build()]


def header_fields(data: bytes) -> list[tuple[int, int]]:
    """(offset, size) of every ELF header, program header and section header field of a seed."""
    fields = [(16, 2), (18, 2), (20, 4), (24, 8), (32, 8), (40, 8), (48, 4), (52, 2), (54, 2), (56, 2), (58, 2),
              (60, 2), (62, 2), (4, 1), (5, 1), (6, 1), (7, 1)]
    phoff, shoff = struct.unpack_from("<QQ", data, 32)
    phnum, shnum = struct.unpack_from("<H", data, 56)[0], struct.unpack_from("<H", data, 60)[0]
    for i in range(phnum):
        fields += [(phoff + 56 * i + o, n) for o, n in ((0, 4), (4, 4), (8, 8), (16, 8), (32, 8), (40, 8), (48, 8))]
    for i in range(shnum):
        fields += [(shoff + 64 * i + o, n) for o, n in ((0, 4), (4, 4), (8, 8), (24, 8), (32, 8), (56, 8))]
    return fields


INTERESTING = [0, 1, 2, 3, 4, 7, 8, 24, 56, 64, 0x1000, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 32, 1 << 47, 1 << 63,
               (1 << 64) - 1, (1 << 64) - 0x1000, KBASE, KBASE + 0x3000]


@st.composite
def mutated_elf(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    fields = header_fields(bytes(data))
    for _ in range(draw(st.integers(0, 4))):
        offset, size = draw(st.sampled_from(fields))
        value = draw(st.sampled_from(INTERESTING) | st.integers(0, (1 << (8 * size)) - 1)) % (1 << (8 * size))
        data[offset:offset + size] = value.to_bytes(size, "little")
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, 0x1FF) | st.integers(0, len(data) - 1))
        data[at % len(data)] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return bytes(data)


@st.composite
def mutated_dynamic(draw: st.DrawFn) -> bytes:
    """toolchain_pie() with words of its dynamic section, symbols and relocation tables changed."""
    data = bytearray(toolchain_pie().build())
    for _ in range(draw(st.integers(1, 6))):
        at = TABLES_AT + 8 * draw(st.integers(0, 0x7FF))  # the read-only segment: tables start at its start
        value = draw(st.sampled_from(INTERESTING + [DATA_AT, DATA_AT + 0x1FF8, TABLES_AT, 1, 36, 37, 7, 23, 22])
                     | st.integers(0, (1 << 64) - 1))
        data[at:at + 8] = value.to_bytes(8, "little")
    return bytes(data)


@FUZZ
@given(data=mutated_dynamic(), kaslr=st.booleans())
def test_reader_survives_mutated_relocation_tables(data: bytes, kaslr: bool) -> None:
    kernel = read_bytes_as_kernel(data)
    if kernel is not None:
        plan = refused_or(lambda: plan_boot(kernel, DEFAULT_LAYOUT, kaslr=kaslr), "plan")
        if plan is not None and not kaslr:
            check_plan(plan, kernel, DEFAULT_LAYOUT)


@FUZZ
@given(data=mutated_elf())
def test_reader_survives_mutated_elfs(data: bytes) -> None:
    kernel = read_bytes_as_kernel(data)
    if kernel is not None:
        plan = refused_or(lambda: plan_boot(kernel, DEFAULT_LAYOUT), "plan")
        if plan is not None:
            check_plan(plan, kernel, DEFAULT_LAYOUT)


# ---------------------------------------------------------- (b) structured random kernels, planned

ADDRESSES = st.one_of(
    st.integers(0, 0x2000).map(lambda p: KBASE + p * PAGE),  # inside the default kernel region
    st.integers(0, 1 << 20).map(lambda b: KBASE + b),  # unaligned
    st.sampled_from([0, 0x400000, 0x00007FFFFFFFF000, 0x0000800000000000, 0xFFFF800000000000, 0xFFFF888000000000,
                     0xFFFFFFFF7FFFF000, 0xFFFFFFFF9FFFF000, 0xFFFFFFFFA0000000, (1 << 64) - PAGE]),
    st.integers(0, (1 << 64) - 1),
)
SIZES = st.one_of(st.integers(0, 8).map(lambda p: p * PAGE), st.integers(0, 0x5000),
                  st.sampled_from([1 << 32, (1 << 32) + 1, 1 << 47, (1 << 64) - 1]))


@st.composite
def random_segment(draw: st.DrawFn) -> Seg:
    memsz = draw(SIZES)
    filesz = draw(st.integers(0, min(memsz, 0x2000)) | st.integers(0, 0x40))  # sometimes filesz > memsz
    flags = draw(st.sampled_from([PF_R | PF_X, PF_R, PF_R | PF_W]) | st.integers(0, 7))
    ptype = draw(st.sampled_from([1, 1, 1, 1, 2, 4, 6, 0x6474E551]))
    align = draw(st.sampled_from([0x1000, 0x1000, 0x1000, 0, 1, 0x200000, 0x10, 0x3000]))
    return Seg(draw(ADDRESSES), memsz, flags, b"\xcc" * filesz, ptype=ptype, align=align)


@st.composite
def contiguous_kernel(draw: st.DrawFn) -> list[Seg]:
    """Page-aligned segments one after another from a random page of the kernel region: the valid case."""
    at = KBASE + draw(st.integers(0, 0x1000)) * PAGE
    segs = []
    for _ in range(draw(st.integers(1, 5))):
        pages = draw(st.integers(1, 6))
        flags = draw(st.sampled_from([PF_R | PF_X, PF_R, PF_R | PF_W]))
        segs.append(Seg(at, pages * PAGE - draw(st.integers(0, PAGE - 1)), flags, b"\xcc" * draw(st.integers(0, 64))))
        at += (pages + draw(st.integers(0, 2))) * PAGE
    return segs


@st.composite
def random_kernel(draw: st.DrawFn) -> Elf:
    segs = draw(contiguous_kernel() | st.lists(random_segment(), min_size=0, max_size=5))
    loads = [s for s in segs if s.ptype == 1 and s.memsz]
    if loads and draw(st.integers(0, 9)):  # mostly inside a segment (maybe not an executable one)
        target = draw(st.sampled_from(loads))
        entry = (target.vaddr + draw(st.integers(0, target.memsz - 1))) % (1 << 64)
    else:
        entry = draw(ADDRESSES)
    elf = Elf(segs, entry)
    if draw(st.integers(0, 9)) == 0:  # now and then, the wrong kind of ELF
        elf.ei_class = draw(st.sampled_from([0, 1, 2, 3]))
        elf.ei_data = draw(st.sampled_from([0, 1, 2, 3]))
        elf.machine = draw(st.sampled_from([62, 3, 40, 183, 243, 0xFFFF]))
        elf.etype = draw(st.sampled_from([0, 1, 2, 3, 4, 0xFE00]))
    if draw(st.integers(0, 4)) == 0:  # a PIE with relocations, mostly R_X86_64_RELATIVE into its segments
        elf.etype = 3
        bases = [s.vaddr for s in loads] or [KBASE]
        targets = st.builds(lambda base, slot: (base + 8 * slot) % (1 << 64), st.sampled_from(bases), st.integers(0, 8))
        relocs = draw(st.lists(st.tuples(targets | ADDRESSES, st.sampled_from([8, 8, 8, 0, 1, 6, 7, 37]),
                                         st.integers(-(1 << 63), (1 << 64) - 1)), max_size=4))
        if draw(st.booleans()):
            elf.sections = [Sec(".rela.dyn", SHT_RELA, rela(*relocs), draw(st.sampled_from([SHF_ALLOC, 0])),
                                draw(st.sampled_from([24, 24, 24, 0, 16])))]
    return elf


@FUZZ
@given(elf=random_kernel(), kaslr=st.booleans())
def test_reader_and_planner_survive_random_kernels(elf: Elf, kaslr: bool) -> None:
    kernel = read_bytes_as_kernel(elf.build())
    if kernel is None:
        return
    plan = refused_or(lambda: plan_boot(kernel, DEFAULT_LAYOUT, kaslr=kaslr), "plan")
    if plan is None:
        return
    if not kaslr:
        check_plan(plan, kernel, DEFAULT_LAYOUT)
        return
    # KASLR plans (tests/test_kaslr.py replays the loader on them): slide 0 allowed, whole 2 MiB
    # windows, every window inside the kernel region at both ends of the slide range.
    region = DEFAULT_LAYOUT.require("kernel")
    assert kernel.position_independent
    assert plan.kaslr.slide_min <= 0 <= plan.kaslr.slide_max and plan.kaslr.slide_align == 2 << 20
    for _, window in plan.kaslr.tables:
        assert window % plan.kaslr.slide_align == 0
        for slide in (plan.kaslr.slide_min, plan.kaslr.slide_max):
            assert region.start <= window + slide and window + slide + plan.kaslr.slide_align <= region.end


# ------------------------------------------------------------------- (c) random layouts, planned

REGION_STARTS = st.one_of(
    st.sampled_from([0xFFFF888000000000, 0xFFFFFFFF80000000, 0xFFFFFFEF00000000, 0xFFFFC90000000000,
                     0xFFFFFF8000000000, 0xFFFFFFFFC0000000, 0xFF11000000000000, 0xFFFF800000000000,
                     0x0000000000400000, 0x00007FFF80000000, 0x0000800000000000, (1 << 64) - (1 << 30)]),
    st.integers(0, (1 << 25) - 1).map(lambda p: 0xFFFF800000000000 + p * (1 << 22)),  # higher half, 4 MiB steps
    st.integers(0, (1 << 64) - 1),
)
SIZE_VALUES = st.one_of(st.sampled_from([1 << 30, 2 << 20, 4096, 512 << 20, 64 << 40, 1 << 39, 0, (1 << 64)]),
                        st.integers(1, 1 << 20).map(lambda p: p * PAGE), st.integers(-(1 << 12), 1 << 50))


def spelled(value: int) -> st.SearchStrategy[Any]:
    """An integer as a layout may spell it: an int, "0x..." with underscores, or a size with a unit."""
    options: list[Any] = [value, hex(value), "0x" + f"{value:_x}"]
    for unit, name in ((1 << 40, " TiB"), (1 << 30, "G"), (1 << 20, " MiB"), (1 << 10, "K")):
        if value > 0 and value % unit == 0:
            options.append(f"{value // unit}{name}")
    return st.sampled_from(options)


JUNK = st.one_of(st.booleans(), st.floats(allow_nan=True), st.text(max_size=6), st.lists(st.integers(0, 9), max_size=2),
                 st.dictionaries(st.sampled_from(["a", "start"]), st.integers(0, 9), max_size=1),
                 st.sampled_from(["12 XB", "0x_", "-1", "2 MiB", "auto", "4.0"]))


def maybe_junk(value: st.SearchStrategy[Any], messy: bool) -> st.SearchStrategy[Any]:
    """value, or in a messy layout now and then a value of the wrong type or form."""
    return st.one_of(value, value, value, value, JUNK) if messy else value


@st.composite
def random_region(draw: st.DrawFn, messy: bool) -> dict[str, Any]:
    roles = list(ROLES) + (["kernal", ""] if messy else [])
    role = draw(st.sampled_from(roles))
    raw: dict[str, Any] = {
        "name": draw(maybe_junk(st.sampled_from(["dm", "k", "efi", "stack", "r1", "r2", "fb"]), messy)),
        "role": draw(maybe_junk(st.just(role), messy)),
        "start": draw(maybe_junk(REGION_STARTS.flatmap(spelled), messy)),
    }
    if draw(st.integers(0, 9)):
        raw["size"] = draw(maybe_junk(SIZE_VALUES.flatmap(spelled), messy))
    else:
        raw["end"] = draw(maybe_junk(REGION_STARTS, messy))
    if draw(st.integers(0, 3)) == 0:
        raw["page_size"] = draw(maybe_junk(st.sampled_from(["4K", "2M", "1G", "auto", "3M"]), messy))
    if draw(st.integers(0, 9)) == 0:
        raw["description"] = draw(maybe_junk(st.text(max_size=8), messy))
    if messy and draw(st.integers(0, 9)) == 0:
        raw[draw(st.sampled_from(["flavour", "Start", "levels", "size", "end"]))] = 1
    if messy:
        for key in draw(st.lists(st.sampled_from(sorted(raw)), max_size=1)):  # a required key goes missing
            del raw[key]
    return raw


SANE_REGIONS = [
    {"name": "dm", "role": "direct_map", "start": 0xFFFF888000000000, "size": "64 TiB"},
    {"name": "k", "role": "kernel", "start": "0xffff_ffff_8000_0000", "size": "512 MiB"},
    {"name": "efi", "role": "efi_runtime", "start": 0xFFFFFFEF00000000, "size": "64 GiB"},
    {"name": "stack", "role": "stack", "start": 0xFFFFFFFFA0000000, "size": "1 MiB"},
]


@st.composite
def random_layout(draw: st.DrawFn) -> dict[str, Any]:
    """A layout dict: a few sane regions (a direct map and a kernel region, mostly) and random ones;
    one layout in three is messy (wrong types, unknown or missing keys)."""
    messy = draw(st.integers(0, 2)) == 0
    sane = [r for r in SANE_REGIONS[:2] if draw(st.integers(0, 5))]
    sane += draw(st.lists(st.sampled_from(SANE_REGIONS[2:]), max_size=2, unique_by=lambda r: r["name"]))
    regions: list[Any] = [dict(r) for r in sane] + draw(st.lists(random_region(messy), max_size=4))
    regions = draw(st.permutations(regions))
    data: dict[str, Any] = {"region": regions}
    if messy and draw(st.integers(0, 9)) == 0:
        data["region"] = draw(JUNK)
    if draw(st.booleans()):
        data["levels"] = draw(maybe_junk(st.sampled_from([4, 5, 5, 3]), messy))
    if draw(st.booleans()):
        data["stack_size"] = draw(maybe_junk(st.sampled_from([4096, 16 << 10, 64 << 10, 1 << 20, 100, 0, 128 << 20])
                                             .flatmap(spelled), messy))
    if draw(st.integers(0, 3)) == 0:
        data["name"] = draw(maybe_junk(st.text(max_size=8), messy))
    if messy and draw(st.integers(0, 9)) == 0:
        data[draw(st.sampled_from(["colour", "Levels"]))] = 1
    return data


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if value == value else "nan"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_text(data: dict[str, Any]) -> str:
    """data as TOML: top-level keys first, a list of tables as [[region]] tables."""
    tables = {k: v for k, v in data.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)}
    lines = [f"{json.dumps(k)} = {toml_value(v)}" for k, v in data.items() if k not in tables]
    for key, items in tables.items():
        for item in items:
            lines.append(f"[[{json.dumps(key)}]]")
            lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


@FUZZ
@given(data=random_layout(), as_text=st.booleans(), offset_pages=st.integers(0, 64) | st.integers(0, 1 << 20))
def test_layout_loader_and_planner_survive_random_layouts(data: dict[str, Any], as_text: bool,
                                                          offset_pages: int) -> None:
    with scratch() as d:
        path = d / "layout.toml"
        if as_text:
            text = toml_text(data)
            path.write_text(text, encoding="utf-8")
            layout = refused_or(lambda: load_layout(path), "layout")
        else:
            layout = refused_or(lambda: parse_layout(data, str(path)), "layout")
        if layout is None:
            return
        assert layout.levels in (4, 5) and layout.require("kernel") and layout.require("direct_map")
        # A kernel linked in the layout's kernel region (or past its end, if the region is small).
        region = layout.require("kernel")
        assume(region.start + offset_pages * PAGE + 0xA000 <= 1 << 64)
        kernel_path = d / "kernel.elf"
        kernel_path.write_bytes(sample(base=region.start + offset_pages * PAGE).build())
        kernel = read_kernel(kernel_path)
        plan = refused_or(lambda: plan_boot(kernel, layout), "plan")
        if plan is not None:
            check_plan(plan, kernel, layout)
