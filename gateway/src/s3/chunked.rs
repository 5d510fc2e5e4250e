//! Decoder for `Content-Encoding: aws-chunked` bodies (SigV4 streaming uploads).
//!
//! ```text
//! <hex size>[;chunk-signature=<sig>]\r\n <data> \r\n ... 0[;chunk-signature=<sig>]\r\n
//! [<trailer-name>:<value>\r\n ... [x-amz-trailer-signature:<sig>\r\n]] \r\n
//! ```
//! The decoder only takes the framing apart: it yields the object's bytes, each chunk's end
//! with the signature its header carried, and the trailers. The signatures are checked
//! where the bytes are hashed ([`super::body`]), so every byte is hashed in one place.
//! Lines and sizes are bounded, so a malformed body is a 400, never a hang or a large
//! allocation.
//!
//! Chunk data leaves as slices of the received buffers, never copied: only a header or
//! trailer line split between two reads is gathered in a small buffer.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures::Stream;

use crate::error::S3Error;

/// Longest chunk-header or trailer line accepted.
const MAX_LINE: usize = 4096;
/// Most trailer bytes accepted.
const MAX_TRAILERS: usize = 16 * 1024;
/// Largest chunk size accepted (clients use 64 KiB to a few MiB).
const MAX_CHUNK: u64 = 64 * 1024 * 1024;

/// What an aws-chunked body holds, in order.
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// Object bytes.
    Data(Bytes),
    /// The end of a chunk (the final, empty one too), with the `chunk-signature` of its
    /// header in a signed body.
    ChunkEnd { signature: Option<String> },
    /// The trailing headers (lower-case name, value) and, in a signed body, the
    /// `x-amz-trailer-signature`; always the last frame.
    Trailers {
        headers: Vec<(String, String)>,
        signature: Option<String>,
    },
}

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
    /// After the trailer signature: only the final empty line may follow.
    TrailersEnd,
    Done,
}

/// Decodes an aws-chunked stream into [`Frame`]s.
pub struct ChunkedDecoder<S> {
    inner: S,
    /// Received bytes not parsed yet.
    input: Bytes,
    /// The start of a line whose end has not arrived yet.
    partial: BytesMut,
    state: State,
    /// Whether chunk headers must carry signatures (a trailer signature may follow).
    signed: bool,
    chunk_sig: Option<String>,
    expect_trailer: bool,
    trailers: Vec<(String, String)>,
    trailer_bytes: usize,
    trailer_sig: Option<String>,
    failed: bool,
}

fn bad(msg: &str) -> S3Error {
    S3Error::InvalidRequest(format!("malformed aws-chunked body: {msg}"))
}

impl<S> ChunkedDecoder<S> {
    /// Wraps the raw body of a `signed` (or unsigned) streaming upload.
    pub fn new(inner: S, signed: bool, expect_trailer: bool) -> Self {
        Self {
            inner,
            input: Bytes::new(),
            partial: BytesMut::new(),
            state: State::Header,
            signed,
            chunk_sig: None,
            expect_trailer,
            trailers: Vec::new(),
            trailer_bytes: 0,
            trailer_sig: None,
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

    fn chunk_end(&mut self) -> Frame {
        Frame::ChunkEnd {
            signature: self.chunk_sig.take(),
        }
    }

    fn trailers_end(&mut self) -> Frame {
        self.state = State::Done;
        Frame::Trailers {
            headers: std::mem::take(&mut self.trailers),
            signature: self.trailer_sig.take(),
        }
    }

    /// Advances the parser; `Ok(Some(frame))` is the next frame, `Ok(None)` needs more
    /// input (everything received so far is consumed) or the body is done.
    fn step(&mut self) -> Result<Option<Frame>, S3Error> {
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
                    if self.signed {
                        let sig = ext
                            .strip_prefix("chunk-signature=")
                            .ok_or(S3Error::SignatureDoesNotMatch)?;
                        self.chunk_sig = Some(sig.trim().to_string());
                    }
                    if size == 0 {
                        self.state = State::Trailers;
                        return Ok(Some(self.chunk_end()));
                    }
                    self.state = State::Data { remaining: size };
                }
                State::Data { remaining } => {
                    if self.input.is_empty() {
                        return Ok(None);
                    }
                    let n = (self.input.len() as u64).min(remaining) as usize;
                    let data = self.input.split_to(n);
                    self.state = if remaining == n as u64 {
                        State::DataEnd { seen: 0 }
                    } else {
                        State::Data {
                            remaining: remaining - n as u64,
                        }
                    };
                    return Ok(Some(Frame::Data(data)));
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
                        self.state = State::Header;
                        return Ok(Some(self.chunk_end()));
                    }
                }
                State::Trailers => {
                    let Some(line) = self.take_line()? else {
                        return Ok(None);
                    };
                    if line.is_empty() {
                        return Ok(Some(self.trailers_end()));
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
                        if !self.signed {
                            return Err(bad("unexpected trailer signature"));
                        }
                        self.trailer_sig = Some(value);
                        self.state = State::TrailersEnd;
                    } else {
                        self.trailer_bytes += name.len() + value.len() + 2;
                        if self.trailer_bytes > MAX_TRAILERS {
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
                    return Ok(Some(self.trailers_end()));
                }
                State::Done => return Ok(None),
            }
        }
    }
}

