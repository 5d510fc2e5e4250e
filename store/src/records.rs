//! The domain types of the object service: what the catalog keeps about buckets,
//! objects, multipart uploads and parts, and how each record is stored.
//!
//! Records are stored as JSON objects that carry a `format` field ([`RECORD_FORMAT`]);
//! records without one are format 1. [`decode`] reads every format up to the current one
//! (older layouts are upgraded as they are read) and refuses a newer one rather than
//! misread it; [`encode`] always writes the current format.
//!
//! Format 2 holds checksums as typed values: an object's flexible checksum is one
//! [`ObjectChecksum`] (format 1: a map from algorithm name to value with a magic `type`
//! key), an upload's chosen algorithm is an [`UploadChecksum`] (format 1: two strings),
//! and a completion's checksum is an [`ObjectChecksum`] (format 1: a 3-tuple).

use std::collections::BTreeMap;

use cairn_common::ids::{NodeId, ObjectId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::checksum::Algorithm;
use crate::StoreError;

/// Format of the records this version writes.
pub const RECORD_FORMAT: u8 = 2;

/// Serializes a record in the current format.
pub(crate) fn encode<T: Serialize>(rec: &T) -> Result<Vec<u8>, StoreError> {
    let body = serde_json::to_vec(rec)?;
    // A record is a JSON object: the format goes in as its first field.
    let fields = match body.as_slice() {
        [b'{', b'}'] => &b"}"[..],
        [b'{', rest @ ..] => rest,
        _ => return Err(StoreError::Corrupt("a record is not a JSON object".into())),
    };
    let mut out = Vec::with_capacity(body.len() + 16);
    out.extend_from_slice(format!("{{\"format\":{RECORD_FORMAT}").as_bytes());
    if fields != b"}" {
        out.push(b',');
    }
    out.extend_from_slice(fields);
    Ok(out)
}

/// Reads a record of any format up to [`RECORD_FORMAT`].
pub(crate) fn decode<T: DeserializeOwned>(raw: &[u8]) -> Result<T, StoreError> {
    #[derive(Deserialize)]
    struct Format {
        #[serde(default = "format_v1")]
        format: u8,
    }
    let Format { format } = serde_json::from_slice(raw)?;
    if format > RECORD_FORMAT {
        return Err(StoreError::Corrupt(format!(
            "a catalog record has format {format}, newer than this version reads ({RECORD_FORMAT}): run the newer Cairn"
        )));
    }
    Ok(serde_json::from_slice(raw)?)
}

fn format_v1() -> u8 {
    1
}

/// A bucket.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BucketRecord {
    /// Creation time, unix milliseconds.
    pub created_ms: i64,
}

/// A bucket with its name.
#[derive(Clone, Debug)]
pub struct Bucket {
    /// Name.
    pub name: String,
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
    /// Shard file format the segment was written in (absent: 1).
    #[serde(default = "format_v1")]
    pub format: u8,
}

/// How an object's checksum covers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChecksumKind {
    /// The checksum of the parts' checksums, `-N` appended (multipart only).
    Composite,
    /// The checksum of the whole object's bytes.
    FullObject,
}

impl ChecksumKind {
    /// `COMPOSITE` or `FULL_OBJECT`, as S3 names it.
    pub fn name(self) -> &'static str {
        match self {
            ChecksumKind::Composite => "COMPOSITE",
            ChecksumKind::FullObject => "FULL_OBJECT",
        }
    }

    /// Parses `COMPOSITE` / `FULL_OBJECT` (any case).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "COMPOSITE" => Some(ChecksumKind::Composite),
            "FULL_OBJECT" => Some(ChecksumKind::FullObject),
            _ => None,
        }
    }
}

/// An object's flexible checksum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectChecksum {
    /// Algorithm.
    pub algorithm: Algorithm,
    /// Base64 value as S3 sends it.
    pub value: String,
    /// What it covers.
    pub kind: ChecksumKind,
}

