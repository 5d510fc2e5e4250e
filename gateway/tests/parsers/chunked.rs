//! aws-chunked bodies as the gateway reads them (the framing decoder and the checked
//! body that verifies chunk and trailer signatures): round trips of every variant under
//! any chunking and any network split, tampering with signed framing, truncation, and
//! arbitrary bytes.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use axum::body::Body;
use bytes::Bytes;
use cairn_gateway::error::S3Error;
use cairn_gateway::s3::body::CheckedBody;
use cairn_gateway::s3::chunked::{ChunkedDecoder, Frame};
use cairn_gateway::s3::sigv4::{authenticate, ChunkSigner, Payload};
use futures::{Stream, StreamExt};
use http::HeaderMap;
use proptest::collection::vec;
use proptest::prelude::*;

use crate::client::{keys, signed_headers, ChunkSigning};
use crate::config;

/// Longest line the decoder accepts (its documented bound).
const MAX_LINE: usize = 4096;

/// The three `x-amz-content-sha256` streaming variants.
#[derive(Clone, Copy, Debug)]
enum Variant {
    UnsignedTrailer,
    Signed,
    SignedTrailer,
}

impl Variant {
    fn content_sha(self) -> &'static str {
        match self {
            Variant::UnsignedTrailer => "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            Variant::Signed => "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            Variant::SignedTrailer => "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
        }
    }
    fn trailer(self) -> bool {
        !matches!(self, Variant::Signed)
    }
    fn signed(self) -> bool {
        !matches!(self, Variant::UnsignedTrailer)
    }
}

fn variant() -> impl Strategy<Value = Variant> {
    prop_oneof![
        Just(Variant::UnsignedTrailer),
        Just(Variant::Signed),
        Just(Variant::SignedTrailer)
    ]
}

fn signed_variant() -> impl Strategy<Value = Variant> {
    prop_oneof![Just(Variant::Signed), Just(Variant::SignedTrailer)]
}

/// Distinct trailer names in sorted order (SDKs sign trailers sorted by name), with
/// base64-like values.
fn trailers() -> impl Strategy<Value = Vec<(String, String)>> {
    let names = [
        "x-amz-checksum-crc32",
        "x-amz-checksum-crc32c",
        "x-amz-checksum-crc64nvme",
        "x-amz-checksum-sha1",
        "x-amz-checksum-sha256",
    ];
    (
        proptest::sample::subsequence(names.to_vec(), 0..=3),
        vec("[A-Za-z0-9+/]{0,43}=?", 3),
    )
        .prop_map(|(names, values)| {
            names
                .into_iter()
                .zip(values)
                .map(|(n, v)| (n.to_string(), v))
                .collect()
        })
}

/// The server's view of a fresh streaming request: the payload the gateway's
/// authenticator derived from the signed headers, and the client's chunk signer.
fn request(v: Variant) -> (Option<ChunkSigner>, bool, ChunkSigning) {
    let time = SystemTime::now();
    let extra = [("x-amz-decoded-content-length".to_string(), "0".to_string())];
    let (headers, seed) = signed_headers("PUT", "/bucket/key", &extra, v.content_sha(), time);
    match authenticate(&keys(), "PUT", "/bucket/key", &headers) {
        Ok(Payload::Streaming { signer, trailer }) => {
            assert_eq!(signer.is_some(), v.signed());
            assert_eq!(trailer, v.trailer());
            (signer, trailer, ChunkSigning::new(seed, time))
        }
        other => panic!("{v:?}: streaming request not accepted: {other:?}"),
    }
}

