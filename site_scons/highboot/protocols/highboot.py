"""highboot's own protocol: the kernel gets `struct highboot_boot_info` in RDI (bootinfo.py), runs
on a three-entry GDT, finds the runtime services mapped in the layout's EFI region and every
processor parked on its goto_address."""

from __future__ import annotations

from highboot.protocols import bootinfo
from highboot.protocols.base import Gdt, MemoryKind, Protocol

_MEM = {c.name: c.value for c in bootinfo.MEMORY_TYPES}

HIGHBOOT = Protocol(
    name="highboot",
    title="highboot boot info",
    # null, 64-bit code (0x08), data (0x10).
    gdt=Gdt(entries=(0, 0x00AF9A000000FFFF, 0x00CF92000000FFFF), code_selector=0x08, data_selector=0x10),
    memory_types={kind: _MEM[kind.name] for kind in MemoryKind},
    boot_info_in_rdi=True,
    set_virtual_address_map=True,
    fs_gs_data=False,
    kernel_sources=(("include/highboot.h.j2", "include/highboot.h"), ("common/bootinfo.rs.j2", "gen/bootinfo.rs")),
)
