"""How an ESP directory boots (highboot.booting.qemu.boot_medium): as QEMU's `fat:` directory disk when it
fits one, else packed into a GPT disk image, for `scons run` / `debug` and the tests alike.

The FAT16 directory disk's capacity is checked against QEMU itself (a `-machine none` QEMU opens
the disk and quits: no boot, sparse files), the decision without QEMU, and real boots through
run_qemu (what `scons run` calls) both ways. The boots of an ESP larger than the FAT16 disk (a
600 MiB module) and of one at the largest size still booted as a directory run with -m big."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from testkit.bootcheck import passed
from testkit.report import PASS_LINE, PASS_STATUS

from highboot.booting import qemu
from highboot.inputs.modules import module_esp_file, write_pattern
from highboot.packaging import image

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = qemu.VVFAT_CLUSTER


def opens(directory: Path, kind: str = "fat:") -> tuple[bool, str]:
    """Does QEMU take `directory` as its directory disk? (No machine: it opens the drive and quits.)"""
    drive = f"if=none,id=d,format=raw,readonly=on,file={kind}{directory}"
    proc = subprocess.run([qemu.qemu_binary(), "-machine", "none", "-display", "none", "-nodefaults",
                           "-monitor", "stdio", "-drive", drive], input=b"quit\n", capture_output=True, timeout=120)
    return proc.returncode == 0, proc.stderr.decode(errors="replace")


def sparse(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)


def one_file(root: Path) -> Path:
    sparse(root / "big.bin", 0)
    return root / "big.bin"


def esp_like(root: Path) -> Path:
    """The ESP's shape: the loader, the kernel, 300 modules (their directory takes 3 clusters)."""
    sparse(root / "EFI" / "BOOT" / "BOOTX64.EFI", 64000)
    sparse(root / "highboot" / "kernel.elf", 1645392)
    for i in range(1, 300):
        sparse(root / module_esp_file(i), 4096 * i)
    sparse(root / module_esp_file(0), 0)
    return root / module_esp_file(0)


def long_names(root: Path) -> Path:
    """Names of 40 characters: four long-name entries each."""
    for i in range(200):
        sparse(root / "d" / f"{i:03d}-{'long-file-name-' * 3}"[:40], 1)
    sparse(root / "d" / "big.bin", 0)
    return root / "d" / "big.bin"


@pytest.mark.parametrize("tree", [one_file, esp_like, long_names])
def test_the_clusters_counted_are_qemus(tree: Callable[[Path], Path], tmp_path: Path) -> None:
    """With the big file sized so that the count is exactly QEMU's capacity, QEMU takes the
    directory; one byte more and it refuses it: the count is vvfat's, to the cluster."""
    big = tree(tmp_path)
    rest = qemu.fat_directory_needs(tmp_path).clusters
    os.truncate(big, (qemu.VVFAT_CLUSTERS - rest) * CLUSTER)
    assert qemu.fat_directory_needs(tmp_path).clusters == qemu.VVFAT_CLUSTERS
    ok, err = opens(tmp_path)
    assert ok, err
    os.truncate(big, (qemu.VVFAT_CLUSTERS - rest) * CLUSTER + 1)
    assert qemu.fat_directory_needs(tmp_path).clusters == qemu.VVFAT_CLUSTERS + 1
    ok, err = opens(tmp_path)
    assert not ok and "Directory does not fit in FAT16 (capacity 516.06 MB)" in err, err


def test_fits_keeps_the_margin(tmp_path: Path) -> None:
    big = esp_like(tmp_path)
    rest = qemu.fat_directory_needs(tmp_path).clusters
    largest = (qemu.VVFAT_CLUSTERS - qemu.VVFAT_MARGIN - rest) * CLUSTER
    os.truncate(big, largest)
    assert qemu.fat_directory_needs(tmp_path).fits
    assert opens(tmp_path)[0]
    os.truncate(big, largest + 1)
    assert not qemu.fat_directory_needs(tmp_path).fits


@pytest.mark.parametrize("names, fits", [(255, True), (256, False)])
def test_root_directory_entries(tmp_path: Path, names: int, fits: bool) -> None:
    """The root is a fixed table of 512 entries: the label and two entries a name."""
    for i in range(names):
        sparse(tmp_path / f"F{i:03d}", 0)
    needs = qemu.fat_directory_needs(tmp_path)
    assert needs.root_entries == 1 + 2 * names
    assert needs.fits is fits
    ok, err = opens(tmp_path)
    assert ok is fits, err


