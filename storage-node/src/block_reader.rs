//! A stored shard file opened for reading: its header checked, its blocks read and
//! verified one at a time.
//!
//! Blocks are read with `O_DIRECT` into a few recycled aligned buffers ([`BlockReader`]):
//! the disk fills them without a copy out of the page cache, which would otherwise be
//! most of a node's CPU time on a GET. Where the file system refuses, the page cache is
//! used.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use bytes::Bytes;
use cairn_common::shard::{
    verify_block, verify_block_tag, Layout, ShardError, ShardHeader, ShardKey,
};

use crate::direct_io::{open_direct, AlignedBuf, BufferPool, DIRECT_ALIGN};
use crate::error::NodeError;
use crate::metrics as m;
use crate::store::{ShardAddr, Store};

/// Re-reads a whole shard and checks its header and every block, crc32c and tag under
/// `key` (for scrub), reusing a few buffers. After each block `pace(bytes)` is called; it
/// returns `false` to stop early. `Ok(true)` means the whole shard was checked and is sound.
pub fn verify_shard(
    store: &Store,
    key: &ShardKey,
    addr: &ShardAddr,
    mut pace: impl FnMut(u64) -> bool,
) -> Result<bool, NodeError> {
    let mut reader = BlockReader::open_checked(store, *addr, Some(key))?;
    for block in 0..reader.layout.stripes() {
        let stored = reader.read_authenticated(block, key)?;
        if !pace(stored.len() as u64) {
            return Ok(false);
        }
    }
    // Bytes after the last block mean the file is not what its header describes.
    if reader.file.metadata()?.len()
        > reader.data_start + reader.layout.block_file_offset(reader.layout.stripes())
    {
        m::checksum_failure();
        return Err(NodeError::Corrupt(ShardError::BadHeader(
            "file longer than its header says",
        )));
    }
    Ok(true)
}

/// A shard file opened with its header checked.
pub(crate) struct OpenShard {
    file: File,
    header: ShardHeader,
    /// The header as stored.
    pub(crate) raw_header: Vec<u8>,
}

/// Opens a shard file and reads and checks its header (including that it names `addr`,
/// and its tag when `key` is given).
pub(crate) fn open_shard(
    store: &Store,
    addr: &ShardAddr,
    key: Option<&ShardKey>,
) -> Result<OpenShard, NodeError> {
    let path = store.shard_path(addr);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(NodeError::NoSuchShard),
        Err(e) => return Err(e.into()),
    };
    let corrupt = |e: ShardError| {
        cairn_common::log_limited!(warn, key = addr; shard = %path.display(), error = %e, "stored shard header is bad");
        m::checksum_failure();
        NodeError::Corrupt(e)
    };
    let mut buf = vec![0u8; 8];
    read_exact_or_corrupt(&mut file, &mut buf).map_err(|e| e.map_corrupt(&corrupt))?;
    let len = ShardHeader::peek_len(&buf).map_err(corrupt)?;
    buf.resize(len, 0);
    read_exact_or_corrupt(&mut file, &mut buf[8..]).map_err(|e| e.map_corrupt(&corrupt))?;
    let header = match key {
        Some(key) => ShardHeader::decode_verified(&buf, key),
        None => ShardHeader::decode(&buf),
    }
    .map_err(corrupt)?;
    if header.object_id != addr.object
        || header.segment != addr.segment
        || header.shard_index != addr.index
    {
        return Err(corrupt(ShardError::BadHeader("header names another shard")));
    }
    Ok(OpenShard {
        file,
        header,
        raw_header: buf,
    })
}

enum ReadFail {
    Truncated,
    Io(io::Error),
}

impl ReadFail {
    fn map_corrupt(self, corrupt: &impl Fn(ShardError) -> NodeError) -> NodeError {
        match self {
            ReadFail::Truncated => corrupt(ShardError::BadHeader("truncated")),
            ReadFail::Io(e) => NodeError::Io(e),
        }
    }
}

