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
use super::write::{check_write_preconditions, meta_from_headers, written_response, MAX_KEY_LEN};
use super::xml::CompletePart;
use super::{xml, Ctx};
use crate::error::S3Error;
use cairn_store::checksum::Algorithm;
use cairn_store::{
    now_ms, ChecksumKind, CompletedRecord, ObjectChecksum, PartRecord, SegmentRecord, StoreError,
    UploadChecksum, UploadRecord,
};

/// Smallest part size except for the last part.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Largest CompleteMultipartUpload document accepted.
const MAX_COMPLETE_BODY: usize = 4 * 1024 * 1024;

/// The part an UploadPart or UploadPartCopy writes: its upload (in progress, into the
/// request's bucket and key) and its number.
pub struct PartTarget {
    /// The upload's id.
    pub upload: ObjectId,
    /// The upload.
    pub record: UploadRecord,
    /// Part number.
    pub number: u32,
}

impl PartTarget {
    /// Finds the upload a part is for.
    pub fn find(
        ctx: &Ctx,
        bucket: &str,
        key: &str,
        upload: ObjectId,
        number: u32,
    ) -> Result<Self, S3Error> {
        let record = ctx.state.service.upload(bucket, key, &upload)?;
        Ok(Self {
            upload,
            record,
            number,
        })
    }

    /// The checksum algorithm every part of the upload must carry.
    pub fn algorithm(&self) -> Option<Algorithm> {
        self.record.checksum.map(|c| c.algorithm)
    }
}

/// The checksum a CreateMultipartUpload asks for (`x-amz-checksum-algorithm` and
/// `x-amz-checksum-type`), checked as S3 does.
fn upload_checksum(ctx: &Ctx) -> Result<Option<UploadChecksum>, S3Error> {
    let Some(name) = ctx.header("x-amz-checksum-algorithm") else {
        return Ok(None);
    };
    let algorithm = Algorithm::parse(name).ok_or_else(|| {
        S3Error::InvalidArgument(format!("unsupported checksum algorithm {name:?}"))
    })?;
    let kind = match ctx.header("x-amz-checksum-type") {
        Some(t) => ChecksumKind::parse(t)
            .ok_or_else(|| S3Error::InvalidArgument(format!("bad x-amz-checksum-type {t:?}")))?,
        None if algorithm == Algorithm::Crc64Nvme => ChecksumKind::FullObject,
        None => ChecksumKind::Composite,
    };
    match kind {
        ChecksumKind::Composite if algorithm == Algorithm::Crc64Nvme => Err(
            S3Error::InvalidRequest("CRC64NVME supports only the FULL_OBJECT checksum type".into()),
        ),
        ChecksumKind::FullObject if algorithm.crc_params().is_none() => Err(
            S3Error::InvalidRequest(format!("{} does not support FULL_OBJECT", algorithm.name())),
        ),
        _ => Ok(Some(UploadChecksum { algorithm, kind })),
    }
}

/// CreateMultipartUpload.
pub async fn create(ctx: &Ctx, bucket: &str, key: &str) -> Result<Response, S3Error> {
    if key.len() > MAX_KEY_LEN {
        return Err(S3Error::KeyTooLong);
    }
    let meta = meta_from_headers(&ctx.headers)?;
    let checksum = upload_checksum(ctx)?;
    let rec = UploadRecord {
        bucket: bucket.to_string(),
        key: key.to_string(),
        meta,
        created_ms: now_ms(),
        checksum,
    };
    let id = ctx.state.service.create_upload(&rec).await?;
    let mut resp = xml::response(&xml::InitiateMultipartUploadResult {
        xmlns: xml::Namespace,
        bucket: bucket.to_string(),
        key: key.to_string(),
        upload_id: id.to_string(),
    });
    if let Some(c) = checksum {
        let h = resp.headers_mut();
        h.insert(
            "x-amz-checksum-algorithm",
            http::HeaderValue::from_static(c.algorithm.name()),
        );
        h.insert(
            "x-amz-checksum-type",
            http::HeaderValue::from_static(c.kind.name()),
        );
    }
    Ok(resp)
}

