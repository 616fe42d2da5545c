//! Changing the paging mode between 4 levels (48-bit addresses) and 5 levels (57-bit, CR4.LA57).
//!
//! CR4.LA57 cannot change while long mode is active, so the change leaves it: compatibility mode,
//! paging off, LA57 toggled, CR3 = a root in the new mode, paging on, far jump back to 64-bit
//! code. That code must be identity-mapped below 4 GiB in both modes: the trampoline page is
//! copied to a page below 4 GiB, next to a one-entry root that maps only that page in the new
//! mode (through the planned tables' identity tables). See templates/loader/trampoline.S.j2.

use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use r_efi::efi;

use crate::cpu::{self, cr4};
use crate::failure::{fail, Result};
use crate::firmware::Pages;
use crate::paging::{Root, ADDR, PAGE, PRESENT, WRITABLE};
use crate::rendered::abi::{self, Handoff};
use crate::rendered::{plan, protocol};

extern "sysv64" {
    static highboot_trampoline_page: u8;
    static highboot_ap32: u8;
    static highboot_ap64: u8;
    static highboot_trampoline_end: u8;
    static highboot_compat32: u8;
    static highboot_long64: u8;
    static highboot_set_paging_done: u8;
    static highboot_trampoline_data: u8;
    fn highboot_set_paging(args: *const Handoff);
    /// The jump to the kernel: CR3, the alias, the identity entry dropped, the entry (abi.py's Handoff).
    pub fn highboot_handoff(args: *const Handoff) -> !;
}

/// The trampoline page's copy below 4 GiB (below 1 MiB when it is also the APs' startup page)
/// and the transition root next to it.
#[derive(Clone, Copy)]
pub struct LowPages {
    pub page: u64,
    pub root: u64,
    /// The BSP changes the paging mode on its way to the kernel (else the copy is for the APs).
    pub changes_mode: bool,
}

/// The paging depth the kernel runs with: the layout's, or 5 levels over a 4-level layout's tables
/// on a CPU with LA57 when the kernel prefers 5-level paging (protocol::LA57_AT_BOOT).
pub fn kernel_levels(features: &cpu::Features) -> usize {
    if protocol::LA57_AT_BOOT && features.la57 {
        5
    } else {
        plan::tables::LEVELS
    }
}

/// CR4.LA57 for a root of this depth.
pub fn cr4_la57(levels: usize) -> u64 {
    if levels == 5 {
        cr4::LA57
    } else {
        0
    }
}

fn offset(symbol: &u8) -> u64 {
    symbol as *const u8 as u64 - trampoline_page()
}

/// The trampoline page of the loader image itself.
pub fn trampoline_page() -> u64 {
    ptr::addr_of!(highboot_trampoline_page) as u64
}

/// Below 4 GiB: where 32-bit code can run and CR3 can point from it.
pub const BELOW_4G: u64 = 0xffff_ffff;
/// Below 1 MiB (and below the EBDA and ROMs): where a SIPI can start a processor.
pub const BELOW_1M: u64 = 0x9_ffff;

/// Two pages below `limit` (LoaderCode: the firmware keeps them executable), never page 0: a copy
/// of the trampoline page with its GDTR and far pointer to the 32-bit code filled in, and a zeroed
/// root. None when there is no room there.
pub fn allocate_low(bs: &efi::BootServices, limit: u64, changes_mode: bool) -> Result<(Pages, LowPages)> {
    // SAFETY: symbol addresses only; the trampoline is one page by construction (checked here).
    let size = unsafe { offset(&highboot_trampoline_end) };
    if size != PAGE {
        return fail!(efi::Status::LOAD_ERROR, "the trampoline is {} bytes, not one page (loader build error)", size);
    }
    let mut pages = Pages::allocate(bs, efi::LOADER_CODE, Some(limit), 2);
    if matches!(&pages, Ok(p) if p.base == 0) {
        // Page 0 stays unused (a null pointer must fault in the kernel): take the next free pair.
        let zero = pages;
        pages = Pages::allocate(bs, efi::LOADER_CODE, Some(limit), 2);
        drop(zero);
    }
    let pages = match pages {
        Ok(pages) => pages,
        Err(status) => return Err(status),
    };
    let low = LowPages { page: pages.base, root: pages.base + PAGE, changes_mode };
    // SAFETY: both pages are ours and identity-mapped by the firmware.
    unsafe {
        ptr::copy_nonoverlapping(trampoline_page() as *const u8, low.page as *mut u8, PAGE as usize);
        ptr::write_bytes(low.root as *mut u8, 0, PAGE as usize);
        let data = low.page + offset(&highboot_trampoline_data);
        // GDTR base (the GDT is at the start of the trampoline data), far pointer to the 32-bit code.
        ptr::write_unaligned((data + abi::TDATA_GDTR_BASE) as *mut u64, data);
        ptr::write_unaligned((data + abi::TDATA_FAR32) as *mut u32, (low.page + offset(&highboot_compat32)) as u32);
    }
    Ok((pages, low))
}

