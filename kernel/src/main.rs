//! highboot's sample kernel. It trusts nothing: it checks the boot info, the CPU state and the
//! live page tables against the entry ABI, prints what it found on COM1 (the test harness compares
//! the mappings with the build's plan), and exits QEMU through isa-debug-exit with pass or fail.

#![no_std]
#![no_main]
#![cfg_attr(toolchain_layout, feature(thread_local))]

mod bootinfo {
    include!(concat!(env!("HIGHBOOT_GEN"), "/bootinfo.rs"));
}
// The tests' serial report (rendered by the test builds only), before the modules that print:
// its macros (report_format!, info_format!) are in scope by text order.
#[macro_use]
mod report {
    include!(concat!(env!("HIGHBOOT_GEN"), "/report.rs"));
}

mod efi;
mod handed;
#[cfg(toolchain_layout)]
mod image;
mod serial;
mod smp;
mod walk;

use bootinfo::{mem, BootInfo, MemoryRegion};
use report::Exit;

// The entry point: keep the RSP the loader gave us so the ABI check can see it.
core::arch::global_asm!(
    ".section .text.entry,\"ax\",@progbits",
    ".globl _start",
    "_start:",
    "    mov rsi, rsp",
    "    call {main}",
    "2:  hlt",
    "    jmp 2b",
    main = sym kernel_main,
);

/// The address the kernel was linked at (`_start` is the first byte of .text there).
#[cfg(not(toolchain_layout))]
const LINK_BASE: u64 = parse_hex(env!("HIGHBOOT_LINK_BASE"));

#[cfg(not(toolchain_layout))]
const fn parse_hex(text: &str) -> u64 {
    let b = text.as_bytes();
    let mut value = 0u64;
    let mut i = 2; // after "0x"
    while i < b.len() {
        let d = match b[i] {
            b'0'..=b'9' => b[i] - b'0',
            b'a'..=b'f' => b[i] - b'a' + 10,
            _ => panic!("HIGHBOOT_LINK_BASE is not lower-case hex"),
        };
        value = value * 16 + d as u64;
        i += 1;
    }
    value
}

extern "C" {
    static _start: u8;
}

/// A pointer the loader must relocate (R_X86_64_RELATIVE): equal to kernel_main's run address
/// only if the relocations were applied for the slide the kernel runs at.
static MAIN: extern "sysv64" fn(&'static BootInfo, u64) -> ! = kernel_main;

/// Counts failed checks; each failure is printed as it is found.
struct Checks {
    failed: u32,
}

impl Checks {
    fn check(&mut self, ok: bool, what: core::fmt::Arguments) {
        if !ok {
            self.failed += 1;
            println!("CHECK FAILED: {}", what);
        }
    }
}

extern "sysv64" fn kernel_main(info: &'static BootInfo, entry_rsp: u64) -> ! {
    // SAFETY: RDTSC has no side effects.
    let tsc = unsafe { core::arch::x86_64::_rdtsc() };
    println!("highboot sample kernel: hello from {:#x}", kernel_main as *const () as usize);
    println!(info_format!(tsc_kernel), tsc);
    let mut c = Checks { failed: 0 };
    c.check(info.magic == bootinfo::MAGIC, format_args!("magic is {:#x}, expected \"HIGHBOOT\"", info.magic));
    c.check(info.version == bootinfo::VERSION, format_args!("version {} != {}", info.version, bootinfo::VERSION));
    c.check(
        info.size as usize >= core::mem::size_of::<BootInfo>(),
        format_args!("boot info size {} < {}", info.size, core::mem::size_of::<BootInfo>()),
    );
    if c.failed > 0 {
        exit(c.failed);
    }
    report_info(info, entry_rsp);
    check_cpu(&mut c, info, entry_rsp);
    check_slide(&mut c, info);
    #[cfg(toolchain_layout)]
    image::check(&mut c, info);
    check_memory_map(&mut c, info);
    handed::check(&mut c, info);
    // The APs run (and check themselves) before the BSP walks the tables they ran on.
    smp::check(&mut c, info);
    walk::check_tables(&mut c, info);
    efi::check_runtime(&mut c, info);
    exit(c.failed)
}

fn report_info(i: &BootInfo, entry_rsp: u64) {
    println!(info_format!(entry_rsp), entry_rsp);
    println!(info_format!(block, block_size), i.kernel_phys_base, i.kernel_phys_size);
    println!(
        info_format!(direct_map_base, direct_map_size, direct_map_page),
        i.direct_map_base, i.direct_map_size, i.direct_map_page_size
    );
    println!(
        info_format!(trampoline_phys, trampoline_virt, identity_tables_phys, identity_tables_pages),
        i.trampoline_phys, i.trampoline_virt, i.identity_tables_phys, i.identity_tables_pages
    );
    println!(
        info_format!(root, tables, features, flags),
        i.page_table_root, i.page_tables_pages, i.cpu_features, i.flags
    );
    println!(
        info_format!(framebuffer, fb_size, fb, stride, format),
        i.framebuffer_phys,
        i.framebuffer_size,
        format_args!("{}x{}", i.framebuffer_width, i.framebuffer_height),
        i.framebuffer_stride,
        i.framebuffer_format
    );
    println!(
        info_format!(fb_red_mask, fb_green_mask, fb_blue_mask, fb_reserved_mask),
        i.framebuffer_red_mask, i.framebuffer_green_mask, i.framebuffer_blue_mask, i.framebuffer_reserved_mask
    );
    println!(info_format!(rsdp, rsdp_revision, system_table), i.rsdp, i.rsdp_revision, i.efi_system_table);
    println!(info_format!(tsc_loader_entry, tsc_handoff), i.tsc_loader_entry, i.tsc_handoff);
    // SAFETY: the loader promises cmdline points at cmdline_len bytes (and a NUL).
    let cmdline = unsafe { core::slice::from_raw_parts(i.cmdline as *const u8, i.cmdline_len as usize) };
    // Quoted text has no quote inside: the exact bytes are cmdline_hex.
    let text = match core::str::from_utf8(cmdline) {
        Ok(t) if t.contains('"') => "<has a quote>",
        Ok(t) => t,
        Err(_) => "<not UTF-8>",
    };
    println!(info_format!(cmdline), text);
    // The bytes themselves: a command line is bytes, not necessarily UTF-8.
    println!(info_format!(cmdline_hex), Hex(cmdline));
}

/// Bytes as lower-case hex digits, two per byte ("-" for none).
struct Hex<'a>(&'a [u8]);

