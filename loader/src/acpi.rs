//! Where the firmware's ACPI tables are: the RSDP, the RSDT or XSDT, every table they list, and
//! the FADT's FACS and DSDT (32- and 64-bit fields). The Limine protocol (base revision 4 on)
//! promises each of them inside an ACPI or RESERVED_MAPPED memory-map entry, mapped in the HHDM.

use core::ptr;

/// At most this many ranges (a machine with more tables gets the first ones; QEMU has 8).
const CAPACITY: usize = 64;

/// The tables' physical ranges (base, length), read before ExitBootServices.
pub struct Tables {
    ranges: [(u64, u64); CAPACITY],
    count: usize,
}

unsafe fn u32_at(at: u64) -> u64 {
    ptr::read_unaligned(at as *const u32) as u64
}

unsafe fn u64_at(at: u64) -> u64 {
    ptr::read_unaligned(at as *const u64)
}

impl Tables {
    /// The tables reachable from the RSDP (`rsdp` = (address, revision); 0: none).
    ///
    /// # Safety
    /// Boot services are up: the ACPI tables are in place and identity-mapped.
    pub unsafe fn find(rsdp: (u64, u64)) -> Tables {
        let mut t = Tables { ranges: [(0, 0); CAPACITY], count: 0 };
        let (rsdp, revision) = rsdp;
        if rsdp == 0 {
            return t;
        }
        // ACPI 2.0's RSDP says its length; ACPI 1.0's is 20 bytes.
        t.add(rsdp, if revision >= 2 { u32_at(rsdp + 20) } else { 20 });
        let xsdt = if revision >= 2 { u64_at(rsdp + 24) } else { 0 };
        let (root, width) = if xsdt != 0 { (xsdt, 8) } else { (u32_at(rsdp + 16), 4) };
        let root_length = t.table(root);
        let mut at = root + 36;
        while root_length != 0 && at + width <= root + root_length {
            let table = if width == 8 { u64_at(at) } else { u32_at(at) };
            at += width;
            let length = t.table(table);
            if length >= 44 && ptr::read_unaligned(table as *const [u8; 4]) == *b"FACP" {
                // FIRMWARE_CTRL and DSDT (ACPI 1.0), X_FIRMWARE_CTRL and X_DSDT (2.0 on).
                for (field, size) in [(36, 4), (40, 4), (132, 8), (140, 8)] {
                    if field + size <= length {
                        let target = if size == 8 { u64_at(table + field) } else { u32_at(table + field) };
                        t.table(target);
                    }
                }
            }
        }
        t
    }

    /// A table at `at` (0: none), its length from its header; returns the length.
    unsafe fn table(&mut self, at: u64) -> u64 {
        if at == 0 {
            return 0;
        }
        let length = u32_at(at + 4);
        self.add(at, length);
        length
    }

    fn add(&mut self, base: u64, length: u64) {
        if length != 0 && self.count < CAPACITY && !self.ranges[..self.count].contains(&(base, length)) {
            self.ranges[self.count] = (base, length);
            self.count += 1;
        }
    }

    /// The ranges found.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges[..self.count]
    }

    /// The end of the highest one (0 without ACPI).
    pub fn top(&self) -> u64 {
        self.ranges().iter().map(|&(base, length)| base + length).max().unwrap_or(0)
    }
}
