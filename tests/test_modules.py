"""Modules and the kernel file: real boots of the test configurations in site_scons/testkit/matrix.py. The
kernels report each module (MODULE lines, see testkit/report.py: index, phys, virt, size, FNV-1a
of its bytes, name, command line, digest, pattern check) and check it against the pattern this
build generated, its place in KERNEL memory, its zeroed tail and that it overlaps nothing else
handed over; here every reported fact is compared with the module files themselves. A tampered,
missing or resized module is refused, naming it. The 256 MiB module is opt-in (`-m big`)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from test_boot import check_boot
from test_matrix import config
from testkit.bootcheck import parse_report
from testkit.matrix import module_sets_for_tests
from testkit.report import PASS_STATUS

from highboot.booting import qemu
from highboot.inputs import fsverity
from highboot.inputs.modules import Module, module_esp_file, write_pattern
from highboot.packaging import image
from highboot.planning.addrmap import module_lines
from highboot.units import text_bytes

NOT_STARTED = "highboot: the kernel was not started"


def fnv1a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & (1 << 64) - 1
    return h


def facts(serial: str) -> dict[str, str]:
    return parse_report(serial).facts


def check_modules(result: qemu.BootResult, modules: tuple[Module, ...], *, big: bool = False) -> None:
    """Every module reported as the build was given it: the file's bytes, name, command line and
    digest, in order; those with a test pattern checked byte by byte by the kernel."""
    tail = "\n".join(result.serial.splitlines()[-40:])
    assert result.status == PASS_STATUS, f"kernel reported failure (exit {result.status}):\n{tail}"
    reported = parse_report(result.serial).modules
    assert [r.index for r in reported] == list(range(len(modules)))
    info = facts(result.serial)
    assert info["modules"] == str(len(modules))
    direct_map = int(info["direct_map_base"], 16)
    for m, r in zip(modules, reported, strict=True):
        data = Path(m.path).read_bytes()
        assert r.size == len(data), m.name
        assert r.digest == fsverity.digest(data), m.name  # fs-verity, as `fsverity digest` prints it
        assert r.name == text_bytes(m.name) and r.cmdline == text_bytes(m.cmdline), m.name
        if not big:
            assert r.fnv == fnv1a(data), f"module {m.name}: the kernel saw other bytes than the file's"
        if data:
            assert r.phys % 4096 == 0 and r.virt == direct_map + r.phys
        else:
            assert r.phys == r.virt == 0
        assert r.pattern == ("ok" if "pattern=" in m.cmdline else "none"), m.name


def module_set(name: str) -> tuple[Module, ...]:
    return module_sets_for_tests(str(config_root()))[name]


def config_root() -> Path:
    from conftest import build_dir

    return build_dir()


def test_modules_with_kaslr(built: dict) -> None:
    esp, plan = config(built, "modules")
    result = qemu.boot(esp, cpu="max", memory="256M")
    check_boot(result, plan, expect_1g=True)
    check_modules(result, module_set("three"))
    assert "highboot: loading 4 module(s), 104097 bytes" in result.serial
    # The kernel file is handed over and is the running kernel (the kernel compared them).
    kernel = config_root() / "test" / "modules" / "kernel" / "kernel.elf"
    info = facts(result.serial)
    assert int(info["kernel_file_size"], 16) == kernel.stat().st_size
    assert int(info["kernel_file_segments_compared"]) >= 1


def test_scons_map_lists_the_modules(built: dict) -> None:
    _, plan = config(built, "modules")
    text = "\n".join(module_lines(plan))
    assert "Kernel file: handed over" in text and "Modules: 4, " in text
    initrd = module_set("three")[0]
    digest = fsverity.digest(Path(initrd.path).read_bytes()).hex()
    assert "'initrd'" in text and "\\highboot\\modules\\0.bin" in text and digest in text
    _, plan = config(built, "modules-c")
    assert "Kernel file: not handed over" in "\n".join(module_lines(plan))


def test_64_modules_on_the_5_level_layout(built: dict) -> None:
    esp, plan = config(built, "modules-many-la57")
    result = qemu.boot(esp, cpu="max", memory="512M")
    check_boot(result, plan, expect_1g=True)
    assert facts(result.serial)["levels"] == "5"
    check_modules(result, module_set("many"))


def test_c_kernel_without_the_kernel_file(built: dict) -> None:
    esp, _ = config(built, "modules-c")
    result = qemu.boot(esp, cpu="qemu64", memory="256M")
    check_modules(result, module_set("three"))
    info = facts(result.serial)
    assert info["kernel_file_phys"] == "0x0" and info["kernel_file_size"] == "0x0"


def test_default_build_has_no_modules_and_its_kernel_file(built: dict) -> None:
    result = qemu.boot(built["esp"], cpu="max", memory="256M")
    assert result.status == PASS_STATUS, result.serial[-2000:]
    info = facts(result.serial)
    assert info["modules"] == "0" and parse_report(result.serial).modules == []
    assert int(info["kernel_file_size"], 16) == built["kernel"].stat().st_size
    assert int(info["kernel_file_segments_compared"]) >= 1


def test_modules_boot_from_the_gpt_image(built: dict, tmp_path: Path) -> None:
    esp, _ = config(built, "modules")
    disk = tmp_path / "highboot.img"
    image.build_image(esp, disk)
    result = qemu.boot(disk, cpu="max", memory="256M")
    check_modules(result, module_set("three"))


def secure() -> tuple[Path, qemu.Firmware, Path]:
    d = config_root() / "test" / "modules-signed"
    return d / "esp", qemu.find_firmware(secure_boot=True), d / "secure-vars.fd"


def test_signed_loader_with_modules_under_secure_boot(built: dict) -> None:
    config(built, "modules-signed")
    esp, fw, vars_file = secure()
    result = qemu.boot(esp, cpu="max", memory="256M", firmware=fw, vars_file=vars_file)
    check_modules(result, module_set("three")[:2])


def test_signed_loader_refuses_a_module_with_a_flipped_byte(built: dict, tmp_path: Path) -> None:
    config(built, "modules-signed")
    esp, fw, vars_file = secure()
    copy = tmp_path / "esp"
    shutil.copytree(esp, copy)
    flip(copy / module_esp_file(1), 0)
    result = qemu.boot(copy, cpu="max", memory="256M", firmware=fw, vars_file=vars_file, stop_on=NOT_STARTED,
                       timeout=120)
    assert "highboot: error: module \"font.psf\" (\\highboot\\modules\\1.bin) does not match the module this " \
           "loader was built for (its fs-verity digest differs); refusing to boot it" in result.serial, \
        result.serial[-1500:]
    assert "HIGHBOOT-KERNEL" not in result.serial


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def tampered(built: dict, tmp_path: Path, change: str) -> qemu.BootResult:
    esp, _ = config(built, "modules")
    copy = tmp_path / "esp"
    shutil.copytree(esp, copy)
    initrd = copy / module_esp_file(0)
    if change == "flip-first":
        flip(initrd, 0)
    elif change == "flip-last":
        flip(initrd, initrd.stat().st_size - 1)
    elif change == "missing":
        initrd.unlink()
    elif change == "truncated":
        initrd.write_bytes(initrd.read_bytes()[:-1])
    elif change == "longer":
        initrd.write_bytes(initrd.read_bytes() + b"\0")
    result = qemu.boot(copy, cpu="max", memory="256M", stop_on=NOT_STARTED, timeout=120)
    assert "HIGHBOOT-KERNEL" not in result.serial, "the kernel ran"
    return result


MODULE0 = 'module "initrd" (\\highboot\\modules\\0.bin)'


@pytest.mark.parametrize("change, message, status", [
    ("flip-first", f"{MODULE0} does not match the module this loader was built for (its fs-verity digest differs)",
     0x800000000000001A),
    ("flip-last", f"{MODULE0} does not match the module this loader was built for", 0x800000000000001A),
    ("missing", f"{MODULE0} not found on the boot volume", 0x800000000000000E),
    ("truncated", f"{MODULE0} is 99999 bytes, the loader was built for 100000 bytes; refusing to boot it",
     0x800000000000001A),
    ("longer", f"{MODULE0} is over 100000 bytes, the loader was built for 100000 bytes", 0x800000000000001A),
])
def test_tampered_module_is_refused(built: dict, tmp_path: Path, change: str, message: str, status: int) -> None:
    result = tampered(built, tmp_path, change)
    assert f"highboot: error: {message}" in result.serial, result.serial[-1500:]
    assert f"{NOT_STARTED} (EFI status {status:#x})" in result.serial


def test_a_failed_module_frees_what_was_read(built: dict, tmp_path: Path) -> None:
    """Module 1 tampered: module 0 was read and is freed again, with the kernel file's pages (the
    fault build counts the loader's pages at entry and after the failure)."""
    esp, _ = config(built, "fault-no-memory")
    copy = tmp_path / "esp"
    shutil.copytree(esp, copy)
    flip(copy / module_esp_file(1), 4095)
    result = qemu.boot(copy, cpu="max", memory="256M", stop_on="BdsDxe: failed to start", timeout=120)
    assert 'module "font.psf" (\\highboot\\modules\\1.bin) does not match' in result.serial, result.serial[-1500:]
    pages = re.search(r"loader pages at entry (\d+), after the failure (\d+)", result.serial)
    assert pages and int(pages[1]) > 0 and pages[1] == pages[2], result.serial[-2000:]


