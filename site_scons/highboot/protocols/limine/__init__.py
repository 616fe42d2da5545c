"""The Limine boot protocol: kernels written for Limine boot under highboot unchanged.

spec describes the protocol once (IDs, structures, memory types, base revisions); scan finds a
kernel's requests at build time. LIMINE is the Protocol a build of such a kernel speaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from highboot.inputs.kernel import KernelImage
from highboot.protocols.base import Gdt, MemoryKind, Protocol
from highboot.protocols.limine import spec
from highboot.protocols.limine.handover import BOOT, IF_PRESENT, plan_handover
from highboot.protocols.limine.scan import carries_marks, scan

if TYPE_CHECKING:
    from highboot.inputs.layout import Layout
    from highboot.protocols.handover import Handover

_T = spec.MEMMAP_TYPES


class LimineProtocol(Protocol):
    def recognises(self, kernel: KernelImage) -> bool:
        return carries_marks(kernel)

    def plan_handover(self, kernel: KernelImage, layout: Layout, *, cmdline: str, kernel_esp_path: str,
                      modules: tuple[tuple[str, str, int, str], ...]) -> Handover:
        from highboot.protocols.handover import Handover

        marks = scan(kernel)
        planned = plan_handover(kernel, marks, levels=layout.levels, cmdline=cmdline,
                                kernel_esp_path=kernel_esp_path, modules=modules)
        # A Limine loader starts the APs only for a kernel that asks (the MP request), and reads the
        # kernel file whatever it asks.
        # Every processor's stack is the size the kernel asks for (the protocol's 64 KiB at least).
        return Handover(self.name, stack_size=planned.stack_size, ap_stack_size=planned.stack_size,
                        entry=planned.entry,
                        start_aps=marks.request("mp") is not None,
                        keep_kernel_file=marks.request("executable_file") is not None, limine=planned)

    def kernel_context(self) -> dict[str, object]:
        return header_context()

    def context(self) -> dict[str, object]:
        # The paging mode is answered at build time, and written at boot when the CPU decides it.
        filled = (*BOOT, "paging_mode")
        boot = [spec.BY_NAME[n].response for n in filled if spec.BY_NAME[n].response.fields[1:]]
        return {**super().context(), **header_context(),
                "limine_if_present": IF_PRESENT,
                "limine_boot_fills": [n for n in filled if n not in ("module", "entropy")],
                "limine_rust_structs": [*spec.STRUCTS, *boot],
                "limine_rust_type": _rust_type,
                "limine_pat": spec.PAT,
                "limine_revisions": {r.number: r for r in spec.REVISIONS},
                # A parked AP's record is a struct limine_mp_info: its stack top in `reserved`.
                "cpu_offsets": [(_Named(name), offset) for name, offset in (
                    ("processor_id", 0), ("apic_id", 4), ("stack_top", spec.MP_INFO.offsets()["reserved"]),
                    ("goto_address", spec.MP_INFO.offsets()["goto_address"]),
                    ("extra_argument", spec.MP_INFO.offsets()["extra_argument"]))]}


LIMINE = LimineProtocol(
    name="limine",
    title="Limine boot protocol",
    # null, 16-bit code and data, 32-bit code and data, 64-bit code (0x28) and data (0x30), in the
    # order the protocol gives them (kernels may rely on it).
    gdt=Gdt(entries=(0, 0x00009B000000FFFF, 0x000093000000FFFF, 0x00CF9B000000FFFF, 0x00CF93000000FFFF,
                     0x00209B0000000000, 0x0000930000000000), code_selector=0x28, data_selector=0x30),
    memory_types={
        MemoryKind.USABLE: _T["USABLE"], MemoryKind.KERNEL: _T["EXECUTABLE_AND_MODULES"],
        MemoryKind.LOADER_RECLAIMABLE: _T["BOOTLOADER_RECLAIMABLE"], MemoryKind.ACPI_RECLAIMABLE:
        _T["ACPI_RECLAIMABLE"], MemoryKind.ACPI_NVS: _T["ACPI_NVS"], MemoryKind.EFI_RUNTIME: _T["RESERVED"],
        MemoryKind.MMIO: _T["RESERVED"], MemoryKind.BAD: _T["BAD_MEMORY"], MemoryKind.RESERVED: _T["RESERVED"],
        MemoryKind.PERSISTENT: _T["RESERVED"],
    },
    boot_info_in_rdi=False,
    set_virtual_address_map=False,
    fs_gs_data=True,  # "all segment registers are loaded as 64-bit code/data segments"
    kernel_sources=(("include/highboot-limine.h.j2", "include/highboot-limine.h"),),
)


@dataclass(frozen=True)
class _Named:
    name: str


def _rust_type(f: spec.Field) -> str:
    return f"[u8; {f.count}]" if f.type.startswith("u8[") else {"ptr": "u64"}.get(f.type, f.type)


def _c_type(f: spec.Field) -> str:
    return "uint8_t" if f.type.startswith("u8[") else spec.TYPES[f.type][2]


def _c_suffix(f: spec.Field) -> str:
    return f"[{f.count}]" if f.type.startswith("u8[") else ""


def header_context() -> dict[str, object]:
    """What templates/include/highboot-limine.h.j2 renders from."""
    return {
        "common_magic": spec.COMMON_MAGIC, "base_revision_magic": spec.BASE_REVISION_MAGIC,
        "start_marker": spec.REQUESTS_START_MARKER, "end_marker": spec.REQUESTS_END_MARKER,
        "memmap_types": spec.MEMMAP_TYPES, "structs": spec.STRUCTS, "requests": spec.REQUESTS,
        "firmware_type_efi64": spec.FIRMWARE_TYPE_EFI64, "framebuffer_rgb": spec.FRAMEBUFFER_RGB,
        "paging_4": spec.PAGING_MODE_4LVL, "paging_5": spec.PAGING_MODE_5LVL, "mp_x2apic": spec.MP_X2APIC,
        "internal_module_required": spec.INTERNAL_MODULE_REQUIRED,
        "internal_module_compressed": spec.INTERNAL_MODULE_COMPRESSED,
        "limine_c_type": _c_type, "limine_c_suffix": _c_suffix,
        "c_words": lambda words: ", ".join(f"{w:#018x}ULL" for w in words),
    }
