//! SigV4 request authentication, with the canonical request and signature computed by
//! `aws-sigv4` at the request's own time and compared in constant time.
//!
//! Two forms: the `Authorization` header, and presigned URLs (`X-Amz-*` query
//! parameters, with expiry). The result says how the payload is protected, which the
//! body reader then enforces (signed SHA-256, unsigned, or aws-chunked streaming).
//!
//! As S3 does, every `x-amz-*` header must be covered by the signature (an unsigned one
//! could turn a PutObject into a copy, or add metadata), and the credential scope's region
//! must be the gateway's. Other headers (`Content-Type`, `If-None-Match`...) are honoured
//! whether signed or not, as S3 does; the SDKs sign them all anyway.
//! [`AuthFailures`] counts, logs and slows failed attempts per source.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
    SignatureLocation, SigningSettings, UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::error::S3Error;

/// Largest accepted difference between the request's date and ours.
const MAX_SKEW: Duration = Duration::from_secs(15 * 60);
/// Longest presigned URL lifetime S3 allows.
const MAX_PRESIGN_EXPIRES: u64 = 7 * 24 * 3600;

/// The one access key the gateway serves.
#[derive(Clone)]
pub struct Keys {
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
    /// Failed authentications per source (metrics, logs, slowing).
    pub failures: Arc<AuthFailures>,
}

impl Keys {
    /// The gateway's S3 credentials.
    pub fn new(access_key: impl Into<String>, secret_key: impl Into<String>) -> Self {
        Self {
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            failures: Arc::new(AuthFailures::default()),
        }
    }

