//! Shared building blocks of Cairn.
//!
//! The gateway and the storage nodes agree on four things, all defined here:
//! - [`shard`]: the self-describing shard file format (header + crc32c-checked blocks),
//! - [`erasure`]: the Reed-Solomon stripe codec,
//! - [`placement`]: which nodes hold an object's shards, and with which geometry,
//! - [`protocol`] and [`auth`]: the internal HTTP API of a node and its HMAC credential,
//! - [`daemon`]: logging, shutdown signals and duration flags of every Cairn process,
//! - [`request_id`]: the id tying a gateway request to the node calls it causes,
//! - [`log_limit`]: rate-limited logging of repeated errors ([`log_limited!`]).

pub mod auth;
pub mod daemon;
pub mod erasure;
pub mod ids;
pub mod log_limit;
pub mod placement;
pub mod protocol;
pub mod request_id;
pub mod shard;

/// `tracing`, for the expansion of [`log_limited!`] in crates that name it differently.
#[doc(hidden)]
pub use tracing as __tracing;
