"""What a boot should look like: the plan's prediction for one boot, and the kernel's report of it.

The sample kernels print their report (testkit.report describes its lines): ``INFO key=value``
facts, ``MEM base length type`` memory-map entries, ``MAP va pa size access`` coalesced mappings from
their own walk of CR3 and ``EFI phys virt length access cache`` runtime mappings. The prediction is computed
from the plan and the boot's facts (block base, direct-map size and page size, trampoline frame).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from highboot.booting.qemu import BootResult
from highboot.planning.paging import PAGE, R_NX, RW_NX, RX, Mapping, PageFlags, coalesce, minimum_tables, paging_levels
from highboot.planning.planner import BootPlan, PlannedRange
from highboot.protocols.bootinfo import CPU_FEATURES, MEMORY_TYPES
from highboot.units import GIB
from testkit import report

FLAGS = {"RX": int(RX), "R": int(R_NX), "RW": int(RW_NX)}
# The walk's access text as entry flags (RWX only ever appears in a failure message).
_FLAG_TEXT = dict(zip(report.ACCESS.choices, (int(R_NX), int(RW_NX), int(RX), int(RX | PageFlags.WRITABLE)),
                      strict=True))
MEMORY_TYPE = {c.name: c.value for c in MEMORY_TYPES}
CPU_NX = next(c.value for c in CPU_FEATURES if c.name == "NX")
# Memory types the direct map must cover: everything but MMIO, bad, reserved.
DIRECT_MAPPED_TYPES = {MEMORY_TYPE[name] for name in ("USABLE", "KERNEL", "LOADER_RECLAIMABLE", "ACPI_RECLAIMABLE",
                                                      "ACPI_NVS", "EFI_RUNTIME", "PERSISTENT")}


@dataclass(frozen=True)
class ReportedModule:
    """A MODULE line: one module as the kernel saw it."""

    index: int
    phys: int
    virt: int
    size: int
    fnv: int
    name: bytes
    cmdline: bytes
    digest: bytes
    pattern: str


@dataclass(frozen=True)
class ReportedCpu:
    """A CPU line: one CPU record as the kernel found it after releasing the APs."""

    index: int
    processor_id: int
    apic_id: int
    stack_top: int
    state: str


def _bytes(text: str) -> bytes:
    return b"" if text == "-" else bytes.fromhex(text)


@dataclass(frozen=True)
class BootReport:
    facts: dict[str, str]
    memory: list[tuple[int, int, int]]
    mappings: list[Mapping]
    efi: list[Mapping]  # the runtime mappings the loader reports (pa, va in the EFI region)
    modules: list[ReportedModule] = field(default_factory=list)
    cpus: list[ReportedCpu] = field(default_factory=list)

    def number(self, key: str) -> int:
        return int(self.facts[key], 0)


def passed(result: BootResult) -> bool:
    """A test kernel's boot passed: it wrote EXIT_PASS to the isa-debug-exit port after its PASS line."""
    return result.status == report.PASS_STATUS and report.PASS_LINE in result.serial


def parse_report(serial: str) -> BootReport:
    """The facts of a boot's serial output, read by the report protocol (testkit.report). A line of
    a known tag that does not follow it is an AssertionError naming the line; other lines are not
    the report's and are skipped."""
    facts: dict[str, str] = {}
    memory: list[tuple[int, int, int]] = []
    mappings: list[Mapping] = []
    efi: list[Mapping] = []
    modules: list[ReportedModule] = []
    cpus: list[ReportedCpu] = []
    for raw in serial.splitlines():
        line = raw.strip()
        tag, _, rest = line.partition(" ")
        if tag == report.INFO_TAG:
            facts.update(_info(line, rest))
        elif tag == report.MEM.tag:
            base, length, kind = _fields(report.MEM, line, rest)
            memory.append((int(base, 16), int(length, 16), int(kind)))
        elif tag == report.MAP.tag:
            va, pa, size, access = _fields(report.MAP, line, rest)
            mappings.append(Mapping(int(va, 16), int(pa, 16), int(size, 16), _FLAG_TEXT[access]))
        elif tag == report.EFI.tag:
            pa, va, size, access, _cache = _fields(report.EFI, line, rest)
            efi.append(Mapping(int(va, 16), int(pa, 16), int(size, 16), _FLAG_TEXT[access]))
        elif tag == report.MODULE.tag:
            n, phys, virt, size, fnv, name, cmdline, digest, pattern = _fields(report.MODULE, line, rest)
            modules.append(ReportedModule(int(n), int(phys, 16), int(virt, 16), int(size, 16), int(fnv, 16),
                                          _bytes(name), _bytes(cmdline), _bytes(digest), pattern))
        elif tag == report.CPU.tag:
            n, uid, apic, top, state = _fields(report.CPU, line, rest)
            cpus.append(ReportedCpu(int(n), int(uid), int(apic, 16), int(top, 16), state))
    return BootReport(facts, memory, mappings, efi, modules, cpus)


def _malformed(line: str, why: str) -> AssertionError:
    return AssertionError(f"malformed report line {line!r}: {why}")


def _check(field: report.ReportField, value: str, line: str) -> None:
    if not field.matches(value):
        expected = f"one of {', '.join(field.choices)}" if field.choices else f"a {field.format} value"
        raise _malformed(line, f"{field.name} is {value!r}, expected {expected}")


