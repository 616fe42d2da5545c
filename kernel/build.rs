//! Links the kernel with the linker script highboot rendered for the chosen layout.

fn main() {
    println!("cargo:rerun-if-env-changed=HIGHBOOT_LINKER_SCRIPT");
    println!("cargo:rerun-if-env-changed=HIGHBOOT_GEN");
    println!("cargo:rerun-if-env-changed=HIGHBOOT_LINK_BASE");
    if let Ok(script) = std::env::var("HIGHBOOT_LINKER_SCRIPT") {
        println!("cargo:rerun-if-changed={script}");
        println!("cargo:rustc-link-arg-bins=-T{script}");
    }
}
