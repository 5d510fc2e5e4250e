//! ListObjects (V1) and ListObjectsV2.

use axum::response::Response;
use base64::Engine;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::{xml, Ctx};
use crate::error::S3Error;
use cairn_store::{ListQuery, Page};

/// Characters S3's `encoding-type=url` leaves as they are.
const URL_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

fn param<'a>(ctx: &'a Ctx, name: &str) -> Option<&'a str> {
    ctx.query.get(name).map(String::as_str)
}

/// What a ListObjects request asks for, from its query.
struct ListRequest<'a> {
    v2: bool,
    prefix: &'a str,
    delimiter: &'a str,
    max_keys: usize,
    /// `encoding-type=url`: keys and prefixes in the answer are percent-encoded.
    url: bool,
    /// Where the listing resumes (decoded continuation token, start-after or marker).
    after: Option<String>,
}

impl<'a> ListRequest<'a> {
    fn parse(ctx: &'a Ctx, v2: bool) -> Result<Self, S3Error> {
        let max_keys: usize = match param(ctx, "max-keys") {
            Some(v) => v
                .parse()
                .map_err(|_| S3Error::InvalidArgument("max-keys must be an integer".into()))?,
            None => 1000,
        };
        let url = match param(ctx, "encoding-type") {
            None => false,
            Some("url") => true,
            Some(_) => {
                return Err(S3Error::InvalidArgument(
                    "Invalid Encoding Method specified in Request".into(),
                ))
            }
        };
        Ok(Self {
            v2,
            prefix: param(ctx, "prefix").unwrap_or(""),
            delimiter: param(ctx, "delimiter").unwrap_or(""),
            max_keys: max_keys.min(1000),
            url,
            after: resume_after(ctx, v2)?,
        })
    }

    /// A key or prefix as the answer carries it.
    fn enc(&self, s: &str) -> String {
        if self.url {
            utf8_percent_encode(s, URL_KEEP).to_string()
        } else {
            s.to_string()
        }
    }
}

/// The key a listing resumes after: V2's continuation token (base64 of the last key or
/// prefix of the page before) or `start-after`; V1's `marker`.
fn resume_after(ctx: &Ctx, v2: bool) -> Result<Option<String>, S3Error> {
    if !v2 {
        return Ok(param(ctx, "marker")
            .filter(|s| !s.is_empty())
            .map(String::from));
    }
    match param(ctx, "continuation-token") {
        Some(t) => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(t)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .map(Some)
            .ok_or_else(|| {
                S3Error::InvalidArgument("The continuation token provided is incorrect".into())
            }),
        None => Ok(param(ctx, "start-after")
            .filter(|s| !s.is_empty())
            .map(String::from)),
    }
}

/// ListObjects (V1, `v2 = false`) and ListObjectsV2.
pub async fn list_objects(ctx: &Ctx, bucket: &str, v2: bool) -> Result<Response, S3Error> {
    let req = ListRequest::parse(ctx, v2)?;
    let page = ctx.state.service.list_objects(
        bucket,
        &ListQuery {
            prefix: req.prefix,
            delimiter: req.delimiter,
            after: req.after.as_deref(),
            max: req.max_keys,
        },
    )?;
    Ok(xml::response(&list_document(ctx, bucket, &req, &page)))
}

/// The `ListBucketResult` of one page.
fn list_document(
    ctx: &Ctx,
    bucket: &str,
    req: &ListRequest<'_>,
    page: &Page,
) -> xml::ListBucketResult {
    let v2 = req.v2;
    let owner = &ctx.state.keys.access_key;
    let fetch_owner = !v2 || param(ctx, "fetch-owner") == Some("true");
    // Where the next page starts after, when there is one.
    let next = page.last.as_deref().filter(|_| page.truncated);
    xml::ListBucketResult {
        xmlns: xml::Namespace,
        name: bucket.to_string(),
        prefix: req.enc(req.prefix),
        delimiter: (!req.delimiter.is_empty()).then(|| req.enc(req.delimiter)),
        max_keys: req.max_keys,
        encoding_type: req.url.then_some("url"),
        is_truncated: page.truncated,
        key_count: v2.then_some(page.objects.len() + page.prefixes.len()),
        continuation_token: param(ctx, "continuation-token")
            .filter(|_| v2)
            .map(String::from),
        start_after: param(ctx, "start-after").filter(|_| v2).map(|s| req.enc(s)),
        next_continuation_token: next
            .filter(|_| v2)
            .map(|last| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last)),
        marker: (!v2).then(|| req.enc(param(ctx, "marker").unwrap_or(""))),
        next_marker: next.filter(|_| !v2).map(|s| req.enc(s)),
        contents: page
            .objects
            .iter()
            .map(|(key, rec)| xml::Contents {
                key: req.enc(key),
                last_modified: rec.modified_ms,
                etag: rec.meta.etag.clone(),
                size: rec.size,
                owner: fetch_owner.then(|| xml::Owner::new(owner)),
                storage_class: xml::StorageClass::Standard,
            })
            .collect(),
        common_prefixes: page
            .prefixes
            .iter()
            .map(|p| xml::CommonPrefix { prefix: req.enc(p) })
            .collect(),
    }
}
