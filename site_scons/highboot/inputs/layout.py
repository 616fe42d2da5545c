"""Layouts: a TOML file of named virtual-address regions, validated before anything is built.

A layout describes the address space a kernel wakes up in: which region holds the direct map of
physical memory, the kernel image, the EFI runtime services, the kernel stack..., and how many
paging levels it uses. See templates/layouts/*.toml for the format, with comments.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from highboot.errors import HighbootError
from highboot.inputs.paths import LAYOUT as LAYOUT_FILE
from highboot.inputs.paths import read_text
from highboot.units import GIB, KIB, MIB, format_size, hex_addr, parse_int

ROLES = {
    "direct_map": "all physical memory, mapped at one offset (RW, NX)",
    "kernel": "the kernel image, its stack and the trampoline alias",
    "efi_runtime": "EFI runtime services (SetVirtualAddressMap)",
    "stack": "the kernel's boot stack (with a guard page below)",
    "boot_info": "boot information handed to the kernel",
    "framebuffer": "the GOP framebuffer",
    "reserved": "kept free for the kernel's own use; highboot maps nothing here",
}
PAGE_SIZES = {"4K": 4 * KIB, "2M": 2 * MIB, "1G": GIB}
DIRECT_MAP_PAGE_SIZES = ("auto", "2M", "1G")
TOP_KEYS = {"name", "description", "levels", "stack_size", "region"}
REGION_KEYS = {"name", "role", "start", "size", "end", "page_size", "description"}
UNIQUE_ROLES = ("direct_map", "kernel", "efi_runtime", "stack", "boot_info", "framebuffer")


@dataclass(frozen=True)
class Region:
    name: str
    role: str
    start: int
    size: int
    page_size: str
    description: str

    @property
    def end(self) -> int:
        return self.start + self.size

    def contains(self, start: int, end: int) -> bool:
        return self.start <= start and end <= self.end


@dataclass(frozen=True)
class Layout:
    path: str
    name: str
    description: str
    levels: int
    stack_size: int
    regions: tuple[Region, ...]

    @property
    def va_bits(self) -> int:
        return 57 if self.levels == 5 else 48

    def role(self, role: str) -> Region | None:
        for region in self.regions:
            if region.role == role:
                return region
        return None

    def require(self, role: str) -> Region:
        region = self.role(role)
        if region is None:
            raise HighbootError(f"the layout has no region with role = \"{role}\"", file=self.path, field="region")
        return region

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path, "name": self.name, "description": self.description, "levels": self.levels,
            "stack_size": self.stack_size,
            "regions": [r.__dict__ for r in self.regions],
        }


def is_canonical(addr: int, va_bits: int) -> bool:
    """True when addr is a canonical address for va_bits-bit virtual addresses."""
    if not 0 <= addr < (1 << 64):
        return False
    top = addr >> (va_bits - 1)
    return top == 0 or top == (1 << (65 - va_bits)) - 1


def load_layout(path: str | Path) -> Layout:
    path = Path(path)
    text = read_text(path, LAYOUT_FILE)
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as exc:  # ValueError: an integer literal too long
        raise HighbootError(f"not valid TOML: {exc}", file=path) from None
    return parse_layout(data, str(path))


def _number(value: Any, file: str, field: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise HighbootError(f"expected {what} (an integer or a string like \"0x1000\" or \"2 MiB\"), "
                            f"got {type(value).__name__} {value!r}", file=file, field=field)
    if isinstance(value, str):
        try:
            value = parse_int(value)
        except ValueError as exc:
            raise HighbootError(str(exc), file=file, field=field) from None
    if value < 0:
        raise HighbootError(f"expected {what}, got a negative number {value}", file=file, field=field)
    return value


def _string(value: Any, file: str, field: str) -> str:
    if not isinstance(value, str):
        raise HighbootError(f"expected a string, got {type(value).__name__} {value!r}", file=file, field=field)
    return value


def parse_layout(data: dict[str, Any], file: str) -> Layout:
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise HighbootError(f"unknown key {unknown[0]!r}; expected one of {', '.join(sorted(TOP_KEYS))}",
                            file=file, field=unknown[0])
    name = _string(data.get("name", Path(file).stem), file, "name")
    description = _string(data.get("description", ""), file, "description")
    levels = data.get("levels", 4)
    if type(levels) is not int or levels not in (4, 5):
        raise HighbootError(f"expected 4 or 5 paging levels, got {levels!r}", file=file, field="levels")
    stack_size = _number(data.get("stack_size", 64 * KIB), file, "stack_size", "a stack size")
    if stack_size == 0 or stack_size % (4 * KIB) or stack_size > 64 * MIB:
        raise HighbootError(f"expected a multiple of 4 KiB between 4 KiB and 64 MiB, got {stack_size:#x}",
                            file=file, field="stack_size")
    raw_regions = data.get("region")
    if not isinstance(raw_regions, list) or not raw_regions:
        raise HighbootError("expected at least one [[region]] table", file=file, field="region")

    va_bits = 57 if levels == 5 else 48
    regions: list[Region] = []
    for i, raw in enumerate(raw_regions):
        regions.append(_parse_region(raw, i, file, va_bits))

    names: dict[str, Region] = {}
    for r in regions:
        if r.name in names:
            raise HighbootError(f"two regions are named {r.name!r}", file=file, field=f"region {r.name!r}")
        names[r.name] = r
    for role in UNIQUE_ROLES:
        found = [r for r in regions if r.role == role]
        if len(found) > 1:
            raise HighbootError(f"regions {found[0].name!r} and {found[1].name!r} both have role {role!r}; "
                                "at most one is allowed", file=file, field=f"region {found[1].name!r}.role")
    for role in ("direct_map", "kernel"):
        if not any(r.role == role for r in regions):
            raise HighbootError(f"no region has role = \"{role}\"; a layout needs one", file=file, field="region")
    ordered = sorted(regions, key=lambda r: r.start)
    for a, b in pairwise(ordered):
        if b.start < a.end:
            raise HighbootError(f"overlaps region {a.name!r} ({hex_addr(a.start)}..{hex_addr(a.end)})",
                                file=file, field=f"region {b.name!r}")
    # Everything highboot maps is in the higher half: the kernel starts with an empty lower half.
    for r in regions:
        if r.role != "reserved" and r.start < (1 << 63):
            raise HighbootError(f"a {r.role} region must be in the higher half (the lower half is left empty "
                                "at kernel entry)", file=file, field=f"region {r.name!r}.start")
    return Layout(file, name, description, levels, stack_size, tuple(regions))


def _parse_region(raw: Any, i: int, file: str, va_bits: int) -> Region:
    label = f"region[{i}]"
    if not isinstance(raw, dict):
        raise HighbootError("expected a table with name, role, start and size", file=file, field=label)
    if "name" in raw:
        label = f"region {_string(raw['name'], file, label + '.name')!r}"
    unknown = sorted(set(raw) - REGION_KEYS)
    if unknown:
        raise HighbootError(f"unknown key {unknown[0]!r}; expected one of {', '.join(sorted(REGION_KEYS))}",
                            file=file, field=f"{label}.{unknown[0]}")
    for key in ("name", "role", "start"):
        if key not in raw:
            raise HighbootError(f"missing key {key!r}", file=file, field=label)
    name = _string(raw["name"], file, f"{label}.name")
    role = _string(raw["role"], file, f"{label}.role")
    if role not in ROLES:
        raise HighbootError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}", file=file,
                            field=f"{label}.role")
    start = _number(raw["start"], file, f"{label}.start", "an address")
    if ("size" in raw) == ("end" in raw):
        raise HighbootError("give exactly one of 'size' or 'end'", file=file, field=label)
    if "size" in raw:
        size = _number(raw["size"], file, f"{label}.size", "a size")
    else:
        end = _number(raw["end"], file, f"{label}.end", "an address")
        if end <= start:
            raise HighbootError(f"end {hex_addr(end)} is not above start {hex_addr(start)}", file=file,
                                field=f"{label}.end")
        size = end - start
    if size == 0:
        raise HighbootError("size is zero", file=file, field=f"{label}.size")
    default_ps = "auto" if role == "direct_map" else "4K"
    page_size = _string(raw.get("page_size", default_ps), file, f"{label}.page_size")
    allowed = DIRECT_MAP_PAGE_SIZES if role == "direct_map" else tuple(PAGE_SIZES)
    if page_size not in allowed:
        raise HighbootError(f"expected one of {', '.join(allowed)}, got {page_size!r}", file=file,
                            field=f"{label}.page_size")
    align = GIB if role == "direct_map" else PAGE_SIZES[page_size]
    if start % align:
        why = "the direct map must be 1 GiB aligned (1 GiB and 2 MiB pages)" if role == "direct_map" \
            else f"page_size {page_size} needs {format_size(align)} alignment"
        raise HighbootError(f"start {hex_addr(start)} is misaligned: {why}", file=file, field=f"{label}.start")
    if size % align:
        raise HighbootError(f"size {size:#x} is not a multiple of {format_size(align)}", file=file,
                            field=f"{label}.size")
    end = start + size
    if end > (1 << 64):
        raise HighbootError(f"region runs past the top of the 64-bit address space ({hex_addr(start)} + "
                            f"{format_size(size)})", file=file, field=f"{label}.size")
    if not is_canonical(start, va_bits):
        raise HighbootError(f"start {hex_addr(start)} is not a canonical {va_bits}-bit address", file=file,
                            field=f"{label}.start")
    if not is_canonical(end - 1, va_bits):
        raise HighbootError(f"end {hex_addr(end)} is not canonical for {va_bits}-bit addresses", file=file,
                            field=f"{label}.size")
    if (start >> 63) != ((end - 1) >> 63):
        raise HighbootError("region crosses the canonical hole", file=file, field=f"{label}.size")
    description = _string(raw.get("description", ROLES[role]), file, f"{label}.description")
    return Region(name, role, start, size, page_size, description)
