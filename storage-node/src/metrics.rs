//! Prometheus metrics of the node (all named `cairn_node_*`).
//!
//! | metric | kind | meaning |
//! |---|---|---|
//! | `cairn_node_shard_writes_total{result}` | counter | PUTs by outcome (`ok` or an `x-cairn-error` kind) |
//! | `cairn_node_shard_reads_total{result}` | counter | range reads by outcome at response start |
//! | `cairn_node_bytes_written_total` | counter | shard file bytes stored |
//! | `cairn_node_bytes_read_total` | counter | verified block bytes sent |
//! | `cairn_node_write_seconds` | histogram | PUT time, first body byte to durable rename |
//! | `cairn_node_read_seconds` | histogram | time to open a read and verify its first block |
//! | `cairn_node_checksum_failures_total` | counter | stored blocks or headers that failed their check |
//! | `cairn_node_disk_capacity_bytes`, `cairn_node_disk_free_bytes` | gauge | data filesystem |
//! | `cairn_node_capacity_bytes`, `cairn_node_free_bytes` | gauge | what the node offers (`--capacity` applied), as reported in `/v1/info` |
//! | `cairn_node_read_corrupt_total` | counter | shard reads that found a stored block or header bad (the shard is then reported for repair) |
//! | `cairn_node_injected_faults_total{kind}` | counter | faults injected by `CAIRN_NODE_FAULTS` |
//! | `cairn_node_shards_stored` | gauge | shard files held |
//! | `cairn_node_scrub_bytes_total` | counter | bytes re-read by scrub |
//! | `cairn_node_scrub_corrupt_total` | counter | shards a scrub pass found bad |
//! | `cairn_node_scrub_passes_total` | counter | completed scrub passes |
//! | `cairn_node_scrub_bad_shards` | gauge | shards currently known bad (found by scrub or by reads) |
//!
//! The recorder is process-wide: the first node started in a process installs it, later
//! ones (tests) share it. If another recorder is already installed, `/metrics` is empty.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::space::DiskSpace;

const WRITES: &str = "cairn_node_shard_writes_total";
const READS: &str = "cairn_node_shard_reads_total";
const BYTES_WRITTEN: &str = "cairn_node_bytes_written_total";
const BYTES_READ: &str = "cairn_node_bytes_read_total";
const WRITE_SECONDS: &str = "cairn_node_write_seconds";
const READ_SECONDS: &str = "cairn_node_read_seconds";
const CHECKSUM_FAILURES: &str = "cairn_node_checksum_failures_total";
const DISK_CAPACITY: &str = "cairn_node_disk_capacity_bytes";
const DISK_FREE: &str = "cairn_node_disk_free_bytes";
const CAPACITY: &str = "cairn_node_capacity_bytes";
const FREE: &str = "cairn_node_free_bytes";
const READ_CORRUPT: &str = "cairn_node_read_corrupt_total";
const INJECTED: &str = "cairn_node_injected_faults_total";
const SHARDS: &str = "cairn_node_shards_stored";
const SCRUB_BYTES: &str = "cairn_node_scrub_bytes_total";
const SCRUB_CORRUPT: &str = "cairn_node_scrub_corrupt_total";
const SCRUB_PASSES: &str = "cairn_node_scrub_passes_total";
const SCRUB_LAST_CHECKED: &str = "cairn_node_scrub_last_pass_shards";
const SCRUB_BAD: &str = "cairn_node_scrub_bad_shards";

