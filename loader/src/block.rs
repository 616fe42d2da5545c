//! The one block the kernel owns: where this boot puts things (KASLR), the block's layout (its
//! dynamic tail is sized at boot) and loading the kernel into it.
//!
//! The block's layout is described once, in the build: `Block` in
//! site_scons/highboot/planning/planner.py. The build plans its static part (`plan::block`, up to
//! `plan::block::STATIC_SIZE`); `BlockLayout::new` sizes the rest, in that description's order,
//! from what only the boot knows.

use core::ptr;

use r_efi::efi;

use crate::failure::{fail, Result};
use crate::machine::Machine;
use crate::paging::{self, PAGE};
use crate::rendered::abi;
use crate::rendered::protocol::{self, GDT};
use crate::rendered::{bootinfo, plan};
use crate::{memmap, random, runtime};

/// Where this boot puts the kernel and the direct map (slide 0 and the layout's direct-map start
/// without KASLR), and the direct map's extent.
pub struct Placement {
    pub slide: i64,
    pub dmap_base: u64,
    pub dmap_size: u64,
    pub dmap_page: u64,
    pub source: Option<random::Source>,
}

impl Placement {
    /// A planned kernel address, in this boot.
    pub fn slid(&self, va: u64) -> u64 {
        va.wrapping_add(self.slide as u64)
    }

    /// A planned stack address, in this boot (the stack moves with the kernel when the plan says so).
    pub fn stack(&self, va: u64) -> u64 {
        if plan::kaslr::STACK_SLIDES {
            self.slid(va)
        } else {
            va
        }
    }

    /// A physical address's alias in the direct map.
    pub fn direct(&self, phys: u64) -> u64 {
        self.dmap_base + phys
    }
}

/// The block's dynamic tail, sized at boot (AP stacks, table pool, area: planner.py's `Block`).
/// Offsets are from the block's base, except the parts of the area, which are from the area's base.
pub struct BlockLayout {
    pub pool_pages: u64,
    pub map_capacity: usize,
    /// The firmware's memory-map descriptor size.
    #[cfg_attr(not(feature = "limine"), allow(dead_code))]
    pub descriptor_size: usize,
    #[cfg_attr(feature = "limine", allow(dead_code))] // highboot's boot info only
    pub range_capacity: usize,
    #[cfg_attr(feature = "limine", allow(dead_code))] // highboot's boot info only
    pub vmap_capacity: usize,
    pub pool_off: u64,
    pub area_off: u64,
    pub gdt_off: u64,
    pub desc_off: u64,
    #[cfg_attr(feature = "limine", allow(dead_code))] // highboot's boot info only
    pub cmdline_off: u64,
    pub memmap_off: u64,
    #[cfg_attr(feature = "limine", allow(dead_code))] // highboot's boot info only
    pub ranges_off: u64,
    #[cfg_attr(feature = "limine", allow(dead_code))] // highboot's boot info only
    pub vmap_off: u64,
    #[cfg_attr(feature = "limine", allow(dead_code))] // highboot's boot info only
    pub modules_off: u64,
    #[cfg_attr(feature = "limine", allow(dead_code))] // highboot's boot info only
    pub strings_off: u64,
    pub cpus_off: u64,
    pub slots_off: u64,
    /// The protocol's own part (its `area_size`; highboot's protocol has none).
    #[cfg_attr(not(feature = "limine"), allow(dead_code))]
    pub handover_off: u64,
    /// The APs' stacks (block offset): right after the static part, AP_STACK_SIZE each.
    pub stacks_off: u64,
    pub size: u64,
}

const fn align16(n: u64) -> u64 {
    (n + 15) & !15
}

