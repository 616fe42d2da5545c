"""The benchmark's sections, one function each. A section takes the Bench (options, the ESP under
test, RAM setups, comparison assets) and returns what bench.json holds under its name; the table
SECTIONS in benchkit/__main__.py names each with the function that prints it.

  footprint   page tables at kernel entry (256 MiB, 4 GiB, 64 GiB; -cpu qemu64 and max) against a
              minimum computed here from the mappings the kernel observed, and fixed identity maps
  cycles      under -icount: the loader's cost (efi_main to the kernel's first instruction) by RAM
              size and by memory-map entries, and reset to the kernel's entry against GRUB
              (multiboot2) and the firmware floor
  limine      under -icount: reset to a Limine-protocol kernel's first instruction, highboot (its
              Limine build) beside Limine itself booting the same ELF, GRUB (multiboot2) and the floor
  build       clean, no-op and edit rebuild times
  size        BOOTX64.EFI (highboot-protocol and Limine-protocol builds) against GRUB's and Limine's
  fuzz        the hypothesis fuzz tests with many examples
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testkit.bootcheck import BootReport, minimum_table_pages

from benchkit.assets import Assets, build_assets, build_multiboot2_kernel, grub_with_module
from benchkit.boots import (
    BENCH_CPU,
    BENCH_RAM,
    FRAGMENTS_FW_CFG,
    ICOUNT,
    Boot,
    RamSetup,
    boot_all,
    boot_once,
    ram_setup,
)
from benchkit.builds import BuildFailed, git_head, head_snapshot, scons_command, timed_builds
from benchkit.common import PAGE, ROOT, TIB, WORK, child_env, median, python_module, say
from benchkit.limine import REQUESTS_ASKED, LimineBinary, LimineBuild, build_highboot, limine_binary, limine_esp
from highboot.inputs.modules import write_pattern
from highboot.planning.planner import BootPlan
from highboot.units import GIB, MIB

# The largest page each -cpu model offers (CPUID pdpe1gb: see TOOLCHAIN.md's table).
CPU_MAX_PAGE = {"qemu64": 2 * MIB, "max": GIB}
# The module figures on a CPU with AVX2 and one with SSE2 only (the digest's engines differ).
MODULE_CPUS = ("qemu64", "max")
# How many full GetMemoryMap calls highboot's loader makes between efi_main and the kernel:
# FirmwareMap::refresh at the start and again right before ExitBootServices (loader/src/memmap.rs).
LOADER_GET_MEMORY_MAP_CALLS = 2


@dataclass
class Bench:
    """What every section gets. The comparison assets are built on first use (`assets()`)."""

    esp: Path
    plan: BootPlan
    quick: bool
    cold: bool
    jobs: int
    fuzz_examples: int
    boot_runs: int  # -icount boots: their spread is a few 1e-4, so few runs suffice
    build_runs: int
    rams: dict[str, RamSetup]
    limine_file: Path | None = None  # --limine: Limine's BOOTX64.EFI instead of the mirror's
    _assets: Assets | None = field(default=None, repr=False)
    _limine: LimineBuild | str | None = field(default=None, repr=False)
    _limine_binary: LimineBinary | None = field(default=None, repr=False)

    def assets(self) -> Assets:
        if self._assets is None:
            say("Building the comparison ESPs (floor app, fragmenter, GRUB + multiboot2 kernel)")
            self._assets = build_assets(self.esp)
            for what, error in self._assets.errors.items():
                say(f"   {what}: {error}")
        return self._assets

    @property
    def built_assets(self) -> Assets | None:
        return self._assets

    def limine_build(self) -> LimineBuild | str:
        """highboot built for the Limine bench kernel (built on first use), or why it could not be."""
        if self._limine is None:
            say("Building the Limine bench kernel and highboot for it (KERNEL=... PROTOCOL=auto)")
            try:
                self._limine = build_highboot(ROOT / "build" / "include", WORK / "limine" / "build", self.jobs)
            except RuntimeError as exc:
                self._limine = str(exc)
                say(f"   {exc}")
        return self._limine

    def limine_binary(self) -> LimineBinary:
        if self._limine_binary is None:
            self._limine_binary = limine_binary(self.limine_file)
        return self._limine_binary


# --------------------------------------------------------------------------- footprint


def naive_tables(page: int) -> int:
    """A fixed 127 TiB identity map plus a fixed 64 TiB direct map: PML4 + PDPTs (+ PDs with 2 MiB pages)."""
    spans = [127 * TIB, 64 * TIB]
    tables = 1 + sum(-(-s // (512 * GIB)) for s in spans)
    if page == 2 * MIB:
        tables += sum(s // GIB for s in spans)
    return tables


def observed_minimum(report: BootReport, max_page: int) -> int:
    """The fewest 4 KiB tables that map what the kernel observed at entry, computed here from its
    MAP lines alone (not from the planner or the checker): every mapping cut into the largest pages
    its virtual and physical alignment and the CPU allow; a table for every window of the level
    above that such a page falls in."""
    levels = int(report.facts.get("levels", "4"))
    pml4s: set[int] = set()  # 5-level: one PML4 per 256 TiB window
    pdpts: set[int] = set()  # one per 512 GiB window
    pds: set[int] = set()  # one per 1 GiB window holding 2 MiB or 4 KiB pages
    pts: set[int] = set()  # one per 2 MiB window holding 4 KiB pages
    for m in report.mappings:
        va, pa, end = m.va, m.pa, m.va + m.size
        while va < end:
            page = next(p for p in (GIB, 2 * MIB, PAGE)
                        if p <= max_page and va % p == 0 and pa % p == 0 and va + p <= end)
            pml4s.add(va >> 48)
            pdpts.add(va >> 39)
            if page <= 2 * MIB:
                pds.add(va >> 30)
            if page == PAGE:
                pts.add(va >> 21)
            va += page
            pa += page
    return 1 + (len(pml4s) if levels == 5 else 0) + len(pdpts) + len(pds) + len(pts)


def footprint(bench: Bench) -> list[dict[str, Any]]:
    """Page tables at kernel entry for each RAM size and -cpu, against the observed minimum and
    against fixed identity + direct maps."""
    rows = []
    for ram in bench.rams.values():
        for cpu in ("qemu64", "max"):
            result = boot_once(Boot("footprint", bench.esp, ram, cpu=cpu), timeout=900)
            if not result["ok"]:
                rows.append({"ram": ram.size, "cpu": cpu, "error": result.get("serial_tail", "")})
                continue
            report: BootReport = result["report"]
            tables = report.number("tables")
            minimum = observed_minimum(report, CPU_MAX_PAGE[cpu])
            page = report.number("direct_map_page")
            rows.append({"ram": ram.size, "cpu": cpu, "levels": int(report.facts.get("levels", "4")),
                         "direct_map_page": page, "direct_map_bytes": report.number("direct_map_size"),
                         "tables": tables, "table_bytes": tables * PAGE,
                         "minimum_tables": minimum, "minimum_bytes": minimum * PAGE,
                         "minimum_by_verify": minimum_table_pages(bench.plan, report),
                         "naive_1g_tables": naive_tables(GIB), "naive_1g_bytes": naive_tables(GIB) * PAGE,
                         "naive_2m_tables": naive_tables(2 * MIB), "naive_2m_bytes": naive_tables(2 * MIB) * PAGE,
                         "at_minimum": tables == minimum})
    return rows


# --------------------------------------------------------------------------- cycles

BootsByLabel = dict[tuple[str, str], list[dict[str, Any]]]


def linear_fit(xs: list[float], ys: list[float]) -> dict[str, float] | None:
    if len(set(xs)) < 2:
        return None
    fit = statistics.linear_regression(xs, ys)
    r = statistics.correlation(xs, ys) if len(set(ys)) > 1 else 1.0
    return {"slope": fit.slope, "intercept": fit.intercept, "r2": r * r}


def summarize(results: list[dict[str, Any]], key: str) -> dict[str, Any]:
    good = [r for r in results if r["ok"]]
    values = [r[key] for r in good if key in r]
    out: dict[str, Any] = {"runs": len(results), "ok": len(good), "median": median(values), "values": values,
                           "min": min(values) if values else None, "max": max(values) if values else None,
                           "wall_s_median": median(r["wall_s"] for r in results)}
    failures = [r for r in results if not r["ok"]]
    if failures:
        out["failure"] = {"status": failures[0]["status"], "serial_tail": failures[0].get("serial_tail", "")}
    return out


def cycles(bench: Bench) -> dict[str, Any]:
    """Every -icount boot at once (they are the slow part, `jobs` at a time), then the reset to the
    kernel's entry and the loader's cost from them."""
    assets = bench.assets()
    base = bench.rams[BENCH_RAM]
    fragments = [0, 500, 1500] if bench.quick else [0, 250, 500, 1000, 2000]
    loader_rams = ["256M", "4G"] if bench.quick else list(bench.rams)
    ram_runs = 1 if bench.quick else 2
    compared = {"highboot": bench.esp, "grub": assets.grub, "floor": assets.floor}
    if not bench.quick:
        compared["grub_default"] = assets.grub_default
    boots: list[Boot] = []
    for _ in range(bench.boot_runs):
        for label, media in compared.items():
            if media is not None:
                boots.append(Boot(label, media, base, extra=ICOUNT, highboot_kernel=label == "highboot"))
    for size in loader_rams:
        if size != BENCH_RAM:
            boots += [Boot("highboot", bench.esp, bench.rams[size], extra=ICOUNT)] * ram_runs
    if assets.fragment is not None:
        for n in fragments:
            extra = (*ICOUNT, "-fw_cfg", f"name={FRAGMENTS_FW_CFG},string={n}")
            boots += [Boot(f"fragment-{n}", assets.fragment, base, extra=extra)] * ram_runs
    say(f"   {len(boots)} boots under -icount, {bench.jobs} at a time (each about 1.5 min of TCG at 256 MiB)")
    results = boot_all(boots, bench.jobs, timeout=3600)
    by_label: BootsByLabel = {}
    for b, r in zip(boots, results, strict=True):
        by_label.setdefault((b.label, b.ram.size), []).append(r)
    out: dict[str, Any] = {"icount": " ".join(ICOUNT), "cpu": BENCH_CPU,
                           "reset_to_kernel": reset_to_kernel(by_label, list(compared)),
                           "by_ram": loader_cost_by_ram(by_label, loader_rams, bench.rams),
                           "by_entries": loader_cost_by_entries(by_label, fragments)}
    if assets.fragment is None:
        out["by_entries"]["error"] = assets.errors.get("efi_apps", "fragmenter not built")
    return out


def reset_to_kernel(by_label: BootsByLabel, labels: list[str]) -> dict[str, Any]:
    """Reset to the kernel's first instruction: highboot against GRUB and the firmware floor."""
    reset: dict[str, Any] = {"ram": BENCH_RAM}
    for label in labels:
        reset[label] = summarize(by_label.get((label, BENCH_RAM), []), "tsc_kernel")
    hb = reset["highboot"]["median"]
    for label in ("grub", "grub_default", "floor"):
        other = reset.get(label, {}).get("median")
        if hb and other:
            reset[f"highboot_over_{label}"] = hb / other
    floor = reset["floor"]["median"]
    if hb and floor:
        reset["highboot_above_floor_cycles"] = hb - floor
        for label in ("grub", "grub_default"):
            other = reset.get(label, {}).get("median")
            if other:
                reset[f"{label}_above_floor_cycles"] = other - floor
    return reset


