"""aws-cli high-level commands against the gateway: mb, ls, cp (up, down, recursive), rm, rb."""

import os
import re
import subprocess

import pytest

from harness.data import MiB, sha256_file
from harness.s3client import aws_cli_argv
from harness.s3util import new_bucket_name, s3_error


def out(r) -> str:
    return r.stdout.decode()


def test_mb_ls_rb(cairn_cluster):
    name = new_bucket_name("cli")
    assert f"make_bucket: {name}" in out(cairn_cluster.aws("s3", "mb", f"s3://{name}"))
    listing = out(cairn_cluster.aws("s3", "ls"))
    assert re.search(rf"^\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d {re.escape(name)}$", listing, re.M), listing
    assert f"remove_bucket: {name}" in out(cairn_cluster.aws("s3", "rb", f"s3://{name}"))
    assert name not in out(cairn_cluster.aws("s3", "ls"))


def test_cp_ls_rm(cairn_cluster, bucket, tmp_path):
    src = tmp_path / "weights.bin"
    src.write_bytes(os.urandom(3 * MiB + 17))
    cairn_cluster.aws("s3", "cp", src, f"s3://{bucket}/run1/step-100/weights.bin")
    (tmp_path / "cfg.json").write_text('{"lr": 0.001}')
    cairn_cluster.aws("s3", "cp", tmp_path / "cfg.json", f"s3://{bucket}/run1/config.json")

    top = out(cairn_cluster.aws("s3", "ls", f"s3://{bucket}/"))
    assert re.search(r"^\s+PRE run1/$", top, re.M), top
    run = out(cairn_cluster.aws("s3", "ls", f"s3://{bucket}/run1/"))
    assert re.search(r"^\s+PRE step-100/$", run, re.M), run
    assert re.search(r"\s13 config\.json$", run, re.M), run
    rec = out(cairn_cluster.aws("s3", "ls", "--recursive", f"s3://{bucket}/"))
    assert re.search(rf"\s{3 * MiB + 17} run1/step-100/weights\.bin$", rec, re.M), rec
    assert re.search(r"\s13 run1/config\.json$", rec, re.M), rec

    dst = tmp_path / "back.bin"
    cairn_cluster.aws("s3", "cp", f"s3://{bucket}/run1/step-100/weights.bin", dst)
    assert sha256_file(dst) == sha256_file(src)

    r = cairn_cluster.aws("s3", "rm", f"s3://{bucket}/run1/config.json")
    assert "delete: " in out(r)
    rec = out(cairn_cluster.aws("s3", "ls", "--recursive", f"s3://{bucket}/"))
    assert "config.json" not in rec and "weights.bin" in rec
    s3 = cairn_cluster.client()
    with s3_error("404", 404):
        s3.head_object(Bucket=bucket, Key="run1/config.json")


def test_cp_recursive_up_and_down(cairn_cluster, bucket, tmp_path):
    src = tmp_path / "ckpt"
    files = {
        "model-00001.safetensors": os.urandom(2 * MiB + 1),
        "model-00002.safetensors": os.urandom(MiB // 2),
        "config.json": b'{"hidden": 4096}',
        "tokenizer/vocab.txt": b"a\nb\nc\n",
        "empty.txt": b"",
    }
    for name, data in files.items():
        p = src / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    cairn_cluster.aws("s3", "cp", "--recursive", src, f"s3://{bucket}/ckpt/")
    dst = tmp_path / "down"
    cairn_cluster.aws("s3", "cp", "--recursive", f"s3://{bucket}/ckpt/", dst)
    for name, data in files.items():
        assert (dst / name).read_bytes() == data, name
    cairn_cluster.aws("s3", "rm", "--recursive", f"s3://{bucket}/ckpt/")
    assert cairn_cluster.client().list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_cp_missing_object_fails(cairn_cluster, bucket, tmp_path):
    r = cairn_cluster.aws("s3", "cp", f"s3://{bucket}/nope", tmp_path / "x", check=False)
    assert r.returncode != 0
    assert b"404" in r.stderr or b"Not Found" in r.stderr or b"NoSuchKey" in r.stderr, r.stderr


def test_wrong_credentials_fail_in_cli(cairn_cluster, bucket):
    r = cairn_cluster.aws("s3", "ls", f"s3://{bucket}/", check=False, env_extra={"AWS_SECRET_ACCESS_KEY": "wrong-secret"})
    assert r.returncode != 0
    assert b"SignatureDoesNotMatch" in r.stderr, r.stderr


@pytest.mark.parametrize("size", [0, 1, 3 * MiB + 17])
def test_cp_stdin_stdout(cairn_cluster, bucket, tmp_path, size):
    """`aws s3 cp - s3://...` streams from stdin (a single PUT below 8 MiB)."""
    data = os.urandom(size)
    env = cairn_cluster.env()
    up = subprocess.run(
        [*aws_cli_argv(), "--endpoint-url", cairn_cluster.endpoint, "s3", "cp", "-", f"s3://{bucket}/stdin.bin"],
        input=data, env=env, capture_output=True, timeout=120,
    )
    assert up.returncode == 0, up.stderr.decode()
    down = subprocess.run(
        [*aws_cli_argv(), "--endpoint-url", cairn_cluster.endpoint, "s3", "cp", f"s3://{bucket}/stdin.bin", "-"],
        env=env, capture_output=True, timeout=120,
    )
    assert down.returncode == 0, down.stderr.decode()
    assert down.stdout == data
