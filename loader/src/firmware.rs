//! What the loader asks the firmware for before ExitBootServices: the files on the ESP (kernel,
//! modules), memory, the display mode FB_MODE asks for, the framebuffer and the ACPI root pointer.

use core::ffi::c_void;
use core::{fmt, ptr};

use r_efi::efi;
use r_efi::protocols::{file, graphics_output, loaded_image, simple_file_system};

use crate::console::{self, println};
use crate::failure::{fail, Result};
use crate::fbmode::{self, Candidate};
use crate::paging::PAGE;
use crate::rendered::bootinfo;
use crate::rendered::plan::{self, faults::Fault};
use crate::verity;

/// A file the build put on the ESP, as named in messages: "kernel file \\highboot\\kernel.elf" or
/// "module "initrd" (\\highboot\\modules\\0.bin)".
#[derive(Clone, Copy)]
pub struct EspFile<'a> {
    /// "kernel" or "module": what the loader was built for.
    pub kind: &'static str,
    /// A module's name (NUL-terminated bytes), None for the kernel.
    pub name: Option<&'a [u8]>,
    pub path: &'static [u16],
    pub path_text: &'static str,
    pub size: u64,
    /// Its fs-verity digest (verity.rs), as the build computed it.
    pub digest: &'a [u8; 32],
}

impl fmt::Display for EspFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name {
            None => write!(f, "{} file {}", self.kind, self.path_text),
            Some(name) => {
                write!(f, "{} \"", self.kind)?;
                for chunk in name.strip_suffix(&[0]).unwrap_or(name).utf8_chunks() {
                    for c in chunk.valid().chars() {
                        if c.is_control() || c == '"' {
                            write!(f, "{}", c.escape_default())?;
                        } else {
                            write!(f, "{}", c)?;
                        }
                    }
                    for b in chunk.invalid() {
                        write!(f, "\\x{:02x}", b)?;
                    }
                }
                write!(f, "\" ({})", self.path_text)
            }
        }
    }
}

/// The root directory of the volume this loader was started from, closed when dropped.
pub struct Volume {
    root: *mut file::Protocol,
}

