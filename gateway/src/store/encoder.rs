//! The stripe encoder: a request body in, k+m shard streams out to k+m nodes.
//!
//! The body is cut into stripes of `k` blocks; each stripe gets `m` parity blocks and a
//! crc32c per block, then every block goes down a bounded channel to the task streaming
//! that shard to its node. The channels are small, so a slow node (an SD card) slows the
//! loop, which stops reading the body, which fills the client's TCP window.
//! Each body byte is copied once (into its stripe buffer); blocks leave as slices of it.

use bytes::{Bytes, BytesMut};
use cairn_common::erasure::Codec;
use cairn_common::ids::{NodeId, ObjectId};
use cairn_common::request_id;
use cairn_common::shard::{block_crc, Layout, ShardHeader, CRC_LEN};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::cluster::Cluster;
use super::{BodyError, StoreError};

/// Blocks buffered per shard stream.
const SHARD_QUEUE: usize = 4;

/// Identity of the segment being written.
pub struct SegmentSpec<'a> {
    /// Object version.
    pub object: ObjectId,
    /// Segment number.
    pub segment: u32,
    /// Geometry and length.
    pub layout: Layout,
    /// Bucket (recorded in shard headers).
    pub bucket: &'a str,
    /// Key (recorded in shard headers).
    pub key: &'a str,
}

struct ShardSink {
    node: NodeId,
    tx: mpsc::Sender<Bytes>,
    task: JoinHandle<Result<(), String>>,
}

/// Pulls the body, feeding leftovers of one stripe into the next.
struct BodyReader<'s, S> {
    body: &'s mut S,
    pending: Bytes,
}

impl<S> BodyReader<'_, S>
where
    S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
{
    async fn next_piece(&mut self) -> Result<Option<Bytes>, StoreError> {
        if !self.pending.is_empty() {
            return Ok(Some(std::mem::take(&mut self.pending)));
        }
        loop {
            match self.body.next().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(StoreError::Body(e)),
                Some(Ok(b)) if b.is_empty() => continue,
                Some(Ok(b)) => return Ok(Some(b)),
            }
        }
    }

    /// Drains the body to its end (so trailing checks run) and refuses extra bytes.
    async fn finish(&mut self) -> Result<(), StoreError> {
        if let Some(_extra) = self.next_piece().await? {
            return Err(StoreError::BodyTooLong);
        }
        Ok(())
    }
}

