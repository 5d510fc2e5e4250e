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
//!          header_crc32c u32 | header_tag [16]     (all integers little-endian)
//! blocks   block 0 data | crc32c u32 | tag [16] | block 1 data | crc32c u32 | tag [16] | ...
//! ```
//!
//! The crc32c catches bit rot cheaply (nodes check it on every read). The tags are keyed
//! BLAKE3 MACs under a key derived from the cluster secret ([`ShardKey`]), bound to the
//! shard's identity and the block's number: nobody without the secret can write a block
//! (or a header) that passes, nor move a genuine block to another shard or position.
//! Version 1 files (written before tags) have neither `header_tag` nor block tags; they
//! are read with their crc32c only, and only where the catalog says the segment is
//! version 1.
//!
//! Every block is `block_size` bytes except in the last stripe, whose blocks are
//! `ceil(rest / k)` bytes (zero-padded where the data runs out), so a small object
//! costs `(k+m)/k` of its size, not `k+m` whole blocks.

use bytes::{BufMut, Bytes, BytesMut};
use subtle::ConstantTimeEq;

use crate::ids::ObjectId;
use crate::protocol::ShardRef;

/// Bytes of crc32c after each block.
pub const CRC_LEN: usize = 4;
/// Bytes of the keyed tag after each block's crc32c (format 2).
pub const TAG_LEN: usize = 16;
/// First bytes of every shard file.
pub const MAGIC: [u8; 4] = *b"CRNS";
/// Shard format version written: 2, with keyed tags.
pub const FORMAT_VERSION: u8 = 2;
/// The format without tags, still read.
pub const FORMAT_UNTAGGED: u8 = 1;
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
    #[error("block {block} failed its authentication tag")]
    BlockTag { block: u64 },
    #[error("header failed its authentication tag")]
    HeaderTag,
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
    /// Shard format version ([`FORMAT_VERSION`] or [`FORMAT_UNTAGGED`]): whether blocks
    /// carry tags.
    pub format: u8,
}

