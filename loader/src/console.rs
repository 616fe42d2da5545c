//! Messages for the user: the firmware console (ConOut) before ExitBootServices, the first
//! serial port (COM1) after it, when the firmware no longer owns the port.

use core::fmt::{self, Write};
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use r_efi::efi;
use r_efi::protocols::simple_text_output;

/// Print a line: to the firmware's console before ExitBootServices, to COM1 after it.
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::console::Console, $($arg)*);
    }};
}
pub(crate) use println;

static CON_OUT: AtomicPtr<simple_text_output::Protocol> = AtomicPtr::new(ptr::null_mut());

/// Print through the firmware's console from now on.
pub fn init(st: *mut efi::SystemTable) {
    // SAFETY: the firmware hands us a valid system table.
    let out = unsafe { (*st).con_out };
    CON_OUT.store(out, Ordering::Relaxed);
}

/// Boot services are gone: print to COM1 from now on.
pub fn firmware_gone() {
    CON_OUT.store(ptr::null_mut(), Ordering::Relaxed);
}

pub struct Console;

impl Console {
    fn flush(out: *mut simple_text_output::Protocol, buf: &mut [u16], len: usize) {
        buf[len] = 0;
        // SAFETY: out is the firmware's console and buf is NUL-terminated.
        unsafe {
            ((*out).output_string)(out, buf.as_mut_ptr());
        }
    }
}

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let out = CON_OUT.load(Ordering::Relaxed);
        if out.is_null() {
            crate::com1::write_str(s);
            return Ok(());
        }
        let mut buf = [0u16; 129];
        let mut len = 0;
        for c in s.chars() {
            let mut units = [0u16; 2];
            let encoded: &[u16] = if c == '\n' {
                units = [u16::from(b'\r'), u16::from(b'\n')];
                &units
            } else {
                c.encode_utf16(&mut units)
            };
            if len + encoded.len() >= buf.len() - 1 {
                Self::flush(out, &mut buf, len);
                len = 0;
            }
            for &u in encoded {
                buf[len] = u;
                len += 1;
            }
        }
        if len > 0 {
            Self::flush(out, &mut buf, len);
        }
        Ok(())
    }
}

/// The last error's text, to show again after a SetMode has cleared the screen.
struct LastError(core::cell::UnsafeCell<([u8; 160], usize)>);
// SAFETY: written and read only before ExitBootServices, on the one CPU the loader runs on.
unsafe impl Sync for LastError {}
static LAST_ERROR: LastError = LastError(core::cell::UnsafeCell::new(([0; 160], 0)));

impl Write for &LastError {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // SAFETY: see LastError; no reference to it outlives this call.
        let (buf, len) = unsafe { &mut *self.0.get() };
        // Whole characters only, so that the kept bytes stay UTF-8.
        let mut n = s.len().min(buf.len() - *len);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        buf[*len..*len + n].copy_from_slice(&s.as_bytes()[..n]);
        *len += n;
        Ok(())
    }
}

/// `highboot: error: ...`, kept for `repeat_error`.
pub fn error(args: fmt::Arguments) {
    println!("highboot: error: {}", args);
    // SAFETY: see LastError.
    unsafe { (*LAST_ERROR.0.get()).1 = 0 };
    let _ = (&LAST_ERROR).write_fmt(args);
}

/// The last error again (its first 160 bytes, whole characters).
pub fn repeat_error() {
    // SAFETY: see LastError; write_str keeps whole UTF-8 characters only.
    let text = unsafe {
        let (buf, len) = &*LAST_ERROR.0.get();
        core::str::from_utf8_unchecked(&buf[..*len])
    };
    if !text.is_empty() {
        println!("highboot: error: {}", text);
    }
}
