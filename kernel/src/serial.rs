//! COM1 output and the isa-debug-exit port QEMU tests use to end a boot with a status.

use core::fmt::{self, Write};

const COM1: u16 = 0x3f8;
const DEBUG_EXIT: u16 = 0xf4;

pub struct Serial;

unsafe fn outb(port: u16, value: u8) {
    core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags));
}

unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    core::arch::asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags));
    value
}

fn byte(b: u8) {
    // SAFETY: COM1 is the standard PC serial port; wait until it can take a byte.
    unsafe {
        for _ in 0..100_000 {
            if inb(COM1 + 5) & 0x20 != 0 {
                break;
            }
        }
        outb(COM1, b);
    }
}

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                byte(b'\r');
            }
            byte(b);
        }
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
pub fn debug_exit(code: u32) -> ! {
    // SAFETY: writing to the isa-debug-exit port; harmless where no such device exists.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") DEBUG_EXIT, in("eax") code, options(nomem, nostack));
        loop {
            core::arch::asm!("cli; hlt", options(nomem, nostack));
        }
    }
}
