//! What the CPU and the firmware told us before ExitBootServices, asked once.

use r_efi::efi;

use crate::console::println;
use crate::rendered::bootinfo;
use crate::{cpu, firmware, runtime};

pub struct Machine {
    pub features: cpu::Features,
    /// Clears NX from page-table entries when the CPU has no NX.
    pub nx_mask: u64,
    pub framebuffer: Option<firmware::Framebuffer>,
    /// The ACPI root pointer and its revision (0 when there is none).
    pub rsdp: (u64, u64),
    pub attributes: runtime::Attributes,
    pub st: *mut efi::SystemTable,
    pub tsc_entry: u64,
    /// Where the ACPI tables are (the Limine protocol maps them).
    #[cfg(feature = "limine")]
    pub acpi_tables: crate::acpi::Tables,
}

impl Machine {
    pub fn probe(bs: &efi::BootServices, st: *mut efi::SystemTable, tsc_entry: u64) -> Machine {
        let features = cpu::features();
        let nx_mask = if features.nx { u64::MAX } else { !bootinfo::pte::NO_EXECUTE };
        if !features.nx {
            println!("highboot: warning: this CPU has no NX: no page can be kept from execution");
        }
        let rsdp = firmware::rsdp(st);
        Machine {
            features,
            nx_mask,
            framebuffer: firmware::framebuffer(bs),
            rsdp,
            attributes: runtime::Attributes::read(st),
            st,
            tsc_entry,
            // SAFETY: boot services are up.
            #[cfg(feature = "limine")]
            acpi_tables: unsafe { crate::acpi::Tables::find(rsdp) },
        }
    }
}
