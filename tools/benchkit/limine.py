"""What the limine section boots: a Limine-protocol bench kernel (tools/bench-assets/limine), highboot
built for it (PROTOCOL=auto reads the protocol from the kernel), and an ESP where Limine itself boots
the same ELF.

Limine is the prebuilt v8.2.0 UEFI binary from the local git mirror of its repository (`git show
v8.2.0-binary:BOOTX64.EFI`), or a BOOTX64.EFI given with --limine. A machine without the mirror runs
the rest of the section and says Limine is not available. Limine is not built here from its sources:
docs/testing.md says why.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchkit.assets import BOOT_PATH, make_esp
from benchkit.builds import scons_command
from benchkit.common import ASSETS, ROOT, WORK, child_env

LIMINE_MIRROR = Path("/work/.mirror/limine-bootloader+limine/repo")
LIMINE_REF = "v8.2.0-binary"
NOT_AVAILABLE = "Limine: not available (no mirror; pass --limine FILE)"
# The kernel is linked at the start of the top 2 GiB (fixed, so that neither loader slides it) by the
# Limine sample kernel's script: three page-aligned PT_LOADs (R+X, R, R+W), requests in .data.
LINK_SCRIPT = ROOT / "examples" / "limine-kernel" / "link.ld"
KERNEL_BASE = 0xFFFFFFFF80000000
KERNEL_CFLAGS = ("-std=c11", "-O2", "-ffreestanding", "-nostdlib", "-static", "-no-pie", "-fno-pic", "-mcmodel=kernel",
                 "-mno-red-zone", "-mgeneral-regs-only", "-fno-stack-protector", "-fno-asynchronous-unwind-tables",
                 "-fno-unwind-tables", "-Wall", "-Wextra", "-Werror", "-Wl,-z,max-page-size=0x1000",
                 "-Wl,--build-id=none")
# What the kernel asks for (tools/bench-assets/limine/kernel.c): bootloader info, framebuffer, HHDM,
# memory map. A boot whose kernel saw fewer answers did not do the work the figures stand for.
REQUESTS_ASKED = 4
# Limine's configuration: boot the kernel at once (no menu, no timeout), as the GRUB image does.
LIMINE_CONF = ("timeout: 0\n"
               "\n"
               "/highboot bench\n"
               "    protocol: limine\n"
               "    kernel_path: boot():/kernel.elf\n")


@dataclass(frozen=True)
class LimineBinary:
    """Limine's BOOTX64.EFI for the section, or why there is none (path None)."""

    path: Path | None
    source: str  # where it came from, or why it is not available


def limine_binary(given: Path | None, mirror: Path = LIMINE_MIRROR, ref: str = LIMINE_REF,
                  out_dir: Path = WORK / "limine") -> LimineBinary:
    """--limine FILE when given; else BOOTX64.EFI of `ref` in the mirror, written into out_dir."""
    if given is not None:
        return LimineBinary(given, f"{given} (--limine)")
    if not (mirror / "HEAD").exists() and not (mirror / ".git").exists():
        return LimineBinary(None, NOT_AVAILABLE)
    proc = subprocess.run(["git", "-C", str(mirror), "show", f"{ref}:BOOTX64.EFI"], capture_output=True, check=False)
    if proc.returncode != 0 or not proc.stdout:
        why = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["empty file"]
        return LimineBinary(None, f"Limine: not available ({ref}:BOOTX64.EFI not in {mirror}: {why[0]}; "
                                  "pass --limine FILE)")
    out = out_dir / f"limine-{ref}.efi"
    out_dir.mkdir(parents=True, exist_ok=True)
    out.write_bytes(proc.stdout)
    return LimineBinary(out, f"Limine {ref.removesuffix('-binary').removeprefix('v')} prebuilt "
                             f"({mirror} {ref}:BOOTX64.EFI)")


def build_kernel(include: Path, out: Path) -> Path:
    """tools/bench-assets/limine/kernel.c with the rendered highboot-limine.h in `include`; raises
    RuntimeError with the compiler's message when it does not build."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["gcc", *KERNEL_CFLAGS, f"-I{include}", f"-Wl,-T,{LINK_SCRIPT}", f"-Wl,--defsym=KERNEL_BASE={KERNEL_BASE:#x}",
           "-o", str(out), str(ASSETS / "limine" / "kernel.c")]
    if not shutil.which(cmd[0]):
        raise RuntimeError("gcc not found")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr[-800:]}")
    return out


@dataclass(frozen=True)
class LimineBuild:
    """highboot built for the Limine bench kernel: the kernel and highboot's ESP for it."""

    kernel: Path
    esp: Path

    @property
    def loader(self) -> Path:
        return self.esp / BOOT_PATH


def build_highboot(include: Path, build_dir: Path, jobs: int) -> LimineBuild:
    """The bench kernel and highboot built for it (`KERNEL=... PROTOCOL=auto`, no modules, like the
    other sections' builds), sharing the main build's cargo cache. RuntimeError when either fails."""
    kernel = build_kernel(include, build_dir.parent / "kernel.elf")
    cmd = scons_command(f"-j{max(1, jobs)}", f"BUILD_DIR={build_dir}", f"CARGO_DIR={ROOT / 'build' / 'cargo'}",
                        f"KERNEL={kernel}", "PROTOCOL=auto")
    proc = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"scons KERNEL={kernel} PROTOCOL=auto failed: {(proc.stdout + proc.stderr)[-800:]}")
    return LimineBuild(kernel, build_dir / "esp")


def limine_esp(limine: Path, kernel: Path, name: str = "limine") -> Path:
    """An ESP where Limine boots `kernel` at once: BOOTX64.EFI, limine.conf at the root, the kernel."""
    conf = WORK / "limine" / "limine.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(LIMINE_CONF)
    return make_esp(name, {BOOT_PATH: limine, "limine.conf": conf, "kernel.elf": kernel})
