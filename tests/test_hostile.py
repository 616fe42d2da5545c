"""Hostile inputs, round 2: strings a user gives (layout names, paths, the command line) never
change the meaning of a generated source; templates that fail at run time, command lines with a
NUL or non-UTF-8 bytes, and failed builds end in one clear message or a correct image."""

from __future__ import annotations

import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import build_dir
from hostrust import assemble, rendered, run_rust
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_matrix import config
from testkit.bootcheck import parse_report, passed

from highboot.booting import qemu
from highboot.build.steps import render_context
from highboot.errors import HighbootError
from highboot.options.project import read_project
from highboot.planning.planner import BootPlan
from highboot.rendering.templates import comment_safe, render

ROOT = Path(__file__).resolve().parents[1]

# Strings a careless or malicious user might give: each would end a comment, open one, splice a
# line, close a string literal or smuggle code into a generated source if printed raw.
NASTY = ['"', "\n", "*/", "/*", "//", "#", "\\", "\0", "\r", "'", "`", "\u2028", "a\nfn evil() {}\n//",
         "*/ SECTIONS { } /*", '"; pub const EVIL: u8 = 1; //', "\\\n", "x" * 4096, "{{ plan }}", "%s%n",
         "\udcff\udcfe", "caf\u00e9 \U0001f600", ".globl evil\nevil:", "\x1b[31m"]


def random_strings(count: int, seed: int = 14) -> list[str]:
    """Deterministic random strings from an alphabet of the characters that matter."""
    rng = random.Random(seed)
    alphabet = list('"\'\\/*#\n\r\t\0 {}();:,.<>`$%&|') + ["\udcff", "\u00e9", "\U0001f600", "a", "Z", "0"]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(count)]


CORPUS = NASTY + random_strings(40)



MARK = "HIGHBOOTMARK"


def only_in_comments(marked: str, nasty: str, text: str) -> None:
    """Rendered once with MARK and once with text: every line is the same, but where MARK stands,
    which is inside a comment, and there text stands escaped by comment_safe."""
    a, b = marked.splitlines(), nasty.splitlines()
    assert len(a) == len(b), "a user's string added or removed lines"
    for x, y in zip(a, b, strict=True):
        if MARK not in x:
            assert x == y
            continue
        starts = [i for i in (x.find("//"), x.find("/*")) if i >= 0]
        assert starts and min(starts) < x.index(MARK), f"not in a comment: {x}"
        assert y == x.replace(MARK, comment_safe(text)), f"{x}\n{y}"


@pytest.fixture(scope="module")
def plan(built: dict) -> BootPlan:
    return built["plan"]


def with_text(plan: BootPlan, **texts: str) -> BootPlan:
    """plan with its layout_name, kernel_path or cmdline replaced, each in its record."""
    where = {"layout_name": ("ranges", "layout"), "kernel_path": ("kernel", "path"), "cmdline": ("options", "cmdline")}
    for key, text in texts.items():
        record, name = where[key]
        plan = replace(plan, **{record: replace(getattr(plan, record), **{name: text})})
    return plan


@pytest.mark.parametrize("template", ["loader/plan.rs.j2", "loader/trampoline.S.j2"])
def test_strings_in_comments_stay_in_comments(plan: BootPlan, template: str) -> None:
    for key in ("layout_name", "kernel_path"):
        marked = rendered(template, with_text(plan, **{key: MARK}))
        for text in CORPUS:
            if key == "layout_name" and any(0xD800 <= ord(c) < 0xE000 for c in text):
                continue  # a layout name is TOML text: never surrogates (refused below)
            nasty = rendered(template, with_text(plan, **{key: text}))
            if key == "layout_name" and template == "loader/plan.rs.j2":
                # The one place the name is code: a Rust literal (compiled and run below).
                code = "    pub const LAYOUT: &str = "
                marked = "\n".join(x for x in marked.splitlines() if not x.startswith(code))
                nasty = "\n".join(x for x in nasty.splitlines() if not x.startswith(code))
            only_in_comments(marked, nasty, text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(list("*/\\\n\"{}#")), max_size=60))
