//! The ListObjects (V1) and ListObjectsV2 response.

use serde::Serialize;

use super::{quoted, timestamp, Namespace, Owner, StorageClass};

/// The ListObjects and ListObjectsV2 response. Fields marked V1 or V2 are `None` in the
/// other version's response. With `encoding-type=url`, the handler URL-encodes the keys,
/// prefixes, delimiter, markers and start-after it puts here.
#[derive(Debug, Serialize)]
pub struct ListBucketResult {
    #[serde(rename = "@xmlns")]
    pub xmlns: Namespace,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Prefix")]
    pub prefix: String,
    /// Absent when the request has no delimiter.
    #[serde(rename = "Delimiter", skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    #[serde(rename = "MaxKeys")]
    pub max_keys: usize,
    /// `url` when the request asked for it.
    #[serde(rename = "EncodingType", skip_serializing_if = "Option::is_none")]
    pub encoding_type: Option<&'static str>,
    #[serde(rename = "IsTruncated")]
    pub is_truncated: bool,
    /// V2: objects plus common prefixes on the page.
    #[serde(rename = "KeyCount", skip_serializing_if = "Option::is_none")]
    pub key_count: Option<usize>,
    /// V2: the token of the request, if it had one.
    #[serde(rename = "ContinuationToken", skip_serializing_if = "Option::is_none")]
    pub continuation_token: Option<String>,
    /// V2: the start-after of the request, if it had one.
    #[serde(rename = "StartAfter", skip_serializing_if = "Option::is_none")]
    pub start_after: Option<String>,
    /// V2: where the next page starts, when truncated.
    #[serde(
        rename = "NextContinuationToken",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_continuation_token: Option<String>,
    /// V1: the marker of the request (empty if it had none).
    #[serde(rename = "Marker", skip_serializing_if = "Option::is_none")]
    pub marker: Option<String>,
    /// V1: the last key or prefix on the page, when truncated.
    #[serde(rename = "NextMarker", skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
    #[serde(rename = "Contents")]
    pub contents: Vec<Contents>,
    #[serde(rename = "CommonPrefixes")]
    pub common_prefixes: Vec<CommonPrefix>,
}

/// One object of a listing.
#[derive(Debug, Serialize)]
pub struct Contents {
    #[serde(rename = "Key")]
    pub key: String,
    /// Unix milliseconds.
    #[serde(rename = "LastModified", serialize_with = "timestamp")]
    pub last_modified: i64,
    /// The bare hex ETag (written quoted).
    #[serde(rename = "ETag", serialize_with = "quoted")]
    pub etag: String,
    #[serde(rename = "Size")]
    pub size: u64,
    /// Present in V1, and in V2 with `fetch-owner=true`.
    #[serde(rename = "Owner", skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    #[serde(rename = "StorageClass")]
    pub storage_class: StorageClass,
}

/// One `<CommonPrefixes>` element of a listing (one prefix each).
#[derive(Debug, Serialize)]
pub struct CommonPrefix {
    #[serde(rename = "Prefix")]
    pub prefix: String,
}
