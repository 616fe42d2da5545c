//! highboot's UEFI loader. Everything that could be known before boot was computed by the build
//! and is in `plan` (rendered from templates/loader/plan.rs.j2); this program does only what
//! cannot be known before boot: where RAM is, how much there is, which page sizes the CPU has.

#![no_std]
#![no_main]

use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use r_efi::efi;

mod com1;
mod console;
mod cpu;
mod fbmode;
mod firmware;
mod memmap;
mod paging;
mod random;
mod runtime;
mod sha256;
mod switch;

#[allow(dead_code)]
mod plan {
    include!(concat!(env!("HIGHBOOT_GEN"), "/plan.rs"));
}

/// The Handoff record, switch-data offsets and GDT shared with the trampoline (one description).
#[allow(dead_code)]
mod abi {
    include!(concat!(env!("HIGHBOOT_GEN"), "/abi.rs"));
}

use abi::{Handoff, GDT};

#[allow(dead_code)]
mod bootinfo {
    include!(concat!(env!("HIGHBOOT_GEN"), "/bootinfo.rs"));
}

core::arch::global_asm!(include_str!(concat!(env!("HIGHBOOT_GEN"), "/trampoline.S")));

extern "sysv64" {
    fn highboot_handoff(args: *const Handoff) -> !;
}

const PAGE: u64 = 4096;
const GIB: u64 = 1 << 30;
const MIB2: u64 = 2 << 20;
/// Room for memory-map descriptors the firmware adds between our first look and ExitBootServices.
const MAP_SLACK: usize = 64;

/// A failure before ExitBootServices: the message is already printed; return this status.
pub type Result<T> = core::result::Result<T, efi::Status>;

/// Print "highboot: error: ..." and evaluate to Err(status).
#[macro_export]
macro_rules! fail {
    ($status:expr, $($arg:tt)*) => {{
        $crate::println!("highboot: error: {}", format_args!($($arg)*));
        Err($status)
    }};
}

