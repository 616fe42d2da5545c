"""The loader's own binary contracts between Rust and assembly, described once: the Handoff record
the trampoline reads, the trampoline data in the trampoline page, the descriptor-table registers (the
kernel's GDT and selectors belong to the boot protocol: highboot/protocols).

Rendered to templates/loader/abi.rs.j2 (Rust: the Handoff struct, offsets) and
templates/loader/abi.S.j2 (`.set` symbols the trampoline uses instead of numbers), so that a
field moved here moves in both, and a test compares the two views field by field.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Word:
    """One u64 of a record: its name in Rust and, upper-cased with a prefix, in assembly."""

    name: str
    doc: str


#: What the trampoline reads before it switches CR3 (loader/src/main.rs fills it).
HANDOFF = (
    Word("cr3", "the kernel's root table (physical)"),
    Word("trampoline_va", "the trampoline page's higher-half alias"),
    Word("identity_slot_va", "VA (direct map) of the root entry that identity-maps the trampoline page (0: kept)"),
    Word("descriptors_va", "VA of the GDTR, with the IDTR 16 bytes after it"),
    Word("stack_top", "the kernel's stack top"),
    Word("entry", "the kernel's entry point"),
    Word("boot_info_va", "the boot info (RDI at entry)"),
    Word("transition_root", "0, or the transition root below 4 GiB when the paging mode changes (tdata.rs)"),
    Word("cr4_la57", "CR4.LA57 as the kernel wants it (0 or 1 << 12)"),
    Word("saved_rsp", "highboot_set_paging only: the caller's RSP"),
    Word("saved_cs", "highboot_set_paging only: the caller's CS"),
    Word("pat", "IA32_PAT as the protocol wants it before the kernel's tables go live, or 0: as it is"),
)

#: The trampoline data at highboot_trampoline_data in the trampoline page (a copy below 4 GiB runs it):
#: byte offsets of its parts. The GDT is null, 32-bit code (0x08), 64-bit code (0x10), flat 32-bit
#: data (0x18, for the APs' protected-mode step).
TDATA_OFFSET = 0xE00  # where the trampoline data starts in the trampoline page (16-bit code needs a number)
TDATA_GDT = 0
TDATA_GDT_ENTRIES = (0, 0x00CF9B000000FFFF, 0x00AF9B000000FFFF, 0x00CF93000000FFFF)
TDATA_GDTR = 32  # limit (u16), then the base (u64): the loader writes the base
TDATA_GDTR_BASE = TDATA_GDTR + 2
TDATA_FAR32 = 48  # far pointer (u32 offset, u16 selector) to the 32-bit code; the loader writes the offset
TDATA_FAR64 = 56  # far pointer back to 64-bit code; the loader writes the offset
TDATA_HANDOFF = 64  # the Handoff copy the mode-changing code reads
TDATA_CODE32_SELECTOR = 0x08
TDATA_CODE64_SELECTOR = 0x10
TDATA_DATA32_SELECTOR = 0x18
#: The APs' start (smp.rs): far pointers to their 32-bit and 64-bit code (the loader writes the
#: offsets), then the ApStart record, all in the trampoline data of the startup page (below 1 MiB).
TDATA_AP_FAR32 = 160
TDATA_AP_FAR64 = 168
TDATA_AP = 176

#: What an AP reads on its way from real mode to its parking place (the loader fills it in the
#: startup page before the first SIPI).
AP_START = (
    Word("cr3", "the kernel's root table (physical)"),
    Word("transition_cr3", "the transition root below 1 MiB: maps only the startup page (identity)"),
    Word("cr0", "CR0 for the AP (paging, protected mode, WP as on the BSP)"),
    Word("cr4", "CR4 for the AP (PAE, LA57 as the layout says, and the BSP's PGE/OSFXSR/OSXMMEXCPT)"),
    Word("efer", "EFER for the AP (LME, NXE when the CPU has NX)"),
    Word("trampoline_va", "the startup page's higher-half alias in the kernel's tables"),
    Word("descriptors_va", "VA of the GDTR and IDTR (as Handoff.descriptors_va)"),
    Word("slots_va", "VA (direct map) of the check-in slots, one per AP started"),
    Word("slot_count", "number of slots"),
    Word("id_leaf", "CPUID leaf that gives an AP its APIC ID: 1 (EBX[31:24]) or 0xb (EDX, x2APIC ID)"),
    Word("pat", "IA32_PAT for the AP (as Handoff.pat), or 0: as the firmware left it"),
    Word("lint_nmi", "Limine revision 5 on: the NMI wiring of LINT0 (low half) and LINT1 (high half), 0: none"),
)

#: One AP's check-in slot (kernel-owned memory in the block's area). The AP finds its slot by APIC
#: ID, moves it from WAITING to ARRIVED (lock cmpxchg: a loader that gave up on it has made it
#: ABANDONED, and the AP then halts), waits for its CPU record, takes its stack, says PARKED and
#: spins on the record's goto_address.
AP_SLOT = (
    Word("apic_id", "the AP's (x2)APIC ID"),
    Word("state", "AP_WAITING, AP_ARRIVED, AP_PARKED or AP_ABANDONED"),
    Word("record", "0, then the VA of the AP's struct highboot_cpu (the loader writes it after ARRIVED)"),
)
AP_WAITING = 0
AP_ARRIVED = 1
AP_PARKED = 2
AP_ABANDONED = 3

#: The descriptor-table registers the trampoline loads (at Handoff.descriptors_va, kernel-owned):
#: the GDTR (u16 limit, u64 base) at DESC_GDTR, the IDTR (limit 0, base 0: a null IDT) at
#: DESC_IDTR; DESC_SIZE bytes in all.
DESC_GDTR = 0
DESC_IDTR = 16
DESC_SIZE = 32


def handoff_offset(name: str) -> int:
    return 8 * [w.name for w in HANDOFF].index(name)


def context() -> dict[str, object]:
    """What the loader's ABI templates render from."""
    assert TDATA_HANDOFF + 8 * len(HANDOFF) <= TDATA_AP_FAR32 and TDATA_AP_FAR64 + 8 <= TDATA_AP
    return {
        "handoff": HANDOFF, "handoff_size": 8 * len(HANDOFF),
        "tdata": {"gdt": TDATA_GDT, "gdt_entries": TDATA_GDT_ENTRIES, "gdtr": TDATA_GDTR,
                   "gdtr_base": TDATA_GDTR_BASE, "far32": TDATA_FAR32, "far64": TDATA_FAR64,
                   "handoff": TDATA_HANDOFF, "code32": TDATA_CODE32_SELECTOR, "code64": TDATA_CODE64_SELECTOR,
                   "data32": TDATA_DATA32_SELECTOR, "ap_far32": TDATA_AP_FAR32, "ap_far64": TDATA_AP_FAR64,
                   "ap": TDATA_AP, "offset": TDATA_OFFSET},
        "ap_start": AP_START, "ap_start_size": 8 * len(AP_START), "ap_slot": AP_SLOT, "ap_slot_size": 8 * len(AP_SLOT),
        "ap_states": {"waiting": AP_WAITING, "arrived": AP_ARRIVED, "parked": AP_PARKED, "abandoned": AP_ABANDONED},
        "desc": {"gdtr": DESC_GDTR, "idtr": DESC_IDTR, "size": DESC_SIZE},
    }
