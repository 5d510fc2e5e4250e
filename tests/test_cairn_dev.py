"""`cairn dev`: a whole local cluster in one command; Ctrl-C stops everything."""

import os
import re
import signal
import socket
import subprocess
import time

import pytest

from harness.net import free_port, free_port_block, wait_http_ok
from harness.procs import ManagedProcess, binary, cmdline, descendants, running, wait_gone
from harness.s3client import make_client

ACCESS, SECRET = "cairn-dev", "cairn-dev-secret"


def dev_help() -> str:
    r = subprocess.run([binary("cairn"), "dev", "--help"], capture_output=True, timeout=30)
    text = (r.stdout + r.stderr).decode(errors="replace")
    assert r.returncode == 0, f"`cairn dev --help` exited {r.returncode}:\n{text}"
    return text


@pytest.fixture(scope="module")
def help_text():
    return dev_help()


def start_dev(tmp_path, help_text, name, extra=()):
    # Free ports for the gateway and the nodes, so it never collides with another test
    # or a `cairn dev` the user runs on the defaults.
    for flag in ("--listen", "--node-port"):
        assert flag in help_text, f"`cairn dev --help` lists no {flag}:\n{help_text}"
    port = free_port()
    argv = [binary("cairn"), "dev", "--listen", f"127.0.0.1:{port}", "--node-port", str(free_port_block(4)), *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAIRN_", "AWS_"))}
    p = ManagedProcess(name, argv, env, tmp_path / f"{name}.log", cwd=tmp_path)
    p.spawn()
    try:
        wait_http_ok(p, f"127.0.0.1:{port}", "/_cairn/health", timeout=60)
    except Exception:
        kill_tree(p)
        raise
    return p, port


def kill_tree(p):
    if p.pid is None:
        return
    for pid in descendants(p.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    p.kill()


def wait_output(p, pattern, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        text = p.log_since_start()
        if re.search(pattern, text):
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"{pattern!r} not in cairn dev output:\n{text[-3000:]}")
        time.sleep(0.05)


def stop_and_check(p, port, sig_to_group: bool):
    kids = descendants(p.pid)
    assert len(kids) >= 4, f"expected >= 4 child processes (nodes), found {[cmdline(k) for k in kids]}"
    if sig_to_group:
        os.killpg(os.getpgid(p.pid), signal.SIGINT)  # what Ctrl-C in a terminal does
    else:
        p.popen.send_signal(signal.SIGINT)  # only the parent (e.g. `kill -INT`)
    try:
        rc = p.popen.wait(timeout=30)
    except subprocess.TimeoutExpired:
        kill_tree(p)
        raise AssertionError("cairn dev did not exit within 30 s of SIGINT")
    left = wait_gone(kids, timeout=15)
    if left:
        info = [cmdline(k) for k in left]
        for k in left:
            os.kill(k, signal.SIGKILL)
        raise AssertionError(f"child processes still running after cairn dev exited: {info}")
    assert rc in (0, 130), f"cairn dev exited with {rc} after SIGINT\n{p.tail()}"
    s = socket.socket()
    try:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "gateway port still open"
    finally:
        s.close()


def test_cairn_dev_starts_serves_and_stops_on_ctrl_c(tmp_path, help_text):
    p, port = start_dev(tmp_path, help_text, "dev1")
    try:
        endpoint = f"http://127.0.0.1:{port}"
        text = wait_output(p, re.escape(SECRET))
        assert endpoint in text or f"localhost:{port}" in text, text
        assert ACCESS in text and "us-east-1" in text, text
        assert "aws " in text, f"no aws-cli example in the banner:\n{text}"

        s3 = make_client(endpoint, ACCESS, SECRET)
        s3.create_bucket(Bucket="smoke")
        data = os.urandom(3 * 1024 * 1024 + 17)
        s3.put_object(Bucket="smoke", Key="ckpt.bin", Body=data)
        assert s3.get_object(Bucket="smoke", Key="ckpt.bin")["Body"].read() == data
        assert (tmp_path / "cairn-data").is_dir(), "data not under ./cairn-data"
        shards = [f for f in (tmp_path / "cairn-data").rglob("*") if f.is_file() and re.fullmatch(r"\d+\.\d+", f.name)]
        assert len(shards) >= 4, "expected shard files of the object under ./cairn-data"
    except BaseException:
        kill_tree(p)
        raise
    stop_and_check(p, port, sig_to_group=True)

    # a second start on the same data dir serves the same objects; SIGINT to the parent only
    p, port = start_dev(tmp_path, help_text, "dev2")
    try:
        s3 = make_client(f"http://127.0.0.1:{port}", ACCESS, SECRET)
        deadline = time.monotonic() + 20
        while True:
            try:
                got = s3.get_object(Bucket="smoke", Key="ckpt.bin")["Body"].read()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert got == data
    except BaseException:
        kill_tree(p)
        raise
    stop_and_check(p, port, sig_to_group=False)
    assert not running(p.pid)