#[export_name = "efi_main"]
pub extern "efiapi" fn efi_main(image: efi::Handle, st: *mut efi::SystemTable) -> efi::Status {
    let tsc = cpu::rdtsc();
    console::init(st);
    // SAFETY: the firmware passes a valid system table.
    BOOT_SERVICES.store(unsafe { (*st).boot_services }, Ordering::SeqCst);
    IMAGE.store(image, Ordering::SeqCst);
    // SAFETY: as above.
    let bs = unsafe { &*(*st).boot_services };
    let pages_at_entry = if plan::FAULT.is_empty() { 0 } else { firmware::loader_pages(bs) };
    match boot(image, st, tsc) {
        Ok(never) => match never {},
        Err(status) => {
            if !plan::FAULT.is_empty() {
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

fn boot(image: efi::Handle, st: *mut efi::SystemTable, tsc_entry: u64) -> Result<Never> {
    // SAFETY: the firmware passes a valid system table and boot services until ExitBootServices.
    let bs = unsafe { &*(*st).boot_services };
    println!("highboot: loading {} ({} bytes)", plan::KERNEL_PATH_TEXT, plan::KERNEL_SIZE);

    if plan::FAULT == "panic" {
        panic!("injected panic before ExitBootServices [test build]");
    }
    // Everything allocated here is freed again if the boot fails before ExitBootServices.
    let (_kernel_pages, kernel) = read_verified_kernel(bs, image)?;
    let features = cpu::features();
    let (_low_pages, low) = paging_mode_switch(bs, &features)?;
    let nx_mask = if features.nx { u64::MAX } else { !(1u64 << 63) };
    firmware::set_framebuffer_mode(bs);
    let framebuffer = firmware::framebuffer(bs);
    let (rsdp, rsdp_revision) = firmware::rsdp(st);

    let mut map = memmap::FirmwareMap::new(bs, MAP_SLACK)?;
    map.refresh(bs)?;
    let (dmap_size, dmap_page) = size_direct_map(&map, &framebuffer, &features)?;
    let kaslr = choose_placement(bs, dmap_size);
    let slid = |va: u64| va.wrapping_add(kaslr.slide as u64);
    let stack_slid = |va: u64| if plan::STACK_SLIDES { slid(va) } else { va };
    let dmap_base = kaslr.dmap_base;
    let attributes = runtime::Attributes::read(st);
    let layout = lay_out_block(&map, &attributes, &kaslr, dmap_size, dmap_page)?;

    let block_pages = firmware::allocate_block(bs, layout.block_size / PAGE)?;
    let block = block_pages.base;
    // SAFETY: the block is ours, identity-mapped by the firmware, block_size bytes long.
    unsafe {
        ptr::write_bytes(block as *mut u8, 0, layout.block_size as usize);
        load_image(kernel, block, kaslr.slide as u64);
        paging::install_planned_tables(block, nx_mask);
    }
    let root = block + plan::TABLES_OFFSET;
    let trampoline = low.map_or(switch::trampoline_page(), |l| l.page);
    // SAFETY: root and the switch tables are in the block; the trampoline page is loader code.
    unsafe { paging::map_trampoline(block, trampoline) };

    let mut pool = paging::Pool::new(block + layout.pool_off, layout.pool_pages);
    for &(number, window) in plan::KASLR_TABLES.iter() {
        // SAFETY: root, the pool and the planned table are in the block.
        unsafe { paging::link_table(root, &mut pool, slid(window), block + plan::TABLES_OFFSET + number * PAGE) };
    }
    let area = block + layout.area_off;
    let info = area as *mut bootinfo::BootInfo;
    let dm = |phys: u64| dmap_base + phys;
    // SAFETY: the boot-info area is in the block and large enough (sized above).
    unsafe {
        ptr::copy_nonoverlapping(GDT.as_ptr(), (area + layout.gdt_off) as *mut u64, GDT.len());
        // GDTR at desc_off, IDTR (limit 0, base 0: a null IDT) at desc_off + 16.
        let gdtr = (area + layout.desc_off) as *mut u8;
        ptr::write_unaligned(gdtr as *mut u16, (GDT.len() * 8 - 1) as u16);
        ptr::write_unaligned(gdtr.add(2) as *mut u64, dm(area + layout.gdt_off));
        ptr::copy_nonoverlapping(plan::CMDLINE.as_ptr(), (area + layout.cmdline_off) as *mut u8, plan::CMDLINE.len());
        let i = &mut *info;
        i.magic = bootinfo::MAGIC;
        i.version = bootinfo::VERSION;
        i.size = core::mem::size_of::<bootinfo::BootInfo>() as u32;
        i.cpu_features = if features.pdpe1gb { bootinfo::cpu::PDPE1GB } else { 0 }
            | if features.nx { bootinfo::cpu::NX } else { 0 }
            | if features.la57 { bootinfo::cpu::LA57 } else { 0 };
        i.memory_map = dm(area + layout.memmap_off);
        i.memory_map_entry_size = core::mem::size_of::<bootinfo::MemoryRegion>() as u64;
        i.direct_map_base = dmap_base;
        i.direct_map_slide = dmap_base - plan::DIRECT_MAP_BASE;
        i.kernel_slide = kaslr.slide as u64;
        i.kernel_load_bias = plan::LOAD_BIAS.wrapping_add(kaslr.slide as u64);
        let mut flags = 0;
        if plan::EH_FRAME_HDR.1 != 0 {
            flags |= bootinfo::flags::EH_FRAME_HDR;
            i.eh_frame_hdr = slid(plan::EH_FRAME_HDR.0);
            i.eh_frame_hdr_size = plan::EH_FRAME_HDR.1;
        }
        i.tls_align = 1;
        if let Some((template, file_size, mem_size, align)) = plan::TLS {
            flags |= bootinfo::flags::TLS;
            i.tls_template = slid(template);
            i.tls_file_size = file_size;
            i.tls_mem_size = mem_size;
            i.tls_align = align;
        }
        i.direct_map_size = dmap_size;
        i.direct_map_page_size = dmap_page;
        i.kernel_phys_base = block;
        i.kernel_phys_size = layout.block_size;
        i.kernel_virt_base = slid(plan::IMAGE_VA);
        i.kernel_image_size = plan::IMAGE_SIZE;
        i.kernel_entry = slid(plan::ENTRY);
        i.stack_bottom = stack_slid(plan::STACK_BOTTOM);
        i.stack_top = stack_slid(plan::STACK_TOP);
        i.page_table_root = root;
        i.page_tables_phys = root;
        i.switch_phys = block + plan::SWITCH_OFFSET;
        i.switch_pages = plan::SWITCH_COUNT;
        i.trampoline_phys = trampoline;
        i.trampoline_virt = slid(plan::TRAMPOLINE_VA);
        if let Some(fb) = &framebuffer {
            flags |= bootinfo::flags::FRAMEBUFFER;
            i.framebuffer_phys = fb.base;
            i.framebuffer_virt = dm(fb.base);
            i.framebuffer_size = fb.size;
            i.framebuffer_width = fb.width;
            i.framebuffer_height = fb.height;
            i.framebuffer_stride = fb.stride;
            i.framebuffer_format = fb.format;
            [i.framebuffer_red_mask, i.framebuffer_green_mask, i.framebuffer_blue_mask, i.framebuffer_reserved_mask] =
                fb.masks;
        }
        if rsdp != 0 {
            flags |= bootinfo::flags::RSDP;
            i.rsdp = rsdp;
            i.rsdp_revision = rsdp_revision;
        }
        flags |= match kaslr.source {
            None => 0,
            Some(random::Source::RngProtocol) => bootinfo::flags::KASLR | bootinfo::flags::RANDOM_RNG_PROTOCOL,
            Some(random::Source::Rdrand) => bootinfo::flags::KASLR | bootinfo::flags::RANDOM_RDRAND,
            Some(random::Source::Tsc) => bootinfo::flags::KASLR | bootinfo::flags::RANDOM_WEAK,
        };
        if plan::EFI_REGION.is_none() {
            flags |= bootinfo::flags::NO_EFI_REGION;
        }
        i.efi_system_table = st as u64;
        i.efi_runtime_map = dm(area + layout.ranges_off);
        i.cmdline = dm(area + layout.cmdline_off);
        i.cmdline_len = (plan::CMDLINE.len() - 1) as u64;
        if i.cmdline_len > 0 {
            flags |= bootinfo::flags::CMDLINE;
        }
        i.flags = flags;
        i.tsc_loader_entry = tsc_entry;
    }

    println!("highboot: starting the kernel at {:#x}", slid(plan::ENTRY));
    let refused = map.exit_boot_services(bs, image);
    console::firmware_gone();
    BOOT_SERVICES.store(ptr::null_mut(), Ordering::SeqCst);
    if refused > 0 {
        println!("highboot: ExitBootServices refused {} stale memory-map key(s); retried with a fresh map", refused);
    }

    // No boot services from here on: no allocations, no console; errors go to COM1.
    // SAFETY: all of this writes into the block we own; the firmware's tables are never touched.
    unsafe {
        paging::map_direct(root, &mut pool, dmap_base, dmap_size, dmap_page, nx_mask);
        let regions = core::slice::from_raw_parts_mut(
            (area + layout.memmap_off) as *mut bootinfo::MemoryRegion,
            layout.map_capacity,
        );
        let count = memmap::convert(&map, regions, block, layout.block_size);
        let i = &mut *info;
        i.memory_map_count = count as u64;
        if let Some((efi_base, efi_size)) = plan::EFI_REGION {
            let ranges = core::slice::from_raw_parts_mut(
                (area + layout.ranges_off) as *mut bootinfo::EfiRange,
                layout.range_capacity,
            );
            let vmap = (area + layout.vmap_off) as *mut u8;
            let Some(mapped) = runtime::map_all(
                &map,
                &attributes,
                root,
                &mut pool,
                nx_mask,
                efi_base,
                efi_size,
                ranges,
                vmap,
                layout.vmap_capacity,
            ) else {
                fatal("the runtime services grew past the room planned for them after ExitBootServices");
            };
            let status = runtime::set_virtual_address_map(st, &map, vmap, mapped.descriptors);
            if status.is_error() {
                println!(
                    "highboot: warning: SetVirtualAddressMap failed ({:#x}); runtime services are unusable",
                    status.as_usize()
                );
            } else if let Some(va) = runtime::virtual_of(&ranges[..mapped.ranges], st as u64) {
                i.efi_system_table = va;
                i.flags |= bootinfo::flags::EFI_RUNTIME;
            }
            i.efi_runtime_count = mapped.ranges as u64;
        }
        i.page_tables_pages = plan::TABLE_COUNT + pool.used();
        cpu::enable_nx_and_wp(features.nx);
        i.tsc_handoff = cpu::rdtsc();
        let handoff = Handoff {
            cr3: root,
            trampoline_va: slid(plan::TRAMPOLINE_VA),
            identity_slot_va: dm(root + paging::index(trampoline, 0) * 8),
            descriptors_va: dm(area + layout.desc_off),
            stack_top: stack_slid(plan::STACK_TOP),
            entry: slid(plan::ENTRY),
            boot_info_va: dm(area),
            cr4_la57: if plan::LEVELS == 5 { switch::CR4_LA57 } else { 0 },
            ..Handoff::default()
        };
        match low {
            Some(l) => highboot_handoff(switch::handoff_args(l, root, &handoff)),
            None => highboot_handoff(&handoff),
        }
    }
}

/// Read the kernel file and check it is the one this loader was built for (size and SHA-256).
fn read_verified_kernel(bs: &efi::BootServices, image: efi::Handle) -> Result<(firmware::Pages, &'static [u8])> {
    let (pages, kernel) = firmware::read_kernel(bs, image)?;
    if sha256::digest(kernel) != plan::KERNEL_SHA256 {
        return fail!(
            efi::Status::SECURITY_VIOLATION,
            "{} does not match the kernel this loader was built for (SHA-256 differs); refusing to boot it",
            plan::KERNEL_PATH_TEXT
        );
    }
    Ok((pages, kernel))
}

/// The kernel's paging mode against the firmware's: the pages for the 4 <-> 5-level switch when
/// they differ (see switch.rs), a refusal when the CPU cannot run the layout's mode.
fn paging_mode_switch(
    bs: &efi::BootServices,
    features: &cpu::Features,
) -> Result<(Option<firmware::Pages>, Option<switch::LowPages>)> {
    if plan::FAULT == "firmware_5level" && features.la57 && !cpu::la57_active() {
        switch::firmware_to_5_level(bs)?;
        println!("highboot: test build: the firmware now runs 5-level paging");
    }
    if plan::LEVELS == 5 && !features.la57 {
        return fail!(
            efi::Status::UNSUPPORTED,
            "layout \"{}\" asks for 5-level paging (57-bit addresses); this CPU has no LA57 (CPUID.7.0:ECX bit 16)",
            plan::LAYOUT_NAME
        );
    }
    let firmware_levels = if cpu::la57_active() { 5 } else { 4 };
    if firmware_levels == plan::LEVELS {
        return Ok((None, None));
    }
    println!(
        "highboot: the firmware runs {}-level paging; the kernel gets {}-level paging",
        firmware_levels,
        plan::LEVELS
    );
    let (pages, low) = switch::allocate_low(bs)?;
    Ok((Some(pages), Some(low)))
}

/// The direct map's size (all RAM-like memory, 4 GiB at least, the framebuffer, 1 GiB granular)
/// and page size (as the layout asks, from what the CPU has).
fn size_direct_map(
    map: &memmap::FirmwareMap,
    framebuffer: &Option<firmware::Framebuffer>,
    features: &cpu::Features,
) -> Result<(u64, u64)> {
    let huge_1g = match plan::DIRECT_MAP_PAGE {
        plan::DirectMapPage::Largest => features.pdpe1gb,
        plan::DirectMapPage::Huge1G if !features.pdpe1gb => {
            return fail!(
                efi::Status::UNSUPPORTED,
                "the layout asks for 1 GiB direct-map pages; this CPU has none (pdpe1gb)"
            )
        }
        plan::DirectMapPage::Huge1G => true,
        plan::DirectMapPage::Large2M => false,
    };
    let mut top = memmap::physical_top(map).max(4 * GIB);
    if let Some(fb) = framebuffer {
        top = top.max(fb.base + fb.size);
    }
    let size = (top + GIB - 1) & !(GIB - 1);
    if size > plan::DIRECT_MAP_LIMIT {
        return fail!(
            efi::Status::OUT_OF_RESOURCES,
            "this machine's physical address space ({:#x} bytes) does not fit the layout's direct-map region ({:#x} bytes)",
            size,
            plan::DIRECT_MAP_LIMIT
        );
    }
    Ok((size, if huge_1g { GIB } else { MIB2 }))
}

/// KASLR: the kernel's slide and the direct map's base, from the best randomness there is (slide 0
/// and the layout's direct-map start without KASLR).
fn choose_placement(bs: &efi::BootServices, dmap_size: u64) -> Kaslr {
    let mut kaslr = Kaslr { slide: 0, dmap_base: plan::DIRECT_MAP_BASE, source: None };
    if plan::KASLR {
        let (words, source) = random::words(bs);
        let slides = ((plan::SLIDE_MAX - plan::SLIDE_MIN) as u64) / plan::SLIDE_ALIGN + 1;
        kaslr.slide = plan::SLIDE_MIN + (random::below(words[0], slides) * plan::SLIDE_ALIGN) as i64;
        let slots = (plan::DIRECT_MAP_LIMIT - dmap_size) / plan::DIRECT_MAP_ALIGN + 1;
        kaslr.dmap_base = plan::DIRECT_MAP_BASE + random::below(words[1], slots) * plan::DIRECT_MAP_ALIGN;
        kaslr.source = Some(source);
        println!(
            "highboot: KASLR from {}: kernel slide {:#x} of {} choices, direct map at {:#x} of {} choices",
            source.name(),
            kaslr.slide,
            slides,
            kaslr.dmap_base,
            slots
        );
    }
    kaslr
}

/// The block's dynamic tail, sized at boot: the table pool (direct map, slid kernel tables, EFI
/// runtime mappings), then one area for the boot info, the GDT and IDT descriptors, the command
/// line, the memory map and the runtime ranges. Offsets are from the block's base.
struct BlockLayout {
    pool_pages: u64,
    map_capacity: usize,
    range_capacity: usize,
    vmap_capacity: usize,
    gdt_off: u64,
    desc_off: u64,
    cmdline_off: u64,
    memmap_off: u64,
    ranges_off: u64,
    vmap_off: u64,
    pool_off: u64,
    area_off: u64,
    block_size: u64,
}

fn lay_out_block(
    map: &memmap::FirmwareMap,
    attributes: &runtime::Attributes,
    kaslr: &Kaslr,
    dmap_size: u64,
    dmap_page: u64,
) -> Result<BlockLayout> {
    let mut pool_pages = paging::tables_needed(kaslr.dmap_base, dmap_size, dmap_page);
    if let (Some(first), Some(last)) = (plan::KASLR_TABLES.first(), plan::KASLR_TABLES.last()) {
        let start = first.1.wrapping_add(kaslr.slide as u64);
        pool_pages += paging::tables_needed(start, last.1 + plan::SLIDE_ALIGN - first.1, plan::SLIDE_ALIGN);
    }
    // EFI runtime services: room in the layout's EFI region, tables for their mappings.
    let (rt_descriptors, rt_pages) = runtime::census(map);
    if let Some((efi_base, efi_size)) = plan::EFI_REGION {
        let span = ((rt_pages + 512) * PAGE).min(efi_size);
        if rt_pages * PAGE > efi_size {
            return fail!(
                efi::Status::OUT_OF_RESOURCES,
                "the firmware's runtime services need {:#x} bytes; the layout's EFI region has {:#x}",
                rt_pages * PAGE,
                efi_size
            );
        }
        pool_pages += paging::tables_needed(efi_base, span, PAGE);
    }
    let range_capacity = rt_descriptors + attributes.len() + 2 * runtime::SLACK;
    let vmap_capacity = rt_descriptors + runtime::SLACK;
    let map_capacity = map.len() + MAP_SLACK + 4;
    let info_size = core::mem::size_of::<bootinfo::BootInfo>() as u64;
    let gdt_off = (info_size + 15) & !15;
    let desc_off = gdt_off + 32;
    let cmdline_off = desc_off + 32;
    let memmap_off = (cmdline_off + plan::CMDLINE.len() as u64 + 15) & !15;
    let ranges_off = memmap_off + (map_capacity * core::mem::size_of::<bootinfo::MemoryRegion>()) as u64;
    let vmap_off = ranges_off + (range_capacity * core::mem::size_of::<bootinfo::EfiRange>()) as u64;
    let area_size = vmap_off + (vmap_capacity * map.descriptor_size()) as u64;
    let pool_off = plan::STATIC_SIZE;
    let area_off = pool_off + pool_pages * PAGE;
    let block_size = (area_off + area_size + PAGE - 1) & !(PAGE - 1);
    Ok(BlockLayout {
        pool_pages,
        map_capacity,
        range_capacity,
        vmap_capacity,
        gdt_off,
        desc_off,
        cmdline_off,
        memmap_off,
        ranges_off,
        vmap_off,
        pool_off,
        area_off,
        block_size,
    })
}

/// Where KASLR put things (slide 0 and the layout's direct-map start without it).
struct Kaslr {
    slide: i64,
    dmap_base: u64,
    source: Option<random::Source>,
}

/// Copy the kernel's segments to their block offsets and apply its relocations for `slide` (bss
/// is already zero), in the block, before any table that maps the kernel is live: RELRO pages are
/// read-only from the kernel's first instruction.
unsafe fn load_image(kernel: &[u8], block: u64, slide: u64) {
    for seg in plan::SEGMENTS.iter() {
        let src = &kernel[seg.file_offset as usize..(seg.file_offset + seg.filesz) as usize];
        ptr::copy_nonoverlapping(src.as_ptr(), (block + seg.block_offset) as *mut u8, src.len());
    }
    for &(offset, value) in plan::RELOCATIONS.iter() {
        ptr::write_unaligned((block + offset) as *mut u64, value.wrapping_add(slide));
    }
    for &(offset, value) in plan::ABSOLUTE_RELOCATIONS.iter() {
        ptr::write_unaligned((block + offset) as *mut u64, value);
    }
}

/// A failure after ExitBootServices: nothing to return to; say why on COM1 and stop.
pub fn fatal(message: &str) -> ! {
    println!("highboot: error: {}; halting", message);
    loop {
        // SAFETY: halting is always allowed at CPL 0.
        unsafe { core::arch::asm!("cli; hlt") };
    }
}

/// Boot services and our image handle while they may be used: a panic before ExitBootServices
/// returns an EFI error to the boot manager through Exit(), as any other failure does.
static BOOT_SERVICES: AtomicPtr<efi::BootServices> = AtomicPtr::new(ptr::null_mut());
static IMAGE: AtomicPtr<core::ffi::c_void> = AtomicPtr::new(ptr::null_mut());

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("highboot: loader bug: {}", info);
    let bs = BOOT_SERVICES.swap(ptr::null_mut(), Ordering::SeqCst);
    if !bs.is_null() {
        println!("highboot: the kernel was not started (EFI status {:#x})", efi::Status::ABORTED.as_usize());
        // SAFETY: boot services are still up (cleared at ExitBootServices) and IMAGE is our handle;
        // Exit() does not return to us: the firmware unwinds to whoever started this image.
        unsafe { ((*bs).exit)(IMAGE.load(Ordering::SeqCst), efi::Status::ABORTED, 0, ptr::null_mut()) };
    }
    loop {
        // SAFETY: halting is always allowed at CPL 0.
        unsafe { core::arch::asm!("cli; hlt") };
    }
}