/// Put `args` into the copy's trampoline data, with the 64-bit continuation; returns the copy's args.
unsafe fn prepare(low: LowPages, continuation: &u8, args: &Handoff) -> *const Handoff {
    let data = low.page + offset(&highboot_trampoline_data);
    ptr::write_unaligned((data + abi::TDATA_FAR64) as *mut u32, (low.page + offset(continuation)) as u32);
    let copy = (data + abi::TDATA_HANDOFF) as *mut Handoff;
    ptr::write(copy, Handoff { transition_root: low.root, ..*args });
    copy
}

/// The transition root's one entry, in the kernel's paging mode: the kernel root's for the copy
/// (through the identity tables it maps only the copy).
unsafe fn copy_identity_entry(low: LowPages, kernel_root: Root) {
    let entry = kernel_root.entry(low.page);
    ptr::write((low.root + (entry - kernel_root.table)) as *mut u64, ptr::read(entry as *const u64));
}

/// The Handoff the trampoline copy runs from: the kernel's root gets the copy's identity entry
/// in the transition root, and the 64-bit continuation goes on to the normal handoff.
pub unsafe fn handoff_args(low: LowPages, kernel_root: Root, args: &Handoff) -> *const Handoff {
    copy_identity_entry(low, kernel_root);
    prepare(low, &highboot_long64, args)
}

/// The APs' start data in the copy (the startup page): far pointers to their 32-bit and 64-bit
/// code, the ApStart record, and the transition root's one entry (the kernel root's, for this
/// page: through the identity tables it maps only this page).
///
/// # Safety
/// `low` is ours and identity-mapped; `kernel_root` maps the copy at its identity address.
pub unsafe fn prepare_ap_start(low: LowPages, kernel_root: Root, start: &abi::ApStart) {
    let data = low.page + offset(&highboot_trampoline_data);
    ptr::write_unaligned((data + abi::TDATA_AP_FAR32) as *mut u32, (low.page + offset(&highboot_ap32)) as u32);
    ptr::write_unaligned((data + abi::TDATA_AP_FAR64) as *mut u32, (low.page + offset(&highboot_ap64)) as u32);
    ptr::write((data + abi::TDATA_AP) as *mut abi::ApStart, *start);
    copy_identity_entry(low, kernel_root);
}

/// The BSP's handoff from the copy (the kernel's tables map the copy, not the loader's page):
/// the same code at the copy's address, in the same paging mode.
///
/// # Safety
/// As for highboot_handoff; `low` is the page the kernel's tables identity-map.
pub unsafe fn handoff_from_copy(low: LowPages, args: &Handoff) -> ! {
    let entry = low.page + (highboot_handoff as *const () as u64 - trampoline_page());
    let handoff: extern "sysv64" fn(*const Handoff) -> ! = core::mem::transmute(entry as usize);
    handoff(args)
}

/// Test builds only: the copy page the fault moved the firmware to the other mode with, and the firmware's own
/// 4-level root (0: the fault is not in effect).
static FAULT_PAGE: AtomicU64 = AtomicU64::new(0);
static FAULT_ROOT4: AtomicU64 = AtomicU64::new(0);

/// Test builds only: move the firmware itself to 5-level paging, as firmware built for it hands
/// over (the root's first entry is the firmware's 4-level root: the same identity map), and
/// return. Boot services keep working; the loader then starts from a 5-level firmware.
pub fn firmware_to_5_level(bs: &efi::BootServices) -> Result<()> {
    let (pages, low) = match allocate_low(bs, BELOW_4G, true) {
        Ok(x) => x,
        Err(status) => {
            return fail!(status, "no memory below 4 GiB for the paging-mode change: {:#x}", status.as_usize())
        }
    };
    pages.keep(); // the firmware runs on the transition root from now on
    let cr3: u64;
    // SAFETY: reading CR3 at CPL 0; writing the transition root we own.
    unsafe {
        core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack));
        ptr::write(low.root as *mut u64, (cr3 & ADDR) | PRESENT | WRITABLE);
    }
    FAULT_PAGE.store(low.page, Ordering::Relaxed);
    FAULT_ROOT4.store(cr3 & ADDR, Ordering::Relaxed);
    fault_firmware_paging(5);
    Ok(())
}

/// Test builds only, once the fault is in effect: the firmware's paging in `levels` levels. The
/// loader puts the firmware back in its own 4-level mode around ExitBootServices, whose handlers
/// wake the firmware's APs with the paging state the firmware saved at its start (a firmware
/// built for 5 levels saves 5-level state): the fault only stands in for such a firmware while
/// the loader runs.
pub fn fault_firmware_paging(levels: u32) {
    let page = FAULT_PAGE.load(Ordering::Relaxed);
    if page == 0 {
        return;
    }
    let low = LowPages { page, root: page + PAGE, changes_mode: true };
    let (cr3, la57) = if levels == 5 { (low.root, cr4::LA57) } else { (FAULT_ROOT4.load(Ordering::Relaxed), 0) };
    // SAFETY: the copy and both roots are kept, identity-mapped below 4 GiB in either mode; the
    // change returns with the same mappings in the other mode.
    unsafe {
        let copy = prepare(low, &highboot_set_paging_done, &Handoff { cr4_la57: la57, ..Handoff::default() });
        (*(copy as *mut Handoff)).transition_root = cr3;
        highboot_set_paging(copy);
    }
}
