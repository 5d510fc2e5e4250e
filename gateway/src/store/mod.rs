//! The object service: everything below the S3 layer.
//!
//! [`service::ObjectService`] is the only module that knows both objects and shards. It
//! uses [`catalog`] (sled: buckets and object records), [`encoder`] (body → stripes →
//! shard streams), [`decoder`] (shard streams → verified, reconstructed bytes),
//! [`cluster`] (which nodes are live) and [`node_client`] (the node protocol).
//! Background work keeps the stored data healthy: [`repair`] (back to full redundancy),
//! [`gc`] (orphan shards) and [`rebuild`] (a lost catalog, from the nodes) and [`rebalance`] (shards to where placement wants
//! them after a node joins).

pub mod catalog;
pub mod cluster;
pub mod decoder;
pub mod discovery;
pub mod encoder;
pub mod gc;
pub mod leases;
pub mod node_client;
pub mod rebalance;
pub mod rebuild;
pub mod repair;
pub mod service;
pub mod stats;

/// The shard layout of a stored segment, in the format it was written in.
pub fn segment_layout(
    seg: &catalog::SegmentRecord,
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
    #[error("precondition failed")]
    PreconditionFailed,
    #[error("no such key")]
    NoSuchKey,
    #[error("node {node}: {msg}")]
    Node { node: String, msg: String },
}
