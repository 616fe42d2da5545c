//! The application processors: counted from the ACPI MADT before ExitBootServices, started after
//! it with INIT-SIPI-SIPI through the startup page below 1 MiB (the trampoline page's copy), and
//! parked in the higher half on their own stacks, each spinning on its record's goto_address
//! (templates/loader/trampoline.S.j2 has the AP's side). No AP runs firmware code after
//! ExitBootServices: INIT takes each out of the firmware's wait loop first.

use core::fmt::Write;
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use r_efi::efi;

use crate::block::{Block, Placement};
use crate::console::{self, println};
use crate::cpu::{self, apic_base, cpuid, cr0, cr4, efer, msr};
use crate::handover;
use crate::madt::{self, Processor};
use crate::paging::{self, PAGE};
use crate::paging_mode::{self, LowPages};
use crate::rendered::abi::{self, ApSlot, ApStart};
use crate::rendered::plan::{self, faults::Fault};
use crate::rendered::protocol;

const XAPIC_ICR_LOW: u64 = 0x300;
const XAPIC_ICR_HIGH: u64 = 0x310;
const ICR_PENDING: u32 = 1 << 12;
/// The SDM's delays (vol. 3A, 9.4.4.1): 10 ms after INIT, 200 us after each SIPI.
const INIT_DELAY_US: u64 = 10_000;
const SIPI_DELAY_US: u64 = 200;
/// How long the APs get to check in, and then to park, before the loader goes on without them.
const CHECK_IN_US: u64 = 2_000_000;
/// The APIC ID the `lost_ap` test fault adds: a processor that is not there.
const LOST_AP_ID: u32 = 0xfe;

/// Why an enabled processor is left alone (counted in cpus_not_started): an index of
/// `Census::left` and of `LEFT_ALONE`, which says it in the serial log.
const SMP_OFF: usize = 0;
const UNREACHABLE: usize = 1;
const BEYOND_MAX_CPUS: usize = 2;
const NO_STARTUP_PAGE: usize = 3;
const NO_STACK_MEMORY: usize = 4;
const LEFT_ALONE: [&str; 5] = [
    "with SMP=0",
    "with an APIC ID above 254 in xAPIC mode",
    "beyond MAX_CPUS",
    "without a startup page below 1 MiB",
    "without memory for their stacks (AP_STACK_SIZE)",
];

/// ", 2 beyond MAX_CPUS" (after `sep`) when n > 0; the separator for the next reason. Not inlined:
/// the loop over the reasons is unrolled, and each copy would format on its own.
#[inline(never)]
fn say_reason(sep: &'static str, n: u32, why: &str) -> &'static str {
    if n == 0 {
        return sep;
    }
    let _ = write!(console::Console, "{}{} {}", sep, n, why);
    ", "
}

/// What the loader learned about the processors before ExitBootServices.
pub struct Census {
    madt: Option<&'static [u8]>,
    pub bsp_apic_id: u32,
    pub bsp_uid: u32,
    /// The local APICs are (or will be, before the first IPI) in x2APIC mode.
    pub x2apic: bool,
    /// The firmware left xAPIC mode on but an AP's ID needs x2APIC: switch the BSP's APIC.
    switch_to_x2apic: bool,
    /// No startup page: nothing is started (cpu_flags then lacks SMP).
    gave_up: bool,
    /// CPUID leaf giving a CPU its APIC ID: 1 or 0xb.
    pub id_leaf: u32,
    /// APs this boot starts (one slot and one stack each).
    pub to_start: usize,
    /// APs the kernel block has stacks for: MAX_CPUS - 1, fewer when memory is short.
    stack_room: usize,
    /// Enabled processors left alone, by reason (SMP_OFF...).
    left: [u32; 5],
    /// TSC ticks per microsecond, measured against the firmware's Stall.
    tsc_per_us: u64,
}

/// The CPU's own APIC ID, the way an AP finds its own (trampoline.S.j2): CPUID 0xb's x2APIC ID
/// when the CPU has that leaf, else CPUID 1's initial APIC ID.
fn id_leaf() -> u32 {
    let max = core::arch::x86_64::__cpuid(0).eax;
    if max >= 0xb && core::arch::x86_64::__cpuid_count(0xb, 0).ebx != 0 {
        0xb
    } else {
        1
    }
}

fn apic_id(leaf: u32) -> u32 {
    let r = core::arch::x86_64::__cpuid_count(leaf, 0);
    if leaf == 1 {
        r.ebx >> 24
    } else {
        r.edx
    }
}

/// The ACPI table with this signature, through the RSDP's XSDT (ACPI 2.0+) or RSDT.
///
/// # Safety
/// Boot services are up: the firmware's tables are identity-mapped and the ACPI tables in place.
pub unsafe fn acpi_table(rsdp: u64, revision: u64, signature: &[u8; 4]) -> Option<&'static [u8]> {
    if rsdp == 0 {
        return None;
    }
    let xsdt = if revision >= 2 { ptr::read_unaligned((rsdp + 24) as *const u64) } else { 0 };
    let (root, width) = if xsdt != 0 { (xsdt, 8) } else { (ptr::read_unaligned((rsdp + 16) as *const u32) as u64, 4) };
    if root == 0 {
        return None;
    }
    let length = ptr::read_unaligned((root + 4) as *const u32) as u64;
    let mut at = root + 36;
    while at + width <= root + length {
        let table = if width == 8 {
            ptr::read_unaligned(at as *const u64)
        } else {
            ptr::read_unaligned(at as *const u32) as u64
        };
        at += width;
        if table == 0 || ptr::read_unaligned(table as *const [u8; 4]) != *signature {
            continue;
        }
        let len = ptr::read_unaligned((table + 4) as *const u32) as usize;
        return Some(core::slice::from_raw_parts(table as *const u8, len));
    }
    None
}

