"""The boot matrix: CPUs with and without 1 GiB pages, RAM from 128 MiB to 12 GiB (4 GiB and up
cross the PCI hole), the default and minimal layouts and one with another direct-map base and
link address. Every boot's page-table walk must equal the plan's prediction."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_boot import check_boot

from highboot.booting import qemu
from highboot.planning.planner import BootPlan


def config(build: dict, name: str) -> tuple[Path, BootPlan]:
    d = build["dir"] / "test" / name
    if not (d / "esp" / "EFI" / "BOOT" / "BOOTX64.EFI").exists():
        pytest.fail(f"test configuration {name} was not built: run the tests with `scons test`")
    return d / "esp", BootPlan.from_json(d / "plan.json")


CASES = [(layout, cpu, mem) for layout, mems in (("default", ("128M", "1G", "4G", "12G")),
                                                 ("minimal", ("1G", "4G")),
                                                 ("alt-dmap", ("1G", "12G")))
         for cpu in ("qemu64", "max") for mem in mems]


@pytest.mark.parametrize("layout, cpu, memory", CASES, ids=[f"{name}-{c}-{m}" for name, c, m in CASES])
def test_matrix(built: dict, layout: str, cpu: str, memory: str) -> None:
    esp, plan = (built["esp"], built["plan"]) if layout == "default" else config(built, layout)
    result = qemu.boot(esp, cpu=cpu, memory=memory)
    check_boot(result, plan, expect_1g=cpu == "max")


def test_alt_layout_is_really_different(built: dict) -> None:
    _, plan = config(built, "alt-dmap")
    assert plan.ranges.direct_map_base == 0xFFFFC00040000000
    assert plan.placement.image_va == 0xFFFFFFFF81000000
    assert plan.ranges.direct_map_base != built["plan"].ranges.direct_map_base


def test_injected_stale_map_key_is_retried(built: dict) -> None:
    esp, plan = config(built, "fault-stale-key")
    result = qemu.boot(esp, cpu="max", memory="256M")
    # Nothing is printed between ExitBootServices attempts (only GetMemoryMap may be called); the
    # retry is reported once boot services are gone, on COM1.
    assert "ExitBootServices refused 1 stale memory-map key(s); retried with a fresh map" in result.serial
    assert result.serial.index("starting the kernel") < result.serial.index("refused 1 stale memory-map key")
    check_boot(result, plan, expect_1g=True)


def test_injected_out_of_memory_is_reported(built: dict) -> None:
    esp, _ = config(built, "fault-no-memory")
    result = qemu.boot(esp, cpu="max", memory="256M", stop_on="BdsDxe: failed to start", timeout=120)
    assert "highboot: error: not enough memory for the kernel block" in result.serial, result.serial[-2000:]
    assert "the kernel was not started (EFI status 0x8000000000000009)" in result.serial
    assert "HIGHBOOT-KERNEL" not in result.serial
    # Back in the firmware's boot manager with everything the loader allocated freed (the kernel
    # file's buffer, the modules it read, the memory map): the same LoaderCode/LoaderData pages
    # as at entry.
    assert re.search(r"BdsDxe: failed to start Boot\d+ .*: Out of Resources", result.serial), result.serial[-2000:]
    pages = re.search(r"loader pages at entry (\d+), after the failure (\d+)", result.serial)
    assert pages and int(pages[1]) > 0 and pages[1] == pages[2], result.serial[-2000:]
    # The display mode FB_MODE set (QEMU's GOP starts elsewhere) is put back, and SetMode said yes.
    chosen = re.search(r"highboot: framebuffer 800x600 \(mode (\d+) of \d+, requested 800x600\)", result.serial)
    back = re.search(r"highboot: the display is back in mode (\d+) \(0x0\)", result.serial)
    assert chosen and back and chosen[1] != back[1], result.serial[-2000:]
    assert result.serial.index(chosen[0]) < result.serial.index(back[0]) < result.serial.index("the kernel was not")
    # SetMode clears the screen: the reason is printed again after it.
    error = "highboot: error: not enough memory for the kernel block"
    assert result.serial.count(error) == 2 and result.serial.rindex(error) > result.serial.index(back[0])


def test_injected_panic_returns_to_the_boot_manager(built: dict) -> None:
    """A loader panic before ExitBootServices is an EFI error for the boot manager, not a halt."""
    esp, _ = config(built, "fault-panic")
    result = qemu.boot(esp, cpu="max", memory="256M", stop_on="BdsDxe: failed to start", timeout=120)
    assert "highboot: loader bug: panicked at" in result.serial and "injected panic" in result.serial, \
        result.serial[-2000:]
    assert "the kernel was not started (EFI status 0x8000000000000015)" in result.serial
    assert re.search(r"BdsDxe: failed to start Boot\d+ .*: Aborted", result.serial), result.serial[-2000:]


@pytest.mark.parametrize("name, cpu", [("c-kernel", "qemu64"), ("c-kernel", "max"), ("c-kernel-minimal", "max"),
                                       ("c-kernel-pie", "max")])
def test_c_kernel_boots_through_the_same_checks(built: dict, name: str, cpu: str) -> None:
    esp, plan = config(built, name)
    result = qemu.boot(esp, cpu=cpu, memory="1G")
    assert "highboot C kernel: hello" in result.serial
    check_boot(result, plan, expect_1g=cpu == "max")


def test_pie_kernel_has_relocations_the_loader_applies(built: dict) -> None:
    from highboot.inputs.kernel import read_kernel

    _, plan = config(built, "c-kernel-pie")
    kernel = read_kernel(built["dir"] / "test" / "c-kernel-pie" / "kernel" / "kernel.elf")
    assert kernel.position_independent and kernel.relocations
    assert len(plan.placement.relocations) == len(kernel.relocations)
    # lld leaves the relocated words zero in the file: the kernel only prints hex if they are applied.