@pytest.mark.big
def test_256_mib_module_in_a_1_gib_guest(tmp_path: Path) -> None:
    """Opt-in (`scons test PYTEST_ARGS="-m big"`): a 256 MiB module built into a project, booted
    from the GPT image, every byte checked by the kernel against its pattern; the same image in
    256 MiB of RAM is refused, naming the module."""
    write_pattern(str(tmp_path / "big.bin"), 7, 256 << 20)
    project = tmp_path / "highboot.toml"
    project.write_text('kaslr = true\n\n[[module]]\npath = "big.bin"\nname = "big"\ncmdline = "pattern=7"\n')
    out = tmp_path / "b"
    cmd = [sys.executable, "-m", "SCons", "-Q", "-j2", f"PROJECT={project}", f"BUILD_DIR={out}",
           f"CARGO_DIR={config_root() / 'cargo'}", "image"]
    build = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    disk = out / "highboot.img"
    result = qemu.boot(disk, cpu="max", memory="1G", timeout=1800)
    check_modules(result, (Module(path=str(tmp_path / "big.bin"), name="big", cmdline="pattern=7"),), big=True)
    small = qemu.boot(disk, cpu="max", memory="256M", stop_on=NOT_STARTED, timeout=600)
    assert 'highboot: error: not enough memory for module "big" (\\highboot\\modules\\0.bin)' in small.serial, \
        small.serial[-1500:]
