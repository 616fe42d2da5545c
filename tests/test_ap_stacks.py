"""AP stacks that do not fit (issue 24): when the kernel block cannot be allocated with a stack for
every AP, the loader starts as many APs as it has stacks for (the largest number that fits, down to
none), says so naming the AP stacks and AP_STACK_SIZE, and counts the rest in cpus_not_started as
it counts those beyond MAX_CPUS. The serial log says in one line how many processors were left
alone and why; `scons map` shows the AP stack window and the KASLR slides it takes.

The configuration smp-big-stacks has MAX_CPUS=3 and 120 MiB stacks: in a 256 MiB guest one stack
fits (the largest free range is above 150 MiB) and two cannot (the guest has no 240 MiB range)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_boot import check_boot
from test_matrix import config
from test_smp import check_cpus
from testkit.bootcheck import parse_report

from highboot.booting import qemu
from highboot.inputs.layout import load_layout
from highboot.planning.planner import BootPlan
from highboot.units import format_size

ROOT = Path(__file__).resolve().parents[1]
PAGE = 4096
MIB = 1 << 20
SLIDE = 2 * MIB
BIG_STACKS = 120 * MIB


def warning(wanted: int, started: int) -> str:
    return (f"highboot: warning: no memory for {wanted} AP stack(s) of 120 MiB (AP_STACK_SIZE): starting "
            f"{started} of {wanted} application processor(s); the kernel may start the rest")


def left_alone(total: int, reasons: str) -> str:
    return f"highboot: {total} processor(s) not started (cpus_not_started): {reasons}"


def test_ap_stacks_that_do_not_fit_start_fewer_aps(built: dict) -> None:
    """-smp 4 with MAX_CPUS=3 in 256 MiB: of the two APs MAX_CPUS allows, one has a stack; the
    boot goes on with it, and the kernel is told of the other two (one beyond MAX_CPUS)."""
    esp, plan = config(built, "smp-big-stacks")
    assert plan.ranges.max_cpus == 3 and plan.ranges.ap_stack_size == BIG_STACKS
    result = qemu.boot(esp, cpu="max", memory="256M", smp=4, timeout=300)
    report = check_cpus(result, plan, cpus=2, expect_1g=True, not_started=2)
    assert "highboot: 2 application processor(s) to start (xAPIC)" in result.serial
    assert warning(2, 1) in result.serial, result.serial[-3000:]
    assert left_alone(2, "1 beyond MAX_CPUS, 1 without memory for their stacks (AP_STACK_SIZE)") \
        in result.serial, result.serial[-3000:]
    assert "AllocatePages" not in result.serial and "highboot: error" not in result.serial
    # Warned before the kernel was started, on the console (which OVMF copies to serial).
    assert result.serial.index(warning(2, 1)) < result.serial.index("highboot: starting the kernel")
    # The kernel block holds one AP stack, not two.
    size = report.number("block_size")
    assert plan.block.static_size + BIG_STACKS <= size < plan.block.static_size + 2 * BIG_STACKS


@pytest.mark.big
def test_no_ap_stack_fits(built: dict) -> None:
    """Opt-in: 128 MiB has no room for even one 120 MiB stack: no AP is started, every AP is
    counted, and the kernel runs on the BSP alone."""
    esp, plan = config(built, "smp-big-stacks")
    result = qemu.boot(esp, cpu="qemu64", memory="128M", smp=3, timeout=300)
    check_cpus(result, plan, cpus=1, expect_1g=False, not_started=2)
    assert warning(2, 0) in result.serial, result.serial[-3000:]
    assert left_alone(2, "2 without memory for their stacks (AP_STACK_SIZE)") in result.serial
    assert "parked" not in result.serial


@pytest.mark.big
@pytest.mark.parametrize("memory, smp, started", [("256M", 4, 1), ("128M", 3, 0)])
def test_c_kernel_accepts_fewer_aps(built: dict, memory: str, smp: int, started: int) -> None:
    """Opt-in: the C sample kernel checks and releases what it is handed the same way."""
    esp, plan = config(built, "c-kernel-big-stacks")
    result = qemu.boot(esp, cpu="max", memory=memory, smp=smp, timeout=300)
    assert "highboot C kernel: hello" in result.serial
    check_cpus(result, plan, cpus=1 + started, expect_1g=True, not_started=smp - 1 - started)
    assert warning(2, started) in result.serial, result.serial[-3000:]


@pytest.mark.big
@pytest.mark.parametrize("name, smp, line", [
    ("smp-off", 4, left_alone(3, "3 with SMP=0")),
    ("smp-max4-64k", 6, left_alone(2, "2 beyond MAX_CPUS")),
    ("smp-no-low-page", 3, left_alone(2, "2 without a startup page below 1 MiB")),
])
def test_the_serial_log_says_why_processors_were_left_alone(built: dict, name: str, smp: int, line: str) -> None:
    """Opt-in: the line for each other reason (the default boot above shows two at once)."""
    esp, plan = config(built, name)
    result = qemu.boot(esp, cpu="max", memory="256M", smp=smp, timeout=300)
    check_boot(result, plan, expect_1g=True)
    assert line in result.serial, result.serial[-3000:]
    assert parse_report(result.serial).number("cpus_not_started") == int(line.split()[1])


def map_rows(text: str) -> dict[str, tuple[int, int]]:
    """The address table of `scons map`: what -> (first address, last address)."""
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) == 5 and re.fullmatch(r"[0-9a-f]{16}", cells[0]):
            out[cells[4]] = (int(cells[0], 16), int(cells[2], 16))
    return out


def test_scons_map_shows_the_ap_stack_window(built: dict, tmp_path: Path) -> None:
    """`scons map` with KASLR, MAX_CPUS=64 and 2 MiB AP stacks: the window of 63 stacks and guard
    pages has its own row right after the trampoline alias, its own (dashed) box in the SVG, and
    the KASLR lines say how many of the kernel's slides it takes."""
    kernel = tmp_path / "kernel.elf"
    shutil.copyfile(built["kernel"], kernel)  # a copy: not another build's output
    out = tmp_path / "b"
    run = subprocess.run([sys.executable, "-m", "SCons", "-Q", "map", f"KERNEL={kernel}", f"BUILD_DIR={out}",
                          "KASLR=1", "MAX_CPUS=64", "AP_STACK_SIZE=2M"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    plan = BootPlan.from_json(out / "plan.json")
    # The window, from the plan's trampoline alias and the options given: a guard page below each
    # of the 63 AP stacks, starting on the page after the trampoline alias.
    trampoline = next(r for r in plan.tables.mapped if r.name == "trampoline")
    start = trampoline.va + PAGE
    size = 63 * (2 * MIB + PAGE)
    text = (out / "map.txt").read_text()
    assert text in run.stdout
    rows = {what: span for what, span in map_rows(text).items() if what.startswith("AP stack window")}
    assert list(rows.values()) == [(start, start + size - 1)], text
    assert "63 x (guard page + 2 MiB stack)" in next(iter(rows))
    # Inside the kernel region, and ordered between the trampoline and the next region.
    region = load_layout(ROOT / "templates" / "layouts" / "linux-x86_64.toml").require("kernel")
    assert region.start <= start and start + size <= region.end
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if "AP stack window" in line)
    assert "trampoline" in lines[at - 1]
    # KASLR: without the window, the kernel's last 2 MiB window (the trampoline's) could slide up
    # to the region's end; with it, the window's end must stay inside the region.
    last = trampoline.va // SLIDE * SLIDE
    without = (region.end - (last + SLIDE) - plan.kaslr.slide_min) // SLIDE + 1
    with_window = ((region.end - (start + size)) // SLIDE * SLIDE - plan.kaslr.slide_min) // SLIDE + 1
    assert with_window == plan.kaslr.slides and with_window < without
    assert f"takes {without - with_window} of {without} slides" in text, text
    svg = (out / "map.svg").read_text()
    box = re.search(r'<rect [^>]*stroke-dasharray="4 2"><title>AP stack window: ([^<]*)</title>', svg)
    assert box and box[1].endswith(f": {format_size(size)}"), svg


def test_map_without_ap_stacks_has_no_window(built: dict) -> None:
    """SMP off (or MAX_CPUS=1): no window, no row."""
    from highboot.planning.addrmap import format_map, svg_map

    _, plan = config(built, "smp-off")
    layout = load_layout(ROOT / "templates" / "layouts" / "linux-x86_64.toml")
    assert "AP stack window" not in format_map(layout, plan) + svg_map(layout, plan)
    assert not plan.options.smp and plan.ranges.max_cpus == 1
