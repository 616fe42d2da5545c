//! highboot's UEFI loader. Everything that could be known before boot was computed by the build
//! and is in `plan` (rendered from templates/loader/plan.rs.j2); this program does only what
//! cannot be known before boot: where RAM is, how much there is, which page sizes the CPU has.
//!
//! This file is the boot sequence, step by step; each step's work is in the module it names.
//! rendered.rs includes what the build rendered (plan, abi, bootinfo, the trampoline);
//! failure.rs says how a step fails.

#![no_std]
#![no_main]

use r_efi::efi;

#[cfg(feature = "limine")]
mod acpi;
mod block;
mod com1;
mod console;
mod cpu;
mod failure;
mod fbmode;
mod firmware;
#[cfg(feature = "limine")]
mod interrupts;
mod machine;
mod madt;
mod memmap;
mod modules;
mod paging;
mod paging_mode;
mod protocols;
mod random;
mod rendered;
mod runtime;
mod sha256;
mod smp;
mod verity;

use block::{Block, BlockLayout, Placement};
use console::println;
use failure::{fail, Result};
use machine::Machine;
use modules::{Handed, Modules};
use paging::PAGE;
// The kernel's boot protocol: the build picks it (the crate's cargo feature, from the plan).
#[cfg(not(feature = "limine"))]
use protocols::highboot as handover;
#[cfg(feature = "limine")]
use protocols::limine as handover;
use rendered::abi::Handoff;
use rendered::plan::{self, faults::Fault};
use rendered::protocol;

const GIB: u64 = 1 << 30;
const MIB2: u64 = 2 << 20;

#[export_name = "efi_main"]
pub extern "efiapi" fn efi_main(image: efi::Handle, st: *mut efi::SystemTable) -> efi::Status {
    let tsc = cpu::rdtsc();
    console::init(st);
    // SAFETY: the firmware passes a valid system table.
    failure::boot_services_up(unsafe { (*st).boot_services }, image);
    // SAFETY: as above.
    let bs = unsafe { &*(*st).boot_services };
    let pages_at_entry = if plan::faults::FAULT.is_none() { 0 } else { firmware::loader_pages(bs) };
    match boot(image, st, tsc) {
        Ok(never) => match never {},
        Err(status) => {
            if plan::faults::FAULT.is_some() {
                println!(
                    "highboot: test build: loader pages at entry {}, after the failure {}",
                    pages_at_entry,
                    firmware::loader_pages(bs)
                );
            }
            println!("highboot: the kernel was not started (EFI status {:#x})", status.as_usize());
            status
        }
    }
}

enum Never {}