def test_any_text_in_comments_stays_in_comments(plan: BootPlan, text: str) -> None:
    for template in ("loader/plan.rs.j2", "loader/trampoline.S.j2"):
        marked = rendered(template, with_text(plan, kernel_path=MARK))
        only_in_comments(marked, rendered(template, with_text(plan, kernel_path=text)), text)


def test_linker_script_comment_cannot_be_closed() -> None:
    base = {"layout": {"name": "x"}, "entry_symbol": "_start", "link_base": 0xFFFFFFFF80000000, "pie": True}
    plain = rendered("kernel/link.ld.j2", extra=base)
    for text in CORPUS:
        nasty = rendered("kernel/link.ld.j2", extra={**base, "layout": {"name": text}})
        assert nasty.replace(comment_safe(text), "x", 1) == plain


def test_rust_constants_carry_the_strings_exactly(plan: BootPlan, tmp_path: Path) -> None:
    """plan.rs rendered with each string as the layout name and the command line, compiled by rustc
    for this machine and run: ranges::LAYOUT and options::CMDLINE hold exactly the string's bytes."""
    cases = [t for t in CORPUS if "\0" not in t]
    includes, expected = {}, []
    for n, text in enumerate(cases):
        layout_ok = not any(0xD800 <= ord(c) < 0xE000 for c in text)
        name = text if layout_ok else "plain"
        includes[f"p{n}"] = rendered("loader/plan.rs.j2", with_text(plan, cmdline=text, layout_name=name))
        expected.append(f"{n} {name.encode('utf-8').hex() or '-'} {text.encode('utf-8', 'surrogateescape').hex()}00")
    body = "\n".join(f'    println!("{n} {{}} {{}}", hex(p{n}::ranges::LAYOUT.as_bytes()), '
                     f'hex(p{n}::options::CMDLINE));' for n in range(len(cases)))
    items = """
fn hex(b: &[u8]) -> String {
    if b.is_empty() { return "-".into(); }
    b.iter().map(|x| format!("{:02x}", x)).collect()
}"""
    assert run_rust(tmp_path, includes, body, items).splitlines() == expected


def test_trampoline_with_hostile_layout_name_assembles(plan: BootPlan, tmp_path: Path) -> None:
    name = "".join(t for t in NASTY if not any(0xD800 <= ord(c) < 0xE000 for c in t))
    obj = assemble(tmp_path, rendered("loader/trampoline.S.j2", with_text(plan, layout_name=name)))
    symbols = subprocess.run(["nm", str(obj)], capture_output=True, text=True, check=True).stdout
    assert "evil" not in symbols


def test_a_layout_name_that_is_not_text_is_refused(plan: BootPlan) -> None:
    p = with_text(plan, layout_name="bad \udcff")
    with pytest.raises(HighbootError) as err:
        rendered("loader/plan.rs.j2", p)
    assert "is not valid UTF-8" in err.value.message and err.value.file.endswith("plan.rs.j2")
    template = (ROOT / "templates" / "loader" / "plan.rs.j2").read_text().splitlines()
    assert err.value.field == f"line {1 + next(i for i, x in enumerate(template) if 'pub const LAYOUT' in x)}"


# ------------------------------------------------------------------ templates that fail at run time


