"""The boot-info ABI, defined once. Renders to Rust (loader and kernels) and C (highboot.h).

Changing a field here changes the loader, the sample kernel and the C header together. Append new
fields at the end and bump VERSION; kernels check ``size`` to see which fields exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from highboot.planning.paging import ADDR_MASK, PageFlags

MAGIC = int.from_bytes(b"HIGHBOOT", "little")
VERSION = 5


@dataclass(frozen=True)
class Field:
    name: str
    type: str  # u32, u64, or u8[N] (a byte array)
    doc: str

    @property
    def size(self) -> int:
        if self.type.startswith("u8["):
            return int(self.type[3:-1])
        return {"u32": 4, "u64": 8}[self.type]

    @property
    def align(self) -> int:
        return 1 if self.type.startswith("u8[") else self.size

    @property
    def rust_type(self) -> str:
        return f"[u8; {self.size}]" if self.type.startswith("u8[") else self.type

    @property
    def c_declaration(self) -> str:
        if self.type.startswith("u8["):
            return f"uint8_t {self.name}[{self.size}]"
        return f"{'uint64_t' if self.type == 'u64' else 'uint32_t'} {self.name}"


@dataclass(frozen=True)
class Constant:
    name: str
    value: int
    doc: str


BOOT_INFO = (
    Field("magic", "u64", 'ASCII "HIGHBOOT" (little-endian u64): the first 8 bytes of the boot info'),
    Field("version", "u32", "ABI version (HIGHBOOT_VERSION)"),
    Field("size", "u32", "size of this structure in bytes"),
    Field("flags", "u64", "HIGHBOOT_FLAG_* bits: which optional parts are present"),
    Field("cpu_features", "u64", "HIGHBOOT_CPU_* bits the loader found (1 GiB pages, NX, LA57)"),
    Field("memory_map", "u64", "virtual address of memory_map_count entries (struct highboot_memory_region)"),
    Field("memory_map_count", "u64", "number of memory-map entries: sorted, non-overlapping, neighbours merged"),
    Field("memory_map_entry_size", "u64", "size of one memory-map entry in bytes"),
    Field("direct_map_base", "u64", "virtual address of physical address 0"),
    Field("direct_map_size", "u64", "bytes of physical address space mapped at direct_map_base"),
    Field("direct_map_page_size", "u64", "page size of the direct map (0x200000 or 0x40000000)"),
    Field("kernel_phys_base", "u64", "physical base of the block the kernel owns (image, stack, tables, this)"),
    Field("kernel_phys_size", "u64", "size of that block in bytes"),
    Field("kernel_virt_base", "u64", "virtual address of the first byte of the kernel image"),
    Field("kernel_image_size", "u64", "bytes from kernel_virt_base to the end of the image (page aligned)"),
    Field("kernel_entry", "u64", "virtual address of the kernel entry point"),
    Field("stack_bottom", "u64", "lowest mapped address of the boot stack (a guard page is below it)"),
    Field("stack_top", "u64", "highest address of the boot stack (RSP at entry is stack_top - 8)"),
    Field("page_table_root", "u64", "physical address of the root table (CR3 at entry)"),
    Field("page_tables_phys", "u64", "physical address of the kernel's page tables (static part)"),
    Field("page_tables_pages", "u64", "number of 4 KiB table pages in use at entry, direct map included"),
    Field("identity_tables_phys", "u64", "physical address of the tables that identity-map the trampoline page for the "
          "jump to the higher half (reclaimable)"),
    Field("identity_tables_pages", "u64", "number of those 4 KiB pages"),
    Field("trampoline_phys", "u64", "physical address of the trampoline page (in loader code, reclaimable)"),
    Field("trampoline_virt", "u64", "higher-half alias of the trampoline page, still mapped RX at entry"),
    Field("framebuffer_phys", "u64", "GOP framebuffer physical base (0 if none)"),
    Field("framebuffer_virt", "u64", "framebuffer address in the direct map (0 if none)"),
    Field("framebuffer_size", "u64", "framebuffer size in bytes"),
    Field("framebuffer_width", "u32", "pixels per line visible"),
    Field("framebuffer_height", "u32", "lines"),
    Field("framebuffer_stride", "u32", "pixels per scan line in memory"),
    Field("framebuffer_format", "u32", "HIGHBOOT_FB_* pixel format"),
    Field("rsdp", "u64", "physical address of the ACPI RSDP (0 if none)"),
    Field("rsdp_revision", "u64", "2 for an ACPI 2.0+ XSDP, 0 for ACPI 1.0"),
    Field("efi_system_table", "u64", "EFI system table: virtual if HIGHBOOT_FLAG_EFI_RUNTIME, else physical"),
    Field("cmdline", "u64", "virtual address of the NUL-terminated kernel command line"),
    Field("cmdline_len", "u64", "length of the command line in bytes, without the NUL"),
    Field("tsc_loader_entry", "u64", "TSC when the loader's efi_main started"),
    Field("tsc_handoff", "u64", "TSC just before the jump to the trampoline"),
    Field("efi_runtime_map", "u64", "virtual address of efi_runtime_count entries (struct highboot_efi_range)"),
    Field("efi_runtime_count", "u64", "number of EFI runtime mappings (0 without an EFI region)"),
    # Version 2: KASLR.
    Field("kernel_slide", "u64", "bytes the kernel was moved from its link address (two's complement; 0 "
          "without KASLR): every kernel virtual address above is already slid"),
    Field("direct_map_slide", "u64", "bytes direct_map_base was moved from the layout's direct-map start"),
    # Version 3: kernels as toolchains emit them (PIE linked anywhere, unwinding, TLS); the
    # framebuffer's pixel layout as masks, whatever its format.
    Field("kernel_load_bias", "u64", "bytes added to every virtual address of the kernel's ELF file (where the "
          "build placed a PIE, plus kernel_slide; two's complement): runtime address = ELF address + this"),
    Field("eh_frame_hdr", "u64", "virtual address of the kernel's .eh_frame_hdr (PT_GNU_EH_FRAME; 0 if none)"),
    Field("eh_frame_hdr_size", "u64", "its size in bytes"),
    Field("tls_template", "u64", "virtual address of the kernel's TLS initialization image (PT_TLS; 0 if none)"),
    Field("tls_file_size", "u64", "bytes of initialized TLS data at tls_template (.tdata)"),
    Field("tls_mem_size", "u64", "bytes of one thread's TLS block (.tdata + .tbss, zero-filled past tls_file_size)"),
    Field("tls_align", "u64", "alignment of the TLS block in bytes (PT_TLS p_align; 1 if none)"),
    Field("framebuffer_red_mask", "u32", "bits of a framebuffer pixel (u32) that hold red, for every format"),
    Field("framebuffer_green_mask", "u32", "bits that hold green"),
    Field("framebuffer_blue_mask", "u32", "bits that hold blue"),
    Field("framebuffer_reserved_mask", "u32", "bits that are reserved (not shown)"),
    # Version 4: modules and the kernel file.
    Field("modules", "u64", "virtual address of module_count struct highboot_module, in the order the build "
          "was given them"),
    Field("module_count", "u64", "number of modules"),
    Field("kernel_file_phys", "u64", "physical address of the kernel's ELF file as read and verified (0 if not "
          "kept); HIGHBOOT_MEM_KERNEL memory, page aligned, the tail of its last page zeroed"),
    Field("kernel_file_virt", "u64", "direct_map_base + kernel_file_phys (0 if not kept)"),
    Field("kernel_file_size", "u64", "bytes of the kernel file (0 if not kept)"),
    # Version 5: every CPU handed over (application processors parked on their goto_address).
    Field("cpus", "u64", "virtual address of cpu_count struct highboot_cpu, the BSP included (first); an AP "
          "is listed only if it checked in and is parked"),
    Field("cpu_count", "u64", "number of CPU records (1 with SMP off or on a uniprocessor)"),
    Field("bsp_apic_id", "u32", "(x2)APIC ID of the CPU that runs the kernel's entry"),
    Field("cpu_flags", "u32", "HIGHBOOT_CPU_SMP, HIGHBOOT_CPU_X2APIC bits"),
    Field("cpus_failed", "u32", "enabled processors the loader started that did not check in in time (not "
          "listed; sent INIT again: in wait-for-SIPI)"),
    Field("cpus_not_started", "u32", "enabled processors the loader did not start: SMP off, beyond max_cpus, "
          "an APIC ID the APIC mode cannot reach, or no free page below 1 MiB (not listed; as the firmware left "
          "them)"),
    Field("ap_stack_size", "u64", "bytes of each AP's stack (an unmapped guard page below each; 0 with SMP off)"),
)

CPU = (
    Field("processor_id", "u32", "ACPI processor UID (MADT)"),
    Field("apic_id", "u32", "(x2)APIC ID"),
    Field("goto_address", "u64", "written (atomically) by the kernel to release this AP: it jumps there with "
          "RDI = this record's address and RSP = stack_top - 8 (unused for the BSP)"),
    Field("extra_argument", "u64", "free for the kernel (the loader writes 0)"),
    Field("stack_top", "u64", "top of this CPU's stack (higher half, 16-byte aligned)"),
)

MODULE = (
    Field("phys", "u64", "physical address, 4 KiB aligned (0 for an empty module); HIGHBOOT_MEM_KERNEL memory, "
          "the tail of its last page zeroed"),
    Field("virt", "u64", "its address in the direct map: direct_map_base + phys (0 for an empty module)"),
    Field("size", "u64", "bytes"),
    Field("name", "u64", "virtual address of the NUL-terminated name"),
    Field("cmdline", "u64", 'virtual address of the NUL-terminated command line ("" if none)'),
    Field("digest", "u8[32]", "the digest the loader verified: the file's fs-verity digest "
          "(SHA-256 Merkle tree over 4 KiB blocks; `fsverity digest FILE` prints it)"),
)

EFI_RANGE = (
    Field("phys", "u64", "physical start of a runtime range"),
    Field("virt", "u64", "its virtual address in the layout's EFI region"),
    Field("length", "u64", "bytes"),
    Field("access", "u64", "HIGHBOOT_ACCESS_* bits of the mapping"),
)

ACCESS = (
    Constant("WRITE", 1 << 0, "writable"),
    Constant("EXECUTE", 1 << 1, "executable"),
    Constant("UNCACHED", 1 << 2, "memory-mapped I/O, mapped uncached"),
)

MEMORY_REGION = (
    Field("base", "u64", "physical start"),
    Field("length", "u64", "bytes"),
    Field("type", "u32", "HIGHBOOT_MEM_*"),
    Field("reserved", "u32", "zero"),
)

MEMORY_TYPES = (
    Constant("USABLE", 1, "free RAM (conventional and boot-services memory)"),
    Constant("KERNEL", 2, "memory the kernel owns: its block (image, stack, page tables, boot info), the modules, "
             "the kernel file"),
    Constant("LOADER_RECLAIMABLE", 3, "loader code and data; free once the kernel no longer needs the boot info"),
    Constant("ACPI_RECLAIMABLE", 4, "ACPI tables; free once parsed"),
    Constant("ACPI_NVS", 5, "ACPI non-volatile storage: never touch"),
    Constant("EFI_RUNTIME", 6, "EFI runtime services code and data: keep mapped to call them"),
    Constant("MMIO", 7, "memory-mapped I/O reported by the firmware"),
    Constant("BAD", 8, "unusable (memory errors)"),
    Constant("RESERVED", 9, "reserved by the firmware"),
    Constant("PERSISTENT", 10, "persistent (non-volatile) memory"),
)

FLAGS = (
    Constant("EFI_RUNTIME", 1 << 0, "runtime services are mapped in the EFI region (SetVirtualAddressMap done)"),
    Constant("FRAMEBUFFER", 1 << 1, "framebuffer_* fields are valid"),
    Constant("RSDP", 1 << 2, "rsdp is valid"),
    Constant("NO_EFI_REGION", 1 << 3, "the layout has no EFI region: runtime services are not callable"),
    Constant("CMDLINE", 1 << 4, "cmdline is non-empty"),
    Constant("KASLR", 1 << 5, "KASLR build: the kernel and the direct map were placed at random"),
    Constant("RANDOM_RNG_PROTOCOL", 1 << 6, "the randomness came from EFI_RNG_PROTOCOL"),
    Constant("RANDOM_RDRAND", 1 << 7, "the randomness came from RDRAND (no EFI_RNG_PROTOCOL)"),
    Constant("RANDOM_WEAK", 1 << 8, "neither was available: the TSC was the only source (weak)"),
    Constant("EH_FRAME_HDR", 1 << 9, "eh_frame_hdr and eh_frame_hdr_size are valid"),
    Constant("TLS", 1 << 10, "the kernel has a PT_TLS template: tls_* are valid"),
    Constant("DIRECT_MAP_EXEC", 1 << 11, "the direct map is executable (DIRECT_MAP_EXEC): writable and executable "
             "there, W^X holds everywhere else"),
)

CPU_FEATURES = (
    Constant("PDPE1GB", 1 << 0, "1 GiB pages (CPUID 80000001h:EDX[26])"),
    Constant("NX", 1 << 1, "no-execute (CPUID 80000001h:EDX[20]); EFER.NXE is set"),
    Constant("LA57", 1 << 2, "5-level paging available (CPUID 7:ECX[16])"),
)

#: BootInfo::cpu_flags bits (HIGHBOOT_CPU_ as cpu_features' bits, other values).
CPU_FLAGS = (
    Constant("SMP", 1 << 16, "the loader started the APs: every AP listed in cpus is parked on its goto_address"),
    Constant("X2APIC", 1 << 17, "the local APICs are in x2APIC mode (the loader sent its IPIs through the "
             "x2APIC MSRs)"),
)

FB_FORMATS = (
    Constant("NONE", 0, "no framebuffer"),
    Constant("RGBX8", 1, "PixelRedGreenBlueReserved8BitPerColor"),
    Constant("BGRX8", 2, "PixelBlueGreenRedReserved8BitPerColor"),
    Constant("BITMASK", 3, "PixelBitMask"),
)


#: x86-64 page-table entry bits, for kernels that walk or extend their tables (the planner's own
#: flags, paging.PageFlags, are the one spelling of them; the loader uses these too).
PTE_BITS = tuple(Constant(flag.name, int(flag), doc) for flag, doc in (
    (PageFlags.PRESENT, "the entry maps something"),
    (PageFlags.WRITABLE, "writes allowed (every level of the walk must allow them)"),
    (PageFlags.USER_ACCESSIBLE, "user-mode access allowed"),
    (PageFlags.WRITE_THROUGH, "write-through caching"),
    (PageFlags.NO_CACHE, "caching disabled (memory-mapped I/O)"),
    (PageFlags.ACCESSED, "set by the CPU on access"),
    (PageFlags.DIRTY, "set by the CPU on a write (leaf entries)"),
    (PageFlags.HUGE_PAGE, "a 2 MiB or 1 GiB page, not a table (PD and PDPT entries)"),
    (PageFlags.GLOBAL, "kept in the TLB across CR3 loads when CR4.PGE is set"),
    (PageFlags.NO_EXECUTE, "instruction fetches fault (EFER.NXE; any level of the walk)"),
)) + (Constant("ADDR_MASK", ADDR_MASK, "the physical address in an entry (bits 12..51)"),)


def offsets(fields: tuple[Field, ...]) -> list[int]:
    """Each field's offset in a repr(C) struct of these fields."""
    out, at = [], 0
    for f in fields:
        at = (at + f.align - 1) // f.align * f.align
        out.append(at)
        at += f.size
    return out


