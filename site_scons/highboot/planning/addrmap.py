"""The planned address space as people want to read it: an mm.rst-style table, the page-table
cost, and an SVG picture with the regions to scale on a log axis."""

from __future__ import annotations

import html
import math

from highboot.inputs.layout import Layout
from highboot.planning.directmap import direct_map_size
from highboot.planning.paging import PAGE, minimum_tables, paging_levels
from highboot.planning.planner import BootPlan
from highboot.units import GIB, MIB, format_size, hex_addr


def _offset(addr: int) -> str:
    """mm.rst's second column: the address as a signed distance from 0 (or from the top)."""
    signed = addr - (1 << 64) if addr >= 1 << 63 else addr
    size = abs(signed)
    for unit, name in ((1 << 50, "PB"), (1 << 40, "TB"), (1 << 30, "GB"), (1 << 20, "MB"), (1 << 10, "KB")):
        if size >= unit:
            value = size / unit
            text = f"{value:.1f}".rstrip("0").rstrip(".")
            return f"{'-' if signed < 0 else ''}{text} {name}"
    return str(signed)


AP_STACKS = "AP stack window"


def ap_stack_window(plan: BootPlan) -> tuple[int, int] | None:
    """(start, size) of the APs' stacks: MAX_CPUS - 1 of them after the trampoline alias, each
    with an unmapped guard page below it (at slide 0; it moves with the kernel). None without APs."""
    if not plan.options.smp or plan.ranges.max_cpus < 2:
        return None
    return plan.ranges.ap_stacks_va, plan.ranges.ap_window


def rows(layout: Layout, plan: BootPlan) -> list[tuple[int, int, str]]:
    """(start, size, what) for every region and, inside the kernel region, every planned range and
    the AP stack window."""
    out = [(r.start, r.size, f"{r.name}: {r.description} [{r.role}]") for r in layout.regions]
    for r in plan.tables.mapped:
        out.append((r.va, r.size, f"  {r.name} ({r.flags})"))
    out.append((plan.ranges.stack_guard_va, PAGE, "  stack guard page (unmapped)"))
    window, aps = ap_stack_window(plan), plan.ranges
    if window:
        out.append((*window, f"  {AP_STACKS}: {aps.max_cpus - 1} x (guard page + {format_size(aps.ap_stack_size)} "
                             "stack), mapped (RW) at boot for the APs started"))
    return sorted(out, key=lambda row: (row[0], -row[1]))


def table_cost(plan: BootPlan, ram: int, page: int, framebuffer: tuple[int, int] | None = None) -> dict[str, int]:
    """The tables mapped at kernel entry for a machine with RAM up to `ram` (and a framebuffer
    (base, size), which a build cannot know: the ones below 4 GiB change nothing)."""
    levels = paging_levels(plan.tables.levels)
    ranges = [(r.va, r.size, PAGE) for r in plan.tables.mapped]
    ranges.append((plan.ranges.direct_map_base, direct_map_size(ram, framebuffer), page))
    return minimum_tables(ranges, levels)


def format_map(layout: Layout, plan: BootPlan) -> str:
    lines = [f"Address space of layout {layout.name!r} ({layout.levels}-level paging, "
             f"{layout.va_bits}-bit virtual addresses) for {plan.kernel.path}", ""]
    lines.append(f"{'start address':>18} | {'offset':>9} | {'end address':>18} | {'size':>9} | what")
    lines.append("-" * 100)
    for start, size, what in rows(layout, plan):
        lines.append(f"{hex_addr(start)[2:]:>18} | {_offset(start):>9} | {hex_addr(start + size - 1)[2:]:>18} | "
                     f"{format_size(size):>9} | {what}")
    lines += ["", "Page tables (4 KiB each) at kernel entry:"]
    planned = plan.block.table_count
    lines.append(f"  planned at build time: {planned} ({format_size(planned * PAGE)}), plus "
                 f"{plan.block.identity_tables_count} identity tables (the trampoline's) reclaimable after entry")
    for ram in (256 * MIB, 4 * GIB, 64 * GIB):
        for page, name in ((GIB, "1 GiB"), (2 * MIB, "2 MiB")):
            cost = table_cost(plan, ram, page)
            total = sum(cost.values())
            per_level = ", ".join(f"{k} {v}" for k, v in cost.items())
            lines.append(f"  RAM {format_size(ram):>7}, direct map with {name} pages: {total:4} tables "
                         f"({format_size(total * PAGE)}): {per_level}")
    lines.append("  page sizes: 4 KiB for the kernel image, stack and trampoline; the direct map uses 1 GiB pages "
                 "where the CPU has them (pdpe1gb), else 2 MiB")
    lines += ["", *protocol_lines(plan), "", *placement_lines(plan), "", *kaslr_lines(plan, layout), "",
              *module_lines(plan)]
    return "\n".join(lines) + "\n"