def loader_cost_by_ram(by_label: BootsByLabel, ram_sizes: list[str], rams: dict[str, RamSetup]) -> list[dict[str, Any]]:
    """The loader's cycles (efi_main to the kernel) and their share of reset-to-kernel, by RAM size."""
    by_ram = []
    for size in ram_sizes:
        runs = [r for r in by_label.get(("highboot", size), []) if r["ok"]]
        row: dict[str, Any] = {"ram": size, "runs": len(by_label.get(("highboot", size), [])), "ok": len(runs),
                               "ram_note": rams[size].note}
        if runs:
            row.update({"loader_cycles": median(r["loader_cycles"] for r in runs),
                        "reset_to_kernel_cycles": median(r["tsc_kernel"] for r in runs),
                        "share": median(r["loader_cycles"] / r["tsc_kernel"] for r in runs),
                        "memory_map_entries": runs[0]["memory_map_entries"]})
        else:
            failed = by_label.get(("highboot", size), [{}])[0]
            row["failure"] = failed.get("serial_tail", "")
        by_ram.append(row)
    return by_ram


def loader_cost_by_entries(by_label: BootsByLabel, fragments: list[int]) -> dict[str, Any]:
    """Loader cycles against memory-map entries, and the part of them that is the firmware's
    GetMemoryMap (timed by the fragmenter at the same map size): the rest is highboot's own."""
    points: list[dict[str, Any]] = []
    for n in fragments:
        runs = [r for r in by_label.get((f"fragment-{n}", BENCH_RAM), []) if r["ok"]]
        if not runs:
            failed = by_label.get((f"fragment-{n}", BENCH_RAM), [{}])[0]
            points.append({"fragments": n, "failure": failed.get("serial_tail", "no fragmenter app")})
            continue
        first = runs[0]
        point = {"fragments": n, "runs": len(runs), "memory_map_entries": first["memory_map_entries"],
                 "firmware_map_entries": first.get("firmware_map_entries"),
                 "firmware_map_inversions": first.get("firmware_map_inversions"),
                 "loader_cycles": median(r["loader_cycles"] for r in runs)}
        gmm = median(r["firmware_get_memory_map_cycles"] for r in runs if "firmware_get_memory_map_cycles" in r)
        if gmm is not None:
            point["firmware_get_memory_map_cycles"] = gmm
            point["firmware_allocate_pages_cycles"] = median(r.get("firmware_allocate_pages_cycles", 0) for r in runs)
            point["loader_less_get_memory_map_cycles"] = point["loader_cycles"] - LOADER_GET_MEMORY_MAP_CALLS * gmm
        points.append(point)
    good = [p for p in points if "loader_cycles" in p]
    xs = [p["memory_map_entries"] for p in good]
    out: dict[str, Any] = {"points": points, "fit": linear_fit(xs, [p["loader_cycles"] for p in good])}
    rest = [p for p in good if "loader_less_get_memory_map_cycles" in p]
    out["fit_less_get_memory_map"] = linear_fit([p["memory_map_entries"] for p in rest],
                                                [p["loader_less_get_memory_map_cycles"] for p in rest])
    out["fit_get_memory_map"] = linear_fit([p["memory_map_entries"] for p in rest],
                                           [p["firmware_get_memory_map_cycles"] for p in rest])
    out["get_memory_map_calls_assumed"] = LOADER_GET_MEMORY_MAP_CALLS
    # Cost of one more entry between neighbouring points: flat if linear, rising if not.
    out["marginal_cycles_per_entry"] = [
        round((b["loader_cycles"] - a["loader_cycles"]) / (b["memory_map_entries"] - a["memory_map_entries"]))
        for a, b in zip(good, good[1:], strict=False) if b["memory_map_entries"] != a["memory_map_entries"]]
    return out


