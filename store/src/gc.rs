//! Garbage collection of orphan shards: shards no committed object or open multipart
//! upload points to (crashed uploads, aborted parts, versions deleted while a node was
//! down, stale copies left on a node that came back after repair moved its shards).
//!
//! A pass reads the set of referenced `(node, shard)` pairs from the catalog, then each
//! live node's inventory, and deletes what is unreferenced and older than the grace
//! period. The grace period covers writes in flight: a shard file appears (by rename)
//! only when complete, just before its record is committed, so a young unreferenced
//! shard may be about to be referenced and is left alone.

use std::collections::HashSet;
use std::time::Duration;

use cairn_common::ids::{NodeId, ObjectId};
use cairn_common::protocol::ShardRef;

use super::service::ObjectService;
use super::StoreError;
use crate::records::SegmentRecord;

/// What a pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Nodes whose inventory was read.
    pub nodes: usize,
    /// Orphan shard files deleted.
    pub shards: usize,
    /// Orphan object directories (shards and manifest) deleted.
    pub objects: usize,
}

/// Runs GC passes forever, one every `every`.
pub async fn run(service: ObjectService, grace: Duration, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match pass(&service, grace).await {
            Ok(r) if r.shards + r.objects > 0 => {
                tracing::info!(
                    nodes = r.nodes,
                    shards = r.shards,
                    objects = r.objects,
                    "orphans collected"
                );
            }
            Ok(_) => {}
            Err(e) => {
                cairn_common::log_limited!(warn, key = (); error = %e, "garbage collection pass failed")
            }
        }
    }
}

/// What the catalog points to.
#[derive(Default)]
struct Referenced {
    shards: HashSet<(NodeId, ShardRef)>,
    objects: HashSet<ObjectId>,
}

impl Referenced {
    fn add(&mut self, object: ObjectId, seg: &SegmentRecord) {
        self.objects.insert(object);
        for (i, node) in seg.nodes.iter().enumerate() {
            self.shards.insert((
                *node,
                ShardRef {
                    object,
                    segment: seg.segment,
                    index: i as u8,
                },
            ));
        }
    }
}

/// Uploads are read before objects: an upload completing between the two reads is then
/// seen in one or the other, never in neither.
fn referenced(service: &ObjectService) -> Result<Referenced, StoreError> {
    let mut r = Referenced::default();
    for (upload, parts) in service.catalog.uploads_with_parts()? {
        r.objects.insert(upload);
        for part in parts {
            r.add(upload, &part.segment);
        }
    }
    for item in service.catalog.scan_all_objects() {
        let (_, _, rec) = item?;
        r.objects.insert(rec.id);
        for seg in &rec.segments {
            r.add(rec.id, seg);
        }
    }
    Ok(r)
}

/// Deletes orphans older than `grace` on every live node.
pub async fn pass(service: &ObjectService, grace: Duration) -> Result<PassReport, StoreError> {
    let refs = referenced(service)?;
    let grace = grace.as_secs();
    let cluster = &service.cluster;
    let client = cluster.client();
    let mut report = PassReport::default();
    for node in cluster.live_nodes() {
        let Some(addr) = cluster.addr_if_up(&node) else {
            continue;
        };
        let inventory = match client.inventory(&addr).await {
            Ok(i) => i,
            Err(e) => {
                tracing::debug!(%node, error = %e, "inventory unavailable; node skipped");
                continue;
            }
        };
        report.nodes += 1;
        // Whole object versions nothing refers to: every shard and the manifest go.
        let mut dead: HashSet<ObjectId> = HashSet::new();
        let mut young: HashSet<ObjectId> = HashSet::new();
        for e in &inventory.shards {
            if !refs.objects.contains(&e.shard.object) {
                if e.age_secs >= grace {
                    dead.insert(e.shard.object);
                } else {
                    young.insert(e.shard.object);
                }
            }
        }
        for (object, age) in &inventory.manifests {
            if !refs.objects.contains(object) {
                if *age >= grace {
                    dead.insert(*object);
                } else {
                    young.insert(*object);
                }
            }
        }
        for object in dead.difference(&young) {
            // The catalog is asked again right before each delete: a record committed
            // since `refs` was read wins (the deletion rule, see `catalog`).
            if service.catalog.references_version(object)? {
                continue;
            }
            match client.delete_object(&addr, object).await {
                Ok(()) => {
                    report.objects += 1;
                    metrics::counter!("cairn_gc_objects_deleted_total").increment(1);
                }
                Err(e) => tracing::debug!(%node, %object, error = %e, "orphan delete failed"),
            }
        }
        // Single shards of live objects that this node should not hold (stale copies,
        // replaced parts, segments re-striped by repair).
        for e in &inventory.shards {
            if refs.objects.contains(&e.shard.object)
                && e.age_secs >= grace
                && !refs.shards.contains(&(node, e.shard))
            {
                let s = e.shard;
                if service.catalog.references_shard(&node, &s)? {
                    continue;
                }
                match client
                    .delete_shard(&addr, &s.object, s.segment, s.index)
                    .await
                {
                    Ok(()) => {
                        report.shards += 1;
                        metrics::counter!("cairn_gc_shards_deleted_total").increment(1);
                    }
                    Err(e) => {
                        tracing::debug!(%node, object = %s.object, error = %e, "orphan delete failed")
                    }
                }
            }
        }
    }
    Ok(report)
}
