"""Reading the queries out of compose/: alert rules, Grafana dashboards, and the metric names
their PromQL uses.

    metric_names('sum by (node) (rate(cairn_x_total{a="b"}[5m])) / cairn_y')
        -> {"cairn_x_total", "cairn_y"}
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose"
PROMETHEUS_YML = COMPOSE / "prometheus" / "prometheus.yml"
ALERTS_YML = COMPOSE / "prometheus" / "alerts.yml"
DASHBOARD_DIR = COMPOSE / "grafana" / "dashboards"
DATASOURCES_YML = COMPOSE / "grafana" / "provisioning" / "datasources" / "cairn.yml"

_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"} | _GROUPING
_AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_GROUPING_AFTER = re.compile(r"\s*(by|without)\s*\(", re.I)


def _skip_string(s: str, i: int) -> int:
    q = s[i]
    i += 1
    while i < len(s):
        if s[i] == "\\" and q != "`":
            i += 2
            continue
        if s[i] == q:
            return i + 1
        i += 1
    raise ValueError(f"unterminated string in {s!r}")


def _skip_until(s: str, i: int, close: str) -> int:
    """Index just past the `close` that ends the group opened at s[i] (strings skipped)."""
    opener = s[i]
    depth = 0
    while i < len(s):
        c = s[i]
        if c in "\"'`":
            i = _skip_string(s, i)
            continue
        if c == opener:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError(f"unbalanced {opener!r} in {s!r}")


def metric_names(expr: str) -> set[str]:
    """Metric names selected by a PromQL expression (functions, keywords, label names,
    grouping labels, strings and durations are not names)."""
    names: set[str] = set()
    i, n = 0, len(expr)
    while i < n:
        c = expr[i]
        if c in "\"'`":
            i = _skip_string(expr, i)
        elif c == "{":
            i = _skip_until(expr, i, "}")
        elif c == "[":
            i = _skip_until(expr, i, "]")
        elif c.isdigit() or (c == "." and i + 1 < n and expr[i + 1].isdigit()):
            # numbers, durations (5m, 1h30m), scientific notation (1e12)
            m = re.compile(r"[0-9.]+(?:[eE][+-]?[0-9]+)?[a-zA-Z0-9]*").match(expr, i)
            i = m.end()
        elif c.isalpha() or c in "_:":
            m = _IDENT.match(expr, i)
            word = m.group(0)
            j = m.end()
            while j < n and expr[j].isspace():
                j += 1
            nxt = expr[j] if j < n else ""
            if word.lower() in _GROUPING and nxt == "(":
                i = _skip_until(expr, j, ")")  # label list, not names
            elif (
                nxt == "("
                or word.lower() in _KEYWORDS
                or (word.lower() in _AGGREGATIONS and _GROUPING_AFTER.match(expr, m.end()))
            ):
                i = m.end()  # a function or an operator keyword
            else:
                names.add(word)
                i = m.end()
        else:
            i += 1
    return names


def cairn_names(expr: str) -> set[str]:
    return {n for n in metric_names(expr) if n.startswith("cairn_")}


# ----------------------------------------------------------------------------- Grafana

_BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
    "__range_s": "3600",
    "__interval_ms": "15000",
}


def expand_grafana(expr: str) -> str:
    """A dashboard query as Prometheus would get it: built-ins filled in, every dashboard
    variable (used inside =~ matchers) replaced by `.*` (the "All" value)."""

    def sub(m):
        name = m.group(1) or m.group(2) or m.group(3)
        return _BUILTINS.get(name, ".*")

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]", sub, expr)


_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$", re.S)
_QUERY_RESULT = re.compile(r"^\s*query_result\((.*)\)\s*$", re.S)


def variable_expr(query: str) -> str | None:
    """The PromQL inside a Prometheus template-variable query, or None if it has none."""
    m = _LABEL_VALUES.match(query)
    if m:
        return m.group(1)
    m = _QUERY_RESULT.match(query)
    if m:
        return m.group(1)
    if re.match(r"^\s*(label_names|metrics)\(", query):
        return None
    return query


@dataclass(frozen=True)
class Query:
    where: str  # "dashboard cairn-node.json / panel 'Disk free' / A"
    expr: str  # as written (Grafana variables unexpanded)
    kind: str  # "prometheus" or "loki"

    @property
    def promql(self) -> str:
        return expand_grafana(self.expr)


def load_dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


def _panels(panels):
    for p in panels:
        yield p
        yield from _panels(p.get("panels", []))


def dashboard_queries(name: str, dash: dict) -> list[Query]:
    out = []
    for p in _panels(dash.get("panels", [])):
        panel_ds = (p.get("datasource") or {}).get("type", "prometheus")
        for t in p.get("targets", []):
            kind = (t.get("datasource") or {}).get("type", panel_ds)
            expr = t.get("expr")
            if expr:
                out.append(Query(f"{name} / panel {p.get('title')!r} / {t.get('refId')}", expr, kind))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        kind = (v.get("datasource") or {}).get("type", "prometheus")
        query = v.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        if kind == "prometheus":
            expr = variable_expr(query or "")
            if expr:
                out.append(Query(f"{name} / variable ${v.get('name')}", expr, kind))
        else:
            out.append(Query(f"{name} / variable ${v.get('name')}", query or "", kind))
    return out


def all_dashboard_queries() -> list[Query]:
    return [q for name, d in load_dashboards().items() for q in dashboard_queries(name, d)]


# ----------------------------------------------------------------------------- alert rules


def load_rules(path: Path = ALERTS_YML) -> list[dict]:
    doc = yaml.safe_load(path.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def rule_queries(path: Path = ALERTS_YML) -> list[Query]:
    return [
        Query(f"{path.name} / {r.get('alert') or r.get('record')}", r["expr"], "prometheus")
        for r in load_rules(path)
    ]


def referenced_cairn_metrics() -> dict[str, list[str]]:
    """{series name: [where it is used]} for every `cairn_*` series in dashboards and rules."""
    out: dict[str, list[str]] = {}
    for q in all_dashboard_queries() + rule_queries():
        if q.kind != "prometheus":
            continue
        for name in cairn_names(q.promql):
            out.setdefault(name, []).append(q.where)
    return out
