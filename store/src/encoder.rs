//! The stripe encoder: a request body in, k+m shard streams out to k+m nodes.
//!
//! The body is cut into stripes of `k` blocks; each stripe gets `m` parity blocks and a
//! crc32c per block. Body bytes are never copied: each received piece is crc'd, folded into
//! the stripe's parity (Reed-Solomon is byte-wise, so parity can be built piece by piece)
//! and queued as it is to the task streaming its shard to a node; parity blocks follow
//! once the stripe is complete. The queues are bounded in bytes, so a slow node (an SD
//! card) slows the loop, which stops reading the body, which fills the client's TCP window.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use cairn_common::erasure::Codec;
use cairn_common::ids::{NodeId, ObjectId};
use cairn_common::protocol::ShardRef;
use cairn_common::protocol::ERR_DISK_FULL;
use cairn_common::request_id;
use cairn_common::shard::{
    block_crc, block_crc_append, block_trailer, Layout, ShardHeader, ShardKey,
};
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::cluster::Cluster;
use super::node_client::NodeCallError;
use super::{BodyError, StoreError};

/// Bytes queued per shard stream, not yet taken by its request to the node.
const SHARD_QUEUE_BYTES: usize = 4 << 20;
/// Zeros that pad the last stripe's short blocks.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

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

/// The queue into one shard's transfer.
struct ShardSink {
    node: NodeId,
    tx: mpsc::UnboundedSender<(Bytes, OwnedSemaphorePermit)>,
    /// Free bytes of the queue; a piece holds its share until the transfer takes it.
    room: Arc<Semaphore>,
    task: JoinHandle<Result<(), NodeCallError>>,
    /// The transfer ended early (the node failed or refused): later pieces are dropped.
    dead: AtomicBool,
}

impl ShardSink {
    /// Queues `piece`, waiting while the queue is full. A transfer that has ended takes
    /// nothing more: the sink is marked dead and the piece dropped; the segment goes on
    /// while at most `m` shards are lost ([`write_segment`]).
    async fn send(&self, piece: Bytes) {
        if self.dead.load(Ordering::Relaxed) {
            return;
        }
        let share = piece.len().clamp(1, SHARD_QUEUE_BYTES) as u32;
        let sent = match Arc::clone(&self.room).acquire_many_owned(share).await {
            Ok(permit) => self.tx.send((piece, permit)).is_ok(),
            Err(_) => false,
        };
        if !sent {
            self.dead.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a piece could not be queued: the transfer ended before its shard was
    /// whole. (A transfer that took every byte may drop its queue before the last
    /// stripe is done; that is not a failure.)
    fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }
}

/// A shard of a segment that did not land on its node.
#[derive(Debug)]
pub struct FailedShard {
    /// The node it was meant for.
    pub node: NodeId,
    /// Why.
    pub error: NodeCallError,
}

impl FailedShard {
    /// Whether the node refused for lack of room.
    pub fn is_full(&self) -> bool {
        matches!(&self.error, NodeCallError::Refused { status: 507, .. })
            || matches!(&self.error, NodeCallError::Refused { kind, .. } if kind == ERR_DISK_FULL)
    }
}

/// A segment written with every shard durable except `failed` (at most `m` of them).
#[derive(Debug, Default)]
pub struct Written {
    /// Shards whose node failed or refused them.
    pub failed: Vec<FailedShard>,
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
/// to `targets` (node `i` gets shard `i`). Returns once every node still taking its
/// shard has it durably. A node that fails or refuses its shard (full disk) part way
/// does not stop the others while at most `m` shards are lost: the caller gets them in
/// [`Written::failed`] and must restore full redundancy before committing. With more
/// lost, the segment fails (`Full` if every lost node was full).
pub async fn write_segment<S>(
    cluster: &Cluster,
    spec: &SegmentSpec<'_>,
    targets: &[(NodeId, String)],
    body: &mut S,
) -> Result<Written, StoreError>
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
    let shard_key = cluster.client().shard_key();
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
        let (tx, mut rx) = mpsc::unbounded_channel::<(Bytes, OwnedSemaphorePermit)>();
        let room = Arc::new(Semaphore::new(SHARD_QUEUE_BYTES));
        let first = header.encode(shard_key);
        let file_len = header.file_len();
        // A piece gives its queue share back as the request takes it.
        let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(
            futures::stream::poll_fn(move |cx| {
                rx.poll_recv(cx).map(|o| o.map(|(piece, _share)| Ok(piece)))
            }),
        );
        let client = cluster.client().clone();
        let addr = addr.clone();
        let (object, segment) = (spec.object, spec.segment);
        let task = tokio::spawn(request_id::propagate(async move {
            client
                .put_shard(&addr, &object, segment, i as u8, file_len, stream)
                .await
        }));
        sinks.push(ShardSink {
            node: *node,
            tx,
            room,
            task,
            dead: AtomicBool::new(false),
        });
    }

