//! The stripe decoder: shard streams in, verified object bytes out.
//!
//! A read of a byte range opens one stream per data shard for the stripes it covers.
//! Every block is checked against its crc32c. When a node is down, a stream breaks, or a
//! block fails its check, that shard is dropped for the rest of the read, a parity shard
//! is opened from the current stripe on, and the stripe is rebuilt — the client sees the
//! right bytes and no error. Only when fewer than k shards are readable does the read fail.
//! Those warnings are rate-limited per node: with a node down, every read would log them.

use bytes::Bytes;
use cairn_common::erasure::Codec;
use cairn_common::ids::ObjectId;
use cairn_common::log_limited;
use cairn_common::protocol::{ShardRef, ERR_CORRUPT_BLOCK};
use cairn_common::shard::{BlockVerifier, Layout, Piece, ShardError};
use futures::StreamExt;
use tokio::sync::mpsc;

use super::cluster::Cluster;
use super::node_client::NodeCallError;
use super::StoreError;
use crate::records::SegmentRecord;

/// Verified blocks read ahead per shard.
const READ_AHEAD: usize = 2;

type BlockRx = mpsc::Receiver<Result<Block, String>>;

/// A verified block, kept as the pieces it arrived in rather than copied into one buffer.
#[derive(Default)]
struct Block {
    pieces: Vec<Bytes>,
    len: usize,
}

impl Block {
    fn push(&mut self, piece: Bytes) {
        self.len += piece.len();
        self.pieces.push(piece);
    }

    /// Bytes `lo..hi` of the block, as slices of its pieces.
    fn range(&self, lo: usize, hi: usize) -> impl Iterator<Item = Bytes> + '_ {
        let mut start = 0;
        self.pieces.iter().filter_map(move |p| {
            let (p_start, p_end) = (start, start + p.len());
            start = p_end;
            let (a, b) = (lo.max(p_start), hi.min(p_end));
            (a < b).then(|| p.slice(a - p_start..b - p_start))
        })
    }

    /// The block in one buffer (for the erasure decoder).
    fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len);
        for p in &self.pieces {
            v.extend_from_slice(p);
        }
        v
    }
}

impl From<Vec<u8>> for Block {
    fn from(v: Vec<u8>) -> Self {
        let mut b = Block::default();
        b.push(Bytes::from(v));
        b
    }
}

/// Opens shard `index` for blocks `from..=last`, verifying each block in a background task.
async fn open_shard(
    cluster: &Cluster,
    object: ObjectId,
    seg: &SegmentRecord,
    layout: Layout,
    index: usize,
    from: u64,
    last: u64,
) -> Result<BlockRx, String> {
    let node = seg.nodes.get(index).ok_or("shard index out of range")?;
    let shard = ShardRef {
        object,
        segment: seg.segment,
        index: index as u8,
    };
    let addr = cluster
        .addr_if_up(node)
        .ok_or_else(|| format!("node {node} is down"))?;
    let stream = match cluster
        .client()
        .read_shard(
            &addr,
            &object,
            seg.segment,
            index as u8,
            from,
            last - from + 1,
        )
        .await
    {
        Ok(s) => s,
        // Not a reason to mark the node down: a node aborts a read on a corrupt block
        // too. The heartbeat decides who is up.
        Err(e) => {
            if let NodeCallError::Refused { kind, .. } = &e {
                if kind == ERR_CORRUPT_BLOCK {
                    cluster.report_corrupt(shard);
                }
            }
            return Err(format!("node {node}: {e}"));
        }
    };
    let key = cluster.client().shard_key().clone();
    let cluster = cluster.clone();
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut verifier = BlockVerifier::authenticated(layout, from, last + 1, &key, shard);
        let mut block = Block::default();
        while !verifier.is_done() {
            let chunk = match stream.next().await {
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => {
                    let _ = tx.send(Err(format!("shard stream broke: {e}"))).await;
                    return;
                }
                None => {
                    let _ = tx.send(Err("shard stream ended early".into())).await;
                    return;
                }
            };
            // Verified blocks go out as slices of the received chunks: no copy.
            let mut ready = Vec::new();
            let fed = verifier.feed(&chunk, |p| match p {
                Piece::Data(r) => block.push(chunk.slice(r)),
                Piece::Verified(_) => ready.push(std::mem::take(&mut block)),
            });
            for b in ready {
                if tx.send(Ok(b)).await.is_err() {
                    return;
                }
            }
            if let Err(e) = fed {
                if matches!(
                    e,
                    ShardError::BlockChecksum { .. } | ShardError::BlockTag { .. }
                ) {
                    metrics::counter!("cairn_checksum_failures_total").increment(1);
                    cluster.report_corrupt(shard);
                }
                let _ = tx.send(Err(e.to_string())).await;
                return;
            }
        }
    });
    Ok(rx)
}

