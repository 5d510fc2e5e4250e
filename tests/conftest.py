"""Shared fixtures for Cairn's integration tests.

Fixtures
--------
cairn_cluster   module-scoped 4-node, EC 3+1 cluster of real processes (shared by the
                tests of one module: don't kill its processes, use `fresh_cluster`)
fresh_cluster   function-scoped cluster of the same shape, for tests that kill things
cluster_factory function-scoped: `cluster_factory(nodes=5, ec="3+2")` for other shapes
s3              boto3 client for `cairn_cluster`
bucket          a new, empty bucket on `cairn_cluster` (name), emptied and removed after
big_file        session-wide 200 MB random file: (path, size, sha256)

Binaries: `$CAIRN_BIN_DIR` or target/release (build with `cargo build --release --workspace`).
Logs of every process stay under the pytest tmp dir; their tails are attached to failures.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import cluster as _cluster  # noqa: E402
from harness.cluster import Cluster  # noqa: E402
from harness.data import write_random_file  # noqa: E402
from harness.s3util import empty_and_delete_bucket, new_bucket_name  # noqa: E402

BIG_SIZE = int(os.environ.get("CAIRN_TEST_BIG_SIZE", str(200 * 1000 * 1000)))
DEFAULT_TIMEOUT = 300


def pytest_configure(config):
    config.addinivalue_line("markers", "big: moves the 200 MB object (slower)")
    # boto3 inside the test process must not read the user's AWS config or credentials.
    fd, empty = tempfile.mkstemp(prefix="cairn-tests-aws-config-")
    os.write(fd, b"[default]\nregion = us-east-1\n")
    os.close(fd)
    config._cairn_aws_config = empty
    for var in list(os.environ):
        if var.startswith("AWS_") and var not in ("AWS_CA_BUNDLE",):
            del os.environ[var]
    os.environ["AWS_CONFIG_FILE"] = empty
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = empty
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    for var in ("NO_PROXY", "no_proxy"):
        os.environ[var] = ",".join(filter(None, [os.environ.get(var), "127.0.0.1", "localhost"]))


def pytest_unconfigure(config):
    path = getattr(config, "_cairn_aws_config", None)
    if path:
        Path(path).unlink(missing_ok=True)


def pytest_collection_modifyitems(config, items):
    # A per-test timeout even when pytest is run by hand without --timeout.
    try:
        given = config.getoption("timeout")
    except ValueError:
        return  # pytest-timeout not installed
    if given:
        return
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUT))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and _cluster.ACTIVE:
        for c in list(_cluster.ACTIVE):
            try:
                rep.sections.append((f"cairn cluster {c.root}", c.logs(40)))
            except Exception as e:  # never hide the real failure
                rep.sections.append(("cairn cluster logs", f"could not read logs: {e!r}"))


def _new_cluster(tmp_path_factory, name: str, **kw) -> Cluster:
    root = tmp_path_factory.mktemp(name)
    return Cluster(root, **kw).start()


@pytest.fixture(scope="module")
def cairn_cluster(tmp_path_factory, request):
    """A 4-node EC 3+1 cluster shared by one test module. Don't kill its processes."""
    c = _new_cluster(tmp_path_factory, "cluster-" + request.module.__name__.split(".")[-1])
    yield c
    c.close()


@pytest.fixture
def cluster_factory(tmp_path_factory):
    made = []

    def make(**kw) -> Cluster:
        c = _new_cluster(tmp_path_factory, "cluster", **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def fresh_cluster(cluster_factory):
    """A 4-node EC 3+1 cluster of this test's own; free to kill and restart."""
    return cluster_factory()


@pytest.fixture
def s3(cairn_cluster):
    return cairn_cluster.client()


@pytest.fixture
def bucket(s3):
    """Name of a new bucket on `cairn_cluster`."""
    name = new_bucket_name()
    s3.create_bucket(Bucket=name)
    yield name
    empty_and_delete_bucket(s3, name)


@pytest.fixture(scope="session")
def big_file(tmp_path_factory):
    """(path, size, sha256) of a 200 MB random file, made once per session."""
    d = tmp_path_factory.mktemp("big")
    path = d / "big.bin"
    digest = write_random_file(path, BIG_SIZE)
    yield path, BIG_SIZE, digest
    path.unlink(missing_ok=True)