# --------------------------------------------------------------------------- build, size, fuzz


def module_loading(bench: Bench) -> dict[str, Any]:
    """What a module costs per MiB: highboot built with one module of each size (a test pattern,
    read, verified, listed), and GRUB booting the multiboot2 kernel with the same file as a module2;
    reset to the kernel's first instruction and highboot's loader cycles, under -icount, fitted
    against the size."""
    sizes_mib = [0, 8] if bench.quick else [0, 8, 32]
    boots = []
    errors: dict[str, str] = {}
    mb2_kernel = build_multiboot2_kernel(errors)
    for mib in sizes_mib:
        out = WORK / f"modules-{mib}"
        out.mkdir(parents=True, exist_ok=True)
        module = out / f"module-{mib}.bin"
        if not module.exists() or module.stat().st_size != mib * MIB:
            write_pattern(str(module), 1, mib * MIB)
        cmd = scons_command(f"-j{max(1, bench.jobs)}", f"BUILD_DIR={out / 'build'}",
                            f"CARGO_DIR={ROOT / 'build' / 'cargo'}", f"MODULES={module}")
        proc = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            return {"error": f"scons with a {mib} MiB module failed: {(proc.stdout + proc.stderr)[-500:]}"}
        grub = grub_with_module(errors, mb2_kernel, module, f"grub-module-{mib}")
        for cpu in MODULE_CPUS:
            boots += [Boot(f"highboot-{cpu}-{mib}", out / "build" / "esp", bench.rams[BENCH_RAM], cpu=cpu,
                           extra=ICOUNT)] * bench.boot_runs
            if grub is not None:
                boots += [Boot(f"grub-{cpu}-{mib}", grub, bench.rams[BENCH_RAM], cpu=cpu, extra=ICOUNT,
                               highboot_kernel=False)] * bench.boot_runs
    say(f"   {len(boots)} boots under -icount with modules of {sizes_mib} MiB (highboot and GRUB)")
    results = boot_all(boots, bench.jobs, timeout=3600)
    out_fig: dict[str, Any] = {"icount": " ".join(ICOUNT), "errors": errors, "cpus": {}}
    for cpu in MODULE_CPUS:
        figures: dict[str, Any] = {}
        for who, key in (("highboot", "loader_cycles"), ("highboot", "tsc_kernel"), ("grub", "tsc_kernel")):
            points = []
            for mib in sizes_mib:
                runs = [r for b, r in zip(boots, results, strict=True) if b.label == f"{who}-{cpu}-{mib}" and r["ok"]]
                points.append({"module_mib": mib, "ok": len(runs),
                               key: median(r[key] for r in runs) if runs else None})
            good = [p for p in points if p[key] is not None]
            fit = linear_fit([p["module_mib"] for p in good], [p[key] for p in good]) if len(good) > 1 else None
            figures[f"{who}_{'loader' if key == 'loader_cycles' else 'reset_to_kernel'}"] = {
                "points": points, "per_mib": fit["slope"] if fit else None}
        hb, grub = figures["highboot_reset_to_kernel"]["per_mib"], figures["grub_reset_to_kernel"]["per_mib"]
        if hb and grub:
            figures["highboot_over_grub_per_mib"] = hb / grub
        out_fig["cpus"][cpu] = figures
    return out_fig


