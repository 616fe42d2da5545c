//! What the CPU can do, and the control bits the loader reads and sets: every CPUID feature, CR0,
//! CR4, XCR0 and MSR bit it names is named here (Intel SDM vol. 2A CPUID; vol. 3A 2.5 control
//! registers, 2.2.1 EFER, 10.4.4 IA32_APIC_BASE; vol. 1 13.3 XCR0). verity.rs, which the tests and
//! tools/bench also build on their own, tests the CPUID bits of its hashing engines itself.

use core::arch::asm;
use core::arch::x86_64::{__cpuid, __cpuid_count};

/// CPUID feature bits: leaf 8000_0001h EDX, leaf 7 ECX, leaf 1 ECX.
pub mod cpuid {
    /// 8000_0001h EDX: 1 GiB pages.
    pub const PDPE1GB: u32 = 1 << 26;
    /// 8000_0001h EDX: no-execute pages (EFER.NXE).
    pub const NX: u32 = 1 << 20;
    /// 7.0 ECX: 5-level paging (CR4.LA57).
    pub const LA57: u32 = 1 << 16;
    /// 1 ECX: x2APIC mode.
    pub const X2APIC: u32 = 1 << 21;
    /// 1 ECX: XSAVE/XRSTOR and XCR0.
    pub const XSAVE: u32 = 1 << 26;
    /// 1 ECX: the OS set CR4.OSXSAVE.
    pub const OSXSAVE: u32 = 1 << 27;
    /// 1 ECX: AVX.
    pub const AVX: u32 = 1 << 28;
    /// 1 ECX: RDRAND.
    pub const RDRAND: u32 = 1 << 30;
}

/// CR0 bits.
pub mod cr0 {
    /// Protected mode.
    pub const PE: u64 = 1 << 0;
    /// WAIT/FWAIT honour TS.
    pub const MP: u64 = 1 << 1;
    /// Extension type (always 1).
    pub const ET: u64 = 1 << 4;
    /// Native x87 error reporting.
    pub const NE: u64 = 1 << 5;
    /// Write protection at CPL 0: read-only pages stay read-only for the kernel too.
    pub const WP: u64 = 1 << 16;
    /// Paging.
    pub const PG: u64 = 1 << 31;
}

/// CR4 bits.
pub mod cr4 {
    /// Physical address extension (long mode needs it).
    pub const PAE: u64 = 1 << 5;
    /// Global pages.
    pub const PGE: u64 = 1 << 7;
    /// FXSAVE/FXRSTOR and SSE.
    pub const OSFXSR: u64 = 1 << 9;
    /// SIMD floating-point exceptions.
    pub const OSXMMEXCPT: u64 = 1 << 10;
    /// 5-level paging (57-bit addresses).
    pub const LA57: u64 = 1 << 12;
    /// XSAVE and XCR0.
    pub const OSXSAVE: u64 = 1 << 18;
}

/// XCR0 bits: the register state XSAVE manages and AVX instructions need enabled.
pub mod xcr0 {
    pub const X87: u64 = 1 << 0;
    pub const SSE: u64 = 1 << 1;
    pub const AVX: u64 = 1 << 2;
}

/// Model-specific registers.
pub mod msr {
    pub const APIC_BASE: u32 = 0x1b;
    /// The x2APIC's interrupt command register (one 64-bit write sends an IPI).
    pub const X2APIC_ICR: u32 = 0x830;
    pub const EFER: u32 = 0xc000_0080;
}

/// IA32_EFER bits.
pub mod efer {
    /// Long mode.
    pub const LME: u64 = 1 << 8;
    /// No-execute pages: bit 63 of an entry is NX (else reserved).
    pub const NXE: u64 = 1 << 11;
}

/// IA32_APIC_BASE bits.
pub mod apic_base {
    /// x2APIC mode (with ENABLE).
    pub const X2APIC: u64 = 1 << 10;
    /// The local APIC is enabled.
    pub const ENABLE: u64 = 1 << 11;
    /// The xAPIC's registers: a 4 KiB page at this physical address.
    pub const ADDRESS: u64 = 0x000f_ffff_ffff_f000;
}

