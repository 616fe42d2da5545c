"""One boot of a kernel under test: QEMU + OVMF on the machine's CPU, memory and CPUs, serial read
as it comes, and a verdict with its reason in words.

QEMU runs with -no-reboot and `-action shutdown=pause`, driven over QMP: a machine that resets (a
triple fault) or powers off stops where it is, so the runner learns why (QMP's SHUTDOWN event) and
can take a screenshot of the display before it ends QEMU. A kernel that writes to the
isa-debug-exit port ends QEMU at once: its exit status is the verdict.
"""

from __future__ import annotations

import codecs
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from highboot.booting.qemu import DEBUG_EXIT_PORT, Firmware, boot_medium, command, find_firmware, strip_ansi
from highboot.booting.qmp import Qmp, QmpError
from highboot.testing.table import Boot, TestTable

#: Lines the loader prints when it refuses to boot or fails (loader/src/failure.rs): the boot fails, quoted.
LOADER_FAILURES = ("highboot: error: ", "highboot: loader bug: ")
#: Every line of the loader's starts so: none of them is the kernel's, none matches the patterns.
LOADER_LINE = "highboot: "
#: OVMF's boot manager could not load or start a boot option (under Secure Boot, an unsigned loader:
#: "Access Denied"); "Not Found" is every boot's empty DVD drive, not the loader.
FIRMWARE_FAILURE = re.compile(r"^BdsDxe: failed to (?:load|start) (Boot\w+) .*: (?!Not Found$)(.+)$")
#: Serial kept per boot: a kernel that writes more fails ("serial flood") rather than fill the disk.
MAX_LOG = 64 << 20
#: Serial taken in per look: the timeout is checked between looks, however fast the kernel writes.
READ_CHUNK = 4 << 20
#: The line the loader prints just before it jumps to the kernel: serial patterns match what follows.
KERNEL_STARTED = "highboot: starting the kernel at "
#: What a boot leaves under its results directory, beside <boot>: its serial log, its QEMU log (qemu_args'
#: -d), its screenshot (PNG, or PPM where QEMU cannot write PNG) and its verdict.
RESULT_SUFFIXES = (".qemu.log", ".log", ".png", ".ppm", ".json")
#: How often the display is kept while the boot runs (seconds).
SNAPSHOT_EVERY = 2.0
#: How often serial, QMP and QEMU are looked at.
POLL = 0.1


@dataclass(frozen=True)
class Verdict:
    boot: str  # the boot's name: the machine's, then -N when it boots more than once
    machine: str
    number: int
    boots: int
    passed: bool
    why: str  # in words: "QEMU exit status 33", "timeout after 60 s", ...
    seconds: float
    log: str  # the serial log
    screenshot: str = ""  # the display when a failed boot was stopped ("" when QEMU had already exited)
    status: int | None = None  # QEMU's exit status, when it exited by itself
    command: tuple[str, ...] = ()  # how QEMU was run (to run it again by hand)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Verdict:
        data = json.loads(text)
        return cls(**{**data, "command": tuple(data.get("command", ()))})