impl Census {
    /// The processors the MADT lists, the BSP's own APIC, the APIC mode the IPIs will need, and
    /// the TSC's rate for the SDM's delays. Says on the console what it will do.
    pub fn take(bs: &efi::BootServices, rsdp: (u64, u64)) -> Census {
        let leaf = id_leaf();
        let base = cpu::rdmsr(msr::APIC_BASE);
        let mut c = Census {
            madt: None,
            bsp_apic_id: apic_id(leaf),
            bsp_uid: 0,
            x2apic: base & apic_base::X2APIC != 0,
            switch_to_x2apic: false,
            id_leaf: leaf,
            to_start: 0,
            stack_room: plan::ranges::MAX_CPUS - 1,
            left: [0; 5],
            gave_up: false,
            tsc_per_us: 0,
        };
        // SAFETY: boot services are up.
        c.madt = unsafe { acpi_table(rsdp.0, rsdp.1, b"APIC") };
        let Some(madt) = c.madt else {
            println!("highboot: no ACPI MADT: the kernel gets one CPU");
            return c;
        };
        let has_x2apic = core::arch::x86_64::__cpuid(1).ecx & cpuid::X2APIC != 0;
        let mut beyond_xapic = false;
        let mut listed = 0u32;
        let result = madt::processors(madt, |p| {
            listed += 1;
            if p.apic_id == c.bsp_apic_id {
                c.bsp_uid = p.uid;
            } else if p.apic_id > madt::XAPIC_MAX_ID {
                beyond_xapic = true;
            }
        });
        if let Err(e) = result {
            println!("highboot: warning: the ACPI MADT cannot be read ({}); the kernel gets one CPU", e);
            c.madt = None;
            return c;
        }
        let wanted = protocol::X2APIC_WHEN_ASKED.unwrap_or(beyond_xapic);
        if wanted && !c.x2apic && has_x2apic && plan::options::SMP {
            c.switch_to_x2apic = true;
            c.x2apic = true;
        }
        let aps = listed.saturating_sub(1) + if plan::faults::FAULT == Some(Fault::LostAp) { 1 } else { 0 };
        if !plan::options::SMP {
            c.left[SMP_OFF] = aps;
            return c;
        }
        c.count_aps();
        if c.to_start > 0 {
            let t0 = cpu::rdtsc();
            (bs.stall)(2000);
            c.tsc_per_us = ((cpu::rdtsc() - t0) / 2000).max(1);
            println!(
                "highboot: {} application processor(s) to start ({})",
                c.to_start,
                if c.x2apic { "x2APIC" } else { "xAPIC" }
            );
        }
        c
    }

    /// Count the APs to start and those left alone. With nothing to start (MAX_CPUS = 1, no
    /// startup page, no memory for a stack) a planned switch to x2APIC mode is called off: the
    /// APIC stays in the mode the firmware left, which cpu_flags says. Not inlined: one copy of
    /// the MADT walk for every count (each caller had its own, 1.5 KiB of loader).
    #[inline(never)]
    fn count_aps(&mut self) {
        self.for_each_ap(|_| {});
        if self.to_start == 0 && self.switch_to_x2apic {
            self.switch_to_x2apic = false;
            self.x2apic = false;
            self.count_aps();
        }
    }