# The kernel-size section: kernels carrying a blob of each size, and one module, on a RAM that holds
# them all; both loaders booted under -icount on each -cpu model (one boot per point: icount repeats).
KERNEL_SIZES_MIB = (0, 8, 32, 128)
BIG_MODULE_MIB = 256
KERNEL_SIZE_RAM = "4G"
KERNEL_CFLAGS = ("-O2", "-ffreestanding", "-nostdlib", "-static", "-no-pie", "-fno-pic", "-mcmodel=kernel",
                 "-mno-red-zone", "-mgeneral-regs-only", "-fno-stack-protector", "-fno-asynchronous-unwind-tables",
                 "-Wl,--build-id=none")


def _blob(mib: int) -> Path:
    """A test pattern of `mib` MiB under build/bench/kernels (kept between runs)."""
    path = WORK / "kernels" / f"blob-{mib}.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.stat().st_size != mib * MIB:
        write_pattern(str(path), 7, mib * MIB)
    return path


def _sized_kernels(mib: int, errors: dict[str, str]) -> tuple[Path | None, Path | None]:
    """The bench kernel for highboot (tools/bench-assets/highboot, linked with the rendered script)
    and the multiboot2 kernel for GRUB, each carrying a blob of `mib` MiB (none for 0)."""
    out = WORK / "kernels"
    out.mkdir(parents=True, exist_ok=True)
    src = ROOT / "tools" / "bench-assets"
    blob = [str(src / "blob.S"), f'-DBLOB="{_blob(mib)}"'] if mib else []
    hb, mb2 = out / f"highboot-{mib}.elf", out / f"multiboot2-{mib}.elf"
    script = ROOT / "build" / "gen" / "link-fixed.ld"
    steps = [["gcc", *KERNEL_CFLAGS, f"-I{ROOT / 'build' / 'include'}", f"-Wl,-T,{script}",
              "-o", str(hb), str(src / "highboot" / "kernel.c"), *blob],
             ["gcc", "-m32", "-c", "-o", str(out / "multiboot2.o"), str(src / "multiboot2" / "kernel.S")]]
    if mib:
        steps.append(["gcc", "-m32", "-c", "-o", str(out / f"blob-{mib}.o"), *blob])
    steps.append(["ld", "-m", "elf_i386", "-n", "--no-warn-rwx-segments", "-T", str(src / "multiboot2" / "kernel.ld"),
                  "-o", str(mb2), str(out / "multiboot2.o"), *([str(out / f"blob-{mib}.o")] if mib else [])])
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            errors[f"kernel-{mib}"] = f"{' '.join(cmd)}: {proc.stderr[-800:]}"
            return None, None
    return hb, mb2