    /// Counts a request that failed authentication with `error` against its source and
    /// the key it claimed, and holds the answer back as long as that source has earned.
    pub async fn refuse(
        &self,
        peer: Option<IpAddr>,
        path_and_query: &str,
        headers: &HeaderMap,
        error: &S3Error,
    ) {
        let key = self.key_label(path_and_query, headers);
        let delay = self.failures.record(peer, key, error);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    /// The `key` label of a failed attempt: our access key id when the request claimed
    /// it, `anonymous` when it claimed none, `unknown` for any other (one value, so
    /// invented key ids cannot grow the metric's label set).
    pub fn key_label(&self, path_and_query: &str, headers: &HeaderMap) -> &str {
        match claimed_access_key(path_and_query, headers) {
            None => "anonymous",
            Some(k) if k == self.access_key => &self.access_key,
            Some(_) => "unknown",
        }
    }
}

/// The access key id a request claims (from `Authorization` or `X-Amz-Credential`),
/// whether or not its signature holds.
fn claimed_access_key(path_and_query: &str, headers: &HeaderMap) -> Option<String> {
    if let Some(auth) = header(headers, "authorization") {
        let cred = auth
            .split([' ', ','])
            .find_map(|f| f.trim().strip_prefix("Credential="))?;
        return Some(cred.split('/').next().unwrap_or_default().to_string());
    }
    let query = path_and_query.split_once('?').map(|(_, q)| q)?;
    let cred = query
        .split('&')
        .find_map(|p| p.strip_prefix("X-Amz-Credential="))?;
    let cred = percent_encoding::percent_decode_str(cred).decode_utf8_lossy();
    Some(cred.split('/').next().unwrap_or_default().to_string())
}

/// Failed attempts a source may make (a decaying count, see [`FAILURE_MEMORY`]) before
/// its failures are answered late: more than a client with a wrong key makes before its
/// user notices, so only guessing and floods are slowed.
pub const FREE_FAILURES: f64 = 50.0;
/// How long a failure counts: each one weighs `exp(-age / FAILURE_MEMORY)`, so about
/// [`FREE_FAILURES`] failures a minute go unslowed for ever.
const FAILURE_MEMORY: Duration = Duration::from_secs(60);
/// Added to the delay per failure beyond [`FREE_FAILURES`].
const DELAY_STEP: Duration = Duration::from_millis(250);
/// Longest delay before a failure is answered.
pub const MAX_DELAY: Duration = Duration::from_secs(2);
/// A source is logged at most once per interval (with the count of failures since).
const LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Sources tracked at once; beyond that, new ones share one entry (and are slowed
/// together), so a flood of invented addresses cannot grow memory.
const MAX_SOURCES: usize = 4096;
/// Sources that get their own `source` metric label; later ones are labelled `other`.
const MAX_SOURCE_LABELS: usize = 64;

/// Where a failed attempt came from: an IPv4 address, or an IPv6 /64 (a host on a LAN
/// can pick any address of its /64); `None` when the connection's peer is unknown.
pub type Source = Option<IpAddr>;

/// The [`Source`] of a peer address.
pub fn source_of(peer: Option<IpAddr>) -> Source {
    Some(match peer? {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    })
}

fn source_text(source: Source) -> String {
    match source {
        None => "unknown".into(),
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => format!("{v6}/64"),
    }
}

#[derive(Debug)]
struct SourceState {
    /// Recent failures, decayed to `updated`.
    score: f64,
    updated: Instant,
    last_logged: Option<Instant>,
    /// Failures since the last log line.
    unlogged: u64,
}

impl SourceState {
    fn new(now: Instant) -> Self {
        Self {
            score: 0.0,
            updated: now,
            last_logged: None,
            unlogged: 0,
        }
    }

    fn decayed(&self, now: Instant) -> f64 {
        let age = now.saturating_duration_since(self.updated).as_secs_f64();
        self.score * (-age / FAILURE_MEMORY.as_secs_f64()).exp()
    }
}

#[derive(Default)]
struct FailureTable {
    sources: HashMap<Source, SourceState>,
    /// Shared by sources that found the table full.
    overflow: Option<SourceState>,
    labelled: HashSet<Source>,
}

/// What to do about one failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Wait this long before answering.
    pub delay: Duration,
    /// Log it, with this many earlier failures of the source held back since its last line.
    pub log: Option<u64>,
    /// The source's metric label.
    pub label: String,
}

/// Failed authentications by source: each is counted in `cairn_auth_failures_total`,
/// a source is logged at most once a minute, and a source past [`FREE_FAILURES`] recent
/// failures gets its failures answered late (a delay growing with its recent failures,
/// at most [`MAX_DELAY`]). Successful requests never pass through here, so they are
/// never slowed. Memory is bounded ([`MAX_SOURCES`]).
#[derive(Default)]
pub struct AuthFailures {
    table: Mutex<FailureTable>,
}

impl AuthFailures {
    /// Decides on one failure from `source` at `now` (the caller waits and logs).
    pub fn judge(&self, source: Source, now: Instant) -> Verdict {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let label = if t.labelled.contains(&source) {
            source_text(source)
        } else if t.labelled.len() < MAX_SOURCE_LABELS {
            t.labelled.insert(source);
            source_text(source)
        } else {
            "other".to_string()
        };
        if !t.sources.contains_key(&source) && t.sources.len() >= MAX_SOURCES {
            let forget = |s: &SourceState| {
                s.decayed(now) < 0.5
                    && s.last_logged
                        .is_none_or(|l| now.saturating_duration_since(l) >= LOG_INTERVAL)
            };
            t.sources.retain(|_, s| !forget(s));
        }
        let state = if t.sources.contains_key(&source) || t.sources.len() < MAX_SOURCES {
            t.sources
                .entry(source)
                .or_insert_with(|| SourceState::new(now))
        } else {
            t.overflow.get_or_insert_with(|| SourceState::new(now))
        };
        state.score = state.decayed(now) + 1.0;
        state.updated = now;
        let excess = state.score - FREE_FAILURES;
        let delay = if excess > 0.0 {
            DELAY_STEP
                .saturating_mul(excess.ceil().min(u32::MAX as f64) as u32)
                .min(MAX_DELAY)
        } else {
            Duration::ZERO
        };
        let log = match state.last_logged {
            Some(l) if now.saturating_duration_since(l) < LOG_INTERVAL => {
                state.unlogged += 1;
                None
            }
            _ => {
                state.last_logged = Some(now);
                Some(std::mem::take(&mut state.unlogged))
            }
        };
        Verdict { delay, log, label }
    }

