//! Streaming verified reads of stored blocks.
//!
//! A read opens the shard, checks its header, then reads and verifies block by block on a
//! blocking thread, handing blocks to the response over a channel a few blocks deep (the
//! read-ahead bound). The first block is verified before the response starts, so a bad
//! first block is a clean 409; a later bad block ends the body with an error. Either way
//! (and for a bad header) the shard is recorded as bad ([`ScrubState::report_read`]), so
//! the gateway learns of it and repairs it even when the read itself only broke off.
//!
//! Blocks come from a [`BlockReader`], which reads them with `O_DIRECT` where it can.

use std::io;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use cairn_common::shard::ShardKey;
use tokio::sync::mpsc;

use crate::block_reader::{open_shard, BlockReader};
use crate::error::NodeError;
use crate::metrics as m;
use crate::scrub::ScrubState;
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
/// starting past the last block is refused with [`NodeError::BadRange`]. A bad header or
/// block is recorded in `bad`.
pub async fn read_blocks(
    store: Arc<Store>,
    bad: Arc<ScrubState>,
    addr: ShardAddr,
    from: Option<u64>,
    count: Option<u64>,
) -> Result<BlockStream, NodeError> {
    // The blocking reads log bad blocks: keep them in the caller's span (its request id).
    let span = tracing::Span::current();
    let (first_span, first_bad) = (span.clone(), bad.clone());
    let opened = tokio::task::spawn_blocking(move || {
        let _in = first_span.enter();
        open_range(&store, addr, from, count).inspect_err(|e| record(&first_bad, addr, e))
    })
    .await
    .map_err(|e| NodeError::Internal(format!("read task: {e}")))?;
    let OpenedRange {
        reader,
        from,
        end,
        content_len,
        first,
    } = opened?;
    m::bytes_read(first.len() as u64);
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    if from + 1 < end {
        tokio::task::spawn_blocking(move || {
            let _in = span.enter();
            send_blocks(reader, from + 1..end, addr, &bad, &tx);
        });
    }
    Ok(BlockStream {
        content_len,
        first,
        rest: rx,
    })
}

/// A range of a shard, opened and clamped, with its first block read and verified.
struct OpenedRange {
    reader: BlockReader,
    /// The range's first block.
    from: u64,
    /// The block after the range's last one.
    end: u64,
    /// Bytes of stored blocks in the range.
    content_len: u64,
    /// Block `from` (empty when the range is).
    first: Bytes,
}

/// Opens the shard, clamps the range to it and reads its first block (blocking).
fn open_range(
    store: &Store,
    addr: ShardAddr,
    from: Option<u64>,
    count: Option<u64>,
) -> Result<OpenedRange, NodeError> {
    let mut reader = BlockReader::open(store, addr)?;
    let layout = reader.layout;
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
    let first = if from < end {
        reader.read_verified(from)?
    } else {
        Bytes::new()
    };
    Ok(OpenedRange {
        reader,
        from,
        end,
        content_len,
        first,
    })
}

/// Reads and verifies `blocks` into `tx` (blocking), until one fails (recorded in `bad`,
/// sent as the stream's error) or the response is gone.
fn send_blocks(
    mut reader: BlockReader,
    blocks: Range<u64>,
    addr: ShardAddr,
    bad: &ScrubState,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) {
    for block in blocks {
        let item = reader.read_verified(block);
        if let Err(e) = &item {
            record(bad, addr, e);
        }
        let item = item.map_err(|e| match e {
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
}

/// The stored header bytes of a shard, after checking them, tag included (a bad one is
/// recorded in `bad`).
pub async fn read_header(
    store: Arc<Store>,
    key: ShardKey,
    bad: Arc<ScrubState>,
    addr: ShardAddr,
) -> Result<Bytes, NodeError> {
    tokio::task::spawn_blocking(move || {
        open_shard(&store, &addr, Some(&key))
            .map(|s| Bytes::from(s.raw_header))
            .inspect_err(|e| record(&bad, addr, e))
    })
    .await
    .map_err(|e| NodeError::Internal(format!("read task: {e}")))?
}

/// Records `addr` as bad when `e` says its stored bytes failed a check.
fn record(bad: &ScrubState, addr: ShardAddr, e: &NodeError) {
    if matches!(e, NodeError::Corrupt(_)) {
        bad.report_read(addr, e);
    }
}
