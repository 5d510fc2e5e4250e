//! SigV4: the `Authorization` header and presigned query parameters. Requests signed by
//! the SDKs' signer are accepted with the right payload mode; tampered or arbitrary
//! ones are refused without a panic.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use cairn_gateway::s3::sigv4::{authenticate, authenticate_in, Payload};
use http::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::utf8_percent_encode;
use proptest::collection::vec;
use proptest::prelude::*;

use crate::client::{host_only, keys, presigned, signed_headers, ACCESS_KEY, REGION, UNRESERVED};
use crate::config;

fn amz_date(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A path of arbitrary (percent-encoded) key characters.
fn path() -> impl Strategy<Value = String> {
    ("[a-z0-9]{3,10}", vec(any::<String>(), 0..3)).prop_map(|(bucket, segs)| {
        let key: Vec<String> = segs
            .iter()
            .map(|s| utf8_percent_encode(s, UNRESERVED).to_string())
            .collect();
        format!("/{bucket}/{}", key.join("/"))
    })
}

/// A query of arbitrary (percent-encoded) parameters, maybe empty.
fn query() -> impl Strategy<Value = String> {
    vec(("[a-zA-Z-]{1,12}", any::<String>()), 0..4).prop_map(|params| {
        params
            .iter()
            .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, UNRESERVED)))
            .collect::<Vec<_>>()
            .join("&")
    })
}

fn with_query(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    }
}

/// Extra signed headers with arbitrary visible-ASCII values (spaces included).
fn extra_headers() -> impl Strategy<Value = Vec<(String, String)>> {
    vec(("x-amz-meta-[a-z]{1,8}", "[ -~]{0,40}"), 0..4).prop_map(|mut h| {
        h.sort_by(|a, b| a.0.cmp(&b.0));
        h.dedup_by(|a, b| a.0 == b.0);
        h
    })
}

fn content_sha() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("UNSIGNED-PAYLOAD".to_string()),
        Just("STREAMING-AWS4-HMAC-SHA256-PAYLOAD".to_string()),
        Just("STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER".to_string()),
        Just("STREAMING-UNSIGNED-PAYLOAD-TRAILER".to_string()),
        "[0-9a-f]{64}",
    ]
}

fn payload_matches(sha: &str, p: &Payload) -> bool {
    match (sha, p) {
        ("UNSIGNED-PAYLOAD", Payload::Unsigned) => true,
        ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", Payload::Streaming { signer, trailer }) => {
            signer.is_some() && !trailer
        }
        ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", Payload::Streaming { signer, trailer }) => {
            signer.is_some() && *trailer
        }
        ("STREAMING-UNSIGNED-PAYLOAD-TRAILER", Payload::Streaming { signer, trailer }) => {
            signer.is_none() && *trailer
        }
        (hex, Payload::Sha256(h)) => hex == h,
        _ => false,
    }
}

/// An `Authorization` header built from parts, most of them plausible, so arbitrary
/// values reach the signature computation.
fn auth_header() -> impl Strategy<Value = String> {
    let credential = prop_oneof![
        Just(format!("{ACCESS_KEY}/{{date}}/{REGION}/s3/aws4_request")),
        Just(format!("{ACCESS_KEY}/{{date}}/{{any}}/s3/aws4_request")),
        Just(format!("{ACCESS_KEY}//{{any}}/s3/aws4_request")),
        Just(format!(
            "{ACCESS_KEY}/{{date}}/{REGION}/{{any}}/aws4_request"
        )),
        Just("{any}".to_string()),
    ];
    let signed = prop_oneof![
        Just("host;x-amz-content-sha256;x-amz-date".to_string()),
        Just("x-amz-date".to_string()),
        Just("x-amz-content-sha256;x-amz-date".to_string()),
        Just("".to_string()),
        Just(";;".to_string()),
        Just("HOST;X-Amz-Date".to_string()),
        Just("host;host;x-amz-date".to_string()),
        "[a-zA-Z;:-]{0,30}",
    ];
    let signature = prop_oneof!["[0-9a-f]{64}", "[ -~]{0,70}"];
    let sep = prop_oneof![Just(", "), Just(","), Just(" , ")];
    (
        credential,
        signed,
        signature,
        "[ -~]{0,20}",
        sep,
        any::<bool>(),
    )
        .prop_map(|(cred, signed, sig, any, sep, shuffle)| {
            let date = amz_date(SystemTime::now());
            let cred = cred.replace("{date}", &date[..8]).replace("{any}", &any);
            let mut fields = [
                format!("Credential={cred}"),
                format!("SignedHeaders={signed}"),
                format!("Signature={sig}"),
            ];
            if shuffle {
                fields.reverse();
            }
            format!("AWS4-HMAC-SHA256 {}", fields.join(sep))
        })
}

