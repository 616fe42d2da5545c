"""FB_MODE / the project's `framebuffer`: the request is checked at build time, carried in the plan,
and at boot the loader switches the firmware's GOP to the largest mode not larger than it. The
loader's choice is run on this machine (loader/src/fbmode.rs) and in real boots, whose kernels
report the framebuffer they were handed.

OVMF's modes under QEMU's std VGA (QemuVideoDxe): 1280x800 (mode 0, the firmware's choice), then
640x480, 800x480, 800x600, 832x624, ... 2560x1600, 30 in all. With an EDID preferred resolution
(`-device VGA,xres=W,yres=H`) that one is mode 0 and current, and there are 31."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hostrust import run_rust
from test_boot import check_boot
from test_matrix import config
from testkit.bootcheck import parse_report

from highboot.booting import qemu
from highboot.errors import HighbootError
from highboot.options.framebuffer import MAX_SIDE, parse_fb_mode
from highboot.options.project import read_project

ROOT = Path(__file__).resolve().parents[1]
EDID = ["-vga", "none", "-device"]  # + "VGA,xres=W,yres=H": a std VGA whose preferred mode is W x H

# ------------------------------------------------------------------------------------ the request


@pytest.mark.parametrize("text, expected", [("", None), ("1024x768", (1024, 768)), ("1x1", (1, 1)),
                                            (f"{MAX_SIDE}x{MAX_SIDE}", (MAX_SIDE, MAX_SIDE))])
def test_fb_mode_accepted(text: str, expected: tuple[int, int] | None) -> None:
    assert parse_fb_mode(text) == expected


@pytest.mark.parametrize("value, message", [
    ("1024*768", "expected WIDTHxHEIGHT in decimal pixels"),
    ("1024X768", "expected WIDTHxHEIGHT"),
    (" 1024x768", "expected WIDTHxHEIGHT"),
    ("1024x768\n", "expected WIDTHxHEIGHT"),
    ("1024x", "expected WIDTHxHEIGHT"),
    ("0x1024", "the width must be 1 to 16384 pixels"),
    ("0x768", "the width must be 1 to 16384 pixels"),  # not hexadecimal 0x768
    ("1024x0", "the height must be 1 to 16384 pixels"),
    (f"{MAX_SIDE + 1}x768", "the width must be 1 to 16384 pixels"),
    ("1024x" + "9" * 5000, "the height must be 1 to 16384 pixels"),
    ("\u0661\u0662x3", "expected WIDTHxHEIGHT"),  # Arabic-Indic digits are not decimal here
    (1024, 'expected a string "WIDTHxHEIGHT"'),
])
def test_fb_mode_refused(value: object, message: str) -> None:
    with pytest.raises(HighbootError) as err:
        parse_fb_mode(value, file="p.toml", field="framebuffer")
    assert message in err.value.message, err.value.format()
    assert err.value.file == "p.toml" and err.value.field == "framebuffer"


@pytest.mark.parametrize("key", ["fb_mode", "framebuffer"])
def test_project_fb_mode_key(tmp_path: Path, key: str) -> None:
    """fb_mode, like FB_MODE; framebuffer, its older name, is still read."""
    project = tmp_path / "highboot.toml"
    project.write_text(f'{key} = "800x600"\n')
    assert read_project(project) == {"FB_MODE": "800x600"}
    project.write_text(f"{key} = [800, 600]\n")
    with pytest.raises(HighbootError) as err:
        read_project(project)
    assert err.value.format() == (f'{project}: {key}: expected a string "WIDTHxHEIGHT" (e.g. "1024x768"), '
                                  "got list [800, 600]")


def test_fb_mode_given_twice_in_a_project_is_refused(tmp_path: Path) -> None:
    project = tmp_path / "highboot.toml"
    project.write_text('fb_mode = "800x600"\nframebuffer = "640x480"\n')
    with pytest.raises(HighbootError) as err:
        read_project(project)
    assert err.value.field == "framebuffer" and "FB_MODE is set twice" in err.value.message


def test_the_plan_carries_the_request(built: dict) -> None:
    assert built["plan"].options.framebuffer is None
    assert "pub const FRAMEBUFFER_REQUEST: Option<(u32, u32)> = None;" in (built["dir"] / "gen" / "plan.rs").read_text()
    _, plan = config(built, "fb-1100x800")
    assert plan.options.framebuffer == (1100, 800)
    rendered = (built["dir"] / "test" / "fb-1100x800" / "gen" / "plan.rs").read_text()
    assert "pub const FRAMEBUFFER_REQUEST: Option<(u32, u32)> = Some((1100, 800));" in rendered


# ------------------------------------------------------------------------ the loader's choice, hosted

# QemuVideoDxe's list as OVMF reports it under -vga std (see the module docstring).
STD_VGA = [(1280, 800), (640, 480), (800, 480), (800, 600), (832, 624), (960, 640), (1024, 600), (1024, 768),
           (1152, 864), (1152, 870), (1280, 720), (1280, 760), (1280, 768), (1280, 960), (1280, 1024), (1360, 768),
           (1366, 768), (1400, 1050), (1440, 900), (1600, 900), (1600, 1200), (1680, 1050), (1920, 1080),
           (1920, 1200), (1920, 1440), (2000, 2000), (2048, 1536), (2048, 2048), (2560, 1440), (2560, 1600)]


def choose(tmp_path: Path, cases: list[tuple[list[tuple[int, int, bool]], int, tuple[int, int]]]) -> list[str]:
    """loader/src/fbmode.rs's choose() compiled for this machine: per case (modes as (width, height,
    linear), numbered from 0; the current mode; the request) the chosen mode number or "none"."""
    body = []
    for modes, current, (w, h) in cases:
        items = ", ".join(f"fbmode::Candidate {{ number: {n}, width: {mw}, height: {mh}, linear: {str(lin).lower()} }}"
                          for n, (mw, mh, lin) in enumerate(modes))
        body.append(f'println!("{{}}", fbmode::choose([{items}], {current}, ({w}, {h}))'
                    '.map_or("none".to_string(), |c| c.number.to_string()));')
    source = ROOT / "loader" / "src" / "fbmode.rs"
    out = run_rust(tmp_path, {}, "\n".join(body), items=f'#[path = "{source}"] mod fbmode;')
    return out.split()


def test_choice_among_ovmfs_modes(tmp_path: Path) -> None:
    std = [(w, h, True) for w, h in STD_VGA]
    # The larger area wins: 2048x2048 (mode 27) over 2560x1600; 960x640 and 1024x600 have the same
    # area, and neither is current: the lower number (5).
    requests = {(800, 600): "3", (1100, 800): "7", (1280, 800): "0", (1300, 780): "12", (9999, 9999): "27",
                (640, 480): "1", (1024, 700): "5", (639, 480): "none", (600, 400): "none", (5000, 479): "none"}
    assert choose(tmp_path, [(std, 0, r) for r in requests]) == list(requests.values())


def test_choice_tie_breaks_and_blt_only(tmp_path: Path) -> None:
    square = [(1024, 768, True), (768, 1024, True), (800, 600, True), (768, 1024, True)]
    cases = [
        (square, 2, (1100, 1100)),  # equal areas, neither current: the lower number
        (square, 1, (1100, 1100)),  # equal areas: the current one
        (square, 3, (1100, 1100)),  # the same size twice: the current one
        (square, 2, (800, 1100)),  # the same size twice, neither current: the lower number
        (square, 0, (1023, 1100)),  # 768x1024 fits where 1024x768 does not
        ([(1024, 768, False), (800, 600, True)], 1, (1024, 768)),  # PixelBltOnly: never chosen
        ([(1024, 768, False)], 0, (1024, 768)),  # ... even when it is the only one and current
        ([], 0, (1024, 768)),  # a GOP that lists no modes
    ]
    assert choose(tmp_path, cases) == ["0", "1", "3", "1", "1", "1", "none", "none"]


# ---------------------------------------------------------------------------------------------- boots

CHOSEN = re.compile(r"highboot: framebuffer (\d+)x(\d+) \(mode (\d+) of (\d+), requested (\d+)x(\d+)(, already set)?\)")
KEPT = re.compile(r"highboot: warning: no framebuffer mode fits the requested (\d+)x(\d+); "
                  r"keeping (\d+)x(\d+) \(mode (\d+) of (\d+)\)")


def handed_over(result: qemu.BootResult) -> tuple[int, int, int, int]:
    """The framebuffer the kernel reports it was handed: width, height, stride, size."""
    facts = parse_report(result.serial)
    width, height = map(int, facts.facts["fb"].split("x"))
    return width, height, facts.number("stride"), facts.number("fb_size")


def fb_boot(esp: Path, plan: dict, extra: list[str] | None = None) -> qemu.BootResult:
    result = qemu.boot(esp, cpu="max", memory="256M", extra=extra)
    check_boot(result, plan, expect_1g=True)  # the framebuffer is in the direct map, as always
    return result


def test_request_between_modes_switches_to_the_nearest_not_larger(built: dict) -> None:
    esp, plan = config(built, "fb-1100x800")
    result = fb_boot(esp, plan)
    chosen = CHOSEN.search(result.serial)
    assert chosen, result.serial[-2000:]
    # 1024x768 is the largest of std VGA's modes inside 1100x800 (1024x600, 960x640, ... are smaller;
    # 1152x864 and 1280x720 are wider): a SetMode away from the firmware's 1280x800.
    assert chosen.group(1, 2, 4, 5, 6, 7) == ("1024", "768", "30", "1100", "800", None), chosen.group(0)
    width, height, stride, size = handed_over(result)
    assert (width, height, stride) == (1024, 768, 1024)
    assert size >= stride * height * 4


def test_request_of_an_exact_mode_takes_it(built: dict) -> None:
    """With an EDID preferred resolution of exactly the request, OVMF adds that mode (and starts in
    it): chosen without a SetMode."""
    esp, plan = config(built, "fb-1100x800")
    result = fb_boot(esp, plan, EDID + ["VGA,xres=1100,yres=800"])
    chosen = CHOSEN.search(result.serial)
    assert chosen, result.serial[-2000:]
    assert chosen.group(1, 2, 4, 5, 6, 7) == ("1100", "800", "31", "1100", "800", ", already set"), chosen.group(0)
    width, height, stride, size = handed_over(result)
    assert (width, height, stride) == (1100, 800, 1100)
    assert size >= stride * height * 4


def test_request_smaller_than_every_mode_keeps_the_firmwares(built: dict) -> None:
    esp, plan = config(built, "fb-600x400")
    result = fb_boot(esp, plan)
    kept = KEPT.search(result.serial)
    assert kept, result.serial[-2000:]
    assert kept.group(1, 2) == ("600", "400")
    assert not CHOSEN.search(result.serial)
    kept_mode = (int(kept.group(3)), int(kept.group(4)))
    assert handed_over(result)[:2] == kept_mode
    # The mode kept is the firmware's own: the one a build without FB_MODE hands over, untouched.
    default = fb_boot(built["esp"], built["plan"])
    assert "highboot: framebuffer" not in default.serial and "highboot: warning" not in default.serial
    assert handed_over(default) == handed_over(result)
    assert kept_mode == (1280, 800)  # OVMF's PcdVideoHorizontalResolution x PcdVideoVerticalResolution
