//! The watcher's metrics (via the `metrics` crate) and an optional Prometheus endpoint.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::error::{Error, Result};

/// Checkpoints detected (once per name per process).
pub const SEEN: &str = "cairn_watch_checkpoints_seen_total";
/// Checkpoints committed.
pub const COMMITTED: &str = "cairn_watch_checkpoints_committed_total";
/// Checkpoints reported as never completing, and failed sync passes.
pub const FAILED: &str = "cairn_watch_checkpoints_failed_total";
/// Retries after S3 or I/O failures.
pub const RETRIES: &str = "cairn_watch_upload_retries_total";
/// Seconds from a checkpoint's last write to its commit.
pub const COMMIT_DELAY: &str = "cairn_watch_commit_delay_seconds";

/// Registers the metrics and serves them as Prometheus text on `GET /metrics` at `addr`.
pub async fn serve(addr: SocketAddr) -> Result<()> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(COMMIT_DELAY.into()),
            &[
                0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
            ],
        )
        .and_then(|b| b.install_recorder())
        .map_err(|e| Error::BadArg(format!("metrics: {e}")))?;
    metrics::describe_counter!(SEEN, "Checkpoints detected by the watcher");
    metrics::describe_counter!(COMMITTED, "Checkpoints committed (manifest written)");
    metrics::describe_counter!(
        FAILED,
        "Checkpoints reported as never completing, and failed passes"
    );
    metrics::describe_counter!(RETRIES, "Retries after S3 or I/O failures");
    metrics::describe_histogram!(COMMIT_DELAY, metrics::Unit::Seconds, "Last write to commit");
    for c in [SEEN, COMMITTED, FAILED, RETRIES] {
        metrics::counter!(c).increment(0);
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::BadArg(format!("--metrics-listen {addr}: {e}")))?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            upkeep.run_upkeep();
        }
    });
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let h = handle.clone();
            async move { h.render() }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("metrics endpoint stopped: {e}");
        }
    });
    tracing::info!("serving metrics on http://{addr}/metrics");
    Ok(())
}
