//! What the CPU can do, and the control bits the loader reads and sets: every CPUID feature, CR0,
//! CR4, XCR0 and MSR bit it names is named here, rendered from site_scons/highboot/rendering/cpu_bits.py
//! (Intel SDM vol. 2A CPUID; vol. 3A 2.5 control registers, 2.2.1 EFER, 10.4.4 IA32_APIC_BASE;
//! vol. 1 13.3 XCR0), the description the trampoline's assembly has its bits from too. verity.rs, which the tests and
//! tools/bench also build on their own, tests the CPUID bits of its hashing engines itself.

use core::arch::asm;
use core::arch::x86_64::{__cpuid, __cpuid_count};

// The bits, rendered into abi.rs from their one description (site_scons/highboot/rendering/cpu_bits.py),
// from which the trampoline's assembly has them too.
pub use crate::rendered::abi::{apic_base, cpuid, cr0, cr4, efer, msr, xcr0};

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
