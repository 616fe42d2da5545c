//! What the loader hands over besides the image: the modules and the kernel's own ELF file. Each
//! must lie in KERNEL memory of the memory map, page aligned, the tail of its last page zero,
//! overlapping nothing else handed over; each module's bytes are reported (FNV-1a) for the test to
//! compare with the file, and checked word by word when its command line names a test pattern;
//! the kernel file must be the running kernel's (its entry point, its read-only segments).

use crate::bootinfo::{mem, BootInfo, MemoryRegion, Module};
use crate::report;
use crate::{println, Checks, Hex};

const PAGE: u64 = 4096;

/// A physical range handed to the kernel, in whole pages, and what it is (for messages).
#[derive(Clone, Copy)]
struct Range {
    base: u64,
    end: u64,
    what: &'static str,
    index: usize,
}

fn page_end(end: u64) -> u64 {
    end.div_ceil(PAGE) * PAGE
}

fn module_range(n: usize, m: &Module) -> Option<Range> {
    (m.size > 0).then(|| Range { base: m.phys, end: page_end(m.phys + m.size), what: "module", index: n })
}

pub fn check(c: &mut Checks, info: &BootInfo) {
    // SAFETY: the loader promises memory_map points at memory_map_count entries.
    let map: &[MemoryRegion] =
        unsafe { core::slice::from_raw_parts(info.memory_map as *const MemoryRegion, info.memory_map_count as usize) };
    // The other things handed over: the block (image, stack, tables, boot info) and the framebuffer.
    let block = Range {
        base: info.kernel_phys_base,
        end: info.kernel_phys_base + info.kernel_phys_size,
        what: "kernel block",
        index: 0,
    };
    let framebuffer = Range {
        base: info.framebuffer_phys,
        end: info.framebuffer_phys + info.framebuffer_size,
        what: "framebuffer",
        index: 0,
    };
    let file = (info.kernel_file_size > 0).then(|| Range {
        base: info.kernel_file_phys,
        end: page_end(info.kernel_file_phys + info.kernel_file_size),
        what: "kernel file",
        index: 0,
    });

    let modules = info.modules();
    println!(info_format!(modules), modules.len());
    for (n, m) in modules.iter().enumerate() {
        let data = m.data();
        let pattern = pattern_seed(m.cmdline()).map(|seed| check_pattern(c, n, data, seed));
        println!(
            report_format!(MODULE),
            n,
            m.phys,
            m.virt,
            m.size,
            fnv1a(data),
            Hex(m.name()),
            Hex(m.cmdline()),
            Hex(&m.digest),
            report::PATTERN[pattern.map_or(0, |ok| if ok { 1 } else { 2 })]
        );
        let Some(range) = module_range(n, m) else {
            c.check(m.phys == 0 && m.virt == 0, format_args!("empty module {} is at {:#x} / {:#x}", n, m.phys, m.virt));
            continue;
        };
        c.check(
            m.virt == info.direct_map_base + m.phys,
            format_args!("module {} virt {:#x} is not direct_map_base + phys {:#x}", n, m.virt, m.phys),
        );
        check_memory(c, map, info, range, m.size);
        for other in [Some(block), Some(framebuffer), file].into_iter().flatten() {
            check_disjoint(c, range, other);
        }
        for (k, o) in modules[..n].iter().enumerate() {
            if let Some(other) = module_range(k, o) {
                check_disjoint(c, range, other);
            }
        }
    }

    println!(info_format!(kernel_file_phys, kernel_file_size), info.kernel_file_phys, info.kernel_file_size);
    match (info.kernel_file(), file) {
        (Some(bytes), Some(range)) => {
            c.check(
                info.kernel_file_virt == info.direct_map_base + info.kernel_file_phys,
                format_args!("kernel_file_virt is not direct_map_base + kernel_file_phys"),
            );
            check_memory(c, map, info, range, info.kernel_file_size);
            check_disjoint(c, range, block);
            check_disjoint(c, range, framebuffer);
            check_kernel_file(c, info, bytes);
        }
        _ => c.check(
            info.kernel_file_phys == 0 && info.kernel_file_virt == 0 && info.kernel_file_size == 0,
            format_args!("kernel file fields are set only in part"),
        ),
    }
}

