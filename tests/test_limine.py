"""highboot's Limine-protocol sample kernel (examples/limine-kernel) in the suite: built by the
test matrix (testkit.matrix.limine_configs) as a PIE linked at 0 by GNU ld and by ld.lld and as a
fixed kernel, booted under QEMU + OVMF. The kernel checks every response and its entry state on
itself; the test checks what it reports against the plan (HHDM, executable address, its CR3 walk of
its own image, CPUs, paging mode, memory map, modules). Then the refusals of Limine kernels the build
cannot boot, through the real build (scons)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT
from elftools.elf.elffile import ELFFile
from test_bad_inputs import scons
from test_framebuffer import STD_VGA
from test_la57 import refused_without_la57
from test_limine_scan import END, HHDM, STACK, START, TAG, kernel_with, request, words
from test_matrix import config
from testkit.bootcheck import FLAGS, diff

from elfgen import KBASE, PF_R, PF_W, PF_X, Elf, Seg
from highboot.booting import qemu
from highboot.build import steps
from highboot.planning.paging import Mapping, coalesce
from highboot.planning.planner import BootPlan
from highboot.rendering.templates import render

PASS_LINE = "HIGHBOOT-LIMINE-KERNEL: PASS"
#: isa-debug-exit: the kernel writes 0x10 when every check passed.
PASS_STATUS = qemu.debug_exit_status(0x10)
#: The memory map's types as the kernel names them (Limine's numbering, in the spec's order).
USABLE = "usable"
#: The paging mode response's values for x86-64 (the protocol's): 0 4-level, 1 5-level.
PAGING_MODE = {4: 0, 5: 1}


@dataclass(frozen=True)
class LimineReport:
    """What the Limine sample kernel printed: one LIMINE/STATE line per check, its memory map, its walk."""

    serial: str
    checks: dict[str, tuple[str, str]]  # name -> (ok | missing | bad, the rest of the line)
    memmap: list[tuple[int, int, str]]
    mappings: list[Mapping]

    def fact(self, check: str, key: str) -> str:
        status, rest = self.checks[check]
        m = re.search(rf'(?:^| ){key}=("[^"]*"|\S*)', rest)
        assert m, f"no {key}= on the {check} line: {status} {rest}"
        value = m.group(1)
        return value[1:-1] if value.startswith('"') else value

    def number(self, check: str, key: str, base: int = 16) -> int:
        return int(self.fact(check, key), base)


def parse(serial: str) -> LimineReport:
    checks: dict[str, tuple[str, str]] = {}
    memmap: list[tuple[int, int, str]] = []
    mappings: list[Mapping] = []
    for line in serial.splitlines():
        tag, _, rest = line.strip().partition(" ")
        if tag in ("LIMINE", "STATE"):
            name, status, details = (rest.split(" ", 2) + ["", ""])[:3]
            checks[name] = (status, details)
        elif tag == "MEMMAP":
            base, length, kind = rest.split(" ")
            memmap.append((int(base, 16), int(length, 16), kind))
        elif tag == "MAP":
            va, pa, size, access = rest.split(" ")
            mappings.append(Mapping(int(va, 16), int(pa, 16), int(size, 16), FLAGS[access]))
    return LimineReport(serial, checks, memmap, mappings)


def boot(built: dict, name: str, *, cpu: str, smp: int, memory: str = "512M",
         extra: list[str] | None = None) -> tuple[LimineReport, BootPlan]:
    esp, plan = config(built, name)
    result = qemu.boot(esp, cpu=cpu, memory=memory, smp=smp, timeout=400, extra=extra)
    tail = "\n".join(result.serial.splitlines()[-80:])
    assert result.status is not None, f"QEMU timed out after {result.seconds:.0f} s:\n{tail}"
    assert PASS_LINE in result.serial and result.status == PASS_STATUS, f"exit {result.status}:\n{tail}"
    report = parse(result.serial)
    bad = {n: c for n, c in report.checks.items() if c[0] == "bad"}
    assert not bad, bad
    return report, plan


def slide_of(report: LimineReport, plan: BootPlan) -> int:
    """This boot's kernel slide: the executable address's virtual base less the plan's image address,
    checked against the slides the plan allows (none without KASLR)."""
    slide = report.number("executable_address", "virtual_base") - plan.placement.image_va
    kaslr = plan.kaslr
    if not kaslr.enabled:
        assert slide == 0, f"the kernel runs {slide:#x} away from the plan's {plan.placement.image_va:#x}"
    else:
        assert slide % kaslr.slide_align == 0 and kaslr.slide_min <= slide <= kaslr.slide_max, hex(slide)
    return slide


def predicted_image(plan: BootPlan, physical_base: int, slide: int) -> list[Mapping]:
    """The plan's mappings of the kernel image, in this boot: slid, the block where the executable
    address response says the image starts."""
    start, end = plan.placement.image_va, plan.placement.image_end
    image = [r for r in plan.tables.mapped if r.block_offset is not None and start <= r.va < end]
    first = min(image, key=lambda r: r.va)
    assert first.va == start, f"the plan maps nothing at the image's start {start:#x}"
    block = physical_base - first.block_offset
    return coalesce([Mapping(r.va + slide, block + r.block_offset, r.size, FLAGS[r.flags]) for r in image])


def has_la57(cpu: str) -> bool:
    """Whether QEMU's CPU model has LA57 (TCG's `max` has it; the named models only with +la57)."""
    return cpu.split(",")[0] == "max" and "-la57" not in cpu or "+la57" in cpu


def expected_levels(plan: BootPlan, cpu: str) -> int:
    """The paging depth the kernel gets: the layout's, or 5 levels on a 4-level layout when the
    kernel prefers 5-level paging and the CPU has LA57."""
    limine = plan.handover.limine
    return 5 if limine is not None and limine.la57_at_boot and has_la57(cpu) else plan.tables.levels


def check_against_plan(report: LimineReport, plan: BootPlan, *, smp: int, cpu: str) -> int:
    """The facts the kernel reported, as the plan predicts them on this CPU; returns the slide."""
    slide = slide_of(report, plan)
    # The HHDM is the layout's direct map: at its base, or (KASLR) an aligned place in its region.
    hhdm = report.number("hhdm", "offset")
    offset = hhdm - plan.ranges.direct_map_base
    if plan.kaslr.enabled:
        assert offset % plan.kaslr.direct_map_align == 0 and 0 <= offset < plan.ranges.direct_map_limit, hex(hhdm)
    else:
        assert offset == 0, f"HHDM at {hhdm:#x}, the plan's direct map is at {plan.ranges.direct_map_base:#x}"
    # The kernel's walk of its own image from CR3 equals the plan's tables.
    physical = report.number("executable_address", "physical_base")
    predicted = predicted_image(plan, physical, slide)
    assert report.mappings == predicted, "plan and CPU disagree:\n" + diff(predicted, report.mappings)
    # The paging mode is the one the plan and the CPU decide, and the kernel found CR4.LA57 to match
    # (its walk above went through that many levels).
    levels = expected_levels(plan, cpu)
    assert report.number("paging_mode", "mode", 10) == PAGING_MODE[levels], report.checks["paging_mode"]
    assert int(report.fact("paging_mode", "levels")) == levels, report.checks["paging_mode"]
    # Every processor QEMU has was started and released.
    assert int(report.fact("mp", "cpus")) == smp, report.checks["mp"]
    assert int(report.fact("mp", "aps_arrived")) == smp - 1, report.checks["mp"]
    # No usable memory under the kernel image (nor under a module).
    image = (physical, physical + plan.placement.image_size)
    for base, length, kind in report.memmap:
        if kind == USABLE:
            assert base + length <= image[0] or base >= image[1], f"usable {base:#x}+{length:#x} over the kernel"
    assert report.memmap, "no MEMMAP lines"
    return slide


def module_sum(data: bytes) -> int:
    """The kernel's checksum of a module (sum = sum * 31 + byte, 64-bit)."""
    total = 0
    for b in data:
        total = (total * 31 + b) & (1 << 64) - 1
    return total


