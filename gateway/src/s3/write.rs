//! What every write (PutObject, CopyObject, UploadPart, CompleteMultipartUpload) takes
//! from the request headers, and how it answers.

use std::collections::BTreeMap;

use axum::response::{IntoResponse, Response};
use cairn_store::checksum::Algorithm;
use cairn_store::{ObjectMeta, WriteCondition};
use http::{HeaderMap, HeaderValue, StatusCode};

use super::header_str as header;
use super::Ctx;
use crate::error::S3Error;

/// Longest key S3 accepts, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Standard headers stored with an object and returned on GET/HEAD.
const KEPT_HEADERS: &[&str] = &[
    "content-disposition",
    "content-language",
    "cache-control",
    "expires",
];

/// Most bytes of user metadata S3 accepts: the UTF-8 bytes of every `x-amz-meta-*` name
/// (without the prefix) and value, added up.
pub const MAX_USER_META: usize = 2048;

/// Refuses user metadata larger than [`MAX_USER_META`] (MetadataTooLarge).
pub fn check_user_meta_size(h: &HeaderMap) -> Result<(), S3Error> {
    let size: usize = h
        .iter()
        .filter_map(|(name, value)| {
            let m = name.as_str().strip_prefix("x-amz-meta-")?;
            Some(m.len() + value.as_bytes().len())
        })
        .sum();
    if size > MAX_USER_META {
        return Err(S3Error::MetadataTooLarge {
            size,
            max: MAX_USER_META,
        });
    }
    Ok(())
}

/// Client-supplied metadata of a PUT (everything but the ETag and checksums); user
/// metadata over [`MAX_USER_META`] is refused.
pub fn meta_from_headers(h: &HeaderMap) -> Result<ObjectMeta, S3Error> {
    check_user_meta_size(h)?;
    let mut headers = BTreeMap::new();
    for name in KEPT_HEADERS {
        if let Some(v) = header(h, name) {
            headers.insert(name.to_string(), v.to_string());
        }
    }
    if let Some(enc) = header(h, "content-encoding") {
        let rest: Vec<&str> = enc
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
            .collect();
        if !rest.is_empty() {
            headers.insert("content-encoding".into(), rest.join(","));
        }
    }
    let mut user_meta = BTreeMap::new();
    for (name, value) in h {
        if let Some(m) = name.as_str().strip_prefix("x-amz-meta-") {
            if let Ok(v) = value.to_str() {
                user_meta.insert(m.to_string(), v.to_string());
            }
        }
    }
    Ok(ObjectMeta {
        etag: String::new(),
        content_type: header(h, "content-type").map(String::from),
        headers,
        user_meta,
        checksum: None,
    })
}

/// The answer to a PutObject or UploadPart: the ETag and the checksum that was verified.
pub fn written_response(etag: &str, checksum: Option<&(Algorithm, String)>) -> Response {
    let mut resp = StatusCode::OK.into_response();
    let h = resp.headers_mut();
    insert(h, "etag", &format!("\"{etag}\""));
    if let Some((alg, value)) = checksum {
        insert(h, alg.header(), value);
    }
    resp
}

/// The write condition of a PUT or Complete (`If-None-Match: *`, `If-Match: etag`),
/// checked now to fail early and again atomically at commit.
pub fn check_write_preconditions(
    ctx: &Ctx,
    bucket: &str,
    key: &str,
) -> Result<WriteCondition, S3Error> {
    let cond = match (
        header(&ctx.headers, "if-none-match"),
        header(&ctx.headers, "if-match"),
    ) {
        (Some(v), _) if v.trim() == "*" => WriteCondition::IfAbsent,
        (Some(_), _) => {
            return Err(S3Error::NotImplemented(
                "If-None-Match other than * on writes".into(),
            ))
        }
        (None, Some(e)) => WriteCondition::IfEtag(e.trim().trim_matches('"').to_string()),
        (None, None) => return Ok(WriteCondition::None),
    };
    ctx.state.service.check_condition(bucket, key, &cond)?;
    Ok(cond)
}

fn insert(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}
