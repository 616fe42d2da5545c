//! The few page-table writes that need boot-time facts: relocating the planned tables by the
//! block's base, the trampoline's two mappings, and the direct map of physical memory.

use core::ptr;

#[cfg(not(feature = "limine"))] // for the EFI runtime services' mappings
pub use crate::rendered::bootinfo::pte::NO_CACHE;
pub use crate::rendered::bootinfo::pte::{ADDR_MASK as ADDR, HUGE_PAGE as HUGE, NO_EXECUTE, PRESENT, WRITABLE};
use crate::rendered::plan;

/// The page: 4 KiB, the unit of every table, mapping and UEFI allocation.
pub const PAGE: u64 = 4096;

const TABLE: u64 = PRESENT | WRITABLE;

pub fn index(va: u64, depth: usize) -> u64 {
    (va >> plan::tables::SHIFTS[depth]) & 511
}

fn windows(start: u64, size: u64, span_shift: u32) -> u64 {
    ((start + size - 1) >> span_shift) - (start >> span_shift) + 1
}

/// Table pages a direct map of `size` bytes at `base` can need (each level's windows).
pub fn tables_needed(base: u64, size: u64, page: u64) -> u64 {
    let leaf = plan::tables::SHIFTS.iter().position(|&s| 1u64 << s == page).unwrap_or(plan::tables::LEVELS - 1);
    (1..=leaf).map(|depth| windows(base, size, plan::tables::SHIFTS[depth - 1])).sum()
}

/// Copy the planned entries into the zeroed tables area, adding the block's base to each address.
pub unsafe fn install_planned_tables(block: u64, nx_mask: u64) {
    let tables = (block + plan::block::TABLES_OFFSET) as *mut u64;
    for &(word, entry) in plan::block::TABLE_ENTRIES.iter() {
        let relocated = (entry & !ADDR) | ((entry & ADDR) + block);
        ptr::write(tables.add(word as usize), relocated & nx_mask);
    }
}

/// The trampoline page at its physical address (through the identity tables, lower half) and at
/// its planned higher-half alias (the one PTE the plan left for it). Both read + execute.
pub unsafe fn map_trampoline(block: u64, page: u64) {
    let tables = (block + plan::block::TABLES_OFFSET) as *mut u64;
    ptr::write(tables.add(plan::block::TRAMPOLINE_SLOT), page | PRESENT);
    let mut table = tables;
    for depth in 0..plan::tables::LEVELS - 1 {
        let next = block + plan::block::IDENTITY_TABLES_OFFSET + depth as u64 * PAGE;
        ptr::write(table.add(index(page, depth) as usize), next | TABLE);
        table = next as *mut u64;
    }
    ptr::write(table.add(index(page, plan::tables::LEVELS - 1) as usize), page | PRESENT);
}

/// The table CR3 loads and the paging depth it is walked with.
#[derive(Clone, Copy)]
pub struct Root {
    pub table: u64,
    pub levels: usize,
}

impl Root {
    /// The physical address of the root entry that maps `va`.
    pub fn entry(&self, va: u64) -> u64 {
        self.table + ((va >> (12 + 9 * (self.levels as u32 - 1))) & 511) * 8
    }
}

/// 5-level paging over the planned 4-level tables, once every mapping is made: a PML5 whose last
/// entry is the planned root (a 4-level layout maps only the top 128 TiB of the higher half, which
/// walks alike in both modes) and whose first is a PML4 holding the planned root's lower half (the
/// trampoline's identity entry, revision 0's identity map), moved there: left in the planned root,
/// it would also appear at 5-level addresses from 0xffff000000000000 up. Two zeroed pool pages.
pub unsafe fn five_level_root(root: u64, pool: &mut Pool) -> Root {
    let (pml5, lower) = (pool.take(), pool.take());
    for n in 0..256 {
        let entry = (root as *mut u64).add(n);
        ptr::write((lower as *mut u64).add(n), ptr::read(entry));
        ptr::write(entry, 0);
    }
    ptr::write(pml5 as *mut u64, lower | TABLE);
    ptr::write((pml5 as *mut u64).add(511), root | TABLE);
    Root { table: pml5, levels: 5 }
}

/// Zeroed table pages from the block, counted.
pub struct Pool {
    next: u64,
    end: u64,
    used: u64,
}

impl Pool {
    pub fn new(base: u64, pages: u64) -> Self {
        Pool { next: base, end: base + pages * PAGE, used: 0 }
    }

    #[cfg_attr(feature = "limine", allow(dead_code))] // highboot's boot info only
    pub fn used(&self) -> u64 {
        self.used
    }

    fn take(&mut self) -> u64 {
        // tables_needed() is an upper bound for what map_direct() takes.
        assert!(self.next < self.end, "page-table pool exhausted");
        let page = self.next;
        self.next += PAGE;
        self.used += 1;
        page
    }
}

