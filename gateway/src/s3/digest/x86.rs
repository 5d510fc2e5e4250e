//! SHA-256 with the x86-64 SHA extensions, alone and stitched with MD5.
//!
//! Both hashes are long chains of dependent operations: MD5's through the scalar adders,
//! SHA-256's through `sha256rnds2` in the vector unit. Interleaved in one instruction
//! stream, the CPU runs the two chains side by side, so MD5 and SHA-256 of the same bytes
//! cost about what MD5 alone does. `fence!` keeps the compiler from regrouping the
//! interleaved code into one hash after the other.

use std::arch::x86_64::*;

use super::block::Block;
use super::md5::{four_steps, step, words};

/// Whether this CPU has the SHA extensions (and the SSE levels used with them).
pub fn has_sha() -> bool {
    is_x86_feature_detected!("sha")
        && is_x86_feature_detected!("ssse3")
        && is_x86_feature_detected!("sse4.1")
}

/// The round constants of FIPS 180-4.
static K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// The chaining state as `sha256rnds2` wants it: (A, B, E, F) and (C, D, G, H).
#[derive(Clone, Copy)]
struct Lanes {
    abef: __m128i,
    cdgh: __m128i,
}

impl Lanes {
    #[target_feature(enable = "sse2")]
    fn load(s: &[u32; 8]) -> Self {
        let w = |i: usize| s[i] as i32;
        Self {
            abef: _mm_set_epi32(w(0), w(1), w(4), w(5)),
            cdgh: _mm_set_epi32(w(2), w(3), w(6), w(7)),
        }
    }

    #[target_feature(enable = "sse2")]
    fn store(self, s: &mut [u32; 8]) {
        let (mut abef, mut cdgh) = ([0u32; 4], [0u32; 4]);
        // SAFETY: each array has room for the 16 bytes stored (unaligned stores).
        unsafe {
            _mm_storeu_si128(abef.as_mut_ptr().cast(), self.abef);
            _mm_storeu_si128(cdgh.as_mut_ptr().cast(), self.cdgh);
        }
        *s = [
            abef[3], abef[2], cdgh[3], cdgh[2], abef[1], abef[0], cdgh[1], cdgh[0],
        ];
    }
}

/// The block's four groups of message words, big-endian.
#[inline(always)]
unsafe fn load_words(block: &Block) -> [__m128i; 4] {
    let swap = _mm_set_epi64x(0x0c0d_0e0f_0809_0a0b, 0x0405_0607_0001_0203);
    let p = block.as_ptr().cast::<__m128i>();
    // SAFETY (caller): SSSE3; the block holds four unaligned 16-byte loads.
    [0, 1, 2, 3].map(|i| _mm_shuffle_epi8(_mm_loadu_si128(p.add(i)), swap))
}

/// Rounds `4g`..`4g + 4`; from group 4 on, first extends the message schedule into
/// `w[g % 4]` from the four groups before it.
macro_rules! sha_rounds {
    ($g:expr, $st:ident, $w:ident) => {{
        let g: usize = $g;
        if g >= 4 {
            let older = _mm_sha256msg1_epu32($w[g % 4], $w[(g + 1) % 4]);
            let mid = _mm_alignr_epi8($w[(g + 3) % 4], $w[(g + 2) % 4], 4);
            $w[g % 4] = _mm_sha256msg2_epu32(_mm_add_epi32(older, mid), $w[(g + 3) % 4]);
        }
        let k = _mm_loadu_si128(K.as_ptr().add(4 * g).cast());
        let msg = _mm_add_epi32($w[g % 4], k);
        $st.cdgh = _mm_sha256rnds2_epu32($st.cdgh, $st.abef, msg);
        $st.abef = _mm_sha256rnds2_epu32($st.abef, $st.cdgh, _mm_shuffle_epi32(msg, 0x0E));
    }};
}

/// Compresses `blocks` into `state` with the SHA extensions.
///
/// # Safety
/// The CPU must have them: see [`has_sha`].
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
pub unsafe fn sha256(state: &mut [u32; 8], blocks: &[Block]) {
    let mut st = Lanes::load(state);
    for block in blocks {
        let start = st;
        let mut w = load_words(block);
        sha_rounds!(0, st, w);
        sha_rounds!(1, st, w);
        sha_rounds!(2, st, w);
        sha_rounds!(3, st, w);
        sha_rounds!(4, st, w);
        sha_rounds!(5, st, w);
        sha_rounds!(6, st, w);
        sha_rounds!(7, st, w);
        sha_rounds!(8, st, w);
        sha_rounds!(9, st, w);
        sha_rounds!(10, st, w);
        sha_rounds!(11, st, w);
        sha_rounds!(12, st, w);
        sha_rounds!(13, st, w);
        sha_rounds!(14, st, w);
        sha_rounds!(15, st, w);
        st.abef = _mm_add_epi32(st.abef, start.abef);
        st.cdgh = _mm_add_epi32(st.cdgh, start.cdgh);
    }
    st.store(state);
}

/// Pins both hashes' state at this point of the instruction stream (emits nothing).
macro_rules! fence {
    ($md5:ident, $st:ident) => {
        std::arch::asm!(
            "/* {0:e} {1:e} {2:e} {3:e} {4} {5} */",
            inout(reg) $md5[0], inout(reg) $md5[1], inout(reg) $md5[2], inout(reg) $md5[3],
            inout(xmm_reg) $st.abef, inout(xmm_reg) $st.cdgh,
            options(pure, nomem, nostack, preserves_flags),
        )
    };
}

/// Four SHA-256 rounds, then four MD5 steps, pinned in that order.
macro_rules! stitch {
    ($g:expr, $st:ident, $w:ident, $md5:ident, $m:ident) => {{
        sha_rounds!($g, $st, $w);
        fence!($md5, $st);
        four_steps!(4 * $g, $md5, $m);
    }};
}

/// Compresses the same `blocks` into an MD5 and a SHA-256 state in one interleaved pass.
///
/// # Safety
/// The CPU must have the SHA extensions: see [`has_sha`].
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
pub unsafe fn md5_sha256(md5_state: &mut [u32; 4], sha_state: &mut [u32; 8], blocks: &[Block]) {
    let mut st = Lanes::load(sha_state);
    let mut md5 = *md5_state;
    for block in blocks {
        let (start, md5_start) = (st, md5);
        let m = words(block);
        let mut w = load_words(block);
        stitch!(0, st, w, md5, m);
        stitch!(1, st, w, md5, m);
        stitch!(2, st, w, md5, m);
        stitch!(3, st, w, md5, m);
        stitch!(4, st, w, md5, m);
        stitch!(5, st, w, md5, m);
        stitch!(6, st, w, md5, m);
        stitch!(7, st, w, md5, m);
        stitch!(8, st, w, md5, m);
        stitch!(9, st, w, md5, m);
        stitch!(10, st, w, md5, m);
        stitch!(11, st, w, md5, m);
        stitch!(12, st, w, md5, m);
        stitch!(13, st, w, md5, m);
        stitch!(14, st, w, md5, m);
        stitch!(15, st, w, md5, m);
        st.abef = _mm_add_epi32(st.abef, start.abef);
        st.cdgh = _mm_add_epi32(st.cdgh, start.cdgh);
        for (w, s) in md5.iter_mut().zip(md5_start) {
            *w = w.wrapping_add(s);
        }
    }
    st.store(sha_state);
    *md5_state = md5;
}
