//! The ACPI MADT's processors and the local APIC's interrupt command values: plain functions of
//! bytes and numbers, tested hosted (tests/test_smp.py) as well as used at boot.

/// A processor the MADT lists: its ACPI processor UID and its (x2)APIC ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Processor {
    pub uid: u32,
    pub apic_id: u32,
}

/// Why a MADT cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MadtError {
    /// Shorter than its header, or its length field disagrees with the bytes it has.
    Length,
    /// Its bytes do not sum to zero.
    Checksum,
    /// The entry at this offset runs past the table or is shorter than its type needs.
    Entry(usize),
}

impl core::fmt::Display for MadtError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MadtError::Length => write!(f, "its length does not fit its header"),
            MadtError::Checksum => write!(f, "its checksum is wrong"),
            MadtError::Entry(at) => write!(f, "the entry at offset {:#x} is malformed", at),
        }
    }
}

/// Processor Local APIC (type 0) and Processor Local x2APIC (type 9) structures (ACPI 6.5, 5.2.12).
const LOCAL_APIC: u8 = 0;
const LOCAL_X2APIC: u8 = 9;
/// Their flags: the processor is usable; or (MADT revision 5 and later) it can be brought online.
const ENABLED: u32 = 1 << 0;
const ONLINE_CAPABLE: u32 = 1 << 1;
/// The SDT header (36 bytes), the local APIC address and the flags.
const ENTRIES: usize = 44;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Every processor the MADT `table` (its whole bytes, header included) lists as one the OS may
/// start: enabled, or online-capable where the MADT's revision defines that bit. An APIC ID that
/// is listed twice (a Local APIC and a Local x2APIC entry for one processor) is given once; the
/// "no processor" IDs (0xff, 0xffffffff) are skipped.
pub fn processors(table: &[u8], mut each: impl FnMut(Processor)) -> Result<(), MadtError> {
    walk(table, true, &mut each)
}

/// The ACPI processor UID of the first startable entry with this APIC ID (the one `processors`
/// gives): one pass over the table, where `processors` compares every entry with those before it.
pub fn uid_of(table: &[u8], apic_id: u32) -> Option<u32> {
    let mut uid = None;
    let _ = walk(table, false, &mut |p| {
        if p.apic_id == apic_id && uid.is_none() {
            uid = Some(p.uid);
        }
    });
    uid
}

/// The table's length and checksum hold.
fn header(table: &[u8]) -> Result<(), MadtError> {
    if table.len() < ENTRIES || u32_at(table, 4) as usize != table.len() {
        return Err(MadtError::Length);
    }
    if table.iter().fold(0u8, |sum, b| sum.wrapping_add(*b)) != 0 {
        return Err(MadtError::Checksum);
    }
    Ok(())
}

/// One body for every caller (a dyn callback: the loader stays small).
fn walk(table: &[u8], once: bool, each: &mut dyn FnMut(Processor)) -> Result<(), MadtError> {
    header(table)?;
    let online_capable_defined = table[8] >= 5;
    let startable = |flags: u32| flags & ENABLED != 0 || (online_capable_defined && flags & ONLINE_CAPABLE != 0);
    let mut at = ENTRIES;
    let entry = |at: usize| -> Result<Option<Processor>, MadtError> {
        let (kind, len) = (table[at], table[at + 1] as usize);
        if len < 2 || at + len > table.len() {
            return Err(MadtError::Entry(at));
        }
        let need = match kind {
            LOCAL_APIC => 8,
            LOCAL_X2APIC => 16,
            _ => return Ok(None),
        };
        if len < need {
            return Err(MadtError::Entry(at));
        }
        Ok(match kind {
            LOCAL_APIC if table[at + 3] != 0xff && startable(u32_at(table, at + 4)) => {
                Some(Processor { uid: table[at + 2] as u32, apic_id: table[at + 3] as u32 })
            }
            LOCAL_X2APIC if u32_at(table, at + 4) != u32::MAX && startable(u32_at(table, at + 8)) => {
                Some(Processor { uid: u32_at(table, at + 12), apic_id: u32_at(table, at + 4) })
            }
            _ => None,
        })
    };
    // Validate every entry before the first call: a malformed table starts no processor.
    while at < table.len() {
        if at + 2 > table.len() {
            return Err(MadtError::Entry(at));
        }
        entry(at)?;
        at += table[at + 1] as usize;
    }
    at = ENTRIES;
    while at < table.len() {
        if let Some(p) = entry(at)? {
            let mut earlier = ENTRIES;
            let mut seen = false;
            while once && earlier < at {
                seen |= matches!(entry(earlier)?, Some(q) if q.apic_id == p.apic_id);
                earlier += table[earlier + 1] as usize;
            }
            if !seen {
                each(p);
            }
        }
        at += table[at + 1] as usize;
    }
    Ok(())
}

// What the Limine protocol's entry state (its interrupt controllers) reads.

/// I/O APIC structures (type 1): the I/O APIC's registers' physical address (ACPI 6.5, 5.2.12.3).
#[cfg_attr(not(feature = "limine"), allow(dead_code))]
const IO_APIC: u8 = 1;

