//! ListObjects (V1) and ListObjectsV2.

use std::fmt::Write;

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

    let root = "ListBucketResult";
    let mut s = xml::document(root);
    xml::elem(&mut s, "Name", bucket);
    xml::elem(&mut s, "Prefix", &enc(prefix));
    if !delimiter.is_empty() {
        xml::elem(&mut s, "Delimiter", &enc(delimiter));
    }
    let _ = write!(s, "<MaxKeys>{max_keys}</MaxKeys>");
    if url {
        xml::elem(&mut s, "EncodingType", "url");
    }
    let _ = write!(s, "<IsTruncated>{}</IsTruncated>", page.truncated);
    if v2 {
        let _ = write!(
            s,
            "<KeyCount>{}</KeyCount>",
            page.objects.len() + page.prefixes.len()
        );
        if let Some(t) = token {
            xml::elem(&mut s, "ContinuationToken", t);
        }
        if let Some(sa) = param(ctx, "start-after") {
            xml::elem(&mut s, "StartAfter", &enc(sa));
        }
        if page.truncated {
            if let Some(last) = &page.last {
                let t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last);
                xml::elem(&mut s, "NextContinuationToken", &t);
            }
        }
    } else {
        xml::elem(&mut s, "Marker", &enc(param(ctx, "marker").unwrap_or("")));
        if page.truncated {
            if let Some(last) = &page.last {
                xml::elem(&mut s, "NextMarker", &enc(last));
            }
        }
    }
    let owner = &ctx.state.keys.access_key;
    let fetch_owner = !v2 || param(ctx, "fetch-owner") == Some("true");
    for (key, rec) in &page.objects {
        s.push_str("<Contents>");
        xml::elem(&mut s, "Key", &enc(key));
        xml::elem(&mut s, "LastModified", &xml::iso8601(rec.modified_ms));
        xml::elem(&mut s, "ETag", &format!("\"{}\"", rec.meta.etag));
        let _ = write!(s, "<Size>{}</Size>", rec.size);
        if fetch_owner {
            s.push_str("<Owner>");
            xml::elem(&mut s, "ID", owner);
            xml::elem(&mut s, "DisplayName", owner);
            s.push_str("</Owner>");
        }
        s.push_str("<StorageClass>STANDARD</StorageClass></Contents>");
    }
    for p in &page.prefixes {
        s.push_str("<CommonPrefixes>");
        xml::elem(&mut s, "Prefix", &enc(p));
        s.push_str("</CommonPrefixes>");
    }
    let _ = write!(s, "</{root}>");
    Ok(xml::response(s))
}