    /// Each AP this boot starts, in MADT order (`to_start` and the APs left alone counted on the
    /// way): not the BSP, reachable in the APIC mode, at most MAX_CPUS - 1 of them, and no more
    /// than the block has stacks for.
    fn for_each_ap(&mut self, mut each: impl FnMut(Processor)) {
        let Some(madt) = self.madt else { return };
        let (bsp, x2apic, room) = (self.bsp_apic_id, self.x2apic, self.stack_room.min(plan::ranges::MAX_CPUS - 1));
        let (mut reachable, mut started, mut unreachable) = (0u32, 0usize, 0u32);
        let mut take = |p: Processor| {
            if p.apic_id == bsp {
                return;
            }
            if !x2apic && p.apic_id > madt::XAPIC_MAX_ID {
                unreachable += 1;
                return;
            }
            reachable += 1;
            if started < room {
                started += 1;
                each(p);
            }
        };
        let _ = madt::processors(madt, &mut take);
        if plan::faults::FAULT == Some(Fault::LostAp) {
            take(Processor { uid: 0xffff_fffe, apic_id: LOST_AP_ID });
        }
        let allowed = reachable.min(plan::ranges::MAX_CPUS as u32 - 1);
        self.to_start = started;
        self.left[UNREACHABLE] = unreachable;
        self.left[BEYOND_MAX_CPUS] = reachable - allowed;
        self.left[NO_STACK_MEMORY] = allowed - started as u32;
    }

    /// No startup page: every AP stays as the firmware left it.
    pub fn give_up(&mut self, why: &str, status: efi::Status) {
        println!("highboot: warning: {} ({:#x}); the application processors are not started", why, status.as_usize());
        self.gave_up = true;
        self.stack_room = 0;
        self.count_aps();
        self.left[NO_STARTUP_PAGE] = core::mem::take(&mut self.left[NO_STACK_MEMORY]);
    }

    /// The kernel block has room for only `room` of the AP stacks: start that many (in MADT
    /// order), and leave the rest to the kernel as those beyond MAX_CPUS are.
    pub fn fewer_stacks(&mut self, room: usize) {
        let wanted = self.to_start;
        self.stack_room = room;
        self.count_aps();
        println!(
            "highboot: warning: no memory for {0} AP stack(s) of {1} (AP_STACK_SIZE): starting {2} of {0} application processor(s); the kernel may start the rest",
            wanted,
            plan::ranges::AP_STACK_SIZE_TEXT,
            self.to_start
        );
    }

    /// One line whenever an enabled processor is left alone: how many, and why.
    pub fn say_left_alone(&self) {
        let total = self.not_started();
        if total == 0 {
            return;
        }
        let _ = write!(console::Console, "highboot: {} processor(s) not started (cpus_not_started)", total);
        let mut sep = ": ";
        for (&n, why) in self.left.iter().zip(LEFT_ALONE) {
            sep = say_reason(sep, n, why);
        }
        println!();
    }

    /// The ACPI MADT (None when the firmware has none or it cannot be read).
    #[cfg_attr(not(feature = "limine"), allow(dead_code))]
    pub fn madt(&self) -> Option<&'static [u8]> {
        self.madt
    }

    /// Enabled processors the loader does not start.
    pub fn not_started(&self) -> u32 {
        self.left.iter().sum()
    }

    #[cfg_attr(feature = "limine", allow(dead_code))] // highboot's boot info only
    /// Whether the loader starts the APs (SMP on and a startup page found): the kernel must not.
    pub fn starts_aps(&self) -> bool {
        plan::options::SMP && !self.gave_up
    }

    /// The BSP's LINT pins' NMI wiring (madt::lint_nmi).
    #[cfg_attr(not(feature = "limine"), allow(dead_code))]
    pub fn bsp_lint_nmi(&self) -> u64 {
        self.madt.map_or(0, |m| madt::lint_nmi(m, self.bsp_uid))
    }

    /// TSC ticks per microsecond (0 when the loader did not measure it: no AP to start).
    #[cfg_attr(not(feature = "limine"), allow(dead_code))]
    pub fn tsc_per_us(&self) -> u64 {
        self.tsc_per_us
    }

    /// The BSP's record (first, in the protocol's layout) and one waiting slot per AP, in the
    /// block's area.
    ///
    /// # Safety
    /// The block's area is laid out for `to_start` APs and zeroed.
    pub unsafe fn fill(&mut self, block: &Block, place: &Placement) {
        let layout = &block.layout;
        handover::cpu_record(
            block.in_area(layout.cpus_off),
            0,
            self.bsp_uid,
            self.bsp_apic_id,
            place.stack(plan::ranges::STACK_TOP),
        );
        if self.gave_up {
            return; // no slots: every AP is counted in cpus_not_started
        }
        let slots = block.in_area(layout.slots_off) as *mut ApSlot;
        let mut n = 0;
        let expected = self.to_start;
        self.for_each_ap(|p| {
            if n < expected {
                slots.add(n).write(ApSlot { apic_id: p.apic_id as u64, state: abi::AP_WAITING, record: 0 });
            }
            n += 1;
        });
        if n != expected {
            // The MADT is the firmware's and read twice; it did not change between the reads.
            panic!("the MADT listed {} APs, then {}", expected, n);
        }
    }

    /// The ACPI processor UID of the processor with this APIC ID (the `lost_ap` fault's: made up).
    fn uid_of(&self, apic_id: u32) -> u32 {
        self.madt.and_then(|m| madt::uid_of(m, apic_id)).unwrap_or(0xffff_fffe)
    }

    fn delay_us(&self, us: u64) {
        let end = cpu::rdtsc() + us * self.tsc_per_us;
        while cpu::rdtsc() < end {
            core::hint::spin_loop();
        }
    }
}

