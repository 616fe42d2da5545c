"""5-level paging (LA57): the Linux 5-level layout boots with a 57-bit address space the kernel's
own walk proves, from a firmware in 4-level paging (the loader changes the paging mode at the handoff) and from
one in 5-level paging; a 4-level kernel boots from a 5-level firmware; a CPU without LA57 gets a
clear refusal. QEMU's TCG emulates LA57 (`-cpu max`, or any CPU model with `+la57`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_boot import check_boot
from test_matrix import config
from testkit.bootcheck import parse_report

from highboot.booting import qemu

DIRECT_MAP_5 = 0xFF11000000000000  # mm.rst, 5-level paging: page_offset_base
MODE_CHANGE_4_TO_5 = "highboot: the firmware runs 4-level paging; the kernel gets 5-level paging"
MODE_CHANGE_5_TO_4 = "highboot: the firmware runs 5-level paging; the kernel gets 4-level paging"
FIRMWARE_NOW_5 = "highboot: test build: the firmware now runs 5-level paging"


def levels(result: qemu.BootResult) -> int:
    return parse_report(result.serial).number("levels")


@pytest.mark.parametrize("cpu, memory, expect_1g", [("max", "256M", True), ("max", "12G", True),
                                                    ("qemu64,+la57", "1G", False)])
def test_five_level_kernel_from_four_level_firmware(built: dict, cpu: str, memory: str, expect_1g: bool) -> None:
    esp, plan = config(built, "la57")
    assert plan.tables.levels == 5 and len(plan.tables.shifts) == 5
    result = qemu.boot(esp, cpu=cpu, memory=memory)
    check_boot(result, plan, expect_1g=expect_1g)
    assert MODE_CHANGE_4_TO_5 in result.serial
    assert levels(result) == 5
    # The direct map sits where only 57-bit addresses reach (bits 56..48 not all ones).
    report = parse_report(result.serial)
    assert report.number("direct_map_base") == DIRECT_MAP_5
    assert any(m.va == DIRECT_MAP_5 for m in report.mappings)


def test_four_level_kernel_from_five_level_firmware(built: dict) -> None:
    esp, plan = config(built, "fw5-4level")
    result = qemu.boot(esp, cpu="max", memory="1G")
    check_boot(result, plan, expect_1g=True)
    assert FIRMWARE_NOW_5 in result.serial and MODE_CHANGE_5_TO_4 in result.serial
    assert levels(result) == 4


def test_five_level_kernel_from_five_level_firmware(built: dict) -> None:
    esp, plan = config(built, "fw5-la57")
    result = qemu.boot(esp, cpu="max", memory="1G")
    check_boot(result, plan, expect_1g=True)
    assert FIRMWARE_NOW_5 in result.serial
    assert "highboot: the firmware runs" not in result.serial  # no mode change needed
    assert levels(result) == 5


def refused_without_la57(esp: Path, message: str) -> str:
    """The serial output of a boot on a CPU without LA57 that the loader refuses with `message`,
    EFI_UNSUPPORTED, before any file is read."""
    result = qemu.boot(esp, cpu="qemu64", memory="256M", stop_on="the kernel was not started", timeout=120)
    assert f"highboot: error: {message}; this CPU has no LA57 (CPUID.7.0:ECX bit 16)" in result.serial, \
        result.serial[-2000:]
    assert "the kernel was not started (EFI status 0x8000000000000003)" in result.serial  # EFI_UNSUPPORTED
    assert "highboot: verifying with" not in result.serial  # refused before any file is read
    return result.serial


def test_five_level_layout_on_a_cpu_without_la57_is_refused(built: dict) -> None:
    esp, _ = config(built, "la57")
    serial = refused_without_la57(esp, 'layout "linux-x86_64-la57" asks for 5-level paging (57-bit addresses)')
    assert "HIGHBOOT-KERNEL" not in serial