/// UploadPart.
pub async fn upload_part(ctx: &Ctx, target: PartTarget, body: Body) -> Result<Response, S3Error> {
    let (len, mut body) = CheckedBody::for_upload(body, &ctx.headers, &ctx.payload)?;
    if let Some(alg) = target.algorithm() {
        body.ensure_checksum(alg)?;
    }
    let service = &ctx.state.service;
    let segment = service
        .write_part(target.upload, &target.record, len, &mut body)
        .await?;
    let digests = body.digests().cloned();
    let part = record_part(ctx, &target, segment, digests.clone()).await?;
    metrics::counter!("cairn_s3_bytes_in_total").increment(len);
    let checksum = digests.as_ref().and_then(|d| d.checksum.as_ref());
    Ok(written_response(&part.etag, checksum))
}

/// Records a part whose data and checks are done (UploadPart and UploadPartCopy); the
/// upload may have been completed or aborted while the part streamed.
pub async fn record_part(
    ctx: &Ctx,
    target: &PartTarget,
    segment: SegmentRecord,
    digests: Option<Digests>,
) -> Result<PartRecord, S3Error> {
    let Some(digests) = digests else {
        ctx.state.service.discard_segment(target.upload, segment);
        return Err(S3Error::IncompleteBody);
    };
    let part = PartRecord {
        etag: hex::encode(digests.md5),
        size: segment.len,
        modified_ms: now_ms(),
        segment,
        checksum: digests.checksum.as_ref().map(|(_, v)| v.clone()),
    };
    ctx.state
        .service
        .commit_part(target.upload, target.number, &part)
        .await?;
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
    let (checksum, checksum_type) = done
        .checksum
        .as_ref()
        .map(|c| {
            (
                xml::Checksum::new(c.algorithm, c.value.clone()),
                c.kind.name().to_string(),
            )
        })
        .unzip();
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
pub async fn complete(
    ctx: &Ctx,
    bucket: &str,
    key: &str,
    upload: ObjectId,
    body: Body,
) -> Result<Response, S3Error> {
    let service = &ctx.state.service;
    let rec = match service.upload(bucket, key, &upload) {
        Ok(rec) => rec,
        Err(StoreError::NoSuchUpload) => {
            return match service.completed_upload(bucket, key, &upload).await? {
                Some(done) => Ok(complete_response(bucket, key, &done)),
                None => Err(S3Error::NoSuchUpload),
            }
        }
        Err(e) => return Err(e.into()),
    };
    let requested = read_complete_request(ctx, body).await?;
    let cond = check_write_preconditions(ctx, bucket, key)?;
    let stored = service.parts(&upload)?;
    let chosen = choose_parts(&requested, &stored)?;
    let mut meta = rec.meta.clone();
    meta.etag = multipart_etag(&chosen)?;
    meta.checksum = match rec.checksum {
        Some(c) => Some(object_checksum(ctx, c, &chosen)?),
        None => None,
    };
    let numbers: Vec<u32> = chosen.iter().map(|(p, _)| p.number).collect();
    let segments = chosen
        .iter()
        .map(|(_, part)| part.segment.clone())
        .collect();
    let unused = stored
        .iter()
        .filter(|(n, _)| !numbers.contains(n))
        .map(|(_, p)| p.segment.clone())
        .collect();
    let done = CompletedRecord {
        bucket: bucket.to_string(),
        key: key.to_string(),
        etag: meta.etag.clone(),
        checksum: meta.checksum.clone(),
        completed_ms: now_ms(),
    };
    service
        .complete_upload(upload, segments, unused, meta, &done, &cond)
        .await?;
    Ok(complete_response(bucket, key, &done))
}

/// Reads and parses the CompleteMultipartUpload document.
async fn read_complete_request(ctx: &Ctx, body: Body) -> Result<Vec<CompletePart>, S3Error> {
    let len = declared_length(&ctx.headers, &ctx.payload).unwrap_or(MAX_COMPLETE_BODY as u64);
    let raw = CheckedBody::new(body, &ctx.headers, &ctx.payload, len)?
        .without_checksum_headers()
        .collect(MAX_COMPLETE_BODY)
        .await?;
    parse_complete(&raw)
}

/// Each part the client listed with the recorded part it names: in ascending order,
/// ETags matching, every part but the last at least [`MIN_PART_SIZE`].
fn choose_parts<'a>(
    requested: &'a [CompletePart],
    stored: &'a [(u32, PartRecord)],
) -> Result<Vec<(&'a CompletePart, &'a PartRecord)>, S3Error> {
    let mut chosen = Vec::with_capacity(requested.len());
    let mut last = 0u32;
    for (i, p) in requested.iter().enumerate() {
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
        if i + 1 < requested.len() && part.size < MIN_PART_SIZE {
            return Err(S3Error::EntityTooSmall);
        }
        chosen.push((p, part));
    }
    Ok(chosen)
}