/// The local APIC of the BSP, for IPIs.
struct Apic {
    x2apic: bool,
    mmio: u64,
}

impl Apic {
    unsafe fn send(&self, apic_id: u32, command: u32, census: &Census) {
        if self.x2apic {
            cpu::wrmsr(msr::X2APIC_ICR, madt::x2apic_icr(apic_id, command));
            return;
        }
        ptr::write_volatile((self.mmio + XAPIC_ICR_HIGH) as *mut u32, madt::xapic_destination(apic_id));
        ptr::write_volatile((self.mmio + XAPIC_ICR_LOW) as *mut u32, command);
        let end = cpu::rdtsc() + 100_000 * census.tsc_per_us;
        while ptr::read_volatile((self.mmio + XAPIC_ICR_LOW) as *const u32) & ICR_PENDING != 0 && cpu::rdtsc() < end {
            core::hint::spin_loop();
        }
    }
}

fn slot_state(slot: *mut ApSlot) -> &'static AtomicU64 {
    // SAFETY: slots are u64-aligned words in the block's area, shared with the APs.
    unsafe { &*(ptr::addr_of_mut!((*slot).state) as *const AtomicU64) }
}

fn wait_until(census: &Census, us: u64, mut done: impl FnMut() -> bool) -> bool {
    let end = cpu::rdtsc() + us * census.tsc_per_us;
    loop {
        if done() {
            return true;
        }
        if cpu::rdtsc() >= end {
            return false;
        }
        core::hint::spin_loop();
    }
}

