"""What the benchmark prints and writes: the machine it ran on, each section's table, the targets
met or missed, and bench.json."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testkit.bootcheck import BootReport

from benchkit.common import KIB, run, say
from highboot.booting import qemu
from highboot.units import GIB, MIB, format_size

if TYPE_CHECKING:
    from benchkit.sections import Bench


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next((int(line.split()[1]) * KIB for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal:")), 0)

    def version(cmd: list[str]) -> str:
        try:
            return run(cmd).stdout.strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"

    def package(name: str) -> str:
        return version(["dpkg-query", "-W", "-f=${Version}", name]) or "not installed"

    return {"host": platform.node(), "cpu": cpu, "cpus": os.cpu_count(), "memory_bytes": mem,
            "kernel": platform.release(), "qemu": version([qemu.qemu_binary(), "--version"]), "accel": "TCG",
            "ovmf": package("ovmf"), "grub": package("grub-efi-amd64-bin"), "python": platform.python_version()}


def print_header(results: dict[str, Any]) -> None:
    m = results["machine"]
    say(f"highboot bench {results['date']} on {m['cpu']}, {m['cpus']} cpus, {m['memory_bytes'] / GIB:.0f} GiB, "
        f"{m['qemu']} ({m['accel']}), OVMF {m['ovmf']}, GRUB {m['grub']}")


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "MISSED")


def number(x: float | None) -> str:
    return "?" if x is None else f"{x:,.0f}"


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def print_figures(name: str, figures: Any, bench: Bench) -> None:
    """Any section's figures, one line each: for a section without a printer of its own."""
    say(f"{name}:")
    items = figures.items() if isinstance(figures, dict) else enumerate(figures)
    for key, value in items:
        say(f"   {key}: {json.dumps(value, default=_json_default)}")


# --------------------------------------------------------------------------- one printer per section


def print_footprint(figures: list[dict[str, Any]], bench: Bench) -> None:
    say("1. Page tables at kernel entry (bytes of 4 KiB tables)")
    say(f"   {'RAM':>5} {'cpu':>7} {'page':>6} {'highboot':>10} {'minimum':>10} {'fixed 1G':>10} {'fixed 2M':>12}")
    for r in figures:
        if "error" in r:
            say(f"   {r['ram']:>5} {r['cpu']:>7}  boot failed: {r['error'][-200:]!r}")
            continue
        same = "=" if r["at_minimum"] else "!="
        say(f"   {r['ram']:>5} {r['cpu']:>7} {format_size(r['direct_map_page']):>6} "
            f"{format_size(r['table_bytes']):>10} {same}{format_size(r['minimum_bytes']):>9} "
            f"{format_size(r['naive_1g_bytes']):>10} {format_size(r['naive_2m_bytes']):>12}")
    say("   minimum: computed here from the mappings the kernel observed; '=' highboot built exactly that")
    say("   fixed: a 127 TiB identity map + a 64 TiB direct map (4-level), with 1 GiB / with 2 MiB pages")
    for size, setup in bench.rams.items():
        if setup.extra:
            say(f"   {size}: {setup.note}")


def print_cycles(c: dict[str, Any], bench: Bench) -> None:
    say(f"2. Loader cost under {c['icount']} (-cpu {c['cpu']}), TSC cycles from efi_main to the kernel")
    for r in c["by_ram"]:
        if "loader_cycles" not in r:
            say(f"   RAM {r['ram']:>5}: boot failed ({r['ram_note']})")
            continue
        say(f"   RAM {r['ram']:>5}: {r['loader_cycles']:>12,.0f} of {r['reset_to_kernel_cycles']:>14,.0f} "
            f"reset-to-kernel = {pct(r['share'])} ({r['memory_map_entries']} map entries)")
    e = c["by_entries"]
    say("   by memory-map entries (fragmenter app: 2 N extra pages of alternating types, then highboot; 256 MiB):")
    say(f"     {'N':>5} {'entries':>7} {'loader':>13} {'1 GetMemoryMap':>15} {'loader - 2 GMM':>15} {'inversions':>10}")
    for p in e["points"]:
        if "loader_cycles" not in p:
            say(f"     {p['fragments']:>5} failed: {p['failure'][-200:]!r}")
            continue
        gmm = p.get("firmware_get_memory_map_cycles")
        rest = p.get("loader_less_get_memory_map_cycles")
        say(f"     {p['fragments']:>5} {p['memory_map_entries']:>7} {p['loader_cycles']:>13,.0f} "
            f"{number(gmm):>15} {number(rest):>15} {number(p.get('firmware_map_inversions')):>10}")
    for key, what in (("fit", "loader"), ("fit_get_memory_map", "one GetMemoryMap (firmware)"),
                      ("fit_less_get_memory_map", "loader less 2 GetMemoryMap")):
        fit = e.get(key)
        if fit:
            say(f"     linear fit, {what}: {fit['slope']:,.0f} cycles/entry + {fit['intercept']:,.0f}, "
                f"r^2 = {fit['r2']:.4f}")
    if e.get("marginal_cycles_per_entry"):
        say(f"     cycles per extra entry between neighbouring points: {e['marginal_cycles_per_entry']}")
    print_reset_to_kernel(c["reset_to_kernel"])


