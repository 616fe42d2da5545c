"""Booting an ESP directory or a disk image under QEMU + OVMF (TCG), capturing serial output.

An ESP directory boots as QEMU's `fat:` directory disk when it fits one, else packed into a GPT
disk image first (highboot.image): whatever the build accepts also boots.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from highboot.errors import HighbootError

MIB = 1 << 20
OVMF_DIRS = ("/usr/share/OVMF", "/usr/share/ovmf", "/usr/share/edk2/ovmf", "/usr/share/qemu")
#: QEMU's isa-debug-exit device, on every boot (scons run, and a test of a kernel): a kernel ends QEMU by
#: writing a code (32 bits) to this port, and QEMU exits with debug_exit_status(code).
DEBUG_EXIT_PORT = 0xF4


def debug_exit_status(code: int) -> int:
    """QEMU's exit status after a kernel wrote `code` to the isa-debug-exit port."""
    return (code << 1) | 1


# QEMU's `fat:` directory disk (block/vvfat.c) is FAT16 on a disk of fixed geometry (1024
# cylinders, 16 heads, 63 sectors: 504 MiB, "capacity 516.06 MB" in its refusal), 8 KiB clusters.
# Measured with QEMU 7.2 (tests/test_run_media.py checks it again): a directory holding one file
# takes it up to 528,138,240 bytes, 64,470 clusters; every other file takes ceil(size / 8 KiB)
# clusters (an empty one none), every subdirectory ceil(32 bytes x its entries / 8 KiB), where
# each name is one short entry plus one long-name entry per 13 characters, and "." and ".." one
# each; the root directory has 512 entries, one of them the volume label. `fat:32:` is no way
# out: the same disk, and it takes less (527,892,480 bytes in one file).
VVFAT_CLUSTER = 8 << 10
VVFAT_CLUSTERS = 64_470
VVFAT_ROOT_ENTRIES = 512
#: Clusters left unused on purpose (4 MiB), should another QEMU count a little differently.
VVFAT_MARGIN = 512


@dataclass(frozen=True)
class Firmware:
    code: str
    vars: str
    secure_boot: bool = False


def find_firmware(flavor: str = "4M", secure_boot: bool = False) -> Firmware:
    """OVMF code + vars template: flavor "4M" (OVMF_CODE_4M.fd) or "2M" (OVMF_CODE.fd)."""
    suffix = "_4M" if flavor == "4M" else ""
    code_name = f"OVMF_CODE{suffix}.secboot.fd" if secure_boot else f"OVMF_CODE{suffix}.fd"
    # Secure Boot: Debian's snakeoil-enrolled VARS where there is one, else the plain VARS (a caller
    # enrolls its own key with signing.enroll_vars).
    vars_names = [f"OVMF_VARS{suffix}.snakeoil.fd"] if secure_boot else []
    vars_names.append(f"OVMF_VARS{suffix}.fd")
    vars_name = vars_names[0]
    env_code, env_vars = os.environ.get("HIGHBOOT_OVMF_CODE"), os.environ.get("HIGHBOOT_OVMF_VARS")
    if env_code and env_vars and not secure_boot:
        return Firmware(env_code, env_vars)
    for d in OVMF_DIRS:
        code = Path(d, code_name)
        vars_ = next((Path(d, n) for n in vars_names if Path(d, n).exists()), None)
        if code.exists() and vars_ is not None:
            return Firmware(str(code), str(vars_), secure_boot)
    raise HighbootError(f"OVMF firmware {code_name} / {vars_name} not found in {', '.join(OVMF_DIRS)}; "
                        "install it with: apt-get install ovmf", field="firmware")


@dataclass(frozen=True)
class FatDirectoryNeeds:
    """What an ESP directory takes as QEMU's `fat:` disk."""

    clusters: int  # data clusters: files and subdirectories (VVFAT_CLUSTER bytes each)
    root_entries: int  # directory entries in the root, the volume label's included

    @property
    def fits(self) -> bool:
        """With VVFAT_MARGIN clusters to spare (the root's entries are exact: a fixed table)."""
        return self.clusters + VVFAT_MARGIN <= VVFAT_CLUSTERS and self.root_entries <= VVFAT_ROOT_ENTRIES


