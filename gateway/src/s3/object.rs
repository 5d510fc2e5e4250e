//! Object operations: PutObject, GetObject, HeadObject, DeleteObject.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode};

use super::body::CheckedBody;
use super::Ctx;
use crate::error::S3Error;
use cairn_store::{ChecksumKind, ObjectChecksum, ObjectRecord};

use super::write::{check_write_preconditions, meta_from_headers, written_response, MAX_KEY_LEN};

use super::header_str as header;

/// Refuses a `versionId` other than `null` (the id S3 gives objects of an unversioned
/// bucket): Cairn keeps no versions, so any other id is none it could have issued.
pub fn check_version_id(version: Option<&str>) -> Result<(), S3Error> {
    match version {
        None | Some("null") => Ok(()),
        Some(v) => Err(S3Error::InvalidVersionId(v.to_string())),
    }
}

/// PutObject: stream, erasure-code, verify, then commit.
pub async fn put_object(
    ctx: &Ctx,
    bucket: &str,
    key: &str,
    body: Body,
) -> Result<Response, S3Error> {
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
    meta.checksum = digests
        .checksum
        .as_ref()
        .map(|(algorithm, value)| ObjectChecksum {
            algorithm: *algorithm,
            value: value.clone(),
            kind: ChecksumKind::FullObject,
        });
    let rec = service.commit(bucket, key, staged, meta, &cond).await?;
    metrics::counter!("cairn_s3_bytes_in_total").increment(len);
    Ok(written_response(&rec.meta.etag, digests.checksum.as_ref()))
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
        if let Some(c) = &rec.meta.checksum {
            insert(h, c.algorithm.header(), &c.value);
            insert(h, "x-amz-checksum-type", c.kind.name());
        }
    }
}

/// GetObject and HeadObject (with Range, partNumber and the conditional headers).
pub async fn get_object(
    ctx: &Ctx,
    bucket: &str,
    key: &str,
    part: Option<u32>,
    head: bool,
) -> Result<Response, S3Error> {
    check_version_id(ctx.query.get("versionId").map(String::as_str))?;
    let rec = ctx.state.service.object(bucket, key)?;
    check_read_preconditions(&ctx.headers, "", &rec)?;
    let (start, end, partial) = match part {
        Some(n) => {
            let (a, b) = rec.part_bounds(n).ok_or(S3Error::InvalidPartNumber)?;
            (a, b, rec.part_count() > 1)
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
        insert(h, "x-amz-mp-parts-count", &rec.part_count().to_string());
    }
    Ok(resp)
}

/// DeleteObject: succeeds whether or not the key exists.
pub async fn delete_object(ctx: &Ctx, bucket: &str, key: &str) -> Result<Response, S3Error> {
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
