"""What the loader refuses, on the console and serial, with an EFI error: a kernel that is not
the one it was built for, a missing kernel file."""

from __future__ import annotations

import shutil
from pathlib import Path

from highboot.booting import qemu

NOT_STARTED = "highboot: the kernel was not started"


def esp_copy(built: dict, tmp_path: Path) -> Path:
    esp = tmp_path / "esp"
    shutil.copytree(built["esp"], esp)
    return esp


def refused(esp: Path) -> qemu.BootResult:
    result = qemu.boot(esp, cpu="max", memory="256M", stop_on=NOT_STARTED, timeout=120)
    assert "HIGHBOOT-KERNEL" not in result.serial, "the kernel ran"
    return result


def test_kernel_with_one_flipped_byte_is_refused(built: dict, tmp_path: Path) -> None:
    esp = esp_copy(built, tmp_path)
    kernel = esp / "highboot" / "kernel.elf"
    data = bytearray(kernel.read_bytes())
    data[len(data) // 2] ^= 0x01
    kernel.write_bytes(bytes(data))
    result = refused(esp)
    assert "does not match the kernel this loader was built for (its fs-verity digest differs); refusing to boot it" \
        in result.serial, result.serial[-1500:]
    assert f"{NOT_STARTED} (EFI status 0x800000000000001a)" in result.serial  # EFI_SECURITY_VIOLATION


def test_kernel_of_another_size_is_refused(built: dict, tmp_path: Path) -> None:
    esp = esp_copy(built, tmp_path)
    with open(esp / "highboot" / "kernel.elf", "ab") as f:
        f.write(b"\0")
    result = refused(esp)
    assert "the loader was built for" in result.serial and "refusing to boot it" in result.serial


def test_missing_kernel_file_is_reported(built: dict, tmp_path: Path) -> None:
    esp = esp_copy(built, tmp_path)
    (esp / "highboot" / "kernel.elf").unlink()
    result = refused(esp)
    assert "highboot: error: kernel file \\highboot\\kernel.elf not found on the boot volume" in result.serial
    assert f"{NOT_STARTED} (EFI status 0x800000000000000e)" in result.serial  # EFI_NOT_FOUND
