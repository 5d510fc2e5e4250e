//! The small header and query grammars: Range, copy source and copy range, part
//! numbers, conditional headers, checksum headers and trailers, the request router.

use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use base64::Engine;
use cairn_common::ids::ObjectId;
use cairn_gateway::error::S3Error;
use cairn_gateway::s3::body::{declared_length, CheckedBody};
use cairn_gateway::s3::copy::{parse_copy_range, parse_copy_source};
use cairn_gateway::s3::object::{check_read_preconditions, parse_range, RangeSpec};
use cairn_gateway::s3::router::{parse_part_number, parse_query, route};
use cairn_gateway::s3::sigv4::Payload;
use cairn_gateway::s3::write::meta_from_headers;
use cairn_store::checksum::Algorithm;
use cairn_store::{ObjectMeta, ObjectRecord};
use futures::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use percent_encoding::{utf8_percent_encode, AsciiSet};
use proptest::collection::vec;
use proptest::prelude::*;
use sha1::Digest as _;

use crate::client::UNRESERVED;
use crate::config;

/// Numbers as clients and attackers write them.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..2000).prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        Just("18446744073709551616".to_string()),
        Just("-1".to_string()),
        Just("+7".to_string()),
        Just(" 3 ".to_string()),
        Just(String::new()),
        "[0-9a-z -]{0,6}",
    ]
}

fn range_header() -> impl Strategy<Value = String> {
    let prefix = prop_oneof![Just("bytes="), Just(" bytes= "), Just("Bytes="), Just("")];
    let sep = prop_oneof![Just("-"), Just("--"), Just(","), Just("-,"), Just("")];
    (prefix, number(), sep, number(), any::<String>()).prop_map(|(p, a, s, b, tail)| {
        if tail.len() % 5 == 0 {
            format!("{p}{a}{s}{b}{tail}")
        } else {
            format!("{p}{a}{s}{b}")
        }
    })
}

fn header_map(pairs: &[(&str, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.append(HeaderName::from_bytes(k.as_bytes()).expect("name"), v);
        }
    }
    h
}

fn record(etag: &str, modified_ms: i64) -> ObjectRecord {
    ObjectRecord {
        id: ObjectId::random(),
        size: 0,
        modified_ms,
        meta: ObjectMeta {
            etag: etag.to_string(),
            content_type: None,
            headers: Default::default(),
            user_meta: Default::default(),
            checksum: None,
        },
        segments: Vec::new(),
    }
}

fn http_date(secs: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
}

fn algorithm() -> impl Strategy<Value = Algorithm> {
    proptest::sample::select(Algorithm::ALL.to_vec())
}

/// The checksum of `data` as S3 sends it, computed with each algorithm's own crate.
fn reference_checksum(alg: Algorithm, data: &[u8]) -> String {
    let raw = match alg {
        Algorithm::Crc32 => crc32fast::hash(data).to_be_bytes().to_vec(),
        Algorithm::Crc32c => crc32c::crc32c(data).to_be_bytes().to_vec(),
        Algorithm::Crc64Nvme => {
            let mut d = crc64fast_nvme::Digest::new();
            d.write(data);
            d.sum64().to_be_bytes().to_vec()
        }
        Algorithm::Sha1 => sha1::Sha1::digest(data).to_vec(),
        Algorithm::Sha256 => sha2::Sha256::digest(data).to_vec(),
    };
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// A body read to its end: the bytes and the verified checksum, or the S3 error code.
type BodyOutcome = Result<(Vec<u8>, Option<(Algorithm, String)>), &'static str>;

/// Reads a checked body to its end: the bytes, or the S3 error code it failed with.
fn read_body(data: &[u8], headers: &HeaderMap, declared: u64) -> BodyOutcome {
    let mut body = CheckedBody::new(
        Body::from(data.to_vec()),
        headers,
        &Payload::Unsigned,
        declared,
    )
    .map_err(|e| e.code_and_status().0)?;
    futures::executor::block_on(async {
        let mut out = Vec::new();
        while let Some(item) = body.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => {
                    let e = e.downcast::<S3Error>().expect("an S3 error");
                    return Err(e.code_and_status().0);
                }
            }
        }
        let digests = body.digests().expect("digests after a clean end");
        Ok((out, digests.checksum.clone()))
    })
}

