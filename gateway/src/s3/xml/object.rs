//! Object documents: the CopyObject and UploadPartCopy responses, and DeleteObjects'
//! request and response.

use serde::{Deserialize, Serialize};

use super::{quoted, timestamp, Namespace};

/// The CopyObject (`<CopyObjectResult>`) and UploadPartCopy (`<CopyPartResult>`)
/// response: the same elements under either root, which the caller names.
#[derive(Debug, Serialize)]
pub struct CopyResult {
    #[serde(rename = "@xmlns")]
    pub xmlns: Namespace,
    /// Unix milliseconds.
    #[serde(rename = "LastModified", serialize_with = "timestamp")]
    pub last_modified: i64,
    /// The bare hex ETag (written quoted).
    #[serde(rename = "ETag", serialize_with = "quoted")]
    pub etag: String,
}

/// The DeleteObjects response.
#[derive(Debug, Serialize)]
pub struct DeleteResult {
    #[serde(rename = "@xmlns")]
    pub xmlns: Namespace,
    /// One element per key, in request order (deleted keys left out in quiet mode).
    #[serde(rename = "$value")]
    pub results: Vec<DeleteOutcome>,
}

/// What became of one key of a DeleteObjects request.
#[derive(Debug, Serialize)]
pub enum DeleteOutcome {
    /// `<Deleted>`.
    Deleted {
        #[serde(rename = "Key")]
        key: String,
    },
    /// `<Error>`.
    Error {
        #[serde(rename = "Key")]
        key: String,
        #[serde(rename = "Code")]
        code: &'static str,
        #[serde(rename = "Message")]
        message: String,
    },
}

/// The DeleteObjects request body.
#[derive(Debug, Deserialize)]
pub struct Delete {
    /// Whether deleted keys are left out of the response.
    #[serde(rename = "Quiet", default)]
    pub quiet: bool,
    #[serde(rename = "Object", default)]
    pub objects: Vec<ObjectIdentifier>,
}

/// One `<Object>` of a DeleteObjects request.
#[derive(Debug, Deserialize)]
pub struct ObjectIdentifier {
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "VersionId", default)]
    pub version_id: Option<String>,
}
