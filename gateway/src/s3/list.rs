//! ListObjects (V1) and ListObjectsV2.

use axum::response::Response;
use base64::Engine;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::{xml, Ctx};
use crate::error::S3Error;
use cairn_store::ListQuery;

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

/// ListObjects (V1, `v2 = false`) and ListObjectsV2.
pub async fn list_objects(ctx: &Ctx, bucket: &str, v2: bool) -> Result<Response, S3Error> {
    let prefix = param(ctx, "prefix").unwrap_or("");
    let delimiter = param(ctx, "delimiter").unwrap_or("");
    let max_keys: usize = match param(ctx, "max-keys") {
        Some(v) => v
            .parse()
            .map_err(|_| S3Error::InvalidArgument("max-keys must be an integer".into()))?,
        None => 1000,
    };
    let max_keys = max_keys.min(1000);
    let url = match param(ctx, "encoding-type") {
        None => false,
        Some("url") => true,
        Some(_) => {
            return Err(S3Error::InvalidArgument(
                "Invalid Encoding Method specified in Request".into(),
            ))
        }
    };
    let enc = |s: &str| {
        if url {
            utf8_percent_encode(s, URL_KEEP).to_string()
        } else {
            s.to_string()
        }
    };
    let token = param(ctx, "continuation-token");
    let after: Option<String> = if v2 {
        match token {
            Some(t) => Some(
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(t)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        S3Error::InvalidArgument(
                            "The continuation token provided is incorrect".into(),
                        )
                    })?,
            ),
            None => param(ctx, "start-after")
                .filter(|s| !s.is_empty())
                .map(String::from),
        }
    } else {
        param(ctx, "marker")
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    let page = ctx.state.service.list_objects(
        bucket,
        &ListQuery {
            prefix,
            delimiter,
            after: after.as_deref(),
            max: max_keys,
        },
    )?;

    let owner = &ctx.state.keys.access_key;
    let fetch_owner = !v2 || param(ctx, "fetch-owner") == Some("true");
    // Where the next page starts after, when there is one.
    let next = page.last.as_deref().filter(|_| page.truncated);
    let doc = xml::ListBucketResult {
        xmlns: xml::Namespace,
        name: bucket.to_string(),
        prefix: enc(prefix),
        delimiter: (!delimiter.is_empty()).then(|| enc(delimiter)),
        max_keys,
        encoding_type: url.then_some("url"),
        is_truncated: page.truncated,
        key_count: v2.then_some(page.objects.len() + page.prefixes.len()),
        continuation_token: token.filter(|_| v2).map(String::from),
        start_after: param(ctx, "start-after").filter(|_| v2).map(enc),
        next_continuation_token: next
            .filter(|_| v2)
            .map(|last| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last)),
        marker: (!v2).then(|| enc(param(ctx, "marker").unwrap_or(""))),
        next_marker: next.filter(|_| !v2).map(enc),
        contents: page
            .objects
            .iter()
            .map(|(key, rec)| xml::Contents {
                key: enc(key),
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
            .map(|p| xml::CommonPrefix { prefix: enc(p) })
            .collect(),
    };
    Ok(xml::response(&doc))
}
