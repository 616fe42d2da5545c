//! The interrupt controllers as the Limine protocol hands them over (its x86-64 entry state),
//! after ExitBootServices: the 8259 PICs masked, and each I/O APIC redirection entry whose
//! delivery mode the kernel's base revision names masked, the rest of the entry as the firmware
//! left it.

use core::ptr;

use crate::madt;

/// The PICs' data ports: writing the interrupt mask register (OCW1).
const PIC1_DATA: u16 = 0x21;
const PIC2_DATA: u16 = 0xa1;
/// The I/O APIC's index and data registers, its version register (the highest redirection entry
/// in bits 16..23) and the first redirection entry's low word (82093AA datasheet, 3.0).
const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
const IOAPICVER: u32 = 0x01;
const IOREDTBL: u32 = 0x10;
/// A redirection entry's delivery mode (bits 8..10) and mask (bit 16).
const DELIVERY_MODE_SHIFT: u32 = 8;
const MASKED: u32 = 1 << 16;

/// Delivery modes, as bits of a set (bit n: mode n): Fixed and Lowest Priority (every base
/// revision), NMI and ExtINT (revision 5 on).
pub const FIXED_AND_LOWEST: u8 = 1 << 0b000 | 1 << 0b001;
#[allow(dead_code)] // revision 5 on
pub const NMI_AND_EXTINT: u8 = 1 << 0b100 | 1 << 0b111;

unsafe fn outb(port: u16, value: u8) {
    core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags));
}

/// Mask every IRQ of both 8259 PICs.
///
/// # Safety
/// Boot services are gone: the legacy PICs are the loader's.
pub unsafe fn mask_pics() {
    outb(PIC2_DATA, 0xff);
    outb(PIC1_DATA, 0xff);
}

/// Mask the redirection entries of every I/O APIC the MADT lists whose delivery mode is in
/// `modes`. Returns the number of I/O APICs (0 when the MADT cannot be read).
///
/// # Safety
/// Boot services are gone; the I/O APICs' registers are identity-mapped (the firmware's tables).
pub unsafe fn mask_io_apics(madt: &[u8], modes: u8) -> u32 {
    let mut count = 0;
    let _ = madt::io_apics(madt, |base| {
        mask_io_apic(base, modes);
        count += 1;
    });
    count
}

unsafe fn mask_io_apic(base: u64, modes: u8) {
    let select = (base + IOREGSEL) as *mut u32;
    let window = (base + IOWIN) as *mut u32;
    let read = |register: u32| {
        ptr::write_volatile(select, register);
        ptr::read_volatile(window)
    };
    let entries = ((read(IOAPICVER) >> 16) & 0xff) + 1;
    for n in 0..entries {
        let register = IOREDTBL + 2 * n;
        let low = read(register);
        if modes & 1 << ((low >> DELIVERY_MODE_SHIFT) & 7) != 0 && low & MASKED == 0 {
            ptr::write_volatile(select, register);
            ptr::write_volatile(window, low | MASKED);
        }
    }
}
