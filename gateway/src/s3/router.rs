//! Parses each request once into an [`Endpoint`]: the operation and its typed inputs.

use std::collections::HashMap;

use http::{HeaderMap, Method};
use percent_encoding::percent_decode_str;

use cairn_common::ids::ObjectId;

use crate::error::S3Error;

/// Query parameters, decoded.
pub type Query = HashMap<String, String>;

/// One S3 operation with what identifies its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    ListBuckets,
    CreateBucket {
        bucket: String,
    },
    HeadBucket {
        bucket: String,
    },
    DeleteBucket {
        bucket: String,
    },
    GetBucketLocation {
        bucket: String,
    },
    GetBucketVersioning {
        bucket: String,
    },
    ListObjectsV1 {
        bucket: String,
    },
    ListObjectsV2 {
        bucket: String,
    },
    PutObject {
        bucket: String,
        key: String,
    },
    GetObject {
        bucket: String,
        key: String,
        /// `partNumber`: read only that part.
        part: Option<u32>,
    },
    HeadObject {
        bucket: String,
        key: String,
        /// `partNumber`: describe only that part.
        part: Option<u32>,
    },
    DeleteObject {
        bucket: String,
        key: String,
    },
    CopyObject {
        bucket: String,
        key: String,
    },
    DeleteObjects {
        bucket: String,
    },
    CreateMultipartUpload {
        bucket: String,
        key: String,
    },
    UploadPart {
        bucket: String,
        key: String,
        upload: ObjectId,
        part: u32,
    },
    UploadPartCopy {
        bucket: String,
        key: String,
        upload: ObjectId,
        part: u32,
    },
    CompleteMultipartUpload {
        bucket: String,
        key: String,
        upload: ObjectId,
    },
    AbortMultipartUpload {
        bucket: String,
        key: String,
        upload: ObjectId,
    },
    ListParts {
        bucket: String,
        key: String,
        upload: ObjectId,
    },
    ListMultipartUploads {
        bucket: String,
    },
    /// Recognised but not supported: answered with NotImplemented.
    Unsupported {
        what: String,
    },
}

impl Endpoint {
    /// The bucket an operation needs to exist (every one but ListBuckets, CreateBucket
    /// and the unsupported ones).
    pub fn existing_bucket(&self) -> Option<&str> {
        use Endpoint::*;
        match self {
            ListBuckets | CreateBucket { .. } | Unsupported { .. } => None,
            HeadBucket { bucket }
            | DeleteBucket { bucket }
            | GetBucketLocation { bucket }
            | GetBucketVersioning { bucket }
            | ListObjectsV1 { bucket }
            | ListObjectsV2 { bucket }
            | DeleteObjects { bucket }
            | ListMultipartUploads { bucket }
            | PutObject { bucket, .. }
            | GetObject { bucket, .. }
            | HeadObject { bucket, .. }
            | DeleteObject { bucket, .. }
            | CopyObject { bucket, .. }
            | CreateMultipartUpload { bucket, .. }
            | UploadPart { bucket, .. }
            | UploadPartCopy { bucket, .. }
            | CompleteMultipartUpload { bucket, .. }
            | AbortMultipartUpload { bucket, .. }
            | ListParts { bucket, .. } => Some(bucket),
        }
    }

    /// Operation name for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Endpoint::ListBuckets => "ListBuckets",
            Endpoint::CreateBucket { .. } => "CreateBucket",
            Endpoint::HeadBucket { .. } => "HeadBucket",
            Endpoint::DeleteBucket { .. } => "DeleteBucket",
            Endpoint::GetBucketLocation { .. } => "GetBucketLocation",
            Endpoint::GetBucketVersioning { .. } => "GetBucketVersioning",
            Endpoint::ListObjectsV1 { .. } => "ListObjects",
            Endpoint::ListObjectsV2 { .. } => "ListObjectsV2",
            Endpoint::PutObject { .. } => "PutObject",
            Endpoint::GetObject { .. } => "GetObject",
            Endpoint::HeadObject { .. } => "HeadObject",
            Endpoint::DeleteObject { .. } => "DeleteObject",
            Endpoint::CopyObject { .. } => "CopyObject",
            Endpoint::DeleteObjects { .. } => "DeleteObjects",
            Endpoint::CreateMultipartUpload { .. } => "CreateMultipartUpload",
            Endpoint::UploadPart { .. } => "UploadPart",
            Endpoint::UploadPartCopy { .. } => "UploadPartCopy",
            Endpoint::CompleteMultipartUpload { .. } => "CompleteMultipartUpload",
            Endpoint::AbortMultipartUpload { .. } => "AbortMultipartUpload",
            Endpoint::ListParts { .. } => "ListParts",
            Endpoint::ListMultipartUploads { .. } => "ListMultipartUploads",
            Endpoint::Unsupported { .. } => "Unsupported",
        }
    }
}

