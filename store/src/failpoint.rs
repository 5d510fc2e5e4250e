//! Crash points for tests: with `CAIRN_FAILPOINT=<name>` in its environment the gateway
//! aborts (no cleanup, no catalog flush: a crash) when it reaches the point of that name.
//! Crash tests use it to pin a kill between two steps no client can time from outside,
//! such as "every shard of a segment is durable, the catalog does not know it yet".
//! Unset, a point costs one cached environment lookup.

use std::sync::OnceLock;

/// Every shard of a segment (a PUT's object, or one multipart part) is durable on its
/// nodes; the catalog has not recorded it.
pub const SEGMENT_DURABLE: &str = "segment-durable";

/// Aborts the process if `CAIRN_FAILPOINT` names `point`.
pub fn hit(point: &str) {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    if ARMED
        .get_or_init(|| std::env::var("CAIRN_FAILPOINT").ok())
        .as_deref()
        == Some(point)
    {
        tracing::error!(point, "failpoint reached: aborting");
        std::process::abort();
    }
}
