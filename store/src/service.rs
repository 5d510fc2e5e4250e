//! The object service: stores object data on the cluster and commits it in the catalog.
//!
//! A write is two steps. [`ObjectService::write_data`] erasure-codes the body onto nodes
//! under a fresh [`ObjectId`] and returns a [`StagedObject`]; nothing is visible yet. Then
//! [`ObjectService::commit`] writes and flushes the catalog record, atomically replacing
//! any previous version, whose shards are deleted afterwards. A write that fails or is
//! abandoned before commit leaves only unreferenced shards: exactly the shards of that
//! attempt (object, segment, index) are deleted right away when possible (and are
//! orphans for garbage collection otherwise). Every delete first asks the catalog
//! whether a record still points to the shard ([`Catalog::references_shard`]).

use std::sync::Arc;

use bytes::Bytes;
use cairn_common::ids::{NodeId, ObjectId};
use cairn_common::placement;
use cairn_common::protocol::ShardRef;
use cairn_common::request_id;
use cairn_common::shard::Layout;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use super::catalog::Catalog;
use super::cluster::Cluster;
use super::decoder;
use super::encoder::{self, SegmentSpec};
use super::leases::ReadLeases;
use super::node_client::NodeCallError;
use super::{BodyError, StoreError};
use crate::listing::{ListQuery, Page};
use crate::records::{
    self, Bucket, BucketRecord, CompletedRecord, Manifest, ObjectMeta, ObjectRecord, PartRecord,
    SegmentRecord, UploadRecord, WriteCondition,
};

/// Erasure settings for new writes.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    /// Data shards wanted.
    pub k: u8,
    /// Parity shards (never fewer, whatever the number of live nodes).
    pub m: u8,
    /// Bytes per block.
    pub block_size: u32,
}

/// What to delete on a node: every shard of an object version, or one shard.
enum Garbage {
    Version,
    Shard { segment: u32, index: u8 },
}

/// Where a new segment goes: its geometry, and the node (with its address) of each of
/// its `k + m` shards.
struct Placement {
    k: u8,
    m: u8,
    targets: Vec<(NodeId, String)>,
}

/// Room counted for a shard file's header (its bucket and key included) on top of its
/// blocks when checking a node's free space.
const SHARD_HEADER_ROOM: u64 = 4096;

/// Times a segment is written again after nodes failed part way, before giving up.
const MAX_REWRITES: u32 = 2;

/// Object data written to nodes but not yet committed.
#[derive(Debug)]
pub struct StagedObject {
    /// Identity of the shards.
    id: ObjectId,
    /// Logical size.
    size: u64,
    /// Where the data went.
    segments: Vec<SegmentRecord>,
}

/// The object service.
#[derive(Clone)]
pub struct ObjectService {
    pub(crate) catalog: Catalog,
    pub(crate) cluster: Cluster,
    geometry: Geometry,
    leases: ReadLeases,
    /// Multipart uploads a bucket may have open at once.
    max_uploads_per_bucket: usize,
    /// Held from counting a bucket's open uploads to registering a new one, so that
    /// concurrent creations cannot together pass the limit (a count is a scan, which a
    /// sled transaction cannot hold).
    create_upload_lock: Arc<tokio::sync::Mutex<()>>,
}

impl ObjectService {
    /// A service over a catalog and a cluster.
    pub(crate) fn new(
        catalog: Catalog,
        cluster: Cluster,
        geometry: Geometry,
        max_uploads_per_bucket: usize,
    ) -> Self {
        Self {
            catalog,
            cluster,
            geometry,
            leases: ReadLeases::default(),
            max_uploads_per_bucket,
            create_upload_lock: Arc::default(),
        }
    }

    /// The bucket `name`, or [`StoreError::NoSuchBucket`].
    pub fn bucket(&self, name: &str) -> Result<Bucket, StoreError> {
        let rec = self.catalog.bucket(name)?.ok_or(StoreError::NoSuchBucket)?;
        Ok(Bucket {
            name: name.to_string(),
            created_ms: rec.created_ms,
        })
    }