def check_modules(report: LimineReport, plan: BootPlan) -> None:
    """The module response lists the build's modules, in order, with their sizes, bytes and strings."""
    _, rest = report.checks["module"]
    seen = re.findall(r'\[(\d+)\] path=(\S*) string="([^"]*)" size=(\d+) sum=([0-9a-f]+)', rest)
    modules = plan.options.modules
    assert int(report.fact("module", "count"), 10) == len(modules) == len(seen), rest
    for (n, path, string, size, total), m in zip(seen, modules, strict=True):
        assert int(size) == m.size and string == m.cmdline, (n, path, string, size)
        # Its name, from the kernel's directory (/highboot), as Limine resolves a module's path.
        named = m.name if m.name.startswith("/") else "/highboot/" + m.name.removeprefix("./").lstrip("/")
        assert path == named, path
        assert int(total, 16) == module_sum(Path(m.source).read_bytes()), f"module {n}: its bytes differ"


def video_modes(report: LimineReport) -> list[tuple[int, int, int, int]]:
    """The framebuffer's video modes as the kernel listed them: (width, height, bpp, pitch)."""
    modes = []
    for n, line in enumerate(line for line in report.serial.splitlines() if line.startswith("VIDEOMODE ")):
        index, size, bpp, pitch, masks = line.split()[1:]
        assert int(index) == n and masks == "8:16,8:8,8:0", line  # QemuVideoDxe's modes: BGRX8
        width, height = map(int, size.split("x"))
        modes.append((width, height, int(bpp), int(pitch)))
    return modes


