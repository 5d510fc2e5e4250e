//! The S3 side of the bench: an `aws-sdk-s3` client set up as a real user would, and the
//! timed transfers.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, ConfigBag, Credentials, Intercept, Region, RequestChecksumCalculation,
    ResponseChecksumValidation, RuntimeComponents,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use sha2::{Digest, Sha256};

/// How the SDK computes request checksums.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ChecksumMode {
    /// SDK default: CRC32 on every upload (aws-chunked body with a trailer), and response
    /// checksums validated when the server sends them.
    WhenSupported,
    /// Only where an operation requires one (plain bodies).
    WhenRequired,
}

/// Headers of the last upload request, as sent on the wire (seen by an interceptor).
#[derive(Clone, Debug, Default)]
pub struct SentHeaders {
    /// `x-amz-content-sha256` (signed payload, UNSIGNED-PAYLOAD, STREAMING-...).
    pub content_sha256: Option<String>,
    /// `content-encoding` (`aws-chunked` for streamed checksums).
    pub content_encoding: Option<String>,
    /// `x-amz-trailer`, the trailing checksum header.
    pub trailer: Option<String>,
}

#[derive(Debug, Default)]
struct Recorder(Arc<Mutex<SentHeaders>>);

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "cairn-bench-recorder"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let req = context.request();
        if req.method() == "PUT" {
            let h = req.headers();
            let get = |n: &str| h.get(n).map(str::to_string);
            let seen = SentHeaders {
                content_sha256: get("x-amz-content-sha256"),
                content_encoding: get("content-encoding"),
                trailer: get("x-amz-trailer"),
            };
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) = seen;
        }
        Ok(())
    }
}

/// The client and what it needs to know.
pub struct Bench {
    client: Client,
    bucket: String,
    checksum: ChecksumMode,
    sent: Arc<Mutex<SentHeaders>>,
}