impl Volume {
    pub fn open(bs: &efi::BootServices, image: efi::Handle) -> Result<Volume> {
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
            Ok(Volume { root })
        }
    }

    /// Read a file the build put on the ESP into fresh pages (page aligned, the tail of the last
    /// page zeroed) and check it is the one this loader was built for: its size, then its fs-verity
    /// digest (its blocks hashed by `engine`, a chunk at a time as they are read). Nothing read is
    /// used before the whole file is verified.
    /// None for an empty file (nothing to allocate).
    pub fn read_verified(
        &self,
        bs: &efi::BootServices,
        what: EspFile,
        engine: verity::Engine,
    ) -> Result<Option<(Pages, &'static [u8])>> {
        // SAFETY: standard protocol calls; the buffer holds the pages allocated for it.
        unsafe {
            let mut handle: *mut file::Protocol = ptr::null_mut();
            let status =
                ((*self.root).open)(self.root, &mut handle, what.path.as_ptr() as *mut u16, file::MODE_READ, 0);
            if status == efi::Status::NOT_FOUND {
                return fail!(status, "{} not found on the boot volume", what);
            }
            if status.is_error() {
                return fail!(status, "cannot open {} ({:#x})", what, status.as_usize());
            }
            let file = OpenFile(handle);
            let pages = if what.size == 0 {
                None
            } else {
                match Pages::allocate(bs, efi::LOADER_DATA, None, what.size.div_ceil(PAGE)) {
                    Ok(pages) => Some(pages),
                    Err(status) => {
                        return fail!(
                            status,
                            "not enough memory for {} ({} bytes): AllocatePages failed ({:#x})",
                            what,
                            what.size,
                            status.as_usize()
                        )
                    }
                }
            };
            let base = pages.as_ref().map_or(0, |p| p.base);
            // Read in chunks straight into the pages, until the expected size or the end of the file
            // (a driver may return less per call), hashing each chunk's whole blocks while they are
            // still in the cache; the last partial block when everything is in.
            let mut digest = verity::Digest::new(engine);
            let (mut got, mut hashed) = (0usize, 0usize);
            let mut status = efi::Status::SUCCESS;
            while got < what.size as usize {
                let mut n = (what.size as usize - got).min(READ_CHUNK);
                status = file.read((base as usize + got) as *mut u8, &mut n);
                if status.is_error() || n == 0 {
                    break;
                }
                got += n;
                let ready = if got == what.size as usize { got } else { got / verity::BLOCK * verity::BLOCK };
                digest.update(core::slice::from_raw_parts((base as usize + hashed) as *const u8, ready - hashed));
                hashed = ready;
            }
            // One byte more than expected, to notice a file larger than the one we were built for.
            let mut extra = [0u8; 1];
            let mut over = 1usize;
            let status = if status.is_error() { status } else { file.read(extra.as_mut_ptr(), &mut over) };
            if status.is_error() {
                return fail!(status, "cannot read {} ({:#x})", what, status.as_usize());
            }
            if got as u64 != what.size || over != 0 {
                return fail!(
                    efi::Status::SECURITY_VIOLATION,
                    "{} is {}{} bytes, the loader was built for {} bytes; refusing to boot it",
                    what,
                    if over != 0 { "over " } else { "" },
                    got,
                    what.size
                );
            }
            if digest.finish() != *what.digest {
                return mismatch(what);
            }
            let Some(pages) = pages else { return Ok(None) };
            let data = core::slice::from_raw_parts(base as *const u8, got);
            // The tail of the last page: zero, not whatever the firmware left there.
            ptr::write_bytes((base + what.size) as *mut u8, 0, (pages.count * PAGE - what.size) as usize);
            Ok(Some((pages, data)))
        }
    }
}

fn mismatch<T>(what: EspFile) -> Result<T> {
    fail!(
        efi::Status::SECURITY_VIOLATION,
        "{} does not match the {} this loader was built for (its fs-verity digest differs); refusing to boot it",
        what,
        what.kind
    )
}

impl Drop for Volume {
    fn drop(&mut self) {
        // SAFETY: the root directory we opened, closed once.
        unsafe { ((*self.root).close)(self.root) };
    }
}

/// How much the loader asks the firmware for at once: large enough that the calls cost nothing
/// next to the data, small enough that a chunk is still in the cache when it is hashed.
const READ_CHUNK: usize = 1 << 20;

/// An open file, closed when dropped.
struct OpenFile(*mut file::Protocol);

impl OpenFile {
    /// Read up to `*size` bytes to `buffer`; `*size` becomes the bytes read (0 at the end).
    unsafe fn read(&self, buffer: *mut u8, size: &mut usize) -> efi::Status {
        ((*self.0).read)(self.0, size, buffer as *mut c_void)
    }
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        // SAFETY: a file we opened, closed once.
        unsafe { ((*self.0).close)(self.0) };
    }
}

/// Pages from AllocatePages, given back when dropped: an error before ExitBootServices returns
/// to the firmware with everything the loader took freed. After ExitBootServices nothing returns
/// (the handoff and fatal() never do), so nothing is dropped then.
pub struct Pages {
    bs: *const efi::BootServices,
    pub base: u64,
    pub count: u64,
}

impl Pages {
    pub fn allocate(bs: &efi::BootServices, kind: efi::MemoryType, below: Option<u64>, count: u64) -> Result<Pages> {
        let (how, mut address) = match below {
            Some(limit) => (efi::ALLOCATE_MAX_ADDRESS, limit),
            None => (efi::ALLOCATE_ANY_PAGES, 0),
        };
        let status = (bs.allocate_pages)(how, kind, count as usize, &mut address);
        if status.is_error() {
            return Err(status);
        }
        Ok(Pages { bs, base: address, count })
    }

