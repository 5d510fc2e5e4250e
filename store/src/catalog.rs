//! The catalog: buckets and committed object records in sled.
//!
//! Trees: `buckets` (name → [`BucketRecord`] JSON) and `objects` (`bucket \0 key` →
//! [`ObjectRecord`] JSON), `versions` (object id → `bucket \0 key`, to find the record
//! that points to a shard), multipart `uploads` and `parts`. A record is written only
//! after all of an object's shards are durable, and every mutation is flushed before it
//! is acknowledged.
//!
//! **The deletion rule**: nothing may delete a shard that a record still points to.
//! [`Catalog::references_shard`] and [`Catalog::references_version`] answer that from
//! the records themselves, and every shard delete (failed writes, replaced versions,
//! repair, rebalance, garbage collection) asks them right before it is sent.

use std::path::Path;

use cairn_common::ids::{NodeId, ObjectId};
use cairn_common::protocol::ShardRef;
use serde::Deserialize;

use crate::records::{
    self, BucketRecord, CompletedRecord, ObjectRecord, PartRecord, SegmentRecord, UploadRecord,
    WriteCondition,
};
use crate::StoreError;

/// The sled-backed catalog.
#[derive(Clone)]
pub struct Catalog {
    db: sled::Db,
    buckets: sled::Tree,
    objects: sled::Tree,
    uploads: sled::Tree,
    parts: sled::Tree,
    completed: sled::Tree,
    /// Storage nodes an operator declared gone: never given shards again.
    gone_nodes: sled::Tree,
    /// Object id → `bucket \0 key` of the record that may hold it. Written before the
    /// record, removed after it, and always checked against the record: a stale entry
    /// only costs a lookup.
    versions: sled::Tree,
}

/// Key in the `meta` tree marking that `versions` indexes every object.
const VERSIONS_INDEXED: &[u8] = b"versions-indexed";

/// The error of a failed catalog transaction: its storage failure, or why it aborted.
fn transaction_error(e: sled::transaction::TransactionError<StoreError>) -> StoreError {
    match e {
        sled::transaction::TransactionError::Storage(e) => StoreError::Catalog(e),
        sled::transaction::TransactionError::Abort(e) => e,
    }
}

fn part_key(upload: &ObjectId, part: u32) -> Vec<u8> {
    let mut k = upload.0.to_vec();
    k.extend_from_slice(&part.to_be_bytes());
    k
}

