"""Start and control a real Cairn cluster (N `cairn-node` + one `cairn-gateway`) for tests.

    from harness.cluster import Cluster
    with Cluster(tmp_dir, nodes=4, ec="3+1") as c:
        s3 = c.client()
        s3.create_bucket(Bucket="b")
        c.nodes[0].kill()          # SIGKILL
        c.nodes[0].start()         # same port, same data dir
        c.gateway.kill(); c.gateway.start()   # same port, same meta dir
        c.shard_files(bucket="b", key="k")    # parsed shard headers found on disk

Binaries come from `$CAIRN_BIN_DIR` or `<repo>/target/release`.
Every process is started in its own session with PDEATHSIG=SIGKILL, so nothing outlives the
test run even if pytest itself is killed; `close()` kills whatever is left.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import hmac
import http.client
import os
import random
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterable

from . import shards as _shards
from .nodeapi import NodeClient

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
START_TIMEOUT = float(os.environ.get("CAIRN_TEST_START_TIMEOUT", "30"))

# Every cluster alive in this process, so failures can print their logs and exit can kill them.
ACTIVE: "list[Cluster]" = []
_ALL_PROCS: "list[ManagedProcess]" = []
_USED_PORTS: set[int] = set()
_PORT_LOCK = threading.Lock()


class ClusterError(RuntimeError):
    pass


def bin_dir() -> Path:
    d = os.environ.get("CAIRN_BIN_DIR")
    return Path(d) if d else REPO / "target" / "release"


def binary(name: str) -> Path:
    p = bin_dir() / name
    if not (p.is_file() and os.access(p, os.X_OK)):
        raise ClusterError(
            f"binary {p} not found; build it with `cargo build --release --workspace` "
            f"or point CAIRN_BIN_DIR at a directory holding it"
        )
    return p


# ---------------------------------------------------------------------------------------
# ports


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_port() -> int:
    """A port free on 127.0.0.1 right now, never handed out before by this process.

    Preferably below the kernel's ephemeral range: a killed node is restarted on the same
    port, and an outgoing connection must not be able to grab that port in between.
    There is still a race with other programs; callers retry a start that fails to bind.
    """
    lo, _hi = _ephemeral_range()
    with _PORT_LOCK:
        if lo > 12000:
            for _ in range(500):
                p = random.randrange(10000, lo)
                if p in _USED_PORTS or p == 9000:
                    continue
                if _bindable(p):
                    _USED_PORTS.add(p)
                    return p
        for _ in range(100):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
            s.close()
            if p not in _USED_PORTS:
                _USED_PORTS.add(p)
                return p
    raise ClusterError("no free port found")


def free_port_block(n: int) -> int:
    """First of `n` consecutive ports that are all free right now (for `cairn dev --node-port`)."""
    lo, _hi = _ephemeral_range()
    top = lo if lo > 12000 else 60000
    with _PORT_LOCK:
        for _ in range(500):
            base = random.randrange(10000, top - n)
            block = range(base, base + n)
            if base <= 9000 < base + n or any(p in _USED_PORTS for p in block):
                continue
            if all(_bindable(p) for p in block):
                _USED_PORTS.update(block)
                return base
    raise ClusterError(f"no block of {n} free ports found")


# ---------------------------------------------------------------------------------------
# processes

_libc = None


def _child_setup():  # runs in the child between fork and exec
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL("libc.so.6", use_errno=True)
        _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def tail(path: Path, lines: int = 60) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError:
        return "(no log)"
    text = data[-64 * 1024 :].decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


_ADDR_IN_USE = re.compile(r"address already in use|addrinuse|os error 98|address in use", re.I)


class ManagedProcess:
    """A child process whose stdout+stderr go to a log file kept after it ends."""

    def __init__(self, name: str, argv: list[str], env: dict, log_path: Path, cwd: Path | None = None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.env = env
        self.log_path = Path(log_path)
        self.cwd = cwd
        self.popen: subprocess.Popen | None = None
        self._log_offset = 0

    def spawn(self):
        if self.alive:
            raise ClusterError(f"{self.name} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== {time.strftime('%H:%M:%S')} start: {' '.join(self.argv)}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_child_setup,
            )
        _ALL_PROCS.append(self)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def returncode(self):
        return None if self.popen is None else self.popen.poll()

    def log_since_start(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def kill(self):
        """SIGKILL and reap."""
        if self.popen is not None and self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(timeout=30)

    def stop(self, timeout: float = 10, sig=signal.SIGTERM) -> int | None:
        """Polite stop (SIGTERM by default), SIGKILL after `timeout`; returns the exit status."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.popen.returncode

    def tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)


