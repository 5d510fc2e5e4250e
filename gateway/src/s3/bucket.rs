//! Bucket operations.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::StatusCode;

use super::body::{declared_length, CheckedBody};
use super::{xml, Ctx};
use crate::error::S3Error;

/// Largest CreateBucket body accepted (a real CreateBucketConfiguration is under 300
/// bytes).
const MAX_CREATE_BODY: usize = 16 * 1024;

/// Parses a CreateBucket body (`<CreateBucketConfiguration>`) into the location
/// constraint it names, if any; anything else is MalformedXML.
pub fn parse_create_bucket(raw: &[u8]) -> Result<Option<String>, S3Error> {
    let conf: xml::CreateBucketConfiguration =
        xml::parse_with_root(raw, "CreateBucketConfiguration")?;
    Ok(conf
        .location_constraint
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty()))
}

/// Whether `c` is shaped like an AWS region (`eu-west-1`, `us-gov-east-1`, or the old
/// `EU`).
fn looks_like_region(c: &str) -> bool {
    let parts: Vec<&str> = c.split('-').collect();
    c == "EU"
        || (parts.len() >= 3
            && parts.iter().all(|p| {
                !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            })
            && parts
                .last()
                .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit())))
}

/// A location constraint is fine when absent or the gateway's own region. As S3 does
/// on a regional endpoint, another region is IllegalLocationConstraintException, and a
/// value that is no region at all InvalidLocationConstraint.
pub fn check_location_constraint(constraint: Option<&str>, region: &str) -> Result<(), S3Error> {
    match constraint {
        None => Ok(()),
        Some(c) if c == region => Ok(()),
        Some(c) if looks_like_region(c) => Err(S3Error::IllegalLocationConstraint(c.into())),
        Some(c) => Err(S3Error::InvalidLocationConstraint(c.into())),
    }
}

/// Reads a CreateBucket body (at most [`MAX_CREATE_BODY`] bytes, checked against the
/// signature like any body) and checks its location constraint.
async fn check_create_body(ctx: &Ctx, body: Body) -> Result<(), S3Error> {
    let len = match declared_length(&ctx.headers, &ctx.payload) {
        Ok(n) => n,
        // No length and no chunked framing: no body at all.
        Err(S3Error::MissingContentLength)
            if ctx.headers.get(http::header::TRANSFER_ENCODING).is_none() =>
        {
            0
        }
        Err(e) => return Err(e),
    };
    if len > MAX_CREATE_BODY as u64 {
        return Err(S3Error::InvalidRequest(format!(
            "request body larger than {MAX_CREATE_BODY} bytes"
        )));
    }
    let raw = CheckedBody::new(body, &ctx.headers, &ctx.payload, len)?
        .collect(MAX_CREATE_BODY)
        .await?;
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let constraint = parse_create_bucket(&raw)?;
    check_location_constraint(constraint.as_deref(), &ctx.state.region)
}

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

/// ListBuckets.
pub async fn list_buckets(ctx: &Ctx) -> Result<Response, S3Error> {
    let buckets: Vec<(String, i64)> = ctx
        .state
        .service
        .list_buckets()?
        .into_iter()
        .map(|b| (b.name, b.created_ms))
        .collect();
    let doc = xml::ListAllMyBucketsResult {
        xmlns: xml::Namespace,
        owner: xml::Owner::new(&ctx.state.keys.access_key),
        buckets: xml::Buckets {
            bucket: buckets
                .into_iter()
                .map(|(name, created)| xml::Bucket {
                    name,
                    creation_date: created,
                })
                .collect(),
        },
    };
    Ok(xml::response(&doc))
}

/// CreateBucket (an optional CreateBucketConfiguration body, validated).
pub async fn create_bucket(ctx: &Ctx, bucket: &str, body: Body) -> Result<Response, S3Error> {
    if !valid_bucket_name(bucket) {
        return Err(S3Error::InvalidBucketName);
    }
    check_create_body(ctx, body).await?;
    let created = ctx.state.service.create_bucket(bucket).await?;
    if !created {
        return Err(S3Error::BucketAlreadyOwnedByYou);
    }
    Ok(([("location", format!("/{bucket}"))], "").into_response())
}

/// HeadBucket.
pub async fn head_bucket(ctx: &Ctx) -> Result<Response, S3Error> {
    Ok(([("x-amz-bucket-region", ctx.state.region.clone())], "").into_response())
}

/// DeleteBucket: only when empty.
pub async fn delete_bucket(ctx: &Ctx, bucket: &str) -> Result<Response, S3Error> {
    ctx.state.service.delete_bucket(bucket).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// GetBucketLocation: the configured region (empty for us-east-1, as S3 does).
pub async fn get_location(ctx: &Ctx) -> Result<Response, S3Error> {
    let region = if ctx.state.region == "us-east-1" {
        ""
    } else {
        ctx.state.region.as_str()
    };
    Ok(xml::response(&xml::LocationConstraint {
        xmlns: xml::Namespace,
        region: region.to_string(),
    }))
}

/// GetBucketVersioning: versioning is never enabled.
pub async fn get_versioning() -> Result<Response, S3Error> {
    Ok(xml::response(&xml::VersioningConfiguration {
        xmlns: xml::Namespace,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_bucket_bodies() {
        let doc = |c: &str| {
            format!(
                r#"<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LocationConstraint>{c}</LocationConstraint></CreateBucketConfiguration>"#
            )
        };
        assert_eq!(
            parse_create_bucket(doc("eu-west-1").as_bytes()).expect("parse"),
            Some("eu-west-1".into())
        );
        assert_eq!(
            parse_create_bucket(doc("").as_bytes()).expect("parse"),
            None
        );
        assert_eq!(
            parse_create_bucket(b"<CreateBucketConfiguration/>").expect("parse"),
            None
        );
        for bad in [
            &b"<CreateBucketConfiguration>"[..],
            b"not xml",
            b"<Other><LocationConstraint>x</LocationConstraint></Other>",
            b"\xff\xfe",
        ] {
            assert!(parse_create_bucket(bad).is_err(), "{bad:?}");
        }
        assert!(check_location_constraint(None, "us-east-1").is_ok());
        assert!(check_location_constraint(Some("home"), "home").is_ok());
        let code = |c| {
            check_location_constraint(Some(c), "us-east-1")
                .map_err(|e| e.code_and_status().0)
                .err()
        };
        assert_eq!(
            code("eu-west-1"),
            Some("IllegalLocationConstraintException")
        );
        assert_eq!(
            code("us-gov-east-1"),
            Some("IllegalLocationConstraintException")
        );
        assert_eq!(code("EU"), Some("IllegalLocationConstraintException"));
        assert_eq!(code("nowhere"), Some("InvalidLocationConstraint"));
        assert_eq!(code("us-east-1"), None);
    }

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
