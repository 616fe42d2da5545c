//! Memory-map fragmenter for the loader-cost benchmark: allocates 2 N single pages, alternately
//! LoaderData and BootServicesData, so the firmware's memory map (and the kernel's, where the two
//! types stay apart) has about 2 N more entries, then starts \EFI\BOOT\HIGHBOOT.EFI from the same
//! device. N comes from QEMU: `-fw_cfg name=opt/org.highboot/bench-fragments,string=N`.
//! highboot times itself from its own efi_main, so nothing done here counts as loader cost.
#![no_std]
#![no_main]

use core::{mem, ptr};

use highboot_bench_efi::{exit_qemu, fw_cfg_file, parse_u64, report, write_bytes, EXIT_FAIL};
use r_efi::efi;
use r_efi::protocols::{device_path, loaded_image};

const FRAGMENTS_FILE: &[u8] = b"opt/org.highboot/bench-fragments";
const NEXT: &str = "\\EFI\\BOOT\\HIGHBOOT.EFI";
const MEDIA_FILEPATH: u8 = 0x04;
const END_ENTIRE: u8 = 0xff;

fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

fn die(what: &[u8], status: efi::Status) -> ! {
    write_bytes(b"\r\nbench fragment: ");
    write_bytes(what);
    report(b"bench_fragment_status", status.as_usize() as u64);
    exit_qemu(EXIT_FAIL)
}

#[no_mangle]
pub extern "efiapi" fn efi_main(image: efi::Handle, st: *mut efi::SystemTable) -> efi::Status {
    let mut buf = [0u8; 24];
    let fragments = fw_cfg_file(FRAGMENTS_FILE, &mut buf).and_then(parse_u64).unwrap_or(0) as usize;
    // SAFETY: the firmware hands us a valid system table with boot services.
    let bs = unsafe { &*(*st).boot_services };
    for i in 0..2 * fragments {
        let kind = if i % 2 == 0 { efi::LOADER_DATA } else { efi::BOOT_SERVICES_DATA };
        let mut page: efi::PhysicalAddress = 0;
        let status = (bs.allocate_pages)(efi::ALLOCATE_ANY_PAGES, kind, 1, &mut page);
        if status.is_error() {
            die(b"AllocatePages failed", status);
        }
    }
    report(b"bench_fragments", fragments as u64);
    let (entries, inversions) = map_order(bs);
    report(b"bench_firmware_map_entries", entries);
    report(b"bench_firmware_map_inversions", inversions);
    let path = next_image_path(bs, image);
    let mut child: efi::Handle = ptr::null_mut();
    let status = (bs.load_image)(efi::Boolean::FALSE, image, path, ptr::null_mut(), 0, &mut child);
    if status.is_error() {
        die(b"LoadImage \\EFI\\BOOT\\HIGHBOOT.EFI failed", status);
    }
    let status = (bs.start_image)(child, ptr::null_mut(), ptr::null_mut());
    die(b"HIGHBOOT.EFI returned", status)
}

