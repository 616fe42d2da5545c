"""The build steps SCons runs, as plain functions (each one also runs without SCons)."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from highboot.build.records import remove
from highboot.build.toolchain import RustToolchain, target_name
from highboot.errors import HighbootError
from highboot.inputs.fsverity import file_digest
from highboot.inputs.kernel import read_kernel
from highboot.inputs.layout import load_layout
from highboot.inputs.modules import module_esp_file, module_from_json, plan_modules
from highboot.options.framebuffer import parse_fb_mode
from highboot.options.schema import BY_NAME
from highboot.packaging.pecheck import require_valid
from highboot.planning.planner import (
    DEFAULT_KERNEL_ESP_PATH,
    KERNEL_ESP_FILE,
    LOADER_ESP_FILE,
    BootPlan,
    plan_boot,
)
from highboot.protocols import PROTOCOLS, bootinfo, protocol_named
from highboot.rendering import cpu_bits
from highboot.rendering import loader_abi as abi
from highboot.rendering.templates import render, write_atomic


def make_plan(kernel: str, layout: str, out: str, options: dict[str, Any]) -> None:
    """plan.json for kernel in layout, with the planner's options (highboot.options.config.plan_inputs)."""
    plan = plan_boot(read_kernel(kernel), load_layout(layout), cmdline=options["cmdline"],
                     kernel_esp_path=DEFAULT_KERNEL_ESP_PATH, kaslr=options["kaslr"],
                     kernel_base=options["kernel_base"], smp=options["smp"], ap_stack_size=options["ap_stack_size"],
                     max_cpus=options["max_cpus"], keep_kernel_file=options["keep_kernel_file"],
                     direct_map_exec=options["direct_map_exec"],
                     framebuffer=parse_fb_mode(options["fb_mode"]),
                     modules=tuple(plan_modules([module_from_json(m) for m in options["modules"]])),
                     fault=options["fault"], protocol=options["protocol"])
    write_atomic(out, json.dumps(plan.to_json(), indent=1, sort_keys=True) + "\n")


def loader_features(plan_file: str) -> list[str]:
    """The loader crate's cargo features for a plan: the protocol the kernel speaks (the loader
    carries only that protocol's handover)."""
    protocol = BootPlan.from_json(plan_file).handover.protocol
    return [] if protocol == "highboot" else [protocol]


def fault_variants() -> dict[str, str]:
    """The faults a test build can inject (the FAULT option's choices but "none") and their names
    as variants of plan.rs's `enum Fault`: no_memory -> NoMemory."""
    return {c: "".join(w.capitalize() for w in c.split("_")) for c in BY_NAME["FAULT"].choices if c != "none"}


def render_context(plan_file: str | None, extra: dict[str, Any]) -> dict[str, Any]:
    plan = BootPlan.from_json(plan_file) if plan_file else None
    protocol = protocol_named(plan.handover.protocol if plan else "highboot")
    kernels = {k: v for p in PROTOCOLS.values() for k, v in p.kernel_context().items()}
    ctx: dict[str, Any] = {**bootinfo.context(), **abi.context(), **cpu_bits.context(), **kernels,
                           **protocol.context(),
                           "faults": fault_variants()}
    if plan:
        ctx["plan"] = plan
    ctx.update(extra)
    return ctx


def render_file(template_dirs: list[str], template: str, out: str, plan_file: str | None,
                extra: dict[str, Any]) -> None:
    write_atomic(out, render(template_dirs, template, render_context(plan_file, extra)))


def core_is_built(target_dir: str, target: str) -> bool:
    return any(Path(target_dir, target_name(target), "release", "deps").glob("libcore-*.rlib"))


