//! What the CPU can do, and the control bits the kernel entry ABI promises.

use core::arch::x86_64::__cpuid;

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
    Features { pdpe1gb: ext & (1 << 26) != 0, nx: ext & (1 << 20) != 0, la57: leaf7 & (1 << 16) != 0 }
}

pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

pub fn la57_active() -> bool {
    let cr4: u64;
    // SAFETY: reading CR4 at CPL 0.
    unsafe { core::arch::asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack)) };
    cr4 & (1 << 12) != 0
}

/// EFER.NXE (when the CPU has NX) and CR0.WP, before the kernel's tables go live.
pub fn enable_nx_and_wp(nx: bool) {
    // SAFETY: CPL 0 after ExitBootServices; both bits only add protection.
    unsafe {
        if nx {
            let (lo, hi): (u32, u32);
            core::arch::asm!("rdmsr", in("ecx") 0xc000_0080u32, out("eax") lo, out("edx") hi, options(nomem, nostack));
            core::arch::asm!("wrmsr", in("ecx") 0xc000_0080u32, in("eax") lo | (1 << 11), in("edx") hi, options(nomem, nostack));
        }
        let mut cr0: u64;
        core::arch::asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack));
        cr0 |= 1 << 16;
        core::arch::asm!("mov cr0, {}", in(reg) cr0, options(nomem, nostack));
    }
}
