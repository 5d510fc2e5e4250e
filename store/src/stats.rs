//! Periodic catalog statistics for Prometheus: objects, logical and stored bytes per
//! bucket, objects below full redundancy, open multipart uploads.

use std::collections::BTreeMap;
use std::time::Duration;

use super::service::ObjectService;
use super::StoreError;

#[derive(Default)]
struct BucketStats {
    objects: u64,
    logical: u64,
    stored: u64,
}

/// Computes the statistics once and publishes them as gauges.
pub fn publish(service: &ObjectService) -> Result<(), StoreError> {
    let live: std::collections::HashSet<_> = service.cluster.live_nodes().into_iter().collect();
    let mut per_bucket: BTreeMap<String, BucketStats> = BTreeMap::new();
    for (name, _) in service.catalog.list_buckets()? {
        per_bucket.insert(name, BucketStats::default());
    }
    let mut degraded = 0u64;
    for item in service.catalog.scan_all_objects() {
        let (bucket, _, rec) = item?;
        let st = per_bucket.entry(bucket).or_default();
        st.objects += 1;
        st.logical += rec.size;
        let mut below_full = false;
        for seg in &rec.segments {
            if let Ok(l) = super::segment_layout(seg) {
                st.stored += (seg.k as u64 + seg.m as u64) * l.shard_body_len();
            }
            below_full |= seg.nodes.iter().any(|n| !live.contains(n));
        }
        degraded += below_full as u64;
    }
    for (bucket, st) in per_bucket {
        metrics::gauge!("cairn_bucket_objects", "bucket" => bucket.clone()).set(st.objects as f64);
        metrics::gauge!("cairn_bucket_logical_bytes", "bucket" => bucket.clone())
            .set(st.logical as f64);
        metrics::gauge!("cairn_bucket_stored_bytes", "bucket" => bucket).set(st.stored as f64);
    }
    metrics::gauge!("cairn_objects_degraded").set(degraded as f64);
    metrics::gauge!("cairn_multipart_uploads_open").set(service.catalog.uploads()?.len() as f64);
    Ok(())
}

/// Publishes the statistics every `every`.
pub async fn publish_forever(service: ObjectService, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let s = service.clone();
        match tokio::task::spawn_blocking(move || publish(&s)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "publishing catalog statistics failed"),
            Err(e) => tracing::warn!(error = %e, "statistics task failed"),
        }
    }
}
