"""Modules: files the loader reads into kernel-owned memory, verifies and lists in the boot info
(an initrd, a font, a driver blob), in the order the user gave them.

    [[module]]
    path = "initrd.img"         # relative to the project file
    name = "initrd"             # default: the file's name
    cmdline = "root=/dev/ram0"  # default: ""

or ``MODULES=a.img,b.bin`` on the command line (names from the file names). Each is copied to the
ESP as ``highboot/modules/<index>.bin``; its size and fs-verity digest (highboot.fsverity) are baked
into the loader like the kernel's, so a signed loader vouches for every module.
"""

from __future__ import annotations

import os
import sys
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from highboot.errors import HighbootError
from highboot.inputs.fsverity import stream_digest
from highboot.inputs.paths import MODULE, check_file, open_file
from highboot.planning.planner import PlannedModule, check_cmdline
from highboot.units import text_bytes

#: Where module number N goes on the ESP (the build copies it there; the loader reads it there).
MODULE_ESP_DIR = "highboot/modules"
#: A name is copied into the boot info NUL-terminated; kernels print and compare them.
MAX_NAME = 255
#: Each module costs a boot-info record and a file open at boot: a bound on both.
MAX_MODULES = 4096
MODULE_KEYS = ("path", "name", "cmdline")
#: Names and command lines are copied into the boot info (and rendered into the loader): a bound
#: on them all together.
MAX_STRINGS = 1 << 20


@dataclass(frozen=True)
class Module:
    path: str  # the file on the build machine
    name: str
    cmdline: str = ""



def _absolute(path: str) -> str:
    """The path as an absolute one (what SCons is given: it then expands nothing), or as it is when
    check_modules will refuse it (empty, NUL)."""
    return os.path.abspath(path) if path and "\0" not in path else path


def module_esp_file(index: int) -> str:
    return f"{MODULE_ESP_DIR}/{index}.bin"


def check_name(name: str, *, file: str | None, field: str) -> None:
    data = text_bytes(name)
    if not data:
        raise HighbootError("a module name cannot be empty", file=file, field=field)
    if b"\0" in data:
        raise HighbootError(f"the module name {name!r} has a NUL byte; kernels read it as a NUL-terminated string",
                            file=file, field=field)
    if len(data) > MAX_NAME:
        raise HighbootError(f"the module name is {len(data)} bytes; at most {MAX_NAME} are allowed", file=file,
                            field=field)


def check_modules(modules: list[Module], *, file: str | None, field: str, files: bool = True) -> None:
    """Every module a readable regular file (unless not `files`: scons -c and -h need none), names
    valid and unique, command lines valid."""
    if len(modules) > MAX_MODULES:
        raise HighbootError(f"{len(modules)} modules; at most {MAX_MODULES} are allowed", file=file, field=field)
    seen: dict[str, int] = {}
    for i, m in enumerate(modules):
        where = f"{field}[{i}]" if field != "MODULES" else field
        if files:
            check_file(m.path, MODULE, file=file, field=f"{where}.path" if field != "MODULES" else field)
        check_name(m.name, file=file, field=f"{where}.name" if field != "MODULES" else field)
        check_cmdline(m.cmdline, file=file, field=f"{where}.cmdline" if field != "MODULES" else field)
        if m.name in seen:
            how = ("set name = ... on one of them" if field != "MODULES" else
                   "name them apart in a project file's [[module]] tables, name = ...")
            raise HighbootError(f"two modules are named {m.name!r} (numbers {seen[m.name]} and {i}); names must be "
                                f"unique ({how})", file=file,
                                field=f"{where}.name" if field != "MODULES" else field)
        seen[m.name] = i
    strings = sum(len(text_bytes(m.name)) + len(text_bytes(m.cmdline)) + 2 for m in modules)
    if strings > MAX_STRINGS:
        raise HighbootError(f"the modules' names and command lines take {strings} bytes; at most {MAX_STRINGS} are "
                            "allowed in all", file=file, field=field)


