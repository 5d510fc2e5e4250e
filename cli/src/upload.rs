//! Uploading one file: a single PUT below the multipart threshold, else a multipart upload
//! with parallel parts, a CRC32C per part, bounded memory (at most `concurrency` parts in
//! memory), and resume of a half-done upload from saved [`MultipartState`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use base64::Engine;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::detect::LocalFile;
use crate::error::{s3_error, Error, Result};
use crate::progress::Progress;
use crate::state::{MultipartState, PartDone};

/// S3's limit on the number of parts.
const MAX_PARTS: u64 = 10_000;
/// S3's minimum part size (all parts but the last).
const MIN_PART: u64 = 5 << 20;

/// Transfer tuning shared by push and watch.
#[derive(clap::Args, Debug, Clone)]
pub struct TransferOpts {
    /// Multipart part size (e.g. 16MiB); at least 5MiB.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    pub part_size: u64,
    /// Files at least this large go multipart.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub multipart_threshold: u64,
    /// Parts uploaded in parallel (memory use is about this times the part size).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Upload at most this many bytes per second (e.g. 50MiB); unlimited by default.
    #[arg(long, value_parser = parse_size)]
    pub bandwidth_limit: Option<u64>,
}

pub use cairn_common::daemon::parse_size;

/// Paces uploads to a byte rate.
#[derive(Debug)]
pub struct RateLimiter {
    bytes_per_sec: f64,
    next: tokio::sync::Mutex<tokio::time::Instant>,
}

