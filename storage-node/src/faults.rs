//! Injected faults for tests and the torture bench (`CAIRN_NODE_FAULTS`), so the gateway's
//! handling of a misbehaving node can be exercised against a real node process.
//!
//! The variable holds comma-separated items:
//!
//! - `write-fail=P` (0 ≤ P ≤ 1): each shard PUT (plain or raw upload) fails with
//!   probability P, in one of three ways picked at random: refused as disk-full (507)
//!   before its body is read; a 500 after part of the body was read; or the connection
//!   dropped part way through the body, without an answer. A failed PUT never stores
//!   the shard and leaves no temp file.
//! - `report-free=BYTES`: `/v1/info` and the free-space gauge report this many free
//!   bytes whatever the truth (a node that lies about its free space). Writes are still
//!   refused by the real limits.
//! - `no-fallocate`: shard files are not preallocated, as on a file system without
//!   `fallocate`; a full disk then shows while the shard's blocks are written.
//!
//! Unset, every check is a branch on a field that is off.

use cairn_common::daemon::parse_size;

use crate::error::{InjectedFailure, NodeError};
use crate::metrics;

/// Faults this node injects (all off by default).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Probability that a shard PUT fails (0 = never).
    pub write_fail: f64,
    /// Free bytes to report instead of the real figure.
    pub report_free: Option<u64>,
    /// Skip preallocating shard files.
    pub no_fallocate: bool,
}

/// A `CAIRN_NODE_FAULTS` value that could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FaultsParseError {
    /// An item names no known fault.
    #[error("unknown fault {0:?} (known: write-fail=P, report-free=BYTES, no-fallocate)")]
    Unknown(String),
    /// A fault's value is malformed or out of range.
    #[error("bad value for {name}: {value:?} ({why})")]
    BadValue {
        /// The fault's name.
        name: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// How an injected write failure shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteFault {
    /// Refused as disk-full (507) before any of the body is read.
    DiskFull,
    /// A 500 once this many bytes of the shard file have been read.
    FailAfter(u64),
    /// The connection is dropped without an answer once this many bytes have been read.
    ResetAfter(u64),
}

impl WriteFault {
    /// Label for the `cairn_node_injected_faults_total` metric.
    pub fn label(&self) -> &'static str {
        match self {
            WriteFault::DiskFull => "write-disk-full",
            WriteFault::FailAfter(_) => "write-internal",
            WriteFault::ResetAfter(_) => "write-reset",
        }
    }
}

impl Faults {
    /// Parses a `CAIRN_NODE_FAULTS` value; empty means no faults.
    pub fn parse(spec: &str) -> Result<Self, FaultsParseError> {
        let mut faults = Faults::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, value) = item.split_once('=').unwrap_or((item, ""));
            match name.trim() {
                "write-fail" => {
                    let p: f64 = value
                        .trim()
                        .parse()
                        .map_err(|_| FaultsParseError::BadValue {
                            name: "write-fail",
                            value: value.into(),
                            why: "not a number",
                        })?;
                    if !(0.0..=1.0).contains(&p) {
                        return Err(FaultsParseError::BadValue {
                            name: "write-fail",
                            value: value.into(),
                            why: "a probability is between 0 and 1",
                        });
                    }
                    faults.write_fail = p;
                }
                "report-free" => {
                    let bytes = parse_size(value).map_err(|_| FaultsParseError::BadValue {
                        name: "report-free",
                        value: value.into(),
                        why: "not a byte count",
                    })?;
                    faults.report_free = Some(bytes);
                }
                "no-fallocate" if value.is_empty() => faults.no_fallocate = true,
                _ => return Err(FaultsParseError::Unknown(item.into())),
            }
        }
        Ok(faults)
    }

    /// Whether any fault is on.
    pub fn any(&self) -> bool {
        *self != Faults::default()
    }

    /// Decides whether the shard PUT about to start fails, and how. `len` is the shard
    /// file's length when known (it bounds where a mid-body failure happens).
    pub fn roll_write(&self, len: Option<u64>) -> Option<WriteFault> {
        if self.write_fail <= 0.0 || rand::random::<f64>() >= self.write_fail {
            return None;
        }
        // Part of the body: at least one byte, never all of it (when the length is known).
        let part = match len {
            Some(n) if n > 1 => rand::random_range(1..n),
            _ => 1,
        };
        let fault = match rand::random_range(0..3u8) {
            0 => WriteFault::DiskFull,
            1 => WriteFault::FailAfter(part),
            _ => WriteFault::ResetAfter(part),
        };
        metrics::injected_fault(fault.label());
        Some(fault)
    }
}

/// The error an injected write fault ends a PUT with once `read` bytes have come in
/// (`None` while the body may go on).
pub fn failure_at(fault: WriteFault, read: u64) -> Option<NodeError> {
    match fault {
        WriteFault::DiskFull => Some(injected_disk_full()),
        WriteFault::FailAfter(n) if read >= n => {
            Some(NodeError::Injected(InjectedFailure::Internal))
        }
        WriteFault::ResetAfter(n) if read >= n => Some(NodeError::Injected(InjectedFailure::Reset)),
        _ => None,
    }
}

/// The error of an injected disk-full refusal: the same as a real `ENOSPC`.
pub fn injected_disk_full() -> NodeError {
    NodeError::Io(std::io::Error::new(
        std::io::ErrorKind::StorageFull,
        "injected fault: disk full",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_fault_and_refuses_nonsense() {
        assert_eq!(Faults::parse("").expect("empty"), Faults::default());
        assert!(!Faults::parse(" ").expect("blank").any());
        let f = Faults::parse("write-fail=0.25, report-free=40MiB,no-fallocate").expect("all");
        assert_eq!(f.write_fail, 0.25);
        assert_eq!(f.report_free, Some(40 << 20));
        assert!(f.no_fallocate && f.any());
        assert_eq!(
            Faults::parse("report-free=123").expect("bytes").report_free,
            Some(123)
        );
        assert!(matches!(
            Faults::parse("write-fail=1.5"),
            Err(FaultsParseError::BadValue { .. })
        ));
        assert!(matches!(
            Faults::parse("write-fail=x"),
            Err(FaultsParseError::BadValue { .. })
        ));
        assert!(matches!(
            Faults::parse("report-free=lots"),
            Err(FaultsParseError::BadValue { .. })
        ));
        assert!(matches!(
            Faults::parse("explode=1"),
            Err(FaultsParseError::Unknown(_))
        ));
    }

    #[test]
    fn rolls_follow_the_probability_and_pick_every_kind() {
        let never = Faults::default();
        assert!((0..1000).all(|_| never.roll_write(Some(100)).is_none()));
        let always = Faults::parse("write-fail=1").expect("parse");
        let mut kinds = [0u32; 3];
        for _ in 0..3000 {
            match always.roll_write(Some(100)).expect("always fails") {
                WriteFault::DiskFull => kinds[0] += 1,
                WriteFault::FailAfter(n) => {
                    assert!((1..100).contains(&n), "{n}");
                    kinds[1] += 1
                }
                WriteFault::ResetAfter(n) => {
                    assert!((1..100).contains(&n), "{n}");
                    kinds[2] += 1
                }
            }
        }
        assert!(kinds.iter().all(|&k| k > 800), "{kinds:?}");
        let half = Faults::parse("write-fail=0.5").expect("parse");
        let failed = (0..4000)
            .filter(|_| half.roll_write(None).is_some())
            .count();
        assert!((1600..2400).contains(&failed), "{failed}");
    }
}
