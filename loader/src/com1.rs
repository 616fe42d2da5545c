// COM1, the first PC serial port: the one driver for the loader (after ExitBootServices, when the
// firmware no longer owns the port) and the sample kernel (kernel/src/serial.rs includes this
// file, so no inner doc comment here). Each byte waits, boundedly, for the transmit holding
// register; LF goes out as CR LF.

const COM1: u16 = 0x3f8;
const LINE_STATUS: u16 = COM1 + 5;
const TRANSMIT_EMPTY: u8 = 0x20;

unsafe fn outb(port: u16, value: u8) {
    core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags));
}

unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    core::arch::asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags));
    value
}

fn write_byte(byte: u8) {
    // SAFETY: COM1 is the standard PC serial port; reading its status and writing a byte is harmless
    // where there is none (the wait is bounded).
    unsafe {
        for _ in 0..100_000 {
            if inb(LINE_STATUS) & TRANSMIT_EMPTY != 0 {
                break;
            }
        }
        outb(COM1, byte);
    }
}

/// Write text to COM1, LF as CR LF.
pub fn write_str(s: &str) {
    for b in s.bytes() {
        if b == b'\n' {
            write_byte(b'\r');
        }
        write_byte(b);
    }
}
