//! Links the kernel with the linker script highboot rendered for the chosen layout.

fn main() {
    println!("cargo:rerun-if-env-changed=HIGHBOOT_LINKER_SCRIPT");
    println!("cargo:rerun-if-env-changed=HIGHBOOT_GEN");
    if let Ok(script) = std::env::var("HIGHBOOT_LINKER_SCRIPT") {
        println!("cargo:rerun-if-changed={script}");
        println!("cargo:rustc-link-arg-bins=-T{script}");
    }
}
