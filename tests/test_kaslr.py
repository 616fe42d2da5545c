"""KASLR: the plan is made for slide 0 and the loader hangs the kernel region's last-level tables
at the slid windows. Python replays the loader's linking for every slide the plan allows and walks
the result; QEMU boots with different seeds land at different addresses and pass the self-walk;
the three sources of randomness (EFI_RNG_PROTOCOL, RDRAND, the TSC) are each used and reported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_boot import check_boot
from test_matrix import config
from testkit.bootcheck import FLAGS, parse_report

from elfgen import KBASE, PF_R, PF_W, PF_X, Seg, sample, with_rela
from highboot.booting import qemu
from highboot.errors import HighbootError
from highboot.inputs.kernel import read_kernel
from highboot.inputs.layout import parse_layout
from highboot.planning.paging import (
    ADDR_MASK,
    ENTRIES,
    PAGE,
    TABLE_ENTRY_FLAGS,
    SparseMemory,
    minimum_tables,
    paging_levels,
    walk,
)
from highboot.planning.planner import SLIDE_ALIGN, BootPlan, plan_boot

ROOT = Path(__file__).resolve().parents[1]
ET_DYN = 3
FLAG_KASLR, FLAG_RNG, FLAG_RDRAND, FLAG_WEAK = 1 << 5, 1 << 6, 1 << 7, 1 << 8


def layout(levels: int = 4, kernel_size: str = "512 MiB", stack_region: bool = False):
    dmap = 0xFFFF888000000000 if levels == 4 else 0xFF11000000000000
    regions = [{"name": "dm", "role": "direct_map", "start": dmap, "size": "64 TiB"},
               {"name": "k", "role": "kernel", "start": KBASE, "size": kernel_size}]
    if stack_region:
        regions.append({"name": "s", "role": "stack", "start": 0xFFFFFFFFC0000000, "size": "1 MiB"})
    return parse_layout({"levels": levels, "region": regions}, "test.toml")


def pie(tmp_path: Path, segs: list[Seg], relocs: list[tuple[int, int]]) -> Path:
    path = tmp_path / "pie.elf"
    path.write_bytes(with_rela(segs, relocs).build())
    return path


def link(plan, block: int, slide: int, trampoline: int) -> tuple[SparseMemory, int, int]:
    """What the loader does (main.rs, paging.rs), replayed: relocate the planned tables, fill the
    trampoline PTE, hang each KASLR table at its slid window. Returns memory, root, tables used."""
    levels = paging_levels(plan.tables.levels)
    mem = SparseMemory()
    root = block + plan.block.tables_offset
    mem.place(root, plan.block.entries, add=block)
    mem.write(root + plan.block.trampoline_slot * 8, trampoline | 1)
    pool = [block + (1 << 30)]  # pool pages, anywhere not in the block
    used = plan.block.table_count

    def entry(va: int, depth: int) -> int:
        nonlocal used
        table = root
        for d in range(depth):
            e = mem.read_u64(table + levels[d].index(va) * 8)
            if not e & 1:
                e = pool[0] | int(TABLE_ENTRY_FLAGS)
                pool[0] += PAGE
                used += 1
                mem.write(table + levels[d].index(va) * 8, e)
            table = e & ADDR_MASK
        return table + levels[depth].index(va) * 8

    for number, window in plan.kaslr.tables:
        mem.write(entry(window + slide, len(levels) - 2), (root + number * PAGE) | int(TABLE_ENTRY_FLAGS))
    return mem, root, used


@pytest.mark.parametrize("levels, stack_region", [(4, False), (5, False), (4, True)])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text_pages=st.integers(1, 700), data_pages=st.integers(1, 300), gap=st.integers(0, 600),
       pick=st.floats(0, 1), block=st.integers(1, 1 << 20).map(lambda p: p * PAGE))
def test_every_slide_maps_exactly_the_slid_plan(tmp_path: Path, levels: int, stack_region: bool, text_pages: int,
                                                data_pages: int, gap: int, pick: float, block: int) -> None:
    text = KBASE + gap * PAGE
    data = text + (text_pages + 3) * PAGE
    path = pie(tmp_path, [Seg(text, text_pages * PAGE, PF_R | PF_X, b"\x90"),
                          Seg(data, data_pages * PAGE, PF_R | PF_W, b"\0" * 16)], [(data, text)])
    plan = plan_boot(read_kernel(path), layout(levels, stack_region=stack_region), kaslr=True)
    kaslr = plan.kaslr
    assert kaslr.enabled and kaslr.slide_align == SLIDE_ALIGN
    assert plan.placement.relocations == ((data - plan.placement.image_va, text),)
    assert kaslr.slide_min <= 0 <= kaslr.slide_max
    assert kaslr.slide_min % SLIDE_ALIGN == kaslr.slide_max % SLIDE_ALIGN == 0
    # The slide range is every 2 MiB step that keeps each window, and the AP stacks' window after
    # the trampoline alias (it slides too), inside the 512 MiB region.
    assert _contiguous(plan)
    windows = [w for _, w in plan.kaslr.tables]
    ap_end = plan.ranges.ap_stacks_va + (plan.ranges.max_cpus - 1) * (plan.ranges.ap_stack_size + PAGE)
    top = max(windows[-1] + SLIDE_ALIGN, -(-ap_end // SLIDE_ALIGN) * SLIDE_ALIGN)
    assert plan.kaslr.slides == ((512 << 20) - (top - windows[0])) // SLIDE_ALIGN + 1
    slide = plan.kaslr.slide_min + round(pick * (plan.kaslr.slides - 1)) * SLIDE_ALIGN
    trampoline = 0x7000
    mem, root, used = link(plan, block, slide, trampoline)

    expected = {}
    for r in plan.tables.mapped:
        moves = r.name != "kernel stack" or plan.stack.slides
        va = r.va + (slide if moves else 0)
        pa = trampoline if r.block_offset is None else block + r.block_offset
        for off in range(0, r.size, PAGE):
            expected[va + off] = (pa + off, FLAGS[r.flags])
    seen = {m.va: (m.pa, m.flags) for m in walk(mem.read_u64, root, paging_levels(levels))}
    assert seen == expected
    # Still the minimum: the tables above the moved ones are made only where needed.
    slid = [(va, size, PAGE) for va, size in _ranges(expected)]
    assert used == sum(minimum_tables(slid, paging_levels(levels)).values())


def _contiguous(plan) -> bool:
    windows = [w for _, w in plan.kaslr.tables]
    return windows == list(range(windows[0], windows[-1] + SLIDE_ALIGN, SLIDE_ALIGN))


def _ranges(pages: dict[int, object]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for va in sorted(pages):
        if out and out[-1][0] + out[-1][1] == va:
            out[-1] = (out[-1][0], out[-1][1] + PAGE)
        else:
            out.append((va, PAGE))
    return out


def test_kaslr_tables_are_whole_last_level_tables(tmp_path: Path) -> None:
    path = pie(tmp_path, [Seg(KBASE, 0x3000, PF_R | PF_X, b"\x90"), Seg(KBASE + 0x3000, PAGE, PF_R | PF_W)], [])
    plan = plan_boot(read_kernel(path), layout(), kaslr=True, smp=False)  # no AP stacks' window to keep
    fixed = plan.block.table_count - len(plan.kaslr.tables)
    assert fixed == 1  # only the root: everything the kernel region needs above its tables is made at boot
    for number, window in plan.kaslr.tables:
        assert window % SLIDE_ALIGN == 0 and fixed <= number < plan.block.table_count
    assert all(word // ENTRIES >= fixed for word, _ in plan.block.entries)
    assert plan.kaslr.slide_min == 0 and plan.kaslr.slide_max == (512 << 20) - SLIDE_ALIGN


def test_kaslr_refuses_a_kernel_linked_for_one_address(tmp_path: Path) -> None:
    path = tmp_path / "exec.elf"
    path.write_bytes(sample().build())
    with pytest.raises(HighbootError) as err:
        plan_boot(read_kernel(path), layout(), kaslr=True)
    assert err.value.file == str(path) and err.value.field == "e_type"
    assert "KASLR needs a position-independent kernel" in err.value.message


def test_kaslr_needs_a_2mib_aligned_kernel_region(tmp_path: Path) -> None:
    path = pie(tmp_path, [Seg(KBASE, PAGE, PF_R | PF_X, b"\x90")], [])
    with pytest.raises(HighbootError) as err:
        plan_boot(read_kernel(path), layout(kernel_size="3 MiB"), kaslr=True)
    assert "must start and end on a 2 MiB boundary" in err.value.message and err.value.field == "region 'k'"


def test_map_prints_the_entropy(built: dict) -> None:
    d = built["dir"] / "test" / "kaslr"
    proc = subprocess.run([sys.executable, "-m", "SCons", "-Q", "map", f"BUILD_DIR={d}", "KASLR=1",
                           f"CARGO_DIR={built['dir'] / 'cargo'}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    plan = BootPlan.from_json(d / "plan.json")
    slides = plan.kaslr.slides
    assert f"kernel: {slides} slides of 2 MiB" in proc.stdout, proc.stdout[-3000:]
    assert "direct map:" in proc.stdout and "bits" in proc.stdout


# ------------------------------------------------------------------------------------ boots


def boot(built: dict, name: str, seed: int, *, cpu: str = "max",
         extra: list[str] | None = None) -> tuple[dict, dict, str]:
    esp, plan = config(built, name)
    result = qemu.boot(esp, cpu=cpu, memory="1G", extra=["-seed", str(seed), *(extra or [])])
    check_boot(result, plan, expect_1g="max" in cpu)
    report = parse_report(result.serial)
    return plan, report.facts, result.serial


def where(facts: dict) -> tuple[int, int]:
    return int(facts["kernel_slide"], 0), int(facts["direct_map_base"], 0)


@pytest.mark.parametrize("name", ["kaslr", "kaslr-la57"])
def test_different_seeds_land_at_different_addresses(built: dict, name: str) -> None:
    _, a, serial_a = boot(built, name, 1)
    _, b, _ = boot(built, name, 2)
    assert where(a) != where(b), (where(a), where(b))
    flags = int(a["flags"], 0)
    assert flags & FLAG_KASLR and flags & FLAG_RDRAND  # -cpu max has RDRAND; no RNG device
    assert "highboot: KASLR from RDRAND" in serial_a
    # Where the kernel ran is where the boot info says (the kernel checks it too).
    for facts in (a, b):
        assert int(facts["running_at"], 0) == (int(facts["link_base"], 0) + int(facts["kernel_slide"], 0)) % (1 << 64)


def test_the_same_seed_lands_at_the_same_address(built: dict) -> None:
    """QEMU's -seed makes RDRAND deterministic: the slide comes from it, not from elsewhere."""
    _, a, _ = boot(built, "kaslr", 7)
    _, b, _ = boot(built, "kaslr", 7)
    assert where(a) == where(b)