class _Serial:
    """The serial output as it grows: cleaned of OVMF's escape sequences piece by piece and written
    to the boot's log, each complete line matched as it arrives (only the line not yet complete is
    kept in memory: a kernel that floods serial costs disk, not memory)."""

    def __init__(self, path: Path, log: Path, table: TestTable) -> None:
        self.path = path
        self.log = open(log, "w", encoding="utf-8", errors="replace")  # noqa: SIM115 (closed by close())
        self.size = 0
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.escape = ""  # an escape sequence not yet complete
        self.partial = ""  # the line not yet complete
        self.last = ""  # the last line that was not blank
        self.kernel = False  # the loader has started the kernel: the patterns apply from the next line on
        self.success = re.compile(table.success) if table.success else None
        self.failure = re.compile(table.failure) if table.failure else None

    def read(self, *, final: bool = False) -> tuple[str, str] | None:
        """Take what QEMU wrote since (READ_CHUNK at most, all of it when final); ("fail" or "pass",
        why) for the first line that decides the boot (the line not yet complete only when final)."""
        with open(self.path, "rb") as f:
            f.seek(self.size)
            while True:
                data = f.read(READ_CHUNK)
                self.size += len(data)
                if self.size > MAX_LOG:
                    return "fail", f"serial flood: the kernel wrote more than {MAX_LOG >> 20} MiB to serial"
                last = final and not data
                decided = self._take(self.decoder.decode(data, final=last), final=last)
                if decided or not data or not final:
                    return decided

    def _take(self, text: str, *, final: bool) -> tuple[str, str] | None:
        text = self.escape + text
        cut = text.rfind("\x1b")
        if not final and cut >= 0 and len(text) - cut < 32 and not re.search("[A-Za-z]", text[cut + 2:]):
            text, self.escape = text[:cut], text[cut:]
        else:
            self.escape = ""
        text = strip_ansi(text)
        self.log.write(text)
        lines = (self.partial + text).split("\n")
        self.partial = "" if final else lines.pop()
        if len(self.partial) > 1 << 16:  # (a line that never ends is matched in pieces)
            lines.append(self.partial)
            self.partial = ""
        for line in lines:
            decided = self._line(line)
            if decided:
                return decided
        return None

    def _line(self, line: str) -> tuple[str, str] | None:
        if line.strip():
            self.last = line
        for prefix in LOADER_FAILURES:
            if line.startswith(prefix):
                return "fail", f"the loader refused: {_quote(line[len(prefix):])}"
        if not self.kernel:
            self.kernel = line.startswith(KERNEL_STARTED)
            failed = FIRMWARE_FAILURE.match(line)
            if failed:
                return "fail", f"the firmware did not start the loader ({failed.group(1)}): {_quote(failed.group(2))}"
            return None
        if line.startswith(LOADER_LINE):  # (the loader's last words after its start line: APs, ExitBootServices)
            return None
        if self.failure and self.failure.search(line):
            return "fail", f"the failure pattern matched: {_quote(line)}"
        if self.success and self.success.search(line):
            return "pass", f"the success pattern matched: {_quote(line)}"
        return None

    def close(self, stderr: str) -> None:
        """The rest of serial, then QEMU's standard error if it wrote any."""
        while self.read(final=True) and MAX_LOG >= self.size < os.path.getsize(self.path):
            pass  # (decided part-way: the rest still goes to the log, up to MAX_LOG)
        if stderr:
            self.log.write(f"\n--- QEMU's standard error ---\n{stderr}\n")
        self.log.close()


def _quote(line: str, limit: int = 160) -> str:
    line = line.strip()
    return repr(line if len(line) <= limit else line[:limit] + "...")


def run_boot(esp: str | Path, boot: Boot, table: TestTable, results: str | Path, *,
             secure_vars: str | Path | None = None) -> Verdict:
    """Boot `esp` once as `boot` says; write its serial log (and a failed boot's screenshot) under
    `results` as <boot name>.log / .png and return the verdict."""
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    log = results / f"{boot.name}.log"
    for suffix in RESULT_SUFFIXES:  # (nothing an earlier boot of this name left is taken for this one's)
        (results / f"{boot.name}{suffix}").unlink(missing_ok=True)
    fw = find_firmware(secure_boot=secure_vars is not None)
    # The boot's files beside its results (a flood of serial fills that disk, not /tmp's memory); only
    # the QMP socket in a short directory of /tmp (a UNIX socket's path holds 107 bytes at most).
    work = results / f".{boot.name}.work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        with tempfile.TemporaryDirectory(prefix="highboot-qmp-", dir="/tmp") as tmp:
            return _boot(esp, boot, table, fw, work, Path(tmp, "qmp"), log, secure_vars)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _boot(esp: str | Path, boot: Boot, table: TestTable, fw: Firmware, work: Path, sock: Path, log: Path,
          secure_vars: str | Path | None) -> Verdict:
    m = boot.machine
    vars_copy = work / "vars.fd"
    shutil.copyfile(secure_vars or fw.vars, vars_copy)
    medium = boot_medium(esp, work / "esp.img")
    # QEMU's TCG logs "Triple fault" among its CPU resets: what tells a triple fault from a reset asked
    # for. The test's own -d items are logged with them, kept beside the serial log (or where its -D says).
    logging, args = _logging(m.qemu_args, work / "resets.log", log.with_suffix(".qemu.log"))
    resets = Path(logging[-1])
    cmd = command(medium.path, vars_copy, cpu=m.cpu, memory=m.memory, smp=m.cpus, firmware=fw,
                  extra=["-qmp", f"unix:{sock},server=on,wait=off", "-action", "shutdown=pause", *logging, *args])
    serial_file, stderr_file = work / "serial", work / "stderr"
    start = time.monotonic()
    with open(serial_file, "wb") as out, open(stderr_file, "wb") as err:
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    preexec_fn=_die_with_parent)
        except OSError as exc:
            return _verdict(boot, False, f"QEMU could not start: {exc}", 0.0, log, "", command=cmd)
        serial = _Serial(serial_file, log, table)
        qmp = Qmp(str(sock))
        screenshot = ""
        try:
            latest = work / "latest.png"
            outcome, status = _watch(proc, serial, qmp, table, m.timeout, start, resets, tcg=_tcg(args),
                                     latest=latest)
            if outcome[0] == "fail" and proc.poll() is None and qmp.sock is not None:
                screenshot = _screenshot(qmp, log)
        finally:
            _stop(proc, qmp)
    seconds = time.monotonic() - start
    stderr = tail_bytes(stderr_file, 1 << 16).decode("utf-8", "replace").strip()
    final = serial.read(final=True)
    serial.close(stderr)
    if status is not None and outcome[0] == "exit":
        outcome = final or _exit_outcome(status, stderr, table, started=serial.size > 0)
        if outcome[0] == "fail" and latest.exists():  # (QEMU has gone: the last picture taken before it did)
            screenshot = str(shutil.copyfile(latest, log.with_suffix(".png")))
    return _verdict(boot, outcome[0] == "pass", outcome[1], seconds, log, screenshot, status, command=cmd)