impl core::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("-");
        }
        self.0.iter().try_for_each(|b| write!(f, "{:02x}", b))
    }
}

fn check_cpu(c: &mut Checks, i: &BootInfo, entry_rsp: u64) {
    let (cr0, cr3, cr4, rflags): (u64, u64, u64, u64);
    let (efer_lo, _efer_hi): (u32, u32);
    // SAFETY: reading control registers and EFER at CPL 0.
    unsafe {
        core::arch::asm!("mov {}, cr0", out(reg) cr0);
        core::arch::asm!("mov {}, cr3", out(reg) cr3);
        core::arch::asm!("mov {}, cr4", out(reg) cr4);
        core::arch::asm!("pushfq; pop {}", out(reg) rflags);
        core::arch::asm!("rdmsr", in("ecx") 0xc000_0080u32, out("eax") efer_lo, out("edx") _efer_hi);
    }
    c.check(
        entry_rsp == i.stack_top - 8,
        format_args!("RSP at entry {:#x}, expected stack_top - 8 = {:#x}", entry_rsp, i.stack_top - 8),
    );
    // SAFETY: entry_rsp is in the mapped stack (checked just above, or we report it).
    let ret = unsafe { *(entry_rsp as *const u64) };
    c.check(ret == 0, format_args!("return address at entry is {:#x}, expected 0", ret));
    c.check(
        cr3 & bootinfo::pte::ADDR_MASK == i.page_table_root,
        format_args!("CR3 {:#x} != page_table_root {:#x}", cr3, i.page_table_root),
    );
    c.check(cr0 & (1 << 16) != 0, format_args!("CR0.WP is clear"));
    c.check(rflags & (1 << 9) == 0, format_args!("interrupts are enabled at entry"));
    if i.cpu_features & bootinfo::cpu::NX != 0 {
        c.check(efer_lo & (1 << 11) != 0, format_args!("EFER.NXE is clear on a CPU with NX"));
    }
    // The NX bit of cpu_features is the CPU's (CPUID 80000001h:EDX[20]): without it the W^X
    // checks give way to "no entry sets NX", so a wrong "no NX" must not pass unseen.
    let ext = core::arch::x86_64::__cpuid(0x8000_0000).eax;
    let nx = ext >= 0x8000_0001 && core::arch::x86_64::__cpuid(0x8000_0001).edx & (1 << 20) != 0;
    c.check(
        nx == (i.cpu_features & bootinfo::cpu::NX != 0),
        format_args!("cpu_features says NX {}, CPUID says {}", i.cpu_features & bootinfo::cpu::NX != 0, nx),
    );
    let la57 = cr4 & (1 << 12) != 0;
    println!(info_format!(levels), if la57 { 5 } else { 4 });
}

/// Where `_start` is without a KASLR slide: where it was linked.
#[cfg(not(toolchain_layout))]
fn link_base(_: &BootInfo) -> u64 {
    LINK_BASE
}