    /// Keep the pages for good (the firmware goes on using them).
    pub fn keep(self) -> u64 {
        let base = self.base;
        core::mem::forget(self);
        base
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        // SAFETY: boot services are up (see above) and the pages are ours.
        unsafe { ((*self.bs).free_pages)(self.base, self.count as usize) };
    }
}

/// The one block the kernel owns, or the firmware's status, with nothing printed: the caller
/// tries smaller blocks (fewer AP stacks) before it refuses. LoaderData, as custom memory types
/// have hung real machines; the boot info tells the kernel which range is its own.
pub fn try_allocate_block(bs: &efi::BootServices, pages: u64) -> Result<Pages> {
    if plan::faults::FAULT == Some(Fault::NoMemory) {
        return Err(efi::Status::OUT_OF_RESOURCES);
    }
    Pages::allocate(bs, efi::LOADER_DATA, None, pages)
}

pub struct Framebuffer {
    pub base: u64,
    pub size: u64,
    pub width: u32,
    pub height: u32,
    pub stride: u32,
    #[cfg_attr(feature = "limine", allow(dead_code))] // highboot's boot info only
    pub format: u32,
    /// Red, green, blue and reserved bits of a 32-bit pixel.
    pub masks: [u32; 4],
    /// The GOP and how many modes it has (a Limine kernel is given the linear ones).
    #[cfg(feature = "limine")]
    pub gop: *mut graphics_output::Protocol,
    #[cfg(feature = "limine")]
    pub max_mode: u32,
    /// The display's EDID as the firmware has it (address, bytes; (0, 0) without one): boot-services
    /// memory, to be copied before ExitBootServices.
    #[cfg(feature = "limine")]
    pub edid: (u64, usize),
}

/// The firmware's graphics output (GOP), if it has one with a mode.
fn gop(bs: &efi::BootServices) -> Option<*mut graphics_output::Protocol> {
    let mut gop: *mut c_void = ptr::null_mut();
    let guid = graphics_output::PROTOCOL_GUID;
    // SAFETY: LocateProtocol with an out-pointer; the protocol and its Mode are owned by the firmware.
    unsafe {
        if (bs.locate_protocol)(&guid as *const _ as *mut _, ptr::null_mut(), &mut gop).is_error() || gop.is_null() {
            return None;
        }
        let gop = gop as *mut graphics_output::Protocol;
        if (*gop).mode.is_null() || (*(*gop).mode).info.is_null() {
            return None;
        }
        Some(gop)
    }
}

/// The display mode FB_MODE changed: set again when this drops (a boot that fails before the
/// kernel runs leaves the display as it found it); `mem::forget` keeps the new mode.
pub struct DisplayMode {
    gop: *mut graphics_output::Protocol,
    mode: u32,
}

impl Drop for DisplayMode {
    fn drop(&mut self) {
        // SAFETY: the firmware's GOP, while boot services are up (dropped only before ExitBootServices).
        let status = unsafe { ((*self.gop).set_mode)(self.gop, self.mode) };
        println!("highboot: the display is back in mode {} ({:#x})", self.mode, status.as_usize());
        console::repeat_error(); // SetMode clears the screen
    }
}