impl BlockLayout {
    /// Room for everything this machine needs: tables for its direct map, the KASLR window and
    /// the protocol's own mappings (`protocol_tables` pages),
    /// the runtime services, its memory map (with slack for what changes before ExitBootServices
    /// and for the `handed` ranges of kernel memory outside the block that split it), the module
    /// records and their strings.
    pub fn new(
        map: &memmap::FirmwareMap,
        machine: &Machine,
        place: &Placement,
        handed: usize,
        aps: usize,
        protocol_tables: u64,
    ) -> Result<Self> {
        let mut pool_pages = paging::tables_needed(place.dmap_base, place.dmap_size, place.dmap_page) + protocol_tables;
        if crate::paging_mode::kernel_levels(&machine.features) > plan::tables::LEVELS {
            pool_pages += 2; // paging::five_level_root's
        }
        if aps > 0 {
            let window = aps as u64 * (plan::ranges::AP_STACK_SIZE + PAGE);
            pool_pages += paging::tables_needed(place.slid(plan::ranges::AP_STACKS_VA), window, PAGE);
        }
        if let (Some(first), Some(last)) = (plan::kaslr::TABLES.first(), plan::kaslr::TABLES.last()) {
            let start = place.slid(first.1);
            pool_pages +=
                paging::tables_needed(start, last.1 + plan::kaslr::SLIDE_ALIGN - first.1, plan::kaslr::SLIDE_ALIGN);
        }
        // EFI runtime services: room in the layout's EFI region, tables for their mappings.
        let (rt_descriptors, rt_pages) = runtime::census(map);
        if let (true, Some((efi_base, efi_size))) = (protocol::SET_VIRTUAL_ADDRESS_MAP, plan::ranges::EFI_REGION) {
            if rt_pages * PAGE > efi_size {
                return fail!(
                    efi::Status::OUT_OF_RESOURCES,
                    "the firmware's runtime services need {:#x} bytes; the layout's EFI region has {:#x}",
                    rt_pages * PAGE,
                    efi_size
                );
            }
            let span = ((rt_pages + 512) * PAGE).min(efi_size);
            pool_pages += paging::tables_needed(efi_base, span, PAGE);
        }
        let range_capacity = rt_descriptors + machine.attributes.len() + 2 * runtime::SLACK;
        let vmap_capacity = rt_descriptors + runtime::SLACK;
        // Each range of kernel memory (the block, each module, the kernel file) splits at most one
        // firmware range in three.
        // (+ 3: the first page carved out of its range, and a framebuffer entry, for a Limine kernel.)
        let map_capacity = map.len() + memmap::SLACK + 2 * (handed + 1) + 3;
        let gdt_off = align16(core::mem::size_of::<bootinfo::BootInfo>() as u64);
        let desc_off = gdt_off + align16(core::mem::size_of_val(&GDT) as u64);
        let cmdline_off = desc_off + abi::DESC_SIZE;
        let memmap_off = align16(cmdline_off + plan::options::CMDLINE.len() as u64);
        let ranges_off = memmap_off + (map_capacity * core::mem::size_of::<bootinfo::MemoryRegion>()) as u64;
        let vmap_off = ranges_off + (range_capacity * core::mem::size_of::<bootinfo::EfiRange>()) as u64;
        let modules_off = align16(vmap_off + (vmap_capacity * map.descriptor_size()) as u64);
        let strings_off =
            modules_off + (plan::options::MODULES.len() * core::mem::size_of::<bootinfo::Module>()) as u64;
        let strings: usize = plan::options::MODULES.iter().map(|m| m.name.len() + m.cmdline.len()).sum();
        let cpus_off = align16(strings_off + strings as u64);
        let slots_off = cpus_off + ((aps + 1) * core::mem::size_of::<bootinfo::Cpu>()) as u64;
        let handover_off = align16(slots_off + (aps * core::mem::size_of::<abi::ApSlot>()) as u64);
        let area_size = handover_off + crate::handover::area_size(map_capacity, aps, map.descriptor_size(), machine);
        let stacks_off = plan::block::STATIC_SIZE;
        let pool_off = stacks_off + aps as u64 * plan::ranges::AP_STACK_SIZE;
        let area_off = pool_off + pool_pages * PAGE;
        Ok(BlockLayout {
            pool_pages,
            map_capacity,
            descriptor_size: map.descriptor_size(),
            range_capacity,
            vmap_capacity,
            pool_off,
            area_off,
            gdt_off,
            desc_off,
            cmdline_off,
            memmap_off,
            ranges_off,
            vmap_off,
            modules_off,
            strings_off,
            cpus_off,
            slots_off,
            handover_off,
            stacks_off,
            size: (area_off + area_size + PAGE - 1) & !(PAGE - 1),
        })
    }
}

/// The block, loaded: the kernel's segments relocated, its tables live-ready, the table pool.
pub struct Block {
    pub base: u64,
    pub layout: BlockLayout,
    /// The kernel's root table (physical).
    pub root: u64,
    /// The trampoline page's physical address (the loader's own, or its copy below 4 GiB).
    pub trampoline: u64,
    pub pool: paging::Pool,
}

impl Block {
    /// Zero the block, copy the kernel's segments and apply its relocations, install the planned
    /// tables, map the trampoline, link the slid kernel's tables.
    ///
    /// # Safety
    /// `base` is `layout.size` bytes of memory we own, identity-mapped (boot services still up).
    pub unsafe fn load(
        base: u64,
        layout: BlockLayout,
        kernel: &[u8],
        place: &Placement,
        nx_mask: u64,
        trampoline: u64,
    ) -> Block {
        ptr::write_bytes(base as *mut u8, 0, layout.size as usize);
        load_image(kernel, base, place.slide as u64);
        paging::install_planned_tables(base, nx_mask);
        paging::map_trampoline(base, trampoline);
        let root = base + plan::block::TABLES_OFFSET;
        let mut pool = paging::Pool::new(base + layout.pool_off, layout.pool_pages);
        for &(number, window) in plan::kaslr::TABLES.iter() {
            paging::link_table(root, &mut pool, place.slid(window), base + plan::block::TABLES_OFFSET + number * PAGE);
        }
        Block { base, layout, root, trampoline, pool }
    }

    /// The physical address of the boot-info area.
    pub fn area(&self) -> u64 {
        self.base + self.layout.area_off
    }

    /// The physical address of a part of the area (an `*_off` of the layout).
    pub fn in_area(&self, offset: u64) -> u64 {
        self.area() + offset
    }
}

/// Copy the kernel's segments to their block offsets and apply its relocations for `slide` (bss
/// is already zero), in the block, before any table that maps the kernel is live: RELRO pages are
/// read-only from the kernel's first instruction.
unsafe fn load_image(kernel: &[u8], block: u64, slide: u64) {
    for seg in plan::rights::SEGMENTS.iter() {
        let src = &kernel[seg.file_offset as usize..(seg.file_offset + seg.filesz) as usize];
        ptr::copy_nonoverlapping(src.as_ptr(), (block + seg.block_offset) as *mut u8, src.len());
    }
    for &(offset, value) in plan::placement::RELOCATIONS.iter() {
        ptr::write_unaligned((block + offset) as *mut u64, value.wrapping_add(slide));
    }
    for &(offset, value) in plan::placement::ABSOLUTE_RELOCATIONS.iter() {
        ptr::write_unaligned((block + offset) as *mut u64, value);
    }
}