impl Layout {
    /// A checked layout in the current format.
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
            format: FORMAT_VERSION,
        })
    }

    /// The same layout in shard format `format`.
    pub fn with_format(self, format: u8) -> Result<Self, ShardError> {
        match format {
            FORMAT_UNTAGGED | FORMAT_VERSION => Ok(Self { format, ..self }),
            v => Err(ShardError::UnsupportedVersion(v)),
        }
    }

    /// Whether blocks carry keyed tags.
    pub fn tagged(&self) -> bool {
        self.format >= FORMAT_VERSION
    }

    /// Bytes stored after each block's data: its crc32c, then its tag if tagged.
    pub fn trailer_len(&self) -> usize {
        if self.tagged() {
            CRC_LEN + TAG_LEN
        } else {
            CRC_LEN
        }
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

    /// Offset of block `s` (its data, then its trailer) inside a shard file's block area.
    pub fn block_file_offset(&self, s: u64) -> u64 {
        let full = self.segment_len / self.stripe_data_len();
        let trailer = self.trailer_len() as u64;
        let full_len = self.block_size as u64 + trailer;
        if s <= full {
            s * full_len
        } else {
            full * full_len + self.block_len(full) as u64 + trailer
        }
    }

    /// Bytes of block `s` as stored: data and trailer.
    pub fn stored_block_len(&self, s: u64) -> usize {
        self.block_len(s) + self.trailer_len()
    }

    /// Bytes of the block area of every shard (data + trailers), without the header.
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
    /// The shard this header describes.
    pub fn shard_ref(&self) -> ShardRef {
        ShardRef {
            object: self.object_id,
            segment: self.segment,
            index: self.shard_index,
        }
    }

    /// Encodes the header in its layout's format, ending with its own crc32c and, when
    /// tagged, its tag under `key`.
    pub fn encode(&self, key: &ShardKey) -> Bytes {
        let len = self.encoded_len();
        let mut b = BytesMut::with_capacity(len);
        b.put_slice(&MAGIC);
        b.put_u8(self.layout.format);
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
        if self.layout.tagged() {
            let tag = key.header_tag(&b);
            b.put_slice(&tag);
        }
        b.freeze()
    }

    /// Bytes the encoded header takes.
    pub fn encoded_len(&self) -> usize {
        let tag = if self.layout.tagged() { TAG_LEN } else { 0 };
        FIXED_HEADER_LEN + 2 + self.bucket.len() + 2 + self.key.len() + CRC_LEN + tag
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
        let tag = match prefix[4] {
            FORMAT_UNTAGGED => 0,
            FORMAT_VERSION => TAG_LEN,
            v => return Err(ShardError::UnsupportedVersion(v)),
        };
        let len = u16::from_le_bytes([prefix[6], prefix[7]]) as usize;
        if !(FIXED_HEADER_LEN + 4 + CRC_LEN + tag..=MAX_HEADER_LEN).contains(&len) {
            return Err(ShardError::BadHeader("header length out of range"));
        }
        Ok(len)
    }

    /// Decodes and checks a complete header (exactly `peek_len` bytes) against its
    /// crc32c. The tag of a tagged header is not checked: see [`ShardHeader::decode_verified`].
    pub fn decode(buf: &[u8]) -> Result<Self, ShardError> {
        let len = Self::peek_len(buf)?;
        if buf.len() != len {
            return Err(ShardError::BadHeader("length mismatch"));
        }
        let format = buf[4];
        let tag = if format == FORMAT_UNTAGGED {
            0
        } else {
            TAG_LEN
        };
        let (body, crc) = buf[..len - tag].split_at(len - tag - CRC_LEN);
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
        let layout = Layout::new(k, m, block_size, segment_len)?.with_format(format)?;
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

    /// [`ShardHeader::decode`], and for a tagged header also its tag under `key`.
    pub fn decode_verified(buf: &[u8], key: &ShardKey) -> Result<Self, ShardError> {
        let header = Self::decode(buf)?;
        if header.layout.tagged() {
            let (signed, tag) = buf.split_at(buf.len() - TAG_LEN);
            if !bool::from(key.header_tag(signed).ct_eq(tag)) {
                return Err(ShardError::HeaderTag);
            }
        }
        Ok(header)
    }
}

/// The key of shard tags, derived from the cluster secret (BLAKE3 `derive_key`), so the
/// gateway and every node hold it and nobody else can make a tag.
#[derive(Clone)]
pub struct ShardKey([u8; 32]);

impl std::fmt::Debug for ShardKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShardKey(..)")
    }
}

/// Domain bytes that keep header tags and block tags apart.
const TAG_DOMAIN_HEADER: u8 = 0;
const TAG_DOMAIN_BLOCK: u8 = 1;

impl ShardKey {
    /// Derives the key from the cluster secret.
    pub fn derive(cluster_secret: &[u8]) -> Self {
        Self(blake3::derive_key(
            "cairn 2026-12 shard header and block tags",
            cluster_secret,
        ))
    }

    fn header_tag(&self, signed: &[u8]) -> [u8; TAG_LEN] {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(&[TAG_DOMAIN_HEADER]);
        h.update(signed);
        truncate(h.finalize())
    }

    /// A tag computation for block `block` of `shard`, fed its data in pieces.
    pub fn block_tagger(&self, shard: &ShardRef, block: u64) -> BlockTagger {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(&[TAG_DOMAIN_BLOCK]);
        h.update(&shard.object.0);
        h.update(&shard.segment.to_le_bytes());
        h.update(&[shard.index]);
        h.update(&block.to_le_bytes());
        BlockTagger(h)
    }

    /// The tag of block `block` of `shard` holding `data`.
    pub fn block_tag(&self, shard: &ShardRef, block: u64, data: &[u8]) -> [u8; TAG_LEN] {
        let mut t = self.block_tagger(shard, block);
        t.update(data);
        t.finish()
    }
}