fn object_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(bucket.len() + 1 + key.len());
    k.extend_from_slice(bucket.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

impl Catalog {
    /// Opens (or creates) the catalog in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(Some(500))
            .open()?;
        let buckets = db.open_tree("buckets")?;
        let objects = db.open_tree("objects")?;
        let uploads = db.open_tree("uploads")?;
        let parts = db.open_tree("parts")?;
        let completed = db.open_tree("completed")?;
        let gone_nodes = db.open_tree("gone_nodes")?;
        let versions = db.open_tree("versions")?;
        let catalog = Self {
            db,
            buckets,
            objects,
            uploads,
            parts,
            completed,
            gone_nodes,
            versions,
        };
        catalog.index_versions()?;
        Ok(catalog)
    }

    /// Builds the `versions` index of a catalog written before it existed (once).
    fn index_versions(&self) -> Result<(), StoreError> {
        let meta = self.db.open_tree("meta")?;
        if meta.contains_key(VERSIONS_INDEXED)? {
            return Ok(());
        }
        let mut n = 0usize;
        for item in self.objects.iter() {
            let (okey, v) = item?;
            let rec: ObjectRecord = records::decode(&v)?;
            self.versions.insert(rec.id.0, okey)?;
            n += 1;
        }
        meta.insert(VERSIONS_INDEXED, b"1".as_slice())?;
        self.db.flush()?;
        if n > 0 {
            tracing::info!(objects = n, "catalog: object versions indexed");
        }
        Ok(())
    }

    /// The committed record holding version `id`, if any.
    fn record_of_version(&self, id: &ObjectId) -> Result<Option<ObjectRecord>, StoreError> {
        let Some(okey) = self.versions.get(id.0)? else {
            return Ok(None);
        };
        let Some(v) = self.objects.get(&okey)? else {
            return Ok(None);
        };
        let rec: ObjectRecord = records::decode(&v)?;
        Ok((rec.id == *id).then_some(rec))
    }

    /// Drops the index entry of version `id` if it still points to `okey`.
    fn unindex_version(&self, id: &ObjectId, okey: &[u8]) -> Result<(), StoreError> {
        // Lost race (the entry moved to another key): nothing to do.
        let _ = self
            .versions
            .compare_and_swap(id.0, Some(okey), None::<&[u8]>)?;
        Ok(())
    }

    /// Whether a committed object or a multipart upload in progress still has version
    /// `id` (then none of its shards may be deleted wholesale).
    pub fn references_version(&self, id: &ObjectId) -> Result<bool, StoreError> {
        Ok(self.uploads.contains_key(id.0)? || self.record_of_version(id)?.is_some())
    }

    /// Whether a record (a committed object, or a part of an upload in progress) says
    /// that `node` holds `shard`.
    pub fn references_shard(&self, node: &NodeId, shard: &ShardRef) -> Result<bool, StoreError> {
        let holds = |seg: &SegmentRecord| {
            seg.segment == shard.segment && seg.nodes.get(shard.index as usize) == Some(node)
        };
        if self.uploads.contains_key(shard.object.0)? {
            for (_, part) in self.parts(&shard.object)? {
                if holds(&part.segment) {
                    return Ok(true);
                }
            }
        }
        Ok(self
            .record_of_version(&shard.object)?
            .is_some_and(|rec| rec.segments.iter().any(holds)))
    }

    /// Makes every write so far durable. Not sled's `flush_async`: with several polled at
    /// once, some are never woken (sled #1241: ten concurrent UploadPartCopy hung here for
    /// good); the blocking `flush` on the blocking pool has no such race.
    async fn flush(&self) -> Result<(), StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| sled::Error::Io(std::io::Error::other(format!("catalog flush: {e}"))))??;
        Ok(())
    }

    /// All buckets, sorted by name.
    pub fn list_buckets(&self) -> Result<Vec<(String, BucketRecord)>, StoreError> {
        let mut out = Vec::new();
        for item in self.buckets.iter() {
            let (k, v) = item?;
            out.push((
                String::from_utf8_lossy(&k).into_owned(),
                records::decode(&v)?,
            ));
        }
        Ok(out)
    }

    /// The bucket's record, if it exists.
    pub fn bucket(&self, name: &str) -> Result<Option<BucketRecord>, StoreError> {
        Ok(match self.buckets.get(name.as_bytes())? {
            Some(v) => Some(records::decode(&v)?),
            None => None,
        })
    }

    /// Creates a bucket; returns false if it already existed.
    pub async fn create_bucket(&self, name: &str, rec: &BucketRecord) -> Result<bool, StoreError> {
        let v = records::encode(rec)?;
        let created = self
            .buckets
            .compare_and_swap(name.as_bytes(), None as Option<&[u8]>, Some(v))?
            .is_ok();
        self.flush().await?;
        Ok(created)
    }

    /// Whether any object is in the bucket.
    pub fn bucket_is_empty(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .objects
            .scan_prefix(object_key(name, ""))
            .next()
            .is_none())
    }

    /// Removes an empty bucket's record. Writes into a bucket check it exists in the
    /// transaction that commits them, so once the record is gone no object can land in
    /// the bucket: if one landed before, the record is put back and the bucket is not
    /// empty.
    pub async fn delete_bucket(&self, name: &str) -> Result<(), StoreError> {
        let Some(rec) = self.buckets.remove(name.as_bytes())? else {
            return Err(StoreError::NoSuchBucket);
        };
        if !self.bucket_is_empty(name)? {
            self.buckets.insert(name.as_bytes(), rec)?;
            return Err(StoreError::BucketNotEmpty);
        }
        self.flush().await
    }

    /// The committed record of `bucket/key`.
    pub fn object(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>, StoreError> {
        Ok(match self.objects.get(object_key(bucket, key))? {
            Some(v) => Some(records::decode(&v)?),
            None => None,
        })
    }

    /// Commits a record (durably) if `cond` holds, returning the record it replaced.
    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        rec: &ObjectRecord,
        cond: &WriteCondition,
    ) -> Result<Option<ObjectRecord>, StoreError> {
        use sled::Transactional;
        let okey = object_key(bucket, key);
        let value = records::encode(rec)?;
        self.versions.insert(rec.id.0, okey.as_slice())?;
        let old = (&self.buckets, &self.objects)
            .transaction(|(buckets, objects)| {
                if buckets.get(bucket.as_bytes())?.is_none() {
                    return sled::transaction::abort(StoreError::NoSuchBucket);
                }
                let current = objects.get(okey.as_slice())?;
                let parsed: Option<ObjectRecord> = match &current {
                    Some(v) => match records::decode(v) {
                        Ok(r) => Some(r),
                        Err(e) => return sled::transaction::abort(e),
                    },
                    None => None,
                };
                if let Err(e) = cond.check(parsed.as_ref()) {
                    return sled::transaction::abort(e);
                }
                objects.insert(okey.as_slice(), value.as_slice())?;
                Ok(current)
            })
            .map_err(transaction_error)?;
        let old: Option<ObjectRecord> = old.and_then(|v| records::decode(&v).ok());
        if let Some(old) = old.as_ref().filter(|o| o.id != rec.id) {
            self.unindex_version(&old.id, &okey)?;
        }
        self.flush().await?;
        Ok(old)
    }

    /// Removes a record (durably), returning it.
    pub async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<ObjectRecord>, StoreError> {
        let okey = object_key(bucket, key);
        let old: Option<ObjectRecord> = self
            .objects
            .remove(&okey)?
            .and_then(|v| records::decode(&v).ok());
        if let Some(old) = &old {
            self.unindex_version(&old.id, &okey)?;
        }
        self.flush().await?;
        Ok(old)
    }

    /// Objects of `bucket` with keys starting with `prefix` and greater than `after`,
    /// in key order.
    pub fn scan_objects<'a>(
        &'a self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
    ) -> impl Iterator<Item = Result<(String, ObjectRecord), StoreError>> + 'a {
        let base = object_key(bucket, "");
        let base_len = base.len();
        let start_key = object_key(bucket, prefix);
        let mut start = std::ops::Bound::Included(start_key.clone());
        if let Some(a) = after {
            let ak = object_key(bucket, a);
            if ak >= start_key {
                start = std::ops::Bound::Excluded(ak);
            }
        }
        let prefix_key = start_key;
        self.objects
            .range((start, std::ops::Bound::Unbounded))
            .take_while(move |item| match item {
                Ok((k, _)) => k.starts_with(&prefix_key),
                Err(_) => true,
            })
            .map(move |item| {
                let (k, v) = item?;
                let key = String::from_utf8_lossy(&k[base_len..]).into_owned();
                Ok((key, records::decode(&v)?))
            })
    }

    /// A number never handed out before (segment numbers of multipart parts).
    pub fn unique_u32(&self) -> Result<u32, StoreError> {
        Ok((self.db.generate_id()? % (u32::MAX as u64 - 1) + 1) as u32)
    }

    /// Registers a new multipart upload.
    pub async fn create_upload(&self, id: &ObjectId, rec: &UploadRecord) -> Result<(), StoreError> {
        self.uploads.insert(id.0, records::encode(rec)?)?;
        self.flush().await
    }

    /// A multipart upload in progress.
    pub fn upload(&self, id: &ObjectId) -> Result<Option<UploadRecord>, StoreError> {
        Ok(match self.uploads.get(id.0)? {
            Some(v) => Some(records::decode(&v)?),
            None => None,
        })
    }

    /// All uploads in progress, ordered by id.
    pub fn uploads(&self) -> Result<Vec<(ObjectId, UploadRecord)>, StoreError> {
        let mut out = Vec::new();
        for item in self.uploads.iter() {
            let (k, v) = item?;
            let mut id = [0u8; 16];
            if k.len() == 16 {
                id.copy_from_slice(&k);
                out.push((ObjectId(id), records::decode(&v)?));
            }
        }
        Ok(out)
    }

    /// Multipart uploads in progress into `bucket`, counted up to `limit` (enough to
    /// enforce a cap: the scan stops there). Reads only each record's bucket name.
    pub fn count_uploads(&self, bucket: &str, limit: usize) -> Result<usize, StoreError> {
        #[derive(Deserialize)]
        struct BucketOf<'a> {
            #[serde(borrow)]
            bucket: std::borrow::Cow<'a, str>,
        }
        let mut n = 0;
        for item in self.uploads.iter() {
            if n >= limit {
                break;
            }
            let (_, v) = item?;
            let rec: BucketOf<'_> = serde_json::from_slice(&v)?;
            if rec.bucket == bucket {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Records a part (durably) if its upload is still in progress, returning the part
    /// it replaced.
    pub async fn put_part(
        &self,
        upload: &ObjectId,
        number: u32,
        rec: &PartRecord,
    ) -> Result<Option<PartRecord>, StoreError> {
        use sled::Transactional;
        let pkey = part_key(upload, number);
        let value = records::encode(rec)?;
        let old = (&self.uploads, &self.parts)
            .transaction(|(uploads, parts)| {
                if uploads.get(upload.0)?.is_none() {
                    return sled::transaction::abort(StoreError::NoSuchUpload);
                }
                Ok(parts.insert(pkey.as_slice(), value.as_slice())?)
            })
            .map_err(transaction_error)?;
        self.flush().await?;
        Ok(old.and_then(|v| records::decode(&v).ok()))
    }

    /// Parts of an upload, by part number.
    pub fn parts(&self, upload: &ObjectId) -> Result<Vec<(u32, PartRecord)>, StoreError> {
        let mut out = Vec::new();
        for item in self.parts.scan_prefix(upload.0) {
            let (k, v) = item?;
            if k.len() == 20 {
                let n = u32::from_be_bytes([k[16], k[17], k[18], k[19]]);
                out.push((n, records::decode(&v)?));
            }
        }
        Ok(out)
    }

    /// Commits a completed upload: the object record replaces `bucket/key`, the upload and
    /// its parts disappear, and the completion is remembered — all in one transaction.
    /// Returns the replaced object record.
    pub async fn complete_upload(
        &self,
        upload: &ObjectId,
        rec: &ObjectRecord,
        done: &CompletedRecord,
        cond: &WriteCondition,
    ) -> Result<Option<ObjectRecord>, StoreError> {
        use sled::Transactional;
        let okey = object_key(&done.bucket, &done.key);
        let value = records::encode(rec)?;
        let done_value = records::encode(done)?;
        let part_keys: Vec<sled::IVec> = self
            .parts
            .scan_prefix(upload.0)
            .keys()
            .collect::<Result<_, _>>()?;
        self.versions.insert(upload.0, okey.as_slice())?;
        let old = (
            &self.buckets,
            &self.objects,
            &self.uploads,
            &self.parts,
            &self.completed,
        )
            .transaction(|(buckets, objects, uploads, parts, completed)| {
                if buckets.get(done.bucket.as_bytes())?.is_none() {
                    return sled::transaction::abort(StoreError::NoSuchBucket);
                }
                let current = objects.get(okey.as_slice())?;
                let parsed: Option<ObjectRecord> =
                    current.as_ref().and_then(|v| records::decode(v).ok());
                if let Err(e) = cond.check(parsed.as_ref()) {
                    return sled::transaction::abort(e);
                }
                // Every chosen segment must still be a part's current one: repair may
                // have re-striped a part (and will delete its old shards) meanwhile.
                // (Segment numbers are never reused, so they identify a part attempt.)
                let mut current = std::collections::HashSet::with_capacity(part_keys.len());
                for k in &part_keys {
                    if let Some(v) = parts.remove(k)? {
                        if let Ok(p) = records::decode::<PartRecord>(&v) {
                            current.insert(p.segment.segment);
                        }
                    }
                }
                if !rec.segments.iter().all(|s| current.contains(&s.segment)) {
                    return sled::transaction::abort(StoreError::Unavailable(
                        "a part was repaired during completion; retry".into(),
                    ));
                }
                let old = objects.insert(okey.as_slice(), value.as_slice())?;
                uploads.remove(&upload.0)?;
                completed.insert(&upload.0, done_value.as_slice())?;
                Ok(old)
            })
            .map_err(transaction_error)?;
        let old: Option<ObjectRecord> = old.and_then(|v| records::decode(&v).ok());
        if let Some(old) = old.as_ref().filter(|o| o.id != *upload) {
            self.unindex_version(&old.id, &okey)?;
        }
        self.flush().await?;
        Ok(old)
    }

    /// The remembered result of a completed upload.
    pub fn completed(&self, upload: &ObjectId) -> Result<Option<CompletedRecord>, StoreError> {
        Ok(match self.completed.get(upload.0)? {
            Some(v) => Some(records::decode(&v)?),
            None => None,
        })
    }

    /// Forgets completions older than `before_ms`.
    pub fn prune_completed(&self, before_ms: i64) -> Result<(), StoreError> {
        for item in self.completed.iter() {
            let (k, v) = item?;
            if let Ok(c) = records::decode::<CompletedRecord>(&v) {
                if c.completed_ms < before_ms {
                    self.completed.remove(k)?;
                }
            }
        }
        Ok(())
    }

    /// Removes an upload and its parts (durably), returning the parts; None if the
    /// upload is not in progress (never created, completed or aborted).
    pub async fn abort_upload(
        &self,
        upload: &ObjectId,
    ) -> Result<Option<Vec<(u32, PartRecord)>>, StoreError> {
        // The upload goes first: no part can be recorded after it (see `put_part`), so
        // the parts listed next are all there will ever be.
        if self.uploads.remove(upload.0)?.is_none() {
            return Ok(None);
        }
        let parts = self.parts(upload)?;
        for (n, _) in &parts {
            self.parts.remove(part_key(upload, *n))?;
        }
        self.flush().await?;
        Ok(Some(parts))
    }

    /// Every committed object with its bucket and key.
    pub fn scan_all_objects(
        &self,
    ) -> impl Iterator<Item = Result<(String, String, ObjectRecord), StoreError>> + '_ {
        self.objects.iter().map(|item| {
            let (k, v) = item?;
            let (bucket, key) = match k.iter().position(|b| *b == 0) {
                Some(i) => (&k[..i], &k[i + 1..]),
                None => (&k[..], &[][..]),
            };
            Ok((
                String::from_utf8_lossy(bucket).into_owned(),
                String::from_utf8_lossy(key).into_owned(),
                records::decode(&v)?,
            ))
        })
    }

    /// Replaces segment `index` of version `id` of `bucket/key`, if the key still holds
    /// that version with segment `old` there (repair racing an overwrite loses). Returns
    /// the updated record, or None when the record moved on.
    pub async fn replace_segment(
        &self,
        bucket: &str,
        key: &str,
        id: &ObjectId,
        index: usize,
        old: &SegmentRecord,
        new: &SegmentRecord,
    ) -> Result<Option<ObjectRecord>, StoreError> {
        let okey = object_key(bucket, key);
        loop {
            let Some(current) = self.objects.get(&okey)? else {
                return Ok(None);
            };
            let mut rec: ObjectRecord = records::decode(&current)?;
            if rec.id != *id || rec.segments.get(index) != Some(old) {
                return Ok(None);
            }
            rec.segments[index] = new.clone();
            let value = records::encode(&rec)?;
            if self
                .objects
                .compare_and_swap(&okey, Some(current), Some(value))?
                .is_ok()
            {
                self.flush().await?;
                return Ok(Some(rec));
            }
        }
    }

    /// Replaces the segment of part `number` of an upload if it is still `old`; returns
    /// whether it did (a re-uploaded part, a completion or an abort wins over repair).
    pub async fn replace_part_segment(
        &self,
        upload: &ObjectId,
        number: u32,
        old: &SegmentRecord,
        new: &SegmentRecord,
    ) -> Result<bool, StoreError> {
        let pkey = part_key(upload, number);
        loop {
            let Some(current) = self.parts.get(&pkey)? else {
                return Ok(false);
            };
            let mut part: PartRecord = records::decode(&current)?;
            if part.segment != *old {
                return Ok(false);
            }
            part.segment = new.clone();
            let value = records::encode(&part)?;
            if self
                .parts
                .compare_and_swap(&pkey, Some(current), Some(value))?
                .is_ok()
            {
                self.flush().await?;
                return Ok(true);
            }
        }
    }

    /// Every multipart upload in progress with its parts.
    pub fn uploads_with_parts(&self) -> Result<Vec<(ObjectId, Vec<PartRecord>)>, StoreError> {
        let mut out = Vec::new();
        for (id, _) in self.uploads()? {
            let parts = self.parts(&id)?.into_iter().map(|(_, p)| p).collect();
            out.push((id, parts));
        }
        Ok(out)
    }

    /// Records (durably) that a node was declared gone; false if it already was.
    pub async fn declare_node_gone(&self, id: &NodeId) -> Result<bool, StoreError> {
        let fresh = self.gone_nodes.insert(id.0, &[][..])?.is_none();
        self.flush().await?;
        Ok(fresh)
    }

    /// Nodes declared gone.
    pub fn gone_nodes(&self) -> Result<Vec<NodeId>, StoreError> {
        let mut out = Vec::new();
        for k in self.gone_nodes.iter().keys() {
            if let Ok(id) = <[u8; 16]>::try_from(k?.as_ref()) {
                out.push(NodeId(id));
            }
        }
        Ok(out)
    }

    /// Whether the catalog holds no bucket and no object.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty() && self.objects.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ObjectMeta;

    fn segment(number: u32, nodes: &[NodeId]) -> SegmentRecord {
        SegmentRecord {
            segment: number,
            len: 10,
            k: 2,
            m: 1,
            block_size: 1 << 20,
            nodes: nodes.to_vec(),
            format: 2,
        }
    }

    fn upload(bucket: &str, key: &str) -> UploadRecord {
        UploadRecord {
            bucket: bucket.into(),
            key: key.into(),
            meta: ObjectMeta::default(),
            created_ms: 0,
            checksum: None,
        }
    }

    fn part(segment: SegmentRecord) -> PartRecord {
        PartRecord {
            etag: "e".into(),
            size: 10,
            modified_ms: 0,
            segment,
            checksum: None,
        }
    }

    fn shard(object: ObjectId, segment: u32, index: u8) -> ShardRef {
        ShardRef {
            object,
            segment,
            index,
        }
    }

    #[tokio::test]
    async fn the_deletion_rule_follows_every_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = Catalog::open(dir.path()).expect("open");
        let nodes: Vec<NodeId> = (0..4).map(|_| NodeId::random()).collect();
        let (a, b, c) = (nodes[0], nodes[1], nodes[2]);

        catalog
            .create_bucket("bkt", &BucketRecord { created_ms: 0 })
            .await
            .expect("bucket");

        // A committed object: its shards, on their nodes only, and its version.
        let v1 = ObjectId::random();
        let rec = ObjectRecord {
            id: v1,
            size: 10,
            modified_ms: 0,
            meta: ObjectMeta::default(),
            segments: vec![segment(7, &[a, b, c])],
        };
        catalog
            .put_object("bkt", "key", &rec, &WriteCondition::None)
            .await
            .expect("put");
        assert!(catalog.references_version(&v1).expect("ask"));
        assert!(catalog.references_shard(&b, &shard(v1, 7, 1)).expect("ask"));
        assert!(!catalog.references_shard(&a, &shard(v1, 7, 1)).expect("ask"));
        assert!(!catalog.references_shard(&b, &shard(v1, 8, 1)).expect("ask"));

        // Overwritten: the old version is garbage, the new one is not.
        let v2 = ObjectId::random();
        let rec2 = ObjectRecord {
            id: v2,
            segments: vec![segment(9, &[c, b, a])],
            ..rec.clone()
        };
        catalog
            .put_object("bkt", "key", &rec2, &WriteCondition::None)
            .await
            .expect("overwrite");
        assert!(!catalog.references_version(&v1).expect("ask"));
        assert!(!catalog.references_shard(&b, &shard(v1, 7, 1)).expect("ask"));
        assert!(catalog.references_shard(&c, &shard(v2, 9, 0)).expect("ask"));

        // A multipart upload: recorded parts are referenced, other attempts are not.
        let up = ObjectId::random();
        catalog
            .create_upload(&up, &upload("bkt", "big"))
            .await
            .expect("create");
        let part = part(segment(11, &[a, b, c]));
        catalog.put_part(&up, 1, &part).await.expect("part");
        assert!(catalog.references_version(&up).expect("ask"));
        assert!(catalog
            .references_shard(&a, &shard(up, 11, 0))
            .expect("ask"));
        assert!(!catalog
            .references_shard(&a, &shard(up, 12, 0))
            .expect("ask"));

        // Completed: the object record keeps the part's shards referenced.
        let done = CompletedRecord {
            bucket: "bkt".into(),
            key: "big".into(),
            etag: "e-1".into(),
            checksum: None,
            completed_ms: 0,
        };
        let orec = ObjectRecord {
            id: up,
            size: 10,
            modified_ms: 0,
            meta: ObjectMeta::default(),
            segments: vec![part.segment.clone()],
        };
        catalog
            .complete_upload(&up, &orec, &done, &WriteCondition::None)
            .await
            .expect("complete");
        assert!(catalog
            .references_shard(&a, &shard(up, 11, 0))
            .expect("ask"));

        // Deleted: nothing of it is referenced any more.
        catalog.delete_object("bkt", "big").await.expect("delete");
        assert!(!catalog.references_version(&up).expect("ask"));
        assert!(!catalog
            .references_shard(&a, &shard(up, 11, 0))
            .expect("ask"));
    }

    #[tokio::test]
    async fn writes_land_only_in_buckets_and_uploads_that_exist() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = Catalog::open(dir.path()).expect("open");
        let rec = ObjectRecord {
            id: ObjectId::random(),
            size: 10,
            modified_ms: 0,
            meta: ObjectMeta::default(),
            segments: vec![segment(1, &[NodeId::random()])],
        };
        let put = catalog
            .put_object("nobucket", "k", &rec, &WriteCondition::None)
            .await;
        assert!(matches!(put, Err(StoreError::NoSuchBucket)), "{put:?}");

        // A bucket with an object in it is not deleted, and stays usable.
        catalog
            .create_bucket("b", &BucketRecord { created_ms: 5 })
            .await
            .expect("bucket");
        catalog
            .put_object("b", "k", &rec, &WriteCondition::None)
            .await
            .expect("put");
        let del = catalog.delete_bucket("b").await;
        assert!(matches!(del, Err(StoreError::BucketNotEmpty)), "{del:?}");
        assert_eq!(
            catalog.bucket("b").expect("read").map(|b| b.created_ms),
            Some(5)
        );
        catalog.delete_object("b", "k").await.expect("delete");
        catalog
            .delete_bucket("b")
            .await
            .expect("empty bucket deleted");
        assert!(catalog.bucket("b").expect("read").is_none());

        // A part recorded after its upload was aborted is refused, not left behind.
        let up = ObjectId::random();
        catalog
            .create_upload(&up, &upload("b", "k"))
            .await
            .expect("create");
        let part = part(segment(2, &[NodeId::random()]));
        catalog.put_part(&up, 1, &part).await.expect("part");
        let parts = catalog.abort_upload(&up).await.expect("abort");
        assert_eq!(parts.map(|p| p.len()), Some(1));
        assert!(catalog.abort_upload(&up).await.expect("again").is_none());
        let late = catalog.put_part(&up, 2, &part).await;
        assert!(matches!(late, Err(StoreError::NoSuchUpload)), "{late:?}");
        assert!(catalog.parts(&up).expect("parts").is_empty());
    }

    #[tokio::test]
    async fn a_catalog_without_the_version_index_gets_it_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = ObjectId::random();
        let node = NodeId::random();
        {
            // Written as a catalog that predates the index: objects only.
            let db = sled::open(dir.path()).expect("sled");
            let rec = ObjectRecord {
                id,
                size: 10,
                modified_ms: 0,
                meta: ObjectMeta::default(),
                segments: vec![segment(3, &[node])],
            };
            db.open_tree("objects")
                .expect("tree")
                .insert(
                    object_key("bkt", "old"),
                    records::encode(&rec).expect("json"),
                )
                .expect("insert");
            db.flush().expect("flush");
        }
        let catalog = Catalog::open(dir.path()).expect("open");
        assert!(catalog.references_version(&id).expect("ask"));
        assert!(catalog
            .references_shard(&node, &shard(id, 3, 0))
            .expect("ask"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_commits_flushing_at_once_all_complete() {
        // Concurrent commits (parts of a multipart copy) each flush the catalog; none may
        // wait forever.
        // A hang may block the runtime's threads (sled's flush_async did), so a plain
        // thread watches: it fails the test binary rather than let it hang.
        let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watched = finished.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(60));
            if !watched.load(std::sync::atomic::Ordering::SeqCst) {
                eprintln!("catalog flushes hung for 60 s");
                std::process::exit(101);
            }
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = std::sync::Arc::new(Catalog::open(dir.path()).expect("open"));
        for round in 0..200u32 {
            let flushes: Vec<_> = (0..16u32)
                .map(|i| {
                    let c = catalog.clone();
                    tokio::spawn(async move {
                        c.objects
                            .insert(format!("{round}/{i}"), b"x".as_slice())
                            .expect("insert");
                        c.flush().await
                    })
                })
                .collect();
            let all = futures::future::join_all(flushes);
            let done = tokio::time::timeout(std::time::Duration::from_secs(20), all)
                .await
                .unwrap_or_else(|_| panic!("a catalog flush never completed (round {round})"));
            for r in done {
                r.expect("task").expect("flush");
            }
        }
        finished.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