fn read_exact_or_corrupt(file: &mut File, buf: &mut [u8]) -> Result<(), ReadFail> {
    file.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ReadFail::Truncated
        } else {
            ReadFail::Io(e)
        }
    })
}

/// Reads and verifies the blocks of one shard file.
pub(crate) struct BlockReader {
    addr: ShardAddr,
    file: File,
    /// The same file opened with `O_DIRECT`, while the file system takes it.
    direct: Option<File>,
    /// The shard's layout, from its header.
    pub(crate) layout: Layout,
    /// File offset of block 0 (the header's length).
    data_start: u64,
    /// Where read buffers come from, and go back to once their block has been sent.
    ///
    /// Each block's span is read into a 2 MiB huge-page buffer, so a read stream holds up
    /// to ~12 MiB (`READ_AHEAD` blocks and the ones being sent). Exactly sized buffers of
    /// small pages would halve that, but cost the nodes far more CPU: every read would
    /// pin 257 pages, not one.
    pool: BufferPool,
}

impl BlockReader {
    /// Opens the shard and checks its header's crc32c: enough to find the blocks; the
    /// gateway checks the tags of what it reads.
    pub(crate) fn open(store: &Store, addr: ShardAddr) -> Result<Self, NodeError> {
        Self::open_checked(store, addr, None)
    }

    /// Opens the shard and checks its header, and its tag when `key` is given.
    fn open_checked(
        store: &Store,
        addr: ShardAddr,
        key: Option<&ShardKey>,
    ) -> Result<Self, NodeError> {
        let OpenShard { file, header, .. } = open_shard(store, &addr, key)?;
        Ok(Self {
            addr,
            file,
            direct: open_direct(&store.shard_path(&addr), false),
            layout: header.layout,
            data_start: header.encoded_len() as u64,
            pool: store.buffers().clone(),
        })
    }

    /// Reads block `block` (data and trailer) and verifies its crc32c.
    pub(crate) fn read_verified(&mut self, block: u64) -> Result<Bytes, NodeError> {
        self.read_checked(block, None)
    }

    /// Reads block `block` and verifies its crc32c and its tag under `key`.
    fn read_authenticated(&mut self, block: u64, key: &ShardKey) -> Result<Bytes, NodeError> {
        self.read_checked(block, Some(key))
    }

    fn read_checked(&mut self, block: u64, key: Option<&ShardKey>) -> Result<Bytes, NodeError> {
        let len = self.layout.stored_block_len(block);
        let offset = self.data_start + self.layout.block_file_offset(block);
        let stored = match self.read_direct(offset, len)? {
            Some(b) => b,
            None => self.read_buffered(offset, len)?,
        };
        let shard = self.addr;
        let checked = if stored.len() == len {
            match key {
                Some(key) => verify_block_tag(&stored, &self.layout, key, &shard, block),
                None => verify_block(&stored, &self.layout, block),
            }
            .map(|_| ())
        } else {
            Err(ShardError::BlockChecksum { block })
        };
        if let Err(e) = checked {
            let addr = self.addr;
            cairn_common::log_limited!(warn, key = addr;
                object = %addr.object, segment = addr.segment, index = addr.index, block,
                error = %e, "stored block failed its check; not serving it"
            );
            m::checksum_failure();
            return Err(NodeError::Corrupt(e));
        }
        Ok(stored)
    }

