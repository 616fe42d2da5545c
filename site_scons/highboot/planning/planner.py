"""The boot plan: everything about the kernel's address space that is known before boot, made in
phases, each a small function with a typed result, and the BootPlan made of those results:

    kernel     KernelFile    the file the loader reads and checks
    placement  Placement     phase 1: where the kernel runs at slide 0, the relocations to apply
    ranges     Ranges        phase 2: the stack, the trampoline alias, the AP stack window, and the
                             layout's direct map and EFI region
    rights     Rights        phase 3: each segment's copy into the block, with its rights
    tables     Tables        phase 4: the paging levels and what the planned tables map
    kaslr      KaslrWindows  phase 5: the kernel region's windows and the slides KASLR may take
    block      Block         phase 6: the block's layout (its docstring is the one description)
    options    Options       what the build's options ask of the loader
    faults     Faults        the fault a test build injects

The loader adds the block's base to every table entry, fills the direct map and the trampoline's
two mappings (identity and its higher-half alias at ``ranges.trampoline_va``), and jumps.

The plan crosses plan.json typed, one JSON object per record under the record's name:
``BootPlan.to_json()`` is the file's content (with ``format``, PLAN_FORMAT) and
``BootPlan.from_json(path or dict)`` reads it back, equal to the plan that was written, or refuses
the file with one HighbootError naming it and the field (a dotted path: ``block.tables_offset``).
templates/loader/plan.rs.j2 renders a Rust module per record (``plan::block::TABLES_OFFSET``).

KASLR: the plan is made for slide 0. The kernel region's last-level tables (one per 2 MiB window,
``kaslr.tables``) are planned complete but hung nowhere: the loader picks a slide that is a
multiple of 2 MiB within [``kaslr.slide_min``, ``kaslr.slide_max``] and links each table in at its
window plus the slide, creating the levels above from the boot-time pool. Nothing inside a table
changes.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, NoReturn

from highboot.errors import HighbootError
from highboot.inputs.kernel import PF_W, PF_X, KernelImage
from highboot.inputs.layout import Layout, Region
from highboot.planning.paging import ENTRIES, PAGE, R_NX, RW_NX, RX, Slot, TableBuilder, flags_text, paging_levels
from highboot.protocols import AUTO, protocol_for
from highboot.protocols.handover import Handover
from highboot.units import MIB, align_down, align_up, format_size, hex_addr, text_bytes

#: Where the loader finds the kernel on the ESP (the build copies it there): the one spelling.
KERNEL_ESP_FILE = "highboot/kernel.elf"
#: Where UEFI firmware looks for a removable medium's boot loader (x86-64).
LOADER_ESP_FILE = "EFI/BOOT/BOOTX64.EFI"
DEFAULT_KERNEL_ESP_PATH = "\\" + KERNEL_ESP_FILE.replace("/", "\\")
#: plan.json's format: raised whenever a field is added, removed or changes meaning, so a plan.json
#: of another version is refused rather than misread.
PLAN_FORMAT = 8


@dataclass(frozen=True)
class SegmentLoad:
    """One PT_LOAD segment as the loader copies it: file bytes to a block offset."""

    vaddr: int
    memsz: int
    file_offset: int
    filesz: int
    block_offset: int
    flags: str  # R, RX, RW


@dataclass(frozen=True)
class PlannedRange:
    """A virtual range the plan maps with 4 KiB pages to block offsets (or to the trampoline)."""

    name: str
    va: int
    size: int
    block_offset: int | None  # None: the trampoline page, whose frame is known only at boot
    flags: str
    slides: bool = False  # KASLR moves it with the kernel (all but a stack in its own region)


@dataclass(frozen=True)
class PlannedModule:
    """A module as the loader reads it: its file on the ESP, size and SHA-256, name and command line."""

    name: str
    cmdline: str
    esp_path: str  # \\highboot\\modules\\<index>.bin, as the loader opens it (MODULE_ESP_DIR)
    size: int
    digest: str  # fs-verity digest (highboot.fsverity), hex
    source: str  # the file it was built from


@dataclass(frozen=True)
class KernelFile:
    """The kernel file: where it was built, where the loader reads it on the ESP, and what the loader
    checks it against."""

    path: str
    esp_path: str
    size: int
    digest: str  # fs-verity digest (highboot.fsverity), hex


@dataclass(frozen=True)
class Placement:
    """Phase 1, place the kernel: where it runs at slide 0 (an ET_EXEC at its link address, a PIE
    moved by the build), and the relocations the loader applies as it copies it."""

    position_independent: bool
    link_va: int  # where the file's image starts (its lowest page); image_va - link_va is load_bias
    load_bias: int  # added by the build to every address of a PIE (two's complement)
    image_va: int
    image_size: int
    entry: int
    relocations: tuple[tuple[int, int], ...]  # (block offset, value at slide 0): the loader adds the slide
    absolute_relocations: tuple[tuple[int, int], ...]  # (block offset, value): as is
    relro: tuple[int, int] | None  # (va, size) of PT_GNU_RELRO, placed
    eh_frame_hdr: tuple[int, int] | None  # (va, size) of PT_GNU_EH_FRAME, placed
    tls: tuple[int, int, int, int] | None  # PT_TLS (va, filesz, memsz, align), placed

    @property
    def image_end(self) -> int:
        return self.image_va + self.image_size


@dataclass(frozen=True)
class Ranges:
    """Phase 2, the address space around the image: the boot stack with its guard page (after the
    image, or at the start of a stack region of its own), the trampoline alias one unmapped page
    above the stack, the window of AP stacks after it; and the layout's regions the loader maps at
    boot, the direct map and the EFI runtime region."""

    layout: str  # the layout's name
    stack_region: str | None  # the stack's own region; None: it follows the image
    stack_guard_va: int
    stack_bottom_va: int
    stack_top_va: int
    stack_size: int
    trampoline_va: int
    ap_stacks_va: int  # the AP stack window (at slide 0): [guard page, stack] per AP
    ap_stack_size: int  # each AP's stack (0 with SMP off)
    max_cpus: int  # CPUs the AP stack window has room for, the BSP included (1 with SMP off)
    direct_map_base: int
    direct_map_limit: int
    direct_map_page_size: str  # the layout's page_size: "auto", "1G" or "2M"
    efi_region: tuple[int, int] | None  # (base, size)

    @property
    def ap_window(self) -> int:
        """The AP stack window's size: MAX_CPUS - 1 of (guard page + AP stack)."""
        return (self.max_cpus - 1) * (self.ap_stack_size + PAGE)


