"""`scons test` with a project's [test] table tests the project's kernel: each machine built once per
distinct build and booted in QEMU + OVMF, a line per boot, a summary, serial logs, screenshots of
failed boots and a JUnit report; TEST_SHARD slices; `scons run MACHINE=`; a bad table refused."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from highboot.errors import HighbootError
from highboot.options.project import load_project
from highboot.testing.runner import Verdict
from highboot.testing.table import Boot, Machine, boots, parse_shard, shard

ROOT = Path(__file__).resolve().parents[1]
OUTCOME_KERNEL = ROOT / "tests" / "kernels" / "outcome.c"
CFLAGS = ["-O2", "-ffreestanding", "-nostdlib", "-static-pie", "-fPIE", "-mno-red-zone", "-mgeneral-regs-only",
          "-fno-stack-protector", "-fno-asynchronous-unwind-tables", "-Wl,--build-id=none"]
LA57 = ROOT / "templates" / "layouts" / "linux-x86_64-la57.toml"


def gcc(source: Path, out: Path, *flags: str) -> Path:
    proc = subprocess.run(["gcc", *CFLAGS, *flags, "-o", str(out), str(source)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    return out


def scons(built: dict[str, Any], project: Path, build: Path, *args: str, timeout: int = 1500,
          stdin: int | None = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    """scons from the project's own directory, as a user runs it against a highboot checkout."""
    cmd = [sys.executable, "-m", "SCons", "-Q", "-C", str(ROOT), f"PROJECT={project}", f"BUILD_DIR={build}",
           f"CARGO_DIR={built['dir'] / 'cargo'}", *args]
    return subprocess.run(cmd, cwd=project.parent, capture_output=True, text=True, timeout=timeout, stdin=stdin,
                          check=False)


