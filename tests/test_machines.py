"""Many machines: CPU models with and without 1 GiB pages, 1 and 4 CPUs, RAM from 64 MiB to
16 GiB, the 2 MB and 4 MB OVMF builds, Secure Boot on different CPUs.

Debian 12's 2 MB Secure Boot build (OVMF_CODE.secboot.fd) prints nothing and never reaches a boot
option under this QEMU 7.2 / TCG, even with its own unmodified VARS, so Secure Boot is tested on
the 4 MB build only (here and in test_secure_boot.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_boot import check_boot
from test_matrix import config
from testkit.bootcheck import CPU_NX, parse_report

from highboot.booting import qemu
from highboot.packaging.signing import enroll_vars

MACHINES = [
    # cpu, smp, memory, OVMF flavour
    ("qemu64", 1, "64M", "4M"),
    ("qemu64", 4, "16G", "4M"),
    ("Skylake-Server", 1, "2G", "4M"),
    ("Skylake-Server", 4, "6G", "2M"),
    ("max", 4, "64M", "2M"),
    ("max", 1, "16G", "2M"),
]


@pytest.mark.parametrize("cpu, smp, memory, flavour", MACHINES,
                         ids=[f"{c}-{n}cpu-{m}-ovmf{f}" for c, n, m, f in MACHINES])
def test_machine(built: dict, cpu: str, smp: int, memory: str, flavour: str) -> None:
    result = qemu.boot(built["esp"], cpu=cpu, smp=smp, memory=memory, firmware=qemu.find_firmware(flavour))
    check_boot(result, built["plan"], expect_1g=cpu != "qemu64")


@pytest.mark.parametrize("cpu, smp", [("qemu64", 4), ("Skylake-Server", 2)])
def test_secure_boot_machines(built: dict, tmp_path: Path, cpu: str, smp: int) -> None:
    esp, plan = config(built, "signed")
    fw = qemu.find_firmware("4M", secure_boot=True)
    vars_file = tmp_path / "vars.fd"
    # Enrolled here from the plain VARS template: the key enrolment works from either template.
    enroll_vars(qemu.find_firmware("4M").vars, built["dir"] / "test" / "keys" / "db.crt", vars_file)
    result = qemu.boot(esp, cpu=cpu, smp=smp, memory="1G", firmware=fw, vars_file=vars_file)
    check_boot(result, plan, expect_1g=cpu != "qemu64")


@pytest.mark.parametrize("name, cpu, smp", [("default", "qemu64,-nx", 2), ("c-kernel", "max,-nx", 2)])
def test_a_cpu_without_nx(built: dict, name: str, cpu: str, smp: int) -> None:
    """No NX (CPUID 80000001h:EDX[20] clear): the loader warns, leaves EFER.NXE clear and clears
    the NX bit in every entry (reserved without NXE); cpu_features says so; the kernels check that
    no entry sets it (instead of W^X), and the walk equals the plan with NX taken off."""
    esp, plan = (built["esp"], built["plan"]) if name == "default" else config(built, name)
    result = qemu.boot(esp, cpu=cpu, smp=smp, memory="256M")
    check_boot(result, plan, expect_1g=cpu.startswith("max"))
    assert "highboot: warning: this CPU has no NX: no page can be kept from execution" in result.serial
    report = parse_report(result.serial)
    assert report.number("features") & CPU_NX == 0
    assert any(m.flags & 2 and not m.flags & (1 << 63) for m in report.mappings)  # RW data runs too: no NX
