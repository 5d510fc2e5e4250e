//! The client side: requests signed the way AWS SDKs sign them (aws-sigv4's signer, which
//! the SDKs use), so the gateway's verifier is checked against an independent signer.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use cairn_gateway::s3::sigv4::Keys;
use http::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

pub const ACCESS_KEY: &str = "AKIDCAIRNFUZZ";
pub const SECRET_KEY: &str = "fuzz/Secret+Key0";
pub const REGION: &str = "us-east-1";
pub const HOST: &str = "127.0.0.1:9000";

/// What SDKs leave unencoded in query values (RFC 3986 unreserved).
pub const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The gateway's key pair.
pub fn keys() -> Keys {
    Keys::new(ACCESS_KEY, SECRET_KEY)
}

/// The client's identity.
pub fn identity() -> Identity {
    Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "fuzz").into()
}

fn settings(location: SignatureLocation, expires: Option<Duration>) -> SigningSettings {
    let mut s = SigningSettings::default();
    s.percent_encoding_mode = PercentEncodingMode::Single;
    s.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    s.signature_location = location;
    s.expires_in = expires;
    s
}

fn header_map(pairs: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            HeaderValue::from_str(v).expect("header value"),
        );
    }
    map
}

/// Headers of a request signed in the `Authorization` header (host, x-amz-date and
/// x-amz-content-sha256 included), and the request's signature.
pub fn signed_headers(
    method: &str,
    path_and_query: &str,
    extra: &[(String, String)],
    content_sha: &str,
    time: SystemTime,
) -> (HeaderMap, String) {
    let mut pairs: Vec<(String, String)> = vec![
        ("host".into(), HOST.into()),
        ("x-amz-content-sha256".into(), content_sha.into()),
    ];
    pairs.extend(extra.iter().cloned());
    let identity = identity();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("s3")
        .time(time)
        .settings(settings(SignatureLocation::Headers, None))
        .build()
        .expect("signing params")
        .into();
    let uri = format!("http://{HOST}{path_and_query}");
    let request = SignableRequest::new(
        method,
        uri,
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Precomputed(content_sha.into()),
    )
    .expect("signable request");
    let (instructions, signature) = sign(request, &params).expect("sign").into_parts();
    for (k, v) in instructions.headers() {
        pairs.push((k.to_string(), v.to_string()));
    }
    (header_map(&pairs), signature)
}

/// A presigned URL's path and query (the original query first, then the `X-Amz-*`
/// parameters), valid for `expires`.
pub fn presigned(
    method: &str,
    path_and_query: &str,
    time: SystemTime,
    expires: Duration,
) -> String {
    let identity = identity();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("s3")
        .time(time)
        .settings(settings(SignatureLocation::QueryParams, Some(expires)))
        .build()
        .expect("signing params")
        .into();
    let uri = format!("http://{HOST}{path_and_query}");
    let host = [("host", HOST)];
    let request =
        SignableRequest::new(method, uri, host.into_iter(), SignableBody::UnsignedPayload)
            .expect("signable request");
    let (instructions, _) = sign(request, &params).expect("sign").into_parts();
    let mut out = path_and_query.to_string();
    let mut sep = if out.contains('?') { '&' } else { '?' };
    for (k, v) in instructions.params() {
        out.push(sep);
        sep = '&';
        out.push_str(k);
        out.push('=');
        out.push_str(&utf8_percent_encode(v, UNRESERVED).to_string());
    }
    out
}

/// Headers of a presigned request: just the host.
pub fn host_only() -> HeaderMap {
    header_map(&[("host".into(), HOST.into())])
}

/// Signs aws-chunked chunks and trailers as the SDKs do (`sign_chunk`, `sign_trailer`),
/// chaining from the request's seed signature.
pub struct ChunkSigning {
    identity: Identity,
    time: SystemTime,
    prev: String,
}

impl ChunkSigning {
    pub fn new(seed: String, time: SystemTime) -> Self {
        Self {
            identity: identity(),
            time,
            prev: seed,
        }
    }

    fn params(&self) -> v4::SigningParams<'_, ()> {
        v4::SigningParams::builder()
            .identity(&self.identity)
            .region(REGION)
            .name("s3")
            .time(self.time)
            .settings(())
            .build()
            .expect("signing params")
    }

    /// The signature of the next chunk.
    pub fn chunk(&mut self, data: &[u8]) -> String {
        let sig = v4::sign_chunk(
            &bytes::Bytes::copy_from_slice(data),
            &self.prev,
            &self.params(),
        )
        .expect("sign chunk")
        .signature()
        .to_string();
        self.prev = sig.clone();
        sig
    }

    /// The signature of the trailer block.
    pub fn trailer(&mut self, trailers: &[(String, String)]) -> String {
        let mut h = aws_smithy_runtime_api::http::Headers::new();
        for (k, v) in trailers {
            h.append(k.clone(), v.clone());
        }
        let sig = v4::sign_trailer(&h, &self.prev, &self.params())
            .expect("sign trailer")
            .signature()
            .to_string();
        self.prev = sig.clone();
        sig
    }
}