    /// Counts, logs and returns how long to hold back the answer to a request that
    /// failed authentication with `error`.
    pub fn record(&self, peer: Option<IpAddr>, key: &str, error: &S3Error) -> Duration {
        let source = source_of(peer);
        let verdict = self.judge(source, Instant::now());
        metrics::counter!(
            "cairn_auth_failures_total",
            "key" => key.to_string(),
            "source" => verdict.label.clone()
        )
        .increment(1);
        if let Some(held_back) = verdict.log {
            let (code, _) = error.code_and_status();
            tracing::warn!(
                source = %source_text(source),
                key,
                code,
                error = %error,
                failures_since_last_line = held_back,
                delay_ms = verdict.delay.as_millis() as u64,
                "authentication failed"
            );
        }
        if !verdict.delay.is_zero() {
            metrics::counter!("cairn_auth_failures_delayed_total").increment(1);
        }
        verdict.delay
    }
}

/// How the request body is protected, as its signature declared.
#[derive(Clone, Debug)]
pub enum Payload {
    /// `x-amz-content-sha256` is the body's hex SHA-256: verify it over the body.
    Sha256(String),
    /// `UNSIGNED-PAYLOAD` (or a presigned URL): the body is not signed.
    Unsigned,
    /// `Content-Encoding: aws-chunked` framing.
    Streaming {
        /// Chunk signatures to verify (signed variants).
        signer: Option<ChunkSigner>,
        /// Whether trailers follow the last chunk.
        trailer: bool,
    },
}

/// Verifies the chained signatures of an aws-chunked body.
#[derive(Clone, Debug)]
pub struct ChunkSigner {
    key: Vec<u8>,
    amz_date: String,
    scope: String,
    /// The previous signature: the seed (header signature) at first.
    pub prev: String,
}

const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

impl ChunkSigner {
    /// Signature expected for a chunk whose SHA-256 is `chunk_sha256_hex`.
    pub fn chunk_signature(&self, chunk_sha256_hex: &str) -> String {
        let sts = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{}\n{}\n{}",
            self.amz_date, self.scope, self.prev, EMPTY_SHA256, chunk_sha256_hex
        );
        v4::calculate_signature(&self.key, sts.as_bytes())
    }

    /// Signature expected for the trailer block whose SHA-256 is `trailer_sha256_hex`.
    pub fn trailer_signature(&self, trailer_sha256_hex: &str) -> String {
        let sts = format!(
            "AWS4-HMAC-SHA256-TRAILER\n{}\n{}\n{}\n{}",
            self.amz_date, self.scope, self.prev, trailer_sha256_hex
        );
        v4::calculate_signature(&self.key, sts.as_bytes())
    }
}

/// Constant-time comparison of two hex signatures.
pub fn signatures_match(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

struct Credential<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
}

fn parse_credential(s: &str) -> Result<Credential<'_>, S3Error> {
    let parts: Vec<&str> = s.split('/').collect();
    if parts.len() != 5 || parts[4] != "aws4_request" {
        return Err(S3Error::AuthorizationHeaderMalformed(
            "bad Credential".into(),
        ));
    }
    Ok(Credential {
        access_key: parts[0],
        date: parts[1],
        region: parts[2],
        service: parts[3],
    })
}

fn parse_amz_date(s: &str) -> Result<SystemTime, S3Error> {
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let dt = time::PrimitiveDateTime::parse(s, &fmt)
        .map_err(|_| S3Error::AuthorizationHeaderMalformed(format!("bad x-amz-date {s:?}")))?;
    Ok(dt.assume_utc().into())
}

