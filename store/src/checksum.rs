//! S3 "flexible checksums": CRC32, CRC32C, CRC64NVME, SHA1, SHA256, computed while the
//! body streams. Values are base64 of the big-endian digest, as S3 sends them.

use base64::Engine as _;
use sha1::Digest as _;

/// A checksum algorithm S3 clients can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl Algorithm {
    /// All algorithms, in header-lookup order.
    pub const ALL: [Algorithm; 5] = [
        Algorithm::Crc32,
        Algorithm::Crc32c,
        Algorithm::Crc64Nvme,
        Algorithm::Sha1,
        Algorithm::Sha256,
    ];

    /// Parses `CRC32`, `crc32c`, ... as sent in `x-amz-sdk-checksum-algorithm`.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_uppercase().as_str() {
            "CRC32" => Algorithm::Crc32,
            "CRC32C" => Algorithm::Crc32c,
            "CRC64NVME" => Algorithm::Crc64Nvme,
            "SHA1" => Algorithm::Sha1,
            "SHA256" => Algorithm::Sha256,
            _ => return None,
        })
    }

    /// Upper-case name (`CRC32C`).
    pub fn name(&self) -> &'static str {
        match self {
            Algorithm::Crc32 => "CRC32",
            Algorithm::Crc32c => "CRC32C",
            Algorithm::Crc64Nvme => "CRC64NVME",
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
        }
    }

    /// The header carrying this checksum (`x-amz-checksum-crc32c`).
    pub fn header(&self) -> &'static str {
        match self {
            Algorithm::Crc32 => "x-amz-checksum-crc32",
            Algorithm::Crc32c => "x-amz-checksum-crc32c",
            Algorithm::Crc64Nvme => "x-amz-checksum-crc64nvme",
            Algorithm::Sha1 => "x-amz-checksum-sha1",
            Algorithm::Sha256 => "x-amz-checksum-sha256",
        }
    }

    /// The algorithm a header name belongs to.
    pub fn from_header(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.header().eq_ignore_ascii_case(name))
    }
}

impl serde::Serialize for Algorithm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Algorithm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Algorithm::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown checksum algorithm {name:?}")))
    }
}

