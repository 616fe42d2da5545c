"""Addresses and sizes as people write them ("64 TiB", "0xffff_8880_0000_0000") and as we print them."""

from __future__ import annotations

import re

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
TIB = 1 << 40
PIB = 1 << 50

_SUFFIXES = {
    "": 1, "b": 1,
    "k": KIB, "kb": KIB, "kib": KIB,
    "m": MIB, "mb": MIB, "mib": MIB,
    "g": GIB, "gb": GIB, "gib": GIB,
    "t": TIB, "tb": TIB, "tib": TIB,
    "p": PIB, "pb": PIB, "pib": PIB,
}
_SIZE_RE = re.compile(r"^\s*(0x[0-9a-f_]+|[0-9][0-9_]*)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_int(text: str) -> int:
    """Parse a decimal or 0x-hex integer with optional size suffix (K, M, G, T, P; KiB...)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"expected a number such as 4096, 0x1000 or '2 MiB', got {text!r}")
    number, suffix = m.group(1).replace("_", ""), m.group(2).lower()
    if suffix not in _SUFFIXES:
        raise ValueError(f"unknown size unit {m.group(2)!r} in {text!r} (use K, M, G, T, P or KiB, MiB...)")
    try:
        value = int(number, 16) if number.lower().startswith("0x") else int(number, 10)
    except ValueError:  # "0x_" (no digits), or more digits than Python converts
        raise ValueError(f"expected a number such as 4096, 0x1000 or '2 MiB', got {text!r}") from None
    return value * _SUFFIXES[suffix]


def format_size(size: int) -> str:
    """Largest binary unit that divides the size exactly, mm.rst style ("64 TB" -> "64 TiB")."""
    for unit, name in ((PIB, "PiB"), (TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    for unit, name in ((PIB, "PiB"), (TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")):
        if size >= unit:
            return f"{size / unit:.1f} {name}"
    return f"{size} B"


def hex_addr(value: int) -> str:
    """A 64-bit address as 0x + 16 hex digits, the way mm.rst writes them."""
    return f"0x{value & ((1 << 64) - 1):016x}"


def align_down(value: int, align: int) -> int:
    return value & ~(align - 1)


def align_up(value: int, align: int) -> int:
    return (value + align - 1) & ~(align - 1)


def text_bytes(text: str) -> bytes:
    """The bytes a string stands for: UTF-8, and bytes that were not UTF-8 on the command line
    (Python keeps them as surrogate escapes) given back as they were."""
    return text.encode("utf-8", "surrogateescape")
