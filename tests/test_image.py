"""The GPT disk image (highboot.image): reproducible, a valid GPT with one ESP, mtools can read
it, check_gpt notices corruption, and it boots under QEMU + OVMF as a plain disk."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from testkit.bootcheck import passed

from highboot.booting import qemu
from highboot.errors import HighbootError
from highboot.packaging import image

ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def disk(built: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("image") / "highboot.img"
    image.build_image(built["esp"], out)
    return out


def test_two_builds_are_byte_identical(built: dict, tmp_path: Path) -> None:
    a, b = tmp_path / "a.img", tmp_path / "sub" / "b.img"
    image.build_image(built["esp"], a)
    image.build_image(built["esp"], b)
    assert a.stat().st_size == b.stat().st_size == 64 << 20
    assert sha256(a) == sha256(b)
    # Nothing but the images is left in the output directories (no temporary files).
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.img", "b.img", "sub"]


def test_seed_sets_the_guids(built: dict, tmp_path: Path, disk: Path) -> None:
    entries = {}
    for name, seed in (("x", "one"), ("y", "two"), ("z", "one")):
        image.build_image(built["esp"], tmp_path / f"{name}.img", seed=seed)
        entries[name] = image.check_gpt(tmp_path / f"{name}.img")
    default = image.check_gpt(disk)
    assert entries["x"]["disk_guid"] != entries["y"]["disk_guid"]
    assert entries["x"]["partition_guid"] != entries["y"]["partition_guid"]
    assert entries["x"]["disk_guid"] != default["disk_guid"]
    assert entries["x"]["disk_guid"] == entries["z"]["disk_guid"]
    assert sha256(tmp_path / "x.img") == sha256(tmp_path / "z.img")


def test_check_gpt_finds_the_esp(disk: Path) -> None:
    esp = image.check_gpt(disk)
    assert esp["type_guid"] == ESP_TYPE
    assert esp["name"] == "EFI System"
    assert esp["first_lba"] == 2048 and esp["first_lba"] % 2048 == 0  # 1 MiB aligned
    last_lba = disk.stat().st_size // 512 - 1
    assert esp["first_lba"] < esp["last_lba"] < last_lba - 32
    assert esp["disk_guid"] != esp["partition_guid"]
    # sfdisk reads back what was asked for.
    sfdisk = image.find_tool("sfdisk")
    dump = subprocess.run([sfdisk, "--dump", str(disk)], capture_output=True, text=True, check=True).stdout
    assert f"label-id: {esp['disk_guid']}" in dump
    assert f"type={ESP_TYPE}, uuid={esp['partition_guid']}" in dump


@pytest.mark.parametrize("offset, what", [
    (512 + 0x38, "primary header (disk GUID)"),
    (512 + 0x10, "primary header (its CRC32)"),
    (1024 + 0x38, "partition array (entry name)"),
    (-512 + 0x38, "backup header (disk GUID)"),
    (510, "protective MBR signature"),
    (446 + 4, "protective MBR type"),
])
def test_check_gpt_refuses_a_flipped_byte(disk: Path, tmp_path: Path, offset: int, what: str) -> None:
    bad = tmp_path / "bad.img"
    shutil.copyfile(disk, bad)
    data = bytearray(bad.read_bytes())
    data[offset] ^= 0x01
    bad.write_bytes(data)
    with pytest.raises(HighbootError):
        image.check_gpt(bad)
    image.check_gpt(disk)  # the original is untouched and fine


MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin", "TZ": "UTC"}


def test_mtools_read_the_partition(disk: Path) -> None:
    esp = image.check_gpt(disk)
    mdir = image.find_tool("mdir")
    listing = subprocess.run([mdir, "-i", f"{disk}@@{esp['offset']}", "-/", "-b", "::/"], capture_output=True,
                             text=True, check=True, env=MTOOLS_ENV).stdout
    names = {line.strip() for line in listing.splitlines()}
    assert "::/EFI/BOOT/BOOTX64.EFI" in names
    assert "::/highboot/kernel.elf" in names


def test_partition_holds_the_esp_files(built: dict, disk: Path) -> None:
    esp = image.check_gpt(disk)
    mtype = image.find_tool("mtype")
    for rel in ("EFI/BOOT/BOOTX64.EFI", "highboot/kernel.elf"):
        data = subprocess.run([mtype, "-i", f"{disk}@@{esp['offset']}", f"::/{rel}"], capture_output=True,
                              check=True, env=MTOOLS_ENV).stdout
        assert data == (built["esp"] / rel).read_bytes(), rel


def test_missing_tool_names_the_package(built: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, **kw: None if name == "sfdisk" else real_which(name, **kw))
    with pytest.raises(HighbootError, match=r"sfdisk not found \(Debian package fdisk\).*"
                                            r"apt-get install mtools dosfstools fdisk"):
        image.build_image(built["esp"], tmp_path / "x.img")
    assert not list(tmp_path.iterdir())


def test_failed_build_leaves_the_old_image(tmp_path: Path) -> None:
    esp = tmp_path / "esp"
    (esp / "EFI" / "BOOT").mkdir(parents=True)
    with open(esp / "EFI" / "BOOT" / "BOOTX64.EFI", "wb") as f:
        f.truncate(40 << 20)  # does not fit a 35 MiB disk
    out = tmp_path / "out" / "disk.img"
    out.parent.mkdir()
    out.write_bytes(b"old image")
    with pytest.raises(HighbootError, match="mcopy failed"):
        image.build_image(esp, out, size_mib=35)
    assert out.read_bytes() == b"old image"
    assert [p.name for p in out.parent.iterdir()] == ["disk.img"]
    with pytest.raises(HighbootError, match="too small"):
        image.build_image(esp, out, size_mib=16)


def test_image_boots_under_qemu(built: dict, disk: Path) -> None:
    result = qemu.boot(disk, cpu="max", memory="256M")
    tail = "\n".join(result.serial.splitlines()[-40:])
    assert passed(result), f"exit {result.status} after {result.seconds:.0f} s:\n{tail}"
    assert "highboot: loading \\highboot\\kernel.elf" in result.serial
