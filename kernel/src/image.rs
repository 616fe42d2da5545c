//! The kernel's own ELF image, for a kernel linked by its toolchain's default layout (ld.lld: a PIE
//! at 0 whose first PT_LOAD maps the ELF header, so `__ehdr_start` is the image's first byte). Its
//! program headers, read in memory, must agree with the boot info and with the live page tables.

use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::AtomicPtr;

use crate::bootinfo::{flags, BootInfo};
use crate::{println, walk, Checks};

const PT_LOAD: u32 = 1;
const PT_TLS: u32 = 7;
const PT_GNU_EH_FRAME: u32 = 0x6474_e550;
const PT_GNU_RELRO: u32 = 0x6474_e552;
const ET_DYN: u16 = 3;
const PAGE: u64 = 4096;
const IA32_FS_BASE: u32 = 0xc000_0100;

/// The ELF64 file header, of which the checks read a few fields.
#[repr(C)]
#[allow(dead_code)]
struct ElfHeader {
    ident: [u8; 16],
    r#type: u16,
    machine: u16,
    version: u32,
    entry: u64,
    phoff: u64,
    shoff: u64,
    flags: u32,
    ehsize: u16,
    phentsize: u16,
    phnum: u16,
    shentsize: u16,
    shnum: u16,
    shstrndx: u16,
}

#[repr(C)]
struct ProgramHeader {
    r#type: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

/// A page of relocated pointers in .data.rel.ro, so that RELRO covers at least one whole page, as it
/// does in a kernel of any size (this one's other RELRO data is a few hundred bytes).
static RELRO_TABLE: [&u64; 512] = [&RELRO_TARGET; 512];
static RELRO_TARGET: u64 = 0;

/// A relocated pointer in .data (writable, outside RELRO), as MAIN is one in .data.rel.ro.
static DATA_POINTER: AtomicPtr<()> = AtomicPtr::new(crate::kernel_main as *mut ());

/// Initialized thread-local data: the loader reports the PT_TLS template it comes from.
#[thread_local]
static mut THREAD_MARK: u64 = THREAD_MARK_VALUE;
const THREAD_MARK_VALUE: u64 = 0x7468_7265_6164_2e2e; // "..daerht"

/// Room for one TLS block and the x86-64 thread pointer (variant II: the block ends at the thread
/// pointer, whose first word points at itself).
#[repr(C, align(64))]
struct ThreadArea([u8; 512]);
static mut THREAD_AREA: ThreadArea = ThreadArea([0; 512]);

/// The run-time address of the image's first byte, its ELF header: `__ehdr_start`, which ld.lld
/// defines when a PT_LOAD maps the header (as its default layout does). Computed from RIP, not read
/// from the GOT entry the compiler would use for an extern static: that one the loader relocated.
pub fn header_address() -> u64 {
    let address: u64;
    // SAFETY: computes an address, touches nothing.
    unsafe { core::arch::asm!("lea {}, [rip + __ehdr_start]", out(reg) address, options(pure, nomem, nostack)) };
    address
}

/// Where `_start` runs, computed from RIP like header_address.
pub fn start_address() -> u64 {
    let address: u64;
    // SAFETY: computes an address, touches nothing.
    unsafe { core::arch::asm!("lea {}, [rip + _start]", out(reg) address, options(pure, nomem, nostack)) };
    address
}

fn elf_header() -> &'static ElfHeader {
    // SAFETY: __ehdr_start is the loaded ELF header.
    unsafe { &*(header_address() as *const ElfHeader) }
}

fn program_headers() -> &'static [ProgramHeader] {
    let header = elf_header();
    // SAFETY: the program headers are loaded with the ELF header (the first PT_LOAD starts at file
    // offset 0 and covers them).
    unsafe {
        let first = (header_address() + header.phoff) as *const ProgramHeader;
        core::slice::from_raw_parts(first, header.phnum as usize)
    }
}