use super::header_str as header;

/// Authenticates a request signed for any region. `path_and_query` is exactly as
/// received (still encoded). S3 requests use [`authenticate_in`], which also checks the
/// region.
pub fn authenticate(
    keys: &Keys,
    method: &str,
    path_and_query: &str,
    headers: &HeaderMap,
) -> Result<Payload, S3Error> {
    authenticate_region(keys, None, method, path_and_query, headers)
}

/// Authenticates a request whose credential scope must name `region`. `path_and_query`
/// is exactly as received (still encoded).
pub fn authenticate_in(
    keys: &Keys,
    region: &str,
    method: &str,
    path_and_query: &str,
    headers: &HeaderMap,
) -> Result<Payload, S3Error> {
    authenticate_region(keys, Some(region), method, path_and_query, headers)
}

fn authenticate_region(
    keys: &Keys,
    region: Option<&str>,
    method: &str,
    path_and_query: &str,
    headers: &HeaderMap,
) -> Result<Payload, S3Error> {
    if !path_and_query.starts_with('/') {
        return Err(S3Error::InvalidRequest(
            "the request target must be a path".into(),
        ));
    }
    if let Some(auth) = header(headers, "authorization") {
        return authenticate_header(keys, region, method, path_and_query, headers, auth);
    }
    let query = path_and_query.split_once('?').map(|(_, q)| q).unwrap_or("");
    if query.split('&').any(|p| p.starts_with("X-Amz-Signature=")) {
        return authenticate_presigned(keys, region, method, path_and_query, headers);
    }
    Err(S3Error::AccessDenied)
}

fn check_key<'a>(keys: &Keys, cred: &Credential<'a>) -> Result<(), S3Error> {
    if !bool::from(cred.access_key.as_bytes().ct_eq(keys.access_key.as_bytes())) {
        return Err(S3Error::InvalidAccessKeyId);
    }
    if cred.service != "s3" {
        return Err(S3Error::AuthorizationHeaderMalformed(format!(
            "service {:?} is not s3",
            cred.service
        )));
    }
    Ok(())
}

/// `x-amz-*` headers of the request that `signed` (a `;`-separated list) does not name,
/// except those in `tolerated`: S3 refuses such a request (an unsigned
/// `x-amz-copy-source` would turn a signed PutObject into a copy).
fn check_all_amz_signed(
    headers: &HeaderMap,
    signed: &str,
    tolerated: &[&str],
) -> Result<(), S3Error> {
    let mut missing: Vec<&str> = Vec::new();
    for name in headers.keys() {
        let n = name.as_str();
        if n.starts_with("x-amz-")
            && !tolerated.contains(&n)
            && !signed.split(';').any(|s| s.trim().eq_ignore_ascii_case(n))
            && !missing.contains(&n)
        {
            missing.push(n);
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(S3Error::HeadersNotSigned(missing.join(",")))
    }
}

/// The credential scope's region must be ours (`expected`, when checked).
fn check_region(
    cred: &Credential<'_>,
    expected: Option<&str>,
    presigned: bool,
) -> Result<(), S3Error> {
    match expected {
        Some(want) if cred.region != want => {
            let (got, expected) = (cred.region.to_string(), want.to_string());
            Err(if presigned {
                S3Error::WrongRegionPresigned { got, expected }
            } else {
                S3Error::WrongRegion { got, expected }
            })
        }
        _ => Ok(()),
    }
}

/// The credential scope's date must be the request date's day.
fn check_scope_date(cred: &Credential<'_>, amz_date: &str) -> Result<(), S3Error> {
    if amz_date.get(..8) != Some(cred.date) {
        return Err(S3Error::SignatureDoesNotMatch);
    }
    Ok(())
}

fn settings(location: SignatureLocation, expires: Option<Duration>) -> SigningSettings {
    let mut s = SigningSettings::default();
    s.percent_encoding_mode = PercentEncodingMode::Single;
    s.payload_checksum_kind = PayloadChecksumKind::NoHeader;
    s.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    s.excluded_headers = None;
    s.signature_location = location;
    s.expires_in = expires;
    s
}

fn compute_signature(
    keys: &Keys,
    region: &str,
    time: SystemTime,
    settings: SigningSettings,
    request: SignableRequest<'_>,
) -> Result<String, S3Error> {
    let identity: Identity =
        Credentials::new(&keys.access_key, &keys.secret_key, None, None, "cairn").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("s3")
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| S3Error::Internal(format!("signing params: {e}")))?
        .into();
    let out = sign(request, &params).map_err(|_| S3Error::SignatureDoesNotMatch)?;
    Ok(out.signature().to_string())
}