def _logging(args: tuple[str, ...], resets: Path, kept: Path) -> tuple[list[str], list[str]]:
    """QEMU's -d (cpu_reset and the test's own items) and -D (`resets`, or `kept` when the test logs
    items of its own), and the test's other arguments."""
    items, where, rest = ["cpu_reset"], "", []
    it = iter(args)
    for a in it:
        if a in ("-d", "--d", "-D", "--D"):
            value = next(it, "")
            if a.lstrip("-") == "d":
                items += [i for i in value.split(",") if i and i not in items]
            else:
                where = value
        else:
            rest.append(a)
    return ["-d", ",".join(items), "-D", where or str(kept if len(items) > 1 else resets)], rest


def _tcg(args: list[str]) -> bool:
    """QEMU runs TCG (which logs triple faults) unless the test's arguments ask for KVM."""
    text = " ".join(args)
    return "-enable-kvm" not in args and not re.search(r"(^|[ ,=])(kvm)([ ,:]|$)", text)


def _die_with_parent() -> None:
    """In the child before exec: QEMU is killed when the thread that started it dies (scons killed)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def tail_bytes(path: str | Path, size: int) -> bytes:
    """A file's last `size` bytes (a log may be large)."""
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - size))
        return f.read()


def _watch(proc: subprocess.Popen[bytes], serial: _Serial, qmp: Qmp, table: TestTable, timeout: float,
           start: float, resets: Path, *, tcg: bool, latest: Path) -> tuple[tuple[str, str], int | None]:
    """Until the boot is decided: (("pass" | "fail" | "exit", why), QEMU's exit status if it exited).
    Meanwhile the display is kept in `latest` every SNAPSHOT_EVERY seconds: a kernel that ends QEMU
    itself (isa-debug-exit) leaves no display to take afterwards."""
    snapshot = start - SNAPSHOT_EVERY  # (the first as soon as QMP is there)
    while True:
        status = proc.poll()
        decided = serial.read()
        if decided:
            return decided, None
        if status is not None:
            return ("exit", ""), status
        if qmp.sock is None and not qmp.tried and os.path.exists(qmp.path):
            qmp.connect(timeout=5)
        for event in qmp.poll():
            if event.get("event") == "SHUTDOWN":
                decided = serial.read(final=True)
                reason = event.get("data", {}).get("reason", "")
                triple = _logged_triple_fault(resets) if tcg else None  # (only TCG says)
                return decided or _shutdown_outcome(reason, table, triple_fault=triple), None
            if event.get("event") == "GUEST_PANICKED":
                return ("fail", "the kernel reported a panic to QEMU (pvpanic)"), None
        if qmp.sock is not None and time.monotonic() - snapshot >= SNAPSHOT_EVERY:
            snapshot = time.monotonic()
            try:
                qmp.command("screendump", filename=str(latest.resolve()), format="png")
            except QmpError:
                pass
        if time.monotonic() - start >= timeout:
            last = serial.last
            return ("fail", f"timeout after {timeout:g} s" + (f"; the last line on serial: {_quote(last)}"
                                                              if last else "; nothing on serial")), None
        time.sleep(POLL)


