//! The clients: random PUTs, multipart uploads and deletes over their own keys, with the
//! retries of an S3 client in fault modes.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use crate::args::{Args, MIB};
use crate::model::{outcome_of, Content, Outcome, RoundStats, Shared, State};

/// S3's smallest part (except the last); the part size of the kill -9 rounds.
pub const PART_SIZE: u64 = 5 * MIB;
/// Largest part in fault modes (each multipart upload picks a size in PART_SIZE..=this).
pub const FAULT_PART_MAX: u64 = 8 * MIB;
/// The bucket every client writes to.
pub const BUCKET: &str = "torture";

/// The clients of a round or a fault mode, writing until stopped.
pub struct Writers {
    stop: Arc<AtomicBool>,
    tasks: tokio::task::JoinSet<RoundStats>,
}

impl Writers {
    /// Starts `args.writers` clients, each over its own share of the keys.
    pub fn spawn(args: &Args, shared: &Arc<Shared>, rng: &mut StdRng, mix: Mix) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..args.writers {
            let keys: Vec<String> = (w..args.keys)
                .step_by(args.writers)
                .map(|i| format!("k{i:03}"))
                .collect();
            let wseed = rng.next_u64();
            tasks.spawn(writer(shared.clone(), stop.clone(), keys, wseed, mix));
        }
        Self { stop, tasks }
    }

    /// Stops the clients (each after its request in flight) and adds up what they did.
    pub async fn stop(mut self) -> Result<RoundStats> {
        self.stop.store(true, Ordering::Relaxed);
        let mut stats = RoundStats::default();
        while let Some(done) = self.tasks.join_next().await {
            stats.add(&done.context("writer task")?);
        }
        Ok(stats)
    }
}

/// What the writers do.
#[derive(Clone, Copy)]
pub struct Mix {
    pub max_size: u64,
    pub multipart_percent: u32,
    pub delete_percent: u32,
    /// Each multipart upload picks its part size in `part_min..=part_max`.
    pub part_min: u64,
    pub part_max: u64,
    /// Attempts after a retryable failure (0: every request is sent once).
    pub retries: u32,
    /// Multipart objects have at least two parts (fault modes: a failed part attempt must
    /// not take earlier parts with it).
    pub multi_part: bool,
}

impl Mix {
    pub fn of(args: &Args) -> Self {
        Self {
            max_size: args.max_size_mib.max(1) * MIB,
            multipart_percent: args.multipart_percent,
            delete_percent: args.delete_percent,
            part_min: PART_SIZE,
            part_max: PART_SIZE,
            retries: 0,
            multi_part: false,
        }
    }

    /// The mix of fault modes: retrying clients, parts of 5-8 MiB, multipart objects of two
    /// parts or more, and at least `multipart_percent` of the writes multipart.
    pub fn faults(args: &Args, multipart_percent: u32) -> Self {
        Self {
            multipart_percent: args.multipart_percent.max(multipart_percent),
            part_max: FAULT_PART_MAX,
            retries: args.retries,
            multi_part: true,
            ..Self::of(args)
        }
    }

    /// Mostly small objects, some up to `max_size`.
    pub fn size(&self, rng: &mut StdRng) -> u64 {
        match rng.random_range(0..10) {
            0 => rng.random_range(0..16),
            1..=4 => rng.random_range(16..256 * 1024),
            5..=7 => rng.random_range(256 * 1024..4 * MIB),
            _ => rng.random_range(4 * MIB..=self.max_size.max(4 * MIB + 1)),
        }
    }
}

/// One client: random PUTs, multipart uploads and deletes over its own keys until `stop`.
async fn writer(
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    keys: Vec<String>,
    seed: u64,
    mix: Mix,
) -> RoundStats {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut stats = RoundStats::default();
    while !stop.load(Ordering::Relaxed) {
        let key = &keys[rng.random_range(0..keys.len())];
        let request = Request::pick(&shared, key, &mut rng, mix);
        let op = tokio::time::timeout(shared.op_timeout, request.op);
        let outcome = match op.await {
            Ok(o) => o,
            Err(_) => {
                stats.hung += 1;
                eprintln!("request on {key} hung for {:?}", shared.op_timeout);
                Outcome::Unknown
            }
        };
        shared.record(key, request.result, outcome);
        stats.count(outcome, request.result, request.multipart);
        if outcome != Outcome::Acked {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    stats
}

/// A client's next request on one key, not yet sent.
struct Request {
    /// What the key holds if the request takes effect.
    result: State,
    op: BoxedOp,
    multipart: bool,
}

impl Request {
    /// A delete, or a PUT (single or multipart) of fresh random bytes, recorded as sent.
    fn pick(shared: &Arc<Shared>, key: &str, rng: &mut StdRng, mix: Mix) -> Self {
        if rng.random_range(0..100) < mix.delete_percent {
            return Self {
                result: None,
                op: delete(shared.client.clone(), key.to_string(), mix.retries),
                multipart: false,
            };
        }
        let mut multipart = rng.random_range(0..100) < mix.multipart_percent;
        let part_size = rng.random_range(mix.part_min..=mix.part_max.max(mix.part_min));
        let size = if multipart && mix.multi_part {
            rng.random_range(part_size + 1..=mix.max_size.max(2 * part_size))
        } else {
            mix.size(rng)
        };
        multipart &= size > 0;
        let mut data = vec![0u8; size as usize];
        rng.fill_bytes(&mut data);
        let content = Content {
            size,
            sha: Sha256::digest(&data).into(),
        };
        shared.with_key(key, |k| k.sent.push(content));
        let (key, data) = (key.to_string(), Bytes::from(data));
        let op: BoxedOp = if multipart {
            Box::pin(put_multipart(
                shared.clone(),
                key,
                data,
                part_size,
                mix.retries,
            ))
        } else {
            Box::pin(put(shared.client.clone(), key, data, mix.retries))
        };
        Self {
            result: Some(content),
            op,
            multipart,
        }
    }
}

pub type BoxedOp = std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send>>;

/// How a request ended after its retries.
pub struct Tried<T> {
    /// The answer of the attempt that succeeded.
    pub value: Option<T>,
    /// Some attempt broke without an answer, so it may have taken effect.
    pub unknown: bool,
}

impl<T> Tried<T> {
    pub fn outcome(&self) -> Outcome {
        match (&self.value, self.unknown) {
            (Some(_), _) => Outcome::Acked,
            (None, true) => Outcome::Unknown,
            (None, false) => Outcome::Refused,
        }
    }
}

/// Sends a request, and again up to `retries` times (with backoff) after an answer an S3
/// client retries (500, 502, 503, 504) or a broken connection.
pub async fn retrying<T, E, F, Fut>(retries: u32, mut attempt: F) -> Tried<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SdkError<E, HttpResponse>>>,
{
    let mut unknown = false;
    let mut tries = 0u32;
    loop {
        match attempt().await {
            Ok(v) => {
                return Tried {
                    value: Some(v),
                    unknown,
                }
            }
            Err(e) => {
                let o = outcome_of(&e);
                unknown |= o == Outcome::Unknown;
                let again = match e.raw_response() {
                    Some(r) => matches!(r.status().as_u16(), 500 | 502 | 503 | 504),
                    None => o == Outcome::Unknown,
                };
                if !again || tries >= retries {
                    return Tried {
                        value: None,
                        unknown,
                    };
                }
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100 << tries.min(4))).await;
            }
        }
    }
}

