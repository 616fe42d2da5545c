//! Walk the live page tables from CR3 (through the direct map) and print every mapping as
//! coalesced ranges: `MAP <va> <pa> <size> <access>` (report.py) with access R, RW, RX or RWX; or translate one
//! address.

use crate::bootinfo::BootInfo;
use crate::{println, Checks};

use crate::bootinfo::pte::{ADDR_MASK as ADDR, HUGE_PAGE as HUGE, NO_EXECUTE, PRESENT, WRITABLE};

#[derive(Clone, Copy, PartialEq)]
struct Range {
    va: u64,
    pa: u64,
    size: u64,
    writable: bool,
    exec: bool,
}

struct Walker {
    dmap: u64,
    /// The direct map's extent when the build made it executable (DIRECT_MAP_EXEC): RWX there is
    /// what was asked for, not a W^X breach.
    dmap_exec: Option<(u64, u64)>,
    levels: u32,
    current: Option<Range>,
    ranges: u32,
    wx: u32,
    nx: u32,
}

impl Walker {
    fn emit(&mut self, r: Range) {
        if let Some(c) = &mut self.current {
            if c.va + c.size == r.va && c.pa + c.size == r.pa && c.writable == r.writable && c.exec == r.exec {
                c.size += r.size;
                return;
            }
        }
        self.flush();
        self.current = Some(r);
    }

    fn flush(&mut self) {
        if let Some(r) = self.current.take() {
            let flags = crate::report::ACCESS[r.writable as usize | (r.exec as usize) << 1];
            let asked = self.dmap_exec.is_some_and(|(base, size)| r.va >= base && r.va + r.size <= base + size);
            if r.writable && r.exec && !asked {
                self.wx += 1;
            }
            if !r.exec {
                self.nx += 1;
            }
            println!(report_format!(MAP), r.va, r.pa, r.size, flags);
            self.ranges += 1;
        }
    }

    fn visit(&mut self, table: u64, depth: u32, base: u64, writable: bool, exec: bool) {
        let shift = 12 + 9 * (self.levels - 1 - depth);
        let va_bits = 12 + 9 * self.levels;
        for index in 0..512u64 {
            // SAFETY: table is a physical table address; the direct map covers all RAM.
            let entry = unsafe { core::ptr::read_volatile((self.dmap + table + index * 8) as *const u64) };
            if entry & PRESENT == 0 {
                continue;
            }
            let mut va = base | (index << shift);
            if va & (1 << (va_bits - 1)) != 0 {
                va |= !((1u64 << va_bits) - 1);
            }
            let w = writable && entry & WRITABLE != 0;
            let x = exec && entry & NO_EXECUTE == 0;
            if depth == self.levels - 1 || (entry & HUGE != 0 && shift <= 30) {
                let size = 1u64 << shift;
                self.emit(Range { va, pa: entry & ADDR & !(size - 1), size, writable: w, exec: x });
            } else {
                self.visit(entry & ADDR, depth + 1, va & ((1u64 << va_bits) - 1), w, x);
            }
        }
    }
}

/// The live root table (physical) and the number of paging levels.
fn live_root() -> (u64, u32) {
    let cr4: u64;
    let cr3: u64;
    // SAFETY: reading control registers at CPL 0.
    unsafe {
        core::arch::asm!("mov {}, cr4", out(reg) cr4);
        core::arch::asm!("mov {}, cr3", out(reg) cr3);
    }
    (cr3 & ADDR, if cr4 & (1 << 12) != 0 { 5 } else { 4 })
}

/// One virtual address as the live tables map it: the rights are those every level grants.
pub struct Translation {
    pub pa: u64,
    pub writable: bool,
    pub exec: bool,
    /// The CPU has NX (cpu_features).
    cpu_nx: bool,
}

impl Translation {
    /// Not executable, or the CPU has no NX: no page can be kept from execution there.
    pub fn no_exec_where_possible(&self) -> bool {
        !self.exec || !self.cpu_nx
    }
}

/// Walk the live tables for va; None where it is not mapped.
pub fn translate(info: &BootInfo, va: u64) -> Option<Translation> {
    let (mut table, levels) = live_root();
    let (mut writable, mut exec) = (true, true);
    for depth in 0..levels {
        let shift = 12 + 9 * (levels - 1 - depth);
        let index = (va >> shift) & 511;
        // SAFETY: table is a physical table address; the direct map covers all RAM.
        let entry = unsafe { core::ptr::read_volatile((info.direct_map_base + table + index * 8) as *const u64) };
        if entry & PRESENT == 0 {
            return None;
        }
        writable &= entry & WRITABLE != 0;
        exec &= entry & NO_EXECUTE == 0;
        if depth == levels - 1 || (entry & HUGE != 0 && shift <= 30) {
            let size = 1u64 << shift;
            let pa = (entry & ADDR & !(size - 1)) | (va & (size - 1));
            let cpu_nx = info.cpu_features & crate::bootinfo::cpu::NX != 0;
            return Some(Translation { pa, writable, exec, cpu_nx });
        }
        table = entry & ADDR;
    }
    None
}

pub fn check_tables(c: &mut Checks, info: &BootInfo) {
    let (root, levels) = live_root();
    let mut lower = 0;
    for index in 0..256u64 {
        // SAFETY: the root table through the direct map.
        let entry = unsafe { core::ptr::read_volatile((info.direct_map_base + root + index * 8) as *const u64) };
        if entry & PRESENT != 0 {
            lower += 1;
        }
    }
    c.check(lower == 0, format_args!("{} root entries map the lower half; it must be empty at entry", lower));
    let dmap_exec = (info.flags & crate::bootinfo::flags::DIRECT_MAP_EXEC != 0)
        .then_some((info.direct_map_base, info.direct_map_size));
    let mut w = Walker { dmap: info.direct_map_base, dmap_exec, levels, current: None, ranges: 0, wx: 0, nx: 0 };
    w.visit(root, 0, 0, true, true);
    w.flush();
    println!(info_format!(map_ranges), w.ranges);
    if info.cpu_features & crate::bootinfo::cpu::NX != 0 {
        c.check(w.wx == 0, format_args!("{} ranges are writable and executable", w.wx));
    } else {
        // EFER.NXE is clear: bit 63 is reserved, and an access through an entry with it faults.
        c.check(w.nx == 0, format_args!("{} ranges set the NX bit on a CPU without NX", w.nx));
    }
}
