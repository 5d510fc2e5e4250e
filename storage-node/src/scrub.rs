//! Background scrub: re-reads every stored shard and checks its header and every block's
//! crc32c, at a bounded byte rate so an SD card keeps serving foreground I/O.
//!
//! A pass walks the shards in a fixed order on one blocking thread, sleeping after each
//! block as needed to stay under `rate` bytes per second. Shards that fail are logged,
//! counted in metrics and kept in [`ScrubState::bad_shards`] until a later pass (or a new
//! PUT of the shard) finds them sound, or the shard is deleted. Reads that find a bad
//! block or header (first, middle or last) add the shard to the same list
//! ([`ScrubState::report_read`]). `/v1/info` reports the list; the gateway's heartbeat
//! reads it and repairs those segments.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_common::ids::ObjectId;
use cairn_common::shard::ShardKey;

use crate::block_reader::verify_shard;
use crate::error::NodeError;
use crate::metrics;
use crate::store::{ShardAddr, Store};

/// How scrub runs.
#[derive(Clone, Copy, Debug)]
pub struct ScrubConfig {
    /// Bytes per second to read at most; 0 disables scrub.
    pub rate: u64,
    /// Pause before the first pass and between passes.
    pub every: Duration,
}

/// What scrub has found, shared with the rest of the node.
#[derive(Debug, Default)]
pub struct ScrubState {
    bad: Mutex<BTreeSet<ShardAddr>>,
    stop: AtomicBool,
}

/// Outcome of one pass.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// Shards checked completely.
    pub checked: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Shards found bad in this pass.
    pub bad: Vec<ShardAddr>,
    /// Whether the pass was stopped before the end.
    pub stopped: bool,
}

