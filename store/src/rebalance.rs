//! Rebalance: move shards until placement matches the current nodes.
//!
//! When a node joins, or capacities change, the weighted ranking ([`placement::rank`])
//! of stored segments (of committed objects, and parts of uploads in progress) can pick
//! nodes other than those holding them. A background
//! pass finds such segments and moves one shard at a time: the shard file is copied
//! from the node leaving the segment's set to the node joining it (verified blocks, the
//! same shard identity), the new copy is durable before the record is swapped with a
//! compare-and-swap, and the old copy is deleted last — after reads in flight are done,
//! and only if no record points to it any more. A crash at any step leaves either the
//! old record (the new copy is an orphan for garbage collection) or the new one (the old
//! copy is). Moves are paced to `--rebalance-rate`; segments with a node down or lost
//! are left to repair.

use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_common::ids::{NodeId, ObjectId};
use cairn_common::placement;
use futures::StreamExt;

use super::service::ObjectService;
use super::StoreError;
use crate::records::SegmentRecord;

/// Time between passes.
const EVERY: Duration = Duration::from_secs(10);

/// What a pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Shards that were not where placement wants them.
    pub misplaced: usize,
    /// Shards moved.
    pub moved: usize,
    /// Bytes moved.
    pub bytes: u64,
    /// Moves that failed (tried again next pass).
    pub failed: usize,
}

/// The record that points to a segment: where a move swaps it.
enum Holder {
    /// Segment `index` of the object at `bucket/key`.
    Object {
        bucket: String,
        key: String,
        index: usize,
    },
    /// Part `number` of the upload in progress.
    Part { number: u32 },
}

/// One shard to move.
struct Move {
    index: usize,
    from: NodeId,
    to: NodeId,
}

/// Runs rebalance passes forever, moving at most `rate` bytes per second (0: never).
pub async fn run(service: ObjectService, rate: u64) {
    if rate == 0 {
        return;
    }
    loop {
        tokio::time::sleep(EVERY).await;
        match pass(&service, rate).await {
            Ok(r) if r.misplaced > 0 => tracing::info!(
                misplaced = r.misplaced,
                moved = r.moved,
                bytes = r.bytes,
                failed = r.failed,
                "rebalance pass done"
            ),
            Ok(_) => {}
            Err(e) => {
                cairn_common::log_limited!(warn, key = (); error = %e, "rebalance pass failed")
            }
        }
    }
}

/// Which shard of `seg` should move, if placement ranks another node with room
/// above one of its holders. Segments with a holder down are repair's.
fn plan(service: &ObjectService, id: &ObjectId, seg: &SegmentRecord) -> Option<Move> {
    let cluster = &service.cluster;
    if seg.nodes.iter().any(|n| cluster.addr_if_up(n).is_none()) {
        return None;
    }
    let shard = super::segment_layout(seg).ok()?.shard_body_len();
    // Holders count as candidates even when full: a shard stays where it is rather than
    // moving for lack of room elsewhere.
    let candidates = cluster.candidates(shard, &seg.nodes).with_room;
    let want: Vec<NodeId> = placement::rank(id, seg.segment, &candidates)
        .into_iter()
        .take(seg.nodes.len())
        .collect();
    let to = *want.iter().find(|n| !seg.nodes.contains(n))?;
    let index = seg.nodes.iter().position(|n| !want.contains(n))?;
    Some(Move {
        index,
        from: seg.nodes[index],
        to,
    })
}

/// Every stored segment whose placement wants a shard elsewhere, with its record.
fn misplaced(
    service: &ObjectService,
) -> Result<Vec<(ObjectId, Holder, SegmentRecord, Move)>, StoreError> {
    let mut jobs = Vec::new();
    for item in service.catalog.scan_all_objects() {
        let (bucket, key, rec) = item?;
        for (index, seg) in rec.segments.iter().enumerate() {
            if let Some(mv) = plan(service, &rec.id, seg) {
                let holder = Holder::Object {
                    bucket: bucket.clone(),
                    key: key.clone(),
                    index,
                };
                jobs.push((rec.id, holder, seg.clone(), mv));
            }
        }
    }
    for (upload, _) in service.catalog.uploads()? {
        for (number, part) in service.catalog.parts(&upload)? {
            if let Some(mv) = plan(service, &upload, &part.segment) {
                jobs.push((upload, Holder::Part { number }, part.segment, mv));
            }
        }
    }
    Ok(jobs)
}

