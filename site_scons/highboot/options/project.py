"""The per-project file (highboot.toml): defaults for the build options; the command line wins.

    kernel = "path/to/kernel.elf"      # a kernel ELF (default: highboot's sample kernel)
    layout = "layouts/my.toml"         # a layout file
    templates = ["templates"]          # template directories searched before highboot's
    cmdline = "console=ttyS0"          # the kernel command line
    kernel_base = "0xffffffff81000000" # where a PIE kernel goes (the sample kernel is linked there)
    kaslr = true                       # place the kernel and the direct map at random (PIE kernels)
    fb_mode = "1024x768"               # display mode: the firmware's nearest not larger (default: as set)
    sign = true                        # sign BOOTX64.EFI for Secure Boot
    keep_kernel_file = false           # do not hand the kernel its own ELF file (default: true)
    smp = false                        # leave the APs to the kernel (default: true, started and parked)
    ap_stack_size = "32 KiB"           # each AP's stack (default: 16 KiB)
    max_cpus = 64                      # CPUs handed over at most, the BSP included (default: 256)

    [[module]]                         # any number of modules, in order (see highboot/inputs/modules.py)
    path = "initrd.img"
    name = "initrd"                    # default: the file's name
    cmdline = "root=/dev/ram0"         # default: ""

The keys, their kinds and checks come from highboot.options (docs/options.md lists them). Relative
paths are relative to the project file.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from highboot.errors import HighbootError
from highboot.inputs.modules import Module, modules_from_project
from highboot.inputs.paths import PROJECT as PROJECT_FILE
from highboot.inputs.paths import read_text
from highboot.options.schema import BY_KEY, BY_NAME, OPTIONS, Kind, from_project, parse


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
        key = BY_NAME[option].project_key if option in BY_NAME else None
        if key and (option in self.options or option == "TEMPLATES" and self.templates):
            return {"file": self.path, "field": key}
        return {"file": None, "field": option}


def read_project(path: str | Path) -> dict[str, str]:
    """The project file's settings as build-option values (KERNEL=..., LAYOUT=...)."""
    return load_project(path).options


def load_project(path: str | Path, *, files: bool = True, field: str | None = None) -> Project:
    """The project file: its build-option values and its modules (whose files are checked unless
    not `files`: scons -c and -h need none). A file that cannot be read is refused naming `field`
    (PROJECT, when the command line named it)."""
    text = read_text(path, PROJECT_FILE, field=field)
    path = Path(path)
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
        option = BY_KEY.get(key)
        if option is None:
            keys = [o.project_key for o in OPTIONS if o.project_key]
            raise HighbootError(f"unknown key {key!r}; expected one of {', '.join(keys)}", file=path, field=key)
        if option.kind is Kind.MODULES:
            modules = modules_from_project(value, path, files=files)
            continue
        text = from_project(option, value, base, file=str(path), key=key)
        if isinstance(text, tuple):  # TEMPLATES: kept as a list (a path may hold the ':' that separates them)
            templates = text
            for d in templates if files else ():
                if not Path(d).is_dir():
                    raise HighbootError(f"template directory {d} not found", file=path, field=key)
            continue
        if option.name in options:
            raise HighbootError(f"{option.name} is set twice (as {option.project_key} and as its older name)",
                                file=path, field=key)
        parse(option, text, file=str(path), field=key)
        options[option.name] = text
    return Project(options, modules, templates, str(path))
