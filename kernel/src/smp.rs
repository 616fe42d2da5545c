//! The application processors the loader parked: release each, let it check on itself what the
//! entry ABI promises an AP, and collect the verdicts (APs never print: COM1 is the BSP's).
//! With SMP off, start the APs the loader left alone, to show they were left startable.

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use crate::bootinfo::{cpu, cpu_flags, mem, pte, BootInfo, Cpu, MemoryRegion};
use crate::report;
use crate::{println, walk, Checks};

/// extra_argument as the BSP sets it (| the record's index), and as the AP answers (| failure bits).
const TAG: u64 = 0x4849_4748 << 32;
const DONE: u64 = 0x444f_4e45 << 32;
/// What an AP found wrong with itself.
const FAILURES: [&str; 10] = [
    "its APIC ID (CPUID) is not its record's",
    "CR3 is not page_table_root",
    "RSP at entry is not stack_top - 8",
    "the return address at entry is not 0",
    "extra_argument is not the one the kernel set",
    "interrupts are enabled",
    "CR0.WP is clear",
    "EFER.NXE is clear on a CPU with NX",
    "CR4.LA57 differs from the BSP's",
    "its stack does not keep what it is given",
];

/// The boot info, for the APs (set before the first release).
static INFO: AtomicU64 = AtomicU64::new(0);
static BSP_LA57: AtomicU8 = AtomicU8::new(0);

core::arch::global_asm!(
    ".globl highboot_ap_entry",
    "highboot_ap_entry:",
    "    mov rsi, rsp",
    "    sub rsp, 8", // entered as if called (RSP = stack_top - 8): realign for the call
    "    call {main}",
    "2:  cli",
    "    hlt",
    "    jmp 2b",
    main = sym ap_main,
);

extern "C" {
    fn highboot_ap_entry();
}

/// This CPU's APIC ID, the x2APIC one where CPUID has leaf 0xb.
pub fn apic_id() -> u32 {
    let max = core::arch::x86_64::__cpuid(0).eax;
    if max >= 0xb && core::arch::x86_64::__cpuid_count(0xb, 0).ebx != 0 {
        core::arch::x86_64::__cpuid_count(0xb, 0).edx
    } else {
        core::arch::x86_64::__cpuid(1).ebx >> 24
    }
}

fn cr(n: u32) -> u64 {
    let v: u64;
    // SAFETY: reading control registers at CPL 0.
    unsafe {
        match n {
            0 => core::arch::asm!("mov {}, cr0", out(reg) v),
            3 => core::arch::asm!("mov {}, cr3", out(reg) v),
            _ => core::arch::asm!("mov {}, cr4", out(reg) v),
        }
    }
    v
}

fn efer() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reading EFER at CPL 0.
    unsafe { core::arch::asm!("rdmsr", in("ecx") 0xc000_0080u32, out("eax") lo, out("edx") hi) };
    (hi as u64) << 32 | lo as u64
}

fn word(record: &Cpu) -> &AtomicU64 {
    // SAFETY: extra_argument is an aligned u64 in the record, shared with its AP.
    unsafe { &*(core::ptr::addr_of!(record.extra_argument) as *const AtomicU64) }
}

extern "sysv64" fn ap_main(record: &'static Cpu, entry_rsp: u64) -> ! {
    // SAFETY: the BSP set INFO before it released this AP.
    let info = unsafe { &*(INFO.load(Ordering::Acquire) as *const BootInfo) };
    let rflags: u64;
    // SAFETY: reading RFLAGS.
    unsafe { core::arch::asm!("pushfq; pop {}", out(reg) rflags) };
    let index = (record as *const Cpu as u64 - info.cpus) / core::mem::size_of::<Cpu>() as u64;
    // SAFETY: entry_rsp is on this AP's stack (checked by the first test before it is relied on).
    let ret = unsafe { core::ptr::read_volatile(entry_rsp as *const u64) };
    let mut buffer = [0u8; 512];
    for (i, b) in buffer.iter_mut().enumerate() {
        // SAFETY: a volatile write to our own stack buffer.
        unsafe { core::ptr::write_volatile(b, (i as u64 ^ index) as u8) };
    }
    let kept = buffer.iter().enumerate().all(|(i, b)| {
        // SAFETY: reading back our own stack buffer.
        unsafe { core::ptr::read_volatile(b) == (i as u64 ^ index) as u8 }
    });
    let la57 = (cr(4) >> 12 & 1) as u8;
    let failed = [
        apic_id() != record.apic_id,
        cr(3) & pte::ADDR_MASK != info.page_table_root,
        entry_rsp != record.stack_top - 8,
        ret != 0,
        word(record).load(Ordering::Acquire) != TAG | index,
        rflags & (1 << 9) != 0,
        cr(0) & (1 << 16) == 0,
        info.cpu_features & cpu::NX != 0 && efer() & (1 << 11) == 0,
        la57 != BSP_LA57.load(Ordering::Relaxed),
        !kept,
    ];
    let bits = failed.iter().enumerate().fold(0u64, |bits, (i, &f)| bits | (f as u64) << i);
    word(record).store(DONE | bits, Ordering::Release);
    loop {
        // SAFETY: halting is always allowed at CPL 0.
        unsafe { core::arch::asm!("cli; hlt") };
    }
}

