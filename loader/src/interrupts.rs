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

/// The local APIC registers (xAPIC offsets; the x2APIC's MSR is 0x800 + offset / 16): TPR,
/// SVR, the version (max LVT in bits 16..23), and each LVT with the version's least max LVT.
const TPR: u32 = 0x80;
const SVR: u32 = 0xf0;
const VERSION: u32 = 0x30;
const LINT: [u32; 2] = [0x350, 0x360];
const LVTS: [(u32, u32); 7] = [(0x2f0, 6), (0x320, 0), (0x330, 5), (0x340, 4), (0x350, 0), (0x360, 0), (0x370, 0)];
/// The delivery modes masked: Fixed, Lowest Priority, NMI, ExtINT.
const LVT_MASKED_MODES: u32 = 1 << 0b000 | 1 << 0b001 | 1 << 0b100 | 1 << 0b111;

/// This CPU's local APIC as Limine base revision 5 hands it over (the trampoline does the APs'
/// alike): enabled, TPR 0, SVR 0x1ff, the LINT pins wired to NMIs as `wiring` says
/// (`madt::lint_nmi`), and every LVT whose delivery mode is Fixed, Lowest Priority, NMI or ExtINT masked.
///
/// # Safety
/// Boot services are gone; an xAPIC's registers are identity-mapped (the firmware's tables).
#[cfg_attr(not(feature = "limine"), allow(dead_code))]
pub unsafe fn setup_local_apic(wiring: u64) {
    use crate::cpu::{apic_base, msr, rdmsr, wrmsr};
    let base = rdmsr(msr::APIC_BASE) | apic_base::ENABLE;
    wrmsr(msr::APIC_BASE, base);
    let x2apic = base & apic_base::X2APIC != 0;
    let mmio = base & apic_base::ADDRESS;
    let read = |reg: u32| {
        if x2apic {
            rdmsr(0x800 + reg / 16) as u32
        } else {
            ptr::read_volatile((mmio + reg as u64) as *const u32)
        }
    };
    let write = |reg: u32, value: u32| {
        if x2apic {
            wrmsr(0x800 + reg / 16, value as u64)
        } else {
            ptr::write_volatile((mmio + reg as u64) as *mut u32, value)
        }
    };
    write(TPR, 0);
    write(SVR, 0x1ff);
    for (n, &reg) in LINT.iter().enumerate() {
        let w = (wiring >> (32 * n)) as u32;
        if w != 0 {
            write(reg, read(reg) & !madt::LVT_WIRING | w);
        }
    }
    let max_lvt = read(VERSION) >> 16 & 0xff;
    for &(reg, least) in LVTS.iter() {
        if max_lvt < least {
            continue; // the CPU has no such LVT (an x2APIC faults on its MSR)
        }
        let lvt = read(reg);
        if LVT_MASKED_MODES & 1 << (lvt >> 8 & 7) != 0 {
            write(reg, lvt | MASKED);
        }
    }
}
