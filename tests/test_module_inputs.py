"""Modules as the user gives them: [[module]] tables in the project file and MODULES= on the
command line, and every bad entry refused with one message naming the file and the field."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_projects import scons

from highboot.errors import HighbootError
from highboot.inputs.modules import Module, modules_from_option
from highboot.options.project import load_project


def project(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "highboot.toml"
    path.write_text(text)
    return path


def test_project_modules_in_order_with_defaults(tmp_path: Path) -> None:
    (tmp_path / "initrd.img").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "font.psf").write_bytes(b"")
    p = project(tmp_path, '[[module]]\npath = "initrd.img"\nname = "initrd"\ncmdline = "root=/dev/ram0"\n\n'
                          '[[module]]\npath = "sub/font.psf"\n')
    assert load_project(p).modules == [
        Module(path=str(tmp_path / "initrd.img"), name="initrd", cmdline="root=/dev/ram0"),
        Module(path=str(tmp_path / "sub" / "font.psf"), name="font.psf", cmdline="")]


@pytest.mark.parametrize("text, field, message", [
    ('[[module]]\nname = "x"\n', "module[0].path", "missing path"),
    ('[[module]]\npath = "nothere.img"\n', "module[0].path", "not found"),
    ('[[module]]\npath = "dir"\n', "module[0].path", "is a directory"),
    ('[[module]]\npath = "a.img"\nsize = 3\n', "module[0].size", "unknown key 'size'"),
    ('[[module]]\npath = "a.img"\nname = 3\n', "module[0].name", "expected a string"),
    ('[[module]]\npath = "a.img"\n\n[[module]]\npath = "b/a.img"\n', "module[1].name", "two modules are named"),
    ('[[module]]\npath = "a.img"\nname = ""\n', "module[0].name", "cannot be empty"),
    ('[[module]]\npath = "a.img"\nname = "a\\u0000b"\n', "module[0].name", "NUL"),
    (f'[[module]]\npath = "a.img"\nname = "{"n" * 256}"\n', "module[0].name", "at most 255"),
    ('[[module]]\npath = "a.img"\ncmdline = "x\\u0000"\n', "module[0].cmdline", "NUL byte"),
    ('module = "a.img"\n', "module", "expected [[module]] tables"),
])
def test_bad_project_module_is_refused(tmp_path: Path, text: str, field: str, message: str) -> None:
    (tmp_path / "a.img").write_bytes(b"a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "a.img").write_bytes(b"b")
    (tmp_path / "dir").mkdir()
    with pytest.raises(HighbootError) as err:
        load_project(project(tmp_path, text))
    assert err.value.field == field and message in err.value.message, err.value.format()
    assert err.value.file is not None and str(err.value.file).endswith("highboot.toml")


def test_unreadable_module_is_refused(tmp_path: Path) -> None:
    """A file that stat() calls regular but that cannot be read, whoever runs the build (root
    reads a mode-0 file): Linux's /proc/self/clear_refs has no read operation."""
    with pytest.raises(HighbootError) as err:
        load_project(project(tmp_path, '[[module]]\npath = "/proc/self/clear_refs"\n'))
    assert err.value.field == "module[0].path" and "cannot be read" in err.value.message, err.value.format()
    if os.geteuid() != 0:
        (tmp_path / "a.img").write_bytes(b"a")
        (tmp_path / "a.img").chmod(0)
        with pytest.raises(HighbootError) as err:
            load_project(project(tmp_path, '[[module]]\npath = "a.img"\n'))
        assert "Permission denied" in err.value.message


def test_modules_option(tmp_path: Path) -> None:
    (tmp_path / "a.img").write_bytes(b"a")
    (tmp_path / "b.bin").write_bytes(b"b")
    assert modules_from_option(f"{tmp_path}/a.img,{tmp_path}/b.bin") == [
        Module(path=f"{tmp_path}/a.img", name="a.img"), Module(path=f"{tmp_path}/b.bin", name="b.bin")]
    assert modules_from_option("") == []
    for bad, message in ((f"{tmp_path}/a.img,,{tmp_path}/b.bin", "empty entry"),
                         (f"{tmp_path}/a.img,{tmp_path}/a.img", "two modules are named 'a.img'"),
                         (f"{tmp_path}/c.img", "not found"), (str(tmp_path), "is a directory")):
        with pytest.raises(HighbootError) as err:
            modules_from_option(bad)
        assert err.value.field == "MODULES" and message in err.value.message, bad


def test_scons_refuses_a_bad_module_without_a_traceback(tmp_path: Path) -> None:
    p = project(tmp_path, '[[module]]\npath = "missing.img"\n')
    out = scons("-n", f"PROJECT={p}", f"BUILD_DIR={tmp_path / 'b'}")
    assert out.returncode == 2
    assert f"highboot: error: {p}: module[0].path: module file" in out.stderr and "not found" in out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    out = scons("-n", f"MODULES={tmp_path}/nothere.bin", f"BUILD_DIR={tmp_path / 'b'}")
    assert out.returncode == 2 and "MODULES: module file" in out.stderr, out.stderr
    assert not (tmp_path / "b").exists()


def test_module_path_edge_cases(tmp_path: Path) -> None:
    (tmp_path / "a.img").write_bytes(b"a")
    for text, field, message in (('[[module]]\npath = "a\\u0000b"\n', "module[0].path", "NUL byte"),
                                 ('[[module]]\npath = ""\n', "module[0].path", "path is empty")):
        with pytest.raises(HighbootError) as err:
            load_project(project(tmp_path, text))
        assert err.value.field == field and message in err.value.message, err.value.format()
    # Bigger than a FAT32 file can be (a sparse file: nothing is written).
    with open(tmp_path / "huge.img", "wb") as f:
        f.truncate(1 << 32)
    with pytest.raises(HighbootError) as err:
        load_project(project(tmp_path, '[[module]]\npath = "huge.img"\n'))
    assert "at most 4294967295" in err.value.message
    # Names and command lines together are bounded (they are copied into the boot info).
    entries = "".join(f'[[module]]\npath = "a.img"\nname = "m{i}"\ncmdline = "{"x" * 60000}"\n' for i in range(20))
    with pytest.raises(HighbootError) as err:
        load_project(project(tmp_path, entries))
    assert err.value.field == "module" and "at most 1048576 are allowed in all" in err.value.message


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(HighbootError) as err:
        load_project(project(tmp_path, '[[module]]\npath = "pipe"\n'))
    assert "is a FIFO, not a regular file" in err.value.message


def test_paths_are_taken_as_written_not_expanded_by_scons(tmp_path: Path) -> None:
    """$ and a leading # mean something to SCons's File(); a module or kernel path must not."""
    odd = tmp_path / "dir$HOME"
    odd.mkdir()
    (odd / "x$HOME.img").write_bytes(b"x")
    (odd / "#top.img").write_bytes(b"t")
    p = project(odd, '[[module]]\npath = "x$HOME.img"\n\n[[module]]\npath = "#top.img"\n')
    out = scons("-n", f"PROJECT={p}", f"BUILD_DIR={tmp_path / 'b'}")
    assert out.returncode == 0, out.stdout[-1500:] + out.stderr[-1500:]
    assert "highboot/modules/1.bin" in out.stdout


def test_clean_and_help_need_no_module_files(tmp_path: Path) -> None:
    p = project(tmp_path, '[[module]]\npath = "gone.img"\n')
    for args in (("-c", "-n"), ("-h",)):
        out = scons(*args, f"PROJECT={p}", f"BUILD_DIR={tmp_path / 'b'}")
        assert out.returncode == 0, (args, out.stderr[-1500:])
