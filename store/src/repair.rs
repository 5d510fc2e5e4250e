//! Repair: bring every committed object back to full redundancy.
//!
//! A pass scans the catalog for segments that have a shard on a *lost* node (down for
//! longer than the grace period, or replaced by a node with a new identity at its
//! address) or a shard known to be corrupt (a read failed its checksum, or the node's
//! scrub reported it). Each such segment is re-striped: its bytes are read back through
//! the decoder (which rebuilds what is missing from parity and verifies every block),
//! erasure-coded again onto the nodes that are up now, under a fresh segment number,
//! and swapped into the record with a compare-and-swap. The old segment's shards are
//! deleted afterwards; an overwrite or delete racing the repair wins and the new shards
//! are dropped. The geometry follows the live nodes exactly as for new writes: same
//! parity, never less.

use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_common::ids::ObjectId;
use cairn_common::protocol::ShardRef;
use futures::StreamExt;

use super::service::ObjectService;
use super::{BodyError, StoreError};
use crate::records::{ObjectRecord, SegmentRecord};

/// When and how often repair runs.
#[derive(Clone, Copy, Debug)]
pub struct RepairConfig {
    /// How long a node may be down before its shards are rebuilt elsewhere.
    pub after: Duration,
    /// Time between passes.
    pub every: Duration,
}

/// Where a segment to repair is recorded.
#[derive(Clone, Debug)]
enum Owner {
    /// Segment `index` of a committed object.
    Object { index: usize },
    /// Part `number` of a multipart upload in progress (the object id is the upload id).
    Part { number: u32 },
}

/// One segment to repair.
#[derive(Clone, Debug)]
struct Job {
    bucket: String,
    key: String,
    id: ObjectId,
    owner: Owner,
    segment: SegmentRecord,
    why: &'static str,
}

/// What a pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Segments that needed repair.
    pub queued: usize,
    /// Segments re-striped and committed.
    pub repaired: usize,
    /// Segments skipped because their object changed meanwhile.
    pub skipped: usize,
    /// Segments whose repair failed (retried next pass).
    pub failed: usize,
}

/// Runs repair passes forever.
pub async fn run(service: ObjectService, cfg: RepairConfig) {
    let mut tick = tokio::time::interval(cfg.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = service.cluster.repair_wanted() => {}
        }
        match pass(&service, cfg.after).await {
            Ok(r) if r.queued > 0 => {
                tracing::info!(
                    queued = r.queued,
                    repaired = r.repaired,
                    skipped = r.skipped,
                    failed = r.failed,
                    "repair pass done"
                );
            }
            Ok(_) => {}
            Err(e) => cairn_common::log_limited!(warn, key = (); error = %e, "repair pass failed"),
        }
    }
}

/// Finds the segments that need repair and repairs them one at a time.
pub async fn pass(service: &ObjectService, after: Duration) -> Result<PassReport, StoreError> {
    let jobs = scan(service, after)?;
    let mut report = PassReport {
        queued: jobs.len(),
        ..Default::default()
    };
    metrics::gauge!("cairn_repair_queue_segments").set(jobs.len() as f64);
    for (done, job) in jobs.into_iter().enumerate() {
        let started = Instant::now();
        let result = repair(service, &job).await;
        let label = match &result {
            Ok(true) => {
                report.repaired += 1;
                metrics::counter!("cairn_repair_bytes_total").increment(job.segment.len);
                tracing::info!(bucket = %job.bucket, key = %job.key, object = %job.id, segment = job.segment.segment, why = job.why, bytes = job.segment.len, seconds = started.elapsed().as_secs_f64(), "segment repaired");
                "ok"
            }
            Ok(false) => {
                report.skipped += 1;
                "skipped"
            }
            Err(e) => {
                report.failed += 1;
                cairn_common::log_limited!(warn, key = (); bucket = %job.bucket, key = %job.key, object = %job.id, segment = job.segment.segment, why = job.why, error = %e, "segment repair failed; retrying next pass");
                "failed"
            }
        };
        metrics::counter!("cairn_repair_segments_total", "result" => label).increment(1);
        metrics::gauge!("cairn_repair_queue_segments").set((report.queued - done - 1) as f64);
    }
    Ok(report)
}

