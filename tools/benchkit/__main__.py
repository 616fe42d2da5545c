"""highboot benchmarks: prints a table and writes every figure to a JSON file.

    tools/bench [--out build/bench.json] [--quick] [--cold] [--fuzz N] [--jobs J] [--skip SECTIONS]
                [--limine FILE]

tools/bench runs this package (`python -m benchkit`) with the project's .venv; `tools/setup --bench`
makes that .venv and installs GRUB to compare against. build/esp is built first when it is missing.
Timings are medians of several runs; comparisons are ratios measured in the same run. Nothing
here fails on a number: the targets are reported, met or missed.

  1. page tables at kernel entry (256 MiB, 4 GiB, 64 GiB; -cpu qemu64 and max) against a minimum
     computed here from the mappings the kernel observed, and against fixed identity + direct maps
  2. loader cost (efi_main to the kernel's first instruction) under -icount, by RAM size and by
     memory-map entries (a fragmenter app chain-loads highboot with 2 N extra map entries)
  3. reset to the kernel's first instruction: highboot, GRUB (multiboot2) and the firmware floor
  4. build times            5. BOOTX64.EFI against GRUB's standalone image      fuzz: many examples
  modules: loader cycles per MiB of module beside GRUB; kernels: 0, 8, 32, 128 MiB kernels and a
  256 MiB module, highboot beside GRUB; hash: the digest code beside openssl;
  smp: AP start-up cost per CPU (-smp 1..8) beside reset to kernel; limine: reset to a Limine-protocol
  kernel's first instruction under highboot beside Limine itself (v8.2.0 from the local mirror, or
  --limine FILE), GRUB (multiboot2) and the floor

Boots under -icount are counted in instructions (TSC = virtual ns, one instruction each), so
several of them may run at once (--jobs) without changing their figures.
Build artifacts of the benchmark go to build/bench/.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchkit import report, sections
from benchkit.boots import ram_setup
from benchkit.builds import ensure_built, git_head
from benchkit.common import ROOT, WORK, fail, run, say
from benchkit.limine import LIMINE_MIRROR
from benchkit.sections import Bench
from highboot.errors import HighbootError
from highboot.planning.planner import BootPlan


@dataclass(frozen=True)
class Section:
    name: str  # its --skip name and its key in bench.json
    measure: Callable[[Bench], Any]
    show: Callable[[Any, Bench], None] | None = None  # None: report.print_figures, one line a figure


# The sections, in the order they run. A new one: a function in sections.py (Bench -> figures), a line here.
SECTIONS: tuple[Section, ...] = (
    Section("footprint", sections.footprint, report.print_footprint),
    Section("cycles", sections.cycles, report.print_cycles),
    Section("modules", sections.module_loading, report.print_modules),
    Section("kernels", sections.kernel_sizes, report.print_kernels),
    Section("hash", sections.hash_speed, report.print_hash),
    Section("smp", sections.ap_startup, report.print_smp),
    Section("limine", sections.limine_reset, report.print_limine),
    Section("build", sections.build_times, report.print_build),
    Section("size", sections.size, report.print_size),
    Section("fuzz", sections.fuzz, report.print_fuzz),
)
# Python modules a section needs in the .venv (tools/setup --bench installs them).
NEEDS = {"build": ("SCons",), "fuzz": ("pytest", "hypothesis")}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    def count(minimum: int) -> Callable[[str], int]:
        def parse(text: str) -> int:
            try:
                value = int(text.replace("_", "").replace(",", ""))
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
            if value < minimum:
                raise argparse.ArgumentTypeError(f"expected at least {minimum}, got {value}")
            return value
        return parse

    names = ", ".join(s.name for s in SECTIONS)
    ap = argparse.ArgumentParser(prog="tools/bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", metavar="FILE", default=str(ROOT / "build" / "bench.json"),
                    help="where the figures go (JSON; default build/bench.json)")
    ap.add_argument("--quick", action="store_true", help="fewer runs and points (about 8 min on 2 cores)")
    ap.add_argument("--cold", action="store_true", help="also time a clean build with a cold Rust sysroot")
    ap.add_argument("--fuzz", metavar="N", type=count(0), default=None,
                    help="generated inputs for the fuzz run (default 10,000; 1,000 with --quick; 0: skip)")
    ap.add_argument("--jobs", metavar="J", type=count(1), default=min(2, os.cpu_count() or 1),
                    help="-icount boots at a time (their figures do not depend on it)")
    ap.add_argument("--skip", metavar="SECTIONS", default="", help=f"comma-separated sections to skip: {names}")
    ap.add_argument("--limine", metavar="FILE", type=Path, default=None,
                    help="Limine's BOOTX64.EFI for the limine section (default: v8.2.0 from the local git mirror "
                         f"{LIMINE_MIRROR})")
    args = ap.parse_args(argv)
    if args.limine is not None and not args.limine.is_file():
        ap.error(f"--limine: {args.limine} is not a file")
    args.limine = args.limine.resolve() if args.limine is not None else None
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = sorted(args.skip - {s.name for s in SECTIONS})
    if unknown:
        ap.error(f"--skip: no section named {', '.join(map(repr, unknown))} (the sections: {names})")
    return args


def missing_modules(skip: set[str]) -> list[str]:
    """What the sections to run need and this interpreter cannot import. SCons always: build/esp
    may have to be built."""
    wanted = {"SCons"} | {m for name, mods in NEEDS.items() if name not in skip for m in mods}
    return sorted(m for m in wanted if importlib.util.find_spec(m) is None)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    fuzz_examples = args.fuzz if args.fuzz is not None else (1000 if args.quick else 10000)
    if fuzz_examples == 0:
        args.skip.add("fuzz")
    missing = missing_modules(args.skip)
    if missing:
        return fail(f"{sys.executable} cannot import {', '.join(missing)}: run tools/setup --bench")
    build = ROOT / "build"
    esp = build / "esp"
    failure = ensure_built(build, args.jobs)
    if failure:
        return fail(failure)
    started = time.monotonic()
    runs = 2 if args.quick else 5
    build_runs = 3 if args.quick else 5
    dirty = bool(run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT).stdout.strip())
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "machine": report.machine(), "quick": args.quick,
                               "git": f"{git_head()}{' (working tree modified)' if dirty else ''}",
                               "bootx64_built": time.strftime("%Y-%m-%d %H:%M", time.localtime(
                                   (esp / "EFI" / "BOOT" / "BOOTX64.EFI").stat().st_mtime)),
                               "boot_runs": runs, "build_runs": build_runs}
    report.print_header(results)
    WORK.mkdir(parents=True, exist_ok=True)
    rams = {size: ram_setup(size) for size in ("256M", "4G", "64G")}
    results["ram"] = {size: r.note for size, r in rams.items()}
    bench = Bench(esp=esp, plan=BootPlan.from_json(build / "plan.json"), quick=args.quick, cold=args.cold,
                  jobs=args.jobs, fuzz_examples=fuzz_examples, boot_runs=runs, build_runs=build_runs, rams=rams,
                  limine_file=args.limine)

    for section in SECTIONS:
        if section.name in args.skip:
            continue
        results[section.name] = section.measure(bench)
        if section.show is None:
            report.print_figures(section.name, results[section.name], bench)
        else:
            section.show(results[section.name], bench)
    if bench.built_assets is not None:
        results["assets"] = {"errors": bench.built_assets.errors, "sizes": bench.built_assets.sizes}

    results["targets"] = report.targets(results)
    report.print_targets(results["targets"])
    results["bench_seconds"] = round(time.monotonic() - started)
    report.write_json(Path(args.out), results)
    say(f"(all figures in {args.out}; {results['bench_seconds']} s)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HighbootError as exc:
        sys.exit(fail(exc.format()))
    except KeyboardInterrupt:
        fail("interrupted; the figures were not written")
        sys.exit(130)