/// The values of the headers named in `SignedHeaders`, which must include `host` (SigV4
/// requires it, and the signer cannot canonicalize a request without it).
fn signed_header_values<'h>(
    headers: &'h HeaderMap,
    names: &'h str,
) -> Result<Vec<(&'h str, &'h str)>, S3Error> {
    if !names.split(';').any(|n| n.eq_ignore_ascii_case("host")) {
        return Err(S3Error::AuthorizationHeaderMalformed(
            "host must be a signed header".into(),
        ));
    }
    let mut out = Vec::new();
    for name in names.split(';') {
        let mut found = false;
        for v in headers.get_all(name) {
            let v = v.to_str().map_err(|_| S3Error::SignatureDoesNotMatch)?;
            out.push((name, v));
            found = true;
        }
        if !found {
            return Err(S3Error::AuthorizationHeaderMalformed(format!(
                "signed header {name:?} is missing"
            )));
        }
    }
    Ok(out)
}

fn authenticate_header(
    keys: &Keys,
    region: Option<&str>,
    method: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    auth: &str,
) -> Result<Payload, S3Error> {
    let rest = auth.strip_prefix("AWS4-HMAC-SHA256 ").ok_or_else(|| {
        S3Error::AuthorizationHeaderMalformed("only AWS4-HMAC-SHA256 is supported".into())
    })?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for field in rest.split(',') {
        let field = field.trim();
        if let Some(v) = field.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = field.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = field.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature) else {
        return Err(S3Error::AuthorizationHeaderMalformed(
            "missing Credential, SignedHeaders or Signature".into(),
        ));
    };
    let cred = parse_credential(credential)?;
    check_key(keys, &cred)?;
    check_region(&cred, region, false)?;
    // x-amz-content-sha256 included: S3 requires header signatures to cover it.
    check_all_amz_signed(headers, signed, &[])?;
    let amz_date = header(headers, "x-amz-date")
        .ok_or_else(|| S3Error::AuthorizationHeaderMalformed("missing x-amz-date".into()))?;
    let time = parse_amz_date(amz_date)?;
    check_scope_date(&cred, amz_date)?;
    let now = SystemTime::now();
    let skew = now
        .duration_since(time)
        .or_else(|e| Ok::<_, S3Error>(e.duration()))?;
    if skew > MAX_SKEW {
        return Err(S3Error::RequestTimeTooSkewed);
    }
    let signed_headers = signed_header_values(headers, signed)?;
    let signs = |content_sha: &str| -> Result<bool, S3Error> {
        let request = SignableRequest::new(
            method,
            path_and_query,
            signed_headers.iter().copied(),
            SignableBody::Precomputed(content_sha.to_string()),
        )
        .map_err(|_| S3Error::SignatureDoesNotMatch)?;
        let expected = compute_signature(
            keys,
            cred.region,
            time,
            settings(SignatureLocation::Headers, None),
            request,
        )?;
        Ok(signatures_match(&expected, signature))
    };
    let content_sha = match header(headers, "x-amz-content-sha256") {
        Some(sha) if signs(sha)? => sha,
        Some(_) => return Err(S3Error::SignatureDoesNotMatch),
        // Without the header, a generic SigV4 signer (curl --aws-sigv4) signs the body's
        // hash, which for a request without a body is known now; S3 SDKs always send it.
        None if has_no_body(headers) && signs(EMPTY_SHA256)? => EMPTY_SHA256,
        None if signs("UNSIGNED-PAYLOAD")? => "UNSIGNED-PAYLOAD",
        None => return Err(S3Error::SignatureDoesNotMatch),
    };
    let scope = format!(
        "{}/{}/{}/aws4_request",
        cred.date, cred.region, cred.service
    );
    let signer = || ChunkSigner {
        key: v4::generate_signing_key(&keys.secret_key, time, cred.region, "s3")
            .as_ref()
            .to_vec(),
        amz_date: amz_date.to_string(),
        scope: scope.clone(),
        prev: signature.to_string(),
    };
    Ok(match content_sha {
        "UNSIGNED-PAYLOAD" => Payload::Unsigned,
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" => Payload::Streaming {
            signer: Some(signer()),
            trailer: false,
        },
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" => Payload::Streaming {
            signer: Some(signer()),
            trailer: true,
        },
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER" => Payload::Streaming {
            signer: None,
            trailer: true,
        },
        hex if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Payload::Sha256(hex.to_ascii_lowercase())
        }
        other => {
            return Err(S3Error::InvalidArgument(format!(
                "unsupported x-amz-content-sha256 {other:?}"
            )));
        }
    })
}

