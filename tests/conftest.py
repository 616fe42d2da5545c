"""Shared fixtures: the packages on sys.path, the build under test, synthetic kernels."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "site_scons"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tools"))  # benchkit, the package tools/bench runs


def build_dir() -> Path:
    return Path(os.environ.get("HIGHBOOT_BUILD_DIR", ROOT / "build"))


@pytest.fixture(scope="session")
def built() -> dict[str, Any]:
    """The default build (`scons`): its ESP and plan. Missing artifacts fail, never skip."""
    from highboot.planning.planner import BootPlan

    d = build_dir()
    esp, plan = d / "esp", d / "plan.json"
    if not (esp / "EFI" / "BOOT" / "BOOTX64.EFI").exists() or not plan.exists():
        pytest.fail(f"no build in {d}: run the tests with `scons test` (it builds first)")
    return {"dir": d, "esp": esp, "plan": BootPlan.from_json(plan), "kernel": d / "kernel" / "kernel.elf"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "big: slow sweeps (a 256 MiB module); run with -m big")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked big run only when asked for (-m big): deselected, never skipped as passing."""
    if "big" in (config.getoption("-m") or ""):
        return
    deselected = [item for item in items if "big" in item.keywords]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if "big" not in item.keywords]
