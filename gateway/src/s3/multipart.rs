//! Multipart uploads: Create, UploadPart, Complete, Abort, ListParts, ListMultipartUploads.
//!
//! The upload id is the object id the parts are written under; each part is a segment.
//! Completing writes one object record pointing at the chosen parts' segments, in order,
//! so nothing is copied and nothing of an unfinished upload is ever visible.

use super::digest::Md5;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use cairn_common::ids::ObjectId;

use super::body::{declared_length, CheckedBody, Digests};
use super::bucket::require_bucket;
use super::checksum::Algorithm;
use super::object::{check_write_preconditions, meta_from_headers, written_response, MAX_KEY_LEN};
use super::xml::CompletePart;
use super::{xml, Ctx};
use crate::error::S3Error;
use crate::store::catalog::{CompletedRecord, PartRecord, UploadRecord};
use crate::store::service::now_ms;

/// Smallest part size except for the last part.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Highest part number.
pub const MAX_PART_NUMBER: u32 = 10_000;
/// Largest CompleteMultipartUpload document accepted.
const MAX_COMPLETE_BODY: usize = 4 * 1024 * 1024;

/// Parses and checks `uploadId` against the upload's bucket and key.
pub fn upload_of(ctx: &Ctx, bucket: &str, key: &str) -> Result<(ObjectId, UploadRecord), S3Error> {
    let id: ObjectId = ctx
        .query
        .get("uploadId")
        .and_then(|s| s.parse().ok())
        .ok_or(S3Error::NoSuchUpload)?;
    let rec = ctx
        .state
        .service
        .catalog
        .upload(&id)?
        .ok_or(S3Error::NoSuchUpload)?;
    if rec.bucket != bucket || rec.key != key {
        return Err(S3Error::NoSuchUpload);
    }
    Ok((id, rec))
}

fn upload_algorithm(rec: &UploadRecord) -> Option<Algorithm> {
    rec.checksum_algorithm.as_deref().and_then(Algorithm::parse)
}

/// Held from counting a bucket's open uploads to registering a new one, so concurrent
/// CreateMultipartUploads cannot together pass `--max-uploads-per-bucket` (each holds it
/// for one catalog insert and flush).
static CREATE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// CreateMultipartUpload.
pub async fn create(ctx: &Ctx, bucket: &str, key: &str) -> Result<Response, S3Error> {
    require_bucket(ctx, bucket)?;
    if key.len() > MAX_KEY_LEN {
        return Err(S3Error::KeyTooLong);
    }
    let meta = meta_from_headers(&ctx.headers)?;
    let algorithm = match ctx.header("x-amz-checksum-algorithm") {
        Some(a) => Some(Algorithm::parse(a).ok_or_else(|| {
            S3Error::InvalidArgument(format!("unsupported checksum algorithm {a:?}"))
        })?),
        None => None,
    };
    let checksum_type = match (
        ctx.header("x-amz-checksum-type")
            .map(|t| t.to_ascii_uppercase()),
        algorithm,
    ) {
        (Some(t), Some(a)) => {
            if t != "COMPOSITE" && t != "FULL_OBJECT" {
                return Err(S3Error::InvalidArgument(format!(
                    "bad x-amz-checksum-type {t:?}"
                )));
            }
            if t == "COMPOSITE" && a == Algorithm::Crc64Nvme {
                return Err(S3Error::InvalidRequest(
                    "CRC64NVME supports only the FULL_OBJECT checksum type".into(),
                ));
            }
            if t == "FULL_OBJECT" && a.crc_params().is_none() {
                return Err(S3Error::InvalidRequest(format!(
                    "{} does not support FULL_OBJECT",
                    a.name()
                )));
            }
            Some(t)
        }
        (None, Some(Algorithm::Crc64Nvme)) => Some("FULL_OBJECT".to_string()),
        (None, Some(_)) => Some("COMPOSITE".to_string()),
        (_, None) => None,
    };
    let rec = UploadRecord {
        bucket: bucket.to_string(),
        key: key.to_string(),
        meta,
        created_ms: now_ms(),
        checksum_algorithm: algorithm.map(|a| a.name().to_string()),
        checksum_type: checksum_type.clone(),
    };
    let id = {
        let _one_at_a_time = CREATE_LOCK.lock().await;
        let limit = ctx.state.max_uploads_per_bucket;
        if ctx.state.service.catalog.count_uploads(bucket, limit)? >= limit {
            return Err(S3Error::TooManyUploads(limit));
        }
        ctx.state.service.create_upload(&rec).await?
    };
    let mut resp = xml::response(&xml::InitiateMultipartUploadResult {
        xmlns: xml::Namespace,
        bucket: bucket.to_string(),
        key: key.to_string(),
        upload_id: id.to_string(),
    });
    if let (Some(a), Some(t)) = (algorithm, checksum_type) {
        let h = resp.headers_mut();
        if let Ok(v) = a.name().parse() {
            h.insert("x-amz-checksum-algorithm", v);
        }
        if let Ok(v) = t.parse() {
            h.insert("x-amz-checksum-type", v);
        }
    }
    Ok(resp)
}