    /// All buckets, by name.
    pub fn list_buckets(&self) -> Result<Vec<Bucket>, StoreError> {
        Ok(self
            .catalog
            .list_buckets()?
            .into_iter()
            .map(|(name, rec)| Bucket {
                name,
                created_ms: rec.created_ms,
            })
            .collect())
    }

    /// The current version of `bucket/key`, or [`StoreError::NoSuchKey`].
    pub fn object(&self, bucket: &str, key: &str) -> Result<ObjectRecord, StoreError> {
        self.catalog
            .object(bucket, key)?
            .ok_or(StoreError::NoSuchKey)
    }

    /// Checks a write condition against the current version of `bucket/key` (it is
    /// checked again, atomically, when the write commits).
    pub fn check_condition(
        &self,
        bucket: &str,
        key: &str,
        cond: &WriteCondition,
    ) -> Result<(), StoreError> {
        if *cond == WriteCondition::None {
            return Ok(());
        }
        cond.check(self.catalog.object(bucket, key)?.as_ref())
    }

    /// One page of the keys of `bucket`.
    pub fn list_objects(&self, bucket: &str, query: &ListQuery<'_>) -> Result<Page, StoreError> {
        self.bucket(bucket)?;
        crate::listing::list_page(&self.catalog, bucket, query)
    }

    /// Chooses geometry and nodes for a new segment of `len` bytes among the live nodes
    /// with room for a shard, and counts the shards against their free space.
    fn place(&self, object: &ObjectId, segment: u32, len: u64) -> Result<Placement, StoreError> {
        let Geometry {
            k: want,
            m,
            block_size,
        } = self.geometry;
        let mut k = want;
        loop {
            // Narrower stripes mean bigger shards: fewer nodes may have room for them.
            let shard = Layout::new(k, m, block_size, len)?.shard_body_len() + SHARD_HEADER_ROOM;
            let c = self.cluster.candidates(shard, &[]);
            if c.live < m as usize + 1 {
                return Err(StoreError::NotEnoughNodes(format!(
                    "{} nodes up, {} needed",
                    c.live,
                    m as usize + 1
                )));
            }
            let fits = placement::choose_geometry(c.with_room.len(), want, m).map_err(|_| {
                StoreError::Full(format!(
                    "{} of {} live storage nodes have room for a {shard}-byte shard and their reserve; {} needed",
                    c.with_room.len(),
                    c.live,
                    m as usize + 1
                ))
            })?;
            if fits.0 < k {
                k = fits.0;
                continue;
            }
            let ranked = placement::rank(object, segment, &c.with_room);
            let mut targets = Vec::with_capacity(k as usize + m as usize);
            for id in ranked.into_iter().take(k as usize + m as usize) {
                let addr = self
                    .cluster
                    .addr_if_up(&id)
                    .ok_or_else(|| StoreError::Unavailable(format!("node {id} went down")))?;
                targets.push((id, addr));
            }
            for (id, _) in &targets {
                self.cluster.debit(id, shard);
            }
            return Ok(Placement { k, m, targets });
        }
    }

    /// Writes `len` bytes of `body` as one segment of a new object version.
    pub async fn write_data<S>(
        &self,
        bucket: &str,
        key: &str,
        len: u64,
        body: &mut S,
    ) -> Result<StagedObject, StoreError>
    where
        S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
    {
        let id = ObjectId::random();
        let seg = self.write_segment(id, 0, bucket, key, len, body).await?;
        Ok(StagedObject {
            id,
            size: len,
            segments: vec![seg],
        })
    }