/// FB_MODE: switch the display to the firmware's largest mode that is not larger than the request
/// (fbmode::choose), before the framebuffer is read. No mode that fits, or a SetMode the firmware
/// refuses, leaves the display in whatever mode is then current: a warning, not a failure.
pub fn set_framebuffer_mode(bs: &efi::BootServices) -> Option<DisplayMode> {
    let want = plan::options::FRAMEBUFFER_REQUEST?;
    let Some(gop) = gop(bs) else {
        println!(
            "highboot: warning: no graphics output (GOP): the requested framebuffer {}x{} is not set",
            want.0, want.1
        );
        return None;
    };
    // SAFETY: the firmware's GOP (checked above); Mode and its Info stay valid until the next SetMode.
    unsafe {
        let mode = (*gop).mode;
        let (count, current) = ((*mode).max_mode, (*mode).mode);
        let modes = (0..count).filter_map(|number| query_mode(bs, gop, number));
        let Some(chosen) = fbmode::choose(modes, current, want) else {
            let info = &*(*mode).info;
            println!(
                "highboot: warning: no framebuffer mode fits the requested {}x{}; keeping {}x{} (mode {} of {})",
                want.0, want.1, info.horizontal_resolution, info.vertical_resolution, current, count
            );
            return None;
        };
        if chosen.number != current {
            let status = ((*gop).set_mode)(gop, chosen.number);
            if status.is_error() {
                // framebuffer() reads whatever mode the firmware is in now (none, if it has no Info).
                let (width, height) =
                    (*mode).info.as_ref().map_or((0, 0), |i| (i.horizontal_resolution, i.vertical_resolution));
                println!(
                    "highboot: warning: SetMode to {}x{} (mode {}) failed ({:#x}); the display is {}x{} (mode {} of {})",
                    chosen.width,
                    chosen.height,
                    chosen.number,
                    status.as_usize(),
                    width,
                    height,
                    (*mode).mode,
                    count
                );
                return None;
            }
        }
        println!(
            "highboot: framebuffer {}x{} (mode {} of {}, requested {}x{}{})",
            chosen.width,
            chosen.height,
            chosen.number,
            count,
            want.0,
            want.1,
            if chosen.number == current { ", already set" } else { "" }
        );
        (chosen.number != current).then_some(DisplayMode { gop, mode: current })
    }
}

/// One of the GOP's modes, if the firmware describes it.
///
/// # Safety
/// gop is the firmware's GOP and boot services are up.
unsafe fn query_mode(bs: &efi::BootServices, gop: *mut graphics_output::Protocol, number: u32) -> Option<Candidate> {
    let info = query_info(bs, gop, number)?;
    Some(Candidate {
        number,
        width: info.horizontal_resolution,
        height: info.vertical_resolution,
        // As framebuffer() hands them over: RGBX8, BGRX8 and PixelBitMask, with 32-bit pixels as
        // the boot info describes them (a PixelBitMask mode's pixel ends at its highest mask bit:
        // Cirrus offers 24-bit ones); never PixelBltOnly.
        linear: match info.pixel_format {
            graphics_output::PIXEL_BIT_MASK => {
                let m = &info.pixel_information;
                (m.red_mask | m.green_mask | m.blue_mask | m.reserved_mask) >> 24 != 0
            }
            format => format < graphics_output::PIXEL_BLT_ONLY,
        },
    })
}

/// One of the GOP's modes as QueryMode describes it.
///
/// # Safety
/// gop is the firmware's GOP and boot services are up.
unsafe fn query_info(
    bs: &efi::BootServices,
    gop: *mut graphics_output::Protocol,
    number: u32,
) -> Option<graphics_output::ModeInformation> {
    let (mut size, mut info) = (0usize, ptr::null_mut());
    let status = ((*gop).query_mode)(gop, number, &mut size, &mut info);
    if status.is_error() || info.is_null() {
        return None;
    }
    // QueryMode allocates the information from pool: the caller frees it.
    let copy = (size >= core::mem::size_of::<graphics_output::ModeInformation>()).then(|| ptr::read(info));
    (bs.free_pool)(info as *mut c_void);
    copy
}

/// A mode's pixel format in the boot info's words and its red, green, blue and reserved masks; None
/// for a mode without a linear framebuffer (PixelBltOnly) or with no colour bits.
fn pixel_masks(info: &graphics_output::ModeInformation) -> Option<(u32, [u32; 4])> {
    let bits = &info.pixel_information;
    let (format, masks) = match info.pixel_format {
        graphics_output::PIXEL_RED_GREEN_BLUE_RESERVED_8_BIT_PER_COLOR => {
            (bootinfo::fb::RGBX8, [0x0000_00ff, 0x0000_ff00, 0x00ff_0000, 0xff00_0000])
        }
        graphics_output::PIXEL_BLUE_GREEN_RED_RESERVED_8_BIT_PER_COLOR => {
            (bootinfo::fb::BGRX8, [0x00ff_0000, 0x0000_ff00, 0x0000_00ff, 0xff00_0000])
        }
        graphics_output::PIXEL_BIT_MASK => {
            (bootinfo::fb::BITMASK, [bits.red_mask, bits.green_mask, bits.blue_mask, bits.reserved_mask])
        }
        _ => return None,
    };
    (masks[0] | masks[1] | masks[2] != 0).then_some((format, masks))
}