/// Parses `partNumber`.
pub fn part_number(ctx: &Ctx) -> Result<u32, S3Error> {
    parse_part_number(ctx.query.get("partNumber").map(String::as_str))
}

/// Parses a `partNumber` value: an integer in 1..=10000.
pub fn parse_part_number(value: Option<&str>) -> Result<u32, S3Error> {
    value
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| (1..=MAX_PART_NUMBER).contains(n))
        .ok_or_else(|| {
            S3Error::InvalidArgument(
                "Part number must be an integer between 1 and 10000, inclusive".into(),
            )
        })
}

/// UploadPart.
pub async fn upload_part(
    ctx: &Ctx,
    bucket: &str,
    key: &str,
    body: Body,
) -> Result<Response, S3Error> {
    require_bucket(ctx, bucket)?;
    let number = part_number(ctx)?;
    let (id, rec) = upload_of(ctx, bucket, key)?;
    let (len, mut body) = CheckedBody::for_upload(body, &ctx.headers, &ctx.payload)?;
    if let Some(alg) = upload_algorithm(&rec) {
        body.ensure_checksum(alg)?;
    }
    let service = &ctx.state.service;
    let segment = service.write_part(id, &rec, len, &mut body).await?;
    let digests = body.digests().cloned();
    let part = record_part(ctx, id, number, segment, digests.clone()).await?;
    metrics::counter!("cairn_s3_bytes_in_total").increment(len);
    let checksum = digests.as_ref().and_then(|d| d.checksum.as_ref());
    Ok(written_response(&part.etag, checksum))
}

/// Records a part whose data and checks are done (UploadPart and UploadPartCopy).
pub async fn record_part(
    ctx: &Ctx,
    upload: ObjectId,
    number: u32,
    segment: crate::store::catalog::SegmentRecord,
    digests: Option<Digests>,
) -> Result<PartRecord, S3Error> {
    let Some(digests) = digests else {
        return Err(S3Error::IncompleteBody);
    };
    let part = PartRecord {
        etag: hex::encode(digests.md5),
        size: segment.len,
        modified_ms: now_ms(),
        segment,
        checksum: digests.checksum.as_ref().map(|(_, v)| v.clone()),
    };
    // The upload may have been completed or aborted while the part streamed.
    if ctx.state.service.catalog.upload(&upload)?.is_none() {
        return Err(S3Error::NoSuchUpload);
    }
    ctx.state.service.commit_part(upload, number, &part).await?;
    Ok(part)
}

/// Parses a CompleteMultipartUpload document into its parts (at least one).
pub fn parse_complete(raw: &[u8]) -> Result<Vec<CompletePart>, S3Error> {
    let req: xml::CompleteMultipartUpload = xml::parse(raw)?;
    if req.parts.is_empty() {
        return Err(S3Error::MalformedXml);
    }
    Ok(req.parts)
}

fn normalize_etag(e: &str) -> String {
    e.trim().trim_matches('"').to_ascii_lowercase()
}

fn complete_response(bucket: &str, key: &str, done: &CompletedRecord) -> Response {
    // The stored algorithm is an `Algorithm::name()`, so it parses back.
    let checksum = done.checksum.as_ref().and_then(|(alg, value, kind)| {
        Algorithm::parse(alg).map(|a| (xml::Checksum::new(a, value.clone()), kind.clone()))
    });
    let (checksum, checksum_type) = checksum.unzip();
    xml::response(&xml::CompleteMultipartUploadResult {
        xmlns: xml::Namespace,
        location: format!("/{bucket}/{key}"),
        bucket: bucket.to_string(),
        key: key.to_string(),
        etag: done.etag.clone(),
        checksum,
        checksum_type,
    })
}