def protocol_lines(plan: BootPlan) -> list[str]:
    """The boot protocol the kernel speaks, and for a Limine kernel each request and its answer."""
    h = plan.handover
    limine = h.limine
    if limine is None:
        return ["Boot protocol: highboot (struct highboot_boot_info in RDI)"]
    asked = f"base revision {limine.base_revision}" if limine.tag_va is not None else "no base revision tag: revision 0"
    out = [f"Boot protocol: Limine ({asked}; booted with revision {limine.revision}), {len(limine.requests)} "
           f"request(s); stack {format_size(h.stack_size)}"
           + (f"; entry point {hex_addr(h.entry)} (entry point request)" if h.entry is not None else "")]
    for r in limine.requests:
        out.append(f"  {r.id[0]:016x} {r.id[1]:016x}  rev {r.revision}  {hex_addr(r.va)}  {r.name:<24} {r.answer}")
    for what, why in limine.unanswered:
        if what.startswith("internal module") or what == "base revision":
            out.append(f"  {what}: {why}")
    return out


def module_lines(plan: BootPlan) -> list[str]:
    """What else the kernel is handed: its file, the modules (loaded at boot, in kernel memory)."""
    modules = plan.options.modules
    out = [f"Kernel file: {'handed over' if plan.options.keep_kernel_file else 'not handed over'} "
           f"({format_size(plan.kernel.size)})"]
    total = sum(m.size for m in modules)
    out.append(f"Modules: {len(modules)}" + (f", {format_size(total)} in all" if modules else ""))
    for i, m in enumerate(modules):
        out.append(f"  {i:>4} {m.name!r:<24} {format_size(m.size):>10}  {m.esp_path}  fs-verity {m.digest}"
                   + (f"  cmdline {m.cmdline!r}" if m.cmdline else ""))
    return out


def placement_lines(plan: BootPlan) -> list[str]:
    """Where the kernel file's addresses went: a PIE is placed by the build, an ET_EXEC is not."""
    placed = plan.placement
    if not placed.position_independent:
        return [f"Kernel: ET_EXEC, runs at its link address {hex_addr(placed.image_va)}"]
    out = [f"Kernel: position-independent (ET_DYN), linked at {hex_addr(placed.link_va)}, placed at "
           f"{hex_addr(placed.image_va)} (load bias {hex_addr(placed.load_bias)}); "
           f"{len(placed.relocations) + len(placed.absolute_relocations)} relocations applied by the loader"]
    if placed.relro:
        start, size = placed.relro
        out.append(f"  RELRO {hex_addr(start)}..{hex_addr(start + size)}: read-only once relocated")
    if placed.eh_frame_hdr:
        out.append(f"  .eh_frame_hdr at {hex_addr(placed.eh_frame_hdr[0])} ({placed.eh_frame_hdr[1]} bytes)")
    if placed.tls:
        va, filesz, memsz, align = placed.tls
        out.append(f"  TLS template at {hex_addr(va)}: {filesz} bytes initialized, {memsz} in all, align {align}")
    return out


