"""Real boots of the default build under QEMU + OVMF (TCG): the kernel checks what it was handed,
walks its page tables from CR3, and the test compares that walk with the plan's prediction."""

from __future__ import annotations

import pytest
from testkit.bootcheck import (
    DIRECT_MAPPED_TYPES,
    MEMORY_TYPE,
    diff,
    expected_direct_map_size,
    kernel_slide,
    minimum_table_pages,
    parse_report,
    passed,
    predicted_mappings,
)
from testkit.report import PASS_LINE, PASS_STATUS

from highboot.booting import qemu
from highboot.planning.paging import PageFlags
from highboot.planning.planner import BootPlan

GIB = 1 << 30


def check_boot(result: qemu.BootResult, plan: BootPlan, *, expect_1g: bool) -> None:
    tail = "\n".join(result.serial.splitlines()[-60:])
    assert result.status is not None, f"QEMU timed out after {result.seconds:.0f} s:\n{tail}"
    assert result.status == PASS_STATUS, f"kernel reported failure (exit {result.status}):\n{tail}"
    assert PASS_LINE in result.serial
    report = parse_report(result.serial)
    # The loader chose the page size from CPUID and sized the direct map from the memory map.
    assert report.number("direct_map_page") == (GIB if expect_1g else 2 << 20)
    dmap_size = report.number("direct_map_size")
    assert dmap_size == expected_direct_map_size(report)
    # All RAM, ACPI tables, runtime regions and the framebuffer are inside the direct map.
    for base, length, kind in report.memory:
        if kind in DIRECT_MAPPED_TYPES:
            assert base + length <= dmap_size, (hex(base), hex(length), kind)
    if report.number("framebuffer"):
        assert report.number("framebuffer") + report.number("fb_size") <= dmap_size
    predicted, observed = predicted_mappings(plan, report), report.mappings
    assert observed == predicted, "plan and CPU disagree:\n" + diff(predicted, observed)
    # Nothing in the lower half: the trampoline's identity page is gone.
    assert all(m.va >= 1 << 63 for m in observed)
    assert report.number("tables") == minimum_table_pages(plan, report)
    stack_slide = kernel_slide(report) if plan.stack.slides else 0
    assert report.number("entry_rsp") == plan.ranges.stack_top_va + stack_slide - 8
    check_runtime_services(report, plan)
    block, size = report.number("block"), report.number("block_size")
    kernel = MEMORY_TYPE["KERNEL"]
    assert any(b <= block and block + size <= b + n for b, n, t in report.memory if t == kernel)


# The digest engine each CPU model gets: qemu64 has SSE2 only; max has AVX2 (its state switched on
# by the loader: OVMF leaves it off) and no SHA-NI under TCG.
ENGINE = {"qemu64": "SSE2 SHA-256, 4 blocks at once", "max": "AVX2 SHA-256, 8 blocks at once"}


@pytest.mark.parametrize("cpu, expect_1g", [("qemu64", False), ("max", True)])
def test_boot_default_build(built: dict, cpu: str, expect_1g: bool) -> None:
    result = qemu.boot(built["esp"], cpu=cpu, memory="256M")
    check_boot(result, built["plan"], expect_1g=expect_1g)
    # The kernel was verified by that engine (a wrong digest would have stopped the boot).
    assert f"highboot: verifying with {ENGINE[cpu]}" in result.serial


def test_direct_map_exec_maps_the_direct_map_executable(built: dict) -> None:
    # The kernel's own walk sees the direct map RWX (no NX bit) where the default build keeps it RW
    # and NX; everything else as planned (check_boot compares every mapping with the plan's).
    d = built["dir"] / "test" / "direct-map-exec"
    plan = BootPlan.from_json(d / "plan.json")
    assert plan.options.direct_map_exec
    result = qemu.boot(d / "esp", cpu="max", memory="256M")
    check_boot(result, plan, expect_1g=True)
    direct = [m for m in parse_report(result.serial).mappings if m.pa == 0 and m.va >= 1 << 63]
    assert direct and direct[0].flags & PageFlags.WRITABLE and not direct[0].flags & PageFlags.NO_EXECUTE


def test_boot_reports_loader_facts(built: dict) -> None:
    result = qemu.boot(built["esp"], cpu="max", memory="512M")
    assert passed(result), result.serial[-2000:]
    report = parse_report(result.serial)
    assert report.facts["cmdline"] == built["plan"].options.cmdline
    assert report.number("rsdp") != 0 and report.number("rsdp_revision") == 2
    assert report.number("framebuffer") != 0
    # The pixel layout as masks, for the format the firmware reported (QEMU's GOP: BGRX8, 2).
    masks = [report.number(f"fb_{c}_mask") for c in ("red", "green", "blue", "reserved")]
    expected = {1: [0xFF, 0xFF00, 0xFF0000, 0xFF000000], 2: [0xFF0000, 0xFF00, 0xFF, 0xFF000000]}
    assert masks == expected[report.number("format")], masks
    assert 0 < report.number("tsc_loader_entry") < report.number("tsc_handoff")
    assert "highboot: loading \\highboot\\kernel.elf" in result.serial


def check_runtime_services(report, plan: BootPlan) -> None:
    """Runtime ranges live in the EFI region, W^X, cover all runtime memory; GetTime worked."""
    if plan.ranges.efi_region is None:
        assert report.facts.get("efi") == "none"
        assert not report.efi
        return
    base, size = plan.ranges.efi_region
    assert report.efi, "no EFI runtime mappings reported"
    for m in report.efi:
        assert base <= m.va and m.va + m.size <= base + size, m.text()
        assert not (m.flags & 2 and not m.flags & (1 << 63)), f"W+X runtime mapping {m.text()}"
    covered = sorted((m.pa, m.pa + m.size) for m in report.efi)
    for start, length, kind in report.memory:
        if kind == MEMORY_TYPE["EFI_RUNTIME"]:
            pos = start
            for lo, hi in covered:
                if lo <= pos < hi:
                    pos = hi
            assert pos >= start + length, f"runtime memory {start:#x}+{length:#x} is not mapped"
    assert 2020 <= int(report.facts["efi_year"]) <= 2100, report.facts.get("efi_time")
