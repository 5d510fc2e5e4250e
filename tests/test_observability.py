"""The observability stack in compose/ (issue #6): Prometheus config and alert rules, Grafana
dashboards and provisioning, Loki and Alloy, the compose file, the Pi systemd unit; and, with
real processes, that Prometheus finds and scrapes every node and the gateway through the
gateway's service discovery, and that every metric a panel or an alert uses is exported.

Needs `promtool` and `prometheus` (Debian package `prometheus`); without them these tests are
skipped on a developer machine and fail in CI (CI=true).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness.cluster import Cluster
from harness.data import MiB
from harness.exposition import Exposition
from harness.net import free_port, http_get
from harness.procs import ManagedProcess
from observability import catalog, promql
from observability.prom import Prometheus, loopback_config, poll, tool

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "compose"
PROM_DIR = COMPOSE / "prometheus"
GRAFANA_DIR = COMPOSE / "grafana"
UNIT = REPO / "deploy" / "systemd" / "cairn-node.service"
HERE = Path(__file__).resolve().parent / "observability"

# The alert classes issue #6 asks for, by rule name.
REQUIRED_ALERTS = {
    "CairnNodeDown": "node down",
    "CairnNodeDiskNearlyFull": "disk nearly full",
    "CairnObjectsBelowFullRedundancy": "objects below full redundancy",
    "CairnChecksumFailures": "checksum failures seen",
    "CairnGateway5xxRate": "gateway 5xx rate",
}


def run(argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=60, **kw)


def _output(r: subprocess.CompletedProcess) -> str:
    return f"exit {r.returncode}\nstdout:\n{r.stdout[-4000:]}\nstderr:\n{r.stderr[-4000:]}"


# =============================================================================== Prometheus


def test_promtool_check_config(tmp_path):
    # promtool reads credentials files: the admin token's path is the container's, so check
    # a copy whose token file exists (and the rules beside it).
    text = (PROM_DIR / "prometheus.yml").read_text()
    assert "/prometheus/admin-token" in text
    (tmp_path / "admin-token").write_text("test-token")
    shutil.copy(PROM_DIR / "alerts.yml", tmp_path / "alerts.yml")
    shutil.copytree(PROM_DIR / "watchers", tmp_path / "watchers")
    (tmp_path / "prometheus.yml").write_text(text.replace("/prometheus/admin-token", str(tmp_path / "admin-token")))
    r = run([tool("promtool"), "check", "config", tmp_path / "prometheus.yml"])
    assert r.returncode == 0, _output(r)
    assert "WARNING" not in r.stdout + r.stderr, _output(r)


def test_promtool_check_rules():
    r = run([tool("promtool"), "check", "rules", PROM_DIR / "alerts.yml"])
    assert r.returncode == 0, _output(r)


def test_alert_rules_unit_tests(tmp_path):
    """compose's alerts fire when they should and stay quiet when they should
    (tests/observability/alerts_test.yml, `promtool test rules`)."""
    shutil.copy(PROM_DIR / "alerts.yml", tmp_path / "alerts.yml")
    shutil.copytree(PROM_DIR / "watchers", tmp_path / "watchers")
    shutil.copy(HERE / "alerts_test.yml", tmp_path / "alerts_test.yml")
    r = run([tool("promtool"), "test", "rules", "alerts_test.yml"], cwd=tmp_path)
    assert r.returncode == 0, _output(r)


def test_alert_rules_cover_the_issue_and_are_all_unit_tested():
    rules = promql.load_rules()
    names = [r["alert"] for r in rules if "alert" in r]
    assert len(names) == len(set(names)), f"duplicate alert names: {names}"
    missing = set(REQUIRED_ALERTS) - set(names)
    assert not missing, f"alerts asked for by issue #6 are missing: {sorted(missing)}"
    for r in rules:
        assert r.get("labels", {}).get("severity") in ("critical", "warning", "info"), r
        ann = r.get("annotations", {})
        assert ann.get("summary") and ann.get("description"), f"{r['alert']}: needs summary and description"
    tests = yaml.safe_load((HERE / "alerts_test.yml").read_text())
    tested = {t["alertname"] for case in tests["tests"] for t in case.get("alert_rule_test", [])
              if t.get("exp_alerts")}
    untested = set(names) - tested
    assert not untested, f"alerts never seen firing in alerts_test.yml: {sorted(untested)}"


def test_prometheus_finds_nodes_through_the_gateway_not_typed_addresses():
    text = (PROM_DIR / "prometheus.yml").read_text()
    cfg = yaml.safe_load(text)
    assert not re.search(r"\b\d{1,3}(\.\d{1,3}){3}\b", yaml.safe_dump(cfg)), "an IP address is typed in prometheus.yml"
    jobs = {sc["job_name"]: sc for sc in cfg["scrape_configs"]}
    sd = [
        c["url"]
        for sc in jobs.values()
        for c in sc.get("http_sd_configs", [])
    ]
    assert sd == ["http://gateway:9000/_cairn/sd/prometheus"], sd
    # The gateway's internal routes need its admin token: discovery and scrapes send it.
    cairn = jobs["cairn"]
    assert cairn.get("authorization", {}).get("credentials_file"), cairn
    assert cairn["http_sd_configs"][0].get("authorization", {}).get("credentials_file"), cairn
    for sc in jobs.values():
        for sc_static in sc.get("static_configs", []):
            for t in sc_static.get("targets", []):
                assert t.startswith("localhost:"), f"job {sc['job_name']}: static target {t}"
    assert "alerts.yml" in cfg.get("rule_files", []), cfg.get("rule_files")


# =============================================================================== Grafana


def test_dashboards_match_their_generator():
    r = run([sys.executable, GRAFANA_DIR / "dashboards.py", "--check"])
    assert r.returncode == 0, _output(r) + "\nrun: python3 compose/grafana/dashboards.py"


def _datasource_uids() -> dict[str, str]:
    doc = yaml.safe_load(promql.DATASOURCES_YML.read_text())
    return {d["uid"]: d["type"] for d in doc["datasources"]}


def test_dashboards_are_well_formed():
    uids = _datasource_uids()
    assert uids == {"prometheus": "prometheus", "loki": "loki"}, uids
    dashboards = promql.load_dashboards()
    assert set(dashboards) == {"cairn-overview.json", "cairn-node.json", "cairn-s3.json", "cairn-watch.json"}
    seen_uids = set()
    builtins = {"__rate_interval", "__interval", "__range", "__range_s", "__interval_ms"}
    for name, d in dashboards.items():
        assert d["uid"] not in seen_uids and len(d["uid"]) <= 40, name
        seen_uids.add(d["uid"])
        assert d["title"].startswith("Cairn / "), name
        variables = {v["name"] for v in d.get("templating", {}).get("list", [])}
        ids, cells = set(), {}
        for p in d["panels"]:
            assert p["id"] not in ids, f"{name}: duplicate panel id {p['id']}"
            ids.add(p["id"])
            g = p["gridPos"]
            assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, f"{name}/{p['title']}: {g}"
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, f"{name}: {p['title']!r} overlaps {cells[(x, y)]!r}"
                    cells[(x, y)] = p["title"]
            if p["type"] == "row":
                continue
            assert p.get("targets"), f"{name}/{p['title']}: no query"
            ds = p["datasource"]
            assert uids.get(ds["uid"]) == ds["type"], f"{name}/{p['title']}: unknown datasource {ds}"
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)), f"{name}/{p['title']}: duplicate refIds"
            for t in p["targets"]:
                tds = t.get("datasource", ds)
                assert uids.get(tds["uid"]) == tds["type"], f"{name}/{p['title']}: unknown datasource {tds}"
                assert t.get("expr"), f"{name}/{p['title']}/{t['refId']}: empty query"
                for var in re.findall(r"\$\{?(\w+)", t["expr"]):
                    assert var in variables | builtins, f"{name}/{p['title']}: ${var} is not a variable"
        for v in d.get("templating", {}).get("list", []):
            if v["type"] == "query":
                assert uids.get(v["datasource"]["uid"]) == v["datasource"]["type"], f"{name}: ${v['name']}"


def test_every_prometheus_query_parses(tmp_path):
    """Every dashboard query (variables filled in) and rule passes promtool's parser."""
    queries = [q for q in promql.all_dashboard_queries() if q.kind == "prometheus"]
    assert len(queries) > 40, len(queries)
    rules = [{"record": f"cairn:dashboard_query:{i}", "expr": q.promql} for i, q in enumerate(queries)]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    r = run([tool("promtool"), "check", "rules", path])
    if r.returncode != 0:
        where = {f"cairn:dashboard_query:{i}": q.where for i, q in enumerate(queries)}
        detail = re.sub(r"cairn:dashboard_query:\d+", lambda m: where.get(m.group(0), m.group(0)), _output(r))
        pytest.fail(f"dashboard queries that do not parse:\n{detail}")


