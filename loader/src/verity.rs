//! The digest the build bakes in and the loader checks: fs-verity's file digest (the Linux
//! kernel's Documentation/filesystems/fsverity.rst; `fsverity digest FILE` prints the same value).
//! A SHA-256 Merkle tree over 4 KiB blocks (the last one zero-padded): each level's hashes packed
//! into 4 KiB blocks and hashed again until one is left, the root; the digest is the SHA-256 of
//! the 256-byte fsverity_descriptor that holds the root and the file's size. An empty file's root
//! is all zeros.
//!
//! The data blocks are independent, so they are hashed several at a time: one block per lane of
//! an AVX2 (8 lanes) or SSE2 (4 lanes) register, or one after another with the SHA extensions
//! (SHA-NI), whichever the CPU has (Engine::detect). The levels above the data are 1/128 of the
//! work and are hashed one block at a time.

use core::arch::x86_64::*;

use crate::sha256::{self, H0, K};

pub const BLOCK: usize = 4096;
const HASHES: usize = BLOCK / 32;
/// Levels of hashes a tree can have: 128^5 blocks of 4 KiB is far beyond any ESP file.
const LEVELS: usize = 6;

/// How the data blocks are hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// One block after another, with sha256::compress: the reference the hosted tests and the
    /// benchmark compare the others with (the loader always has SSE2 at least).
    #[allow(dead_code)]
    Scalar,
    Sse2,
    Avx2,
    ShaNi,
}

/// The CPUID bits the engines need (CPUID.1:ECX, CPUID.(7, 0):EBX) and XCR0's SSE and AVX state
/// bits. This file is also built on its own (tests/test_verity.py, tools/bench), so it names its
/// own rather than cpu.rs's.
const LEAF1_SSSE3: u32 = 1 << 9;
const LEAF1_SSE41: u32 = 1 << 19;
const LEAF1_OSXSAVE: u32 = 1 << 27;
const LEAF1_AVX: u32 = 1 << 28;
const LEAF7_AVX2: u32 = 1 << 5;
const LEAF7_SHA: u32 = 1 << 29;
const XCR0_SSE_AVX: u64 = 0b110;

impl Engine {
    /// The fastest this CPU can run: SHA-NI (with SSSE3 and SSE4.1), else AVX2 when the AVX state
    /// is enabled (CPUID.OSXSAVE and XCR0 bits 1 and 2: see cpu::AvxState), else SSE2 (every x86-64
    /// CPU; UEFI runs with SSE enabled).
    pub fn detect() -> Engine {
        let max = __cpuid(0).eax;
        let leaf1 = __cpuid(1);
        let leaf7 = if max >= 7 { __cpuid_count(7, 0).ebx } else { 0 };
        let has = |bit: u32| leaf1.ecx & bit != 0;
        let (ssse3, sse41, osxsave, avx) = (has(LEAF1_SSSE3), has(LEAF1_SSE41), has(LEAF1_OSXSAVE), has(LEAF1_AVX));
        if leaf7 & LEAF7_SHA != 0 && ssse3 && sse41 {
            return Engine::ShaNi;
        }
        // SAFETY: XGETBV exists when CPUID says the OS (here: the firmware) set CR4.OSXSAVE.
        if osxsave && avx && leaf7 & LEAF7_AVX2 != 0 && unsafe { xcr0() } & XCR0_SSE_AVX == XCR0_SSE_AVX {
            return Engine::Avx2;
        }
        Engine::Sse2
    }

    pub fn name(self) -> &'static str {
        match self {
            Engine::Scalar => "scalar SHA-256",
            Engine::Sse2 => "SSE2 SHA-256, 4 blocks at once",
            Engine::Avx2 => "AVX2 SHA-256, 8 blocks at once",
            Engine::ShaNi => "SHA-NI",
        }
    }

    /// The SHA-256 of each of `blocks` (4 KiB each) into `out`.
    fn hash_blocks(self, blocks: &[&[u8; BLOCK]], out: &mut [[u8; 32]]) {
        match self {
            // SAFETY (each arm): detect() or the caller checked the CPU has the feature.
            Engine::Avx2 => lanes(blocks, out, |b: &[&[u8; BLOCK]; 8], o| unsafe { avx2::hash_4k(b, o) }),
            Engine::Sse2 => lanes(blocks, out, |b: &[&[u8; BLOCK]; 4], o| unsafe { sse2::hash_4k(b, o) }),
            Engine::ShaNi => lanes(blocks, out, |b: &[&[u8; BLOCK]; 2], o| unsafe { shani::hash_4k_n(b, o) }),
            Engine::Scalar => {
                for (b, o) in blocks.iter().zip(out) {
                    *o = hash_4k_scalar(b);
                }
            }
        }
    }
}