def check_display(report: LimineReport, size: tuple[int, int]) -> None:
    """The framebuffer in the mode `size`, and the std VGA's modes listed, in OVMF's order."""
    assert report.fact("framebuffer", "fb0") == f"{size[0]}x{size[1]}/32"
    assert report.number("framebuffer", "modes", 10) == len(STD_VGA)
    assert video_modes(report) == [(w, h, 32, 4 * w) for w, h in STD_VGA]


def linked(built: dict, name: str) -> tuple[str, int]:
    """The kernel file's type and lowest load address, read with pyelftools."""
    with (built["dir"] / "test" / name / "kernel" / "kernel.elf").open("rb") as f:
        elf = ELFFile(f)
        return elf["e_type"], min(s["p_vaddr"] for s in elf.iter_segments() if s["p_type"] == "PT_LOAD")


# ------------------------------------------------------------------------------------------ boots


@pytest.mark.parametrize("cpu, smp", [("qemu64", 1), ("max", 4)])
def test_pie_linked_by_gnu_ld(built: dict, cpu: str, smp: int) -> None:
    report, plan = boot(built, "limine-pie", cpu=cpu, smp=smp)
    assert linked(built, "limine-pie") == ("ET_DYN", 0) and plan.handover.protocol == "limine"  # PROTOCOL=auto
    # The 4-level layout, the kernel asking for 4..5-level and preferring 5: LA57 decides at boot.
    limine = plan.handover.limine
    assert plan.tables.levels == 4 and limine is not None and limine.la57_at_boot and not limine.la57_required
    check_against_plan(report, plan, smp=smp, cpu=cpu)
    assert int(report.fact("paging_mode", "levels")) == (5 if cpu == "max" else 4)
    assert ("the kernel gets 5-level paging" in report.serial) == (cpu == "max")
    check_modules(report, plan)
    assert report.fact("executable_cmdline", "cmdline") == plan.options.cmdline
    assert report.fact("executable_file", "string") == plan.options.cmdline
    # The stack it asked for (256 KiB), above the protocol's 64 KiB minimum.
    assert report.number("stack_size", "asked", 10) == 256 << 10 == plan.handover.stack_size
    # Base revision 2: the tables through the HHDM (the spec's table of revisions).
    assert "(hhdm)" in report.checks["rsdp"][1] and "(hhdm)" in report.checks["efi_system_table"][1]
    # The firmware's mode (1280x800) and every mode of the std VGA; OVMF has no EDID.
    check_display(report, (1280, 800))
    assert report.fact("framebuffer", "edid") == "none"


