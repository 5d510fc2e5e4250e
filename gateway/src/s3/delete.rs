//! DeleteObjects: batch delete with per-key results and quiet mode.

use axum::body::Body;
use axum::response::Response;

use super::body::{declared_length, CheckedBody};
use super::object::check_version_id;
use super::{xml, Ctx};
use crate::error::S3Error;

/// Most keys in one request.
const MAX_KEYS: usize = 1000;
/// Largest request document accepted.
const MAX_BODY: usize = 2 * 1024 * 1024;

/// Parses a DeleteObjects document into its quiet flag and keys (1 to 1000 of them).
pub fn parse_delete(raw: &[u8]) -> Result<(bool, Vec<String>), S3Error> {
    let (quiet, objects) = parse_delete_versions(raw)?;
    Ok((quiet, objects.into_iter().map(|(k, _)| k).collect()))
}

/// A key to delete and the `VersionId` it names, if any.
pub type VersionedKey = (String, Option<String>);

/// Parses a DeleteObjects document into its quiet flag and keys, each with the
/// `VersionId` it names, if any.
pub fn parse_delete_versions(raw: &[u8]) -> Result<(bool, Vec<VersionedKey>), S3Error> {
    let req: xml::Delete = xml::parse(raw)?;
    if req.objects.is_empty() || req.objects.len() > MAX_KEYS {
        return Err(S3Error::MalformedXml);
    }
    Ok((
        req.quiet,
        req.objects
            .into_iter()
            .map(|o| (o.key, o.version_id))
            .collect(),
    ))
}

/// DeleteObjects. The body's integrity header may be Content-MD5 or any
/// `x-amz-checksum-*` (what 2025+ SDKs send); both are verified by [`CheckedBody`].
pub async fn delete_objects(ctx: &Ctx, bucket: &str, body: Body) -> Result<Response, S3Error> {
    let len = declared_length(&ctx.headers, &ctx.payload)?;
    let raw = CheckedBody::new(body, &ctx.headers, &ctx.payload, len)?
        .collect(MAX_BODY)
        .await?;
    let (quiet, keys) = parse_delete_versions(&raw)?;
    let mut results = Vec::with_capacity(keys.len());
    for (key, version) in &keys {
        let deleted = match check_version_id(version.as_deref()) {
            Ok(()) => ctx
                .state
                .service
                .delete(bucket, key)
                .await
                .map_err(S3Error::from),
            Err(e) => Err(e),
        };
        match deleted {
            Ok(_) => {
                if !quiet {
                    results.push(xml::DeleteOutcome::Deleted { key: key.clone() });
                }
            }
            Err(e) => {
                let (code, _) = e.code_and_status();
                results.push(xml::DeleteOutcome::Error {
                    key: key.clone(),
                    code,
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(xml::response(&xml::DeleteResult {
        xmlns: xml::Namespace,
        results,
    }))
}