def print_reset_to_kernel(r: dict[str, Any]) -> None:
    say(f"3. Reset to the kernel's first instruction ({r['ram']}, median TSC cycles; runs ok/all)")
    for label in ("highboot", "grub", "grub_default", "floor"):
        if label not in r:
            continue
        s = r[label]
        if not s["median"]:
            say(f"   {label:<13} {'failed':>14}  ({s['ok']}/{s['runs']})")
            continue
        spread = (s["max"] - s["min"]) / s["median"]
        say(f"   {label:<13} {s['median']:>14,.0f}  ({s['ok']}/{s['runs']} runs, spread {spread:.4%})")
    for label in ("grub", "grub_default", "floor"):
        if f"highboot_over_{label}" in r:
            say(f"   highboot / {label:<12} = {r[f'highboot_over_{label}']:.4f}")
    if "highboot_above_floor_cycles" in r:
        say(f"   above the floor: highboot {r['highboot_above_floor_cycles']:,.0f} cycles"
            + "".join(f", {g} {r[f'{g}_above_floor_cycles']:,.0f}" for g in ("grub", "grub_default")
                      if f"{g}_above_floor_cycles" in r))


def print_hash(h: dict[str, Any], bench: Bench) -> None:
    say(f"Digest code on this CPU (fs-verity of {h.get('bytes', 0) // MIB} MiB, MB/s; best of a few runs)")
    if "error" in h:
        say(f"   {h['error']}")
        return
    for name, speed in h["engines"].items():
        say(f"   highboot {name:<8} {speed / 1e6:10.0f}" if speed else f"   highboot {name:<8} (not on this CPU)")
    for key, label in (("openssl_sha256", "openssl speed -evp sha256"), ("fsverity_digest", "fsverity digest")):
        if h.get(key):
            say(f"   {label:<26} {h[key] / 1e6:10.0f}")
    if h.get("fastest_over_openssl"):
        say(f"   fastest engine / OpenSSL: {h['fastest_over_openssl']:.2f} (target >= 0.8)")


def print_modules(m: dict[str, Any], bench: Bench) -> None:
    say(f"Module loading ({m.get('icount', '')}; cycles = instructions)")
    if "error" in m:
        say(f"   {m['error']}")
        return
    for cpu, figures in m["cpus"].items():
        say(f"   -cpu {cpu}:")
        for what, label in (("highboot_loader", "highboot loader (efi_main to kernel)"),
                            ("highboot_reset_to_kernel", "highboot reset to kernel"),
                            ("grub_reset_to_kernel", "GRUB (multiboot2 + module2) reset to kernel")):
            fig = figures[what]
            points = []
            for p in fig["points"]:
                value = p.get("loader_cycles", p.get("tsc_kernel"))
                points.append(f"{p['module_mib']} MiB: " + (f"{value / 1e6:,.1f} M" if value else "failed"))
            per = f"{fig['per_mib'] / 1e6:.2f} M per MiB" if fig["per_mib"] else "per MiB n/a"
            say(f"     {label:<46} {per:>18}   ({', '.join(points)})")
        if figures.get("highboot_over_grub_per_mib"):
            say(f"     highboot / GRUB per MiB of module: {figures['highboot_over_grub_per_mib']:.2f} (target <= 1)")
    for what, error in m.get("errors", {}).items():
        say(f"   {what}: {error}")


