//! Every way a node request can fail, and the one place that turns a failure into HTTP.
//!
//! Each error answers with a status and an `x-cairn-error` header naming its kind, so
//! the gateway can act on the kind without parsing text.

use std::{fmt, io};

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn_common::auth::AuthError;
use cairn_common::protocol::{ERROR_HEADER, ERR_CORRUPT_BLOCK, ERR_NO_SUCH_SHARD};
use cairn_common::shard::ShardError;

/// `x-cairn-error` for a refused cluster credential (403).
pub const ERR_AUTH: &str = "auth";
/// `x-cairn-error` for a PUT body whose length differs from what its header promises (400).
pub const ERR_BAD_LENGTH: &str = "bad-length";
/// `x-cairn-error` for a PUT whose shard header is unreadable or names another shard (400).
pub const ERR_BAD_HEADER: &str = "bad-header";
/// `x-cairn-error` for a malformed path or query (400).
pub const ERR_BAD_REQUEST: &str = "bad-request";
/// `x-cairn-error` for a read starting beyond the shard's last block (416).
pub const ERR_BAD_RANGE: &str = "bad-range";
/// `x-cairn-error` for a PUT body that broke off (client went away) (400).
pub const ERR_BODY: &str = "body";
/// `x-cairn-error` for an upload whose sender went silent (408).
pub const ERR_TIMEOUT: &str = "timeout";
/// `x-cairn-error` when the data filesystem is full (507).
pub const ERR_DISK_FULL: &str = "disk-full";
/// `x-cairn-error` for any other local failure (500).
pub const ERR_INTERNAL: &str = "internal";

/// A failed node operation.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The request's cluster credential was missing, wrong or too old.
    #[error("auth: {0}")]
    Auth(#[from] AuthError),
    /// The path or query could not be parsed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The shard is not stored here.
    #[error("no such shard")]
    NoSuchShard,
    /// A stored block (or the stored header) failed its check on read.
    #[error("stored shard is corrupt: {0}")]
    Corrupt(ShardError),
    /// An uploaded block failed its crc32c; nothing was stored.
    #[error("uploaded block {block} failed its crc32c")]
    CorruptUpload {
        /// Stripe number of the bad block.
        block: u64,
    },
    /// An uploaded block failed its tag: it was not written with the cluster's key (or
    /// not for this shard and position); nothing was stored.
    #[error("uploaded block {block} failed its authentication tag")]
    ForgedUpload {
        /// Stripe number of the forged block.
        block: u64,
    },
    /// An uploaded shard header is invalid or names a different shard than the path.
    #[error("bad shard header: {0}")]
    BadHeader(String),
    /// The PUT body is shorter or longer than its header says.
    #[error("body length {got} does not match the shard's {want} bytes")]
    BadLength {
        /// Bytes the header promises (or that arrived before the overrun was seen).
        want: u64,
        /// Bytes received.
        got: u64,
    },
    /// The requested first block lies beyond the shard.
    #[error("block {from} is beyond the shard's {blocks} blocks")]
    BadRange {
        /// First block asked for.
        from: u64,
        /// Blocks in the shard.
        blocks: u64,
    },
    /// The sender of an upload sent nothing for this long; nothing was stored.
    #[error("no upload byte for {0:?}")]
    Timeout(std::time::Duration),
    /// Reading the request body failed (client disconnected or sent garbage framing).
    #[error("reading request body: {0}")]
    Body(String),
    /// A filesystem operation failed.
    #[error("io: {0}")]
    Io(#[from] io::Error),
    /// A background task died.
    #[error("internal: {0}")]
    Internal(String),
    /// Storing the shard would take the node over its `--capacity`; nothing was stored.
    #[error("storing {need} bytes would exceed the node's capacity ({free} bytes free)")]
    OverCapacity {
        /// Bytes the shard file needs.
        need: u64,
        /// Bytes left under the capacity (stored shards and writes in flight deducted).
        free: u64,
    },
    /// A failure injected by `CAIRN_NODE_FAULTS` (tests and the torture bench only).
    #[error("injected fault: {0}")]
    Injected(InjectedFailure),
}

/// The kind of a mid-body failure injected by `CAIRN_NODE_FAULTS`, carried by
/// [`NodeError::Injected`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectedFailure {
    /// Answer 500 `internal`.
    Internal,
    /// Drop the connection without an answer.
    Reset,
}

impl fmt::Display for InjectedFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InjectedFailure::Internal => "internal error",
            InjectedFailure::Reset => "connection reset",
        })
    }
}

impl NodeError {
    /// Status and `x-cairn-error` kind of this error: the single mapping.
    pub fn status_and_kind(&self) -> (StatusCode, &'static str) {
        match self {
            NodeError::Auth(_) => (StatusCode::FORBIDDEN, ERR_AUTH),
            NodeError::BadRequest(_) => (StatusCode::BAD_REQUEST, ERR_BAD_REQUEST),
            NodeError::NoSuchShard => (StatusCode::NOT_FOUND, ERR_NO_SUCH_SHARD),
            NodeError::Corrupt(_) => (StatusCode::CONFLICT, ERR_CORRUPT_BLOCK),
            NodeError::CorruptUpload { .. } | NodeError::ForgedUpload { .. } => {
                (StatusCode::BAD_REQUEST, ERR_CORRUPT_BLOCK)
            }
            NodeError::BadHeader(_) => (StatusCode::BAD_REQUEST, ERR_BAD_HEADER),
            NodeError::BadLength { .. } => (StatusCode::BAD_REQUEST, ERR_BAD_LENGTH),
            NodeError::BadRange { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, ERR_BAD_RANGE),
            NodeError::Body(_) => (StatusCode::BAD_REQUEST, ERR_BODY),
            NodeError::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, ERR_TIMEOUT),
            NodeError::Io(e) if is_disk_full(e) => {
                (StatusCode::INSUFFICIENT_STORAGE, ERR_DISK_FULL)
            }
            NodeError::OverCapacity { .. } => (StatusCode::INSUFFICIENT_STORAGE, ERR_DISK_FULL),
            NodeError::Io(_) | NodeError::Internal(_) | NodeError::Injected(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, ERR_INTERNAL)
            }
        }
    }

    /// Short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        self.status_and_kind().1
    }
}

/// Whether an I/O error means the filesystem (or the user's quota) is full.
pub fn is_disk_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
        || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

impl IntoResponse for NodeError {
    fn into_response(self) -> Response {
        let (status, kind) = self.status_and_kind();
        if status.is_server_error() {
            // A failing disk fails every call alike: once per interval per kind.
            cairn_common::log_limited!(error, key = kind; error = %self, "request failed");
        } else {
            tracing::debug!(error = %self, "request refused");
        }
        let mut resp = (status, self.to_string()).into_response();
        resp.headers_mut()
            .insert(ERROR_HEADER, HeaderValue::from_static(kind));
        resp
    }
}
