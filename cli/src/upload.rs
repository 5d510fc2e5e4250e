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
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::detect::LocalFile;
use crate::error::{s3_error, Error, Result};
use crate::progress::{Bar, Progress};
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

    /// Multipart upload: resume the saved upload or start one, send the parts the server
    /// does not have, complete it, and check the server's checksum of the whole object.
    async fn multipart(
        &self,
        file: &LocalFile,
        key: &str,
        resume: Option<MultipartState>,
        save: SaveFn,
    ) -> Result<Uploaded> {
        let part_size = self.part_size_for(file.size);
        let nparts = file.size.div_ceil(part_size);
        let state = match self.resumable(file, key, part_size, resume).await? {
            Some(state) => state,
            None => self.create_upload(key, part_size).await?,
        };
        save(&state)?;
        let bar = self.progress.bar(&file.rel, file.size);
        let target = PartTarget {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            upload_id: state.upload_id.clone(),
            limiter: self.limiter.clone(),
            state: Arc::new(Mutex::new(state)),
            save,
            bar: bar.clone(),
        };
        let sums = self.send_parts(file, &target, part_size, nparts).await?;
        let completed = completed_parts(key, &lock(&target.state), nparts)?;
        let got = self
            .complete(key, &target.upload_id, completed, file.size)
            .await?;
        sums.verify(key, got)?;
        bar.finish();
        Ok(sums.uploaded())
    }

    /// The saved upload to continue, when it used this part size and the server still has
    /// it; of its parts, only those the server still holds with the same ETag count as done.
    async fn resumable(
        &self,
        file: &LocalFile,
        key: &str,
        part_size: u64,
        resume: Option<MultipartState>,
    ) -> Result<Option<MultipartState>> {
        let Some(mut r) = resume.filter(|r| r.part_size == part_size) else {
            return Ok(None);
        };
        let Some(server) = self.server_parts(key, &r.upload_id).await? else {
            return Ok(None);
        };
        r.parts.retain(|n, p| {
            server
                .get(n)
                .is_some_and(|e| *e == p.etag.trim_matches('"'))
        });
        tracing::info!(
            "resuming upload of {} ({} of {} parts done)",
            file.rel,
            r.parts.len(),
            file.size.div_ceil(part_size)
        );
        Ok(Some(r))
    }

    /// Starts a multipart upload with CRC32C checksums.
    async fn create_upload(&self, key: &str, part_size: u64) -> Result<MultipartState> {
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
        Ok(MultipartState {
            upload_id: upload_id.to_owned(),
            part_size,
            parts: Default::default(),
        })
    }

    /// Reads the whole file part by part, checksumming all of it, and sends the parts not
    /// already done, at most `concurrency` at a time.
    async fn send_parts(
        &self,
        file: &LocalFile,
        target: &PartTarget,
        part_size: u64,
        nparts: u64,
    ) -> Result<FileSums> {
        let sem = Arc::new(Semaphore::new(self.opts.concurrency));
        let mut tasks: JoinSet<Result<()>> = JoinSet::new();
        let mut f = tokio::fs::File::open(&file.abs)
            .await
            .map_err(|e| read_err(file, e))?;
        let mut sums = FileSums::new(nparts);
        for number in 1..=nparts as u32 {
            let len = part_size.min(file.size - (number as u64 - 1) * part_size);
            // Take the permit before reading: at most `concurrency` parts are in memory.
            let permit = sem
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| changed(file))?;
            let mut data = vec![0u8; len as usize];
            f.read_exact(&mut data)
                .await
                .map_err(|e| read_err(file, e))?;
            let crc32c = crc_b64(sums.add_part(&data));
            let part = Part {
                number,
                data,
                crc32c,
            };
            if target.has(&part) {
                target.bar.inc(len);
                continue;
            }
            while let Some(r) = tasks.try_join_next() {
                r.map_err(|e| join_err(&target.key, e))??;
            }
            tasks.spawn(target.clone().send(part, permit));
        }
        while let Some(r) = tasks.join_next().await {
            r.map_err(|e| join_err(&target.key, e))??;
        }
        Ok(sums)
    }

    /// Completes the upload; returns the object's CRC32C as the server reports it.
    async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        size: u64,
    ) -> Result<Option<String>> {
        let res = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await;
        match res {
            Ok(r) => Ok(r.checksum_crc32_c().map(str::to_owned)),
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
                Ok(head.checksum_crc32_c().map(str::to_owned))
            }
            Err(e) => Err(s3_error("CompleteMultipartUpload", &self.bucket, key, e)),
        }
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