fn tsc() -> u64 {
    // SAFETY: RDTSC has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Spin until `done` or about `seconds` at a (generous) 10 GHz TSC.
fn wait(seconds: u64, mut done: impl FnMut() -> bool) -> bool {
    let end = tsc() + seconds * 10_000_000_000;
    while !done() {
        if tsc() > end {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

pub fn check(c: &mut Checks, info: &'static BootInfo) {
    println!(
        info_format!(cpu_count, bsp_apic_id, cpu_flags, cpus_failed, cpus_not_started, ap_stack_size),
        info.cpu_count, info.bsp_apic_id, info.cpu_flags, info.cpus_failed, info.cpus_not_started, info.ap_stack_size
    );
    let cpus = info.cpus();
    c.check(!cpus.is_empty(), format_args!("the boot info lists no CPU"));
    if cpus.is_empty() {
        return;
    }
    let bsp = &cpus[0];
    c.check(
        bsp.apic_id == apic_id() && info.bsp_apic_id == apic_id(),
        format_args!(
            "BSP APIC ID {:#x} (record) / {:#x} (boot info), CPUID says {:#x}",
            bsp.apic_id,
            info.bsp_apic_id,
            apic_id()
        ),
    );
    c.check(bsp.stack_top == info.stack_top, format_args!("the BSP's stack_top is not the boot stack's"));
    println!(report_format!(CPU), 0, bsp.processor_id, bsp.apic_id, bsp.stack_top, report::CPU_STATE[0]);
    if info.cpu_flags & cpu_flags::SMP == 0 {
        c.check(cpus.len() == 1, format_args!("SMP off, yet {} CPUs listed", cpus.len()));
        self_start(c, info);
        return;
    }
    INFO.store(info as *const BootInfo as u64, Ordering::Release);
    BSP_LA57.store((cr(4) >> 12 & 1) as u8, Ordering::Relaxed);
    let entry = highboot_ap_entry as *const () as u64;
    for (k, ap) in cpus.iter().enumerate().skip(1) {
        let top = ap.stack_top;
        c.check(
            top % 16 == 0 && top >> 63 == 1 && cpus[..k].iter().all(|o| o.stack_top != top),
            format_args!("AP {} stack_top {:#x}: not 16-byte aligned, not in the higher half or shared", k, top),
        );
        // The guard page below the stack is not mapped; the stack is, read-write, not executable.
        let bottom = top - info.ap_stack_size;
        c.check(walk::translate(info, bottom - 1).is_none(), format_args!("AP {}: no guard page below its stack", k));
        let owned = |t: &walk::Translation| {
            t.writable
                && t.no_exec_where_possible()
                && info.kernel_phys_base <= t.pa
                && t.pa < info.kernel_phys_base + info.kernel_phys_size
        };
        c.check(
            matches!(walk::translate(info, bottom), Some(t) if owned(&t))
                && matches!(walk::translate(info, top - 1), Some(t) if owned(&t)),
            format_args!("AP {}: its stack is not kernel-owned memory mapped read-write, no-execute", k),
        );
        word(ap).store(TAG | k as u64, Ordering::Relaxed);
        // SAFETY: goto_address is an aligned u64 of the record the parked AP polls.
        let goto = unsafe { &*(core::ptr::addr_of!(ap.goto_address) as *const AtomicU64) };
        goto.store(entry, Ordering::Release);
    }
    let mut released = 0;
    for (k, ap) in cpus.iter().enumerate().skip(1) {
        let answered = wait(5, || word(ap).load(Ordering::Acquire) >> 32 == DONE >> 32);
        let bits = word(ap).load(Ordering::Acquire) & 0xffff_ffff;
        let ok = answered && bits == 0;
        c.check(answered, format_args!("AP {} (APIC ID {:#x}) did not check in after its release", k, ap.apic_id));
        for (i, what) in FAILURES.iter().enumerate() {
            c.check(!answered || bits & (1 << i) == 0, format_args!("AP {} (APIC ID {:#x}): {}", k, ap.apic_id, what));
        }
        released += ok as u64;
        let state = report::CPU_STATE[if ok { 1 } else { 2 }];
        println!(report_format!(CPU), k, ap.processor_id, ap.apic_id, ap.stack_top, state);
    }
    println!(info_format!(aps_released), released);
}

/// SMP off: the loader left the APs alone. Start them here (INIT, SIPI, SIPI to all but this
/// CPU) into a real-mode stub below 1 MiB that counts itself in and halts.
fn self_start(c: &mut Checks, info: &BootInfo) {
    if info.cpus_not_started == 0 {
        return;
    }
    // SAFETY: the loader promises memory_map points at memory_map_count entries.
    let map: &[MemoryRegion] =
        unsafe { core::slice::from_raw_parts(info.memory_map as *const MemoryRegion, info.memory_map_count as usize) };
    let page = map.iter().filter(|r| r.r#type == mem::USABLE).find_map(|r| {
        let base = r.base.max(0x1000);
        (base + 0x1000 <= (r.base + r.length).min(0x9_f000)).then_some(base)
    });
    let Some(page) = page else {
        c.check(false, format_args!("SMP off: no usable page below 1 MiB to start the APs from"));
        return;
    };
    // cli; cld; mov ax, cs; mov ds, ax; lock inc word [0x100]; 1: hlt; jmp 1b
    const STUB: [u8; 14] = [0xfa, 0xfc, 0x8c, 0xc8, 0x8e, 0xd8, 0xf0, 0xff, 0x06, 0x00, 0x01, 0xf4, 0xeb, 0xfd];
    let va = info.direct_map_base + page;
    // SAFETY: a usable page of the memory map, through the direct map.
    unsafe {
        core::ptr::write_bytes(va as *mut u8, 0, 0x1000);
        core::ptr::copy_nonoverlapping(STUB.as_ptr(), va as *mut u8, STUB.len());
    }
    let (lo, hi): (u32, u32);
    // SAFETY: reading IA32_APIC_BASE at CPL 0.
    unsafe { core::arch::asm!("rdmsr", in("ecx") 0x1bu32, out("eax") lo, out("edx") hi) };
    let apic = info.direct_map_base + (((hi as u64) << 32 | lo as u64) & 0x000f_ffff_ffff_f000);
    let send = |command: u32| {
        // SAFETY: the xAPIC's ICR through the direct map (it covers the first 4 GiB).
        unsafe {
            core::ptr::write_volatile((apic + 0x310) as *mut u32, 0);
            core::ptr::write_volatile((apic + 0x300) as *mut u32, command);
        }
        // SAFETY: as above.
        wait(1, || unsafe { core::ptr::read_volatile((apic + 0x300) as *const u32) } & (1 << 12) == 0);
    };
    let pause = |us: u64| {
        let end = tsc() + us * 3_000;
        while tsc() < end {
            core::hint::spin_loop();
        }
    };
    // All excluding self (shorthand 11b), level assert: INIT, then Start-Up twice.
    send(0x000c_4500);
    pause(10_000);
    for _ in 0..2 {
        send(0x000c_4600 | (page >> 12) as u32);
        pause(200);
    }
    let counter = (va + 0x100) as *const u16;
    // SAFETY: the stub's counter, written by the APs with lock inc.
    let count = || unsafe { core::ptr::read_volatile(counter) } as u32;
    wait(5, || count() >= info.cpus_not_started);
    println!(info_format!(aps_self_started), count());
    c.check(
        count() == info.cpus_not_started,
        format_args!("SMP off: {} of {} APs started by the kernel reported in", count(), info.cpus_not_started),
    );
}
