//! The firmware's memory map: one buffer, refreshed until ExitBootServices accepts its key, then
//! converted to the kernel's memory map (sorted, non-overlapping, neighbours of one type merged).

use core::ptr;

use r_efi::efi;

use crate::console::{self, println};
use crate::failure::{fail, fatal, Result};
use crate::firmware::Pages;
use crate::paging::PAGE;
use crate::rendered::bootinfo::MemoryRegion;
use crate::rendered::plan::{self, faults::Fault};
use crate::rendered::protocol::{memory_type, MemoryKind};

/// Room for memory-map descriptors the firmware adds between our first look and ExitBootServices.
pub const SLACK: usize = 64;

pub struct FirmwareMap {
    /// The buffer (freed if the boot fails before ExitBootServices).
    pages: Pages,
    capacity: usize,
    size: usize,
    key: usize,
    descriptor_size: usize,
    descriptor_version: u32,
}

impl FirmwareMap {
    /// A buffer big enough for today's map plus SLACK descriptors.
    pub fn new(bs: &efi::BootServices) -> Result<Self> {
        let (mut size, mut key, mut dsize, mut version) = (0usize, 0usize, 0usize, 0u32);
        // A size query with a zero-length buffer.
        let status = (bs.get_memory_map)(&mut size, ptr::null_mut(), &mut key, &mut dsize, &mut version);
        if status != efi::Status::BUFFER_TOO_SMALL || dsize < core::mem::size_of::<efi::MemoryDescriptor>() {
            return fail!(efi::Status::DEVICE_ERROR, "GetMemoryMap did not report its size ({:#x})", status.as_usize());
        }
        let capacity = size + SLACK * dsize;
        let pages = match Pages::allocate(bs, efi::LOADER_DATA, None, (capacity as u64).div_ceil(PAGE)) {
            Ok(pages) => pages,
            Err(status) => return fail!(status, "not enough memory for the memory map ({} bytes)", capacity),
        };
        Ok(FirmwareMap { pages, capacity, size: 0, key: 0, descriptor_size: dsize, descriptor_version: version })
    }

    pub fn refresh(&mut self, bs: &efi::BootServices) -> Result<()> {
        let mut size = self.capacity;
        let mut version = 0u32;
        // The buffer holds capacity bytes.
        let status = (bs.get_memory_map)(
            &mut size,
            self.buffer() as *mut efi::MemoryDescriptor,
            &mut self.key,
            &mut self.descriptor_size,
            &mut version,
        );
        if status.is_error() {
            return fail!(
                status,
                "GetMemoryMap failed ({:#x}); the map grew past {} bytes?",
                status.as_usize(),
                self.capacity
            );
        }
        self.size = size;
        self.descriptor_version = version;
        Ok(())
    }

    fn buffer(&self) -> *mut u8 {
        self.pages.base as *mut u8
    }

    /// The map's descriptors as the firmware wrote them (what the Limine protocol hands over).
    #[cfg_attr(not(feature = "limine"), allow(dead_code))]
    pub fn raw(&self) -> &[u8] {
        // SAFETY: the buffer holds `size` bytes of descriptors.
        unsafe { core::slice::from_raw_parts(self.buffer(), self.size) }
    }

    pub fn descriptor_size(&self) -> usize {
        self.descriptor_size
    }

    pub fn descriptor_version(&self) -> u32 {
        self.descriptor_version
    }

    pub fn len(&self) -> usize {
        self.size / self.descriptor_size
    }

    pub fn iter(&self) -> impl Iterator<Item = efi::MemoryDescriptor> + '_ {
        // SAFETY: descriptors are descriptor_size apart in the buffer; read unaligned copies.
        (0..self.len()).map(move |i| unsafe {
            ptr::read_unaligned(self.buffer().add(i * self.descriptor_size) as *const efi::MemoryDescriptor)
        })
    }

    /// GetMemoryMap, ExitBootServices(key); when the key is stale (the map changed), again. After
    /// the first call only GetMemoryMap and ExitBootServices may be used (UEFI 2.10, 7.4): nothing
    /// is printed in between, and if the firmware never accepts, boot services may be half shut
    /// down, so there is nothing safe to return to: say so on COM1 and halt. Returns how many
    /// attempts were refused.
    pub fn exit_boot_services(&mut self, bs: &efi::BootServices, image: efi::Handle) -> usize {
        let mut last = efi::Status::SUCCESS;
        for attempt in 0..8 {
            if self.refresh(bs).is_err() {
                console::firmware_gone();
                fatal("GetMemoryMap failed between ExitBootServices attempts");
            }
            let key = if plan::faults::FAULT == Some(Fault::StaleMapKey) && attempt == 0 {
                self.key ^ 0x5a5a
            } else {
                self.key
            };
            last = (bs.exit_boot_services)(image, key);
            if !last.is_error() {
                return attempt;
            }
        }
        console::firmware_gone();
        println!("highboot: error: ExitBootServices refused 8 memory-map keys (last status {:#x})", last.as_usize());
        fatal("boot services may be partly shut down; nothing to return to")
    }
}