/// The physical address of each I/O APIC the MADT lists (validated as `processors` validates).
#[cfg_attr(not(feature = "limine"), allow(dead_code))]
pub fn io_apics(table: &[u8], mut each: impl FnMut(u64)) -> Result<(), MadtError> {
    entries(table, &mut |kind, e| {
        if kind == IO_APIC && e.len() >= 12 {
            each(u32_at(e, 4) as u64);
        }
    })
}

/// Local APIC NMI (type 4) and Local x2APIC NMI (type 0x0a) structures (5.2.12.7, 5.2.12.13).
#[cfg_attr(not(feature = "limine"), allow(dead_code))]
const LOCAL_APIC_NMI: u8 = 4;
#[cfg_attr(not(feature = "limine"), allow(dead_code))]
const LOCAL_X2APIC_NMI: u8 = 0x0a;

/// An NMI source wired to a local APIC's LINT pin: which processor (ACPI processor UID; all of them
/// when `uid` is `ALL_PROCESSORS`), the pin (0 or 1) and the MPS INTI flags (polarity, trigger).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "limine"), allow(dead_code))]
pub struct LintNmi {
    pub uid: u32,
    pub lint: u8,
    pub flags: u16,
}
/// The UID an NMI structure names for every processor (0xff in a type 4 entry, 0xffffffff in 0x0a).
#[cfg_attr(not(feature = "limine"), allow(dead_code))]
pub const ALL_PROCESSORS: u32 = u32::MAX;

/// The local APIC NMI sources the MADT lists.
#[cfg_attr(not(feature = "limine"), allow(dead_code))]
pub fn lint_nmis(table: &[u8], mut each: impl FnMut(LintNmi)) -> Result<(), MadtError> {
    entries(table, &mut |kind, e| match kind {
        LOCAL_APIC_NMI if e.len() >= 6 => each(LintNmi {
            uid: if e[2] == 0xff { ALL_PROCESSORS } else { e[2] as u32 },
            lint: e[5],
            flags: u16::from_le_bytes([e[3], e[4]]),
        }),
        LOCAL_X2APIC_NMI if e.len() >= 12 => {
            each(LintNmi { uid: u32_at(e, 4), lint: e[8], flags: u16::from_le_bytes([e[2], e[3]]) })
        }
        _ => {}
    })
}

/// The LVT bits of an NMI wiring: delivery mode NMI, polarity (bit 13, active low) and trigger mode
/// (bit 15, level) from the MPS INTI flags (bits 0..1: 11 active low; bits 2..3: 11 level).
#[cfg_attr(not(feature = "limine"), allow(dead_code))] // interrupts.rs: Limine only
pub const LVT_WIRING: u32 = 0b111 << 8 | 1 << 13 | 1 << 15;
const NMI: u32 = 0b100 << 8;

/// The NMI wiring of the LINT pins of the processor with this ACPI UID, from the MADT's (x2)APIC
/// NMI entries: LINT0's LVT bits in the low half, LINT1's in the high half (0: not wired).
pub fn lint_nmi(madt: &[u8], uid: u32) -> u64 {
    let mut wiring = [0u32; 2];
    let _ = lint_nmis(madt, |n| {
        if (n.uid == ALL_PROCESSORS || n.uid == uid) && n.lint < 2 {
            let low = if n.flags & 3 == 3 { 1 << 13 } else { 0 };
            let level = if n.flags >> 2 & 3 == 3 { 1 << 15 } else { 0 };
            wiring[n.lint as usize] = NMI | low | level;
        }
    });
    wiring[0] as u64 | (wiring[1] as u64) << 32
}

/// Every entry (its type and bytes) of a table whose length and checksum hold, after checking that
/// each entry fits the table.
#[cfg_attr(not(feature = "limine"), allow(dead_code))]
fn entries(table: &[u8], each: &mut dyn FnMut(u8, &[u8])) -> Result<(), MadtError> {
    header(table)?;
    let mut at = ENTRIES;
    while at < table.len() {
        if at + 2 > table.len() || table[at + 1] < 2 || at + table[at + 1] as usize > table.len() {
            return Err(MadtError::Entry(at));
        }
        at += table[at + 1] as usize;
    }
    at = ENTRIES;
    while at < table.len() {
        let len = table[at + 1] as usize;
        each(table[at], &table[at..at + len]);
        at += len;
    }
    Ok(())
}

/// Interrupt command values (Intel SDM vol. 3A, 11.6.1 and 11.12.9): delivery mode INIT or
/// Start-Up, level assert, edge triggered, physical destination, no shorthand.
pub const ICR_INIT: u32 = 0b101 << 8 | 1 << 14;
/// INIT-deassert is not sent: the SDM's MP start-up (9.4.4.1) uses INIT, SIPI, SIPI on every CPU
/// since the Pentium 4.
pub fn icr_startup(page: u64) -> u32 {
    0b110 << 8 | 1 << 14 | (page >> 12) as u32 & 0xff
}
/// The xAPIC's ICR high word: the destination APIC ID in bits 24..31.
pub fn xapic_destination(apic_id: u32) -> u32 {
    apic_id << 24
}
/// The x2APIC's ICR (one 64-bit MSR): the destination x2APIC ID in the high half.
pub fn x2apic_icr(apic_id: u32, low: u32) -> u64 {
    (apic_id as u64) << 32 | low as u64
}
/// The xAPIC reaches IDs 0..=254 (0xff is the broadcast).
pub const XAPIC_MAX_ID: u32 = 0xfe;