def test_metric_name_extraction():
    """The parser the coverage test relies on finds names, and only names."""
    expr = (
        'histogram_quantile(0.99, sum by (le, node) (rate(cairn_a_seconds_bucket{node=~"cairn_not_me"}[5m])))'
        ' / on (job) group_left(node) cairn_b_total > 1e12 and absent(up{job="cairn-gateway"} == 1)'
        " or sum without (x) (cairn_c) offset 5m"
    )
    assert promql.metric_names(expr) == {"cairn_a_seconds_bucket", "cairn_b_total", "up", "cairn_c"}
    assert promql.variable_expr("label_values(cairn_d{x=\"y\"}, node)") == 'cairn_d{x="y"}'
    refs = promql.referenced_cairn_metrics()
    assert len(refs) > 30 and "cairn_s3_requests_total" in refs and "cairn_node_up" in refs, sorted(refs)


def test_every_referenced_metric_is_catalogued():
    """The coverage test knows, for every metric a panel or rule uses, who exports it and
    which event makes it appear (tests/observability/catalog.py)."""
    unknown = {s: w for s, w in promql.referenced_cairn_metrics().items() if catalog.base_name(s) is None}
    assert not unknown, (
        "metrics used by dashboards/alerts but missing from tests/observability/catalog.py "
        f"(say which process exports them and after which event): {json.dumps(unknown, indent=1)}"
    )


