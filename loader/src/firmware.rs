//! What the loader asks the firmware for before ExitBootServices: the kernel file, memory,
//! the framebuffer and the ACPI root pointer.

use core::ffi::c_void;
use core::ptr;

use r_efi::efi;
use r_efi::protocols::{file, graphics_output, loaded_image, simple_file_system};

use crate::{bootinfo, fail, plan, Result};

/// Read the kernel file named by the plan from the ESP this loader was started from.
pub fn read_kernel(bs: &efi::BootServices, image: efi::Handle) -> Result<&'static [u8]> {
    let path = plan::KERNEL_PATH_TEXT;
    // SAFETY: standard protocol calls with out-pointers of the right types.
    unsafe {
        let mut li: *mut c_void = ptr::null_mut();
        let guid = loaded_image::PROTOCOL_GUID;
        let status = (bs.handle_protocol)(image, &guid as *const _ as *mut _, &mut li);
        if status.is_error() {
            return fail!(
                status,
                "cannot find the device this loader was started from (LoadedImage: {:#x})",
                status.as_usize()
            );
        }
        let device = (*(li as *mut loaded_image::Protocol)).device_handle;
        let mut fs: *mut c_void = ptr::null_mut();
        let guid = simple_file_system::PROTOCOL_GUID;
        let status = (bs.handle_protocol)(device, &guid as *const _ as *mut _, &mut fs);
        if status.is_error() {
            return fail!(
                status,
                "the boot device has no file system the firmware can read ({:#x})",
                status.as_usize()
            );
        }
        let fs = fs as *mut simple_file_system::Protocol;
        let mut root: *mut file::Protocol = ptr::null_mut();
        let status = ((*fs).open_volume)(fs, &mut root);
        if status.is_error() {
            return fail!(status, "cannot open the boot volume ({:#x})", status.as_usize());
        }
        let mut handle: *mut file::Protocol = ptr::null_mut();
        let status = ((*root).open)(root, &mut handle, plan::KERNEL_PATH.as_ptr() as *mut u16, file::MODE_READ, 0);
        ((*root).close)(root);
        if status == efi::Status::NOT_FOUND {
            return fail!(status, "kernel file {} not found on the boot volume", path);
        }
        if status.is_error() {
            return fail!(status, "cannot open kernel file {} ({:#x})", path, status.as_usize());
        }
        // One byte more than expected, to notice a file that is larger than the one we were built for.
        let want = plan::KERNEL_SIZE as usize + 1;
        let buffer = match allocate(bs, want.div_ceil(4096) as u64) {
            Ok(b) => b,
            Err(status) => {
                ((*handle).close)(handle);
                return Err(status);
            }
        };
        let mut got = want;
        let status = ((*handle).read)(handle, &mut got, buffer as *mut c_void);
        ((*handle).close)(handle);
        if status.is_error() {
            return fail!(status, "cannot read kernel file {} ({:#x})", path, status.as_usize());
        }
        if got != plan::KERNEL_SIZE as usize {
            return fail!(
                efi::Status::SECURITY_VIOLATION,
                "kernel file {} is {}{} bytes, the loader was built for {} bytes; refusing to boot it",
                path,
                if got == want { "over " } else { "" },
                got.min(plan::KERNEL_SIZE as usize),
                plan::KERNEL_SIZE
            );
        }
        Ok(core::slice::from_raw_parts(buffer as *const u8, got))
    }
}

fn allocate(bs: &efi::BootServices, pages: u64) -> Result<u64> {
    let mut address: efi::PhysicalAddress = 0;
    let status = (bs.allocate_pages)(efi::ALLOCATE_ANY_PAGES, efi::LOADER_DATA, pages as usize, &mut address);
    if status.is_error() {
        return fail!(status, "not enough memory: AllocatePages({} pages) failed ({:#x})", pages, status.as_usize());
    }
    Ok(address)
}

/// The one block the kernel owns. LoaderData, as custom memory types have hung real machines;
/// the boot info tells the kernel which range is its own.
pub fn allocate_block(bs: &efi::BootServices, pages: u64) -> Result<u64> {
    if plan::FAULT == "no_memory" {
        return fail!(
            efi::Status::OUT_OF_RESOURCES,
            "not enough memory for the kernel block ({} pages) [injected fault]",
            pages
        );
    }
    allocate(bs, pages)
}

pub struct Framebuffer {
    pub base: u64,
    pub size: u64,
    pub width: u32,
    pub height: u32,
    pub stride: u32,
    pub format: u32,
}

/// The GOP framebuffer, when the firmware has one with a linear framebuffer.
pub fn framebuffer(bs: &efi::BootServices) -> Option<Framebuffer> {
    // SAFETY: LocateProtocol with an out-pointer; Mode and Info are owned by the firmware.
    unsafe {
        let mut gop: *mut c_void = ptr::null_mut();
        let guid = graphics_output::PROTOCOL_GUID;
        if (bs.locate_protocol)(&guid as *const _ as *mut _, ptr::null_mut(), &mut gop).is_error() || gop.is_null() {
            return None;
        }
        let mode = (*(gop as *mut graphics_output::Protocol)).mode;
        if mode.is_null() || (*mode).info.is_null() {
            return None;
        }
        let info = &*(*mode).info;
        let format = match info.pixel_format {
            graphics_output::PIXEL_RED_GREEN_BLUE_RESERVED_8_BIT_PER_COLOR => bootinfo::fb::RGBX8,
            graphics_output::PIXEL_BLUE_GREEN_RED_RESERVED_8_BIT_PER_COLOR => bootinfo::fb::BGRX8,
            graphics_output::PIXEL_BIT_MASK => bootinfo::fb::BITMASK,
            _ => return None,
        };
        if (*mode).frame_buffer_base == 0 {
            return None;
        }
        Some(Framebuffer {
            base: (*mode).frame_buffer_base,
            size: (*mode).frame_buffer_size as u64,
            width: info.horizontal_resolution,
            height: info.vertical_resolution,
            stride: info.pixels_per_scan_line,
            format,
        })
    }
}

/// The ACPI RSDP from the configuration tables: the 2.0 one when present. Returns (address, revision).
pub fn rsdp(st: *mut efi::SystemTable) -> (u64, u64) {
    // SAFETY: the configuration table array has number_of_table_entries entries.
    unsafe {
        let tables = core::slice::from_raw_parts((*st).configuration_table, (*st).number_of_table_entries);
        for (guid, revision) in [(efi::ACPI_20_TABLE_GUID, 2), (efi::ACPI_10_TABLE_GUID, 0)] {
            if let Some(t) = tables.iter().find(|t| t.vendor_guid == guid) {
                return (t.vendor_table as u64, revision);
            }
        }
    }
    (0, 0)
}
