"""SCons from the .venv: the ESP under test (built when it is missing) and the timed builds of the
build section, in the working tree or, when that does not build, in a snapshot of HEAD."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from benchkit.common import ROOT, WORK, child_env, median, python_module, say


class BuildFailed(Exception):
    pass


def scons_command(*args: str) -> list[str]:
    """scons as the .venv runs it (`python -m SCons`): the system python3 has no SCons."""
    return python_module("SCons", "-Q", *args)


def ensure_built(build_dir: Path, jobs: int) -> str | None:
    """build/esp and build/plan.json, brought up to date by `scons -j J` (built on a fresh clone;
    rebuilt when the tree changed since: a plan from an older highboot is not read). Returns None
    when they are there, else the reason they could not be built."""
    say(f"Bringing {build_dir / 'esp'} up to date (.venv/bin/scons -j{max(1, jobs)})")
    proc = subprocess.run(scons_command(f"-j{max(1, jobs)}"), cwd=ROOT, env=child_env(), check=False)
    if proc.returncode != 0:
        return f"scons failed (exit {proc.returncode}): fix the build (`.venv/bin/scons` shows the error) and rerun"
    return None


def scons(tree: Path, *args: str) -> float:
    start = time.monotonic()
    proc = subprocess.run(scons_command(*args), cwd=tree, env=child_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise BuildFailed(proc.stderr.strip()[-1500:])
    return time.monotonic() - start


def scons_breakdown(tree: Path, *args: str) -> tuple[float, dict[str, Any]]:
    """A build with --debug=time: its wall time, and where it went (commands by target, SConscript
    reading, SCons itself)."""
    start = time.monotonic()
    proc = subprocess.run(scons_command("--debug=time", *args), cwd=tree, env=child_env(),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildFailed(proc.stderr.strip()[-1500:])
    wall = time.monotonic() - start
    commands: dict[str, float] = {}
    for target, seconds in re.findall(r"Command execution time: (.+?): ([\d.]+) seconds", proc.stdout):
        commands[os.path.relpath(target, WORK) if target.startswith(str(WORK)) else target] = float(seconds)
    totals = {key.lower().replace(" ", "_"): float(v)
              for key, v in re.findall(r"Total (build time|SConscript file execution time|SCons execution time|"
                                       r"command execution time): ([\d.]+) seconds", proc.stdout)}
    top = dict(sorted(commands.items(), key=lambda kv: -kv[1])[:6])
    return wall, {"wall_s": round(wall, 2), **{k: round(v, 2) for k, v in totals.items()},
                  "slowest_commands_s": {k: round(v, 2) for k, v in top.items()}}


def git_head() -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return proc.stdout.strip() or "?"


def head_snapshot() -> Path:
    """The committed tree (git archive HEAD) under build/bench/head, for when the working tree
    does not build (someone is in the middle of an edit)."""
    tree = WORK / "head"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def timed_builds(tree: Path, runs: int, cold: bool) -> dict[str, Any]:
    """Clean builds (cold Rust sysroot with `cold`, warm), no-op rebuilds, rebuilds after a layout
    edit and after a template edit, each `runs` times, in a build directory of its own."""
    # Wall times: another job on the machine shows here (not in the -icount figures).
    out: dict[str, Any] = {"load_average_before": os.getloadavg()[0]}
    bdir = WORK / "build-times"
    layout = bdir / "layout.toml"
    bdir.mkdir(parents=True, exist_ok=True)
    original = (tree / "templates" / "layouts" / "linux-x86_64.toml").read_text()
    layout.write_text(original)
    common = [f"BUILD_DIR={bdir / 'b'}", f"LAYOUT={layout}"]
    if cold:
        shutil.rmtree(bdir / "b", ignore_errors=True)
        out["clean_cold_sysroot_s"] = scons(tree, *common)
    else:  # warm: share the main build's cargo cache (core already built there)
        common.append(f"CARGO_DIR={ROOT / 'build' / 'cargo'}")
    scons(tree, *common)
    warm, warm_breakdown = [], {}
    for _ in range(runs):
        for sub in ("esp", "gen", "loader", "kernel", "include", "plan.json"):
            path = bdir / "b" / sub
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        wall, warm_breakdown = scons_breakdown(tree, *common)
        warm.append(wall)
    out["clean_warm_sysroot_s"] = median(warm)
    out["clean_warm_runs_s"] = [round(w, 2) for w in warm]
    out["clean_warm_breakdown"] = warm_breakdown
    noops, noop_breakdown = [], {}
    for _ in range(runs):
        wall, noop_breakdown = scons_breakdown(tree, *common)
        noops.append(wall)
    out["noop_s"] = median(noops)
    out["noop_runs_s"] = [round(w, 2) for w in noops]
    out["noop_breakdown"] = noop_breakdown
    edits, breakdown = [], {}
    for i in range(runs):
        layout.write_text(original.replace('stack_size = "64 KiB"', f'stack_size = "{64 + 4 * (i + 1)} KiB"'))
        wall, breakdown = scons_breakdown(tree, *common)
        edits.append(wall)
    out["layout_edit_s"] = median(edits)
    out["layout_edit_runs_s"] = [round(w, 2) for w in edits]
    out["layout_edit_breakdown"] = breakdown
    layout.write_text(original)
    scons(tree, *common)
    tdir = bdir / "templates" / "loader"
    tdir.mkdir(parents=True, exist_ok=True)
    tedits = []
    for i in range(runs):
        (tdir / "plan.rs.j2").write_text('{% extends "base:loader/plan.rs.j2" %}{% block extra %}\n'
                                         f"pub const BENCH_EDIT: u32 = {i};\n{{% endblock %}}\n")
        tedits.append(scons(tree, *common, f"TEMPLATES={bdir / 'templates'}"))
    out["template_edit_s"] = median(tedits)
    out["template_edit_runs_s"] = [round(w, 2) for w in tedits]
    if out["clean_warm_sysroot_s"]:
        out["layout_edit_over_warm_clean"] = out["layout_edit_s"] / out["clean_warm_sysroot_s"]
    return out