/// Latency buckets (seconds): from a cached 1 MiB read to a multi-GiB shard on an SD card.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (once per process) and returns its handle.
pub fn init() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder is already installed; /metrics will be empty");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        WRITES,
        "Shard PUTs by result and transport (raw upload or HTTP body)"
    );
    metrics::describe_counter!(READS, "Shard range reads by result");
    metrics::describe_counter!(BYTES_WRITTEN, "Shard file bytes stored");
    metrics::describe_counter!(BYTES_READ, "Verified block bytes sent");
    metrics::describe_histogram!(WRITE_SECONDS, "Shard PUT duration in seconds");
    metrics::describe_histogram!(
        READ_SECONDS,
        "Seconds to open a read and verify its first block"
    );
    metrics::describe_counter!(
        CHECKSUM_FAILURES,
        "Stored blocks or headers that failed their check"
    );
    metrics::describe_gauge!(DISK_CAPACITY, "Bytes of the data filesystem");
    metrics::describe_gauge!(DISK_FREE, "Bytes free on the data filesystem");
    metrics::describe_gauge!(
        CAPACITY,
        "Bytes the node offers: the data filesystem's size, or --capacity if smaller"
    );
    metrics::describe_gauge!(
        FREE,
        "Bytes free for shards: the filesystem's free space, or what --capacity leaves if less"
    );
    metrics::describe_counter!(
        READ_CORRUPT,
        "Shard reads that found a stored block or header bad"
    );
    metrics::describe_counter!(INJECTED, "Faults injected by CAIRN_NODE_FAULTS");
    metrics::describe_gauge!(SHARDS, "Shard files stored");
    metrics::describe_counter!(SCRUB_BYTES, "Bytes re-read by scrub");
    metrics::describe_counter!(SCRUB_CORRUPT, "Shards a scrub pass found bad");
    metrics::describe_counter!(SCRUB_PASSES, "Completed scrub passes");
    metrics::describe_gauge!(
        SCRUB_LAST_CHECKED,
        "Shards checked sound by the last scrub pass"
    );
    metrics::describe_gauge!(SCRUB_BAD, "Shards currently known bad");
    // Exist from the start, so `increase()` sees the first event.
    for name in [
        BYTES_WRITTEN,
        BYTES_READ,
        CHECKSUM_FAILURES,
        READ_CORRUPT,
        SCRUB_BYTES,
        SCRUB_CORRUPT,
        SCRUB_PASSES,
    ] {
        metrics::counter!(name).increment(0);
    }
    metrics::gauge!(SCRUB_BAD).increment(0.0);
}

/// Runs the recorder's upkeep (histogram draining) forever.
pub async fn upkeep(handle: PrometheusHandle) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}

/// Records a finished PUT that came over `transport` (`raw` upload or `http` body).
pub fn write_done(transport: &'static str, result: &'static str, bytes: u64, elapsed: Duration) {
    metrics::counter!(WRITES, "result" => result, "transport" => transport).increment(1);
    if result == "ok" {
        metrics::counter!(BYTES_WRITTEN).increment(bytes);
    }
    metrics::histogram!(WRITE_SECONDS).record(elapsed.as_secs_f64());
}

/// Records a read's start (its first block verified, or its failure).
pub fn read_started(result: &'static str, elapsed: Duration) {
    metrics::counter!(READS, "result" => result).increment(1);
    metrics::histogram!(READ_SECONDS).record(elapsed.as_secs_f64());
}

/// Counts verified block bytes handed to a response.
pub fn bytes_read(bytes: u64) {
    metrics::counter!(BYTES_READ).increment(bytes);
}

/// Counts a stored block or header that failed its check.
pub fn checksum_failure() {
    metrics::counter!(CHECKSUM_FAILURES).increment(1);
}

/// Publishes disk space.
pub fn disk(space: DiskSpace) {
    metrics::gauge!(DISK_CAPACITY).set(space.capacity as f64);
    metrics::gauge!(DISK_FREE).set(space.free as f64);
}

/// Publishes the space the node offers.
pub fn space(space: DiskSpace) {
    metrics::gauge!(CAPACITY).set(space.capacity as f64);
    metrics::gauge!(FREE).set(space.free as f64);
}

/// Counts a shard read that found a stored block or header bad.
pub fn read_corrupt() {
    metrics::counter!(READ_CORRUPT).increment(1);
}

/// Counts an injected fault of `kind`.
pub fn injected_fault(kind: &'static str) {
    metrics::counter!(INJECTED, "kind" => kind).increment(1);
}

/// Publishes the shard count.
pub fn shards(n: u64) {
    metrics::gauge!(SHARDS).set(n as f64);
}

/// Counts bytes re-read by scrub.
pub fn scrub_bytes(n: u64) {
    metrics::counter!(SCRUB_BYTES).increment(n);
}

/// Counts a shard a scrub pass found bad.
pub fn scrub_corrupt() {
    metrics::counter!(SCRUB_CORRUPT).increment(1);
}

/// Records a finished scrub pass.
pub fn scrub_pass_done(checked: u64) {
    metrics::counter!(SCRUB_PASSES).increment(1);
    metrics::gauge!(SCRUB_LAST_CHECKED).set(checked as f64);
}

/// Publishes how many shards are known bad.
pub fn scrub_bad_shards(n: usize) {
    metrics::gauge!(SCRUB_BAD).set(n as f64);
}