/// Highest part number.
pub const MAX_PART_NUMBER: u32 = 10_000;

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

fn part_number(query: &Query) -> Result<u32, S3Error> {
    parse_part_number(query.get("partNumber").map(String::as_str))
}

fn optional_part_number(query: &Query) -> Result<Option<u32>, S3Error> {
    match query.contains_key("partNumber") {
        true => part_number(query).map(Some),
        false => Ok(None),
    }
}

/// `uploadId` as an upload's id; one Cairn did not issue is no upload at all.
fn upload_id(query: &Query) -> Result<ObjectId, S3Error> {
    query
        .get("uploadId")
        .and_then(|s| s.parse().ok())
        .ok_or(S3Error::NoSuchUpload)
}

/// Decodes the query string into a map (`+` is a space; SDKs send `%2B` for plus).
pub fn parse_query(query: Option<&str>) -> Query {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// Splits a path-style request path into bucket and key (both decoded).
pub fn split_path(path: &str) -> Result<(Option<String>, Option<String>), S3Error> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    if trimmed.is_empty() {
        return Ok((None, None));
    }
    let (bucket, key) = match trimmed.split_once('/') {
        Some((b, k)) => (b, Some(k)),
        None => (trimmed, None),
    };
    let decode = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| S3Error::InvalidArgument("path is not valid UTF-8".into()))
    };
    let bucket = decode(bucket)?;
    let key = match key {
        Some(k) if !k.is_empty() => Some(decode(k)?),
        _ => None,
    };
    Ok((Some(bucket), key))
}

/// Sub-resources of a bucket that clients probe but Cairn does not implement.
const UNSUPPORTED_BUCKET_SUBRESOURCES: &[&str] = &[
    "acl",
    "policy",
    "cors",
    "lifecycle",
    "tagging",
    "website",
    "replication",
    "logging",
    "notification",
    "encryption",
    "object-lock",
    "accelerate",
    "requestPayment",
    "ownershipControls",
    "publicAccessBlock",
    "analytics",
    "metrics",
    "inventory",
    "intelligent-tiering",
    "versions",
];
/// Sub-resources of an object that Cairn does not implement (yet).
const UNSUPPORTED_OBJECT_SUBRESOURCES: &[&str] = &[
    "acl",
    "tagging",
    "retention",
    "legal-hold",
    "torrent",
    "restore",
    "select",
    "attributes",
];

