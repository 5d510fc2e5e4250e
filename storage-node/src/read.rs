//! Streaming verified reads of stored blocks.
//!
//! A read opens the shard, checks its header, then reads and verifies block by block on a
//! blocking thread, handing blocks to the response over a channel a few blocks deep (the
//! read-ahead bound). The first block is verified before the response starts, so a bad
//! first block is a clean 409; a later bad block ends the body with an error.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use bytes::Bytes;
use cairn_common::shard::{verify_block, ShardError, ShardHeader, CRC_LEN};
use tokio::sync::mpsc;

use crate::error::NodeError;
use crate::metrics as m;
use crate::store::{ShardAddr, Store};

/// Verified blocks waiting to be sent, per read.
const READ_AHEAD: usize = 4;

/// An open range read: the first block, already verified, and the rest as they come.
pub struct BlockStream {
    /// Bytes the whole response body will have (stored blocks, data + crc each).
    pub content_len: u64,
    /// The first block (empty when the range is empty).
    pub first: Bytes,
    /// The following blocks; an `Err` item means the stream must be aborted.
    pub rest: mpsc::Receiver<io::Result<Bytes>>,
}

/// Opens blocks `from..from+count` of a shard for streaming. `from` defaults to 0 and
/// `count` to the rest of the shard; a range running past the end is clamped, one
/// starting past the last block is refused with [`NodeError::BadRange`].
pub async fn read_blocks(
    store: Arc<Store>,
    addr: ShardAddr,
    from: Option<u64>,
    count: Option<u64>,
) -> Result<BlockStream, NodeError> {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    // The blocking reads log bad blocks: keep them in the caller's span (its request id).
    let span = tracing::Span::current();
    let first_span = span.clone();
    let opened = tokio::task::spawn_blocking(move || -> Result<_, NodeError> {
        let _in = first_span.enter();
        let (mut file, header) = open_shard(&store, &addr)?;
        let layout = header.layout;
        let stripes = layout.stripes();
        let from = from.unwrap_or(0);
        let count = count.unwrap_or_else(|| stripes.saturating_sub(from));
        if count > 0 && from >= stripes {
            return Err(NodeError::BadRange {
                from,
                blocks: stripes,
            });
        }
        let end = from.saturating_add(count).min(stripes);
        let content_len = layout.block_file_offset(end) - layout.block_file_offset(from);
        if from >= end {
            return Ok((file, header, from, end, content_len, Bytes::new()));
        }
        file.seek(SeekFrom::Start(
            header.encoded_len() as u64 + layout.block_file_offset(from),
        ))?;
        let first = read_block(&mut file, &header, addr, from)?;
        Ok((file, header, from, end, content_len, first))
    })
    .await
    .map_err(|e| NodeError::Internal(format!("read task: {e}")))?;
    let (mut file, header, from, end, content_len, first) = opened?;
    m::bytes_read(first.len() as u64);
    if from + 1 < end {
        tokio::task::spawn_blocking(move || {
            let _in = span.enter();
            for block in from + 1..end {
                let item = read_block(&mut file, &header, addr, block).map_err(|e| match e {
                    NodeError::Io(e) => e,
                    other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
                });
                let failed = item.is_err();
                if let Ok(b) = &item {
                    m::bytes_read(b.len() as u64);
                }
                if tx.blocking_send(item).is_err() || failed {
                    return;
                }
            }
        });
    }
    Ok(BlockStream {
        content_len,
        first,
        rest: rx,
    })
}

/// The stored header bytes of a shard, after checking them.
pub async fn read_header(store: Arc<Store>, addr: ShardAddr) -> Result<Bytes, NodeError> {
    tokio::task::spawn_blocking(move || open_shard(&store, &addr).map(|(_, h)| h.encode()))
        .await
        .map_err(|e| NodeError::Internal(format!("read task: {e}")))?
}

/// Re-reads a whole shard and checks its header and every block (for scrub), reusing one
/// buffer. After each block `pace(bytes)` is called; it returns `false` to stop early.
/// `Ok(true)` means the whole shard was checked and is sound.
pub fn verify_shard(
    store: &Store,
    addr: &ShardAddr,
    mut pace: impl FnMut(u64) -> bool,
) -> Result<bool, NodeError> {
    let (mut file, header) = open_shard(store, addr)?;
    let layout = header.layout;
    let mut buf = Vec::with_capacity(layout.block_len(0) + CRC_LEN);
    for block in 0..layout.stripes() {
        buf.resize(layout.block_len(block) + CRC_LEN, 0);
        let checked = match file.read_exact(&mut buf) {
            Ok(()) => verify_block(&buf, block).map(|_| ()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(ShardError::BlockChecksum { block })
            }
            Err(e) => return Err(e.into()),
        };
        if let Err(e) = checked {
            m::checksum_failure();
            return Err(NodeError::Corrupt(e));
        }
        if !pace(buf.len() as u64) {
            return Ok(false);
        }
    }
    // Bytes after the last block mean the file is not what its header describes.
    let mut extra = [0u8; 1];
    if file.read(&mut extra)? != 0 {
        m::checksum_failure();
        return Err(NodeError::Corrupt(ShardError::BadHeader(
            "file longer than its header says",
        )));
    }
    Ok(true)
}

/// Opens a shard file and reads and checks its header (including that it names `addr`).
fn open_shard(store: &Store, addr: &ShardAddr) -> Result<(File, ShardHeader), NodeError> {
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
    let header = ShardHeader::decode(&buf).map_err(corrupt)?;
    if header.object_id != addr.object
        || header.segment != addr.segment
        || header.shard_index != addr.index
    {
        return Err(corrupt(ShardError::BadHeader("header names another shard")));
    }
    Ok((file, header))
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

/// Reads block `block` at the file's position and verifies its crc32c.
fn read_block(
    file: &mut File,
    header: &ShardHeader,
    addr: ShardAddr,
    block: u64,
) -> Result<Bytes, NodeError> {
    let len = header.layout.block_len(block) + CRC_LEN;
    // Read into spare capacity: no zero-filling a buffer the read overwrites anyway.
    let mut buf = Vec::with_capacity(len);
    (&mut *file).take(len as u64).read_to_end(&mut buf)?;
    let checked = if buf.len() == len {
        verify_block(&buf, block).map(|_| ())
    } else {
        Err(ShardError::BlockChecksum { block })
    };
    if let Err(e) = checked {
        cairn_common::log_limited!(warn, key = addr;
            object = %addr.object, segment = addr.segment, index = addr.index, block,
            "stored block failed its crc32c; not serving it"
        );
        m::checksum_failure();
        return Err(NodeError::Corrupt(e));
    }
    Ok(Bytes::from(buf))
}