pub struct Features {
    pub pdpe1gb: bool,
    pub nx: bool,
    pub la57: bool,
}

pub fn features() -> Features {
    let max_ext = __cpuid(0x8000_0000).eax;
    let ext = if max_ext >= 0x8000_0001 { __cpuid(0x8000_0001).edx } else { 0 };
    let max_basic = __cpuid(0).eax;
    let leaf7 = if max_basic >= 7 { __cpuid(7).ecx } else { 0 };
    Features { pdpe1gb: ext & cpuid::PDPE1GB != 0, nx: ext & cpuid::NX != 0, la57: leaf7 & cpuid::LA57 != 0 }
}

pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

pub fn read_cr0() -> u64 {
    let cr0: u64;
    // SAFETY: reading CR0 at CPL 0.
    unsafe { asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack)) };
    cr0
}

pub fn read_cr4() -> u64 {
    let cr4: u64;
    // SAFETY: reading CR4 at CPL 0.
    unsafe { asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack)) };
    cr4
}

pub fn la57_active() -> bool {
    read_cr4() & cr4::LA57 != 0
}

pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: CPL 0; the loader reads only MSRs every x86-64 CPU with its features has.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (hi as u64) << 32 | lo as u64
}

/// # Safety
/// CPL 0; `value` is valid for `msr` and what it changes is what the caller wants.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack));
}

/// EFER.NXE (when the CPU has NX) and CR0.WP, before the kernel's tables go live.
pub fn enable_nx_and_wp(nx: bool) {
    // SAFETY: CPL 0 after ExitBootServices; both bits only add protection.
    unsafe {
        if nx {
            wrmsr(msr::EFER, rdmsr(msr::EFER) | efer::NXE);
        }
        asm!("mov cr0, {}", in(reg) read_cr0() | cr0::WP, options(nomem, nostack));
    }
}

/// The AVX register state, switched on for the hashing when the CPU has it but the firmware left
/// it off (OVMF does): CR4.OSXSAVE and XCR0's SSE and AVX bits, as an OS would set them, and the
/// firmware's values put back when this is dropped, before anything else runs.
pub struct AvxState {
    restore: Option<(u64, u64)>,
}

impl AvxState {
    pub fn enable() -> AvxState {
        let leaf1 = __cpuid(1).ecx;
        let (xsave, osxsave, avx) = (leaf1 & cpuid::XSAVE != 0, leaf1 & cpuid::OSXSAVE != 0, leaf1 & cpuid::AVX != 0);
        // XCR0 may hold only what CPUID.(0Dh, 0).EAX says the CPU saves: x87, SSE and AVX here.
        let wanted = xcr0::X87 | xcr0::SSE | xcr0::AVX;
        let savable = if __cpuid(0).eax >= 0xd { __cpuid_count(0xd, 0).eax } else { 0 };
        if osxsave || !xsave || !avx || savable as u64 & wanted != wanted {
            return AvxState { restore: None };
        }
        // SAFETY: CPL 0; CPUID says XSAVE exists and XCR0 may hold these bits.
        unsafe {
            let cr4 = read_cr4();
            write_cr4(cr4 | cr4::OSXSAVE);
            let xcr0 = xgetbv0();
            xsetbv0(xcr0 | wanted);
            AvxState { restore: Some((cr4, xcr0)) }
        }
    }
}

impl Drop for AvxState {
    fn drop(&mut self) {
        if let Some((cr4, xcr0)) = self.restore {
            // SAFETY: the values the firmware had, put back in the reverse order.
            unsafe {
                xsetbv0(xcr0);
                write_cr4(cr4);
            }
        }
    }
}

unsafe fn write_cr4(cr4: u64) {
    asm!("mov cr4, {}", in(reg) cr4, options(nostack));
}

#[target_feature(enable = "xsave")]
unsafe fn xgetbv0() -> u64 {
    core::arch::x86_64::_xgetbv(0)
}

unsafe fn xsetbv0(value: u64) {
    asm!("xsetbv", in("ecx") 0, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack));
}