def _logged_triple_fault(resets: Path) -> bool | None:
    """Whether QEMU logged a triple fault (None: it logged nothing, the test logs elsewhere)."""
    try:
        with open(resets, "rb") as f:
            return any(line.startswith(b"Triple fault") for line in f)
    except OSError:
        return None


def _shutdown_outcome(reason: str, table: TestTable, *, triple_fault: bool | None = None) -> tuple[str, str]:
    if reason == "guest-reset":
        how = {True: "a triple fault: the CPU could not deliver a double fault",
               False: "the kernel or the firmware asked for a reset; no triple fault",
               None: "a triple fault, or a reset asked for"}[triple_fault]
        return "fail", f"the machine reset ({how}); QEMU runs with -no-reboot and stopped it"
    if reason == "guest-shutdown":  # (QEMU would have exited with status 0)
        passed = table.success_exit_code == 0
        return ("pass" if passed else "fail"), "the kernel powered the machine off (QEMU exit status 0)"
    if reason == "guest-panic":
        return "fail", "the kernel reported a panic to QEMU"
    return "fail", f"QEMU shut down ({reason or 'no reason given'})"


def _exit_outcome(status: int, stderr: str, table: TestTable, *, started: bool) -> tuple[str, str]:
    """started: the firmware wrote to serial (OVMF does, early): QEMU ran."""
    first = stderr.splitlines()[0] if stderr else ""
    if status < 0:
        return "fail", f"QEMU was killed by signal {-status}"
    if not started and status == 1 and first:
        return "fail", f"QEMU could not start: {_quote(first)}"
    if "terminating on signal" in stderr:  # (QEMU exits 0 on SIGTERM, SIGINT, SIGHUP)
        line = next(ln for ln in stderr.splitlines() if "terminating on signal" in ln)
        return "fail", f"QEMU was stopped from outside: {_quote(line)}"
    if status == table.success_exit_code:
        return "pass", f"QEMU exit status {status}"
    why = f"QEMU exit status {status}"
    if status & 1 and status > 1:
        why += f" (the kernel wrote {(status - 1) >> 1:#x} to the isa-debug-exit port {DEBUG_EXIT_PORT:#x})"
    elif first:
        why += f": {_quote(first)}"
    return "fail", why


def _screenshot(qmp: Qmp, log: Path) -> str:
    """The display as a PNG (as a PPM where QEMU cannot write PNG), beside the log."""
    try:
        qmp.command("stop")  # (the picture of the moment the boot was decided, not of what the firmware did next)
    except QmpError:
        return ""  # (QEMU has gone: nothing to show)
    for suffix, args in ((".png", {"format": "png"}), (".ppm", {})):
        path = log.with_suffix(suffix)
        try:
            qmp.command("screendump", filename=str(path.resolve()), **args)
        except QmpError:
            continue
        if path.exists():
            return str(path)
    return ""


def _stop(proc: subprocess.Popen[bytes], qmp: Qmp) -> None:
    if proc.poll() is None:
        try:
            if qmp.sock is not None:
                qmp.command("quit", timeout=5)
            else:
                proc.terminate()
            proc.wait(timeout=10)
        except (QmpError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
    qmp.close()


def _verdict(boot: Boot, passed: bool, why: str, seconds: float, log: Path, screenshot: str,
             status: int | None = None, *, command: list[str]) -> Verdict:
    return Verdict(boot=boot.name, machine=boot.machine.name, number=boot.number, boots=boot.machine.boots,
                   passed=passed, why=why, seconds=round(seconds, 1), log=str(log), screenshot=screenshot,
                   status=status, command=tuple(command))