    /// Reads `len` bytes at `offset` with `O_DIRECT`: the aligned span around them into a
    /// pooled buffer. Fewer bytes back means the file ends early. `None`: no direct
    /// handle (none opened, or the file system refused an O_DIRECT read and it was
    /// dropped): read through the page cache.
    fn read_direct(&mut self, offset: u64, len: usize) -> io::Result<Option<Bytes>> {
        let Some(direct) = &self.direct else {
            return Ok(None);
        };
        let align = DIRECT_ALIGN as u64;
        let span_start = offset / align * align;
        let span_len = (offset + len as u64).next_multiple_of(align) - span_start;
        let span_len = usize::try_from(span_len).map_err(io::Error::other)?;
        let mut buf = self.pool.take(span_len)?;
        let mut got = 0;
        let mut refused = false;
        while got < span_len {
            let at = span_start + got as u64;
            let window = &mut buf.window_mut()[got..span_len];
            let n = if got % DIRECT_ALIGN == 0 {
                match direct.read_at(window, at) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        tracing::debug!(error = %e, "O_DIRECT read refused; using the page cache");
                        refused = true;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            } else {
                // A short read ended off alignment (as a rule, the end of the file), and
                // O_DIRECT refuses unaligned offsets: the rest comes through the page cache.
                self.file.read_at(window, at)?
            };
            if n == 0 {
                break;
            }
            got += n;
        }
        if refused {
            self.direct = None;
            return Ok(None);
        }
        let lead = (offset - span_start) as usize;
        let end = (lead + len).min(got.max(lead));
        Ok(Some(Bytes::from_owner(PooledBlock {
            buf: Some(buf),
            range: lead..end,
            pool: self.pool.clone(),
        })))
    }

    /// Reads `len` bytes at `offset` through the page cache; fewer back at the file's end.
    fn read_buffered(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        // Read into spare capacity: no zero-filling a buffer the read overwrites anyway.
        let mut buf = Vec::with_capacity(len);
        let mut reader = PositionedReader {
            file: &self.file,
            at: offset,
        };
        (&mut reader).take(len as u64).read_to_end(&mut buf)?;
        Ok(Bytes::from(buf))
    }
}

/// A [`Read`] over a file from a given offset, without moving the file's position.
struct PositionedReader<'a> {
    file: &'a File,
    at: u64,
}

impl Read for PositionedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// A block in a pooled aligned buffer; dropping it (once the response has sent it)
/// hands the buffer back to the pool.
struct PooledBlock {
    buf: Option<AlignedBuf>,
    range: std::ops::Range<usize>,
    pool: BufferPool,
}

impl AsRef<[u8]> for PooledBlock {
    fn as_ref(&self) -> &[u8] {
        match &self.buf {
            Some(b) => &b.window()[self.range.clone()],
            None => &[],
        }
    }
}

impl Drop for PooledBlock {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.pool.give(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_common::ids::ObjectId;
    use cairn_common::shard::{block_crc, stored_block, CRC_LEN, TAG_LEN};

    fn key() -> ShardKey {
        ShardKey::derive(b"read tests")
    }

    /// Stores a shard file whose blocks are not aligned to anything, and returns its
    /// address and each block's data.
    fn store_shard(store: &Store, layout: Layout) -> (ShardAddr, Vec<Vec<u8>>) {
        let header = ShardHeader {
            object_id: ObjectId::random(),
            segment: 3,
            shard_index: 1,
            layout,
            bucket: "b".into(),
            key: "model.safetensors".into(),
        };
        let addr = ShardAddr {
            object: header.object_id,
            segment: 3,
            index: 1,
        };
        let mut file = header.encode(&key()).to_vec();
        let mut blocks = Vec::new();
        for s in 0..layout.stripes() {
            let d: Vec<u8> = (0..layout.block_len(s))
                .map(|i| (i as u64 * 13 + s) as u8)
                .collect();
            file.extend_from_slice(&stored_block(&layout, &key(), &addr, s, &d));
            blocks.push(d);
        }
        let path = store.shard_path(&addr);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, &file).expect("write");
        (addr, blocks)
    }

    fn stored(layout: &Layout, addr: &ShardAddr, block: u64, data: &[u8]) -> Vec<u8> {
        stored_block(layout, &key(), addr, block, data)
    }

