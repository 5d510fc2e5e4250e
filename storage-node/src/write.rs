//! Streaming shard write: header check, per-block crc32c check as bytes arrive, temp
//! file, fsync, atomic rename.
//!
//! Bytes arrive from a [`ShardSource`] straight into an aligned buffer: a raw upgraded
//! connection ([`StreamSource`]) has the kernel copy them from the socket into it, an HTTP
//! body ([`BodySource`]) is copied in chunk by chunk. Each step's new bytes are
//! crc-checked while they are still in cache. Full buffers go over a small bounded
//! channel to a blocking writer thread, which writes them with `O_DIRECT` (see
//! [`ShardFile`]) and hands them back. Memory per write is two aligned buffers ([`POOL`] ×
//! [`WRITE_BUF`], taken from and given back to the store's [`BufferPool`]), whatever the
//! shard size; a slow disk stops us reading the socket, which slows the sender (TCP
//! backpressure).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, BodyDataStream};
use bytes::{Buf, Bytes};
use cairn_common::protocol::ShardRef;
use cairn_common::shard::{BlockVerifier, Layout, ShardError, ShardHeader, ShardKey};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

use crate::direct_io::{open_direct, AlignedBuf, BufferPool, DIRECT_ALIGN, HUGE_PAGE};
use crate::error::NodeError;
use crate::faults::{failure_at, WriteFault};
use crate::store::{preallocate, ShardAddr, Store};

/// Bytes gathered before each write: one huge page (a multiple of [`DIRECT_ALIGN`]).
const WRITE_BUF: usize = HUGE_PAGE;
/// Buffers per write: one filling while the other is written.
const POOL: usize = 2;
/// Bytes read at a time, so the crc check reads what the copy just put in cache (L2).
const STEP: usize = 256 * 1024;

/// Where a shard file's bytes come from.
pub(crate) trait ShardSource {
    /// Reads the next bytes into `dst`; `Ok(0)` at the end.
    async fn read_into(&mut self, dst: &mut [u8]) -> Result<usize, NodeError>;

    /// Called once the whole file has been read: whether more bytes follow it.
    async fn has_more(&mut self) -> Result<bool, NodeError>;
}

/// An HTTP request body, copied chunk by chunk.
pub(crate) struct BodySource {
    stream: BodyDataStream,
    pending: Bytes,
}

impl BodySource {
    /// Reads `body`.
    pub(crate) fn new(body: Body) -> Self {
        Self {
            stream: body.into_data_stream(),
            pending: Bytes::new(),
        }
    }
}

impl ShardSource for BodySource {
    async fn read_into(&mut self, dst: &mut [u8]) -> Result<usize, NodeError> {
        while self.pending.is_empty() {
            match self.stream.next().await {
                Some(Ok(chunk)) => self.pending = chunk,
                Some(Err(e)) => return Err(NodeError::Body(e.to_string())),
                None => return Ok(0),
            }
        }
        let n = dst.len().min(self.pending.len());
        dst[..n].copy_from_slice(&self.pending[..n]);
        self.pending.advance(n);
        Ok(n)
    }

    async fn has_more(&mut self) -> Result<bool, NodeError> {
        Ok(self.read_into(&mut [0u8; 1]).await? > 0)
    }
}

/// A raw byte stream (an upgraded connection) that carries exactly one shard file; the
/// kernel copies it straight into the aligned buffers. Nothing past the file is read:
/// the peer waits for the outcome on the same connection.
pub(crate) struct StreamSource<R>(pub R);

impl<R: AsyncRead + Unpin> ShardSource for StreamSource<R> {
    async fn read_into(&mut self, dst: &mut [u8]) -> Result<usize, NodeError> {
        self.0
            .read(dst)
            .await
            .map_err(|e| NodeError::Body(e.to_string()))
    }

    async fn has_more(&mut self) -> Result<bool, NodeError> {
        Ok(false)
    }
}

/// A source whose every read must bring a byte within `limit`: a sender that died
/// without closing its connection (a pulled cable, a power cut) sends neither bytes nor an
/// end, and its upload must not hold a temp file and buffers forever.
pub(crate) struct Idle<S> {
    src: S,
    limit: Duration,
}

impl<S> Idle<S> {
    /// `src`, failing with [`NodeError::Timeout`] on a read that waits longer than `limit`.
    pub(crate) fn new(src: S, limit: Duration) -> Self {
        Self { src, limit }
    }
}