def test_a_framebuffer_in_ram_is_framebuffer_memory(built: dict) -> None:
    """ramfb: OVMF's framebuffer is in RAM, in pages its map reserves. The memory map gives those
    pages as FRAMEBUFFER and nothing else (as Limine does: a framebuffer in memory the firmware gave
    boot services would be usable otherwise); the modes are ramfb's."""
    report, _ = boot(built, "limine-pie", cpu="max", smp=1, extra=["-vga", "none", "-device", "ramfb"])
    at = report.number("framebuffer", "at") - report.number("hhdm", "offset")
    framebuffer = [(base, length) for base, length, kind in report.memmap if kind == "framebuffer"]
    assert len(framebuffer) == 1 and framebuffer[0][0] == at, report.memmap
    end = at + framebuffer[0][1]
    assert not [e for e in report.memmap if e[2] != "framebuffer" and e[0] < end and at < e[0] + e[1]]
    assert report.fact("framebuffer", "fb0") == "800x600/32" and len(video_modes(report)) >= 1


def test_display_mode_list_and_edid(built: dict) -> None:
    """FB_MODE=1024x768 still chooses the mode, the list is the std VGA's whole; a test build's EDID
    (two blocks, on the display's handle as EFI_EDID_DISCOVERED_PROTOCOL) is handed over whole."""
    report, plan = boot(built, "limine-display", cpu="qemu64", smp=1)
    check_against_plan(report, plan, smp=1, cpu="qemu64")
    check_display(report, (1024, 768))
    assert "highboot: test build: an EDID on the display's handle (0x0)" in report.serial
    assert report.number("framebuffer", "edid", 10) == 256
    assert report.fact("framebuffer", "edid_preferred") == "1024x768"


def test_fixed_kernel_with_protocol_forced(built: dict) -> None:
    report, plan = boot(built, "limine-fixed", cpu="qemu64", smp=4)
    assert linked(built, "limine-fixed") == ("ET_EXEC", 0xFFFFFFFF80000000)
    assert plan.handover.protocol == "limine" and not plan.placement.position_independent
    check_against_plan(report, plan, smp=4, cpu="qemu64")
    assert report.number("executable_address", "virtual_base") == 0xFFFFFFFF80000000
    assert report.checks["lower_half"][1] == "empty"  # revision 1: nothing in the lower half
    check_modules(report, plan)


def test_lld_pie_with_kaslr_lands_at_different_addresses(built: dict) -> None:
    assert linked(built, "limine-lld-kaslr") == ("ET_DYN", 0)
    places = []
    for seed in (1, 2):
        report, plan = boot(built, "limine-lld-kaslr", cpu="max", smp=1, extra=["-seed", str(seed)])
        assert plan.kaslr.enabled and plan.kaslr.slides > 1
        slide = check_against_plan(report, plan, smp=1, cpu="max")
        check_modules(report, plan)
        places.append((slide, report.number("hhdm", "offset")))
    assert places[0] != places[1], f"two seeds, one place: {places}"


def test_la57_layout_gives_five_level_paging(built: dict) -> None:
    report, plan = boot(built, "limine-la57", cpu="max", smp=4)
    assert plan.tables.levels == 5 and plan.handover.limine is not None and not plan.handover.limine.la57_at_boot
    check_against_plan(report, plan, smp=4, cpu="max")
    assert int(report.fact("paging_mode", "levels")) == 5
    # The kernel's HHDM check: at or above the 5-level higher half (Limine's default offset there).
    assert report.number("hhdm", "offset") >= 0xFF00000000000000