    #[test]
    fn direct_and_page_cache_reads_return_the_same_verified_blocks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        // Blocks of 5000 bytes (not a multiple of the alignment); the last one is short.
        let layout = Layout::new(3, 1, 5000, 3 * 15_000 + 700).expect("layout");
        let (addr, blocks) = store_shard(&store, layout);
        let mut reader = BlockReader::open(&store, addr).expect("open");
        if cfg!(target_os = "linux") && reader.direct.is_none() {
            eprintln!("O_DIRECT unavailable here: only the page-cache path is tested");
        }
        // Out of order and repeated, so buffers are reused for different offsets.
        for b in [0u64, 3, 1, 2, 3, 0] {
            let got = reader.read_verified(b).expect("direct read");
            let want = stored(&layout, &addr, b, &blocks[b as usize]);
            assert_eq!(&got[..], &want[..], "block {b}");
        }
        reader.direct = None;
        for b in 0..layout.stripes() {
            let got = reader.read_verified(b).expect("page-cache read");
            let want = stored(&layout, &addr, b, &blocks[b as usize]);
            assert_eq!(&got[..], &want[..], "block {b}");
        }
    }

    #[test]
    fn a_flipped_byte_or_a_short_file_is_corrupt_on_both_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let layout = Layout::new(2, 1, 4096, 4 * 8192).expect("layout");
        let (addr, _) = store_shard(&store, layout);
        let path = store.shard_path(&addr);
        let mut bytes = std::fs::read(&path).expect("read");
        let header_len = bytes.len() - layout.shard_body_len() as usize;
        let trailer = CRC_LEN + TAG_LEN;
        bytes[header_len + (4096 + trailer) + 10] ^= 1; // inside block 1
        std::fs::write(&path, &bytes).expect("write");
        for direct in [true, false] {
            let mut reader = BlockReader::open(&store, addr).expect("open");
            if !direct {
                reader.direct = None;
            }
            reader.read_verified(0).expect("block 0 is fine");
            assert!(matches!(
                reader.read_verified(1),
                Err(NodeError::Corrupt(ShardError::BlockChecksum { block: 1 }))
            ));
        }
        assert!(matches!(
            verify_shard(&store, &key(), &addr, |_| true),
            Err(NodeError::Corrupt(_))
        ));
        // Cut the file inside its last block.
        bytes.truncate(bytes.len() - 100);
        std::fs::write(&path, &bytes).expect("write");
        let mut reader = BlockReader::open(&store, addr).expect("open");
        assert!(matches!(
            reader.read_verified(layout.stripes() - 1),
            Err(NodeError::Corrupt(_))
        ));
    }

    #[test]
    fn scrub_finds_a_sound_shard_sound_and_a_longer_file_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let layout = Layout::new(3, 1, 5000, 40_000).expect("layout");
        let (addr, _) = store_shard(&store, layout);
        let mut paced = 0;
        let sound = verify_shard(&store, &key(), &addr, |n| {
            paced += n;
            true
        });
        assert!(sound.expect("sound"));
        assert_eq!(paced, layout.shard_body_len());
        let path = store.shard_path(&addr);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes.push(0);
        std::fs::write(&path, &bytes).expect("write");
        assert!(matches!(
            verify_shard(&store, &key(), &addr, |_| true),
            Err(NodeError::Corrupt(_))
        ));
    }

    #[test]
    fn scrub_finds_a_block_rewritten_with_a_valid_crc_forged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let layout = Layout::new(2, 1, 4096, 4 * 8192).expect("layout");
        let (addr, _) = store_shard(&store, layout);
        let path = store.shard_path(&addr);
        let mut bytes = std::fs::read(&path).expect("read");
        let start = bytes.len() - layout.shard_body_len() as usize + layout.stored_block_len(0);
        // Block 1's data rewritten, its crc32c recomputed: reads (crc only) pass it...
        bytes[start + 7] ^= 0x55;
        let crc = block_crc(&bytes[start..start + 4096]);
        bytes[start + 4096..start + 4096 + CRC_LEN].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&path, &bytes).expect("write");
        let mut reader = BlockReader::open(&store, addr).expect("open");
        reader.read_verified(1).expect("the crc32c holds");
        // ...scrub, which checks tags, does not.
        assert!(matches!(
            verify_shard(&store, &key(), &addr, |_| true),
            Err(NodeError::Corrupt(ShardError::BlockTag { block: 1 }))
        ));
    }
}
