//! Prometheus exposition of the gateway's metrics.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds, from a fast metadata call to a multi-GB transfer.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Renders the current metrics as Prometheus text.
#[derive(Clone)]
pub struct Exporter(PrometheusHandle);

impl Exporter {
    /// The text exposition.
    pub fn render(&self) -> String {
        self.0.run_upkeep();
        self.0.render()
    }
}

/// Installs the global recorder once per process and returns its handle.
pub fn install() -> Exporter {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    let handle = HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let _ = metrics::set_global_recorder(recorder);
        handle
    });
    register_at_zero();
    Exporter(handle.clone())
}

/// Makes counters and gauges exist from the start, so `increase()` sees the first event.
fn register_at_zero() {
    for name in [
        "cairn_s3_bytes_in_total",
        "cairn_s3_bytes_out_total",
        "cairn_degraded_reads_total",
        "cairn_degraded_writes_total",
        "cairn_checksum_failures_total",
        "cairn_stripes_encoded_total",
        "cairn_repair_bytes_total",
        "cairn_gc_shards_deleted_total",
        "cairn_gc_objects_deleted_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    for result in ["ok", "skipped", "failed"] {
        metrics::counter!("cairn_repair_segments_total", "result" => result).increment(0);
    }
    for name in [
        "cairn_multipart_uploads_open",
        "cairn_objects_degraded",
        "cairn_repair_queue_segments",
    ] {
        metrics::gauge!(name).increment(0.0);
    }
}