@pytest.mark.parametrize("body, message", [
    ("{{ 1 // 0 }}", "template failed while rendering: ZeroDivisionError: integer division or modulo by zero"),
    ('{{ "abc" | rust_hex }}', "template failed while rendering: TypeError"),
    ("{{ plan.rights.segments[999] }}", "template uses an undefined variable"),
    ("{{ plan.tables.levels.no_such_method() }}", "template uses an undefined variable"),
    ("{{ plan.tables.shifts | sum(attribute='x') }}", "template uses an undefined variable"),
    ("{{ plan.tables.levels | join(', ') }}", "template failed while rendering: TypeError"),
])
def test_template_runtime_errors_are_one_message(plan: BootPlan, tmp_path: Path, body: str, message: str) -> None:
    override = tmp_path / "loader" / "plan.rs.j2"
    override.parent.mkdir()
    override.write_text('{% extends "base:loader/plan.rs.j2" %}\n{% block extra %}\n' + body + "\n{% endblock %}\n")
    ctx = render_context(None, {})
    ctx["plan"] = plan
    with pytest.raises(HighbootError) as err:
        render([str(tmp_path)], "loader/plan.rs.j2", ctx)
    assert message in err.value.message, err.value.format()
    assert err.value.file == str(override)
    assert err.value.field in (None, "line 3")


def scons(*args: str | bytes, build: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "SCons", "-Q", f"BUILD_DIR={build}",
                           f"CARGO_DIR={ROOT / 'build' / 'cargo'}", *args],
                          cwd=ROOT, capture_output=True, timeout=600, check=False)


def test_template_runtime_error_in_a_build(tmp_path: Path) -> None:
    override = tmp_path / "t" / "loader" / "plan.rs.j2"
    override.parent.mkdir(parents=True)
    override.write_text('{% extends "base:loader/plan.rs.j2" %}\n{% block extra %}\n{{ 1 // 0 }}\n{% endblock %}\n')
    kernel = build_dir() / "kernel" / "kernel.elf"
    out = scons(f"KERNEL={kernel}", f"TEMPLATES={tmp_path / 't'}", build=tmp_path / "b")
    text = (out.stdout + out.stderr).decode(errors="replace")
    assert out.returncode != 0
    assert f"highboot: error: {override}: line 3: template failed while rendering: ZeroDivisionError" in text, text
    assert "Traceback" not in text
    assert not (tmp_path / "b" / "gen" / "plan.rs").exists()
    assert not (tmp_path / "b" / "esp").exists()


# ---------------------------------------------------------------------------- the command line


def test_nul_in_the_command_line_is_refused(tmp_path: Path) -> None:
    project = tmp_path / "highboot.toml"
    project.write_text('cmdline = "a\\u0000b"\n')
    with pytest.raises(HighbootError) as err:
        read_project(project)
    assert err.value.file == str(project) and err.value.field == "cmdline"
    assert "the command line has a NUL byte at offset 1" in err.value.message
    out = scons(f"PROJECT={project}", build=tmp_path / "b")
    text = (out.stdout + out.stderr).decode(errors="replace")
    assert out.returncode != 0 and f"highboot: error: {project}: cmdline: the command line has a NUL" in text, text
    assert "Traceback" not in text


def test_a_huge_command_line_is_refused(tmp_path: Path) -> None:
    out = scons("CMDLINE=" + "x" * 65537, build=tmp_path / "b")
    text = (out.stdout + out.stderr).decode(errors="replace")
    assert out.returncode != 0 and "CMDLINE: the command line is 65537 bytes; at most 65536" in text, text


def test_non_utf8_command_line_bytes_reach_the_loader(tmp_path: Path) -> None:
    """A command line is bytes: what the shell passed is what the loader holds (no traceback)."""
    kernel = build_dir() / "kernel" / "kernel.elf"
    out = scons(f"KERNEL={kernel}".encode(), b"CMDLINE=root=/dev/x \xff\xfe\x80",
                str(tmp_path / "b" / "gen" / "plan.rs"), build=tmp_path / "b")
    assert out.returncode == 0, (out.stdout + out.stderr).decode(errors="replace")
    plan_rs = (tmp_path / "b" / "gen" / "plan.rs").read_text()
    wanted = ", ".join(str(b) for b in b"root=/dev/x \xff\xfe\x80\0")
    assert f"pub const CMDLINE: &[u8] = &[{wanted}];" in plan_rs