/// Where `_start` is without a KASLR slide: its ELF address (linked at 0) plus the bias by which
/// the build placed the image in the kernel region.
#[cfg(toolchain_layout)]
fn link_base(i: &BootInfo) -> u64 {
    let elf_address = image::start_address().wrapping_sub(image::bias());
    elf_address.wrapping_add(i.kernel_load_bias).wrapping_sub(i.kernel_slide)
}

/// The kernel runs where the boot info says (link address + slide), relocated for that slide.
fn check_slide(c: &mut Checks, i: &BootInfo) {
    #[cfg(not(toolchain_layout))]
    let here = core::ptr::addr_of!(_start) as u64;
    #[cfg(toolchain_layout)]
    let here = image::start_address();
    let slide = i.kernel_slide;
    let link_base = link_base(i);
    println!(
        info_format!(kernel_slide, direct_map_slide, link_base, running_at),
        slide, i.direct_map_slide, link_base, here
    );
    c.check(
        here == link_base.wrapping_add(slide),
        format_args!("running at {:#x}, expected link base {:#x} + slide {:#x}", here, link_base, slide),
    );
    #[cfg(not(toolchain_layout))]
    c.check(
        i.kernel_virt_base == LINK_BASE.wrapping_add(slide),
        format_args!("kernel_virt_base {:#x} != link base + slide", i.kernel_virt_base),
    );
    // The image starts with its ELF header, on the first page of the kernel's virtual range.
    #[cfg(toolchain_layout)]
    c.check(
        i.kernel_virt_base == image::header_address() & !0xfff,
        format_args!(
            "kernel_virt_base {:#x} != the page of __ehdr_start {:#x}",
            i.kernel_virt_base,
            image::header_address()
        ),
    );
    // SAFETY: reading our own static; volatile so the compiler cannot fold it to the symbol address.
    let main = unsafe { core::ptr::read_volatile(&MAIN) } as usize as u64;
    c.check(
        main == kernel_main as *const () as u64,
        format_args!(
            "a relocated pointer holds {:#x}, kernel_main is at {:#x}",
            main, kernel_main as *const () as usize
        ),
    );
    let kaslr = i.flags & bootinfo::flags::KASLR != 0;
    c.check(kaslr || (slide == 0 && i.direct_map_slide == 0), format_args!("slides without the KASLR flag"));
}

fn check_memory_map(c: &mut Checks, i: &BootInfo) {
    // SAFETY: the loader promises memory_map points at memory_map_count entries.
    let map: &[MemoryRegion] =
        unsafe { core::slice::from_raw_parts(i.memory_map as *const MemoryRegion, i.memory_map_count as usize) };
    c.check(!map.is_empty(), format_args!("the memory map is empty"));
    c.check(
        i.memory_map_entry_size as usize == core::mem::size_of::<MemoryRegion>(),
        format_args!("memory map entry size {}", i.memory_map_entry_size),
    );
    let mut usable = 0u64;
    let mut kernel_covered = false;
    for (n, r) in map.iter().enumerate() {
        println!(report_format!(MEM), r.base, r.length, r.r#type);
        c.check(
            r.length > 0 && r.base % 4096 == 0 && r.length % 4096 == 0,
            format_args!("entry {} is empty or unaligned", n),
        );
        c.check(
            (mem::USABLE..=mem::PERSISTENT).contains(&r.r#type),
            format_args!("entry {} has unknown type {}", n, r.r#type),
        );
        if n > 0 {
            let p = &map[n - 1];
            c.check(p.base + p.length <= r.base, format_args!("entries {} and {} overlap or are unsorted", n - 1, n));
            c.check(
                !(p.base + p.length == r.base && p.r#type == r.r#type),
                format_args!("entries {} and {} should be merged", n - 1, n),
            );
        }
        if r.r#type == mem::USABLE {
            usable += r.length;
        }
        if r.r#type == mem::KERNEL
            && r.base <= i.kernel_phys_base
            && i.kernel_phys_base + i.kernel_phys_size <= r.base + r.length
        {
            kernel_covered = true;
        }
    }
    c.check(usable >= 16 << 20, format_args!("only {} bytes of usable RAM reported", usable));
    c.check(kernel_covered, format_args!("the kernel block is not a KERNEL entry of the memory map"));
    println!(info_format!(usable), usable);
}

fn exit(failed: u32) -> ! {
    if failed == 0 {
        println!("HIGHBOOT-KERNEL: PASS");
    } else {
        println!("HIGHBOOT-KERNEL: FAIL ({} checks failed)", failed);
    }
    serial::debug_exit(if failed == 0 { Exit::Pass } else { Exit::Fail })
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("HIGHBOOT-KERNEL: FAIL (panic: {})", info);
    serial::debug_exit(Exit::Fail)
}