#[target_feature(enable = "xsave")]
unsafe fn xcr0() -> u64 {
    _xgetbv(0)
}

/// `blocks` through an N-lane function, N at a time (a short last group repeats its first block
/// in the spare lanes and drops their results).
fn lanes<const N: usize>(
    blocks: &[&[u8; BLOCK]],
    out: &mut [[u8; 32]],
    f: impl Fn(&[&[u8; BLOCK]; N], &mut [[u8; 32]; N]),
) {
    for (group, results) in blocks.chunks(N).zip(out.chunks_mut(N)) {
        let lanes: [&[u8; BLOCK]; N] = core::array::from_fn(|i| group[i.min(group.len() - 1)]);
        let mut hashes = [[0u8; 32]; N];
        f(&lanes, &mut hashes);
        results.copy_from_slice(&hashes[..results.len()]);
    }
}

/// The SHA-256 of one 4 KiB block, scalar.
fn hash_4k_scalar(block: &[u8; BLOCK]) -> [u8; 32] {
    let mut state = H0;
    for chunk in block.chunks_exact(64) {
        sha256::compress(&mut state, chunk.try_into().unwrap());
    }
    sha256::compress(&mut state, &PAD_4K);
    sha256::bytes(&state)
}

/// The last chunk of every 4 KiB message: the 0x80 byte, zeros, the length (32768 bits).
const PAD_4K: [u8; 64] = {
    let mut pad = [0u8; 64];
    pad[0] = 0x80;
    pad[62] = 0x80;
    pad
};

/// The fs-verity digest of `data`, its blocks hashed by `engine` (the one-shot form the hosted
/// tests and tools/bench use; the loader feeds Digest as it reads).
#[allow(dead_code)]
pub fn digest(data: &[u8], engine: Engine) -> [u8; 32] {
    let mut d = Digest::new(engine);
    d.update(data);
    d.finish()
}

/// The fs-verity digest of a file fed in pieces as it is read, each hashed while it is fresh:
/// every piece but the last a whole number of 4 KiB blocks. The Merkle tree is built as the data
/// blocks are hashed: each level keeps one 4 KiB block of hashes, hashed into the level above
/// when it is full.
pub struct Digest {
    tree: Tree,
    engine: Engine,
    len: u64,
}

impl Digest {
    pub fn new(engine: Engine) -> Digest {
        Digest { tree: Tree { levels: [[0; BLOCK]; LEVELS], fill: [0; LEVELS] }, engine, len: 0 }
    }

    /// The next piece of the file (a partial block only at the very end).
    pub fn update(&mut self, data: &[u8]) {
        debug_assert!(self.len % BLOCK as u64 == 0, "only the last piece may end in a partial block");
        self.len += data.len() as u64;
        // Groups of 32 full blocks (a multiple of every engine's lanes), then a last partial
        // block, zero-padded.
        const GROUP: usize = 32;
        let mut hashes = [[0u8; 32]; GROUP];
        let full = data.len() / BLOCK;
        for group in data[..full * BLOCK].chunks(GROUP * BLOCK) {
            let blocks: [&[u8; BLOCK]; GROUP] = core::array::from_fn(|i| {
                // Past the group's end: its first block again (not hashed; no 4 KiB of zeros kept).
                group.get(i * BLOCK..(i + 1) * BLOCK).unwrap_or(&group[..BLOCK]).try_into().unwrap()
            });
            let n = group.len() / BLOCK;
            self.engine.hash_blocks(&blocks[..n], &mut hashes[..n]);
            for hash in &hashes[..n] {
                self.tree.push(0, hash, self.engine);
            }
        }
        let rest = &data[full * BLOCK..];
        if !rest.is_empty() {
            let mut last = [0u8; BLOCK];
            last[..rest.len()].copy_from_slice(rest);
            self.tree.push(0, &hash_one(&last, self.engine), self.engine);
        }
    }

