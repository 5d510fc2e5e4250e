//! The shard file format and the stripe layout behind it.
//!
//! An object (or one multipart part) is a *segment*: a byte range cut into stripes of
//! `k` data blocks, each stripe extended with `m` parity blocks. Shard `i` of a segment
//! is block `i` of every stripe, in order, and lives in one file on one node:
//!
//! ```text
//! header   magic "CRNS" | version u8 | reserved u8 | header_len u16
//!          object_id [16] | segment u32 | shard_index u8 | k u8 | m u8 | reserved u8
//!          block_size u32 | segment_len u64
//!          bucket_len u16 | bucket | key_len u16 | key
//!          header_crc32c u32                      (all integers little-endian)
//! blocks   block 0 data | crc32c(block 0) u32 | block 1 data | crc32c u32 | ...
//! ```
//!
//! Every block is `block_size` bytes except in the last stripe, whose blocks are
//! `ceil(rest / k)` bytes (zero-padded where the data runs out), so a small object
//! costs `(k+m)/k` of its size, not `k+m` whole blocks.

use bytes::{BufMut, Bytes, BytesMut};

use crate::ids::ObjectId;

/// Bytes of crc32c after each block.
pub const CRC_LEN: usize = 4;
/// First bytes of every shard file.
pub const MAGIC: [u8; 4] = *b"CRNS";
/// Current shard format version.
pub const FORMAT_VERSION: u8 = 1;
/// Default data bytes per block.
pub const DEFAULT_BLOCK_SIZE: u32 = 1024 * 1024;
/// Upper bound on a header, to refuse garbage early.
pub const MAX_HEADER_LEN: usize = 4096;
const FIXED_HEADER_LEN: usize = 4 + 1 + 1 + 2 + 16 + 4 + 1 + 1 + 1 + 1 + 4 + 8;

/// Errors reading or checking shard data.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("not a shard header: {0}")]
    BadHeader(&'static str),
    #[error("unsupported shard format version {0}")]
    UnsupportedVersion(u8),
    #[error("header checksum mismatch")]
    HeaderChecksum,
    #[error("block {block} failed its crc32c check")]
    BlockChecksum { block: u64 },
    #[error("invalid geometry: {0}")]
    Geometry(&'static str),
    #[error("bytes past the last block expected")]
    TooLong,
}

/// Where blocks sit for a segment of a given length and geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Data shards per stripe.
    pub k: u8,
    /// Parity shards per stripe.
    pub m: u8,
    /// Bytes of a full block.
    pub block_size: u32,
    /// Logical bytes in the segment.
    pub segment_len: u64,
}

impl Layout {
    /// A checked layout.
    pub fn new(k: u8, m: u8, block_size: u32, segment_len: u64) -> Result<Self, ShardError> {
        if k == 0 {
            return Err(ShardError::Geometry("k must be at least 1"));
        }
        if k as usize + m as usize > 255 {
            return Err(ShardError::Geometry("k+m must be at most 255"));
        }
        if block_size == 0 || block_size > 64 * 1024 * 1024 {
            return Err(ShardError::Geometry("block size out of range"));
        }
        Ok(Self {
            k,
            m,
            block_size,
            segment_len,
        })
    }

    /// Logical bytes carried by one full stripe.
    pub fn stripe_data_len(&self) -> u64 {
        self.k as u64 * self.block_size as u64
    }

    /// Number of stripes (= blocks per shard).
    pub fn stripes(&self) -> u64 {
        self.segment_len.div_ceil(self.stripe_data_len())
    }

    /// Length of each block of stripe `s` (the same for all k+m shards).
    pub fn block_len(&self, s: u64) -> usize {
        let full = self.segment_len / self.stripe_data_len();
        if s < full {
            self.block_size as usize
        } else {
            let rest = self.segment_len - full * self.stripe_data_len();
            rest.div_ceil(self.k as u64) as usize
        }
    }

    /// Logical byte offset (within the segment) where stripe `s` starts.
    pub fn stripe_offset(&self, s: u64) -> u64 {
        s * self.stripe_data_len()
    }

    /// Logical bytes in stripe `s` (without padding).
    pub fn stripe_len(&self, s: u64) -> u64 {
        let start = self.stripe_offset(s);
        self.segment_len
            .saturating_sub(start)
            .min(self.stripe_data_len())
    }

    /// Stripe holding logical byte `offset`.
    pub fn stripe_of(&self, offset: u64) -> u64 {
        offset / self.stripe_data_len()
    }