fn find(r#type: u32) -> Option<&'static ProgramHeader> {
    program_headers().iter().find(|p| p.r#type == r#type)
}

/// Run-time address minus ELF address: where the ELF header runs minus the p_vaddr that maps it.
pub fn bias() -> u64 {
    let first = program_headers().iter().find(|p| p.r#type == PT_LOAD && p.offset == 0);
    header_address().wrapping_sub(first.map_or(0, |p| p.vaddr))
}

pub fn check(c: &mut Checks, info: &BootInfo) {
    let header = elf_header();
    c.check(
        header.ident[..4] == *b"\x7fELF" && header.r#type == ET_DYN,
        format_args!("no ET_DYN ELF header at __ehdr_start {:#x}", header_address()),
    );
    c.check(
        header.phentsize as usize == core::mem::size_of::<ProgramHeader>(),
        format_args!("program header size {}", header.phentsize),
    );
    let entry = start_address();
    c.check(
        entry == info.kernel_entry,
        format_args!("_start at {:#x} != kernel_entry {:#x}", entry, info.kernel_entry),
    );
    c.check(
        program_headers().iter().any(|p| p.r#type == PT_LOAD && p.offset == 0),
        format_args!("no PT_LOAD maps the ELF header"),
    );
    let bias = bias();
    c.check(
        bias == info.kernel_load_bias,
        format_args!("load bias {:#x} (from __ehdr_start) != kernel_load_bias {:#x}", bias, info.kernel_load_bias),
    );
    check_eh_frame_hdr(c, info, bias);
    check_tls(c, info, bias);
    let relro_pages = check_relro(c, info, bias);
    check_text(c, info);
    check_relocated(c, info);
    let relro = find(PT_GNU_RELRO).map_or((0, 0), |p| (p.vaddr.wrapping_add(bias), p.memsz));
    println!(
        info_format!(
            shape,
            image,
            kernel_load_bias,
            eh_frame_hdr,
            eh_frame_hdr_size,
            tls_template,
            tls_mem_size,
            relro,
            relro_size,
            relro_pages
        ),
        "toolchain",
        header_address(),
        info.kernel_load_bias,
        info.eh_frame_hdr,
        info.eh_frame_hdr_size,
        info.tls_template,
        info.tls_mem_size,
        relro.0,
        relro.1,
        relro_pages
    );
}

fn check_eh_frame_hdr(c: &mut Checks, info: &BootInfo, bias: u64) {
    let flagged = info.flags & flags::EH_FRAME_HDR != 0;
    match find(PT_GNU_EH_FRAME) {
        Some(p) => c.check(
            flagged && info.eh_frame_hdr == p.vaddr.wrapping_add(bias) && info.eh_frame_hdr_size == p.memsz,
            format_args!(
                "eh_frame_hdr {:#x}+{:#x} (flag {}), PT_GNU_EH_FRAME is at {:#x}+{:#x}",
                info.eh_frame_hdr,
                info.eh_frame_hdr_size,
                flagged,
                p.vaddr.wrapping_add(bias),
                p.memsz
            ),
        ),
        None => c.check(
            !flagged && info.eh_frame_hdr == 0 && info.eh_frame_hdr_size == 0,
            format_args!("eh_frame_hdr {:#x} (flag {}) without a PT_GNU_EH_FRAME", info.eh_frame_hdr, flagged),
        ),
    }
}

/// The boot info describes PT_TLS; a TLS block built from it (as a kernel would for each CPU)
/// holds THREAD_MARK's initial value where the code looks for it through FS.
fn check_tls(c: &mut Checks, info: &BootInfo, bias: u64) {
    let flagged = info.flags & flags::TLS != 0;
    let Some(p) = find(PT_TLS) else {
        c.check(
            !flagged && info.tls_template == 0 && info.tls_mem_size == 0 && info.tls_align == 1,
            format_args!("TLS template {:#x} (flag {}) without a PT_TLS", info.tls_template, flagged),
        );
        return;
    };
    let ok = flagged
        && info.tls_template == p.vaddr.wrapping_add(bias)
        && info.tls_file_size == p.filesz
        && info.tls_mem_size == p.memsz
        && info.tls_align == p.align.max(1);
    c.check(
        ok,
        format_args!(
            "TLS {:#x} file {:#x} mem {:#x} align {:#x} (flag {}), PT_TLS is {:#x} {:#x} {:#x} {:#x}",
            info.tls_template,
            info.tls_file_size,
            info.tls_mem_size,
            info.tls_align,
            flagged,
            p.vaddr.wrapping_add(bias),
            p.filesz,
            p.memsz,
            p.align
        ),
    );
    if !ok {
        return;
    }
    let align = info.tls_align;
    let block = (info.tls_mem_size + align - 1) & !(align - 1);
    if !align.is_power_of_two() || align > 64 || block + 8 > core::mem::size_of::<ThreadArea>() as u64 {
        c.check(
            false,
            format_args!("a TLS block of {:#x} bytes aligned {:#x} does not fit the test area", block, align),
        );
        return;
    }
    // SAFETY: one CPU, and nothing else uses THREAD_AREA or FS (FS base is restored); the template
    // is mapped (it is inside PT_LOAD: the build checked, and it matches PT_TLS above).
    let mark = unsafe {
        let area = addr_of_mut!(THREAD_AREA) as u64;
        let thread_pointer = area + block;
        core::ptr::write_bytes(area as *mut u8, 0, block as usize);
        core::ptr::copy_nonoverlapping(info.tls_template as *const u8, area as *mut u8, info.tls_file_size as usize);
        *(thread_pointer as *mut u64) = thread_pointer;
        let saved = read_msr(IA32_FS_BASE);
        write_msr(IA32_FS_BASE, thread_pointer);
        let mark = core::ptr::read_volatile(addr_of!(THREAD_MARK));
        write_msr(IA32_FS_BASE, saved);
        mark
    };
    c.check(mark == THREAD_MARK_VALUE, format_args!("THREAD_MARK reads {:#x} through FS", mark));
}

unsafe fn read_msr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nostack));
    (hi as u64) << 32 | lo as u64
}

