"""Projects: a project file, a custom layout and a template override that extends the default;
`scons map`; command-line options winning over the project file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from test_boot import check_boot
from test_matrix import config
from testkit.bootcheck import parse_report

from highboot.booting import qemu
from highboot.errors import HighbootError
from highboot.inputs.layout import load_layout
from highboot.options.project import read_project
from highboot.planning.addrmap import format_map, svg_map
from highboot.planning.paging import minimum_tables
from highboot.planning.planner import BootPlan

ROOT = Path(__file__).resolve().parents[1]


def test_example_project_builds_with_its_overrides_and_boots(built: dict) -> None:
    esp, plan = config(built, "example-tiny-direct-map")
    gen = built["dir"] / "test" / "example-tiny-direct-map" / "gen"
    assert 'pub const PROJECT_NAME: &str = "tiny-direct-map";' in (gen / "plan.rs").read_text()
    assert "pub const ENTRY" in (gen / "plan.rs").read_text()  # the default it extends is all there
    with open(esp / "highboot" / "kernel.elf", "rb") as f:
        assert ELFFile(f).get_section_by_name(".highboot_example") is not None
    assert plan.placement.image_va == 0xFFFFFFFFC0200000
    assert plan.ranges.direct_map_base == 0xFFFFFE8000000000
    for cpu in ("qemu64", "max"):
        result = qemu.boot(esp, cpu=cpu, memory="2G")
        check_boot(result, plan, expect_1g=cpu == "max")
        assert parse_report(result.serial).facts["cmdline"] == "example=tiny-direct-map quiet"


def test_map_table_and_svg(built: dict) -> None:
    layout = load_layout(ROOT / "templates" / "layouts" / "linux-x86_64.toml")
    text = format_map(layout, built["plan"])
    assert "ffff888000000000 | -119.5 TB |   ffffc87fffffffff |    64 TiB | direct-map" in text
    assert "ffffffef00000000 |    -68 GB |   fffffffeffffffff |    64 GiB | efi" in text
    assert "stack guard page (unmapped)" in text
    planned = minimum_tables([(r.va, r.size, 4096) for r in built["plan"].tables.mapped])
    assert f"planned at build time: {sum(planned.values())} " in text
    svg = svg_map(layout, built["plan"])
    # A box per region and planned range, the stack guard page's and the AP stack window's.
    assert svg.startswith("<svg") and svg.count("<rect") == len(layout.regions) + len(built["plan"].tables.mapped) + 2


def scons(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "SCons", "-Q", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False)


def test_command_line_wins_over_project_file(tmp_path: Path) -> None:
    project = tmp_path / "highboot.toml"
    project.write_text('layout = "missing-layout.toml"\ncmdline = "from project"\n')
    out = scons("-n", f"PROJECT={project}", f"BUILD_DIR={tmp_path / 'b'}")
    assert out.returncode != 0
    assert f"{project}: layout: layout file '{tmp_path / 'missing-layout.toml'}' not found" in out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    good = ROOT / "templates" / "layouts" / "minimal.toml"
    out = scons("-n", f"PROJECT={project}", f"LAYOUT={good}", f"BUILD_DIR={tmp_path / 'b'}")
    assert out.returncode == 0, out.stdout + out.stderr


def test_project_file_unknown_key(tmp_path: Path) -> None:
    project = tmp_path / "highboot.toml"
    project.write_text('kernal = "x.elf"\n')
    out = scons("-n", f"PROJECT={project}", f"BUILD_DIR={tmp_path / 'b'}")
    assert out.returncode != 0
    assert f"{project}: kernal: unknown key 'kernal'" in out.stderr
    assert not (tmp_path / "b" / "plan.json").exists()


def test_project_file_on_off_options(tmp_path: Path) -> None:
    """kaslr / sign are true or false in the project file, and become the KASLR / SIGN options."""
    project = tmp_path / "highboot.toml"
    project.write_text("kaslr = true\nsign = false\n")
    assert read_project(project) == {"KASLR": "1", "SIGN": "0"}
    project.write_text('kaslr = "yes"\n')
    with pytest.raises(HighbootError) as err:
        read_project(project)
    assert err.value.field == "kaslr" and "expected true or false" in err.value.message


def test_scons_help_lists_every_option() -> None:
    out = scons("-h")
    assert out.returncode == 0
    for option in ("KERNEL", "LAYOUT", "TEMPLATES", "CMDLINE", "PROJECT", "KERNEL_BASE", "BUILD_DIR", "VERBOSE",
                   "RUSTC", "FAULT", "KASLR", "SIGN", "FB_MODE", "IMAGE_SEED", "QEMU_CPU", "QEMU_MEMORY", "GRAPHIC",
                   "PYTEST_ARGS", "MODULES", "KEEP_KERNEL_FILE"):
        assert f"\n{option}:" in out.stdout, option
    for target in ("scons test", "scons map", "scons run", "scons debug"):
        assert target in out.stdout


def test_plan_json_is_what_the_loader_was_rendered_from(built: dict) -> None:
    plan = BootPlan.from_json(built["dir"] / "plan.json")
    rendered = (built["dir"] / "gen" / "plan.rs").read_text()
    block = rendered[rendered.index("pub mod block {"):]
    assert f"    pub const TABLE_COUNT: u64 = {plan.block.table_count};" in block[:block.index("\n}")]
    kernel = rendered[rendered.index("pub mod kernel {"):]
    assert f"    pub const SIZE: u64 = {plan.kernel.size};" in kernel[:kernel.index("\n}")]


def test_project_templates_under_a_path_with_a_colon(built: dict, tmp_path: Path) -> None:
    """A project's templates are a list of directories, not a ':'-joined option: a project that
    lives under a directory whose name holds ':' still gets its overrides."""
    home = tmp_path / "proj:odd dir ü"
    (home / "templates" / "loader").mkdir(parents=True)
    (home / "templates" / "loader" / "plan.rs.j2").write_text(
        '{% extends "base:loader/plan.rs.j2" %}\n{% block extra %}\npub const FROM_COLON_DIR: u32 = 1;\n'
        "{% endblock %}\n")
    (home / "highboot.toml").write_text(f'templates = ["templates"]\nkernel = "{built["kernel"]}"\n')
    out = tmp_path / "b"
    proc = scons(f"PROJECT={home / 'highboot.toml'}", f"BUILD_DIR={out}", str(out / "gen" / "plan.rs"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pub const FROM_COLON_DIR: u32 = 1;" in (out / "gen" / "plan.rs").read_text()
    # A missing one is named with the project file and its field.
    (home / "highboot.toml").write_text('templates = ["templates", "nowhere"]\n')
    proc = scons(f"PROJECT={home / 'highboot.toml'}", f"BUILD_DIR={out}", "-n")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"highboot: error: {home / 'highboot.toml'}: templates: template directory {home / 'nowhere'} not found" \
        in proc.stderr, proc.stderr


@pytest.mark.parametrize("args, message", [
    (["SMP=maybe"], "highboot: error: SMP: expected 1 or 0 (or yes/no, true/false, on/off), got 'maybe'"),
    (["KASLR=2"], "highboot: error: KASLR: expected 1 or 0"),
    (["MAX_CPUS=abc"], "highboot: error: MAX_CPUS: expected a number of CPUs such as 256, got 'abc'"),
    (["MODULES={d}/a.bin,{d}/a.bin"], "names must be unique (name them apart in a project file's [[module]] tables"),
    (["MODULES={d}/x,y.bin"], "module file '{d}/x' not found (MODULES is comma-separated: a path with a comma goes "
                              "in a project file)"),
], ids=["bool", "bool-number", "max-cpus", "same-module-twice", "comma-in-a-module-path"])
def test_option_refusals_in_highboots_words(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "a.bin").write_bytes(b"a")
    (tmp_path / "x,y.bin").write_bytes(b"xy")
    out = scons("-n", f"BUILD_DIR={tmp_path / 'b'}", *(a.format(d=tmp_path) for a in args))
    assert out.returncode == 2, out.stdout + out.stderr
    assert message.format(d=tmp_path) in out.stderr, out.stderr
    assert "SConstruct" not in out.stderr and "Traceback" not in out.stderr


def test_project_numbers_and_paths(tmp_path: Path) -> None:
    """kernel_base may be a TOML integer; a number key names what it takes; an empty path is refused."""
    project = tmp_path / "highboot.toml"
    project.write_text("kernel_base = 0xffffffff80200000\nmax_cpus = 8\n")
    assert read_project(project) == {"KERNEL_BASE": "0xffffffff80200000", "MAX_CPUS": "8"}
    for text, field, message in (("max_cpus = 2.5\n", "max_cpus", "expected a whole number or a string, got float"),
                                 ('layout = ""\n', "layout", "the path is empty; expected a file"),
                                 ('kernel = ""\n', "kernel", "the path is empty; expected a file"),
                                 # 0xffffffff80200000 as TOML's signed 64-bit integer, as a spec-strict tool writes it
                                 ("kernel_base = -2145386496\n", "kernel_base",
                                  "-2145386496 is not a 64-bit address; write a higher-half one as a string"),
                                 ('kernel_base = "0x1_0000_0000_0000_0000"\n', "kernel_base",
                                  "is not a 64-bit address")):
        project.write_text(text)
        with pytest.raises(HighbootError) as err:
            read_project(project)
        assert err.value.file == str(project) and err.value.field == field and message in err.value.message
