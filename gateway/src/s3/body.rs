//! The request body as the object service sees it: decoded (aws-chunked framing removed),
//! length-checked, and hashed once on the way through — MD5 for the ETag, SHA-256 when the
//! signature covers the payload, and any flexible checksum the client sent. The checks run
//! when the body ends, and a failed check ends the stream with an error, so a body that
//! fails is never committed.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use super::md5::Md5;
use axum::body::Body;
use base64::Engine;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::HeaderMap;
use sha2::{Digest, Sha256};

use super::checksum::{Algorithm, Hasher};
use super::chunked::ChunkedDecoder;
use super::sigv4::Payload;
use crate::error::S3Error;
use crate::store::BodyError;

/// Largest single PUT or part.
pub const MAX_PUT_SIZE: u64 = 5 * 1024 * 1024 * 1024;

/// What the body turned out to be, available after it was read to the end.
#[derive(Clone, Debug, Default)]
pub struct Digests {
    /// MD5 of the decoded bytes.
    pub md5: [u8; 16],
    /// The flexible checksum, if one was asked for: algorithm and base64 value.
    pub checksum: Option<(Algorithm, String)>,
}

enum Expected {
    None,
    Header(String),
    Trailer,
}

struct Checks {
    md5: Md5,
    sha256: Option<(Sha256, String)>,
    content_md5: Option<[u8; 16]>,
    checksum: Option<(Algorithm, Hasher, Expected)>,
    len: u64,
    declared: u64,
}

/// A decoded, checked request body.
pub struct CheckedBody {
    inner: Pin<Box<dyn Stream<Item = Result<Bytes, S3Error>> + Send>>,
    checks: Option<Checks>,
    trailers: Arc<Mutex<Vec<(String, String)>>>,
    digests: Option<Digests>,
    done: bool,
}

use super::header_str as header;

/// The object's length as the request declares it (decoded length for aws-chunked).
pub fn declared_length(headers: &HeaderMap, payload: &Payload) -> Result<u64, S3Error> {
    let name = match payload {
        Payload::Streaming { .. } => "x-amz-decoded-content-length",
        _ => "content-length",
    };
    match header(headers, name) {
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| S3Error::InvalidArgument(format!("bad {name}"))),
        None => Err(S3Error::MissingContentLength),
    }
}

