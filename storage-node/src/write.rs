//! Streaming shard write: header check, per-block crc32c check as bytes arrive, temp
//! file, fsync, atomic rename.
//!
//! The request body is only buffered until the shard header is complete. After that,
//! each body chunk is checked (crc32c per block) and copied into an aligned buffer while
//! it is still in cache, and dropped at once, so the HTTP server reuses its read buffer
//! instead of allocating (and page-faulting) fresh memory for every read. Full buffers go
//! over a small bounded channel to a blocking writer thread, which writes them with
//! `O_DIRECT` (see [`ShardFile`]) and hands them back. Memory per write is two aligned
//! buffers ([`POOL`] × [`WRITE_BUF`]), whatever the shard size; a slow disk stops us
//! reading the socket, which slows the sender (TCP backpressure).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use cairn_common::shard::{BlockVerifier, Layout, ShardError, ShardHeader};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::direct_io::{open_direct, AlignedBuf, DIRECT_ALIGN, HUGE_PAGE};
use crate::error::NodeError;
use crate::store::{preallocate, ShardAddr, Store};

/// Bytes gathered before each write: one huge page (a multiple of [`DIRECT_ALIGN`]).
const WRITE_BUF: usize = HUGE_PAGE;
/// Buffers per write: one filling while the other is written.
const POOL: usize = 2;
/// Bytes checked and copied at a time, so the copy reads what the crc just pulled into L1.
const STEP: usize = 16 * 1024;

enum Msg {
    /// A full buffer ([`WRITE_BUF`] bytes) to append.
    Data(AlignedBuf),
    /// The last `fill` bytes of the file (possibly none); every block checked out.
    End(AlignedBuf),
}

/// Receives a shard file from `body` and stores it as `addr`. Returns the bytes stored.
///
/// Nothing becomes visible unless the header names `addr`, every block's crc32c matches
/// and the body is exactly as long as the header says; otherwise the temp file is removed.
pub async fn write_shard(
    store: Arc<Store>,
    addr: ShardAddr,
    content_length: Option<u64>,
    body: Body,
) -> Result<u64, NodeError> {
    let mut stream = body.into_data_stream();

    // 1. Buffer just the header.
    let mut buf = BytesMut::new();
    let mut need = 8;
    let header_len = loop {
        while buf.len() < need {
            match stream.next().await {
                Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                Some(Err(e)) => return Err(NodeError::Body(e.to_string())),
                None => {
                    return Err(NodeError::BadLength {
                        want: need as u64,
                        got: buf.len() as u64,
                    })
                }
            }
        }
        if need == 8 {
            need = ShardHeader::peek_len(&buf).map_err(|e| NodeError::BadHeader(e.to_string()))?;
        } else {
            break need;
        }
    };
    let rest = buf.split_off(header_len).freeze();
    let header_bytes = buf.freeze();
    let header =
        ShardHeader::decode(&header_bytes).map_err(|e| NodeError::BadHeader(e.to_string()))?;
    if header.object_id != addr.object
        || header.segment != addr.segment
        || header.shard_index != addr.index
    {
        return Err(NodeError::BadHeader(format!(
            "header names {}/{}/{}, path names {}/{}/{}",
            header.object_id,
            header.segment,
            header.shard_index,
            addr.object,
            addr.segment,
            addr.index
        )));
    }
    let file_len = header.file_len();
    if let Some(cl) = content_length {
        if cl != file_len {
            return Err(NodeError::BadLength {
                want: file_len,
                got: cl,
            });
        }
    }

    // 2. Check and copy the blocks into aligned buffers for a blocking writer.
    let (tx, rx) = mpsc::channel(1);
    let (free_tx, free_rx) = mpsc::channel(POOL);
    let writer =
        tokio::task::spawn_blocking(move || write_blocking(&store, addr, file_len, rx, free_tx));
    let pump = Pump {
        checker: BlockChecker::new(header.layout),
        buf: AlignedBuf::new(WRITE_BUF)?,
        allocated: 1,
        tx,
        free_rx,
    };
    // The pump is gone when `run` returns, so a writer waiting for more learns it ended.
    let pumped = pump.run(&mut stream, header_bytes, rest).await;
    let written = writer
        .await
        .map_err(|e| NodeError::Internal(format!("writer task: {e}")))?;
    match (pumped, written) {
        // The writer stopped taking buffers: its own error (disk) says why.
        (Ok(false), Err(e)) => Err(e),
        (Ok(false), Ok(_)) => Err(NodeError::Internal("writer stopped early".into())),
        (Err(e), _) => Err(e),
        (Ok(true), r) => r,
    }
}

/// The receiving side of a shard write: checks and copies body chunks into aligned
/// buffers and hands full ones to the writer.
struct Pump {
    checker: BlockChecker,
    buf: AlignedBuf,
    /// Buffers created so far (at most [`POOL`]).
    allocated: usize,
    tx: mpsc::Sender<Msg>,
    free_rx: mpsc::Receiver<AlignedBuf>,
}