/// The checksum a multipart upload was created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadChecksum {
    /// Algorithm every part carries.
    pub algorithm: Algorithm,
    /// How the object's checksum is formed from the parts'.
    pub kind: ChecksumKind,
}

/// What the client said about an object, kept with it and returned on GET/HEAD.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(from = "MetaOnDisk")]
pub struct ObjectMeta {
    /// ETag without quotes.
    pub etag: String,
    /// Content-Type.
    pub content_type: Option<String>,
    /// Other standard headers kept with the object (content-encoding, cache-control...).
    pub headers: BTreeMap<String, String>,
    /// `x-amz-meta-*` user metadata (names without the prefix).
    pub user_meta: BTreeMap<String, String>,
    /// The object's flexible checksum, if it was given one.
    pub checksum: Option<ObjectChecksum>,
}

/// [`ObjectMeta`] as stored in formats 1 and 2.
#[derive(Deserialize)]
struct MetaOnDisk {
    etag: String,
    content_type: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    user_meta: BTreeMap<String, String>,
    #[serde(default)]
    checksum: Option<ObjectChecksum>,
    /// Format 1: algorithm name → value, and `type` → the kind (absent: FULL_OBJECT).
    #[serde(default)]
    checksums: BTreeMap<String, String>,
}

impl From<MetaOnDisk> for ObjectMeta {
    fn from(m: MetaOnDisk) -> Self {
        let checksum = m.checksum.or_else(|| {
            let kind = m
                .checksums
                .get("type")
                .and_then(|k| ChecksumKind::parse(k))
                .unwrap_or(ChecksumKind::FullObject);
            m.checksums.iter().find_map(|(name, value)| {
                Some(ObjectChecksum {
                    algorithm: Algorithm::parse(name)?,
                    value: value.clone(),
                    kind,
                })
            })
        });
        ObjectMeta {
            etag: m.etag,
            content_type: m.content_type,
            headers: m.headers,
            user_meta: m.user_meta,
            checksum,
        }
    }
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
    /// Segments in object order: one per multipart part, one for a single PUT.
    pub segments: Vec<SegmentRecord>,
}

impl ObjectRecord {
    /// Parts of the object as S3 counts them (a single PUT, even empty, has one).
    pub fn part_count(&self) -> usize {
        self.segments.len().max(1)
    }

    /// Bytes `start..end` of part `n` (1-based): its n-th segment. None if there is no
    /// such part.
    pub fn part_bounds(&self, n: u32) -> Option<(u64, u64)> {
        let idx = (n as usize).checked_sub(1)?;
        if self.segments.is_empty() && idx == 0 {
            return Some((0, 0));
        }
        let seg = self.segments.get(idx)?;
        let start: u64 = self.segments[..idx].iter().map(|s| s.len).sum();
        Some((start, start + seg.len))
    }
}

/// What the gateway stores on nodes beside a committed object's shards, so the catalog
/// can be rebuilt from the nodes alone.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// The record as committed (segment node lists may be outdated; the nodes' shard
    /// inventories say where shards really are).
    pub record: ObjectRecord,
    /// When this manifest was written, unix milliseconds: repair rewrites it, and the
    /// newest manifest of a version wins.
    pub written_ms: i64,
}

/// A multipart upload in progress.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(from = "UploadOnDisk")]
pub struct UploadRecord {
    /// Target bucket.
    pub bucket: String,
    /// Target key.
    pub key: String,
    /// Metadata given at creation (ETag and checksum are filled at completion).
    pub meta: ObjectMeta,
    /// Creation time, unix milliseconds.
    pub created_ms: i64,
    /// Checksum asked for at creation.
    pub checksum: Option<UploadChecksum>,
}

/// [`UploadRecord`] as stored in formats 1 and 2.
#[derive(Deserialize)]
struct UploadOnDisk {
    bucket: String,
    key: String,
    meta: ObjectMeta,
    created_ms: i64,
    #[serde(default)]
    checksum: Option<UploadChecksum>,
    /// Format 1: `CRC32`...
    #[serde(default)]
    checksum_algorithm: Option<String>,
    /// Format 1: `COMPOSITE` or `FULL_OBJECT`.
    #[serde(default)]
    checksum_type: Option<String>,
}

