//! The manifest: one JSON object per committed checkpoint generation.
//!
//! Layout under `s3://BUCKET/PREFIX/`:
//! - data of generation 1: `NAME/REL`; of generation g > 1: `NAME/.cairn-gG/REL`
//! - manifests: `.cairn/manifests/NAME/GGGGGGGGGG.json` (generation, zero-padded)
//!
//! A checkpoint exists for `ls`, `pull` and retention only once its manifest exists. The
//! manifest is written with `If-None-Match: *`, so a commit happens at most once; a repeat
//! of the same commit (after a crash) is recognised and accepted.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use serde::{Deserialize, Serialize};

use crate::detect::Kind;
use crate::error::{http_status, s3_error, Error, Result};
use crate::s3client::S3Url;

/// Value of the `format` field.
pub const FORMAT: &str = "cairn-checkpoint-manifest";
/// Current manifest version.
pub const VERSION: u32 = 1;

/// One committed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path inside the checkpoint, `/`-separated.
    pub path: String,
    /// Full object key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Hex SHA-256 of the whole file.
    pub sha256: String,
    /// Base64 CRC32C of the whole file (as S3 encodes checksums).
    pub crc32c: String,
    /// Number of multipart parts (1 for a single PUT).
    pub parts: u32,
}

/// A committed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Manifest version, [`VERSION`].
    pub version: u32,
    /// Checkpoint name (directory or file name).
    pub name: String,
    /// Training step, when known.
    pub step: Option<u64>,
    /// Generation: 1, then +1 each time a changed checkpoint is committed again.
    pub generation: u64,
    /// Kind of checkpoint.
    pub kind: Kind,
    /// Commit time, RFC 3339 UTC.
    pub created: String,
    /// Sum of file sizes.
    pub total_size: u64,
    /// The files, sorted by path.
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// Builds a manifest stamped with the current time.
    pub fn new(
        name: &str,
        step: Option<u64>,
        generation: u64,
        kind: Kind,
        mut files: Vec<FileEntry>,
    ) -> Self {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let created = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        Manifest {
            format: FORMAT.into(),
            version: VERSION,
            name: name.into(),
            step,
            generation,
            kind,
            created,
            total_size: files.iter().map(|f| f.size).sum(),
            files,
        }
    }

    /// Same checkpoint content (ignores the commit time).
    pub fn same_content(&self, other: &Manifest) -> bool {
        self.name == other.name && self.generation == other.generation && self.files == other.files
    }

    /// Commit time as a Unix timestamp (0 when unparsable), for ordering.
    pub fn created_unix(&self) -> i128 {
        time::OffsetDateTime::parse(
            &self.created,
            &time::format_description::well_known::Rfc3339,
        )
        .map(|t| t.unix_timestamp_nanos())
        .unwrap_or(0)
    }

    /// Sort key for "latest": step first (checkpoints without one come first), then time.
    pub fn order_key(&self) -> (bool, u64, i128, u64) {
        (
            self.step.is_some(),
            self.step.unwrap_or(0),
            self.created_unix(),
            self.generation,
        )
    }
}

/// Serialises a manifest.
pub fn encode(m: &Manifest) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(m).unwrap_or_default();
    v.push(b'\n');
    v
}

/// Parses and validates a manifest read from `key`; rejects unsafe paths.
pub fn decode(key: &str, bytes: &[u8]) -> Result<Manifest> {
    let bad = |reason: String| Error::BadManifest {
        key: key.to_owned(),
        reason,
    };
    let m: Manifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    if m.format != FORMAT {
        return Err(bad(format!("format {:?} is not {FORMAT:?}", m.format)));
    }
    if m.version == 0 || m.version > VERSION {
        return Err(bad(format!("unsupported version {}", m.version)));
    }
    if m.name.is_empty() || m.name.contains('/') || m.name == "." || m.name == ".." {
        return Err(bad(format!("bad checkpoint name {:?}", m.name)));
    }
    if m.files.is_empty() {
        return Err(bad("no files".into()));
    }
    for f in &m.files {
        let unsafe_path = f.path.is_empty()
            || f.path.starts_with('/')
            || f.path.contains('\\')
            || f.path.contains('\0')
            || f.path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..");
        if unsafe_path {
            return Err(bad(format!("unsafe file path {:?}", f.path)));
        }
    }
    Ok(m)
}