impl<S: ShardSource> ShardSource for Idle<S> {
    async fn read_into(&mut self, dst: &mut [u8]) -> Result<usize, NodeError> {
        tokio::time::timeout(self.limit, self.src.read_into(dst))
            .await
            .map_err(|_| NodeError::Timeout(self.limit))?
    }

    async fn has_more(&mut self) -> Result<bool, NodeError> {
        tokio::time::timeout(self.limit, self.src.has_more())
            .await
            .map_err(|_| NodeError::Timeout(self.limit))?
    }
}

/// A source that fails as an injected [`WriteFault`] says, once enough bytes came in.
pub(crate) struct Faulty<S> {
    src: S,
    fault: WriteFault,
    read: u64,
}

impl<S> Faulty<S> {
    /// `src`, failing per `fault`.
    pub(crate) fn new(src: S, fault: WriteFault) -> Self {
        Self {
            src,
            fault,
            read: 0,
        }
    }
}

impl<S: ShardSource> ShardSource for Faulty<S> {
    async fn read_into(&mut self, dst: &mut [u8]) -> Result<usize, NodeError> {
        if let Some(e) = failure_at(self.fault, self.read) {
            return Err(e);
        }
        // Stop exactly at the failure point, so only part of the body is consumed.
        let cap = match self.fault {
            WriteFault::FailAfter(n) | WriteFault::ResetAfter(n) => {
                usize::try_from(n - self.read).unwrap_or(usize::MAX)
            }
            WriteFault::DiskFull => 0,
        };
        let want = dst.len().min(cap);
        let n = self.src.read_into(&mut dst[..want]).await?;
        self.read += n as u64;
        Ok(n)
    }

    async fn has_more(&mut self) -> Result<bool, NodeError> {
        if let Some(e) = failure_at(self.fault, self.read) {
            return Err(e);
        }
        self.src.has_more().await
    }
}

enum Msg {
    /// A full buffer ([`WRITE_BUF`] bytes) to append.
    Data(AlignedBuf),
    /// The last `fill` bytes of the file (possibly none); every block checked out.
    End(AlignedBuf),
}