def print_kernels(k: dict[str, Any], bench: Bench) -> None:
    say(f"Kernel size ({k.get('icount', '')}, {k.get('ram', '')}; cycles = instructions)")
    fmt = lambda v: f"{v / 1e6:,.1f} M" if v is not None else "failed"  # noqa: E731
    for cpu, figures in k.get("cpus", {}).items():
        say(f"   -cpu {cpu}:{'':<21}highboot reset  highboot loader     GRUB reset   highboot/GRUB")
        for p in figures["points"]:
            ratio = (f"{p['highboot_reset'] / p['grub_reset']:.2f}x" if p["highboot_reset"] and p["grub_reset"]
                     else "-")
            say(f"     {p['what']} of {p['mib']:>3} MiB {'':<10}{fmt(p['highboot_reset']):>14} "
                f"{fmt(p['highboot_loader']):>16} {fmt(p['grub_reset']):>14} {ratio:>15}")
        per = {key: figures.get(f"{key}_per_mib") for key in ("highboot_reset", "highboot_loader", "grub_reset")}
        say("     per MiB of kernel: " + ", ".join(f"{key.replace('_', ' ')} {v / 1e6:.2f} M" if v is not None
                                                    else f"{key.replace('_', ' ')} n/a" for key, v in per.items()))
    for what, error in k.get("errors", {}).items():
        say(f"   {what}: {error}")


def print_smp(m: dict[str, Any], bench: Bench) -> None:
    say(f"Application processors ({m.get('icount', '')}; cycles = instructions)")
    for cpu, figures in m["cpus"].items():
        say(f"   -cpu {cpu}:")
        for p in figures["points"]:
            reset = f"{p['tsc_kernel'] / 1e6:,.1f} M" if p["tsc_kernel"] else "failed"
            start = f"{p['ap_start'] / 1e6:,.1f} M" if p["ap_start"] else "-"
            say(f"     -smp {p['smp']:<3} reset to kernel {reset:>12}   AP start (INIT to all parked) {start:>10}")
        for key, label in (("tsc_kernel_per_ap", "reset to kernel"), ("ap_start_per_ap", "AP start")):
            value = figures.get(key)
            say(f"     {label} per AP: " + (f"{value / 1e6:.3f} M" if value is not None else "n/a"))


def print_limine(m: dict[str, Any], bench: Bench) -> None:
    from benchkit.sections import LIMINE_ROWS

    say(f"Limine-protocol kernel: reset to the kernel's first instruction ({m['icount']}, -cpu {m['cpu']}, "
        f"{m['ram']}; M instructions, median of {m['runs_each']})")
    rows = m.get("rows", {})
    above = m.get("above_floor", {})
    grub = rows.get("grub", {}).get("median")
    limine = rows.get("limine", {}).get("median")
    say(f"   {'loader':<26}{'kernel':<30}{'reset':>11}{'above floor':>13}{'/ GRUB':>9}{'/ Limine':>10}")
    for label, (loader, kernel) in LIMINE_ROWS.items():
        row = rows.get(label)
        if row is None:
            continue
        if not row["median"]:
            status = row.get("failure", {}).get("status")
            say(f"   {loader:<26}{kernel:<30}{'failed':>11}  ({row['ok']}/{row['runs']} ok; QEMU status {status})")
            continue
        gap = f"{above[label] / 1e6:,.1f} M" if label in above else "-"
        to_grub = f"{row['median'] / grub:.4f}" if grub else "-"
        to_limine = f"{row['median'] / limine:.4f}" if limine else "-"
        say(f"   {loader:<26}{kernel:<30}{row['median'] / 1e6:>9,.1f} M{gap:>13}{to_grub:>9}{to_limine:>10}")
        if row.get("requests_answered") is not None and row["requests_answered"] != m.get("requests_asked"):
            say(f"      the kernel saw {row['requests_answered']} of its {m.get('requests_asked')} requests answered")
    say(f"   Limine: {m.get('limine_source', 'not available')}")
    say("   GRUB cannot boot a Limine-protocol kernel: it boots the multiboot2 bench kernel, a few KiB like the "
        "Limine one")
    for what, error in m.get("errors", {}).items():
        say(f"   {what}: {error[-300:]}")


def print_build(b: dict[str, Any], bench: Bench) -> None:
    say(f"4. Build (seconds, median of {bench.build_runs}; {b.get('tree', 'failed')})")
    if "error" in b:
        say(f"   build failed: {b['error'][-300:]}")
    for k, v in b.items():
        if isinstance(v, float):
            say(f"   {k:<28} {v:8.2f}")
    for k in ("clean_warm_breakdown", "noop_breakdown", "layout_edit_breakdown"):
        if k in b:
            say(f"   {k} (--debug=time): {json.dumps(b[k])}")