/// The entry that maps `va` at `depth`, creating missing tables above it from the pool.
unsafe fn entry(root: u64, va: u64, depth: usize, pool: &mut Pool) -> *mut u64 {
    let mut table = root as *mut u64;
    for d in 0..depth {
        let e = table.add(index(va, d) as usize);
        if *e & PRESENT == 0 {
            ptr::write(e, pool.take() | TABLE);
        }
        assert!(*e & HUGE == 0, "direct map overlaps a large page");
        table = (*e & ADDR) as *mut u64;
    }
    table.add(index(va, depth) as usize)
}

/// KASLR: hang a planned last-level table (at `table`) at the window `va`, creating what is above.
pub unsafe fn link_table(root: u64, pool: &mut Pool, va: u64, table: u64) {
    ptr::write(entry(root, va, plan::tables::LEVELS - 2, pool), table | TABLE);
}

/// Physical [0, size) at `base`, read/write, no-execute (executable with DIRECT_MAP_EXEC), with pages
/// of `page` bytes.
pub unsafe fn map_direct(root: u64, pool: &mut Pool, base: u64, size: u64, page: u64, nx_mask: u64) {
    let depth = plan::tables::SHIFTS.iter().position(|&s| 1u64 << s == page).unwrap_or(plan::tables::LEVELS - 1);
    let nx = if plan::options::DIRECT_MAP_EXEC { 0 } else { NO_EXECUTE };
    let flags = (PRESENT | WRITABLE | HUGE | nx) & nx_mask;
    let mut pa = 0;
    while pa < size {
        ptr::write(entry(root, base + pa, depth, pool), pa | flags);
        pa += page;
    }
}

/// [va, va + len) to [pa, pa + len) (4 KiB-aligned) with the largest pages up to `largest` that
/// the addresses' alignment allows, and the entry `flags` (HUGE added for large pages).
#[cfg(feature = "limine")]
pub unsafe fn map_range(root: u64, pool: &mut Pool, va: u64, pa: u64, len: u64, largest: u64, flags: u64) {
    let mut off = 0;
    while off < len {
        let depth = (0..plan::tables::LEVELS)
            .map(|d| (d, 1u64 << plan::tables::SHIFTS[d]))
            .find(|&(_, size)| size <= largest && (va + off) % size == 0 && (pa + off) % size == 0 && off + size <= len)
            .map_or(plan::tables::LEVELS - 1, |(d, _)| d);
        let huge = if depth < plan::tables::LEVELS - 1 { HUGE } else { 0 };
        ptr::write(entry(root, va + off, depth, pool), (pa + off) | flags | huge);
        off += 1u64 << plan::tables::SHIFTS[depth];
    }
}

/// [va, va + len) to [pa, pa + len) with 4 KiB pages and the entry `flags`, over what is mapped
/// there: a large page on the way is split into pages of the next size down, which keep its
/// mapping and flags (at most one table per level and window: `tables_needed(va, len, PAGE)`).
#[cfg(feature = "limine")]
pub unsafe fn remap_4k(root: u64, pool: &mut Pool, va: u64, pa: u64, len: u64, flags: u64) {
    let mut off = 0;
    while off < len {
        let mut table = root as *mut u64;
        for depth in 0..plan::tables::LEVELS - 1 {
            let e = table.add(index(va + off, depth) as usize);
            if *e & PRESENT == 0 {
                ptr::write(e, pool.take() | TABLE);
            } else if *e & HUGE != 0 {
                split(e, depth, pool);
            }
            table = (*e & ADDR) as *mut u64;
        }
        ptr::write(table.add(index(va + off, plan::tables::LEVELS - 1) as usize), (pa + off) | flags);
        off += PAGE;
    }
}

/// The large page at `entry` (a `depth` entry) as a table of 512 pages of the next size down, the
/// same memory with the same flags. Large pages here have PAT index 0 (bit 12 clear): bit 7 is
/// HUGE in a large page and the PAT bit in a 4 KiB one.
#[cfg(feature = "limine")]
unsafe fn split(entry: *mut u64, depth: usize, pool: &mut Pool) {
    let large = *entry;
    let size = 1u64 << plan::tables::SHIFTS[depth + 1];
    let base = large & ADDR & !((1u64 << plan::tables::SHIFTS[depth]) - 1);
    let flags = if depth + 2 == plan::tables::LEVELS { large & !ADDR & !HUGE } else { large & !ADDR };
    let table = pool.take();
    for n in 0..512 {
        ptr::write((table as *mut u64).add(n as usize), (base + n * size) | flags);
    }
    ptr::write(entry, table | TABLE);
}

/// [va, va + len) to [pa, pa + len) with 4 KiB pages and the given entry flags.
pub unsafe fn map_4k(root: u64, pool: &mut Pool, va: u64, pa: u64, len: u64, flags: u64) {
    let mut off = 0;
    while off < len {
        ptr::write(entry(root, va + off, plan::tables::LEVELS - 1, pool), (pa + off) | flags);
        off += PAGE;
    }
}
