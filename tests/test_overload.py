"""The gateway's edge under a hostile LAN: internal routes need credentials, every valid
bucket name works, connections that never finish a request are closed, and a flood of
idle connections neither stops the listener nor starves normal clients.

The gateway runs with a short `--client-timeout` (header timeout) and keep-alive timeout
so closing is seen within seconds, and a `--max-connections` below the flood so idle
connections are evicted to make room.
"""

from __future__ import annotations

import http.client
import resource
import socket
import threading
import time

import pytest

from harness import sigv4
from harness.cluster import Cluster
from harness.net import http_get
from harness.servers import admin_token

CLIENT_TIMEOUT = 2.0
KEEPALIVE_TIMEOUT = 3.0
MAX_CONNECTIONS = 2000
FLOOD = 10_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(
        tmp_path_factory.mktemp("overload"),
        gateway_args=[
            "--client-timeout", f"{CLIENT_TIMEOUT}s",
            "--keepalive-timeout", f"{KEEPALIVE_TIMEOUT}s",
            "--max-connections", str(MAX_CONNECTIONS),
        ],
    )
    c.start()
    yield c
    c.close()


def _get(c: Cluster, path: str, headers: dict | None = None) -> sigv4.Response:
    return sigv4.request("GET", c.endpoint + path, headers=headers, timeout=10)


# ------------------------------------------------------------------------ credentials

INTERNAL = ["/_cairn/metrics", "/_cairn/nodes", "/_cairn/sd/prometheus"]


def _auth_failures(c: Cluster) -> float:
    """Failed authentications counted for 127.0.0.1, whatever the key (none before the first)."""
    return sum(
        s.value for s in c.gateway.metrics().series("cairn_auth_failures_total") if s.labels["source"] == "127.0.0.1"
    )


@pytest.mark.parametrize("path", INTERNAL)
def test_internal_routes_need_the_admin_token_or_sigv4(cluster, path):
    failures = _auth_failures(cluster)
    r = _get(cluster, path)
    assert r.status == 403, (r.status, r.body[:300])
    assert sigv4.parse_error(r.body).get("Code") == "AccessDenied", r.body[:300]
    wrong = _get(cluster, path, {"Authorization": "Bearer " + "0" * len(cluster.admin_token)})
    assert wrong.status == 403, (wrong.status, wrong.body[:300])
    ok = _get(cluster, path, {"Authorization": f"Bearer {cluster.admin_token}"})
    assert ok.status == 200, (ok.status, ok.body[:300])
    # Refused admin requests count as failed authentications of their source.
    assert _auth_failures(cluster) == failures + 2
    url = cluster.endpoint + path
    signed = sigv4.sign_headers("GET", url, cluster.access_key, cluster.secret_key, payload_hash=sigv4.EMPTY_SHA256)
    r = sigv4.request("GET", url, headers=signed, timeout=10)
    assert r.status == 200, (r.status, r.body[:300])


def test_an_explicit_admin_token_replaces_the_default(cluster_factory):
    token = "tok-" + "a" * 28
    c = cluster_factory(nodes=3, ec="2+1", extra_env={"CAIRN_ADMIN_TOKEN": token})
    assert c.admin_token == token
    assert _get(c, "/_cairn/metrics", {"Authorization": f"Bearer {token}"}).status == 200
    assert _get(c, "/_cairn/metrics", {"Authorization": f"Bearer {admin_token(c.cluster_secret)}"}).status == 403


def test_health_is_open_and_says_only_ok(cluster):
    r = _get(cluster, "/_cairn/health")
    assert (r.status, r.body) == (200, b"ok")


def test_buckets_named_metrics_and_health_work(cluster):
    s3 = cluster.client()
    for name in ("metrics", "health"):
        s3.create_bucket(Bucket=name)
        s3.put_object(Bucket=name, Key="k", Body=b"v-" + name.encode())
        assert s3.get_object(Bucket=name, Key="k")["Body"].read() == b"v-" + name.encode()
        assert [o["Key"] for o in s3.list_objects_v2(Bucket=name)["Contents"]] == ["k"]
        # GET /metrics and GET /health are S3 (ListObjects), so unauthenticated they are refused
        r = _get(cluster, "/" + name)
        assert r.status == 403, (r.status, r.body[:200])
        s3.delete_object(Bucket=name, Key="k")
        s3.delete_bucket(Bucket=name)


# ------------------------------------------------------------------------ timeouts


