"""A burst of concurrent GETs must not make the gateway mark healthy nodes down (issue 21).

2000 connections each GET a small object at once (twice over), through a 4-node 3+1 cluster probed
every 200 ms. The gateway is saturated (thousands of shard reads in flight on its node
connections), but every node stays healthy, so none may be marked down: with 3+1, two
nodes marked down make every object unreadable. Checked three ways while the burst runs
and after it: the gateway's node list (polled), its node-down counter, and its log.
Every GET is answered with the object's exact bytes, or at worst `503 SlowDown`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import resource
import threading
import time
from urllib.parse import urlsplit

import pytest

from harness import sigv4
KiB = 1024

CONNECTIONS = 2000
# Two bursts, one after the other: each gives the heartbeat several chances to misjudge.
ROUNDS = 2
OBJECTS = 8
OBJECT_SIZE = 96 * KiB
# Bounds a hang, not a speed: the whole burst normally ends within seconds.
BURST_WITHIN = 60
DOWN_EVENTS = "cairn_node_down_events_total"


@pytest.fixture
def burst_cluster(cluster_factory):
    return cluster_factory(gateway_args=["--heartbeat-ms", "200"])


def raise_fd_limit(want: int):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        pytest.skip(f"this process may open only {soft} files, the burst needs {want}")


def process_fd_limit(pid: int) -> int | None:
    """Soft `Max open files` of a running process (Linux), None if unknown."""
    try:
        for line in open(f"/proc/{pid}/limits"):
            if line.startswith("Max open files"):
                return int(line.split()[3])
    except (OSError, ValueError, IndexError):
        return None
    return None


async def fetch(host: str, port: int, path: str, start: asyncio.Event) -> tuple[int, str | None, bytes]:
    """One GET on its own connection, sent once every connection is open."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        await start.wait()
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        raw = await reader.read()  # Connection: close: the response ends with the connection
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = dechunk(body)
    code = sigv4.parse_error(body).get("Code") if status >= 300 else None
    return status, code, body


def dechunk(data: bytes) -> bytes:
    out, pos = bytearray(), 0
    while True:
        eol = data.index(b"\r\n", pos)
        size = int(data[pos:eol].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += data[eol + 2 : eol + 2 + size]
        pos = eol + 2 + size + 2


async def burst(c, urls: list[str]) -> list:
    start = asyncio.Event()
    host, port = c.gateway.addr.rsplit(":", 1)
    tasks = []
    for i in range(CONNECTIONS):
        u = urlsplit(urls[i % len(urls)])
        tasks.append(asyncio.ensure_future(fetch(host, int(port), f"{u.path}?{u.query}", start)))
        if i % 200 == 199:
            await asyncio.sleep(0)  # let the connects go out
    # Every connection open (or failed to open) first, then all requests at once.
    await asyncio.sleep(0.5)
    start.set()
    return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), BURST_WITHIN)


class NodeWatch(threading.Thread):
    """Polls the gateway's node list; remembers every node it saw not up."""

    def __init__(self, c):
        super().__init__(daemon=True)
        self.c = c
        self.stop = threading.Event()
        self.seen_down: list[tuple[float, str, str]] = []
        self.polls = 0
        self.t0 = time.monotonic()

    def run(self):
        while not self.stop.is_set():
            view = self.c.gateway_view()
            if view is not None:
                self.polls += 1
                for n in self.c.nodes:
                    state = view.get(n.addr)
                    if state != "up":
                        self.seen_down.append((round(time.monotonic() - self.t0, 2), n.addr, str(state)))
            self.stop.wait(0.1)


def down_lines(log: str) -> list[str]:
    return [l for l in log.splitlines() if "storage node down" in l or "storage node marked down" in l]


def test_a_burst_of_gets_marks_no_healthy_node_down(burst_cluster):
    c = burst_cluster
    raise_fd_limit(CONNECTIONS + 1000)
    gw_limit = process_fd_limit(c.gateway.pid)
    # 2000 client connections and the shard reads behind them (about three per GET).
    if gw_limit is not None and gw_limit < 4 * CONNECTIONS:
        print(f"note: the gateway may open only {gw_limit} files; the burst needs about {4 * CONNECTIONS}")

    s3 = c.client()
    s3.create_bucket(Bucket="burst")
    objects = {}
    for i in range(OBJECTS):
        data = os.urandom(OBJECT_SIZE + i)
        s3.put_object(Bucket="burst", Key=f"o{i}", Body=data)
        objects[f"o{i}"] = hashlib.sha256(data).hexdigest()
    keys = sorted(objects)
    urls = [
        sigv4.presign_url("GET", f"{c.endpoint}/burst/{k}", c.access_key, c.secret_key, expires=600)
        for k in keys
    ]
    c.wait_gateway_sees_nodes(c.n_nodes)
    log_before = len(c.gateway.proc.log_since_start())
    before = c.gateway.metrics().total(DOWN_EVENTS)

    watch = NodeWatch(c)
    watch.start()
    started = time.monotonic()
    results = []
    try:
        for _ in range(ROUNDS):
            results += asyncio.run(burst(c, urls))
    finally:
        took = time.monotonic() - started
        # the heartbeat runs every 200 ms: keep watching a while after the last answer
        time.sleep(1.5)
        watch.stop.set()
        watch.join()

    statuses: dict = {}
    failures = []
    wrong = []
    for i, r in enumerate(results):
        if isinstance(r, BaseException):
            failures.append(repr(r))
            continue
        status, code, body = r
        statuses[(status, code)] = statuses.get((status, code), 0) + 1
        if status == 200 and hashlib.sha256(body).hexdigest() != objects[keys[i % len(keys)]]:
            wrong.append(i)
    print(f"{ROUNDS} bursts of {CONNECTIONS} GETs: {statuses}, {len(failures)} unanswered, {took:.1f}s; "
          f"node list polled {watch.polls} times")

    log = c.gateway.proc.log_since_start()[log_before:]
    downs = down_lines(log)
    after = c.gateway.metrics().total(DOWN_EVENTS)
    assert watch.polls > 0, "the gateway's node list was never read"
    assert not watch.seen_down, f"the gateway listed healthy nodes as not up: {watch.seen_down[:10]}"
    assert not downs, "the gateway marked healthy nodes down:\n" + "\n".join(downs[:10])
    assert after == before, f"{DOWN_EVENTS} went from {before} to {after}"
    assert not wrong, f"{len(wrong)} GETs answered 200 with the wrong bytes"
    assert not failures, f"{len(failures)} GETs got no answer, e.g. {failures[:3]}"
    bad = {k: n for k, n in statuses.items() if k != (200, None) and k != (503, "SlowDown")}
    assert not bad, f"GETs answered other than 200 or 503 SlowDown: {bad}"
    assert statuses.get((200, None), 0) > 0, "not one GET succeeded"

    # The counter is exported for every node (0 here), so operators can watch it.
    exported = {s.labels.get("node") for s in c.gateway.metrics().series(DOWN_EVENTS)}
    view = c.gateway_view()
    assert view is not None and all(view.get(n.addr) == "up" for n in c.nodes), view
    assert len(exported) == c.n_nodes, f"{DOWN_EVENTS} exported for {exported}"
