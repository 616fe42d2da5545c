"""Never stale: every input is judged by its content on every build, and a build killed at any
instant leaves the ESP it found or the one it was making, never a mix; the next build finishes
the job. (The disk image's all-or-nothing replacement: tests/test_image.py.)"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT, build_dir
from elftools.elf.elffile import ELFFile
from test_modules import check_modules

from highboot.booting import qemu
from highboot.build.records import IN_PROGRESS, OWNED
from highboot.inputs import fsverity
from highboot.inputs.modules import Module, module_esp_file

OLD = 946_684_800  # 2000-01-01: an mtime years old, as `cp -p`, `rsync -a` or `tar x` keep one


def scons(out: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "SCons", "-Q", f"BUILD_DIR={out}",
                           f"CARGO_DIR={ROOT / 'build' / 'cargo'}", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


def sample_kernel() -> Path:
    path = build_dir() / "kernel" / "kernel.elf"
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `scons` first")
    return path


def unloaded_offset(kernel: Path) -> int:
    """A byte of the kernel file that is not loaded (debug information: a section without
    SHF_ALLOC): changing it changes the file, its size kept, and nothing the kernel runs."""
    with open(kernel, "rb") as f:
        for section in ELFFile(f).iter_sections():
            if section["sh_type"] == "SHT_PROGBITS" and not section["sh_flags"] & 2 and section["sh_size"] > 64:
                return section["sh_offset"] + section["sh_size"] // 2
    pytest.fail(f"{kernel} has no section of debug information")


def replace_keeping_size_and_mtime(path: Path, data: bytes) -> None:
    st = path.stat()
    assert len(data) == st.st_size
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x20]) + data[offset + 1:]


def test_a_changed_byte_is_seen_whatever_the_mtime(tmp_path: Path) -> None:
    """A kernel and a module each changed by one byte, size kept and an mtime years old: the next
    build makes a new ESP, and the boot runs the new bytes (the loader checks both files against
    the digests it was built with; the kernel reports the module's bytes)."""
    kernel = tmp_path / "kernel.elf"
    shutil.copyfile(sample_kernel(), kernel)
    module = tmp_path / "initrd.img"
    module.write_bytes(random.Random(24).randbytes(50_000))
    for path in (kernel, module):
        os.utime(path, (OLD, OLD))
    out = tmp_path / "b"
    args = [f"KERNEL={kernel}", f"MODULES={module}"]
    first = scons(out, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    esp = out / "esp"
    loader_before = (esp / "EFI" / "BOOT" / "BOOTX64.EFI").read_bytes()

    replace_keeping_size_and_mtime(module, flip(module.read_bytes(), 1234))
    replace_keeping_size_and_mtime(kernel, flip(kernel.read_bytes(), unloaded_offset(kernel)))
    assert module.stat().st_mtime == OLD and kernel.stat().st_mtime == OLD
    second = scons(out, *args)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Installing the ESP" in second.stdout, second.stdout
    assert (esp / "highboot" / "kernel.elf").read_bytes() == kernel.read_bytes()
    assert (esp / module_esp_file(0)).read_bytes() == module.read_bytes()
    loader = (esp / "EFI" / "BOOT" / "BOOTX64.EFI").read_bytes()
    assert loader != loader_before
    for path in (kernel, module):
        assert fsverity.file_digest(str(path))[0] in loader, f"the loader does not carry {path.name}'s new digest"

    result = qemu.boot(esp, cpu="max", memory="256M")
    check_modules(result, (Module(path=str(module), name=module.name),))

    # Nothing changed: nothing is done again.
    third = scons(out, *args)
    assert third.returncode == 0 and "Installing" not in third.stdout and "Planning" not in third.stdout, third.stdout


def test_the_esp_holds_exactly_this_build(tmp_path: Path) -> None:
    """A build with fewer modules than the last, after someone left a file and a directory in the
    ESP: the new ESP holds its loader, its kernel and its modules, nothing else."""
    modules = [tmp_path / f"m{i}.bin" for i in range(3)]
    for i, m in enumerate(modules):
        m.write_bytes(bytes([i]) * (1000 + i))
    out = tmp_path / "b"
    kernel = f"KERNEL={sample_kernel()}"
    done = scons(out, kernel, "MODULES=" + ",".join(map(str, modules)))
    assert done.returncode == 0, done.stdout + done.stderr
    esp = out / "esp"
    (esp / "highboot" / "modules" / "stray").mkdir()
    (esp / "highboot" / "modules" / "stray" / "x").write_bytes(b"x")
    (esp / "notes.txt").write_text("left here by hand")
    done = scons(out, kernel, f"MODULES={modules[1]}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(esp_files(esp)) == ["EFI/BOOT/BOOTX64.EFI", "highboot/kernel.elf", "highboot/modules/0.bin"]
    assert (esp / "highboot" / "modules" / "0.bin").read_bytes() == modules[1].read_bytes()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".esp")) == []
    check_consistent(esp)


def test_a_file_changed_while_the_build_ran_is_refused(tmp_path: Path) -> None:
    """The ESP step checks each copy against the plan the loader was built from: a module that
    changed after planning stops the build, naming it, and leaves the ESP as it was."""
    from highboot.build.steps import install_esp
    from highboot.errors import HighbootError

    module = tmp_path / "m.bin"
    module.write_bytes(b"planned" * 100)
    out = tmp_path / "b"
    done = scons(out, f"KERNEL={sample_kernel()}", f"MODULES={module}")
    assert done.returncode == 0, done.stdout + done.stderr
    before = esp_files(out / "esp")
    module.write_bytes(b"changed" * 100)
    files = [(str(out / "loader" / "BOOTX64.EFI"), "EFI/BOOT/BOOTX64.EFI"),
             (str(sample_kernel()), "highboot/kernel.elf"), (str(module), module_esp_file(0))]
    with pytest.raises(HighbootError) as err:
        install_esp(str(out / "esp"), files, str(out / "plan.json"))
    assert err.value.file == str(module) and "changed while the build ran" in err.value.message, err.value.format()
    assert esp_files(out / "esp") == before and not (out / ".esp.new").exists()
    # A plan that lists other files than the build installs is refused too.
    with pytest.raises(HighbootError) as err:
        install_esp(str(out / "esp"), files[:2], str(out / "plan.json"))
    assert "are not the ones the plan lists" in err.value.message
    assert esp_files(out / "esp") == before


def test_new_signing_keys_are_seen_whatever_the_mtime(tmp_path: Path) -> None:
    """SIGN=1 with a project's own db key: another key pair put in place with the old pair's mtime
    signs the next build (sbverify checks the signature against the new certificate)."""
    from highboot.packaging.signing import ensure_keys

    keys, other = tmp_path / "keys", tmp_path / "other"
    args = [f"KERNEL={sample_kernel()}", "SIGN=1", f"SIGN_KEY={keys / 'db.key'}", f"SIGN_CERT={keys / 'db.crt'}"]
    out = tmp_path / "b"
    done = scons(out, *args)  # makes the pair on first use
    assert done.returncode == 0, done.stdout + done.stderr
    ensure_keys(other / "db.key", other / "db.crt")
    for name in ("db.key", "db.crt"):
        shutil.copyfile(other / name, keys / name)
        os.utime(keys / name, (OLD, OLD))
    done = scons(out, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Signing" in done.stdout, done.stdout
    signed = out / "esp" / "EFI" / "BOOT" / "BOOTX64.EFI"
    check = subprocess.run(["sbverify", "--cert", str(other / "db.crt"), str(signed)], capture_output=True, text=True,
                           check=False)
    assert check.returncode == 0, check.stdout + check.stderr


# ------------------------------------------------------------------------------- crash consistency

class States:
    """Two sets of inputs at the same paths (a kernel, a layout, modules), as a user's edits make
    them, and the ESP each one builds: a killed build must leave one of the two, byte for byte."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "inputs"
        self.dir.mkdir()
        base = sample_kernel().read_bytes()
        rng = random.Random(7)
        layout = (ROOT / "templates" / "layouts" / "linux-x86_64.toml").read_text()
        self.inputs = {
            "a": {"kernel.elf": base, "layout.toml": layout.encode(),
                  "m0.img": rng.randbytes(30_000), "m1.img": rng.randbytes(5_000)},
            "b": {"kernel.elf": flip(base, unloaded_offset(sample_kernel())),
                  "layout.toml": layout.replace('name = "linux-x86_64"', 'name = "edited"').encode(),
                  "m0.img": rng.randbytes(30_000), "m1.img": rng.randbytes(5_000), "m2.img": rng.randbytes(70_000)},
        }
        assert self.inputs["a"]["layout.toml"] != self.inputs["b"]["layout.toml"]
        self.esps: dict[str, dict[str, bytes]] = {}

    def use(self, name: str) -> list[str]:
        """Put state `name`'s files in place (old mtimes: only their content tells them apart)."""
        for file, data in self.inputs[name].items():
            path = self.dir / file
            path.write_bytes(data)
            os.utime(path, (OLD, OLD))
        modules = ",".join(str(self.dir / f) for f in sorted(self.inputs[name]) if f.endswith(".img"))
        return [f"KERNEL={self.dir / 'kernel.elf'}", f"LAYOUT={self.dir / 'layout.toml'}", f"MODULES={modules}"]


def esp_files(esp: Path) -> dict[str, bytes]:
    return {str(p.relative_to(esp)): p.read_bytes() for p in sorted(esp.rglob("*")) if not p.is_dir()}


def check_consistent(esp: Path) -> None:
    """The ESP as a loader sees it: exactly its loader, kernel and modules 0..n-1, and the loader
    carries the digest of each file beside it."""
    files = esp_files(esp)
    loader = files.pop("EFI/BOOT/BOOTX64.EFI")
    kernel = files.pop("highboot/kernel.elf")
    assert fsverity.digest(kernel) in loader
    assert sorted(files) == sorted(module_esp_file(i) for i in range(len(files))), sorted(files)
    for data in files.values():
        assert fsverity.digest(data) in loader


def kill_at(out: Path, args: list[str], after: float) -> None:
    """Start a build and SIGKILL it, with every process it started (cargo, rustc), after `after` s."""
    proc = subprocess.Popen([sys.executable, "-m", "SCons", "-Q", f"BUILD_DIR={out}",
                             f"CARGO_DIR={ROOT / 'build' / 'cargo'}", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(after)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def crash_sweep(tmp_path: Path, kills: int, seed: int) -> None:
    states = States(tmp_path)
    out = tmp_path / "b"
    esp = out / "esp"
    durations = []
    for name in ("a", "b", "a"):  # each state's ESP, built whole (the second "a" shows builds repeat)
        start = time.monotonic()
        done = scons(out, *states.use(name))
        durations.append(time.monotonic() - start)
        assert done.returncode == 0, done.stdout + done.stderr
        check_consistent(esp)
        if name in states.esps:
            assert esp_files(esp) == states.esps[name], "the same inputs built another ESP"
        states.esps[name] = esp_files(esp)
    assert states.esps["a"] != states.esps["b"]
    rng = random.Random(seed)
    current = "a"
    for i in range(kills):
        new = "b" if current == "a" else "a"
        args = states.use(new)
        after = rng.uniform(0.2, max(durations) * 1.1)
        kill_at(out, args, after)
        assert not (out / ".esp.new").exists() or esp.is_dir(), f"kill {i} at {after:.1f} s: no ESP"
        found = esp_files(esp)
        assert found in (states.esps[current], states.esps[new]), (
            f"kill {i} at {after:.1f} s: the ESP is neither the old one nor the new one: {sorted(found)}")
        check_consistent(esp)
        done = scons(out, *args)
        assert done.returncode == 0, f"kill {i} at {after:.1f} s: the next build failed:\n{done.stdout}{done.stderr}"
        assert esp_files(esp) == states.esps[new], f"kill {i} at {after:.1f} s: the next build did not finish the job"
        assert not (out / IN_PROGRESS).exists() and not (out / ".esp.new").exists()
        current = new


def test_a_killed_build_leaves_the_old_esp_or_the_new_one(tmp_path: Path) -> None:
    """A few kills at random moments of builds that change the kernel, the modules and the layout
    (the sweep, many more: -m big)."""
    crash_sweep(tmp_path, kills=3, seed=24)


@pytest.mark.big
def test_killed_builds_sweep(tmp_path: Path) -> None:
    crash_sweep(tmp_path, kills=40, seed=2024)


def test_a_killed_build_makes_the_next_one_check_every_step(tmp_path: Path) -> None:
    """A build killed after it wrote a step's output but before SCons recorded it: had the inputs
    gone back, SCons's records would call that output up to date. The mark it left makes the next
    build check every step, so the ESP is the one the inputs make."""
    states = States(tmp_path)
    out = tmp_path / "b"
    assert scons(out, *states.use("a")).returncode == 0
    esp_a = esp_files(out / "esp")
    # A build of "b" killed once it had planned (plan.json is "b"'s, the records still say "a").
    args = states.use("b")
    proc = subprocess.Popen([sys.executable, "-m", "SCons", "-Q", f"BUILD_DIR={out}",
                             f"CARGO_DIR={ROOT / 'build' / 'cargo'}", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("Building") and "loader" in line:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / IN_PROGRESS).exists()
    assert b'"edited"' in (out / "plan.json").read_bytes()
    # The inputs go back to "a": the ESP must be "a"'s, planned from "a", not from the plan on disk.
    done = scons(out, *states.use("a"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "stopped part-way; checking every step again" in done.stdout
    assert b'"edited"' not in (out / "plan.json").read_bytes()
    assert esp_files(out / "esp") == esp_a


# ------------------------------------------------------------------------------- every path checked

def _fifo(tmp_path: Path, name: str = "fifo") -> Path:
    path = tmp_path / name
    os.mkfifo(path)
    return path


def _project(tmp_path: Path, key: str, value: str | Path, table: str = "") -> str:
    """PROJECT=<a project file setting key to value> (in a [[table]] if given)."""
    path = tmp_path / "proj.toml"
    path.write_text((f"[[{table}]]\n" if table else "") + f"{key} = {json.dumps(str(value))}\n")
    return f"PROJECT={path}"


def _template_fifo(tmp_path: Path) -> Path:
    (tmp_path / "t" / "loader").mkdir(parents=True)
    os.mkfifo(tmp_path / "t" / "loader" / "plan.rs.j2")
    return tmp_path / "t"


def _output(tmp_path: Path, inside: str) -> Path:
    """A file a build wrote, in the build directory the test builds in (tmp_path / "b")."""
    path = tmp_path / "b" / inside
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"built")
    (tmp_path / "b" / OWNED).touch()  # as a build leaves it
    return path


# (id, arguments from tmp_path, what the refusal must say)
PATH_CASES = [
    ("kernel-device", lambda t: ["KERNEL=/dev/zero"],
     "KERNEL: kernel file '/dev/zero' is a character device, not a regular file"),
    ("layout-device", lambda t: ["LAYOUT=/dev/zero"],
     "LAYOUT: layout file '/dev/zero' is a character device, not a regular file"),
    ("project-layout-device", lambda t: [_project(t, "layout", "/dev/zero")],
     "proj.toml: layout: layout file '/dev/zero' is a character device, not a regular file"),
    ("project-kernel-fifo", lambda t: [_project(t, "kernel", _fifo(t))],
     "proj.toml: kernel: kernel file '{t}/fifo' is a FIFO, not a regular file"),
    ("kernel-fifo", lambda t: [f"KERNEL={_fifo(t)}"], "KERNEL: kernel file '{t}/fifo' is a FIFO, not a regular file"),
    ("project-file-fifo", lambda t: [f"PROJECT={_fifo(t)}"],
     "PROJECT: project file '{t}/fifo' is a FIFO, not a regular file"),
    ("project-file-device", lambda t: ["PROJECT=/dev/zero"], "PROJECT: project file '/dev/zero' is a character device"),
    ("template-fifo", lambda t: [f"TEMPLATES={_template_fifo(t)}"],
     "{t}/t/loader/plan.rs.j2: template is a FIFO, not a regular file"),
    ("sign-key-device", lambda t: ["SIGN=1", "SIGN_KEY=/dev/zero", f"SIGN_CERT={t}/db.crt"],
     "SIGN_KEY: key file '/dev/zero' is a character device, not a regular file"),
    ("module-device", lambda t: ["MODULES=/dev/null"], "MODULES: module file '/dev/null' is a character device"),
    ("kernel-build-output", lambda t: [f"KERNEL={_output(t, 'esp/highboot/kernel.elf')}"],
     "KERNEL: '{t}/b/esp/highboot/kernel.elf' is inside BUILD_DIR ({t}/b), where the build writes its own output"),
    ("module-build-output", lambda t: [f"MODULES={_output(t, 'plan.json')}"],
     "MODULES: '{t}/b/plan.json' is inside BUILD_DIR"),
    ("project-module-build-output",
     lambda t: [_project(t, "path", _output(t, "loader/BOOTX64.EFI"), table="module")],
     "proj.toml: module[0].path: '{t}/b/loader/BOOTX64.EFI' is inside BUILD_DIR"),
    ("layout-in-cargo-dir", lambda t: [f"CARGO_DIR={t}/cargo", f"LAYOUT={_output(t, '../cargo/l.toml')}"],
     "LAYOUT: '{t}/b/../cargo/l.toml' is inside CARGO_DIR ({t}/cargo)"),
    ("templates-in-build-dir", lambda t: [f"TEMPLATES={_output(t, 'gen/x').parent}"],
     "TEMPLATES: '{t}/b/gen' is inside BUILD_DIR"),
    ("project-file-build-output", lambda t: [f"PROJECT={_output(t, 'p.toml')}"],
     "PROJECT: '{t}/b/p.toml' is inside BUILD_DIR"),
    ("build-dir-holds-the-sources", lambda t: ["BUILD_DIR=."],
     "BUILD_DIR: '.' holds highboot's own sources"),
]


@pytest.mark.parametrize("args, message", [c[1:] for c in PATH_CASES], ids=[c[0] for c in PATH_CASES])
def test_every_path_is_checked(tmp_path: Path, args: Callable[[Path], list[str]], message: str) -> None:
    """Devices, FIFOs and a build's own files, named as any input: one refusal naming the option or
    the project file's field, at once (no hang: a short timeout), nothing built."""
    given = args(tmp_path)
    kernel = [] if any(a.startswith(("KERNEL=", "PROJECT=")) for a in given) else [f"KERNEL={sample_kernel()}"]
    out = subprocess.run([sys.executable, "-m", "SCons", "-Q", f"BUILD_DIR={tmp_path / 'b'}", *kernel, *given],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert f"highboot: error: {message.format(t=tmp_path)}" in text or message.format(t=tmp_path) in text, text
    assert "Traceback" not in text and "Internal Error" not in text and "dependency cycle" not in text, text
    assert not (tmp_path / "b" / "esp").exists() or "esp/highboot/kernel.elf" in message


# ------------------------------------------------------------------------------- one build directory, one build

def test_a_second_scons_in_the_same_build_directory_is_refused(tmp_path: Path) -> None:
    """Two scons in one build directory would each write back their own records when they end (a
    `scons debug` left open, a build in another terminal): the second is refused, naming it."""
    out = tmp_path / "b"
    assert scons(out, f"KERNEL={sample_kernel()}").returncode == 0
    holder = subprocess.Popen(["flock", str(out / ".highboot-lock"), "sleep", "30"])
    try:
        time.sleep(0.5)
        second = scons(out, f"KERNEL={sample_kernel()}", "CMDLINE=other", timeout=60)
    finally:
        holder.kill()
        holder.wait()
    assert second.returncode == 2 and "BUILD_DIR: another scons" in second.stderr, second.stdout + second.stderr
    assert "Traceback" not in second.stderr and b'"cmdline": ""' in (out / "plan.json").read_bytes()


def test_a_build_directory_reached_through_a_link_keeps_one_record(tmp_path: Path) -> None:
    """The same directory as `b` and through a symbolic link to it: one directory, one record, so
    going back to the first inputs builds them again (the ESP never keeps the other's loader)."""
    out, link = tmp_path / "b", tmp_path / "link"
    kernel = f"KERNEL={sample_kernel()}"
    assert scons(out, kernel, "CMDLINE=first").returncode == 0
    first = esp_files(out / "esp")
    link.symlink_to(out)
    assert scons(link, kernel, "CMDLINE=second").returncode == 0
    assert esp_files(out / "esp") != first and b'"cmdline": "second"' in (out / "plan.json").read_bytes()
    third = scons(out, kernel, "CMDLINE=first")
    assert third.returncode == 0, third.stdout + third.stderr
    assert b'"cmdline": "first"' in (out / "plan.json").read_bytes()
    assert esp_files(out / "esp") == first


def test_a_directory_of_other_files_is_no_build_directory(tmp_path: Path) -> None:
    """`scons -c` deletes a build directory whole: one holding files no build made is refused, for a
    build and for -c, and its files stay."""
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    for args in ([f"KERNEL={sample_kernel()}"], ["-c"]):
        done = scons(mine, *args)
        assert done.returncode == 2 and "BUILD_DIR: " in done.stderr and "no highboot build made" in done.stderr
    assert (mine / "thesis.tex").read_text() == "years of work"
    done = subprocess.run([sys.executable, "-m", "SCons", "-Q", "BUILD_DIR=kernel"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2 and "no highboot build made" in done.stderr, done.stderr


def test_what_stands_in_the_way_of_the_build_is_replaced(tmp_path: Path) -> None:
    """A file where the ESP directory goes (or a directory where the image goes): the build
    directory is highboot's own, so the build puts its own in their place."""
    out = tmp_path / "b"
    kernel = f"KERNEL={sample_kernel()}"
    assert scons(out, kernel).returncode == 0
    shutil.rmtree(out / "esp")
    (out / "esp").write_text("in the way")
    (out / ".sconsign.dblite").unlink()
    done = scons(out, kernel)
    assert done.returncode == 0, done.stdout + done.stderr
    check_consistent(out / "esp")


def test_max_drift_cannot_bring_stale_builds_back(tmp_path: Path) -> None:
    done = scons(tmp_path / "b", f"KERNEL={sample_kernel()}", "--max-drift=1")
    assert done.returncode == 2 and "--max-drift: highboot judges every input by its content" in done.stderr


def test_a_failed_install_leaves_no_new_directories(tmp_path: Path) -> None:
    """SCons makes its targets' directories before the ESP step; a failed step takes them away again
    (the old ESP stays as it was, empty module directory and all gone)."""
    from highboot.build.steps import install_esp
    from highboot.errors import HighbootError

    module = tmp_path / "m.bin"
    module.write_bytes(b"x" * 100)
    out = tmp_path / "b"
    assert scons(out, f"KERNEL={sample_kernel()}").returncode == 0
    before = esp_files(out / "esp")
    (out / "esp" / "highboot" / "modules").mkdir()
    files = [(str(out / "loader" / "BOOTX64.EFI"), "EFI/BOOT/BOOTX64.EFI"),
             (str(sample_kernel()), "highboot/kernel.elf"), (str(module), module_esp_file(0))]
    with pytest.raises(HighbootError):
        install_esp(str(out / "esp"), files, str(out / "plan.json"))
    assert esp_files(out / "esp") == before and not (out / "esp" / "highboot" / "modules").exists()


def test_a_key_pair_left_half_in_place_is_finished(tmp_path: Path) -> None:
    """Keys are made beside and renamed into place, the key last: a build killed between the two
    renames leaves the certificate and the new key beside it, and the next build finishes the job.
    One half missing otherwise is refused naming it; the same file for both is refused."""
    from highboot.errors import HighbootError
    from highboot.packaging.signing import check_key_pair, ensure_keys

    made = tmp_path / "made"
    ensure_keys(made / "db.key", made / "db.crt")
    keys = tmp_path / "keys"
    keys.mkdir()
    shutil.copyfile(made / "db.crt", keys / "db.crt")
    shutil.copyfile(made / "db.key", keys / ".db.key.new")
    ensure_keys(keys / "db.key", keys / "db.crt")
    assert (keys / "db.key").read_bytes() == (made / "db.key").read_bytes()
    (keys / "db.key").unlink()
    with pytest.raises(HighbootError) as err:
        ensure_keys(keys / "db.key", keys / "db.crt")
    assert err.value.field == "SIGN_KEY" and "one half of the signing key pair is missing" in err.value.message
    (keys / "db.key").write_text("not a key\n")
    with pytest.raises(HighbootError) as err:
        ensure_keys(keys / "db.key", keys / "db.crt")
    assert err.value.field == "SIGN_KEY" and "reading the db key" in err.value.message
    with pytest.raises(HighbootError) as err:
        check_key_pair(str(made / "db.key"), str(made / "db.key"), (), lambda o: {"file": None, "field": o})
    assert err.value.field == "SIGN_CERT" and "SIGN_KEY's file too" in err.value.message


def test_templates_are_tracked_whatever_their_names(tmp_path: Path) -> None:
    """An include whose name is computed cannot be tracked: refused. An optional include (ignore
    missing) is tracked when it appears and when it changes."""
    from highboot.errors import HighbootError
    from highboot.rendering.templates import template_files

    dirs = tmp_path / "t"
    (dirs / "include").mkdir(parents=True)
    header = dirs / "include" / "highboot.h.j2"
    header.write_text('{% set n = "extra" ~ ".j2" %}{% include n %}\n')
    with pytest.raises(HighbootError) as err:
        template_files([str(dirs)], "include/highboot.h.j2")
    assert "named by an expression cannot be tracked" in err.value.message and err.value.field == "line 1"
    header.unlink()
    (dirs / "loader").mkdir()
    (dirs / "loader" / "plan.rs.j2").write_text('{% extends "base:loader/plan.rs.j2" %}{% block extra %}'
                                                '{% include "optional.j2" ignore missing %}{% endblock %}\n')
    out = tmp_path / "b"
    args = [f"KERNEL={sample_kernel()}", f"TEMPLATES={dirs}"]
    done = scons(out, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    (dirs / "optional.j2").write_text("/* optional v1 */\n")
    assert scons(out, *args).returncode == 0
    assert "optional v1" in (out / "gen" / "plan.rs").read_text()
    (dirs / "optional.j2").write_text("/* optional v2 */\n")
    os.utime(dirs / "optional.j2", (OLD, OLD))
    assert scons(out, *args).returncode == 0
    assert "optional v2" in (out / "gen" / "plan.rs").read_text()
