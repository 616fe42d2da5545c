//! The Limine boot protocol's handover. The build found the kernel's requests and laid out their
//! responses in one blob (rendered::protocol::limine); here the blob is copied into the block's
//! area, its pointers moved to the area's direct-map (HHDM) address, each response's address
//! written into its request in the loaded kernel, and what only the boot knows filled in: the
//! HHDM offset, where the kernel and its files are, the firmware's tables, the time, the memory
//! map (after ExitBootServices) and the processors.

use core::ptr;

use r_efi::efi;

use crate::block::{Block, Placement};
use crate::cpu;
use crate::failure::fatal;
use crate::interrupts;
use crate::machine::Machine;
use crate::memmap;
use crate::modules::Handed;
use crate::paging;
use crate::rendered::bootinfo::{pte, MemoryRegion};
use crate::rendered::plan;
use crate::rendered::protocol::limine::{self as lim, When};
use crate::rendered::protocol::{memory_type, MemoryKind};
use crate::smp::{Census, Started};

const PAGE: u64 = 4096;
/// The protocol's memory-map types for the kernel's image and modules, for what the loader left it
/// (the rest of the block: stack, tables, responses; the kernel file), and for the first page.
const EXECUTABLE_AND_MODULES: u32 = memory_type(MemoryKind::Kernel);
const BOOTLOADER_RECLAIMABLE: u32 = memory_type(MemoryKind::LoaderReclaimable);
const RESERVED: u32 = memory_type(MemoryKind::Reserved);
/// The SMBIOS entry points' configuration-table GUIDs (SMBIOS 2.x "_SM_", SMBIOS 3.x "_SM3_").
const SMBIOS_GUID: efi::Guid =
    efi::Guid::from_fields(0xeb9d2d31, 0x2d88, 0x11d3, 0x9a, 0x16, &[0x00, 0x90, 0x27, 0x3f, 0xc1, 0x4d]);
const SMBIOS3_GUID: efi::Guid =
    efi::Guid::from_fields(0xf2fd1544, 0x9794, 0x4a2c, 0x99, 0x2e, &[0xe5, 0xbb, 0xcf, 0x20, 0xe3, 0x94]);

/// Where the handover lives in this boot.
pub struct Info {
    /// Physical address of the blob (the responses) in the block's area.
    blob: u64,
    /// Its direct-map address: what the kernel reads.
    blob_va: u64,
    /// The arrays sized at boot, after the blob (physical): memory-map entry pointers, CPU record
    /// pointers, the framebuffer with its modes and EDID (`framebuffer_room`), the EFI memory map.
    memmap_pointers: u64,
    cpu_pointers: u64,
    framebuffer: u64,
    efi_memmap: u64,
    efi_memmap_capacity: u64,
    /// The CPU records (physical).
    cpu_records: u64,
    /// The kernel's image in the block (physical): a request's place in the block.
    image: u64,
    /// The direct map's base (the HHDM offset).
    hhdm: u64,
    tsc_per_us: u64,
    bsp_apic_id: u32,
    x2apic: bool,
    /// The firmware lists the processors (an ACPI MADT): the MP response is given (else NULL).
    mp: bool,
    /// The responses handed over only when the machine has the thing.
    have: [bool; 6],
    /// The ACPI MADT: the interrupt controllers the entry state masks.
    madt: Option<&'static [u8]>,
    /// The BSP's LINT pins' NMI wiring (revision 5 on).
    lint_nmi: u64,
    /// The firmware's tables the memory map gives as RESERVED_MAPPED (revision 5 on).
    firmware: FirmwareTables,
    /// The IOMMUs disabled at entry (revision 5 on, without a keep-IOMMU request).
    iommus: Iommus,
}

const fn align16(n: u64) -> u64 {
    (n + 15) & !15
}

/// The protocol's part of the block's area: the blob, then the arrays sized at boot.
pub fn area_size(map_capacity: usize, aps: usize, descriptor_size: usize, machine: &Machine) -> u64 {
    let (map, cpus) = (map_capacity as u64, aps as u64 + 1);
    align16(lim::BLOB.len() as u64) + 8 * map + 8 * cpus + framebuffer_room(machine) + map * descriptor_size as u64
}

const FRAMEBUFFER_SIZE: u64 = core::mem::size_of::<lim::Framebuffer>() as u64;
const VIDEO_MODE_SIZE: u64 = core::mem::size_of::<lim::VideoMode>() as u64;

/// The framebuffer's part of the area: its struct and the pointer to it, then room for every mode of
/// the GOP (a pointer and a record each), then its EDID.
fn framebuffer_room(machine: &Machine) -> u64 {
    let (modes, edid) = machine.framebuffer.as_ref().map_or((0, 0), |fb| (fb.max_mode as u64, fb.edid.1 as u64));
    align16(FRAMEBUFFER_SIZE + 8) + align16(modes * (8 + VIDEO_MODE_SIZE)) + align16(edid)
}

