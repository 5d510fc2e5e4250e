"""Fixtures for the `cairn` CLI tests (watch / push / pull / ls).

The S3 endpoint comes from one fixture, `s3_endpoint`, chosen in this order:
1. `CAIRN_TEST_ENDPOINT` (+ `CAIRN_TEST_ACCESS_KEY`, `CAIRN_TEST_SECRET_KEY`,
   `CAIRN_TEST_REGION`): any S3 endpoint on 127.0.0.1.
2. The Cairn cluster of tests/conftest.py (`cairn_cluster`: real gateway + nodes), unless
   `CAIRN_CLI_TEST_BACKEND=moto`.
3. A moto S3 server on a free 127.0.0.1 port (scaffold only; `CAIRN_CLI_TEST_BACKEND=moto`
   forces it). moto ≥ 5.1 answers CompleteMultipartUpload with a root element the Rust SDK
   rejects; 5.0.28 works: point `CAIRN_TEST_MOTO_PYTHON` at an interpreter that has it.

The `cairn` binary: `$CAIRN_BIN`, else `$CAIRN_BIN_DIR/cairn`, else target/release/cairn.
"""

from __future__ import annotations

import http.client
import os
import secrets
import socket
import subprocess
import sys
from dataclasses import dataclass, field

from harness.wait import wait_for
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))


def _ensure_requirements():
    """Installs tests/cli/requirements.txt when its packages are missing (CI machines are new)."""
    try:
        import numpy  # noqa: F401
        import safetensors  # noqa: F401
    except ImportError:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "-r", str(HERE / "requirements.txt")],
            check=True,
            timeout=600,
        )


_ensure_requirements()


def free_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@dataclass
class S3Endpoint:
    url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    kind: str = "external"  # "cairn", "moto" or "external"
    cluster: object = field(default=None, repr=False)

    def client(self):
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )
        return session.client(
            "s3",
            endpoint_url=self.url,
            config=Config(s3={"addressing_style": "path"}, connect_timeout=5, read_timeout=60,
                          retries={"total_max_attempts": 3, "mode": "standard"}),
        )


def _http_ready(port: int) -> bool:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        c.request("GET", "/")
        c.getresponse().read()
        c.close()
        return True
    except OSError:
        return False


class MotoServer:
    def __init__(self, log: Path):
        self.port = free_port()
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [os.environ.get("CAIRN_TEST_MOTO_PYTHON", sys.executable), "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            )
        wait_for(lambda: self.proc.poll() is not None or _http_ready(self.port), 30, what="moto server")
        if self.proc.poll() is not None:
            raise RuntimeError(f"moto server exited: {self.log.read_text()[-2000:]}")
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="session")
def _moto(tmp_path_factory):
    if "CAIRN_TEST_MOTO_PYTHON" not in os.environ:
        try:
            import moto.server  # noqa: F401
        except ImportError:
            pytest.skip("no Cairn cluster and moto[server] is not installed")
    m = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log").start()
    yield m
    m.stop()


@pytest.fixture(scope="module")
def s3_endpoint(request):
    """(url, access_key, secret_key, region) of the S3 endpoint under test, plus its kind."""
    url = os.environ.get("CAIRN_TEST_ENDPOINT")
    if url:
        assert url.startswith(("http://127.0.0.1", "http://localhost")), "tests only talk to loopback"
        return S3Endpoint(
            url,
            os.environ.get("CAIRN_TEST_ACCESS_KEY", "cairn-dev"),
            os.environ.get("CAIRN_TEST_SECRET_KEY", "cairn-dev-secret"),
            os.environ.get("CAIRN_TEST_REGION", "us-east-1"),
            "external",
        )
    if os.environ.get("CAIRN_CLI_TEST_BACKEND") != "moto":
        try:
            c = request.getfixturevalue("cairn_cluster")
        except pytest.FixtureLookupError:
            c = None
        if c is not None:
            return S3Endpoint(c.endpoint, c.access_key, c.secret_key, c.region, "cairn", c)
    m = request.getfixturevalue("_moto")
    return S3Endpoint(f"http://127.0.0.1:{m.port}", "testing", "testing", "us-east-1", "moto")


@pytest.fixture(scope="module")
def s3c(s3_endpoint):
    """boto3 client for `s3_endpoint`."""
    return s3_endpoint.client()


@pytest.fixture
def ckpt_bucket(s3c):
    """A new empty bucket (name); emptied and removed afterwards."""
    name = f"ckpt-{secrets.token_hex(5)}"
    s3c.create_bucket(Bucket=name)
    yield name
    try:
        for page in s3c.get_paginator("list_objects_v2").paginate(Bucket=name):
            for o in page.get("Contents", []):
                s3c.delete_object(Bucket=name, Key=o["Key"])
        s3c.delete_bucket(Bucket=name)
    except Exception:
        pass


def cairn_binary() -> Path:
    if os.environ.get("CAIRN_BIN"):
        return Path(os.environ["CAIRN_BIN"])
    d = os.environ.get("CAIRN_BIN_DIR")
    return (Path(d) if d else REPO / "target" / "release") / "cairn"


class Cairn:
    """Runs the `cairn` binary against an endpoint with a clean AWS environment."""

    def __init__(self, endpoint: S3Endpoint, tmp: Path):
        self.bin = cairn_binary()
        if not self.bin.is_file():
            raise AssertionError(f"{self.bin} not found: cargo build --release -p cairn-cli")
        self.endpoint = endpoint
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []
        empty = tmp / "aws-empty"
        empty.write_text("")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CAIRN_"))}
        self.env.update(
            AWS_ACCESS_KEY_ID=endpoint.access_key,
            AWS_SECRET_ACCESS_KEY=endpoint.secret_key,
            AWS_REGION=endpoint.region,
            AWS_ENDPOINT_URL=endpoint.url,
            AWS_EC2_METADATA_DISABLED="true",
            AWS_CONFIG_FILE=str(empty),
            AWS_SHARED_CREDENTIALS_FILE=str(empty),
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
            RUST_LOG=os.environ.get("CAIRN_TEST_RUST_LOG", "info,aws=warn,aws_smithy_runtime=warn"),
        )

    def run(self, *args, timeout: float = 120, env: dict | None = None, check: bool = True):
        r = subprocess.run(
            [str(self.bin), *map(str, args)], env=env or self.env, capture_output=True,
            timeout=timeout, stdin=subprocess.DEVNULL, text=True,
        )
        if check and r.returncode != 0:
            raise AssertionError(f"cairn {' '.join(map(str, args))} exited {r.returncode}:\n{r.stderr[-4000:]}")
        return r

    def spawn(self, *args, log: Path, env: dict | None = None) -> subprocess.Popen:
        out = open(log, "ab")
        p = subprocess.Popen(
            [str(self.bin), *map(str, args)], env=env or self.env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        out.close()
        self.procs.append(p)
        return p

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


@pytest.fixture
def cairn(s3_endpoint, tmp_path):
    c = Cairn(s3_endpoint, tmp_path)
    yield c
    c.close()