/// A running checksum.
pub enum Hasher {
    Crc32(crc32fast::Hasher),
    Crc32c(u32),
    Crc64Nvme(crc64fast_nvme::Digest),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Hasher {
    /// A fresh hasher for `alg`.
    pub fn new(alg: Algorithm) -> Self {
        match alg {
            Algorithm::Crc32 => Hasher::Crc32(crc32fast::Hasher::new()),
            Algorithm::Crc32c => Hasher::Crc32c(0),
            Algorithm::Crc64Nvme => Hasher::Crc64Nvme(crc64fast_nvme::Digest::new()),
            Algorithm::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Crc32(h) => h.update(data),
            Hasher::Crc32c(c) => *c = crc32c::crc32c_append(*c, data),
            Hasher::Crc64Nvme(h) => h.write(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
        }
    }

    /// The raw big-endian digest.
    pub fn finish_raw(self) -> Vec<u8> {
        match self {
            Hasher::Crc32(h) => h.finalize().to_be_bytes().to_vec(),
            Hasher::Crc32c(c) => c.to_be_bytes().to_vec(),
            Hasher::Crc64Nvme(h) => h.sum64().to_be_bytes().to_vec(),
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
        }
    }

    /// The base64 value as sent in headers.
    pub fn finish(self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.finish_raw())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_for_123456789() {
        let expect = [
            (Algorithm::Crc32, "y/Q5Jg=="),
            (Algorithm::Crc32c, "4waSgw=="),
            (Algorithm::Crc64Nvme, "rosUhgp5mIg="),
            (Algorithm::Sha1, "98O8HYCOBHMq32eZZczDTKeuNEE="),
        ];
        for (alg, want) in expect {
            let mut h = Hasher::new(alg);
            h.update(b"1234");
            h.update(b"56789");
            assert_eq!(h.finish(), want, "{alg:?}");
        }
    }
}

/// Combines `crc1` (of A) and `crc2` (of B, `len2` bytes) into the CRC of A‖B, for the
/// reflected CRCs with all-ones init and xor-out that S3 uses (zlib's method: apply
/// `len2` zero bytes to `crc1` as a GF(2) matrix power, then xor).
pub fn crc_combine(crc1: u64, crc2: u64, mut len2: u64, poly: u64, width: usize) -> u64 {
    fn times(mat: &[u64], mut vec: u64) -> u64 {
        let mut sum = 0;
        let mut i = 0;
        while vec != 0 {
            if vec & 1 != 0 {
                sum ^= mat[i];
            }
            vec >>= 1;
            i += 1;
        }
        sum
    }
    fn square(out: &mut [u64], mat: &[u64]) {
        for n in 0..mat.len() {
            out[n] = times(mat, mat[n]);
        }
    }
    if len2 == 0 {
        return crc1;
    }
    let mut crc1 = crc1;
    let mut odd = vec![0u64; width];
    let mut even = vec![0u64; width];
    odd[0] = poly;
    let mut row = 1u64;
    for item in odd.iter_mut().skip(1) {
        *item = row;
        row <<= 1;
    }
    square(&mut even, &odd);
    square(&mut odd, &even);
    loop {
        square(&mut even, &odd);
        if len2 & 1 != 0 {
            crc1 = times(&even, crc1);
        }
        len2 >>= 1;
        if len2 == 0 {
            break;
        }
        square(&mut odd, &even);
        if len2 & 1 != 0 {
            crc1 = times(&odd, crc1);
        }
        len2 >>= 1;
        if len2 == 0 {
            break;
        }
    }
    crc1 ^ crc2
}

impl Algorithm {
    /// Reflected polynomial and width of a CRC algorithm (None for SHA).
    pub fn crc_params(&self) -> Option<(u64, usize)> {
        match self {
            Algorithm::Crc32 => Some((0xEDB8_8320, 32)),
            Algorithm::Crc32c => Some((0x82F6_3B78, 32)),
            Algorithm::Crc64Nvme => Some((0x9A6C_9329_AC4B_C9B5, 64)),
            _ => None,
        }
    }

    /// Whole-object CRC from per-part CRCs (base64) and part lengths.
    pub fn combine_parts(&self, parts: &[(String, u64)]) -> Option<String> {
        let (poly, width) = self.crc_params()?;
        let engine = base64::engine::general_purpose::STANDARD;
        let mut acc: Option<u64> = None;
        for (value, len) in parts {
            let raw = engine.decode(value).ok()?;
            let v = match raw.len() {
                4 => u32::from_be_bytes(raw.try_into().ok()?) as u64,
                8 => u64::from_be_bytes(raw.try_into().ok()?),
                _ => return None,
            };
            acc = Some(match acc {
                None => v,
                Some(a) => crc_combine(a, v, *len, poly, width),
            });
        }
        let v = acc.unwrap_or(0);
        Some(if width == 32 {
            engine.encode((v as u32).to_be_bytes())
        } else {
            engine.encode(v.to_be_bytes())
        })
    }

    /// COMPOSITE checksum: the algorithm over the concatenated raw part digests, `-N`.
    pub fn composite(&self, parts: &[String]) -> Option<String> {
        let engine = base64::engine::general_purpose::STANDARD;
        let mut h = Hasher::new(*self);
        for p in parts {
            h.update(&engine.decode(p).ok()?);
        }
        Some(format!("{}-{}", h.finish(), parts.len()))
    }
}

#[cfg(test)]
mod combine_tests {
    use super::*;

    #[test]
    fn combined_crcs_equal_the_whole() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + 3) as u8).collect();
        for alg in [Algorithm::Crc32, Algorithm::Crc32c, Algorithm::Crc64Nvme] {
            let mut whole = Hasher::new(alg);
            whole.update(&data);
            let want = whole.finish();
            let mut parts = Vec::new();
            for chunk in data.chunks(30_001) {
                let mut h = Hasher::new(alg);
                h.update(chunk);
                parts.push((h.finish(), chunk.len() as u64));
            }
            assert_eq!(
                alg.combine_parts(&parts).as_deref(),
                Some(want.as_str()),
                "{alg:?}"
            );
        }
    }
}
