"""What a boot protocol decides, as data: the seam between planning the kernel's address space
(protocol-neutral, planning/) and handing the kernel over (one protocol per build).

A protocol owns:

- the handover: what the kernel finds at entry (highboot's boot info; another protocol's
  responses), the sources rendered for kernels (a C header, a Rust module) and the loader code that
  fills it in (loader/src/protocols/<name>.rs);
- the GDT the kernel runs on and its code and data selectors;
- the entry register state: what RDI holds;
- the memory-map types: the protocol's number for each kind of memory the loader tells apart;
- which of the loader's optional steps run: SetVirtualAddressMap (the APs' start is the
  planner's, from SMP and MAX_CPUS; where they park will be the protocol's).

Everything here is rendered into the loader (templates/loader/protocol.rs.j2), so a protocol is a
module here and its templates, not edits across the planner or the loader's boot sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from highboot.inputs.kernel import KernelImage
    from highboot.inputs.layout import Layout
    from highboot.protocols.handover import Handover


class MemoryKind(Enum):
    """The kinds of memory the loader tells apart in the firmware's map (loader/src/memmap.rs); each
    protocol gives each kind its own number. The value is its index in the rendered table."""

    USABLE = 0  # conventional and boot-services memory
    KERNEL = 1  # what the kernel owns: its block, the modules, the kernel file
    LOADER_RECLAIMABLE = 2  # loader code and data
    ACPI_RECLAIMABLE = 3
    ACPI_NVS = 4
    EFI_RUNTIME = 5  # runtime services code and data
    MMIO = 6
    BAD = 7
    RESERVED = 8
    PERSISTENT = 9


@dataclass(frozen=True)
class Gdt:
    """The GDT the loader installs for the kernel (in kernel-owned memory) and the selectors CS and
    the data segments hold at entry."""

    entries: tuple[int, ...]
    code_selector: int
    data_selector: int

    def __post_init__(self) -> None:
        # A selector indexes an entry of the right kind: 64-bit code (L=1, D=0), writable data.
        code, data = self.entries[self.code_selector // 8], self.entries[self.data_selector // 8]
        assert self.code_selector % 8 == 0 and self.data_selector % 8 == 0 and self.entries[0] == 0
        assert code >> 53 & 3 == 0b01 and code >> 43 & 1 == 1, "the code selector names 64-bit code"
        assert data >> 43 & 1 == 0 and data >> 41 & 1 == 1, "the data selector names writable data"


@dataclass(frozen=True)
class Protocol:
    """One boot protocol, described for the build (see the module's docstring)."""

    name: str  # the PROTOCOL option's value
    title: str  # for messages and `scons map`
    gdt: Gdt
    #: The protocol's number for each MemoryKind (every kind has one).
    memory_types: dict[MemoryKind, int]
    #: RDI at entry: True, the address of the protocol's boot record (highboot's boot info); False, 0.
    boot_info_in_rdi: bool
    #: Whether the loader maps the runtime services and calls SetVirtualAddressMap.
    set_virtual_address_map: bool
    #: What FS and GS hold at entry: the null selector (0), or the data selector.
    fs_gs_data: bool
    #: Templates rendered for kernels of this protocol: (template, path under the build directory).
    kernel_sources: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        assert set(self.memory_types) == set(MemoryKind), f"{self.name}: a number for every kind of memory"

    def recognises(self, kernel: KernelImage) -> bool:
        """Whether the kernel carries this protocol's marks (a kernel of no other protocol is highboot's)."""
        return False

    def plan_handover(self, kernel: KernelImage, layout: Layout, *, cmdline: str, kernel_esp_path: str,
                      modules: tuple[tuple[str, str, int, str], ...]) -> Handover:
        """The handover of this kernel (placed where it runs at slide 0). `modules` are (ESP path,
        command line, size, name) in order."""
        from highboot.protocols.handover import Handover

        return Handover(self.name)

    def kernel_context(self) -> dict[str, object]:
        """What the kernel sources of this protocol (kernel_sources) render from, beyond highboot's
        boot info (every build renders every protocol's kernel sources: a kernel is built before
        the build knows which protocol it speaks)."""
        return {}

    def context(self) -> dict[str, object]:
        """What the loader's protocol template renders from (templates/loader/protocol.rs.j2)."""
        return {"protocol": self, "memory_kinds": list(MemoryKind),
                "gdt_entries": self.gdt.entries, "code_selector": self.gdt.code_selector,
                "data_selector": self.gdt.data_selector,
                "fs_gs_selector": self.gdt.data_selector if self.fs_gs_data else 0}