impl CheckedBody {
    /// Wraps a request body of `declared` decoded bytes.
    pub fn new(
        body: Body,
        headers: &HeaderMap,
        payload: &Payload,
        declared: u64,
    ) -> Result<Self, S3Error> {
        let raw = body.into_data_stream();
        let trailers = Arc::new(Mutex::new(Vec::new()));
        let inner: Pin<Box<dyn Stream<Item = Result<Bytes, S3Error>> + Send>> = match payload {
            Payload::Streaming { signer, trailer } => {
                let dec = ChunkedDecoder::new(raw, signer.clone(), *trailer);
                Box::pin(TrailerTap {
                    dec,
                    out: trailers.clone(),
                })
            }
            _ => Box::pin(
                raw.map(|r| r.map_err(|e| S3Error::InvalidRequest(format!("reading body: {e}")))),
            ),
        };
        let content_md5 = match header(headers, "content-md5") {
            Some(v) => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(v.trim())
                    .map_err(|_| S3Error::InvalidDigest)?;
                Some(<[u8; 16]>::try_from(raw.as_slice()).map_err(|_| S3Error::InvalidDigest)?)
            }
            None => None,
        };
        let sha256 = match payload {
            Payload::Sha256(hex) => Some((Sha256::new(), hex.clone())),
            _ => None,
        };
        Ok(Self {
            inner,
            checks: Some(Checks {
                md5: Md5::new(),
                sha256,
                content_md5,
                checksum: requested_checksum(headers)?,
                len: 0,
                declared,
            }),
            trailers,
            digests: None,
            done: false,
        })
    }

    /// The body of a PutObject or UploadPart: at most [`MAX_PUT_SIZE`] declared bytes.
    /// Returns the declared length with the body.
    pub fn for_upload(
        body: Body,
        headers: &HeaderMap,
        payload: &Payload,
    ) -> Result<(u64, Self), S3Error> {
        let len = declared_length(headers, payload)?;
        if len > MAX_PUT_SIZE {
            return Err(S3Error::EntityTooLarge);
        }
        Ok((len, Self::new(body, headers, payload, len)?))
    }

    /// Leaves `x-amz-checksum-*` headers unchecked against this body: on
    /// CompleteMultipartUpload they carry the whole object's checksum, not the XML's.
    pub fn without_checksum_headers(mut self) -> Self {
        if let Some(c) = self.checks.as_mut() {
            c.checksum = None;
        }
        self
    }

    /// Also computes `alg` when the request did not ask for a checksum itself (parts of an
    /// upload created with a checksum algorithm); a different algorithm is refused.
    pub fn ensure_checksum(&mut self, alg: Algorithm) -> Result<(), S3Error> {
        if let Some(c) = self.checks.as_mut() {
            match &c.checksum {
                None => c.checksum = Some((alg, Hasher::new(alg), Expected::None)),
                Some((a, _, _)) if *a != alg => {
                    return Err(S3Error::InvalidRequest(format!(
                        "checksum {} differs from the upload's algorithm {}",
                        a.name(),
                        alg.name()
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Reads a small body (an XML document) whole, with its checks, up to `limit` bytes.
    pub async fn collect(mut self, limit: usize) -> Result<Bytes, S3Error> {
        let mut out = bytes::BytesMut::new();
        while let Some(chunk) = self.next().await {
            let chunk = chunk.map_err(|e| match e.downcast::<S3Error>() {
                Ok(s3) => *s3,
                Err(other) => S3Error::InvalidRequest(other.to_string()),
            })?;
            if out.len() + chunk.len() > limit {
                return Err(S3Error::InvalidRequest(format!(
                    "request body larger than {limit} bytes"
                )));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out.freeze())
    }

    /// Digests of the whole body; `None` until the stream has ended successfully.
    pub fn digests(&self) -> Option<&Digests> {
        self.digests.as_ref()
    }

    fn finish(&mut self) -> Result<Digests, S3Error> {
        let c = self
            .checks
            .take()
            .ok_or_else(|| S3Error::Internal("body finished twice".into()))?;
        if c.len != c.declared {
            return Err(S3Error::IncompleteBody);
        }
        let md5 = c.md5.finalize();
        if let Some((h, want)) = c.sha256 {
            if hex::encode(h.finalize()) != want {
                return Err(S3Error::ContentSha256Mismatch);
            }
        }
        if let Some(want) = c.content_md5 {
            if want != md5 {
                return Err(S3Error::BadDigest);
            }
        }
        let checksum = match c.checksum {
            None => None,
            Some((alg, hasher, expected)) => {
                let got = hasher.finish();
                let want = match expected {
                    Expected::None => None,
                    Expected::Header(v) => Some(v),
                    Expected::Trailer => {
                        let t = self.trailers.lock().unwrap_or_else(|p| p.into_inner());
                        let v = t
                            .iter()
                            .find(|(n, _)| n == alg.header())
                            .map(|(_, v)| v.clone());
                        Some(v.ok_or_else(|| {
                            S3Error::InvalidRequest(format!(
                                "trailer {} was promised but not sent",
                                alg.header()
                            ))
                        })?)
                    }
                };
                if let Some(want) = want {
                    if want.trim() != got {
                        return Err(S3Error::ChecksumMismatch(alg.header()));
                    }
                }
                Some((alg, got))
            }
        };
        Ok(Digests { md5, checksum })
    }
}

/// Which flexible checksum the request asks for, and where its expected value is.
fn requested_checksum(
    headers: &HeaderMap,
) -> Result<Option<(Algorithm, Hasher, Expected)>, S3Error> {
    for alg in Algorithm::ALL {
        if let Some(v) = header(headers, alg.header()) {
            return Ok(Some((
                alg,
                Hasher::new(alg),
                Expected::Header(v.to_string()),
            )));
        }
    }
    if let Some(t) = header(headers, "x-amz-trailer") {
        let alg = Algorithm::from_header(t.trim())
            .ok_or_else(|| S3Error::InvalidArgument(format!("unsupported trailer {t:?}")))?;
        return Ok(Some((alg, Hasher::new(alg), Expected::Trailer)));
    }
    if let Some(name) = header(headers, "x-amz-sdk-checksum-algorithm") {
        let alg = Algorithm::parse(name).ok_or_else(|| {
            S3Error::InvalidArgument(format!("unsupported checksum algorithm {name:?}"))
        })?;
        return Ok(Some((alg, Hasher::new(alg), Expected::None)));
    }
    Ok(None)
}

impl Stream for CheckedBody {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(b))) => {
                if let Some(c) = this.checks.as_mut() {
                    c.len += b.len() as u64;
                    if c.len > c.declared {
                        this.done = true;
                        return Poll::Ready(Some(Err(Box::new(S3Error::InvalidRequest(
                            "body is longer than its declared length".into(),
                        )))));
                    }
                    c.md5.update(&b);
                    if let Some((h, _)) = c.sha256.as_mut() {
                        h.update(&b);
                    }
                    if let Some((_, h, _)) = c.checksum.as_mut() {
                        h.update(&b);
                    }
                }
                Poll::Ready(Some(Ok(b)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => {
                this.done = true;
                match this.finish() {
                    Ok(d) => {
                        this.digests = Some(d);
                        Poll::Ready(None)
                    }
                    Err(e) => Poll::Ready(Some(Err(Box::new(e)))),
                }
            }
        }
    }
}

/// Copies the decoder's trailers out when it finishes.
struct TrailerTap<S> {
    dec: ChunkedDecoder<S>,
    out: Arc<Mutex<Vec<(String, String)>>>,
}

impl<S, E> Stream for TrailerTap<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, S3Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.dec).poll_next(cx);
        if let Poll::Ready(None) = r {
            let mut out = this.out.lock().unwrap_or_else(|p| p.into_inner());
            *out = std::mem::take(&mut this.dec.trailers);
        }
        r
    }
}
