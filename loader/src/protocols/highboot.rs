//! highboot's protocol: the boot info (`struct highboot_boot_info`), filled in the block's area
//! before ExitBootServices from what the build planned and the boot found, and completed after it
//! with what only then is final (the memory map, the runtime services' addresses, the CPUs, the
//! table count).

use core::ptr;

use crate::block::{Block, Placement};
use crate::console::println;
use crate::failure::fatal;
use crate::machine::Machine;
use crate::modules::Handed;
use crate::rendered::bootinfo::{self, cpu, cpu_flags, flags, BootInfo};
use crate::rendered::plan;
use crate::rendered::protocol::{self, memory_type, MemoryKind};
use crate::smp::{Census, Started};
use crate::{memmap, random, runtime};

/// What the kernel is handed: the boot info in the block's area.
pub type Info = &'static mut BootInfo;

/// The protocol's part of the block's area beyond the boot info's (none).
pub fn area_size(_map_capacity: usize, _aps: usize, _descriptor_size: usize, _machine: &Machine) -> u64 {
    0
}

/// Write the GDT, the descriptor registers, the command line and every boot-info field known
/// before ExitBootServices; returns the boot info (in the block's area).
///
/// # Safety
/// The block is loaded (see `Block::load`) and its area is laid out for this boot.
pub unsafe fn fill(block: &Block, place: &Placement, machine: &Machine, handed: &Handed, census: &Census) -> Info {
    let layout = &block.layout;
    super::install_descriptors(block, place);
    ptr::copy_nonoverlapping(
        plan::options::CMDLINE.as_ptr(),
        block.in_area(layout.cmdline_off) as *mut u8,
        plan::options::CMDLINE.len(),
    );

    let i = &mut *(block.area() as *mut BootInfo);
    i.magic = bootinfo::MAGIC;
    i.version = bootinfo::VERSION;
    i.size = core::mem::size_of::<BootInfo>() as u32;
    let features = &machine.features;
    i.cpu_features = if features.pdpe1gb { cpu::PDPE1GB } else { 0 }
        | if features.nx { cpu::NX } else { 0 }
        | if features.la57 { cpu::LA57 } else { 0 };
    i.memory_map = place.direct(block.in_area(layout.memmap_off));
    i.memory_map_entry_size = core::mem::size_of::<bootinfo::MemoryRegion>() as u64;
    i.direct_map_base = place.dmap_base;
    i.direct_map_slide = place.dmap_base - plan::ranges::DIRECT_MAP_BASE;
    i.direct_map_size = place.dmap_size;
    i.direct_map_page_size = place.dmap_page;
    i.kernel_slide = place.slide as u64;
    i.kernel_load_bias = place.slid(plan::placement::LOAD_BIAS);
    i.kernel_phys_base = block.base;
    i.kernel_phys_size = layout.size;
    i.kernel_virt_base = place.slid(plan::placement::IMAGE_VA);
    i.kernel_image_size = plan::placement::IMAGE_SIZE;
    i.kernel_entry = place.slid(plan::placement::ENTRY);
    i.stack_bottom = place.stack(plan::ranges::STACK_BOTTOM);
    i.stack_top = place.stack(plan::ranges::STACK_TOP);
    i.page_table_root = block.root;
    i.page_tables_phys = block.root;
    i.identity_tables_phys = block.base + plan::block::IDENTITY_TABLES_OFFSET;
    i.identity_tables_pages = plan::block::IDENTITY_TABLES_COUNT;
    i.trampoline_phys = block.trampoline;
    i.trampoline_virt = place.slid(plan::ranges::TRAMPOLINE_VA);
    i.efi_system_table = machine.st as u64;
    i.efi_runtime_map = place.direct(block.in_area(layout.ranges_off));
    i.cmdline = place.direct(block.in_area(layout.cmdline_off));
    i.cmdline_len = (plan::options::CMDLINE.len() - 1) as u64;
    i.tsc_loader_entry = machine.tsc_entry;
    if !plan::options::MODULES.is_empty() {
        i.modules = place.direct(block.in_area(layout.modules_off));
        i.module_count = plan::options::MODULES.len() as u64;
        fill_modules(block, place, handed);
    }
    if let Some((phys, _)) = handed.kernel_file {
        i.kernel_file_phys = phys;
        i.kernel_file_virt = place.direct(phys);
        i.kernel_file_size = plan::kernel::SIZE;
    }

    i.cpus = place.direct(block.in_area(layout.cpus_off));
    i.cpu_count = 1;
    i.bsp_apic_id = census.bsp_apic_id;
    // SMP: the loader started the APs (not when SMP is off or it had to give up: the kernel may
    // then start them itself).
    i.cpu_flags =
        if census.x2apic { cpu_flags::X2APIC } else { 0 } | if census.starts_aps() { cpu_flags::SMP } else { 0 };
    i.ap_stack_size = if plan::options::SMP { plan::ranges::AP_STACK_SIZE } else { 0 };
    i.cpus_not_started = census.not_started();

    let mut f = 0;
    if plan::placement::EH_FRAME_HDR.1 != 0 {
        f |= flags::EH_FRAME_HDR;
        i.eh_frame_hdr = place.slid(plan::placement::EH_FRAME_HDR.0);
        i.eh_frame_hdr_size = plan::placement::EH_FRAME_HDR.1;
    }
    i.tls_align = 1;
    if let Some((template, file_size, mem_size, align)) = plan::placement::TLS {
        f |= flags::TLS;
        i.tls_template = place.slid(template);
        i.tls_file_size = file_size;
        i.tls_mem_size = mem_size;
        i.tls_align = align;
    }
    if let Some(fb) = &machine.framebuffer {
        f |= flags::FRAMEBUFFER;
        i.framebuffer_phys = fb.base;
        i.framebuffer_virt = place.direct(fb.base);
        i.framebuffer_size = fb.size;
        i.framebuffer_width = fb.width;
        i.framebuffer_height = fb.height;
        i.framebuffer_stride = fb.stride;
        i.framebuffer_format = fb.format;
        [i.framebuffer_red_mask, i.framebuffer_green_mask, i.framebuffer_blue_mask, i.framebuffer_reserved_mask] =
            fb.masks;
    }
    let (rsdp, rsdp_revision) = machine.rsdp;
    if rsdp != 0 {
        f |= flags::RSDP;
        i.rsdp = rsdp;
        i.rsdp_revision = rsdp_revision;
    }
    f |= match place.source {
        None => 0,
        Some(random::Source::RngProtocol) => flags::KASLR | flags::RANDOM_RNG_PROTOCOL,
        Some(random::Source::Rdrand) => flags::KASLR | flags::RANDOM_RDRAND,
        Some(random::Source::Tsc) => flags::KASLR | flags::RANDOM_WEAK,
    };
    if plan::ranges::EFI_REGION.is_none() {
        f |= flags::NO_EFI_REGION;
    }
    if i.cmdline_len > 0 {
        f |= flags::CMDLINE;
    }
    if plan::options::DIRECT_MAP_EXEC {
        f |= flags::DIRECT_MAP_EXEC;
    }
    i.flags = f;
    i
}

