"""What the comparisons boot, built under build/bench from tools/bench-assets: the firmware-floor and
memory-map fragmenter UEFI apps, a multiboot2 kernel, GRUB's standalone image, and an ESP for each."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from benchkit.common import ASSETS, WORK, child_env, run, say
from highboot.build.toolchain import find_rust
from highboot.errors import HighbootError

GRUB_MODULES = "normal multiboot2 search search_fs_file fat part_msdos part_gpt"
BOOT_PATH = "EFI/BOOT/BOOTX64.EFI"


@dataclass
class Assets:
    """What the comparisons boot, each an ESP directory; errors say why one could not be built."""

    floor: Path | None = None
    fragment: Path | None = None
    grub: Path | None = None  # grub-mkstandalone with only the modules this boot needs
    grub_default: Path | None = None  # grub-mkstandalone as it comes (every module)
    sizes: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def build_efi_apps(errors: dict[str, str]) -> dict[str, Path]:
    """tools/bench-assets/efi (floor.efi, fragment.efi) with the toolchain recipe highboot's loader uses."""
    try:
        rust = find_rust()
    except HighbootError as exc:
        errors["efi_apps"] = str(exc)
        return {}
    target = "x86_64-unknown-uefi"
    target_dir = WORK / "cargo"
    cmd = rust.cargo_args(target) + ["--manifest-path", str(ASSETS / "efi" / "Cargo.toml")]
    env = {k: v for k, v in child_env().items() if k not in ("RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS")}
    env.update(rust.cargo_env())
    env["CARGO_TARGET_DIR"] = str(target_dir)
    if not any(target_dir.glob(f"{target}/release/deps/libcore-*.rlib")) and rust.build_std:
        say("   (first run: building core for the benchmark's UEFI apps, about a minute)")
    proc = run(cmd, env=env)
    if proc.returncode != 0:
        errors["efi_apps"] = f"cargo build failed: {proc.stderr[-1500:]}"
        return {}
    return {name: target_dir / target / "release" / f"{name}.efi" for name in ("floor", "fragment")}


def build_multiboot2_kernel(errors: dict[str, str]) -> Path | None:
    """tools/bench-assets/multiboot2/kernel.S: a kernel whose first instruction reads the TSC."""
    src = ASSETS / "multiboot2"
    out = WORK / "mb2"
    out.mkdir(parents=True, exist_ok=True)
    steps = [["gcc", "-m32", "-c", "-o", str(out / "kernel.o"), str(src / "kernel.S")],
             ["ld", "-m", "elf_i386", "-n", "--no-warn-rwx-segments", "-T", str(src / "kernel.ld"),
              "-o", str(out / "kernel"), str(out / "kernel.o")]]
    for cmd in steps:
        if not shutil.which(cmd[0]):
            errors["multiboot2_kernel"] = f"{cmd[0]} not found (tools/setup --bench installs it)"
            return None
        proc = run(cmd)
        if proc.returncode != 0:
            errors["multiboot2_kernel"] = f"{' '.join(cmd)}: {proc.stderr[-800:]}"
            return None
    return out / "kernel"


def build_grub(errors: dict[str, str]) -> dict[str, Path]:
    """GRUB's standalone EFI image with grub.cfg embedded: only the modules needed, and as it comes."""
    tool = shutil.which("grub-mkstandalone")
    if not tool or not Path("/usr/lib/grub/x86_64-efi").is_dir():
        errors["grub"] = ("grub-mkstandalone or /usr/lib/grub/x86_64-efi missing: "
                          "run tools/setup --bench (grub-efi-amd64-bin, grub-common)")
        return {}
    out = WORK / "grub"
    out.mkdir(parents=True, exist_ok=True)
    cfg = f"boot/grub/grub.cfg={ASSETS / 'multiboot2' / 'grub.cfg'}"
    variants = {"grub": ["--install-modules", GRUB_MODULES, "--locales=", "--fonts=", "--themes="],
                "grub_default": []}
    images = {}
    for name, options in variants.items():
        image = out / f"{name}.efi"
        proc = run([tool, "-O", "x86_64-efi", *options, "-o", str(image), cfg])
        if proc.returncode != 0:
            errors[name] = f"grub-mkstandalone failed: {proc.stderr[-800:]}"
            continue
        images[name] = image
    return images


def grub_with_module(errors: dict[str, str], kernel: Path | None, module: Path, name: str) -> Path | None:
    """An ESP where GRUB (only the modules it needs) boots the multiboot2 kernel with `module` as a
    multiboot2 module (module2), or with none when it is empty: GRUB's side of the module figures."""
    tool = shutil.which("grub-mkstandalone")
    if kernel is None or not tool:
        errors.setdefault("grub", "grub-mkstandalone missing: run tools/setup --bench")
        return None
    out = WORK / "grub"
    out.mkdir(parents=True, exist_ok=True)
    base = (ASSETS / "multiboot2" / "grub.cfg").read_text()
    has_module = module.stat().st_size > 0
    cfg = out / f"{name}.cfg"
    cfg.write_text(base.replace("multiboot2 /kernel\n", "multiboot2 /kernel\nmodule2 /blob\n") if has_module else base)
    image = out / f"{name}.efi"
    proc = run([tool, "-O", "x86_64-efi", "--install-modules", GRUB_MODULES, "--locales=", "--fonts=", "--themes=",
                "-o", str(image), f"boot/grub/grub.cfg={cfg}"])
    if proc.returncode != 0:
        errors["grub"] = f"grub-mkstandalone failed: {proc.stderr[-800:]}"
        return None
    files = {BOOT_PATH: image, "kernel": kernel}
    if has_module:
        files["blob"] = module
    return make_esp(name, files)


def make_esp(name: str, files: dict[str, Path]) -> Path:
    """A fresh ESP directory under build/bench with files at the given paths."""
    esp = WORK / f"esp-{name}"
    shutil.rmtree(esp, ignore_errors=True)
    for rel, src in files.items():
        dest = esp / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    return esp


def build_assets(highboot_esp: Path) -> Assets:
    """Every comparison ESP; what cannot be built is left None with its reason in `errors`."""
    a = Assets()
    apps = build_efi_apps(a.errors)
    kernel = build_multiboot2_kernel(a.errors)
    grubs = build_grub(a.errors)
    if "floor" in apps:
        a.floor = make_esp("floor", {BOOT_PATH: apps["floor"]})
        a.sizes["floor_efi_bytes"] = apps["floor"].stat().st_size
    if "fragment" in apps:
        # highboot's ESP with the fragmenter in front: it starts \EFI\BOOT\HIGHBOOT.EFI.
        files = {str(p.relative_to(highboot_esp)): p for p in highboot_esp.rglob("*") if p.is_file()}
        files["EFI/BOOT/HIGHBOOT.EFI"] = files.pop(BOOT_PATH)
        files[BOOT_PATH] = apps["fragment"]
        a.fragment = make_esp("fragment", files)
    for name, image in grubs.items():
        a.sizes[f"{name}_efi_bytes"] = image.stat().st_size
        if kernel:
            setattr(a, name, make_esp(name.replace("_", "-"), {BOOT_PATH: image, "kernel": kernel}))
    return a
