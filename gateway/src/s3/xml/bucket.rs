//! Bucket documents: ListBuckets, GetBucketLocation, GetBucketVersioning and the
//! CreateBucket request.

use serde::{Deserialize, Serialize};

use super::{timestamp, Namespace};

/// The ListBuckets response.
#[derive(Debug, Serialize)]
pub struct ListAllMyBucketsResult {
    #[serde(rename = "@xmlns")]
    pub xmlns: Namespace,
    #[serde(rename = "Owner")]
    pub owner: Owner,
    #[serde(rename = "Buckets")]
    pub buckets: Buckets,
}

/// An owner: Cairn's one user, named by its access key id.
#[derive(Clone, Debug, Serialize)]
pub struct Owner {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "DisplayName")]
    pub display_name: String,
}

impl Owner {
    /// The owner whose id and display name are both `id`.
    pub fn new(id: &str) -> Self {
        Owner {
            id: id.to_string(),
            display_name: id.to_string(),
        }
    }
}

/// `<Buckets>`: the buckets of a ListBuckets response.
#[derive(Debug, Default, Serialize)]
pub struct Buckets {
    #[serde(rename = "Bucket")]
    pub bucket: Vec<Bucket>,
}

/// One bucket of a ListBuckets response.
#[derive(Debug, Serialize)]
pub struct Bucket {
    #[serde(rename = "Name")]
    pub name: String,
    /// Unix milliseconds.
    #[serde(rename = "CreationDate", serialize_with = "timestamp")]
    pub creation_date: i64,
}

/// The GetBucketLocation response: the region as the root element's text (empty for
/// us-east-1).
#[derive(Debug, Serialize)]
pub struct LocationConstraint {
    #[serde(rename = "@xmlns")]
    pub xmlns: Namespace,
    #[serde(rename = "$text")]
    pub region: String,
}

/// The GetBucketVersioning response: no `<Status>`, as for a bucket whose versioning
/// was never enabled.
#[derive(Debug, Default, Serialize)]
pub struct VersioningConfiguration {
    #[serde(rename = "@xmlns")]
    pub xmlns: Namespace,
}

/// The CreateBucket request body.
#[derive(Debug, Deserialize)]
pub struct CreateBucketConfiguration {
    /// The region asked for, as written.
    #[serde(rename = "LocationConstraint", default)]
    pub location_constraint: Option<String>,
}