/// Receives a shard file from `src` and stores it as `addr`. Returns the bytes stored.
///
/// Nothing becomes visible unless the header names `addr`, the header and every block
/// pass their crc32c and (format 2) their tag under `key`, and the file is exactly as long
/// as the header says (and as `declared_len`, when the
/// sender declared one); otherwise the temp file is removed. A file that would take the
/// node over its capacity is refused ([`NodeError::OverCapacity`]) before its blocks are
/// read.
pub(crate) async fn write_shard<S: ShardSource>(
    store: Arc<Store>,
    key: &ShardKey,
    addr: ShardAddr,
    declared_len: Option<u64>,
    mut src: S,
) -> Result<u64, NodeError> {
    // 1. The header, read into the first buffer (it is the start of the file).
    let buffers = store.buffers().clone();
    let mut buf = buffers.take(WRITE_BUF)?;
    fill_to(&mut src, &mut buf, 8).await?;
    let header_len =
        ShardHeader::peek_len(buf.filled()).map_err(|e| NodeError::BadHeader(e.to_string()))?;
    fill_to(&mut src, &mut buf, header_len).await?;
    let header = ShardHeader::decode_verified(&buf.filled()[..header_len], key)
        .map_err(|e| NodeError::BadHeader(e.to_string()))?;
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
    if let Some(declared) = declared_len {
        if declared != file_len {
            return Err(NodeError::BadLength {
                want: file_len,
                got: declared,
            });
        }
    }
    // Held until the writer is done: concurrent writes cannot overbook the capacity.
    let _room = store
        .reserve(file_len)
        .map_err(|free| NodeError::OverCapacity {
            need: file_len,
            free,
        })?;
    let mut checker = BlockChecker::new(header.layout, key, header.shard_ref());
    checker.feed(&buf.filled()[header_len..])?;

    // 2. The blocks, checked as they arrive, for a blocking writer.
    let (tx, rx) = mpsc::channel(1);
    let (free_tx, free_rx) = mpsc::channel(POOL);
    let writer =
        tokio::task::spawn_blocking(move || write_blocking(&store, addr, file_len, rx, free_tx));
    let pump = Pump {
        checker,
        buf,
        buffers,
        allocated: 1,
        tx,
        free_rx,
    };
    // The pump is gone when `run` returns, so a writer waiting for more learns it ended.
    let pumped = pump.run(&mut src, file_len).await;
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

/// Reads from `src` until `buf` holds at least `want` bytes.
async fn fill_to<S: ShardSource>(
    src: &mut S,
    buf: &mut AlignedBuf,
    want: usize,
) -> Result<(), NodeError> {
    while buf.fill < want {
        let fill = buf.fill;
        let n = src.read_into(&mut buf.window_mut()[fill..want]).await?;
        if n == 0 {
            return Err(NodeError::BadLength {
                want: want as u64,
                got: fill as u64,
            });
        }
        buf.fill += n;
    }
    Ok(())
}

/// The receiving side of a shard write: reads into aligned buffers, checks the blocks
/// and hands full buffers to the writer.
struct Pump {
    checker: BlockChecker,
    buf: AlignedBuf,
    buffers: BufferPool,
    /// Buffers taken from `buffers` so far (at most [`POOL`]).
    allocated: usize,
    tx: mpsc::Sender<Msg>,
    /// Buffers the writer is done with.
    free_rx: mpsc::Receiver<AlignedBuf>,
}

impl Pump {
    /// Reads the rest of the `file_len`-byte file; `Ok(true)` once the writer has the
    /// last bytes, `Ok(false)` if the writer went away first (it reports why). An `Err` is
    /// a bad or broken upload; the writer then sees its channel close without an end.
    async fn run<S: ShardSource>(mut self, src: &mut S, file_len: u64) -> Result<bool, NodeError> {
        let read = self.read_all(src, file_len).await;
        // From here on the writer gives what it is done with to the pool; so do we.
        self.free_rx.close();
        while let Ok(buf) = self.free_rx.try_recv() {
            self.buffers.give(buf);
        }
        match read {
            Ok(true) => Ok(self.tx.send(Msg::End(self.buf)).await.is_ok()),
            other => {
                self.buffers.give(self.buf);
                other
            }
        }
    }

    /// Reads and checks the file up to its end; `Ok(false)` if the writer went away.
    async fn read_all<S: ShardSource>(
        &mut self,
        src: &mut S,
        file_len: u64,
    ) -> Result<bool, NodeError> {
        // Bytes of the file already in earlier (handed over) buffers.
        let mut handed = 0u64;
        loop {
            if self.buf.is_full() {
                handed += self.buf.fill as u64;
                if !self.hand_over().await? {
                    return Ok(false);
                }
            }
            let left = file_len.saturating_sub(handed + self.buf.fill as u64);
            let want = (left.min(STEP as u64) as usize).min(self.buf.room());
            if want == 0 {
                break;
            }
            let fill = self.buf.fill;
            let n = src
                .read_into(&mut self.buf.window_mut()[fill..fill + want])
                .await?;
            if n == 0 {
                break;
            }
            self.checker.feed(&self.buf.window()[fill..fill + n])?;
            self.buf.fill += n;
        }
        self.checker.finish()?;
        if src.has_more().await? {
            return Err(NodeError::BadLength {
                want: file_len,
                got: file_len + 1,
            });
        }
        Ok(true)
    }

    /// Sends the full buffer to the writer and takes an empty one; `Ok(false)` if the
    /// writer is gone.
    async fn hand_over(&mut self) -> Result<bool, NodeError> {
        let next = if self.allocated < POOL {
            self.allocated += 1;
            self.buffers.take(WRITE_BUF)?
        } else {
            match self.free_rx.recv().await {
                Some(b) => b,
                None => return Ok(false),
            }
        };
        let full = std::mem::replace(&mut self.buf, next);
        Ok(self.tx.send(Msg::Data(full)).await.is_ok())
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
    if !store.faults().no_fallocate {
        preallocate(&file, file_len)?;
    }
    let mut out = ShardFile::new(file, &tmp);
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Data(mut buf) => {
                out.write_full(&buf)?;
                buf.fill = 0;
                // The pump may be done with buffers already: then the pool takes it.
                if let Err(e) = free_tx.try_send(buf) {
                    store.buffers().give(e.into_inner());
                }
            }
            Msg::End(mut buf) => {
                let finished = out.finish(&mut buf, file_len);
                store.buffers().give(buf);
                finished?;
                store.commit(&tmp, &addr)?;
                guard.0 = None;
                store.publish_space();
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
/// later) would be about half of a node's CPU time on a PUT; the shard is not read back
/// soon, and reads bypass the page cache too (see `block_reader.rs`). Where `O_DIRECT` is
/// refused (a file system without it, unusual alignment rules) the same buffers are
/// written with plain writes.
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

/// Walks the block area of a shard as it arrives, checking each block's crc32c and tag
/// and the total length, whatever the chunk boundaries.
#[derive(Debug)]
pub struct BlockChecker {
    layout: Layout,
    verifier: BlockVerifier,
}

impl BlockChecker {
    /// A checker expecting exactly the blocks of `layout`, tagged under `key` as `shard`.
    pub fn new(layout: Layout, key: &ShardKey, shard: ShardRef) -> Self {
        Self {
            layout,
            verifier: BlockVerifier::authenticated(layout, 0, layout.stripes(), key, shard),
        }
    }

    /// Consumes the next bytes of the block area.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), NodeError> {
        match self.verifier.feed(data, |_| {}) {
            Ok(()) => Ok(()),
            Err(ShardError::BlockChecksum { block }) => Err(NodeError::CorruptUpload { block }),
            Err(ShardError::BlockTag { block }) => Err(NodeError::ForgedUpload { block }),
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
    use cairn_common::ids::ObjectId;
    use cairn_common::shard::{block_crc, stored_block, CRC_LEN};

    fn key() -> ShardKey {
        ShardKey::derive(b"write tests")
    }

    const SHARD: ShardRef = ShardRef {
        object: ObjectId([7; 16]),
        segment: 2,
        index: 1,
    };

    fn checker(layout: Layout) -> BlockChecker {
        BlockChecker::new(layout, &key(), SHARD)
    }

    fn body(layout: &Layout) -> Vec<u8> {
        let mut out = Vec::new();
        for s in 0..layout.stripes() {
            let data: Vec<u8> = (0..layout.block_len(s))
                .map(|i| (i as u64 + s) as u8)
                .collect();
            out.extend_from_slice(&stored_block(layout, &key(), &SHARD, s, &data));
        }
        out
    }

    #[test]
    fn checker_accepts_any_chunking_and_catches_flips() {
        let layout = Layout::new(3, 1, 100, 1000).expect("layout");
        let good = body(&layout);
        assert_eq!(good.len() as u64, layout.shard_body_len());
        for chunk in [1, 3, 4, 7, 104, 120, 1000, good.len()] {
            let mut c = checker(layout);
            for piece in good.chunks(chunk) {
                c.feed(piece).expect("good block refused");
            }
            c.finish().expect("complete body refused");
        }
        for pos in [0, 99, 100, 103, 120, good.len() - 25] {
            let mut bad = good.clone();
            bad[pos] ^= 0x10;
            let mut c = checker(layout);
            let r = bad.chunks(7).try_for_each(|p| c.feed(p));
            assert!(
                matches!(r, Err(NodeError::CorruptUpload { .. })),
                "flip at {pos}: {r:?}"
            );
        }
        // A flipped tag byte, or data rewritten with its crc32c recomputed: forged.
        let mut bad = good.clone();
        bad[104] ^= 0x10;
        let mut c = checker(layout);
        let r = bad.chunks(7).try_for_each(|p| c.feed(p));
        assert!(
            matches!(r, Err(NodeError::ForgedUpload { block: 0 })),
            "{r:?}"
        );
        let mut bad = good.clone();
        bad[5] ^= 0x10;
        let crc = block_crc(&bad[..100]);
        bad[100..100 + CRC_LEN].copy_from_slice(&crc.to_le_bytes());
        let mut c = checker(layout);
        assert!(matches!(
            c.feed(&bad),
            Err(NodeError::ForgedUpload { block: 0 })
        ));
        // Genuine blocks of another shard.
        let mut c = BlockChecker::new(layout, &key(), ShardRef { index: 2, ..SHARD });
        assert!(matches!(
            c.feed(&good),
            Err(NodeError::ForgedUpload { block: 0 })
        ));
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
        let mut c = checker(layout);
        c.feed(&good[..good.len() - 1]).expect("prefix");
        assert!(matches!(c.finish(), Err(NodeError::BadLength { .. })));
        let mut c = checker(layout);
        c.feed(&good).expect("all");
        assert!(matches!(c.feed(&[0]), Err(NodeError::BadLength { .. })));
        let empty = Layout::new(2, 1, 64, 0).expect("layout");
        let c = checker(empty);
        c.finish().expect("empty segment has no blocks");
    }
}
