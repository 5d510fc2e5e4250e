//! The object to upload: a pseudo-random file written once, and its digests.
//!
//! The file is generated in 1 MiB chunks (never whole in memory), fsynced so its write-back
//! does not compete with the timed PUT, and hashed on the way: MD5 (the single-PUT ETag),
//! the MD5 of every multipart part (for the multipart ETag) and SHA-256 (to check the GET).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use md5::{Digest as _, Md5};
use sha2::Sha256;

/// Digests of the generated object.
pub struct SourceDigests {
    /// Hex MD5 of the whole object.
    pub md5: String,
    /// Hex SHA-256 of the whole object.
    pub sha256: String,
    /// The ETag S3 gives a multipart upload with parts of the configured size:
    /// hex MD5 of the concatenated binary part MD5s, then `-N`.
    pub multipart_etag: String,
}

/// splitmix64: fast, deterministic, incompressible enough for a storage benchmark.
struct SplitMix(u64);

impl SplitMix {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// Writes `size` pseudo-random bytes to `path` and returns their digests; `part_size`
/// (> 0) is the multipart part size the ETag is computed for.
pub fn generate(path: &Path, size: u64, part_size: u64, seed: u64) -> Result<SourceDigests> {
    const CHUNK: usize = 1 << 20;
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = BufWriter::with_capacity(CHUNK, file);
    let mut rng = SplitMix(seed);
    let mut buf = vec![0u8; CHUNK];
    let mut md5 = Md5::new();
    let mut sha = Sha256::new();
    let mut part = Md5::new();
    let mut part_left = part_size;
    let mut part_md5s: Vec<u8> = Vec::new();
    let mut parts = 0u64;
    let mut left = size;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        let chunk = &mut buf[..n];
        rng.fill(chunk);
        out.write_all(chunk)
            .with_context(|| format!("writing {}", path.display()))?;
        md5.update(&*chunk);
        sha.update(&*chunk);
        let mut rest: &[u8] = chunk;
        while !rest.is_empty() {
            let take = rest.len().min(part_left as usize);
            part.update(&rest[..take]);
            rest = &rest[take..];
            part_left -= take as u64;
            if part_left == 0 {
                part_md5s.extend_from_slice(&part.finalize_reset());
                parts += 1;
                part_left = part_size;
            }
        }
        left -= n as u64;
    }
    if part_left != part_size || parts == 0 {
        part_md5s.extend_from_slice(&part.finalize_reset());
        parts += 1;
    }
    let file = out
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", path.display()))?;
    file.sync_all()
        .with_context(|| format!("fsyncing {}", path.display()))?;
    Ok(SourceDigests {
        md5: hex::encode(md5.finalize()),
        sha256: hex::encode(sha.finalize()),
        multipart_etag: format!("{}-{parts}", hex::encode(Md5::digest(&part_md5s))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_match_a_direct_computation() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("src.bin");
        let d = generate(&path, 3 * 1024 * 1024 + 5, 1024 * 1024, 7)?;
        let data = std::fs::read(&path)?;
        assert_eq!(data.len(), 3 * 1024 * 1024 + 5);
        assert_eq!(d.md5, hex::encode(Md5::digest(&data)));
        assert_eq!(d.sha256, hex::encode(Sha256::digest(&data)));
        let mut cat = Vec::new();
        for p in data.chunks(1024 * 1024) {
            cat.extend_from_slice(&Md5::digest(p));
        }
        assert_eq!(
            d.multipart_etag,
            format!("{}-4", hex::encode(Md5::digest(&cat)))
        );
        Ok(())
    }
}