/// CompleteMultipartUpload (idempotent: a retry after success answers the same).
pub async fn complete(ctx: &Ctx, bucket: &str, key: &str, body: Body) -> Result<Response, S3Error> {
    require_bucket(ctx, bucket)?;
    let id: ObjectId = ctx
        .query
        .get("uploadId")
        .and_then(|s| s.parse().ok())
        .ok_or(S3Error::NoSuchUpload)?;
    let service = &ctx.state.service;
    let Some(rec) = service.catalog.upload(&id)? else {
        if let Some(done) = service.catalog.completed(&id)? {
            if done.bucket == bucket && done.key == key {
                // The first attempt may have committed but failed to store the manifest.
                service.republish_manifest(bucket, key, &id).await?;
                return Ok(complete_response(bucket, key, &done));
            }
        }
        return Err(S3Error::NoSuchUpload);
    };
    if rec.bucket != bucket || rec.key != key {
        return Err(S3Error::NoSuchUpload);
    }
    let len = declared_length(&ctx.headers, &ctx.payload).unwrap_or(MAX_COMPLETE_BODY as u64);
    let raw = CheckedBody::new(body, &ctx.headers, &ctx.payload, len)?
        .without_checksum_headers()
        .collect(MAX_COMPLETE_BODY)
        .await?;
    let parts = parse_complete(&raw)?;
    let cond = check_write_preconditions(ctx, bucket, key)?;
    let stored = service.catalog.parts(&id)?;
    let mut chosen = Vec::with_capacity(parts.len());
    let mut last = 0u32;
    for (i, p) in parts.iter().enumerate() {
        if p.number <= last {
            return Err(S3Error::InvalidPartOrder);
        }
        last = p.number;
        let part = stored
            .iter()
            .find(|(n, _)| *n == p.number)
            .map(|(_, r)| r)
            .ok_or(S3Error::InvalidPart)?;
        if normalize_etag(&p.etag) != part.etag {
            return Err(S3Error::InvalidPart);
        }
        if i + 1 < parts.len() && part.size < MIN_PART_SIZE {
            return Err(S3Error::EntityTooSmall);
        }
        chosen.push((p, part));
    }
    let mut md5 = Md5::new();
    for (_, part) in &chosen {
        let raw = hex::decode(&part.etag)
            .map_err(|_| S3Error::Internal("stored part ETag is not hex".into()))?;
        md5.update(&raw);
    }
    let etag = format!("{}-{}", hex::encode(md5.finalize()), chosen.len());
    let checksum = match upload_algorithm(&rec) {
        None => None,
        Some(alg) => {
            let mut values = Vec::with_capacity(chosen.len());
            for (p, part) in &chosen {
                let v = part.checksum.clone().ok_or(S3Error::InvalidPart)?;
                if let Some(given) = p.checksum(alg) {
                    if given.trim() != v {
                        return Err(S3Error::InvalidPart);
                    }
                }
                values.push((v, part.size));
            }
            let kind = rec
                .checksum_type
                .clone()
                .unwrap_or_else(|| "COMPOSITE".into());
            let value = if kind == "FULL_OBJECT" {
                alg.combine_parts(&values)
            } else {
                alg.composite(&values.into_iter().map(|(v, _)| v).collect::<Vec<_>>())
            }
            .ok_or_else(|| S3Error::Internal("could not combine part checksums".into()))?;
            if kind == "FULL_OBJECT" {
                if let Some(want) = ctx.header(alg.header()) {
                    if want.trim() != value {
                        return Err(S3Error::ChecksumMismatch(alg.header()));
                    }
                }
            }
            Some((alg.name().to_string(), value, kind))
        }
    };
    let chosen_numbers: Vec<u32> = chosen.iter().map(|(p, _)| p.number).collect();
    let segments = chosen
        .iter()
        .map(|(_, part)| part.segment.clone())
        .collect();
    let unused = stored
        .iter()
        .filter(|(n, _)| !chosen_numbers.contains(n))
        .map(|(_, p)| p.segment.clone())
        .collect();
    let mut meta = rec.meta.clone();
    meta.etag = etag.clone();
    if let Some((alg, value, kind)) = &checksum {
        meta.checksums.insert(alg.clone(), value.clone());
        meta.checksums.insert("type".into(), kind.clone());
    }
    let done = CompletedRecord {
        bucket: bucket.to_string(),
        key: key.to_string(),
        etag,
        checksum,
        completed_ms: now_ms(),
    };
    service
        .complete_upload(id, segments, unused, meta, &done, &cond)
        .await?;
    Ok(complete_response(bucket, key, &done))
}

