"""x86-64 page tables as data: levels, entry flags, a builder, an encoder and a reference walker.

Levels are described by data (shift), flags are named as in the x86_64 crate. Tables built here are
*block-relative*: every physical address in them is an offset into the one AllocatePages block the
loader gets at boot, which adds the block's base to each entry (see plan.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import IntFlag

ENTRIES = 512
PAGE = 4096
ADDR_MASK = 0x000F_FFFF_FFFF_F000
TABLE_FLAGS_MASK = (1 << 63) | 0xFFF


class PageFlags(IntFlag):
    PRESENT = 1 << 0
    WRITABLE = 1 << 1
    USER_ACCESSIBLE = 1 << 2
    WRITE_THROUGH = 1 << 3
    NO_CACHE = 1 << 4
    ACCESSED = 1 << 5
    DIRTY = 1 << 6
    HUGE_PAGE = 1 << 7
    GLOBAL = 1 << 8
    NO_EXECUTE = 1 << 63


#: Intermediate entries allow everything; the leaf decides (x86 ANDs W and ORs NX over the walk).
TABLE_ENTRY_FLAGS = PageFlags.PRESENT | PageFlags.WRITABLE
RX = PageFlags.PRESENT
R_NX = PageFlags.PRESENT | PageFlags.NO_EXECUTE
RW_NX = PageFlags.PRESENT | PageFlags.WRITABLE | PageFlags.NO_EXECUTE


@dataclass(frozen=True)
class Level:
    name: str
    shift: int

    @property
    def span(self) -> int:
        """Bytes one entry of this level covers."""
        return 1 << self.shift

    def index(self, va: int) -> int:
        return (va >> self.shift) & (ENTRIES - 1)


LEVELS_4 = (Level("PML4", 39), Level("PDPT", 30), Level("PD", 21), Level("PT", 12))
LEVELS_5 = (Level("PML5", 48), *LEVELS_4)


def paging_levels(count: int) -> tuple[Level, ...]:
    if count == 4:
        return LEVELS_4
    if count == 5:
        return LEVELS_5
    raise ValueError(f"paging levels must be 4 or 5, not {count}")


def leaf_level(levels: tuple[Level, ...], page_size: int) -> int:
    """Index into levels of the level whose entries map pages of page_size (4K: last, 2M, 1G)."""
    for i, level in enumerate(levels):
        if level.span == page_size and level.shift <= 30:
            return i
    raise ValueError(f"no x86-64 page size of {page_size:#x} bytes")


def flags_text(flags: int) -> str:
    """Short, stable permission text used in maps and by the kernel's self-walk: R, RW, RX, RWX."""
    text = "R"
    if flags & PageFlags.WRITABLE:
        text += "W"
    if not flags & PageFlags.NO_EXECUTE:
        text += "X"
    return text


@dataclass(frozen=True)
class Slot:
    """One entry of one table: table number (0 is the root) and entry index."""

    table: int
    index: int

    @property
    def word(self) -> int:
        """Position of the entry as a u64 index into the tables area."""
        return self.table * ENTRIES + self.index


class TableBuilder:
    """Builds a tree of page tables; table 0 is the root. Addresses are whatever the caller uses
    (block offsets in the planner); tables refer to each other by table number until encoded."""

    def __init__(self, levels: tuple[Level, ...]) -> None:
        self.levels = levels
        self.tables: list[dict[int, tuple[str, int, int]]] = [{}]

    def _child(self, table: int, index: int) -> int:
        entry = self.tables[table].get(index)
        if entry is None:
            self.tables.append({})
            child = len(self.tables) - 1
            self.tables[table][index] = ("table", child, int(TABLE_ENTRY_FLAGS))
            return child
        kind, value, _ = entry
        if kind != "table":
            raise ValueError(f"entry {index} of table {table} is a large page, not a table")
        return value

    def slot(self, va: int, page_size: int = PAGE) -> Slot:
        """The entry that maps va with pages of page_size, creating the tables above it."""
        table = 0
        leaf = leaf_level(self.levels, page_size)
        for level in self.levels[:leaf]:
            table = self._child(table, level.index(va))
        return Slot(table, self.levels[leaf].index(va))

    def map(self, va: int, pa: int, size: int, flags: int, page_size: int = PAGE) -> None:
        if va % page_size or pa % page_size or size % page_size:
            raise ValueError(f"mapping {va:#x}->{pa:#x} size {size:#x} is not {page_size:#x}-aligned")
        huge = int(PageFlags.HUGE_PAGE) if page_size > PAGE else 0
        for off in range(0, size, page_size):
            s = self.slot(va + off, page_size)
            if s.index in self.tables[s.table]:
                raise ValueError(f"virtual address {va + off:#x} is mapped twice")
            self.tables[s.table][s.index] = ("page", pa + off, int(flags) | huge)

    def encode(self, table_address: Callable[[int], int]) -> list[tuple[int, int]]:
        """Non-zero entries as (u64 index into the tables area, entry value), sorted."""
        words: list[tuple[int, int]] = []
        for number, table in enumerate(self.tables):
            for index in sorted(table):
                kind, value, flags = table[index]
                address = table_address(value) if kind == "table" else value
                words.append((number * ENTRIES + index, (address & ADDR_MASK) | flags))
        return words


# ----------------------------------------------------------------------------- reference walker


