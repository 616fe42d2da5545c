//! EFI runtime services in the higher half: every EFI_MEMORY_RUNTIME range gets an address in
//! the layout's EFI region, is mapped there with the rights the Memory Attributes Table gives it
//! (code never writable, data never executable), and SetVirtualAddressMap is told about it.

use core::ptr;

use r_efi::efi;

use crate::memmap::FirmwareMap;
use crate::paging::PAGE;
#[cfg(not(feature = "limine"))]
use crate::paging::{self, Pool};
#[cfg(not(feature = "limine"))]
use crate::rendered::bootinfo::{access, EfiRange};

const MAX_ATTRIBUTES: usize = 256;
/// Descriptors of the runtime map that may appear between the first look and ExitBootServices.
pub const SLACK: usize = 16;

/// The firmware's Memory Attributes Table, copied: (physical start, length, attribute).
pub struct Attributes {
    entries: [(u64, u64, u64); MAX_ATTRIBUTES],
    count: usize,
}

impl Attributes {
    pub fn read(st: *mut efi::SystemTable) -> Self {
        let mut out = Attributes { entries: [(0, 0, 0); MAX_ATTRIBUTES], count: 0 };
        // SAFETY: configuration tables and the MAT are firmware data, valid before ExitBootServices.
        unsafe {
            let tables = core::slice::from_raw_parts((*st).configuration_table, (*st).number_of_table_entries);
            let Some(t) = tables.iter().find(|t| t.vendor_guid == efi::MEMORY_ATTRIBUTES_TABLE_GUID) else {
                return out;
            };
            let header = t.vendor_table as *const u32;
            let (count, size) =
                (ptr::read_unaligned(header.add(1)) as usize, ptr::read_unaligned(header.add(2)) as usize);
            if size < core::mem::size_of::<efi::MemoryDescriptor>() {
                return out;
            }
            let first = (header as *const u8).add(16);
            for i in 0..count.min(MAX_ATTRIBUTES) {
                let d = ptr::read_unaligned(first.add(i * size) as *const efi::MemoryDescriptor);
                out.entries[i] = (d.physical_start, d.number_of_pages * PAGE, d.attribute);
            }
            out.count = count.min(MAX_ATTRIBUTES);
        }
        out
    }

    pub fn len(&self) -> usize {
        self.count
    }

    #[cfg(not(feature = "limine"))] // a Limine kernel maps the runtime services itself
    /// The attribute entry that starts at or covers `pa`, or the next one above it.
    fn at_or_after(&self, pa: u64) -> Option<(u64, u64, u64)> {
        self.entries[..self.count].iter().filter(|e| e.0 + e.1 > pa).min_by_key(|e| e.0).copied()
    }
}

fn is_runtime(d: &efi::MemoryDescriptor) -> bool {
    d.attribute & efi::MEMORY_RUNTIME != 0 && d.number_of_pages > 0
}

/// (descriptors, pages) of runtime memory in the map.
pub fn census(map: &FirmwareMap) -> (usize, u64) {
    map.iter().filter(is_runtime).fold((0, 0), |(n, p), d| (n + 1, p + d.number_of_pages))
}

#[cfg(not(feature = "limine"))] // a Limine kernel maps the runtime services itself
/// Access rights of a piece of a runtime range: from the MAT when it describes it, else by type.
/// W^X is kept either way: a piece that would be both loses W if it is code, X if it is data.
fn rights(kind: u32, attribute: Option<u64>) -> u64 {
    let mmio = matches!(kind, efi::MEMORY_MAPPED_IO | efi::MEMORY_MAPPED_IO_PORT_SPACE);
    let code = kind == efi::RUNTIME_SERVICES_CODE;
    let (mut write, mut exec) = match attribute {
        Some(a) => (a & efi::MEMORY_RO == 0, a & efi::MEMORY_XP == 0),
        None => (!code, code),
    };
    if write && exec {
        if code {
            write = false;
        } else {
            exec = false;
        }
    }
    let mut bits = 0;
    if write {
        bits |= access::WRITE;
    }
    if exec && !mmio {
        bits |= access::EXECUTE;
    }
    if mmio {
        bits |= access::UNCACHED;
    }
    bits
}