def test_base_revision_3(built: dict) -> None:
    report, plan = boot(built, "limine-rev3", cpu="qemu64", smp=2)
    assert plan.handover.limine is not None and plan.handover.limine.revision == 3
    check_against_plan(report, plan, smp=2, cpu="qemu64")
    # Revision 3: RSDP, SMBIOS and the EFI system table are physical addresses (the spec).
    for check in ("rsdp", "smbios", "efi_system_table"):
        assert "(physical)" in report.checks[check][1], report.checks[check]
    assert report.number("rsdp", "address") < report.number("hhdm", "offset")


def test_base_revision_5(built: dict) -> None:
    report, plan = boot(built, "limine-rev5", cpu="qemu64", smp=4)
    assert plan.handover.limine is not None and plan.handover.limine.revision == 5
    check_against_plan(report, plan, smp=4, cpu="qemu64")
    # The kernel checks the revision-5 state exactly (on the BSP, and on each AP in the mp line).
    assert "rflags=2" in report.checks["registers"][1], report.checks["registers"]
    assert "cr0=80010011 cr4=20 " in report.checks["control"][1], report.checks["control"]
    assert "ldtr=0 tr=38" in report.checks["ldtr_tr"][1], report.checks["ldtr_tr"]
    assert "svr=1ff tpr=0" in report.checks["local_apic"][1], report.checks["local_apic"]
    assert "outside=0" in report.checks["firmware_tables"][1], report.checks["firmware_tables"]


def test_a_base_revision_newer_than_highboot_keeps(built: dict) -> None:
    """Revision 9 (none defines it yet): booted with revision 6, the tag's last word left as the
    kernel wrote it and its second naming 6, as the protocol tells a loader; the kernel checks both."""
    report, plan = boot(built, "limine-future", cpu="qemu64", smp=1)
    limine = plan.handover.limine
    assert limine is not None and (limine.base_revision, limine.revision, limine.supported) == (9, 6, False)
    assert "INFO base_revision=9 supported=no loaded_revision=6 (from the tag)" in report.serial
    check_against_plan(report, plan, smp=1, cpu="qemu64")


def test_five_level_only_on_a_four_level_layout_boots_on_la57(built: dict) -> None:
    """min_mode 5-level on the 4-level layout: the build plans the 4-level tables, the loader runs them
    under a 5-level root (the kernel's walk through five levels equals the plan), every CPU in 5-level
    paging."""
    report, plan = boot(built, "limine-la57-only", cpu="max", smp=2)
    limine = plan.handover.limine
    assert plan.tables.levels == 4 and limine is not None and limine.la57_at_boot and limine.la57_required
    check_against_plan(report, plan, smp=2, cpu="max")
    assert int(report.fact("paging_mode", "levels")) == 5
    assert report.checks["lower_half"][1] == "empty"


def test_five_level_only_on_a_cpu_without_la57_is_refused_at_boot(built: dict) -> None:
    esp, _ = config(built, "limine-la57-only")
    serial = refused_without_la57(esp, "the kernel asks for 5-level paging only (its paging mode request's min_mode)")
    assert PASS_LINE not in serial


def test_five_levels_on_a_four_level_layout_from_a_five_level_firmware(built: dict) -> None:
    """A firmware in 5-level paging (the firmware_5level test build) and a kernel preferring 5-level
    paging on the 4-level layout: no paging-mode change, the 5-level root straight from the firmware's."""
    report, plan = boot(built, "limine-fw5", cpu="max", smp=2)
    assert plan.tables.levels == 4 and plan.handover.limine is not None and plan.handover.limine.la57_at_boot
    assert "highboot: test build: the firmware now runs 5-level paging" in report.serial
    assert "highboot: the firmware runs" not in report.serial  # no mode change needed
    check_against_plan(report, plan, smp=2, cpu="max")
    assert int(report.fact("paging_mode", "levels")) == 5


