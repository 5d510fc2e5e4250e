//! SHA-256 (FIPS 180-4) of request payloads, resumable by the stitched MD5 + SHA-256 pass
//! in [`super::PayloadDigest`]. Blocks are compressed with the CPU's SHA extensions where
//! it has them (`x86.rs`), else by the sha2 crate.

use sha2::digest::generic_array::GenericArray;

use super::block::{Block, Pending};

/// A SHA-256 computation in progress.
#[derive(Clone)]
pub struct Sha256 {
    state: [u32; 8],
    pending: Pending,
}

const INIT: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

impl Sha256 {
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
    pub fn finalize(self) -> [u8; 32] {
        let mut state = self.state;
        self.pending
            .finish(u64::to_be_bytes, |blocks| compress(&mut state, blocks));
        let mut out = [0; 32];
        for (o, w) in out.as_chunks_mut::<4>().0.iter_mut().zip(state) {
            *o = w.to_be_bytes();
        }
        out
    }
}

/// For the stitched pass, which compresses whole blocks of both hashes itself.
#[cfg(target_arch = "x86_64")]
impl Sha256 {
    /// Bytes waiting for the rest of their block.
    pub(super) fn pending(&self) -> usize {
        self.pending.used()
    }

    /// The chaining state, for a caller that compresses whole blocks itself; it reports
    /// them with [`Sha256::compressed`].
    pub(super) fn state_mut(&mut self) -> &mut [u32; 8] {
        &mut self.state
    }

    /// Notes `blocks` whole blocks compressed through [`Sha256::state_mut`].
    pub(super) fn compressed(&mut self, blocks: usize) {
        self.pending.skip_blocks(blocks);
    }
}

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

/// Compresses `blocks` into `state`.
fn compress(state: &mut [u32; 8], blocks: &[Block]) {
    #[cfg(target_arch = "x86_64")]
    if super::x86::has_sha() {
        // SAFETY: the CPU has the SHA extensions (checked at run time).
        unsafe { super::x86::sha256(state, blocks) };
        return;
    }
    for block in blocks {
        sha2::compress256(state, std::slice::from_ref(GenericArray::from_slice(block)));
    }
}