/// After ExitBootServices: start the APs, give each that checks in its record and stack, and
/// wait until each is parked. The boot info's CPU list and counts say how it went.
///
/// # Safety
/// Boot services are gone; the BSP still runs on the firmware's tables (identity); the block's
/// tables map the startup page (identity and alias), and `fill` wrote the slots.
pub unsafe fn start(
    census: &Census,
    block: &mut Block,
    place: &Placement,
    low: Option<LowPages>,
    root: paging::Root,
    nx: bool,
    nx_mask: u64,
) -> Started {
    let Some(low) = low.filter(|_| census.to_start > 0) else { return Started { count: 1, failed: 0 } };
    let layout = &block.layout;
    // From the BSP: CR0.MP and NE, CR4.PGE, OSFXSR and OSXMMEXCPT; the rest as the entry ABI says
    // (Limine's revision 5 on: none of them).
    let (bsp_cr0, bsp_cr4) = if protocol::EXACT_ENTRY_STATE { (0, 0) } else { (cpu::read_cr0(), cpu::read_cr4()) };
    let start = ApStart {
        cr3: root.table,
        transition_cr3: low.root,
        cr0: (bsp_cr0 & (cr0::MP | cr0::NE)) | cr0::PE | cr0::ET | cr0::WP | cr0::PG,
        cr4: cr4::PAE | (bsp_cr4 & (cr4::PGE | cr4::OSFXSR | cr4::OSXMMEXCPT)) | paging_mode::cr4_la57(root.levels),
        efer: efer::LME | if nx { efer::NXE } else { 0 },
        trampoline_va: place.slid(plan::ranges::TRAMPOLINE_VA),
        descriptors_va: place.direct(block.in_area(layout.desc_off)),
        slots_va: place.direct(block.in_area(layout.slots_off)),
        slot_count: census.to_start as u64,
        id_leaf: census.id_leaf as u64,
        pat: handover::entry_pat(),
        lint_nmi: if protocol::EXACT_ENTRY_STATE { aps_lint_nmi(census) } else { 0 },
    };
    paging_mode::prepare_ap_start(low, root, &start);

    let base = cpu::rdmsr(msr::APIC_BASE);
    if census.switch_to_x2apic {
        cpu::wrmsr(msr::APIC_BASE, base | apic_base::ENABLE | apic_base::X2APIC);
    }
    let apic = Apic { x2apic: census.x2apic, mmio: base & apic_base::ADDRESS };
    let slots = core::slice::from_raw_parts_mut(block.in_area(layout.slots_off) as *mut ApSlot, census.to_start);
    let t0 = cpu::rdtsc();
    for s in slots.iter() {
        apic.send(s.apic_id as u32, madt::ICR_INIT, census);
    }
    census.delay_us(INIT_DELAY_US);
    let sipi = madt::icr_startup(low.page);
    for round in 0..2 {
        for s in slots.iter_mut() {
            if round == 0 || slot_state(s).load(Ordering::Acquire) == abi::AP_WAITING {
                apic.send(s.apic_id as u32, sipi, census);
            }
        }
        census.delay_us(SIPI_DELAY_US);
    }
    let arrived =
        |slots: &mut [ApSlot]| slots.iter_mut().all(|s| slot_state(s).load(Ordering::Acquire) != abi::AP_WAITING);
    wait_until(census, CHECK_IN_US, || arrived(slots));

    // Records for the APs that arrived, in MADT order after the BSP's; the rest are shut out.
    let cpus = block.in_area(layout.cpus_off);
    let mut count = 1u64;
    let mut failed = 0u32;
    for s in slots.iter_mut() {
        let state = slot_state(s);
        if state.compare_exchange(abi::AP_WAITING, abi::AP_ABANDONED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            // INIT again: a late AP goes back to wait-for-SIPI before it can run the startup page
            // (loader-reclaimable memory the kernel may reuse); the kernel can start it itself.
            apic.send(s.apic_id as u32, madt::ICR_INIT, census);
            failed += 1;
            println!(
                "highboot: warning: the processor with APIC ID {:#x} did not check in within {} ms; it is left out",
                s.apic_id,
                CHECK_IN_US / 1000
            );
            continue;
        }
        let k = count - 1;
        let guard = place.slid(plan::ranges::AP_STACKS_VA) + k * (plan::ranges::AP_STACK_SIZE + PAGE);
        let phys = block.base + layout.stacks_off + k * plan::ranges::AP_STACK_SIZE;
        let flags = (paging::PRESENT | paging::WRITABLE | paging::NO_EXECUTE) & nx_mask;
        paging::map_4k(block.root, &mut block.pool, guard + PAGE, phys, plan::ranges::AP_STACK_SIZE, flags);
        let record = handover::cpu_record(
            cpus,
            count as usize,
            census.uid_of(s.apic_id as u32),
            s.apic_id as u32,
            guard + PAGE + plan::ranges::AP_STACK_SIZE,
        );
        count += 1;
        (*(ptr::addr_of_mut!(s.record) as *const AtomicU64)).store(place.direct(record), Ordering::Release);
    }
    let parked = wait_until(census, CHECK_IN_US, || {
        slots.iter_mut().all(|s| {
            let state = slot_state(s).load(Ordering::Acquire);
            state == abi::AP_PARKED || state == abi::AP_ABANDONED
        })
    });
    if !parked {
        println!("highboot: warning: an AP checked in but did not reach its parking place in time");
    }
    println!(
        "highboot: {} of {} application processor(s) parked ({} TSC ticks)",
        count - 1,
        census.to_start,
        cpu::rdtsc() - t0
    );
    Started { count, failed }
}

/// The NMI wiring of the APs' LINT pins (madt::lint_nmi), one for all of them: the
/// trampoline sets every AP's local APIC up alike. A MADT that wires them differently stops the boot.
fn aps_lint_nmi(census: &Census) -> u64 {
    let Some(madt) = census.madt() else { return 0 };
    let mut wiring = None;
    let _ = madt::processors(madt, |p| {
        if p.apic_id != census.bsp_apic_id {
            let w = madt::lint_nmi(madt, p.uid);
            if *wiring.get_or_insert(w) != w {
                crate::failure::fatal(
                    "the MADT wires the APs' LINT pins to NMIs differently; highboot sets them alike",
                );
            }
        }
    });
    wiring.unwrap_or(0)
}

/// What `start` did: CPU records written (the BSP's included) and processors started that did not
/// check in in time.
pub struct Started {
    pub count: u64,
    #[cfg_attr(feature = "limine", allow(dead_code))] // highboot's boot info only
    pub failed: u32,
}
