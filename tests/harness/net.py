"""Loopback networking of the tests: free ports, and plain HTTP GETs to the processes."""

from __future__ import annotations

import http.client
import random
import socket
import threading
import time
from pathlib import Path

from .procs import START_TIMEOUT, ClusterError, ManagedProcess, ProcessDied

_USED_PORTS: set[int] = set()
_PORT_LOCK = threading.Lock()


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
