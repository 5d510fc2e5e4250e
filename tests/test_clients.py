"""Real S3 clients with their DEFAULT settings against Cairn (issue 3's client matrix).

aws-cli, boto3 (s3transfer), rclone (provider Other), s3cmd and s3fs move a small checkpoint
folder and a 120 MB file up and down. Files above each client's multipart threshold
go multipart, with the checksums today's SDKs send by default; every download is compared by
sha256, and multipart ETags and stored checksums are compared with values computed here from
the local bytes.

Small-object round trips live in test_roundtrip.py / test_awscli.py / test_rclone.py, the
multipart API edge cases in test_multipart.py; this file covers what only the real clients'
own transfer logic exercises.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
import threading
import time
import zlib
from pathlib import Path

import pytest
from boto3.s3.transfer import TransferConfig

from harness.data import MiB, sha256_file, sha256_stream, write_random_file
from harness.s3client import aws_cli_argv, make_client
from harness.s3util import new_bucket_name, s3_error

try:
    from awscrt import checksums as crt_checksums
except ImportError:  # CRC32C/CRC64NVME need awscrt (botocore[crt]), installed by tests/run.sh
    crt_checksums = None

ALGS = ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"]


# ---------------------------------------------------------------------------------------
# local reference values


class _Hasher:
    """One streaming checksum of the kind S3 uses, with the raw big-endian digest."""

    def __init__(self, alg: str):
        self.alg = alg
        self._crc = 0
        self._h = hashlib.new(alg.lower()) if alg.startswith("SHA") else None

    def update(self, b: bytes):
        if self._h is not None:
            self._h.update(b)
        elif self.alg == "CRC32":
            self._crc = zlib.crc32(b, self._crc)
        elif self.alg == "CRC32C":
            self._crc = crt_checksums.crc32c(b, self._crc)
        elif self.alg == "CRC64NVME":
            self._crc = crt_checksums.crc64nvme(b, self._crc)
        else:
            raise ValueError(self.alg)

    def digest(self) -> bytes:
        if self._h is not None:
            return self._h.digest()
        return self._crc.to_bytes(8 if self.alg == "CRC64NVME" else 4, "big")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def checksum_b64(alg: str, data: bytes) -> str:
    h = _Hasher(alg)
    h.update(data)
    return _b64(h.digest())


def file_sums(path: Path, part_size: int, algs=()) -> dict:
    """What S3 reports for `path` uploaded in parts of `part_size`: the multipart ETag, and
    for each algorithm the FULL_OBJECT and COMPOSITE (`...-N`) checksums."""
    part_md5s = []
    full = {a: _Hasher(a) for a in algs}
    part_digests = {a: [] for a in algs}
    with open(path, "rb") as f:
        while True:
            part = f.read(part_size)
            if not part:
                break
            part_md5s.append(hashlib.md5(part).digest())
            for a in algs:
                full[a].update(part)
                one = _Hasher(a)
                one.update(part)
                part_digests[a].append(one.digest())
    n = len(part_md5s)
    out = {"parts": n, "etag": f'"{hashlib.md5(b"".join(part_md5s)).hexdigest()}-{n}"'}
    for a in algs:
        out[f"full_{a}"] = _b64(full[a].digest())
        out[f"composite_{a}"] = f"{checksum_b64(a, b''.join(part_digests[a]))}-{n}"
    return out


def tree_digests(root: Path) -> dict[str, str]:
    """{relative posix path: sha256} of every file under `root`."""
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


# Above aws-cli's and boto3's 8 MiB, s3cmd's 15 MiB and s3fs's 2 x 50 MiB multipart
# thresholds, small enough for the whole module to stay quick on 2 cores.
LARGE_SIZE = int(os.environ.get("CAIRN_TEST_CLIENTS_LARGE_SIZE", str(120 * 1000 * 1000)))


@pytest.fixture(scope="module")
def large_file(tmp_path_factory):
    """(path, size, sha256) of a 120 MB random file, made once for this module."""
    path = tmp_path_factory.mktemp("large") / "large.bin"
    digest = write_random_file(path, LARGE_SIZE)
    yield path, LARGE_SIZE, digest
    path.unlink(missing_ok=True)


CKPT_FILES = {
    # above aws-cli/boto3's 8 MiB and s3cmd's 15 MiB multipart thresholds
    "model-00001-of-00002.safetensors": 20 * MiB + 5,
    "model-00002-of-00002.safetensors": 3 * MiB + 17,
    "optimizer/rank-0.pt": 9 * MiB + 1,
    "model.safetensors.index.json": None,
    "config.json": None,
    "tokenizer/tokenizer.json": None,
    "notes/run 1 (eval).txt": None,
    "empty.txt": 0,
}


def write_checkpoint(root: Path) -> dict[str, str]:
    """A checkpoint-like folder (a multipart-size shard, a small shard, optimizer state, json,
    a name with spaces, an empty file); returns `tree_digests(root)`."""
    for name, size in CKPT_FILES.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if size is None:
            p.write_text(json.dumps({"file": name, "hidden_size": 64, "layers": list(range(40))}))
        else:
            p.write_bytes(os.urandom(size))
    # older than any LastModified the gateway can hand out, so "sync" decisions that compare
    # times are deterministic (a file written in the same second as its upload is not "newer")
    old = time.time() - 3600
    for p in root.rglob("*"):
        os.utime(p, (old, old))
    return tree_digests(root)


@pytest.fixture
def ckpt(tmp_path):
    root = tmp_path / "ckpt"
    root.mkdir()
    return root, write_checkpoint(root)


def remote_keys(s3, bucket: str, prefix: str = "") -> dict[str, int]:
    """{key: size} of everything under `prefix` (all pages)."""
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
    return out


# ---------------------------------------------------------------------------------------
# aws-cli (s3 cp / s3 sync / s3api) with the default config: 8 MiB threshold and chunks


AWSCLI_CHUNK = 8 * MiB


def test_awscli_cp_large_file_multipart_up_and_down(cairn_cluster, bucket, large_file, tmp_path):
    path, size, digest = large_file
    want = file_sums(path, AWSCLI_CHUNK, ["CRC32"])
    cairn_cluster.aws("s3", "cp", path, f"s3://{bucket}/ckpt/large.bin")

    head = json.loads(
        cairn_cluster.aws(
            "s3api", "head-object", "--bucket", bucket, "--key", "ckpt/large.bin", "--checksum-mode", "ENABLED",
            "--output", "json",
        ).stdout
    )
    assert head["ContentLength"] == size
    assert head["ETag"] == want["etag"], "multipart ETag must be md5 of the part md5s + -N"
    # aws-cli sends CRC32 per part by default; the object reports the composite of them
    assert head.get("ChecksumCRC32") == want["composite_CRC32"], head
    assert head.get("ChecksumType") == "COMPOSITE", head

    dst = tmp_path / "large.down"
    cairn_cluster.aws("s3", "cp", f"s3://{bucket}/ckpt/large.bin", dst)
    assert dst.stat().st_size == size
    assert sha256_file(dst) == digest

    # bucket to bucket: s3transfer copies in 8 MiB UploadPartCopy ranges, so the same ETag
    cairn_cluster.aws("s3", "cp", f"s3://{bucket}/ckpt/large.bin", f"s3://{bucket}/copy/large.bin")
    s3 = cairn_cluster.client()
    copy = s3.head_object(Bucket=bucket, Key="copy/large.bin")
    assert (copy["ContentLength"], copy["ETag"]) == (size, want["etag"])
    assert sha256_stream(s3.get_object(Bucket=bucket, Key="copy/large.bin")["Body"]) == (digest, size)


def test_awscli_sync_both_ways(cairn_cluster, bucket, ckpt, tmp_path):
    src, digests = ckpt
    url = f"s3://{bucket}/run/step-100"
    up = cairn_cluster.aws("s3", "sync", src, url).stdout.decode()
    assert up.count("upload: ") == len(digests), up
    s3 = cairn_cluster.client()
    assert remote_keys(s3, bucket, "run/step-100/") == {
        f"run/step-100/{k}": (src / k).stat().st_size for k in digests
    }
    # nothing changed: nothing to do (sizes and LastModified listed correctly)
    again = cairn_cluster.aws("s3", "sync", src, url).stdout.decode()
    assert "upload:" not in again, again

    # change one file, add one, remove one; --delete removes it remotely too
    (src / "config.json").write_text('{"hidden_size": 128}')
    (src / "optimizer/rank-1.pt").write_bytes(os.urandom(MiB + 3))
    (src / "tokenizer/tokenizer.json").unlink()
    out = cairn_cluster.aws("s3", "sync", "--delete", src, url).stdout.decode()
    assert "upload: " in out and "config.json" in out and "rank-1.pt" in out, out
    assert f"delete: {url}/tokenizer/tokenizer.json" in out, out
    digests = tree_digests(src)
    assert set(remote_keys(s3, bucket, "run/step-100/")) == {f"run/step-100/{k}" for k in digests}

    # down into an empty folder, byte-exact
    down = tmp_path / "down"
    cairn_cluster.aws("s3", "sync", url, down)
    assert tree_digests(down) == digests

    # a remote delete reaches the local copy with --delete; nothing else is downloaded again
    s3.delete_object(Bucket=bucket, Key="run/step-100/optimizer/rank-0.pt")
    out = cairn_cluster.aws("s3", "sync", "--delete", url, down).stdout.decode()
    assert "delete: " in out and "rank-0.pt" in out and "download:" not in out, out
    del digests["optimizer/rank-0.pt"]
    assert tree_digests(down) == digests


@pytest.mark.skipif(crt_checksums is None, reason="awscrt missing (tests/run.sh installs botocore[crt])")
def test_awscli_s3api_put_head_get_with_checksum(cairn_cluster, bucket, tmp_path):
    """s3api put-object with an explicit algorithm; head/get with checksum mode return it."""
    data = os.urandom(3 * MiB + 17)
    src = tmp_path / "shard.bin"
    src.write_bytes(data)
    put = json.loads(
        cairn_cluster.aws(
            "s3api", "put-object", "--bucket", bucket, "--key", "s.bin", "--body", src,
            "--checksum-algorithm", "CRC32C", "--output", "json",
        ).stdout
    )
    assert put["ChecksumCRC32C"] == checksum_b64("CRC32C", data), put
    head = json.loads(
        cairn_cluster.aws(
            "s3api", "head-object", "--bucket", bucket, "--key", "s.bin", "--checksum-mode", "ENABLED",
            "--output", "json",
        ).stdout
    )
    assert head["ContentLength"] == len(data)
    assert head["ChecksumCRC32C"] == checksum_b64("CRC32C", data), head
    assert head.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT"
    plain = cairn_cluster.client().head_object(Bucket=bucket, Key="s.bin")
    assert "ChecksumCRC32C" not in plain, "checksums only with x-amz-checksum-mode: ENABLED"
    dst = tmp_path / "s.down"
    # botocore validates the returned checksum against the body it reads
    got = json.loads(
        cairn_cluster.aws(
            "s3api", "get-object", "--bucket", bucket, "--key", "s.bin", "--checksum-mode", "ENABLED",
            dst, "--output", "json",
        ).stdout
    )
    assert got["ChecksumCRC32C"] == checksum_b64("CRC32C", data)
    assert dst.read_bytes() == data


# ---------------------------------------------------------------------------------------
# boto3 / s3transfer


BOTO_CHUNK = 8 * MiB  # TransferConfig's default multipart_chunksize (and threshold)
THREADED = TransferConfig(max_concurrency=8, use_threads=True)


@pytest.fixture(scope="module")
def medium_file(tmp_path_factory):
    """Three full default-size parts and a 3-byte last part."""
    path = tmp_path_factory.mktemp("medium") / "medium.bin"
    path.write_bytes(os.urandom(3 * BOTO_CHUNK + 3))
    return path


def _need_crt(alg):
    if alg in ("CRC32C", "CRC64NVME") and crt_checksums is None:
        pytest.skip("awscrt missing (tests/run.sh installs botocore[crt])")


@pytest.mark.skipif(crt_checksums is None, reason="awscrt missing")
@pytest.mark.parametrize("alg", ["CRC32", "CRC32C", "CRC64NVME"])
def test_boto3_upload_file_full_object_checksum(cairn_cluster, bucket, medium_file, alg):
    """A caller-provided whole-file CRC makes s3transfer upload with ChecksumType FULL_OBJECT
    (x-amz-checksum-type on Create, the whole-object CRC as a header on Complete)."""
    s3 = cairn_cluster.client(retries=None)
    want = file_sums(medium_file, BOTO_CHUNK, [alg])
    s3.upload_file(
        str(medium_file), bucket, "full", ExtraArgs={f"Checksum{alg}": want[f"full_{alg}"]}, Config=THREADED
    )
    head = s3.head_object(Bucket=bucket, Key="full", ChecksumMode="ENABLED")
    assert (head["ChecksumType"], head[f"Checksum{alg}"]) == ("FULL_OBJECT", want[f"full_{alg}"])
    assert head["ETag"] == want["etag"]
    # a whole GET: botocore (response_checksum_validation=when_supported) asks for the
    # checksum and validates the FULL_OBJECT value against the bytes it reads
    got = s3.get_object(Bucket=bucket, Key="full")
    assert got.get(f"Checksum{alg}") == want[f"full_{alg}"]
    assert hashlib.sha256(got["Body"].read()).hexdigest() == sha256_file(medium_file)
    # a wrong whole-object value is refused and stores nothing
    wrong = _b64(bytes(len(base64.b64decode(want[f"full_{alg}"]))))
    with pytest.raises(Exception) as e:  # one attempt: botocore retries BadDigest 4 times
        cairn_cluster.client().upload_file(
            str(medium_file), bucket, "full-bad", ExtraArgs={f"Checksum{alg}": wrong}, Config=THREADED
        )
    assert "BadDigest" in str(e.value), e.value
    assert "full-bad" not in remote_keys(s3, bucket)
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket), "s3transfer aborts the upload"


def test_boto3_default_client_large_file(cairn_cluster, bucket, large_file, tmp_path):
    """upload_file/download_file exactly as a user writes them: no Config at all."""
    path, size, digest = large_file
    s3 = cairn_cluster.client(retries=None)
    want = file_sums(path, BOTO_CHUNK, ["CRC32"])
    s3.upload_file(str(path), bucket, "large.bin")
    head = s3.head_object(Bucket=bucket, Key="large.bin", ChecksumMode="ENABLED")
    assert (head["ContentLength"], head["ETag"]) == (size, want["etag"])
    assert head.get("ChecksumCRC32") == want["composite_CRC32"], "s3transfer defaults to CRC32 parts"
    dst = tmp_path / "large.down"
    s3.download_file(bucket, "large.bin", str(dst))
    assert sha256_file(dst) == digest


def test_boto3_checksums_when_required(cairn_cluster, bucket, medium_file, tmp_path):
    """The opt-out many users set for third-party S3: no checksum unless an API demands it."""
    s3 = cairn_cluster.client(
        retries=None, request_checksum_calculation="when_required", response_checksum_validation="when_required"
    )
    want = file_sums(medium_file, BOTO_CHUNK)
    s3.upload_file(str(medium_file), bucket, "wr-mp", Config=THREADED)
    head = s3.head_object(Bucket=bucket, Key="wr-mp", ChecksumMode="ENABLED")
    assert head["ETag"] == want["etag"]
    assert not [k for k in head if k.startswith("Checksum") and k != "ChecksumType"], head
    dst = tmp_path / "wr"
    s3.download_file(bucket, "wr-mp", str(dst), Config=THREADED)
    assert sha256_file(dst) == sha256_file(medium_file)

    small = os.urandom(100_000)
    r = s3.put_object(Bucket=bucket, Key="wr-small", Body=small)
    assert r["ETag"] == f'"{hashlib.md5(small).hexdigest()}"'
    assert s3.get_object(Bucket=bucket, Key="wr-small")["Body"].read() == small
    # DeleteObjects is "checksum required": botocore still sends x-amz-checksum-crc32 (no
    # Content-MD5) in this mode
    r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "wr-small"}, {"Key": "wr-mp"}]})
    assert sorted(d["Key"] for d in r["Deleted"]) == ["wr-mp", "wr-small"]
    assert remote_keys(s3, bucket) == {}


# ---------------------------------------------------------------------------------------
# rclone (Debian package, provider Other; the helper in test_rclone.py sets it up)

needs_rclone = pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone missing (tests/run.sh installs it)")


def _rclone(cluster, tmp_path, *args, check=True):
    from test_rclone import rclone

    return rclone(cluster, tmp_path, *args, check=check)


@needs_rclone
def test_rclone_sync_deletes_check_size(cairn_cluster, ckpt, tmp_path):
    src, digests = ckpt
    bucket = new_bucket_name("rclone")
    remote = f"cairn:{bucket}/ckpt"
    _rclone(cairn_cluster, tmp_path, "mkdir", f"cairn:{bucket}")
    _rclone(cairn_cluster, tmp_path, "sync", src, remote)
    # stray objects on the target are removed by sync
    s3 = cairn_cluster.client()
    s3.put_object(Bucket=bucket, Key="ckpt/stale/old-shard.bin", Body=b"old")
    (src / "model-00002-of-00002.safetensors").unlink()
    (src / "config.json").write_text('{"hidden_size": 4096}')
    _rclone(cairn_cluster, tmp_path, "sync", src, remote)
    digests = tree_digests(src)
    lsf = _rclone(cairn_cluster, tmp_path, "lsf", "-R", "--files-only", remote).stdout.decode()
    assert sorted(lsf.splitlines()) == sorted(digests)
    r = _rclone(cairn_cluster, tmp_path, "check", src, remote)
    assert f"{len(digests)} matching files".encode() in r.stderr, r.stderr.decode()

    size = json.loads(_rclone(cairn_cluster, tmp_path, "size", "--json", remote).stdout)
    total = sum((src / k).stat().st_size for k in digests)
    assert (size["count"], size["bytes"]) == (len(digests), total)

    # settier copies each object onto itself with x-amz-storage-class: allowed in place
    r = _rclone(cairn_cluster, tmp_path, "settier", "STANDARD", remote)
    assert b"ERROR" not in r.stderr, r.stderr.decode()
    with s3_error("InvalidRequest", 400):  # an in-place copy that changes nothing stays illegal
        key = "ckpt/config.json"
        s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": key})

    down = tmp_path / "down"
    _rclone(cairn_cluster, tmp_path, "sync", remote, down)
    assert tree_digests(down) == digests
    _rclone(cairn_cluster, tmp_path, "purge", f"cairn:{bucket}")


@needs_rclone
def test_rclone_copyto_large_file_multipart(cairn_cluster, bucket, large_file, tmp_path):
    """rclone's only non-default here is --s3-upload-cutoff: its default (200 MiB) is above the
    module's 120 MB file, and the point is rclone's own multipart upload (5 MiB chunks, 4 at once)."""
    path, size, digest = large_file
    want = file_sums(path, 5 * MiB)
    _rclone(cairn_cluster, tmp_path, "copyto", "--s3-upload-cutoff", "50M", path, f"cairn:{bucket}/large.bin")
    s3 = cairn_cluster.client()
    head = s3.head_object(Bucket=bucket, Key="large.bin")
    assert (head["ContentLength"], head["ETag"]) == (size, want["etag"])
    # rclone keeps the whole-file md5 as metadata for multipart objects, and check uses it
    assert head["Metadata"].get("md5chksum"), head["Metadata"]
    r = _rclone(cairn_cluster, tmp_path, "check", path.parent, f"cairn:{bucket}", "--include", "large.bin")
    assert b"1 matching files" in r.stderr and b"0 differences found" in r.stderr, r.stderr.decode()
    dst = tmp_path / "large.down"
    _rclone(cairn_cluster, tmp_path, "copyto", f"cairn:{bucket}/large.bin", dst)
    assert sha256_file(dst) == digest
    # server-side copy (CopyObject below rclone's 4.6 GiB copy cutoff) keeps the md5 metadata
    _rclone(cairn_cluster, tmp_path, "copyto", f"cairn:{bucket}/large.bin", f"cairn:{bucket}/copy/large.bin")
    r = _rclone(cairn_cluster, tmp_path, "check", path.parent, f"cairn:{bucket}/copy", "--include", "large.bin")
    assert b"1 matching files" in r.stderr and b"0 differences found" in r.stderr, r.stderr.decode()
    assert sha256_stream(s3.get_object(Bucket=bucket, Key="copy/large.bin")["Body"]) == (digest, size)


# ---------------------------------------------------------------------------------------
# s3cmd (pip), path-style over plain http; default 15 MiB multipart chunks

needs_s3cmd = pytest.mark.skipif(shutil.which("s3cmd") is None, reason="s3cmd missing (tests/run.sh installs it)")
S3CMD_CHUNK = 15 * MiB


def s3cmd(cluster, tmp_path, *args, check=True) -> subprocess.CompletedProcess:
    cfg = tmp_path / "s3cmd.cfg"
    if not cfg.exists():
        host = cluster.endpoint.split("://", 1)[1]
        cfg.write_text(
            "[default]\n"
            f"access_key = {cluster.access_key}\n"
            f"secret_key = {cluster.secret_key}\n"
            f"host_base = {host}\n"
            f"host_bucket = {host}\n"  # no %(bucket)s: path-style
            "bucket_location = us-east-1\n"
            "use_https = False\n"
            "signature_v2 = False\n"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    argv = ["s3cmd", "-c", str(cfg), "--no-progress", *map(str, args)]
    r = subprocess.run(argv, env=env, capture_output=True, timeout=300, stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {r.returncode}\n{r.stdout.decode()[-3000:]}\n{r.stderr.decode()[-3000:]}"
        )
    return r


@needs_s3cmd
def test_s3cmd_put_get_large_file_multipart(cairn_cluster, large_file, tmp_path):
    path, size, digest = large_file
    bucket = new_bucket_name("s3cmd")
    s3cmd(cairn_cluster, tmp_path, "mb", f"s3://{bucket}")
    s3cmd(cairn_cluster, tmp_path, "put", path, f"s3://{bucket}/large.bin")
    head = cairn_cluster.client().head_object(Bucket=bucket, Key="large.bin")
    assert (head["ContentLength"], head["ETag"]) == (size, file_sums(path, S3CMD_CHUNK)["etag"])
    dst = tmp_path / "large.down"
    # s3cmd checks the download against the md5 it stored in x-amz-meta-s3cmd-attrs
    r = s3cmd(cairn_cluster, tmp_path, "get", f"s3://{bucket}/large.bin", dst)
    assert b"MD5 signatures do not match" not in r.stderr + r.stdout, r.stderr.decode()
    assert sha256_file(dst) == digest
    ls = s3cmd(cairn_cluster, tmp_path, "ls", f"s3://{bucket}").stdout.decode()
    assert re.search(rf"\s{size}\s+s3://{bucket}/large\.bin$", ls, re.M), ls
    s3cmd(cairn_cluster, tmp_path, "del", f"s3://{bucket}/large.bin")
    s3cmd(cairn_cluster, tmp_path, "rb", f"s3://{bucket}")
    assert bucket not in s3cmd(cairn_cluster, tmp_path, "ls").stdout.decode()


@needs_s3cmd
def test_s3cmd_put_get_sync(cairn_cluster, ckpt, tmp_path):
    src, digests = ckpt
    bucket = new_bucket_name("s3cmd")
    s3cmd(cairn_cluster, tmp_path, "mb", f"s3://{bucket}")
    # a single put and get
    s3cmd(cairn_cluster, tmp_path, "put", src / "config.json", f"s3://{bucket}/one/config.json")
    s3cmd(cairn_cluster, tmp_path, "get", f"s3://{bucket}/one/config.json", tmp_path / "config.got")
    assert sha256_file(tmp_path / "config.got") == digests["config.json"]

    s3cmd(cairn_cluster, tmp_path, "sync", f"{src}/", f"s3://{bucket}/ckpt/")
    s3 = cairn_cluster.client()
    assert remote_keys(s3, bucket, "ckpt/") == {f"ckpt/{k}": (src / k).stat().st_size for k in digests}
    # unchanged: s3cmd compares size and md5 (ETag, or its stored md5 for multipart objects)
    again = s3cmd(cairn_cluster, tmp_path, "sync", f"{src}/", f"s3://{bucket}/ckpt/").stdout.decode()
    assert "upload:" not in again, again

    (src / "optimizer/rank-0.pt").unlink()
    (src / "config.json").write_text('{"hidden_size": 1}')
    out = s3cmd(cairn_cluster, tmp_path, "sync", "--delete-removed", f"{src}/", f"s3://{bucket}/ckpt/")
    out = out.stdout.decode()
    assert "rank-0.pt" in out and "config.json" in out, out
    digests = tree_digests(src)
    assert set(remote_keys(s3, bucket, "ckpt/")) == {f"ckpt/{k}" for k in digests}

    down = tmp_path / "down"
    down.mkdir()
    s3cmd(cairn_cluster, tmp_path, "sync", f"s3://{bucket}/ckpt/", f"{down}/")
    assert tree_digests(down) == digests
    s3cmd(cairn_cluster, tmp_path, "del", "--recursive", "--force", f"s3://{bucket}")
    s3cmd(cairn_cluster, tmp_path, "rb", f"s3://{bucket}")


# ---------------------------------------------------------------------------------------
# s3fs (fsspec) on aiobotocore, default settings


@pytest.fixture
def s3fs_fs(cairn_cluster):
    s3fs = pytest.importorskip("s3fs", reason="s3fs missing (tests/run.sh installs it)")
    fs = s3fs.S3FileSystem(
        key=cairn_cluster.access_key,
        secret=cairn_cluster.secret_key,
        endpoint_url=cairn_cluster.endpoint,
        client_kwargs={"region_name": cairn_cluster.region},
        skip_instance_cache=True,
    )
    yield fs
    fs.clear_instance_cache()


def test_s3fs_put_get_ls_rm_checkpoint(cairn_cluster, s3fs_fs, ckpt, tmp_path):
    fs = s3fs_fs
    src, digests = ckpt
    bucket = new_bucket_name("s3fs")
    fs.mkdir(bucket)
    fs.put(f"{src}/", f"{bucket}/ckpt/", recursive=True)
    fs.invalidate_cache()
    found = fs.find(f"{bucket}/ckpt")
    assert sorted(found) == sorted(f"{bucket}/ckpt/{k}" for k in digests)
    top = fs.ls(f"{bucket}/ckpt", detail=True)
    kinds = {e["name"].rsplit("/", 1)[-1]: e["type"] for e in top}
    assert kinds["optimizer"] == "directory" and kinds["config.json"] == "file", kinds
    info = fs.info(f"{bucket}/ckpt/model-00001-of-00002.safetensors")
    assert info["size"] == CKPT_FILES["model-00001-of-00002.safetensors"]

    down = tmp_path / "down"
    fs.get(f"{bucket}/ckpt/", f"{down}/", recursive=True)
    assert tree_digests(down) == digests
    with fs.open(f"{bucket}/ckpt/optimizer/rank-0.pt", "rb") as f:
        f.seek(MiB)
        assert hashlib.sha256(f.read()).hexdigest() == hashlib.sha256(
            (src / "optimizer/rank-0.pt").read_bytes()[MiB:]
        ).hexdigest()

    fs.rm(f"{bucket}/ckpt/config.json")
    fs.invalidate_cache()
    assert not fs.exists(f"{bucket}/ckpt/config.json")
    fs.rm(f"{bucket}/ckpt", recursive=True)  # DeleteObjects with the SDK's checksum header
    fs.invalidate_cache()
    assert fs.find(f"{bucket}") == []
    assert remote_keys(cairn_cluster.client(), bucket) == {}
    fs.rmdir(bucket)


def test_s3fs_large_file_multipart(cairn_cluster, s3fs_fs, bucket, large_file, tmp_path):
    """s3fs.put goes multipart above 2 x its 50 MiB chunk; writes through open() in 50 MiB blocks."""
    fs = s3fs_fs
    path, size, digest = large_file
    fs.put(str(path), f"{bucket}/large.bin")
    head = cairn_cluster.client().head_object(Bucket=bucket, Key="large.bin")
    assert (head["ContentLength"], head["ETag"]) == (size, file_sums(path, 50 * MiB)["etag"])
    dst = tmp_path / "large.down"
    fs.get(f"{bucket}/large.bin", str(dst))
    assert sha256_file(dst) == digest
    fs.rm(f"{bucket}/large.bin")


# ---------------------------------------------------------------------------------------
# Over TLS: botocore sends its flexible checksums as aws-chunked trailers
# (STREAMING-UNSIGNED-PAYLOAD-TRAILER) only on https URLs; on plain http it sends a header
# with a signed SHA-256 body. The gateway speaks plain http, so these tests put a TLS
# terminator in front of it that relays the bytes unchanged (the signed Host header is the
# relay's, as a real TLS proxy in front of Cairn would see it).


_TRAILER_REQUEST = re.compile(rb"\r\nx-amz-content-sha256: *STREAMING-UNSIGNED-PAYLOAD-TRAILER\r\n", re.I)


class TlsRelay:
    """Accepts TLS on 127.0.0.1:<port> and pipes each connection's plaintext to `target`."""

    def __init__(self, target: tuple[str, int], certfile: Path, keyfile: Path):
        self.target = target
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(certfile, keyfile)
        self.cafile = certfile
        self.loop = asyncio.new_event_loop()
        self.port = None
        self.trailer_requests = 0  # requests seen with an aws-chunked, trailer-checksummed body
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        if not ready.wait(10) or self.port is None:
            raise RuntimeError("TLS relay did not start")

    def _run(self, ready: threading.Event):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ctx)
        )
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _handle(self, reader, writer):
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return

        async def pump(r, w, sniff=False):
            try:
                while data := await r.read(256 * 1024):
                    if sniff:
                        self.trailer_requests += len(_TRAILER_REQUEST.findall(data))
                    w.write(data)
                    await w.drain()
            except (OSError, ssl.SSLError, ConnectionError):
                pass

        tasks = [asyncio.create_task(pump(reader, up_w, sniff=True)), asyncio.create_task(pump(up_r, writer))]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        for w in (writer, up_w):
            w.close()

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def close(self):
        async def shutdown():
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def tls(cairn_cluster, tmp_path_factory):
    """A TlsRelay in front of the module's gateway (`.endpoint`, `.cafile`)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl missing (tests/run.sh installs it)")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
        check=True, capture_output=True, timeout=60,
    )
    host, port = cairn_cluster.gateway.addr.rsplit(":", 1)
    relay = TlsRelay((host, int(port)), cert, key)
    yield relay
    relay.close()


def tls_client(cairn_cluster, tls, **config):
    s3 = make_client(tls.endpoint, cairn_cluster.access_key, cairn_cluster.secret_key, retries=None, **config)
    s3._endpoint.http_session._verify = str(tls.cafile)  # noqa: SLF001 (boto3 has no per-client CA option)
    return s3


def record_payload_modes(s3) -> list[tuple[str, str, str]]:
    """Collects (operation, x-amz-content-sha256, content-encoding) of every request sent."""
    seen = []

    def text(v) -> str:
        return v.decode() if isinstance(v, bytes) else str(v or "")

    def hook(request, event_name="", **_):
        h = request.headers
        op = event_name.rsplit(".", 1)[-1]
        seen.append((op, text(h.get("x-amz-content-sha256")), text(h.get("Content-Encoding"))))

    s3.meta.events.register("before-send.s3", hook)
    return seen


@pytest.mark.parametrize("alg", [None, *ALGS], ids=["default", *ALGS])
def test_boto3_over_tls_sends_aws_chunked_trailers(cairn_cluster, bucket, tls, medium_file, tmp_path, alg):
    _need_crt(alg)
    s3 = tls_client(cairn_cluster, tls)
    seen = record_payload_modes(s3)
    extra = {"ChecksumAlgorithm": alg} if alg else {}
    s3.upload_file(str(medium_file), bucket, "mp", ExtraArgs=extra, Config=THREADED)
    small = os.urandom(3 * MiB + 17)
    put = s3.put_object(Bucket=bucket, Key="small", Body=small, **extra)

    parts = [s for s in seen if s[0] in ("UploadPart", "PutObject")]
    assert parts and all(
        sha == "STREAMING-UNSIGNED-PAYLOAD-TRAILER" and "aws-chunked" in enc for _, sha, enc in parts
    ), parts
    used = alg or "CRC32"  # botocore's default
    want = file_sums(medium_file, BOTO_CHUNK, [used])
    head = s3.head_object(Bucket=bucket, Key="mp", ChecksumMode="ENABLED")
    assert head["ETag"] == want["etag"]
    kind, value = ("FULL_OBJECT", want[f"full_{used}"]) if used == "CRC64NVME" else (
        "COMPOSITE", want[f"composite_{used}"])
    assert (head["ChecksumType"], head[f"Checksum{used}"]) == (kind, value), head
    assert put[f"Checksum{used}"] == checksum_b64(used, small)
    assert put["ETag"] == f'"{hashlib.md5(small).hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key="small", ChecksumMode="ENABLED")
    assert got["Body"].read() == small  # botocore validates the checksum while reading
    assert got[f"Checksum{used}"] == checksum_b64(used, small)

    dst = tmp_path / "down"
    s3.download_file(bucket, "mp", str(dst), Config=THREADED)
    assert sha256_file(dst) == sha256_file(medium_file)


def test_awscli_over_tls_sync(cairn_cluster, bucket, tls, ckpt, tmp_path):
    """aws-cli with nothing but the endpoint and a CA bundle: aws-chunked parts and PUTs."""
    src, digests = ckpt
    env = {"AWS_CA_BUNDLE": str(tls.cafile), "AWS_ENDPOINT_URL": tls.endpoint}
    before = tls.trailer_requests

    def aws(*args):
        argv = [*aws_cli_argv(), "--endpoint-url", tls.endpoint, *map(str, args)]
        r = subprocess.run(argv, env={**cairn_cluster.env(), **env}, capture_output=True, timeout=300,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 0, f"{argv} exited {r.returncode}: {r.stderr.decode()[-3000:]}"
        return r

    aws("s3", "sync", src, f"s3://{bucket}/tls")
    # every non-empty file's PUT or part came as aws-chunked with a trailer (and more parts)
    assert tls.trailer_requests - before >= len(digests) - 1
    shard = "model-00001-of-00002.safetensors"
    head = cairn_cluster.client().head_object(Bucket=bucket, Key=f"tls/{shard}", ChecksumMode="ENABLED")
    assert head["ETag"] == file_sums(src / shard, AWSCLI_CHUNK)["etag"]
    assert head["ChecksumCRC32"] == file_sums(src / shard, AWSCLI_CHUNK, ["CRC32"])["composite_CRC32"]
    down = tmp_path / "down"
    aws("s3", "sync", f"s3://{bucket}/tls", down)
    assert tree_digests(down) == digests


def test_s3fs_over_tls_put_get(cairn_cluster, bucket, tls, ckpt, tmp_path):
    s3fs = pytest.importorskip("s3fs", reason="s3fs missing (tests/run.sh installs it)")
    src, digests = ckpt
    before = tls.trailer_requests
    fs = s3fs.S3FileSystem(
        key=cairn_cluster.access_key,
        secret=cairn_cluster.secret_key,
        endpoint_url=tls.endpoint,
        client_kwargs={"region_name": cairn_cluster.region, "verify": str(tls.cafile)},
        skip_instance_cache=True,
    )
    fs.put(f"{src}/", f"{bucket}/tls/", recursive=True)
    assert tls.trailer_requests - before >= len(digests) - 1, "s3fs sent no aws-chunked trailer bodies"
    down = tmp_path / "down"
    fs.get(f"{bucket}/tls/", f"{down}/", recursive=True)
    assert tree_digests(down) == digests
    fs.rm(f"{bucket}/tls", recursive=True)
    assert remote_keys(cairn_cluster.client(), bucket) == {}