    let shards: Vec<ShardRef> = (0..k + m)
        .map(|i| ShardRef {
            object: spec.object,
            segment: spec.segment,
            index: i as u8,
        })
        .collect();
    let tags = Tags {
        key: shard_key,
        shards: &shards,
    };
    let result = pump_stripes(&codec, &layout, &tags, body, &sinks).await;
    if let Err(e) = result {
        // Stop the healthy transfers *before* closing their shard streams: a node whose
        // stream ended short would fail too, and must not be blamed. Only a node whose
        // transfer ended by itself (so its sink is dead) has failed.
        let dead: Vec<bool> = sinks
            .iter()
            .map(|s| s.is_dead() || s.tx.is_closed())
            .collect();
        for (s, dead) in sinks.iter().zip(&dead) {
            if !dead {
                s.task.abort();
            }
        }
        let mut failed = Vec::new();
        for (s, dead) in sinks.into_iter().zip(dead) {
            if dead {
                if let Ok(Err(error)) = s.task.await {
                    failed.push(FailedShard {
                        node: s.node,
                        error,
                    });
                }
            }
        }
        blame(cluster, &failed);
        if matches!(e, StoreError::Unavailable(_)) && !failed.is_empty() {
            return Err(too_many_lost(&failed));
        }
        return Err(e);
    }
    let mut failed = Vec::new();
    for s in sinks {
        drop(s.tx);
        let r = match s.task.await {
            Ok(r) => r,
            Err(e) => Err(NodeCallError::Transport(e.to_string())),
        };
        if let Err(error) = r {
            failed.push(FailedShard {
                node: s.node,
                error,
            });
        }
    }
    blame(cluster, &failed);
    if failed.len() > m {
        return Err(too_many_lost(&failed));
    }
    Ok(Written { failed })
}

/// Marks each node that lost its shard full (it refused for lack of room) or down. A
/// transfer the gateway itself could not make (out of file descriptors or ports) says
/// nothing about the node.
fn blame(cluster: &Cluster, failed: &[FailedShard]) {
    for f in failed {
        if f.is_full() {
            cluster.mark_full(&f.node);
        } else if !matches!(f.error, NodeCallError::Local(_)) {
            cluster.mark_down(&f.node);
        }
    }
}

/// The error for a segment that lost more shards than it has parity.
fn too_many_lost(failed: &[FailedShard]) -> StoreError {
    let why = failed
        .iter()
        .map(|f| format!("storage node {}: {}", f.node, f.error))
        .collect::<Vec<_>>()
        .join("; ");
    if failed.iter().all(FailedShard::is_full) {
        StoreError::Full(why)
    } else {
        StoreError::Unavailable(why)
    }
}

/// Parity buffers of earlier stripes, taken again once their transfers have let go of
/// them. They need no clearing: data block 0 covers its whole block and sets every
/// parity byte ([`Codec::encode_piece`]); the rest only add to it.
#[derive(Default)]
struct ParityBuffers(VecDeque<Bytes>);

impl ParityBuffers {
    /// Buffers kept: about as many as the parity queues hold, so one is free by the time
    /// it is needed.
    const KEEP: usize = 6;

    /// A `len`-byte buffer: a released one, else a fresh one.
    fn take(&mut self, len: usize) -> BytesMut {
        for _ in 0..self.0.len() {
            let Some(b) = self.0.pop_front() else { break };
            match b.try_into_mut() {
                Ok(mut free) if free.len() >= len => {
                    free.truncate(len);
                    return free;
                }
                Ok(_) => {}
                Err(busy) => self.0.push_back(busy),
            }
        }
        BytesMut::zeroed(len)
    }