/// No-execute for the HHDM and revision 0's identity map, unless DIRECT_MAP_EXEC maps them
/// executable (as Limine does).
const HHDM_NX: u64 = if plan::options::DIRECT_MAP_EXEC { 0 } else { paging::NO_EXECUTE };

/// A framebuffer page in the HHDM: read/write, PAT index 5 (write-combining in the protocol's PAT):
/// PWT and PAT (bit 7 of a 4 KiB entry) set, PCD clear.
const FRAMEBUFFER_PAGE: u64 = paging::PRESENT | paging::WRITABLE | HHDM_NX | pte::WRITE_THROUGH | 1 << 7;

/// The framebuffer's pages (physical base, length), 4 KiB-aligned outward.
fn framebuffer_pages(machine: &Machine) -> Option<(u64, u64)> {
    let fb = machine.framebuffer.as_ref()?;
    let (base, end) = (fb.base & !(PAGE - 1), (fb.base + fb.size + PAGE - 1) & !(PAGE - 1));
    Some((base, end - base))
}

/// Revision 0 keeps the lower half: the identity map stays at the kernel's entry.
pub const KEEPS_IDENTITY: bool = lim::IDENTITY_MAP;
/// Revision 0's HHDM (and identity map) covers every memory-map region, whatever its type; the
/// others' leave out the reserved ones above 4 GiB.
pub const DIRECT_MAP_ALL_TYPES: bool = lim::IDENTITY_MAP;

/// What else the HHDM must cover: from revision 4, every ACPI table; from revision 5, the SMBIOS
/// entry points and tables and the EFI system table with what it references.
pub fn direct_map_top(machine: &Machine) -> u64 {
    let acpi = if lim::ACPI_TABLES_MAPPED { machine.acpi_tables.top() } else { 0 };
    // SAFETY: boot services are up: the firmware's tables are in place and identity-mapped.
    acpi.max(unsafe { FirmwareTables::find(machine) }.top())
}

/// Ranges of its own the protocol can add to the memory map: the framebuffer's; from revision 4, a
/// RESERVED_MAPPED one for each ACPI table outside the firmware's ACPI ranges; from revision 5, one
/// for each firmware table (FirmwareTables; the EFI runtime services' ranges replace the firmware's
/// own).
pub fn map_ranges(machine: &Machine) -> usize {
    let acpi = if lim::ACPI_TABLES_MAPPED { machine.acpi_tables.ranges().len() } else { 0 };
    machine.framebuffer.is_some() as usize + acpi + if lim::FIRMWARE_TABLES_MAPPED { FIRMWARE_TABLES } else { 0 }
}

/// At most this many firmware tables (revision 5): two SMBIOS entry points and their tables, the
/// EFI system table, its runtime services table, configuration table array and vendor string.
const FIRMWARE_TABLES: usize = 8;

/// The firmware's tables revision 5 hands over as RESERVED_MAPPED, in the HHDM (none before).
#[derive(Clone, Copy)]
struct FirmwareTables {
    ranges: [(u64, u64); FIRMWARE_TABLES],
}

impl FirmwareTables {
    /// # Safety
    /// The EFI system table and the SMBIOS entry points are in place and identity-mapped.
    unsafe fn find(machine: &Machine) -> FirmwareTables {
        let mut t = FirmwareTables { ranges: [(0, 0); FIRMWARE_TABLES] };
        if !lim::FIRMWARE_TABLES_MAPPED {
            return t;
        }
        let st = machine.st;
        let s = &*st;
        let vendor = s.firmware_vendor as u64;
        let mut vendor_len = 0u64;
        while vendor != 0 && ptr::read_unaligned((vendor + vendor_len) as *const u16) != 0 {
            vendor_len += 2;
        }
        let entry_32 = config_table(machine, SMBIOS_GUID);
        let entry_64 = config_table(machine, SMBIOS3_GUID);
        // SMBIOS 2.x: length at 5, table length (u16) at 0x16, table address (u32) at 0x18;
        // SMBIOS 3.x: length at 6, table maximum size (u32) at 0x0c, table address (u64) at 0x10.
        let (table_32, table_64) = (
            if entry_32 != 0 {
                (
                    ptr::read_unaligned((entry_32 + 0x18) as *const u32) as u64,
                    ptr::read_unaligned((entry_32 + 0x16) as *const u16) as u64,
                )
            } else {
                (0, 0)
            },
            if entry_64 != 0 {
                (
                    ptr::read_unaligned((entry_64 + 0x10) as *const u64),
                    ptr::read_unaligned((entry_64 + 0x0c) as *const u32) as u64,
                )
            } else {
                (0, 0)
            },
        );
        let byte = |at: u64, off: u64| if at == 0 { 0 } else { ptr::read_unaligned((at + off) as *const u8) as u64 };
        t.ranges = [
            (st as u64, s.hdr.header_size as u64),
            (
                s.runtime_services as u64,
                if s.runtime_services.is_null() { 0 } else { (*s.runtime_services).hdr.header_size as u64 },
            ),
            (
                s.configuration_table as u64,
                (s.number_of_table_entries * core::mem::size_of::<efi::ConfigurationTable>()) as u64,
            ),
            (vendor, if vendor == 0 { 0 } else { vendor_len + 2 }),
            (entry_32, byte(entry_32, 5)),
            table_32,
            (entry_64, byte(entry_64, 6)),
            table_64,
        ];
        t
    }