/// The boot, step by step. Everything allocated before ExitBootServices is freed again if a step
/// fails (the guards drop); after it, a failure halts with a message on COM1.
fn boot(image: efi::Handle, st: *mut efi::SystemTable, tsc_entry: u64) -> Result<Never> {
    // SAFETY: the firmware passes a valid system table and boot services until ExitBootServices.
    let bs = unsafe { &*(*st).boot_services };
    println!("highboot: loading {} ({} bytes)", plan::kernel::PATH_TEXT, plan::kernel::SIZE);
    if plan::faults::FAULT == Some(Fault::Panic) {
        panic!("injected panic before ExitBootServices [test build]");
    }
    // The paging mode first: a CPU that cannot run it is refused before any file is read.
    if plan::tables::LEVELS == 5 && !cpu::features().la57 {
        return fail!(
            efi::Status::UNSUPPORTED,
            "layout \"{}\" asks for 5-level paging (57-bit addresses); this CPU has no LA57 (CPUID.7.0:ECX bit 16)",
            plan::ranges::LAYOUT
        );
    }
    if protocol::LA57_REQUIRED && !cpu::features().la57 {
        return fail!(
            efi::Status::UNSUPPORTED,
            "the kernel asks for 5-level paging only (its paging mode request's min_mode); this CPU has no LA57 (CPUID.7.0:ECX bit 16)"
        );
    }
    // The AVX state only while the files are verified (AvxState puts the firmware's back).
    let avx = cpu::AvxState::enable();
    let engine = verity::Engine::detect();
    println!("highboot: verifying with {}", engine.name());
    let volume = firmware::Volume::open(bs, image)?;
    let (kernel_pages, kernel) = read_verified_kernel(bs, &volume, engine)?;
    let modules = Modules::load(bs, &volume, engine)?;
    drop(volume);
    drop(avx);
    let handed = Handed {
        kernel_file: if plan::options::KEEP_KERNEL_FILE { Some((kernel_pages.base, kernel_pages.count)) } else { None },
        modules: &modules,
    };
    let display = firmware::set_framebuffer_mode(bs);
    let machine = Machine::probe(bs, st, tsc_entry);
    let mut census = smp::Census::take(bs, machine.rsdp);
    let (_low_pages, low) = low_pages(bs, &machine.features, &mut census)?;
    let mut map = memmap::FirmwareMap::new(bs)?;
    map.refresh(bs)?;

    let place = choose_placement(bs, size_direct_map(&map, &machine)?);
    let (layout, block_pages) = allocate_block(bs, &map, &machine, &place, handed.count(), &mut census)?;
    census.say_left_alone();
    let trampoline = low.map_or(paging_mode::trampoline_page(), |l| l.page);
    // SAFETY: the block is ours, identity-mapped by the firmware, layout.size bytes long.
    let mut block = unsafe { Block::load(block_pages.base, layout, kernel, &place, machine.nx_mask, trampoline) };
    // SAFETY: the block is loaded and its area laid out for this boot (and its APs).
    let mut info = unsafe { handover::fill(&block, &place, &machine, &handed, &census) };
    // SAFETY: as above.
    unsafe { census.fill(&block, &place) };

    println!("highboot: starting the kernel at {:#x}", place.slid(plan::placement::ENTRY));
    core::mem::forget(display); // the kernel gets the display in the mode it asked for
    exit_boot_services(bs, image, &mut map);
    // No boot services from here on: no allocations, no console; errors go to COM1.
    // SAFETY: all of this writes into the block we own; the firmware's tables are never touched.
    let root = unsafe {
        // The direct map is the plan's, whatever the protocol; the handover completes on top of it.
        paging::map_direct(
            block.root,
            &mut block.pool,
            place.dmap_base,
            place.dmap_size,
            place.dmap_page,
            machine.nx_mask,
        );
        handover::complete(&mut block, &place, &machine, &map, &handed, &mut info);
        // Every mapping is made: the root CR3 loads, in the kernel's paging mode.
        let root = match paging_mode::kernel_levels(&machine.features) {
            levels if levels > plan::tables::LEVELS => paging::five_level_root(block.root, &mut block.pool),
            levels => paging::Root { table: block.root, levels },
        };
        let started = smp::start(&census, &mut block, &place, low, root, machine.features.nx, machine.nx_mask);
        handover::cpus_started(&mut info, &started);
        root
    };
    hand_over(&block, root, &place, &machine, low, &mut info)
}

/// ExitBootServices, with a fresh map for each stale key; the console forgets the firmware.
fn exit_boot_services(bs: &efi::BootServices, image: efi::Handle, map: &mut memmap::FirmwareMap) {
    paging_mode::fault_firmware_paging(4);
    let refused = map.exit_boot_services(bs, image);
    paging_mode::fault_firmware_paging(5);
    console::firmware_gone();
    failure::boot_services_gone();
    if refused > 0 {
        println!("highboot: ExitBootServices refused {} stale memory-map key(s); retried with a fresh map", refused);
    }
}

