"""examples/: projects that use highboot from outside its tree (their own project file, layout and
template overrides), built with `scons -C <highboot> PROJECT=...` from their own directory and
booted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_boot import check_boot

from highboot import qemu
from highboot.plan import BootPlan

ROOT = Path(__file__).resolve().parents[1]
PROJECTS = sorted(p.parent.name for p in (ROOT / "examples").glob("*/highboot.toml"))


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
    assert plan.layout_name == name
    assert (out / "esp" / "EFI" / "BOOT" / "BOOTX64.EFI").exists()
    for cpu in ("qemu64", "max"):
        result = qemu.boot(out / "esp", cpu=cpu, memory="1G")
        check_boot(result, plan, expect_1g=cpu == "max" and plan.direct_map_page_size != "2M")
        assert f"INFO cmdline=\"example={name}" in result.serial
