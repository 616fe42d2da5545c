//! Proof that EFI runtime services work from the kernel's own page tables: list the runtime
//! mappings the loader made, then call GetTime through the virtual system table.

use crate::bootinfo::{access, flags, BootInfo, EfiRange};
use crate::report;
use crate::{println, Checks};

#[repr(C)]
#[derive(Default)]
struct EfiTime {
    year: u16,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    pad1: u8,
    nanosecond: u32,
    time_zone: i16,
    daylight: u8,
    pad2: u8,
}

type GetTime = extern "efiapi" fn(*mut EfiTime, *mut u8) -> usize;

pub fn check_runtime(c: &mut Checks, info: &BootInfo) {
    if info.flags & flags::NO_EFI_REGION != 0 {
        // The layout has no EFI region.
        println!(info_format!(efi), "none");
        return;
    }
    // SAFETY: the loader promises efi_runtime_map points at efi_runtime_count entries.
    let ranges: &[EfiRange] = unsafe {
        core::slice::from_raw_parts(info.efi_runtime_map as *const EfiRange, info.efi_runtime_count as usize)
    };
    for r in ranges {
        let w = r.access & access::WRITE != 0;
        let x = r.access & access::EXECUTE != 0;
        let rights = report::ACCESS[w as usize | (x as usize) << 1];
        let cache = report::CACHE[(r.access & access::UNCACHED != 0) as usize];
        println!(report_format!(EFI), r.phys, r.virt, r.length, rights, cache);
        c.check(
            r.access & access::WRITE == 0 || r.access & access::EXECUTE == 0,
            format_args!("EFI range {:#x} is W+X", r.phys),
        );
    }
    c.check(info.flags & flags::EFI_RUNTIME != 0, format_args!("the loader did not map the runtime services"));
    if info.flags & flags::EFI_RUNTIME == 0 {
        return;
    }
    // SAFETY: after SetVirtualAddressMap the system table and runtime services table are virtual
    // and mapped in our tables; GetTime is at offset 24 of the runtime services table.
    unsafe {
        let st = info.efi_system_table as *const u8;
        let rt = *(st.add(88) as *const *const u8);
        let get_time: GetTime = core::mem::transmute(*(rt.add(24) as *const usize));
        let mut time = EfiTime::default();
        let status = get_time(&mut time, core::ptr::null_mut());
        c.check(status == 0, format_args!("GetTime returned {:#x}", status));
        println!(
            info_format!(efi_time, efi_year),
            format_args!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                time.year, time.month, time.day, time.hour, time.minute, time.second
            ),
            time.year
        );
    }
}