/// A mode of the GOP with a linear framebuffer: (width, height, pixels per scan line, masks).
///
/// # Safety
/// gop is the firmware's GOP and boot services are up.
#[cfg(feature = "limine")]
pub unsafe fn linear_mode(
    bs: &efi::BootServices,
    gop: *mut graphics_output::Protocol,
    number: u32,
) -> Option<(u32, u32, u32, [u32; 4])> {
    let info = query_info(bs, gop, number)?;
    let (_, masks) = pixel_masks(&info)?;
    Some((info.horizontal_resolution, info.vertical_resolution, info.pixels_per_scan_line, masks))
}

/// The GOP framebuffer, when the firmware has one with a linear framebuffer.
pub fn framebuffer(bs: &efi::BootServices) -> Option<Framebuffer> {
    let gop = gop(bs)?;
    // SAFETY: gop() checked Mode and Info, which are owned by the firmware.
    unsafe {
        let mode = (*gop).mode;
        let info = &*(*mode).info;
        let (format, masks) = pixel_masks(info)?;
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
            masks,
            #[cfg(feature = "limine")]
            gop,
            #[cfg(feature = "limine")]
            max_mode: (*mode).max_mode,
            #[cfg(feature = "limine")]
            edid: edid(bs, gop),
        })
    }
}

/// EFI_EDID_ACTIVE_PROTOCOL and EFI_EDID_DISCOVERED_PROTOCOL (UEFI 2.10, 12.9): the EDID the
/// display's handle carries, the active one (an override's, else the discovered one) first.
#[cfg(feature = "limine")]
const EDID_GUIDS: [efi::Guid; 2] = [
    efi::Guid::from_fields(0xbd8c1056, 0x9f36, 0x44ec, 0x92, 0xa8, &[0xa6, 0x33, 0x7f, 0x81, 0x79, 0x86]),
    efi::Guid::from_fields(0x1c0c34f6, 0xd380, 0x41fa, 0xa0, 0x49, &[0x8a, 0xd0, 0x6c, 0x1a, 0x66, 0xaa]),
];

/// Both EDID protocols' interface.
#[cfg(feature = "limine")]
#[repr(C)]
struct EdidProtocol {
    size_of_edid: u32,
    edid: *const u8,
}

/// The EDID on the GOP's handle (address, bytes), or (0, 0): none, or not whole 128-byte blocks.
///
/// # Safety
/// gop is the firmware's GOP and boot services are up.
#[cfg(feature = "limine")]
unsafe fn edid(bs: &efi::BootServices, gop: *mut graphics_output::Protocol) -> (u64, usize) {
    let mut guid = graphics_output::PROTOCOL_GUID;
    let mut handles = [ptr::null_mut(); 8];
    let mut size = core::mem::size_of_val(&handles);
    let status = (bs.locate_handle)(efi::BY_PROTOCOL, &mut guid, ptr::null_mut(), &mut size, handles.as_mut_ptr());
    if status.is_error() {
        return (0, 0);
    }
    for &handle in &handles[..size / core::mem::size_of::<efi::Handle>()] {
        let mut found: *mut c_void = ptr::null_mut();
        if (bs.handle_protocol)(handle, &mut guid, &mut found).is_error() || found != gop as *mut c_void {
            continue;
        }
        if plan::faults::FAULT == Some(Fault::Edid) {
            let (mut handle, mut discovered) = (handle, EDID_GUIDS[1]);
            let status = (bs.install_protocol_interface)(
                &mut handle,
                &mut discovered,
                efi::NATIVE_INTERFACE,
                ptr::addr_of_mut!(TEST_EDID_PROTOCOL) as *mut c_void,
            );
            println!("highboot: test build: an EDID on the display's handle ({:#x})", status.as_usize());
        }
        for mut edid_guid in EDID_GUIDS {
            let mut edid: *mut c_void = ptr::null_mut();
            if (bs.handle_protocol)(handle, &mut edid_guid, &mut edid).is_error() || edid.is_null() {
                continue;
            }
            let edid = &*(edid as *const EdidProtocol);
            let bytes = edid.size_of_edid as usize;
            if !edid.edid.is_null() && bytes >= 128 && bytes % 128 == 0 && bytes <= MAX_EDID {
                return (edid.edid as u64, bytes);
            }
        }
    }
    (0, 0)
}