def _closed_within(sock: socket.socket, limit: float, dribble: bytes = b"") -> float | None:
    """Seconds until the server closes `sock` (None if still open after `limit`). With
    `dribble`, sends one byte of it every 0.3 s meanwhile."""
    started = time.monotonic()
    sock.setblocking(False)
    sent = 0
    while time.monotonic() - started < limit:
        try:
            data = sock.recv(4096)
            if data == b"":
                return time.monotonic() - started
        except BlockingIOError:
            pass
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - started
        if dribble and sent < len(dribble):
            try:
                sock.send(dribble[sent:sent + 1])
                sent += 1
            except (ConnectionResetError, BrokenPipeError):
                return time.monotonic() - started
        time.sleep(0.3 if dribble else 0.05)
    return None


def test_slow_silent_and_idle_connections_are_closed(cluster):
    header_before = cluster.gateway.metrics().value("cairn_s3_connections_timed_out_total", reason="header")
    idle_before = cluster.gateway.metrics().value("cairn_s3_connections_timed_out_total", reason="idle")
    host, port = cluster.gateway.addr.rsplit(":", 1)
    silent = socket.create_connection((host, int(port)))
    slow = socket.create_connection((host, int(port)))
    # A request head sent one byte per 0.3 s: ~100 bytes take 30 s, far past the timeout.
    head = b"GET /_cairn/health HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 60 + b"\r\n\r\n"
    kept = http.client.HTTPConnection(host, int(port), timeout=10)
    kept.request("GET", "/_cairn/health")
    assert kept.getresponse().read() == b"ok"
    results = {}

    def watch(name, sock, limit, dribble=b""):
        results[name] = _closed_within(sock, limit, dribble)

    threads = [
        threading.Thread(target=watch, args=("silent", silent, CLIENT_TIMEOUT + 4)),
        threading.Thread(target=watch, args=("slowloris", slow, CLIENT_TIMEOUT + 4, head)),
        threading.Thread(target=watch, args=("kept-alive", kept.sock, KEEPALIVE_TIMEOUT + 4)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"closed after (s): {results}")
    assert results["silent"] is not None, "a connection that sent nothing was never closed"
    assert results["slowloris"] is not None, "a connection dribbling its head was never closed"
    assert results["kept-alive"] is not None, "an idle kept-alive connection was never closed"
    # closed for the right reason: not before its timeout (allowing for clock granularity)
    assert results["silent"] >= CLIENT_TIMEOUT - 0.5, results
    assert results["kept-alive"] >= KEEPALIVE_TIMEOUT - 0.5, results
    assert cluster.gateway.metrics().value("cairn_s3_connections_timed_out_total", reason="header") >= header_before + 2
    assert cluster.gateway.metrics().value("cairn_s3_connections_timed_out_total", reason="idle") >= idle_before + 1
    for s in (silent, slow):
        s.close()
    kept.close()


# ------------------------------------------------------------------------ flood


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _raise_nofile(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard == resource.RLIM_INFINITY else min(hard, max(soft, want))
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Client(threading.Thread):
    """A normal client during the flood: boto3 PUT/GET on kept-alive connections, and a
    plain GET on a fresh connection, in turn, until stopped; records latencies and errors."""

    def __init__(self, c: Cluster, bucket: str):
        super().__init__(daemon=True)
        self.c, self.bucket = c, bucket
        self.s3 = c.client()  # no retries: a dropped or refused request is an error
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self):
        i = 0
        while not self.stop.is_set():
            i += 1
            t = time.monotonic()
            try:
                if i % 3 == 0:
                    status, body = http_get(self.c.gateway.addr, "/_cairn/health", timeout=10)
                    if status != 200:
                        self.errors.append(f"health {status} {body[:200]!r}")
                elif i % 3 == 1:
                    self.s3.put_object(Bucket=self.bucket, Key=f"k{i % 7}", Body=b"x" * 1000)
                else:
                    self.s3.get_object(Bucket=self.bucket, Key="seed")["Body"].read()
            except Exception as e:  # noqa: BLE001 - every failure counts
                self.errors.append(f"{type(e).__name__}: {e}")
            self.latencies.append(time.monotonic() - t)


def _percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")


def test_idle_flood_is_evicted_and_normal_clients_keep_working(cluster):
    have = _raise_nofile(FLOOD + 1000)
    flood = min(FLOOD, have - 500)
    assert flood > MAX_CONNECTIONS, f"RLIMIT_NOFILE {have} leaves no room for a flood beyond the cap"
    s3 = cluster.client()
    s3.create_bucket(Bucket="flood")
    s3.put_object(Bucket="flood", Key="seed", Body=b"s" * 4096)
    pid = cluster.gateway.pid
    evicted_before = cluster.gateway.metrics().value("cairn_s3_connections_evicted_total")
    timed_out_before = cluster.gateway.metrics().total("cairn_s3_connections_timed_out_total")
    time.sleep(1)
    rss_before = _rss_bytes(pid)

    client = Client(cluster, "flood")
    client.start()
    time.sleep(0.5)
    host, port = cluster.gateway.addr.rsplit(":", 1)
    socks = []
    rss_peak = rss_before
    started = time.monotonic()
    try:
        for i in range(flood):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect((host, int(port)))
            if i % 2:
                s.send(b"GET / HTTP/1.1\r\nHost: x\r\n")  # half a head: slowloris
            socks.append(s)
            if i % 1000 == 999:
                rss_peak = max(rss_peak, _rss_bytes(pid))
        opened = time.monotonic() - started
        # hold them a little (within the header timeout) while the client keeps going
        time.sleep(1)
        rss_peak = max(rss_peak, _rss_bytes(pid))
    finally:
        for s in socks:
            s.close()
    time.sleep(1)
    client.stop.set()
    client.join(30)
    evicted = cluster.gateway.metrics().value("cairn_s3_connections_evicted_total") - evicted_before
    timed_out = cluster.gateway.metrics().total("cairn_s3_connections_timed_out_total") - timed_out_before
    open_now = cluster.gateway.metrics().value("cairn_s3_connections_open")
    # Memory handed back: the gateway checks every 2 s once the flood has receded. Without
    # that (glibc keeps freed blocks in its arenas) RSS stays at the peak.
    returned_enough = rss_before + (rss_peak - rss_before) // 2
    rss_after = rss_peak
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        rss_after = _rss_bytes(pid)
        if rss_after <= returned_enough:
            break
        time.sleep(0.5)
    lat = client.latencies
    print(
        f"flood: {flood} connections opened in {opened:.1f}s, {evicted:.0f} evicted, {timed_out:.0f} timed out, "
        f"{len(lat)} client requests, p50 {_percentile(lat, 50) * 1000:.1f} ms, "
        f"p99 {_percentile(lat, 99) * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms; "
        f"RSS before {rss_before >> 20} MiB, peak {rss_peak >> 20} MiB, after {rss_after >> 20} MiB"
    )
    assert not client.errors, f"{len(client.errors)} of {len(lat)} requests failed: {client.errors[:5]}"
    assert len(lat) >= 10, "the client barely ran"
    # Beyond the cap every flood connection was evicted, or had timed out before it had to be.
    assert evicted > 0, "no connection was evicted"
    assert evicted + timed_out >= flood - MAX_CONNECTIONS, (evicted, timed_out)
    assert open_now <= MAX_CONNECTIONS, open_now
    assert rss_peak - rss_before >= 16 << 20, "the flood did not cost the gateway memory: nothing to return"
    assert rss_after <= returned_enough, f"RSS before {rss_before}, peak {rss_peak}, after {rss_after}"


def test_when_every_connection_is_busy_a_new_one_gets_503_slowdown(cluster_factory):
    c = cluster_factory(nodes=3, ec="2+1", gateway_args=["--max-connections", "3", "--client-timeout", "5s"])
    c.client().create_bucket(Bucket="busy")
    # Three uploads in progress (their body arrives a byte at a time): every slot is busy.
    uploads = [
        sigv4.raw_put_start(f"{c.endpoint}/busy/k{i}", c.access_key, c.secret_key, content_length=1000)
        for i in range(3)
    ]
    stop = threading.Event()

    def trickle():
        while not stop.is_set():
            for s in uploads:
                try:
                    s.send(b"x")
                except OSError:
                    pass
            time.sleep(0.5)

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        time.sleep(0.5)
        r = _get(c, "/_cairn/health")
        assert r.status == 503, (r.status, r.body[:300])
        assert sigv4.parse_error(r.body).get("Code") == "SlowDown", r.body[:300]
    finally:
        stop.set()
        t.join(5)
        for s in uploads:
            s.close()
    # once the uploads are gone the gateway serves again
    deadline = time.monotonic() + 10
    while _get(c, "/_cairn/health").status != 200:
        assert time.monotonic() < deadline, "the gateway did not recover after the busy connections closed"
        time.sleep(0.2)
    assert c.gateway.metrics().value("cairn_s3_connections_refused_total") >= 1