    fn top(&self) -> u64 {
        self.ranges.iter().filter(|r| r.0 != 0 && r.1 != 0).map(|&(base, length)| base + length).max().unwrap_or(0)
    }
}

/// Revision 5 on: the EFI runtime services' code and data, and each firmware table outside them
/// (FirmwareTables), as RESERVED_MAPPED memory-map ranges.
fn firmware_mapped<'a>(info: &'a Info, map: &'a memmap::FirmwareMap) -> impl Iterator<Item = (u64, u64, u32)> + 'a {
    let runtime = |t: u32| matches!(t, efi::RUNTIME_SERVICES_CODE | efi::RUNTIME_SERVICES_DATA);
    let runtime_ranges = map
        .iter()
        .filter(move |d| lim::FIRMWARE_TABLES_MAPPED && runtime(d.r#type))
        .map(|d| (d.physical_start, d.number_of_pages * PAGE, lim::MEMMAP_RESERVED_MAPPED));
    let tables = if lim::FIRMWARE_TABLES_MAPPED { &info.firmware.ranges[..] } else { &[] };
    let outside = tables.iter().filter(|r| r.0 != 0 && r.1 != 0).filter_map(move |&(base, length)| {
        let inside = map.iter().any(|d| {
            runtime(d.r#type)
                && d.physical_start <= base
                && base + length <= d.physical_start + d.number_of_pages * PAGE
        });
        let (start, end) = (base & !(PAGE - 1), (base + length + PAGE - 1) & !(PAGE - 1));
        (!inside).then_some((start, end - start, lim::MEMMAP_RESERVED_MAPPED))
    });
    runtime_ranges.chain(outside)
}

/// The IOMMUs' registers (physical): Intel VT-d remapping units (the ACPI DMAR's DRHD entries) and
/// AMD-Vi IOMMUs (the IVRS's IVHD entries), read before ExitBootServices.
#[derive(Clone, Copy, Default)]
struct Iommus {
    vtd: [u64; 8],
    amd: [u64; 8],
}

impl Iommus {
    /// # Safety
    /// Boot services are up: the ACPI tables are in place and identity-mapped.
    unsafe fn find(machine: &Machine) -> Iommus {
        let mut t = Iommus::default();
        if !lim::IOMMU_OFF {
            return t;
        }
        let (rsdp, revision) = machine.rsdp;
        let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]) as usize;
        let u64_at = |b: &[u8], at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(w)
        };
        // DMAR: remapping structures from offset 48, each type (u16) and length (u16); a DRHD
        // (type 0) has its register base at 8.
        if let Some(dmar) = crate::smp::acpi_table(rsdp, revision, b"DMAR") {
            let (mut at, mut n) = (48, 0);
            while at + 4 <= dmar.len() && u16_at(dmar, at + 2) >= 4 && n < t.vtd.len() {
                let len = u16_at(dmar, at + 2);
                if u16_at(dmar, at) == 0 && len >= 16 && at + 16 <= dmar.len() {
                    t.vtd[n] = u64_at(dmar, at + 8);
                    n += 1;
                }
                at += len;
            }
        }
        // IVRS: IVDBs from offset 48, each type (u8) and length (u16 at 2); an IVHD (types 0x10,
        // 0x11, 0x40: one IOMMU may be listed in each) has its registers' base at 8.
        if let Some(ivrs) = crate::smp::acpi_table(rsdp, revision, b"IVRS") {
            let (mut at, mut n) = (48, 0);
            while at + 4 <= ivrs.len() && u16_at(ivrs, at + 2) >= 4 && n < t.amd.len() {
                let len = u16_at(ivrs, at + 2);
                if matches!(ivrs[at], 0x10 | 0x11 | 0x40) && len >= 16 && at + 16 <= ivrs.len() {
                    t.amd[n] = u64_at(ivrs, at + 8);
                    n += 1;
                }
                at += len;
            }
        }
        t
    }

    /// Revision 5 on, without a keep-IOMMU request: VT-d DMA translation and interrupt remapping
    /// off (GCMD.TE, then GCMD.IRE, each waited for in GSTS), AMD-Vi off (control register's
    /// IommuEn).
    ///
    /// # Safety
    /// Boot services are gone; the registers are identity-mapped (the firmware's tables).
    unsafe fn disable(&self) {
        const GCMD: u64 = 0x18;
        const GSTS: u64 = 0x1c;
        /// GSTS bits that are one-shot commands in GCMD (not to be written back).
        const ONE_SHOT: u32 = 0x96ff_ffff;
        const TE: u32 = 1 << 31;
        const IRE: u32 = 1 << 25;
        for &base in self.vtd.iter().filter(|&&b| b != 0) {
            for bit in [TE, IRE] {
                let status = ptr::read_volatile((base + GSTS) as *const u32);
                if status & bit != 0 {
                    ptr::write_volatile((base + GCMD) as *mut u32, status & ONE_SHOT & !bit);
                    let mut spins = 0u32;
                    while ptr::read_volatile((base + GSTS) as *const u32) & bit != 0 && spins < 10_000_000 {
                        core::hint::spin_loop();
                        spins += 1;
                    }
                }
            }
        }
        const AMD_CONTROL: u64 = 0x18;
        const IOMMU_EN: u64 = 1;
        for &base in self.amd.iter().filter(|&&b| b != 0) {
            let control = ptr::read_volatile((base + AMD_CONTROL) as *const u64);
            if control & IOMMU_EN != 0 {
                ptr::write_volatile((base + AMD_CONTROL) as *mut u64, control & !IOMMU_EN);
            }
        }
    }
}