    /// Writes one segment of object version `id`, durably and at full redundancy.
    ///
    /// A node that fails or fills up part way does not fail the write while the others
    /// still hold `k` shards: the segment is then read back (rebuilt from parity) and
    /// written again under a fresh segment number onto nodes that can take it, and only
    /// the short attempt's shards are deleted.
    pub(crate) async fn write_segment<S>(
        &self,
        id: ObjectId,
        segment: u32,
        bucket: &str,
        key: &str,
        len: u64,
        body: &mut S,
    ) -> Result<SegmentRecord, StoreError>
    where
        S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
    {
        let started = std::time::Instant::now();
        let (mut seg, mut short) = self
            .write_attempt(id, segment, bucket, key, len, body)
            .await?;
        let mut rewrites = 0;
        while short {
            rewrites += 1;
            if rewrites > MAX_REWRITES {
                self.delete_segment_later(id, seg);
                return Err(StoreError::Unavailable(
                    "storage nodes kept failing while a segment was written".into(),
                ));
            }
            metrics::counter!("cairn_segment_rewrites_total").increment(1);
            tracing::info!(object = %id, segment = seg.segment, "a node failed or filled up during the write: writing the segment again on nodes with room");
            let rec = ObjectRecord {
                id,
                size: len,
                modified_ms: 0,
                meta: ObjectMeta::default(),
                segments: vec![seg.clone()],
            };
            let mut again = Box::pin(
                self.read(&rec, 0, len)
                    .map(|r| r.map_err(|e| Box::new(e) as BodyError)),
            );
            let number = self.catalog.unique_u32()?;
            let next = self
                .write_attempt(id, number, bucket, key, len, &mut again)
                .await;
            drop(again);
            self.delete_segment_later(id, seg);
            (seg, short) = next?;
        }
        crate::failpoint::hit(crate::failpoint::SEGMENT_DURABLE);
        if seg.k < self.geometry.k {
            metrics::counter!("cairn_degraded_writes_total").increment(1);
        }
        metrics::histogram!("cairn_segment_write_seconds").record(started.elapsed().as_secs_f64());
        Ok(seg)
    }

    /// One attempt at writing a segment: its record, and whether some of its shards
    /// did not land (it is readable but short of redundancy). A failed attempt's shards
    /// are deleted.
    async fn write_attempt<S>(
        &self,
        id: ObjectId,
        segment: u32,
        bucket: &str,
        key: &str,
        len: u64,
        body: &mut S,
    ) -> Result<(SegmentRecord, bool), StoreError>
    where
        S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
    {
        let Placement { k, m, targets } = self.place(&id, segment, len)?;
        let layout = Layout::new(k, m, self.geometry.block_size, len)?;
        let spec = SegmentSpec {
            object: id,
            segment,
            layout,
            bucket,
            key,
        };
        let result = encoder::write_segment(&self.cluster, &spec, &targets, body).await;
        let seg = SegmentRecord {
            segment,
            len,
            k,
            m,
            block_size: self.geometry.block_size,
            nodes: targets.iter().map(|(n, _)| *n).collect(),
            format: cairn_common::shard::FORMAT_VERSION,
        };
        match result {
            Ok(written) => Ok((seg, !written.failed.is_empty())),
            Err(e) => {
                self.delete_segment_later(id, seg);
                Err(e)
            }
        }
    }

    /// Makes a staged object the visible version of `bucket/key`.
    pub async fn commit(
        &self,
        bucket: &str,
        key: &str,
        staged: StagedObject,
        meta: ObjectMeta,
        cond: &WriteCondition,
    ) -> Result<ObjectRecord, StoreError> {
        let rec = ObjectRecord {
            id: staged.id,
            size: staged.size,
            modified_ms: now_ms(),
            meta,
            segments: staged.segments.clone(),
        };
        let old = match self.catalog.put_object(bucket, key, &rec, cond).await {
            Ok(old) => old,
            Err(e) => {
                self.discard(staged);
                return Err(e);
            }
        };
        if let Some(old) = old {
            self.delete_version_later(&old);
        }
        self.publish_manifest(bucket, key, &rec).await?;
        Ok(rec)
    }

