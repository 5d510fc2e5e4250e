//! The buffering both Merkle–Damgård hashes here share: bytes wait until they fill a
//! 64-byte block, whole blocks go to the compression function straight from the caller's
//! slice, and the end is padded with `0x80`, zeros and the message length in bits.

/// One block of input.
pub type Block = [u8; 64];

/// Input not yet compressed (less than a block) and the count of all bytes fed.
#[derive(Clone)]
pub struct Pending {
    buf: Block,
    used: usize,
    total: u64,
}

impl Pending {
    pub const fn new() -> Self {
        Self {
            buf: [0; 64],
            used: 0,
            total: 0,
        }
    }

    /// Bytes waiting for the rest of their block.
    #[cfg(target_arch = "x86_64")]
    pub fn used(&self) -> usize {
        self.used
    }

    /// Feeds `data`: completes the waiting block, compresses whole blocks in place, and
    /// keeps the rest.
    pub fn feed(&mut self, mut data: &[u8], mut compress: impl FnMut(&[Block])) {
        self.total += data.len() as u64;
        if self.used > 0 {
            let n = (64 - self.used).min(data.len());
            self.buf[self.used..self.used + n].copy_from_slice(&data[..n]);
            self.used += n;
            data = &data[n..];
            if self.used < 64 {
                return;
            }
            compress(std::slice::from_ref(&self.buf));
            self.used = 0;
        }
        let (blocks, rest) = data.as_chunks::<64>();
        if !blocks.is_empty() {
            compress(blocks);
        }
        self.buf[..rest.len()].copy_from_slice(rest);
        self.used = rest.len();
    }

    /// Notes `blocks` whole blocks compressed by the caller; only valid with nothing
    /// waiting.
    #[cfg(target_arch = "x86_64")]
    pub fn skip_blocks(&mut self, blocks: usize) {
        debug_assert_eq!(self.used, 0);
        self.total += 64 * blocks as u64;
    }

    /// Pads and compresses the end; `length` encodes the bit length in the hash's byte
    /// order.
    pub fn finish(mut self, length: impl Fn(u64) -> [u8; 8], mut compress: impl FnMut(&[Block])) {
        let bits = length(self.total.wrapping_mul(8));
        self.buf[self.used] = 0x80;
        self.buf[self.used + 1..].fill(0);
        if self.used >= 56 {
            compress(std::slice::from_ref(&self.buf));
            self.buf = [0; 64];
        }
        self.buf[56..].copy_from_slice(&bits);
        compress(std::slice::from_ref(&self.buf));
    }
}