    /// Offset of block `s` (its data, then its crc) inside a shard file's block area.
    pub fn block_file_offset(&self, s: u64) -> u64 {
        let full = self.segment_len / self.stripe_data_len();
        let full_len = self.block_size as u64 + CRC_LEN as u64;
        if s <= full {
            s * full_len
        } else {
            full * full_len + (self.block_len(full) + CRC_LEN) as u64
        }
    }

    /// Bytes of the block area of every shard (data + crcs), without the header.
    pub fn shard_body_len(&self) -> u64 {
        self.block_file_offset(self.stripes())
    }
}

/// The self-describing header at the start of every shard file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardHeader {
    /// The object version this shard belongs to.
    pub object_id: ObjectId,
    /// Segment number: 0 for a single PUT, the part number for multipart.
    pub segment: u32,
    /// Which of the k+m shards this is (0..k are data, k.. are parity).
    pub shard_index: u8,
    /// Geometry and length of the segment.
    pub layout: Layout,
    /// Bucket the object was written to (for rebuilding the catalog from nodes).
    pub bucket: String,
    /// Key the object was written to.
    pub key: String,
}

impl ShardHeader {
    /// Encodes the header, ending with its own crc32c.
    pub fn encode(&self) -> Bytes {
        let len = self.encoded_len();
        let mut b = BytesMut::with_capacity(len);
        b.put_slice(&MAGIC);
        b.put_u8(FORMAT_VERSION);
        b.put_u8(0);
        b.put_u16_le(len as u16);
        b.put_slice(&self.object_id.0);
        b.put_u32_le(self.segment);
        b.put_u8(self.shard_index);
        b.put_u8(self.layout.k);
        b.put_u8(self.layout.m);
        b.put_u8(0);
        b.put_u32_le(self.layout.block_size);
        b.put_u64_le(self.layout.segment_len);
        b.put_u16_le(self.bucket.len() as u16);
        b.put_slice(self.bucket.as_bytes());
        b.put_u16_le(self.key.len() as u16);
        b.put_slice(self.key.as_bytes());
        let crc = crc32c::crc32c(&b);
        b.put_u32_le(crc);
        b.freeze()
    }

    /// Bytes the encoded header takes.
    pub fn encoded_len(&self) -> usize {
        FIXED_HEADER_LEN + 2 + self.bucket.len() + 2 + self.key.len() + CRC_LEN
    }

    /// Total bytes of the shard file this header starts.
    pub fn file_len(&self) -> u64 {
        self.encoded_len() as u64 + self.layout.shard_body_len()
    }

    /// Reads the header's total length from its first 8 bytes, so a reader knows
    /// how much to buffer before calling [`ShardHeader::decode`].
    pub fn peek_len(prefix: &[u8]) -> Result<usize, ShardError> {
        if prefix.len() < 8 {
            return Err(ShardError::BadHeader("truncated"));
        }
        if prefix[0..4] != MAGIC {
            return Err(ShardError::BadHeader("bad magic"));
        }
        if prefix[4] != FORMAT_VERSION {
            return Err(ShardError::UnsupportedVersion(prefix[4]));
        }
        let len = u16::from_le_bytes([prefix[6], prefix[7]]) as usize;
        if !(FIXED_HEADER_LEN + 4 + CRC_LEN..=MAX_HEADER_LEN).contains(&len) {
            return Err(ShardError::BadHeader("header length out of range"));
        }
        Ok(len)
    }

    /// Decodes and checks a complete header (exactly `peek_len` bytes).
    pub fn decode(buf: &[u8]) -> Result<Self, ShardError> {
        let len = Self::peek_len(buf)?;
        if buf.len() != len {
            return Err(ShardError::BadHeader("length mismatch"));
        }
        let (body, crc) = buf.split_at(len - CRC_LEN);
        let want = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32c::crc32c(body) != want {
            return Err(ShardError::HeaderChecksum);
        }
        let mut r = Reader { buf: body, pos: 8 };
        let mut oid = [0u8; 16];
        oid.copy_from_slice(r.take(16)?);
        let segment = r.u32()?;
        let shard_index = r.u8()?;
        let k = r.u8()?;
        let m = r.u8()?;
        let _reserved = r.u8()?;
        let block_size = r.u32()?;
        let segment_len = r.u64()?;
        let bucket = r.string()?;
        let key = r.string()?;
        if r.pos != body.len() {
            return Err(ShardError::BadHeader("trailing bytes"));
        }
        let layout = Layout::new(k, m, block_size, segment_len)?;
        if shard_index as usize >= k as usize + m as usize {
            return Err(ShardError::Geometry("shard index beyond k+m"));
        }
        Ok(Self {
            object_id: ObjectId(oid),
            segment,
            shard_index,
            layout,
            bucket,
            key,
        })
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ShardError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(ShardError::BadHeader("overflow"))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(ShardError::BadHeader("truncated"))?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, ShardError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, ShardError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, ShardError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn string(&mut self) -> Result<String, ShardError> {
        let s = self.take(2)?;
        let n = u16::from_le_bytes([s[0], s[1]]) as usize;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| ShardError::BadHeader("name not utf-8"))
    }
}