/// NX and WP on, the handoff TSC stamped, and the jump: through the trampoline (or its copy below
/// 4 GiB when the paging mode changes) to the kernel's entry with the boot info in RDI.
fn hand_over(
    block: &Block,
    root: paging::Root,
    place: &Placement,
    machine: &Machine,
    low: Option<paging_mode::LowPages>,
    info: &mut handover::Info,
) -> ! {
    cpu::enable_nx_and_wp(machine.features.nx);
    handover::at_handoff(info, block);
    let handoff = Handoff {
        cr3: root.table,
        trampoline_va: place.slid(plan::ranges::TRAMPOLINE_VA),
        identity_slot_va: if handover::KEEPS_IDENTITY { 0 } else { place.direct(root.entry(block.trampoline)) },
        descriptors_va: place.direct(block.in_area(block.layout.desc_off)),
        stack_top: place.stack(plan::ranges::STACK_TOP),
        entry: place.slid(plan::placement::ENTRY),
        boot_info_va: if protocol::BOOT_INFO_IN_RDI { place.direct(block.area()) } else { 0 },
        cr4_la57: paging_mode::cr4_la57(root.levels),
        pat: handover::entry_pat(),
        ..Handoff::default()
    };
    // SAFETY: the kernel's tables are complete and map the trampoline, the stack and the entry.
    unsafe {
        match low {
            Some(l) if l.changes_mode => paging_mode::highboot_handoff(paging_mode::handoff_args(l, root, &handoff)),
            Some(l) => paging_mode::handoff_from_copy(l, &handoff),
            None => paging_mode::highboot_handoff(&handoff),
        }
    }
}

/// Read the kernel file and check it is the one this loader was built for (size and digest).
fn read_verified_kernel(
    bs: &efi::BootServices,
    volume: &firmware::Volume,
    engine: verity::Engine,
) -> Result<(firmware::Pages, &'static [u8])> {
    let what = firmware::EspFile {
        kind: "kernel",
        name: None,
        path: plan::kernel::PATH,
        path_text: plan::kernel::PATH_TEXT,
        size: plan::kernel::SIZE,
        digest: &plan::kernel::DIGEST,
    };
    match volume.read_verified(bs, what, engine)? {
        Some(read) => Ok(read),
        None => fail!(efi::Status::LOAD_ERROR, "{} is empty (loader build error)", what),
    }
}

/// The pages below 4 GiB for the 4 <-> 5-level paging-mode change when the kernel's paging mode is not the
/// firmware's (see paging_mode.rs), below 1 MiB when they are also the APs' startup page.
fn low_pages(
    bs: &efi::BootServices,
    features: &cpu::Features,
    census: &mut smp::Census,
) -> Result<(Option<firmware::Pages>, Option<paging_mode::LowPages>)> {
    if plan::faults::FAULT == Some(Fault::Firmware5level) && features.la57 && !cpu::la57_active() {
        paging_mode::firmware_to_5_level(bs)?;
        println!("highboot: test build: the firmware now runs 5-level paging");
    }
    let firmware_levels = if cpu::la57_active() { 5 } else { 4 };
    let kernel_levels = paging_mode::kernel_levels(features);
    let mode_change = firmware_levels != kernel_levels;
    if mode_change {
        println!(
            "highboot: the firmware runs {}-level paging; the kernel gets {}-level paging",
            firmware_levels, kernel_levels
        );
    }
    if census.to_start > 0 {
        let low = if plan::faults::FAULT == Some(Fault::NoLowPage) {
            Err(efi::Status::OUT_OF_RESOURCES)
        } else {
            paging_mode::allocate_low(bs, paging_mode::BELOW_1M, mode_change)
        };
        match low {
            Ok((pages, low)) => return Ok((Some(pages), Some(low))),
            Err(status) => census.give_up("no free memory below 1 MiB for their startup page", status),
        }
    }
    if !mode_change {
        return Ok((None, None));
    }
    match paging_mode::allocate_low(bs, paging_mode::BELOW_4G, true) {
        Ok((pages, low)) => Ok((Some(pages), Some(low))),
        Err(status) => {
            fail!(status, "no memory below 4 GiB for the paging-mode change (2 pages): {:#x}", status.as_usize())
        }
    }
}