    /// Creates a bucket and stores its marker on the live nodes (at least `m+1` of them,
    /// so a rebuilt catalog has it); returns false if it already existed.
    pub async fn create_bucket(&self, name: &str) -> Result<bool, StoreError> {
        let rec = BucketRecord {
            created_ms: now_ms(),
        };
        if !self.catalog.create_bucket(name, &rec).await? {
            return Ok(false);
        }
        let body = Bytes::from(records::encode(&rec)?);
        let live = self.cluster.live_nodes();
        let results = self
            .cluster
            .on_up_nodes(&live, |client, addr| {
                let body = body.clone();
                async move { client.put_bucket(&addr, name, body).await }
            })
            .await;
        let need = (self.geometry.m as usize + 1).min(live.len());
        enough_copies(results, need, "bucket marker")?;
        Ok(true)
    }

    /// What the gateway knows of each storage node.
    pub fn nodes(&self) -> Vec<crate::NodeState> {
        self.cluster.snapshot()
    }

    /// Declares a storage node gone for good (durably): it gets no new shards and repair
    /// rebuilds its shards elsewhere now. False if it already was.
    pub async fn declare_node_gone(&self, id: NodeId) -> Result<bool, StoreError> {
        let fresh = self.catalog.declare_node_gone(&id).await?;
        self.cluster.declare_gone(id);
        Ok(fresh)
    }