impl Pump {
    /// Feeds the whole body through; `Ok(true)` once the writer has the last bytes,
    /// `Ok(false)` if the writer went away first (it reports why). An `Err` is a bad
    /// or broken body; the writer then sees its channel close without an end.
    async fn run<S>(
        mut self,
        stream: &mut S,
        header: Bytes,
        first: Bytes,
    ) -> Result<bool, NodeError>
    where
        S: futures::Stream<Item = Result<Bytes, axum::Error>> + Unpin,
    {
        if !self.take(&header, false).await? || !self.take(&first, true).await? {
            return Ok(false);
        }
        drop(first);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| NodeError::Body(e.to_string()))?;
            if !self.take(&chunk, true).await? {
                return Ok(false);
            }
        }
        self.checker.finish()?;
        Ok(self.tx.send(Msg::End(self.buf)).await.is_ok())
    }

    /// Buffers one chunk (block-area bytes are crc-checked first, `check`); `Ok(false)`
    /// if the writer is gone.
    async fn take(&mut self, mut data: &[u8], check: bool) -> Result<bool, NodeError> {
        while !data.is_empty() {
            let piece = &data[..data.len().min(STEP).min(self.buf.room())];
            if check {
                self.checker.feed(piece)?;
            }
            self.buf.push(piece);
            data = &data[piece.len()..];
            if self.buf.is_full() {
                let next = if self.allocated < POOL {
                    self.allocated += 1;
                    AlignedBuf::new(WRITE_BUF)?
                } else {
                    match self.free_rx.recv().await {
                        Some(b) => b,
                        None => return Ok(false),
                    }
                };
                let full = std::mem::replace(&mut self.buf, next);
                if self.tx.send(Msg::Data(full)).await.is_err() {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}

/// Removes the temp file unless the write was committed.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            if let Err(e) = std::fs::remove_file(&p) {
                tracing::warn!(path = %p.display(), error = %e, "could not remove temp file");
            }
        }
    }
}

fn write_blocking(
    store: &Store,
    addr: ShardAddr,
    file_len: u64,
    mut rx: mpsc::Receiver<Msg>,
    free_tx: mpsc::Sender<AlignedBuf>,
) -> Result<u64, NodeError> {
    let (tmp, file) = store.create_temp(&addr)?;
    let mut guard = TempGuard(Some(tmp.clone()));
    preallocate(&file, file_len)?;
    let mut out = ShardFile::new(file, &tmp);
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Data(mut buf) => {
                out.write_full(&buf)?;
                buf.fill = 0;
                // The pump may be done with buffers already; that is fine.
                let _ = free_tx.try_send(buf);
            }
            Msg::End(mut buf) => {
                out.finish(&mut buf, file_len)?;
                store.commit(&tmp, &addr)?;
                guard.0 = None;
                return Ok(file_len);
            }
        }
    }
    Err(NodeError::Body(
        "request body ended without completing".into(),
    ))
}

/// A temp shard file written front to back from aligned buffers with `O_DIRECT`, so the
/// data goes from the buffer to the disk without passing through the page cache. Copying
/// each byte into fresh page-cache pages (and having them written back and reclaimed
/// later) was half of a node's CPU time on a PUT; the shard is not read back soon, and
/// reads bypass the page cache too (see `read.rs`). Where `O_DIRECT` is refused (a file system
/// without it, unusual alignment rules) the same buffers are written with plain writes.
struct ShardFile {
    file: File,
    direct: Option<File>,
    /// File offset of the next write.
    offset: u64,
}

impl ShardFile {
    fn new(file: File, path: &std::path::Path) -> Self {
        let direct = open_direct(path, true);
        Self {
            file,
            direct,
            offset: 0,
        }
    }

    /// Appends a full buffer.
    fn write_full(&mut self, buf: &AlignedBuf) -> io::Result<()> {
        self.write_window(buf.filled())?;
        self.offset += buf.fill as u64;
        Ok(())
    }

    /// Writes `window` (aligned, a multiple of [`DIRECT_ALIGN`] long when `O_DIRECT` is
    /// on) at the current offset.
    fn write_window(&mut self, window: &[u8]) -> io::Result<()> {
        if let Some(direct) = &self.direct {
            match direct.write_all_at(window, self.offset) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::debug!(error = %e, "O_DIRECT write refused; using buffered writes");
                    self.direct = None;
                }
                Err(e) => return Err(e),
            }
        }
        self.file.write_all_at(window, self.offset)
    }

    /// Writes the last, partly filled buffer, trims the file to `len` bytes and makes it
    /// durable.
    fn finish(mut self, last: &mut AlignedBuf, len: u64) -> io::Result<()> {
        let fill = last.fill;
        if fill > 0 {
            // O_DIRECT writes whole aligned blocks: pad the tail, then cut the file back.
            let padded = match self.direct {
                Some(_) => fill.next_multiple_of(DIRECT_ALIGN),
                None => fill,
            };
            last.window_mut()[fill..padded].fill(0);
            self.write_window(&last.window()[..padded])?;
        }
        if self.offset + fill as u64 != len {
            return Err(io::Error::other(format!(
                "shard file is {} bytes, header says {len}",
                self.offset + fill as u64
            )));
        }
        self.file.set_len(len)?;
        self.file.sync_all()
    }
}

