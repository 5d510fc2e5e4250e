"""Health and Prometheus metrics of the gateway (`/_cairn/health`, `/_cairn/metrics`) and the nodes (`/health`, `/metrics`)."""

import json
import os

from harness.data import MiB
from harness.exposition import Exposition
from harness.s3util import s3_error
from harness.sigv4 import request

# What a node exports from startup, by type (storage-node/src/metrics.rs registers these
# before the first request): an exposition without any of them is empty or truncated.
NODE_SERIES_AT_START = {
    "cairn_node_bytes_written_total": "counter",
    "cairn_node_bytes_read_total": "counter",
    "cairn_node_checksum_failures_total": "counter",
    "cairn_node_read_corrupt_total": "counter",
    "cairn_node_scrub_bytes_total": "counter",
    "cairn_node_scrub_corrupt_total": "counter",
    "cairn_node_scrub_passes_total": "counter",
    "cairn_node_scrub_bad_shards": "gauge",
    "cairn_node_shards_stored": "gauge",
    "cairn_node_disk_capacity_bytes": "gauge",
    "cairn_node_disk_free_bytes": "gauge",
    "cairn_node_capacity_bytes": "gauge",
    "cairn_node_free_bytes": "gauge",
}


def test_gateway_health_is_open_and_metrics_need_the_admin_token(cairn_cluster):
    r = request("GET", cairn_cluster.endpoint + "/_cairn/health")
    assert r.status == 200
    r = request("GET", cairn_cluster.endpoint + "/_cairn/metrics")
    assert r.status == 403, r.status
    r = request("GET", cairn_cluster.endpoint + "/_cairn/metrics",
                headers={"Authorization": f"Bearer {cairn_cluster.admin_token}"})
    assert r.status == 200
    assert r.headers.get("content-type", "").startswith("text/plain"), r.headers
    m = Exposition.parse(r.body.decode())
    assert m.value("cairn_nodes_up") == len(cairn_cluster.nodes)


def gateway_node_ids(c) -> dict[str, str]:
    """{node addr: node id} from the gateway's `/_cairn/nodes`."""
    status, body = c.gateway.admin_get("/_cairn/nodes")
    assert status == 200, body[:300]
    return {n["addr"]: n["id"] for n in json.loads(body)}


def test_gateway_metrics_count_requests_and_bytes(cairn_cluster, s3, bucket):
    before = cairn_cluster.gateway.metrics()
    data = os.urandom(2 * MiB + 3)
    s3.put_object(Bucket=bucket, Key="m", Body=data)
    s3.get_object(Bucket=bucket, Key="m")["Body"].read()
    s3.get_object(Bucket=bucket, Key="m")["Body"].read()
    with s3_error("NoSuchKey", 404):
        s3.get_object(Bucket=bucket, Key="missing")
    after = cairn_cluster.gateway.metrics()

    def grew(name, **labels):
        return after.value(name, **labels) - (before.get(name, **labels) or 0)

    assert grew("cairn_s3_requests_total", operation="PutObject", status="200") == 1
    assert grew("cairn_s3_requests_total", operation="GetObject", status="200") == 2
    assert grew("cairn_s3_requests_total", operation="GetObject", status="404") == 1
    assert grew("cairn_s3_bytes_in_total") == len(data)
    assert grew("cairn_s3_bytes_out_total") == 2 * len(data)
    assert after.types.get("cairn_s3_request_duration_seconds") == "histogram", after.types
    assert grew("cairn_s3_request_duration_seconds_count", operation="GetObject") == 3
    assert grew("cairn_s3_request_duration_seconds_bucket", operation="GetObject", le="+Inf") == 3
    assert grew("cairn_s3_request_duration_seconds_count", operation="PutObject") == 1


def test_gateway_reports_nodes_up(cairn_cluster):
    c = cairn_cluster
    m = c.gateway.metrics()
    assert m.value("cairn_nodes_up") == len(c.nodes)
    assert m.value("cairn_nodes_known") == len(c.nodes)
    ids = gateway_node_ids(c)
    for n in c.nodes:
        assert m.value("cairn_node_up", node=ids[n.addr]) == 1, n
    assert c.gateway_node_count() == len(c.nodes)


def test_degraded_reads_and_node_down_show_in_metrics(fresh_cluster):
    c = fresh_cluster
    s3 = c.client()
    s3.create_bucket(Bucket="bkt")
    data = os.urandom(3 * MiB + 17)
    s3.put_object(Bucket="bkt", Key="k", Body=data)
    ids = gateway_node_ids(c)
    before = c.gateway.metrics().value("cairn_degraded_reads_total")
    shards = c.shard_files(bucket="bkt", key="k")
    victim = c.nodes[[s for s in shards if s.shard_index == 0][0].node]
    victim.kill()
    assert s3.get_object(Bucket="bkt", Key="k")["Body"].read() == data
    after = c.gateway.metrics().value("cairn_degraded_reads_total")
    assert after > before, f"cairn_degraded_reads_total stayed at {before} reading around a dead data shard"
    c.wait_gateway_sees_nodes(3, timeout=60)
    m = c.gateway.metrics()
    assert m.value("cairn_nodes_up") == 3
    assert m.value("cairn_node_up", node=ids[victim.addr]) == 0
    victim.start()
    c.wait_gateway_sees_nodes(4, timeout=60)


def test_node_metrics(cairn_cluster):
    """Every node exports the series it registers at startup, typed, with sane values: an
    empty or truncated /metrics fails."""
    for n in cairn_cluster.nodes:
        m = n.metrics()
        for name, kind in NODE_SERIES_AT_START.items():
            v = m.value(name)
            assert v >= 0, f"{n.name}: {name} = {v}"
            assert m.types.get(name) == kind, f"{n.name}: {name} typed {m.types.get(name)!r}, expected {kind}"
        assert m.value("cairn_node_disk_capacity_bytes") > 0, n.name
        assert m.value("cairn_node_disk_free_bytes") <= m.value("cairn_node_disk_capacity_bytes"), n.name
        assert 0 < m.value("cairn_node_capacity_bytes") <= m.value("cairn_node_disk_capacity_bytes"), n.name
        assert m.value("cairn_node_free_bytes") <= m.value("cairn_node_capacity_bytes"), n.name


def test_big_shards_go_as_raw_uploads_and_small_ones_as_http(cairn_cluster, s3, bucket):
    """Shards of 1 MiB and more reach the nodes over upgraded connections (read straight
    into the nodes' disk buffers); smaller ones as plain request bodies. Both store."""

    def stored(transport):
        """Shard PUTs stored over `transport`, all nodes (a transport not used yet has no series)."""
        return sum(
            n.metrics().get("cairn_node_shard_writes_total", result="ok", transport=transport) or 0
            for n in cairn_cluster.nodes
        )

    before = {t: stored(t) for t in ("raw", "http")}
    small = os.urandom(100 * 1024)
    big = os.urandom(8 * MiB + 5)  # 3+1: shards of ~2.7 MiB
    s3.put_object(Bucket=bucket, Key="small", Body=small)
    assert stored("http") - before["http"] >= 4, "small object's shards not sent as bodies"
    s3.put_object(Bucket=bucket, Key="big", Body=big)
    assert stored("raw") - before["raw"] >= 4, "big object's shards not sent as raw uploads"
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == big
    assert s3.get_object(Bucket=bucket, Key="small")["Body"].read() == small