/// The firmware's memory map as GetMemoryMap lists it: (entries, pairs out of address order).
fn map_order(bs: &efi::BootServices) -> (u64, u64) {
    let (mut size, mut key, mut dsize, mut version) = (0usize, 0usize, 0usize, 0u32);
    let _ = (bs.get_memory_map)(&mut size, ptr::null_mut(), &mut key, &mut dsize, &mut version);
    if dsize == 0 {
        die(b"GetMemoryMap gave no descriptor size", efi::Status::DEVICE_ERROR);
    }
    let capacity = size + 16 * dsize; // room for what allocating the buffers adds
    let mut raw: *mut core::ffi::c_void = ptr::null_mut();
    let status = (bs.allocate_pool)(efi::LOADER_DATA, capacity + capacity / dsize * 8, &mut raw);
    if status.is_error() {
        die(b"AllocatePool failed", status);
    }
    let mut size = capacity;
    let before = rdtsc();
    let status = (bs.get_memory_map)(&mut size, raw as *mut efi::MemoryDescriptor, &mut key, &mut dsize, &mut version);
    let get_map_cycles = rdtsc() - before;
    if status.is_error() {
        die(b"GetMemoryMap failed", status);
    }
    report(b"bench_firmware_get_memory_map_cycles", get_map_cycles);
    let mut page: efi::PhysicalAddress = 0;
    let before = rdtsc();
    let status = (bs.allocate_pages)(efi::ALLOCATE_ANY_PAGES, efi::LOADER_DATA, 1, &mut page);
    let allocate_cycles = rdtsc() - before;
    if status.is_error() {
        die(b"AllocatePages failed", status);
    }
    report(b"bench_firmware_allocate_pages_cycles", allocate_cycles);
    let _ = (bs.free_pages)(page, 1);
    let n = size / dsize;
    // SAFETY: the pool holds the map (capacity bytes) and after it room for n starts.
    let starts = unsafe {
        let starts = (raw as *mut u8).add(capacity) as *mut u64;
        for i in 0..n {
            let d = ptr::read_unaligned((raw as *const u8).add(i * dsize) as *const efi::MemoryDescriptor);
            starts.add(i).write(d.physical_start);
        }
        core::slice::from_raw_parts(starts, n)
    };
    let mut inversions = 0u64;
    for (i, a) in starts.iter().enumerate() {
        inversions += starts[i + 1..].iter().filter(|b| *b < a).count() as u64;
    }
    let _ = (bs.free_pool)(raw);
    (n as u64, inversions)
}

/// This image's device's path, then a file path node for NEXT, then the end node.
fn next_image_path(bs: &efi::BootServices, image: efi::Handle) -> *mut device_path::Protocol {
    let mut li: *mut core::ffi::c_void = ptr::null_mut();
    let mut guid = loaded_image::PROTOCOL_GUID;
    let status = (bs.handle_protocol)(image, &mut guid, &mut li);
    if status.is_error() {
        die(b"no LoadedImage", status);
    }
    // SAFETY: HandleProtocol returned the LoadedImage protocol of this image.
    let device = unsafe { (*(li as *mut loaded_image::Protocol)).device_handle };
    let mut dp: *mut core::ffi::c_void = ptr::null_mut();
    let mut guid = device_path::PROTOCOL_GUID;
    let status = (bs.handle_protocol)(device, &mut guid, &mut dp);
    if status.is_error() {
        die(b"no device path for this image's device", status);
    }
    // SAFETY: a device path is a chain of nodes, each with its length, ending in an END node.
    unsafe {
        let start = dp as *const u8;
        let mut node = start;
        while (*(node as *const device_path::Protocol)).r#type != device_path::TYPE_END {
            let len = u16::from_le_bytes((*(node as *const device_path::Protocol)).length) as usize;
            node = node.add(len);
        }
        let prefix = node as usize - start as usize;
        let name_bytes = (NEXT.len() + 1) * 2;
        let file_node = mem::size_of::<device_path::Protocol>() + name_bytes;
        let total = prefix + file_node + mem::size_of::<device_path::Protocol>();
        let mut out: *mut core::ffi::c_void = ptr::null_mut();
        let status = (bs.allocate_pool)(efi::LOADER_DATA, total, &mut out);
        if status.is_error() {
            die(b"AllocatePool failed", status);
        }
        let out = out as *mut u8;
        ptr::copy_nonoverlapping(start, out, prefix);
        let mut p = out.add(prefix);
        let header = |p: *mut u8, kind: u8, sub: u8, len: usize| {
            p.write(kind);
            p.add(1).write(sub);
            p.add(2).write((len & 0xff) as u8);
            p.add(3).write((len >> 8) as u8);
        };
        header(p, device_path::TYPE_MEDIA, MEDIA_FILEPATH, file_node);
        p = p.add(mem::size_of::<device_path::Protocol>());
        for c in NEXT.encode_utf16().chain(core::iter::once(0)) {
            let [lo, hi] = c.to_le_bytes();
            p.write(lo);
            p.add(1).write(hi);
            p = p.add(2);
        }
        header(p, device_path::TYPE_END, END_ENTIRE, mem::size_of::<device_path::Protocol>());
        out as *mut device_path::Protocol
    }
}