def test_grafana_provisioning_points_at_the_dashboards():
    compose = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    provider = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "cairn.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert f"./grafana/dashboards:{path}:ro" in mounts, (path, mounts)
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts, mounts
    home = compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{path}/cairn-overview.json", home
    ds = yaml.safe_load(promql.DATASOURCES_YML.read_text())["datasources"]
    urls = {d["type"]: d["url"] for d in ds}
    assert urls == {"prometheus": "http://prometheus:9090", "loki": "http://loki:3100"}, urls


# =============================================================================== compose, Loki, Alloy


def _env_example() -> dict[str, str]:
    env = {}
    for line in (COMPOSE / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            env[k] = v
    return env


def test_compose_file_is_consistent():
    text = (COMPOSE / "docker-compose.yml").read_text()
    doc = yaml.safe_load(text)
    assert "version" not in doc, "the top-level `version` is obsolete in the Compose spec"
    services = doc["services"]
    assert set(services) >= {"gateway", "prometheus", "grafana", "loki", "alloy"}, set(services)
    declared_volumes = set(doc.get("volumes") or {})
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        if "image" in svc and "build" not in svc:
            assert re.match(r"^[\w./-]+:[\w.-]+$", svc["image"]) and not svc["image"].endswith(":latest"), (
                f"{name}: pin the image version ({svc['image']})"
            )
        for dep in svc.get("depends_on", []):
            assert dep in services, f"{name} depends on unknown {dep}"
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith(("./", "../")):
                assert (COMPOSE / src).exists(), f"{name}: bind mount source {src} missing"
            elif src.startswith("/"):
                assert src == "/var/run/docker.sock", f"{name}: host path {src}"
            else:
                assert src in declared_volumes, f"{name}: volume {src} not declared"
        for p in svc.get("ports", []):
            assert re.match(r"^(\$\{\w+(:-[^}]*)?\}|[\d.]+:)?[\w${}:.-]*\d+$", str(p)), f"{name}: port {p}"
    build = services["gateway"]["build"]
    assert (COMPOSE / build["context"] / build["dockerfile"]).resolve() == (COMPOSE / "Dockerfile").resolve()
    assert (COMPOSE / "Dockerfile.dockerignore").exists()
    # every ${VAR} the file uses is documented in .env.example, or has a default
    env = _env_example()
    for var, op in re.findall(r"\$\{(\w+)(:[-?])?", text):
        assert var in env or op == ":-", f"${{{var}}} used in docker-compose.yml but not in .env.example"
    # Prometheus reads compose/prometheus/ (config, rules, watcher targets)
    assert "./prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    # the SD URL names the gateway service on the port it listens on
    assert any(c.startswith("--listen=0.0.0.0:9000") for c in services["gateway"]["command"])


def test_dockerfile_builds_the_gateway():
    text = (COMPOSE / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(froms) == 2 and all(":" in f for f in froms), froms
    assert "cargo build --release --locked -p cairn-gateway" in text
    assert re.search(r"^USER\s+\w+", text, re.M), "run as an unprivileged user"
    assert re.search(r'^ENTRYPOINT \["cairn-gateway"\]', text, re.M)
    ignore = (COMPOSE / "Dockerfile.dockerignore").read_text().split()
    assert "target/" in ignore and ".git/" in ignore


def test_loki_config():
    cfg = yaml.safe_load((COMPOSE / "loki" / "loki.yml").read_text())
    assert cfg["auth_enabled"] is False
    assert cfg["server"]["http_listen_port"] == 3100
    schema = cfg["schema_config"]["configs"][-1]
    assert schema["store"] == "tsdb" and schema["schema"] == "v13", schema
    assert cfg["limits_config"]["allow_structured_metadata"] is True
    if cfg.get("compactor", {}).get("retention_enabled"):
        assert cfg["compactor"].get("delete_request_store"), "retention needs delete_request_store"


_ALLOY_BLOCK = re.compile(r'^([a-z_]+(?:\.[a-z_]+)+)\s+"([A-Za-z0-9_]+)"\s*\{', re.M)
_ALLOY_REF = re.compile(r"\b((?:loki|discovery|prometheus)\.[a-z_.]+?)\.([A-Za-z0-9_]+)\.(receiver|targets|rules|output)\b")


def _strip_alloy_comments(text: str) -> str:
    """Alloy source without // and /* */ comments (strings kept as they are)."""
    out, i, n = [], 0, len(text)
    while i < n:
        if text[i] == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            i = text.find("\n", i) if "\n" in text[i:] else n
        elif text.startswith("/*", i):
            i = text.index("*/", i) + 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


@pytest.mark.parametrize("name", ["coordinator.alloy", "pi-node.alloy"])
def test_alloy_config(name):
    """Alloy can't run here; check what can be checked: balanced blocks, every component a
    reference points at exists, logs are parsed as JSON and end in Loki."""
    text = (COMPOSE / "alloy" / name).read_text()
    code = _strip_alloy_comments(text)
    depth = 0
    for ch in re.sub(r'"(?:[^"\\]|\\.)*"', '""', code):
        depth += ch == "{"
        depth -= ch == "}"
        assert depth >= 0, f"{name}: unbalanced braces"
    assert depth == 0, f"{name}: unbalanced braces"
    defined = set(_ALLOY_BLOCK.findall(code))
    refs = set(_ALLOY_REF.findall(code))
    for comp, label, _export in refs:
        assert (comp, label) in defined, f"{name}: {comp}.{label} is referenced but not defined ({sorted(defined)})"
    kinds = {c for c, _ in defined}
    assert {"loki.process", "loki.write"} <= kinds, kinds
    assert "stage.json" in code and "/loki/api/v1/push" in code
    assert re.search(r'\bjob\s*=\s*"cairn-(gateway|node)"', code), "logs need job=cairn-gateway|cairn-node"


def test_compose_log_labels_match_dashboards():
    """The Loki labels the dashboards filter on are the ones Alloy sets."""
    alloy = (COMPOSE / "alloy" / "coordinator.alloy").read_text() + (COMPOSE / "alloy" / "pi-node.alloy").read_text()
    for q in promql.all_dashboard_queries():
        if q.kind != "loki":
            continue
        for label in re.findall(r"(\w+)\s*=~?\s*\"", q.expr.split("}")[0]):
            assert re.search(rf"\b{label}\s*=", alloy), f"{q.where}: Loki label {label!r} is never set by Alloy"


# =============================================================================== systemd


def _unit() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    section = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        k, _, v = line.partition("=")
        out.setdefault(f"{section}.{k}", []).append(v)
    return out


def test_systemd_unit():
    u = _unit()
    assert u["Service.EnvironmentFile"] == ["/etc/cairn/cairn-node.env"]
    assert u["Service.ExecStart"][0].startswith("/usr/local/bin/cairn-node --listen ${CAIRN_LISTEN} --data ${CAIRN_DATA}")
    assert u["Service.User"] == ["cairn"]
    assert u["Install.WantedBy"] == ["multi-user.target"]
    for key, want in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "ReadWritePaths": "/srv/cairn",
        "RequiresMountsFor": "/srv/cairn",
    }.items():
        got = u.get(f"Service.{key}") or u.get(f"Unit.{key}")
        assert got == [want], f"{key}={got}"
    assert u["Service.CapabilityBoundingSet"] == [""], "no capabilities"
    example = (REPO / "deploy" / "systemd" / "cairn-node.env.example").read_text()
    for var in ("CAIRN_CLUSTER_SECRET", "CAIRN_LISTEN", "CAIRN_DATA", "CAIRN_NODE_ARGS"):
        assert re.search(rf"^{var}=", example, re.M), var
    data = re.search(r"^CAIRN_DATA=(\S+)", example, re.M).group(1)
    assert data.startswith("/srv/cairn/"), "CAIRN_DATA must be inside ReadWritePaths"
    if shutil.which("systemd-analyze"):
        r = run(["systemd-analyze", "verify", UNIT])
        problems = [
            line for line in (r.stdout + r.stderr).splitlines()
            if line.strip() and "is not executable" not in line and "No such file" not in line
            and "/etc/cairn/cairn-node.env" not in line
        ]
        assert not problems, "\n".join(problems)


# =============================================================================== live: Prometheus


def _sd_groups(gateway) -> list[dict]:
    try:
        status, body = gateway.admin_get("/_cairn/sd/prometheus")
    except OSError as e:
        pytest.fail(f"gateway /_cairn/sd/prometheus: {e!r}")
    if status != 200:
        pytest.fail(
            f"the gateway does not serve Prometheus HTTP service discovery: GET /_cairn/sd/prometheus "
            f"(admin token) answered {status} {body[:200]!r}. Expected "
            '[{"targets":["host:port"],"labels":{"job":"cairn-node","cairn_node_id":"<id>"}}, ..., '
            '{"targets":["<gateway host:port>"],"labels":{"job":"cairn-gateway","__metrics_path__":"/_cairn/metrics"}}].'
        )
    return json.loads(body)


def test_prometheus_scrapes_cluster_via_gateway_sd(cairn_cluster, tmp_path):
    tool("prometheus")
    c = cairn_cluster
    groups = _sd_groups(c.gateway)
    assert isinstance(groups, list), groups
    nodes = {}
    gateways = []
    for g in groups:
        assert set(g) >= {"targets", "labels"}, g
        job = g["labels"].get("job")
        if job == "cairn-node":
            assert g["labels"].get("cairn_node_id"), g
            for t in g["targets"]:
                nodes[t] = g["labels"]["cairn_node_id"]
        elif job == "cairn-gateway":
            gateways += g["targets"]
    assert set(nodes) == {n.addr for n in c.nodes}, f"SD nodes {sorted(nodes)} vs cluster {[n.addr for n in c.nodes]}"
    assert gateways == [c.gateway.addr], f"SD lists the gateway as {gateways}, expected {c.gateway.addr}"

    prom = Prometheus(tmp_path / "prometheus", {})
    token_file = tmp_path / "admin-token"
    token_file.write_text(c.admin_token)
    prom.start(lambda addr: loopback_config(c.gateway.addr, addr, tmp_path / "file_sd", credentials_file=token_file))
    try:
        _check_scrapes(c, prom, nodes)
    except BaseException:
        print(f"--- prometheus log ---\n{prom.tail()}")
        raise
    finally:
        prom.stop()


def _check_scrapes(c: Cluster, prom: Prometheus, sd_nodes: dict[str, str]):
    s3 = c.client()

    # 1. every node and the gateway discovered through the gateway, scraped, healthy
    def targets_up():
        ts = prom.active_targets()
        state = {(t["labels"].get("job"), t["labels"].get("instance")): t for t in ts}
        want = [("cairn-node", a) for a in sd_nodes] + [("cairn-gateway", c.gateway.addr)]
        missing = [w for w in want if w not in state or state[w]["health"] != "up"]
        detail = {f"{j} {i}": (state[(j, i)]["health"], state[(j, i)].get("lastError")) if (j, i) in state else "absent"
                  for j, i in want}
        return not missing, detail

    poll("every node and the gateway scraped `up` via /_cairn/sd/prometheus", targets_up, timeout=20)
    ts = prom.active_targets()
    for t in ts:
        if t["labels"].get("job") == "cairn-node":
            assert t["discoveredLabels"].get("job") == "cairn-node", t
            assert t["labels"].get("node") == sd_nodes[t["labels"]["instance"]], t["labels"]
            assert "cairn_node_id" not in t["labels"], t["labels"]
        assert t["scrapePool"] in ("cairn", "cairn-watch", "prometheus"), t["scrapePool"]
    up = prom.query('up{job=~"cairn-.*"} == 1')["data"]["result"]
    assert len(up) == len(c.nodes) + 1, up

    # the node label joins the gateway's view with the nodes' own series
    joined = prom.query("cairn_node_up * on (node) group_left() cairn_node_disk_free_bytes")
    assert joined["status"] == "success", joined

    def joined_nodes():
        r = prom.query("count(cairn_node_up * on (node) group_left() (cairn_node_disk_free_bytes > 0))")
        v = r["data"]["result"]
        return bool(v) and float(v[0]["value"][1]) == len(c.nodes), r["data"]["result"]

    poll("cairn_node_up{node} joining node series on `node`", joined_nodes, timeout=10)

    # 2. request and byte counters move, as Prometheus sees them
    bucket = f"obs-{os.getpid()}-{int(time.time())}"
    s3.create_bucket(Bucket=bucket)
    try:
        seen = {}
        for round_ in range(2):
            body = os.urandom(MiB + 7 * (round_ + 1))
            s3.put_object(Bucket=bucket, Key=f"k{round_}", Body=body)
            assert s3.get_object(Bucket=bucket, Key=f"k{round_}")["Body"].read() == body
            want = {
                'sum(cairn_s3_requests_total{job="cairn-gateway"})': 2,
                'sum(cairn_s3_requests_total{job="cairn-gateway", operation="PutObject", status="200"})': 1,
                'sum(cairn_s3_bytes_in_total{job="cairn-gateway"})': len(body),
                'sum(cairn_s3_bytes_out_total{job="cairn-gateway"})': len(body),
                'sum(cairn_node_bytes_written_total{job="cairn-node"})': len(body),
            }

            def moved():
                now = {e: prom.value(e) for e in want}
                ok = all(now[e] is not None and now[e] >= seen.get(e, 0) + d for e, d in want.items())
                return ok, {"before": dict(seen), "now": now, "must grow by": want}

            seen = poll(f"counters to move in Prometheus (round {round_ + 1})", moved, timeout=15)["now"]
    finally:
        for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=o["Key"])
        s3.delete_bucket(Bucket=bucket)

    # 3. compose's alert rules are loaded and evaluate without error
    rule_names = {r["alert"] for r in promql.load_rules()}

    def rules_ok():
        groups = prom.api("/api/v1/rules")["data"]["groups"]
        rules = {r["name"]: r for g in groups for r in g["rules"]}
        bad = {n: (r.get("health"), r.get("lastError")) for n, r in rules.items()
               if r.get("health") != "ok"}
        return set(rules) == rule_names and not bad, {"loaded": sorted(rules), "unhealthy": bad}

    poll("every alert rule loaded and evaluated healthy", rules_ok, timeout=10)
    firing = [a for a in prom.api("/api/v1/alerts")["data"]["alerts"]
              if a["labels"]["alertname"] in ("CairnGatewayDown", "CairnNodeDown", "CairnNodeScrapeFailing")]
    assert not firing, f"availability alerts active on a healthy cluster: {firing}"

    # 4. every dashboard query runs on real data without an evaluation error
    errors = []
    for q in promql.all_dashboard_queries():
        if q.kind == "prometheus":
            r = prom.query(q.promql)
            if r.get("status") != "success":
                errors.append(f"{q.where}: {r.get('error')}\n    {q.promql}")
    assert not errors, "dashboard queries failing on a live Prometheus:\n" + "\n".join(errors)


