"""A real Prometheus on loopback, configured from compose/prometheus/prometheus.yml, and the
few HTTP API calls the tests need; the lookup of the Prometheus tools. (Prometheus text is
parsed by harness.exposition.)"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from harness.net import free_port, wait_http_ok
from harness.procs import ManagedProcess, ProcessDied

from .promql import ALERTS_YML, PROMETHEUS_YML

COMPOSE_GATEWAY = "gateway:9000"  # the gateway's address as compose's prometheus.yml writes it
COMPOSE_PROMETHEUS = "localhost:9090"


def tool(name: str) -> str:
    """Path of `name` (promtool, prometheus). Missing: a failure in CI, a skip elsewhere."""
    exe = shutil.which(name)
    if exe:
        return exe
    msg = f"`{name}` not found: install Debian's `prometheus` package (apt-get install prometheus)"
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(msg + "; CI must have it (tests/run.sh installs it)")
    pytest.skip(msg)


# ----------------------------------------------------------------------------- config


def _replace_strings(obj, old: str, new: str):
    if isinstance(obj, dict):
        return {k: _replace_strings(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_replace_strings(v, old, new) for v in obj]
    if isinstance(obj, str):
        return obj.replace(old, new)
    return obj


def loopback_config(gateway_addr: str, prometheus_addr: str, file_sd_dir: Path, interval: str = "1s",
                    credentials_file: Path | None = None) -> dict:
    """compose's prometheus.yml for a test cluster: the gateway's address rewritten, short
    intervals, rule paths made absolute, file-SD target lists read from `file_sd_dir` (so
    a watcher listed in compose/ is never contacted), and every `credentials_file` (the
    gateway's admin token) pointed at `credentials_file`. Nothing else changes."""
    cfg = yaml.safe_load(PROMETHEUS_YML.read_text())
    assert COMPOSE_GATEWAY in PROMETHEUS_YML.read_text(), f"{PROMETHEUS_YML} no longer names {COMPOSE_GATEWAY}"
    cfg = _replace_strings(cfg, COMPOSE_GATEWAY, gateway_addr)
    cfg = _replace_strings(cfg, COMPOSE_PROMETHEUS, prometheus_addr)
    cfg = copy.deepcopy(cfg)
    cfg.setdefault("global", {}).update(
        scrape_interval=interval, scrape_timeout=interval, evaluation_interval=interval
    )
    base = PROMETHEUS_YML.parent
    cfg["rule_files"] = [str((base / f).resolve()) for f in cfg.get("rule_files", [])]
    for sc in cfg.get("scrape_configs", []):
        for auth in [sc.get("authorization")] + [sd.get("authorization") for sd in sc.get("http_sd_configs", [])]:
            if auth and "credentials_file" in auth and credentials_file is not None:
                auth["credentials_file"] = str(credentials_file)
        sc.pop("scrape_interval", None)
        sc.pop("scrape_timeout", None)
        for sd in sc.get("http_sd_configs", []):
            sd["refresh_interval"] = interval
        for sd in sc.get("file_sd_configs", []):
            sd["files"] = [str(Path(file_sd_dir) / f) for f in sd.get("files", [])]
            sd["refresh_interval"] = interval
    return cfg


# ----------------------------------------------------------------------------- server


class Prometheus:
    def __init__(self, root: Path, config: dict):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.port = None
        self.proc: ManagedProcess | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, config_for_port, timeout: float = 30) -> "Prometheus":
        """config_for_port(addr) -> config dict; retried on another port if the one picked
        was taken in between."""
        exe = tool("prometheus")
        for attempt in range(5):
            self.port = free_port()
            cfg_path = self.root / "prometheus.yml"
            cfg_path.write_text(yaml.safe_dump(config_for_port(self.addr), sort_keys=False))
            self.proc = ManagedProcess(
                "prometheus",
                [
                    exe,
                    f"--config.file={cfg_path}",
                    f"--storage.tsdb.path={self.root / 'data'}",
                    f"--web.listen-address={self.addr}",
                    "--log.level=warn",
                ],
                {k: v for k, v in os.environ.items()},
                self.root / "prometheus.log",
            )
            self.proc.spawn()
            try:
                wait_http_ok(self.proc, self.addr, "/-/ready", timeout)
                return self
            except ProcessDied as e:
                if attempt < 4 and re.search(r"address already in use", e.output, re.I):
                    continue
                raise
        raise AssertionError("prometheus did not start")

    def stop(self):
        if self.proc:
            self.proc.stop(timeout=10)

    def tail(self, lines: int = 40) -> str:
        return self.proc.tail(lines) if self.proc else ""

    # -- HTTP API ----------------------------------------------------------------------
    def api(self, path: str, **params) -> dict:
        url = f"http://{self.addr}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            body = json.loads(e.read() or b"{}") or {"status": "error", "error": f"HTTP {e.code}"}
        return body

    def query(self, expr: str) -> dict:
        return self.api("/api/v1/query", query=expr)

    def value(self, expr: str) -> float | None:
        """The single value of a scalar-like query, or None when it has no result."""
        r = self.query(expr)
        assert r.get("status") == "success", f"query {expr!r} failed: {r}"
        res = r["data"]["result"]
        if not res:
            return None
        assert len(res) == 1, f"query {expr!r} returned {len(res)} series: {res}"
        return float(res[0]["value"][1])

    def active_targets(self) -> list[dict]:
        r = self.api("/api/v1/targets", state="active")
        assert r.get("status") == "success", r
        return r["data"]["activeTargets"]


def poll(what: str, check, timeout: float = 20, interval: float = 0.25):
    """Calls `check()` until it returns a truthy value; fails with its last answer after
    `timeout` seconds. `check` may return (ok, detail)."""
    deadline = time.monotonic() + timeout
    detail = None
    while True:
        got = check()
        ok, detail = got if isinstance(got, tuple) else (got, got)
        if ok:
            return detail
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {detail}")
        time.sleep(interval)


__all__ = [
    "ALERTS_YML",
    "Prometheus",
    "loopback_config",
    "poll",
    "tool",
]