    pub fn finish(mut self) -> [u8; 32] {
        let mut descriptor = [0u8; 256];
        descriptor[0] = 1; // version
        descriptor[1] = 1; // FS_VERITY_HASH_ALG_SHA256
        descriptor[2] = 12; // log2 of the block size
        descriptor[8..16].copy_from_slice(&self.len.to_le_bytes());
        if self.len > 0 {
            descriptor[16..48].copy_from_slice(&self.root());
        }
        sha256::digest(&descriptor)
    }

    /// Flush the partial blocks upwards until a level holds the one hash that is the root.
    fn root(&mut self) -> [u8; 32] {
        let tree = &mut self.tree;
        let mut count = self.len.div_ceil(BLOCK as u64);
        let mut level = 0;
        while count > 1 {
            if tree.fill[level] > 0 {
                tree.levels[level][tree.fill[level] * 32..].fill(0);
                let hash = hash_one(&tree.levels[level], self.engine);
                tree.fill[level] = 0;
                tree.push(level + 1, &hash, self.engine);
            }
            count = count.div_ceil(HASHES as u64);
            level += 1;
        }
        tree.levels[level][..32].try_into().unwrap()
    }
}

struct Tree {
    levels: [[u8; BLOCK]; LEVELS],
    /// Hashes in each level's current block.
    fill: [usize; LEVELS],
}

impl Tree {
    fn push(&mut self, level: usize, hash: &[u8; 32], engine: Engine) {
        let at = self.fill[level] * 32;
        self.levels[level][at..at + 32].copy_from_slice(hash);
        self.fill[level] += 1;
        if self.fill[level] == HASHES {
            let up = hash_one(&self.levels[level], engine);
            self.fill[level] = 0;
            self.push(level + 1, &up, engine);
        }
    }
}

fn hash_one(block: &[u8; BLOCK], engine: Engine) -> [u8; 32] {
    let mut out = [[0u8; 32]; 1];
    engine.hash_blocks(&[block], &mut out);
    out[0]
}

/// K[t] in every lane of an N-lane vector: one aligned load per round's constant.
#[repr(C, align(32))]
struct Lanes<const N: usize>([[u32; N]; 64]);

const fn broadcast_k<const N: usize>() -> Lanes<N> {
    let mut out = [[0u32; N]; 64];
    let mut t = 0;
    while t < 64 {
        out[t] = [K[t]; N];
        t += 1;
    }
    Lanes(out)
}

static K4: Lanes<4> = broadcast_k();

/// W[t] of the chunk every 4 KiB message ends with (PAD_4K): the same for every block.
static PAD_W: [u32; 64] = {
    let mut w = [0u32; 64];
    let mut t = 0;
    while t < 64 {
        w[t] = if t < 16 {
            u32::from_be_bytes([PAD_4K[4 * t], PAD_4K[4 * t + 1], PAD_4K[4 * t + 2], PAD_4K[4 * t + 3]])
        } else {
            let (x, y) = (w[t - 15], w[t - 2]);
            let s0 = x.rotate_right(7) ^ x.rotate_right(18) ^ (x >> 3);
            let s1 = y.rotate_right(17) ^ y.rotate_right(19) ^ (y >> 10);
            w[t - 16].wrapping_add(s0).wrapping_add(w[t - 7]).wrapping_add(s1)
        };
        t += 1;
    }
    w
};

