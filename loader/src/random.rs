//! Randomness for KASLR: EFI_RNG_PROTOCOL when the firmware has one, RDRAND otherwise, and the
//! TSC as a last, weak resort (reported as such in the boot info).

use core::ffi::c_void;
use core::ptr;

use r_efi::efi;
use r_efi::protocols::rng;

#[derive(Clone, Copy, PartialEq)]
pub enum Source {
    RngProtocol,
    Rdrand,
    Tsc,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::RngProtocol => "EFI_RNG_PROTOCOL",
            Source::Rdrand => "RDRAND",
            Source::Tsc => "the TSC (weak: no EFI_RNG_PROTOCOL, no RDRAND)",
        }
    }
}

fn from_protocol(bs: &efi::BootServices) -> Option<[u64; 2]> {
    let mut out = [0u64; 2];
    // SAFETY: LocateProtocol with an out-pointer; GetRNG writes 16 bytes into `out`.
    unsafe {
        let mut proto: *mut c_void = ptr::null_mut();
        let guid = rng::PROTOCOL_GUID;
        if (bs.locate_protocol)(&guid as *const _ as *mut _, ptr::null_mut(), &mut proto).is_error() || proto.is_null()
        {
            return None;
        }
        let proto = proto as *mut rng::Protocol;
        let status = ((*proto).get_rng)(proto, ptr::null_mut(), 16, out.as_mut_ptr() as *mut u8);
        if status.is_error() {
            return None;
        }
    }
    Some(out)
}

fn rdrand() -> Option<u64> {
    if core::arch::x86_64::__cpuid(1).ecx & crate::cpu::cpuid::RDRAND == 0 {
        return None;
    }
    // The SDM recommends retrying a few times on a transient underflow (CF = 0).
    for _ in 0..32 {
        let (value, ok): (u64, u8);
        // SAFETY: RDRAND exists (CPUID.1:ECX[30]) and only writes its operands.
        unsafe { core::arch::asm!("rdrand {}", "setc {}", out(reg) value, out(reg_byte) ok, options(nomem, nostack)) };
        if ok != 0 {
            return Some(value);
        }
    }
    None
}

/// Two random words and where they came from.
pub fn words(bs: &efi::BootServices) -> ([u64; 2], Source) {
    if let Some(w) = from_protocol(bs) {
        return (w, Source::RngProtocol);
    }
    if let (Some(a), Some(b)) = (rdrand(), rdrand()) {
        return ([a, b], Source::Rdrand);
    }
    // A weak fallback: the TSC's low bits, mixed (splitmix64 finaliser).
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let t = crate::cpu::rdtsc();
    ([mix(t), mix(t ^ 0x9e37_79b9_7f4a_7c15)], Source::Tsc)
}

/// A uniform choice in 0..n (n > 0), from a 64-bit random word (bias below 2^-40 for n < 2^24).
pub fn below(word: u64, n: u64) -> u64 {
    ((word as u128 * n as u128) >> 64) as u64
}

/// Fill `out` with random words, from the best source there is (as `words`).
#[cfg_attr(not(feature = "limine"), allow(dead_code))]
pub fn fill(bs: &efi::BootServices, out: &mut [u64]) {
    for chunk in out.chunks_mut(2) {
        let (w, _) = words(bs);
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
}