/// Streams bytes `start..end` (segment-relative, `end` exclusive) of a segment into `out`.
pub async fn read_segment(
    cluster: &Cluster,
    object: ObjectId,
    seg: &SegmentRecord,
    start: u64,
    end: u64,
    out: &mpsc::Sender<Result<Bytes, StoreError>>,
) -> Result<(), StoreError> {
    if start >= end {
        return Ok(());
    }
    let layout = super::segment_layout(seg)?;
    let (s0, s1) = (layout.stripe_of(start), layout.stripe_of(end - 1));
    let mut reader = SegmentReader::new(cluster, object, seg, layout, s1)?;
    reader.open_data_shards(s0).await;
    for s in s0..=s1 {
        let blocks = reader.gather_stripe(s).await?;
        let data = reader.data_blocks(blocks)?;
        if !send_stripe(&layout, s, data, start, end, out).await {
            return Ok(()); // client went away
        }
    }
    Ok(())
}

/// The shard streams of one segment being read, stripe by stripe.
struct SegmentReader<'a> {
    cluster: &'a Cluster,
    object: ObjectId,
    seg: &'a SegmentRecord,
    layout: Layout,
    codec: Codec,
    /// Last stripe to read.
    last: u64,
    /// Data shards.
    k: usize,
    /// Data and parity shards.
    n: usize,
    readers: Vec<Option<BlockRx>>,
    /// The stripe at which each shard last failed: a bad block or a broken stream rules a
    /// shard out for that stripe, and it may be opened again for a later one.
    failed_at: Vec<Option<u64>>,
    degraded_counted: bool,
}

impl<'a> SegmentReader<'a> {
    fn new(
        cluster: &'a Cluster,
        object: ObjectId,
        seg: &'a SegmentRecord,
        layout: Layout,
        last: u64,
    ) -> Result<Self, StoreError> {
        let (k, n) = (seg.k as usize, seg.k as usize + seg.m as usize);
        Ok(Self {
            cluster,
            object,
            seg,
            layout,
            codec: Codec::new(seg.k, seg.m)?,
            last,
            k,
            n,
            readers: (0..n).map(|_| None).collect(),
            failed_at: vec![None; n],
            degraded_counted: false,
        })
    }

    /// Opens the data shards from stripe `s0` on (parity only where one fails).
    async fn open_data_shards(&mut self, s0: u64) {
        for i in 0..self.k {
            if let Err(e) = self.open(i, s0).await {
                let node = self.seg.nodes.get(i);
                log_limited!(warn, key = node; object = %self.object, shard = i, error = %e, "shard unavailable, reading parity");
            }
        }
    }

    /// Opens shard `i` from stripe `s` on; a failure rules it out for stripe `s`.
    async fn open(&mut self, i: usize, s: u64) -> Result<(), String> {
        let (object, seg, layout) = (self.object, self.seg, self.layout);
        match open_shard(self.cluster, object, seg, layout, i, s, self.last).await {
            Ok(rx) => {
                self.readers[i] = Some(rx);
                Ok(())
            }
            Err(e) => {
                self.failed_at[i] = Some(s);
                Err(e)
            }
        }
    }

    /// At least `k` verified blocks of stripe `s` (slot `i` holds shard `i`'s), opening
    /// more shards while the open ones fall short.
    async fn gather_stripe(&mut self, s: u64) -> Result<Vec<Option<Block>>, StoreError> {
        let mut blocks: Vec<Option<Block>> = (0..self.n).map(|_| None).collect();
        loop {
            self.take_blocks(s, &mut blocks).await;
            if blocks.iter().flatten().count() >= self.k {
                return Ok(blocks);
            }
            if !self.open_more(s, &blocks).await {
                let readable = self.n - self.failed_at.iter().filter(|f| **f == Some(s)).count();
                return Err(StoreError::Unavailable(format!(
                    "object {}: only {readable} of {} shards readable, {} needed",
                    self.object, self.n, self.k
                )));
            }
        }
    }

