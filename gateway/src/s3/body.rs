//! The request body as the object service sees it: decoded (aws-chunked framing removed),
//! length-checked, and hashed once on the way through — MD5 for the ETag, SHA-256 when the
//! signature covers the payload (whole, or each aws-chunked chunk, whose signature is
//! checked as the chunk ends), and any flexible checksum the client sent. The checks run
//! when the body ends, and a failed check ends the stream with an error, so a body that
//! fails is never committed.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use base64::Engine;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::HeaderMap;
use sha2::{Digest, Sha256};

use super::chunked::{ChunkedDecoder, Frame};
use super::digest::PayloadDigest;
use super::sigv4::{signatures_match, ChunkSigner, Payload};
use crate::error::S3Error;
use cairn_store::checksum::{Algorithm, Hasher};
use cairn_store::BodyError;

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

/// What the SHA-256 of the payload is checked against.
enum Signed {
    /// Nothing: the signature does not cover the payload.
    No,
    /// The hex digest the signature covers (`x-amz-content-sha256`).
    Whole(String),
    /// Each chunk's signature, chained from the request's; with `trailer`, the trailers'
    /// signature too (required, even with no trailer sent).
    Chunks { signer: ChunkSigner, trailer: bool },
}

struct Checks {
    digest: PayloadDigest,
    signed: Signed,
    content_md5: Option<[u8; 16]>,
    checksum: Option<(Algorithm, Hasher, Expected)>,
    len: u64,
    declared: u64,
}

/// A decoded, checked request body.
pub struct CheckedBody {
    inner: Pin<Box<dyn Stream<Item = Result<Frame, S3Error>> + Send>>,
    checks: Option<Checks>,
    trailers: Vec<(String, String)>,
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
        let raw = body.into_data_stream().map(|r| r.map_err(read_error));
        let inner: Pin<Box<dyn Stream<Item = Result<Frame, S3Error>> + Send>> = match payload {
            Payload::Streaming { signer, trailer } => {
                Box::pin(ChunkedDecoder::new(raw, signer.is_some(), *trailer))
            }
            _ => Box::pin(raw.map(|r| r.map(Frame::Data))),
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
        let signed = match payload {
            Payload::Sha256(hex) => Signed::Whole(hex.clone()),
            Payload::Streaming {
                signer: Some(s),
                trailer,
            } => Signed::Chunks {
                signer: s.clone(),
                trailer: *trailer,
            },
            _ => Signed::No,
        };
        Ok(Self {
            inner,
            checks: Some(Checks {
                digest: PayloadDigest::new(!matches!(signed, Signed::No)),
                signed,
                content_md5,
                checksum: requested_checksum(headers)?,
                len: 0,
                declared,
            }),
            trailers: Vec::new(),
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

    /// The trailing headers of an aws-chunked body (lower-case name, value), once it has
    /// ended.
    pub fn trailers(&self) -> &[(String, String)] {
        &self.trailers
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
        let (md5, sha256) = c.digest.finalize();
        if let (Signed::Whole(want), Some(got)) = (&c.signed, sha256) {
            if hex::encode(got) != *want {
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
                        let v = self
                            .trailers
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

/// What a failed read of the request body means for the client.
fn read_error(e: axum::Error) -> S3Error {
    if super::idle::is_stall(&e) {
        S3Error::RequestTimeout
    } else {
        S3Error::InvalidRequest(format!("reading body: {e}"))
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

impl Checks {
    /// Takes in the next bytes of the body.
    fn data(&mut self, b: &[u8]) -> Result<(), S3Error> {
        self.len += b.len() as u64;
        if self.len > self.declared {
            return Err(S3Error::InvalidRequest(
                "body is longer than its declared length".into(),
            ));
        }
        self.digest.update(b);
        if let Some((_, h, _)) = self.checksum.as_mut() {
            h.update(b);
        }
        Ok(())
    }

    /// Checks the signature of the aws-chunked chunk that just ended.
    fn chunk_end(&mut self, signature: Option<String>) -> Result<(), S3Error> {
        let (Signed::Chunks { signer, .. }, Some(sha)) =
            (&mut self.signed, self.digest.take_sha256())
        else {
            return Ok(());
        };
        let want = signer.chunk_signature(&hex::encode(sha));
        if !signature.is_some_and(|s| signatures_match(&want, &s)) {
            return Err(S3Error::SignatureDoesNotMatch);
        }
        signer.prev = want;
        Ok(())
    }

    /// Checks the trailer signature of a signed aws-chunked body declared with trailers
    /// (the decoder refuses trailers in one declared without).
    fn trailers(
        &self,
        headers: &[(String, String)],
        signature: Option<String>,
    ) -> Result<(), S3Error> {
        let Signed::Chunks {
            signer,
            trailer: true,
        } = &self.signed
        else {
            return Ok(());
        };
        let text: String = headers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
        let want = signer.trailer_signature(&hex::encode(Sha256::digest(text.as_bytes())));
        if signature.is_some_and(|s| signatures_match(&want, &s)) {
            Ok(())
        } else {
            Err(S3Error::SignatureDoesNotMatch)
        }
    }
}

impl CheckedBody {
    /// Handles one frame; `Some(bytes)` is data for the caller.
    fn frame(&mut self, frame: Frame) -> Result<Option<Bytes>, S3Error> {
        let Some(c) = self.checks.as_mut() else {
            return Ok(None);
        };
        match frame {
            Frame::Data(b) => {
                c.data(&b)?;
                return Ok(Some(b));
            }
            Frame::ChunkEnd { signature } => c.chunk_end(signature)?,
            Frame::Trailers { headers, signature } => {
                c.trailers(&headers, signature)?;
                self.trailers = headers;
            }
        }
        Ok(None)
    }
}

impl Stream for CheckedBody {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let frame = match this.inner.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(r)) => r.and_then(|f| this.frame(f)),
                Poll::Ready(None) => {
                    this.done = true;
                    this.finish().map(|d| {
                        this.digests = Some(d);
                        None
                    })
                }
            };
            match frame {
                Ok(Some(b)) => return Poll::Ready(Some(Ok(b))),
                Ok(None) => {}
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
            }
        }
    }
}
