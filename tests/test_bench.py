"""tools/bench: the launcher runs benchkit with the project's .venv or says what to run; bad options
are refused before anything is built or booted; the fixed-map figures the README quotes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from benchkit.sections import naive_tables
from highboot.units import GIB, KIB, MIB

ROOT = Path(__file__).resolve().parents[1]


def test_launcher_without_a_venv_names_tools_setup(tmp_path: Path) -> None:
    (tmp_path / "tools").mkdir()
    shutil.copy2(ROOT / "tools" / "bench", tmp_path / "tools" / "bench")
    proc = subprocess.run([str(tmp_path / "tools" / "bench"), "--quick"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr == f"tools/bench: {tmp_path}/.venv/bin/python not found: run tools/setup --bench first " \
                          "(it makes the .venv)\n"
    assert not (tmp_path / "build").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--skip", "cycles,nosuch"], "--skip: no section named 'nosuch' (the sections: footprint, cycles, modules, "
                                  "kernels, hash, smp, build, size, fuzz)"),
    (["--jobs", "0"], "argument --jobs: expected at least 1, got 0"),
    (["--fuzz", "many"], "argument --fuzz: expected a whole number, got 'many'"),
])
def test_bad_options_are_refused_before_anything_runs(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([str(ROOT / "tools" / "bench"), "--out", str(out), *args], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == f"tools/bench: error: {message}"
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not out.exists()


def test_fixed_maps_cost_what_the_readme_says() -> None:
    # README: a fixed 127 TiB identity + 64 TiB direct map is 1,532 KiB with 1 GiB pages, 765 MiB with 2 MiB.
    assert naive_tables(GIB) * 4096 == 1532 * KIB
    assert naive_tables(2 * MIB) * 4096 // MIB == 765