fn arbitrary_headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let name = prop_oneof![
        Just("host".to_string()),
        Just("x-amz-date".to_string()),
        Just("x-amz-content-sha256".to_string()),
        Just("authorization".to_string()),
        "[a-z-]{1,12}",
    ];
    let value = prop_oneof![
        Just(b"127.0.0.1:9000".to_vec()),
        Just(amz_date(SystemTime::now()).into_bytes()),
        Just(b"UNSIGNED-PAYLOAD".to_vec()),
        Just(b"STREAMING-AWS4-HMAC-SHA256-PAYLOAD".to_vec()),
        vec(any::<u8>(), 0..40),
    ];
    vec((name, value), 0..6)
}

/// What the verifier reads from an `Authorization` header: the credential, the
/// signature and the set of signed headers. Names are case-insensitive, separators
/// (`, ` or `,,`) carry nothing, and x-amz-date is signed whether listed or not.
fn auth_meaning(auth: &str) -> Option<(String, String, BTreeSet<String>)> {
    let rest = auth.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for field in rest.split(',').map(str::trim) {
        if let Some(v) = field.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = field.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = field.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let mut names: BTreeSet<String> = signed?.split(';').map(str::to_ascii_lowercase).collect();
    names.insert("x-amz-date".into());
    Some((credential?.to_string(), signature?.to_string(), names))
}

/// Whether two URLs are the same once percent-decoded.
fn same_decoded(a: &str, b: &str) -> bool {
    percent_encoding::percent_decode_str(a).eq(percent_encoding::percent_decode_str(b))
}

/// Whether `bad` differs from `good` only in letter case, at `i` inside the value of
/// `field` (a signed header list: header names are case-insensitive).
fn case_only_in(field: &str, good: &str, bad: &str, i: usize) -> bool {
    let Some(start) = good.find(field).map(|s| s + field.len()) else {
        return false;
    };
    let end = good[start..]
        .find([',', '&'])
        .map_or(good.len(), |e| start + e);
    good.eq_ignore_ascii_case(bad) && (start..end).contains(&i)
}

fn header_map(base: &[(String, Vec<u8>)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in base {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_bytes(v),
        ) {
            h.append(k, v);
        }
    }
    h
}

proptest! {
    #![proptest_config(config(128))]

    /// A request signed like an SDK signs it, with arbitrary path, query and extra
    /// signed headers, is accepted, and its payload mode is the one it declared.
    #[test]
    fn sdk_signed_requests_are_accepted(
        method in prop_oneof![Just("GET"), Just("PUT"), Just("POST"), Just("DELETE"), Just("HEAD")],
        path in path(),
        query in query(),
        extra in extra_headers(),
        sha in content_sha(),
    ) {
        let pq = with_query(&path, &query);
        let (headers, _) = signed_headers(method, &pq, &extra, &sha, SystemTime::now());
        let got = authenticate(&keys(), method, &pq, &headers);
        prop_assert!(
            matches!(&got, Ok(p) if payload_matches(&sha, p)),
            "{} {} {:?}: {:?}", method, pq, sha, got
        );
    }

    /// Changing one byte of the path, the query, a signed header or the Authorization
    /// header (credential, signed header list, signature) is
    /// refused (never a panic); whitespace-only changes to a header value are the one
    /// allowed exception, as SigV4 canonicalizes them away.
    #[test]
    fn tampered_requests_are_refused(
        path in path(),
        query in query(),
        extra in extra_headers(),
        sha in content_sha(),
        target in 0usize..4,
        pos in any::<prop::sample::Index>(),
        byte in 0x21u8..0x7f,
    ) {
        let pq = with_query(&path, &query);
        let (mut headers, _) = signed_headers("PUT", &pq, &extra, &sha, SystemTime::now());
        let mut pq_bad = pq.clone();
        let mutate = |s: &str| -> Option<String> {
            let mut b = s.as_bytes().to_vec();
            if b.is_empty() {
                return None;
            }
            let i = pos.index(b.len());
            if b[i] == byte {
                return None;
            }
            b[i] = byte;
            String::from_utf8(b).ok()
        };
        match target {
            0 => match mutate(&pq) {
                // Percent-encoding the same character differently is not a change.
                Some(p) if !same_decoded(&p, &pq) => pq_bad = p,
                _ => return Ok(()),
            },
            1 => {
                let auth = headers["authorization"].to_str().expect("ascii").to_string();
                let Some(bad) = mutate(&auth) else { return Ok(()) };
                if auth_meaning(&bad) == auth_meaning(&auth) {
                    return Ok(());
                }
                headers.insert("authorization", HeaderValue::from_str(&bad).expect("value"));
            }
            2 => {
                let date = headers["x-amz-date"].to_str().expect("ascii").to_string();
                let Some(date) = mutate(&date) else { return Ok(()) };
                headers.insert("x-amz-date", HeaderValue::from_str(&date).expect("value"));
            }
            _ => {
                let Some((name, value)) = extra.first() else { return Ok(()) };
                let Some(v) = mutate(value) else { return Ok(()) };
                if v.split_whitespace().eq(value.split_whitespace()) {
                    return Ok(());
                }
                headers.insert(HeaderName::from_bytes(name.as_bytes()).expect("name"), HeaderValue::from_str(&v).expect("value"));
            }
        }
        let got = authenticate(&keys(), "PUT", &pq_bad, &headers);
        prop_assert!(got.is_err(), "tampered request accepted: {:?}", got);
    }

    /// Arbitrary `Authorization` headers with the right key and a current date (so they
    /// reach the signature check) and arbitrary other headers: refused, no panic.
    #[test]
    fn arbitrary_authorization_headers_are_refused(
        auth in prop_oneof![auth_header(), "[ -~]{0,200}"],
        others in arbitrary_headers(),
        path in prop_oneof![path(), "[ -~]{0,30}", "/[ -~]{0,30}", "/\\PC{0,10}"],
        now_date in any::<bool>(),
    ) {
        let mut h = header_map(&others);
        if let Ok(v) = HeaderValue::from_str(&auth) {
            h.insert("authorization", v);
        }
        if now_date {
            h.insert("x-amz-date", HeaderValue::from_str(&amz_date(SystemTime::now())).expect("date"));
        }
        let got = authenticate(&keys(), "GET", &path, &h);
        prop_assert!(got.is_err(), "accepted: {:?}", got);
    }

    /// A presigned URL made by the SDK signer is accepted; one byte changed in it is
    /// refused.
    #[test]
    fn presigned_urls_verify_and_resist_tampering(
        path in path(),
        query in query(),
        expires in 1u64..=604_800,
        pos in any::<prop::sample::Index>(),
        byte in 0x21u8..0x7f,
    ) {
        let url = presigned("GET", &with_query(&path, &query), SystemTime::now(), Duration::from_secs(expires));
        let got = authenticate(&keys(), "GET", &url, &host_only());
        prop_assert!(matches!(got, Ok(Payload::Unsigned)), "{}: {:?}", url, got);
        let mut b = url.clone().into_bytes();
        let i = pos.index(b.len());
        if b[i] != byte {
            b[i] = byte;
            let bad = String::from_utf8(b).expect("ascii");
            // Percent-encoding the same character differently is not a change.
            if !same_decoded(&bad, &url) && !case_only_in("X-Amz-SignedHeaders=", &url, &bad, i) {
                let got = authenticate(&keys(), "GET", &bad, &host_only());
                prop_assert!(got.is_err(), "tampered URL {} accepted", bad);
            }
        }
    }

    /// Arbitrary presigned-looking queries (right key, current date, arbitrary expiry,
    /// signed headers and signature): refused, no panic.
    #[test]
    fn arbitrary_presigned_queries_are_refused(
        signed in prop_oneof![Just("host".to_string()), Just("x-amz-date".to_string()), Just(String::new()), Just("HOST".to_string()), "[a-z;-]{0,20}"],
        expires in prop_oneof![Just("0".to_string()), Just("604801".to_string()), Just("18446744073709551616".to_string()), "[0-9]{1,6}", "[ -~]{0,8}"],
        date in prop_oneof![Just(amz_date(SystemTime::now())), Just("99991231T235959Z".to_string()), Just("00000101T000000Z".to_string()), "[0-9TZ+-]{0,18}"],
        sig in prop_oneof!["[0-9a-f]{64}", "[ -~]{0,70}"],
        region in prop_oneof![Just(REGION.to_string()), any::<String>()],
        raw in "[ -~]{0,60}",
        structured in any::<bool>(),
    ) {
        let enc = |s: &str| utf8_percent_encode(s, UNRESERVED).to_string();
        let date8 = date.get(..8).unwrap_or("");
        let url = if structured {
            format!(
                "/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={}&X-Amz-Date={}&X-Amz-Expires={}&X-Amz-SignedHeaders={}&X-Amz-Signature={}",
                enc(&format!("{ACCESS_KEY}/{date8}/{region}/s3/aws4_request")),
                enc(&date), enc(&expires), enc(&signed), enc(&sig)
            )
        } else {
            format!("/b/k?X-Amz-Signature={}", raw)
        };
        let got = authenticate(&keys(), "GET", &url, &host_only());
        prop_assert!(got.is_err(), "accepted: {:?}", got);
    }
}

/// Regression: a request target that is not a path (`A`, or empty) made aws-smithy's
/// query writer panic ("adding query should not invalidate URI") while signing.
#[test]
fn request_targets_that_are_not_paths_are_refused() {
    let date = amz_date(SystemTime::now());
    let mut h = HeaderMap::new();
    h.insert("x-amz-date", HeaderValue::from_str(&date).expect("date"));
    h.insert("host", HeaderValue::from_static("127.0.0.1:9000"));
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{}/{REGION}/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature={}",
        &date[..8],
        "0".repeat(64)
    );
    h.insert("authorization", HeaderValue::from_str(&auth).expect("auth"));
    for target in ["A", "", "*", "?a=b", "a/b?c", "http://x/y", "//"] {
        assert!(
            authenticate(&keys(), "GET", target, &h).is_err(),
            "{target:?}"
        );
        let presigned = format!(
            "{target}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={ACCESS_KEY}%2F{}%2F{REGION}%2Fs3%2Faws4_request&X-Amz-Date={date}&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature={}",
            &date[..8],
            "0".repeat(64)
        );
        assert!(
            authenticate(&keys(), "GET", &presigned, &host_only()).is_err(),
            "{presigned:?}"
        );
    }
}