def test_fat32_directory_disk_is_no_larger(tmp_path: Path) -> None:
    """QEMU's `fat:32:` disk has the same geometry: what FAT16 only just takes, it refuses."""
    big = one_file(tmp_path)
    os.truncate(big, qemu.VVFAT_CLUSTERS * CLUSTER)
    assert opens(tmp_path)[0]
    ok, err = opens(tmp_path, "fat:32:")
    assert not ok and "Directory does not fit in FAT32" in err, err


Packs = list[tuple[Path, Path]]


@pytest.fixture
def packs(monkeypatch: pytest.MonkeyPatch) -> Packs:
    """build_image replaced by a stub that records what it was asked to pack."""
    calls: list[tuple[Path, Path]] = []

    def fake(esp: str | Path, out: str | Path, **_: object) -> None:
        calls.append((Path(esp), Path(out)))
        Path(out).write_bytes(b"image")

    monkeypatch.setattr(image, "build_image", fake)
    return calls


def drive(medium: qemu.BootMedium) -> str:
    """The -drive QEMU gets for the medium."""
    cmd = qemu.command(medium.path, "vars.fd", firmware=qemu.Firmware("code.fd", "vars.fd"))
    return next(arg for arg in cmd if arg.startswith("if=none,id=esp,"))


def test_a_small_esp_boots_as_a_directory(tmp_path: Path, packs: Packs) -> None:
    sparse(tmp_path / "esp" / "EFI" / "BOOT" / "BOOTX64.EFI", 64000)
    medium = qemu.boot_medium(tmp_path / "esp", tmp_path / "run.img")
    assert (medium.how, medium.path) == ("fat", tmp_path / "esp")
    assert "as QEMU's FAT16 directory disk (fat:, 0.1 MiB of about 500 MiB)" in medium.message
    assert not packs and not (tmp_path / "run.img").exists()
    assert drive(medium).endswith(f"file=fat:{tmp_path / 'esp'}")


def test_a_large_esp_is_packed(tmp_path: Path, packs: Packs, capsys: pytest.CaptureFixture) -> None:
    sparse(tmp_path / "esp" / module_esp_file(0), 600 << 20)
    medium = qemu.boot_medium(tmp_path / "esp", tmp_path / "run.img")
    assert (medium.how, medium.path) == ("image", tmp_path / "run.img")
    assert packs == [(tmp_path / "esp", tmp_path / "run.img")]
    assert "needs 600.0 MiB, more than QEMU's FAT16 directory disk holds (about 500 MiB)" in medium.message
    assert f"highboot: packing {tmp_path / 'esp'} into {tmp_path / 'run.img'} ..." in capsys.readouterr().out
    assert drive(medium).endswith(f"file={tmp_path / 'run.img'}")


def test_too_many_root_entries_are_packed(tmp_path: Path, packs: Packs) -> None:
    for i in range(300):
        sparse(tmp_path / "esp" / f"f{i}", 1)
    medium = qemu.boot_medium(tmp_path / "esp", tmp_path / "run.img")
    assert medium.how == "image" and "has 600 directory entries at its root" in medium.message


def test_as_image_forces_either_way(tmp_path: Path, packs: Packs) -> None:
    sparse(tmp_path / "small" / "a.efi", 1)
    sparse(tmp_path / "large" / "a.bin", 600 << 20)
    assert qemu.boot_medium(tmp_path / "small", tmp_path / "s.img", as_image=True).how == "image"
    assert qemu.boot_medium(tmp_path / "large", tmp_path / "l.img", as_image=False).how == "fat"
    assert packs == [(tmp_path / "small", tmp_path / "s.img")]


def test_a_disk_image_boots_as_it_is(tmp_path: Path, packs: Packs) -> None:
    (tmp_path / "disk.img").write_bytes(b"x")
    for as_image in (None, True):
        medium = qemu.boot_medium(tmp_path / "disk.img", tmp_path / "run.img", as_image=as_image)
        assert (medium.how, medium.path) == ("image", tmp_path / "disk.img")
    assert not packs


# ------------------------------------------------------------------------------- real boots

