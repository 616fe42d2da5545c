"""Every build option, described once: its name on the command line (NAME=value), its key in a
project file (the lower-case of the name, or the entry says why not), its kind, default and help,
and the check its value must pass.

From this table come SConstruct's Variables and so `scons -h`, the project-file reader
(highboot.project), the typed build configuration (highboot.config.BuildConfig: one field per
option that shapes the build, named name.lower()), the planner's inputs (highboot.options.config.plan_inputs)
and the options reference docs/options.md (`.venv/bin/python tools/options-reference` writes it; a
test fails when it is out of date). Adding an option is one entry here, plus the code that uses
its value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from SCons.Variables.BoolVariable import FALSE_STRINGS, TRUE_STRINGS

from highboot.errors import HighbootError
from highboot.options.framebuffer import parse_fb_mode
from highboot.planning.planner import (
    DEFAULT_AP_STACK_SIZE,
    DEFAULT_MAX_CPUS,
    check_ap_stack_size,
    check_cmdline,
    check_max_cpus,
)
from highboot.units import format_size, parse_int

#: What SCons's BoolVariable takes as on and off: an on/off option accepts the same words.
TRUE_WORDS, FALSE_WORDS = TRUE_STRINGS, FALSE_STRINGS


class Kind(Enum):
    """How a value is written on the command line and in a project file, and what it becomes."""

    PATH = "a file"  # relative to the project file there
    DIRECTORY = "a directory"
    PATHS = "directories"  # ':'-separated on the command line; a list in a project file
    TEXT = "text"
    BOOL = "on or off"  # 1/0, yes/no, true/false, on/off; true/false in a project file
    SIZE = "a size"  # "16 KiB", 0x4000, 16384
    COUNT = "a whole number"
    ADDRESS = "an address"  # a 64-bit address; a string in a project file (TOML integers are signed)
    CHOICE = "one of a list"
    MODULES = "module files"  # ','-separated on the command line; [[module]] tables in a project file


@dataclass(frozen=True)
class Option:
    name: str  # on the command line: NAME=value
    kind: Kind
    default: str  # as written on the command line
    help: str
    key: str | None = ""  # in a project file: "" means name.lower(); None, the command line only
    why: str = ""  # why the key is not name.lower() (or there is none)
    build: bool = True  # shapes what is built: a field of BuildConfig (name.lower())
    plan: bool = False  # an input of the planner (plan.json follows it)
    choices: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()  # older project-file keys still read
    what: str = "a number"  # a COUNT: what it counts, for a refusal ("a number of CPUs")
    form: str = ""  # the form of its text, for a refusal ('"WIDTHxHEIGHT" (e.g. "1024x768")')
    check: Callable[..., Any] | None = None  # check(value, file=, field=) on the parsed value

    @property
    def project_key(self) -> str | None:
        return None if self.key is None else self.key or self.name.lower()

    @property
    def field(self) -> str:
        """Its BuildConfig field (and the planner's input, for a planner option)."""
        return self.name.lower()


def _check_resolution(value: str, *, file: str | None, field: str) -> None:
    parse_fb_mode(value, file=file, field=field)


OPTIONS: tuple[Option, ...] = (
    # What is booted and how it is laid out.
    Option("KERNEL", Kind.PATH, "", "kernel ELF to boot (empty: build the sample kernel in kernel/)"),
    Option("LAYOUT", Kind.PATH, "templates/layouts/linux-x86_64.toml", "layout file (TOML) of the kernel's "
           "address space"),
    Option("TEMPLATES", Kind.PATHS, "", "project template directories searched before templates/ (':'-separated; "
           "a list in a project file)"),
    Option("MODULES", Kind.MODULES, "", "module files to load and hand over, in order (','-separated; names from "
           "the file names); replaces the project file's [[module]] list", key="module", plan=True,
           why="[[module]] tables (path, name, cmdline), one per module"),
    Option("PROTOCOL", Kind.CHOICE, "auto", "boot protocol the kernel speaks: auto reads it from the kernel (a "
           "Limine base revision tag, requests markers or request IDs make it a Limine kernel; else highboot's boot "
           "info), or highboot, or limine", choices=("auto", "highboot", "limine"), plan=True),
    Option("CMDLINE", Kind.TEXT, "", "kernel command line handed over in the boot info", check=check_cmdline,
           plan=True),
    Option("KERNEL_BASE", Kind.ADDRESS, "", "where a position-independent kernel goes (empty: where it is linked if "
           "that is in the kernel region, else the region's first 2 MiB-aligned address); the sample kernel is "
           "linked there", plan=True),
    Option("KASLR", Kind.BOOL, "0", "place the kernel (PIE) and the direct map at random addresses at boot",
           plan=True),
    Option("DIRECT_MAP_EXEC", Kind.BOOL, "0", "map the direct map (Limine's HHDM) executable, as Limine does, for "
           "kernels that run code through it; its pages are then writable and executable (W^X no longer holds "
           "there)", plan=True),
    Option("KEEP_KERNEL_FILE", Kind.BOOL, "1", "hand the kernel its own ELF file (boot info kernel_file_*)",
           plan=True),
    Option("SMP", Kind.BOOL, "1", "start every enabled processor of the ACPI MADT and park it in the higher half "
           "for the kernel to release (boot info cpus); 0: leave the APs as the firmware left them", plan=True),
    Option("AP_STACK_SIZE", Kind.SIZE, format_size(DEFAULT_AP_STACK_SIZE), "each AP's stack (a guard page is added "
           "below it; MAX_CPUS - 1 of them follow the kernel in its region)", check=check_ap_stack_size, plan=True),
    Option("MAX_CPUS", Kind.COUNT, str(DEFAULT_MAX_CPUS), "CPUs the loader hands over at most, the BSP included "
           "(the AP stack window's size)", check=check_max_cpus, plan=True,
           what="a number of CPUs"),
    Option("FB_MODE", Kind.TEXT, "", "display mode WIDTHxHEIGHT the loader sets: the firmware's largest mode not "
           "larger than it (empty: keep the firmware's mode)", aliases=("framebuffer",), check=_check_resolution,
           form='"WIDTHxHEIGHT" (e.g. "1024x768")',
           plan=True),
    Option("SIGN", Kind.BOOL, "0", "sign BOOTX64.EFI for Secure Boot and write an OVMF VARS file with the key "
           "enrolled"),
    Option("SIGN_KEY", Kind.PATH, ".highboot-keys/db.key", "db private key for SIGN=1 (generated on first use)",
           build=False),
    Option("SIGN_CERT", Kind.PATH, ".highboot-keys/db.crt", "db certificate for SIGN=1 (generated on first use)",
           build=False),
    Option("FAULT", Kind.CHOICE, "none", "test only: build a loader that injects this fault (firmware_5level: "
           "moves the firmware to 5-level paging first; panic: a loader panic before ExitBootServices; lost_ap: a "
           "MADT processor that never checks in; no_low_page: no free page below 1 MiB for the APs; edid: a "
           "two-block EDID on the display's handle, for a Limine kernel)",
           choices=("none", "no_memory", "stale_map_key", "firmware_5level", "panic", "lost_ap", "no_low_page",
                    "edid"),
           key=None, why="a test build's knob, not a project's", plan=True),
    # Where and how it is built.
    Option("PROJECT", Kind.PATH, "highboot.toml", "project file with defaults for these options (used when present)",
           key=None, why="names the project file itself", build=False),
    Option("BUILD_DIR", Kind.DIRECTORY, "build", "where everything built goes", key=None, build=False,
           why="a build directory belongs to a checkout, not to a project (scons -c deletes it whole)"),
    Option("CARGO_DIR", Kind.DIRECTORY, "", "cargo's target directories (core is built there once; empty: "
           "$BUILD_DIR/cargo)", key=None, build=False, why="a cache of this machine's, like BUILD_DIR"),
    Option("RUSTC", Kind.TEXT, "", "rustc to use (empty: found automatically, see docs/design.md)", key=None,
           build=False, why="this machine's toolchain"),
    Option("VERBOSE", Kind.BOOL, "0", "show full commands instead of one line per step", key=None, build=False,
           why="how this run talks, not what it builds"),
    Option("IMAGE_SEED", Kind.TEXT, "", "scons image: seed for the disk and partition GUIDs and volume id (empty: "
           "from the contents)", build=False),
    # Running it.
    Option("QEMU_CPU", Kind.TEXT, "max", "CPU model for scons run / debug", build=False),
    Option("QEMU_MEMORY", Kind.TEXT, "256M", "RAM for scons run / debug", build=False),
    Option("MACHINE", Kind.TEXT, "", "scons run / debug: boot this machine of the project's [test] table (its build, "
           "CPU, memory, CPUs and QEMU arguments) instead of QEMU_CPU and QEMU_MEMORY", key=None, build=False,
           why="picks what one run boots"),
    Option("TEST_SHARD", Kind.TEXT, "", "scons test of a project's kernel: run only the k-th of n slices of the boots "
           "(k/n; the same table always splits the same way) and write junit-k-of-n.xml", key=None, build=False,
           why="a CI job's slice of the boots, not the project's"),
    Option("GRAPHIC", Kind.BOOL, "0", "scons run / debug: open a QEMU window (default: -nographic, serial here)",
           key=None, build=False, why="how this run shows the machine, not what it boots"),
    Option("PYTEST_ARGS", Kind.TEXT, "", "extra arguments for pytest in scons test", key=None, build=False,
           why="for highboot's own test suite"),
)

BY_NAME = {o.name: o for o in OPTIONS}
BY_KEY = {k: o for o in OPTIONS for k in (o.project_key, *o.aliases) if k}
assert len(BY_NAME) == len(OPTIONS) and len({o.project_key for o in OPTIONS if o.project_key}) == len(BY_KEY) - sum(
    len(o.aliases) for o in OPTIONS)


# ------------------------------------------------------------------------------------ project files

def from_project(option: Option, value: Any, base: Path, *, file: str, key: str) -> str | tuple[str, ...]:
    """A project file's TOML value as the option's command-line text (paths made absolute against the
    project file's directory; PATHS as a tuple, since a path may hold the ':' that separates them)."""
    kind = option.kind
    if kind is Kind.BOOL:
        if not isinstance(value, bool):
            raise HighbootError(f"expected true or false, got {value!r}", file=file, field=key)
        return "1" if value else "0"
    if kind is Kind.PATHS:
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in items):
            raise HighbootError(f"expected a directory or a list of directories, got {value!r}", file=file, field=key)
        if not all(items):
            raise HighbootError("a template directory is empty; expected a directory", file=file, field=key)
        return tuple(str(base / v) for v in items)
    numeric = kind in (Kind.SIZE, Kind.COUNT, Kind.ADDRESS)
    if numeric and isinstance(value, int) and not isinstance(value, bool):
        value = hex(value) if kind is Kind.ADDRESS and value >= 0 else str(value)
    if not isinstance(value, str):
        what = "a whole number or a string" if numeric else f"a string {option.form}".rstrip()
        raise HighbootError(f"expected {what}, got {type(value).__name__} {value!r}", file=file, field=key)
    if kind is Kind.PATH:
        if not value:
            raise HighbootError("the path is empty; expected a file", file=file, field=key)
        return str(base / value)
    return value