def test_non_utf8_command_line_in_a_real_boot(built: dict) -> None:
    """The minimal test build's command line is not UTF-8; the kernel sees exactly its bytes."""
    esp, _ = config(built, "minimal")
    result = qemu.boot(esp, cpu="max", memory="256M")
    assert passed(result), result.serial[-2000:]
    report = parse_report(result.serial)
    assert report.facts["cmdline_hex"] == b"bytes \xff\xfe\x80 pass".hex()
    assert report.facts["cmdline"] == "<not UTF-8>"


def test_debug_script_quotes_the_kernel_path() -> None:
    from highboot.booting.qemu import gdb_script

    assert gdb_script('/k dir/"x"\\.elf', 0x1000).splitlines()[0] == 'file "/k dir/\\"x\\"\\\\.elf"'
    with pytest.raises(HighbootError) as err:
        gdb_script("/tmp/a\nshell rm -rf ~", 0x1000)
    assert "control character" in err.value.message and err.value.field == "debug.gdb"


def test_a_build_dir_with_a_newline_is_refused(tmp_path: Path) -> None:
    out = scons(build=tmp_path / "b\ncargo::rustc-env=EVIL=1")
    text = (out.stdout + out.stderr).decode(errors="replace")
    assert out.returncode != 0 and "BUILD_DIR: " in text and "has a control character" in text, text
    assert "Traceback" not in text and not (tmp_path / "b").exists()


def test_a_failed_build_leaves_the_esp_as_it_was(built: dict, tmp_path: Path) -> None:
    """After a good build, a build with another kernel whose loader cannot be made (a template
    fails) must not install the new kernel beside the old loader, even with parallel jobs."""
    first = build_dir() / "kernel" / "kernel.elf"
    out = scons(f"KERNEL={first}", build=tmp_path / "b")
    assert out.returncode == 0, (out.stdout + out.stderr).decode(errors="replace")[-3000:]
    esp = tmp_path / "b" / "esp"
    before = {p: p.read_bytes() for p in (esp / "EFI" / "BOOT" / "BOOTX64.EFI", esp / "highboot" / "kernel.elf")}
    override = tmp_path / "t" / "loader" / "plan.rs.j2"
    override.parent.mkdir(parents=True)
    override.write_text('{% extends "base:loader/plan.rs.j2" %}\n{% block extra %}\n{{ 1 // 0 }}\n{% endblock %}\n')
    other = built["dir"] / "test" / "c-kernel" / "kernel" / "kernel.elf"
    assert other.read_bytes() != first.read_bytes()
    out = scons("-j4", f"KERNEL={other}", f"TEMPLATES={tmp_path / 't'}", build=tmp_path / "b")
    assert out.returncode != 0
    assert {p: p.read_bytes() for p in before} == before, "the ESP changed although its loader was not built"


def test_a_refused_plan_keeps_the_plan_the_esp_was_built_from(tmp_path: Path) -> None:
    """After a good build, options the planner refuses (AP stacks that do not fit the kernel
    region) stop the build with the planner's message; plan.json and the ESP stay as they were,
    one consistent build."""
    kernel = build_dir() / "kernel" / "kernel.elf"
    out = scons(f"KERNEL={kernel}", build=tmp_path / "b")
    assert out.returncode == 0, (out.stdout + out.stderr).decode(errors="replace")[-3000:]
    b = tmp_path / "b"
    kept = [b / "plan.json", b / "esp" / "EFI" / "BOOT" / "BOOTX64.EFI", b / "esp" / "highboot" / "kernel.elf"]
    before = {p: p.read_bytes() for p in kept}
    # 255 stacks of 2052 KiB, each with its 4 KiB guard page: 8 KiB short of the 512 MiB region, so
    # the options pass; the kernel, its stack and the trampoline page do not fit beside them.
    out = scons(f"KERNEL={kernel}", "AP_STACK_SIZE=2052 KiB", build=b)
    text = (out.stdout + out.stderr).decode(errors="replace")
    assert out.returncode != 0 and "Traceback" not in text
    assert "highboot: error:" in text, text
    assert "no room after the trampoline alias for 255 AP stacks of 2052 KiB" in text, text
    assert {p: p.read_bytes() for p in kept} == before