# =============================================================================== live: coverage


def _safetensors(n: int = 64) -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}).encode()
    return len(header).to_bytes(8, "little") + header + os.urandom(4 * n)


class Exported:
    """What each kind of process exported at one moment: {source: set of series names}."""

    def __init__(self):
        self.names: dict[str, set[str]] = {catalog.GATEWAY: set(), catalog.NODE: set(), catalog.WATCH: set()}

    def add(self, source: str, m: Exposition):
        self.names[source] |= m.names()

    def missing(self, wanted: dict[str, catalog.Metric]) -> dict[str, list[str]]:
        out = {}
        for name, m in wanted.items():
            absent = [s for s in m.series(name) if s not in self.names[m.source]]
            if absent:
                out[name] = absent
        return out


def _watch_metrics(addr: str) -> Exposition | None:
    """The watcher's metrics, None while it does not answer."""
    try:
        status, body = http_get(addr, "/metrics", timeout=2)
    except OSError:
        return None
    return Exposition.parse(body.decode()) if status == 200 else None


SCRUB_EVERY = 4


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Runs a cluster and a `cairn watch` through every event the catalog names, and records
    what the processes export at startup and at the end."""
    root = tmp_path_factory.mktemp("coverage")
    # The first scrub pass starts SCRUB_EVERY after startup: after the startup snapshot (so
    # scrub counters there must come from zero-registration), before the final one.
    c = Cluster(root / "cluster", node_args=["--scrub-every", f"{SCRUB_EVERY}s"])
    c.start()
    watcher = None
    referenced = {catalog.base_name(s) for s in promql.referenced_cairn_metrics()} - {None}
    wanted = {n: catalog.CATALOG[n] for n in referenced}
    at_start = {n: m for n, m in wanted.items() if m.needs is None}
    startup, final = Exported(), Exported()
    try:
        # --- startup, before any request (briefly polled: gauges may be set by a first tick)
        def idle():
            e = Exported()
            e.add(catalog.GATEWAY, c.gateway.metrics())
            for n in c.nodes:
                e.add(catalog.NODE, n.metrics())
            miss = {k: v for k, v in e.missing(at_start).items() if at_start[k].source != catalog.WATCH}
            return not miss, e

        deadline = time.monotonic() + 1
        while True:
            ok, e = idle()
            if ok or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        startup.names[catalog.GATEWAY] = e.names[catalog.GATEWAY]
        startup.names[catalog.NODE] = e.names[catalog.NODE]

        s3 = c.client()
        s3.create_bucket(Bucket="cov")

        # --- the watcher, with its metrics endpoint
        watch_dir = root / "train"
        watch_dir.mkdir()
        maddr = f"127.0.0.1:{free_port()}"
        cairn = REPO / "target" / "release" / "cairn"
        if os.environ.get("CAIRN_BIN_DIR"):
            cairn = Path(os.environ["CAIRN_BIN_DIR"]) / "cairn"
        watcher = ManagedProcess(
            "cairn-watch",
            [cairn, "watch", watch_dir, "--to", "s3://cov/run", "--endpoint-url", c.endpoint,
             "--metrics-listen", maddr, "--quiet-period", "1s", "--rescan-interval", "1s",
             "--max-backoff", "2s"],
            c.env(),
            root / "watch.log",
        )
        watcher.spawn()
        m = poll("cairn watch --metrics-listen to answer", lambda: (
            (w := _watch_metrics(maddr)) is not None and watcher.alive, w or watcher.tail(10)), timeout=15)
        startup.add(catalog.WATCH, m)

        # --- S3 traffic: PUTs, GETs, HEAD, LIST, a 404
        a = os.urandom(3 * MiB + 5)
        b = os.urandom(MiB)
        s3.put_object(Bucket="cov", Key="a", Body=a)
        s3.put_object(Bucket="cov", Key="b", Body=b)
        assert s3.get_object(Bucket="cov", Key="b")["Body"].read() == b
        s3.head_object(Bucket="cov", Key="a")
        s3.list_objects_v2(Bucket="cov")
        with pytest.raises(Exception):
            s3.get_object(Bucket="cov", Key="missing")

        # --- a degraded read: corrupt a data shard of `a`; the node refuses the block and
        # the gateway rebuilds it from parity
        data_shards = [sf for sf in c.shard_files(bucket="cov", key="a") if sf.is_data]
        assert data_shards, "no data shard of `a` found on disk"
        data_shards[0].flip_byte(0)
        assert s3.get_object(Bucket="cov", Key="a")["Body"].read() == a

        # --- a checkpoint committed by the watcher
        (watch_dir / "step-1.safetensors").write_bytes(_safetensors())

        def committed():
            m = _watch_metrics(maddr)
            ok = m is not None and m.value("cairn_watch_checkpoints_committed_total") >= 1
            return ok, m if ok else watcher.tail(10)

        final.add(catalog.WATCH, poll("cairn watch to commit a checkpoint", committed, timeout=20))

        # --- the gateway and nodes after traffic and a scrub pass: poll until every
        # expected series is there (some are published by periodic ticks), then record
        def after_events():
            e = Exported()
            e.add(catalog.GATEWAY, c.gateway.metrics())
            for n in c.nodes:
                e.add(catalog.NODE, n.metrics())
            e.names[catalog.WATCH] = final.names[catalog.WATCH]
            return not e.missing(wanted), e

        deadline = time.monotonic() + SCRUB_EVERY + 5
        while True:
            ok, e = after_events()
            if ok or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        final.names[catalog.GATEWAY] = e.names[catalog.GATEWAY]
        final.names[catalog.NODE] = e.names[catalog.NODE]

        # --- a degraded write: one node down, a PUT still succeeds
        c.nodes[-1].kill()
        c.wait_gateway_sees_nodes(len(c.nodes) - 1, timeout=15)
        s3.put_object(Bucket="cov", Key="c", Body=os.urandom(MiB))
        final.add(catalog.GATEWAY, c.gateway.metrics())

        yield {"wanted": wanted, "at_start": at_start, "startup": startup, "final": final}
    finally:
        if watcher is not None:
            watcher.stop(timeout=5)
        c.close()


def _describe(missing: dict[str, list[str]], wanted: dict[str, catalog.Metric]) -> str:
    used = promql.referenced_cairn_metrics()
    lines = []
    for name in sorted(missing, key=lambda n: (wanted[n].source, n)):
        m = wanted[name]
        where = sorted({w.split(" / ")[0] for s in m.series(name) for w in used.get(s, [])})
        needs = f"after {m.needs}" if m.needs else "from startup"
        lines.append(f"  {m.source:8} {name}  ({m.kind}, expected {needs}; used by {', '.join(where)})")
    return "\n".join(lines)


def test_every_dashboard_and_alert_metric_is_exported(exported):
    """No panel stays blank: after every event the catalog names has happened, each metric
    a dashboard or alert uses is in its process's /metrics."""
    missing = exported["final"].missing(exported["wanted"])
    assert not missing, (
        f"{len(missing)} metrics used by compose/'s dashboards or alerts are not exported:\n"
        + _describe(missing, exported["wanted"])
    )


def test_unlabelled_metrics_are_exported_from_startup(exported):
    """Counters and gauges without labels exist (at zero) before anything happened, so the
    first increase is visible to rate()/increase() and no panel starts blank."""
    missing = exported["startup"].missing(exported["at_start"])
    assert not missing, (
        f"{len(missing)} metrics are missing from a freshly started process's /metrics "
        "(register them at zero at startup; see tests/observability/catalog.py):\n"
        + _describe(missing, exported["at_start"])
    )
