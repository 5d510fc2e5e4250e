"""The processes of a test cluster: storage nodes (`cairn-node`) and the gateway
(`cairn-gateway`), each on a fixed loopback port and restartable on it with the same data."""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import shards as _shards
from .exposition import Exposition
from .net import http_get, wait_http_ok
from .nodeapi import NodeClient
from .procs import START_TIMEOUT, ClusterError, ManagedProcess, ProcessDied, binary, tail

if TYPE_CHECKING:
    from .cluster import Cluster


def admin_token(cluster_secret: str) -> str:
    """The default admin token for `cluster_secret` (`ClusterKey::admin_token`): the
    gateway's internal routes and the nodes' `/metrics` take it."""
    mac = hmac.new(cluster_secret.encode(), b"CAIRN-HMAC-1\nADMIN-TOKEN\n\n0", hashlib.sha256)
    return mac.hexdigest()[:32]


class Server:
    """Common parts of a node and the gateway: fixed port, restartable."""

    name = "server"
    metrics_path = "/metrics"

    def __init__(self, cluster: "Cluster", port: int):
        self.cluster = cluster
        self.port = port
        self.proc: ManagedProcess | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    @property
    def log_path(self) -> Path:
        return self.cluster.log_dir / f"{self.name}.log"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict:
        raise NotImplementedError

    def spawn(self):
        self.proc = ManagedProcess(self.name, self.argv(), self.env(), self.log_path)
        self.proc.spawn()

    def wait_ready(self, timeout: float = START_TIMEOUT):
        wait_http_ok(self.proc, self.addr, "/health", timeout)

    def start(self, wait: bool = True, timeout: float = START_TIMEOUT):
        """(Re)starts on the same port and directories, retrying while the port is still busy."""
        deadline = time.monotonic() + timeout
        while True:
            self.spawn()
            if not wait:
                return
            try:
                self.wait_ready(max(1.0, deadline - time.monotonic()))
                return
            except ProcessDied as e:
                if e.addr_in_use and time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                raise

    def kill(self):
        """SIGKILL (no chance to clean up)."""
        if self.proc:
            self.proc.kill()

    def stop(self, timeout: float = 10):
        """SIGTERM, then SIGKILL after `timeout`."""
        if self.proc:
            return self.proc.stop(timeout)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)

    def admin_get(self, path: str, timeout: float = 5) -> tuple[int, bytes]:
        """GET with the cluster's admin token."""
        return http_get(self.addr, path, timeout=timeout, headers={"Authorization": f"Bearer {self.cluster.admin_token}"})

    def metrics_text(self) -> str:
        """The process's Prometheus text, fetched with the admin token."""
        status, body = self.admin_get(self.metrics_path)
        if status != 200:
            raise ClusterError(f"{self.name} {self.metrics_path} answered {status}: {body[:200]!r}")
        return body.decode("utf-8", "replace")

    def metrics(self) -> Exposition:
        """The process's metrics, parsed (a malformed exposition raises)."""
        return Exposition.parse(self.metrics_text())


class Node(Server):
    def __init__(self, cluster: "Cluster", index: int, port: int):
        super().__init__(cluster, port)
        self.index = index
        self.name = f"node-{index}"
        self.data_dir = cluster.root / f"node-{index}"
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def argv(self):
        return [
            binary("cairn-node"),
            "--listen",
            self.addr,
            "--data",
            self.data_dir,
            *self.cluster.node_args,
        ]

    def env(self):
        env = self.cluster.base_env()
        env["CAIRN_CLUSTER_SECRET"] = self.cluster.cluster_secret
        return env

    def api(self, secret: str | None = None) -> NodeClient:
        """Client for the node's internal API, signed with the cluster secret by default."""
        return NodeClient(self.addr, secret if secret is not None else self.cluster.cluster_secret)

    def shard_files(self, skip_unreadable: bool = False) -> list[_shards.ShardFile]:
        """Parsed shard files. A file whose header a test damaged raises, unless
        `skip_unreadable` (it may be another test's, waiting for the gateway to free it);
        a file deleted while we list is skipped."""
        out = []
        for p in _shards.iter_shard_paths(self.data_dir):
            try:
                out.append(_shards.read_shard(p, self.index))
            except FileNotFoundError:
                continue
            except _shards.ShardFormatError:
                if not skip_unreadable:
                    raise
        return out

    def __repr__(self):
        return f"<Node {self.index} {self.addr} {'up' if self.alive else 'down'}>"


class Gateway(Server):
    name = "gateway"
    metrics_path = "/_cairn/metrics"

    def __init__(self, cluster: "Cluster", port: int):
        super().__init__(cluster, port)
        self.meta_dir = cluster.root / "meta"
        self.meta_dir.mkdir(parents=True, exist_ok=True)

    def wait_ready(self, timeout: float = START_TIMEOUT):
        wait_http_ok(self.proc, self.addr, "/_cairn/health", timeout)

    def argv(self):
        return [
            binary("cairn-gateway"),
            "--listen",
            self.addr,
            "--meta",
            self.meta_dir,
            "--nodes",
            ",".join(n.addr for n in self.cluster.nodes),
            "--ec",
            self.cluster.ec,
            *self.cluster.gateway_args,
        ]

    def env(self):
        env = self.cluster.base_env()
        env["CAIRN_ACCESS_KEY"] = self.cluster.access_key
        env["CAIRN_SECRET_KEY"] = self.cluster.secret_key
        env["CAIRN_CLUSTER_SECRET"] = self.cluster.cluster_secret
        return env