/// Regression: a signature whose SignedHeaders leaves out `host` made aws-sigv4 panic
/// ("request uri authority must be set for signing") instead of failing the request.
#[test]
fn signed_headers_without_host_are_refused() {
    let now = SystemTime::now();
    let date = amz_date(now);
    let mut h = HeaderMap::new();
    h.insert("x-amz-date", HeaderValue::from_str(&date).expect("date"));
    h.insert("host", HeaderValue::from_static("127.0.0.1:9000"));
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{}/{REGION}/s3/aws4_request, SignedHeaders=x-amz-date, Signature={}",
        &date[..8],
        "0".repeat(64)
    );
    h.insert("authorization", HeaderValue::from_str(&auth).expect("auth"));
    assert!(authenticate(&keys(), "GET", "/b/k", &h).is_err());

    let url = format!(
        "/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={ACCESS_KEY}%2F{}%2F{REGION}%2Fs3%2Faws4_request&X-Amz-Date={date}&X-Amz-Expires=60&X-Amz-SignedHeaders=x-amz-date&X-Amz-Signature={}",
        &date[..8],
        "0".repeat(64)
    );
    let mut h = HeaderMap::new();
    h.insert("x-amz-date", HeaderValue::from_str(&date).expect("date"));
    assert!(authenticate(&keys(), "GET", &url, &h).is_err());
}