# BOOTX64.EFI's size target (issue 26: well under Limine's, under 128 KiB, for either protocol's build).
BOOTX64_TARGET_BYTES = 128 * KIB


def print_size(s: dict[str, Any], bench: Bench) -> None:
    size = s["bootx64_bytes"]
    target = f"target < {BOOTX64_TARGET_BYTES // KIB} KiB"
    say(f"5. BOOTX64.EFI, highboot protocol: {size:,} bytes ({size / KIB:.1f} KiB; {target})")
    if "limine_protocol_bootx64_bytes" in s:
        own = s["limine_protocol_bootx64_bytes"]
        say(f"   BOOTX64.EFI, Limine protocol: {own:,} bytes ({own / KIB:.1f} KiB; {target})")
    elif "limine_protocol_error" in s:
        say(f"   BOOTX64.EFI, Limine protocol: not built ({s['limine_protocol_error'][-200:]})")
    if "limine_efi_bytes" in s:
        limine = s["limine_efi_bytes"]
        say(f"   Limine's own BOOTX64.EFI: {limine:,} bytes ({limine / KIB:.0f} KiB), "
            f"highboot (Limine protocol) / Limine = {s.get('limine_protocol_bootx64_bytes', size) / limine:.3f}")
    for name in ("grub", "grub_default"):
        if f"{name}_efi_bytes" in s:
            other = s[f"{name}_efi_bytes"]
            what = "only the modules needed" if name == "grub" else "every module, as grub-mkstandalone makes it"
            say(f"   GRUB standalone ({what}): {other:,} bytes ({other / KIB:,.0f} KiB), "
                f"highboot / GRUB = {size / other:.3f}")


def print_fuzz(f: dict[str, Any], bench: Bench) -> None:
    say(f"Fuzz: {f['examples']} inputs, {f['summary']}")


# --------------------------------------------------------------------------- targets and JSON


def targets(results: dict[str, Any]) -> dict[str, bool | None]:
    """Each target met (True), missed (False), or not measured in this run (None)."""
    fp = [r for r in results.get("footprint", []) if "error" not in r]
    c = results.get("cycles", {})
    share = [r["share"] for r in c.get("by_ram", []) if "share" in r]
    fit = c.get("by_entries", {}).get("fit")
    own = c.get("by_entries", {}).get("fit_less_get_memory_map")
    reset = c.get("reset_to_kernel", {})
    b = results.get("build", {})
    sizes = [v for k, v in results.get("size", {}).items() if k in ("bootx64_bytes", "limine_protocol_bootx64_bytes")]
    return {
        "tables_equal_minimum": all(r["at_minimum"] for r in fp) if fp else None,
        "loader_share_under_2pct": all(s < 0.02 for s in share) if share else None,
        "loader_linear_in_entries_r2_over_0.99": fit["r2"] > 0.99 if fit else None,
        "loader_less_firmware_get_memory_map_linear_r2_over_0.99": own["r2"] > 0.99 if own else None,
        "faster_than_grub": reset["highboot_over_grub"] < 1 if "highboot_over_grub" in reset else None,
        "within_2pct_of_floor": reset["highboot_over_floor"] <= 1.02 if "highboot_over_floor" in reset else None,
        "noop_under_2s": b["noop_s"] < 2 if "noop_s" in b else None,
        "layout_edit_under_quarter_warm_clean": (b["layout_edit_over_warm_clean"] < 0.25
                                                 if "layout_edit_over_warm_clean" in b else None),
        f"bootx64_under_{BOOTX64_TARGET_BYTES // KIB}KiB": (all(v < BOOTX64_TARGET_BYTES for v in sizes)
                                                            if sizes else None),
    }


def print_targets(verdicts: dict[str, bool | None]) -> None:
    say("Targets: " + ", ".join(f"{k} {verdict(v)}" for k, v in verdicts.items()))


def write_json(path: Path, results: dict[str, Any]) -> None:
    """Every figure, each run's too; written whole at the end (a temporary file renamed), so an
    interrupted run leaves the previous bench.json as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=_json_default) + "\n")
    tmp.replace(path)


def _json_default(value: object) -> object:
    if isinstance(value, BootReport):
        return None
    if isinstance(value, Path):
        return str(value)
    raise TypeError(type(value).__name__)