def write_project(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------ the table

def test_a_table_reads_with_its_defaults_and_each_machine_its_build(tmp_path: Path) -> None:
    (tmp_path / "k.elf").write_bytes(b"")
    project = load_project(write_project(tmp_path / "p.toml", f"""
kernel = "k.elf"
cmdline = "base"
[test]
failure = "PANIC"
qemu_args = ["-device", "virtio-rng-pci"]
[[test.machine]]
name = "one"
[[test.machine]]
name = "big"
cpu = "max,-la57"
memory = "8G"
cpus = 8
boots = 3
timeout = "2 min"
layout = "{LA57}"
kaslr = true
cmdline = "big"
qemu_args = ["-device", "virtio-net-pci"]
[[test.machine.module]]
path = "k.elf"
name = "again"
"""))
    table = project.test
    assert table is not None and table.success_exit_code == 33 and table.failure == "PANIC" and not table.success
    one, big = table.machines
    assert (one.name, one.cpu, one.memory, one.cpus, one.boots, one.timeout) == ("one", "max", "256M", 1, 1, 120.0)
    assert one.options == () and one.modules is None and one.qemu_args == ("-device", "virtio-rng-pci")
    assert (big.cpu, big.memory, big.memory_mib, big.cpus, big.boots, big.timeout) == ("max,-la57", "8G", 8192, 8, 3,
                                                                                         120.0)
    assert dict(big.options) == {"LAYOUT": str(LA57), "KASLR": "1", "CMDLINE": "big"}
    assert big.modules is not None and [m.name for m in big.modules] == ["again"]
    assert big.qemu_args == ("-device", "virtio-rng-pci", "-device", "virtio-net-pci")
    assert [b.name for b in boots(table)] == ["one", "big-1", "big-2", "big-3"]
    assert project.options["CMDLINE"] == "base"  # the project's own value stays the project's


def test_without_machines_the_table_boots_one_default_machine(tmp_path: Path) -> None:
    table = load_project(write_project(tmp_path / "p.toml", "[test]\nsuccess = 'OK'\n")).test
    assert table is not None and [(m.name, m.cpu, m.memory, m.cpus) for m in table.machines] == [
        ("default", "max", "256M", 1)]


@pytest.mark.parametrize(("text", "field", "words"), [
    ("[test]\nsucess = 'x'", "test.sucess", "unknown key 'sucess'"),
    ("[test]\nsuccess = '(unclosed'", "test.success", "not a regular expression"),
    ("[test]\nfailure = 3", "test.failure", "expected a regular expression"),
    ("[test]\nsuccess_exit_code = 256", "test.success_exit_code", "0-255"),
    ("[test]\ntimeout = 'soon'", "test.timeout", "expected a time per boot"),
    ("[test]\nqemu_args = '-m 1G'", "test.qemu_args", "expected a list of strings"),
    ("[test]\nqemu_args = ['-serial', 'file:x']", "test.qemu_args", "-serial is the test runner's own"),
    ("[[test.machine]]\nname = 'a'\nmemory = '8'", "test.machine[0].memory", "with a unit"),
    ("[[test.machine]]\nname = 'a'\nmemory = '16M'", "test.machine[0].memory", "64 MiB to 1 TiB"),
    ("[[test.machine]]\nname = 'a'\nmemory = '3T'", "test.machine[0].memory", "64 MiB to 1 TiB"),
    ("[[test.machine]]\nname = 'a'\nmemory = 512", "test.machine[0].memory", "expected a RAM size"),
    ("[[test.machine]]\nname = 'a'\ncpus = 0", "test.machine[0].cpus", "1 to 255"),
    ("[[test.machine]]\nname = 'a'\nboots = 0", "test.machine[0].boots", "a number of boots"),
    ("[[test.machine]]\nname = 'a'\ncpu = 'max -s'", "test.machine[0].cpu", "a QEMU CPU model"),
    ("[[test.machine]]\nname = 'a/b'", "test.machine[0].name", "letters, digits"),
    ("[[test.machine]]\nname = 'a'\n[[test.machine]]\nname = 'a'", "test.machine[1].name", "used twice"),
    ("[[test.machine]]\nname = 'a'\nram = '1G'", "test.machine[0].ram", "unknown key 'ram'"),
    ("[[test.machine]]\nname = 'a'\nkaslr = 'yes'", "test.machine[0].kaslr", "expected true or false"),
    ("[[test.machine]]\nname = 'a'\nfb_mode = 'big'", "test.machine[0].fb_mode", "WIDTHxHEIGHT"),
    ("[[test.machine]]\nname = 'a'\n[[test.machine.module]]\nname = 'm'", "test.machine[0].module[0].path",
     "missing path"),
    ("[test]\nmachine = 'a'", "test.machine", "[[test.machine]] tables"),
    ("[test]\ntimeout = 1" + "0" * 400, "test.timeout", "expected a time per boot"),
    ("[test]\nsuccess = '[[a]'", "test.success", "not a regular expression"),
    ("[test]\nqemu_args = ['-m', '4G']", "test.qemu_args", "-m is the machine's memory = ...; set that instead"),
    ("[test]\nqemu_args = ['--smp', '4']", "test.qemu_args", "the machine's cpus"),
    ("[[test.machine]]\nname = 'a'\nboots = 2\n[[test.machine]]\nname = 'a-1'", "test.machine[1].name",
     "boot 1 of machine 'a-1' and boot 1 of machine 'a' would both be named 'a-1'"),
    ("test = 3", "test", "expected a table"),
])
def test_a_bad_table_is_refused_naming_the_field(tmp_path: Path, text: str, field: str, words: str) -> None:
    path = write_project(tmp_path / "p.toml", text + "\n")
    with pytest.raises(HighbootError) as caught:
        load_project(path)
    assert caught.value.file == str(path) and caught.value.field == field, caught.value.format()
    assert words in caught.value.message, caught.value.message


def test_the_shards_split_the_boots_the_same_way_every_time() -> None:
    machines = [Machine("a", boots=3), Machine("b"), Machine("c", boots=2), Machine("d")]
    every = [Boot(m, n) for m in machines for n in range(1, m.boots + 1)]
    names = [[b.name for b in shard(every, (k, 3))] for k in (1, 2, 3)]
    assert names == [["a-1", "b", "d"], ["a-2", "c-1"], ["a-3", "c-2"]]
    assert [b.name for b in shard(every, None)] == ["a-1", "a-2", "a-3", "b", "c-1", "c-2", "d"]
    assert parse_shard("2/3") == (2, 3) and parse_shard("") is None
    for bad in ("0/3", "4/3", "2", "a/b", "1/0"):
        with pytest.raises(HighbootError, match="expected k/n") as caught:
            parse_shard(bad)
        assert caught.value.field == "TEST_SHARD"


def test_the_build_refuses_what_only_the_build_can_check(built: dict, tmp_path: Path) -> None:
    """A machine's missing layout and a CPU model QEMU does not know stop `scons test` before anything
    is built, naming the machine's field; MACHINE= must name a machine of the table."""
    kernel = gcc(OUTCOME_KERNEL, tmp_path / "k.elf", "-DOUTCOME=1")
    cases = [
        (f'kernel = "{kernel}"\n[[test.machine]]\nname = "a"\nlayout = "nowhere.toml"\n', ["test"],
         "test.machine[0].layout"),
        (f'kernel = "{kernel}"\n[[test.machine]]\nname = "a"\n[[test.machine]]\nname = "b"\ncpu = "pentium9"\n',
         ["test"], "test.machine[1].cpu: QEMU has no CPU model 'pentium9'"),
        (f'kernel = "{kernel}"\n[[test.machine]]\nname = "a"\n', ["run", "MACHINE=b"],
         "MACHINE: no machine 'b' in the project's [test] table; it has a"),
        (f'kernel = "{kernel}"\n[test]\n', ["test", "TEST_SHARD=3/2"], "TEST_SHARD: expected k/n"),
        (f'kernel = "{kernel}"\n', ["run", "MACHINE=a"], "MACHINE: MACHINE= names a machine"),
        (f'kernel = "{kernel}"\n', ["test", "TEST_SHARD=1/2"], "TEST_SHARD: TEST_SHARD= slices the boots"),
        (f'kernel = "{kernel}"\n[test]\n', ["TEST_SHARD=1/2"], "TEST_SHARD: TEST_SHARD= slices the boots"),
        (f'kernel = "{kernel}"\n[[test.machine]]\nname = "a"\nmemory = "1T"\n', ["test"],
         "test.machine[0].memory: 1024G is more than this machine's RAM and swap"),
    ]
    for text, args, words in cases:
        project = write_project(tmp_path / "highboot.toml", text)
        proc = scons(built, project, tmp_path / "build", *args, timeout=300)
        assert proc.returncode == 2 and words in proc.stderr, (words, proc.stdout + proc.stderr)
        assert "Traceback" not in proc.stderr
        assert not (tmp_path / "build" / "test").exists()
    # scons -c and -h with MACHINE= need no table.
    for args in (["-c", "MACHINE=a"], ["-h", "MACHINE=a"]):
        proc = scons(built, write_project(tmp_path / "highboot.toml", f'kernel = "{kernel}"\n'), tmp_path / "build",
                     *args, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------ boots

#: One kernel per outcome (tests/kernels/outcome.c), and what `scons test` must say of each.
OUTCOMES = {
    # machine: (OUTCOME, extra machine keys, passed, why (a regular expression))
    "hang": ("HANG", 'timeout = "40 s"', False,
             r"timeout after 40 s(; the last line on serial: 'outcome kernel: hanging')?"),
    "pass-exit": ("PASS_BY_EXIT", 'cpu = "qemu64"\nboots = 2', True, r"QEMU exit status 33"),
    "pass-serial": ("PASS_BY_SERIAL", "cpus = 2", True, r"the success pattern matched: 'ALL TESTS PASSED'"),
    "fail-exit": ("FAIL_BY_EXIT", "", False,
                  r"QEMU exit status 35 \(the kernel wrote 0x11 to the isa-debug-exit port 0xf4\)"),
    "fail-pattern": ("FAIL_PATTERN", "", False,
                     r"the failure pattern matched: 'PANIC: the outcome kernel panics on purpose'"),
    "triple-fault": ("TRIPLE_FAULT", "", False,
                     r"the machine reset \(a triple fault: the CPU could not deliver a double fault\); QEMU runs with "
                     r"-no-reboot and stopped it"),
    "refused": ("PASS_BY_EXIT", f'cpu = "qemu64"\nlayout = "{LA57}"', False,
                r"the loader refused: 'layout \"linux-x86_64-la57\" asks for 5-level paging .*"
                r"this CPU has no LA57 .*'"),
    "no-qemu": ("PASS_BY_EXIT", 'qemu_args = ["-device", "no-such-device"]', False,
                r"QEMU could not start: .*no-such-device. is not a valid device model name\""),
}
#: Failed boots: their display is kept (for fail-exit, the last picture before the kernel ended QEMU);
#: no-qemu never had one.
SCREENSHOTS = {"hang", "fail-pattern", "triple-fault", "refused", "fail-exit"}


def outcome_project(tmp_path: Path) -> Path:
    kernels = {o: gcc(OUTCOME_KERNEL, tmp_path / f"{o.lower()}.elf", f"-DOUTCOME={o}")
               for o in {v[0] for v in OUTCOMES.values()}}
    text = '[test]\nsuccess = "ALL TESTS PASSED"\nfailure = "PANIC|FAILED"\n'
    for name, (outcome, extra, _, _) in OUTCOMES.items():
        text += f'\n[[test.machine]]\nname = "{name}"\nkernel = "{kernels[outcome].name}"\n{extra}\n'
    return write_project(tmp_path / "highboot.toml", text)


LINE = re.compile(r"^(PASS|FAIL)  (\S+) +boot (\d+)/(\d+) +([0-9.]+) s  (.*?)(  \[(.*)\])?$")


def boot_lines(stdout: str) -> dict[str, tuple[str, str, str | None]]:
    """Each boot's line: name -> (PASS/FAIL, why, log)."""
    out = {}
    for line in stdout.splitlines():
        m = LINE.match(line)
        if m:
            name = m.group(2) if m.group(4) == "1" else f"{m.group(2)}-{m.group(3)}"
            assert name not in out, line
            out[name] = (m.group(1), m.group(6), m.group(8))
    return out


def test_every_outcome_of_a_boot_is_told_apart(built: dict, tmp_path: Path) -> None:
    project = outcome_project(tmp_path)
    build = tmp_path / "build"
    proc = scons(built, project, build, "-j2", "test")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out  # boots failed: scons test fails
    lines = boot_lines(proc.stdout)
    expected = {f"{n}-{i}" if n == "pass-exit" else n for n in OUTCOMES for i in ((1, 2) if n == "pass-exit" else (1,))}
    assert set(lines) == expected, out
    results = build / "test-results"
    for name, (verdict, why, log) in lines.items():
        machine = name.rsplit("-", 1)[0] if name.startswith("pass-exit-") else name
        _, _, passed, pattern = OUTCOMES[machine]
        wrong = verdict != ("PASS" if passed else "FAIL") or not re.fullmatch(pattern, why)
        assert not wrong, (name, verdict, why, proc.stdout)
        assert (results / f"{name}.log").exists()
        assert (log == str(results / f"{name}.log")) == (not passed)
        shot = results / f"{name}.png"
        assert shot.exists() == (machine in SCREENSHOTS), name
        if shot.exists():
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The serial logs are the boots' own.
    assert "outcome kernel: hanging" in (results / "hang.log").read_text()
    assert "passing by exit code" in (results / "pass-exit-2.log").read_text()
    assert "no-such-device" in (results / "no-qemu.log").read_text()  # QEMU's own words
    # Each distinct build once: the two pass-exit boots share one, and no-qemu too (only its QEMU arguments
    # differ); refused, the same kernel in another layout, has its own.
    assert sorted(p.name for p in (build / "test").iterdir()) == sorted(set(OUTCOMES) - {"no-qemu"})
    # The summary: a row per machine, the total.
    assert re.search(r"^pass-exit +qemu64 +256M +1 +2/2 *$", proc.stdout, re.M), proc.stdout
    assert re.search(r"^fail-exit +max +256M +1 +0/1 +boot 1: QEMU exit status 35", proc.stdout, re.M), proc.stdout
    assert "3 of 9 boots passed; 6 FAILED" in proc.stdout
    # JUnit, read back: a testcase per boot, failures with their reason and the log's tail.
    suite = ET.parse(results / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "9" and suite.get("failures") == "6"
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert set(cases) == expected
    for name, case in cases.items():
        failure = case.find("failure")
        assert (failure is None) == (lines[name][0] == "PASS"), name
        if failure is not None:
            assert failure.get("message") == lines[name][1]
        assert float(case.get("time", "0")) > 0
    assert "PANIC: the outcome kernel panics on purpose" in (cases["fail-pattern"].find("failure").text or "")
    assert cases["pass-exit-1"].get("classname", "").endswith(".pass-exit")

    # TEST_SHARD=2/3: every third boot from the second (pass-exit-1, fail-exit, refused), its own JUnit file.
    proc = scons(built, project, build, "-j2", "test", "TEST_SHARD=2/3")
    assert set(boot_lines(proc.stdout)) == {"pass-exit-1", "fail-exit", "refused"}, proc.stdout + proc.stderr
    assert "1 of 3 boots passed (slice 2 of 3); 2 FAILED" in proc.stdout and proc.returncode != 0
    cases_2 = ET.parse(results / "junit-2-of-3.xml").getroot().findall("testsuite/testcase")
    assert sorted(c.get("name") or "" for c in cases_2) == ["fail-exit", "pass-exit-1", "refused"]

    # A table of machines that all pass: scons test succeeds.
    proc = scons(built, project, build, "test", "TEST_SHARD=1/1", "PROJECT=" + str(write_project(
        tmp_path / "passing.toml", project.read_text().split("\n[[test.machine]]")[0] + '\n[[test.machine]]\n'
        'name = "fine"\nkernel = "pass_by_exit.elf"\ncpus = 4\nmemory = "1G"\n')))
    assert proc.returncode == 0 and "1 of 1 boots passed" in proc.stdout, proc.stdout + proc.stderr
    assert re.search(r"^fine +max +1G +4 +1/1", proc.stdout, re.M), proc.stdout

    # scons test MACHINE=: that machine alone.
    proc = scons(built, project, build, "test", "MACHINE=pass-serial")
    assert set(boot_lines(proc.stdout)) == {"pass-serial"} and proc.returncode == 0, proc.stdout + proc.stderr

    # scons run MACHINE=: that machine's build, CPU and memory, in the foreground.
    proc = scons(built, project, build, "run", "MACHINE=pass-exit", timeout=600)
    assert " -cpu qemu64 " in proc.stdout and " -m 256M " in proc.stdout, proc.stdout + proc.stderr
    assert f"{build}/test/pass-exit/esp" in proc.stdout
    assert "outcome kernel: passing by exit code" in proc.stdout


def test_the_example_project_tests_its_kernel(built: dict, tmp_path: Path) -> None:
    """examples/kernel-tests, as its README builds it: the kernel against the rendered highboot.h,
    then `scons test` with its project file boots it on every machine of its table."""
    example = ROOT / "examples" / "kernel-tests"
    kernel = gcc(example / "kernel.c", tmp_path / "kernel.elf", "-Wall", "-Wextra", "-Werror",
                 f"-I{built['dir'] / 'include'}")
    build = tmp_path / "build"
    proc = scons(built, example / "highboot.toml", build, "-j2", "test", f"KERNEL={kernel}")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    lines = boot_lines(proc.stdout)
    assert set(lines) == {"small", "smp-kaslr-1", "smp-kaslr-2", "la57", "secure-boot"}, out
    assert all(v == "PASS" for v, _, _ in lines.values()), out
    assert "5 of 5 boots passed" in proc.stdout
    results = build / "test-results"
    for name in lines:
        log = (results / f"{name}.log").read_text()
        assert "ALL TESTS PASSED" in log and "FAILED" not in log, log
    assert "ok      every released CPU checked in" in (results / "smp-kaslr-2.log").read_text()
    assert "ok      5-level paging (CR4.LA57)" in (results / "la57.log").read_text()
    for n in (1, 2):
        assert re.search(r"KASLR from \w+: kernel slide 0x[0-9a-f]+", (results / f"smp-kaslr-{n}.log").read_text())
    suite = ET.parse(results / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("name") == "kernel-tests" and suite.get("tests") == "5"
    assert suite.get("failures") == "0"
    # The signed machine booted its signed loader on Secure Boot firmware with its key enrolled; the others not.
    for name in lines:
        command = " ".join(Verdict.from_json((results / f"{name}.json").read_text()).command)
        assert (".secboot.fd" in command) == ("smm=on" in command) == (name == "secure-boot"), command


def test_serial_is_matched_line_by_line_and_only_the_kernels_lines_count(tmp_path: Path) -> None:
    """The runner's reading of serial, fed in awkward pieces: an escape sequence and a UTF-8
    character cut in two, the firmware's lines (which never match the patterns), the loader's
    start line, then the kernel's."""
    from highboot.testing.runner import _Serial
    from highboot.testing.table import TestTable

    table = TestTable(success="^ALL PASSED$", failure="FAIL")
    source, log = tmp_path / "serial", tmp_path / "log"
    source.write_bytes(b"")
    serial = _Serial(source, log, table)

    def feed(data: bytes, final: bool = False) -> tuple[str, str] | None:
        with open(source, "ab") as f:
            f.write(data)
        return serial.read(final=final)

    assert feed(b"BdsDxe: FAILED to load Boot0001\r\n\x1b[0m\x1b[2") is None  # the firmware's: no match
    assert feed(b"5;1HALL PASSED\r\n") is None
    assert feed(b"highboot: starting the kernel at 0xffffffff80001000\n\xc3") is None
    assert feed(b"\xa9t\xc3\xa9 ALL PASSED") is None  # not a whole line yet
    assert feed(b"\nALL PAS") is None
    assert feed(b"SED\n") == ("pass", "the success pattern matched: 'ALL PASSED'")
    serial.close("")
    assert log.read_text() == ("BdsDxe: FAILED to load Boot0001\nALL PASSED\nhighboot: starting the kernel at "
                               "0xffffffff80001000\nété ALL PASSED\nALL PASSED\n")

    source.write_bytes(b"")
    serial = _Serial(source, log, table)
    assert feed(b"highboot: error: no memory for the kernel\r\nhighboot: the kernel was not started\n") == (
        "fail", "the loader refused: 'no memory for the kernel'")
    serial.close("qemu-system-x86_64: warning: something")
    assert log.read_text().endswith("not started\n\n--- QEMU's standard error ---\nqemu-system-x86_64: warning: "
                                    "something\n")

    source.write_bytes(b"")
    serial = _Serial(source, log, table)
    assert feed(b"highboot: starting the kernel at 0x1000\n" + b"x" * 70000) is None  # a line that never ends
    assert feed(b"FAIL") is None
    assert feed(b"", final=True) == ("fail", "the failure pattern matched: 'FAIL'")  # the last piece, at the end
    serial.close("")
    assert log.read_text().endswith("x" * 70000 + "FAIL")


def test_the_loaders_lines_never_match_and_its_failures_are_told(tmp_path: Path, monkeypatch: Any) -> None:
    from highboot.testing import runner
    from highboot.testing.runner import _Serial
    from highboot.testing.table import TestTable

    source, log = tmp_path / "serial", tmp_path / "log"
    table = TestTable(success=r"\d+ of \d+", failure="warning")

    def run(data: bytes) -> tuple[str, str] | None:
        source.write_bytes(data)
        serial = _Serial(source, log, table)
        decided = serial.read(final=True)
        serial.close("")
        return decided

    start = b"highboot: starting the kernel at 0x1000\n"
    assert run(start + b"highboot: 3 of 3 application processors parked\nhighboot: warning: x\n") is None
    assert run(start + b"kernel: 2 of 2 tests\n") == ("pass", "the success pattern matched: 'kernel: 2 of 2 tests'")
    assert run(b"highboot: loader bug: index out of range\n") == ("fail", "the loader refused: 'index out of range'")
    # (OVMF's words under Secure Boot for an unsigned loader, as tests/test_secure_boot.py sees them; the DVD
    # drive's "Not Found" comes on every boot.)
    assert run(b'BdsDxe: failed to load Boot0001 "UEFI QEMU DVD-ROM QM00005 " from PciRoot(0x0)/Pci(0x1F,0x2)/Sata('
               b'0x2,0xFFFF,0x0): Not Found\r\nBdsDxe: failed to load Boot0002 "UEFI Misc Device" from PciRoot(0x0)/'
               b'Pci(0x2,0x0): Access Denied\r\n') == (
        "fail", "the firmware did not start the loader (Boot0002): 'Access Denied'")
    monkeypatch.setattr(runner, "MAX_LOG", 1 << 16)
    monkeypatch.setattr(runner, "READ_CHUNK", 1 << 12)
    assert run(start + b"spam\n" * 20000) == ("fail", "serial flood: the kernel wrote more than 0 MiB to serial")
    assert log.stat().st_size <= (1 << 16) + (1 << 12)


def test_what_qemu_exit_statuses_mean() -> None:
    from highboot.testing.runner import _exit_outcome
    from highboot.testing.table import TestTable

    one = TestTable(success_exit_code=1)
    bad = "qemu-system-x86_64: -device x: 'x' is not a valid device model name"
    assert _exit_outcome(1, bad, one, started=False) == ("fail", f"QEMU could not start: {bad!r}")
    assert _exit_outcome(1, "", one, started=True) == ("pass", "QEMU exit status 1")
    zero = TestTable(success_exit_code=0)
    stopped = "qemu-system-x86_64: terminating on signal 15 from pid 7 (kill)"
    assert _exit_outcome(0, stopped, zero, started=True) == ("fail", f"QEMU was stopped from outside: {stopped!r}")
    assert _exit_outcome(-9, "", zero, started=True) == ("fail", "QEMU was killed by signal 9")
    assert _exit_outcome(35, "", TestTable(), started=True) == (
        "fail", "QEMU exit status 35 (the kernel wrote 0x11 to the isa-debug-exit port 0xf4)")


def test_the_tests_own_qemu_logging_joins_the_runners() -> None:
    from highboot.testing.runner import _logging, _tcg

    resets, kept = Path("/w/resets.log"), Path("/r/a.qemu.log")
    assert _logging(("-device", "x"), resets, kept) == (["-d", "cpu_reset", "-D", str(resets)], ["-device", "x"])
    assert _logging(("-d", "int,guest_errors", "-s"), resets, kept) == (
        ["-d", "cpu_reset,int,guest_errors", "-D", str(kept)], ["-s"])
    assert _logging(("-d", "int", "-D", "/x.log"), resets, kept)[0] == ["-d", "cpu_reset,int", "-D", "/x.log"]
    assert _tcg(["-device", "x"]) and not _tcg(["-enable-kvm"]) and not _tcg(["-accel", "kvm"])
    assert not _tcg(["-machine", "accel=kvm"]) and _tcg(["-accel", "tcg,thread=multi"])


def test_an_earlier_runs_files_are_not_read_as_this_ones(tmp_path: Path) -> None:
    from highboot.testing.session import prepare_results
    from highboot.testing.table import TestTable

    table = TestTable(machines=(Machine("v1.2"), Machine("b", boots=2)))
    keep = ["v1.2.log", "v1.2.json", "b-1.log", "b-2.png", "junit-1-of-2.xml", "notes.txt"]
    gone = ["old.log", "old.json", "old.png", "b.log", "junit.xml", "v1.qemu.log"]
    for name in keep + gone:
        (tmp_path / name).write_text("x")
    prepare_results(tmp_path, table, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)