/// Writes one segment: streams `spec.layout.segment_len` bytes of `body` as k+m shards
/// to `targets` (node `i` gets shard `i`). Returns once every node has its shard durably.
pub async fn write_segment<S>(
    cluster: &Cluster,
    spec: &SegmentSpec<'_>,
    targets: &[(NodeId, String)],
    body: &mut S,
    last_segment: bool,
) -> Result<(), StoreError>
where
    S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
{
    let layout = spec.layout;
    let (k, m) = (layout.k as usize, layout.m as usize);
    if targets.len() != k + m {
        return Err(StoreError::NotEnoughNodes(format!(
            "{} targets for {}+{}",
            targets.len(),
            k,
            m
        )));
    }
    let codec = Codec::new(layout.k, layout.m)?;
    let mut sinks = Vec::with_capacity(k + m);
    for (i, (node, addr)) in targets.iter().enumerate() {
        let header = ShardHeader {
            object_id: spec.object,
            segment: spec.segment,
            shard_index: i as u8,
            layout,
            bucket: spec.bucket.to_string(),
            key: spec.key.to_string(),
        };
        let (tx, mut rx) = mpsc::channel::<Bytes>(SHARD_QUEUE);
        let first = header.encode();
        let file_len = header.file_len();
        let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(
            futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok))),
        );
        let client = cluster.client().clone();
        let addr = addr.clone();
        let (object, segment) = (spec.object, spec.segment);
        let task = tokio::spawn(request_id::propagate(async move {
            client
                .put_shard(&addr, &object, segment, i as u8, file_len, stream)
                .await
                .map_err(|e| e.to_string())
        }));
        sinks.push(ShardSink {
            node: *node,
            tx,
            task,
        });
    }

    let result = pump_stripes(&codec, &layout, body, &sinks, last_segment).await;
    if let Err(e) = result {
        // Stop the healthy transfers *before* closing their shard streams: a node whose
        // stream ended short would fail too, and must not be blamed. Only a node whose
        // transfer dropped its end of the stream (so the send failed) has failed.
        let failed: Vec<bool> = sinks.iter().map(|s| s.tx.is_closed()).collect();
        for (s, failed) in sinks.iter().zip(&failed) {
            if !failed {
                s.task.abort();
            }
        }
        if matches!(e, StoreError::Unavailable(_)) {
            for (s, failed) in sinks.into_iter().zip(failed) {
                if !failed {
                    continue;
                }
                if let Ok(Err(msg)) = s.task.await {
                    cluster.mark_down(&s.node);
                    return Err(StoreError::Unavailable(format!(
                        "storage node {}: {msg}",
                        s.node
                    )));
                }
            }
        }
        return Err(e);
    }
    let mut sinks_done = Vec::with_capacity(sinks.len());
    for s in sinks {
        drop(s.tx);
        sinks_done.push((s.node, s.task));
    }
    let mut first_err = None;
    for (node, task) in sinks_done {
        let r = match task.await {
            Ok(r) => r,
            Err(e) => Err(e.to_string()),
        };
        if let Err(msg) = r {
            cluster.mark_down(&node);
            first_err.get_or_insert(StoreError::Unavailable(format!(
                "storage node {node}: {msg}"
            )));
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Appends the crc32c of the block that makes up the last `blen` bytes of `buf`.
fn seal_block(buf: &mut BytesMut, blen: usize) {
    let crc = block_crc(&buf[buf.len() - blen..]);
    buf.extend_from_slice(&crc.to_le_bytes());
}

async fn pump_stripes<S>(
    codec: &Codec,
    layout: &Layout,
    body: &mut S,
    sinks: &[ShardSink],
    last_segment: bool,
) -> Result<(), StoreError>
where
    S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
{
    let (k, m) = (layout.k as usize, layout.m as usize);
    let mut reader = BodyReader {
        body,
        pending: Bytes::new(),
    };
    for s in 0..layout.stripes() {
        let blen = layout.block_len(s);
        let slot = blen + CRC_LEN;
        let want = layout.stripe_len(s) as usize;
        // Data blocks are laid out as they will be stored (block, crc, block, crc...),
        // appended as the body arrives: no zero-fill, and each crc is taken while the
        // block is still in cache.
        let mut data = BytesMut::with_capacity(k * slot);
        let mut in_block = 0usize;
        let mut filled = 0usize;
        while filled < want {
            let Some(mut piece) = reader.next_piece().await? else {
                return Err(StoreError::BodyTooShort);
            };
            let take = piece.len().min(want - filled);
            let mut src = &piece[..take];
            while !src.is_empty() {
                let n = src.len().min(blen - in_block);
                data.extend_from_slice(&src[..n]);
                src = &src[n..];
                filled += n;
                in_block += n;
                if in_block == blen {
                    seal_block(&mut data, blen);
                    in_block = 0;
                }
            }
            if take < piece.len() {
                reader.pending = piece.split_off(take);
            }
        }
        // The last stripe's data runs out early: zero-pad it to k whole blocks.
        while data.len() < k * slot {
            data.resize(data.len() + blen - in_block, 0);
            seal_block(&mut data, blen);
            in_block = 0;
        }
        let mut parity = BytesMut::zeroed(m * slot);
        {
            let data_blocks: Vec<&[u8]> = data.chunks(slot).map(|c| &c[..blen]).collect();
            let mut parity_blocks: Vec<&mut [u8]> =
                parity.chunks_mut(slot).map(|c| &mut c[..blen]).collect();
            codec.encode(&data_blocks, &mut parity_blocks)?;
        }
        for c in parity.chunks_mut(slot) {
            let crc = block_crc(&c[..blen]);
            c[blen..].copy_from_slice(&crc.to_le_bytes());
        }
        let (data, parity) = (data.freeze(), parity.freeze());
        for (i, sink) in sinks.iter().enumerate() {
            let block = if i < k {
                data.slice(i * slot..(i + 1) * slot)
            } else {
                parity.slice((i - k) * slot..(i - k + 1) * slot)
            };
            if sink.tx.send(block).await.is_err() {
                return Err(StoreError::Unavailable(format!(
                    "storage node {} stopped taking data",
                    sink.node
                )));
            }
        }
        metrics::counter!("cairn_stripes_encoded_total").increment(1);
    }
    if last_segment {
        reader.finish().await?;
    } else if !reader.pending.is_empty() {
        return Err(StoreError::BodyTooLong);
    }
    Ok(())
}