/// FAULT=edid: the EDID a test build puts on the display's handle (EFI_EDID_DISCOVERED_PROTOCOL):
/// a base block preferring 1024x768 and one extension block, each with its checksum.
#[cfg(feature = "limine")]
static mut TEST_EDID_PROTOCOL: EdidProtocol =
    EdidProtocol { size_of_edid: TEST_EDID.len() as u32, edid: &TEST_EDID as *const [u8; 256] as *const u8 };
#[cfg(feature = "limine")]
static TEST_EDID: [u8; 256] = test_edid();

#[cfg(feature = "limine")]
const fn test_edid() -> [u8; 256] {
    let mut e = [0u8; 256];
    let header = [0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00];
    let mut i = 0;
    while i < 8 {
        e[i] = header[i];
        i += 1;
    }
    (e[18], e[19]) = (1, 4); // E-EDID 1.4
                             // The first detailed timing descriptor: a pixel clock (65 MHz), 1024 pixels, 768 lines.
    (e[54], e[55]) = (0x64, 0x19);
    (e[56], e[58]) = (0x00, 0x40);
    (e[59], e[61]) = (0x00, 0x30);
    e[126] = 1; // one extension block
    (e[128], e[129]) = (0x02, 0x03); // a CTA-861 extension, revision 3
    let mut block = 0;
    while block < 2 {
        let (mut sum, mut i) = (0u8, 0);
        while i < 127 {
            sum = sum.wrapping_add(e[block * 128 + i]);
            i += 1;
        }
        e[block * 128 + 127] = 0u8.wrapping_sub(sum);
        block += 1;
    }
    e
}

/// The most EDID bytes handed over: 256 blocks of 128 (E-EDID's extension count is one byte).
#[cfg(feature = "limine")]
pub const MAX_EDID: usize = 256 * 128;

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

/// Test builds: pages of LoaderCode and LoaderData in the firmware's map, to show that a failed
/// boot gives back everything it allocated (0 if the map does not fit the buffer).
pub fn loader_pages(bs: &efi::BootServices) -> u64 {
    static mut BUFFER: [u64; 8192] = [0; 8192];
    let (mut size, mut key, mut dsize, mut version) = (core::mem::size_of::<[u64; 8192]>(), 0, 0, 0);
    // SAFETY: only test builds call this, once at a time, before ExitBootServices; BUFFER holds size bytes.
    unsafe {
        let buffer = ptr::addr_of_mut!(BUFFER) as *mut u8;
        let status =
            (bs.get_memory_map)(&mut size, buffer as *mut efi::MemoryDescriptor, &mut key, &mut dsize, &mut version);
        if status.is_error() || dsize == 0 {
            return 0;
        }
        (0..size / dsize)
            .map(|i| ptr::read_unaligned(buffer.add(i * dsize) as *const efi::MemoryDescriptor))
            .filter(|d| d.r#type == efi::LOADER_CODE || d.r#type == efi::LOADER_DATA)
            .map(|d| d.number_of_pages)
            .sum()
    }
}
