"""Secure Boot under OVMF with the project's own key enrolled: the signed loader boots; an
unsigned loader and a signed one with a flipped byte are refused by the firmware; a kernel with
a flipped byte is refused by the loader."""

from __future__ import annotations

import shutil
from pathlib import Path

from test_boot import check_boot
from test_matrix import config

from highboot.booting import qemu

REFUSED = "Access Denied"


def secure(built: dict) -> tuple[Path, dict, qemu.Firmware, Path]:
    esp, plan = config(built, "signed")
    return esp, plan, qemu.find_firmware(secure_boot=True), built["dir"] / "test" / "signed" / "secure-vars.fd"


def test_signed_loader_boots_with_secure_boot_on(built: dict) -> None:
    esp, plan, fw, vars_file = secure(built)
    result = qemu.boot(esp, cpu="max", memory="512M", firmware=fw, vars_file=vars_file)
    check_boot(result, plan, expect_1g=True)


def test_unsigned_loader_is_refused_by_the_firmware(built: dict) -> None:
    _, _, fw, vars_file = secure(built)
    result = qemu.boot(built["esp"], cpu="max", memory="256M", firmware=fw, vars_file=vars_file, stop_on=REFUSED)
    assert 'failed to load Boot0002 "UEFI Misc Device"' in result.serial and REFUSED in result.serial
    assert "highboot: loading" not in result.serial


def test_signed_loader_with_a_flipped_byte_is_refused(built: dict, tmp_path: Path) -> None:
    esp, _, fw, vars_file = secure(built)
    copy = tmp_path / "esp"
    shutil.copytree(esp, copy)
    loader = copy / "EFI" / "BOOT" / "BOOTX64.EFI"
    data = bytearray(loader.read_bytes())
    data[0x1100] ^= 0x01  # in .text, covered by the Authenticode hash
    loader.write_bytes(bytes(data))
    result = qemu.boot(copy, cpu="max", memory="256M", firmware=fw, vars_file=vars_file, stop_on=REFUSED)
    assert REFUSED in result.serial and "highboot: loading" not in result.serial


def test_signed_loader_refuses_a_kernel_with_a_flipped_byte(built: dict, tmp_path: Path) -> None:
    esp, _, fw, vars_file = secure(built)
    copy = tmp_path / "esp"
    shutil.copytree(esp, copy)
    kernel = copy / "highboot" / "kernel.elf"
    data = bytearray(kernel.read_bytes())
    data[-100] ^= 0x80
    kernel.write_bytes(bytes(data))
    result = qemu.boot(copy, cpu="max", memory="256M", firmware=fw, vars_file=vars_file,
                       stop_on="the kernel was not started")
    assert "highboot: loading" in result.serial  # the firmware accepted the loader
    assert "fs-verity digest differs); refusing to boot it" in result.serial
    assert "HIGHBOOT-KERNEL" not in result.serial


def test_keys_stay_out_of_the_esp_and_repo(built: dict) -> None:
    esp, _, _, _ = secure(built)
    names = {p.name for p in esp.rglob("*")}
    assert not {"db.key", "db.crt"} & names
    keys = built["dir"] / "test" / "keys" / "db.key"
    assert keys.exists() and keys.stat().st_mode & 0o077 == 0
