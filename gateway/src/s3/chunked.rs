//! Decoder for `Content-Encoding: aws-chunked` bodies (SigV4 streaming uploads).
//!
//! ```text
//! <hex size>[;chunk-signature=<sig>]\r\n <data> \r\n ... 0[;chunk-signature=<sig>]\r\n
//! [<trailer-name>:<value>\r\n ... [x-amz-trailer-signature:<sig>\r\n]] \r\n
//! ```
//! Chunk signatures are chained from the request's seed signature. A chunk's bytes are
//! released as they arrive and its signature is checked when the chunk ends; a mismatch
//! fails the body, and the object service never commits a body that failed. Lines and sizes are bounded, so a
//! malformed body is a 400, never a hang or a large allocation.
//!
//! Chunk data leaves as slices of the received buffers, never copied: only a header or
//! trailer line split between two reads is gathered in a small buffer.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures::Stream;
use sha2::{Digest, Sha256};

use super::sigv4::{signatures_match, ChunkSigner};
use crate::error::S3Error;

/// Longest chunk-header or trailer line accepted.
const MAX_LINE: usize = 4096;
/// Most trailer bytes accepted.
const MAX_TRAILERS: usize = 16 * 1024;
/// Largest chunk size accepted (clients use 64 KiB to a few MiB).
const MAX_CHUNK: u64 = 64 * 1024 * 1024;

enum State {
    Header,
    Data {
        remaining: u64,
    },
    /// The CRLF after a chunk's data; how many of its bytes were seen.
    DataEnd {
        seen: u8,
    },
    Trailers,
    /// After a verified trailer signature: only the final empty line may follow.
    TrailersEnd,
    Done,
}

/// Decodes an aws-chunked stream into the object's bytes.
pub struct ChunkedDecoder<S> {
    inner: S,
    /// Received bytes not parsed yet.
    input: Bytes,
    /// The start of a line whose end has not arrived yet.
    partial: BytesMut,
    state: State,
    signer: Option<ChunkSigner>,
    chunk_sig: String,
    chunk_hash: Option<Sha256>,
    expect_trailer: bool,
    trailer_text: Vec<u8>,
    /// Trailing headers received (lower-case name, value).
    pub trailers: Vec<(String, String)>,
    failed: bool,
}

fn bad(msg: &str) -> S3Error {
    S3Error::InvalidRequest(format!("malformed aws-chunked body: {msg}"))
}

impl<S> ChunkedDecoder<S> {
    /// Wraps the raw body.
    pub fn new(inner: S, signer: Option<ChunkSigner>, expect_trailer: bool) -> Self {
        Self {
            inner,
            input: Bytes::new(),
            partial: BytesMut::new(),
            state: State::Header,
            signer,
            chunk_sig: String::new(),
            chunk_hash: None,
            expect_trailer,
            trailer_text: Vec::new(),
            trailers: Vec::new(),
            failed: false,
        }
    }