# ------------------------------------------------------------------------------------ values

def parse(option: Option, text: str, *, file: str | None = None, field: str | None = None) -> Any:
    """The option's value from its text, checked: bool for an on/off option, int for a size or a count, the
    text otherwise; then the option's own check. HighbootError naming file and field (default: the
    option's name) if it is bad."""
    field = field or option.name
    value = _value(option, text, file=file, field=field)
    if option.check is not None:
        option.check(value, file=file, field=field)
    return value


def _value(option: Option, text: str, *, file: str | None, field: str) -> Any:
    kind = option.kind
    if kind is Kind.BOOL:
        word = text.lower()
        if word not in TRUE_WORDS + FALSE_WORDS:
            raise HighbootError(f"expected 1 or 0 (or yes/no, true/false, on/off), got {text!r}", file=file,
                                field=field)
        return word in TRUE_WORDS
    if kind is Kind.SIZE:
        try:
            return parse_int(text)
        except ValueError as exc:
            raise HighbootError(str(exc), file=file, field=field) from None
    if kind is Kind.COUNT:
        digits = text.strip().replace("_", "")
        if not digits.isascii() or not digits.isdigit():
            raise HighbootError(f"expected {option.what} such as {option.default}, got {text!r}", file=file,
                                field=field)
        return int(digits) if len(digits) < 10 else 1 << 40  # (int() refuses thousands of digits)
    if kind is Kind.ADDRESS and text:
        try:
            address = -1 if text.lstrip().startswith("-") else parse_int(text)
        except ValueError as exc:
            raise HighbootError(str(exc), file=file, field=field) from None
        if not 0 <= address < 1 << 64:
            hint = (f'; write a higher-half one as a string, {field} = "0xffffffff80200000" (TOML integers are '
                    "signed 64-bit)" if file else "")
            raise HighbootError(f"{text} is not a 64-bit address{hint}", file=file, field=field)
    if kind is Kind.CHOICE and text not in option.choices:
        raise HighbootError(f"expected one of {', '.join(option.choices)}, got {text!r}", file=file, field=field)
    return text


