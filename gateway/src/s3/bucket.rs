//! Bucket operations.

use axum::response::{IntoResponse, Response};
use http::StatusCode;

use super::{xml, Ctx};
use crate::error::S3Error;
use crate::store::catalog::BucketRecord;

/// Whether `name` follows S3's bucket naming rules.
pub fn valid_bucket_name(name: &str) -> bool {
    let b = name.as_bytes();
    if !(3..=63).contains(&b.len()) {
        return false;
    }
    let ok_char = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-';
    let edge = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !b.iter().all(|&c| ok_char(c)) || !edge(b[0]) || !edge(b[b.len() - 1]) {
        return false;
    }
    if name.contains("..") || name.contains(".-") || name.contains("-.") {
        return false;
    }
    name.parse::<std::net::Ipv4Addr>().is_err()
}

/// Fails with NoSuchBucket unless the bucket exists.
pub fn require_bucket(ctx: &Ctx, bucket: &str) -> Result<BucketRecord, S3Error> {
    ctx.state
        .service
        .catalog
        .bucket(bucket)?
        .ok_or(S3Error::NoSuchBucket)
}

/// ListBuckets.
pub async fn list_buckets(ctx: &Ctx) -> Result<Response, S3Error> {
    let buckets: Vec<(String, i64)> = ctx
        .state
        .service
        .catalog
        .list_buckets()?
        .into_iter()
        .map(|(n, r)| (n, r.created_ms))
        .collect();
    Ok(xml::response(xml::list_buckets(
        &ctx.state.keys.access_key,
        &buckets,
    )))
}

/// CreateBucket.
pub async fn create_bucket(ctx: &Ctx, bucket: &str) -> Result<Response, S3Error> {
    if !valid_bucket_name(bucket) {
        return Err(S3Error::InvalidBucketName);
    }
    let created = ctx.state.service.create_bucket(bucket).await?;
    if !created {
        return Err(S3Error::BucketAlreadyOwnedByYou);
    }
    Ok(([("location", format!("/{bucket}"))], "").into_response())
}

/// HeadBucket.
pub async fn head_bucket(ctx: &Ctx, bucket: &str) -> Result<Response, S3Error> {
    require_bucket(ctx, bucket)?;
    Ok(([("x-amz-bucket-region", ctx.state.region.clone())], "").into_response())
}

/// DeleteBucket: only when empty.
pub async fn delete_bucket(ctx: &Ctx, bucket: &str) -> Result<Response, S3Error> {
    require_bucket(ctx, bucket)?;
    if !ctx.state.service.catalog.bucket_is_empty(bucket)? {
        return Err(S3Error::BucketNotEmpty);
    }
    ctx.state.service.delete_bucket(bucket).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// GetBucketLocation: the configured region (empty for us-east-1, as S3 does).
pub async fn get_location(ctx: &Ctx, bucket: &str) -> Result<Response, S3Error> {
    require_bucket(ctx, bucket)?;
    let region = if ctx.state.region == "us-east-1" {
        ""
    } else {
        ctx.state.region.as_str()
    };
    let mut s = xml::document("LocationConstraint");
    s.push_str(&quick_xml::escape::escape(region));
    s.push_str("</LocationConstraint>");
    Ok(xml::response(s))
}

/// GetBucketVersioning: versioning is never enabled.
pub async fn get_versioning(ctx: &Ctx, bucket: &str) -> Result<Response, S3Error> {
    require_bucket(ctx, bucket)?;
    let mut s = xml::document("VersioningConfiguration");
    s.push_str("</VersioningConfiguration>");
    Ok(xml::response(s))
}

#[cfg(test)]
mod tests {
    use super::valid_bucket_name;

    #[test]
    fn bucket_names() {
        for ok in ["abc", "my-bucket.data", "a1b2c3"] {
            assert!(valid_bucket_name(ok), "{ok}");
        }
        for bad in [
            "ab",
            "ABC",
            "-abc",
            "abc-",
            "a..b",
            "192.168.1.1",
            "a_b",
            &"a".repeat(64),
        ] {
            assert!(!valid_bucket_name(bad), "{bad}");
        }
    }
}