/// The module records, and their names and command lines after them.
unsafe fn fill_modules(block: &Block, place: &Placement, handed: &Handed) {
    let records = block.in_area(block.layout.modules_off) as *mut bootinfo::Module;
    let mut strings = block.in_area(block.layout.strings_off);
    let mut copy = |text: &[u8]| {
        ptr::copy_nonoverlapping(text.as_ptr(), strings as *mut u8, text.len());
        strings += text.len() as u64;
        place.direct(strings - text.len() as u64)
    };
    for (n, m) in plan::options::MODULES.iter().enumerate() {
        let (phys, _) = handed.modules.get(n);
        let record = bootinfo::Module {
            phys,
            virt: if phys == 0 { 0 } else { place.direct(phys) },
            size: m.size,
            name: copy(m.name),
            cmdline: copy(m.cmdline),
            digest: m.digest,
        };
        records.add(n).write(record);
    }
}

/// After ExitBootServices (the direct map filled): the kernel's memory map and the EFI runtime services
/// in the layout's EFI region, written into the block; the boot info completed. Halts on COM1
/// when the runtime services grew past the room planned for them.
///
/// # Safety
/// Boot services are gone; `map` is the map ExitBootServices accepted; `info` is `fill`'s.
pub unsafe fn complete(
    block: &mut Block,
    _place: &Placement, // the same functions for every protocol: highboot's needs no placement here
    machine: &Machine,
    map: &memmap::FirmwareMap,
    handed: &Handed,
    info: &mut Info,
) {
    let layout = &block.layout;
    let regions = core::slice::from_raw_parts_mut(
        block.in_area(layout.memmap_off) as *mut bootinfo::MemoryRegion,
        layout.map_capacity,
    );
    let kernel = memory_type(MemoryKind::Kernel);
    let owned = core::iter::once((block.base, layout.size)).chain(handed.ranges()).map(|(b, s)| (b, s, kernel));
    let Some(count) = memmap::convert(map, regions, owned) else {
        fatal("the memory map grew past the room planned for it after ExitBootServices");
    };
    info.memory_map_count = count as u64;
    if let (true, Some((efi_base, efi_size))) = (protocol::SET_VIRTUAL_ADDRESS_MAP, plan::ranges::EFI_REGION) {
        let ranges = core::slice::from_raw_parts_mut(
            block.in_area(layout.ranges_off) as *mut bootinfo::EfiRange,
            layout.range_capacity,
        );
        let vmap = block.in_area(layout.vmap_off) as *mut u8;
        let Some(mapped) = runtime::map_all(
            map,
            &machine.attributes,
            block.root,
            &mut block.pool,
            machine.nx_mask,
            efi_base,
            efi_size,
            ranges,
            vmap,
            layout.vmap_capacity,
        ) else {
            fatal("the runtime services grew past the room planned for them after ExitBootServices");
        };
        let status = runtime::set_virtual_address_map(machine.st, map, vmap, mapped.descriptors);
        if status.is_error() {
            println!(
                "highboot: warning: SetVirtualAddressMap failed ({:#x}); runtime services are unusable",
                status.as_usize()
            );
        } else if let Some(va) = runtime::virtual_of(&ranges[..mapped.ranges], machine.st as u64) {
            info.efi_system_table = va;
            info.flags |= flags::EFI_RUNTIME;
        }
        info.efi_runtime_count = mapped.ranges as u64;
    }
}