/// Walks the block area of a shard as it arrives, checking each block's crc32c and the
/// total length, whatever the chunk boundaries.
#[derive(Debug)]
pub struct BlockChecker {
    layout: Layout,
    verifier: BlockVerifier,
}

impl BlockChecker {
    /// A checker expecting exactly the blocks of `layout`.
    pub fn new(layout: Layout) -> Self {
        Self {
            layout,
            verifier: BlockVerifier::new(layout, 0, layout.stripes()),
        }
    }

    /// Consumes the next bytes of the block area.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), NodeError> {
        match self.verifier.feed(data, |_| {}) {
            Ok(()) => Ok(()),
            Err(ShardError::BlockChecksum { block }) => Err(NodeError::CorruptUpload { block }),
            Err(_) => Err(NodeError::BadLength {
                want: self.layout.shard_body_len(),
                got: self.verifier.total() + data.len() as u64,
            }),
        }
    }

    /// Checks that every block arrived.
    pub fn finish(&self) -> Result<(), NodeError> {
        if self.verifier.is_done() {
            Ok(())
        } else {
            Err(NodeError::BadLength {
                want: self.layout.shard_body_len(),
                got: self.verifier.total(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_common::shard::block_crc;

    fn body(layout: &Layout) -> Vec<u8> {
        let mut out = Vec::new();
        for s in 0..layout.stripes() {
            let data: Vec<u8> = (0..layout.block_len(s))
                .map(|i| (i as u64 + s) as u8)
                .collect();
            out.extend_from_slice(&data);
            out.extend_from_slice(&block_crc(&data).to_le_bytes());
        }
        out
    }

    #[test]
    fn checker_accepts_any_chunking_and_catches_flips() {
        let layout = Layout::new(3, 1, 100, 1000).expect("layout");
        let good = body(&layout);
        assert_eq!(good.len() as u64, layout.shard_body_len());
        for chunk in [1, 3, 4, 7, 104, 1000, good.len()] {
            let mut c = BlockChecker::new(layout);
            for piece in good.chunks(chunk) {
                c.feed(piece).expect("good block refused");
            }
            c.finish().expect("complete body refused");
        }
        for pos in [0, 99, 100, 103, 104, good.len() - 1] {
            let mut bad = good.clone();
            bad[pos] ^= 0x10;
            let mut c = BlockChecker::new(layout);
            let r = bad.chunks(7).try_for_each(|p| c.feed(p));
            assert!(
                matches!(r, Err(NodeError::CorruptUpload { .. })),
                "flip at {pos}: {r:?}"
            );
        }
    }

    #[test]
    fn shard_file_writes_any_chunking_and_trims_the_padding() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (i, len) in [
            0usize,
            1,
            4095,
            4096,
            4097,
            WRITE_BUF,
            WRITE_BUF + 77,
            3 * WRITE_BUF + 5000,
        ]
        .into_iter()
        .enumerate()
        {
            let want: Vec<u8> = (0..len).map(|j| (j * 7 + i) as u8).collect();
            let path = dir.path().join(format!("f{i}"));
            let file = File::create(&path).expect("create");
            let mut out = ShardFile::new(file, &path);
            let mut buf = AlignedBuf::new(WRITE_BUF).expect("buffer");
            for piece in want.chunks(1000 + 333 * i) {
                let mut piece = piece;
                while !piece.is_empty() {
                    let n = piece.len().min(buf.room());
                    buf.push(&piece[..n]);
                    piece = &piece[n..];
                    if buf.is_full() {
                        out.write_full(&buf).expect("write");
                        buf.fill = 0;
                    }
                }
            }
            out.finish(&mut buf, len as u64).expect("finish");
            assert_eq!(std::fs::read(&path).expect("read"), want, "length {len}");
        }
        let path = dir.path().join("short");
        let out = ShardFile::new(File::create(&path).expect("create"), &path);
        let mut buf = AlignedBuf::new(WRITE_BUF).expect("buffer");
        buf.push(b"abc");
        assert!(
            out.finish(&mut buf, 4).is_err(),
            "a short file must not pass"
        );
    }

    #[test]
    fn checker_refuses_short_and_long_bodies() {
        let layout = Layout::new(2, 1, 64, 300).expect("layout");
        let good = body(&layout);
        let mut c = BlockChecker::new(layout);
        c.feed(&good[..good.len() - 1]).expect("prefix");
        assert!(matches!(c.finish(), Err(NodeError::BadLength { .. })));
        let mut c = BlockChecker::new(layout);
        c.feed(&good).expect("all");
        assert!(matches!(c.feed(&[0]), Err(NodeError::BadLength { .. })));
        let empty = Layout::new(2, 1, 64, 0).expect("layout");
        let c = BlockChecker::new(empty);
        c.finish().expect("empty segment has no blocks");
    }
}