pub fn delete(client: Client, key: String, retries: u32) -> BoxedOp {
    Box::pin(async move {
        retrying(retries, || {
            client.delete_object().bucket(BUCKET).key(&key).send()
        })
        .await
        .outcome()
    })
}

pub async fn put(client: Client, key: String, data: Bytes, retries: u32) -> Outcome {
    retrying(retries, || {
        client
            .put_object()
            .bucket(BUCKET)
            .key(&key)
            .body(ByteStream::from(data.clone()))
            .send()
    })
    .await
    .outcome()
}

/// Counts an UploadPart in flight for as long as it lives (also when its future is dropped).
pub struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    pub fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Self(n)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Create, parts of `part_size` one after the other (each retried on its own), Complete.
/// A failure before Complete was sent cannot make anything visible (the upload is aborted,
/// best effort).
async fn put_multipart(
    shared: Arc<Shared>,
    key: String,
    data: Bytes,
    part_size: u64,
    retries: u32,
) -> Outcome {
    let Some(upload) = Multipart::create(&shared, &key, retries).await else {
        return Outcome::Refused;
    };
    match upload.upload_parts(&data, part_size).await {
        Some(parts) => upload.complete(parts).await,
        None => {
            upload.abort().await;
            Outcome::Refused
        }
    }
}

/// A multipart upload in progress.
struct Multipart<'a> {
    shared: &'a Shared,
    key: &'a str,
    id: String,
    retries: u32,
}

impl<'a> Multipart<'a> {
    /// CreateMultipartUpload; `None` if it failed for good.
    async fn create(shared: &'a Shared, key: &'a str, retries: u32) -> Option<Self> {
        let client = &shared.client;
        let created = retrying(retries, || {
            client
                .create_multipart_upload()
                .bucket(BUCKET)
                .key(key)
                .send()
        })
        .await;
        let id = created.value.as_ref()?.upload_id()?.to_string();
        Some(Self {
            shared,
            key,
            id,
            retries,
        })
    }

    /// Uploads `data` in parts of `part_size`, one after the other, each retried on its
    /// own; `None` once a part has failed for good.
    async fn upload_parts(&self, data: &Bytes, part_size: u64) -> Option<Vec<CompletedPart>> {
        let client = &self.shared.client;
        let mut parts = Vec::new();
        for (i, chunk) in data.chunks(part_size as usize).enumerate() {
            let number = i as i32 + 1;
            let body = data.slice_ref(chunk);
            let r = retrying(self.retries, || {
                let send = client
                    .upload_part()
                    .bucket(BUCKET)
                    .key(self.key)
                    .upload_id(&self.id)
                    .part_number(number)
                    .body(ByteStream::from(body.clone()))
                    .send();
                let counter = &self.shared.parts_in_flight;
                async move {
                    let _in_flight = InFlight::new(counter);
                    send.await
                }
            })
            .await;
            let out = r.value?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build(),
            );
        }
        Some(parts)
    }

    /// CompleteMultipartUpload of `parts`; the upload is aborted if that was refused.
    async fn complete(&self, parts: Vec<CompletedPart>) -> Outcome {
        let done = retrying(self.retries, || {
            self.shared
                .client
                .complete_multipart_upload()
                .bucket(BUCKET)
                .key(self.key)
                .upload_id(&self.id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts.clone()))
                        .build(),
                )
                .send()
        })
        .await;
        let o = done.outcome();
        if o == Outcome::Refused {
            self.abort().await;
        }
        o
    }

    /// Aborts an upload that will not be completed (best effort: GC collects what remains).
    async fn abort(&self) {
        let _ = self
            .shared
            .client
            .abort_multipart_upload()
            .bucket(BUCKET)
            .key(self.key)
            .upload_id(&self.id)
            .send()
            .await;
    }
}