/// Key prefix of all manifests under `url`.
pub fn manifests_prefix(url: &S3Url) -> String {
    url.key(".cairn/manifests/")
}

/// Key of the manifest of `name`, generation `generation`.
pub fn manifest_key(url: &S3Url, name: &str, generation: u64) -> String {
    format!("{}{name}/{generation:010}.json", manifests_prefix(url))
}

/// Key prefix of all data of checkpoint `name`.
pub fn data_prefix(url: &S3Url, name: &str) -> String {
    url.key(&format!("{name}/"))
}

/// Key of file `rel` of `name` uploaded for `generation`.
pub fn data_key(url: &S3Url, name: &str, generation: u64, rel: &str) -> String {
    if generation <= 1 {
        url.key(&format!("{name}/{rel}"))
    } else {
        url.key(&format!("{name}/.cairn-g{generation}/{rel}"))
    }
}

/// Parses a manifest key into (name, generation).
pub fn parse_manifest_key(url: &S3Url, key: &str) -> Option<(String, u64)> {
    let rest = key.strip_prefix(&manifests_prefix(url))?;
    let (name, file) = rest.split_once('/')?;
    let gen = file.strip_suffix(".json")?.parse().ok()?;
    (!name.is_empty()).then(|| (name.to_owned(), gen))
}

/// Lists all keys under `prefix`.
pub async fn list_keys(client: &Client, bucket: &str, prefix: &str) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let resp = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| s3_error("ListObjectsV2", bucket, prefix, e))?;
        keys.extend(
            resp.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
        match resp.next_continuation_token() {
            Some(t) if resp.is_truncated() == Some(true) => token = Some(t.to_owned()),
            _ => break,
        }
    }
    Ok(keys)
}

/// Every manifest key under `url`, as (name, generation, key).
pub async fn list_manifest_keys(
    client: &Client,
    url: &S3Url,
) -> Result<Vec<(String, u64, String)>> {
    let keys = list_keys(client, &url.bucket, &manifests_prefix(url)).await?;
    Ok(keys
        .into_iter()
        .filter_map(|k| parse_manifest_key(url, &k).map(|(n, g)| (n, g, k)))
        .collect())
}

/// Reads one manifest.
pub async fn get(client: &Client, bucket: &str, key: &str) -> Result<Manifest> {
    let resp = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| s3_error("GetObject", bucket, key, e))?;
    let body = resp.body.collect().await.map_err(|e| Error::S3 {
        op: "GetObject",
        key: format!("{bucket}/{key}"),
        message: e.to_string(),
    })?;
    decode(key, &body.into_bytes())
}

/// The latest generation of every committed checkpoint, sorted oldest to latest.
pub async fn list_committed(client: &Client, url: &S3Url) -> Result<Vec<Manifest>> {
    let mut latest: std::collections::BTreeMap<String, (u64, String)> = Default::default();
    for (name, gen, key) in list_manifest_keys(client, url).await? {
        let e = latest.entry(name).or_insert((gen, key.clone()));
        if gen > e.0 {
            *e = (gen, key);
        }
    }
    let mut out = Vec::new();
    for (_, (_, key)) in latest {
        match get(client, &url.bucket, &key).await {
            Ok(m) => out.push(m),
            // Deleted by retention between list and get: it no longer exists.
            Err(Error::S3 { message, .. }) if message.contains("NoSuchKey") => {}
            Err(e @ Error::BadManifest { .. }) => tracing::warn!("skipping {e}"),
            Err(e) => return Err(e),
        }
    }
    out.sort_by_key(|m| m.order_key());
    Ok(out)
}

