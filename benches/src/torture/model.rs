//! What the clients know: each key's acknowledged and in-doubt states, and the counters
//! of what happened and of what a verification found.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::Client;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

/// What an object holds: its size and sha256.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Content {
    pub size: u64,
    pub sha: [u8; 32],
}

impl std::fmt::Display for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} B sha256 {}", self.size, &hex::encode(self.sha)[..16])
    }
}

/// `None` is "no such key".
pub type State = Option<Content>;

pub fn show(s: &State) -> String {
    s.map_or_else(|| "absent".to_string(), |c| c.to_string())
}

/// What the clients know about one key.
#[derive(Default, Debug)]
pub struct KeyModel {
    /// The last acknowledged state.
    pub acked: State,
    /// Results of requests that broke without an answer since then: each may have landed.
    pub maybe: Vec<State>,
    /// Everything ever sent for this key, to tell an unacknowledged version from garbage.
    pub sent: Vec<Content>,
    /// When the acknowledged state was acknowledged (round, seconds into the run).
    pub acked_at: Option<(u32, f64)>,
}

impl KeyModel {
    pub fn allows(&self, s: &State) -> bool {
        self.acked == *s || self.maybe.contains(s)
    }
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer: acknowledged.
    Acked,
    /// An error answer (or never sent): it must not have taken effect.
    Refused,
    /// No answer (connection broke, timeout): it may or may not have taken effect.
    Unknown,
}

pub fn outcome_of<E>(e: &SdkError<E, HttpResponse>) -> Outcome {
    match e {
        SdkError::ConstructionFailure(_) => Outcome::Refused,
        _ => match e.raw_response() {
            Some(r) if !r.status().is_success() => Outcome::Refused,
            _ => Outcome::Unknown,
        },
    }
}

/// Counters of one round.
#[derive(Default, Debug, Clone)]
pub struct RoundStats {
    pub puts_acked: u64,
    /// Of `puts_acked`: multipart uploads.
    pub multipart_acked: u64,
    pub deletes_acked: u64,
    pub refused: u64,
    pub unknown: u64,
    pub hung: u64,
}

impl RoundStats {
    /// Counts a request that ended with `outcome` and would have left `result`.
    pub fn count(&mut self, outcome: Outcome, result: State, multipart: bool) {
        match (outcome, result) {
            (Outcome::Acked, Some(_)) => {
                self.puts_acked += 1;
                self.multipart_acked += multipart as u64;
            }
            (Outcome::Acked, None) => self.deletes_acked += 1,
            (Outcome::Refused, _) => self.refused += 1,
            (Outcome::Unknown, _) => self.unknown += 1,
        }
    }

    pub fn add(&mut self, o: &RoundStats) {
        self.puts_acked += o.puts_acked;
        self.multipart_acked += o.multipart_acked;
        self.deletes_acked += o.deletes_acked;
        self.refused += o.refused;
        self.unknown += o.unknown;
        self.hung += o.hung;
    }
}

/// Problems found by a verification.
#[derive(Default, Debug, Clone, Copy)]
pub struct Findings {
    pub checked: u64,
    pub lost: u64,
    pub corrupt: u64,
    pub partial: u64,
    /// Reads that failed (503...) although every node was up, then succeeded on a retry:
    /// not a loss, but the gateway refused to serve intact data for a while.
    pub unavailable: u64,
    /// Keys whose broken request turned out to have landed.
    pub resolved_landed: u64,
    /// Of `lost`: reads that kept failing (the bytes may exist but could not be served).
    pub unreadable: u64,
}

impl Findings {
    pub fn bad(&self) -> u64 {
        self.lost + self.corrupt + self.partial
    }

    /// Adds everything `o` found.
    pub fn add(&mut self, o: &Findings) {
        self.checked += o.checked;
        self.resolved_landed += o.resolved_landed;
        self.add_problems(o);
    }

    /// Adds the problems `o` found, not its counts of keys checked and resolved (a pass
    /// with a node down reads keys a full pass already counted).
    pub fn add_problems(&mut self, o: &Findings) {
        self.lost += o.lost;
        self.corrupt += o.corrupt;
        self.partial += o.partial;
        self.unavailable += o.unavailable;
        self.unreadable += o.unreadable;
    }
}

/// What every client and check shares: the S3 client and the model of every key.
pub struct Shared {
    pub client: Client,
    pub model: Mutex<HashMap<String, KeyModel>>,
    pub started: Instant,
    pub round: AtomicU32,
    pub op_timeout: Duration,
    /// UploadPart requests in flight (kill-mid-part waits for one).
    pub parts_in_flight: AtomicUsize,
}

impl Shared {
    pub fn new(client: Client, op_timeout: Duration) -> Self {
        Self {
            client,
            model: Mutex::new(HashMap::new()),
            started: Instant::now(),
            round: 0.into(),
            op_timeout,
            parts_in_flight: AtomicUsize::new(0),
        }
    }

    /// Keys holding an acknowledged object.
    pub fn live_keys(&self) -> usize {
        self.model
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|k| k.acked.is_some())
            .count()
    }

    pub fn with_key<T>(&self, key: &str, f: impl FnOnce(&mut KeyModel) -> T) -> T {
        let mut m = self.model.lock().unwrap_or_else(|p| p.into_inner());
        f(m.entry(key.to_string()).or_default())
    }

    pub fn record(&self, key: &str, result: State, outcome: Outcome) {
        let at = (
            self.round.load(Ordering::Relaxed),
            self.started.elapsed().as_secs_f64(),
        );
        self.with_key(key, |k| match outcome {
            Outcome::Acked => {
                k.acked = result;
                k.maybe.clear();
                k.acked_at = Some(at);
            }
            Outcome::Unknown => k.maybe.push(result),
            Outcome::Refused => {}
        });
    }
}