def _build_for_kernel(bench: Bench, build: Path, kernel: Path, *options: str) -> str | None:
    """highboot built for `kernel` in `build` (the main build's cargo cache shared); the failure, if any."""
    cmd = scons_command(f"-j{max(1, bench.jobs)}", f"BUILD_DIR={build}", f"CARGO_DIR={ROOT / 'build' / 'cargo'}",
                        f"KERNEL={kernel}", *options)
    proc = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, check=False)
    return None if proc.returncode == 0 else f"scons failed: {(proc.stdout + proc.stderr)[-500:]}"


def kernel_sizes(bench: Bench) -> dict[str, Any]:
    """What the kernel's size costs: kernels of 0, 8, 32 and 128 MiB (a blob in read-only data)
    booted by highboot and, the same blob in a multiboot2 kernel, by GRUB; then the 0 MiB kernel with
    a 256 MiB module (module2 for GRUB). Reset to the kernel's first instruction and highboot's
    loader cycles under -icount, on -cpu qemu64 (SSE2 digest) and max (AVX2), fitted against size."""
    sizes = KERNEL_SIZES_MIB[:3] if bench.quick else KERNEL_SIZES_MIB
    errors: dict[str, str] = {}
    ram = bench.rams.get(KERNEL_SIZE_RAM) or ram_setup(KERNEL_SIZE_RAM)
    empty = WORK / "kernels" / "empty.bin"
    empty.parent.mkdir(parents=True, exist_ok=True)
    empty.write_bytes(b"")
    points: list[tuple[str, int, Path, Path, Path]] = []  # (what, MiB, highboot kernel, GRUB kernel, module)
    for mib in sizes:
        hb, mb2 = _sized_kernels(mib, errors)
        if hb and mb2:
            points.append(("kernel", mib, hb, mb2, empty))
    if not bench.quick and points and points[0][1] == 0:
        points.append(("module", BIG_MODULE_MIB, points[0][2], points[0][3], _blob(BIG_MODULE_MIB)))
    boots = []
    for what, mib, hb, mb2, module in points:
        name = f"{what}-{mib}"
        build = WORK / "kernels" / f"build-{name}"
        failure = _build_for_kernel(bench, build, hb, *([f"MODULES={module}"] if what == "module" else []))
        if failure:
            errors[name] = failure
            continue
        grub = grub_with_module(errors, mb2, module, f"grub-{name}")
        for cpu in MODULE_CPUS:
            boots.append(Boot(f"highboot-{cpu}-{name}", build / "esp", ram, cpu=cpu, extra=ICOUNT,
                              highboot_kernel=False))
            if grub is not None:
                boots.append(Boot(f"grub-{cpu}-{name}", grub, ram, cpu=cpu, extra=ICOUNT, highboot_kernel=False))
    say(f"   {len(boots)} boots under -icount ({KERNEL_SIZE_RAM}): kernels of {list(sizes)} MiB"
        + ("" if bench.quick else f" and a {BIG_MODULE_MIB} MiB module") + " (highboot and GRUB)")
    results = dict(zip((b.label for b in boots), boot_all(boots, bench.jobs, timeout=3600), strict=True))
    out: dict[str, Any] = {"icount": " ".join(ICOUNT), "ram": KERNEL_SIZE_RAM, "errors": errors, "cpus": {}}
    for cpu in MODULE_CPUS:
        rows = []
        for what, mib, *_ in points:
            hb, grub = results.get(f"highboot-{cpu}-{what}-{mib}"), results.get(f"grub-{cpu}-{what}-{mib}")
            rows.append({"what": what, "mib": mib,
                         "highboot_reset": hb["tsc_kernel"] if hb and hb["ok"] else None,
                         "highboot_loader": hb.get("loader_cycles") if hb and hb["ok"] else None,
                         "grub_reset": grub["tsc_kernel"] if grub and grub["ok"] else None})
        figures: dict[str, Any] = {"points": rows}
        kernels = [r for r in rows if r["what"] == "kernel"]
        for key in ("highboot_reset", "highboot_loader", "grub_reset"):
            good = [r for r in kernels if r[key] is not None]
            fit = linear_fit([r["mib"] for r in good], [r[key] for r in good]) if len(good) > 1 else None
            figures[f"{key}_per_mib"] = fit["slope"] if fit else None
        out["cpus"][cpu] = figures
    return out