/// The ACPI tables (their pages) that no ACPI range of the firmware's map holds, as
/// RESERVED_MAPPED memory-map ranges (revision 4 on).
fn acpi_outside<'a>(machine: &'a Machine, map: &'a memmap::FirmwareMap) -> impl Iterator<Item = (u64, u64, u32)> + 'a {
    let tables = if lim::ACPI_TABLES_MAPPED { machine.acpi_tables.ranges() } else { &[] };
    tables.iter().filter_map(move |&(base, length)| {
        let inside = map.iter().any(|d| {
            matches!(d.r#type, efi::ACPI_RECLAIM_MEMORY | efi::ACPI_MEMORY_NVS)
                && d.physical_start <= base
                && base + length <= d.physical_start + d.number_of_pages * PAGE
        });
        let (start, end) = (base & !(PAGE - 1), (base + length + PAGE - 1) & !(PAGE - 1));
        (!inside).then_some((start, end - start, lim::MEMMAP_RESERVED_MAPPED))
    })
}

/// Table pages the protocol's own mappings can take from the block's pool: the framebuffer's
/// write-combining pages in the HHDM; for revision 0 the identity map (the direct map's page
/// size, 4 KiB pages up to the first 2 MiB), its framebuffer pages and the trampoline page.
pub fn table_pages(place: &Placement, machine: &Machine) -> u64 {
    let fb = |at: u64| framebuffer_pages(machine).map_or(0, |(base, len)| paging::tables_needed(at + base, len, PAGE));
    let mut pages = fb(place.dmap_base);
    if lim::IDENTITY_MAP {
        pages += paging::tables_needed(0, place.dmap_size, place.dmap_page)
            + paging::tables_needed(0, 2 << 20, PAGE)
            + fb(0)
            + (plan::tables::LEVELS as u64 - 1);
    }
    pages
}

fn when_index(w: When) -> usize {
    w as usize
}

impl Info {
    /// A response in the blob, for writing.
    unsafe fn response<T>(&self, offset: u64) -> &'static mut T {
        &mut *((self.blob + offset) as *mut T)
    }

    /// A planned kernel address's place in the block (the image is copied at its start).
    fn in_image(&self, va: u64) -> u64 {
        self.image + (va - plan::placement::IMAGE_VA)
    }

    fn direct(&self, phys: u64) -> u64 {
        self.hhdm + phys
    }

    /// Hand the response to its request: its address into the request's response field.
    unsafe fn answer(&self, request_va: u64, response: u64) {
        let field = self.in_image(request_va) + 40;
        ptr::write_unaligned(field as *mut u64, self.blob_va + response);
    }
}