@pytest.mark.parametrize("cpu", ["qemu64", "max"])
def test_base_revision_0_keeps_the_identity_map(built: dict, cpu: str) -> None:
    """Revision 0: the lower half identity-maps memory at the entry, in 4-level paging and under the
    5-level root (its lower half moved to the root's first entry, not dropped)."""
    report, plan = boot(built, "limine-rev0", cpu=cpu, smp=2)
    assert plan.handover.limine is not None and plan.handover.limine.revision == 0
    check_against_plan(report, plan, smp=2, cpu=cpu)
    assert "identity map (revision 0)" in report.checks["lower_half"][1], report.checks["lower_half"]


# ------------------------------------------------------------------------------ refused by the build


def refused(tmp_path: Path, kernel: Path, *messages: str, **options: str) -> str:
    proc = scons(tmp_path, KERNEL=str(kernel), **options)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    errors = [line for line in out.splitlines() if "highboot: error:" in line]
    assert errors, out[-3000:]
    error = errors[0]
    assert str(kernel) in error, error
    for message in messages:
        assert message in error, error
    return error


def sample_kernel(tmp_path: Path, **knobs: int) -> Path:
    """The Limine sample kernel (a PIE by GNU ld) with these knobs, built like the matrix builds it."""
    include = tmp_path / "include"
    include.mkdir()
    header = render([], "include/highboot-limine.h.j2", steps.render_context(None, {}))
    (include / "highboot-limine.h").write_text(header)
    out = tmp_path / "limine.elf"
    defines = tuple((k, str(v)) for k, v in knobs.items())
    steps.compile_limine_kernel(steps.limine_kernel_command(
        str(ROOT / steps.LIMINE_KERNEL), str(out), str(include), str(ROOT / steps.LIMINE_LINKER_SCRIPT), "gcc-pie",
        defines), steps.LIMINE_KERNEL)
    return out


def test_a_request_outside_the_markers_is_refused(tmp_path: Path) -> None:
    kernel = kernel_with(tmp_path, words(*START) + request(HHDM) + words(*END) + request(STACK, 0, 1 << 20))
    refused(tmp_path, kernel, "after the end marker")


def test_a_duplicate_request_is_refused(tmp_path: Path) -> None:
    kernel = kernel_with(tmp_path, words(*START) + request(HHDM) + request(HHDM) + words(*END))
    refused(tmp_path, kernel, "a second request with the ID of the one at", "(hhdm)")


def test_a_paging_mode_the_layout_cannot_give_is_refused(tmp_path: Path) -> None:
    kernel = sample_kernel(tmp_path, PAGING_MIN=0, PAGING_MAX=0)
    refused(tmp_path, kernel, "the kernel asks for 4-level to 4-level paging; the layout gives 5-level",
            LAYOUT=str(ROOT / "templates/layouts/linux-x86_64-la57.toml"))


def test_a_stack_larger_than_the_kernel_region_is_refused(tmp_path: Path) -> None:
    kernel = sample_kernel(tmp_path, STACK_SIZE=1 << 30)
    error = refused(tmp_path, kernel, "stack size request: asks for a 1 GiB stack", "leaves room for")
    assert "templates/layouts/linux-x86_64.toml" in error


def test_a_writable_and_executable_limine_kernel_is_refused(tmp_path: Path) -> None:
    data = words(*TAG, 2) + words(*START) + request(HHDM) + words(*END)
    elf = Elf([Seg(KBASE, 0x1000, PF_R | PF_X, b"\x90" * 0x1000),
               Seg(KBASE + 0x1000, 0x2000, PF_R | PF_W | PF_X, data.ljust(0x2000, b"\0"))], entry=KBASE)
    kernel = tmp_path / "wx.elf"
    kernel.write_bytes(elf.build())
    refused(tmp_path, kernel, "writable and executable", "(W^X)", "Limine among them")


def test_an_unknown_protocol_is_refused(tmp_path: Path) -> None:
    proc = scons(tmp_path, KERNEL=str(kernel_with(tmp_path, words(*TAG, 2))), PROTOCOL="bogus")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "highboot: error: PROTOCOL" in out and "'bogus'" in out and "auto, highboot, limine" in out, out[-3000:]
