//! What the build rendered for this boot (from templates/ into its gen/ directory), included once
//! here: the boot plan, the contracts with the trampoline, the boot-info ABI and the trampoline
//! itself. rustc's unused-code warnings are on for all of it: plan.rs and abi.rs hold only what
//! the loader uses; bootinfo.rs, shared with kernels, marks the parts the loader may leave unused.

/// The boot plan (templates/loader/plan.rs.j2): everything that could be known before boot.
pub mod plan {
    include!(concat!(env!("HIGHBOOT_GEN"), "/plan.rs"));
}

/// The Handoff record, trampoline-data offsets and GDT shared with the trampoline (one description:
/// site_scons/highboot/rendering/loader_abi.py).
pub mod abi {
    include!(concat!(env!("HIGHBOOT_GEN"), "/abi.rs"));
}

/// What the boot protocol decides (site_scons/highboot/protocols): memory types, the GDT, which
/// optional steps run.
pub mod protocol {
    include!(concat!(env!("HIGHBOOT_GEN"), "/protocol.rs"));
}

/// The boot info the loader hands the kernel (site_scons/highboot/protocols/bootinfo.py).
pub mod bootinfo {
    include!(concat!(env!("HIGHBOOT_GEN"), "/bootinfo.rs"));
}

// The trampoline page (templates/loader/trampoline.S.j2); paging_mode.rs declares its symbols.
core::arch::global_asm!(include_str!(concat!(env!("HIGHBOOT_GEN"), "/trampoline.S")));