impl RateLimiter {
    /// A limiter allowing `bytes_per_sec`.
    pub fn new(bytes_per_sec: u64) -> Self {
        RateLimiter {
            bytes_per_sec: bytes_per_sec.max(1) as f64,
            next: tokio::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Waits for the right to send `n` bytes.
    pub async fn acquire(&self, n: u64) {
        let start = {
            let mut next = self.next.lock().await;
            let start = (*next).max(tokio::time::Instant::now());
            *next = start + Duration::from_secs_f64(n as f64 / self.bytes_per_sec);
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

/// What an upload produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// Hex SHA-256 of the file.
    pub sha256: String,
    /// Base64 CRC32C of the whole file.
    pub crc32c: String,
    /// Parts used (1 for a single PUT).
    pub parts: u32,
}

/// Called after each finished part with the upload's state, to persist it.
pub type SaveFn = Arc<dyn Fn(&MultipartState) -> Result<()> + Send + Sync>;

/// Uploads files to one bucket.
#[derive(Clone)]
pub struct Uploader {
    /// S3 client.
    pub client: Client,
    /// Destination bucket.
    pub bucket: String,
    /// Tuning.
    pub opts: TransferOpts,
    /// Optional rate limit.
    pub limiter: Option<Arc<RateLimiter>>,
    /// Progress bars.
    pub progress: Progress,
}

/// Base64 of a big-endian CRC32C, as S3 writes checksums.
pub fn crc_b64(crc: u32) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

fn changed(file: &LocalFile) -> Error {
    Error::Changed(file.abs.clone())
}

fn read_err(file: &LocalFile, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof || e.kind() == std::io::ErrorKind::NotFound {
        changed(file)
    } else {
        Error::io(&file.abs, e)
    }
}

impl Uploader {
    /// Builds an uploader; validates the tuning.
    pub fn new(
        client: Client,
        bucket: &str,
        opts: TransferOpts,
        progress: Progress,
    ) -> Result<Self> {
        if opts.part_size < MIN_PART {
            return Err(Error::BadArg("--part-size must be at least 5MiB".into()));
        }
        if opts.concurrency == 0 {
            return Err(Error::BadArg("--concurrency must be at least 1".into()));
        }
        Ok(Uploader {
            client,
            bucket: bucket.to_owned(),
            limiter: opts.bandwidth_limit.map(|b| Arc::new(RateLimiter::new(b))),
            opts,
            progress,
        })
    }

    /// Part size for a file of `size` bytes (grown so that at most 10,000 parts are needed).
    pub fn part_size_for(&self, size: u64) -> u64 {
        let min = size.div_ceil(MAX_PARTS).div_ceil(1 << 20) << 20;
        self.opts.part_size.max(min)
    }

    /// True when `size` bytes go multipart.
    pub fn is_multipart(&self, size: u64) -> bool {
        size >= self.opts.multipart_threshold && size > MIN_PART
    }

    /// Uploads `file` to `key`, resuming `resume` when it still applies.
    pub async fn upload(
        &self,
        file: &LocalFile,
        key: &str,
        resume: Option<MultipartState>,
        save: SaveFn,
    ) -> Result<Uploaded> {
        if self.is_multipart(file.size) {
            self.multipart(file, key, resume, save).await
        } else {
            self.single(file, key).await
        }
    }

    async fn single(&self, file: &LocalFile, key: &str) -> Result<Uploaded> {
        let bar = self.progress.bar(&file.rel, file.size);
        let bytes = tokio::fs::read(&file.abs)
            .await
            .map_err(|e| read_err(file, e))?;
        if bytes.len() as u64 != file.size {
            return Err(changed(file));
        }
        let sha = hex::encode(Sha256::digest(&bytes));
        let crc = crc_b64(crc32c::crc32c(&bytes));
        if let Some(l) = &self.limiter {
            l.acquire(file.size).await;
        }
        let resp = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(file.size as i64)
            .checksum_crc32_c(&crc)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| s3_error("PutObject", &self.bucket, key, e))?;
        if let Some(got) = resp.checksum_crc32_c() {
            if got != crc {
                return Err(Error::ChecksumMismatch {
                    what: key.to_owned(),
                    expected: crc,
                    actual: got.to_owned(),
                });
            }
        }
        bar.inc(file.size);
        bar.finish();
        Ok(Uploaded {
            sha256: sha,
            crc32c: crc,
            parts: 1,
        })
    }

    /// Finished parts the server still has for `upload_id`, or None if the upload is gone.
    async fn server_parts(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<Option<std::collections::BTreeMap<u32, String>>> {
        let mut out = std::collections::BTreeMap::new();
        let mut marker: Option<String> = None;
        loop {
            let res = self
                .client
                .list_parts()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .set_part_number_marker(marker.clone())
                .send()
                .await;
            let resp = match res {
                Ok(r) => r,
                Err(e) if crate::error::http_status(&e) == Some(404) => return Ok(None),
                Err(e) => return Err(s3_error("ListParts", &self.bucket, key, e)),
            };
            for p in resp.parts() {
                if let (Some(n), Some(etag)) = (p.part_number(), p.e_tag()) {
                    out.insert(n as u32, etag.trim_matches('"').to_owned());
                }
            }
            match resp.next_part_number_marker() {
                Some(m) if resp.is_truncated() == Some(true) => marker = Some(m.to_owned()),
                _ => break,
            }
        }
        Ok(Some(out))
    }

    async fn multipart(
        &self,
        file: &LocalFile,
        key: &str,
        resume: Option<MultipartState>,
        save: SaveFn,
    ) -> Result<Uploaded> {
        let size = file.size;
        let part_size = self.part_size_for(size);
        let nparts = size.div_ceil(part_size);
        let mut state = None;
        if let Some(mut r) = resume.filter(|r| r.part_size == part_size) {
            if let Some(server) = self.server_parts(key, &r.upload_id).await? {
                r.parts.retain(|n, p| {
                    server
                        .get(n)
                        .is_some_and(|e| *e == p.etag.trim_matches('"'))
                });
                tracing::info!(
                    "resuming upload of {} ({} of {nparts} parts done)",
                    file.rel,
                    r.parts.len()
                );
                state = Some(r);
            }
        }
        let state = match state {
            Some(s) => s,
            None => {
                let resp = self
                    .client
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .checksum_algorithm(ChecksumAlgorithm::Crc32C)
                    .send()
                    .await
                    .map_err(|e| s3_error("CreateMultipartUpload", &self.bucket, key, e))?;
                let upload_id = resp.upload_id().ok_or_else(|| Error::S3 {
                    op: "CreateMultipartUpload",
                    key: key.to_owned(),
                    message: "no upload id in the response".into(),
                })?;
                MultipartState {
                    upload_id: upload_id.to_owned(),
                    part_size,
                    parts: Default::default(),
                }
            }
        };
        save(&state)?;
        let upload_id = state.upload_id.clone();
        let shared = Arc::new(Mutex::new(state));
        let sem = Arc::new(Semaphore::new(self.opts.concurrency));
        let bar = self.progress.bar(&file.rel, size);
        let mut tasks: JoinSet<Result<()>> = JoinSet::new();
        let mut f = tokio::fs::File::open(&file.abs)
            .await
            .map_err(|e| read_err(file, e))?;
        let mut sha = Sha256::new();
        let mut crc = 0u32;
        let mut part_crcs = Vec::with_capacity(nparts as usize);
        for n in 1..=nparts as u32 {
            let len = part_size.min(size - (n as u64 - 1) * part_size);
            // Take the permit before reading: at most `concurrency` parts are in memory.
            let permit = sem
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| changed(file))?;
            let mut buf = vec![0u8; len as usize];
            f.read_exact(&mut buf)
                .await
                .map_err(|e| read_err(file, e))?;
            sha.update(&buf);
            crc = crc32c::crc32c_append(crc, &buf);
            let pcrc = crc32c::crc32c(&buf);
            part_crcs.push(pcrc);
            let pcrc_b64 = crc_b64(pcrc);
            let done = lock(&shared)
                .parts
                .get(&n)
                .is_some_and(|p| p.crc32c == pcrc_b64);
            if done {
                bar.inc(len);
                continue;
            }
            while let Some(r) = tasks.try_join_next() {
                r.map_err(|e| join_err(key, e))??;
            }
            let (client, bucket, key_s, uid) = (
                self.client.clone(),
                self.bucket.clone(),
                key.to_owned(),
                upload_id.clone(),
            );
            let (limiter, shared, save, bar) = (
                self.limiter.clone(),
                shared.clone(),
                save.clone(),
                bar.clone(),
            );
            tasks.spawn(async move {
                let _permit = permit;
                if let Some(l) = &limiter {
                    l.acquire(len).await;
                }
                let resp = client
                    .upload_part()
                    .bucket(&bucket)
                    .key(&key_s)
                    .upload_id(&uid)
                    .part_number(n as i32)
                    .content_length(len as i64)
                    .checksum_crc32_c(&pcrc_b64)
                    .body(ByteStream::from(buf))
                    .send()
                    .await
                    .map_err(|e| s3_error("UploadPart", &bucket, &key_s, e))?;
                if let Some(got) = resp.checksum_crc32_c() {
                    if got != pcrc_b64 {
                        return Err(Error::ChecksumMismatch {
                            what: format!("{key_s} part {n}"),
                            expected: pcrc_b64,
                            actual: got.to_owned(),
                        });
                    }
                }
                let etag = resp
                    .e_tag()
                    .unwrap_or_default()
                    .trim_matches('"')
                    .to_owned();
                let snapshot = {
                    let mut s = lock(&shared);
                    s.parts.insert(
                        n,
                        PartDone {
                            etag,
                            crc32c: pcrc_b64,
                        },
                    );
                    s.clone()
                };
                save(&snapshot)?;
                bar.inc(len);
                Ok(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.map_err(|e| join_err(key, e))??;
        }
        let final_state = lock(&shared).clone();
        let mut completed = Vec::with_capacity(nparts as usize);
        for n in 1..=nparts as u32 {
            let p = final_state.parts.get(&n).ok_or_else(|| Error::S3 {
                op: "UploadPart",
                key: key.to_owned(),
                message: format!("part {n} missing after upload"),
            })?;
            completed.push(
                CompletedPart::builder()
                    .part_number(n as i32)
                    .e_tag(format!("\"{}\"", p.etag))
                    .checksum_crc32_c(&p.crc32c)
                    .build(),
            );
        }
        let composite = {
            let raw: Vec<u8> = part_crcs.iter().flat_map(|c| c.to_be_bytes()).collect();
            format!("{}-{nparts}", crc_b64(crc32c::crc32c(&raw)))
        };
        let res = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await;
        let got = match res {
            Ok(r) => r.checksum_crc32_c().map(str::to_owned),
            // Completed by an earlier run that died before saving: check what is there.
            Err(e) if crate::error::http_status(&e) == Some(404) => {
                let head = self
                    .client
                    .head_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .checksum_mode(ChecksumMode::Enabled)
                    .send()
                    .await
                    .map_err(|e| s3_error("HeadObject", &self.bucket, key, e))?;
                if head.content_length() != Some(size as i64) {
                    return Err(s3_error("CompleteMultipartUpload", &self.bucket, key, e));
                }
                head.checksum_crc32_c().map(str::to_owned)
            }
            Err(e) => return Err(s3_error("CompleteMultipartUpload", &self.bucket, key, e)),
        };
        if let Some(got) = got {
            if got != composite && got != crc_b64(crc) {
                return Err(Error::ChecksumMismatch {
                    what: key.to_owned(),
                    expected: composite,
                    actual: got,
                });
            }
        }
        bar.finish();
        Ok(Uploaded {
            sha256: hex::encode(sha.finalize()),
            crc32c: crc_b64(crc),
            parts: nparts as u32,
        })
    }

    /// Aborts a multipart upload (best effort; failures are only logged).
    pub async fn abort(&self, key: &str, upload_id: &str) {
        if let Err(e) = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            tracing::debug!(
                "abort of {key} failed: {}",
                s3_error("AbortMultipartUpload", &self.bucket, key, e)
            );
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn join_err(key: &str, e: tokio::task::JoinError) -> Error {
    Error::S3 {
        op: "UploadPart",
        key: key.to_owned(),
        message: format!("upload task failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("5M"), Ok(5 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1234"), Ok(1234));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn crc_encoding_matches_s3() {
        assert_eq!(crc_b64(crc32c::crc32c(b"123456789")), "4waSgw==");
    }
}
