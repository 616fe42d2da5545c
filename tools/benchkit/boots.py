"""Booting under QEMU + OVMF for the benchmark: RAM setups that start on this host, one boot and its
figures, and many boots at once under -icount."""

from __future__ import annotations

import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testkit.bootcheck import parse_report, passed
from testkit.report import PASS_STATUS

from benchkit.common import say
from highboot.booting import qemu

# Deterministic instruction counting: one instruction per virtual ns (the TSC follows), and idle
# (hlt) time skipped rather than waited in real time, so that no host timing leaks in.
ICOUNT = ("-icount", "shift=0,sleep=off")
BENCH_CPU = "max"
BENCH_RAM = "256M"
FRAGMENTS_FW_CFG = "opt/org.highboot/bench-fragments"
# The loader's line after the APs parked: the TSC ticks from the first INIT to the last AP parked.
AP_START = re.compile(r"application processor\(s\) parked \((\d+) TSC ticks\)")


@dataclass(frozen=True)
class RamSetup:
    size: str
    extra: tuple[str, ...]  # QEMU options that make this size start here
    note: str


def ram_setup(size: str) -> RamSetup:
    """-m size if QEMU starts with it; else RAM without a reservation (MAP_NORESERVE), which lets a
    guest larger than the host start: QEMU only touches what the guest does."""
    probe = [qemu.qemu_binary(), "-machine", "q35", "-m", size, "-display", "none", "-monitor", "none", "-S"]
    proc = subprocess.Popen(probe, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return RamSetup(size, (), "-m starts")
    backend = f"memory-backend-ram,id=bench-ram,size={size},reserve=off"
    return RamSetup(size, ("-object", backend, "-machine", "memory-backend=bench-ram"),
                    f"plain -m {size} fails here ({err.strip().splitlines()[-1] if err.strip() else proc.returncode}); "
                    f"booted with -object {backend}")


@dataclass(frozen=True)
class Boot:
    label: str
    media: Path
    ram: RamSetup
    cpu: str = BENCH_CPU
    extra: tuple[str, ...] = ()
    highboot_kernel: bool = True  # success: the sample kernel's PASS; else a TSC line + isa-debug-exit
    smp: int = 1


def boot_once(b: Boot, timeout: float) -> dict[str, Any]:
    """One boot and what it reported: TSC at the kernel's first instruction, the loader's cycles when
    highboot booted, the fragmenter's figures; the serial tail when it failed."""
    r = qemu.boot(b.media, cpu=b.cpu, memory=b.ram.size, smp=b.smp, timeout=timeout, extra=[*b.ram.extra, *b.extra])
    report = parse_report(r.serial)
    ok = passed(r) if b.highboot_kernel else (r.status == PASS_STATUS and "tsc_kernel" in report.facts)
    out: dict[str, Any] = {"label": b.label, "ram": b.ram.size, "cpu": b.cpu, "ok": ok, "status": r.status,
                           "wall_s": round(r.seconds, 1)}
    if not ok:
        out["serial_tail"] = r.serial[-1200:]
        return out
    out["tsc_kernel"] = report.number("tsc_kernel")
    if "tsc_loader_entry" in report.facts:
        out["tsc_loader_entry"] = report.number("tsc_loader_entry")
        out["loader_cycles"] = out["tsc_kernel"] - out["tsc_loader_entry"]
        out["memory_map_entries"] = len(report.memory)
    parked = AP_START.search(r.serial)
    if parked:
        out["ap_start_cycles"] = int(parked.group(1))
    for key in report.facts:  # the fragmenter's own figures (bench_fragments, bench_firmware_...)
        if key.startswith("bench_"):
            out[key[len("bench_"):]] = report.number(key)
    out["report"] = report
    return out


def boot_all(boots: list[Boot], jobs: int, timeout: float) -> list[dict[str, Any]]:
    """Each boot once, `jobs` at a time, in order; progress on stdout."""
    done = 0
    start = time.monotonic()

    def one(b: Boot) -> dict[str, Any]:
        nonlocal done
        result = boot_once(b, timeout)
        done += 1
        state = f"TSC {result['tsc_kernel']:,}" if result["ok"] else f"FAILED (status {result['status']})"
        say(f"   [{done}/{len(boots)} {time.monotonic() - start:5.0f} s] {b.label} {b.ram.size} {b.cpu}: {state}")
        return result

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, boots))
