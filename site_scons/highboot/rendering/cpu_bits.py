"""The CPU's control bits the loader and its trampoline read and set, described once: every CPUID
feature, CR0, CR4, XCR0, MSR and EFER bit they name (Intel SDM vol. 2A CPUID; vol. 3A 2.5 control
registers, 2.2.1 EFER, 10.4.4 IA32_APIC_BASE; vol. 1 13.3 XCR0).

Rendered twice from here: Rust modules in abi.rs (templates/loader/abi.rs.j2; loader/src/cpu.rs
re-exports them as ``cpu::cr4::LA57``...), and ``.set`` symbols for the trampoline's assembly
(templates/loader/abi.S.j2): ``CR4_LA57`` (the mask) and ``CR4_LA57_BIT`` (its number, for bts/btr).
A bit the Rust code does not use is rendered for the assembly only (``rust=False``), so rustc's
unused-code warnings stay on for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bit:
    """One bit (``shift``) of a register, or (``shift`` None) a value: a mask of several bits, an MSR's number."""

    name: str
    shift: int | None
    doc: str
    value_: int = 0
    rust: bool = True  # rendered for Rust too (else for the assembly only)

    @property
    def value(self) -> int:
        return self.value_ if self.shift is None else 1 << self.shift


def _value(name: str, value: int, doc: str) -> Bit:
    return Bit(name, None, doc, value)


@dataclass(frozen=True)
class Register:
    """A register's named bits: a Rust module of ``rust_type`` consts, and ``<NAME>_<BIT>`` symbols."""

    name: str
    rust_type: str
    doc: str
    bits: tuple[Bit, ...]

    @property
    def rust_bits(self) -> tuple[Bit, ...]:
        return tuple(b for b in self.bits if b.rust)


CPUID = Register("cpuid", "u32", "CPUID feature bits: leaf 8000_0001h EDX, leaf 7 ECX, leaf 1 ECX.", (
    Bit("PDPE1GB", 26, "8000_0001h EDX: 1 GiB pages."),
    Bit("NX", 20, "8000_0001h EDX: no-execute pages (EFER.NXE)."),
    Bit("LA57", 16, "7.0 ECX: 5-level paging (CR4.LA57)."),
    Bit("X2APIC", 21, "1 ECX: x2APIC mode."),
    Bit("XSAVE", 26, "1 ECX: XSAVE/XRSTOR and XCR0."),
    Bit("OSXSAVE", 27, "1 ECX: the OS set CR4.OSXSAVE."),
    Bit("AVX", 28, "1 ECX: AVX."),
    Bit("RDRAND", 30, "1 ECX: RDRAND."),
))
CR0 = Register("cr0", "u64", "CR0 bits.", (
    Bit("PE", 0, "Protected mode."),
    Bit("MP", 1, "WAIT/FWAIT honour TS."),
    Bit("ET", 4, "Extension type (always 1)."),
    Bit("NE", 5, "Native x87 error reporting."),
    Bit("WP", 16, "Write protection at CPL 0: read-only pages stay read-only for the kernel too."),
    Bit("PG", 31, "Paging."),
))
CR4 = Register("cr4", "u64", "CR4 bits.", (
    Bit("PAE", 5, "Physical address extension (long mode needs it)."),
    Bit("PGE", 7, "Global pages."),
    Bit("OSFXSR", 9, "FXSAVE/FXRSTOR and SSE."),
    Bit("OSXMMEXCPT", 10, "SIMD floating-point exceptions."),
    Bit("LA57", 12, "5-level paging (57-bit addresses)."),
    Bit("PCIDE", 17, "Process-context identifiers (must be clear to turn paging off).", rust=False),
    Bit("OSXSAVE", 18, "XSAVE and XCR0."),
))
XCR0 = Register("xcr0", "u64", "XCR0 bits: the register state XSAVE manages and AVX instructions need enabled.", (
    Bit("X87", 0, "x87 state."),
    Bit("SSE", 1, "SSE state (XMM registers)."),
    Bit("AVX", 2, "AVX state (upper halves of the YMM registers)."),
))
MSR = Register("msr", "u32", "Model-specific registers.", (
    _value("APIC_BASE", 0x1B, "IA32_APIC_BASE."),
    _value("X2APIC_ICR", 0x830, "The x2APIC's interrupt command register (one 64-bit write sends an IPI)."),
    _value("EFER", 0xC000_0080, "IA32_EFER."),
    Bit("PAT", None, "IA32_PAT: the page attribute table (the trampoline writes it when a protocol asks).", 0x277,
        rust=False),
))
EFER = Register("efer", "u64", "IA32_EFER bits.", (
    Bit("LME", 8, "Long mode."),
    Bit("NXE", 11, "No-execute pages: bit 63 of an entry is NX (else reserved)."),
))
APIC_BASE = Register("apic_base", "u64", "IA32_APIC_BASE bits.", (
    Bit("X2APIC", 10, "x2APIC mode (with ENABLE)."),
    Bit("ENABLE", 11, "The local APIC is enabled."),
    _value("ADDRESS", 0x000F_FFFF_FFFF_F000, "The xAPIC's registers: a 4 KiB page at this physical address."),
))
REGISTERS = (CPUID, CR0, CR4, XCR0, MSR, EFER, APIC_BASE)


def context() -> dict[str, object]:
    """What abi.rs and abi.S render the bits from."""
    return {"cpu_registers": REGISTERS}
