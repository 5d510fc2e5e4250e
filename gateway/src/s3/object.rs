//! Object operations: PutObject, GetObject, HeadObject, DeleteObject.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode};

use super::body::CheckedBody;
use super::bucket::require_bucket;
use super::checksum::Algorithm;
use super::Ctx;
use crate::error::S3Error;
use crate::store::catalog::{ObjectMeta, ObjectRecord, WriteCondition};

/// Longest key S3 accepts, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Standard headers stored with an object and returned on GET/HEAD.
const KEPT_HEADERS: &[&str] = &[
    "content-disposition",
    "content-language",
    "cache-control",
    "expires",
];

use super::header_str as header;

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

/// Refuses a `versionId` other than `null` (the id S3 gives objects of an unversioned
/// bucket): Cairn keeps no versions, so any other id is none it could have issued.
pub fn check_version_id(version: Option<&str>) -> Result<(), S3Error> {
    match version {
        None | Some("null") => Ok(()),
        Some(v) => Err(S3Error::InvalidVersionId(v.to_string())),
    }
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
        checksums: BTreeMap::new(),
    })
}

/// PutObject: stream, erasure-code, verify, then commit.
pub async fn put_object(
    ctx: &Ctx,
    bucket: &str,
    key: &str,
    body: Body,
) -> Result<Response, S3Error> {
    require_bucket(ctx, bucket)?;
    if key.len() > MAX_KEY_LEN {
        return Err(S3Error::KeyTooLong);
    }
    let mut meta = meta_from_headers(&ctx.headers)?;
    let cond = check_write_preconditions(ctx, bucket, key)?;
    let (len, mut body) = CheckedBody::for_upload(body, &ctx.headers, &ctx.payload)?;
    let service = &ctx.state.service;
    let staged = service.write_data(bucket, key, len, &mut body).await?;
    let Some(digests) = body.digests().cloned() else {
        service.discard(staged);
        return Err(S3Error::IncompleteBody);
    };
    meta.etag = hex::encode(digests.md5);
    if let Some((alg, value)) = &digests.checksum {
        meta.checksums.insert(alg.name().to_string(), value.clone());
    }
    let rec = service.commit(bucket, key, staged, meta, &cond).await?;
    metrics::counter!("cairn_s3_bytes_in_total").increment(len);
    Ok(written_response(&rec.meta.etag, digests.checksum.as_ref()))
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
    let current = ctx.state.service.catalog.object(bucket, key)?;
    cond.check(current.as_ref())?;
    Ok(cond)
}

fn etag_matches(list: &str, etag: &str) -> bool {
    list.split(',')
        .map(|e| e.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|e| e == "*" || e == etag)
}

fn parse_http_date(v: &str) -> Option<i64> {
    httpdate::parse_http_date(v.trim())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
}

/// Evaluates read preconditions (`If-Match`, `If-None-Match`, `If-Modified-Since`,
/// `If-Unmodified-Since`, or their `x-amz-copy-source-` forms) as S3 does.
pub fn check_read_preconditions(
    h: &HeaderMap,
    prefix: &str,
    rec: &ObjectRecord,
) -> Result<(), S3Error> {
    let get = |n: &str| header(h, &format!("{prefix}{n}"));
    let modified_s = rec.modified_ms / 1000;
    let if_match = get("if-match");
    let if_none_match = get("if-none-match");
    if let Some(m) = if_match {
        if !etag_matches(m, &rec.meta.etag) {
            return Err(S3Error::PreconditionFailed);
        }
    } else if let Some(t) = get("if-unmodified-since").and_then(parse_http_date) {
        if modified_s > t / 1000 {
            return Err(S3Error::PreconditionFailed);
        }
    }
    let not_modified = if prefix.is_empty() {
        S3Error::NotModified
    } else {
        S3Error::PreconditionFailed
    };
    if let Some(m) = if_none_match {
        if etag_matches(m, &rec.meta.etag) {
            return Err(not_modified);
        }
    } else if let Some(t) = get("if-modified-since").and_then(parse_http_date) {
        if modified_s <= t / 1000 {
            return Err(not_modified);
        }
    }
    Ok(())
}

fn insert(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// A parsed `Range` header, resolved against the object size.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeSpec {
    /// No usable range: the whole object.
    Full,
    /// Bytes `start..=end`.
    Bytes(u64, u64),
}

/// Resolves a `Range` header. Unparsable or multi-range headers are ignored (whole
/// object), as S3 does; a syntactically valid but unsatisfiable range is InvalidRange.
pub fn parse_range(value: Option<&str>, size: u64) -> Result<RangeSpec, S3Error> {
    let Some(v) = value else {
        return Ok(RangeSpec::Full);
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(RangeSpec::Full);
    };
    if spec.contains(',') {
        return Ok(RangeSpec::Full);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(RangeSpec::Full);
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else {
            return Ok(RangeSpec::Full);
        };
        if n == 0 || size == 0 {
            return Err(S3Error::InvalidRange);
        }
        return Ok(RangeSpec::Bytes(size.saturating_sub(n), size - 1));
    }
    let Ok(start) = a.parse::<u64>() else {
        return Ok(RangeSpec::Full);
    };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e,
            _ => return Ok(RangeSpec::Full),
        }
    };
    if start >= size {
        return Err(S3Error::InvalidRange);
    }
    Ok(RangeSpec::Bytes(start, end.min(size - 1)))
}

