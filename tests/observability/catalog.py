"""Every `cairn_*` metric the dashboards and alert rules may use: which process exports it,
and what must have happened before it appears.

`needs=None` means the process must export it from startup. That is required of every
unlabelled counter and gauge: a counter that first appears at 1 hides its first increase
from `increase()`/`rate()` (so "checksum failures seen" would miss the first failure), and a
panel over a series that does not exist yet is blank. Register them at zero when the
process starts (`metrics::counter!(NAME).absolute(0)` / `increment(0)`, `gauge!(..).set(..)`).

Labelled series and histograms appear with their first event; `needs` names it and
tests/test_observability.py drives every such event before it looks.
"""

from __future__ import annotations

from dataclasses import dataclass

GATEWAY, NODE, WATCH = "gateway", "node", "watch"


@dataclass(frozen=True)
class Metric:
    source: str
    kind: str  # counter | gauge | histogram
    needs: str | None = None

    def series(self, name: str) -> list[str]:
        if self.kind == "histogram":
            return [f"{name}_bucket", f"{name}_sum", f"{name}_count"]
        return [name]


PUT = "an S3 PUT"
ANY_REQUEST = "any S3 request"
DEGRADED_READ = "a degraded read (a corrupt data shard rebuilt from parity)"
BUCKET = "a bucket holding an object"
SHARD_PUT = "a shard written"
SHARD_READ = "a shard read"
SCRUB_PASS = "a finished scrub pass"
COMMIT = "a committed checkpoint"

CATALOG: dict[str, Metric] = {
    # gateway
    "cairn_s3_requests_total": Metric(GATEWAY, "counter", ANY_REQUEST),
    "cairn_s3_request_duration_seconds": Metric(GATEWAY, "histogram", ANY_REQUEST),
    "cairn_s3_bytes_in_total": Metric(GATEWAY, "counter"),
    "cairn_s3_bytes_out_total": Metric(GATEWAY, "counter"),
    "cairn_nodes_up": Metric(GATEWAY, "gauge"),
    "cairn_nodes_known": Metric(GATEWAY, "gauge"),
    "cairn_node_up": Metric(GATEWAY, "gauge"),  # {node}: every node known at startup
    "cairn_degraded_reads_total": Metric(GATEWAY, "counter"),
    "cairn_degraded_writes_total": Metric(GATEWAY, "counter"),
    "cairn_checksum_failures_total": Metric(GATEWAY, "counter"),
    "cairn_stripes_encoded_total": Metric(GATEWAY, "counter"),
    "cairn_erasure_decode_seconds": Metric(GATEWAY, "histogram", DEGRADED_READ),
    "cairn_segment_write_seconds": Metric(GATEWAY, "histogram", PUT),
    "cairn_objects_degraded": Metric(GATEWAY, "gauge"),
    "cairn_multipart_uploads_open": Metric(GATEWAY, "gauge"),
    "cairn_bucket_objects": Metric(GATEWAY, "gauge", BUCKET),
    "cairn_bucket_logical_bytes": Metric(GATEWAY, "gauge", BUCKET),
    "cairn_bucket_stored_bytes": Metric(GATEWAY, "gauge", BUCKET),
    "cairn_repair_queue_segments": Metric(GATEWAY, "gauge"),
    "cairn_repair_segments_total": Metric(GATEWAY, "counter"),  # {result}: all registered at zero
    "cairn_repair_bytes_total": Metric(GATEWAY, "counter"),
    "cairn_gc_shards_deleted_total": Metric(GATEWAY, "counter"),
    "cairn_gc_objects_deleted_total": Metric(GATEWAY, "counter"),
    # storage nodes
    "cairn_node_shard_writes_total": Metric(NODE, "counter", SHARD_PUT),
    "cairn_node_shard_reads_total": Metric(NODE, "counter", SHARD_READ),
    "cairn_node_bytes_written_total": Metric(NODE, "counter"),
    "cairn_node_bytes_read_total": Metric(NODE, "counter"),
    "cairn_node_write_seconds": Metric(NODE, "histogram", SHARD_PUT),
    "cairn_node_read_seconds": Metric(NODE, "histogram", SHARD_READ),
    "cairn_node_checksum_failures_total": Metric(NODE, "counter"),
    "cairn_node_disk_capacity_bytes": Metric(NODE, "gauge"),
    "cairn_node_disk_free_bytes": Metric(NODE, "gauge"),
    "cairn_node_shards_stored": Metric(NODE, "gauge"),
    "cairn_node_scrub_bytes_total": Metric(NODE, "counter"),
    "cairn_node_scrub_corrupt_total": Metric(NODE, "counter"),
    "cairn_node_scrub_passes_total": Metric(NODE, "counter"),
    "cairn_node_scrub_last_pass_shards": Metric(NODE, "gauge", SCRUB_PASS),
    "cairn_node_scrub_bad_shards": Metric(NODE, "gauge"),
    # cairn watch
    "cairn_watch_checkpoints_seen_total": Metric(WATCH, "counter"),
    "cairn_watch_checkpoints_committed_total": Metric(WATCH, "counter"),
    "cairn_watch_checkpoints_failed_total": Metric(WATCH, "counter"),
    "cairn_watch_upload_retries_total": Metric(WATCH, "counter"),
    "cairn_watch_commit_delay_seconds": Metric(WATCH, "histogram", COMMIT),
}


def base_name(series: str) -> str | None:
    """The catalog name a series belongs to (`x_bucket` -> `x` for histograms), or None."""
    if series in CATALOG:
        return series
    for suffix in ("_bucket", "_sum", "_count"):
        if series.endswith(suffix):
            base = series[: -len(suffix)]
            if base in CATALOG and CATALOG[base].kind == "histogram":
                return base
    return None