@dataclass(frozen=True)
class Translation:
    pa: int
    page_size: int
    flags: int  # effective: WRITABLE only if every level allows it, NO_EXECUTE if any level sets it


def canonical(va: int, va_bits: int) -> int:
    """Sign-extend a va_bits-bit address to 64 bits."""
    if va & (1 << (va_bits - 1)):
        return va | ((1 << 64) - (1 << va_bits))
    return va


def translate(read_u64: Callable[[int], int], root: int, va: int,
              levels: tuple[Level, ...] = LEVELS_4) -> Translation | None:
    """Walk the tables at physical address root as the CPU does; None where va is not mapped."""
    table = root
    writable, no_exec, user = True, False, True
    for depth, level in enumerate(levels):
        entry = read_u64(table + level.index(va) * 8)
        if not entry & PageFlags.PRESENT:
            return None
        writable &= bool(entry & PageFlags.WRITABLE)
        no_exec |= bool(entry & PageFlags.NO_EXECUTE)
        user &= bool(entry & PageFlags.USER_ACCESSIBLE)
        last = depth == len(levels) - 1
        if last or (entry & PageFlags.HUGE_PAGE and level.shift <= 30):
            if not last and level.shift > 30:
                return None
            size = level.span
            flags = PageFlags.PRESENT | (PageFlags.WRITABLE if writable else 0) \
                | (PageFlags.NO_EXECUTE if no_exec else 0) | (PageFlags.USER_ACCESSIBLE if user else 0)
            return Translation((entry & ADDR_MASK & ~(size - 1)) + (va & (size - 1)), size, int(flags))
        table = entry & ADDR_MASK
    return None


@dataclass(frozen=True)
class Mapping:
    va: int
    pa: int
    size: int
    flags: int

    def text(self) -> str:
        return f"{self.va:016x} {self.pa:016x} {self.size:x} {flags_text(self.flags)}"


def walk(read_u64: Callable[[int], int], root: int, levels: tuple[Level, ...] = LEVELS_4) -> Iterator[Mapping]:
    """Every leaf mapping reachable from root, in virtual address order (one Mapping per page)."""
    va_bits = levels[0].shift + 9

    def visit(table: int, depth: int, base: int, writable: bool, no_exec: bool) -> Iterator[Mapping]:
        level = levels[depth]
        for index in range(ENTRIES):
            entry = read_u64(table + index * 8)
            if not entry & PageFlags.PRESENT:
                continue
            va = base | (index << level.shift)
            w = writable and bool(entry & PageFlags.WRITABLE)
            nx = no_exec or bool(entry & PageFlags.NO_EXECUTE)
            last = depth == len(levels) - 1
            if last or (entry & PageFlags.HUGE_PAGE and level.shift <= 30):
                flags = PageFlags.PRESENT | (PageFlags.WRITABLE if w else 0) | (PageFlags.NO_EXECUTE if nx else 0)
                yield Mapping(canonical(va, va_bits), entry & ADDR_MASK & ~(level.span - 1), level.span, int(flags))
            else:
                yield from visit(entry & ADDR_MASK, depth + 1, va, w, nx)

    yield from visit(root, 0, 0, True, False)


def coalesce(mappings: Iterable[Mapping]) -> list[Mapping]:
    """Merge neighbours that continue each other in both va and pa with equal flags."""
    out: list[Mapping] = []
    for m in sorted(mappings, key=lambda m: m.va):
        if out:
            last = out[-1]
            if last.va + last.size == m.va and last.pa + last.size == m.pa and last.flags == m.flags:
                out[-1] = Mapping(last.va, last.pa, last.size + m.size, last.flags)
                continue
        out.append(m)
    return out


class SparseMemory:
    """Physical memory for the walker: tables area words placed at a base address."""

    def __init__(self) -> None:
        self.words: dict[int, int] = {}

    def place(self, base: int, entries: Iterable[tuple[int, int]], add: int = 0) -> None:
        for word, value in entries:
            if value & PageFlags.PRESENT:
                value = (value & ~ADDR_MASK) | (((value & ADDR_MASK) + add) & ADDR_MASK)
            self.words[base + word * 8] = value

    def write(self, address: int, value: int) -> None:
        self.words[address] = value

    def read_u64(self, address: int) -> int:
        return self.words.get(address, 0)


def minimum_tables(ranges: Iterable[tuple[int, int, int]], levels: tuple[Level, ...] = LEVELS_4) -> dict[str, int]:
    """Fewest tables per level that can map the given (va, size, page_size) ranges.

    Computed from the ranges' extents, not by building tables: a table at a level is needed for
    every distinct window (of the span of one entry of the level above) that some range mapped
    with pages no larger than that level's entries touches. The root always exists.
    """
    need: dict[str, int] = {levels[0].name: 1}
    ranges = list(ranges)
    for depth in range(1, len(levels)):
        window = levels[depth - 1].span
        touched: list[tuple[int, int]] = []
        for va, size, page_size in ranges:
            if page_size > levels[depth].span:
                continue
            touched.append((va // window, (va + size - 1) // window))
        touched.sort()
        count, last = 0, -1
        for lo, hi in touched:
            lo = max(lo, last + 1)
            if hi >= lo:
                count += hi - lo + 1
                last = hi
        need[levels[depth].name] = count
    return need