fn truncate(hash: blake3::Hash) -> [u8; TAG_LEN] {
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&hash.as_bytes()[..TAG_LEN]);
    tag
}

/// One block's tag, computed as its data goes by.
pub struct BlockTagger(blake3::Hasher);

impl BlockTagger {
    /// Adds the next data bytes of the block.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The block's tag.
    pub fn finish(&self) -> [u8; TAG_LEN] {
        truncate(self.0.finalize())
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

/// Splits a stored block (data, then its trailer) into data, crc32c and tag bytes.
fn split_stored<'a>(
    stored: &'a [u8],
    layout: &Layout,
    block: u64,
) -> Result<(&'a [u8], u32, &'a [u8]), ShardError> {
    let trailer = layout.trailer_len();
    if stored.len() < trailer {
        return Err(ShardError::BlockChecksum { block });
    }
    let (data, rest) = stored.split_at(stored.len() - trailer);
    let (crc, tag) = rest.split_at(CRC_LEN);
    Ok((
        data,
        u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]),
        tag,
    ))
}

/// Checks a stored block (data followed by its trailer) against its crc32c and returns
/// the data part. A tag is not checked: see [`verify_block_tag`].
pub fn verify_block<'a>(
    stored: &'a [u8],
    layout: &Layout,
    block: u64,
) -> Result<&'a [u8], ShardError> {
    let (data, crc, _) = split_stored(stored, layout, block)?;
    if block_crc(data) == crc {
        Ok(data)
    } else {
        Err(ShardError::BlockChecksum { block })
    }
}

/// [`verify_block`], and for a tagged layout also the block's tag under `key` as block
/// `block` of `shard`.
pub fn verify_block_tag<'a>(
    stored: &'a [u8],
    layout: &Layout,
    key: &ShardKey,
    shard: &ShardRef,
    block: u64,
) -> Result<&'a [u8], ShardError> {
    let data = verify_block(stored, layout, block)?;
    if layout.tagged() {
        let (_, _, tag) = split_stored(stored, layout, block)?;
        if !bool::from(key.block_tag(shard, block, data).ct_eq(tag)) {
            return Err(ShardError::BlockTag { block });
        }
    }
    Ok(data)
}

/// Block `block` of `shard` as stored: `data`, then its crc32c and (tagged layouts) its
/// tag under `key`.
pub fn stored_block(
    layout: &Layout,
    key: &ShardKey,
    shard: &ShardRef,
    block: u64,
    data: &[u8],
) -> Vec<u8> {
    let mut tagger = key.block_tagger(shard, block);
    tagger.update(data);
    let mut out = Vec::with_capacity(data.len() + layout.trailer_len());
    out.extend_from_slice(data);
    out.extend_from_slice(&block_trailer(layout, block_crc(data), Some(&tagger)));
    out
}

/// The trailer stored after block `block` of `shard`, whose data has crc32c `crc` and,
/// for a tagged layout, tag computation `tagger`.
pub fn block_trailer(layout: &Layout, crc: u32, tagger: Option<&BlockTagger>) -> Bytes {
    let mut t = BytesMut::with_capacity(layout.trailer_len());
    t.put_u32_le(crc);
    if layout.tagged() {
        if let Some(tagger) = tagger {
            t.put_slice(&tagger.finish());
        }
    }
    t.freeze()
}

/// What [`BlockVerifier::feed`] found in the bytes it was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// These bytes of the input are data of the block being received.
    Data(std::ops::Range<usize>),
    /// Block `block` is complete and its checks passed.
    Verified(u64),
}

/// Checks stored blocks (data then trailer, one after another) as they arrive in pieces
/// of any size, without gathering a block in one buffer.
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
    trailer: [u8; CRC_LEN + TAG_LEN],
    trailer_seen: usize,
    /// Key and shard identity when tags are checked, with the current block's tag.
    auth: Option<(ShardKey, ShardRef, BlockTagger)>,
    total: u64,
}

