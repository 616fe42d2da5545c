"""Booting an ESP directory or a disk image under QEMU + OVMF (TCG), capturing serial output."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from highboot.errors import HighbootError

OVMF_DIRS = ("/usr/share/OVMF", "/usr/share/ovmf", "/usr/share/edk2/ovmf", "/usr/share/qemu")
# isa-debug-exit: a write of v to port 0xf4 ends QEMU with status (v << 1) | 1.
EXIT_PASS = (0x10 << 1) | 1
EXIT_FAIL = (0x11 << 1) | 1


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


@dataclass
class BootResult:
    status: int | None  # QEMU's exit status; None when it was killed at the timeout
    serial: str
    seconds: float
    command: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == EXIT_PASS and "HIGHBOOT-KERNEL: PASS" in self.serial

    def lines(self, prefix: str) -> list[str]:
        return [line[len(prefix):].strip() for line in self.serial.splitlines() if line.startswith(prefix)]


def qemu_binary() -> str:
    found = shutil.which("qemu-system-x86_64")
    if not found:
        raise HighbootError("qemu-system-x86_64 not found; install it with: apt-get install qemu-system-x86",
                            field="qemu")
    return found


def command(media: str | Path, vars_copy: str | Path, *, cpu: str = "max", memory: str = "256M", smp: int | str = 1,
            firmware: Firmware | None = None, display: bool = False, gdb: bool = False,
            extra: list[str] | None = None) -> list[str]:
    """The QEMU command line for a boot of media (an ESP directory or a raw disk image)."""
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
           "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
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
         extra: list[str] | None = None, stop_on: str | None = None) -> BootResult:
    """Boot once, headless; return QEMU's status and everything written to the serial port.

    stop_on: end the boot (status None) as soon as this text appears on the serial port, for
    boots that are expected not to reach a kernel (the firmware would go on to other boot options).
    """
    fw = firmware or find_firmware()
    with tempfile.TemporaryDirectory(prefix="highboot-qemu-") as tmp:
        vars_copy = Path(tmp, "vars.fd")
        shutil.copyfile(vars_file or fw.vars, vars_copy)
        cmd = command(media, vars_copy, cpu=cpu, memory=memory, smp=smp, firmware=fw, extra=extra)
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
    clean = _strip_ansi(text)
    return BootResult(status, clean, seconds, cmd)


def _strip_ansi(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\x1b":
            j = i + 1
            if j < len(text) and text[j] == "[":
                j += 1
                while j < len(text) and not text[j].isalpha():
                    j += 1
                j += 1
            i = j
            continue
        if c != "\r":
            out.append(c)
        i += 1
    return "".join(out)


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
                    secure_vars: str | Path | None = None) -> int:
    """scons run / debug: QEMU in the foreground, serial (and the monitor) on this terminal.
    With secure_vars (SIGN=1), the Secure Boot firmware with that VARS file (key enrolled)."""
    fw = find_firmware(secure_boot=secure_vars is not None)
    with tempfile.TemporaryDirectory(prefix="highboot-run-") as tmp:
        vars_copy = Path(tmp, "vars.fd")
        shutil.copyfile(secure_vars or fw.vars, vars_copy)
        extra = [] if graphic else ["-nographic"]
        cmd = command(media, vars_copy, cpu=cpu, memory=memory, firmware=fw, display=True, gdb=gdb, extra=extra)
        print(" ".join(cmd), flush=True)
        return subprocess.call(cmd)