/// S3's multipart ETag: the MD5 of the parts' MD5s, then `-` and the part count.
fn multipart_etag(chosen: &[(&CompletePart, &PartRecord)]) -> Result<String, S3Error> {
    let mut md5 = Md5::new();
    for (_, part) in chosen {
        let raw = hex::decode(&part.etag)
            .map_err(|_| S3Error::Internal("stored part ETag is not hex".into()))?;
        md5.update(&raw);
    }
    Ok(format!("{}-{}", hex::encode(md5.finalize()), chosen.len()))
}

/// The object's checksum from its parts' (each must match what the client listed), and
/// for a FULL_OBJECT checksum, what the client says the whole object has.
fn object_checksum(
    ctx: &Ctx,
    upload: UploadChecksum,
    chosen: &[(&CompletePart, &PartRecord)],
) -> Result<ObjectChecksum, S3Error> {
    let alg = upload.algorithm;
    let mut values = Vec::with_capacity(chosen.len());
    for (p, part) in chosen {
        let v = part.checksum.clone().ok_or(S3Error::InvalidPart)?;
        if p.checksum(alg).is_some_and(|given| given.trim() != v) {
            return Err(S3Error::InvalidPart);
        }
        values.push((v, part.size));
    }
    let value = match upload.kind {
        ChecksumKind::FullObject => alg.combine_parts(&values),
        ChecksumKind::Composite => {
            alg.composite(&values.into_iter().map(|(v, _)| v).collect::<Vec<_>>())
        }
    }
    .ok_or_else(|| S3Error::Internal("could not combine part checksums".into()))?;
    if upload.kind == ChecksumKind::FullObject {
        if let Some(want) = ctx.header(alg.header()) {
            if want.trim() != value {
                return Err(S3Error::ChecksumMismatch(alg.header()));
            }
        }
    }
    Ok(ObjectChecksum {
        algorithm: alg,
        value,
        kind: upload.kind,
    })
}

/// AbortMultipartUpload.
pub async fn abort(
    ctx: &Ctx,
    bucket: &str,
    key: &str,
    upload: ObjectId,
) -> Result<Response, S3Error> {
    ctx.state.service.upload(bucket, key, &upload)?;
    if !ctx.state.service.abort_upload(upload).await? {
        return Err(S3Error::NoSuchUpload);
    }
    Ok(http::StatusCode::NO_CONTENT.into_response())
}

/// ListParts.
pub async fn list_parts(
    ctx: &Ctx,
    bucket: &str,
    key: &str,
    id: ObjectId,
) -> Result<Response, S3Error> {
    let rec = ctx.state.service.upload(bucket, key, &id)?;
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
        .parts(&id)?
        .into_iter()
        .filter(|(n, _)| *n > marker)
        .collect();
    let truncated = parts.len() > max;
    let page = &parts[..parts.len().min(max)];
    let alg = rec.checksum.map(|c| c.algorithm);
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
        .uploads_in(bucket)?
        .into_iter()
        .filter(|(_, r)| r.key.starts_with(prefix))
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
