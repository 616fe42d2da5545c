//! What the benchmark's UEFI apps share: COM1 output, QEMU's isa-debug-exit and fw_cfg.
//!
//! Everything goes straight to the ports, not through the firmware, so the floor app costs
//! nothing but its own few instructions and a report looks like the sample kernel's
//! (`INFO tsc_kernel=<n>`, read by highboot.bootcheck.parse_report).
#![no_std]

use core::arch::asm;

const COM1: u16 = 0x3f8;
const COM1_LINE_STATUS: u16 = COM1 + 5;
const TRANSMIT_EMPTY: u8 = 0x20;
/// isa-debug-exit as highboot's QEMU command line places it (site_scons/highboot/booting/qemu.py).
const DEBUG_EXIT: u16 = 0xf4;
/// QEMU then exits with (v << 1) | 1: 33 and 35, the tests' PASS_STATUS
/// and FAIL_STATUS (site_scons/testkit/report.py).
pub const EXIT_PASS: u32 = 0x10;
pub const EXIT_FAIL: u32 = 0x11;
const FW_CFG_SELECTOR: u16 = 0x510;
const FW_CFG_DATA: u16 = 0x511;
const FW_CFG_FILE_DIR: u16 = 0x19;

unsafe fn outb(port: u16, value: u8) {
    asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags));
}

unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags));
    value
}

pub fn write_bytes(bytes: &[u8]) {
    for &b in bytes {
        // SAFETY: COM1 as every PC (and QEMU's q35) has it; the firmware has set it up.
        unsafe {
            while inb(COM1_LINE_STATUS) & TRANSMIT_EMPTY == 0 {}
            outb(COM1, b);
        }
    }
}

pub fn write_u64(mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    write_bytes(&digits[i..]);
}

/// `INFO <key>=<n>` on its own line.
pub fn report(key: &[u8], value: u64) {
    write_bytes(b"\r\nINFO ");
    write_bytes(key);
    write_bytes(b"=");
    write_u64(value);
    write_bytes(b"\r\n");
}

pub fn exit_qemu(code: u32) -> ! {
    // SAFETY: the isa-debug-exit port; where there is none, the write is ignored and we halt.
    unsafe {
        asm!("out dx, eax", in("dx") DEBUG_EXIT, in("eax") code, options(nomem, nostack));
        loop {
            asm!("cli; hlt", options(nomem, nostack));
        }
    }
}

/// The contents of QEMU's fw_cfg file `name` (`-fw_cfg name=...,string=...`) as far as it fits
/// in buf; None when there is no such file.
pub fn fw_cfg_file<'a>(name: &[u8], buf: &'a mut [u8]) -> Option<&'a [u8]> {
    // SAFETY: the fw_cfg I/O ports of QEMU's PC machines; a select followed by byte reads.
    unsafe {
        asm!("out dx, ax", in("dx") FW_CFG_SELECTOR, in("ax") FW_CFG_FILE_DIR, options(nomem, nostack));
        let mut word = [0u8; 4];
        read_data(&mut word);
        let count = u32::from_be_bytes(word);
        for _ in 0..count {
            // struct FWCfgFile: be32 size, be16 select, be16 reserved, char name[56]
            let mut entry = [0u8; 64];
            read_data(&mut entry);
            let size = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]) as usize;
            let select = u16::from_be_bytes([entry[4], entry[5]]);
            let entry_name = &entry[8..];
            let len = entry_name.iter().position(|&c| c == 0).unwrap_or(entry_name.len());
            if &entry_name[..len] == name {
                asm!("out dx, ax", in("dx") FW_CFG_SELECTOR, in("ax") select, options(nomem, nostack));
                let n = size.min(buf.len());
                read_data(&mut buf[..n]);
                return Some(&buf[..n]);
            }
        }
    }
    None
}

unsafe fn read_data(out: &mut [u8]) {
    for b in out {
        *b = inb(FW_CFG_DATA);
    }
}

pub fn parse_u64(text: &[u8]) -> Option<u64> {
    let mut n: u64 = 0;
    let mut any = false;
    for &c in text {
        match c {
            b'0'..=b'9' => {
                n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
                any = true;
            }
            b' ' | b'\n' | b'\r' | 0 => {}
            _ => return None,
        }
    }
    any.then_some(n)
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    write_bytes(b"\r\nhighboot-bench-efi: panic\r\n");
    exit_qemu(EXIT_FAIL)
}
