//! Rebuilding a lost catalog from the storage nodes (`cairn-gateway rebuild-catalog`).
//!
//! Every committed object version has a [`Manifest`] on the nodes holding its first
//! segment, written after its record was committed and before the client was answered.
//! The rebuild reads every node's manifests and shard inventory, and for each key keeps
//! the newest version whose segments all still have at least `k` shards somewhere. Shard
//! locations come from the inventories, not the manifests (repair may have moved them);
//! a shard found nowhere is recorded on no node, and repair rebuilds it. Versions that
//! were never committed have no manifest and do not come back; versions deleted while a
//! node was down have too few shards left and do not come back either.

use std::collections::{BTreeMap, HashMap};

use cairn_common::ids::NodeId;
use cairn_common::protocol::ShardRef;

use super::catalog::Catalog;
use super::cluster::Cluster;
use super::StoreError;
use crate::records::{self, BucketRecord, Manifest, ObjectRecord, WriteCondition};

/// What a rebuild found and restored.
#[derive(Clone, Debug, Default)]
pub struct RebuildReport {
    /// Nodes read.
    pub nodes: usize,
    /// Manifests read (all copies).
    pub manifests: usize,
    /// Buckets restored.
    pub buckets: usize,
    /// Objects restored.
    pub objects: usize,
    /// Keys whose every version lacked shards (deleted, or lost beyond repair).
    pub unrecoverable: Vec<String>,
}

/// Reads every live node of `cluster` and fills `catalog` (which should be empty).
pub async fn rebuild(cluster: &Cluster, catalog: &Catalog) -> Result<RebuildReport, StoreError> {
    let mut report = RebuildReport::default();
    let mut buckets: BTreeMap<String, i64> = BTreeMap::new();
    let mut located: HashMap<ShardRef, NodeId> = HashMap::new();
    let mut versions: BTreeMap<(String, String), Vec<Manifest>> = BTreeMap::new();
    for node in cluster.live_nodes() {
        let Some(addr) = cluster.addr_if_up(&node) else {
            continue;
        };
        let client = cluster.client();
        let node_err = |e: super::node_client::NodeCallError| StoreError::Node {
            node: node.to_string(),
            msg: e.to_string(),
        };
        let inventory = client.inventory(&addr).await.map_err(node_err)?;
        let manifests = client.manifests(&addr).await.map_err(node_err)?;
        report.nodes += 1;
        for (name, marker) in manifests.buckets {
            let created = records::decode::<BucketRecord>(marker.as_bytes())
                .map(|b| b.created_ms)
                .unwrap_or(0);
            let e = buckets.entry(name).or_insert(created);
            *e = (*e).min(created);
        }
        for e in inventory.shards {
            located.insert(e.shard, node);
        }
        for stored in manifests.manifests {
            report.manifests += 1;
            match records::decode::<Manifest>(stored.manifest.as_bytes()) {
                Ok(m) if m.record.id == stored.object => versions
                    .entry((m.bucket.clone(), m.key.clone()))
                    .or_default()
                    .push(m),
                Ok(_) => {
                    tracing::warn!(object = %stored.object, %node, "manifest names another object; skipped")
                }
                Err(e) => {
                    tracing::warn!(object = %stored.object, %node, error = %e, "unreadable manifest; skipped")
                }
            }
        }
    }
    let mut restored = Vec::new();
    for ((bucket, key), mut candidates) in versions {
        // Newest version first; for one version, the newest manifest (repair rewrites it).
        candidates.sort_by_key(|m| std::cmp::Reverse((m.record.modified_ms, m.written_ms)));
        match candidates.iter().find_map(|m| locate(&m.record, &located)) {
            Some(rec) => {
                let created = buckets.entry(bucket.clone()).or_insert(rec.modified_ms);
                *created = (*created).min(rec.modified_ms);
                restored.push((bucket, key, rec));
            }
            None => report.unrecoverable.push(format!("{bucket}/{key}")),
        }
    }
    // Buckets first: an object is only ever committed into a bucket that exists.
    for (name, created_ms) in buckets {
        if catalog
            .create_bucket(&name, &BucketRecord { created_ms })
            .await?
        {
            report.buckets += 1;
        }
    }
    for (bucket, key, rec) in restored {
        catalog
            .put_object(&bucket, &key, &rec, &WriteCondition::None)
            .await?;
        report.objects += 1;
    }
    Ok(report)
}

/// The record with shard locations taken from the inventories, if every segment still has
/// at least `k` shards; missing shards are put on no node (the nil id) for repair.
fn locate(rec: &ObjectRecord, located: &HashMap<ShardRef, NodeId>) -> Option<ObjectRecord> {
    let mut rec = rec.clone();
    for seg in &mut rec.segments {
        let n = seg.k as usize + seg.m as usize;
        let mut found = 0;
        seg.nodes = (0..n)
            .map(|i| {
                let shard = ShardRef {
                    object: rec.id,
                    segment: seg.segment,
                    index: i as u8,
                };
                match located.get(&shard) {
                    Some(node) => {
                        found += 1;
                        *node
                    }
                    None => NodeId([0; 16]),
                }
            })
            .collect();
        if found < seg.k as usize {
            return None;
        }
    }
    Some(rec)
}