impl std::fmt::Debug for BlockVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockVerifier")
            .field("layout", &self.layout)
            .field("block", &self.block)
            .field("end", &self.end)
            .field("authenticated", &self.auth.is_some())
            .finish()
    }
}

impl BlockVerifier {
    /// A verifier expecting exactly blocks `from..end` of `layout`, checking each one's
    /// crc32c (tags, if any, are passed over).
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
            trailer: [0; CRC_LEN + TAG_LEN],
            trailer_seen: 0,
            auth: None,
            total: 0,
        }
    }

    /// A verifier that also checks each block's tag under `key` as a block of `shard`
    /// (for a tagged layout; an untagged one has only its crc32c).
    pub fn authenticated(
        layout: Layout,
        from: u64,
        end: u64,
        key: &ShardKey,
        shard: ShardRef,
    ) -> Self {
        let mut v = Self::new(layout, from, end);
        if layout.tagged() {
            v.auth = Some((key.clone(), shard, key.block_tagger(&shard, from)));
        }
        v
    }

    /// Consumes the next bytes, telling `found` which of them are block data and when a
    /// block has checked out. Fails on the first bad block, or on bytes past the last.
    pub fn feed(&mut self, data: &[u8], mut found: impl FnMut(Piece)) -> Result<(), ShardError> {
        let trailer_len = self.layout.trailer_len();
        let mut at = 0;
        while at < data.len() {
            if self.block >= self.end {
                return Err(ShardError::TooLong);
            }
            let rest = &data[at..];
            if self.seen < self.block_len {
                let n = (self.block_len - self.seen).min(rest.len());
                self.crc = block_crc_append(self.crc, &rest[..n]);
                if let Some((_, _, tagger)) = &mut self.auth {
                    tagger.update(&rest[..n]);
                }
                found(Piece::Data(at..at + n));
                self.seen += n;
                at += n;
            } else {
                let n = (trailer_len - self.trailer_seen).min(rest.len());
                self.trailer[self.trailer_seen..self.trailer_seen + n].copy_from_slice(&rest[..n]);
                self.trailer_seen += n;
                at += n;
                if self.trailer_seen == trailer_len {
                    self.check_trailer()?;
                    found(Piece::Verified(self.block));
                    self.block += 1;
                    self.seen = 0;
                    self.crc = 0;
                    self.trailer_seen = 0;
                    if self.block < self.end {
                        self.block_len = self.layout.block_len(self.block);
                        if let Some((key, shard, tagger)) = &mut self.auth {
                            *tagger = key.block_tagger(shard, self.block);
                        }
                    }
                }
            }
        }
        self.total += data.len() as u64;
        Ok(())
    }

    fn check_trailer(&self) -> Result<(), ShardError> {
        let (crc, tag) = self.trailer.split_at(CRC_LEN);
        if u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) != self.crc {
            return Err(ShardError::BlockChecksum { block: self.block });
        }
        if let Some((_, _, tagger)) = &self.auth {
            if !bool::from(tagger.finish().ct_eq(&tag[..TAG_LEN])) {
                return Err(ShardError::BlockTag { block: self.block });
            }
        }
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

    fn key() -> ShardKey {
        ShardKey::derive(b"cluster secret")
    }

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
        for format in [FORMAT_UNTAGGED, FORMAT_VERSION] {
            let mut h = header(123_456);
            h.layout = h.layout.with_format(format).expect("format");
            let enc = h.encode(&key());
            assert_eq!(enc.len(), h.encoded_len());
            assert_eq!(enc[4], format);
            assert_eq!(ShardHeader::peek_len(&enc).expect("peek"), enc.len());
            assert_eq!(ShardHeader::decode(&enc).expect("decode"), h);
            assert_eq!(
                ShardHeader::decode_verified(&enc, &key()).expect("verified"),
                h
            );
        }
    }

    #[test]
    fn a_header_rewritten_with_a_valid_crc_fails_its_tag() {
        let enc = header(10).encode(&key()).to_vec();
        let mut forged = header(10);
        forged.key = "other/key".into();
        // Someone without the secret: a well-formed header with a correct crc32c.
        let forged = forged.encode(&ShardKey::derive(b"guess")).to_vec();
        assert!(ShardHeader::decode(&forged).is_ok());
        assert!(matches!(
            ShardHeader::decode_verified(&forged, &key()),
            Err(ShardError::HeaderTag)
        ));
        assert!(ShardHeader::decode_verified(&enc, &ShardKey::derive(b"other")).is_err());
    }

    #[test]
    fn corrupt_header_is_refused() {
        let enc = header(10).encode(&key()).to_vec();
        for i in 0..enc.len() {
            let mut bad = enc.clone();
            bad[i] ^= 0x40;
            let refused = ShardHeader::decode_verified(&bad, &key()).is_err();
            assert!(refused, "flip at {i} accepted");
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
            for format in [FORMAT_UNTAGGED, FORMAT_VERSION] {
                let l = l.with_format(format).expect("format");
                let body: u64 = (0..l.stripes()).map(|s| l.stored_block_len(s) as u64).sum();
                assert_eq!(body, l.shard_body_len());
            }
        }
    }

    #[test]
    fn verify_block_catches_flips() {
        let layout = Layout::new(1, 1, 100, 100).expect("layout");
        let shard = header(100).shard_ref();
        let data = vec![7u8; 100];
        let mut stored = data.clone();
        stored.extend_from_slice(&stored_trailer(&layout, &shard, 0, &data));
        assert_eq!(verify_block(&stored, &layout, 0).expect("ok"), &data[..]);
        let tagged = verify_block_tag(&stored, &layout, &key(), &shard, 0).expect("ok");
        assert_eq!(tagged, &data[..]);
        stored[50] ^= 1;
        assert!(verify_block(&stored, &layout, 0).is_err());
    }

    #[test]
    fn a_block_with_a_recomputed_crc_or_moved_fails_its_tag() {
        let layout = Layout::new(1, 1, 100, 100).expect("layout");
        let shard = header(100).shard_ref();
        let data = vec![7u8; 100];
        let mut stored = data.clone();
        stored.extend_from_slice(&stored_trailer(&layout, &shard, 0, &data));
        // Rewritten data with a valid crc32c: the crc passes, the tag does not.
        let mut forged = stored.clone();
        forged[10] = 8;
        let crc = block_crc(&forged[..100]);
        forged[100..104].copy_from_slice(&crc.to_le_bytes());
        assert!(verify_block(&forged, &layout, 0).is_ok());
        assert!(matches!(
            verify_block_tag(&forged, &layout, &key(), &shard, 0),
            Err(ShardError::BlockTag { block: 0 })
        ));
        // A genuine block presented as another block, or as a block of another shard.
        assert!(verify_block_tag(&stored, &layout, &key(), &shard, 1).is_err());
        let other = ShardRef {
            index: shard.index + 1,
            ..shard
        };
        assert!(verify_block_tag(&stored, &layout, &key(), &other, 0).is_err());
        // An untagged (format 1) layout has only its crc32c.
        let v1 = layout.with_format(FORMAT_UNTAGGED).expect("v1");
        let mut old = data.clone();
        old.extend_from_slice(&block_crc(&data).to_le_bytes());
        assert!(verify_block_tag(&old, &v1, &key(), &shard, 0).is_ok());
    }

    fn stored_trailer(layout: &Layout, shard: &ShardRef, block: u64, data: &[u8]) -> Bytes {
        let mut tagger = key().block_tagger(shard, block);
        tagger.update(data);
        block_trailer(layout, block_crc(data), Some(&tagger))
    }

    fn test_shard() -> ShardRef {
        ShardRef {
            object: ObjectId([9; 16]),
            segment: 3,
            index: 1,
        }
    }

    /// Stored blocks `from..end` of `layout`, each block's bytes distinct.
    fn stored_blocks(layout: &Layout, from: u64, end: u64) -> (Vec<u8>, Vec<Vec<u8>>) {
        let shard = test_shard();
        let (mut stored, mut data) = (Vec::new(), Vec::new());
        for s in from..end {
            let d: Vec<u8> = (0..layout.block_len(s))
                .map(|i| (i as u64 * 7 + s) as u8)
                .collect();
            stored.extend_from_slice(&d);
            stored.extend_from_slice(&stored_trailer(layout, &shard, s, &d));
            data.push(d);
        }
        (stored, data)
    }

    #[test]
    fn verifier_hands_back_exactly_the_data_whatever_the_chunking() {
        let layout = Layout::new(3, 1, 100, 1000).expect("layout");
        let (from, end) = (1, layout.stripes());
        let (stored, want) = stored_blocks(&layout, from, end);
        for chunk in [1, 3, 4, 5, 99, 100, 104, 105, 119, 120, 121, 1000] {
            for authenticated in [false, true] {
                let mut v = if authenticated {
                    BlockVerifier::authenticated(layout, from, end, &key(), test_shard())
                } else {
                    BlockVerifier::new(layout, from, end)
                };
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
    }

    #[test]
    fn verifier_stops_at_a_bad_block_and_at_extra_bytes() {
        let layout = Layout::new(2, 1, 64, 300).expect("layout");
        let (stored, _) = stored_blocks(&layout, 0, layout.stripes());
        let authenticated =
            || BlockVerifier::authenticated(layout, 0, layout.stripes(), &key(), test_shard());
        for flip in [0, 63, 64, 67, 68, 83, 84, stored.len() - 1] {
            let mut bad = stored.clone();
            bad[flip] ^= 0x10;
            let block = (0..layout.stripes())
                .rfind(|&b| layout.block_file_offset(b) <= flip as u64)
                .expect("a block");
            let within = flip as u64 - layout.block_file_offset(block);
            let in_tag = within >= (layout.block_len(block) + CRC_LEN) as u64;
            let mut verified = Vec::new();
            let r = authenticated().feed(&bad, |p| {
                if let Piece::Verified(b) = p {
                    verified.push(b)
                }
            });
            if in_tag {
                assert!(matches!(r, Err(ShardError::BlockTag { block: b }) if b == block));
                // Without the key only the crc32c is checked, and it holds.
                let mut plain = BlockVerifier::new(layout, 0, layout.stripes());
                plain.feed(&bad, |_| {}).expect("crc only");
            } else {
                assert!(matches!(r, Err(ShardError::BlockChecksum { block: b }) if b == block));
            }
            assert_eq!(verified, (0..block).collect::<Vec<_>>(), "flip at {flip}");
        }
        let mut v = authenticated();
        v.feed(&stored[..stored.len() - 1], |_| {}).expect("prefix");
        assert!(!v.is_done());
        v.feed(&stored[stored.len() - 1..], |_| {})
            .expect("last byte");
        assert!(v.is_done());
        assert!(matches!(v.feed(&[0], |_| {}), Err(ShardError::TooLong)));
    }

    #[test]
    fn blocks_signed_under_another_key_fail() {
        let layout = Layout::new(2, 1, 64, 300).expect("layout");
        let (stored, _) = stored_blocks(&layout, 0, layout.stripes());
        let mut v = BlockVerifier::authenticated(
            layout,
            0,
            layout.stripes(),
            &ShardKey::derive(b"another cluster"),
            test_shard(),
        );
        assert!(matches!(
            v.feed(&stored, |_| {}),
            Err(ShardError::BlockTag { block: 0 })
        ));
    }
}
