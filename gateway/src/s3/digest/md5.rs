//! MD5 (RFC 1321), for ETags and `Content-MD5`.
//!
//! Each step is arranged so that only the newest state word waits on the step before: the
//! message word and constant join the oldest word first, and `opaque` stops the compiler
//! from re-associating those sums back onto the critical path, which is what makes this
//! portable code fast.

use super::block::{Block, Pending};

/// An MD5 computation in progress.
#[derive(Clone)]
pub struct Md5 {
    state: [u32; 4],
    pending: Pending,
}

impl Md5 {
    /// Starts a digest.
    pub const fn new() -> Self {
        Self {
            state: INIT,
            pending: Pending::new(),
        }
    }

    /// Adds `data`.
    pub fn update(&mut self, data: &[u8]) {
        let state = &mut self.state;
        self.pending.feed(data, |blocks| compress(state, blocks));
    }

    /// The digest of everything added.
    pub fn finalize(self) -> [u8; 16] {
        let mut state = self.state;
        self.pending
            .finish(u64::to_le_bytes, |blocks| compress(&mut state, blocks));
        let mut out = [0; 16];
        for (o, w) in out.as_chunks_mut::<4>().0.iter_mut().zip(state) {
            *o = w.to_le_bytes();
        }
        out
    }
}

/// For the stitched pass, which compresses whole blocks of both hashes itself.
#[cfg(target_arch = "x86_64")]
impl Md5 {
    /// Bytes waiting for the rest of their block.
    pub(super) fn pending(&self) -> usize {
        self.pending.used()
    }

    /// The chaining state, for a caller that compresses whole blocks itself; it reports
    /// them with [`Md5::compressed`].
    pub(super) fn state_mut(&mut self) -> &mut [u32; 4] {
        &mut self.state
    }

    /// Notes `blocks` whole blocks compressed through [`Md5::state_mut`].
    pub(super) fn compressed(&mut self, blocks: usize) {
        self.pending.skip_blocks(blocks);
    }
}

impl Default for Md5 {
    fn default() -> Self {
        Self::new()
    }
}

const INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// The sine-derived constants of RFC 1321.
const K: [u32; 64] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
];

/// Per-round rotation amounts, repeating every four steps.
pub(super) const SHIFTS: [[u32; 4]; 4] = [
    [7, 12, 17, 22],
    [5, 9, 14, 20],
    [4, 11, 16, 23],
    [6, 10, 15, 21],
];

/// The message word used by step `i`.
pub(super) const fn word(i: usize) -> usize {
    match i / 16 {
        0 => i,
        1 => (5 * i + 1) % 16,
        2 => (3 * i + 5) % 16,
        _ => (7 * i) % 16,
    }
}

/// `x`, hidden from the optimiser so that sums ending in it are not re-associated.
#[inline(always)]
fn opaque(x: u32) -> u32 {
    #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
    {
        let mut x = x;
        // SAFETY: the template is only a comment; it emits no instruction, reads and
        // writes no memory and leaves the flags alone.
        unsafe {
            std::arch::asm!("/* {0:e} */", inout(reg) x, options(pure, nomem, nostack, preserves_flags));
        }
        x
    }
    #[cfg(target_arch = "aarch64")]
    {
        let mut x = x;
        // SAFETY: as above.
        unsafe {
            std::arch::asm!("/* {0:w} */", inout(reg) x, options(pure, nomem, nostack, preserves_flags));
        }
        x
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "x86", target_arch = "aarch64")))]
    {
        x
    }
}

/// One MD5 step: the new value of `a`. `i` (0..64) picks the round function.
#[inline(always)]
pub(super) fn step(i: usize, a: u32, b: u32, c: u32, d: u32, m: &[u32; 16]) -> u32 {
    let t = a.wrapping_add(m[word(i)]).wrapping_add(K[i]);
    let f = match i / 16 {
        0 => opaque(t).wrapping_add(d ^ (b & (c ^ d))),
        // (b & d) | (c & !d), with the half that does not wait on b summed early
        1 => opaque(t.wrapping_add(c & !d)).wrapping_add(b & d),
        2 => opaque(t).wrapping_add(b ^ opaque(c ^ d)),
        _ => opaque(t).wrapping_add(c ^ (b | !d)),
    };
    f.rotate_left(SHIFTS[i / 16][i % 4]).wrapping_add(b)
}

/// The block's sixteen little-endian message words.
#[inline(always)]
pub(super) fn words(block: &Block) -> [u32; 16] {
    let mut m = [0; 16];
    for (w, b) in m.iter_mut().zip(block.as_chunks::<4>().0) {
        *w = u32::from_le_bytes(*b);
    }
    m
}

/// Four steps from `i`, rotating the state words' roles.
macro_rules! four_steps {
    ($i:expr, $s:ident, $m:ident) => {{
        let [a, b, c, d] = &mut $s;
        *a = step($i, *a, *b, *c, *d, &$m);
        *d = step($i + 1, *d, *a, *b, *c, &$m);
        *c = step($i + 2, *c, *d, *a, *b, &$m);
        *b = step($i + 3, *b, *c, *d, *a, &$m);
    }};
}
#[cfg(target_arch = "x86_64")]
pub(super) use four_steps;

/// Compresses `blocks` into `state`.
pub(super) fn compress(state: &mut [u32; 4], blocks: &[Block]) {
    for block in blocks {
        let m = words(block);
        let mut s = *state;
        four_steps!(0, s, m);
        four_steps!(4, s, m);
        four_steps!(8, s, m);
        four_steps!(12, s, m);
        four_steps!(16, s, m);
        four_steps!(20, s, m);
        four_steps!(24, s, m);
        four_steps!(28, s, m);
        four_steps!(32, s, m);
        four_steps!(36, s, m);
        four_steps!(40, s, m);
        four_steps!(44, s, m);
        four_steps!(48, s, m);
        four_steps!(52, s, m);
        four_steps!(56, s, m);
        four_steps!(60, s, m);
        for (w, n) in state.iter_mut().zip(s) {
            *w = w.wrapping_add(n);
        }
    }
}