/// Frames `data` as aws-chunked with chunk sizes cycling through `sizes`.
fn encode(
    v: Variant,
    data: &[u8],
    sizes: &[usize],
    trailers: &[(String, String)],
    client: &mut ChunkSigning,
) -> Vec<u8> {
    let mut out = Vec::new();
    let header = |out: &mut Vec<u8>, chunk: &[u8], client: &mut ChunkSigning| {
        out.extend_from_slice(format!("{:x}", chunk.len()).as_bytes());
        if v.signed() {
            out.extend_from_slice(format!(";chunk-signature={}", client.chunk(chunk)).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    };
    let mut rest = data;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, r) = rest.split_at(size.clamp(1, rest.len()));
        rest = r;
        header(&mut out, chunk, client);
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    header(&mut out, b"", client);
    if v.trailer() {
        for (name, value) in trailers {
            out.extend_from_slice(format!("{name}:{value}\r\n").as_bytes());
        }
        if v.signed() {
            let sig = client.trailer(trailers);
            out.extend_from_slice(format!("x-amz-trailer-signature:{sig}\r\n").as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

type Outcome = Result<(Vec<u8>, Vec<(String, String)>), &'static str>;

/// `input` as a request body delivered in pieces whose sizes cycle through `splits`.
fn body(input: &[u8], splits: &[usize]) -> Body {
    let mut pieces = Vec::new();
    let mut rest = input;
    for &size in splits.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, r) = rest.split_at(size.clamp(1, rest.len()));
        rest = r;
        pieces.push(Ok::<_, std::io::Error>(Bytes::copy_from_slice(piece)));
    }
    Body::from_stream(futures::stream::iter(pieces))
}

/// The data length the framing of `input` carries (0 where the framing is broken): the
/// declared length a client would send, so that only framing and signatures decide.
fn framed_length(input: &[u8]) -> u64 {
    let raw = body(input, &[usize::MAX])
        .into_data_stream()
        .map(|r| r.map_err(|e| S3Error::InvalidRequest(e.to_string())));
    let dec = ChunkedDecoder::new(raw, false, true);
    let frames = futures::executor::block_on(dec.collect::<Vec<_>>());
    frames
        .iter()
        .map(|f| match f {
            Ok(Frame::Data(b)) => b.len() as u64,
            _ => 0,
        })
        .sum()
}

/// Decodes `input` as the gateway does (framing, chunk and trailer signatures), delivered
/// in pieces whose sizes cycle through `splits`. Fails the test on a hang (more polls
/// than the input can justify) or on a stream that goes on after an error; returns the
/// data and trailers, or the S3 error code.
fn decode(input: &[u8], splits: &[usize], signer: Option<ChunkSigner>, trailer: bool) -> Outcome {
    let payload = Payload::Streaming { signer, trailer };
    let declared = framed_length(input);
    let mut dec = CheckedBody::new(body(input, splits), &HeaderMap::new(), &payload, declared)
        .expect("streaming body accepted");
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut out = Vec::new();
    // Every item carries at least one input byte, so more polls than bytes is a hang.
    for _ in 0..input.len() + 3 {
        match Pin::new(&mut dec).poll_next(&mut cx) {
            Poll::Ready(Some(Ok(b))) => {
                assert!(!b.is_empty(), "empty data item");
                out.extend_from_slice(&b);
            }
            Poll::Ready(Some(Err(e))) => {
                let after = Pin::new(&mut dec).poll_next(&mut cx);
                assert!(
                    matches!(after, Poll::Ready(None)),
                    "stream went on after an error"
                );
                let e = e.downcast::<S3Error>().expect("an S3 error");
                return Err(e.code_and_status().0);
            }
            Poll::Ready(None) => {
                assert!(out.len() <= input.len());
                return Ok((out, dec.trailers().to_vec()));
            }
            Poll::Pending => panic!("decoder pending although its input is ready"),
        }
    }
    panic!("decoder did not finish: hang");
}

/// Trailers as the decoder reports them.
fn expected_trailers(v: Variant, trailers: &[(String, String)]) -> Vec<(String, String)> {
    if v.trailer() {
        trailers.to_vec()
    } else {
        Vec::new()
    }
}

#[derive(Clone, Debug)]
enum Mutation {
    Replace(usize, u8),
    Insert(usize, u8),
    Delete(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Replace(p, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Insert(p, b)),
        any::<usize>().prop_map(Mutation::Delete),
    ]
}

fn apply(input: &[u8], m: &Mutation) -> Option<Vec<u8>> {
    let mut out = input.to_vec();
    match *m {
        Mutation::Replace(p, b) => {
            let p = p % out.len();
            if out[p] == b {
                return None;
            }
            out[p] = b;
        }
        Mutation::Insert(p, b) => out.insert(p % (out.len() + 1), b),
        Mutation::Delete(p) => {
            out.remove(p % out.len());
        }
    }
    Some(out)
}

/// Input made of framing tokens, so arbitrary input reaches deep parser states.
fn framing_soup() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"0".to_vec()),
        Just(b"5".to_vec()),
        Just(b"ffffffff".to_vec()),
        Just(b"4000000".to_vec()),
        Just(b"4000001".to_vec()),
        Just(b"10000000000000000".to_vec()),
        Just(b"+5".to_vec()),
        Just(b";".to_vec()),
        Just(b";chunk-signature=".to_vec()),
        Just(b":".to_vec()),
        Just(b"x-amz-checksum-crc32:".to_vec()),
        Just(b"x-amz-trailer-signature:".to_vec()),
        Just(vec![b'a'; 64]),
        Just(vec![b'x'; MAX_LINE]),
        Just(vec![0xff, 0xfe]),
        vec(any::<u8>(), 0..8),
    ];
    vec(token, 0..40).prop_map(|t| t.concat())
}