# The limine section's rows, in print order: (loader, kernel it boots).
LIMINE_ROWS = {
    "highboot": ("highboot (PROTOCOL=auto)", "Limine bench kernel"),
    "limine": ("Limine", "Limine bench kernel"),
    "highboot_protocol": ("highboot", "highboot bench kernel, 0 MiB"),
    "grub": ("GRUB (smallest image)", "multiboot2 bench kernel"),
    "floor": ("firmware floor", "(a UEFI app)"),
}


def limine_reset(bench: Bench) -> dict[str, Any]:
    """Reset to the first instruction of a Limine-protocol kernel (tools/bench-assets/limine, fixed at
    the top 2 GiB, asking for bootloader info, framebuffer, HHDM and memory map) under -icount:
    highboot built for it beside Limine booting the same ELF; GRUB booting the multiboot2 bench
    kernel (the same size class: a few KiB) and highboot booting its own-protocol bench kernel for
    scale; the firmware floor. Limine missing (no mirror, no --limine) is said, never a failure."""
    runs = 1 if bench.quick else 2
    out: dict[str, Any] = {"icount": " ".join(ICOUNT), "cpu": BENCH_CPU, "ram": BENCH_RAM, "runs_each": runs,
                           "requests_asked": REQUESTS_ASKED, "errors": {}}
    errors: dict[str, str] = out["errors"]
    media: dict[str, Path | None] = dict.fromkeys(LIMINE_ROWS)
    build = bench.limine_build()
    if isinstance(build, LimineBuild):
        media["highboot"] = build.esp
        out["kernel"] = str(build.kernel)
    else:
        errors["highboot"] = build
    binary = bench.limine_binary()
    out["limine_source"] = binary.source
    if binary.path is not None and isinstance(build, LimineBuild):
        media["limine"] = limine_esp(binary.path, build.kernel)
    own, _ = _sized_kernels(0, errors)
    if own is not None:
        own_build = WORK / "kernels" / "build-kernel-0"
        failure = _build_for_kernel(bench, own_build, own)
        if failure:
            errors["highboot_protocol"] = failure
        else:
            media["highboot_protocol"] = own_build / "esp"
    assets = bench.assets()
    media["grub"], media["floor"] = assets.grub, assets.floor
    for label in ("grub", "floor"):
        if media[label] is None:
            errors[label] = "; ".join(assets.errors.values()) or "not built"
    boots = [Boot(label, path, bench.rams[BENCH_RAM], extra=ICOUNT, highboot_kernel=False)
             for _ in range(runs) for label, path in media.items() if path is not None]
    say(f"   {len(boots)} boots under -icount: " + ", ".join(label for label, p in media.items() if p is not None))
    results = boot_all(boots, bench.jobs, timeout=3600)
    by_label: dict[str, list[dict[str, Any]]] = {}
    for b, r in zip(boots, results, strict=True):
        by_label.setdefault(b.label, []).append(r)
    out.update(limine_figures(by_label))
    return out


