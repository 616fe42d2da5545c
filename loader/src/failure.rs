//! How the loader fails. Before ExitBootServices a step says why (`fail!`) and returns an EFI
//! status: what was allocated is given back as the guards drop, and efi_main returns the status to
//! the boot manager; a panic does the same through Exit(). After ExitBootServices there is nothing
//! to return to: `fatal` says why on COM1 and halts.

use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use r_efi::efi;

use crate::console::println;

/// A failure before ExitBootServices: the message is already printed; return this status.
pub type Result<T> = core::result::Result<T, efi::Status>;

/// Print "highboot: error: ..." and evaluate to Err(status).
macro_rules! fail {
    ($status:expr, $($arg:tt)*) => {{
        $crate::console::error(format_args!($($arg)*));
        Err($status)
    }};
}
pub(crate) use fail;

/// Boot services and our image handle while they may be used: a panic before ExitBootServices
/// returns an EFI error to the boot manager through Exit(), as any other failure does.
static BOOT_SERVICES: AtomicPtr<efi::BootServices> = AtomicPtr::new(ptr::null_mut());
static IMAGE: AtomicPtr<core::ffi::c_void> = AtomicPtr::new(ptr::null_mut());

/// At entry: a panic returns through boot services' Exit() from now on.
pub fn boot_services_up(bs: *mut efi::BootServices, image: efi::Handle) {
    BOOT_SERVICES.store(bs, Ordering::SeqCst);
    IMAGE.store(image, Ordering::SeqCst);
}

/// At ExitBootServices: a panic halts from now on.
pub fn boot_services_gone() {
    BOOT_SERVICES.store(ptr::null_mut(), Ordering::SeqCst);
}

/// A failure after ExitBootServices: nothing to return to; say why on COM1 and stop.
pub fn fatal(message: &str) -> ! {
    println!("highboot: error: {}; halting", message);
    halt()
}

fn halt() -> ! {
    loop {
        // SAFETY: halting is always allowed at CPL 0.
        unsafe { core::arch::asm!("cli; hlt") };
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("highboot: loader bug: {}", info);
    let bs = BOOT_SERVICES.swap(ptr::null_mut(), Ordering::SeqCst);
    if !bs.is_null() {
        println!("highboot: the kernel was not started (EFI status {:#x})", efi::Status::ABORTED.as_usize());
        // SAFETY: boot services are still up (cleared at ExitBootServices) and IMAGE is our handle;
        // Exit() does not return to us: the firmware unwinds to whoever started this image.
        unsafe { ((*bs).exit)(IMAGE.load(Ordering::SeqCst), efi::Status::ABORTED, 0, ptr::null_mut()) };
    }
    halt()
}