def slides_taken_by_ap_stacks(layout: Layout, plan: BootPlan) -> int:
    """The kernel slides the AP stack window costs: it follows the kernel and must stay in its
    region, so the kernel slides less far."""
    window = ap_stack_window(plan)
    if not plan.kaslr.enabled or window is None:
        return 0
    align = plan.kaslr.slide_align
    # The last 2 MiB window a sliding range touches; without the AP stacks the kernel could slide
    # until that window reaches the region's end.
    last = max(r.va + r.size - PAGE for r in plan.tables.mapped if r.slides) // align * align
    region = layout.require("kernel")
    slide_max = region.end - (last + align)
    return max(0, (slide_max - plan.kaslr.slide_max) // align)


def kaslr_lines(plan: BootPlan, layout: Layout) -> list[str]:
    """What KASLR can choose from: slides of the kernel, places of the direct map (by RAM size)."""
    kaslr = plan.kaslr
    if not kaslr.enabled:
        return ["KASLR: off (KASLR=1 places a position-independent kernel and the direct map at random)"]
    align = kaslr.slide_align
    slides = kaslr.slides
    out = ["KASLR: on (the loader draws from EFI_RNG_PROTOCOL, else RDRAND, else the TSC)",
           f"  kernel: {slides} slides of {format_size(align)} ({math.log2(slides):.1f} bits), from "
           f"{kaslr.slide_min:#x} to {kaslr.slide_max:#x} bytes"]
    taken, window = slides_taken_by_ap_stacks(layout, plan), ap_stack_window(plan)
    if taken and window:
        out.append(f"  the {AP_STACKS} after the kernel ({format_size(window[1])}: MAX_CPUS - 1 stacks of "
                   f"AP_STACK_SIZE and their guard pages) takes {taken} of {slides + taken} slides")
    for ram in (256 * MIB, 4 * GIB, 64 * GIB):
        places = (plan.ranges.direct_map_limit - direct_map_size(ram)) // kaslr.direct_map_align + 1
        if places < 1:
            continue
        out.append(f"  direct map: {places} places {format_size(kaslr.direct_map_align)} apart with RAM "
                   f"{format_size(ram)} ({math.log2(places):.1f} bits)")
    return out


def svg_map(layout: Layout, plan: BootPlan) -> str:
    """Regions as bars whose length is log2 of their size, in address order; mapped parts marked."""
    entries = rows(layout, plan)
    width, row_h, left = 900, 22, 330
    height = row_h * (len(entries) + 3)
    colours = {"direct_map": "#4c9be8", "kernel": "#e8a14c", "efi_runtime": "#9b59b6", "reserved": "#bbbbbb",
               "stack": "#2ecc71", "ap_stacks": "#16a085"}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             'font-family="monospace" font-size="12">',
             f'<text x="8" y="16" font-weight="bold">{html.escape(layout.name)}: region sizes on a log2 axis '
             '(4 KiB .. 16 EiB); filled = mapped at kernel entry</text>']
    scale = (width - left - 20) / (64 - 12)
    for i, (start, size, what) in enumerate(entries):
        y = row_h * (i + 2)
        length = max(2.0, (math.log2(size) - 12) * scale)
        role = next((r.role for r in layout.regions if r.start == start and r.size == size), "planned")
        if what.strip().startswith(AP_STACKS):
            role = "ap_stacks"  # mapped only for the APs a boot starts: outlined, dashed
        mapped = role in ("direct_map",) or role == "planned"
        colour = colours.get(role, "#e74c3c")
        fill = colour if mapped else "none"
        dash = ' stroke-dasharray="4 2"' if role == "ap_stacks" else ""
        parts.append(f'<text x="8" y="{y + 14}">{hex_addr(start)[2:]} {html.escape(what.strip()[:24])}</text>')
        parts.append(f'<rect x="{left}" y="{y + 3}" width="{length:.1f}" height="{row_h - 6}" fill="{fill}" '
                     f'stroke="{colour}"{dash}><title>{html.escape(what.strip())}: {format_size(size)}</title></rect>')
        parts.append(f'<text x="{left + length + 6:.1f}" y="{y + 14}">{format_size(size)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