/// An `x-amz-*` header the signature does not cover is refused (AccessDenied, naming
/// it), in both forms; the same header signed is accepted.
#[test]
fn unsigned_amz_headers_are_refused() {
    let now = SystemTime::now();
    let copy = vec![("x-amz-copy-source".to_string(), "/b/other".to_string())];
    let (h, _) = signed_headers("PUT", "/b/k", &copy, "UNSIGNED-PAYLOAD", now);
    assert!(authenticate_in(&keys(), REGION, "PUT", "/b/k", &h).is_ok());

    let (mut h, _) = signed_headers("PUT", "/b/k", &[], "UNSIGNED-PAYLOAD", now);
    h.insert("x-amz-copy-source", HeaderValue::from_static("/b/other"));
    let err = authenticate_in(&keys(), REGION, "PUT", "/b/k", &h).expect_err("unsigned");
    assert_eq!(err.code_and_status().0, "AccessDenied");
    assert_eq!(
        err.extra_elements(),
        vec![("HeadersNotSigned", "x-amz-copy-source".to_string())]
    );

    let url = presigned("GET", "/b/k", now, Duration::from_secs(60));
    assert!(authenticate_in(&keys(), REGION, "GET", &url, &host_only()).is_ok());
    let mut h = host_only();
    h.insert("x-amz-meta-a", HeaderValue::from_static("1"));
    let err = authenticate_in(&keys(), REGION, "GET", &url, &h).expect_err("unsigned");
    assert_eq!(err.code_and_status().0, "AccessDenied");
    // A presigned request's body is never signed: x-amz-content-sha256 may go unsigned.
    let mut h = host_only();
    h.insert(
        "x-amz-content-sha256",
        HeaderValue::from_static("UNSIGNED-PAYLOAD"),
    );
    assert!(authenticate_in(&keys(), REGION, "GET", &url, &h).is_ok());
}

/// A credential scope naming another region than the gateway's is refused with S3's
/// codes (header and presigned forms).
#[test]
fn other_regions_are_refused() {
    let now = SystemTime::now();
    let (h, _) = signed_headers("GET", "/b/k", &[], "UNSIGNED-PAYLOAD", now);
    let err = authenticate_in(&keys(), "eu-west-1", "GET", "/b/k", &h).expect_err("region");
    assert_eq!(err.code_and_status().0, "AuthorizationHeaderMalformed");
    assert_eq!(
        err.extra_elements(),
        vec![("Region", "eu-west-1".to_string())]
    );
    let url = presigned("GET", "/b/k", now, Duration::from_secs(60));
    let err = authenticate_in(&keys(), "eu-west-1", "GET", &url, &host_only()).expect_err("region");
    assert_eq!(err.code_and_status().0, "AuthorizationQueryParametersError");
}
