"""What every part of the benchmark shares: where things are, the interpreter, running a command."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "tools" / "bench-assets"
WORK = ROOT / "build" / "bench"
# The interpreter running the benchmark: tools/bench starts it from the project's .venv, where SCons,
# pytest and hypothesis are. Every Python subprocess (scons, pytest) runs with it, never a `python3`
# found on PATH.
PYTHON = sys.executable

PAGE = 4096
KIB = 1024
TIB = 1 << 40


def say(text: str = "") -> None:
    print(text, flush=True)


def fail(text: str) -> int:
    """An error the user has to act on, on stderr; returns the exit status for it."""
    print(f"tools/bench: {text}", file=sys.stderr, flush=True)
    return 2


def median(values: Iterable[float]) -> float | None:
    values = list(values)
    return statistics.median(values) if values else None


def child_env(**extra: str) -> dict[str, str]:
    """The environment for subprocesses: the .venv's bin first on PATH, and PYTHONPATH without the
    entries tools/bench added for this package (a scons run in another tree uses that tree's
    site_scons)."""
    env = dict(os.environ)
    ours = {str(ROOT / "site_scons"), str(ROOT / "tools")}
    kept = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in ours]
    if kept:
        env["PYTHONPATH"] = os.pathsep.join(kept)
    else:
        env.pop("PYTHONPATH", None)
    env["PATH"] = os.pathsep.join([str(Path(PYTHON).parent), env.get("PATH", "")])
    env.update(extra)
    return env


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    """A command with its output captured as text; never raises on a non-zero exit."""
    kw.setdefault("env", child_env())
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)


def python_module(module: str, *args: str) -> list[str]:
    """The command line that runs `python -m module` with the benchmark's (the .venv's) interpreter."""
    return [PYTHON, "-m", module, *args]
