"""rclone (Debian package, provider "Other": path style, ListObjects V1): copy a small
checkpoint folder up and back, `rclone check`. Files stay far below rclone's multipart cutoff."""

import os
import shutil
import subprocess

import pytest

from harness.data import MiB
from harness.s3util import new_bucket_name

pytestmark = pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone missing (tests/run.sh installs it)")


def rclone(cluster, tmp_path, *args, check=True, list_version=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
    # rclone 1.60 refuses to start while AWS_CA_BUNDLE is set (LoadCustomCABundleError)
    cfg = tmp_path / "rclone.conf"
    cfg.touch()
    env.update(
        RCLONE_CONFIG=str(cfg),
        RCLONE_CONFIG_CAIRN_TYPE="s3",
        RCLONE_CONFIG_CAIRN_PROVIDER="Other",
        RCLONE_CONFIG_CAIRN_ACCESS_KEY_ID=cluster.access_key,
        RCLONE_CONFIG_CAIRN_SECRET_ACCESS_KEY=cluster.secret_key,
        RCLONE_CONFIG_CAIRN_ENDPOINT=cluster.endpoint,
        RCLONE_CONFIG_CAIRN_REGION="us-east-1",
        RCLONE_CONFIG_CAIRN_FORCE_PATH_STYLE="true",
        NO_PROXY="127.0.0.1,localhost",
    )
    if list_version:
        env["RCLONE_CONFIG_CAIRN_LIST_VERSION"] = str(list_version)
    argv = ["rclone", "--retries", "1", "--low-level-retries", "2", "--contimeout", "10s", "--timeout", "120s", *map(str, args)]
    r = subprocess.run(argv, env=env, capture_output=True, timeout=300, stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {r.returncode}\n{r.stdout.decode()[-3000:]}\n{r.stderr.decode()[-3000:]}")
    return r


def make_tree(root):
    files = {
        "model-00001-of-00002.safetensors": os.urandom(3 * MiB + 17),
        "model-00002-of-00002.safetensors": os.urandom(MiB + 1),
        "model.safetensors.index.json": b'{"weight_map": {}}',
        "config.json": b'{"hidden_size": 64}',
        "optimizer/state-0.pt": os.urandom(700_000),
        "optimizer/empty.bin": b"",
        "name with spaces & ünïcode.txt": b"odd name",
    }
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return files


@pytest.mark.parametrize("list_version", [None, 2], ids=["listV1-default", "listV2"])
def test_rclone_copy_up_check_and_back(cairn_cluster, tmp_path, list_version):
    bucket = new_bucket_name("rclone")
    src = tmp_path / "src"
    files = make_tree(src)
    rclone(cairn_cluster, tmp_path, "mkdir", f"cairn:{bucket}", list_version=list_version)
    rclone(cairn_cluster, tmp_path, "copy", src, f"cairn:{bucket}/ckpt", list_version=list_version)
    r = rclone(cairn_cluster, tmp_path, "check", src, f"cairn:{bucket}/ckpt", list_version=list_version)
    assert b"0 differences found" in r.stderr, r.stderr.decode()
    assert f"{len(files)} matching files".encode() in r.stderr, r.stderr.decode()

    lsf = rclone(cairn_cluster, tmp_path, "lsf", "-R", "--files-only", f"cairn:{bucket}/ckpt", list_version=list_version)
    assert sorted(lsf.stdout.decode().splitlines()) == sorted(files)

    dst = tmp_path / "dst"
    rclone(cairn_cluster, tmp_path, "copy", f"cairn:{bucket}/ckpt", dst, list_version=list_version)
    for name, data in files.items():
        assert (dst / name).read_bytes() == data, name

    # check must notice a difference (proves it really compares content)
    (src / "config.json").write_bytes(b'{"hidden_size": 65}')
    r = rclone(cairn_cluster, tmp_path, "check", src, f"cairn:{bucket}/ckpt", check=False, list_version=list_version)
    assert r.returncode != 0
    assert b"1 differences found" in r.stderr, r.stderr.decode()

    rclone(cairn_cluster, tmp_path, "purge", f"cairn:{bucket}", list_version=list_version)
    s3 = cairn_cluster.client()
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_rclone_many_small_files_paginate(cairn_cluster, tmp_path):
    """More keys than one listing page with rclone's V1 listing (markers)."""
    bucket = new_bucket_name("rclone")
    src = tmp_path / "many"
    src.mkdir()
    for i in range(30):
        (src / f"f{i:03d}.txt").write_bytes(f"file {i}\n".encode())
    rclone(cairn_cluster, tmp_path, "mkdir", f"cairn:{bucket}")
    rclone(cairn_cluster, tmp_path, "copy", "--transfers", "8", src, f"cairn:{bucket}")
    r = rclone(cairn_cluster, tmp_path, "check", "--s3-list-chunk", "7", src, f"cairn:{bucket}")
    assert b"30 matching files" in r.stderr, r.stderr.decode()