impl<S> Stream for ChunkedDecoder<S>
where
    S: Stream<Item = Result<Bytes, S3Error>> + Unpin,
{
    type Item = Result<Frame, S3Error>;

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
                    return Poll::Ready(Some(Err(e)));
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

    fn frames(input: &[u8], split: usize, signed: bool) -> Result<Vec<Frame>, S3Error> {
        let pieces: Vec<Result<Bytes, S3Error>> = input
            .chunks(split.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let dec = ChunkedDecoder::new(futures::stream::iter(pieces), signed, true);
        futures::executor::block_on(dec.collect::<Vec<_>>())
            .into_iter()
            .collect()
    }

    type Decoded = (Vec<u8>, Vec<(String, String)>);

    fn decode(input: &[u8], split: usize) -> Result<Decoded, S3Error> {
        let (mut data, mut trailers) = (Vec::new(), Vec::new());
        for f in frames(input, split, false)? {
            match f {
                Frame::Data(b) => data.extend_from_slice(&b),
                Frame::ChunkEnd { signature } => assert_eq!(signature, None),
                Frame::Trailers { headers, signature } => {
                    assert_eq!(signature, None);
                    trailers = headers;
                }
            }
        }
        Ok((data, trailers))
    }

    #[test]
    fn signed_body_yields_each_chunk_end_with_its_signature() {
        let body = b"3;chunk-signature=aa\r\nabc\r\n0;chunk-signature=bb\r\n\
            x-amz-checksum-crc32:xyz=\r\nx-amz-trailer-signature:cc\r\n\r\n";
        let end = |s: &str| Frame::ChunkEnd {
            signature: Some(s.to_string()),
        };
        for split in 1..body.len() {
            let mut got = frames(body, split, true).expect("decode");
            // data may arrive in several pieces; join them for the comparison
            let data: Vec<u8> = got
                .iter()
                .filter_map(|f| match f {
                    Frame::Data(b) => Some(b.to_vec()),
                    _ => None,
                })
                .flatten()
                .collect();
            got.retain(|f| !matches!(f, Frame::Data(_)));
            assert_eq!(data, b"abc");
            assert_eq!(
                got,
                vec![
                    end("aa"),
                    end("bb"),
                    Frame::Trailers {
                        headers: vec![("x-amz-checksum-crc32".into(), "xyz=".into())],
                        signature: Some("cc".into()),
                    },
                ],
                "split {split}"
            );
        }
        // a signed body must sign every chunk; an unsigned one cannot sign its trailers
        assert!(frames(b"3\r\nabc\r\n0\r\n\r\n", 4, true).is_err());
        assert!(frames(b"0\r\nx-amz-trailer-signature:cc\r\n\r\n", 4, false).is_err());
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
