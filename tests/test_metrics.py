"""Health and Prometheus metrics of the gateway (`/_cairn/health`, `/_cairn/metrics`) and the nodes (`/health`, `/metrics`)."""

import os
import re

from harness.cluster import metric_samples
from harness.data import MiB
from harness.sigv4 import request

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)(\s+\d+)?$")


def parse(text):
    """{(name, labels): value} of a Prometheus text exposition; checks every line's syntax."""
    out = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            if line.startswith("# TYPE"):
                assert len(line.split()) == 4, line
            continue
        m = SAMPLE.match(line)
        assert m, f"not Prometheus text: {line!r}"
        out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def total(samples, pattern):
    rx = re.compile(pattern)
    return sum(v for (n, _), v in samples.items() if rx.search(n))


def names(samples):
    return sorted({n for n, _ in samples})


def test_gateway_health_is_open_and_metrics_need_the_admin_token(cairn_cluster):
    r = request("GET", cairn_cluster.endpoint + "/_cairn/health")
    assert r.status == 200
    r = request("GET", cairn_cluster.endpoint + "/_cairn/metrics")
    assert r.status == 403, r.status
    r = request("GET", cairn_cluster.endpoint + "/_cairn/metrics",
                headers={"Authorization": f"Bearer {cairn_cluster.admin_token}"})
    assert r.status == 200
    assert r.headers.get("content-type", "").startswith("text/plain"), r.headers
    parse(r.body.decode())


def test_gateway_metrics_count_requests_and_bytes(cairn_cluster, s3, bucket):
    before = parse(cairn_cluster.gateway.metrics())
    data = os.urandom(2 * MiB + 3)
    s3.put_object(Bucket=bucket, Key="m", Body=data)
    s3.get_object(Bucket=bucket, Key="m")["Body"].read()
    s3.get_object(Bucket=bucket, Key="m")["Body"].read()
    try:
        s3.get_object(Bucket=bucket, Key="missing")
    except Exception:
        pass
    after = parse(cairn_cluster.gateway.metrics())
    n = names(after)
    req = [x for x in n if re.search(r"request", x) and not x.endswith(("_bucket", "_sum", "_count"))]
    assert req, f"no request counter in {n}"
    assert any(re.search(r'status="?404', lbl) or 'code="404' in lbl for (nm, lbl) in after if nm in req), \
        "requests are not labelled by status"
    assert any(re.search(r"(op|operation|method|action)=", lbl) for (nm, lbl) in after if nm in req), \
        "requests are not labelled by operation"
    bytes_in = r"bytes_(in|received|rx|upload)|(_in|received|rx|upload)_bytes"
    bytes_out = r"bytes_(out|sent|tx|download)|(_out|sent|tx|download)_bytes"
    grew = total(after, bytes_in) - total(before, bytes_in)
    assert grew >= len(data), f"bytes-in grew by {grew}; metrics: {n}"
    grew = total(after, bytes_out) - total(before, bytes_out)
    assert grew >= 2 * len(data), f"bytes-out grew by {grew}; metrics: {n}"
    assert any(x.endswith("_bucket") and re.search(r"latency|duration|seconds", x) for x in n), \
        f"no latency histogram in {n}"


def test_gateway_reports_nodes_up(cairn_cluster):
    assert cairn_cluster.gateway_node_count() == len(cairn_cluster.nodes), names(parse(cairn_cluster.gateway.metrics()))


def test_degraded_reads_and_node_down_show_in_metrics(fresh_cluster):
    c = fresh_cluster
    s3 = c.client()
    s3.create_bucket(Bucket="bkt")
    data = os.urandom(3 * MiB + 17)
    s3.put_object(Bucket="bkt", Key="k", Body=data)
    before = parse(c.gateway.metrics())
    shards = c.shard_files(bucket="bkt", key="k")
    victim = c.nodes[[s for s in shards if s.shard_index == 0][0].node]
    victim.kill()
    assert s3.get_object(Bucket="bkt", Key="k")["Body"].read() == data
    after = parse(c.gateway.metrics())
    assert total(after, "degraded") > total(before, "degraded"), f"no degraded-read metric grew: {names(after)}"
    c.wait_gateway_sees_nodes(3, timeout=60)
    victim.start()
    c.wait_gateway_sees_nodes(4, timeout=60)


def test_node_metrics(cairn_cluster):
    for n in cairn_cluster.nodes:
        parse(n.metrics())


def test_big_shards_go_as_raw_uploads_and_small_ones_as_http(cairn_cluster, s3, bucket):
    """Shards of 1 MiB and more reach the nodes over upgraded connections (read straight
    into the nodes' disk buffers); smaller ones as plain request bodies. Both store."""

    def stored(transport):
        return sum(
            v
            for n in cairn_cluster.nodes
            if n.alive
            for name, labels, v in metric_samples(n.metrics())
            if name == "cairn_node_shard_writes_total"
            and labels == {"result": "ok", "transport": transport}
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