unsafe fn write_msr(msr: u32, value: u64) {
    core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack));
}

/// PT_GNU_RELRO is mapped read-only and not executable by ld.so's rule (from the page it starts in
/// to the page its end rounds down to: linkers start RELRO a segment); returns how many pages.
fn check_relro(c: &mut Checks, info: &BootInfo, bias: u64) -> u64 {
    let Some(p) = find(PT_GNU_RELRO) else {
        return 0;
    };
    let start = p.vaddr.wrapping_add(bias);
    let first = start & !(PAGE - 1);
    let end = (start + p.memsz) & !(PAGE - 1);
    let mut pages = 0;
    let mut page = first;
    while page < end {
        match walk::translate(info, page) {
            Some(t) => c.check(
                !t.writable && t.no_exec_where_possible() && in_block(info, t.pa),
                format_args!(
                    "RELRO page {:#x} -> {:#x} is {}{}",
                    page,
                    t.pa,
                    if t.writable { "writable " } else { "" },
                    if t.no_exec_where_possible() { "" } else { "executable" }
                ),
            ),
            None => c.check(false, format_args!("RELRO page {:#x} is not mapped", page)),
        }
        pages += 1;
        page += PAGE;
    }
    // The pointers in .data.rel.ro (MAIN, checked in check_slide, and RELRO_TABLE) were relocated
    // before their pages became read-only.
    for (name, at) in [("MAIN", addr_of!(crate::MAIN) as u64), ("RELRO_TABLE", addr_of!(RELRO_TABLE) as u64)] {
        c.check(
            (start..start + p.memsz).contains(&at),
            format_args!("{} at {:#x} is not inside RELRO {:#x}+{:#x}", name, at, start, p.memsz),
        );
    }
    let target = addr_of!(RELRO_TARGET);
    // SAFETY: reading our own static; volatile so the compiler cannot fold the entries.
    let wrong = (0..RELRO_TABLE.len())
        .filter(|&n| unsafe { core::ptr::read_volatile(addr_of!(RELRO_TABLE[n])) } as *const u64 != target)
        .count();
    c.check(wrong == 0, format_args!("{} of RELRO_TABLE's pointers are not {:#x}", wrong, target as u64));
    pages
}

fn in_block(info: &BootInfo, pa: u64) -> bool {
    (info.kernel_phys_base..info.kernel_phys_base + info.kernel_phys_size).contains(&pa)
}

/// The code runs from pages mapped present, read-only and executable, backed by the kernel block.
fn check_text(c: &mut Checks, info: &BootInfo) {
    let main = crate::kernel_main as *const () as u64;
    match walk::translate(info, main) {
        Some(t) => c.check(
            !t.writable && t.exec && in_block(info, t.pa),
            format_args!("kernel_main's page {:#x} -> {:#x} is not RX in the kernel block", main, t.pa),
        ),
        None => c.check(false, format_args!("kernel_main's page {:#x} is not mapped", main)),
    }
}

/// A pointer in writable .data holds what the code computes (RIP-relative) for the same function,
/// and its page is writable (RELRO stopped short of it).
fn check_relocated(c: &mut Checks, info: &BootInfo) {
    // SAFETY: reading our own static; volatile so the compiler cannot fold it to the symbol address.
    let data = unsafe { core::ptr::read_volatile(DATA_POINTER.as_ptr()) } as u64;
    let main = crate::kernel_main as *const () as u64;
    c.check(
        data == main,
        format_args!("a relocated pointer in .data holds {:#x}, kernel_main is at {:#x}", data, main),
    );
    let at = DATA_POINTER.as_ptr() as u64;
    c.check(
        walk::translate(info, at).is_some_and(|t| t.writable && t.no_exec_where_possible()),
        format_args!("DATA_POINTER's page {:#x} is not mapped RW", at),
    );
}
