"""`cairn push / pull / ls / watch` against a real S3 endpoint (see conftest.py)."""

from __future__ import annotations

import glob
import json
import os
import signal
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from ckptwriter import hf_files, sha256, torch_zip, tree_digests, write_checkpoint, write_slowly
from conftest import free_port
from harness.exposition import Exposition
from harness.tcpproxy import TcpProxy
from harness.wait import wait_for

MiB = 1 << 20
FAST = ["--quiet-period", "1s", "--rescan-interval", "1s", "--max-backoff", "2s"]


# ------------------------------------------------------------------------------ helpers

def manifest_keys(s3c, bucket: str, prefix: str = "run/") -> list[str]:
    keys = []
    for page in s3c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}.cairn/manifests/"):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return sorted(keys)


def committed_names(s3c, bucket: str, prefix: str = "run/") -> set[str]:
    return {k.split("/")[-2] for k in manifest_keys(s3c, bucket, prefix)}


def read_manifest(s3c, bucket: str, name: str, prefix: str = "run/") -> dict:
    keys = [k for k in manifest_keys(s3c, bucket, prefix) if k.split("/")[-2] == name]
    assert keys, f"no manifest for {name}"
    return json.loads(s3c.get_object(Bucket=bucket, Key=keys[-1])["Body"].read())


def all_keys(s3c, bucket: str, prefix: str = "") -> list[str]:
    keys = []
    for page in s3c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def ls_json(cairn, bucket: str, prefix: str = "run") -> list[dict]:
    return json.loads(cairn.run("ls", f"s3://{bucket}/{prefix}", "--json").stdout)


class ManifestMonitor:
    """Polls the bucket and records when each checkpoint's manifest first appears."""

    def __init__(self, s3c, bucket: str):
        self.s3c, self.bucket = s3c, bucket
        self.first_seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(10)

    def _run(self):
        while not self._stop.is_set():
            try:
                for n in committed_names(self.s3c, self.bucket):
                    self.first_seen.setdefault(n, time.monotonic())
            except Exception:
                pass
            self._stop.wait(0.05)


