//! Cairn's object service: everything below the S3 layer.
//!
//! [`ObjectService`] is the one door: the S3 layer asks it for buckets, objects, uploads
//! and parts, in the domain types of [`records`], and never sees the catalog or a node.
//! Behind it, [`service`] is the only module that knows both objects and shards. It uses
//! `catalog` (sled: buckets, object records, uploads), `encoder` (body → stripes → shard
//! streams), `decoder` (shard streams → verified, reconstructed bytes), `cluster` (which
//! nodes are live) and `node_client` (the node protocol). Background work keeps the
//! stored data healthy: `repair` (back to full redundancy), `gc` (orphan shards),
//! `rebalance` (shards to where placement wants them after a node joins) and `rebuild`
//! (a lost catalog, from the nodes). [`launch`] wires it all up.

mod catalog;
pub mod checksum;
mod cluster;
mod decoder;
mod discovery;
mod encoder;
mod failpoint;
mod gc;
pub mod launch;
mod leases;
mod listing;
mod node_client;
mod rebalance;
mod rebuild;
pub mod records;
mod repair;
mod service;
mod stats;

pub use cluster::{NodeState, Reserve};
pub use launch::{rebuild_catalog, start, RebuildConfig, Running, StoreConfig};
pub use listing::{ListQuery, Page};
pub use rebuild::RebuildReport;
pub use records::*;
pub use service::{now_ms, Geometry, ObjectService, StagedObject};

/// The shard layout of a stored segment, in the format it was written in.
pub fn segment_layout(
    seg: &records::SegmentRecord,
) -> Result<cairn_common::shard::Layout, cairn_common::shard::ShardError> {
    cairn_common::shard::Layout::new(seg.k, seg.m, seg.block_size, seg.len)?.with_format(seg.format)
}

/// A request body error, kept opaque here so this layer knows nothing of S3.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Failures of the object service.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not enough storage nodes: {0}")]
    NotEnoughNodes(String),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Too few live nodes have room for the write (the cluster is full).
    #[error("{0}")]
    Full(String),
    #[error("request body ended before its declared length")]
    BodyTooShort,
    #[error("request body is longer than its declared length")]
    BodyTooLong,
    #[error("request body: {0}")]
    Body(BodyError),
    #[error("catalog: {0}")]
    Catalog(#[from] sled::Error),
    #[error("catalog record: {0}")]
    Record(#[from] serde_json::Error),
    #[error("erasure: {0}")]
    Erasure(#[from] cairn_common::erasure::ErasureError),
    #[error("shard: {0}")]
    Shard(#[from] cairn_common::shard::ShardError),
    /// A stored record or file does not read as it must.
    #[error("corrupt: {0}")]
    Corrupt(String),
    #[error("no such bucket")]
    NoSuchBucket,
    #[error("bucket not empty")]
    BucketNotEmpty,
    #[error("no such upload")]
    NoSuchUpload,
    /// The bucket has as many multipart uploads open as allowed.
    #[error("{0} multipart uploads open in the bucket")]
    TooManyUploads(usize),
    #[error("precondition failed")]
    PreconditionFailed,
    #[error("no such key")]
    NoSuchKey,
    #[error("node {node}: {msg}")]
    Node { node: String, msg: String },
}