@dataclass(frozen=True)
class Rights:
    """Phase 3, each PT_LOAD's copy into the block with its rights (the rights of each image page are
    page_rights')."""

    segments: tuple[SegmentLoad, ...]


@dataclass(frozen=True)
class Tables:
    """Phase 4, the tables: paging levels, and what the planned tables map (the image pages by rights,
    the stack, the trampoline's slot), coalesced; the encoded tables are in the block."""

    levels: int
    shifts: tuple[int, ...]  # each level's shift, root first
    mapped: tuple[PlannedRange, ...]  # in address order


@dataclass(frozen=True)
class KaslrWindows:
    """Phase 5, KASLR: the kernel tree's last-level tables, one per 2 MiB window, numbered after the
    fixed tables, and the slides that keep everything that moves inside the region; the direct map
    moves by a multiple of direct_map_align inside its region."""

    enabled: bool
    slide_align: int  # 0 without KASLR
    slide_min: int
    slide_max: int
    tables: tuple[tuple[int, int], ...]  # (table number, window VA at slide 0)
    direct_map_align: int

    @property
    def slides(self) -> int:
        """How many places KASLR can put the kernel (1 without KASLR)."""
        return (self.slide_max - self.slide_min) // self.slide_align + 1 if self.enabled else 1


@dataclass(frozen=True)
class Block:
    """Phase 6, the block: the one AllocatePages block the kernel owns, offsets from its physical
    base, in this order. This is its one description; the loader (loader/src/block.rs) sizes the
    part after static_size at boot, in this order.

    Planned by the build (the static part):
        image        the kernel's segments at (vaddr - image_va); bss zeroed (at 0)
        stack        stack_size bytes at stack_offset (the guard page below it is virtual only)
        tables       table_count tables at tables_offset, block-relative (table 0 is the root; with
                     KASLR the kernel region's last-level tables after the fixed ones)
        identity     identity_tables_count zeroed tables at identity_tables_offset the loader fills
                     to identity-map the trampoline page
        ------------ static_size: the rest is sized at boot ------------
    Sized by the loader (known only at boot):
        AP stacks    AP_STACK_SIZE each, for the APs this boot starts
        table pool   tables for the direct map, the slid kernel windows' upper levels, the EFI
                     runtime mappings and the AP stacks
        area         the boot info, the GDT, the descriptor registers, the command line, the memory
                     map, the runtime ranges, the virtual-address map handed to
                     SetVirtualAddressMap, the modules' records, their names and command lines, the
                     CPU records and the APs' check-in slots
    """

    stack_offset: int
    tables_offset: int
    table_count: int
    entries: tuple[tuple[int, int], ...]  # (u64 index into the tables area, block-relative entry)
    trampoline_slot: int  # u64 index into the tables area of the PTE mapping ranges.trampoline_va
    identity_tables_offset: int
    identity_tables_count: int
    static_size: int