const CHECKSUM_HEADERS: [&str; 9] = [
    "content-md5",
    "x-amz-checksum-crc32",
    "x-amz-checksum-crc32c",
    "x-amz-checksum-crc64nvme",
    "x-amz-checksum-sha1",
    "x-amz-checksum-sha256",
    "x-amz-trailer",
    "x-amz-sdk-checksum-algorithm",
    "content-length",
];

proptest! {
    #![proptest_config(config(256))]

    /// Any Range header against any size: a range inside the object, the whole object,
    /// or InvalidRange; never a panic.
    #[test]
    fn ranges_stay_inside_the_object(
        v in prop_oneof![range_header(), any::<String>()],
        size in prop_oneof![Just(0u64), 1u64..3000, any::<u64>()],
    ) {
        match parse_range(Some(&v), size) {
            Ok(RangeSpec::Bytes(a, b)) => prop_assert!(a <= b && b < size, "{} of {}: {}-{}", v, size, a, b),
            Ok(RangeSpec::Full) => {}
            Err(e) => prop_assert_eq!(e.code_and_status().0, "InvalidRange"),
        }
    }

    /// Well-formed ranges resolve as RFC 9110 says.
    #[test]
    fn well_formed_ranges_resolve(a in 0u64..3000, len in 0u64..3000, n in 1u64..3000, size in 0u64..3000, open in any::<bool>()) {
        let b = a + len;
        let got = parse_range(Some(&format!("bytes={a}-{}", if open { String::new() } else { b.to_string() })), size);
        if a >= size {
            prop_assert!(got.is_err());
        } else {
            let end = if open { size - 1 } else { b.min(size - 1) };
            prop_assert_eq!(got.expect("range"), RangeSpec::Bytes(a, end));
        }
        let suffix = parse_range(Some(&format!("bytes=-{n}")), size);
        if size == 0 {
            prop_assert!(suffix.is_err());
        } else {
            prop_assert_eq!(suffix.expect("suffix"), RangeSpec::Bytes(size - n.min(size), size - 1));
        }
    }

    /// Copy ranges: inside the source or an error, never a panic; well-formed ones are
    /// exact.
    #[test]
    fn copy_ranges_stay_inside_the_source(
        v in prop_oneof![range_header(), any::<String>()],
        a in 0u64..5000, len in 0u64..5000,
        size in prop_oneof![Just(0u64), 1u64..5000, any::<u64>()],
    ) {
        if let Ok((s, e)) = parse_copy_range(Some(&v), size) {
            prop_assert!(s < e && e <= size, "{} of {}: {}..{}", v, size, s, e);
        }
        let b = a + len;
        let got = parse_copy_range(Some(&format!("bytes={a}-{b}")), size);
        if b < size {
            prop_assert_eq!(got.expect("range"), (a, b + 1));
        } else {
            prop_assert!(got.is_err());
        }
        prop_assert_eq!(parse_copy_range(None, size).expect("whole"), (0, size));
    }

    /// A copy source encoded the way SDKs encode it decodes to the bucket and key.
    #[test]
    fn copy_sources_round_trip(
        bucket in "[a-z0-9][a-z0-9.-]{1,20}[a-z0-9]",
        key in "\\PC{1,40}",
        slash in any::<bool>(),
        version in proptest::option::of("[A-Za-z0-9._-]{1,20}"),
    ) {
        const KEEP_SLASH: &AsciiSet = &UNRESERVED.remove(b'/');
        let mut raw = format!("{}{bucket}/{}", if slash { "/" } else { "" }, utf8_percent_encode(&key, KEEP_SLASH));
        if let Some(v) = version {
            raw.push_str(&format!("?versionId={v}"));
        }
        prop_assert_eq!(parse_copy_source(&raw).expect("copy source"), (bucket, key));
    }

    /// Arbitrary copy sources: a bucket and key, both non-empty, or InvalidArgument.
    #[test]
    fn arbitrary_copy_sources_never_panic(raw in prop_oneof![any::<String>(), "[/%a-f0-9?=A-Z]{0,30}"]) {
        match parse_copy_source(&raw) {
            Ok((b, k)) => prop_assert!(!b.is_empty() && !k.is_empty()),
            Err(e) => prop_assert_eq!(e.code_and_status().0, "InvalidArgument"),
        }
    }

    /// partNumber: exactly the integers 1..=10000.
    #[test]
    fn part_numbers_are_1_to_10000(v in prop_oneof![number(), any::<String>()], n in 0u32..20_000) {
        let want = v.parse::<u32>().ok().filter(|n| (1..=10_000).contains(n));
        prop_assert_eq!(parse_part_number(Some(&v)).ok(), want);
        prop_assert_eq!(parse_part_number(Some(&n.to_string())).is_ok(), (1..=10_000).contains(&n));
        prop_assert!(parse_part_number(None).is_err());
    }

    /// Conditional headers with arbitrary values: success, 304 or 412, never a panic.
    #[test]
    fn arbitrary_conditionals_never_panic(
        values in vec((0usize..4, prop_oneof![any::<String>(), Just("*".to_string()), "\"[0-9a-f]{4}\"", Just(http_date(0)), "[ -~]{0,40}"]), 0..5),
        copy in any::<bool>(),
        modified_ms in any::<i64>(),
    ) {
        let names = ["if-match", "if-none-match", "if-modified-since", "if-unmodified-since"];
        let prefix = if copy { "x-amz-copy-source-" } else { "" };
        let pairs: Vec<(String, String)> = values.iter().map(|(i, v)| (format!("{prefix}{}", names[*i]), v.clone())).collect();
        let h = header_map(&pairs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect::<Vec<_>>());
        if let Err(e) = check_read_preconditions(&h, prefix, &record("abcd", modified_ms)) {
            let code = e.code_and_status().0;
            prop_assert!(code == "PreconditionFailed" || (!copy && code == "NotModified"), "{}", code);
        }
    }

    /// Conditional dates and ETags decide as S3 does (second resolution).
    #[test]
    fn conditionals_decide_like_s3(modified in 0u64..4_000_000_000, date in 0u64..4_000_000_000, ms in 0i64..1000, etag in "[0-9a-f]{32}", other in "[0-9a-f]{32}") {
        let rec = record(&etag, modified as i64 * 1000 + ms);
        let check = |name: &str, value: String| check_read_preconditions(&header_map(&[(name, value)]), "", &rec).err().map(|e| e.code_and_status().0);
        prop_assert_eq!(check("if-modified-since", http_date(date)), (modified <= date).then_some("NotModified"));
        prop_assert_eq!(check("if-unmodified-since", http_date(date)), (modified > date).then_some("PreconditionFailed"));
        prop_assert_eq!(check("if-match", format!("\"{etag}\"")), None);
        prop_assert_eq!(check("if-match", format!("\"{other}\", W/\"{etag}\"")), None);
        prop_assert_eq!(check("if-none-match", format!("\"{etag}\"")), Some("NotModified"));
        if other != etag {
            prop_assert_eq!(check("if-match", format!("\"{other}\"")), Some("PreconditionFailed"));
            prop_assert_eq!(check("if-none-match", format!("\"{other}\"")), None);
        }
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// A correct checksum header (computed by the algorithm's own crate) is accepted and
    /// returned; any other value is BadDigest.
    #[test]
    fn checksum_headers_verify(alg in algorithm(), data in vec(any::<u8>(), 0..5000), wrong in "[A-Za-z0-9+/=]{0,44}") {
        let right = reference_checksum(alg, &data);
        let h = header_map(&[(alg.header(), right.clone()), ("x-amz-sdk-checksum-algorithm", alg.name().to_string())]);
        prop_assert_eq!(read_body(&data, &h, data.len() as u64), Ok((data.clone(), Some((alg, right.clone())))));
        if wrong != right {
            let h = header_map(&[(alg.header(), wrong)]);
            prop_assert_eq!(read_body(&data, &h, data.len() as u64), Err("BadDigest"));
        }
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&data));
        prop_assert!(read_body(&data, &header_map(&[("content-md5", md5)]), data.len() as u64).is_ok());
    }

    /// Arbitrary values in every integrity and length header: the body is accepted
    /// unchanged or refused with a 4xx code, never a panic.
    #[test]
    fn arbitrary_checksum_headers_never_panic(
        data in vec(any::<u8>(), 0..300),
        values in vec((0usize..CHECKSUM_HEADERS.len(), prop_oneof![any::<String>(), "[A-Za-z0-9+/=]{0,44}", Just("CRC32".to_string()), Just("x-amz-checksum-sha256".to_string())]), 0..4),
        declared_off in -2i64..3,
    ) {
        let pairs: Vec<(&str, String)> = values.iter().map(|(i, v)| (CHECKSUM_HEADERS[*i], v.clone())).collect();
        let h = header_map(&pairs);
        let _ = declared_length(&h, &Payload::Unsigned);
        let declared = (data.len() as i64 + declared_off).max(0) as u64;
        match read_body(&data, &h, declared) {
            Ok((got, _)) => prop_assert_eq!(got, data),
            Err(code) => prop_assert!(
                ["BadDigest", "InvalidDigest", "InvalidArgument", "InvalidRequest", "IncompleteBody"].contains(&code),
                "{}", code
            ),
        }
    }

    /// FULL_OBJECT checksums: combining the CRCs of any split of the data (empty parts
    /// included) gives the CRC of the whole.
    #[test]
    fn crc_combination_matches_the_whole(
        alg in proptest::sample::select(vec![Algorithm::Crc32, Algorithm::Crc32c, Algorithm::Crc64Nvme]),
        data in vec(any::<u8>(), 0..4000),
        cuts in vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
        cuts.push(0);
        cuts.push(data.len());
        cuts.sort();
        let parts: Vec<(String, u64)> = cuts.windows(2).map(|w| {
            let p = &data[w[0]..w[1]];
            (reference_checksum(alg, p), p.len() as u64)
        }).collect();
        prop_assert_eq!(alg.combine_parts(&parts), Some(reference_checksum(alg, &data)));
    }

    /// Part checksums from arbitrary strings: combined or refused, never a panic.
    #[test]
    fn arbitrary_part_checksums_never_panic(alg in algorithm(), parts in vec((any::<String>(), any::<u64>()), 0..5)) {
        let _ = alg.combine_parts(&parts);
        let _ = alg.composite(&parts.iter().map(|(v, _)| v.clone()).collect::<Vec<_>>());
    }

    /// The router and query decoder take any path, query and method without a panic.
    #[test]
    fn routing_never_panics(
        method in proptest::sample::select(vec![Method::GET, Method::PUT, Method::POST, Method::DELETE, Method::HEAD, Method::OPTIONS, Method::PATCH]),
        path in prop_oneof![any::<String>(), "(/[a-z%0-9.]{0,6}){0,4}"],
        query in prop_oneof![any::<String>(), "[a-zA-Z=&%0-9+-]{0,40}"],
        copy in any::<bool>(),
        encoding in "[ -~]{0,30}",
    ) {
        let q = parse_query(Some(&query));
        let mut h = header_map(&[("content-encoding", encoding)]);
        if copy {
            h.insert("x-amz-copy-source", HeaderValue::from_static("/b/k"));
        }
        let _ = route(&method, &path, &q, &h);
        let _ = meta_from_headers(&h);
    }
}
