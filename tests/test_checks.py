"""The PE checks that gate the build, and finding the Rust toolchain."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pefile
import pytest

from highboot.build import toolchain
from highboot.errors import HighbootError
from highboot.packaging.pecheck import IMAGE_SCN_MEM_EXECUTE, IMAGE_SCN_MEM_WRITE, check_pe, require_valid


def loader(built: dict) -> Path:
    return built["dir"] / "loader" / "highboot-loader.efi"


def test_built_loader_passes_every_check(built: dict) -> None:
    results = require_valid(loader(built))
    assert {r.name for r in results} >= {"machine AMD64", "subsystem EFI application", "SectionAlignment 4096",
                                         "NX_COMPAT", "no section both writable and executable",
                                         "relocations present", "entry point in an executable section"}
    assert all(r.ok for r in results)
    # Issue 26's budget: well under Limine's 232 KiB, under 128 KiB (no bytes saved by dropping instructions).
    assert loader(built).stat().st_size < 128 * 1024


def patched(built: dict, tmp_path: Path, edit) -> Path:
    pe = pefile.PE(str(loader(built)))
    edit(pe)
    out = tmp_path / "patched.efi"
    pe.write(str(out))
    pe.close()
    return out


@pytest.mark.parametrize("edit, failing", [
    (lambda pe: setattr(pe.sections[0], "Characteristics",
                        pe.sections[0].Characteristics | IMAGE_SCN_MEM_WRITE | IMAGE_SCN_MEM_EXECUTE),
     "no section both writable and executable"),
    (lambda pe: setattr(pe.OPTIONAL_HEADER, "DllCharacteristics", 0), "NX_COMPAT"),
    (lambda pe: setattr(pe.OPTIONAL_HEADER, "Subsystem", 3), "subsystem EFI application"),
    (lambda pe: setattr(pe.FILE_HEADER, "Machine", 0x14C), "machine AMD64"),
    (lambda pe: setattr(pe.OPTIONAL_HEADER.DATA_DIRECTORY[5], "Size", 0), "relocations present"),
    (lambda pe: setattr(pe.OPTIONAL_HEADER, "AddressOfEntryPoint", 0x10), "entry point in an executable section"),
])
def test_each_check_can_fail(built: dict, tmp_path: Path, edit, failing: str) -> None:
    bad = patched(built, tmp_path, edit)
    assert [r.name for r in check_pe(bad) if not r.ok] == [failing]
    with pytest.raises(HighbootError, match=failing):
        require_valid(bad)


def test_not_a_pe(tmp_path: Path) -> None:
    f = tmp_path / "x.efi"
    f.write_bytes(b"MZ" + struct.pack("<I", 7) * 20)
    with pytest.raises(HighbootError, match="not a readable PE"):
        check_pe(f)


def test_toolchain_found_here() -> None:
    rust = toolchain.find_rust()
    assert "rustc" in rust.version
    args = rust.cargo_args("x86_64-unknown-none")
    assert ("-Zbuild-std=core,compiler_builtins" in args) == rust.build_std
    # The loader's own spec always builds core, and links PE/COFF with lld-link.
    spec = str(Path(__file__).resolve().parents[1] / "loader" / "x86_64-highboot-uefi.json")
    args = rust.cargo_args(spec)
    assert "-Zbuild-std=core,compiler_builtins" in args and "-Zjson-target-spec" in args
    assert any("linker=" in a and "lld-link" in a for a in args), args


def test_no_toolchain_gives_one_clear_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "rustc"
    fake.write_text("#!/bin/sh\n[ \"$1\" = --version ] && echo 'rustc 0.0.0' && exit 0\n"
                    "[ \"$1\" = --print ] && [ \"$2\" = sysroot ] && echo /nonexistent && exit 0\nexit 1\n")
    fake.chmod(0o755)
    (tmp_path / "cargo").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "cargo").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("RUSTC", raising=False)
    monkeypatch.setattr(toolchain, "_candidates", lambda explicit: [str(fake)])
    with pytest.raises(HighbootError) as err:
        toolchain.find_rust()
    assert "rust-src has its vendored crates" in str(err.value)
    assert "rustc-web cargo-web rust-web-src" in str(err.value)


def test_no_rust_build_warned(built: dict) -> None:
    """Every loader and kernel cargo built for the tests compiled without a warning (the build keeps
    cargo's output as <artifact>.warnings when it warned)."""
    warned = sorted(built["dir"].rglob("*.warnings"))
    assert not warned, "\n".join(f"{p}:\n{p.read_text()[-1500:]}" for p in warned[:3])


@pytest.mark.parametrize("crate", ["loader", "kernel"])
def test_rust_sources_are_rustfmt_clean(crate: str) -> None:
    """rustfmt.toml at the top is the style; rustfmt follows `mod` items from main.rs."""
    rustfmt = shutil.which("rustfmt")
    assert rustfmt, "rustfmt not found: `tools/setup --test` installs it (Debian package rustfmt-web)"
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([rustfmt, "--check", str(root / crate / "src" / "main.rs")], capture_output=True,
                          text=True, cwd=root, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