/// The kernel block, with a stack for every AP to start; when that does not fit, with the largest
/// number of AP stacks that does (the other APs are left to the kernel, counted as those beyond
/// MAX_CPUS are). Refused only when even the block without AP stacks does not fit.
fn allocate_block(
    bs: &efi::BootServices,
    map: &memmap::FirmwareMap,
    machine: &Machine,
    place: &Placement,
    handed: usize,
    census: &mut smp::Census,
) -> Result<(BlockLayout, firmware::Pages)> {
    // A block fits when a free range is as large as it, and it grows with its AP stacks: the
    // largest number that fits is in [fits, fails). All of them first, then by halves.
    let wanted = census.to_start;
    let (mut fits, mut fails) = (0, wanted + 1);
    let mut aps = wanted;
    loop {
        let tables = handover::table_pages(place, machine);
        let ranges = handed + handover::map_ranges(machine);
        let layout = BlockLayout::new(map, machine, place, ranges, aps, tables)?;
        match firmware::try_allocate_block(bs, layout.size / PAGE) {
            Ok(pages) if aps + 1 == fails => {
                if aps < wanted {
                    census.fewer_stacks(aps);
                }
                return Ok((layout, pages));
            }
            Ok(_) => fits = aps, // freed again: a larger one may fit
            Err(status) if aps == 0 => {
                return fail!(
                    status,
                    "not enough memory for the kernel block ({} pages): AllocatePages failed ({:#x})",
                    layout.size / PAGE,
                    status.as_usize()
                )
            }
            Err(_) => {
                fails = aps;
                if aps <= fits {
                    fits = 0; // what fitted a moment ago no longer does: look lower
                }
            }
        }
        aps = (fits + fails) / 2;
    }
}

/// The direct map's size (all RAM-like memory, 4 GiB at least, the framebuffer, 1 GiB granular:
/// the rule of `direct_map_size` in site_scons/highboot/planning/directmap.py, which the build
/// uses) and page size (as the layout asks, from what the CPU has).
fn size_direct_map(map: &memmap::FirmwareMap, machine: &Machine) -> Result<(u64, u64)> {
    let pdpe1gb = machine.features.pdpe1gb;
    let page = match plan::ranges::DIRECT_MAP_PAGE {
        None if pdpe1gb => GIB,
        None => MIB2,
        Some(GIB) if !pdpe1gb => {
            return fail!(
                efi::Status::UNSUPPORTED,
                "the layout asks for 1 GiB direct-map pages; this CPU has none (pdpe1gb)"
            )
        }
        Some(page) => page,
    };
    let mut top = memmap::physical_top(map, handover::DIRECT_MAP_ALL_TYPES).max(4 * GIB);
    if let Some(fb) = &machine.framebuffer {
        top = top.max(fb.base + fb.size);
    }
    top = top.max(handover::direct_map_top(machine));
    let size = (top + GIB - 1) & !(GIB - 1);
    if size > plan::ranges::DIRECT_MAP_LIMIT {
        return fail!(
            efi::Status::OUT_OF_RESOURCES,
            "this machine's physical address space ({:#x} bytes) does not fit the layout's direct-map region ({:#x} bytes)",
            size,
            plan::ranges::DIRECT_MAP_LIMIT
        );
    }
    Ok((size, page))
}

/// KASLR: the kernel's slide and the direct map's base, from the best randomness there is (slide 0
/// and the layout's direct-map start without KASLR).
fn choose_placement(bs: &efi::BootServices, (dmap_size, dmap_page): (u64, u64)) -> Placement {
    let mut place =
        Placement { slide: 0, dmap_base: plan::ranges::DIRECT_MAP_BASE, dmap_size, dmap_page, source: None };
    if plan::kaslr::ENABLED {
        let (words, source) = random::words(bs);
        let slides = ((plan::kaslr::SLIDE_MAX - plan::kaslr::SLIDE_MIN) as u64) / plan::kaslr::SLIDE_ALIGN + 1;
        place.slide = plan::kaslr::SLIDE_MIN + (random::below(words[0], slides) * plan::kaslr::SLIDE_ALIGN) as i64;
        let slots = (plan::ranges::DIRECT_MAP_LIMIT - dmap_size) / plan::kaslr::DIRECT_MAP_ALIGN + 1;
        place.dmap_base =
            plan::ranges::DIRECT_MAP_BASE + random::below(words[1], slots) * plan::kaslr::DIRECT_MAP_ALIGN;
        place.source = Some(source);
        println!(
            "highboot: KASLR from {}: kernel slide {:#x} of {} choices, direct map at {:#x} of {} choices",
            source.name(),
            place.slide,
            slides,
            place.dmap_base,
            slots
        );
    }
    place
}