def _fields(kind: report.LineKind, line: str, rest: str) -> list[str]:
    values = rest.split(" ") if rest else []
    if len(values) != len(kind.fields):
        names = " ".join(f.name for f in kind.fields)
        raise _malformed(line, f"{len(values)} fields, expected {len(kind.fields)} ({kind.tag} {names})")
    for spec, value in zip(kind.fields, values, strict=True):
        _check(spec, value, line)
    return values


_PAIR = re.compile(r'(\w+)=("[^"]*"|[^\s"]*)(?: |$)')


def _info(line: str, rest: str) -> dict[str, str]:
    """key=value pairs, one space apart; a described key's value in its format (quotes stripped)."""
    out: dict[str, str] = {}
    at = 0
    while at < len(rest) or not out:
        m = _PAIR.match(rest, at)
        if m is None:
            raise _malformed(line, f"expected key=value at {rest[at:at + 20]!r}")
        key, value = m.groups()
        if key in report.INFO:
            _check(report.INFO[key], value, line)
        out[key] = value[1:-1] if value.startswith('"') else value
        at = m.end()
    return out


def expected_direct_map_size(report: BootReport) -> int:
    """Independently of the loader and of highboot.planning.directmap (on purpose: a copy of the rule
    catches a change to it): all RAM-like memory, 4 GiB at least, the framebuffer, 1 GiB granular."""
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
    dmap = plan.ranges
    if not plan.kaslr.enabled:
        return dmap.direct_map_base
    offset = base - dmap.direct_map_base
    room = dmap.direct_map_limit - report.number("direct_map_size")
    if offset % plan.kaslr.direct_map_align or not 0 <= offset <= room:
        raise AssertionError(f"direct map at {base:#x} is not an aligned place inside the layout's region")
    return base


def checked_slide(plan: BootPlan, report: BootReport) -> int:
    """The kernel slide of this boot, checked against the slides the plan allows."""
    slide = kernel_slide(report)
    kaslr = plan.kaslr
    if slide and not (kaslr.enabled and slide % kaslr.slide_align == 0 and kaslr.slide_min <= slide <= kaslr.slide_max):
        raise AssertionError(f"kernel slide {slide:#x} is not one the plan allows")
    return slide


def planned_vas(plan: BootPlan, report: BootReport) -> list[tuple[PlannedRange, int]]:
    """Every planned range with its virtual address in this boot (slid by KASLR where it moves)."""
    slide = checked_slide(plan, report)
    return [(r, r.va + slide if r.slides else r.va) for r in plan.tables.mapped]


def ap_stacks(plan: BootPlan, report: BootReport) -> list[Mapping]:
    """The stacks of this boot's parked APs, as the plan places them: the AP of CPU record k (k >= 1)
    has the k-th stack of the window after the trampoline alias (a guard page below each), backed
    by the block right after its static part. None with SMP off (or when the boot info lists no
    CPUs: a kernel that does not report them)."""
    count = int(report.facts.get("cpu_count", "1"))
    if not plan.options.smp or count <= 1:
        return []
    slide = checked_slide(plan, report)
    size = plan.ranges.ap_stack_size
    block = report.number("block") + plan.block.static_size
    return [Mapping(plan.ranges.ap_stacks_va + slide + k * (size + PAGE) + PAGE, block + k * size, size, int(RW_NX))
            for k in range(count - 1)]


def predicted_mappings(plan: BootPlan, report: BootReport) -> list[Mapping]:
    """The coalesced mappings the plan predicts for this boot."""
    block = report.number("block")
    # DIRECT_MAP_EXEC maps the direct map executable (as Limine maps its HHDM).
    direct = int(RW_NX & ~PageFlags.NO_EXECUTE) if plan.options.direct_map_exec else int(RW_NX)
    out = [Mapping(direct_map_base(plan, report), 0, report.number("direct_map_size"), direct)]
    for r, va in planned_vas(plan, report):
        pa = report.number("trampoline_phys") if r.block_offset is None else block + r.block_offset
        out.append(Mapping(va, pa, r.size, FLAGS[r.flags]))
    out += ap_stacks(plan, report) + report.efi
    if not report.number("features") & CPU_NX:
        # No NX on this CPU: the loader clears the bit everywhere (it is reserved while EFER.NXE is clear).
        out = [Mapping(m.va, m.pa, m.size, m.flags & ~int(PageFlags.NO_EXECUTE)) for m in out]
    return coalesce(out)


def minimum_table_pages(plan: BootPlan, report: BootReport) -> int:
    """The fewest tables that can map this boot's address space, from the ranges alone."""
    page = report.number("direct_map_page")
    ranges = [(va, r.size, PAGE) for r, va in planned_vas(plan, report)]
    ranges.append((direct_map_base(plan, report), report.number("direct_map_size"), page))
    ranges += [(m.va, m.size, PAGE) for m in report.efi + ap_stacks(plan, report)]
    return sum(minimum_tables(ranges, paging_levels(plan.tables.levels)).values())


def diff(predicted: list[Mapping], observed: list[Mapping]) -> str:
    """Both sides, range by range, for a failure message."""
    lines = [f"{'predicted by the plan':<58} | observed by the kernel"]
    for i in range(max(len(predicted), len(observed))):
        a = predicted[i].text() if i < len(predicted) else ""
        b = observed[i].text() if i < len(observed) else ""
        mark = "  " if a == b else "!!"
        lines.append(f"{a:<58} {mark} {b}")
    return "\n".join(lines)