impl Bench {
    /// A path-style client with static credentials, region us-east-1 and no retries (a
    /// retried transfer would silently distort the figures).
    pub fn new(endpoint: &str, access: &str, secret: &str, bucket: &str, c: ChecksumMode) -> Self {
        let sent = Arc::new(Mutex::new(SentHeaders::default()));
        let (req, resp) = match c {
            ChecksumMode::WhenSupported => (
                RequestChecksumCalculation::WhenSupported,
                ResponseChecksumValidation::WhenSupported,
            ),
            ChecksumMode::WhenRequired => (
                RequestChecksumCalculation::WhenRequired,
                ResponseChecksumValidation::WhenRequired,
            ),
        };
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            // Plain HTTP on loopback: the SDK's own hyper client, without TLS.
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .region(Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(Credentials::new(access, secret, None, None, "cairn-bench"))
            .force_path_style(true)
            .request_checksum_calculation(req)
            .response_checksum_validation(resp)
            .retry_config(RetryConfig::disabled())
            .interceptor(Recorder(sent.clone()))
            .build();
        Self {
            client: Client::from_conf(conf),
            bucket: bucket.to_string(),
            checksum: c,
            sent,
        }
    }

    /// The underlying SDK client (no retries), for operations the bench has no helper for.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Headers of the most recent PUT request.
    pub fn sent_headers(&self) -> SentHeaders {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// CreateBucket.
    pub async fn create_bucket(&self) -> Result<()> {
        self.client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| sdk_err("CreateBucket", e))?;
        Ok(())
    }

    /// PutObject of the whole file; returns the ETag (unquoted).
    pub async fn put(&self, key: &str, path: &Path) -> Result<String> {
        let body = ByteStream::from_path(path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(body)
            .send()
            .await
            .map_err(|e| sdk_err("PutObject", e))?;
        Ok(unquote(out.e_tag()))
    }

    /// CreateMultipartUpload, UploadPart of `part_size` pieces of the file with at most
    /// `concurrency` in flight, CompleteMultipartUpload; returns the ETag (unquoted). On
    /// failure the upload is aborted (best effort).
    pub async fn put_multipart(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        part_size: u64,
        concurrency: usize,
    ) -> Result<String> {
        let crc = self.checksum == ChecksumMode::WhenSupported;
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .set_checksum_algorithm(crc.then_some(ChecksumAlgorithm::Crc32))
            .send()
            .await
            .map_err(|e| sdk_err("CreateMultipartUpload", e))?;
        let upload_id = created
            .upload_id()
            .context("CreateMultipartUpload answered without an UploadId")?
            .to_string();
        let res = self
            .upload_parts(key, &upload_id, path, size, part_size, concurrency, crc)
            .await;
        match res {
            Ok(etag) => Ok(etag),
            Err(e) => {
                let _ = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        path: &Path,
        size: u64,
        part_size: u64,
        concurrency: usize,
        crc: bool,
    ) -> Result<String> {
        let count = size.div_ceil(part_size).max(1);
        let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        let mut parts = Vec::with_capacity(count as usize);
        for i in 0..count {
            let permit = sem.clone().acquire_owned().await?;
            let client = self.client.clone();
            let (bucket, key, id) = (self.bucket.clone(), key.to_string(), upload_id.to_string());
            let path: PathBuf = path.to_path_buf();
            let offset = i * part_size;
            let len = part_size.min(size - offset);
            let number = i32::try_from(i + 1).context("too many parts")?;
            tasks.spawn(async move {
                let _permit = permit;
                let body = ByteStream::read_from()
                    .path(&path)
                    .offset(offset)
                    .length(Length::Exact(len))
                    .build()
                    .await
                    .with_context(|| format!("opening {}", path.display()))?;
                let out = client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(id)
                    .part_number(number)
                    .set_checksum_algorithm(crc.then_some(ChecksumAlgorithm::Crc32))
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| sdk_err(&format!("UploadPart {number}"), e))?;
                anyhow::Ok(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .set_checksum_crc32(out.checksum_crc32().map(str::to_string))
                        .build(),
                )
            });
            // Collect finished parts now, so a failed part stops the upload early.
            while let Some(done) = tasks.try_join_next() {
                parts.push(done??);
            }
        }
        while let Some(done) = tasks.join_next().await {
            parts.push(done??);
        }
        parts.sort_by_key(|p| p.part_number());
        if parts.len() as u64 != count {
            bail!("{} of {count} parts uploaded", parts.len());
        }
        let out = self
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
            .await
            .map_err(|e| sdk_err("CompleteMultipartUpload", e))?;
        Ok(unquote(out.e_tag()))
    }

    /// GetObject, streamed; SHA-256 computed on another thread (pipelined, bounded queue).
    /// Returns (bytes received, hex SHA-256, ETag unquoted).
    pub async fn get(&self, key: &str) -> Result<(u64, String, String)> {
        let mut out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| sdk_err("GetObject", e))?;
        let etag = unquote(out.e_tag());
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(32);
        let hasher = std::thread::spawn(move || {
            let mut sha = Sha256::new();
            while let Some(b) = rx.blocking_recv() {
                sha.update(&b);
            }
            hex::encode(sha.finalize())
        });
        let mut n = 0u64;
        while let Some(chunk) = out.body.next().await {
            let chunk = chunk.context("GetObject body")?;
            n += chunk.len() as u64;
            tx.send(chunk)
                .await
                .map_err(|_| anyhow!("hasher thread stopped"))?;
        }
        drop(tx);
        let sha = hasher
            .join()
            .map_err(|_| anyhow!("hasher thread panicked"))?;
        Ok((n, sha, etag))
    }
}

fn unquote(etag: Option<&str>) -> String {
    etag.unwrap_or_default().trim_matches('"').to_string()
}

/// An SDK error as a readable one-liner; NotImplemented (code or HTTP 501) says plainly
/// that the gateway lacks the operation.
fn sdk_err<E>(op: &str, e: SdkError<E, HttpResponse>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    if e.code() == Some("NotImplemented") || status == Some(501) {
        let msg = e.message().unwrap_or("no message").to_string();
        return anyhow!(
            "{op}: the gateway answered NotImplemented ({msg}); this gateway does not support \
             it yet (multipart is issue #3)"
        );
    }
    anyhow!("{op} failed: {}", DisplayErrorContext(&e))
}
