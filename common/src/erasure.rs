//! Reed-Solomon stripe codec (GF(2^8), SIMD-accelerated via `reed-solomon-erasure`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use reed_solomon_erasure::galois_8::ReedSolomon;

/// Errors from encoding or rebuilding a stripe.
#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    #[error("invalid geometry {k}+{m}")]
    Geometry { k: u8, m: u8 },
    #[error("too few shards to reconstruct: need {need}, have {have}")]
    TooFewShards { need: usize, have: usize },
    #[error("reed-solomon: {0:?}")]
    Codec(reed_solomon_erasure::Error),
}

/// A k+m codec. Cheap to clone; encoders are built once per geometry.
#[derive(Clone)]
pub struct Codec {
    rs: Arc<ReedSolomon>,
    k: u8,
}

impl Codec {
    /// A codec for `k` data and `m` parity shards (`k >= 1`, `m >= 1`).
    pub fn new(k: u8, m: u8) -> Result<Self, ErasureError> {
        type Cache = HashMap<(u8, u8), Arc<ReedSolomon>>;
        static CACHE: Mutex<Option<Cache>> = Mutex::new(None);
        if k == 0 || m == 0 || k as usize + m as usize > 255 {
            return Err(ErasureError::Geometry { k, m });
        }
        let mut guard = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        let map = guard.get_or_insert_with(HashMap::new);
        let rs = match map.get(&(k, m)) {
            Some(rs) => rs.clone(),
            None => {
                let rs = Arc::new(
                    ReedSolomon::new(k as usize, m as usize).map_err(ErasureError::Codec)?,
                );
                map.insert((k, m), rs.clone());
                rs
            }
        };
        Ok(Self { rs, k })
    }

    /// Computes the `m` parity blocks of a stripe from its `k` equal-length data blocks.
    pub fn encode(&self, data: &[&[u8]], parity: &mut [&mut [u8]]) -> Result<(), ErasureError> {
        self.rs
            .encode_sep(data, parity)
            .map_err(ErasureError::Codec)
    }

    /// Folds part of data block `i` into the parity: `piece` is the block's bytes from
    /// some offset, and `parity` the parity blocks' bytes at that same offset. Block 0's
    /// bytes set the parity and later blocks' add to it, so every offset must get block 0
    /// first; blocks (or tails) never folded in count as zeros.
    pub fn encode_piece(
        &self,
        i: usize,
        piece: &[u8],
        parity: &mut [&mut [u8]],
    ) -> Result<(), ErasureError> {
        self.rs
            .encode_single_sep(i, piece, parity)
            .map_err(ErasureError::Codec)
    }

    /// Fills in the missing data blocks of a stripe (`None` entries among the first k)
    /// from any k present blocks. Parity blocks are not rebuilt.
    pub fn reconstruct_data(&self, blocks: &mut [Option<Vec<u8>>]) -> Result<(), ErasureError> {
        let have = blocks.iter().filter(|b| b.is_some()).count();
        if have < self.k as usize {
            return Err(ErasureError::TooFewShards {
                need: self.k as usize,
                have,
            });
        }
        self.rs
            .reconstruct_data(blocks)
            .map_err(ErasureError::Codec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_k_of_k_plus_m_rebuild_the_data() {
        let codec = Codec::new(3, 2).expect("codec");
        let data: Vec<Vec<u8>> = (0..3)
            .map(|i| (0..64).map(|j| (i * 64 + j) as u8).collect())
            .collect();
        let mut parity = vec![vec![0u8; 64]; 2];
        {
            let d: Vec<&[u8]> = data.iter().map(|v| v.as_slice()).collect();
            let mut p: Vec<&mut [u8]> = parity.iter_mut().map(|v| v.as_mut_slice()).collect();
            codec.encode(&d, &mut p).expect("encode");
        }
        let all: Vec<Vec<u8>> = data.iter().chain(parity.iter()).cloned().collect();
        for lost_a in 0..5 {
            for lost_b in lost_a + 1..5 {
                let mut blocks: Vec<Option<Vec<u8>>> = all.iter().cloned().map(Some).collect();
                blocks[lost_a] = None;
                blocks[lost_b] = None;
                codec.reconstruct_data(&mut blocks).expect("rebuild");
                for i in 0..3 {
                    assert_eq!(blocks[i].as_deref(), Some(data[i].as_slice()));
                }
            }
        }
    }

    #[test]
    fn parity_built_piece_by_piece_matches_the_whole_stripe() {
        let codec = Codec::new(3, 2).expect("codec");
        let len = 1000;
        let data: Vec<Vec<u8>> = (0..3)
            .map(|i| (0..len).map(|j| (i * 7 + j * 13) as u8).collect())
            .collect();
        let mut want = vec![vec![0u8; len]; 2];
        {
            let d: Vec<&[u8]> = data.iter().map(|v| v.as_slice()).collect();
            let mut p: Vec<&mut [u8]> = want.iter_mut().map(|v| v.as_mut_slice()).collect();
            codec.encode(&d, &mut p).expect("encode");
        }
        // Pieces of odd sizes, differently cut per block; the parity starts as garbage.
        let mut got = vec![vec![0xA5u8; len]; 2];
        for (i, block) in data.iter().enumerate() {
            let mut off = 0;
            let mut step = 1 + i * 5;
            while off < len {
                let end = (off + step).min(len);
                let mut p: Vec<&mut [u8]> = got.iter_mut().map(|v| &mut v[off..end]).collect();
                codec
                    .encode_piece(i, &block[off..end], &mut p)
                    .expect("piece");
                off = end;
                step = step * 3 % 97 + 1;
            }
        }
        assert_eq!(got, want);
    }

    #[test]
    fn too_many_losses_is_an_error() {
        let codec = Codec::new(2, 1).expect("codec");
        let mut blocks = vec![Some(vec![1u8; 8]), None, None];
        assert!(codec.reconstruct_data(&mut blocks).is_err());
        assert!(Codec::new(0, 1).is_err());
    }
}
