//! The handover, one module per boot protocol (the build picks one with the crate's cargo
//! feature): what the kernel finds at entry, filled in the block's area before ExitBootServices
//! and completed after it. Each has the same functions: `area_size`, `fill`, `cpu_record`,
//! `complete`, `cpus_started`, `at_handoff`, and its `Info`. What else a protocol decides
//! (memory-map types, the GDT, whether SetVirtualAddressMap runs and the APs are started, RDI at
//! entry) is rendered in `rendered::protocol`; the boot sequence in main.rs is the same for all.

#[cfg(not(feature = "limine"))]
pub mod highboot;
#[cfg(feature = "limine")]
pub mod limine;

use core::ptr;

use crate::block::{Block, Placement};
use crate::rendered::abi;
use crate::rendered::protocol::GDT;

/// The protocol's GDT and the descriptor registers the trampoline loads, in the block's area: the
/// GDTR (its base the GDT's direct-map address), the IDTR zero (limit 0, base 0: a null IDT).
///
/// # Safety
/// The block's area is laid out for this boot.
pub unsafe fn install_descriptors(block: &Block, place: &Placement) {
    let layout = &block.layout;
    ptr::copy_nonoverlapping(GDT.as_ptr(), block.in_area(layout.gdt_off) as *mut u64, GDT.len());
    let gdtr = block.in_area(layout.desc_off + abi::DESC_GDTR) as *mut u8;
    ptr::write_unaligned(gdtr as *mut u16, (GDT.len() * 8 - 1) as u16);
    ptr::write_unaligned(gdtr.add(2) as *mut u64, place.direct(block.in_area(layout.gdt_off)));
}