@dataclass(frozen=True)
class Options:
    """What the build's options ask of the loader."""

    cmdline: str = ""
    smp: bool = True  # start the APs and park them (SMP option)
    keep_kernel_file: bool = True  # hand the kernel its own ELF file (boot info kernel_file_*)
    framebuffer: tuple[int, int] | None = None  # FB_MODE (width, height): the loader picks the nearest mode
    modules: tuple[PlannedModule, ...] = ()
    direct_map_exec: bool = False  # DIRECT_MAP_EXEC: the direct map executable (W^X given up there)


@dataclass(frozen=True)
class Faults:
    """The fault a test build injects (the FAULT option), to test the loader's error paths; "" in
    every normal build."""

    inject: str = ""


@dataclass(frozen=True)
class BootPlan:
    """The plan, made of the phases' records (module docstring); immutable. A record more is a field
    more here: plan.json and from_json follow the fields."""

    kernel: KernelFile
    handover: Handover  # the boot protocol's part (highboot/protocols)
    placement: Placement
    ranges: Ranges
    rights: Rights
    tables: Tables
    kaslr: KaslrWindows
    block: Block
    options: Options
    faults: Faults

    @property
    def stack(self) -> PlannedRange:
        return next(r for r in self.tables.mapped if r.name == STACK_RANGE)

    def to_json(self) -> dict[str, Any]:
        """plan.json's content: a JSON object per record, tuples as arrays, and the format version."""
        return {"format": PLAN_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, source: str | Path | dict[str, Any], *, file: str | Path | None = None) -> BootPlan:
        """The plan a plan.json (a path, or its parsed content) holds; HighbootError naming the file
        and the field when it is not one this highboot writes."""
        if isinstance(source, dict):
            data: Any = source
            name = str(file) if file is not None else "plan.json"
        else:
            name = str(file) if file is not None else str(source)
            try:
                data = json.loads(Path(source).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                reason = getattr(exc, "strerror", None) or exc
                raise HighbootError(f"cannot read the plan: {reason}", file=name) from None
        if not isinstance(data, dict):
            raise HighbootError(f"expected a JSON object, found {_json_kind(data)}", file=name)
        version = data.get("format")
        if version != PLAN_FORMAT:
            found = "no format field" if "format" not in data else f"format {version!r}"
            raise HighbootError(f"{found}: this highboot reads plan format {PLAN_FORMAT} (a plan from another "
                                "version of highboot: rebuild it)", file=name, field="format")
        return _decode(cls, {k: v for k, v in data.items() if k != "format"}, name, "")


#: KASLR moves the kernel by whole last-level tables.
SLIDE_ALIGN = 2 * MIB
#: The command line is copied into the boot info; Linux allows 2 KiB (x86), this is plenty more.
MAX_CMDLINE = 64 * 1024


#: SMP defaults: each AP's stack, and how many CPUs (the BSP included) the stack window holds.
DEFAULT_AP_STACK_SIZE = 16 * 1024
DEFAULT_MAX_CPUS = 256
#: x2APIC IDs are 32-bit; more CPUs than this is not a machine, it is a typo.
MAX_MAX_CPUS = 65536

#: The name of the stack's PlannedRange.
STACK_RANGE = "kernel stack"

#: The direct map moves with KASLR by whole 1 GiB pages.
DIRECT_MAP_ALIGN = 1 << 30


def _json_kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _decode(kind: Any, value: Any, file: str, where: str) -> Any:
    """value (parsed JSON) as the type kind of a BootPlan field, strictly: no missing or unknown
    keys, no bool for an int, lists of the right length for tuples."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (kind,) = [a for a in args if a is not type(None)]
        return _decode(kind, value, file, where)
    expected = {int: "an integer", str: "a string", bool: "a boolean"}
    if kind in expected:
        if type(value) is not kind:
            raise HighbootError(f"expected {expected[kind]}, found {_json_kind(value)}", file=file,
                                field=where)
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise HighbootError(f"expected an array, found {_json_kind(value)}", file=file, field=where)
        if origin is list or args[-1:] == (Ellipsis,):
            return origin(_decode(args[0], v, file, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise HighbootError(f"expected an array of {len(args)}, found {len(value)} items", file=file,
                                field=where)
        return tuple(_decode(a, v, file, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    assert isinstance(kind, type) and hasattr(kind, "__dataclass_fields__"), kind
    if not isinstance(value, dict):
        raise HighbootError(f"expected an object, found {_json_kind(value)}", file=file, field=where or None)
    hints = typing.get_type_hints(kind)
    names = [f.name for f in fields(kind)]
    unknown = sorted(set(value) - set(names))
    if unknown:
        raise HighbootError(f"unknown field (expected one of {', '.join(names)})", file=file,
                            field=f"{where}.{unknown[0]}" if where else unknown[0])
    missing = [n for n in names if n not in value]
    if missing:
        raise HighbootError("missing (a plan from another version of highboot: rebuild it)", file=file,
                            field=f"{where}.{missing[0]}" if where else missing[0])
    return kind(**{n: _decode(hints[n], value[n], file, f"{where}.{n}" if where else n) for n in names})


def check_cmdline(cmdline: str, *, file: str | None = None, field: str = "cmdline") -> None:
    """A kernel command line is bytes up to a NUL: a NUL inside it would cut what a C kernel sees."""
    data = text_bytes(cmdline)
    if b"\0" in data:
        raise HighbootError(f"the command line has a NUL byte at offset {data.index(0)}; a kernel reads it as a "
                            "NUL-terminated string", file=file, field=field)
    size = len(data)
    if size > MAX_CMDLINE:
        raise HighbootError(f"the command line is {size} bytes; at most {MAX_CMDLINE} are allowed", file=file,
                            field=field)


def check_ap_stack_size(size: int, *, file: str | None = None, field: str = "ap_stack_size") -> None:
    """A stack of whole pages, at least one."""
    if size < PAGE or size % PAGE or size > 1 << 30:
        raise HighbootError(f"AP stack size {size:#x}: expected a multiple of 4 KiB from 4 KiB to 1 GiB", file=file,
                            field=field)


def check_max_cpus(cpus: int, *, file: str | None = None, field: str = "max_cpus") -> None:
    if not 1 <= cpus <= MAX_MAX_CPUS:
        raise HighbootError(f"{cpus} CPUs: expected 1 to {MAX_MAX_CPUS} (the BSP included)", file=file, field=field)


@dataclass(frozen=True)
class Mappings:
    """Phase 4's working state, beside its record (Tables): the image pages, the stack and the
    trampoline's slot in one tree; with KASLR, what is in the kernel region in a tree of its own
    (only its last level is kept)."""

    levels: tuple[Any, ...]
    tables: TableBuilder
    kernel_tables: TableBuilder  # `tables` itself without KASLR
    trampoline_slot: Slot
    record: Tables


def plan_boot(kernel: KernelImage, layout: Layout, *, cmdline: str = "",
              kernel_esp_path: str = DEFAULT_KERNEL_ESP_PATH, kaslr: bool = False,
              kernel_base: int | None = None, smp: bool = True, ap_stack_size: int = DEFAULT_AP_STACK_SIZE,
              max_cpus: int = DEFAULT_MAX_CPUS, keep_kernel_file: bool = True, direct_map_exec: bool = False,
              framebuffer: tuple[int, int] | None = None, modules: tuple[PlannedModule, ...] = (),
              fault: str = "", protocol: str = AUTO) -> BootPlan:
    """Plan the load and the page tables of kernel in layout, phase by phase; HighbootError if it
    does not fit.

    A position-independent kernel is first placed in the kernel region: at kernel_base, else where
    it is linked if that is inside the region, else at the lowest place that moves it by a multiple
    of 2 MiB and of its largest p_align (a PIE linked at 0: address 0 at the region's start)."""
    check_cmdline(cmdline)
    check_ap_stack_size(ap_stack_size)
    check_max_cpus(max_cpus)
    speaks = protocol_for(kernel, protocol)
    kernel, placement = place(kernel, layout, kernel_base, kaslr=kaslr)
    handover = speaks.plan_handover(kernel, layout, cmdline=cmdline, kernel_esp_path=kernel_esp_path,
                                    modules=tuple((m.esp_path, m.cmdline, m.size, m.name) for m in modules))
    if handover.entry is not None:
        placement = replace(placement, entry=handover.entry)
    smp = smp and handover.start_aps
    ap_stack_size = max(ap_stack_size, handover.ap_stack_size)
    keep_kernel_file = keep_kernel_file or handover.keep_kernel_file
    ranges = follow_image(kernel, placement, layout, smp=smp, ap_stack_size=ap_stack_size, max_cpus=max_cpus,
                          stack_size=max(layout.stack_size, handover.stack_size),
                          kernel_asks=handover.stack_size > layout.stack_size)
    rights = segment_rights(kernel, placement)
    mappings = map_kernel(kernel, placement, ranges, layout, kaslr=kaslr)
    windows = kaslr_windows(layout, ranges, mappings, kaslr=kaslr)
    block = block_layout(placement, ranges, mappings, windows)
    return BootPlan(
        kernel=KernelFile(kernel.path, kernel_esp_path, kernel.size, kernel.digest), handover=handover,
        placement=placement, ranges=ranges, rights=rights, tables=mappings.record, kaslr=windows, block=block,
        options=Options(cmdline, smp, keep_kernel_file, framebuffer, tuple(modules), direct_map_exec),
        faults=Faults(fault),
    )


def place(kernel: KernelImage, layout: Layout, kernel_base: int | None, *,
          kaslr: bool) -> tuple[KernelImage, Placement]:
    """Phase 1: the kernel placed in the layout's kernel region, checked to fit there (and to be
    movable, with KASLR); the kernel as placed, and the record."""
    region = layout.require("kernel")
    link_va = align_down(kernel.start, PAGE)
    kernel = place_kernel(kernel, region, kernel_base)
    if kaslr:
        _check_kaslr(kernel, layout, region)
    image_va = align_down(kernel.start, PAGE)
    image_end = align_up(kernel.end, PAGE)
    _check_inside(kernel, layout, region, image_va, image_end)
    # The reader checked every target is inside a writable segment, so inside the image.
    relocations = tuple((r.vaddr - image_va, r.value) for r in kernel.relocations if r.relative)
    absolute = tuple((r.vaddr - image_va, r.value) for r in kernel.relocations if not r.relative)
    tls = kernel.tls
    return kernel, Placement(
        position_independent=kernel.position_independent, link_va=link_va, load_bias=kernel.load_bias,
        image_va=image_va, image_size=image_end - image_va, entry=kernel.entry, relocations=relocations,
        absolute_relocations=absolute, relro=kernel.relro, eh_frame_hdr=kernel.eh_frame_hdr,
        tls=(tls.vaddr, tls.filesz, tls.memsz, tls.align) if tls else None)


def follow_image(kernel: KernelImage, placement: Placement, layout: Layout, *, smp: bool, ap_stack_size: int,
                 max_cpus: int, stack_size: int, kernel_asks: bool = False) -> Ranges:
    """Phase 2: the stack, the trampoline alias and the AP stack window, refused when they do not fit
    the region (naming the kernel when it could start lower or asks for the stack (kernel_asks: its
    protocol's stack size request), else the region or the options)."""
    region, image_end = layout.require("kernel"), placement.image_end
    stack_size = align_up(stack_size, PAGE)
    stack_region = layout.role("stack")
    room = (stack_region.size - PAGE if stack_region is not None
            else region.end - (align_down(kernel.start, PAGE) - region.start) - image_end - 3 * PAGE)
    if kernel_asks and stack_size > room:
        where = f"region {stack_region.name!r}" if stack_region is not None else f"kernel region {region.name!r}"
        raise HighbootError(f"asks for a {format_size(stack_size)} stack; {where} of "
                            f"{layout.path} leaves room for {format_size(max(room, 0))} (with its guard page and the "
                            "trampoline page)", file=kernel.path, field="stack size request")
    if stack_region is not None:
        if stack_region.size < stack_size + PAGE:
            raise HighbootError(f"region {stack_region.name!r} ({format_size(stack_region.size)}) is too small for a "
                                f"{format_size(stack_size)} stack and its guard page", file=layout.path,
                                field=f"region {stack_region.name!r}.size")
        guard = stack_region.start
    else:
        guard = image_end
    stack_bottom = guard + PAGE
    stack_top = stack_bottom + stack_size
    # One unmapped page separates the stack top from the trampoline alias.
    trampoline_va = (stack_top if stack_region is None else image_end) + PAGE
    if trampoline_va + PAGE > region.end or (stack_region is None and stack_top > region.end):
        _no_room(kernel, layout, region, trampoline_va + PAGE,
                 f"has no room after the kernel image (ends {hex_addr(image_end)}) for "
                 f"the {format_size(stack_size)} stack, its guard page and the trampoline page; the region ends at "
                 f"{hex_addr(region.end)}")
    # The APs' stacks: after the trampoline alias, a guard page below each, mapped at boot for the
    # APs that check in.
    ap_stacks_va = trampoline_va + PAGE
    ap_window = (max_cpus - 1) * (ap_stack_size + PAGE) if smp else 0
    if ap_window >= region.size:
        raise HighbootError(f"{max_cpus - 1} AP stacks of {format_size(ap_stack_size)} and their guard pages "
                            f"({format_size(ap_window)}) do not fit in the {format_size(region.size)} kernel region "
                            f"{region.name!r} of {layout.path} at all; lower max_cpus or ap_stack_size, or turn SMP "
                            "off", field="ap_stack_size")
    if ap_stacks_va + ap_window > region.end:
        _no_room(kernel, layout, region, ap_stacks_va + ap_window,
                 f"ends at {hex_addr(region.end)}: no room after the trampoline alias for "
                 f"{max_cpus - 1} AP stacks of {format_size(ap_stack_size)} and their guard pages "
                 f"({format_size(ap_window)}); lower max_cpus or ap_stack_size, or turn SMP off")
    dmap = layout.require("direct_map")
    efi = layout.role("efi_runtime")
    return Ranges(layout=layout.name, stack_region=stack_region.name if stack_region else None, stack_guard_va=guard,
                  stack_bottom_va=stack_bottom, stack_top_va=stack_top, stack_size=stack_size,
                  trampoline_va=trampoline_va, ap_stacks_va=ap_stacks_va, ap_stack_size=ap_stack_size if smp else 0,
                  max_cpus=max_cpus if smp else 1, direct_map_base=dmap.start, direct_map_limit=dmap.size,
                  direct_map_page_size=dmap.page_size, efi_region=(efi.start, efi.size) if efi else None)


def segment_rights(kernel: KernelImage, placement: Placement) -> Rights:
    """Phase 3: each PT_LOAD's copy into the block, with its rights."""
    return Rights(tuple(SegmentLoad(seg.vaddr, seg.memsz, seg.offset, seg.filesz, seg.vaddr - placement.image_va,
                                    "RX" if seg.flags & PF_X else "RW" if seg.flags & PF_W else "R")
                        for seg in kernel.segments))


def page_rights(kernel: KernelImage) -> dict[int, int]:
    """Each image page's rights (page VA -> PF_W | PF_X): the union of the segments that share the
    page (W^X was checked when the kernel was read), less W where RELRO covers every writable byte
    of the page."""
    pages: dict[int, int] = {}
    for seg in kernel.segments:
        for page in range(align_down(seg.vaddr, PAGE), align_up(seg.end, PAGE), PAGE):
            pages[page] = pages.get(page, 0) | (seg.flags & (PF_W | PF_X))
    if kernel.relro:
        # Read-only after relocation, which the loader does before these tables go live: every
        # page whose writable bytes all lie in RELRO. A page RELRO shares with .data stays writable.
        start, size = kernel.relro
        writable = [(s.vaddr, s.end) for s in kernel.segments if s.flags & PF_W]
        for page in range(align_down(start, PAGE), align_up(start + size, PAGE), PAGE):
            if all(start <= max(lo, page) and min(hi, page + PAGE) <= start + size
                   for lo, hi in writable if lo < page + PAGE and page < hi):
                pages[page] &= ~PF_W
    return pages


def map_kernel(kernel: KernelImage, placement: Placement, ranges: Ranges, layout: Layout, *,
               kaslr: bool) -> Mappings:
    """Phase 4: the image pages (by page_rights) and the stack mapped to their block offsets (the
    stack right after the image), the trampoline's slot made; the plan's ranges, coalesced by rights."""
    image_va = placement.image_va
    levels = paging_levels(layout.levels)
    tables = TableBuilder(levels)
    # With KASLR the kernel region's pages go in their own tree, of which only the last level is kept.
    ktables = TableBuilder(levels) if kaslr else tables
    stack_offset = placement.image_size
    planned: list[PlannedRange] = []
    # With KASLR everything in the kernel region moves; a stack in its own region stays.
    stack_slides = kaslr and ranges.stack_region is None
    pages = page_rights(kernel)
    for page in sorted(pages):
        f = pages[page]
        perm = RX if f & PF_X else RW_NX if f & PF_W else R_NX
        ktables.map(page, page - image_va, PAGE, perm)
        text = flags_text(perm)
        last = planned[-1] if planned else None
        if last and last.va + last.size == page and last.flags == text:
            planned[-1] = PlannedRange("kernel image", last.va, last.size + PAGE, last.block_offset, text, kaslr)
        else:
            planned.append(PlannedRange("kernel image", page, PAGE, page - image_va, text, kaslr))
    (ktables if ranges.stack_region is None else tables).map(ranges.stack_bottom_va, stack_offset, ranges.stack_size,
                                                              RW_NX)
    planned.append(PlannedRange(STACK_RANGE, ranges.stack_bottom_va, ranges.stack_size, stack_offset, "RW",
                                stack_slides))
    slot = ktables.slot(ranges.trampoline_va)
    planned.append(PlannedRange("trampoline", ranges.trampoline_va, PAGE, None, "RX", kaslr))
    planned.sort(key=lambda r: r.va)
    record = Tables(layout.levels, tuple(lv.shift for lv in levels), tuple(planned))
    return Mappings(levels, tables, ktables, slot, record)


def kaslr_windows(layout: Layout, ranges: Ranges, mappings: Mappings, *, kaslr: bool) -> KaslrWindows:
    """Phase 5: a last-level table per 2 MiB window of what slides, numbered after the fixed tables;
    the slides keep the windows and the AP stack window inside the region."""
    if not kaslr:
        return KaslrWindows(False, 0, 0, 0, (), DIRECT_MAP_ALIGN)
    region = layout.require("kernel")
    fixed = len(mappings.tables.tables)
    windows = sorted({align_down(r.va + off, SLIDE_ALIGN) for r in mappings.record.mapped if r.slides
                      for off in range(0, r.size, PAGE)})
    # Both ends of the region and every window are 2 MiB aligned: so are the slides.
    slide_min = region.start - windows[0]
    slide_max = region.end - (windows[-1] + SLIDE_ALIGN)
    # The AP stack window moves with the kernel and stays inside the region.
    slide_max = min(slide_max, align_down(region.end - (ranges.ap_stacks_va + ranges.ap_window), SLIDE_ALIGN))
    return KaslrWindows(True, SLIDE_ALIGN, slide_min, slide_max, tuple((fixed + i, w) for i, w in enumerate(windows)),
                        DIRECT_MAP_ALIGN)


def block_layout(placement: Placement, ranges: Ranges, mappings: Mappings, windows: KaslrWindows) -> Block:
    """Phase 6: image, stack, tables (the fixed ones encoded block-relative, then the KASLR windows'),
    and the identity tables the loader fills for the trampoline's identity mapping."""
    stack_offset = placement.image_size
    tables_offset = stack_offset + ranges.stack_size
    entries = mappings.tables.encode(lambda n: tables_offset + n * PAGE)
    # Each window's table of the kernel tree, by its number in the plan.
    numbers = {mappings.kernel_tables.slot(window).table: number for number, window in windows.tables}
    for old, new in numbers.items():
        for index, (kind, value, flags) in sorted(mappings.kernel_tables.tables[old].items()):
            assert kind == "page"
            entries.append((new * ENTRIES + index, value | flags))
    slot = mappings.trampoline_slot
    if numbers:
        slot = Slot(numbers[slot.table], slot.index)
    table_count = len(mappings.tables.tables) + len(windows.tables)
    identity_tables_offset = tables_offset + table_count * PAGE
    identity_tables_count = len(mappings.levels) - 1
    return Block(stack_offset, tables_offset, table_count, tuple(entries), slot.word, identity_tables_offset,
                 identity_tables_count, identity_tables_offset + identity_tables_count * PAGE)


def _no_room(kernel: KernelImage, layout: Layout, region: Region, needed_end: int, what: str) -> NoReturn:
    """What follows the image (up to needed_end) does not fit in the kernel region: the kernel's
    fault when it would fit with the image at the region's start (it could start lower), else the
    region's (or the options' that size what follows)."""
    image_va = align_down(kernel.start, PAGE)
    if needed_end - (image_va - region.start) > region.end:  # also when the image starts the region
        raise HighbootError(f"kernel region {region.name!r} {what}", file=layout.path,
                            field=f"region {region.name!r}.size")
    lower = "place it lower (KERNEL_BASE)" if kernel.position_independent else "link it lower"
    raise HighbootError(f"the kernel at {hex_addr(image_va)} leaves too little of region {region.name!r} "
                        f"({layout.path}) after it: the region {what}. Or {lower}: the region starts at "
                        f"{hex_addr(region.start)}", file=kernel.path, field="program headers")


def place_kernel(kernel: KernelImage, region: Region, base: int | None) -> KernelImage:
    """Where the kernel runs (before KASLR): an ET_EXEC at its link address, a PIE where it fits."""
    image_va = align_down(kernel.start, PAGE)
    if not kernel.position_independent:
        if base is not None and base != image_va:
            raise HighbootError(f"kernel_base {hex_addr(base)}: this kernel is ET_EXEC and runs only at its link "
                                f"address {hex_addr(image_va)}; link it position-independent (-pie) to place it "
                                "elsewhere", file=kernel.path, field="kernel_base")
        return kernel
    step = max(SLIDE_ALIGN, kernel.align)
    if base is None:
        if region.contains(image_va, align_up(kernel.end, PAGE)):
            return kernel  # linked inside the region already: it stays where its link map says
        bias = align_up(region.start - image_va, step)
    else:
        bias = base - image_va
        if not 0 <= base < 1 << 64:
            raise HighbootError(f"kernel_base {base:#x} is not a 64-bit address", file=kernel.path,
                                field="kernel_base")
        if base % PAGE or bias % kernel.align:
            raise HighbootError(f"kernel_base {hex_addr(base)} would move the kernel by {bias:#x} bytes; its "
                                f"segments ask for {format_size(max(kernel.align, PAGE))} alignment (p_align): "
                                "choose a base that keeps them aligned", file=kernel.path, field="kernel_base")
    return kernel.placed(bias)


def _check_kaslr(kernel: KernelImage, layout: Layout, region: Region) -> None:
    if not kernel.position_independent:
        raise HighbootError("KASLR needs a position-independent kernel (ET_DYN, linked with -pie or "
                            "-static-pie); this one is ET_EXEC and would run at one address only",
                            file=kernel.path, field="e_type")
    if kernel.align > SLIDE_ALIGN:
        raise HighbootError(f"KASLR moves the kernel in {format_size(SLIDE_ALIGN)} steps; its segments ask for "
                            f"{format_size(kernel.align)} alignment (p_align)", file=kernel.path, field="p_align")
    if region.start % SLIDE_ALIGN or region.size % SLIDE_ALIGN:
        raise HighbootError(f"KASLR moves the kernel in {format_size(SLIDE_ALIGN)} steps: the kernel region must "
                            f"start and end on a {format_size(SLIDE_ALIGN)} boundary", file=layout.path,
                            field=f"region {region.name!r}")


def _check_inside(kernel: KernelImage, layout: Layout, region: Region, image_va: int, image_end: int) -> None:
    for seg in kernel.segments:
        if not region.contains(seg.vaddr, seg.end):
            where = f"({hex_addr(region.start)}..{hex_addr(region.end)} in {layout.path})"
            if kernel.position_independent:
                raise HighbootError(
                    f"placed at {hex_addr(image_va)}, {seg.describe()} is outside the layout's kernel region "
                    f"{region.name!r} {where}: the kernel is too large for the region, kernel_base is wrong, or "
                    f"no place in it keeps the kernel's {format_size(kernel.align)} alignment (p_align)",
                    file=kernel.path, field=f"program header {seg.index}")
            raise HighbootError(
                f"{seg.describe()} is outside the layout's kernel region {region.name!r} {where}; link the kernel "
                "inside it, link it position-independent (-pie) and let highboot place it, or use a layout "
                "(LAYOUT=, or layout in the project file) whose kernel region holds it",
                file=kernel.path, field=f"program header {seg.index}")
    if not region.contains(image_va, image_end):
        raise HighbootError(f"the page-aligned image {hex_addr(image_va)}..{hex_addr(image_end)} does not fit "
                            f"region {region.name!r}", file=kernel.path, field="program headers")