/// Copy the blob, move its pointers, write the base revision tag's words and fill every response
/// known before ExitBootServices.
///
/// # Safety
/// The block is loaded (see `Block::load`) and its area is laid out for this boot; boot services
/// are up.
pub unsafe fn fill(block: &Block, place: &Placement, machine: &Machine, handed: &Handed, census: &Census) -> Info {
    let layout = &block.layout;
    super::install_descriptors(block, place);
    let blob = block.in_area(layout.handover_off);
    let memmap_pointers = blob + align16(lim::BLOB.len() as u64);
    let cpu_pointers = memmap_pointers + 8 * layout.map_capacity as u64;
    let framebuffer = cpu_pointers + 8 * (census.to_start as u64 + 1);
    let efi_memmap = framebuffer + framebuffer_room(machine);
    let mut info = Info {
        blob,
        blob_va: place.direct(blob),
        memmap_pointers,
        cpu_pointers,
        framebuffer,
        efi_memmap,
        efi_memmap_capacity: (layout.map_capacity * layout.descriptor_size) as u64,
        cpu_records: block.in_area(layout.cpus_off),
        image: block.base,
        hhdm: place.dmap_base,
        tsc_per_us: census.tsc_per_us(),
        bsp_apic_id: census.bsp_apic_id,
        x2apic: census.x2apic,
        mp: census.madt().is_some(),
        have: [true; 6],
        madt: census.madt(),
        lint_nmi: census.bsp_lint_nmi(),
        firmware: FirmwareTables::find(machine),
        iommus: Iommus::find(machine),
    };
    ptr::copy_nonoverlapping(lim::BLOB.as_ptr(), blob as *mut u8, lim::BLOB.len());
    for &at in lim::FIXUPS.iter() {
        let p = (blob + at as u64) as *mut u64;
        ptr::write_unaligned(p, ptr::read_unaligned(p) + info.blob_va);
    }
    if let Some(tag) = lim::TAG {
        let tag = info.in_image(tag) as *mut u64;
        if lim::WRITE_LOADED_REVISION {
            ptr::write_volatile(tag.add(1), lim::REVISION);
        }
        if lim::SUPPORTED {
            ptr::write_volatile(tag.add(2), 0);
        }
    }
    if info.tsc_per_us == 0 && (lim::TSC_FREQUENCY.is_some() || lim::BOOTLOADER_PERFORMANCE.is_some()) {
        info.tsc_per_us = measure_tsc(machine);
    }
    fill_known(&mut info, place, machine, handed);
    info
}

/// TSC ticks per microsecond, against the firmware's Stall (1 ms).
unsafe fn measure_tsc(machine: &Machine) -> u64 {
    let bs = &*(*machine.st).boot_services;
    let t0 = cpu::rdtsc();
    (bs.stall)(1000);
    ((cpu::rdtsc() - t0) / 1000).max(1)
}

unsafe fn fill_known(info: &mut Info, place: &Placement, machine: &Machine, handed: &Handed) {
    if let Some(at) = lim::HHDM {
        info.response::<lim::HhdmResponse>(at).offset = info.hhdm;
    }
    if let Some(at) = lim::PAGING_MODE {
        // A 4-level layout the kernel prefers 5-level paging on: this CPU decides.
        let five = crate::paging_mode::kernel_levels(&machine.features) == 5;
        info.response::<lim::PagingModeResponse>(at).mode =
            if five { lim::PAGING_MODE_5LVL } else { lim::PAGING_MODE_4LVL };
    }
    if let Some(at) = lim::EXECUTABLE_ADDRESS {
        let r = info.response::<lim::ExecutableAddressResponse>(at);
        r.physical_base = info.image;
        r.virtual_base = place.slid(plan::placement::IMAGE_VA);
    }
    if let Some(at) = lim::EXECUTABLE_FILE {
        let (phys, _) = handed.kernel_file.unwrap_or((0, 0));
        info.response::<lim::File>(at).address = info.direct(phys);
    }
    for &(at, n) in lim::MODULE_FILES.iter() {
        let (phys, _) = handed.modules.get(n);
        info.response::<lim::File>(at).address = if phys == 0 { 0 } else { info.direct(phys) };
    }
    let st = machine.st as u64;
    if let Some(at) = lim::EFI_SYSTEM_TABLE {
        info.response::<lim::EfiSystemTableResponse>(at).address =
            if lim::EFI_SYSTEM_TABLE_PHYSICAL { st } else { info.direct(st) };
    }
    let (rsdp, _) = machine.rsdp;
    info.have[when_index(When::Rsdp)] = rsdp != 0;
    if let (Some(at), true) = (lim::RSDP, rsdp != 0) {
        info.response::<lim::RsdpResponse>(at).address = if lim::RSDP_PHYSICAL { rsdp } else { info.direct(rsdp) };
    }
    let (entry_32, entry_64) = (config_table(machine, SMBIOS_GUID), config_table(machine, SMBIOS3_GUID));
    info.have[when_index(When::Smbios)] = entry_32 != 0 || entry_64 != 0;
    if let Some(at) = lim::SMBIOS {
        let r = info.response::<lim::SmbiosResponse>(at);
        let addr = |phys: u64| if phys == 0 || lim::SMBIOS_PHYSICAL { phys } else { info.direct(phys) };
        r.entry_32 = addr(entry_32);
        r.entry_64 = addr(entry_64);
    }
    if let Some(at) = lim::DATE_AT_BOOT {
        info.response::<lim::DateAtBootResponse>(at).timestamp = unix_time(machine);
    }
    if let Some((at, count)) = lim::ENTROPY {
        let values = core::slice::from_raw_parts_mut((info.blob + at) as *mut u64, count);
        crate::random::fill(&*(*machine.st).boot_services, values);
    }
    info.have[when_index(When::TscFrequency)] = info.tsc_per_us != 0;
    if let Some(at) = lim::TSC_FREQUENCY {
        info.response::<lim::TscFrequencyResponse>(at).frequency = info.tsc_per_us * 1_000_000;
    }
    if let Some(at) = lim::BOOTLOADER_PERFORMANCE {
        info.response::<lim::BootloaderPerformanceResponse>(at).init_usec = machine.tsc_entry / info.tsc_per_us.max(1);
    }
    info.have[when_index(When::Framebuffer)] = machine.framebuffer.is_some();
    info.have[when_index(When::Mp)] = info.mp;
    if let (Some(at), Some(fb)) = (lim::FRAMEBUFFER, &machine.framebuffer) {
        let m = video_mode(fb.width, fb.height, fb.stride, fb.masks);
        let (modes, count) = video_modes(info, machine, fb);
        // The EDID after the modes, copied: the firmware's copy is gone with its boot services.
        let edid = align16(modes + fb.max_mode as u64 * (8 + VIDEO_MODE_SIZE));
        if fb.edid.1 != 0 {
            ptr::copy_nonoverlapping(fb.edid.0 as *const u8, edid as *mut u8, fb.edid.1);
        }
        (info.framebuffer as *mut lim::Framebuffer).write(lim::Framebuffer {
            address: info.direct(fb.base),
            width: m.width,
            height: m.height,
            pitch: m.pitch,
            bpp: m.bpp,
            memory_model: m.memory_model,
            red_mask_size: m.red_mask_size,
            red_mask_shift: m.red_mask_shift,
            green_mask_size: m.green_mask_size,
            green_mask_shift: m.green_mask_shift,
            blue_mask_size: m.blue_mask_size,
            blue_mask_shift: m.blue_mask_shift,
            unused: [0; 7],
            edid_size: fb.edid.1 as u64,
            edid: if fb.edid.1 == 0 { 0 } else { info.direct(edid) },
            mode_count: count,
            modes: if count == 0 { 0 } else { info.direct(modes) },
        });
        let pointer = info.framebuffer + FRAMEBUFFER_SIZE;
        ptr::write_unaligned(pointer as *mut u64, info.direct(info.framebuffer));
        let r = info.response::<lim::FramebufferResponse>(at);
        r.framebuffer_count = 1;
        r.framebuffers = info.direct(pointer);
    }
    // Every response known now is handed over; the memory map's, the EFI memory map's and the
    // processors' are complete before the kernel runs, so they are handed over now too.
    for &(request, response, when) in lim::ANSWERS.iter() {
        if when == When::Always || (when != When::Mp && info.have[when_index(when)]) {
            info.answer(request, response);
        }
    }
}

