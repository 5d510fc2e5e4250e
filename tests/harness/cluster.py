"""A real Cairn cluster (N `cairn-node` + one `cairn-gateway`) on loopback, for tests.

    from harness.cluster import Cluster
    with Cluster(tmp_dir, nodes=4, ec="3+1") as c:
        s3 = c.client()
        s3.create_bucket(Bucket="b")
        c.nodes[0].kill()          # SIGKILL
        c.nodes[0].start()         # same port, same data dir
        c.gateway.kill(); c.gateway.start()   # same port, same meta dir
        c.shard_files(bucket="b", key="k")    # parsed shard headers found on disk
        c.gateway.metrics().value("cairn_nodes_up")

The processes are `harness.servers.Node` / `Gateway` (binaries from `$CAIRN_BIN_DIR` or
`<repo>/target/release`, see `harness.procs`); `close()` kills whatever is left.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import signal
import string
import subprocess
import time
from pathlib import Path
from typing import Iterable

from . import shards as _shards
from .net import free_port
from .procs import START_TIMEOUT, ClusterError, ProcessDied
from .s3client import REGION, aws_config_text, aws_env, make_client, run_aws
from .servers import Gateway, Node, admin_token

# Every cluster alive in this process, so failures can print their logs.
ACTIVE: "list[Cluster]" = []


def _random_key(n: int, alphabet: str) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


class Cluster:
    """N storage nodes and one gateway on loopback, in `root`."""

    def __init__(
        self,
        root: Path,
        nodes: int = 4,
        ec: str = "3+1",
        access_key: str | None = None,
        secret_key: str | None = None,
        cluster_secret: str | None = None,
        gateway_args: Iterable[str] = (),
        node_args: Iterable[str] = (),
        extra_env: dict | None = None,
    ):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_dir = self.root / "logs"
        self.log_dir.mkdir(exist_ok=True)
        self.n_nodes = nodes
        self.ec = ec
        self.k, self.m = (int(x) for x in ec.split("+"))
        self.access_key = access_key or "AK" + _random_key(18, string.ascii_uppercase + string.digits)
        self.secret_key = secret_key or _random_key(40, string.ascii_letters + string.digits + "/+")
        self.cluster_secret = cluster_secret or secrets.token_hex(32)
        self.region = REGION
        self.gateway_args = [str(a) for a in gateway_args]
        self.node_args = [str(a) for a in node_args]
        self.extra_env = dict(extra_env or {})
        # Bearer token of the gateway's internal routes and the nodes' /metrics: the one
        # the processes are given (CAIRN_ADMIN_TOKEN), else their default from the secret.
        self.admin_token = self.extra_env.get("CAIRN_ADMIN_TOKEN") or admin_token(self.cluster_secret)
        self.nodes: list[Node] = []
        self.gateway: Gateway | None = None
        self._aws_config = self.root / "aws-config"
        self._aws_config.write_text(aws_config_text())
        self._aws_credentials = self.root / "aws-credentials"
        self._aws_credentials.write_text("")
        self.closed = False

    # -- lifecycle ---------------------------------------------------------------------
    def base_env(self) -> dict:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CAIRN_", "AWS_")) or k == "CAIRN_BIN_DIR"
        }
        env.setdefault("RUST_BACKTRACE", "1")
        if "CAIRN_TEST_RUST_LOG" in os.environ:
            env["RUST_LOG"] = os.environ["CAIRN_TEST_RUST_LOG"]
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = START_TIMEOUT) -> "Cluster":
        ACTIVE.append(self)
        try:
            self._start_nodes(timeout)
            self._start_gateway(timeout)
            self.wait_gateway_sees_nodes(self.n_nodes, timeout=timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _start_nodes(self, timeout: float):
        for i in range(self.n_nodes):
            self.nodes.append(Node(self, i, free_port()))
        pending = list(self.nodes)
        for attempt in range(5):
            for n in pending:
                n.spawn()
            retry = []
            for n in pending:
                try:
                    n.wait_ready(timeout)
                except ProcessDied as e:
                    if e.addr_in_use and attempt < 4:
                        n.port = free_port()  # someone took it between probe and bind
                        retry.append(n)
                    else:
                        raise
            if not retry:
                return
            pending = retry

    def _start_gateway(self, timeout: float):
        self.gateway = Gateway(self, free_port())
        for attempt in range(5):
            self.gateway.spawn()
            try:
                self.gateway.wait_ready(timeout)
                return
            except ProcessDied as e:
                if e.addr_in_use and attempt < 4:
                    self.gateway.port = free_port()
                    continue
                raise

    def close(self, remove_data: bool = True):
        """Kills every process (SIGKILL) and, by default, removes shard and meta data (logs stay)."""
        if self.closed:
            return
        self.closed = True
        procs = [s.proc for s in [self.gateway, *self.nodes] if s is not None and s.proc is not None]
        for p in procs:
            if p.alive:
                try:
                    p.popen.send_signal(signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in procs:
            try:
                p.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        if self in ACTIVE:
            ACTIVE.remove(self)
        if remove_data:
            for d in [n.data_dir for n in self.nodes] + ([self.gateway.meta_dir] if self.gateway else []):
                shutil.rmtree(d, ignore_errors=True)

    def __enter__(self):
        if not self.gateway:
            self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    # -- S3 access ---------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return self.gateway.url

    def client(self, retries: int | None = 1, **config_kwargs):
        """A boto3 S3 client for the gateway with the cluster's keys (`make_client`: one
        attempt by default, `retries=None` for botocore's defaults)."""
        return make_client(self.endpoint, self.access_key, self.secret_key, retries=retries, **config_kwargs)

    def env(self) -> dict:
        """Environment for aws-cli / boto3 subprocesses talking to this cluster."""
        return aws_env(self.endpoint, self.access_key, self.secret_key, self._aws_config, self._aws_credentials)

    def aws(self, *args, check: bool = True, timeout: float = 600, env_extra: dict | None = None,
            config_extra: str | None = None) -> subprocess.CompletedProcess:
        """Runs `aws --endpoint-url <gateway> ARGS...`; raises with its output when `check` fails.

        `config_extra` lines are added under `s3 =` in a private AWS config file.
        """
        env = self.env()
        if config_extra:
            cfg = self.root / f"aws-config-{secrets.token_hex(4)}"
            cfg.write_text(aws_config_text(config_extra))
            env["AWS_CONFIG_FILE"] = str(cfg)
        env.update(env_extra or {})
        return run_aws(self.endpoint, env, args, check=check, timeout=timeout)

    # -- cluster state -----------------------------------------------------------------
    def node_by_addr(self, addr: str) -> Node:
        for n in self.nodes:
            if n.addr == addr:
                return n
        raise KeyError(addr)

    def shard_files(self, bucket: str | None = None, key: str | None = None, nodes=None) -> list[_shards.ShardFile]:
        """Shard files on the nodes' disks (parsed headers), optionally for one bucket or
        object. With a filter, files whose header is damaged (so whose bucket is unknown) are
        left out: shards of another test's damaged object linger until the gateway frees them,
        after the reads in flight."""
        out = []
        filtered = bucket is not None or key is not None
        for n in nodes if nodes is not None else self.nodes:
            for sf in n.shard_files(skip_unreadable=filtered):
                if bucket is not None and sf.bucket != bucket:
                    continue
                if key is not None and sf.key != key:
                    continue
                out.append(sf)
        return out

    def gateway_view(self) -> dict | None:
        """{node addr: state} as the gateway sees it right now (`GET /_cairn/nodes`), or
        None when the gateway does not answer it (not running, or restarting)."""
        try:
            status, body = self.gateway.admin_get("/_cairn/nodes")
        except (OSError, http.client.HTTPException):
            return None
        if status != 200:
            return None
        return {n["addr"]: n["state"] for n in json.loads(body)}

    def gateway_node_count(self) -> int | None:
        """How many of our nodes the gateway sees up; None when it does not answer."""
        view = self.gateway_view()
        if view is None:
            return None
        return sum(1 for n in self.nodes if view.get(n.addr) == "up")

    def wait_gateway_sees_nodes(self, n: int, timeout: float = START_TIMEOUT):
        """Waits until the gateway reports `n` of our nodes up; fails after `timeout`.

        Call it after restarting nodes: the gateway learns that a node is back from its
        heartbeat, not instantly.
        """
        deadline = time.monotonic() + timeout
        while True:
            seen = self.gateway_node_count()
            if seen == n:
                return
            if time.monotonic() > deadline:
                said = "does not answer /_cairn/nodes" if seen is None else f"sees {seen} nodes up"
                raise ClusterError(f"gateway {said}, expected {n} after {timeout:.0f}s")
            time.sleep(0.05)

    def logs(self, lines: int = 40) -> str:
        parts = []
        for s in [self.gateway, *self.nodes]:
            if s is None:
                continue
            state = "alive" if s.alive else f"exited {s.proc.returncode() if s.proc else '-'}"
            parts.append(f"--- {s.name} ({s.addr}, {state}) {s.log_path} ---\n{s.tail(lines)}")
        return "\n".join(parts)

    def __repr__(self):
        return f"<Cluster {self.endpoint if self.gateway else '-'} nodes={self.nodes}>"