    /// Takes one `\n`-terminated line (without `\r\n`) once it is complete; until then
    /// keeps what arrived of it.
    fn take_line(&mut self) -> Result<Option<String>, S3Error> {
        let Some(i) = self.input.iter().position(|&b| b == b'\n') else {
            if self.partial.len() + self.input.len() > MAX_LINE {
                return Err(bad("line too long"));
            }
            self.partial.extend_from_slice(&self.input);
            self.input.clear();
            return Ok(None);
        };
        if self.partial.len() + i > MAX_LINE {
            return Err(bad("line too long"));
        }
        let end = self.input.split_to(i + 1);
        let line = if self.partial.is_empty() {
            &end[..i]
        } else {
            self.partial.extend_from_slice(&end[..i]);
            &self.partial[..]
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = std::str::from_utf8(line)
            .map(str::to_string)
            .map_err(|_| bad("line is not UTF-8"));
        self.partial.clear();
        line.map(Some)
    }

    fn check_chunk_signature(&mut self) -> Result<(), S3Error> {
        if let Some(signer) = self.signer.as_mut() {
            let hash = hex::encode(self.chunk_hash.take().unwrap_or_default().finalize());
            let want = signer.chunk_signature(&hash);
            if !signatures_match(&want, &self.chunk_sig) {
                return Err(S3Error::SignatureDoesNotMatch);
            }
            signer.prev = want;
        }
        Ok(())
    }

    /// Accounts for `data`, the next bytes of a chunk that had `remaining` bytes to come.
    fn consumed(&mut self, data: &[u8], remaining: u64) {
        if let Some(h) = self.chunk_hash.as_mut() {
            h.update(data);
        }
        let n = data.len() as u64;
        self.state = if remaining == n {
            State::DataEnd { seen: 0 }
        } else {
            State::Data {
                remaining: remaining - n,
            }
        };
    }

    /// Advances the parser; `Ok(Some(bytes))` is object data, `Ok(None)` needs more input
    /// (everything received so far is consumed) or the body is done.
    fn step(&mut self) -> Result<Option<Bytes>, S3Error> {
        loop {
            match self.state {
                State::Header => {
                    let Some(line) = self.take_line()? else {
                        return Ok(None);
                    };
                    let (size, ext) = line.split_once(';').unwrap_or((line.as_str(), ""));
                    let size =
                        u64::from_str_radix(size.trim(), 16).map_err(|_| bad("bad chunk size"))?;
                    if size > MAX_CHUNK {
                        return Err(bad("chunk too large"));
                    }
                    if self.signer.is_some() {
                        let sig = ext
                            .strip_prefix("chunk-signature=")
                            .ok_or(S3Error::SignatureDoesNotMatch)?;
                        self.chunk_sig = sig.trim().to_string();
                        self.chunk_hash = Some(Sha256::new());
                    }
                    if size == 0 {
                        self.check_chunk_signature()?;
                        self.state = State::Trailers;
                    } else {
                        self.state = State::Data { remaining: size };
                    }
                }
                State::Data { remaining } => {
                    if self.input.is_empty() {
                        return Ok(None);
                    }
                    let n = (self.input.len() as u64).min(remaining) as usize;
                    let data = self.input.split_to(n);
                    self.consumed(&data, remaining);
                    return Ok(Some(data));
                }
                State::DataEnd { seen } => {
                    let Some(&b) = self.input.first() else {
                        return Ok(None);
                    };
                    if b != b"\r\n"[seen as usize] {
                        return Err(bad("chunk not followed by CRLF"));
                    }
                    self.input.advance(1);
                    if seen == 0 {
                        self.state = State::DataEnd { seen: 1 };
                    } else {
                        self.check_chunk_signature()?;
                        self.state = State::Header;
                    }
                }
                State::Trailers => {
                    let Some(line) = self.take_line()? else {
                        return Ok(None);
                    };
                    if line.is_empty() {
                        self.state = State::Done;
                        continue;
                    }
                    if !self.expect_trailer {
                        return Err(bad("trailer in a body declared without trailers"));
                    }
                    let (name, value) = line
                        .split_once(':')
                        .ok_or_else(|| bad("bad trailer line"))?;
                    let (name, value) =
                        (name.trim().to_ascii_lowercase(), value.trim().to_string());
                    if name == "x-amz-trailer-signature" {
                        let signer = self
                            .signer
                            .as_mut()
                            .ok_or_else(|| bad("unexpected trailer signature"))?;
                        let want = signer
                            .trailer_signature(&hex::encode(Sha256::digest(&self.trailer_text)));
                        if !signatures_match(&want, &value) {
                            return Err(S3Error::SignatureDoesNotMatch);
                        }
                        self.signer = None; // verified
                        self.state = State::TrailersEnd;
                    } else {
                        self.trailer_text
                            .extend_from_slice(format!("{name}:{value}\n").as_bytes());
                        if self.trailer_text.len() > MAX_TRAILERS {
                            return Err(bad("trailers too large"));
                        }
                        self.trailers.push((name, value));
                    }
                }
                State::TrailersEnd => {
                    let Some(line) = self.take_line()? else {
                        return Ok(None);
                    };
                    if !line.is_empty() {
                        return Err(bad("data after the trailer signature"));
                    }
                    self.state = State::Done;
                }
                State::Done => {
                    if self.expect_trailer && self.signer.is_some() {
                        return Err(S3Error::SignatureDoesNotMatch); // signed trailer without signature
                    }
                    return Ok(None);
                }
            }
        }
    }
}

impl<S, E> Stream for ChunkedDecoder<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, S3Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        loop {
            match this.step() {
                Ok(Some(b)) => return Poll::Ready(Some(Ok(b))),
                Ok(None) if matches!(this.state, State::Done) => return Poll::Ready(None),
                Ok(None) => {}
                Err(e) => {
                    this.failed = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(b))) => {
                    // `step` consumed all earlier input before asking for more.
                    this.input = b;
                }
                Poll::Ready(Some(Err(e))) => {
                    this.failed = true;
                    return Poll::Ready(Some(Err(S3Error::InvalidRequest(format!(
                        "reading body: {e}"
                    )))));
                }
                Poll::Ready(None) => {
                    this.failed = true;
                    return Poll::Ready(Some(Err(S3Error::IncompleteBody)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    type Decoded = (Vec<u8>, Vec<(String, String)>);

    fn decode(input: &[u8], split: usize) -> Result<Decoded, S3Error> {
        let pieces: Vec<Result<Bytes, std::io::Error>> = input
            .chunks(split.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let mut dec = ChunkedDecoder::new(futures::stream::iter(pieces), None, true);
        let mut out = Vec::new();
        futures::executor::block_on(async {
            while let Some(b) = dec.next().await {
                out.extend_from_slice(&b?);
            }
            Ok::<_, S3Error>(())
        })?;
        Ok((out, dec.trailers))
    }

    #[test]
    fn unsigned_trailer_body_decodes_at_any_split() {
        let body = b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:abc=\r\n\r\n";
        for split in 1..body.len() {
            let (data, trailers) = decode(body, split).expect("decode");
            assert_eq!(data, b"hello world");
            assert_eq!(
                trailers,
                vec![("x-amz-checksum-crc32".to_string(), "abc=".to_string())]
            );
        }
    }

    #[test]
    fn malformed_bodies_fail_cleanly() {
        for body in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\r\nhel",
            b"ffffffffffffffff\r\n",
        ] {
            assert!(decode(body, 3).is_err(), "{body:?}");
        }
        let long = vec![b'1'; MAX_LINE + 10];
        assert!(decode(&long, 100).is_err());
    }
}
