"""examples/: projects that use highboot from outside its tree (their own project file, layout and
template overrides), built with `scons -C <highboot> PROJECT=...` from their own directory and
booted."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from test_boot import check_boot

from highboot.booting import qemu
from highboot.planning.planner import BootPlan

ROOT = Path(__file__).resolve().parents[1]
# (A project with a [test] table brings its own kernel and is tested by its own `scons test`:
# tests/test_kernel_tests.py.)
PROJECTS = sorted(p.parent.name for p in (ROOT / "examples").glob("*/highboot.toml")
                  if "test" not in tomllib.loads(p.read_text()))


def test_there_are_at_least_two_example_projects() -> None:
    assert len(PROJECTS) >= 2, PROJECTS


@pytest.mark.parametrize("name", PROJECTS)
def test_example_builds_from_outside_and_boots(built: dict, name: str, tmp_path: Path) -> None:
    project = ROOT / "examples" / name
    out = tmp_path / "build"
    # Share the main build's cargo cache so core is not rebuilt; cargo locks it for us.
    cmd = [sys.executable, "-m", "SCons", "-Q", "-C", str(ROOT), f"PROJECT={project / 'highboot.toml'}",
           f"BUILD_DIR={out}", f"CARGO_DIR={built['dir'] / 'cargo'}"]
    proc = subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plan = BootPlan.from_json(out / "plan.json")
    assert plan.ranges.layout == name
    assert (out / "esp" / "EFI" / "BOOT" / "BOOTX64.EFI").exists()
    for cpu in ("qemu64", "max"):
        result = qemu.boot(out / "esp", cpu=cpu, memory="1G")
        check_boot(result, plan, expect_1g=cpu == "max" and plan.ranges.direct_map_page_size != "2M")
        assert f"INFO cmdline=\"example={name}" in result.serial


def test_a_c_kernel_of_your_own_linked_with_the_rendered_script(built: dict, tmp_path: Path) -> None:
    """The C kernel README's way, with a layout, kernel base and build directory of the user's own:
    the build renders highboot.h and both linker scripts at that base (also when KERNEL= names a
    kernel; the tests' highboot_report.h it does not), gcc links the kernel there with link-fixed.ld,
    and it boots."""
    out = tmp_path / "build"
    layout = ROOT / "templates" / "layouts" / "minimal.toml"
    scons = [sys.executable, "-m", "SCons", "-Q", "-C", str(ROOT), f"BUILD_DIR={out}", f"LAYOUT={layout}",
             f"CARGO_DIR={built['dir'] / 'cargo'}", "KERNEL_BASE=0xffffffff81000000"]
    # Any kernel will do to render the header and scripts: these two targets need no plan.
    placeholder = built["dir"] / "test" / "c-kernel" / "kernel" / "kernel.elf"
    proc = subprocess.run([*scons, f"KERNEL={placeholder}", str(out / "include" / "highboot.h"),
                           str(out / "gen" / "link-fixed.ld"), str(out / "gen" / "link.ld")],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    base = 0xFFFFFFFF81000000
    assert layout_kernel_base(layout) < base
    for script, pie in (("link.ld", True), ("link-fixed.ld", False)):
        text = (out / "gen" / script).read_text()
        assert f". = {base:#x};" in text and ("PT_DYNAMIC FLAGS" in text) == pie
    kernel = tmp_path / "c-kernel.elf"
    gcc = ["gcc", "-O2", "-ffreestanding", "-nostdlib", "-static", "-no-pie", "-fno-pic", "-mcmodel=kernel",
           "-mno-red-zone", "-mgeneral-regs-only", "-fno-stack-protector", "-fno-asynchronous-unwind-tables",
           # highboot.h from the user's build; the tests' report header (the example prints the report) from
           # the test build of the same kernel: a build of your own kernel renders the protocol only.
           f"-I{out / 'include'}", f"-I{built['dir'] / 'test' / 'c-kernel' / 'include'}",
           f"-Wl,-T,{out / 'gen' / 'link-fixed.ld'}", "-Wl,--build-id=none", "-o",
           str(kernel), str(ROOT / "examples" / "c-kernel" / "kernel.c")]
    proc = subprocess.run(gcc, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    proc = subprocess.run([*scons, f"KERNEL={kernel}"], capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plan = BootPlan.from_json(out / "plan.json")
    assert plan.placement.image_va == base  # an ET_EXEC: where gcc linked it
    check_boot(qemu.boot(out / "esp", cpu="max", memory="256M"), plan,
               expect_1g=plan.ranges.direct_map_page_size != "2M")


def layout_kernel_base(path: Path) -> int:
    from highboot.inputs.layout import load_layout
    return load_layout(str(path)).require("kernel").start