/// Parses method, path and query into an endpoint.
pub fn route(
    method: &Method,
    path: &str,
    query: &Query,
    headers: &HeaderMap,
) -> Result<Endpoint, S3Error> {
    let (bucket, key) = split_path(path)?;
    let Some(bucket) = bucket else {
        return match *method {
            Method::GET => Ok(Endpoint::ListBuckets),
            _ => Err(S3Error::MethodNotAllowed),
        };
    };
    let Some(key) = key else {
        if let Some(sub) = UNSUPPORTED_BUCKET_SUBRESOURCES
            .iter()
            .find(|s| query.contains_key(**s))
        {
            return Ok(Endpoint::Unsupported {
                what: format!("bucket ?{sub}"),
            });
        }
        return Ok(match *method {
            Method::POST if query.contains_key("delete") => Endpoint::DeleteObjects { bucket },
            Method::GET if query.contains_key("uploads") => {
                Endpoint::ListMultipartUploads { bucket }
            }
            Method::PUT if query.contains_key("versioning") => Endpoint::Unsupported {
                what: "PutBucketVersioning".into(),
            },
            Method::PUT => Endpoint::CreateBucket { bucket },
            Method::HEAD => Endpoint::HeadBucket { bucket },
            Method::DELETE => Endpoint::DeleteBucket { bucket },
            Method::GET if query.contains_key("location") => Endpoint::GetBucketLocation { bucket },
            Method::GET if query.contains_key("versioning") => {
                Endpoint::GetBucketVersioning { bucket }
            }
            Method::GET if query.get("list-type").map(String::as_str) == Some("2") => {
                Endpoint::ListObjectsV2 { bucket }
            }
            Method::GET => Endpoint::ListObjectsV1 { bucket },
            _ => return Err(S3Error::MethodNotAllowed),
        });
    };
    if let Some(sub) = UNSUPPORTED_OBJECT_SUBRESOURCES
        .iter()
        .find(|s| query.contains_key(**s))
    {
        return Ok(Endpoint::Unsupported {
            what: format!("object ?{sub}"),
        });
    }
    let copy = headers.contains_key("x-amz-copy-source");
    let upload = query.contains_key("uploadId");
    Ok(match *method {
        Method::POST if query.contains_key("uploads") => {
            Endpoint::CreateMultipartUpload { bucket, key }
        }
        Method::POST if upload => Endpoint::CompleteMultipartUpload {
            bucket,
            key,
            upload: upload_id(query)?,
        },
        Method::PUT if upload => {
            let part = part_number(query)?;
            let upload = upload_id(query)?;
            if copy {
                Endpoint::UploadPartCopy {
                    bucket,
                    key,
                    upload,
                    part,
                }
            } else {
                Endpoint::UploadPart {
                    bucket,
                    key,
                    upload,
                    part,
                }
            }
        }
        Method::GET if upload => Endpoint::ListParts {
            bucket,
            key,
            upload: upload_id(query)?,
        },
        Method::DELETE if upload => Endpoint::AbortMultipartUpload {
            bucket,
            key,
            upload: upload_id(query)?,
        },
        Method::PUT if copy => Endpoint::CopyObject { bucket, key },
        Method::PUT => Endpoint::PutObject { bucket, key },
        Method::GET => Endpoint::GetObject {
            bucket,
            key,
            part: optional_part_number(query)?,
        },
        Method::HEAD => Endpoint::HeadObject {
            bucket,
            key,
            part: optional_part_number(query)?,
        },
        Method::DELETE => Endpoint::DeleteObject { bucket, key },
        Method::POST => Endpoint::Unsupported {
            what: "POST on an object".into(),
        },
        _ => return Err(S3Error::MethodNotAllowed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(method: Method, path: &str, q: &str) -> Endpoint {
        route(&method, path, &parse_query(Some(q)), &HeaderMap::new()).expect("route")
    }

    #[test]
    fn routes_the_basic_operations() {
        assert_eq!(r(Method::GET, "/", ""), Endpoint::ListBuckets);
        assert_eq!(
            r(Method::PUT, "/b", ""),
            Endpoint::CreateBucket { bucket: "b".into() }
        );
        assert_eq!(
            r(Method::GET, "/b/", "list-type=2&prefix=a"),
            Endpoint::ListObjectsV2 { bucket: "b".into() }
        );
        assert_eq!(
            r(Method::GET, "/b", ""),
            Endpoint::ListObjectsV1 { bucket: "b".into() }
        );
        assert_eq!(
            r(Method::GET, "/b/dir/a%20b%2Bc", ""),
            Endpoint::GetObject {
                bucket: "b".into(),
                key: "dir/a b+c".into(),
                part: None,
            }
        );
        let upload = ObjectId::random();
        assert_eq!(
            r(
                Method::PUT,
                "/b/k",
                &format!("partNumber=7&uploadId={upload}")
            ),
            Endpoint::UploadPart {
                bucket: "b".into(),
                key: "k".into(),
                upload,
                part: 7,
            }
        );
        assert_eq!(
            r(Method::HEAD, "/b/k", "partNumber=2"),
            Endpoint::HeadObject {
                bucket: "b".into(),
                key: "k".into(),
                part: Some(2),
            }
        );
        let bad = |m: Method, q: &str| route(&m, "/b/k", &parse_query(Some(q)), &HeaderMap::new());
        assert!(matches!(
            bad(Method::GET, "partNumber=0"),
            Err(S3Error::InvalidArgument(_))
        ));
        assert!(matches!(
            bad(Method::PUT, "partNumber=1&uploadId=nope"),
            Err(S3Error::NoSuchUpload)
        ));
        assert!(matches!(
            bad(Method::DELETE, "uploadId=nope"),
            Err(S3Error::NoSuchUpload)
        ));
        assert!(matches!(
            r(Method::GET, "/b", "policy"),
            Endpoint::Unsupported { .. }
        ));
        assert_eq!(parse_query(Some("prefix=a%2Bb+c"))["prefix"], "a+b c");
    }
}