def run_qemu(built: dict, out_dir: Path, memory: str = "256M", **options: object) -> subprocess.CompletedProcess:
    """build.run_qemu, what `scons run` calls, in a process of its own: QEMU's serial on its stdout."""
    args = {"esp_dir": str(options.pop("esp", built["esp"])), "kernel": str(built["kernel"]),
            "plan_file": str(built["dir"] / "plan.json"), "out_dir": str(out_dir), "gdb": False, "kaslr": False,
            "cpu": "max", "memory": memory, "graphic": False, "secure_vars": None, **options}
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from highboot.build import steps as build; "
            "sys.exit(build.run_qemu(**json.loads(sys.argv[2])))")
    return subprocess.run([sys.executable, "-c", code, str(ROOT / "site_scons"), json.dumps(args)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)


def test_run_boots_the_esp_as_a_directory(built: dict, tmp_path: Path) -> None:
    proc = run_qemu(built, tmp_path)
    assert proc.returncode == PASS_STATUS and PASS_LINE in proc.stdout, proc.stdout[-2000:]
    assert f"highboot: booting {built['esp']} as QEMU's FAT16 directory disk (fat:" in proc.stdout
    assert not (tmp_path / "run.img").exists()


def test_run_boots_the_esp_packed_into_an_image(built: dict, tmp_path: Path) -> None:
    """The path a large ESP takes, forced with a small one: packed into out_dir/run.img, booted."""
    proc = run_qemu(built, tmp_path, as_image=True)
    assert proc.returncode == PASS_STATUS and PASS_LINE in proc.stdout, proc.stdout[-2000:]
    run_img = tmp_path / "run.img"
    assert f"highboot: booting {built['esp']} packed into the disk image {run_img} (GPT, FAT32; packed as asked)" \
        in proc.stdout
    assert f"file={run_img}" in proc.stdout  # the QEMU command line, as printed
    assert image.check_gpt(run_img)["name"] == "EFI System"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.img"]  # nothing else left


def test_boot_packs_the_esp_when_asked(built: dict) -> None:
    result = qemu.boot(built["esp"], as_image=True)
    assert passed(result), result.serial[-2000:]
    assert result.medium is not None and result.medium.how == "image"
    assert qemu.boot(built["esp"]).medium.how == "fat"  # type: ignore[union-attr]


# --------------------------------------------------------------------- -m big: real sizes

def scons(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    from conftest import build_dir

    cmd = [sys.executable, "-m", "SCons", "-Q", f"CARGO_DIR={build_dir() / 'cargo'}", *args]
    return subprocess.run(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def module_project(directory: Path, size: int) -> Path:
    write_pattern(str(directory / "big.bin"), 7, size)
    project = directory / "highboot.toml"
    project.write_text('[[module]]\npath = "big.bin"\nname = "big"\ncmdline = "pattern=7"\n')
    return project


def module_checked(serial: str, size: int) -> bool:
    """The kernel's MODULE line for module 0: its size, and every byte checked against the pattern."""
    lines = [line.split() for line in serial.splitlines() if line.startswith("MODULE 0 ")]
    return len(lines) == 1 and int(lines[0][4], 16) == size and lines[0][-1] == "ok"


@pytest.mark.big
def test_scons_run_boots_an_esp_larger_than_fat16(tmp_path: Path) -> None:
    """Opt-in: a 600 MiB module, which QEMU's FAT16 directory disk cannot hold: `scons run` packs
    the ESP into $BUILD_DIR/run.img, says so, and the kernel checks every byte of the module."""
    size = 600 << 20
    project, out = module_project(tmp_path, size), tmp_path / "b"
    proc = scons(f"PROJECT={project}", f"BUILD_DIR={out}", "QEMU_MEMORY=2G", "run")
    assert PASS_LINE in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert f"highboot: booting {out}/esp packed into the disk image {out}/run.img (GPT, FAT32; needs 601." \
        in proc.stdout, proc.stdout[:3000]
    assert module_checked(proc.stdout, size), proc.stdout[-3000:]
    assert not opens(out / "esp")[0]  # the directory itself is refused by QEMU
    image.check_gpt(out / "run.img")
    # The tests' own boots take the same way.
    result = qemu.boot(out / "esp", memory="2G", timeout=1800)
    assert passed(result) and module_checked(result.serial, size), result.serial[-2000:]
    assert result.medium is not None and result.medium.how == "image"


@pytest.mark.big
def test_the_largest_directory_boot(tmp_path: Path) -> None:
    """Opt-in: a module sized so that the ESP is the largest boot_medium still boots as a `fat:`
    directory disk (VVFAT_MARGIN below QEMU's capacity): OVMF reads it to its last cluster."""
    out, size = tmp_path / "b", 1
    target = qemu.VVFAT_CLUSTERS - qemu.VVFAT_MARGIN
    for _ in range(3):  # the loader carries the module's size and digest: sized again until it fits exactly
        project = module_project(tmp_path, size)
        build = scons(f"PROJECT={project}", f"BUILD_DIR={out}")
        assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
        needs = qemu.fat_directory_needs(out / "esp")
        if needs.clusters == target:
            break
        size += (target - needs.clusters) * CLUSTER
    assert needs.fits and needs.clusters == target
    result = qemu.boot(out / "esp", memory="2G", timeout=1800)
    assert result.medium is not None and result.medium.how == "fat"
    assert passed(result) and module_checked(result.serial, size), result.serial[-2000:]