/// What every part of one multipart upload is sent with; each part's task owns a clone.
#[derive(Clone)]
struct PartTarget {
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    limiter: Option<Arc<RateLimiter>>,
    /// The upload's state, updated as parts finish.
    state: Arc<Mutex<MultipartState>>,
    save: SaveFn,
    bar: Bar,
}

/// One part read from the file.
struct Part {
    number: u32,
    data: Vec<u8>,
    /// Base64 CRC32C of `data`.
    crc32c: String,
}

impl PartTarget {
    /// True when the upload already has this part with the same checksum.
    fn has(&self, part: &Part) -> bool {
        lock(&self.state)
            .parts
            .get(&part.number)
            .is_some_and(|p| p.crc32c == part.crc32c)
    }

    /// Sends one part (holding `_permit` until done), checks the server's checksum of it,
    /// and records and saves it as done.
    async fn send(self, part: Part, _permit: OwnedSemaphorePermit) -> Result<()> {
        let len = part.data.len() as u64;
        if let Some(l) = &self.limiter {
            l.acquire(len).await;
        }
        let resp = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .part_number(part.number as i32)
            .content_length(len as i64)
            .checksum_crc32_c(&part.crc32c)
            .body(ByteStream::from(part.data))
            .send()
            .await
            .map_err(|e| s3_error("UploadPart", &self.bucket, &self.key, e))?;
        if let Some(got) = resp.checksum_crc32_c() {
            if got != part.crc32c {
                return Err(Error::ChecksumMismatch {
                    what: format!("{} part {}", self.key, part.number),
                    expected: part.crc32c,
                    actual: got.to_owned(),
                });
            }
        }
        let etag = resp
            .e_tag()
            .unwrap_or_default()
            .trim_matches('"')
            .to_owned();
        let done = PartDone {
            etag,
            crc32c: part.crc32c,
        };
        let snapshot = {
            let mut s = lock(&self.state);
            s.parts.insert(part.number, done);
            s.clone()
        };
        (self.save)(&snapshot)?;
        self.bar.inc(len);
        Ok(())
    }
}

/// Checksums of a whole file, built part by part as it is read.
struct FileSums {
    sha256: Sha256,
    crc32c: u32,
    part_crcs: Vec<u32>,
}

impl FileSums {
    fn new(nparts: u64) -> Self {
        FileSums {
            sha256: Sha256::new(),
            crc32c: 0,
            part_crcs: Vec::with_capacity(nparts as usize),
        }
    }

    /// Adds the next part; returns its CRC32C.
    fn add_part(&mut self, data: &[u8]) -> u32 {
        self.sha256.update(data);
        self.crc32c = crc32c::crc32c_append(self.crc32c, data);
        let crc = crc32c::crc32c(data);
        self.part_crcs.push(crc);
        crc
    }

    /// S3's checksum of a multipart object: the CRC32C of the parts' CRC32Cs, then the
    /// number of parts.
    fn composite(&self) -> String {
        let raw: Vec<u8> = self
            .part_crcs
            .iter()
            .flat_map(|c| c.to_be_bytes())
            .collect();
        format!("{}-{}", crc_b64(crc32c::crc32c(&raw)), self.part_crcs.len())
    }

    /// Checks the server's CRC32C of the object, when it gives one: the composite checksum
    /// or the whole file's.
    fn verify(&self, key: &str, got: Option<String>) -> Result<()> {
        let Some(got) = got else {
            return Ok(());
        };
        let composite = self.composite();
        if got != composite && got != crc_b64(self.crc32c) {
            return Err(Error::ChecksumMismatch {
                what: key.to_owned(),
                expected: composite,
                actual: got,
            });
        }
        Ok(())
    }

    fn uploaded(self) -> Uploaded {
        Uploaded {
            sha256: hex::encode(self.sha256.finalize()),
            crc32c: crc_b64(self.crc32c),
            parts: self.part_crcs.len() as u32,
        }
    }
}

/// The parts to complete the upload with, in order; every part must be done.
fn completed_parts(key: &str, state: &MultipartState, nparts: u64) -> Result<Vec<CompletedPart>> {
    (1..=nparts as u32)
        .map(|n| {
            let p = state.parts.get(&n).ok_or_else(|| Error::S3 {
                op: "UploadPart",
                key: key.to_owned(),
                message: format!("part {n} missing after upload"),
            })?;
            Ok(CompletedPart::builder()
                .part_number(n as i32)
                .e_tag(format!("\"{}\"", p.etag))
                .checksum_crc32_c(&p.crc32c)
                .build())
        })
        .collect()
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