/// A framebuffer mode as the protocol describes it: a pixel ends at its highest mask bit (a
/// PixelBitMask mode may have 24-bit pixels), a line is the firmware's pixels per scan line.
fn video_mode(width: u32, height: u32, stride: u32, masks: [u32; 4]) -> lim::VideoMode {
    let bits = 32 - (masks[0] | masks[1] | masks[2] | masks[3]).leading_zeros();
    let bpp = ((bits + 7) & !7) as u16;
    let (r, g, b) = (mask(masks[0]), mask(masks[1]), mask(masks[2]));
    lim::VideoMode {
        pitch: stride as u64 * (bpp as u64 / 8),
        width: width as u64,
        height: height as u64,
        bpp,
        memory_model: lim::FRAMEBUFFER_RGB,
        red_mask_size: r.0,
        red_mask_shift: r.1,
        green_mask_size: g.0,
        green_mask_shift: g.1,
        blue_mask_size: b.0,
        blue_mask_shift: b.1,
    }
}

/// The GOP's modes with a linear framebuffer (not PixelBltOnly), in its mode numbers' order, the
/// current one among them: their pointers' array (physical, after the framebuffer's struct) and
/// count. The records follow the pointers, room for every mode of the GOP.
///
/// # Safety
/// Boot services are up; the area is laid out for this machine (`framebuffer_room`).
unsafe fn video_modes(info: &Info, machine: &Machine, fb: &crate::firmware::Framebuffer) -> (u64, u64) {
    let bs = &*(*machine.st).boot_services;
    let pointers = info.framebuffer + align16(FRAMEBUFFER_SIZE + 8);
    let records = (pointers + 8 * fb.max_mode as u64) as *mut lim::VideoMode;
    let mut count = 0;
    for number in 0..fb.max_mode {
        if let Some((width, height, stride, masks)) = crate::firmware::linear_mode(bs, fb.gop, number) {
            let record = records.add(count);
            record.write(video_mode(width, height, stride, masks));
            (pointers as *mut u64).add(count).write(info.direct(record as u64));
            count += 1;
        }
    }
    (pointers, count as u64)
}

/// A colour mask's (size, shift).
fn mask(m: u32) -> (u8, u8) {
    if m == 0 {
        (0, 0)
    } else {
        ((32 - m.leading_zeros() - m.trailing_zeros()) as u8, m.trailing_zeros() as u8)
    }
}