/// AbortMultipartUpload.
pub async fn abort(ctx: &Ctx, bucket: &str, key: &str) -> Result<Response, S3Error> {
    require_bucket(ctx, bucket)?;
    let (id, _) = upload_of(ctx, bucket, key)?;
    if !ctx.state.service.abort_upload(id).await? {
        return Err(S3Error::NoSuchUpload);
    }
    Ok(http::StatusCode::NO_CONTENT.into_response())
}

/// ListParts.
pub async fn list_parts(ctx: &Ctx, bucket: &str, key: &str) -> Result<Response, S3Error> {
    require_bucket(ctx, bucket)?;
    let (id, rec) = upload_of(ctx, bucket, key)?;
    let max: usize = ctx
        .query
        .get("max-parts")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
        .min(1000);
    let marker: u32 = ctx
        .query
        .get("part-number-marker")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let parts: Vec<(u32, PartRecord)> = ctx
        .state
        .service
        .catalog
        .parts(&id)?
        .into_iter()
        .filter(|(n, _)| *n > marker)
        .collect();
    let truncated = parts.len() > max;
    let page = &parts[..parts.len().min(max)];
    let alg = upload_algorithm(&rec);
    Ok(xml::response(&xml::ListPartsResult {
        xmlns: xml::Namespace,
        bucket: bucket.to_string(),
        key: key.to_string(),
        upload_id: id.to_string(),
        part_number_marker: marker,
        next_part_number_marker: page.last().map(|(n, _)| *n),
        max_parts: max,
        is_truncated: truncated,
        storage_class: xml::StorageClass::Standard,
        checksum_algorithm: alg.map(|a| a.name()),
        parts: page
            .iter()
            .map(|(n, p)| xml::Part {
                part_number: *n,
                last_modified: p.modified_ms,
                etag: p.etag.clone(),
                size: p.size,
                checksum: alg
                    .zip(p.checksum.clone())
                    .map(|(a, c)| xml::Checksum::new(a, c)),
            })
            .collect(),
    }))
}

/// ListMultipartUploads.
pub async fn list_uploads(ctx: &Ctx, bucket: &str) -> Result<Response, S3Error> {
    require_bucket(ctx, bucket)?;
    let prefix = ctx.query.get("prefix").map(String::as_str).unwrap_or("");
    let key_marker = ctx
        .query
        .get("key-marker")
        .map(String::as_str)
        .unwrap_or("");
    let id_marker = ctx
        .query
        .get("upload-id-marker")
        .map(String::as_str)
        .unwrap_or("");
    let max: usize = ctx
        .query
        .get("max-uploads")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
        .min(1000);
    let mut uploads: Vec<(String, String, i64)> = ctx
        .state
        .service
        .catalog
        .uploads()?
        .into_iter()
        .filter(|(_, r)| r.bucket == bucket && r.key.starts_with(prefix))
        .map(|(id, r)| (r.key, id.to_string(), r.created_ms))
        .filter(|(k, id, _)| {
            k.as_str() > key_marker
                || (k == key_marker && !id_marker.is_empty() && id.as_str() > id_marker)
        })
        .collect();
    uploads.sort();
    let truncated = uploads.len() > max;
    uploads.truncate(max);
    let (next_key_marker, next_upload_id_marker) = uploads
        .last()
        .map(|(k, id, _)| (k.clone(), id.clone()))
        .unzip();
    Ok(xml::response(&xml::ListMultipartUploadsResult {
        xmlns: xml::Namespace,
        bucket: bucket.to_string(),
        key_marker: key_marker.to_string(),
        upload_id_marker: id_marker.to_string(),
        next_key_marker,
        next_upload_id_marker,
        prefix: prefix.to_string(),
        max_uploads: max,
        is_truncated: truncated,
        uploads: uploads
            .into_iter()
            .map(|(key, upload_id, created)| xml::Upload {
                key,
                upload_id,
                initiated: created,
                storage_class: xml::StorageClass::Standard,
            })
            .collect(),
    }))
}
