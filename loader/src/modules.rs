//! Modules: the files the build listed (plan::options::MODULES), each read into its own pages, verified
//! and handed to the kernel in kernel-owned memory. Before ExitBootServices a failure frees every
//! module read so far: nothing is handed over half-loaded.

use r_efi::efi;

use crate::console::println;
use crate::failure::{fail, Result};
use crate::firmware::{EspFile, Pages, Volume};
use crate::paging::PAGE;
use crate::rendered::plan;
use crate::verity;

/// Where each module was read to: (physical base, pages), (0, 0) for an empty module. The table
/// lives in pages of its own (a build may list thousands of modules; the stack is small).
pub struct Modules {
    bs: *const efi::BootServices,
    table: Option<Pages>,
    /// Entries of the table filled so far (the rest of its pages is not ours to read).
    loaded: usize,
}

impl Modules {
    /// Read and verify every module, in order.
    pub fn load(bs: &efi::BootServices, volume: &Volume, engine: verity::Engine) -> Result<Modules> {
        let mut modules = Modules { bs, table: None, loaded: 0 };
        if plan::options::MODULES.is_empty() {
            return Ok(modules);
        }
        let total: u64 = plan::options::MODULES.iter().map(|m| m.size).sum();
        println!("highboot: loading {} module(s), {} bytes", plan::options::MODULES.len(), total);
        let bytes = plan::options::MODULES.len() * core::mem::size_of::<(u64, u64)>();
        modules.table = match Pages::allocate(bs, efi::LOADER_DATA, None, (bytes as u64).div_ceil(PAGE)) {
            Ok(pages) => Some(pages),
            Err(status) => {
                return fail!(status, "not enough memory for the list of {} modules", plan::options::MODULES.len())
            }
        };
        for (i, m) in plan::options::MODULES.iter().enumerate() {
            let what = EspFile {
                kind: "module",
                name: Some(m.name),
                path: m.path,
                path_text: m.path_text,
                size: m.size,
                digest: &m.digest,
            };
            let read = volume.read_verified(bs, what, engine)?;
            // The table owns the pages from here on (freed by Modules::drop on failure).
            let entry = read.map_or((0, 0), |(pages, _)| {
                let count = pages.count;
                (pages.keep(), count)
            });
            // SAFETY: the table holds one entry per module; i is in range.
            unsafe { *modules.entries_mut().add(i) = entry };
            modules.loaded = i + 1;
        }
        Ok(modules)
    }

    fn entries_mut(&mut self) -> *mut (u64, u64) {
        self.table.as_ref().map_or(core::ptr::null_mut(), |t| t.base as *mut (u64, u64))
    }

    /// Module `i`'s (physical base, pages); (0, 0) for an empty one.
    pub fn get(&self, i: usize) -> (u64, u64) {
        match &self.table {
            // SAFETY: load() filled the first `loaded` entries.
            Some(t) if i < self.loaded => unsafe { *(t.base as *const (u64, u64)).add(i) },
            _ => (0, 0),
        }
    }
}

impl Drop for Modules {
    /// Only on a failure before ExitBootServices (after it nothing returns): give the pages back.
    fn drop(&mut self) {
        for i in 0..self.loaded {
            let (base, pages) = self.get(i);
            if pages > 0 {
                // SAFETY: boot services are up (see above) and the pages are ours.
                unsafe { ((*self.bs).free_pages)(base, pages as usize) };
            }
        }
    }
}

/// Kernel memory outside the block: the kernel file (when kept) and the modules.
pub struct Handed<'a> {
    /// The kernel file's (physical base, pages), when the plan keeps it.
    pub kernel_file: Option<(u64, u64)>,
    pub modules: &'a Modules,
}

impl Handed<'_> {
    /// How many ranges `ranges` yields at most.
    pub fn count(&self) -> usize {
        plan::options::MODULES.len() + 1
    }

    #[cfg_attr(feature = "limine", allow(dead_code))] // highboot's boot info only
    /// Each range: (physical base, bytes in whole pages); empty modules give (0, 0).
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let modules = (0..plan::options::MODULES.len()).map(|i| self.modules.get(i));
        self.kernel_file.into_iter().chain(modules).map(|(base, pages)| (base, pages * PAGE))
    }
}