def http_get(addr: str, path: str, timeout: float = 2.0, headers: dict | None = None) -> tuple[int, bytes]:
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def wait_http_ok(proc: ManagedProcess, addr: str, path: str = "/health", timeout: float = START_TIMEOUT):
    """Polls `http://addr/path` until it answers 200; raises with the log tail otherwise."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    delay = 0.02
    while True:
        if not proc.alive:
            raise ProcessDied(proc, f"{proc.name} exited with status {proc.returncode()} before it was ready")
        try:
            status, body = http_get(addr, path, timeout=1.0)
            if status == 200:
                return body
            last = f"HTTP {status} {body[:200]!r}"
        except (OSError, http.client.HTTPException) as e:
            last = repr(e)
        if time.monotonic() > deadline:
            raise ClusterError(
                f"{proc.name} not ready on http://{addr}{path} after {timeout:.0f}s (last: {last})\n"
                f"--- {proc.log_path} (tail) ---\n{proc.tail()}"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


class ProcessDied(ClusterError):
    def __init__(self, proc: ManagedProcess, msg: str):
        self.proc = proc
        self.output = proc.log_since_start()
        super().__init__(f"{msg}\n--- {proc.log_path} (tail) ---\n{proc.tail()}")

    @property
    def addr_in_use(self) -> bool:
        return bool(_ADDR_IN_USE.search(self.output))


# ---------------------------------------------------------------------------------------
# cluster members


class _Server:
    """Common parts of a node and the gateway: fixed port, restartable."""

    name = "server"

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

    def metrics(self) -> str:
        """The process's Prometheus text (a node's `/metrics` needs the admin token)."""
        auth = {"Authorization": f"Bearer {self.cluster.admin_token}"}
        status, body = http_get(self.addr, "/metrics", timeout=5, headers=auth)
        if status != 200:
            raise ClusterError(f"{self.name} /metrics answered {status}")
        return body.decode("utf-8", "replace")


class Node(_Server):
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


def admin_token(cluster_secret: str) -> str:
    """The gateway's default admin token for `cluster_secret` (`ClusterKey::admin_token`)."""
    mac = hmac.new(cluster_secret.encode(), b"CAIRN-HMAC-1\nADMIN-TOKEN\n\n0", hashlib.sha256)
    return mac.hexdigest()[:32]


class Gateway(_Server):
    name = "gateway"

    def __init__(self, cluster: "Cluster", port: int):
        super().__init__(cluster, port)
        self.meta_dir = cluster.root / "meta"
        self.meta_dir.mkdir(parents=True, exist_ok=True)

    def wait_ready(self, timeout: float = START_TIMEOUT):
        wait_http_ok(self.proc, self.addr, "/_cairn/health", timeout)

    def admin_get(self, path: str, timeout: float = 5) -> tuple[int, bytes]:
        """GET an internal route (`/_cairn/...`) with the admin token."""
        return http_get(self.addr, path, timeout=timeout, headers={"Authorization": f"Bearer {self.cluster.admin_token}"})

    def metrics(self) -> str:
        """The gateway's Prometheus text (`/_cairn/metrics`, with the admin token)."""
        status, body = self.admin_get("/_cairn/metrics")
        if status != 200:
            raise ClusterError(f"{self.name} /_cairn/metrics answered {status}: {body[:200]!r}")
        return body.decode("utf-8", "replace")

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
        # Bearer token of the gateway's internal routes (its default, from the secret).
        self.admin_token = admin_token(self.cluster_secret)
        self.region = REGION
        self.gateway_args = [str(a) for a in gateway_args]
        self.node_args = [str(a) for a in node_args]
        self.extra_env = dict(extra_env or {})
        self.nodes: list[Node] = []
        self.gateway: Gateway | None = None
        self._aws_config = self.root / "aws-config"
        self._aws_config.write_text("[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n")
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
        """A boto3 S3 client for the gateway (path-style, us-east-1, the cluster's keys).

        By default botocore's retries are OFF (`retries=1`: one attempt), so a 5xx, a stall
        or a dropped connection fails the test instead of hiding behind a retry.
        `retries=None` gives botocore's defaults, i.e. what a user's unconfigured client does.
        """
        return make_client(self.endpoint, self.access_key, self.secret_key, retries=retries, **config_kwargs)

    def env(self) -> dict:
        """Environment for aws-cli / boto3 subprocesses talking to this cluster."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            AWS_ACCESS_KEY_ID=self.access_key,
            AWS_SECRET_ACCESS_KEY=self.secret_key,
            AWS_DEFAULT_REGION=self.region,
            AWS_REGION=self.region,
            AWS_EC2_METADATA_DISABLED="true",
            AWS_CONFIG_FILE=str(self._aws_config),
            AWS_SHARED_CREDENTIALS_FILE=str(self._aws_credentials),
            AWS_ENDPOINT_URL=self.endpoint,
            AWS_PAGER="",
        )
        if "AWS_CA_BUNDLE" in os.environ:
            env["AWS_CA_BUNDLE"] = os.environ["AWS_CA_BUNDLE"]
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        return env

    def aws(self, *args, check: bool = True, timeout: float = 600, env_extra: dict | None = None,
            config_extra: str | None = None) -> subprocess.CompletedProcess:
        """Runs `aws --endpoint-url <gateway> ARGS...`; raises with its output when `check` fails.

        `config_extra` lines are added under `s3 =` in a private AWS config file.
        """
        env = self.env()
        if config_extra:
            cfg = self.root / f"aws-config-{secrets.token_hex(4)}"
            cfg.write_text(
                "[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n"
                + "".join(f"    {line.strip()}\n" for line in config_extra.strip().splitlines())
            )
            env["AWS_CONFIG_FILE"] = str(cfg)
        env.update(env_extra or {})
        argv = [*aws_cli_argv(), "--endpoint-url", self.endpoint, *[str(a) for a in args]]
        r = subprocess.run(argv, env=env, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError(
                f"aws {' '.join(map(str, args))} exited {r.returncode}\n"
                f"stdout: {r.stdout.decode(errors='replace')[-3000:]}\n"
                f"stderr: {r.stderr.decode(errors='replace')[-3000:]}"
            )
        return r

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
        """{node addr: "up"/"down"} as the gateway sees it right now (`GET /_cairn/nodes`),
        or None when the gateway has no such endpoint."""
        try:
            status, body = self.gateway.admin_get("/_cairn/nodes")
        except (OSError, http.client.HTTPException):
            return None
        if status != 200:
            return None
        try:
            import json

            return {n["addr"]: n["state"] for n in json.loads(body)}
        except (ValueError, KeyError, TypeError):
            return None

    def gateway_node_count(self) -> int | None:
        """Live nodes as the gateway tells (node list, else /metrics); None if it does not tell."""
        view = self.gateway_view()
        if view is not None:
            return sum(1 for n in self.nodes if view.get(n.addr) == "up")
        try:
            text = self.gateway.metrics()
        except (OSError, http.client.HTTPException, ClusterError):
            return None
        return nodes_up_from_metrics(text)

    def wait_gateway_sees_nodes(self, n: int, timeout: float = START_TIMEOUT) -> bool:
        """Waits until the gateway reports `n` of our nodes live (when it reports it at all).

        Call it after restarting nodes: the gateway learns that a node is back from its
        heartbeat, not instantly.
        """
        deadline = time.monotonic() + timeout
        while True:
            seen = self.gateway_node_count()
            if seen is None:
                return False
            if seen == n:
                return True
            if time.monotonic() > deadline:
                raise ClusterError(f"gateway sees {seen} live nodes, expected {n} after {timeout:.0f}s")
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


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def metric_samples(text: str):
    """(name, labels, value) of each sample in Prometheus text; comments skipped."""
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        yield m.group(1), dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")), value


def gateway_metric(cluster: "Cluster", name: str, **labels) -> float:
    """Sum of a gateway metric's samples matching `labels` (0 when absent)."""
    return sum(
        v
        for n, got, v in metric_samples(cluster.gateway.metrics())
        if n == name and all(got.get(k) == want for k, want in labels.items())
    )