    /// Keeps `b` for reuse once every slice of it is gone.
    fn keep(&mut self, b: Bytes) {
        if self.0.len() < Self::KEEP {
            self.0.push_back(b);
        }
    }
}

/// What block tags are computed with: the key and the identity of each of the k+m shards.
struct Tags<'a> {
    key: &'a ShardKey,
    shards: &'a [ShardRef],
}

async fn pump_stripes<S>(
    codec: &Codec,
    layout: &Layout,
    tags: &Tags<'_>,
    body: &mut S,
    sinks: &[ShardSink],
) -> Result<(), StoreError>
where
    S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
{
    let (k, m) = (layout.k as usize, layout.m as usize);
    let mut reader = BodyReader {
        body,
        pending: Bytes::new(),
    };
    let mut spare_parity = ParityBuffers::default();
    for s in 0..layout.stripes() {
        let blen = layout.block_len(s);
        let slot = layout.stored_block_len(s);
        let stripe_len = layout.stripe_len(s) as usize;
        // Parity blocks as they will be stored (block, trailer, block, trailer...).
        let mut parity = spare_parity.take(m * slot);
        for (i, sink) in sinks[..k].iter().enumerate() {
            // Body bytes in this block; the last stripe's blocks are zero-padded.
            let real = stripe_len.saturating_sub(i * blen).min(blen);
            let mut crc = 0;
            let mut tag = tags.key.block_tagger(&tags.shards[i], s);
            let mut off = 0;
            while off < real {
                let Some(mut piece) = reader.next_piece().await? else {
                    return Err(StoreError::BodyTooShort);
                };
                if piece.len() > real - off {
                    reader.pending = piece.split_off(real - off);
                }
                let end = off + piece.len();
                crc = block_crc_append(crc, &piece);
                tag.update(&piece);
                {
                    let mut out: Vec<&mut [u8]> =
                        parity.chunks_mut(slot).map(|c| &mut c[off..end]).collect();
                    codec.encode_piece(i, &piece, &mut out)?;
                }
                off = end;
                sink.send(piece).await;
            }
            // Zeros add nothing to parity, and block 0 is never padded: it holds
            // ceil(stripe / k) <= stripe bytes.
            while off < blen {
                let n = (blen - off).min(ZEROS.len());
                crc = block_crc_append(crc, &ZEROS[..n]);
                tag.update(&ZEROS[..n]);
                sink.send(Bytes::from_static(&ZEROS[..n])).await;
                off += n;
            }
            sink.send(block_trailer(layout, crc, Some(&tag))).await;
        }
        for (j, c) in parity.chunks_mut(slot).enumerate() {
            let mut tag = tags.key.block_tagger(&tags.shards[k + j], s);
            tag.update(&c[..blen]);
            let trailer = block_trailer(layout, block_crc(&c[..blen]), Some(&tag));
            c[blen..].copy_from_slice(&trailer);
        }
        let parity = parity.freeze();
        for (j, sink) in sinks[k..].iter().enumerate() {
            sink.send(parity.slice(j * slot..(j + 1) * slot)).await;
        }
        if sinks.iter().filter(|s| s.is_dead()).count() > m {
            return Err(StoreError::Unavailable(
                "more storage nodes failed than the segment has parity".into(),
            ));
        }
        spare_parity.keep(parity);
        metrics::counter!("cairn_stripes_encoded_total").increment(1);
    }
    reader.finish().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parity_buffers_come_back_only_once_released() {
        let mut pool = ParityBuffers::default();
        let first = pool.take(1000);
        assert_eq!(first.len(), 1000);
        let first_ptr = first.as_ptr();
        let frozen = first.freeze();
        let in_flight = frozen.slice(0..500);
        pool.keep(frozen);
        // Still being sent: a new buffer.
        let second = pool.take(1000);
        assert_ne!(second.as_ptr(), first_ptr);
        drop(in_flight);
        // Released: the same memory, cut to the (shorter) length asked for.
        let again = pool.take(800);
        assert_eq!(again.as_ptr(), first_ptr);
        assert_eq!(again.len(), 800);
        // Too short for a request: not used (a fresh, zeroed buffer instead).
        let mut again = again;
        again.fill(0xaa);
        pool.keep(again.freeze());
        let fresh = pool.take(1000);
        assert_eq!(fresh.len(), 1000);
        assert!(fresh.iter().all(|&b| b == 0));
    }
}
