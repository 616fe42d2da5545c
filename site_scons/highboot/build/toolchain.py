"""Finding a Rust toolchain that can build highboot's loader and kernels.

The loader is built for its own JSON target spec (loader/x86_64-highboot-uefi.json: the built-in
x86_64-unknown-uefi with SSE on, which UEFI guarantees, for the vector digest code), and no rustc
has core installed for a spec: a rustc whose sysroot has rust-src with its vendored crates is
needed, to build core with -Zbuild-std, offline. Found, not assumed: the first such rustc; the
sample kernel's x86_64-unknown-none uses the installed target when that rustc has it. A machine
with none gets one message that says what to install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from highboot.errors import HighbootError

TARGETS = ("x86_64-unknown-uefi", "x86_64-unknown-none")
INSTALL_HINT = (
    "no usable Rust toolchain: need a rustc whose rust-src has its vendored crates, to build core "
    "offline for the loader's target spec (Debian 12: apt-get install rustc-web cargo-web rust-web-src lld); "
    "tools/setup installs them"
)


@dataclass(frozen=True)
class RustToolchain:
    rustc: str
    cargo: str
    version: str
    build_std: bool  # True: core is built from rust-src; False: the targets are installed
    vendor: str | None  # rust-src's vendored crates (crates.io replacement, offline)
    linkers: dict[str, str] = field(default_factory=dict)  # target -> linker program
    spec_linker: str | None = None  # the system's ld.lld, for JSON target specs; None: the spec's own

    def describe(self) -> str:
        how = "build-std from rust-src" if self.build_std else "installed targets"
        return f"{self.version} ({self.rustc}, {how})"

    def builds_std(self, target: str | None = None) -> bool:
        return self.build_std or (target is not None and is_target_spec(target))

    def cargo_env(self, target: str | None = None) -> dict[str, str]:
        env = {"RUSTC": self.rustc}
        if self.builds_std(target):
            env["RUSTC_BOOTSTRAP"] = "1"
        return env

    def cargo_args(self, target: str) -> list[str]:
        args = [self.cargo, "build", "--release", "--target", target, "--offline"]
        if self.builds_std(target):
            args += ["-Zbuild-std=core,compiler_builtins", "-Zbuild-std-features=compiler-builtins-mem"]
        if is_target_spec(target):
            args += ["-Zjson-target-spec"]
        if self.vendor:
            args += ["--config", "source.crates-io.replace-with='highboot-vendor'",
                     "--config", f"source.highboot-vendor.directory='{self.vendor}'"]
        if is_target_spec(target):
            # A UEFI spec links PE/COFF with lld-link, like the built-in UEFI target; others ELF.
            linker = self.linkers.get("x86_64-unknown-uefi") if _spec_os(target) == "uefi" else self.spec_linker
        else:
            linker = self.linkers.get(target)
        if linker:
            args += ["--config", f"target.{target_name(target)}.linker='{linker}'"]
        return args


def _spec_os(target: str) -> str:
    try:
        return str(json.loads(Path(target).read_text(encoding="utf-8")).get("os", ""))
    except (OSError, ValueError):
        return ""


def is_target_spec(target: str) -> bool:
    """A target given as the path of a JSON target spec rather than a built-in target's name."""
    return target.endswith(".json")


def target_name(target: str) -> str:
    """The name cargo files a target under: its [target.<name>] config table and the directory
    of its output (<target dir>/<name>/release). For a JSON spec, the file name without .json."""
    return Path(target).stem if is_target_spec(target) else target


def _run(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _has_target(rustc: str, target: str) -> bool:
    libdir = _run([rustc, "--print", "target-libdir", "--target", target])
    return bool(libdir) and any(Path(libdir).glob("libcore-*.rlib"))


def _candidates(explicit: str | None) -> list[str]:
    names = [explicit] if explicit else []
    names += [os.environ.get("RUSTC", ""), "rustc", "/usr/bin/rustc"]
    seen: list[str] = []
    for name in names:
        if not name:
            continue
        path = shutil.which(name)
        if path and os.path.realpath(path) not in (os.path.realpath(s) for s in seen):
            seen.append(path)
    return seen


def _cargo_for(rustc: str) -> str | None:
    beside = Path(rustc).with_name("cargo")
    if beside.exists():
        return str(beside)
    return shutil.which("cargo")


def _linkers(rustc: str, sysroot: str) -> dict[str, str]:
    """lld-link / ld.lld from the system, or nothing where rustc brings its own rust-lld."""
    has_rust_lld = any(Path(sysroot, "lib", "rustlib").glob("*/bin/rust-lld"))
    linkers: dict[str, str] = {}
    for target, tool in (("x86_64-unknown-uefi", "lld-link"), ("x86_64-unknown-none", "ld.lld")):
        found = shutil.which(tool)
        if found:
            linkers[target] = found
        elif not has_rust_lld:
            raise HighbootError(f"no linker for {target}: install lld (apt-get install lld) for {tool}",
                                file=rustc, field="linker")
    return linkers


def find_rust(explicit: str | None = None) -> RustToolchain:
    for rustc in _candidates(explicit):
        version = _run([rustc, "--version"])
        sysroot = _run([rustc, "--print", "sysroot"])
        cargo = _cargo_for(rustc)
        if not version or not sysroot or not cargo:
            continue
        library = Path(sysroot, "lib", "rustlib", "src", "rust", "library")
        vendor = library / "vendor"
        vendor_dir = str(vendor) if vendor.is_dir() else None
        spec_linker = shutil.which("ld.lld")
        if not ((library / "core" / "Cargo.toml").exists() and vendor_dir):
            continue
        installed = all(_has_target(rustc, t) for t in TARGETS)
        return RustToolchain(rustc, cargo, version, not installed, vendor_dir, _linkers(rustc, sysroot), spec_linker)
    raise HighbootError(INSTALL_HINT, field="toolchain")