/// Finds misplaced shards and moves them, paced to `rate`.
pub async fn pass(service: &ObjectService, rate: u64) -> Result<PassReport, StoreError> {
    let mut report = PassReport::default();
    let jobs = misplaced(service)?;
    report.misplaced = jobs.len();
    metrics::gauge!("cairn_rebalance_pending_shards").set(jobs.len() as f64);
    for (done, (id, holder, seg, mv)) in jobs.into_iter().enumerate() {
        let started = Instant::now();
        match move_shard(service, id, &holder, &seg, &mv).await {
            Ok(Some(bytes)) => {
                report.moved += 1;
                report.bytes += bytes;
                metrics::counter!("cairn_rebalance_shards_total").increment(1);
                metrics::counter!("cairn_rebalance_bytes_total").increment(bytes);
                tracing::debug!(object = %id, segment = seg.segment, index = mv.index, from = %mv.from, to = %mv.to, bytes, "shard moved");
                // Pace: a move of `bytes` takes at least bytes / rate seconds.
                let due = Duration::from_secs_f64(bytes as f64 / rate as f64);
                if let Some(rest) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(rest).await;
                }
            }
            Ok(None) => {}
            Err(e) => {
                report.failed += 1;
                cairn_common::log_limited!(warn, key = (); object = %id, segment = seg.segment, from = %mv.from, to = %mv.to, error = %e, "shard move failed; retrying next pass");
            }
        }
        metrics::gauge!("cairn_rebalance_pending_shards").set((report.misplaced - done - 1) as f64);
    }
    Ok(report)
}

/// Copies one shard to its new node, swaps the record, deletes the old copy. Returns
/// the bytes moved, or None when the record changed meanwhile (nothing to do).
async fn move_shard(
    service: &ObjectService,
    id: ObjectId,
    holder: &Holder,
    seg: &SegmentRecord,
    mv: &Move,
) -> Result<Option<u64>, StoreError> {
    let cluster = &service.cluster;
    let node_err = |node: &NodeId, e: &dyn std::fmt::Display| StoreError::Node {
        node: node.to_string(),
        msg: e.to_string(),
    };
    let (Some(from), Some(to)) = (cluster.addr_if_up(&mv.from), cluster.addr_if_up(&mv.to)) else {
        return Ok(None);
    };
    let index = mv.index as u8;
    let client = cluster.client();
    let layout = super::segment_layout(seg)?;
    let header = client
        .read_shard_header(&from, &id, seg.segment, index)
        .await
        .map_err(|e| node_err(&mv.from, &e))?;
    let blocks = client
        .read_shard(&from, &id, seg.segment, index, 0, layout.stripes())
        .await
        .map_err(|e| node_err(&mv.from, &e))?;
    let len = header.len() as u64 + layout.shard_body_len();
    let body = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(header) })
        .chain(blocks.map(|r| r.map_err(|e| std::io::Error::other(e.to_string()))));
    client
        .put_shard(&to, &id, seg.segment, index, len, body)
        .await
        .map_err(|e| node_err(&mv.to, &e))?;
    cluster.debit(&mv.to, len);
    let mut new = seg.clone();
    new.nodes[mv.index] = mv.to;
    let swapped = match holder {
        Holder::Object { bucket, key, index } => service
            .catalog
            .replace_segment(bucket, key, &id, *index, seg, &new)
            .await?
            .is_some(),
        Holder::Part { number } => {
            service
                .catalog
                .replace_part_segment(&id, *number, seg, &new)
                .await?
        }
    };
    if swapped {
        service.delete_shard_later(id, mv.from, seg.segment, index);
        Ok(Some(len))
    } else {
        // The object or part changed meanwhile: the new copy is the one nothing points to.
        service.delete_shard_later(id, mv.to, seg.segment, index);
        Ok(None)
    }
}
