//! COM1 output and the isa-debug-exit port QEMU tests use to end a boot with a status.

use core::fmt::{self, Write};

use crate::report::{Exit, EXIT_PORT};

/// The loader's COM1 driver, the one copy of it.
mod com1 {
    include!("../../loader/src/com1.rs");
}

pub struct Serial;

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        com1::write_str(s);
        Ok(())
    }
}

#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::serial::Serial, $($arg)*);
    }};
}

/// QEMU exits with status (code << 1) | 1; on real hardware, halt.
pub fn debug_exit(code: Exit) -> ! {
    // SAFETY: writing to the isa-debug-exit port; harmless where no such device exists.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") EXIT_PORT, in("eax") code as u32, options(nomem, nostack));
        loop {
            core::arch::asm!("cli; hlt", options(nomem, nostack));
        }
    }
}