/// Outcome of [`commit`].
#[derive(Debug, PartialEq, Eq)]
pub enum Committed {
    /// This call created the manifest.
    Now,
    /// The same manifest was already there (an earlier, interrupted run committed it).
    Already,
}

/// Writes the manifest with `If-None-Match: *`.
pub async fn commit(client: &Client, url: &S3Url, m: &Manifest) -> Result<Committed> {
    let key = manifest_key(url, &m.name, m.generation);
    let body = encode(m);
    let res = client
        .put_object()
        .bucket(&url.bucket)
        .key(&key)
        .if_none_match("*")
        .content_type("application/json")
        .body(ByteStream::from(body))
        .send()
        .await;
    match res {
        Ok(_) => Ok(Committed::Now),
        Err(e) if matches!(http_status(&e), Some(412) | Some(409)) => {
            let existing = get(client, &url.bucket, &key).await?;
            if existing.same_content(m) {
                Ok(Committed::Already)
            } else {
                Err(Error::CommitConflict(key))
            }
        }
        Err(e) => Err(s3_error("PutObject", &url.bucket, &key, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest::new(
            "checkpoint-5",
            Some(5),
            1,
            Kind::HfDir,
            vec![
                FileEntry {
                    path: "trainer_state.json".into(),
                    key: "run/checkpoint-5/trainer_state.json".into(),
                    size: 10,
                    sha256: "ab".repeat(32),
                    crc32c: "AAAAAA==".into(),
                    parts: 1,
                },
                FileEntry {
                    path: "model.safetensors".into(),
                    key: "run/checkpoint-5/model.safetensors".into(),
                    size: 100,
                    sha256: "cd".repeat(32),
                    crc32c: "AAAAAB==".into(),
                    parts: 2,
                },
            ],
        )
    }

    #[test]
    fn roundtrip_and_sorted() {
        let m = sample();
        assert_eq!(m.files[0].path, "model.safetensors");
        assert_eq!(m.total_size, 110);
        let bytes = encode(&m);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("\"format\": \"cairn-checkpoint-manifest\""));
        assert!(text.contains("\"kind\": \"hfdir\""));
        assert_eq!(decode("k", &bytes).unwrap(), m);
        assert!(m.created_unix() > 0);
    }

    #[test]
    fn rejects_unsafe_or_foreign() {
        for path in ["../x", "/etc/passwd", "a//b", "a/./b", ""] {
            let mut m = sample();
            m.files[0].path = path.into();
            assert!(decode("k", &encode(&m)).is_err(), "{path}");
        }
        let mut m = sample();
        m.format = "other".into();
        assert!(decode("k", &encode(&m)).is_err());
        let mut m = sample();
        m.version = 99;
        assert!(decode("k", &encode(&m)).is_err());
        assert!(decode("k", b"{not json").is_err());
    }

    #[test]
    fn keys() {
        let u = S3Url::parse("s3://bkt/run").unwrap();
        assert_eq!(
            manifest_key(&u, "checkpoint-5", 1),
            "run/.cairn/manifests/checkpoint-5/0000000001.json"
        );
        assert_eq!(
            parse_manifest_key(&u, "run/.cairn/manifests/checkpoint-5/0000000012.json"),
            Some(("checkpoint-5".into(), 12))
        );
        assert_eq!(parse_manifest_key(&u, "run/checkpoint-5/x.json"), None);
        assert_eq!(data_key(&u, "c", 1, "a/b"), "run/c/a/b");
        assert_eq!(data_key(&u, "c", 3, "a/b"), "run/c/.cairn-g3/a/b");
    }

    #[test]
    fn ordering_prefers_step_then_time() {
        let mut a = sample();
        a.step = Some(10);
        let mut b = sample();
        b.step = Some(9);
        b.created = "2999-01-01T00:00:00Z".into();
        assert!(a.order_key() > b.order_key());
        let mut c = sample();
        c.step = None;
        assert!(c.order_key() < b.order_key());
    }
}