def wait_for(cond, timeout: float = 60, every: float = 0.1, what: str = "condition"):
    """Polls `cond` until it returns something true (returned), or fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


_NODE_UP_NAME = re.compile(r"node[s]?_?(up|live|alive|healthy|online)|(up|live|alive|healthy|online)_?node", re.I)


def nodes_up_from_metrics(text: str) -> int | None:
    """Reads the number of live nodes from Prometheus text, trying common metric shapes.

    * `cairn_gateway_node_up{node="..."} 1` per node -> sum (preferred)
    * `cairn_gateway_nodes_up 4` (one unlabeled gauge) -> 4
    """
    labeled: dict[str, float] = {}
    unlabeled: dict[str, float] = {}
    for name, labels, v in metric_samples(text):
        if not _NODE_UP_NAME.search(name) or name.endswith(("_total", "_count", "_sum", "_bucket")):
            continue
        if "state" in labels:
            # node_state{state="up"} 3 style
            if labels["state"] in ("up", "live", "alive", "healthy", "online"):
                unlabeled[name] = unlabeled.get(name, 0) + v
            continue
        if labels:
            labeled[name] = labeled.get(name, 0) + v
        else:
            unlabeled[name] = v
    # per-node gauges first: a gateway may flip one the moment a transfer fails, while a
    # summary gauge waits for the next heartbeat
    if labeled:
        return int(next(iter(labeled.values())))
    if unlabeled:
        return int(next(iter(unlabeled.values())))
    return None


# ---------------------------------------------------------------------------------------
# clients


def make_client(endpoint: str, access_key: str, secret_key: str, retries: int | None = 1, **config_kwargs):
    import boto3
    from botocore.config import Config

    cfg = dict(
        s3={"addressing_style": "path"},
        signature_version="s3v4",
        connect_timeout=10,
        read_timeout=60,
    )
    if retries is not None:
        cfg["retries"] = {"total_max_attempts": retries, "mode": "standard"}
    cfg.update(config_kwargs)
    session = boto3.session.Session(
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=REGION,
    )
    return session.client("s3", endpoint_url=endpoint, config=Config(**cfg))


def aws_cli_argv() -> list[str]:
    exe = shutil.which("aws")
    return [exe] if exe else [sys.executable, "-m", "awscli"]


def _kill_everything():
    for p in _ALL_PROCS:
        if p.alive:
            try:
                p.popen.send_signal(signal.SIGKILL)
            except Exception:
                pass


atexit.register(_kill_everything)