def cargo_build(rust: RustToolchain, crate_dir: str, target: str, target_dir: str, artifact: str, out: str,
                env_extra: dict[str, str], rustflags: list[str], verbose: bool,
                features: list[str] | None = None) -> None:
    """Build crate_dir for target (with these cargo features) and copy artifact (relative to the
    profile dir) to out."""
    if rust.builds_std(target) and rust.vendor is None:
        raise HighbootError(f"building for the target spec {target} needs core's sources: {rust.rustc} has no "
                            "rust-src (rustup component add rust-src, or Debian's rust-web-src with rustc-web)",
                            file=crate_dir, field="toolchain")
    cmd = rust.cargo_args(target) + ["--manifest-path", str(Path(crate_dir, "Cargo.toml"))]
    if features:
        cmd += ["--features", ",".join(features)]
    if rustflags:
        cmd += ["--config", f"target.{target_name(target)}.rustflags={json.dumps(rustflags)}"]
    env = {k: v for k, v in os.environ.items() if k not in ("RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS")}
    env.update(rust.cargo_env(target))
    env.update(env_extra)
    env["CARGO_TARGET_DIR"] = str(Path(target_dir).resolve())
    if verbose:
        print(" ".join(f"{k}={v}" for k, v in sorted({**rust.cargo_env(target), **env_extra}.items())), " ".join(cmd))
    elif rust.builds_std(target) and not core_is_built(target_dir, target):
        print(f"  (first build: compiling core for {target} from rust-src, about a minute)", flush=True)
    Path(target_dir).mkdir(parents=True, exist_ok=True)
    # Builds of several configurations (or several scons runs) may share one target dir: hold a
    # lock over cargo *and* the copy, so nobody replaces the artifact in between.
    with open(Path(target_dir, ".highboot-lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _forget_crate(crate_dir, Path(target_dir, target_name(target), "release"))
        proc = subprocess.run(cmd, env=env, stdout=None if verbose else subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, check=False)
        if not verbose and (proc.returncode != 0 or "warning" in proc.stdout):
            sys.stdout.write(proc.stdout)
        # What the compiler warned about, beside the artifact (tests/test_checks.py wants none).
        warnings = Path(f"{out}.warnings")
        if not verbose and "warning" in proc.stdout:
            warnings.write_text(proc.stdout)
        else:
            warnings.unlink(missing_ok=True)
        if proc.returncode != 0:
            raise HighbootError(f"cargo build failed for {target} (exit {proc.returncode})", file=crate_dir)
        built = Path(target_dir, target_name(target), "release", artifact)
        tmp = Path(out).with_name(f".{Path(out).name}.tmp")
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built, tmp)
        os.replace(tmp, out)


def _forget_crate(crate_dir: str, profile_dir: Path) -> None:
    """Make cargo compile the crate itself again (not core, not its dependencies). SCons runs cargo
    only when the content of something the crate is built from changed, and cargo, which judges its
    sources by their mtimes, would take a source replaced by one with an older mtime for unchanged."""
    try:
        package = tomllib.loads(Path(crate_dir, "Cargo.toml").read_text())["package"]["name"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return  # cargo itself says what is wrong with the manifest
    for fingerprint in profile_dir.glob(f".fingerprint/{package}-*"):
        shutil.rmtree(fingerprint, ignore_errors=True)


def check_and_install_loader(source: str, out: str) -> None:
    """Copy the loader to out only when every PE check passes."""
    require_valid(source)
    write_atomic(out, Path(source).read_bytes())


def install_esp(esp_dir: str, files: list[tuple[str, str]], plan_file: str) -> None:
    """Make the ESP directory hold exactly `files` ((source, path in the ESP) pairs: the loader, the
    kernel, the modules), replaced whole: the new tree is written beside it and swapped into its
    place in one rename, so a build killed at any instant leaves the old ESP or the new one, never a
    mix, and nothing from an earlier build (a module fewer, a stray file) stays. Before the swap,
    every copy of the kernel and of each module is checked against the size and digest in the plan
    the loader was built from: a file that changed while the build ran stops the build instead of
    making an ESP whose loader refuses it."""
    esp = Path(esp_dir)
    staging = esp.with_name(f".{esp.name}.new")
    remove(staging)  # a killed build's
    plan = BootPlan.from_json(plan_file)
    planned = {KERNEL_ESP_FILE: (plan.kernel.size, plan.kernel.digest),
               **{module_esp_file(i): (m.size, m.digest) for i, m in enumerate(plan.options.modules)}}
    try:
        if {inside for _, inside in files} != {LOADER_ESP_FILE, *planned}:
            raise HighbootError(f"the ESP's files {sorted(inside for _, inside in files)} are not the ones the plan "
                                f"lists {sorted(planned)}", file=plan_file)
        for source, inside in files:
            copy = staging / inside
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, copy)
            if inside in planned:
                size, digest = planned[inside]
                found, found_size = file_digest(str(copy))
                if (found_size, found.hex()) != (size, digest):
                    raise HighbootError(f"changed while the build ran: {found_size} bytes, digest {found.hex()[:16]}"
                                        f"..., but the loader was built for {size} bytes, digest {digest[:16]}...; "
                                        "run scons again", file=source)
        if esp.is_dir() and not esp.is_symlink():
            _swap_dirs(staging, esp)
        else:
            remove(esp)  # not a directory of ours (a file, a link): what is ours goes in its place
            os.rename(staging, esp)
    except BaseException:
        _prune_empty_dirs(esp)  # SCons made its targets' directories before this step ran
        raise
    finally:
        remove(staging)  # after the swap: the old ESP


def _prune_empty_dirs(top: Path) -> None:
    if not top.is_dir() or top.is_symlink():
        return
    for d, subdirs, files in os.walk(top, topdown=False):
        if not subdirs and not files and Path(d) != top:
            try:
                os.rmdir(d)
            except OSError:
                pass  # not empty after all (os.walk listed it before its children went)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _swap_dirs(a: Path, b: Path) -> None:
    """Exchange two directories in one step (Linux renameat2 RENAME_EXCHANGE). Where the file system
    cannot, b is moved aside and a put in its place: for an instant b's path is empty (a build
    killed then leaves the old ESP in a's place; the next build installs it again)."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), str(b))
    aside = b.with_name(f".{b.name}.old")
    remove(aside)
    os.rename(b, aside)
    os.rename(a, b)
    os.rename(aside, a)


# ------------------------------------------------------------------------------------ C kernels

#: gcc for a C kernel linked with the rendered linker script (highboot.h from the same build).
C_FLAGS = ("-O2 -Wall -Wextra -Werror -ffreestanding -nostdlib -static -no-pie -fno-pic -mcmodel=kernel "
           "-mno-red-zone -mgeneral-regs-only -fno-stack-protector -fno-asynchronous-unwind-tables "
           "-Wl,--build-id=none").split()
#: The same, position independent, linked by lld: R_X86_64_RELATIVE relocations left in the file.
C_PIE_FLAGS = [f for f in C_FLAGS if f not in ("-static", "-no-pie", "-fno-pic", "-mcmodel=kernel")] + [
    "-fPIE", "-pie", "-fuse-ld=lld", "-Wl,--no-dynamic-linker"]
#: Kernels as their toolchains emit them (tests): linked at 0 by the toolchain's own default layout,
#: no highboot linker script. Static PIEs with RELA (GNU ld) and RELR (GNU ld, lld), and a kernel
#: linked as a shared object, whose calls go through a PLT (GLOB_DAT, JUMP_SLOT to symbols).
SHAPE_C_FLAGS = ("-O2 -Wall -Wextra -Werror -ffreestanding -nostdlib -mno-red-zone -mgeneral-regs-only "
                 "-fno-stack-protector -fasynchronous-unwind-tables -Wl,--eh-frame-hdr -Wl,--build-id=none").split()
_STATIC_PIE = ["-static-pie", "-fPIE"]
C_SHAPES = {"gcc-rela": _STATIC_PIE, "gcc-relr": [*_STATIC_PIE, "-Wl,-z,pack-relative-relocs"],
            "lld-relr": [*_STATIC_PIE, "-fuse-ld=lld", "-Wl,--pack-dyn-relocs=relr"],
            "lld-shared": ["-shared", "-fPIC", "-fuse-ld=lld", "-Wl,-e,_start", "-Wl,-z,relro,-z,now"]}


def compile_c_kernel(source: str, out: str, include: str, *, linker_script: str | None = None, pie: bool = False,
                     shape: str = "", verbose: bool = False) -> None:
    """gcc, freestanding, with the rendered highboot.h: linked with the rendered linker script, or
    (shape) as the toolchain links by default."""
    if shape:
        flags, script = SHAPE_C_FLAGS + C_SHAPES[shape], []
    else:
        flags, script = (C_PIE_FLAGS if pie else C_FLAGS), [f"-Wl,-T,{linker_script}"]
    cmd = ["gcc", *flags, f"-I{include}", *script, "-o", out, source]
    if verbose:
        print(" ".join(cmd))
    if subprocess.call(cmd) != 0:
        raise HighbootError("gcc failed (its messages are above)", file=source)


# ------------------------------------------------------------------------- Limine test kernels

#: highboot's Limine-protocol sample kernel and its linker script (the script takes the link address
#: from KERNEL_BASE: 0 for a PIE, the top 2 GiB for a fixed kernel).
LIMINE_KERNEL = "examples/limine-kernel/kernel.c"
LIMINE_LINKER_SCRIPT = "examples/limine-kernel/link.ld"
#: gcc for the Limine sample kernel (examples/limine-kernel/README.md; tools/limine-reference builds it
#: with these too), then per shape: a PIE linked at 0 by GNU ld or by ld.lld (which keeps its pointers
#: only in relocation addends), a fixed kernel at the start of the top 2 GiB.
LIMINE_C_FLAGS = ("-std=c11 -ffreestanding -nostdlib -fno-stack-protector -fno-stack-check -mno-red-zone "
                  "-mgeneral-regs-only -O2 -Wall -Wextra -Werror -fno-asynchronous-unwind-tables "
                  "-fno-unwind-tables").split()
LIMINE_LD_FLAGS = ["-Wl,-z,max-page-size=0x1000", "-Wl,--build-id=none"]
LIMINE_SHAPES = {
    "gcc-pie": ["-fPIE", "-static-pie"],
    "gcc-fixed": ["-mcmodel=kernel", "-fno-pic", "-no-pie", "-static", "-Wl,--defsym=KERNEL_BASE=0xffffffff80000000"],
    "lld-pie": ["-fPIE", "-static-pie", "-fuse-ld=lld"],
}


def limine_kernel_command(source: str, out: str, include: str, linker_script: str, shape: str,
                          defines: tuple[tuple[str, str], ...]) -> list[str]:
    """The gcc command that builds the Limine sample kernel in one shape, with -D knobs (NAME, C
    token: a string's quotes included) and the header rendered into `include`."""
    if shape not in LIMINE_SHAPES:
        raise HighbootError(f"unknown Limine kernel shape {shape!r}; expected one of: {', '.join(LIMINE_SHAPES)}",
                            file=source, field="shape")
    return ["gcc", *LIMINE_C_FLAGS, *LIMINE_SHAPES[shape], *(f"-D{name}={value}" for name, value in defines),
            f"-I{include}", f"-Wl,-T,{linker_script}", *LIMINE_LD_FLAGS, "-o", out, source]


def compile_limine_kernel(command: list[str], source: str, verbose: bool = False) -> None:
    if verbose:
        print(" ".join(command))
    if subprocess.call(command) != 0:
        raise HighbootError("gcc failed (its messages are above)", file=source)


def sign_loader(source: str, out: str, vars_out: str, key: str, cert: str) -> None:
    """SIGN=1: sign the checked loader with the project's db key (made on first use) and write an
    OVMF VARS file with its certificate enrolled."""
    from highboot.booting.qemu import find_firmware
    from highboot.packaging.signing import enroll_vars, ensure_keys, sign

    key_path, cert_path = ensure_keys(key, cert)
    sign(source, out, key_path, cert_path)
    enroll_vars(find_firmware(secure_boot=True).vars, cert_path, vars_out)


def show_map(layout_path: str, plan_file: str, out_dir: str) -> None:
    """scons map: print the planned address space; write it as text and SVG beside."""
    from highboot.planning.addrmap import format_map, svg_map

    layout = load_layout(layout_path)
    plan = BootPlan.from_json(plan_file)
    text = format_map(layout, plan)
    print(text, end="")
    write_atomic(Path(out_dir, "map.txt"), text)
    write_atomic(Path(out_dir, "map.svg"), svg_map(layout, plan))
    print(f"(written to {out_dir}/map.txt and {out_dir}/map.svg)")


def run_qemu(esp_dir: str, *, kernel: str, plan_file: str, out_dir: str, gdb: bool, kaslr: bool, cpu: str,
             memory: str, graphic: bool, secure_vars: str | None, as_image: bool | None = None, smp: int = 1,
             extra: list[str] | None = None) -> int:
    """scons run / debug: boot the ESP; debug first writes debug.gdb (the kernel's symbols, a break
    at its entry) and QEMU waits for gdb. An ESP too large for QEMU's `fat:` directory disk (or
    as_image=True) boots packed into out_dir/run.img, a GPT disk image like `scons image` makes."""
    from highboot.booting.qemu import gdb_script, run_interactive

    if gdb:
        script = Path(out_dir, "debug.gdb")
        entry = BootPlan.from_json(plan_file).placement.entry
        write_atomic(script, gdb_script(str(Path(kernel).resolve()), entry))
        print(f"QEMU waits for gdb; in another terminal: gdb -x {script}  (then: continue)")
        if kaslr:
            print("KASLR=1: the kernel runs at its link address plus the slide the loader prints "
                  "(\"kernel slide 0x...\"); in gdb: symbol-file -o <slide> <kernel> and break there, "
                  "or debug a KASLR=0 build")
    return run_interactive(esp_dir, cpu=cpu, memory=memory, graphic=graphic, gdb=gdb, secure_vars=secure_vars,
                           image=Path(out_dir, RUN_IMAGE), as_image=as_image, smp=smp, extra=extra)


#: The disk image scons run / debug boots an ESP from when it is too large for QEMU's `fat:` disk.
RUN_IMAGE = "run.img"