    /// Deletes an empty bucket's record, then its markers in the background.
    pub async fn delete_bucket(&self, name: &str) -> Result<(), StoreError> {
        self.catalog.delete_bucket(name).await?;
        let cluster = self.cluster.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            for n in cluster.live_nodes() {
                if let Some(addr) = cluster.addr_if_up(&n) {
                    if let Err(e) = cluster.client().delete_bucket(&addr, &name).await {
                        tracing::debug!(node = %n, bucket = %name, error = %e, "bucket marker delete failed");
                    }
                }
            }
        });
        Ok(())
    }

    /// Stores the manifest of `bucket/key` again if version `id` is still current (a
    /// retried request whose first attempt committed).
    async fn republish_manifest(
        &self,
        bucket: &str,
        key: &str,
        id: &ObjectId,
    ) -> Result<(), StoreError> {
        match self.catalog.object(bucket, key)? {
            Some(rec) if rec.id == *id => self.publish_manifest(bucket, key, &rec).await,
            _ => Ok(()),
        }
    }

    /// Writes a committed record's [`Manifest`] beside its shards on the nodes holding its
    /// first segment, so the catalog can be rebuilt from the nodes. At least `m+1` copies
    /// must land (as many node losses as the data survives), else the write is not
    /// acknowledged.
    pub(crate) async fn publish_manifest(
        &self,
        bucket: &str,
        key: &str,
        rec: &ObjectRecord,
    ) -> Result<(), StoreError> {
        let manifest = Manifest {
            bucket: bucket.to_string(),
            key: key.to_string(),
            record: rec.clone(),
            written_ms: now_ms(),
        };
        let body = Bytes::from(records::encode(&manifest)?);
        let (nodes, m) = match rec.segments.first() {
            Some(seg) => (seg.nodes.clone(), seg.m as usize),
            None => (self.cluster.live_nodes(), self.geometry.m as usize),
        };
        let results = self
            .cluster
            .on_up_nodes(&nodes, |client, addr| {
                let body = body.clone();
                async move { client.put_manifest(&addr, &rec.id, body).await }
            })
            .await;
        enough_copies(results, (m + 1).min(nodes.len()), "manifest")
    }

    /// Drops a written segment that will not be recorded (a part whose body failed its
    /// checks): exactly its shards.
    pub fn discard_segment(&self, id: ObjectId, seg: SegmentRecord) {
        self.delete_segment_later(id, seg);
    }

    /// Drops a staged object that will not be committed: exactly its segments' shards.
    pub fn discard(&self, staged: StagedObject) {
        for seg in staged.segments {
            self.delete_segment_later(staged.id, seg);
        }
    }

    /// Starts a multipart upload; its id is also the object id its parts are written
    /// under. Refused with [`StoreError::TooManyUploads`] when the bucket has as many
    /// open as allowed.
    pub async fn create_upload(&self, rec: &UploadRecord) -> Result<ObjectId, StoreError> {
        self.bucket(&rec.bucket)?;
        let id = ObjectId::random();
        {
            let _one_at_a_time = self.create_upload_lock.lock().await;
            let limit = self.max_uploads_per_bucket;
            if self.catalog.count_uploads(&rec.bucket, limit)? >= limit {
                return Err(StoreError::TooManyUploads(limit));
            }
            self.catalog.create_upload(&id, rec).await?;
        }
        metrics::gauge!("cairn_multipart_uploads_open").increment(1.0);
        Ok(id)
    }

    /// The upload `id` into `bucket/key`, or [`StoreError::NoSuchUpload`].
    pub fn upload(
        &self,
        bucket: &str,
        key: &str,
        id: &ObjectId,
    ) -> Result<UploadRecord, StoreError> {
        match self.catalog.upload(id)? {
            Some(rec) if rec.bucket == bucket && rec.key == key => Ok(rec),
            _ => Err(StoreError::NoSuchUpload),
        }
    }

    /// The parts recorded for an upload, by part number.
    pub fn parts(&self, upload: &ObjectId) -> Result<Vec<(u32, PartRecord)>, StoreError> {
        self.catalog.parts(upload)
    }

    /// The uploads in progress into `bucket`, ordered by id.
    pub fn uploads_in(&self, bucket: &str) -> Result<Vec<(ObjectId, UploadRecord)>, StoreError> {
        let mut all = self.catalog.uploads()?;
        all.retain(|(_, r)| r.bucket == bucket);
        Ok(all)
    }

    /// The remembered result of a completed upload into `bucket/key`, with its manifest
    /// stored again if that version is still current (a retried Complete whose first
    /// attempt committed but could not answer).
    pub async fn completed_upload(
        &self,
        bucket: &str,
        key: &str,
        id: &ObjectId,
    ) -> Result<Option<CompletedRecord>, StoreError> {
        match self.catalog.completed(id)? {
            Some(done) if done.bucket == bucket && done.key == key => {
                self.republish_manifest(bucket, key, id).await?;
                Ok(Some(done))
            }
            _ => Ok(None),
        }
    }

    /// Writes one part of an upload as its own segment (a fresh segment number per
    /// attempt, so a re-upload never overwrites the shards the catalog points to).
    pub async fn write_part<S>(
        &self,
        upload: ObjectId,
        rec: &UploadRecord,
        len: u64,
        body: &mut S,
    ) -> Result<SegmentRecord, StoreError>
    where
        S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
    {
        let segment = self.catalog.unique_u32()?;
        self.write_segment(upload, segment, &rec.bucket, &rec.key, len, body)
            .await
    }

    /// Records a written part if its upload is still in progress (else
    /// [`StoreError::NoSuchUpload`], and the part's shards are deleted), deleting the
    /// shards of the part it replaces.
    pub async fn commit_part(
        &self,
        upload: ObjectId,
        number: u32,
        part: &PartRecord,
    ) -> Result<(), StoreError> {
        let old = match self.catalog.put_part(&upload, number, part).await {
            Ok(old) => old,
            Err(e) => {
                self.delete_segment_later(upload, part.segment.clone());
                return Err(e);
            }
        };
        if let Some(old) = old {
            if old.segment.segment != part.segment.segment {
                self.delete_segment_later(upload, old.segment);
            }
        }
        Ok(())
    }

    /// Completes an upload: the chosen parts' segments, in order, become `bucket/key`.
    /// Parts not chosen are deleted.
    pub async fn complete_upload(
        &self,
        upload: ObjectId,
        segments: Vec<SegmentRecord>,
        unused: Vec<SegmentRecord>,
        meta: ObjectMeta,
        done: &CompletedRecord,
        cond: &WriteCondition,
    ) -> Result<ObjectRecord, StoreError> {
        let rec = ObjectRecord {
            id: upload,
            size: segments.iter().map(|s| s.len).sum(),
            modified_ms: now_ms(),
            meta,
            segments,
        };
        let old = self
            .catalog
            .complete_upload(&upload, &rec, done, cond)
            .await?;
        metrics::gauge!("cairn_multipart_uploads_open").decrement(1.0);
        if let Some(old) = old {
            if old.id != upload {
                self.delete_version_later(&old);
            }
        }
        for seg in unused {
            self.delete_segment_later(upload, seg);
        }
        self.publish_manifest(&done.bucket, &done.key, &rec).await?;
        Ok(rec)
    }

    /// Aborts an upload and frees its shards; returns false if there was no such upload.
    pub async fn abort_upload(&self, upload: ObjectId) -> Result<bool, StoreError> {
        let Some(parts) = self.catalog.abort_upload(&upload).await? else {
            return Ok(false);
        };
        metrics::gauge!("cairn_multipart_uploads_open").decrement(1.0);
        // Part attempts still in flight leave orphans, which garbage collection removes.
        for (_, part) in parts {
            self.delete_segment_later(upload, part.segment);
        }
        Ok(true)
    }

    /// Aborts uploads started more than `max_age_ms` ago; returns how many.
    pub async fn expire_uploads(&self, max_age_ms: i64) -> Result<usize, StoreError> {
        let cutoff = now_ms() - max_age_ms;
        let mut n = 0;
        for (id, rec) in self.catalog.uploads()? {
            if rec.created_ms < cutoff && self.abort_upload(id).await? {
                tracing::info!(upload = %id, bucket = %rec.bucket, key = %rec.key, "expired abandoned multipart upload");
                n += 1;
            }
        }
        self.catalog.prune_completed(cutoff)?;
        Ok(n)
    }

    /// Best-effort background delete of one segment's shards.
    pub(crate) fn delete_segment_later(&self, id: ObjectId, seg: SegmentRecord) {
        let jobs = seg.nodes.iter().enumerate();
        let jobs = jobs.map(|(i, n)| {
            (
                *n,
                Garbage::Shard {
                    segment: seg.segment,
                    index: i as u8,
                },
            )
        });
        self.delete_later(id, jobs.collect());
    }

    /// Best-effort background delete of one shard on one node (a copy that was moved).
    pub(crate) fn delete_shard_later(&self, id: ObjectId, node: NodeId, segment: u32, index: u8) {
        self.delete_later(id, vec![(node, Garbage::Shard { segment, index })]);
    }

    /// Removes `bucket/key`; returns whether it existed.
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<bool, StoreError> {
        match self.catalog.delete_object(bucket, key).await? {
            Some(old) => {
                self.withdraw_manifest(&old).await;
                self.delete_version_later(&old);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Removes a deleted version's manifests from the live nodes before the delete is
    /// answered, so a catalog rebuilt afterwards does not bring it back (its shards are
    /// freed later, once reads in flight are done). A node that is down keeps its copy;
    /// the version still does not come back unless `k` shards of every segment survive.
    async fn withdraw_manifest(&self, rec: &ObjectRecord) {
        let nodes = nodes_of(rec);
        let results = self
            .cluster
            .on_up_nodes(&nodes, |client, addr| async move {
                client.delete_manifest(&addr, &rec.id).await
            })
            .await;
        for r in results {
            if let Err(e) = r {
                tracing::debug!(object = %rec.id, error = %e, "manifest withdrawal failed");
            }
        }
    }

    fn delete_version_later(&self, rec: &ObjectRecord) {
        self.delete_shards_later(rec.id, nodes_of(rec));
    }

    /// Best-effort background delete of an object version's shards. Nodes that are down
    /// keep orphans, which garbage collection removes later.
    fn delete_shards_later(&self, id: ObjectId, mut nodes: Vec<NodeId>) {
        nodes.sort();
        nodes.dedup();
        self.delete_later(
            id,
            nodes.into_iter().map(|n| (n, Garbage::Version)).collect(),
        );
    }

    /// Best-effort background deletes. A node that is down keeps its copy, an orphan for
    /// garbage collection.
    fn delete_later(&self, id: ObjectId, jobs: Vec<(NodeId, Garbage)>) {
        let cluster = self.cluster.clone();
        let catalog = self.catalog.clone();
        let leases = self.leases.clone();
        // Under the id of the request that freed the shards (none for background work).
        tokio::spawn(request_id::propagate(async move {
            // Reads that started before the version was replaced finish first.
            leases.idle(&id).await;
            for (node, what) in jobs {
                let Some(addr) = cluster.addr(&node) else {
                    continue;
                };
                if let Some(why) = still_referenced(&catalog, &node, &id, &what) {
                    tracing::warn!(%id, %node, why, "shard delete refused: the catalog still points to it");
                    metrics::counter!("cairn_deletes_refused_total").increment(1);
                    continue;
                }
                let client = cluster.client();
                let r = match what {
                    Garbage::Version => client.delete_object(&addr, &id).await,
                    Garbage::Shard { segment, index } => {
                        client.delete_shard(&addr, &id, segment, index).await
                    }
                };
                if let Err(e) = r {
                    tracing::debug!(%id, %node, error = %e, "shard delete deferred to GC");
                }
            }
        }));
    }

    /// Streams bytes `start..end` of an object (end exclusive).
    pub fn read(
        &self,
        rec: &ObjectRecord,
        start: u64,
        end: u64,
    ) -> impl Stream<Item = Result<Bytes, StoreError>> + use<> {
        let (tx, mut rx) = mpsc::channel::<Result<Bytes, StoreError>>(4);
        let cluster = self.cluster.clone();
        let rec = rec.clone();
        let lease = self.leases.acquire(rec.id);
        tokio::spawn(request_id::propagate(async move {
            let _lease = lease;
            let mut seg_start = 0u64;
            for seg in &rec.segments {
                let seg_end = seg_start + seg.len;
                let (lo, hi) = (start.max(seg_start), end.min(seg_end));
                if lo < hi {
                    if let Err(e) = decoder::read_segment(
                        &cluster,
                        rec.id,
                        seg,
                        lo - seg_start,
                        hi - seg_start,
                        &tx,
                    )
                    .await
                    {
                        cairn_common::log_limited!(error, key = (); object = %rec.id, error = %e, "read failed");
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
                seg_start = seg_end;
            }
        }));
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}

/// Why a delete must not be sent: the catalog still points to what it would remove (or
/// cannot be read, which counts as yes).
fn still_referenced(
    catalog: &Catalog,
    node: &NodeId,
    id: &ObjectId,
    what: &Garbage,
) -> Option<&'static str> {
    let r = match what {
        Garbage::Version => catalog.references_version(id),
        Garbage::Shard { segment, index } => catalog.references_shard(
            node,
            &ShardRef {
                object: *id,
                segment: *segment,
                index: *index,
            },
        ),
    };
    match r {
        Ok(false) => None,
        Ok(true) => Some("referenced"),
        Err(_) => Some("catalog unreadable"),
    }
}

/// Every node holding a shard of `rec`, once each.
fn nodes_of(rec: &ObjectRecord) -> Vec<NodeId> {
    let mut nodes: Vec<NodeId> = rec
        .segments
        .iter()
        .flat_map(|s| s.nodes.iter().copied())
        .collect();
    nodes.sort();
    nodes.dedup();
    nodes
}

/// Ok when at least `need` of the small writes `results` landed; else a retryable error
/// naming the first failure.
fn enough_copies(
    results: Vec<Result<(), NodeCallError>>,
    need: usize,
    what: &str,
) -> Result<(), StoreError> {
    let ok = results.iter().filter(|r| r.is_ok()).count();
    if ok >= need {
        return Ok(());
    }
    let why = results
        .into_iter()
        .find_map(|r| r.err())
        .map(|e| e.to_string())
        .unwrap_or_else(|| "nodes down".into());
    Err(StoreError::Unavailable(format!(
        "{what} stored on {ok} nodes, {need} needed: {why}"
    )))
}

/// Milliseconds since the unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