/// No Content-Length (or 0) and no Transfer-Encoding: the request has an empty body.
fn has_no_body(headers: &HeaderMap) -> bool {
    headers.get(http::header::TRANSFER_ENCODING).is_none()
        && header(headers, "content-length").is_none_or(|v| v.trim() == "0")
}

fn authenticate_presigned(
    keys: &Keys,
    region: Option<&str>,
    method: &str,
    path_and_query: &str,
    headers: &HeaderMap,
) -> Result<Payload, S3Error> {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let mut kept = Vec::new();
    let (mut credential, mut date, mut expires, mut signed, mut signature, mut algorithm) =
        (None, None, None, None, None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = || {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        };
        match k {
            "X-Amz-Algorithm" => algorithm = Some(decoded()),
            "X-Amz-Credential" => credential = Some(decoded()),
            "X-Amz-Date" => date = Some(decoded()),
            "X-Amz-Expires" => expires = Some(decoded()),
            "X-Amz-SignedHeaders" => signed = Some(decoded()),
            "X-Amz-Signature" => signature = Some(decoded()),
            _ => kept.push(pair),
        }
    }
    let (Some(credential), Some(date), Some(expires), Some(signed), Some(signature)) =
        (credential, date, expires, signed, signature)
    else {
        return Err(S3Error::AuthorizationHeaderMalformed(
            "incomplete presigned URL".into(),
        ));
    };
    if algorithm.as_deref() != Some("AWS4-HMAC-SHA256") {
        return Err(S3Error::AuthorizationHeaderMalformed(
            "only AWS4-HMAC-SHA256 is supported".into(),
        ));
    }
    let cred = parse_credential(&credential)?;
    check_key(keys, &cred)?;
    check_region(&cred, region, true)?;
    // A presigned request's body is never signed, so x-amz-content-sha256 means
    // nothing here (and is ignored); S3 tolerates it unsigned.
    check_all_amz_signed(headers, &signed, &["x-amz-content-sha256"])?;
    let time = parse_amz_date(&date)?;
    check_scope_date(&cred, &date)?;
    let expires: u64 = expires
        .parse()
        .ok()
        .filter(|e| (1..=MAX_PRESIGN_EXPIRES).contains(e))
        .ok_or_else(|| S3Error::AuthorizationHeaderMalformed("bad X-Amz-Expires".into()))?;
    let now = SystemTime::now();
    if now > time + Duration::from_secs(expires) {
        return Err(S3Error::ExpiredPresignedUrl);
    }
    if time > now + MAX_SKEW {
        return Err(S3Error::RequestTimeTooSkewed);
    }
    let uri = if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    let signed_headers = signed_header_values(headers, &signed)?;
    let request = SignableRequest::new(
        method,
        uri,
        signed_headers.into_iter(),
        SignableBody::UnsignedPayload,
    )
    .map_err(|_| S3Error::SignatureDoesNotMatch)?;
    let expected = compute_signature(
        keys,
        cred.region,
        time,
        settings(
            SignatureLocation::QueryParams,
            Some(Duration::from_secs(expires)),
        ),
        request,
    )?;
    if !signatures_match(&expected, &signature) {
        return Err(S3Error::SignatureDoesNotMatch);
    }
    Ok(Payload::Unsigned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    #[test]
    fn failures_are_slowed_past_the_free_ones_and_capped() {
        let f = AuthFailures::default();
        let t = Instant::now();
        let a = source_of(ip("192.168.1.7"));
        for i in 0..FREE_FAILURES as usize {
            let v = f.judge(a, t);
            assert_eq!(v.delay, Duration::ZERO, "failure {i}");
            assert_eq!(v.log.is_some(), i == 0, "failure {i}");
            assert_eq!(v.label, "192.168.1.7");
        }
        assert_eq!(f.judge(a, t).delay, DELAY_STEP);
        assert_eq!(f.judge(a, t).delay, DELAY_STEP * 2);
        for _ in 0..100 {
            f.judge(a, t);
        }
        assert_eq!(f.judge(a, t).delay, MAX_DELAY);
        // Another source is not slowed by this one.
        assert_eq!(
            f.judge(source_of(ip("192.168.1.8")), t).delay,
            Duration::ZERO
        );
        // A minute later: logged again, with the count held back; ten minutes later the
        // failures are forgotten.
        let v = f.judge(a, t + LOG_INTERVAL);
        assert_eq!(v.log, Some(152));
        assert!(v.delay > Duration::ZERO);
        assert_eq!(f.judge(a, t + 10 * LOG_INTERVAL).delay, Duration::ZERO);
    }

    #[test]
    fn sources_are_hosts_or_ipv6_prefixes_and_memory_is_bounded() {
        assert_eq!(source_of(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(
            source_of(ip("fd00:1:2:3:aaaa:bbbb:cccc:dddd")),
            source_of(ip("fd00:1:2:3::1"))
        );
        assert_eq!(
            source_text(source_of(ip("fd00:1:2:3::1"))),
            "fd00:1:2:3::/64"
        );
        assert_eq!(source_text(None), "unknown");
        let f = AuthFailures::default();
        let t = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 100) {
            let v = f.judge(Some(IpAddr::V4(i.into())), t);
            if i as usize >= MAX_SOURCE_LABELS {
                assert_eq!(v.label, "other");
            }
        }
        let table = f.table.lock().expect("lock");
        assert_eq!(table.sources.len(), MAX_SOURCES);
        assert_eq!(table.labelled.len(), MAX_SOURCE_LABELS);
        assert!(table.overflow.is_some());
    }

    #[test]
    fn key_labels_do_not_grow_with_invented_keys() {
        let keys = Keys::new("AKOURS", "secret");
        let auth = |k: &str| {
            let mut h = HeaderMap::new();
            let v = format!("AWS4-HMAC-SHA256 Credential={k}/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00");
            h.insert("authorization", v.parse().expect("value"));
            h
        };
        assert_eq!(keys.key_label("/b", &auth("AKOURS")), "AKOURS");
        assert_eq!(keys.key_label("/b", &auth("AKINVENTED")), "unknown");
        assert_eq!(keys.key_label("/b", &HeaderMap::new()), "anonymous");
        assert_eq!(
            keys.key_label(
                "/b/k?X-Amz-Credential=AKOURS%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=00",
                &HeaderMap::new()
            ),
            "AKOURS"
        );
    }
}