# ------------------------------------------------------------------------------------ docs/options.md

def reference() -> str:
    """docs/options.md: every option, its project-file key, kind, default and help."""
    lines = ["# Options", "",
             "<!-- Generated from site_scons/highboot/options/schema.py by tools/options-reference; "
             "a test fails when this file is out of date. -->", "",
             "Give an option on the command line (`scons NAME=value`) or, where it has a key, in the project file "
             "(`highboot.toml` or `PROJECT=file`, `key = value`); the command line wins. `scons -h` lists them too.",
             "", "| option | project file | kind | default | what it does |", "|---|---|---|---|---|"]
    for o in OPTIONS:
        key = f"`{o.project_key}`" if o.project_key else "—"
        if o.kind is Kind.MODULES:
            key = "`[[module]]` tables"
        if o.aliases:
            key += " (also " + ", ".join(f"`{a}`" for a in o.aliases) + ")"
        kind = o.kind.value + (": " + ", ".join(o.choices) if o.choices else "")
        default = f"`{o.default}`" if o.default else "(empty)"
        text = o.help + (f" — {'not in a project file' if o.key is None else 'in a project file'}: {o.why}"
                         if o.why else "")
        lines.append(f"| `{o.name}` | {key} | {kind} | {default} | {_cell(text)} |")
    lines += ["", "In a project file, paths are relative to the file; on/off options are `true` or `false`; sizes and "
              "counts may be TOML integers or strings (`\"16 KiB\"`); an address is a string "
              "(`\"0xffffffff80200000\"`: TOML integers stop at 2^63 - 1).", ""]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return re.sub(r"\s+", " ", text).replace("|", "\\|")