fn object_headers(h: &mut HeaderMap, rec: &ObjectRecord, checksum_mode: bool, ranged: bool) {
    insert(h, "etag", &format!("\"{}\"", rec.meta.etag));
    insert(
        h,
        "last-modified",
        &httpdate::fmt_http_date(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(rec.modified_ms.max(0) as u64),
        ),
    );
    insert(
        h,
        "content-type",
        rec.meta
            .content_type
            .as_deref()
            .unwrap_or("binary/octet-stream"),
    );
    insert(h, "accept-ranges", "bytes");
    for (name, value) in &rec.meta.headers {
        if let Ok(n) = http::HeaderName::from_bytes(name.as_bytes()) {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(n, v);
            }
        }
    }
    for (name, value) in &rec.meta.user_meta {
        if let Ok(n) = http::HeaderName::from_bytes(format!("x-amz-meta-{name}").as_bytes()) {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(n, v);
            }
        }
    }
    if checksum_mode && !ranged {
        for (alg, value) in &rec.meta.checksums {
            if let Some(a) = Algorithm::parse(alg) {
                insert(h, a.header(), value);
            }
        }
        let kind = rec
            .meta
            .checksums
            .get("type")
            .map(String::as_str)
            .unwrap_or("FULL_OBJECT");
        if rec
            .meta
            .checksums
            .keys()
            .any(|k| Algorithm::parse(k).is_some())
        {
            insert(h, "x-amz-checksum-type", kind);
        }
    }
}

/// Bytes `start..end` of part `n` (1-based) of an object: its n-th segment. An object
/// written by a single PUT has one part.
fn part_bounds(rec: &ObjectRecord, n: u32) -> Result<(u64, u64), S3Error> {
    let idx = n as usize - 1;
    if rec.segments.is_empty() && idx == 0 {
        return Ok((0, 0));
    }
    let seg = rec.segments.get(idx).ok_or(S3Error::InvalidPartNumber)?;
    let start: u64 = rec.segments[..idx].iter().map(|s| s.len).sum();
    Ok((start, start + seg.len))
}

/// GetObject and HeadObject (with Range, partNumber and the conditional headers).
pub async fn get_object(
    ctx: &Ctx,
    bucket: &str,
    key: &str,
    head: bool,
) -> Result<Response, S3Error> {
    require_bucket(ctx, bucket)?;
    check_version_id(ctx.query.get("versionId").map(String::as_str))?;
    let rec = ctx
        .state
        .service
        .catalog
        .object(bucket, key)?
        .ok_or(S3Error::NoSuchKey)?;
    check_read_preconditions(&ctx.headers, "", &rec)?;
    let part = match ctx.query.get("partNumber") {
        Some(_) => Some(super::multipart::part_number(ctx)?),
        None => None,
    };
    let (start, end, partial) = match part {
        Some(n) => {
            let (a, b) = part_bounds(&rec, n)?;
            (a, b, rec.segments.len() > 1)
        }
        None => match parse_range(header(&ctx.headers, "range"), rec.size)? {
            RangeSpec::Full => (0, rec.size, false),
            RangeSpec::Bytes(a, b) => (a, b + 1, true),
        },
    };
    let checksum_mode = header(&ctx.headers, "x-amz-checksum-mode")
        .is_some_and(|v| v.eq_ignore_ascii_case("enabled"));
    let body = if head || start == end {
        Body::empty()
    } else {
        let mut stream = Box::pin(ctx.state.service.read(&rec, start, end));
        // Fail with a proper error if not even the first bytes can be read.
        let first = match stream.next().await {
            Some(Ok(b)) => b,
            Some(Err(e)) => return Err(e.into()),
            None => return Err(S3Error::Internal("object read ended early".into())),
        };
        metrics::counter!("cairn_s3_bytes_out_total").increment(end - start);
        let rest = stream.map(|r| r.map_err(std::io::Error::other));
        Body::from_stream(
            futures::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(rest),
        )
    };
    let mut resp = Response::new(body);
    if partial {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    let h = resp.headers_mut();
    object_headers(h, &rec, checksum_mode, partial);
    insert(h, "content-length", &(end - start).to_string());
    if partial && end > start {
        insert(
            h,
            "content-range",
            &format!("bytes {}-{}/{}", start, end - 1, rec.size),
        );
    }
    if part.is_some() {
        insert(
            h,
            "x-amz-mp-parts-count",
            &rec.segments.len().max(1).to_string(),
        );
    }
    Ok(resp)
}

/// DeleteObject: succeeds whether or not the key exists.
pub async fn delete_object(ctx: &Ctx, bucket: &str, key: &str) -> Result<Response, S3Error> {
    require_bucket(ctx, bucket)?;
    check_version_id(ctx.query.get("versionId").map(String::as_str))?;
    ctx.state.service.delete(bucket, key).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_like_s3() {
        assert_eq!(parse_range(None, 10).expect("ok"), RangeSpec::Full);
        assert_eq!(
            parse_range(Some("bytes=0-0"), 10).expect("ok"),
            RangeSpec::Bytes(0, 0)
        );
        assert_eq!(
            parse_range(Some("bytes=2-"), 10).expect("ok"),
            RangeSpec::Bytes(2, 9)
        );
        assert_eq!(
            parse_range(Some("bytes=-3"), 10).expect("ok"),
            RangeSpec::Bytes(7, 9)
        );
        assert_eq!(
            parse_range(Some("bytes=-30"), 10).expect("ok"),
            RangeSpec::Bytes(0, 9)
        );
        assert_eq!(
            parse_range(Some("bytes=5-100"), 10).expect("ok"),
            RangeSpec::Bytes(5, 9)
        );
        assert!(parse_range(Some("bytes=10-"), 10).is_err());
        assert!(parse_range(Some("bytes=0-0"), 0).is_err());
        assert_eq!(
            parse_range(Some("bytes=5-2"), 10).expect("ok"),
            RangeSpec::Full
        );
        assert_eq!(
            parse_range(Some("items=1-2"), 10).expect("ok"),
            RangeSpec::Full
        );
    }
}
