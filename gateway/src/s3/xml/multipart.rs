//! Multipart upload documents: the CreateMultipartUpload, CompleteMultipartUpload,
//! ListParts and ListMultipartUploads responses, and the CompleteMultipartUpload
//! request.

use serde::{Deserialize, Serialize};

use super::{quoted, timestamp, Namespace, StorageClass};
use cairn_store::checksum::Algorithm;

/// The CreateMultipartUpload response.
#[derive(Debug, Serialize)]
pub struct InitiateMultipartUploadResult {
    #[serde(rename = "@xmlns")]
    pub xmlns: Namespace,
    #[serde(rename = "Bucket")]
    pub bucket: String,
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "UploadId")]
    pub upload_id: String,
}

/// A checksum element, named after its algorithm (`<ChecksumCRC32C>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Checksum {
    #[serde(rename = "ChecksumCRC32")]
    Crc32(String),
    #[serde(rename = "ChecksumCRC32C")]
    Crc32c(String),
    #[serde(rename = "ChecksumCRC64NVME")]
    Crc64Nvme(String),
    #[serde(rename = "ChecksumSHA1")]
    Sha1(String),
    #[serde(rename = "ChecksumSHA256")]
    Sha256(String),
}

impl Checksum {
    /// The element carrying `value`, a checksum by `alg`.
    pub fn new(alg: Algorithm, value: String) -> Self {
        match alg {
            Algorithm::Crc32 => Checksum::Crc32(value),
            Algorithm::Crc32c => Checksum::Crc32c(value),
            Algorithm::Crc64Nvme => Checksum::Crc64Nvme(value),
            Algorithm::Sha1 => Checksum::Sha1(value),
            Algorithm::Sha256 => Checksum::Sha256(value),
        }
    }
}

/// The CompleteMultipartUpload response.
#[derive(Debug, Serialize)]
pub struct CompleteMultipartUploadResult {
    #[serde(rename = "@xmlns")]
    pub xmlns: Namespace,
    /// `/bucket/key`.
    #[serde(rename = "Location")]
    pub location: String,
    #[serde(rename = "Bucket")]
    pub bucket: String,
    #[serde(rename = "Key")]
    pub key: String,
    /// The bare multipart ETag (`hex-count`, written quoted).
    #[serde(rename = "ETag", serialize_with = "quoted")]
    pub etag: String,
    /// The object's checksum, when the upload has an algorithm.
    #[serde(rename = "$value", skip_serializing_if = "Option::is_none")]
    pub checksum: Option<Checksum>,
    /// `COMPOSITE` or `FULL_OBJECT`, with the checksum.
    #[serde(rename = "ChecksumType", skip_serializing_if = "Option::is_none")]
    pub checksum_type: Option<String>,
}

/// The ListParts response.
#[derive(Debug, Serialize)]
pub struct ListPartsResult {
    #[serde(rename = "@xmlns")]
    pub xmlns: Namespace,
    #[serde(rename = "Bucket")]
    pub bucket: String,
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "UploadId")]
    pub upload_id: String,
    #[serde(rename = "PartNumberMarker")]
    pub part_number_marker: u32,
    /// The last part number on the page, if any.
    #[serde(
        rename = "NextPartNumberMarker",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_part_number_marker: Option<u32>,
    #[serde(rename = "MaxParts")]
    pub max_parts: usize,
    #[serde(rename = "IsTruncated")]
    pub is_truncated: bool,
    #[serde(rename = "StorageClass")]
    pub storage_class: StorageClass,
    /// The upload's checksum algorithm (`CRC32`...), if it has one.
    #[serde(rename = "ChecksumAlgorithm", skip_serializing_if = "Option::is_none")]
    pub checksum_algorithm: Option<&'static str>,
    #[serde(rename = "Part")]
    pub parts: Vec<Part>,
}

/// One part of a ListParts response.
#[derive(Debug, Serialize)]
pub struct Part {
    #[serde(rename = "PartNumber")]
    pub part_number: u32,
    /// Unix milliseconds.
    #[serde(rename = "LastModified", serialize_with = "timestamp")]
    pub last_modified: i64,
    /// The bare hex ETag (written quoted).
    #[serde(rename = "ETag", serialize_with = "quoted")]
    pub etag: String,
    #[serde(rename = "Size")]
    pub size: u64,
    /// The part's checksum by the upload's algorithm, if both exist.
    #[serde(rename = "$value", skip_serializing_if = "Option::is_none")]
    pub checksum: Option<Checksum>,
}

/// The ListMultipartUploads response.
#[derive(Debug, Serialize)]
pub struct ListMultipartUploadsResult {
    #[serde(rename = "@xmlns")]
    pub xmlns: Namespace,
    #[serde(rename = "Bucket")]
    pub bucket: String,
    #[serde(rename = "KeyMarker")]
    pub key_marker: String,
    #[serde(rename = "UploadIdMarker")]
    pub upload_id_marker: String,
    /// The key of the last upload listed, if any.
    #[serde(rename = "NextKeyMarker", skip_serializing_if = "Option::is_none")]
    pub next_key_marker: Option<String>,
    /// The id of the last upload listed, if any.
    #[serde(rename = "NextUploadIdMarker", skip_serializing_if = "Option::is_none")]
    pub next_upload_id_marker: Option<String>,
    #[serde(rename = "Prefix")]
    pub prefix: String,
    #[serde(rename = "MaxUploads")]
    pub max_uploads: usize,
    #[serde(rename = "IsTruncated")]
    pub is_truncated: bool,
    #[serde(rename = "Upload")]
    pub uploads: Vec<Upload>,
}

/// One upload of a ListMultipartUploads response.
#[derive(Debug, Serialize)]
pub struct Upload {
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "UploadId")]
    pub upload_id: String,
    /// Unix milliseconds.
    #[serde(rename = "Initiated", serialize_with = "timestamp")]
    pub initiated: i64,
    #[serde(rename = "StorageClass")]
    pub storage_class: StorageClass,
}

/// The CompleteMultipartUpload request body.
#[derive(Debug, Deserialize)]
pub struct CompleteMultipartUpload {
    #[serde(rename = "Part", default)]
    pub parts: Vec<CompletePart>,
}

/// One `<Part>` of a CompleteMultipartUpload request.
#[derive(Debug, Deserialize)]
pub struct CompletePart {
    /// `PartNumber`.
    #[serde(rename = "PartNumber")]
    pub number: u32,
    /// `ETag` as sent (maybe quoted).
    #[serde(rename = "ETag")]
    pub etag: String,
    #[serde(rename = "ChecksumCRC32", default)]
    crc32: Option<String>,
    #[serde(rename = "ChecksumCRC32C", default)]
    crc32c: Option<String>,
    #[serde(rename = "ChecksumCRC64NVME", default)]
    crc64nvme: Option<String>,
    #[serde(rename = "ChecksumSHA1", default)]
    sha1: Option<String>,
    #[serde(rename = "ChecksumSHA256", default)]
    sha256: Option<String>,
}

impl CompletePart {
    /// The part checksum given for `alg`, if any.
    pub fn checksum(&self, alg: Algorithm) -> Option<&str> {
        match alg {
            Algorithm::Crc32 => self.crc32.as_deref(),
            Algorithm::Crc32c => self.crc32c.as_deref(),
            Algorithm::Crc64Nvme => self.crc64nvme.as_deref(),
            Algorithm::Sha1 => self.sha1.as_deref(),
            Algorithm::Sha256 => self.sha256.as_deref(),
        }
    }
}