proptest! {
    #![proptest_config(config(256))]

    /// Any data, any chunking, any trailers, any network split: the decoder returns
    /// exactly the data and trailers that were framed.
    #[test]
    fn every_variant_round_trips(
        v in variant(),
        data in vec(any::<u8>(), 0..3000),
        sizes in vec(1usize..800, 1..6),
        splits in vec(1usize..400, 1..6),
        trailers in trailers(),
    ) {
        let (signer, trailer, mut client) = request(v);
        let framed = encode(v, &data, &sizes, &trailers, &mut client);
        let got = decode(&framed, &splits, signer, trailer);
        prop_assert_eq!(got, Ok((data, expected_trailers(v, &trailers))));
    }

    /// One changed, inserted or removed byte anywhere in a signed stream never yields
    /// different data or trailers: it is refused (or, where the change is only
    /// insignificant whitespace, decodes to the same thing).
    #[test]
    fn tampered_signed_streams_are_refused(
        v in signed_variant(),
        data in vec(any::<u8>(), 1..1500),
        sizes in vec(1usize..500, 1..4),
        splits in vec(1usize..400, 1..4),
        trailers in trailers(),
        m in mutation(),
    ) {
        let (signer, trailer, mut client) = request(v);
        let framed = encode(v, &data, &sizes, &trailers, &mut client);
        let Some(bad) = apply(&framed, &m) else { return Ok(()) };
        match decode(&bad, &splits, signer, trailer) {
            Err(_) => {}
            Ok(got) => prop_assert_eq!(got, (data, expected_trailers(v, &trailers))),
        }
    }

    /// A trailer spliced into a signed stream where none was signed is refused: after
    /// the trailer signature, or after the last chunk of a stream without trailers.
    #[test]
    fn unsigned_trailers_in_signed_streams_are_refused(
        v in signed_variant(),
        data in vec(any::<u8>(), 0..600),
        sizes in vec(1usize..300, 1..4),
        splits in vec(1usize..400, 1..4),
        trailers in trailers(),
        value in "[A-Za-z0-9+/]{8}==",
    ) {
        let (signer, trailer, mut client) = request(v);
        let framed = encode(v, &data, &sizes, &trailers, &mut client);
        let mut bad = framed[..framed.len() - 2].to_vec();
        bad.extend_from_slice(format!("x-amz-checksum-crc32:{value}\r\n\r\n").as_bytes());
        let got = decode(&bad, &splits, signer, trailer);
        prop_assert!(got.is_err(), "spliced trailer accepted: {:?}", got);
    }

    /// A signed stream declared with trailers must end with the trailer signature, even
    /// when it sends no trailer: one whose trailer block was dropped is refused.
    #[test]
    fn signed_trailer_streams_without_their_trailer_block_are_refused(
        data in vec(any::<u8>(), 0..600),
        sizes in vec(1usize..300, 1..4),
        splits in vec(1usize..400, 1..4),
        trailers in trailers(),
    ) {
        let v = Variant::SignedTrailer;
        let (signer, trailer, mut client) = request(v);
        let framed = encode(v, &data, &sizes, &trailers, &mut client);
        // up to the end of the last chunk's header line, then the final empty line
        let head = b"0;chunk-signature=";
        let last = framed.windows(head.len()).rposition(|w| w == head).expect("a last chunk");
        let eol = last + framed[last..].windows(2).position(|w| w == b"\r\n").expect("eol");
        let mut bad = framed[..eol + 2].to_vec();
        bad.extend_from_slice(b"\r\n");
        let got = decode(&bad, &splits, signer, trailer);
        prop_assert_eq!(got, Err("SignatureDoesNotMatch"));
    }

    /// Every proper prefix of a valid stream is an error (never a silently short body).
    #[test]
    fn truncated_streams_are_errors(
        v in variant(),
        data in vec(any::<u8>(), 0..1500),
        sizes in vec(1usize..500, 1..4),
        splits in vec(1usize..400, 1..4),
        trailers in trailers(),
        cut in any::<prop::sample::Index>(),
    ) {
        let (signer, trailer, mut client) = request(v);
        let framed = encode(v, &data, &sizes, &trailers, &mut client);
        let cut = cut.index(framed.len());
        let got = decode(&framed[..cut], &splits, signer, trailer);
        prop_assert!(got.is_err(), "prefix of {} of {} bytes accepted", cut, framed.len());
    }

    /// Arbitrary bytes and arbitrary framing-token soup: no panic, no hang, and the
    /// outcome does not depend on how the bytes were split into network pieces.
    #[test]
    fn arbitrary_input_is_split_independent(
        input in prop_oneof![vec(any::<u8>(), 0..2000), framing_soup()],
        splits in vec(1usize..300, 1..6),
        trailer in any::<bool>(),
    ) {
        let whole = decode(&input, &[usize::MAX], None, trailer);
        let split = decode(&input, &splits, None, trailer);
        prop_assert_eq!(whole, split);
    }

    /// The same with a chunk signer: mutated valid streams decode the same whatever the
    /// split.
    #[test]
    fn mutated_signed_streams_are_split_independent(
        v in variant(),
        data in vec(any::<u8>(), 0..1000),
        sizes in vec(1usize..400, 1..4),
        splits in vec(1usize..300, 1..6),
        trailers in trailers(),
        ms in vec(mutation(), 1..4),
    ) {
        let (signer, trailer, mut client) = request(v);
        let mut input = encode(v, &data, &sizes, &trailers, &mut client);
        for m in &ms {
            if let Some(next) = apply(&input, m) {
                input = next;
            }
        }
        let whole = decode(&input, &[usize::MAX], signer.clone(), trailer);
        let split = decode(&input, &splits, signer, trailer);
        prop_assert_eq!(whole, split);
    }

    /// Lines are bounded: a chunk header or trailer line longer than the limit is
    /// refused however it arrives.
    #[test]
    fn long_lines_are_refused_at_any_split(
        extra in MAX_LINE..MAX_LINE * 3,
        in_trailer in any::<bool>(),
        splits in vec(1usize..9000, 1..4),
    ) {
        let input = if in_trailer {
            format!("0\r\nx-amz-meta-a:{}\r\n\r\n", "v".repeat(extra)).into_bytes()
        } else {
            format!("1;{}\r\nA\r\n0\r\n\r\n", "e".repeat(extra)).into_bytes()
        };
        let got = decode(&input, &splits, None, true);
        prop_assert_eq!(got, Err("InvalidRequest"));
    }
}

#[test]
fn oversized_and_overflowing_chunk_sizes_are_refused() {
    for header in [
        "4000001",
        "ffffffffffffffff",
        "10000000000000000",
        "-1",
        "",
        " ",
    ] {
        let input = format!("{header}\r\nabc\r\n0\r\n\r\n");
        assert_eq!(
            decode(input.as_bytes(), &[usize::MAX], None, true),
            Err("InvalidRequest"),
            "{header:?}"
        );
    }
}