/// Segments (of objects and of uploads in progress) with a shard on a lost node or a
/// corrupt shard.
fn scan(service: &ObjectService, after: Duration) -> Result<Vec<Job>, StoreError> {
    let cluster = &service.cluster;
    let corrupt = cluster.corrupt_shards();
    let why = |id: ObjectId, seg: &SegmentRecord| {
        if seg.nodes.iter().any(|n| cluster.is_lost(n, after)) {
            return Some("node lost");
        }
        let bad = (0..seg.nodes.len()).any(|i| {
            corrupt.contains(&ShardRef {
                object: id,
                segment: seg.segment,
                index: i as u8,
            })
        });
        bad.then_some("corrupt shard")
    };
    let mut jobs = Vec::new();
    for item in service.catalog.scan_all_objects() {
        let (bucket, key, rec) = item?;
        for (index, seg) in rec.segments.iter().enumerate() {
            if let Some(why) = why(rec.id, seg) {
                jobs.push(Job {
                    bucket: bucket.clone(),
                    key: key.clone(),
                    id: rec.id,
                    owner: Owner::Object { index },
                    segment: seg.clone(),
                    why,
                });
            }
        }
    }
    for (upload, rec) in service.catalog.uploads()? {
        for (number, part) in service.catalog.parts(&upload)? {
            if let Some(why) = why(upload, &part.segment) {
                jobs.push(Job {
                    bucket: rec.bucket.clone(),
                    key: rec.key.clone(),
                    id: upload,
                    owner: Owner::Part { number },
                    segment: part.segment,
                    why,
                });
            }
        }
    }
    Ok(jobs)
}

/// Re-stripes one segment; Ok(false) when its object or part changed and nothing was
/// needed.
async fn repair(service: &ObjectService, job: &Job) -> Result<bool, StoreError> {
    // The bytes of the segment, read through the decoder.
    let (rec, start) = match job.owner {
        Owner::Object { index } => {
            let Some(rec) = service.catalog.object(&job.bucket, &job.key)? else {
                return Ok(false);
            };
            if rec.id != job.id || rec.segments.get(index) != Some(&job.segment) {
                return Ok(false);
            }
            let start: u64 = rec.segments[..index].iter().map(|s| s.len).sum();
            (rec, start)
        }
        Owner::Part { number } => {
            let current = service.catalog.parts(&job.id)?;
            if !current
                .iter()
                .any(|(n, p)| *n == number && p.segment == job.segment)
            {
                return Ok(false);
            }
            let rec = ObjectRecord {
                id: job.id,
                size: job.segment.len,
                modified_ms: 0,
                meta: Default::default(),
                segments: vec![job.segment.clone()],
            };
            (rec, 0)
        }
    };
    let data = service.read(&rec, start, start + job.segment.len);
    let mut body = Box::pin(data.map(|r| r.map_err(|e| Box::new(e) as BodyError)))
        as std::pin::Pin<Box<dyn futures::Stream<Item = Result<Bytes, BodyError>> + Send>>;
    let number = service.catalog.unique_u32()?;
    let new = service
        .write_segment(
            job.id,
            number,
            &job.bucket,
            &job.key,
            job.segment.len,
            &mut body,
        )
        .await?;
    let swapped = match job.owner {
        Owner::Object { index } => {
            let updated = service
                .catalog
                .replace_segment(&job.bucket, &job.key, &job.id, index, &job.segment, &new)
                .await?;
            if let Some(updated) = &updated {
                if let Err(e) = service
                    .publish_manifest(&job.bucket, &job.key, updated)
                    .await
                {
                    tracing::warn!(object = %job.id, error = %e, "manifest rewrite after repair failed");
                }
            }
            updated.is_some()
        }
        Owner::Part { number } => {
            service
                .catalog
                .replace_part_segment(&job.id, number, &job.segment, &new)
                .await?
        }
    };
    if swapped {
        service.cluster.clear_corrupt(&job.id, job.segment.segment);
        service.delete_segment_later(job.id, job.segment.clone());
    } else {
        service.delete_segment_later(job.id, new);
    }
    Ok(swapped)
}