impl From<UploadOnDisk> for UploadRecord {
    fn from(u: UploadOnDisk) -> Self {
        let legacy = || {
            let algorithm = Algorithm::parse(u.checksum_algorithm.as_deref()?)?;
            let kind = u
                .checksum_type
                .as_deref()
                .and_then(ChecksumKind::parse)
                .unwrap_or(ChecksumKind::Composite);
            Some(UploadChecksum { algorithm, kind })
        };
        let checksum = u.checksum.or_else(legacy);
        UploadRecord {
            bucket: u.bucket,
            key: u.key,
            meta: u.meta,
            created_ms: u.created_ms,
            checksum,
        }
    }
}

/// One uploaded part.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PartRecord {
    /// Hex MD5 of the part.
    pub etag: String,
    /// Bytes.
    pub size: u64,
    /// Upload time, unix milliseconds.
    pub modified_ms: i64,
    /// Where the part's data is.
    pub segment: SegmentRecord,
    /// The part's flexible checksum (base64), if the upload has an algorithm.
    #[serde(default)]
    pub checksum: Option<String>,
}

/// The result of a completed upload, kept so that a retried Complete answers the same.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompletedRecord {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Quoted-less ETag of the object.
    pub etag: String,
    /// The object's checksum, if the upload had an algorithm.
    #[serde(default, deserialize_with = "completed_checksum")]
    pub checksum: Option<ObjectChecksum>,
    /// Completion time, unix milliseconds.
    pub completed_ms: i64,
}

/// Reads a completion's checksum: an [`ObjectChecksum`], or format 1's
/// `(algorithm, value, kind)` tuple.
fn completed_checksum<'de, D>(d: D) -> Result<Option<ObjectChecksum>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OnDisk {
        Typed(ObjectChecksum),
        Tuple(String, String, String),
    }
    Ok(match Option::<OnDisk>::deserialize(d)? {
        None => None,
        Some(OnDisk::Typed(c)) => Some(c),
        Some(OnDisk::Tuple(algorithm, value, kind)) => {
            match (Algorithm::parse(&algorithm), ChecksumKind::parse(&kind)) {
                (Some(algorithm), Some(kind)) => Some(ObjectChecksum {
                    algorithm,
                    value,
                    kind,
                }),
                _ => None,
            }
        }
    })
}

/// A condition on the current version of a key, checked atomically with a commit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum WriteCondition {
    /// Always write.
    #[default]
    None,
    /// Only if the key does not exist (`If-None-Match: *`).
    IfAbsent,
    /// Only if the key's current ETag is this one (`If-Match`).
    IfEtag(String),
}

