//! CopyObject and UploadPartCopy: the source is read through the decoder (verified,
//! rebuilt if needed) and written as new shards, streaming — never held in memory.

use axum::body::Body;
use axum::response::Response;
use futures::StreamExt;
use percent_encoding::percent_decode_str;

use super::body::{CheckedBody, MAX_PUT_SIZE};
use super::multipart::{record_part, PartTarget};
use super::object::{check_read_preconditions, check_version_id};
use super::sigv4::Payload;
use super::write::{check_write_preconditions, meta_from_headers, MAX_KEY_LEN};
use super::{xml, Ctx};
use crate::error::S3Error;
use cairn_store::ObjectRecord;

/// Parses an `x-amz-copy-source` value (`[/]bucket/key[?versionId=...]`, percent-encoded)
/// into bucket and key, leaving any version id aside.
pub fn parse_copy_source(raw: &str) -> Result<(String, String), S3Error> {
    parse_copy_source_version(raw).map(|(b, k, _)| (b, k))
}

/// Parses an `x-amz-copy-source` value into bucket, key and version id (if given).
pub fn parse_copy_source_version(raw: &str) -> Result<(String, String, Option<String>), S3Error> {
    let (raw, version) = match raw.split_once("?versionId=") {
        Some((p, v)) => (p, Some(v.to_string())),
        None => (raw, None),
    };
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| S3Error::InvalidArgument("copy source is not valid UTF-8".into()))?;
    let path = decoded.strip_prefix('/').unwrap_or(&decoded);
    let (bucket, key) = path
        .split_once('/')
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
        .ok_or_else(|| S3Error::InvalidArgument("copy source must be bucket/key".into()))?;
    Ok((bucket.to_string(), key.to_string(), version))
}

/// Resolves `x-amz-copy-source-range` (`bytes=a-b`, both inclusive) against a source of
/// `size` bytes into `start..end`; no header means the whole source.
pub fn parse_copy_range(value: Option<&str>, size: u64) -> Result<(u64, u64), S3Error> {
    let Some(r) = value else {
        return Ok((0, size));
    };
    let spec = r
        .trim()
        .strip_prefix("bytes=")
        .ok_or_else(|| S3Error::InvalidArgument("bad copy range".into()))?;
    let (a, b) = spec
        .split_once('-')
        .ok_or_else(|| S3Error::InvalidArgument("bad copy range".into()))?;
    let (a, b): (u64, u64) = match (a.trim().parse(), b.trim().parse()) {
        (Ok(a), Ok(b)) if a <= b => (a, b),
        _ => return Err(S3Error::InvalidArgument("bad copy range".into())),
    };
    if b >= size {
        return Err(S3Error::InvalidRange);
    }
    Ok((a, b + 1))
}

/// The source object named by `x-amz-copy-source`, after its conditions.
fn source(ctx: &Ctx) -> Result<(String, String, ObjectRecord), S3Error> {
    let raw = ctx
        .header("x-amz-copy-source")
        .ok_or_else(|| S3Error::InvalidArgument("missing copy source".into()))?;
    let (bucket, key, version) = parse_copy_source_version(raw)?;
    check_version_id(version.as_deref())?;
    ctx.state.service.bucket(&bucket)?;
    let rec = ctx.state.service.object(&bucket, &key)?;
    check_read_preconditions(&ctx.headers, "x-amz-copy-source-", &rec)?;
    Ok((bucket, key, rec))
}

/// A checked body streaming `start..end` of `rec` (MD5 and length computed on the way).
fn source_body(
    ctx: &Ctx,
    rec: &ObjectRecord,
    start: u64,
    end: u64,
) -> Result<CheckedBody, S3Error> {
    let stream = ctx
        .state
        .service
        .read(rec, start, end)
        .map(|r| r.map_err(std::io::Error::other));
    CheckedBody::new(
        Body::from_stream(stream),
        &http::HeaderMap::new(),
        &Payload::Unsigned,
        end - start,
    )
}

fn copy_result(root: &str, etag: &str, modified_ms: i64) -> Response {
    let doc = xml::CopyResult {
        xmlns: xml::Namespace,
        last_modified: modified_ms,
        etag: etag.to_string(),
    };
    xml::response_with_root(root, &doc)
}

/// CopyObject (metadata directive COPY or REPLACE).
pub async fn copy_object(ctx: &Ctx, bucket: &str, key: &str) -> Result<Response, S3Error> {
    if key.len() > MAX_KEY_LEN {
        return Err(S3Error::KeyTooLong);
    }
    let (src_bucket, src_key, rec) = source(ctx)?;
    if rec.size > MAX_PUT_SIZE {
        return Err(S3Error::InvalidRequest(
            "The specified copy source is larger than the maximum allowable size for a copy source: 5368709120".into(),
        ));
    }
    let replace = match ctx
        .header("x-amz-metadata-directive")
        .map(|d| d.to_ascii_uppercase())
    {
        None => false,
        Some(d) if d == "COPY" => false,
        Some(d) if d == "REPLACE" => true,
        Some(d) => {
            return Err(S3Error::InvalidArgument(format!(
                "unknown metadata directive {d:?}"
            )))
        }
    };
    // As S3: an in-place copy must change something; a storage class counts (`rclone
    // settier`, `aws s3 cp --storage-class` on the same key).
    let changes_class = ctx.header("x-amz-storage-class").is_some();
    if !replace && !changes_class && src_bucket == bucket && src_key == key {
        return Err(S3Error::InvalidRequest(
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata".into(),
        ));
    }
    let replaced = if replace {
        Some(meta_from_headers(&ctx.headers)?)
    } else {
        None
    };
    let cond = check_write_preconditions(ctx, bucket, key)?;
    let mut body = source_body(ctx, &rec, 0, rec.size)?;
    let service = &ctx.state.service;
    let staged = service.write_data(bucket, key, rec.size, &mut body).await?;
    let Some(digests) = body.digests().cloned() else {
        service.discard(staged);
        return Err(S3Error::Internal("copy source ended early".into()));
    };
    let mut meta = replaced.unwrap_or_else(|| rec.meta.clone());
    meta.etag = hex::encode(digests.md5);
    if !replace {
        // A multipart source's composite checksum does not describe the single-part copy.
        meta.checksum = None;
    }
    let new = service.commit(bucket, key, staged, meta, &cond).await?;
    Ok(copy_result(
        "CopyObjectResult",
        &new.meta.etag,
        new.modified_ms,
    ))
}

/// UploadPartCopy (with `x-amz-copy-source-range`).
pub async fn upload_part_copy(ctx: &Ctx, target: PartTarget) -> Result<Response, S3Error> {
    let (_, _, rec) = source(ctx)?;
    let (start, end) = parse_copy_range(ctx.header("x-amz-copy-source-range"), rec.size)?;
    if end - start > MAX_PUT_SIZE {
        return Err(S3Error::EntityTooLarge);
    }
    let mut body = source_body(ctx, &rec, start, end)?;
    if let Some(alg) = target.algorithm() {
        body.ensure_checksum(alg)?;
    }
    let service = &ctx.state.service;
    let segment = service
        .write_part(target.upload, &target.record, end - start, &mut body)
        .await?;
    let part = record_part(ctx, &target, segment, body.digests().cloned()).await?;
    Ok(copy_result("CopyPartResult", &part.etag, part.modified_ms))
}