/// crc32c of a block, as stored after it.
pub fn block_crc(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Extends `crc` (a [`block_crc`] of the bytes before) over `data`.
pub fn block_crc_append(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

/// Checks a stored block (data followed by its 4-byte crc) and returns the data part.
pub fn verify_block(stored: &[u8], block: u64) -> Result<&[u8], ShardError> {
    if stored.len() < CRC_LEN {
        return Err(ShardError::BlockChecksum { block });
    }
    let (data, crc) = stored.split_at(stored.len() - CRC_LEN);
    let want = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if block_crc(data) == want {
        Ok(data)
    } else {
        Err(ShardError::BlockChecksum { block })
    }
}

/// What [`BlockVerifier::feed`] found in the bytes it was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// These bytes of the input are data of the block being received.
    Data(std::ops::Range<usize>),
    /// Block `block` is complete and its crc32c matched.
    Verified(u64),
}

/// Checks stored blocks (data then crc32c, one after another) as they arrive in pieces
/// of any size, without gathering a block in one buffer.
#[derive(Debug)]
pub struct BlockVerifier {
    layout: Layout,
    /// Block being received.
    block: u64,
    /// One past the last block expected.
    end: u64,
    /// Data length of the current block.
    block_len: usize,
    /// Data bytes of the current block seen so far.
    seen: usize,
    crc: u32,
    crc_buf: [u8; CRC_LEN],
    crc_seen: usize,
    total: u64,
}

impl BlockVerifier {
    /// A verifier expecting exactly blocks `from..end` of `layout`.
    pub fn new(layout: Layout, from: u64, end: u64) -> Self {
        Self {
            layout,
            block: from,
            end,
            block_len: if from < end {
                layout.block_len(from)
            } else {
                0
            },
            seen: 0,
            crc: 0,
            crc_buf: [0; CRC_LEN],
            crc_seen: 0,
            total: 0,
        }
    }

    /// Consumes the next bytes, telling `found` which of them are block data and when a
    /// block has checked out. Fails on the first bad block, or on bytes past the last.
    pub fn feed(&mut self, data: &[u8], mut found: impl FnMut(Piece)) -> Result<(), ShardError> {
        let mut at = 0;
        while at < data.len() {
            if self.block >= self.end {
                return Err(ShardError::TooLong);
            }
            let rest = &data[at..];
            if self.seen < self.block_len {
                let n = (self.block_len - self.seen).min(rest.len());
                self.crc = block_crc_append(self.crc, &rest[..n]);
                found(Piece::Data(at..at + n));
                self.seen += n;
                at += n;
            } else {
                let n = (CRC_LEN - self.crc_seen).min(rest.len());
                self.crc_buf[self.crc_seen..self.crc_seen + n].copy_from_slice(&rest[..n]);
                self.crc_seen += n;
                at += n;
                if self.crc_seen == CRC_LEN {
                    if u32::from_le_bytes(self.crc_buf) != self.crc {
                        return Err(ShardError::BlockChecksum { block: self.block });
                    }
                    found(Piece::Verified(self.block));
                    self.block += 1;
                    self.seen = 0;
                    self.crc = 0;
                    self.crc_seen = 0;
                    if self.block < self.end {
                        self.block_len = self.layout.block_len(self.block);
                    }
                }
            }
        }
        self.total += data.len() as u64;
        Ok(())
    }

    /// Whether every expected block has arrived and checked out.
    pub fn is_done(&self) -> bool {
        self.block >= self.end
    }

    /// Bytes consumed so far.
    pub fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: u64) -> ShardHeader {
        ShardHeader {
            object_id: ObjectId::random(),
            segment: 7,
            shard_index: 2,
            layout: Layout::new(3, 1, 1024, len).expect("layout"),
            bucket: "b".into(),
            key: "dir/model.safetensors".into(),
        }
    }

    #[test]
    fn header_round_trips() {
        let h = header(123_456);
        let enc = h.encode();
        assert_eq!(enc.len(), h.encoded_len());
        assert_eq!(ShardHeader::peek_len(&enc).expect("peek"), enc.len());
        assert_eq!(ShardHeader::decode(&enc).expect("decode"), h);
    }

    #[test]
    fn corrupt_header_is_refused() {
        let enc = header(10).encode().to_vec();
        for i in 0..enc.len() {
            let mut bad = enc.clone();
            bad[i] ^= 0x40;
            assert!(ShardHeader::decode(&bad).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn layout_covers_every_byte_once() {
        for len in [
            0u64,
            1,
            2,
            3,
            1023,
            1024,
            3072,
            3073,
            10_000,
            3 * 1024 * 5 + 7,
        ] {
            let l = Layout::new(3, 1, 1024, len).expect("layout");
            let mut total = 0;
            for s in 0..l.stripes() {
                total += l.stripe_len(s);
                assert!(l.block_len(s) * 3 >= l.stripe_len(s) as usize);
                assert!(l.block_len(s) > 0);
            }
            assert_eq!(total, len);
            let body: u64 = (0..l.stripes())
                .map(|s| (l.block_len(s) + CRC_LEN) as u64)
                .sum();
            assert_eq!(body, l.shard_body_len());
        }
    }

    #[test]
    fn verify_block_catches_flips() {
        let data = vec![7u8; 100];
        let mut stored = data.clone();
        stored.extend_from_slice(&block_crc(&data).to_le_bytes());
        assert_eq!(verify_block(&stored, 0).expect("ok"), &data[..]);
        stored[50] ^= 1;
        assert!(verify_block(&stored, 0).is_err());
    }

    /// Stored blocks `from..end` of `layout`, each block's bytes distinct.
    fn stored_blocks(layout: &Layout, from: u64, end: u64) -> (Vec<u8>, Vec<Vec<u8>>) {
        let (mut stored, mut data) = (Vec::new(), Vec::new());
        for s in from..end {
            let d: Vec<u8> = (0..layout.block_len(s))
                .map(|i| (i as u64 * 7 + s) as u8)
                .collect();
            stored.extend_from_slice(&d);
            stored.extend_from_slice(&block_crc(&d).to_le_bytes());
            data.push(d);
        }
        (stored, data)
    }

    #[test]
    fn verifier_hands_back_exactly_the_data_whatever_the_chunking() {
        let layout = Layout::new(3, 1, 100, 1000).expect("layout");
        let (from, end) = (1, layout.stripes());
        let (stored, want) = stored_blocks(&layout, from, end);
        for chunk in [1, 3, 4, 5, 99, 100, 104, 105, 1000] {
            let mut v = BlockVerifier::new(layout, from, end);
            let (mut got, mut cur, mut verified) = (Vec::new(), Vec::new(), Vec::new());
            for c in stored.chunks(chunk) {
                v.feed(c, |p| match p {
                    Piece::Data(r) => cur.extend_from_slice(&c[r]),
                    Piece::Verified(b) => {
                        verified.push(b);
                        got.push(std::mem::take(&mut cur));
                    }
                })
                .expect("good blocks");
            }
            assert!(v.is_done());
            assert_eq!(got, want, "chunk {chunk}");
            assert_eq!(verified, (from..end).collect::<Vec<_>>());
            assert_eq!(v.total(), stored.len() as u64);
        }
    }

    #[test]
    fn verifier_stops_at_a_bad_block_and_at_extra_bytes() {
        let layout = Layout::new(2, 1, 64, 300).expect("layout");
        let (stored, _) = stored_blocks(&layout, 0, layout.stripes());
        for flip in [0, 63, 64, 67, 68, stored.len() - 1] {
            let mut bad = stored.clone();
            bad[flip] ^= 0x10;
            let mut v = BlockVerifier::new(layout, 0, layout.stripes());
            let block = (flip / 68) as u64;
            let mut verified = Vec::new();
            let r = v.feed(&bad, |p| {
                if let Piece::Verified(b) = p {
                    verified.push(b)
                }
            });
            assert!(matches!(r, Err(ShardError::BlockChecksum { block: b }) if b == block));
            assert_eq!(verified, (0..block).collect::<Vec<_>>(), "flip at {flip}");
        }
        let mut v = BlockVerifier::new(layout, 0, layout.stripes());
        v.feed(&stored[..stored.len() - 1], |_| {}).expect("prefix");
        assert!(!v.is_done());
        v.feed(&stored[stored.len() - 1..], |_| {})
            .expect("last byte");
        assert!(v.is_done());
        assert!(matches!(v.feed(&[0], |_| {}), Err(ShardError::TooLong)));
    }
}