/// SHA-256 of one 4 KiB block per lane of a vector register: the rounds of sha256::compress on
/// every lane at once, written for few instructions (SSE2 has no rotate and two-operand forms):
/// the three rotations of each sigma as two shift chains, x>>a ^ x>>b ^ x>>c = ((x>>(c-b) ^ x)
/// >>(b-a) ^ x)>>a and the same to the left (6 shifts, 5 XORs, 2 copies, where rotations take
/// 6 shifts, 3 ORs, 2 XORs and 6 copies); Maj as ((a^b) & (b^c)) ^ b, whose b^c is the last
/// round's a^b; W[t] + K[t] stored by the schedule; eight rounds unrolled, so the state never
/// moves between registers.
macro_rules! sha256_lanes {
    ($name:ident, $feature:literal, $lanes:literal, $v:ty, $add:ident, $xor:ident, $and:ident,
     $srli:ident, $slli:ident, $set1:ident, $loadu:ident, $storeu:ident) => {
        pub mod $name {
            use super::*;

            /// x>>a ^ x>>b ^ x>>c (a < b < c) and x<<d ^ x<<e ^ x<<f (d < e < f), XORed.
            macro_rules! sigma3 {
                ($x:expr, $r1:literal, $r2:literal, $r3:literal, $l1:literal, $l2:literal, $l3:literal) => {{
                    let x = $x;
                    let r = $srli::<$r1>($xor($srli::<$r2>($xor($srli::<$r3>(x), x)), x));
                    let l = $slli::<$l1>($xor($slli::<$l2>($xor($slli::<$l3>(x), x)), x));
                    $xor(r, l)
                }};
            }

            /// One round; `h` becomes the new a, `d` the new e; `ab` carries a^b to the next round.
            macro_rules! round {
                ($a:ident, $b:ident, $c:ident, $d:ident, $e:ident, $f:ident, $g:ident, $h:ident, $bc:ident,
                 $kw:expr) => {
                    // Σ1(e) = e>>>6 ^ e>>>11 ^ e>>>25
                    let s1 = sigma3!($e, 6, 5, 14, 7, 14, 5);
                    let ch = $xor($g, $and($e, $xor($f, $g)));
                    $h = $add($add($h, $kw), $add(s1, ch));
                    $d = $add($d, $h);
                    // Σ0(a) = a>>>2 ^ a>>>13 ^ a>>>22
                    let s0 = sigma3!($a, 2, 11, 9, 10, 9, 11);
                    let ab = $xor($a, $b);
                    let maj = $xor($and(ab, $bc), $b);
                    $bc = ab;
                    $h = $add($h, $add(s0, maj));
                };
            }

            /// 64 rounds on `state` with W[t] + K[t] from `kw`.
            macro_rules! rounds {
                ($state:ident, $kw:expr) => {{
                    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = $state;
                    let mut bc = $xor(b, c);
                    let mut t = 0;
                    while t < 64 {
                        round!(a, b, c, d, e, f, g, h, bc, $kw[t]);
                        round!(h, a, b, c, d, e, f, g, bc, $kw[t + 1]);
                        round!(g, h, a, b, c, d, e, f, bc, $kw[t + 2]);
                        round!(f, g, h, a, b, c, d, e, bc, $kw[t + 3]);
                        round!(e, f, g, h, a, b, c, d, bc, $kw[t + 4]);
                        round!(d, e, f, g, h, a, b, c, bc, $kw[t + 5]);
                        round!(c, d, e, f, g, h, a, b, bc, $kw[t + 6]);
                        round!(b, c, d, e, f, g, h, a, bc, $kw[t + 7]);
                        t += 8;
                    }
                    let v = [a, b, c, d, e, f, g, h];
                    // Indexed, not zipped: a vector passed by value through an iterator's
                    // (featureless) functions cannot be lowered on the soft-float target.
                    for i in 0..8 {
                        $state[i] = $add($state[i], v[i]);
                    }
                }};
            }

            #[target_feature(enable = $feature)]
            pub unsafe fn hash_4k(blocks: &[&[u8; BLOCK]; $lanes], out: &mut [[u8; 32]; $lanes]) {
                // No closures here: they would not inherit the target feature (vectors without
                // SSE cannot be lowered on the soft-float UEFI target).
                let zero = $set1(0);
                let mut state: [$v; 8] = [zero; 8];
                for (s, h) in state.iter_mut().zip(H0) {
                    *s = $set1(h as i32);
                }
                let mut w: [$v; 16] = [zero; 16];
                let mut kw: [$v; 64] = [zero; 64];
                // The 64 data chunks, then the padding chunk (its schedule computed at build time):
                // one copy of the rounds.
                for chunk in 0..=BLOCK / 64 {
                    if chunk == BLOCK / 64 {
                        for t in 0..64 {
                            kw[t] = $add($set1(PAD_W[t] as i32), $set1(K[t] as i32));
                        }
                    } else {
                        for t in 0..16 {
                            let mut words = [0u32; $lanes];
                            for (word, block) in words.iter_mut().zip(blocks) {
                                let at = chunk * 64 + t * 4;
                                *word =
                                    u32::from_be_bytes([block[at], block[at + 1], block[at + 2], block[at + 3]]);
                            }
                            w[t] = $loadu(words.as_ptr() as *const $v);
                            kw[t] = $add(w[t], $set1(K[t] as i32));
                        }
                        // The schedule in a 16-word ring: W[t] replaces W[t - 16].
                        for t in 16..64 {
                            // σ0(x) = x>>>7 ^ x>>>18 ^ x>>3, σ1(y) = y>>>17 ^ y>>>19 ^ y>>10
                            let x = w[(t + 1) & 15];
                            let s0 = $xor(
                                $srli::<3>($xor($srli::<4>($xor($srli::<11>(x), x)), x)),
                                $slli::<14>($xor($slli::<11>(x), x)),
                            );
                            let y = w[(t + 14) & 15];
                            let s1 = $xor(
                                $srli::<10>($xor($srli::<7>($xor($srli::<2>(y), y)), y)),
                                $slli::<13>($xor($slli::<2>(y), y)),
                            );
                            let next = $add($add(w[t & 15], s0), $add(w[(t + 9) & 15], s1));
                            w[t & 15] = next;
                            kw[t] = $add(next, $set1(K[t] as i32));
                        }
                    }
                    rounds!(state, kw);
                }
                for (i, s) in state.iter().enumerate() {
                    let mut words = [0u32; $lanes];
                    $storeu(words.as_mut_ptr() as *mut $v, *s);
                    for (hash, word) in out.iter_mut().zip(words) {
                        hash[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
                    }
                }
            }
        }
    };
}

/// SSE2, 4 lanes: the rounds and the schedule as inline assembly, so that the instruction count
/// is what is written here (the compiler distributes the sigma shift chains back into separate
/// shifts, which costs copies in two-operand SSE2). Under QEMU's TCG every instruction counts:
/// this is the engine of `-cpu qemu64`.
pub mod sse2 {
    use super::*;
    use core::arch::asm;

    /// Rounds t..t+8 of one group: `w` and `k` point at W[t] and K[t] (4 lanes each).
    macro_rules! round {
        ($a:ident, $b:ident, $c:ident, $d:ident, $e:ident, $f:ident, $g:ident, $h:ident, $bc:ident, $w:ident,
         $k:ident, $off:literal) => {
            let ab: __m128i;
            asm!(
                // Σ1(e) = e>>>6 ^ e>>>11 ^ e>>>25, as ((e>>14 ^ e)>>5 ^ e)>>6 ^ ((e<<5 ^ e)<<14 ^ e)<<7
                "movdqa {r}, {e}", "psrld {r}, 14", "pxor {r}, {e}", "psrld {r}, 5", "pxor {r}, {e}", "psrld {r}, 6",
                "movdqa {l}, {e}", "pslld {l}, 5", "pxor {l}, {e}", "pslld {l}, 14", "pxor {l}, {e}", "pslld {l}, 7",
                "pxor {r}, {l}",
                "paddd {h}, {r}",
                // Ch(e, f, g) = g ^ (e & (f ^ g))
                "movdqa {l}, {f}", "pxor {l}, {g}", "pand {l}, {e}", "pxor {l}, {g}",
                "paddd {h}, {l}",
                "paddd {h}, xmmword ptr [{w} + {off}]",
                "paddd {h}, xmmword ptr [{k} + {off}]",
                "paddd {d}, {h}",
                // Σ0(a) = a>>>2 ^ a>>>13 ^ a>>>22, as ((a>>9 ^ a)>>11 ^ a)>>2 ^ ((a<<11 ^ a)<<9 ^ a)<<10
                "movdqa {r}, {a}", "psrld {r}, 9", "pxor {r}, {a}", "psrld {r}, 11", "pxor {r}, {a}", "psrld {r}, 2",
                "movdqa {l}, {a}", "pslld {l}, 11", "pxor {l}, {a}", "pslld {l}, 9", "pxor {l}, {a}", "pslld {l}, 10",
                "pxor {r}, {l}",
                "paddd {h}, {r}",
                // Maj(a, b, c) = ((a ^ b) & (b ^ c)) ^ b; this round's a ^ b is the next one's b ^ c
                "movdqa {ab}, {a}", "pxor {ab}, {b}", "pand {bc}, {ab}", "pxor {bc}, {b}",
                "paddd {h}, {bc}",
                a = in(xmm_reg) $a, b = in(xmm_reg) $b, e = in(xmm_reg) $e, f = in(xmm_reg) $f, g = in(xmm_reg) $g,
                h = inout(xmm_reg) $h, d = inout(xmm_reg) $d, bc = inout(xmm_reg) $bc => _, ab = out(xmm_reg) ab,
                r = out(xmm_reg) _, l = out(xmm_reg) _, w = in(reg) $w, k = in(reg) $k, off = const $off * 16,
                options(pure, readonly, nostack, preserves_flags),
            );
            $bc = ab;
            let _ = $c;
        };
    }

    /// W[t] for t in 16..64: σ0(W[t-15]) + σ1(W[t-2]) + W[t-16] + W[t-7], `w` pointing at W[t-16].
    macro_rules! schedule {
        ($w:expr) => {
            asm!(
                // σ0(x) = x>>>7 ^ x>>>18 ^ x>>3, as ((x>>11 ^ x)>>4 ^ x)>>3 ^ (x<<11 ^ x)<<14
                "movdqa {x}, xmmword ptr [{w} + 16]",
                "movdqa {r}, {x}", "psrld {r}, 11", "pxor {r}, {x}", "psrld {r}, 4", "pxor {r}, {x}", "psrld {r}, 3",
                "movdqa {l}, {x}", "pslld {l}, 11", "pxor {l}, {x}", "pslld {l}, 14", "pxor {r}, {l}",
                // σ1(y) = y>>>17 ^ y>>>19 ^ y>>10, as ((y>>2 ^ y)>>7 ^ y)>>10 ^ (y<<2 ^ y)<<13
                "movdqa {x}, xmmword ptr [{w} + 14 * 16]",
                "movdqa {s}, {x}", "psrld {s}, 2", "pxor {s}, {x}", "psrld {s}, 7", "pxor {s}, {x}", "psrld {s}, 10",
                "movdqa {l}, {x}", "pslld {l}, 2", "pxor {l}, {x}", "pslld {l}, 13", "pxor {s}, {l}",
                "paddd {r}, {s}",
                "paddd {r}, xmmword ptr [{w}]",
                "paddd {r}, xmmword ptr [{w} + 9 * 16]",
                "movdqa xmmword ptr [{w} + 16 * 16], {r}",
                w = in(reg) $w, x = out(xmm_reg) _, r = out(xmm_reg) _, s = out(xmm_reg) _, l = out(xmm_reg) _,
                options(nostack, preserves_flags),
            );
        };
    }

    /// Four 32-bit words per lane: bytes swapped to big-endian order (no PSHUFB in SSE2).
    #[target_feature(enable = "sse2")]
    unsafe fn swap_bytes(x: __m128i) -> __m128i {
        let halves = _mm_shufflehi_epi16::<0xb1>(_mm_shufflelo_epi16::<0xb1>(x));
        _mm_or_si128(_mm_slli_epi16::<8>(halves), _mm_srli_epi16::<8>(halves))
    }

    /// One chunk's 64 rounds. Kept out of line and rolled (eight groups of eight rounds): fully
    /// unrolled, the two calls would add some 20 KiB to a loader that stays under 64 KiB.
    #[target_feature(enable = "sse2")]
    #[inline(never)]
    unsafe fn compress(state: &mut [__m128i; 8], w: *const __m128i) {
        let k = K4.0.as_ptr() as *const __m128i;
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
        let mut bc = _mm_xor_si128(b, c);
        // An opaque trip count: the compiler would otherwise unroll all eight groups.
        for group in 0..core::hint::black_box(8) {
            let (w, k) = (w.add(group * 8), k.add(group * 8));
            round!(a, b, c, d, e, f, g, h, bc, w, k, 0);
            round!(h, a, b, c, d, e, f, g, bc, w, k, 1);
            round!(g, h, a, b, c, d, e, f, bc, w, k, 2);
            round!(f, g, h, a, b, c, d, e, bc, w, k, 3);
            round!(e, f, g, h, a, b, c, d, bc, w, k, 4);
            round!(d, e, f, g, h, a, b, c, bc, w, k, 5);
            round!(c, d, e, f, g, h, a, b, bc, w, k, 6);
            round!(b, c, d, e, f, g, h, a, bc, w, k, 7);
        }
        let v = [a, b, c, d, e, f, g, h];
        for i in 0..8 {
            state[i] = _mm_add_epi32(state[i], v[i]);
        }
    }

    #[target_feature(enable = "sse2")]
    pub unsafe fn hash_4k(blocks: &[&[u8; BLOCK]; 4], out: &mut [[u8; 32]; 4]) {
        let mut state = [_mm_setzero_si128(); 8];
        for i in 0..8 {
            state[i] = _mm_set1_epi32(H0[i] as i32);
        }
        let mut w = [_mm_setzero_si128(); 64];
        for chunk in 0..BLOCK / 64 {
            for q in 0..4 {
                // 16 bytes of each block; transposed, word 4q + i of every lane in w[4q + i].
                let at = chunk * 64 + q * 16;
                let v0 = _mm_loadu_si128(blocks[0].as_ptr().add(at) as *const __m128i);
                let v1 = _mm_loadu_si128(blocks[1].as_ptr().add(at) as *const __m128i);
                let v2 = _mm_loadu_si128(blocks[2].as_ptr().add(at) as *const __m128i);
                let v3 = _mm_loadu_si128(blocks[3].as_ptr().add(at) as *const __m128i);
                let (t0, t1) = (_mm_unpacklo_epi32(v0, v1), _mm_unpackhi_epi32(v0, v1));
                let (t2, t3) = (_mm_unpacklo_epi32(v2, v3), _mm_unpackhi_epi32(v2, v3));
                w[4 * q] = swap_bytes(_mm_unpacklo_epi64(t0, t2));
                w[4 * q + 1] = swap_bytes(_mm_unpackhi_epi64(t0, t2));
                w[4 * q + 2] = swap_bytes(_mm_unpacklo_epi64(t1, t3));
                w[4 * q + 3] = swap_bytes(_mm_unpackhi_epi64(t1, t3));
            }
            let p = w.as_mut_ptr();
            // Four steps at a time, the trip count opaque (unrolled, the 48 steps would add 5 KiB).
            for t in (0..core::hint::black_box(48)).step_by(4) {
                schedule!(p.add(t));
                schedule!(p.add(t + 1));
                schedule!(p.add(t + 2));
                schedule!(p.add(t + 3));
            }
            compress(&mut state, w.as_ptr());
        }
        // The padding chunk's schedule is the same for every block: W[t] (K is added by the rounds).
        for t in 0..64 {
            w[t] = _mm_set1_epi32(PAD_W[t] as i32);
        }
        compress(&mut state, w.as_ptr());
        for (i, s) in state.iter().enumerate() {
            let mut words = [0u32; 4];
            _mm_storeu_si128(words.as_mut_ptr() as *mut __m128i, *s);
            for (hash, word) in out.iter_mut().zip(words) {
                hash[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
            }
        }
    }
}
sha256_lanes!(
    avx2,
    "avx2",
    8,
    __m256i,
    _mm256_add_epi32,
    _mm256_xor_si256,
    _mm256_and_si256,
    _mm256_srli_epi32,
    _mm256_slli_epi32,
    _mm256_set1_epi32,
    _mm256_loadu_si256,
    _mm256_storeu_si256
);

/// SHA-256 with the SHA extensions: four rounds per two SHA256RNDS2, the schedule by
/// SHA256MSG1/MSG2. The state lives as ABEF and CDGH (the instructions' layout). The three SHA
/// instructions are written as inline assembly: their intrinsics do not lower on the soft-float
/// UEFI target (LLVM: "Do not know how to split the result of this operator").
pub mod shani {
    use super::*;
    use core::arch::asm;

    /// Two rounds: CDGH (updated to the new ABEF) from ABEF and two message words (+ K) in XMM0.
    macro_rules! rnds2 {
        ($cdgh:expr, $abef:expr, $msg:expr) => {{
            let mut x: __m128i = $cdgh;
            asm!("sha256rnds2 {x}, {y}, xmm0", x = inout(xmm_reg) x, y = in(xmm_reg) $abef, in("xmm0") $msg,
                 options(pure, nomem, nostack));
            x
        }};
    }

    macro_rules! msg {
        ($op:literal, $a:expr, $b:expr) => {{
            let mut x: __m128i = $a;
            asm!(concat!($op, " {x}, {y}"), x = inout(xmm_reg) x, y = in(xmm_reg) $b, options(pure, nomem, nostack));
            x
        }};
    }

    static SWAP_WORDS: [u8; 16] = [3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12];

    /// N 4 KiB blocks side by side: their rounds interleaved, so one block's SHA256RNDS2 runs
    /// while another's waits for its result (the instruction's latency is several cycles).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub unsafe fn hash_4k_n<const N: usize>(blocks: &[&[u8; BLOCK]; N], out: &mut [[u8; 32]; N]) {
        let swap = _mm_loadu_si128(SWAP_WORDS.as_ptr() as *const __m128i);
        // H0 as ABEF and CDGH.
        let dcba = _mm_loadu_si128(H0.as_ptr() as *const __m128i);
        let hgfe = _mm_loadu_si128(H0.as_ptr().add(4) as *const __m128i);
        let badc = _mm_shuffle_epi32::<0xb1>(dcba);
        let efgh = _mm_shuffle_epi32::<0x1b>(hgfe);
        let mut abef = [_mm_alignr_epi8::<8>(badc, efgh); N];
        let mut cdgh = [_mm_blend_epi16::<0xf0>(efgh, badc); N];
        let mut m = [[swap; 4]; N];
        for chunk in 0..=BLOCK / 64 {
            let (abef0, cdgh0) = (abef, cdgh);
            for j in 0..N {
                let data = if chunk < BLOCK / 64 { blocks[j].as_ptr().add(chunk * 64) } else { PAD_4K.as_ptr() };
                for i in 0..4 {
                    m[j][i] = _mm_shuffle_epi8(_mm_loadu_si128(data.add(16 * i) as *const __m128i), swap);
                }
            }
            for group in 0..16 {
                let k = _mm_loadu_si128(K.as_ptr().add(4 * group) as *const __m128i);
                for j in 0..N {
                    let w = if group < 4 {
                        m[j][group]
                    } else {
                        let next = msg!(
                            "sha256msg2",
                            _mm_add_epi32(
                                msg!("sha256msg1", m[j][group % 4], m[j][(group + 1) % 4]),
                                _mm_alignr_epi8::<4>(m[j][(group + 3) % 4], m[j][(group + 2) % 4]),
                            ),
                            m[j][(group + 3) % 4]
                        );
                        m[j][group % 4] = next;
                        next
                    };
                    let msg = _mm_add_epi32(w, k);
                    cdgh[j] = rnds2!(cdgh[j], abef[j], msg);
                    abef[j] = rnds2!(abef[j], cdgh[j], _mm_shuffle_epi32::<0x0e>(msg));
                }
            }
            for j in 0..N {
                abef[j] = _mm_add_epi32(abef[j], abef0[j]);
                cdgh[j] = _mm_add_epi32(cdgh[j], cdgh0[j]);
            }
        }
        for j in 0..N {
            let feba = _mm_shuffle_epi32::<0x1b>(abef[j]);
            let dchg = _mm_shuffle_epi32::<0xb1>(cdgh[j]);
            let mut state = [0u32; 8];
            _mm_storeu_si128(state.as_mut_ptr() as *mut __m128i, _mm_blend_epi16::<0xf0>(feba, dchg));
            _mm_storeu_si128(state.as_mut_ptr().add(4) as *mut __m128i, _mm_alignr_epi8::<8>(dchg, feba));
            out[j] = sha256::bytes(&state);
        }
    }
}