impl WriteCondition {
    /// Checks the condition against the current record.
    pub fn check(&self, current: Option<&ObjectRecord>) -> Result<(), StoreError> {
        match (self, current) {
            (WriteCondition::None, _) => Ok(()),
            (WriteCondition::IfAbsent, None) => Ok(()),
            (WriteCondition::IfAbsent, Some(_)) => Err(StoreError::PreconditionFailed),
            (WriteCondition::IfEtag(_), None) => Err(StoreError::NoSuchKey),
            (WriteCondition::IfEtag(e), Some(r)) if e == "*" || *e == r.meta.etag => Ok(()),
            (WriteCondition::IfEtag(_), Some(_)) => Err(StoreError::PreconditionFailed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records exactly as format 1 wrote them (no `format` field).
    const V1_OBJECT: &str = r#"{"id":"00112233445566778899aabbccddeeff","size":5,"modified_ms":7,"meta":{"etag":"abc","content_type":"text/plain","headers":{},"user_meta":{"k":"v"},"checksums":{"CRC32C":"4waSgw==","type":"COMPOSITE"}},"segments":[{"segment":1,"len":5,"k":2,"m":1,"block_size":1048576,"nodes":[]}]}"#;
    const V1_UPLOAD: &str = r#"{"bucket":"b","key":"k","meta":{"etag":"","content_type":null,"headers":{},"user_meta":{},"checksums":{}},"created_ms":3,"checksum_algorithm":"CRC64NVME","checksum_type":"FULL_OBJECT"}"#;
    const V1_COMPLETED: &str = r#"{"bucket":"b","key":"k","etag":"e-2","checksum":["SHA256","q83vEjRWeJA=-2","COMPOSITE"],"completed_ms":9}"#;

    #[test]
    fn format_1_records_are_upgraded_as_they_are_read() {
        let o: ObjectRecord = decode(V1_OBJECT.as_bytes()).expect("object");
        assert_eq!(
            o.meta.checksum,
            Some(ObjectChecksum {
                algorithm: Algorithm::Crc32c,
                value: "4waSgw==".into(),
                kind: ChecksumKind::Composite,
            })
        );
        assert_eq!(o.segments[0].format, 1);
        assert_eq!(o.meta.user_meta.get("k").map(String::as_str), Some("v"));

        let u: UploadRecord = decode(V1_UPLOAD.as_bytes()).expect("upload");
        assert_eq!(
            u.checksum,
            Some(UploadChecksum {
                algorithm: Algorithm::Crc64Nvme,
                kind: ChecksumKind::FullObject,
            })
        );

        let c: CompletedRecord = decode(V1_COMPLETED.as_bytes()).expect("completed");
        assert_eq!(
            c.checksum,
            Some(ObjectChecksum {
                algorithm: Algorithm::Sha256,
                value: "q83vEjRWeJA=-2".into(),
                kind: ChecksumKind::Composite,
            })
        );
    }

    #[test]
    fn a_format_1_checksum_without_a_type_covers_the_full_object() {
        let raw = V1_OBJECT.replace(r#","type":"COMPOSITE""#, "");
        let o: ObjectRecord = decode(raw.as_bytes()).expect("object");
        assert_eq!(
            o.meta.checksum.map(|c| c.kind),
            Some(ChecksumKind::FullObject)
        );
    }

    #[test]
    fn records_are_written_in_the_current_format_and_read_back_alike() {
        let o: ObjectRecord = decode(V1_OBJECT.as_bytes()).expect("object");
        let raw = encode(&o).expect("encode");
        let text = std::str::from_utf8(&raw).expect("utf-8");
        assert!(text.starts_with(r#"{"format":2,"#), "{text}");
        assert!(!text.contains("checksums"), "{text}");
        let again: ObjectRecord = decode(&raw).expect("decode");
        assert_eq!(again.meta.checksum, o.meta.checksum);
        assert_eq!(again.segments, o.segments);

        let c: CompletedRecord = decode(V1_COMPLETED.as_bytes()).expect("completed");
        let again: CompletedRecord = decode(&encode(&c).expect("encode")).expect("decode");
        assert_eq!(again.checksum, c.checksum);

        assert_eq!(
            encode(&BucketRecord { created_ms: 1 }).expect("encode"),
            br#"{"format":2,"created_ms":1}"#
        );
    }

    #[test]
    fn a_record_from_a_newer_version_is_refused() {
        let raw = br#"{"format":3,"created_ms":1}"#;
        assert!(matches!(
            decode::<BucketRecord>(raw),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn part_bounds_follow_the_segments() {
        let mut o: ObjectRecord = decode(V1_OBJECT.as_bytes()).expect("object");
        assert_eq!(o.part_bounds(1), Some((0, 5)));
        assert_eq!(o.part_bounds(2), None);
        assert_eq!(o.part_bounds(0), None);
        let mut second = o.segments[0].clone();
        second.len = 3;
        o.segments.push(second);
        assert_eq!(o.part_bounds(2), Some((5, 8)));
        assert_eq!(o.part_count(), 2);
        o.segments.clear();
        assert_eq!(o.part_bounds(1), Some((0, 0)));
        assert_eq!(o.part_count(), 1);
    }
}