#[cfg(not(feature = "limine"))] // a Limine kernel maps the runtime services itself
pub struct Mapped {
    pub ranges: usize,
    pub descriptors: usize,
}

#[cfg(not(feature = "limine"))] // a Limine kernel maps the runtime services itself
/// After ExitBootServices: choose virtual addresses (packed upwards from `base`), map the ranges,
/// and write the runtime descriptors with their new addresses to `vmap` for SetVirtualAddressMap.
/// Returns None when the runtime memory does not fit the region or the buffers (the caller stops).
pub unsafe fn map_all(
    map: &FirmwareMap,
    attrs: &Attributes,
    root: u64,
    pool: &mut Pool,
    nx_mask: u64,
    base: u64,
    size: u64,
    out: &mut [EfiRange],
    vmap: *mut u8,
    vmap_capacity: usize,
) -> Option<Mapped> {
    let dsize = map.descriptor_size();
    let (mut ranges, mut descriptors, mut cursor) = (0, 0, base);
    for mut d in map.iter().filter(is_runtime) {
        let length = d.number_of_pages * PAGE;
        if cursor + length > base + size || descriptors == vmap_capacity {
            return None;
        }
        d.virtual_start = cursor;
        ptr::write_unaligned(vmap.add(descriptors * dsize) as *mut efi::MemoryDescriptor, d);
        descriptors += 1;
        // Split the range where the MAT gives its pieces different rights.
        let (start, end) = (d.physical_start, d.physical_start + length);
        let mut pa = start;
        while pa < end {
            let (piece_end, attribute) = match attrs.at_or_after(pa) {
                Some((s, l, a)) if s <= pa => ((s + l).min(end), Some(a)),
                Some((s, _, _)) if s < end => (s, None),
                _ => (end, None),
            };
            let bits = rights(d.r#type, attribute);
            let va = cursor + (pa - start);
            let len = piece_end - pa;
            if ranges == out.len() {
                return None;
            }
            out[ranges] = EfiRange { phys: pa, virt: va, length: len, access: bits };
            ranges += 1;
            paging::map_4k(root, pool, va, pa, len, entry_flags(bits) & nx_mask);
            pa = piece_end;
        }
        cursor += length;
    }
    Some(Mapped { ranges, descriptors })
}

#[cfg(not(feature = "limine"))] // a Limine kernel maps the runtime services itself
fn entry_flags(bits: u64) -> u64 {
    let mut flags = paging::PRESENT;
    if bits & access::WRITE != 0 {
        flags |= paging::WRITABLE;
    }
    if bits & access::EXECUTE == 0 {
        flags |= paging::NO_EXECUTE;
    }
    if bits & access::UNCACHED != 0 {
        flags |= paging::NO_CACHE;
    }
    flags
}

#[cfg(not(feature = "limine"))] // a Limine kernel maps the runtime services itself
/// SetVirtualAddressMap with the descriptors map_all() wrote; still in the firmware's identity map.
pub unsafe fn set_virtual_address_map(
    st: *mut efi::SystemTable,
    map: &FirmwareMap,
    vmap: *mut u8,
    count: usize,
) -> efi::Status {
    let rt = (*st).runtime_services;
    let dsize = map.descriptor_size();
    ((*rt).set_virtual_address_map)(count * dsize, dsize, map.descriptor_version(), vmap as *mut efi::MemoryDescriptor)
}

#[cfg(not(feature = "limine"))] // a Limine kernel maps the runtime services itself
/// The virtual address of a physical address inside one of the mapped ranges.
pub fn virtual_of(ranges: &[EfiRange], pa: u64) -> Option<u64> {
    ranges.iter().find(|r| r.phys <= pa && pa < r.phys + r.length).map(|r| r.virt + (pa - r.phys))
}
