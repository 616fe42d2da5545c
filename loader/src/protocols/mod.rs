//! The handover, one module per boot protocol: what the kernel finds at entry, filled in the
//! block's area before ExitBootServices and completed after it. What else a protocol decides
//! (memory-map types, the GDT, whether SetVirtualAddressMap runs and the APs are started, RDI at
//! entry) is rendered in `rendered::protocol`; the boot sequence in main.rs is the same for all.

pub mod highboot;