def watch_log(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


# ------------------------------------------------------------------------------ push / pull / ls

def test_push_pull_ls_roundtrip_multipart(cairn, s3c, ckpt_bucket, tmp_path):
    files = hf_files(7, model_bytes=12 * MiB, shards=2)
    src = write_checkpoint(tmp_path / "train", "checkpoint-7", files)
    r = cairn.run("push", src, f"s3://{ckpt_bucket}/run", "--part-size", "5MiB", "--multipart-threshold", "5MiB")
    assert "committed checkpoint-7" in r.stderr

    # Pushing the same checkpoint again uploads nothing and commits nothing new.
    r = cairn.run("push", src, f"s3://{ckpt_bucket}/run")
    assert "already committed checkpoint-7 (generation 1" in r.stderr
    assert manifest_keys(s3c, ckpt_bucket) == ["run/.cairn/manifests/checkpoint-7/0000000001.json"]

    m = read_manifest(s3c, ckpt_bucket, "checkpoint-7")
    assert m["format"] == "cairn-checkpoint-manifest" and m["step"] == 7 and m["generation"] == 1
    assert {f["path"]: f["sha256"] for f in m["files"]} == {k: sha256(v) for k, v in files.items()}
    assert max(f["parts"] for f in m["files"]) >= 2, "the 6 MiB shards should have gone multipart"

    rows = ls_json(cairn, ckpt_bucket)
    assert [(r["name"], r["step"], r["files"]) for r in rows] == [("checkpoint-7", 7, len(files))]
    assert rows[0]["size"] == sum(len(v) for v in files.values())
    table = cairn.run("ls", f"s3://{ckpt_bucket}/run").stdout
    assert "checkpoint-7" in table and "NAME" in table

    dest = tmp_path / "restore"
    cairn.run("pull", f"s3://{ckpt_bucket}/run", dest, "--latest")
    assert tree_digests(dest) == {k: sha256(v) for k, v in files.items()}
    # Into an existing directory: the checkpoint lands under its own name; no temp dirs left.
    into = tmp_path / "into"
    into.mkdir()
    cairn.run("pull", f"s3://{ckpt_bucket}/run", into, "--step", "7")
    assert tree_digests(into / "checkpoint-7") == tree_digests(dest)
    assert sorted(p.name for p in into.iterdir()) == ["checkpoint-7"]
    # A second pull onto the same destination refuses to overwrite.
    r = cairn.run("pull", f"s3://{ckpt_bucket}/run", into, check=False)
    assert r.returncode != 0 and "already exists" in r.stderr


def test_push_single_file_and_dcp(cairn, s3c, ckpt_bucket, tmp_path):
    pt = tmp_path / "model_step_300.pt"
    pt.write_bytes(torch_zip(os.urandom(300_000)))
    cairn.run("push", pt, f"s3://{ckpt_bucket}/run")
    dcp = tmp_path / "step_400"
    dcp.mkdir()
    (dcp / "__0_0.distcp").write_bytes(os.urandom(50_000))
    (dcp / ".metadata").write_bytes(b"dcp-metadata")
    cairn.run("push", dcp, f"s3://{ckpt_bucket}/run")
    rows = ls_json(cairn, ckpt_bucket)
    assert [(r["name"], r["step"]) for r in rows] == [("model_step_300.pt", 300), ("step_400", 400)]
    out = tmp_path / "out"
    cairn.run("pull", f"s3://{ckpt_bucket}/run", out, "--step", "300")
    assert (out / "model_step_300.pt").read_bytes() == pt.read_bytes()
    out2 = tmp_path / "out2"
    cairn.run("pull", f"s3://{ckpt_bucket}/run", out2)
    assert tree_digests(out2) == tree_digests(dcp)


def test_push_refuses_incomplete_checkpoints(cairn, s3c, ckpt_bucket, tmp_path):
    files = hf_files(3)
    full = files["model.safetensors"]
    files["model.safetensors"] = full[: len(full) - 1000]  # truncated
    src = write_checkpoint(tmp_path, "checkpoint-3", files)
    r = cairn.run("push", src, f"s3://{ckpt_bucket}/run", check=False)
    assert r.returncode != 0
    assert "not complete" in r.stderr and "model.safetensors" in r.stderr
    # No trainer_state.json yet: refused too.
    files = hf_files(4)
    del files["trainer_state.json"]
    src = write_checkpoint(tmp_path, "checkpoint-4", files)
    r = cairn.run("push", src, f"s3://{ckpt_bucket}/run", check=False)
    assert r.returncode != 0 and "trainer_state.json" in r.stderr
    # A torch zip cut short.
    bad = tmp_path / "opt_5.pt"
    bad.write_bytes(torch_zip(os.urandom(100_000))[:-50])
    r = cairn.run("push", bad, f"s3://{ckpt_bucket}/run", check=False)
    assert r.returncode != 0 and "end-of-central-directory" in r.stderr
    assert manifest_keys(s3c, ckpt_bucket) == []


def test_pull_never_chooses_a_checkpoint_without_manifest(cairn, s3c, ckpt_bucket, tmp_path):
    files = hf_files(10)
    src = write_checkpoint(tmp_path / "a", "checkpoint-10", files)
    cairn.run("push", src, f"s3://{ckpt_bucket}/run")
    # A later, bigger step whose data is there but whose manifest is not (a crash before commit).
    for rel, data in hf_files(20).items():
        s3c.put_object(Bucket=ckpt_bucket, Key=f"run/checkpoint-20/{rel}", Body=data)
    assert [r["name"] for r in ls_json(cairn, ckpt_bucket)] == ["checkpoint-10"]
    dest = tmp_path / "restore"
    cairn.run("pull", f"s3://{ckpt_bucket}/run", dest, "--latest")
    assert tree_digests(dest) == {k: sha256(v) for k, v in files.items()}
    r = cairn.run("pull", f"s3://{ckpt_bucket}/run", tmp_path / "x", "--step", "20", check=False)
    assert r.returncode != 0 and "no committed checkpoint" in r.stderr
    assert not (tmp_path / "x").exists()


def test_pull_detects_corruption(cairn, s3c, ckpt_bucket, tmp_path):
    files = hf_files(1)
    src = write_checkpoint(tmp_path / "a", "checkpoint-1", files)
    cairn.run("push", src, f"s3://{ckpt_bucket}/run")
    data = bytearray(files["optimizer.pt"])
    data[100] ^= 0xFF
    s3c.put_object(Bucket=ckpt_bucket, Key="run/checkpoint-1/optimizer.pt", Body=bytes(data))
    r = cairn.run("pull", f"s3://{ckpt_bucket}/run", tmp_path / "restore", check=False)
    assert r.returncode != 0 and "checksum mismatch" in r.stderr and "optimizer.pt" in r.stderr
    assert not (tmp_path / "restore").exists()
    assert not list(tmp_path.glob(".restore.cairn-pull-*")), "temp dir must be cleaned up"


def test_bad_input_gives_one_line_errors(cairn, s3c, ckpt_bucket, tmp_path):
    def err(*args, env=None):
        r = cairn.run(*args, check=False, env=env)
        assert r.returncode != 0, args
        lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
        assert len(lines) == 1, f"expected one line, got: {r.stderr!r}"
        return lines[0]

    assert "no such file or directory" in err("push", tmp_path / "nope", f"s3://{ckpt_bucket}/run")
    assert "no such file or directory" in err("watch", tmp_path / "nope", "--to", f"s3://{ckpt_bucket}/run")
    assert "bad S3 URL" in err("push", tmp_path, "http://bucket/run")
    assert "bad S3 URL" in err("ls", "s3://")
    assert "does not exist" in err("ls", "s3://no-such-bucket-cairn/run")
    assert "does not exist" in err("push", tmp_path, "s3://no-such-bucket-cairn/run")
    env = {k: v for k, v in cairn.env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    assert "no S3 credentials" in err("ls", f"s3://{ckpt_bucket}/run", env=env)
    assert "bad size" in err("push", tmp_path, f"s3://{ckpt_bucket}/run", "--part-size", "lots")
    assert "--part-size" in err("push", tmp_path, f"s3://{ckpt_bucket}/run", "--part-size", "1MiB")


# ------------------------------------------------------------------------------ watch

def test_watch_commits_only_finished_checkpoints(cairn, s3c, ckpt_bucket, tmp_path):
    train = tmp_path / "train"
    train.mkdir()
    mport = free_port()
    log = tmp_path / "watch.log"
    cairn.spawn("watch", train, "--to", f"s3://{ckpt_bucket}/run", *FAST, "--report-incomplete-after", "3s",
                "--metrics-listen", f"127.0.0.1:{mport}", log=log)
    wait_for(lambda: "watching" in watch_log(log), 30, what="watcher start")
    done_at: dict[str, float] = {}
    expected: dict[str, dict[str, str]] = {}
    with ManifestMonitor(s3c, ckpt_bucket) as mon:
        # checkpoint-1: slow, chunked writes, trainer_state.json last (itself in tiny chunks).
        files = hf_files(1, model_bytes=3 * MiB, shards=2)
        expected["checkpoint-1"] = {k: sha256(v) for k, v in files.items()}
        state = files.pop("trainer_state.json")
        write_checkpoint(train, "checkpoint-1", files, chunk=128 << 10, delay=0.05, file_delay=0.3)
        write_slowly(train / "checkpoint-1" / "trainer_state.json", state, chunk=16, delay=0.1)
        done_at["checkpoint-1"] = time.monotonic()
        # checkpoint-0: out of order: trainer_state.json first, then a weights file slowly.
        files0 = hf_files(0, model_bytes=2 * MiB)
        expected["checkpoint-0"] = {k: sha256(v) for k, v in files0.items()}
        order = ["trainer_state.json"] + [k for k in files0 if k != "trainer_state.json"]
        write_checkpoint(train, "checkpoint-0", {k: files0[k] for k in order}, chunk=128 << 10, delay=0.05)
        done_at["checkpoint-0"] = time.monotonic()
        # checkpoint-2: a safetensors file that stays truncated (the writer "crashed").
        files2 = hf_files(2)
        full = files2["model.safetensors"]
        files2["model.safetensors"] = full[: len(full) // 2]
        write_checkpoint(train, "checkpoint-2", files2, chunk=128 << 10, delay=0.02)
        # checkpoint-3: written normally after it.
        files3 = hf_files(3, model_bytes=2 * MiB)
        expected["checkpoint-3"] = {k: sha256(v) for k, v in files3.items()}
        write_checkpoint(train, "checkpoint-3", files3, chunk=128 << 10, delay=0.02)
        done_at["checkpoint-3"] = time.monotonic()
        wait_for(lambda: {"checkpoint-0", "checkpoint-1", "checkpoint-3"} <= set(mon.first_seen), 60, what="commits")
        # Give the watcher time to (wrongly) commit checkpoint-2 and to report it.
        wait_for(lambda: "checkpoint-2 still incomplete" in watch_log(log), 30, what="incomplete report")
    for name in ("checkpoint-0", "checkpoint-1", "checkpoint-3"):
        assert mon.first_seen[name] >= done_at[name] - 0.06, f"{name} committed before its last file was written"
        m = read_manifest(s3c, ckpt_bucket, name)
        assert {f["path"]: f["sha256"] for f in m["files"]} == expected[name]
        for f in m["files"]:
            assert s3c.head_object(Bucket=ckpt_bucket, Key=f["key"])["ContentLength"] == f["size"]
    assert "checkpoint-2" not in committed_names(s3c, ckpt_bucket)
    assert "checkpoint-2" not in mon.first_seen
    # Metrics.
    m = Exposition.parse(urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode())
    assert m.value("cairn_watch_checkpoints_committed_total") == 3
    assert m.value("cairn_watch_checkpoints_seen_total") == 4
    # one commit delay recorded per committed checkpoint
    assert m.value("cairn_watch_commit_delay_seconds_count") == 3
    assert m.value("cairn_watch_commit_delay_seconds_bucket", le="+Inf") == 3
    # The file is finally completed: now it is committed, with the full content.
    write_slowly(train / "checkpoint-2" / "model.safetensors", full)
    wait_for(lambda: "checkpoint-2" in committed_names(s3c, ckpt_bucket), 30, what="checkpoint-2 commit")
    m = read_manifest(s3c, ckpt_bucket, "checkpoint-2")
    assert {f["path"]: f["sha256"] for f in m["files"]}["model.safetensors"] == sha256(full)


def test_watch_loose_files_and_dcp_dirs(cairn, s3c, ckpt_bucket, tmp_path):
    import numpy as np
    from safetensors.numpy import save as st_save

    train = tmp_path / "train"
    train.mkdir()
    log = tmp_path / "watch.log"
    cairn.spawn("watch", train, "--to", f"s3://{ckpt_bucket}/run", *FAST, log=log)
    wait_for(lambda: "watching" in watch_log(log), 30, what="watcher start")
    with ManifestMonitor(s3c, ckpt_bucket) as mon:
        weights = st_save({"w": np.arange(300_000, dtype=np.float32)})
        write_slowly(train / "model_100.safetensors", weights, chunk=64 << 10, delay=0.05)
        t_file = time.monotonic()
        # DCP: shards first, then `.metadata` via temp file + rename (the commit).
        dcp = train / "step_200"
        dcp.mkdir()
        for i in range(2):
            write_slowly(dcp / f"__{i}_0.distcp", os.urandom(400_000), chunk=64 << 10, delay=0.02)
        time.sleep(2.5)  # several rescans while `.metadata` is missing
        assert "step_200" not in mon.first_seen
        write_slowly(dcp / ".metadata.tmp", b"dcp-metadata")
        t_dcp = time.monotonic()
        os.rename(dcp / ".metadata.tmp", dcp / ".metadata")
        wait_for(lambda: {"model_100.safetensors", "step_200"} <= set(mon.first_seen), 60, what="commits")
    assert mon.first_seen["model_100.safetensors"] >= t_file - 0.06
    assert mon.first_seen["step_200"] >= t_dcp
    m = read_manifest(s3c, ckpt_bucket, "step_200")
    assert sorted(f["path"] for f in m["files"]) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert m["step"] == 200 and m["kind"] == "dcpdir"
    out = tmp_path / "restore"
    cairn.run("pull", f"s3://{ckpt_bucket}/run", out, "--step", "100")
    assert (out / "model_100.safetensors").read_bytes() == weights


def test_watch_keep_last_two(cairn, s3c, ckpt_bucket, tmp_path):
    train = tmp_path / "train"
    train.mkdir()
    log = tmp_path / "watch.log"
    cairn.spawn("watch", train, "--to", f"s3://{ckpt_bucket}/run", "--keep-last", "2", *FAST, log=log)
    wait_for(lambda: "watching" in watch_log(log), 30, what="watcher start")
    digests = {}
    for step in range(1, 6):
        files = hf_files(step, model_bytes=256 << 10)
        digests[step] = {k: sha256(v) for k, v in files.items()}
        write_checkpoint(train, f"checkpoint-{step}", files, chunk=64 << 10, delay=0.01)
        wait_for(lambda: f"checkpoint-{step}" in committed_names(s3c, ckpt_bucket), 60, what=f"commit {step}")
    wait_for(lambda: committed_names(s3c, ckpt_bucket) == {"checkpoint-4", "checkpoint-5"}, 30, what="retention")
    # Let several rescans pass: retired checkpoints still on disk must not come back.
    time.sleep(3)
    assert committed_names(s3c, ckpt_bucket) == {"checkpoint-4", "checkpoint-5"}
    data = {k.split("/")[1] for k in all_keys(s3c, ckpt_bucket, "run/") if not k.startswith("run/.cairn/")}
    assert data == {"checkpoint-4", "checkpoint-5"}
    for step in (4, 5):
        out = tmp_path / f"restore-{step}"
        cairn.run("pull", f"s3://{ckpt_bucket}/run", out, "--step", step)
        assert tree_digests(out) == digests[step]


def _state_parts(train: Path, rel: str) -> int:
    for p in glob.glob(str(train / ".cairn" / "watch-*.json")):
        try:
            st = json.loads(Path(p).read_text())
        except (OSError, ValueError):
            return 0
        for c in st.get("checkpoints", {}).values():
            mp = (c.get("files", {}).get(rel) or {}).get("multipart")
            if mp:
                return len(mp.get("parts", {}))
    return 0


def test_watch_kill9_mid_upload_resumes_and_commits_once(cairn, s3c, ckpt_bucket, tmp_path):
    train = tmp_path / "train"
    train.mkdir()
    files = hf_files(9, model_bytes=40 * MiB)
    expected = {k: sha256(v) for k, v in files.items()}
    write_checkpoint(train, "checkpoint-9", files)
    args = ["watch", train, "--to", f"s3://{ckpt_bucket}/run", *FAST, "--part-size", "5MiB",
            "--multipart-threshold", "5MiB", "--concurrency", "2"]
    log1 = tmp_path / "watch1.log"
    p = cairn.spawn(*args, "--bandwidth-limit", "6MiB", log=log1)
    wait_for(lambda: _state_parts(train, "model.safetensors") >= 2, 60, what="two parts uploaded")
    os.kill(p.pid, signal.SIGKILL)
    p.wait(10)
    assert "checkpoint-9" not in committed_names(s3c, ckpt_bucket)
    log2 = tmp_path / "watch2.log"
    p2 = cairn.spawn(*args, log=log2)
    wait_for(lambda: "checkpoint-9" in committed_names(s3c, ckpt_bucket), 60, what="commit after restart")
    assert "resuming upload of model.safetensors" in watch_log(log2)
    # Exactly one commit: one manifest, generation 1; the restored files are identical.
    keys = manifest_keys(s3c, ckpt_bucket)
    assert keys == ["run/.cairn/manifests/checkpoint-9/0000000001.json"]
    out = tmp_path / "restore"
    cairn.run("pull", f"s3://{ckpt_bucket}/run", out)
    assert tree_digests(out) == expected
    # Stopped (SIGTERM) and started once more, it has nothing to do: no new manifest, no upload.
    p2.terminate()
    assert p2.wait(15) == 0
    r = cairn.run(*args, "--once", timeout=60)
    assert manifest_keys(s3c, ckpt_bucket) == keys
    assert "committed" not in r.stderr


def test_watch_adopts_committed_checkpoints_when_its_state_is_lost(cairn, s3c, ckpt_bucket, tmp_path):
    train = tmp_path / "train"
    write_checkpoint(train, "checkpoint-1", hf_files(1))
    write_checkpoint(train, "checkpoint-2", hf_files(2))
    base = ["watch", train, "--to", f"s3://{ckpt_bucket}/run", *FAST, "--once"]
    cairn.run(*base)
    keys = manifest_keys(s3c, ckpt_bucket)
    assert len(keys) == 2
    for p in (train / ".cairn").glob("watch-*.json"):
        p.unlink()
    r = cairn.run(*base)
    assert r.stderr.count("already committed") == 2, r.stderr
    assert manifest_keys(s3c, ckpt_bucket) == keys


def test_watch_refuses_a_second_watcher_on_the_same_state(cairn, ckpt_bucket, tmp_path):
    train = tmp_path / "train"
    train.mkdir()
    log = tmp_path / "watch.log"
    cairn.spawn("watch", train, "--to", f"s3://{ckpt_bucket}/run", *FAST, log=log)
    wait_for(lambda: "watching" in watch_log(log), 30, what="watcher start")
    r = cairn.run("watch", train, "--to", f"s3://{ckpt_bucket}/run", *FAST, check=False, timeout=30)
    assert r.returncode != 0 and "another cairn watch" in r.stderr


def test_watch_stops_promptly_on_sigterm_mid_upload(cairn, s3c, ckpt_bucket, tmp_path):
    train = tmp_path / "train"
    write_checkpoint(train, "checkpoint-13", hf_files(13, model_bytes=30 * MiB))
    log = tmp_path / "watch.log"
    p = cairn.spawn("watch", train, "--to", f"s3://{ckpt_bucket}/run", *FAST, "--part-size", "5MiB",
                    "--multipart-threshold", "5MiB", "--concurrency", "1", "--bandwidth-limit", "2MiB", log=log)
    wait_for(lambda: _state_parts(train, "model.safetensors") >= 1, 60, what="first part uploaded")
    p.terminate()
    assert p.wait(5) == 0
    assert "checkpoint-13" not in committed_names(s3c, ckpt_bucket)


def test_watch_reuploads_a_file_changed_after_commit(cairn, s3c, ckpt_bucket, tmp_path):
    train = tmp_path / "train"
    files = hf_files(5)
    write_checkpoint(train, "checkpoint-5", files)
    base = ["watch", train, "--to", f"s3://{ckpt_bucket}/run", *FAST, "--once"]
    cairn.run(*base)
    assert manifest_keys(s3c, ckpt_bucket) == ["run/.cairn/manifests/checkpoint-5/0000000001.json"]
    new_state = json.dumps({"global_step": 5, "note": "rewritten"}).encode()
    time.sleep(0.05)
    write_slowly(train / "checkpoint-5" / "trainer_state.json", new_state)
    cairn.run(*base)
    assert manifest_keys(s3c, ckpt_bucket) == ["run/.cairn/manifests/checkpoint-5/0000000002.json"]
    m = read_manifest(s3c, ckpt_bucket, "checkpoint-5")
    assert m["generation"] == 2
    out = tmp_path / "restore"
    cairn.run("pull", f"s3://{ckpt_bucket}/run", out)
    assert (out / "trainer_state.json").read_bytes() == new_state
    assert tree_digests(out) == tree_digests(train / "checkpoint-5")
    # Old generation's replaced object is gone; unchanged files were not uploaded again.
    keys = set(all_keys(s3c, ckpt_bucket, "run/checkpoint-5/"))
    assert keys == {f["key"] for f in m["files"]}


def test_watch_survives_an_endpoint_outage(cairn, s3c, ckpt_bucket, tmp_path, s3_endpoint):
    """The endpoint disappears mid-upload (connections cut and refused) and comes back."""
    up_port = int(s3_endpoint.url.rsplit(":", 1)[1].rstrip("/"))
    proxy = TcpProxy("127.0.0.1", up_port, free_port()).start()
    try:
        train = tmp_path / "train"
        files = hf_files(11, model_bytes=30 * MiB)
        expected = {k: sha256(v) for k, v in files.items()}
        write_checkpoint(train, "checkpoint-11", files)
        log = tmp_path / "watch.log"
        env = dict(cairn.env, AWS_ENDPOINT_URL=proxy.url)
        cairn.spawn("watch", train, "--to", f"s3://{ckpt_bucket}/run", *FAST, "--part-size", "5MiB",
                    "--multipart-threshold", "5MiB", "--concurrency", "2", "--bandwidth-limit", "8MiB",
                    log=log, env=env)
        wait_for(lambda: _state_parts(train, "model.safetensors") >= 1, 60, what="first part uploaded")
        proxy.stop()
        wait_for(lambda: "retrying" in watch_log(log), 60, what="a logged retry")
        assert "checkpoint-11" not in committed_names(s3c, ckpt_bucket)
        proxy.start()
        wait_for(lambda: "checkpoint-11" in committed_names(s3c, ckpt_bucket), 90, what="commit after outage")
        out = tmp_path / "restore"
        cairn.run("pull", f"s3://{ckpt_bucket}/run", out)
        assert tree_digests(out) == expected
        assert len(manifest_keys(s3c, ckpt_bucket)) == 1
    finally:
        proxy.stop()


def test_watch_survives_a_gateway_restart(cairn, tmp_path, s3_endpoint, request):
    """Kill the Cairn gateway mid-upload and start it again: the watcher retries and finishes."""
    if s3_endpoint.kind != "cairn":
        pytest.skip(f"needs a Cairn gateway to kill and restart (endpoint is {s3_endpoint.kind})")
    cluster = request.getfixturevalue("fresh_cluster")
    from conftest import Cairn, S3Endpoint

    ep = S3Endpoint(cluster.endpoint, cluster.access_key, cluster.secret_key, cluster.region, "cairn", cluster)
    s3c = ep.client()
    s3c.create_bucket(Bucket="ckpts")
    c = Cairn(ep, tmp_path)
    try:
        train = tmp_path / "train"
        files = hf_files(12, model_bytes=30 * MiB)
        expected = {k: sha256(v) for k, v in files.items()}
        write_checkpoint(train, "checkpoint-12", files)
        log = tmp_path / "watch.log"
        c.spawn("watch", train, "--to", "s3://ckpts/run", *FAST, "--part-size", "5MiB", "--multipart-threshold",
                "5MiB", "--concurrency", "2", "--bandwidth-limit", "8MiB", log=log)
        wait_for(lambda: _state_parts(train, "model.safetensors") >= 1, 60, what="first part uploaded")
        cluster.gateway.kill()
        wait_for(lambda: "retrying" in watch_log(log), 60, what="a logged retry")
        cluster.gateway.start()
        wait_for(lambda: "checkpoint-12" in committed_names(s3c, "ckpts"), 120, what="commit after restart")
        out = tmp_path / "restore"
        c.run("pull", "s3://ckpts/run", out)
        assert tree_digests(out) == expected
    finally:
        c.close()
