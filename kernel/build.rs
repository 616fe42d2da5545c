//! Links the kernel with the linker script highboot rendered for the chosen layout or, without one,
//! as its toolchain links it by default (ld.lld: a PIE at 0 with its ELF headers loaded). The
//! `toolchain_layout` cfg turns on the checks that only make sense for the latter.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(toolchain_layout)");
    println!("cargo::rerun-if-env-changed=HIGHBOOT_LINKER_SCRIPT");
    println!("cargo::rerun-if-env-changed=HIGHBOOT_GEN");
    println!("cargo::rerun-if-env-changed=HIGHBOOT_LINK_BASE");
    match std::env::var("HIGHBOOT_LINKER_SCRIPT") {
        Ok(script) if !script.is_empty() => {
            println!("cargo::rerun-if-changed={script}");
            println!("cargo::rustc-link-arg-bins=-T{script}");
        }
        _ => println!("cargo::rustc-cfg=toolchain_layout"),
    }
}
