//! The hashes S3 asks of a request body, computed on every byte the gateway stores: MD5
//! for the ETag and `Content-MD5`, and SHA-256 where the signature covers the payload
//! (whole, or chunk by chunk in aws-chunked uploads).
//!
//! They are most of the gateway's CPU on a PUT, so they are written here, not taken from a
//! crate; each is checked against the md-5 and sha2 crates in the tests:
//! - MD5 ([`md5`]), arranged for a short critical path (faster than md-5's portable code);
//! - MD5 and SHA-256 of the same bytes, stitched into one pass on x86-64 with the SHA
//!   extensions (`x86.rs`), which costs about what MD5 alone does.

mod block;
pub mod md5;
pub mod sha256;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use md5::Md5;
pub use sha256::Sha256;

/// MD5 of a whole body, with SHA-256 of the same bytes where the signature needs it.
///
/// The SHA-256 can be taken and restarted at any point (at each aws-chunked chunk end)
/// while the MD5 runs on.
pub struct PayloadDigest {
    md5: Md5,
    sha256: Option<Sha256>,
}

impl PayloadDigest {
    /// Starts the digests: MD5, and SHA-256 too when `sha256`.
    pub fn new(sha256: bool) -> Self {
        Self {
            md5: Md5::new(),
            sha256: sha256.then(Sha256::new),
        }
    }

    /// Adds `data` to every digest.
    pub fn update(&mut self, data: &[u8]) {
        let Some(sha) = self.sha256.as_mut() else {
            self.md5.update(data);
            return;
        };
        #[cfg(target_arch = "x86_64")]
        if self.md5.pending() == sha.pending() && x86::has_sha() {
            stitched(&mut self.md5, sha, data);
            return;
        }
        self.md5.update(data);
        sha.update(data);
    }

    /// The SHA-256 of the bytes added since the start or the last call, if computed; the
    /// next bytes start a new one.
    pub fn take_sha256(&mut self) -> Option<[u8; 32]> {
        self.sha256.as_mut().map(|s| std::mem::take(s).finalize())
    }

    /// The MD5 of everything added, and the SHA-256 since the last [`Self::take_sha256`].
    pub fn finalize(self) -> ([u8; 16], Option<[u8; 32]>) {
        (self.md5.finalize(), self.sha256.map(Sha256::finalize))
    }
}

/// Adds `data` to both digests, which have the same number of bytes waiting: the bytes
/// that complete their partial block go to each, whole blocks through the stitched pass.
#[cfg(target_arch = "x86_64")]
fn stitched(md5: &mut Md5, sha: &mut Sha256, data: &[u8]) {
    let head = ((64 - md5.pending()) % 64).min(data.len());
    let (head, rest) = data.split_at(head);
    md5.update(head);
    sha.update(head);
    if md5.pending() != 0 {
        return; // `data` did not complete the block
    }
    let (blocks, tail) = rest.as_chunks::<64>();
    // SAFETY: the caller checked that the CPU has the SHA extensions.
    unsafe { x86::md5_sha256(md5.state_mut(), sha.state_mut(), blocks) };
    md5.compressed(blocks.len());
    sha.compressed(blocks.len());
    md5.update(tail);
    sha.update(tail);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::md5::Digest as _;

    fn data(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    const LENGTHS: [usize; 16] = [
        0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 70_001,
    ];

    #[test]
    fn md5_matches_the_md5_crate_at_every_padding_edge() {
        for len in LENGTHS {
            let d = data(len, len as u64);
            let want: [u8; 16] = ::md5::Md5::digest(&d).into();
            let mut h = Md5::new();
            h.update(&d);
            assert_eq!(h.finalize(), want, "length {len}");
        }
        // RFC 1321's own test vector
        let mut h = Md5::new();
        h.update(b"abc");
        assert_eq!(
            hex::encode(h.finalize()),
            "900150983cd24fb0d6963f7d28e17f72"
        );
    }

    #[test]
    fn sha256_matches_the_sha2_crate_at_every_padding_edge() {
        for len in LENGTHS {
            let d = data(len, 7 + len as u64);
            let want: [u8; 32] = sha2::Sha256::digest(&d).into();
            let mut h = Sha256::new();
            h.update(&d);
            assert_eq!(h.finalize(), want, "length {len}");
        }
    }

    /// Feeds `d` in pieces of the lengths `cuts` cycles through, taking the SHA-256 at
    /// each offset in `takes`; returns the MD5 and the SHA-256 of each taken span.
    fn run(d: &[u8], cuts: &[usize], takes: &[usize]) -> ([u8; 16], Vec<[u8; 32]>) {
        let mut p = PayloadDigest::new(true);
        let mut shas = Vec::new();
        let (mut at, mut i) = (0, 0);
        let mut marks: Vec<usize> = takes.to_vec();
        marks.push(d.len());
        for mark in marks {
            while at < mark {
                let n = cuts[i % cuts.len()].max(1).min(mark - at);
                p.update(&d[at..at + n]);
                at += n;
                i += 1;
            }
            if mark < d.len() {
                shas.extend(p.take_sha256());
            }
        }
        let (md5, last) = p.finalize();
        shas.extend(last);
        (md5, shas)
    }

    #[test]
    fn payload_digest_matches_separate_hashes_however_the_bytes_arrive() {
        let d = data(300_000, 99);
        let want_md5: [u8; 16] = ::md5::Md5::digest(&d).into();
        // aligned chunks (as SDKs send them), odd chunks that unalign the two hashes, and
        // pieces from one byte up
        let cases: [(&[usize], &[usize]); 5] = [
            (&[65_536], &[65_536, 131_072, 196_608, 262_144]),
            (&[8192, 100, 4096], &[65_536, 131_072]),
            (&[1, 2, 3, 64, 127, 5000], &[1000, 1001, 64_000, 200_000]),
            (&[299_999, 1], &[]),
            (&[17], &[100, 163, 290_000]),
        ];
        for (cuts, takes) in cases {
            let (md5, shas) = run(&d, cuts, takes);
            assert_eq!(md5, want_md5, "cuts {cuts:?}");
            let mut bounds = vec![0];
            bounds.extend_from_slice(takes);
            bounds.push(d.len());
            let want: Vec<[u8; 32]> = bounds
                .windows(2)
                .map(|w| sha2::Sha256::digest(&d[w[0]..w[1]]).into())
                .collect();
            assert_eq!(shas, want, "cuts {cuts:?} takes {takes:?}");
        }
    }

    #[test]
    fn md5_alone_when_no_sha256_is_wanted() {
        let d = data(5000, 3);
        let mut p = PayloadDigest::new(false);
        p.update(&d);
        assert_eq!(p.take_sha256(), None);
        let (md5, sha) = p.finalize();
        assert_eq!(md5, <[u8; 16]>::from(::md5::Md5::digest(&d)));
        assert_eq!(sha, None);
    }
}