def modules_from_option(text: str, *, files: bool = True) -> list[Module]:
    """MODULES=a.img,b.bin: paths, named after their file names, no command lines."""
    paths = [p for p in text.split(",")] if text else []
    if any(not p for p in paths):
        raise HighbootError(f"{text!r} has an empty entry; expected comma-separated module files (a path with a "
                            "comma goes in a project file's [[module]] tables)", field="MODULES")
    modules = [Module(path=_absolute(p), name=os.path.basename(p.rstrip("/")) or p) for p in paths]
    try:
        check_modules(modules, file=None, field="MODULES", files=files)
    except HighbootError as exc:
        if len(paths) > 1 and "not found" in exc.message:
            exc.message += " (MODULES is comma-separated: a path with a comma goes in a project file)"
        raise
    return modules


def modules_from_project(entries: Any, path: Path, *, files: bool = True, field: str = "module") -> list[Module]:
    """The project file's [[module]] tables (or a test machine's: field names them); paths relative
    to the project file."""
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise HighbootError("expected [[module]] tables (path = ..., name = ..., cmdline = ...)", file=path,
                            field=field)
    base = path.resolve().parent
    modules = []
    for i, entry in enumerate(entries):
        for key, value in entry.items():
            if key not in MODULE_KEYS:
                raise HighbootError(f"unknown key {key!r}; expected one of {', '.join(MODULE_KEYS)}", file=path,
                                    field=f"{field}[{i}].{key}")
            if not isinstance(value, str):
                raise HighbootError(f"expected a string, got {type(value).__name__} {value!r}", file=path,
                                    field=f"{field}[{i}].{key}")
        if "path" not in entry:
            raise HighbootError("missing path = \"...\" (the module's file)", file=path, field=f"{field}[{i}].path")
        name = entry.get("name", os.path.basename(entry["path"].rstrip("/")))
        where = entry["path"]
        modules.append(Module(path=_absolute(str(base / where)) if where else where, name=name,
                              cmdline=entry.get("cmdline", "")))
    check_modules(modules, file=str(path), field=field, files=files)
    return modules


def module_from_json(entry: Any) -> Module:
    return Module(path=entry["path"], name=entry["name"], cmdline=entry["cmdline"])


def plan_modules(modules: list[Module]) -> list[PlannedModule]:
    """Each module's size and fs-verity digest, read now (the build's plan step): what the loader
    checks."""
    out = []
    for i, m in enumerate(modules):
        try:
            with open_file(m.path, MODULE, field="module") as f:
                digest, size = stream_digest(f)
        except OSError as exc:
            raise HighbootError(f"cannot read module file: {exc.strerror}", file=m.path, field="module") from None
        out.append(PlannedModule(name=m.name, cmdline=m.cmdline,
                                 esp_path="\\" + module_esp_file(i).replace("/", "\\"), size=size,
                                 digest=digest.hex(), source=m.path))
    return out


def pattern_bytes(seed: int, size: int) -> bytes:
    """A test module's contents: little-endian u64 words, word j = (seed << 40) + j, cut to size.
    The sample kernels check a module against it when its command line says ``pattern=<seed>``;
    every byte depends on its place, so a flipped, lost or moved byte shows."""
    words = array("Q", range(seed << 40, (seed << 40) + (size + 7) // 8))
    if sys.byteorder != "little":
        words.byteswap()
    return words.tobytes()[:size]


def write_pattern(path: str, seed: int, size: int) -> None:
    """Write a test module in pieces (a big one need not fit in memory twice)."""
    chunk_words = 1 << 20
    with open(path, "wb") as f:
        for first in range(0, (size + 7) // 8, chunk_words):
            words = array("Q", range((seed << 40) + first, (seed << 40) + min(first + chunk_words, (size + 7) // 8)))
            if sys.byteorder != "little":
                words.byteswap()
            data = words.tobytes()
            f.write(data[:max(0, size - first * 8)])
