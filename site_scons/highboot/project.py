"""The per-project file (highboot.toml): defaults for the build options; the command line wins.

    kernel = "path/to/kernel.elf"      # a kernel ELF (default: highboot's sample kernel)
    layout = "layouts/my.toml"         # a layout file
    templates = ["templates"]          # template directories searched before highboot's
    cmdline = "console=ttyS0"          # the kernel command line
    kernel_base = "0xffffffff81000000" # where a PIE kernel goes (the sample kernel is linked there)
    kaslr = true                       # place the kernel and the direct map at random (PIE kernels)
    framebuffer = "1024x768"           # display mode: the firmware's nearest not larger (default: as set)
    sign = true                        # sign BOOTX64.EFI for Secure Boot
    keep_kernel_file = false           # do not hand the kernel its own ELF file (default: true)
    smp = false                        # leave the APs to the kernel (default: true, started and parked)
    ap_stack_size = "32 KiB"           # each AP's stack (default: 16 KiB)
    max_cpus = 64                      # CPUs handed over at most, the BSP included (default: 256)

    [[module]]                         # any number of modules, in order (see highboot/modules.py)
    path = "initrd.img"
    name = "initrd"                    # default: the file's name
    cmdline = "root=/dev/ram0"         # default: ""

Relative paths are relative to the project file.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from highboot.errors import HighbootError
from highboot.framebuffer import parse_fb_mode
from highboot.inputs import PROJECT as PROJECT_FILE
from highboot.inputs import read_text
from highboot.modules import Module, modules_from_project
from highboot.plan import DEFAULT_AP_STACK_SIZE, DEFAULT_MAX_CPUS, check_cmdline, parse_smp_options
from highboot.units import parse_int

KEYS = {"kernel": "KERNEL", "layout": "LAYOUT", "templates": "TEMPLATES", "cmdline": "CMDLINE",
        "kernel_base": "KERNEL_BASE", "kaslr": "KASLR", "sign": "SIGN", "keep_kernel_file": "KEEP_KERNEL_FILE",
        "framebuffer": "FB_MODE", "smp": "SMP", "ap_stack_size": "AP_STACK_SIZE", "max_cpus": "MAX_CPUS"}
#: The project file's key for each option it can set.
OPTION_KEYS = {option: key for key, option in KEYS.items()}
BOOL_KEYS = ("kaslr", "sign", "keep_kernel_file", "smp")
#: Keys that take a number (or a string such as "16 KiB" or "0xffffffff80200000").
NUMBER_KEYS = ("ap_stack_size", "max_cpus", "kernel_base")
PATH_KEYS = ("kernel", "layout", "templates")
#: Tables of the project file (not build options): [[module]].
TABLE_KEYS = ("module",)


@dataclass(frozen=True)
class Project:
    options: dict[str, str]  # build-option values (KERNEL=..., LAYOUT=...)
    modules: list[Module] = field(default_factory=list)
    # Template directories (absolute), kept apart from the ':'-separated TEMPLATES option: a
    # project's own path may hold a ':'.
    templates: tuple[str, ...] = ()
    path: str = ""  # the project file

    def field(self, option: str) -> dict[str, str | None]:
        """Where a refusal points for an option's value: this file and its key when the value came
        from here, else (the command line) the option's name."""
        if option in OPTION_KEYS and (option in self.options or option == "TEMPLATES" and self.templates):
            return {"file": self.path, "field": OPTION_KEYS[option]}
        return {"file": None, "field": option}


def _check_address(text: str, path: Path) -> None:
    """kernel_base: a 64-bit address (a TOML integer is signed 64-bit: a higher-half one is a string)."""
    try:
        value = -1 if text.startswith("-") else parse_int(text) if text else 0
    except ValueError as exc:
        raise HighbootError(str(exc), file=path, field="kernel_base") from None
    if not 0 <= value < 1 << 64:
        raise HighbootError(f"{text} is not a 64-bit address; write a higher-half one as a string, "
                            'kernel_base = "0xffffffff80200000" (TOML integers are signed 64-bit)', file=path,
                            field="kernel_base")


def read_project(path: str | Path) -> dict[str, str]:
    """The project file's settings as build-option values (KERNEL=..., LAYOUT=...)."""
    return load_project(path).options


def load_project(path: str | Path, *, files: bool = True) -> Project:
    """The project file: its build-option values and its modules (whose files are checked unless
    not `files`: scons -c and -h need none)."""
    path = Path(path)
    text = read_text(path, PROJECT_FILE)
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise HighbootError(f"not valid TOML: {exc}", file=path) from None
    except ValueError as exc:  # tomllib lets int() refuse a literal of over 4300 digits
        raise HighbootError(f"not valid TOML: {exc}", file=path) from None
    options: dict[str, str] = {}
    modules: list[Module] = []
    templates: tuple[str, ...] = ()
    base = path.resolve().parent
    for key, value in data.items():
        if key == "module":
            modules = modules_from_project(value, path, files=files)
            continue
        if key not in KEYS:
            raise HighbootError(f"unknown key {key!r}; expected one of {', '.join([*KEYS, *TABLE_KEYS])}", file=path,
                                field=key)
        if key == "templates":
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(v, str) for v in items):
                raise HighbootError(f"expected a directory or a list of directories, got {value!r}", file=path,
                                    field=key)
            if not all(items):
                raise HighbootError("a template directory is empty; expected a directory", file=path, field=key)
            templates = tuple(str(base / v) for v in items)
            for d in templates if files else ():
                if not Path(d).is_dir():
                    raise HighbootError(f"template directory {d} not found", file=path, field=key)
            continue
        if key == "framebuffer":
            parse_fb_mode(value, file=str(path), field=key)
        if key in BOOL_KEYS:
            if not isinstance(value, bool):
                raise HighbootError(f"expected true or false, got {value!r}", file=path, field=key)
            options[KEYS[key]] = "1" if value else "0"
            continue
        if key in NUMBER_KEYS and isinstance(value, int) and not isinstance(value, bool):
            value = (str(value) if value < 0 else hex(value)) if key == "kernel_base" else str(value)
        if not isinstance(value, str):
            what = "a whole number or a string" if key in NUMBER_KEYS else "a string"
            raise HighbootError(f"expected {what}, got {type(value).__name__} {value!r}", file=path, field=key)
        if key == "kernel_base":
            _check_address(value, path)
        if key in PATH_KEYS and not value:
            raise HighbootError("the path is empty; expected a file", file=path, field=key)
        options[KEYS[key]] = str(base / value) if key in PATH_KEYS else value
    if "CMDLINE" in options:
        check_cmdline(options["CMDLINE"], file=str(path), field="cmdline")
    if "AP_STACK_SIZE" in options or "MAX_CPUS" in options:
        parse_smp_options(options.get("AP_STACK_SIZE", str(DEFAULT_AP_STACK_SIZE)),
                          options.get("MAX_CPUS", str(DEFAULT_MAX_CPUS)), file=str(path))
    return Project(options, modules, templates, str(path))
