//! The catalog: buckets and committed object records in sled.
//!
//! Trees: `buckets` (name → [`BucketRecord`] JSON) and `objects` (`bucket \0 key` →
//! [`ObjectRecord`] JSON). A record is written only after all of an object's shards are
//! durable, and every mutation is flushed before it is acknowledged.

use std::collections::BTreeMap;
use std::path::Path;

use cairn_common::ids::{NodeId, ObjectId};
use serde::{Deserialize, Serialize};

use super::StoreError;

/// A bucket.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BucketRecord {
    /// Creation time, unix milliseconds.
    pub created_ms: i64,
}

/// Where one segment (a PUT's whole body, or one multipart part) is stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SegmentRecord {
    /// Segment number in the shard headers.
    pub segment: u32,
    /// Logical bytes.
    pub len: u64,
    /// Data shards.
    pub k: u8,
    /// Parity shards.
    pub m: u8,
    /// Bytes of a full block.
    pub block_size: u32,
    /// Node holding shard `i`, for `i` in `0..k+m`.
    pub nodes: Vec<NodeId>,
}

/// What the client said about an object, kept with it and returned on GET/HEAD.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// ETag without quotes.
    pub etag: String,
    /// Content-Type.
    pub content_type: Option<String>,
    /// Other standard headers kept with the object (content-encoding, cache-control...).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `x-amz-meta-*` user metadata (names without the prefix).
    #[serde(default)]
    pub user_meta: BTreeMap<String, String>,
    /// Flexible checksums of the whole object: algorithm name → value.
    #[serde(default)]
    pub checksums: BTreeMap<String, String>,
}

/// A committed object version.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ObjectRecord {
    /// Identity of this version's shards.
    pub id: ObjectId,
    /// Logical size in bytes.
    pub size: u64,
    /// Last-Modified, unix milliseconds.
    pub modified_ms: i64,
    /// Client-visible metadata.
    pub meta: ObjectMeta,
    /// Segments in object order.
    pub segments: Vec<SegmentRecord>,
}

/// The sled-backed catalog.
#[derive(Clone)]
pub struct Catalog {
    db: sled::Db,
    buckets: sled::Tree,
    objects: sled::Tree,
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
        Ok(Self {
            db,
            buckets,
            objects,
        })
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// All buckets, sorted by name.
    pub fn list_buckets(&self) -> Result<Vec<(String, BucketRecord)>, StoreError> {
        let mut out = Vec::new();
        for item in self.buckets.iter() {
            let (k, v) = item?;
            out.push((
                String::from_utf8_lossy(&k).into_owned(),
                serde_json::from_slice(&v)?,
            ));
        }
        Ok(out)
    }

    /// The bucket's record, if it exists.
    pub fn bucket(&self, name: &str) -> Result<Option<BucketRecord>, StoreError> {
        Ok(match self.buckets.get(name.as_bytes())? {
            Some(v) => Some(serde_json::from_slice(&v)?),
            None => None,
        })
    }

    /// Creates a bucket; returns false if it already existed.
    pub async fn create_bucket(&self, name: &str, rec: &BucketRecord) -> Result<bool, StoreError> {
        let v = serde_json::to_vec(rec)?;
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

    /// Removes a bucket record.
    pub async fn delete_bucket(&self, name: &str) -> Result<(), StoreError> {
        self.buckets.remove(name.as_bytes())?;
        self.flush().await
    }

    /// The committed record of `bucket/key`.
    pub fn object(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>, StoreError> {
        Ok(match self.objects.get(object_key(bucket, key))? {
            Some(v) => Some(serde_json::from_slice(&v)?),
            None => None,
        })
    }

    /// Commits a record (durably), returning the record it replaced.
    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        rec: &ObjectRecord,
    ) -> Result<Option<ObjectRecord>, StoreError> {
        let old = self
            .objects
            .insert(object_key(bucket, key), serde_json::to_vec(rec)?)?;
        self.flush().await?;
        Ok(match old {
            Some(v) => serde_json::from_slice(&v).ok(),
            None => None,
        })
    }

    /// Removes a record (durably), returning it.
    pub async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<ObjectRecord>, StoreError> {
        let old = self.objects.remove(object_key(bucket, key))?;
        self.flush().await?;
        Ok(match old {
            Some(v) => serde_json::from_slice(&v).ok(),
            None => None,
        })
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
                Ok((key, serde_json::from_slice(&v)?))
            })
    }

    /// Every committed object id (for garbage collection).
    pub fn all_object_ids(&self) -> Result<Vec<ObjectId>, StoreError> {
        let mut out = Vec::new();
        for item in self.objects.iter() {
            let (_, v) = item?;
            let rec: ObjectRecord = serde_json::from_slice(&v)?;
            out.push(rec.id);
        }
        Ok(out)
    }
}