def _name_entries(name: str) -> int:
    """A short entry and the long-name entries after it (13 UTF-16 code units each)."""
    return 1 + -(-len(name.encode("utf-16-le")) // 26)


def fat_directory_needs(esp: str | Path) -> FatDirectoryNeeds:
    """Count what the tree `esp` takes in QEMU's `fat:` directory disk, as vvfat lays it out."""
    clusters, root_entries = 0, 1
    for root, dirnames, filenames in os.walk(esp):
        entries = sum(_name_entries(n) for n in dirnames + filenames)
        if Path(root) == Path(esp):
            root_entries += entries
        else:
            clusters += -(-(2 + entries) * 32 // VVFAT_CLUSTER)
        for name in filenames:
            clusters += -(-os.stat(Path(root, name)).st_size // VVFAT_CLUSTER)
    return FatDirectoryNeeds(clusters, root_entries)


@dataclass(frozen=True)
class BootMedium:
    """What QEMU is given: a disk image, or an ESP directory as its `fat:` disk."""

    path: Path
    how: str  # "fat" (the directory as QEMU's FAT16 directory disk) or "image" (a raw disk image)
    message: str  # one line saying which way it boots, and why


def boot_medium(media: str | Path, image: str | Path, *, as_image: bool | None = None) -> BootMedium:
    """The way to boot `media`: a disk image as it is; an ESP directory as QEMU's FAT16 directory
    disk when it fits one (fat_directory_needs), else packed into the GPT disk image `image` (made
    here, all or nothing, with highboot.packaging.image.build_image). as_image: True packs the directory
    whatever its size, False never packs it (QEMU then refuses a directory that does not fit)."""
    media = Path(media)
    if not media.is_dir():
        return BootMedium(media, "image", f"highboot: booting the disk image {media}")
    needs = fat_directory_needs(media)
    used = f"{needs.clusters * VVFAT_CLUSTER / MIB:.1f} MiB"
    room = f"{(VVFAT_CLUSTERS - VVFAT_MARGIN) * VVFAT_CLUSTER / MIB:.0f} MiB"
    if as_image is None and not needs.fits:
        why = (f"needs {used}, more than QEMU's FAT16 directory disk holds (about {room})"
               if needs.root_entries <= VVFAT_ROOT_ENTRIES else
               f"has {needs.root_entries - 1} directory entries at its root, more than QEMU's FAT16 directory "
               f"disk holds ({VVFAT_ROOT_ENTRIES - 1})")
    elif as_image:
        why = "packed as asked"
    else:
        return BootMedium(media, "fat", f"highboot: booting {media} as QEMU's FAT16 directory disk "
                                        f"(fat:, {used} of about {room})")
    from highboot.packaging.image import build_image

    print(f"highboot: packing {media} into {image} ...", flush=True)
    build_image(media, image)
    return BootMedium(Path(image), "image", f"highboot: booting {media} packed into the disk image {image} "
                                            f"(GPT, FAT32; {why})")


@dataclass
class BootResult:
    status: int | None  # QEMU's exit status; None when it was killed at the timeout
    serial: str
    seconds: float
    command: list[str] = field(default_factory=list)
    medium: BootMedium | None = None  # how it booted: the directory as a `fat:` disk, or an image

    def lines(self, prefix: str) -> list[str]:
        return [line[len(prefix):].strip() for line in self.serial.splitlines() if line.startswith(prefix)]


def qemu_binary() -> str:
    found = shutil.which("qemu-system-x86_64")
    if not found:
        raise HighbootError("qemu-system-x86_64 not found; install it with: apt-get install qemu-system-x86",
                            field="qemu")
    return found


def host_memory() -> int | None:
    """Bytes of RAM and swap this machine has (/proc/meminfo): QEMU cannot give a guest more (it
    refuses "cannot set up guest memory"). None where it cannot be read."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        return sum(int(fields[k].split()[0]) << 10 for k in ("MemTotal", "SwapTotal"))
    except (OSError, KeyError, ValueError, IndexError):
        return None


def cpu_models() -> set[str]:
    """The CPU models this QEMU knows (`-cpu help`: lines "x86 <model> ...", then the CPU features)."""
    proc = subprocess.run([qemu_binary(), "-cpu", "help"], capture_output=True, text=True, timeout=60, check=False)
    return {line.split()[1] for line in proc.stdout.splitlines() if line.startswith("x86 ") and len(line.split()) > 1}


def command(media: str | Path, vars_copy: str | Path, *, cpu: str = "max", memory: str = "256M", smp: int | str = 1,
            firmware: Firmware | None = None, display: bool = False, gdb: bool = False,
            extra: list[str] | None = None) -> list[str]:
    """The QEMU command line for a boot of media (an ESP directory or a raw disk image). A directory
    goes in as QEMU's `fat:` disk whatever its size: choose with boot_medium first."""
    fw = firmware or find_firmware()
    media = Path(media)
    # Read-only on virtio-blk (AHCI refuses read-only nodes): a boot never writes the ESP or image.
    source = f"fat:{media}" if media.is_dir() else str(media)
    drive = f"if=none,id=esp,format=raw,readonly=on,file={source}"
    machine = "q35,smm=on" if fw.secure_boot else "q35"
    cmd = [qemu_binary(), "-machine", machine, "-cpu", cpu, "-m", memory, "-smp", str(smp),
           "-no-reboot", "-net", "none",
           "-drive", f"if=pflash,format=raw,readonly=on,file={fw.code}",
           "-drive", f"if=pflash,format=raw,file={vars_copy}",
           "-drive", drive, "-device", "virtio-blk-pci,drive=esp",
           "-device", f"isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=0x04"]
    if fw.secure_boot:
        cmd += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
    if display:
        cmd += ["-serial", "mon:stdio"] if "-nographic" not in (extra or []) else []
    else:
        cmd += ["-display", "none", "-serial", "stdio", "-monitor", "none"]
    if gdb:
        cmd += ["-s", "-S"]
    return cmd + (extra or [])


def boot(media: str | Path, *, cpu: str = "max", memory: str = "256M", smp: int | str = 1, timeout: float = 240,
         firmware: Firmware | None = None, vars_file: str | Path | None = None,
         extra: list[str] | None = None, stop_on: str | None = None, as_image: bool | None = None) -> BootResult:
    """Boot once, headless; return QEMU's status and everything written to the serial port.

    stop_on: end the boot (status None) as soon as this text appears on the serial port, for
    boots that are expected not to reach a kernel (the firmware would go on to other boot options).
    as_image: how an ESP directory boots (boot_medium): None, as QEMU's `fat:` disk when it fits
    one, else packed into a disk image for this boot; True, always packed; False, never.
    """
    fw = firmware or find_firmware()
    with tempfile.TemporaryDirectory(prefix="highboot-qemu-") as tmp:
        vars_copy = Path(tmp, "vars.fd")
        shutil.copyfile(vars_file or fw.vars, vars_copy)
        medium = boot_medium(media, Path(tmp, "esp.img"), as_image=as_image)
        cmd = command(medium.path, vars_copy, cpu=cpu, memory=memory, smp=smp, firmware=fw, extra=extra)
        log = Path(tmp, "serial.log")
        start = time.monotonic()
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
            status: int | None = None
            deadline = start + timeout
            while time.monotonic() < deadline:
                try:
                    status = proc.wait(timeout=0.25)
                    break
                except subprocess.TimeoutExpired:
                    if stop_on and stop_on.encode() in log.read_bytes():
                        time.sleep(0.5)  # let the rest of the message arrive
                        break
            if status is None:
                proc.kill()
                proc.wait()
        seconds = time.monotonic() - start
        text = log.read_bytes().decode("utf-8", "replace")
    # OVMF draws with ANSI escapes; strip them so tests can match lines.
    clean = strip_ansi(text)
    return BootResult(status, clean, seconds, cmd, medium)


#: What OVMF's console adds to serial: ANSI escape sequences (ESC [ ... letter) and carriage returns.
_ANSI = re.compile(r"\x1b(?:\[[^A-Za-z]*[A-Za-z]?)?|\r")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def gdb_script(kernel: str, entry: int) -> str:
    """build/debug.gdb for scons debug: the kernel's symbols, QEMU's gdb stub, a break at the entry.
    The path is quoted as gdb parses file names; a path gdb cannot be given (a control character
    would end the command) is refused rather than written."""
    if any(ord(c) < 32 or ord(c) == 127 for c in kernel):
        raise HighbootError("the kernel's path has a control character (a newline?); gdb's file command "
                            "cannot be given it", file=ascii(kernel)[1:-1], field="debug.gdb")
    quoted = kernel.replace("\\", "\\\\").replace('"', '\\"')
    return f'file "{quoted}"\ntarget remote localhost:1234\nbreak *{entry:#x}\n'


def run_interactive(media: str | Path, *, cpu: str, memory: str, graphic: bool, gdb: bool = False,
                    secure_vars: str | Path | None = None, image: str | Path | None = None,
                    as_image: bool | None = None, smp: int = 1, extra: list[str] | None = None) -> int:
    """scons run / debug: QEMU in the foreground, serial (and the monitor) on this terminal.
    With secure_vars (SIGN=1), the Secure Boot firmware with that VARS file (key enrolled).
    An ESP directory too large for QEMU's `fat:` disk (or as_image=True) boots packed into the
    disk image `image` (default: one in a temporary directory); the terminal is told which way."""
    fw = find_firmware(secure_boot=secure_vars is not None)
    with tempfile.TemporaryDirectory(prefix="highboot-run-") as tmp:
        vars_copy = Path(tmp, "vars.fd")
        shutil.copyfile(secure_vars or fw.vars, vars_copy)
        medium = boot_medium(media, image or Path(tmp, "esp.img"), as_image=as_image)
        print(medium.message, flush=True)
        args = ([] if graphic else ["-nographic"]) + list(extra or ())
        cmd = command(medium.path, vars_copy, cpu=cpu, memory=memory, smp=smp, firmware=fw, display=True, gdb=gdb,
                      extra=args)
        print(" ".join(cmd), flush=True)
        return subprocess.call(cmd)
