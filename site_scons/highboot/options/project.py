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

    [test]                             # scons test tests this kernel (see highboot/testing/table.py)
    [[test.machine]]
    name = "small"

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
from highboot.testing.table import TestTable, read_table


@dataclass(frozen=True)
class Project:
    options: dict[str, str]  # build-option values (KERNEL=..., LAYOUT=...)
    modules: list[Module] = field(default_factory=list)
    # Template directories (absolute), kept apart from the ':'-separated TEMPLATES option: a
    # project's own path may hold a ':'.
    templates: tuple[str, ...] = ()
    path: str = ""  # the project file
    test: TestTable | None = None  # its [test] table: `scons test` tests its kernel

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
    test = data.pop("test", None)
    options, modules, templates = read_options(data, path, files=files)
    table = None
    if test is not None:
        def read_build(values: dict[str, Any], where: str) -> tuple[dict[str, str], tuple[Module, ...] | None,
                                                                     tuple[str, ...] | None]:
            o, m, t = read_options(values, path, files=files, where=f"{where}.")
            return o, (tuple(m) if "module" in values else None), (t if "templates" in values else None)

        table = read_table(test, file=str(path), read_build=read_build, build_keys=MACHINE_BUILD_KEYS)
    return Project(options, modules, templates, str(path), table)


#: The keys a [[test.machine]] may set to change what is built for it: every build option of a
#: project file.
MACHINE_BUILD_KEYS = tuple(k for k, o in BY_KEY.items() if o.build or o.name == "SIGN")


def read_options(data: dict[str, Any], path: Path, *, files: bool = True,
                 where: str = "") -> tuple[dict[str, str], list[Module], tuple[str, ...]]:
    """Build-option values (NAME -> text), modules and template directories from a project file's
    table (the file's top level, or a test machine's: `where` prefixes the field refusals name)."""
    options: dict[str, str] = {}
    modules: list[Module] = []
    templates: tuple[str, ...] = ()
    base = path.resolve().parent
    for key, value in data.items():
        option = BY_KEY.get(key)
        if option is None:
            keys = [o.project_key for o in OPTIONS if o.project_key] + ["test"]
            raise HighbootError(f"unknown key {key!r}; expected one of {', '.join(keys)}", file=path,
                                field=where + key)
        if option.kind is Kind.MODULES:
            modules = modules_from_project(value, path, files=files, field=where + key)
            continue
        text = from_project(option, value, base, file=str(path), key=where + key)
        if isinstance(text, tuple):  # TEMPLATES: kept as a list (a path may hold the ':' that separates them)
            templates = text
            for d in templates if files else ():
                if not Path(d).is_dir():
                    raise HighbootError(f"template directory {d} not found", file=path, field=where + key)
            continue
        if option.name in options:
            raise HighbootError(f"{option.name} is set twice (as {option.project_key} and as its older name)",
                                file=path, field=where + key)
        parse(option, text, file=str(path), field=where + key)
        options[option.name] = text
    return options, modules, templates