def test_rng_protocol_is_preferred(built: dict) -> None:
    _, facts, serial = boot(built, "kaslr", 3, extra=["-device", "virtio-rng-pci"])
    assert int(facts["flags"], 0) & FLAG_RNG
    assert "highboot: KASLR from EFI_RNG_PROTOCOL" in serial


def test_without_rng_or_rdrand_the_tsc_is_used_and_called_weak(built: dict) -> None:
    _, facts, serial = boot(built, "kaslr", 4, cpu="qemu64")
    assert int(facts["flags"], 0) & FLAG_WEAK
    assert "highboot: KASLR from the TSC (weak: no EFI_RNG_PROTOCOL, no RDRAND)" in serial


def test_c_pie_kernel_with_kaslr(built: dict) -> None:
    a = boot(built, "kaslr-c-pie", 1)[1]
    b = boot(built, "kaslr-c-pie", 2)[1]
    assert int(a["kernel_slide"], 0) != int(b["kernel_slide"], 0) or a["direct_map_base"] != b["direct_map_base"]


def test_without_kaslr_nothing_moves(built: dict) -> None:
    result = qemu.boot(built["esp"], cpu="max", memory="256M", extra=["-seed", "1"])
    check_boot(result, built["plan"], expect_1g=True)
    facts = parse_report(result.serial).facts
    assert int(facts["kernel_slide"], 0) == 0 and int(facts["flags"], 0) & FLAG_KASLR == 0
    assert int(facts["direct_map_base"], 0) == built["plan"].ranges.direct_map_base