/// CPU record `index` (the BSP's first) of the records at `records` (physical): a
/// `struct highboot_cpu`, its goto_address 0. Returns the record's physical address.
///
/// # Safety
/// The records' area holds `index + 1` records.
pub unsafe fn cpu_record(records: u64, index: usize, processor_id: u32, apic_id: u32, stack_top: u64) -> u64 {
    let record = (records as *mut bootinfo::Cpu).add(index);
    record.write(bootinfo::Cpu { processor_id, apic_id, goto_address: 0, extra_argument: 0, stack_top });
    record as u64
}

/// After the APs were started: how many are listed, how many did not check in.
pub fn cpus_started(info: &mut Info, started: &Started) {
    info.cpu_count = started.count;
    info.cpus_failed = started.failed;
}

/// The lower half is empty at the kernel's entry: the trampoline drops its identity entry.
pub const KEEPS_IDENTITY: bool = false;
/// The direct map covers the RAM-like regions (planning/directmap.py's rule).
pub const DIRECT_MAP_ALL_TYPES: bool = false;

/// What else the direct map must cover: nothing.
pub fn direct_map_top(_machine: &Machine) -> u64 {
    0
}

/// Ranges of its own the protocol adds to the memory map: none.
pub fn map_ranges(_machine: &Machine) -> usize {
    0
}

/// Table pages the protocol's own mappings take from the block's pool: none.
pub fn table_pages(_place: &Placement, _machine: &Machine) -> u64 {
    0
}

/// IA32_PAT at the kernel's entry: 0, as the firmware left it.
pub fn entry_pat() -> u64 {
    0
}

/// Just before the jump: the table pages in use (the APs' stacks took some from the pool after
/// the boot info was filled) and the TSC.
pub fn at_handoff(info: &mut Info, block: &Block) {
    info.page_tables_pages = plan::block::TABLE_COUNT + block.pool.used();
    info.tsc_handoff = crate::cpu::rdtsc();
}