/// A configuration table's address (0 when the firmware has none).
unsafe fn config_table(machine: &Machine, guid: efi::Guid) -> u64 {
    let st = machine.st;
    let tables = core::slice::from_raw_parts((*st).configuration_table, (*st).number_of_table_entries);
    tables.iter().find(|t| t.vendor_guid == guid).map_or(0, |t| t.vendor_table as u64)
}

/// The time at boot as UNIX seconds, from the runtime services' GetTime (0 if it fails).
unsafe fn unix_time(machine: &Machine) -> i64 {
    let rt = &*(*machine.st).runtime_services;
    let mut t: efi::Time = core::mem::zeroed();
    if (rt.get_time)(&mut t, ptr::null_mut()).is_error() {
        return 0;
    }
    // Days from 1970-01-01 to the date (the proleptic Gregorian calendar).
    let (y, m) =
        if t.month <= 2 { (t.year as i64 - 1, t.month as i64 + 9) } else { (t.year as i64, t.month as i64 - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + t.day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let mut seconds = days * 86_400 + t.hour as i64 * 3600 + t.minute as i64 * 60 + t.second as i64;
    if t.timezone != efi::UNSPECIFIED_TIMEZONE {
        seconds += t.timezone as i64 * 60; // local time = UTC - timezone minutes (UEFI 2.10, 8.3)
    }
    seconds
}

/// After ExitBootServices (the direct map filled): the memory map in the protocol's types and the EFI
/// memory map the firmware accepted.
///
/// # Safety
/// Boot services are gone; `map` is the map ExitBootServices accepted.
pub unsafe fn complete(
    block: &mut Block,
    place: &Placement,
    machine: &Machine,
    map: &memmap::FirmwareMap,
    handed: &Handed,
    info: &mut Info,
) {
    let layout = &block.layout;
    if lim::IDENTITY_MAP {
        // Revision 0: the lower half identity-maps what the HHDM maps, but the first page; the
        // trampoline page stays executable there (the jump to the kernel runs from it).
        let flags = (paging::PRESENT | paging::WRITABLE | HHDM_NX) & machine.nx_mask;
        paging::map_range(block.root, &mut block.pool, PAGE, PAGE, place.dmap_size - PAGE, place.dmap_page, flags);
        paging::remap_4k(block.root, &mut block.pool, block.trampoline, block.trampoline, PAGE, paging::PRESENT);
    }
    // The framebuffer write-combining (the PAT's entry 5 at entry), in 4 KiB pages over the large
    // ones of the direct map (and of the identity map).
    if let (Some((base, len)), true) = (framebuffer_pages(machine), entry_pat() != 0) {
        let flags = FRAMEBUFFER_PAGE & machine.nx_mask;
        paging::remap_4k(block.root, &mut block.pool, place.direct(base), base, len, flags);
        if lim::IDENTITY_MAP {
            paging::remap_4k(block.root, &mut block.pool, base, base, len, flags);
        }
    }
    // The interrupt controllers as the protocol hands them over: every PIC IRQ masked, and the I/O
    // APIC entries of the delivery modes the revision names.
    interrupts::mask_pics();
    if let Some(madt) = info.madt {
        interrupts::mask_io_apics(madt, lim::IO_APIC_MASKED_MODES);
    }
    info.iommus.disable();
    if let Some(at) = lim::MEMMAP {
        let regions =
            core::slice::from_raw_parts_mut(block.in_area(layout.memmap_off) as *mut MemoryRegion, layout.map_capacity);
        // The image is the kernel's; the rest of the block (stack, tables, this area) and the kernel
        // file are the loader's, to reclaim once the kernel is done with them; the modules are the
        // kernel's.
        let image = plan::placement::IMAGE_SIZE;
        let kernel_file = handed.kernel_file.map(|(base, pages)| (base, pages * PAGE, BOOTLOADER_RECLAIMABLE));
        let modules = (0..plan::options::MODULES.len()).map(|i| {
            let (base, pages) = handed.modules.get(i);
            (base, pages * PAGE, EXECUTABLE_AND_MODULES)
        });
        let page_zero = lim::PAGE_ZERO_RESERVED.then_some((0, PAGE, RESERVED));
        let owned = [
            (block.base, image, EXECUTABLE_AND_MODULES),
            (block.base + image, layout.size - image, BOOTLOADER_RECLAIMABLE),
        ]
        .into_iter()
        .chain(kernel_file)
        .chain(modules)
        .chain(page_zero)
        .chain(acpi_outside(machine, map))
        .chain(firmware_mapped(info, map))
        // The framebuffer's pages are FRAMEBUFFER whatever the firmware's map calls them (a
        // framebuffer in RAM the firmware gave boot-services memory would be usable otherwise).
        .chain(framebuffer_pages(machine).map(|(base, length)| (base, length, lim::MEMMAP_FRAMEBUFFER)));
        let Some(mut count) = memmap::convert(map, regions, owned) else {
            fatal("the memory map grew past the room planned for it after ExitBootServices");
        };
        // A framebuffer the firmware's map does not list (a PCI BAR) gets an entry of its own.
        let listed = |base: u64, end: u64| {
            regions[..count]
                .iter()
                .filter(|r| r.r#type == lim::MEMMAP_FRAMEBUFFER && base <= r.base && r.base + r.length <= end)
                .map(|r| r.length)
                .sum::<u64>()
        };
        if let Some((base, length)) = framebuffer_pages(machine).filter(|&(b, l)| listed(b, b + l) < l) {
            if count == regions.len() {
                fatal("the memory map grew past the room planned for it after ExitBootServices");
            }
            regions[count] = MemoryRegion { base, length, r#type: lim::MEMMAP_FRAMEBUFFER, reserved: 0 };
            count = memmap::tidy(&mut regions[..count + 1]);
        }
        let pointers = info.memmap_pointers as *mut u64;
        for (n, r) in regions[..count].iter().enumerate() {
            pointers.add(n).write(info.direct(r as *const MemoryRegion as u64));
        }
        let r = info.response::<lim::MemmapResponse>(at);
        r.entry_count = count as u64;
        r.entries = info.direct(info.memmap_pointers);
    }
    if let Some(at) = lim::EFI_MEMMAP {
        let raw = map.raw();
        if raw.len() as u64 > info.efi_memmap_capacity {
            fatal("the EFI memory map grew past the room planned for it after ExitBootServices");
        }
        ptr::copy_nonoverlapping(raw.as_ptr(), info.efi_memmap as *mut u8, raw.len());
        let r = info.response::<lim::EfiMemmapResponse>(at);
        r.memmap = info.direct(info.efi_memmap);
        r.memmap_size = raw.len() as u64;
        r.desc_size = map.descriptor_size() as u64;
        r.desc_version = map.descriptor_version() as u64;
    }
}

/// CPU record `index` (the BSP's first) of the records at `records` (physical): a
/// `struct limine_mp_info`, the stack top in its `reserved` word. Returns its physical address.
///
/// # Safety
/// The records' area holds `index + 1` records.
pub unsafe fn cpu_record(records: u64, index: usize, processor_id: u32, apic_id: u32, stack_top: u64) -> u64 {
    let record = (records as *mut lim::MpInfo).add(index);
    record.write(lim::MpInfo {
        processor_id,
        lapic_id: apic_id,
        reserved: stack_top,
        goto_address: 0,
        extra_argument: 0,
    });
    record as u64
}

/// After the APs were started: the MP response lists the BSP and every AP parked.
pub fn cpus_started(info: &mut Info, started: &Started) {
    let Some(at) = lim::MP.filter(|_| info.have[when_index(When::Mp)]) else { return };
    // SAFETY: the records and the pointer array are in the block's area, laid out for them.
    unsafe {
        let records = info.cpu_records;
        let pointers = info.cpu_pointers as *mut u64;
        for n in 0..started.count as usize {
            pointers.add(n).write(info.direct(records + n as u64 * core::mem::size_of::<lim::MpInfo>() as u64));
        }
        let r = info.response::<lim::MpResponse>(at);
        r.flags = if info.x2apic { 1 } else { 0 };
        r.bsp_lapic_id = info.bsp_apic_id;
        r.cpu_count = started.count;
        r.cpus = info.direct(info.cpu_pointers);
        if let Some(&(request, response, _)) = lim::ANSWERS.iter().find(|a| a.2 == When::Mp) {
            info.answer(request, response);
        }
    }
}

/// IA32_PAT at entry, on the BSP and every AP: the protocol's, where the CPU has a PAT (CPUID 1
/// EDX bit 16).
pub fn entry_pat() -> u64 {
    const PAT: u32 = 1 << 16;
    if core::arch::x86_64::__cpuid(1).edx & PAT != 0 {
        lim::PAT
    } else {
        0
    }
}

/// Just before the jump: the loader's timings.
pub fn at_handoff(info: &mut Info, _block: &Block) {
    if crate::rendered::protocol::EXACT_ENTRY_STATE {
        // SAFETY: boot services are gone; the BSP still runs on the firmware's tables.
        unsafe { interrupts::setup_local_apic(info.lint_nmi) };
    }
    if let Some(at) = lim::BOOTLOADER_PERFORMANCE {
        // SAFETY: the response is in the blob.
        unsafe {
            info.response::<lim::BootloaderPerformanceResponse>(at).exec_usec = cpu::rdtsc() / info.tsc_per_us.max(1)
        };
    }
}

// This protocol's kernel maps the EFI runtime services itself (the EFI memory map response).
const _: () = assert!(!crate::rendered::protocol::SET_VIRTUAL_ADDRESS_MAP);
