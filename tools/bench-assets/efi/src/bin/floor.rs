//! The firmware floor: a UEFI app whose first instruction reads the TSC, which it prints
//! (`INFO tsc_kernel=<n>`) before ending QEMU. Booted from the same kind of ESP as highboot,
//! reset to this instruction is what the firmware alone costs.
#![no_std]
#![no_main]

use highboot_bench_efi::{exit_qemu, report, EXIT_PASS};

// efi_main itself is the TSC read: nothing (not even a prologue) runs before it.
core::arch::global_asm!(
    ".globl efi_main",
    "efi_main:",
    "rdtsc",
    "shl rdx, 32",
    "or rax, rdx",
    "mov rcx, rax",
    "sub rsp, 40", // shadow space, and the stack 16-byte aligned at the call
    "call {at_entry}",
    "ud2",
    at_entry = sym at_entry,
);

extern "efiapi" fn at_entry(tsc: u64) -> ! {
    report(b"tsc_kernel", tsc);
    exit_qemu(EXIT_PASS)
}