def limine_figures(by_label: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Each row's median reset-to-entry, what the Limine kernel saw (its loader's name, requests
    answered), the ratios and the cost above the firmware floor."""
    out: dict[str, Any] = {"rows": {}}
    for label in LIMINE_ROWS:
        if label not in by_label:
            continue
        row = summarize(by_label[label], "tsc_kernel")
        first = next((r for r in by_label[label] if r["ok"]), None)
        if first is not None and label in ("highboot", "limine"):
            facts = first["report"].facts
            row["bootloader"] = facts.get("limine_bootloader")
            row["requests_answered"] = int(facts["limine_answered"]) if "limine_answered" in facts else None
        out["rows"][label] = row
    reset = {label: row["median"] for label, row in out["rows"].items() if row["median"]}
    for a, b in (("highboot", "grub"), ("highboot", "limine"), ("limine", "grub"),
                 ("highboot", "highboot_protocol")):
        if a in reset and b in reset:
            out[f"{a}_over_{b}"] = reset[a] / reset[b]
    if "floor" in reset:
        out["above_floor"] = {label: value - reset["floor"] for label, value in reset.items() if label != "floor"}
    return out


def ap_startup(bench: Bench) -> dict[str, Any]:
    """What each application processor costs: the default build booted with -smp 1, 2, 4, 8 under
    -icount on -cpu qemu64 and max; reset to the kernel's first instruction and the loader's AP
    start (first INIT to the last AP parked: the SDM's 10 ms INIT wait and two 200 us SIPI waits
    included, timed by the TSC, which counts instructions here), fitted against the number of APs."""
    counts = [1, 2, 4] if bench.quick else [1, 2, 4, 8]
    # One boot per point: under -icount a boot's figures repeat to the tick (seen: five boots of
    # each point gave one value), and each -smp 8 boot takes minutes of TCG.
    boots = [Boot(f"smp-{cpu}-{n}", bench.esp, bench.rams[BENCH_RAM], cpu=cpu, extra=ICOUNT, smp=n)
             for cpu in MODULE_CPUS for n in counts]
    say(f"   {len(boots)} boots under -icount with -smp {counts}")
    results = boot_all(boots, bench.jobs, timeout=1800)
    out: dict[str, Any] = {"icount": " ".join(ICOUNT), "cpus": {}}
    for cpu in MODULE_CPUS:
        points = []
        for n in counts:
            runs = [r for b, r in zip(boots, results, strict=True) if b.label == f"smp-{cpu}-{n}" and r["ok"]]
            points.append({"smp": n, "ok": len(runs),
                           "tsc_kernel": median(r["tsc_kernel"] for r in runs) if runs else None,
                           "ap_start": median(r.get("ap_start_cycles", 0) for r in runs) if runs else None})
        figures: dict[str, Any] = {"points": points}
        for key in ("tsc_kernel", "ap_start"):
            good = [p for p in points if p[key] is not None and (key == "tsc_kernel" or p["smp"] > 1)]
            fit = linear_fit([p["smp"] - 1 for p in good], [p[key] for p in good]) if len(good) > 1 else None
            figures[f"{key}_per_ap"] = fit["slope"] if fit else None
        out["cpus"][cpu] = figures
    return out


def build_times(bench: Bench) -> dict[str, Any]:
    """Timed in the working tree; if that does not build, in a snapshot of HEAD (and said so)."""
    try:
        return {"tree": "working tree", **timed_builds(ROOT, bench.build_runs, bench.cold)}
    except BuildFailed as exc:
        error = str(exc)
    say(f"   the working tree does not build ({error.splitlines()[-1] if error else '?'}); timing HEAD instead")
    try:
        out = timed_builds(head_snapshot(), bench.build_runs, bench.cold)
    except BuildFailed as exc:
        return {"error": str(exc), "working_tree_error": error}
    return {"tree": f"HEAD {git_head()} (the working tree did not build)", "working_tree_error": error, **out}


def hash_speed(bench: Bench) -> dict[str, Any]:
    """The loader's digest code built for this machine (tools/benchkit/hashbench.rs), each engine
    on one file, beside OpenSSL's SHA-256 (`openssl speed -evp sha256`) and fsverity-utils'
    `fsverity digest` of the same file, on the same run (best of a few runs each)."""
    work = WORK / "hash"
    work.mkdir(parents=True, exist_ok=True)
    for name in ("sha256.rs", "verity.rs"):
        shutil.copy(ROOT / "loader" / "src" / name, work / name)
    shutil.copy(Path(__file__).with_name("hashbench.rs"), work / "main.rs")
    rustc = shutil.which("rustc") or "rustc"
    proc = subprocess.run([rustc, "--edition", "2021", "-C", "opt-level=3", "-o", str(work / "hashbench"),
                           str(work / "main.rs")], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": f"rustc failed: {proc.stderr[-500:]}"}
    size = (64 if bench.quick else 256) * MIB
    data = work / "data.bin"
    if not data.exists() or data.stat().st_size != size:
        data.write_bytes(os.urandom(size))
    runs = 3 if bench.quick else 5
    out: dict[str, Any] = {"bytes": size, "engines": {}}
    for line in subprocess.run([str(work / "hashbench"), str(data), str(runs)], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        name, *rest = line.split()
        out["engines"][name] = None if rest == ["unsupported"] else float(rest[0])
    openssl = shutil.which("openssl")
    if openssl:
        speed = subprocess.run([openssl, "speed", "-evp", "sha256", "-bytes", "16384", "-seconds", "3"],
                               capture_output=True, text=True, check=False).stdout
        match = re.search(r"^sha256\s+([0-9.]+)k", speed, re.MULTILINE)
        out["openssl_sha256"] = float(match[1]) * 1000 if match else None
    tool = shutil.which("fsverity")
    if tool:
        best = min(_timed([tool, "digest", str(data)]) for _ in range(runs))
        out["fsverity_digest"] = size / best
    fastest = max((v for v in out["engines"].values() if v), default=None)
    if fastest and out.get("openssl_sha256"):
        out["fastest_over_openssl"] = fastest / out["openssl_sha256"]
    return out


def _timed(cmd: list[str]) -> float:
    start = time.monotonic()
    subprocess.run(cmd, capture_output=True, check=True)
    return time.monotonic() - start


def size(bench: Bench) -> dict[str, Any]:
    """BOOTX64.EFI's size for each protocol (the default build speaks highboot's; the limine
    section's build, Limine's: the loader carries only the protocol its kernel speaks), and the
    comparison images' (GRUB's standalone images, the floor app, Limine's own BOOTX64.EFI)."""
    out: dict[str, Any] = {"bootx64_bytes": (bench.esp / "EFI" / "BOOT" / "BOOTX64.EFI").stat().st_size}
    build = bench.limine_build()
    if isinstance(build, LimineBuild):
        out["limine_protocol_bootx64_bytes"] = build.loader.stat().st_size
    else:
        out["limine_protocol_error"] = build
    binary = bench.limine_binary()
    if binary.path is not None:
        out["limine_efi_bytes"] = binary.path.stat().st_size
        out["limine_source"] = binary.source
    return {**out, **bench.assets().sizes}


def fuzz(bench: Bench) -> dict[str, Any]:
    """tests/test_fuzz.py with HIGHBOOT_FUZZ_EXAMPLES generated inputs per test."""
    start = time.monotonic()
    proc = subprocess.run(python_module("pytest", "-q", "-p", "no:cacheprovider", "tests/test_fuzz.py"), cwd=ROOT,
                          env=child_env(HIGHBOOT_FUZZ_EXAMPLES=str(bench.fuzz_examples)),
                          capture_output=True, text=True)
    return {"examples": bench.fuzz_examples, "passed": proc.returncode == 0,
            "seconds": round(time.monotonic() - start, 1), "summary": (proc.stdout.strip().splitlines() or [""])[-1]}
