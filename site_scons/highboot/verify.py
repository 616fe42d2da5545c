"""What a boot should look like: the plan's prediction for one boot, and the kernel's report of it.

The sample kernel prints ``INFO key=value`` facts, ``MEM base length type`` memory-map entries and
``MAP va pa size flags`` coalesced mappings from its own walk of CR3. The prediction is computed
from the plan and the boot's facts (block base, direct-map size and page size, trampoline frame).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from highboot.bootinfo import MEMORY_TYPES
from highboot.paging import PAGE, R_NX, RW_NX, RX, Mapping, coalesce, minimum_tables, paging_levels
from highboot.plan import BootPlan, PlannedRange
from highboot.units import GIB

FLAGS = {"RX": int(RX), "R": int(R_NX), "RW": int(RW_NX)}
_FLAG_TEXT = {"R": int(R_NX), "RW": int(RW_NX), "RX": int(RX), "RWX": int(RX) | 2}
MEMORY_TYPE = {c.name: c.value for c in MEMORY_TYPES}
# Memory types the direct map must cover: everything but MMIO, bad, reserved.
DIRECT_MAPPED_TYPES = {MEMORY_TYPE[name] for name in ("USABLE", "KERNEL", "LOADER_RECLAIMABLE", "ACPI_RECLAIMABLE",
                                                      "ACPI_NVS", "EFI_RUNTIME", "PERSISTENT")}


@dataclass(frozen=True)
class BootReport:
    facts: dict[str, str]
    memory: list[tuple[int, int, int]]
    mappings: list[Mapping]
    efi: list[Mapping]  # the runtime mappings the loader reports (pa, va in the EFI region)

    def number(self, key: str) -> int:
        return int(self.facts[key], 0)


def parse_report(serial: str) -> BootReport:
    facts: dict[str, str] = {}
    memory: list[tuple[int, int, int]] = []
    mappings: list[Mapping] = []
    efi: list[Mapping] = []
    for line in serial.splitlines():
        line = line.strip()
        if line.startswith("INFO "):
            for key, value in re.findall(r'(\w+)=("[^"]*"|\S+)', line[5:]):
                facts[key] = value.strip('"')
        elif line.startswith("MEM "):
            base, length, kind = line.split()[1:4]
            memory.append((int(base, 16), int(length, 16), int(kind)))
        elif line.startswith("MAP "):
            va, pa, size, flags = line.split()[1:5]
            mappings.append(Mapping(int(va, 16), int(pa, 16), int(size, 16), _FLAG_TEXT[flags]))
        elif line.startswith("EFI "):
            pa, va, size, flags = line.split()[1:5]
            efi.append(Mapping(int(va, 16), int(pa, 16), int(size, 16), _FLAG_TEXT[flags]))
    return BootReport(facts, memory, mappings, efi)


def expected_direct_map_size(report: BootReport) -> int:
    """Independently of the loader: all RAM-like memory, 4 GiB at least, the framebuffer, 1 GiB granular."""
    top = max([4 * GIB] + [base + length for base, length, kind in report.memory if kind in DIRECT_MAPPED_TYPES])
    fb = report.number("framebuffer")
    if fb:
        top = max(top, fb + report.number("fb_size"))
    return (top + GIB - 1) // GIB * GIB


def kernel_slide(report: BootReport) -> int:
    """The slide the kernel reported (KASLR), as a signed number; 0 without KASLR."""
    slide = int(report.facts.get("kernel_slide", "0"), 0)
    return slide - (1 << 64) if slide >= 1 << 63 else slide


def direct_map_base(plan: BootPlan, report: BootReport) -> int:
    """Where this boot's direct map is: the layout's start, or where KASLR put it (checked against
    the plan's alignment and region)."""
    base = report.number("direct_map_base")
    if not plan.kaslr:
        return plan.direct_map_base
    offset = base - plan.direct_map_base
    if offset % plan.direct_map_align or not 0 <= offset <= plan.direct_map_limit - report.number("direct_map_size"):
        raise AssertionError(f"direct map at {base:#x} is not an aligned place inside the layout's region")
    return base


def checked_slide(plan: BootPlan, report: BootReport) -> int:
    """The kernel slide of this boot, checked against the slides the plan allows."""
    slide = kernel_slide(report)
    if slide and not (plan.kaslr and slide % plan.slide_align == 0 and plan.slide_min <= slide <= plan.slide_max):
        raise AssertionError(f"kernel slide {slide:#x} is not one the plan allows")
    return slide


def planned_vas(plan: BootPlan, report: BootReport) -> list[tuple[PlannedRange, int]]:
    """Every planned range with its virtual address in this boot (slid by KASLR where it moves)."""
    slide = checked_slide(plan, report)
    return [(r, r.va + slide if r.slides else r.va) for r in plan.ranges]


def predicted_mappings(plan: BootPlan, report: BootReport) -> list[Mapping]:
    """The coalesced mappings the plan predicts for this boot."""
    block = report.number("block")
    out = [Mapping(direct_map_base(plan, report), 0, report.number("direct_map_size"), int(RW_NX))]
    for r, va in planned_vas(plan, report):
        pa = report.number("trampoline_phys") if r.block_offset is None else block + r.block_offset
        out.append(Mapping(va, pa, r.size, FLAGS[r.flags]))
    return coalesce(out + report.efi)


def minimum_table_pages(plan: BootPlan, report: BootReport) -> int:
    """The fewest tables that can map this boot's address space, from the ranges alone."""
    page = report.number("direct_map_page")
    ranges = [(va, r.size, PAGE) for r, va in planned_vas(plan, report)]
    ranges.append((direct_map_base(plan, report), report.number("direct_map_size"), page))
    ranges += [(m.va, m.size, PAGE) for m in report.efi]
    return sum(minimum_tables(ranges, paging_levels(plan.levels)).values())


def diff(predicted: list[Mapping], observed: list[Mapping]) -> str:
    """Both sides, range by range, for a failure message."""
    lines = [f"{'predicted by the plan':<58} | observed by the kernel"]
    for i in range(max(len(predicted), len(observed))):
        a = predicted[i].text() if i < len(predicted) else ""
        b = observed[i].text() if i < len(observed) else ""
        mark = "  " if a == b else "!!"
        lines.append(f"{a:<58} {mark} {b}")
    return "\n".join(lines)