/// In one KERNEL entry of the memory map, page aligned, the tail of its last page zero.
fn check_memory(c: &mut Checks, map: &[MemoryRegion], info: &BootInfo, r: Range, size: u64) {
    c.check(
        r.base % PAGE == 0 && r.base != 0,
        format_args!("{} {} at {:#x} is not page aligned", r.what, r.index, r.base),
    );
    let owned = map.iter().any(|e| e.r#type == mem::KERNEL && e.base <= r.base && r.end <= e.base + e.length);
    c.check(
        owned,
        format_args!("{} {} [{:#x}, {:#x}) is not KERNEL memory in the memory map", r.what, r.index, r.base, r.end),
    );
    let tail = (info.direct_map_base + r.base + size) as *const u8;
    // SAFETY: the tail of the range's last page, in the direct map.
    let tail = unsafe { core::slice::from_raw_parts(tail, (r.end - r.base - size) as usize) };
    c.check(
        tail.iter().all(|&b| b == 0),
        format_args!("{} {}: the tail of its last page is not zeroed", r.what, r.index),
    );
}

fn check_disjoint(c: &mut Checks, a: Range, b: Range) {
    c.check(
        a.end <= b.base || b.end <= a.base || b.end == b.base,
        format_args!(
            "{} {} [{:#x}, {:#x}) overlaps {} {} [{:#x}, {:#x})",
            a.what, a.index, a.base, a.end, b.what, b.index, b.base, b.end
        ),
    );
}

/// FNV-1a (64-bit) of the bytes: the test computes it over the file it generated.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// The seed of a test pattern: a `pattern=N` word in the module's command line.
fn pattern_seed(cmdline: &[u8]) -> Option<u64> {
    let word = cmdline.split(|&b| b == b' ').find_map(|w| w.strip_prefix(b"pattern="))?;
    core::str::from_utf8(word).ok()?.parse().ok()
}

/// The test pattern (highboot.inputs.modules.pattern_bytes): little-endian u64 words, word j = (seed <<
/// 40) + j, the last one cut to the module's size.
fn check_pattern(c: &mut Checks, n: usize, data: &[u8], seed: u64) -> bool {
    let mut bad = None;
    for (j, chunk) in data.chunks(8).enumerate() {
        let word = ((seed << 40) + j as u64).to_le_bytes();
        if chunk != &word[..chunk.len()] {
            bad = Some(j * 8);
            break;
        }
    }
    c.check(bad.is_none(), format_args!("module {}: byte {:?} differs from its pattern (seed {})", n, bad, seed));
    bad.is_none()
}

/// The ELF file is the running kernel's: an x86-64 ELF64 whose entry point, placed, is the entry
/// the loader jumped to, and whose read-only PT_LOAD segments are byte for byte what runs.
fn check_kernel_file(c: &mut Checks, info: &BootInfo, file: &[u8]) {
    let u16_at = |o: usize| file.get(o..o + 2).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]) as u64);
    let u32_at = |o: usize| file.get(o..o + 4).map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()) as u64);
    let u64_at = |o: usize| file.get(o..o + 8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()));
    let elf = file.len() >= 64 && file[..4] == *b"\x7fELF" && file[4] == 2 && file[5] == 1 && u16_at(18) == 62;
    c.check(elf, format_args!("the kernel file is not an x86-64 ELF64 file"));
    if !elf {
        return;
    }
    let entry = u64_at(24).wrapping_add(info.kernel_load_bias);
    c.check(
        entry == info.kernel_entry,
        format_args!("the kernel file's entry {:#x} (placed) is not kernel_entry {:#x}", entry, info.kernel_entry),
    );
    let (phoff, phentsize, phnum) = (u64_at(32) as usize, u16_at(54) as usize, u16_at(56) as usize);
    let mut compared = 0;
    for k in 0..phnum {
        let ph = phoff + k * phentsize;
        let (kind, flags) = (u32_at(ph), u32_at(ph + 4));
        let (offset, vaddr, filesz) = (u64_at(ph + 8) as usize, u64_at(ph + 16), u64_at(ph + 32) as usize);
        // PT_LOAD, not writable (writable ones were relocated): what runs is the file's bytes.
        if kind != 1 || flags & 2 != 0 || filesz == 0 {
            continue;
        }
        let Some(bytes) = file.get(offset..offset + filesz) else {
            c.check(false, format_args!("the kernel file's segment {} lies outside the file", k));
            continue;
        };
        // SAFETY: a read-only segment of the running kernel, mapped at its placed address.
        let running =
            unsafe { core::slice::from_raw_parts(vaddr.wrapping_add(info.kernel_load_bias) as *const u8, filesz) };
        c.check(bytes == running, format_args!("the kernel file's segment {} differs from the running kernel", k));
        compared += 1;
    }
    c.check(compared > 0, format_args!("the kernel file has no read-only segment to compare"));
    println!(info_format!(kernel_file_segments_compared), compared);
}