def size_of(fields: tuple[Field, ...]) -> int:
    """Bytes of a repr(C) struct of these fields (padded to its largest alignment)."""
    end = offsets(fields)[-1] + fields[-1].size
    align = max(f.align for f in fields)
    return (end + align - 1) // align * align


def context() -> dict[str, object]:
    """What the boot-info templates render from."""
    return {
        "magic": MAGIC, "version": VERSION,
        "boot_info_fields": BOOT_INFO, "boot_info_size": size_of(BOOT_INFO),
        "memory_region_fields": MEMORY_REGION, "memory_region_size": size_of(MEMORY_REGION),
        "efi_range_fields": EFI_RANGE, "efi_range_size": size_of(EFI_RANGE), "access": ACCESS,
        "module_fields": MODULE, "module_size": size_of(MODULE),
        "cpu_fields": CPU, "cpu_size": size_of(CPU), "cpu_flags": CPU_FLAGS,
        "cpu_offsets": list(zip(CPU, offsets(CPU), strict=True)),
        # What the C header checks at compile time: each struct's size and each field's offset.
        "c_layouts": [(name, list(zip(fields, offsets(fields), strict=True)), size_of(fields))
                      for name, fields in (("boot_info", BOOT_INFO), ("memory_region", MEMORY_REGION),
                                           ("efi_range", EFI_RANGE), ("module", MODULE), ("cpu", CPU))],
        "rust_keywords": ("type", "ref", "match", "mod"),
        "memory_types": MEMORY_TYPES, "flags": FLAGS, "cpu_features": CPU_FEATURES, "fb_formats": FB_FORMATS,
        "pte_bits": PTE_BITS,
    }