/// The kind of memory a UEFI memory type is (the protocol numbers each kind: `memory_type`).
fn kind(efi_type: u32) -> MemoryKind {
    match efi_type {
        efi::LOADER_CODE | efi::LOADER_DATA => MemoryKind::LoaderReclaimable,
        efi::BOOT_SERVICES_CODE | efi::BOOT_SERVICES_DATA | efi::CONVENTIONAL_MEMORY => MemoryKind::Usable,
        efi::RUNTIME_SERVICES_CODE | efi::RUNTIME_SERVICES_DATA => MemoryKind::EfiRuntime,
        efi::UNUSABLE_MEMORY => MemoryKind::Bad,
        efi::ACPI_RECLAIM_MEMORY => MemoryKind::AcpiReclaimable,
        efi::ACPI_MEMORY_NVS => MemoryKind::AcpiNvs,
        efi::MEMORY_MAPPED_IO | efi::MEMORY_MAPPED_IO_PORT_SPACE => MemoryKind::Mmio,
        efi::PERSISTENT_MEMORY => MemoryKind::Persistent,
        _ => MemoryKind::Reserved,
    }
}

/// End of the highest range the direct map must cover: RAM of every kind, ACPI, runtime, persistent
/// (and, with `all_types`, every range the map lists).
pub fn physical_top(map: &FirmwareMap, all_types: bool) -> u64 {
    map.iter()
        .filter(|d| all_types || !matches!(kind(d.r#type), MemoryKind::Mmio | MemoryKind::Reserved | MemoryKind::Bad))
        .map(|d| d.physical_start + d.number_of_pages * PAGE)
        .max()
        .unwrap_or(0)
}

/// Fill `out` with the kernel's memory map: the firmware's, with every range in `owned` (the
/// block, the modules, the kernel file: whole pages) given its type (the protocol's number).
/// Returns the number of entries, or None when `out` is too small (nothing may be silently left
/// out).
pub fn convert(
    map: &FirmwareMap,
    out: &mut [MemoryRegion],
    owned: impl Iterator<Item = (u64, u64, u32)>,
) -> Option<usize> {
    let mut n = 0;
    for d in map.iter() {
        if d.number_of_pages > 0 {
            let length = d.number_of_pages * PAGE;
            *out.get_mut(n)? =
                MemoryRegion { base: d.physical_start, length, r#type: memory_type(kind(d.r#type)), reserved: 0 };
            n += 1;
        }
    }
    // Carve each owned range out of whatever covers it: the part before, its own, the part after
    // (emptied entries are dropped below).
    for (start, size, r#type) in owned.filter(|&(_, size, _)| size > 0) {
        let end = start + size;
        for i in 0..n {
            let r = out[i];
            let r_end = r.base + r.length;
            if r.length == 0 || r_end <= start || end <= r.base {
                continue;
            }
            let before = start.saturating_sub(r.base).min(r.length);
            let kernel = MemoryRegion {
                base: r.base.max(start),
                length: r_end.min(end) - r.base.max(start),
                r#type,
                reserved: 0,
            };
            // The part before stays in slot i; the owned part takes it when there is none.
            if before > 0 {
                out[i].length = before;
                *out.get_mut(n)? = kernel;
                n += 1;
            } else {
                out[i] = kernel;
            }
            if r_end > end {
                *out.get_mut(n)? = MemoryRegion { base: end, length: r_end - end, r#type: r.r#type, reserved: 0 };
                n += 1;
            }
        }
    }
    Some(tidy(&mut out[..n]))
}

/// Drop empty entries, sort by base, merge neighbours of one type; returns the entries kept.
pub fn tidy(out: &mut [MemoryRegion]) -> usize {
    let mut n = 0;
    for i in 0..out.len() {
        if out[i].length > 0 {
            out[n] = out[i];
            n += 1;
        }
    }
    let regions = &mut out[..n];
    // Insertion sort: the map is short and usually sorted already.
    for i in 1..regions.len() {
        let mut j = i;
        while j > 0 && regions[j - 1].base > regions[j].base {
            regions.swap(j - 1, j);
            j -= 1;
        }
    }
    let mut merged = 0;
    for i in 0..n {
        let r = regions[i];
        if merged > 0 {
            let last = &mut regions[merged - 1];
            if last.r#type == r.r#type && last.base + last.length == r.base {
                last.length += r.length;
                continue;
            }
        }
        regions[merged] = r;
        merged += 1;
    }
    merged
}