    /// Takes stripe `s`'s block from every open reader that has not given it yet; a
    /// reader that fails or gives a short block is closed.
    async fn take_blocks(&mut self, s: u64, blocks: &mut [Option<Block>]) {
        let blen = self.layout.block_len(s);
        for (i, slot) in blocks.iter_mut().enumerate() {
            if slot.is_some() {
                continue;
            }
            let Some(rx) = self.readers[i].as_mut() else {
                continue;
            };
            match rx.recv().await {
                Some(Ok(b)) if b.len == blen => *slot = Some(b),
                other => {
                    let why = match other {
                        Some(Err(e)) => e,
                        _ => "short block".to_string(),
                    };
                    let node = self.seg.nodes.get(i);
                    log_limited!(warn, key = node; object = %self.object, shard = i, stripe = s, error = %why, "shard read failed; rebuilding from parity");
                    self.readers[i] = None;
                    self.failed_at[i] = Some(s);
                }
            }
        }
    }

    /// Opens shards not yet tried for stripe `s` (parity first, then data) until `k`
    /// are open or in hand; false if none could be opened.
    async fn open_more(&mut self, s: u64, blocks: &[Option<Block>]) -> bool {
        let (k, n) = (self.k, self.n);
        let mut opened = false;
        for i in (k..n).chain(0..k) {
            if self.readers[i].is_some() || self.failed_at[i] == Some(s) || blocks[i].is_some() {
                continue;
            }
            match self.open(i, s).await {
                Ok(()) => {
                    opened = true;
                    let open = self.readers.iter().flatten().count();
                    if open + blocks.iter().flatten().count() >= k {
                        break;
                    }
                }
                Err(e) => {
                    let node = self.seg.nodes.get(i);
                    log_limited!(warn, key = node; object = %self.object, shard = i, error = %e, "shard unavailable");
                }
            }
        }
        opened
    }

    /// The stripe's `k` data blocks, rebuilt from parity where one is missing.
    fn data_blocks(&mut self, blocks: Vec<Option<Block>>) -> Result<Vec<Block>, StoreError> {
        let k = self.k;
        if blocks[..k].iter().all(|b| b.is_some()) {
            return Ok(blocks.into_iter().take(k).flatten().collect());
        }
        if !self.degraded_counted {
            metrics::counter!("cairn_degraded_reads_total").increment(1);
            self.degraded_counted = true;
        }
        let mut shards: Vec<Option<Vec<u8>>> =
            blocks.into_iter().map(|b| b.map(|b| b.to_vec())).collect();
        let t = std::time::Instant::now();
        self.codec.reconstruct_data(&mut shards)?;
        metrics::histogram!("cairn_erasure_decode_seconds").record(t.elapsed().as_secs_f64());
        Ok(shards
            .into_iter()
            .take(k)
            .map(|b| Block::from(b.unwrap_or_default()))
            .collect())
    }
}

/// Sends the part of stripe `s`'s data blocks that falls within `start..end`; false if
/// the receiver is gone.
async fn send_stripe(
    layout: &Layout,
    s: u64,
    data: Vec<Block>,
    start: u64,
    end: u64,
    out: &mpsc::Sender<Result<Bytes, StoreError>>,
) -> bool {
    let blen = layout.block_len(s);
    let off = layout.stripe_offset(s);
    for (i, block) in data.into_iter().enumerate() {
        let b_start = off + (i * blen) as u64;
        let b_end = (b_start + blen as u64).min(off + layout.stripe_len(s));
        let (lo, hi) = (b_start.max(start), b_end.min(end));
        if lo >= hi {
            continue;
        }
        for piece in block.range((lo - b_start) as usize, (hi - b_start) as usize) {
            if out.send(Ok(piece)).await.is_err() {
                return false;
            }
        }
    }
    true
}