impl ScrubState {
    /// Shards the last checks found bad.
    pub fn bad_shards(&self) -> Vec<ShardAddr> {
        self.bad
            .lock()
            .map(|b| b.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Records a shard a read found bad (a block failed its crc32c, or the header its
    /// check), so `/v1/info` reports it for repair until the shard is rewritten, deleted
    /// or found sound by a scrub pass.
    pub fn report_read(&self, addr: ShardAddr, error: &NodeError) {
        metrics::read_corrupt();
        let Ok(mut set) = self.bad.lock() else {
            return;
        };
        if set.insert(addr) {
            metrics::scrub_bad_shards(set.len());
            drop(set);
            cairn_common::log_limited!(warn, key = ();
                object = %addr.object, segment = addr.segment, index = addr.index,
                error = %error, "read found a corrupt shard; reporting it for repair"
            );
        }
    }

    /// Asks a running pass to stop at the next block.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Forgets a shard's bad mark (it was just rewritten).
    pub fn forget(&self, addr: &ShardAddr) {
        self.set(*addr, false);
    }

    /// Forgets the bad marks of an object's shards (it was deleted).
    pub fn forget_object(&self, object: &ObjectId) {
        if let Ok(mut set) = self.bad.lock() {
            set.retain(|a| a.object != *object);
            metrics::scrub_bad_shards(set.len());
        }
    }

    fn set(&self, addr: ShardAddr, bad: bool) {
        if let Ok(mut set) = self.bad.lock() {
            let changed = if bad {
                set.insert(addr)
            } else {
                set.remove(&addr)
            };
            if changed {
                metrics::scrub_bad_shards(set.len());
            }
        }
    }
}

/// Runs scrub passes forever (until [`ScrubState::stop`]).
pub async fn run(store: Arc<Store>, key: ShardKey, state: Arc<ScrubState>, cfg: ScrubConfig) {
    if cfg.rate == 0 {
        return;
    }
    loop {
        tokio::time::sleep(cfg.every).await;
        if state.stop.load(Ordering::Relaxed) {
            return;
        }
        let (s, st, k) = (store.clone(), state.clone(), key.clone());
        match tokio::task::spawn_blocking(move || pass(&s, &k, &st, cfg.rate)).await {
            Ok(Ok(r)) => tracing::info!(
                checked = r.checked,
                bytes = r.bytes,
                bad = r.bad.len(),
                stopped = r.stopped,
                "scrub pass done"
            ),
            Ok(Err(e)) => {
                cairn_common::log_limited!(error, key = (); error = %e, "scrub pass failed")
            }
            Err(e) => cairn_common::log_limited!(error, key = (); error = %e, "scrub task died"),
        }
        if state.stop.load(Ordering::Relaxed) {
            return;
        }
    }
}

/// One blocking pass over every shard, reading at most `rate` bytes per second.
pub fn pass(
    store: &Store,
    key: &ShardKey,
    state: &ScrubState,
    rate: u64,
) -> Result<PassReport, NodeError> {
    let mut report = PassReport::default();
    let start = Instant::now();
    let shards = store.list_shards()?;
    // Bad marks of shards that are gone (removed behind the API's back) are dropped.
    if let Ok(mut set) = state.bad.lock() {
        let before = set.len();
        set.retain(|a| {
            shards
                .binary_search_by_key(&(a.object, a.segment, a.index), |s| {
                    (s.object, s.segment, s.index)
                })
                .is_ok()
        });
        if set.len() != before {
            metrics::scrub_bad_shards(set.len());
        }
    }
    for addr in shards {
        let mut pace = |n: u64| {
            report.bytes += n;
            metrics::scrub_bytes(n);
            // Sleep until the bytes read so far fit the rate.
            let due = Duration::from_secs_f64(report.bytes as f64 / rate.max(1) as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait.min(Duration::from_secs(1)));
            }
            !state.stop.load(Ordering::Relaxed)
        };
        match verify_shard(store, key, &addr, &mut pace) {
            Ok(true) => {
                report.checked += 1;
                state.set(addr, false);
            }
            Ok(false) => {
                report.stopped = true;
                break;
            }
            // Deleted while we walked: nothing to check, nothing to report.
            Err(NodeError::NoSuchShard) => state.set(addr, false),
            Err(NodeError::Corrupt(e)) => {
                // A dying disk can rot thousands of shards; the list is in the scrub state
                // and the metrics, the log gets one line per interval and a count.
                cairn_common::log_limited!(warn, key = ();
                    object = %addr.object, segment = addr.segment, index = addr.index,
                    error = %e, "scrub: shard is corrupt"
                );
                metrics::scrub_corrupt();
                state.set(addr, true);
                report.bad.push(addr);
            }
            Err(e) => return Err(e),
        }
    }
    metrics::scrub_pass_done(report.checked);
    Ok(report)
}

/// Parses a byte rate such as `4MiB`, `512KiB`, `1G` or `0` (binary units; `/s` optional).
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim().trim_end_matches("/s");
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num.parse().map_err(|_| format!("bad rate {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("bad rate unit in {s:?} (use B, KiB, MiB, GiB)")),
    };
    Ok((num * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_common::shard::{stored_block, Layout, ShardHeader};
    use std::io::Write;

    fn key() -> ShardKey {
        ShardKey::derive(b"scrub tests")
    }

    fn put(store: &Store, addr: ShardAddr) -> std::path::PathBuf {
        let layout = Layout::new(2, 1, 256, 2000).expect("layout");
        let header = ShardHeader {
            object_id: addr.object,
            segment: addr.segment,
            shard_index: addr.index,
            layout,
            bucket: "b".into(),
            key: "k".into(),
        };
        let (tmp, mut f) = store.create_temp(&addr).expect("temp");
        f.write_all(&header.encode(&key())).expect("header");
        for s in 0..layout.stripes() {
            let data = vec![s as u8; layout.block_len(s)];
            let stored = stored_block(&layout, &key(), &addr, s, &data);
            f.write_all(&stored).expect("block");
        }
        drop(f);
        store.commit(&tmp, &addr).expect("commit");
        store.shard_path(&addr)
    }

    #[test]
    fn pass_finds_flipped_and_truncated_shards_and_clears_fixed_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let state = ScrubState::default();
        let addrs: Vec<ShardAddr> = (0..3)
            .map(|i| ShardAddr {
                object: ObjectId::random(),
                segment: 0,
                index: i,
            })
            .collect();
        let paths: Vec<_> = addrs.iter().map(|a| put(&store, *a)).collect();
        let r = pass(&store, &key(), &state, u64::MAX).expect("pass");
        assert_eq!(r.checked, 3);
        assert!(r.bad.is_empty());

        let mut bytes = std::fs::read(&paths[0]).expect("read");
        let n = bytes.len();
        bytes[n - 100] ^= 1;
        std::fs::write(&paths[0], &bytes).expect("flip");
        let mut bytes = std::fs::read(&paths[2]).expect("read");
        bytes.push(0);
        std::fs::write(&paths[2], &bytes).expect("grow");
        let r = pass(&store, &key(), &state, u64::MAX).expect("pass");
        assert_eq!(r.checked, 1);
        let mut want = vec![addrs[0], addrs[2]];
        want.sort();
        let mut got = r.bad.clone();
        got.sort();
        assert_eq!(got, want);
        assert_eq!(state.bad_shards(), want);

        put(&store, addrs[0]);
        state.forget_object(&addrs[2].object);
        assert!(store.delete_object(&addrs[2].object).is_ok());
        let r = pass(&store, &key(), &state, u64::MAX).expect("pass");
        assert_eq!(r.checked, 2);
        assert!(state.bad_shards().is_empty());
    }

    #[test]
    fn pass_respects_the_rate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let addr = ShardAddr {
            object: ObjectId::random(),
            segment: 1,
            index: 0,
        };
        put(&store, addr);
        let t = Instant::now();
        // ~1040 bytes at 4 KiB/s: about a quarter second.
        let r = pass(&store, &key(), &ScrubState::default(), 4096).expect("pass");
        assert_eq!(r.checked, 1);
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn units_parse() {
        assert_eq!(parse_rate("4MiB"), Ok(4 << 20));
        assert_eq!(parse_rate("512KiB/s"), Ok(512 << 10));
        assert_eq!(parse_rate("0"), Ok(0));
        assert!(parse_rate("4 parsecs").is_err());
    }
}
