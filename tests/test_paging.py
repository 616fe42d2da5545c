"""The planner's tables, checked by the reference walker: every planned page maps to its planned
frame with its planned rights, nothing else is mapped, nothing is W+X, and the number of tables is
the minimum for the plan (computed independently, from the ranges alone)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from testkit.bootcheck import FLAGS

from elfgen import PF_R, PF_W, PF_X, Elf, Seg
from highboot.inputs.kernel import read_kernel
from highboot.inputs.layout import parse_layout
from highboot.planning.paging import (
    LEVELS_4,
    PAGE,
    PageFlags,
    SparseMemory,
    TableBuilder,
    coalesce,
    minimum_tables,
    paging_levels,
    translate,
    walk,
)
from highboot.planning.planner import plan_boot

KREGION = 0xFFFFFFFF80000000


def layout(kernel_start: int = KREGION, kernel_size: int = 512 << 20, stack: int = 64 << 10,
           dmap: int = 0xFFFF888000000000, levels: int = 4):
    return parse_layout({"stack_size": stack, "levels": levels, "region": [
        {"name": "dm", "role": "direct_map", "start": dmap, "size": "1 TiB"},
        {"name": "k", "role": "kernel", "start": kernel_start, "size": kernel_size}]}, "test.toml")


def test_builder_and_walker_agree_on_huge_pages() -> None:
    tb = TableBuilder(LEVELS_4)
    tb.map(0xFFFF888000000000, 0, 4 << 30, int(PageFlags.PRESENT | PageFlags.WRITABLE | PageFlags.NO_EXECUTE),
           page_size=1 << 30)
    tb.map(0xFFFF888100000000, 4 << 30, 4 << 20, int(PageFlags.PRESENT), page_size=2 << 20)
    mem = SparseMemory()
    mem.place(0x100000, tb.encode(lambda n: n * PAGE), add=0x100000)
    t = translate(mem.read_u64, 0x100000, 0xFFFF888000000000 + 0x12345678)
    assert t is not None and t.pa == 0x12345678 and t.page_size == 1 << 30
    assert t.flags & PageFlags.NO_EXECUTE and t.flags & PageFlags.WRITABLE
    t2 = translate(mem.read_u64, 0x100000, 0xFFFF888100000000 + 0x200123)
    assert t2 is not None and t2.pa == (4 << 30) + 0x200123 and t2.page_size == 2 << 20
    assert not t2.flags & PageFlags.WRITABLE and not t2.flags & PageFlags.NO_EXECUTE
    assert translate(mem.read_u64, 0x100000, 0xFFFF888100400000) is None
    ranges = coalesce(walk(mem.read_u64, 0x100000))
    assert [(m.va, m.pa, m.size) for m in ranges] == [
        (0xFFFF888000000000, 0, 4 << 30), (0xFFFF888100000000, 4 << 30, 4 << 20)]
    # PML4, one PDPT, PD for the 2 MiB pages.
    assert len(tb.tables) == 3 == sum(minimum_tables([(0xFFFF888000000000, 4 << 30, 1 << 30),
                                                      (0xFFFF888100000000, 4 << 20, 2 << 20)]).values())


def test_minimum_tables_counts_windows() -> None:
    # 4 KiB pages spanning a 2 MiB boundary need two PTs, one PD, one PDPT, one PML4.
    assert minimum_tables([(0xFFFFFFFF801FF000, 0x2000, PAGE)]) == {"PML4": 1, "PDPT": 1, "PD": 1, "PT": 2}
    # Two ranges under different PML4 entries.
    assert minimum_tables([(0xFFFF888000000000, 1 << 30, 1 << 30), (KREGION, PAGE, PAGE)]) == {
        "PML4": 1, "PDPT": 2, "PD": 1, "PT": 1}


segment_sizes = st.lists(st.tuples(st.integers(1, 40), st.sampled_from(["RX", "R", "RW"]), st.integers(0, 3)),
                         min_size=1, max_size=6)


@pytest.mark.parametrize("levels, dmap", [(4, 0xFFFF888000000000), (5, 0xFF11000000000000)])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(segs=segment_sizes, offset_pages=st.integers(0, 1200), stack_pages=st.integers(1, 40),
       block=st.integers(1, 1 << 20).map(lambda p: p * PAGE))
def test_plan_tables_are_exact(tmp_path: Path, levels: int, dmap: int, segs, offset_pages: int, stack_pages: int,
                               block: int) -> None:
    perms = {"RX": PF_R | PF_X, "R": PF_R, "RW": PF_R | PF_W}
    at = KREGION + offset_pages * PAGE
    elf_segs = []
    for pages, kind, gap in segs:
        elf_segs.append(Seg(at, pages * PAGE, perms[kind], b"\xcc" * 16))
        at += (pages + gap) * PAGE
    if not any(kind == "RX" for _, kind, _ in segs):
        elf_segs.append(Seg(at, PAGE, PF_R | PF_X, b"\xc3"))
    entry = next(s.vaddr for s in elf_segs if s.flags & PF_X)
    path = tmp_path / "k.elf"
    path.write_bytes(Elf(elf_segs, entry).build())
    plan = plan_boot(read_kernel(path), layout(stack=stack_pages * PAGE, dmap=dmap, levels=levels))
    lv = paging_levels(levels)
    assert plan.tables.levels == levels and plan.block.identity_tables_count == levels - 1

    mem = SparseMemory()
    root = block + plan.block.tables_offset
    mem.place(root, plan.block.entries, add=block)

    expected: dict[int, tuple[int, int]] = {}
    for r in plan.tables.mapped:
        if r.block_offset is None:
            continue  # the trampoline's frame is known only at boot; its PTE must still be empty
        for off in range(0, r.size, PAGE):
            expected[r.va + off] = (block + r.block_offset + off, FLAGS[r.flags])
    for va, (pa, flags) in expected.items():
        t = translate(mem.read_u64, root, va, lv)
        assert t is not None and (t.pa, t.flags, t.page_size) == (pa, flags, PAGE), hex(va)
    seen = {m.va: (m.pa, m.flags) for m in walk(mem.read_u64, root, lv)}
    assert seen == expected  # nothing unplanned is mapped
    assert not any(f & PageFlags.WRITABLE and not f & PageFlags.NO_EXECUTE for _, f in seen.values())
    assert translate(mem.read_u64, root, plan.ranges.stack_guard_va, lv) is None
    assert translate(mem.read_u64, root, plan.ranges.trampoline_va, lv) is None
    needed = minimum_tables([(r.va, r.size, PAGE) for r in plan.tables.mapped], lv)
    assert plan.block.table_count == sum(needed.values())
    # The trampoline PTE the loader fills lies in the tables area, in a planned table.
    assert 0 <= plan.block.trampoline_slot < plan.block.table_count * 512
    # Every entry is block-relative: inside the static part of the block.
    for _, value in plan.block.entries:
        assert (value & 0x000FFFFFFFFFF000) < plan.block.static_size
