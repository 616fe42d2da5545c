"""Render highboot's templates and compile what they make with this machine's rustc: shared by the
tests that check a generated source says what its description says (test_abi, test_hostile)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from highboot.build.steps import render_context
from highboot.planning.planner import BootPlan
from highboot.rendering.templates import render


def rendered(template: str, plan: BootPlan | None = None, extra: dict | None = None) -> str:
    """A default template rendered with the usual context, a plan and extra variables."""
    ctx = render_context(None, extra or {})
    if plan is not None:
        ctx["plan"] = plan
    return render([], template, ctx)


def _rustc() -> str:
    rustc = shutil.which("rustc")
    if rustc is None:
        pytest.fail("no rustc on PATH to compile the rendered sources with")
    return rustc


def run_rust(tmp_path: Path, includes: dict[str, str], body: str, items: str = "") -> str:
    """Compile a program that includes each source as a module of its name (its macros in scope),
    with items at the top and body in main(); run it and return what it printed."""
    mods = []
    for name, text in includes.items():
        (tmp_path / f"{name}.rs").write_bytes(text.encode("utf-8"))
        mods.append(f'#[macro_use] #[allow(dead_code)] mod {name} {{ include!("{name}.rs"); }}')
    (tmp_path / "main.rs").write_text("\n".join(mods) + f"\n{items}\nfn main() {{\n{body}\n}}\n")
    out = subprocess.run([_rustc(), "--edition", "2021", "-o", str(tmp_path / "main"), str(tmp_path / "main.rs")],
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return subprocess.run([str(tmp_path / "main")], capture_output=True, text=True, timeout=60, check=True).stdout


def assemble(tmp_path: Path, asm: str) -> Path:
    """Assemble asm as the loader does (Rust's global_asm!, so its { } rules apply); the object."""
    (tmp_path / "t.S").write_text(asm)
    (tmp_path / "lib.rs").write_text('core::arch::global_asm!(include_str!("t.S"));\n')
    out = subprocess.run([_rustc(), "--edition", "2021", "--crate-type", "lib", "--emit", "obj", "-o",
                          str(tmp_path / "t.o"), str(tmp_path / "lib.rs")], capture_output=True, text=True,
                         timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return tmp_path / "t.o"
