#!/usr/bin/env python3
"""Generates the Grafana dashboards in compose/grafana/dashboards/ (run it after editing).

    python3 compose/grafana/dashboards.py          # rewrite the JSON files
    python3 compose/grafana/dashboards.py --check  # exit 1 if a file is out of date

The JSON is what Grafana provisions; this script is its source, so panels stay uniform and
the queries are easy to review. tests/test_observability.py checks that the files match this
script, that every query parses, and that every `cairn_*` metric a query uses is exported.

Label conventions (see compose/prometheus/prometheus.yml): storage-node series carry
`node` (the node's persistent id), gateway series job="cairn-gateway", watcher series
job="cairn-watch". Logs in Loki carry `job`, `host` and `level`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"

PROM = {"type": "prometheus", "uid": "prometheus"}
LOKI = {"type": "loki", "uid": "loki"}
RATE = "$__rate_interval"


# ----------------------------------------------------------------------------- panels


def q(expr: str, legend: str = "", **extra) -> dict:
    """A Prometheus query target."""
    t = {"datasource": PROM, "expr": expr, "legendFormat": legend or "__auto", "range": True}
    t.update(extra)
    return t


def _base(kind: str, title: str, targets: list[dict], w: int, h: int, description: str, ds=PROM) -> dict:
    for i, t in enumerate(targets):
        t["refId"] = chr(ord("A") + i)
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": ds,
        "targets": targets,
        "gridPos": {"w": w, "h": h},
    }


def _thresholds(*steps) -> dict:
    """steps: (value, color) pairs after the base green."""
    out = [{"color": "green", "value": None}]
    out += [{"color": c, "value": v} for v, c in steps]
    return {"mode": "absolute", "steps": out}


def timeseries(title, targets, unit="short", w=12, h=8, description="", stack=False, min0=True,
               overrides=None) -> dict:
    p = _base("timeseries", title, targets, w, h, description)
    defaults = {
        "unit": unit,
        "color": {"mode": "palette-classic"},
        "custom": {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        },
        "thresholds": _thresholds(),
    }
    if min0:
        defaults["min"] = 0
    p["fieldConfig"] = {"defaults": defaults, "overrides": overrides or []}
    p["options"] = {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return p


def stat(title, targets, unit="short", w=4, h=4, description="", thresholds=None, mappings=None,
         graph=True, color_mode="value") -> dict:
    p = _base("stat", title, targets, w, h, description)
    p["fieldConfig"] = {
        "defaults": {
            "unit": unit,
            "color": {"mode": "thresholds"},
            "thresholds": thresholds or _thresholds(),
            "mappings": mappings or [],
        },
        "overrides": [],
    }
    p["options"] = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": color_mode,
        "graphMode": "area" if graph else "none",
        "textMode": "auto",
        "orientation": "auto",
        "justifyMode": "auto",
    }
    return p


UP_DOWN = [
    {
        "type": "value",
        "options": {
            "0": {"text": "DOWN", "color": "red", "index": 0},
            "1": {"text": "UP", "color": "green", "index": 1},
        },
    }
]


def bargauge(title, targets, unit="percentunit", w=12, h=8, description="", thresholds=None,
             max_=1) -> dict:
    p = _base("bargauge", title, targets, w, h, description)
    p["fieldConfig"] = {
        "defaults": {
            "unit": unit,
            "min": 0,
            "max": max_,
            "color": {"mode": "thresholds"},
            "thresholds": thresholds or _thresholds((0.8, "yellow"), (0.9, "red")),
        },
        "overrides": [],
    }
    p["options"] = {
        "displayMode": "gradient",
        "orientation": "horizontal",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "showUnfilled": True,
        "valueMode": "color",
    }
    return p


def state_timeline(title, targets, w=12, h=8, description="") -> dict:
    p = _base("state-timeline", title, targets, w, h, description)
    p["fieldConfig"] = {
        "defaults": {
            "color": {"mode": "thresholds"},
            "thresholds": _thresholds(),
            "mappings": UP_DOWN,
            "custom": {"fillOpacity": 80, "lineWidth": 0},
        },
        "overrides": [],
    }
    p["options"] = {
        "showValue": "never",
        "mergeValues": True,
        "alignValue": "left",
        "rowHeight": 0.9,
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False},
        "tooltip": {"mode": "single", "sort": "none"},
    }
    return p


def table(title, targets, columns: dict[str, tuple[str, str]], w=24, h=8, description="") -> dict:
    """Instant queries merged into one row per series; columns: refId -> (header, unit)."""
    for t in targets:
        t.update(format="table", instant=True, range=False)
    p = _base("table", title, targets, w, h, description)
    exclude = {k: True for k in ("Time", "job", "instance", "__name__")}
    rename = {f"Value #{ref}": header for ref, (header, _unit) in columns.items()}
    p["transformations"] = [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {"excludeByName": exclude, "renameByName": rename}},
    ]
    p["fieldConfig"] = {
        "defaults": {"custom": {"align": "auto"}, "thresholds": _thresholds()},
        "overrides": [
            {"matcher": {"id": "byName", "options": header}, "properties": [{"id": "unit", "value": unit}]}
            for header, unit in columns.values()
        ],
    }
    p["options"] = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    return p


def heatmap(title, expr, w=12, h=8, description="") -> dict:
    p = _base("heatmap", title, [q(expr, "{{le}}", format="heatmap")], w, h, description)
    p["fieldConfig"] = {"defaults": {}, "overrides": []}
    p["options"] = {
        "calculate": False,
        "yAxis": {"unit": "s", "axisPlacement": "left"},
        "color": {"mode": "scheme", "scheme": "Oranges", "fill": "dark-orange", "steps": 64},
        "cellGap": 1,
        "tooltip": {"mode": "single", "yHistogram": False},
        "legend": {"show": True},
        "rowsFrame": {"layout": "auto"},
    }
    return p


def logs(title, expr, w=24, h=10, description="") -> dict:
    p = _base("logs", title, [{"datasource": LOKI, "expr": expr, "queryType": "range"}], w, h,
              description, ds=LOKI)
    p["options"] = {
        "showTime": True,
        "showLabels": False,
        "showCommonLabels": False,
        "wrapLogMessage": True,
        "prettifyLogMessage": False,
        "enableLogDetails": True,
        "dedupStrategy": "none",
        "sortOrder": "Descending",
    }
    return p


def row(title: str) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "gridPos": {"w": 24, "h": 1}}


# ----------------------------------------------------------------------------- layout


def layout(panels: list[dict]) -> list[dict]:
    """Assigns ids and x/y: panels flow left to right and wrap at 24 columns."""
    x = y = 0
    line_h = 0
    out = []
    for i, p in enumerate(panels, start=1):
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if p["type"] == "row" or x + w > 24:
            y += line_h
            x, line_h = 0, 0
        p["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
        p["id"] = i
        x += w
        line_h = max(line_h, h)
        if p["type"] == "row":
            y += h
            x, line_h = 0, 0
        out.append(p)
    return out


def prom_var(name, label, query, multi=True, all_=True) -> dict:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": PROM,
        "query": query,
        "definition": query,
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": all_,
        "allValue": ".*",
        "current": {},
        "options": [],
        "hide": 0,
    }


def loki_var(name, label, query) -> dict:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": LOKI,
        "query": query,
        "definition": query,
        "refresh": 2,
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {},
        "options": [],
        "hide": 0,
    }


def text_var(name, label) -> dict:
    return {"name": name, "label": label, "type": "textbox", "query": "", "current": {"value": ""}, "hide": 0}


def dashboard(uid, title, description, panels, variables=(), refresh="30s", time_from="now-6h") -> dict:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["cairn"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": refresh,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [
            {
                "type": "dashboards",
                "title": "Cairn",
                "tags": ["cairn"],
                "asDropdown": True,
                "includeVars": False,
                "keepTime": True,
                "targetBlank": False,
                "icon": "external link",
                "tooltip": "",
                "url": "",
            }
        ],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {"list": list(variables)},
        "panels": layout(panels),
    }


def hq(quantile: float, metric: str, by: str, selector: str = "", window: str = RATE) -> str:
    """histogram_quantile over a `_bucket` series."""
    by = ", ".join(["le"] + [b for b in by.split(",") if b.strip()]) if by else "le"
    return f"histogram_quantile({quantile}, sum by ({by}) (rate({metric}_bucket{selector}[{window}])))"


# ----------------------------------------------------------------------------- dashboards


def overview() -> dict:
    free_ratio = "cairn_node_disk_free_bytes / cairn_node_disk_capacity_bytes"
    panels = [
        row("Cluster"),
        stat("Nodes up", [q("cairn_nodes_up", "up"), q("cairn_nodes_known", "known")], w=4,
             description="Storage nodes the gateway can reach, out of all it knows."),
        stat("Gateway", [q('up{job="cairn-gateway"}', "gateway")], w=3, mappings=UP_DOWN, graph=False,
             thresholds={"mode": "absolute", "steps": [{"color": "red", "value": None}, {"color": "green", "value": 1}]},
             description="Whether Prometheus scrapes the gateway."),
        stat("Objects below full redundancy", [q("cairn_objects_degraded", "objects")], w=7,
             thresholds=_thresholds((1, "red")),
             description="Objects with fewer healthy shards than their geometry: one more node loss may make them unreadable."),
        stat("Open multipart uploads", [q("cairn_multipart_uploads_open", "open")], w=3,
             description="Multipart uploads started and neither completed nor aborted."),
        stat("Raw space free", [q("sum(cairn_node_disk_free_bytes)", "free"),
                                q("sum(cairn_node_disk_capacity_bytes)", "capacity")], unit="bytes", w=7,
             graph=False, description="Free and total bytes of the nodes' data filesystems (before erasure overhead)."),
        row("Nodes"),
        state_timeline("Node state (gateway's view)", [q("cairn_node_up", "{{node}}")], w=12,
                       description="The gateway's health probes: UP or DOWN per node id."),
        bargauge("Disk used per node", [q(f"1 - {free_ratio}", "{{node}} ({{instance}})")], w=12,
                 description="Used share of each node's data filesystem. Alert at 90%."),
        timeseries("Shards stored per node", [q("cairn_node_shards_stored", "{{node}}")], w=12,
                   description="Shard files held by each node."),
        timeseries("Node disk I/O", [
            q(f"sum(rate(cairn_node_bytes_written_total[{RATE}]))", "written"),
            q(f"sum(rate(cairn_node_bytes_read_total[{RATE}]))", "read"),
            q(f"sum(rate(cairn_node_scrub_bytes_total[{RATE}]))", "scrub read"),
        ], unit="Bps", w=12, description="Shard bytes written and read by all nodes, and bytes re-read by scrub."),
        row("Throughput"),
        timeseries("S3 throughput", [
            q(f"sum(rate(cairn_s3_bytes_in_total[{RATE}]))", "in (uploads)"),
            q(f"sum(rate(cairn_s3_bytes_out_total[{RATE}]))", "out (downloads)"),
        ], unit="Bps", description="Object bytes received from and sent to S3 clients."),
        timeseries("S3 requests by status", [
            q(f"sum by (status) (rate(cairn_s3_requests_total[{RATE}]))", "{{status}}"),
        ], unit="reqps", stack=True, description="Requests per second by HTTP status."),
        row("Durability"),
        timeseries("Degraded I/O and corruption", [
            q(f"sum(rate(cairn_degraded_reads_total[{RATE}]))", "degraded reads"),
            q(f"sum(rate(cairn_degraded_writes_total[{RATE}]))", "degraded writes"),
            q(f"sum(rate(cairn_checksum_failures_total[{RATE}]))", "checksum failures (gateway)"),
            q(f"sum(rate(cairn_node_checksum_failures_total[{RATE}]))", "checksum failures (nodes)"),
        ], unit="ops", description="Reads rebuilt from parity, writes with a narrower geometry, and blocks that failed their crc32c."),
        timeseries("Redundancy and repair", [
            q("cairn_objects_degraded", "objects below full redundancy"),
            q("cairn_repair_queue_segments", "segments waiting for repair"),
            q(f"sum by (result) (increase(cairn_repair_segments_total[{RATE}]))", "segments repaired ({{result}})"),
        ], description="Objects with a shard on an unreachable node, the repair queue, and segments re-striped by repair."),
        timeseries("Repair and garbage collection traffic", [
            q(f"rate(cairn_repair_bytes_total[{RATE}])", "repaired bytes/s"),
        ], unit="Bps", w=8, description="Bytes re-striped by repair onto healthy nodes."),
        timeseries("Orphans collected", [
            q(f"increase(cairn_gc_shards_deleted_total[{RATE}])", "stale shards"),
            q(f"increase(cairn_gc_objects_deleted_total[{RATE}])", "orphan object versions"),
        ], w=4, description="Shards no object refers to (crashed uploads, deletes a node missed, stale copies), deleted after the grace period."),
        row("Buckets"),
        table("Buckets", [
            q("cairn_bucket_objects", "objects"),
            q("cairn_bucket_logical_bytes", "logical"),
            q("cairn_bucket_stored_bytes", "stored"),
            q("cairn_bucket_stored_bytes / cairn_bucket_logical_bytes", "overhead"),
        ], {"A": ("Objects", "short"), "B": ("Logical bytes", "bytes"), "C": ("Stored bytes", "bytes"),
            "D": ("Stored / logical", "percentunit")}, w=14,
            description="Per bucket: objects, the bytes clients wrote, and the bytes stored with parity."),
        timeseries("Logical vs stored bytes", [
            q("sum(cairn_bucket_logical_bytes)", "logical"),
            q("sum(cairn_bucket_stored_bytes)", "stored"),
        ], unit="bytes", w=10, description="All buckets: bytes written by clients and bytes stored on the nodes."),
        row("Logs"),
        logs("Warnings and errors",
             '{job=~"cairn-.*", level=~"WARN|ERROR"} |= "$search"',
             description="Warnings and errors of the gateway and every node. Filter with the search box "
                         "(a request id from an S3 error ties a gateway request to the node operations it caused)."),
    ]
    return dashboard("cairn-overview", "Cairn / Cluster overview",
                     "Nodes, capacity, redundancy and throughput of a Cairn cluster.", panels,
                     [text_var("search", "Search logs")])


def node() -> dict:
    sel = '{node=~"$node"}'
    panels = [
        row("State"),
        stat("Scraped by Prometheus", [q(f'up{{job="cairn-node", node=~"$node"}}', "{{node}}")], w=6,
             mappings=UP_DOWN, graph=False,
             thresholds={"mode": "absolute", "steps": [{"color": "red", "value": None}, {"color": "green", "value": 1}]}),
        stat("Gateway's view", [q(f"cairn_node_up{sel}", "{{node}}")], w=6, mappings=UP_DOWN, graph=False,
             thresholds={"mode": "absolute", "steps": [{"color": "red", "value": None}, {"color": "green", "value": 1}]}),
        stat("Disk free", [q(f"cairn_node_disk_free_bytes{sel}", "{{node}}")], unit="bytes", w=4),
        stat("Disk capacity", [q(f"cairn_node_disk_capacity_bytes{sel}", "{{node}}")], unit="bytes", w=4, graph=False),
        stat("Shards stored", [q(f"cairn_node_shards_stored{sel}", "{{node}}")], w=4),
        timeseries("Disk free", [q(f"cairn_node_disk_free_bytes{sel}", "{{node}}")], unit="bytes",
                   description="Free bytes of the data filesystem."),
        timeseries("Disk used", [q(f"1 - cairn_node_disk_free_bytes{sel} / cairn_node_disk_capacity_bytes{sel}",
                                   "{{node}}")], unit="percentunit"),
        row("Shard I/O"),
        timeseries("Shard writes by result", [
            q(f"sum by (node, result) (rate(cairn_node_shard_writes_total{sel}[{RATE}]))", "{{node}} {{result}}"),
        ], unit="ops", description="Shard PUTs per second; any result but `ok` is an error."),
        timeseries("Shard reads by result", [
            q(f"sum by (node, result) (rate(cairn_node_shard_reads_total{sel}[{RATE}]))", "{{node}} {{result}}"),
        ], unit="ops", description="Shard range reads per second; any result but `ok` is an error."),
        timeseries("Bytes written and read", [
            q(f"rate(cairn_node_bytes_written_total{sel}[{RATE}])", "{{node}} written"),
            q(f"rate(cairn_node_bytes_read_total{sel}[{RATE}])", "{{node}} read"),
        ], unit="Bps"),
        timeseries("Shard write latency", [
            q(hq(0.5, "cairn_node_write_seconds", "node", sel), "{{node}} p50"),
            q(hq(0.99, "cairn_node_write_seconds", "node", sel), "{{node}} p99"),
        ], unit="s", description="First body byte to durable rename (fsync included)."),
        timeseries("Shard read latency (to first verified block)", [
            q(hq(0.5, "cairn_node_read_seconds", "node", sel), "{{node}} p50"),
            q(hq(0.99, "cairn_node_read_seconds", "node", sel), "{{node}} p99"),
        ], unit="s"),
        timeseries("Checksum failures", [
            q(f"increase(cairn_node_checksum_failures_total{sel}[{RATE}])", "{{node}}"),
        ], description="Stored blocks or headers that failed their crc32c when read or scrubbed."),
        row("Scrub"),
        timeseries("Scrub read rate", [q(f"rate(cairn_node_scrub_bytes_total{sel}[{RATE}])", "{{node}}")],
                   unit="Bps", w=8, description="Bytes re-read by the background scrub (rate-limited by --scrub-rate)."),
        stat("Scrub passes", [q(f"cairn_node_scrub_passes_total{sel}", "{{node}}")], w=4, h=8, graph=False,
             description="Completed scrub passes since the node started."),
        stat("Shards checked by last pass", [q(f"cairn_node_scrub_last_pass_shards{sel}", "{{node}}")], w=4, h=8,
             graph=False),
        stat("Bad shards", [q(f"cairn_node_scrub_bad_shards{sel}", "{{node}}")], w=4, h=8, graph=False,
             thresholds=_thresholds((1, "red")), description="Shards currently known to fail their checksum."),
        stat("Corrupt shards found", [q(f"cairn_node_scrub_corrupt_total{sel}", "{{node}}")], w=4, h=8,
             graph=False, thresholds=_thresholds((1, "red"))),
        row("Logs"),
        logs("Node logs", '{job="cairn-node", host=~"$host"} |= "$search"',
             description="Logs of the storage nodes (shipped by Alloy on each Pi, see docs/observability.md)."),
    ]
    return dashboard("cairn-node", "Cairn / Node", "One or more storage nodes in detail.", panels, [
        prom_var("node", "Node", "label_values(cairn_node_disk_free_bytes, node)"),
        loki_var("host", "Host (logs)", 'label_values({job="cairn-node"}, host)'),
        text_var("search", "Search logs"),
    ])


def s3() -> dict:
    op = '{operation=~"$operation"}'
    panels = [
        row("Requests"),
        timeseries("Requests by operation", [
            q(f"sum by (operation) (rate(cairn_s3_requests_total{op}[{RATE}]))", "{{operation}}"),
        ], unit="reqps", stack=True),
        timeseries("Requests by status", [
            q(f"sum by (status) (rate(cairn_s3_requests_total{op}[{RATE}]))", "{{status}}"),
        ], unit="reqps", stack=True),
        timeseries("Error ratio", [
            q(f'sum(rate(cairn_s3_requests_total{{operation=~"$operation", status=~"5.."}}[{RATE}])) '
              f"/ sum(rate(cairn_s3_requests_total{op}[{RATE}]))", "5xx"),
            q(f'sum(rate(cairn_s3_requests_total{{operation=~"$operation", status=~"4.."}}[{RATE}])) '
              f"/ sum(rate(cairn_s3_requests_total{op}[{RATE}]))", "4xx"),
        ], unit="percentunit", description="Share of requests answered 5xx (server) and 4xx (client errors, e.g. 404)."),
        timeseries("Throughput", [
            q(f"sum(rate(cairn_s3_bytes_in_total[{RATE}]))", "in"),
            q(f"sum(rate(cairn_s3_bytes_out_total[{RATE}]))", "out"),
        ], unit="Bps"),
        row("Latency"),
        timeseries("p99 latency by operation", [
            q(hq(0.99, "cairn_s3_request_duration_seconds", "operation", op), "{{operation}}"),
        ], unit="s", description="Whole request, first byte in to last byte out."),
        timeseries("p50 latency by operation", [
            q(hq(0.5, "cairn_s3_request_duration_seconds", "operation", op), "{{operation}}"),
        ], unit="s"),
        timeseries("Mean latency by operation", [
            q(f"sum by (operation) (rate(cairn_s3_request_duration_seconds_sum{op}[{RATE}])) "
              f"/ sum by (operation) (rate(cairn_s3_request_duration_seconds_count{op}[{RATE}]))", "{{operation}}"),
        ], unit="s"),
        heatmap("Request duration distribution",
                f"sum by (le) (increase(cairn_s3_request_duration_seconds_bucket{op}[{RATE}]))"),
        row("Erasure coding"),
        timeseries("Stripes encoded", [q(f"sum(rate(cairn_stripes_encoded_total[{RATE}]))", "stripes/s")],
                   unit="ops", w=8),
        timeseries("Segment write time", [
            q(hq(0.5, "cairn_segment_write_seconds", ""), "p50"),
            q(hq(0.99, "cairn_segment_write_seconds", ""), "p99"),
        ], unit="s", w=8, description="Encode a segment and make all its shards durable on the nodes."),
        timeseries("Erasure decode time", [
            q(hq(0.5, "cairn_erasure_decode_seconds", ""), "p50"),
            q(hq(0.99, "cairn_erasure_decode_seconds", ""), "p99"),
        ], unit="s", w=8, description="Rebuilding a stripe from parity (degraded reads only)."),
        timeseries("Degraded reads and writes", [
            q(f"sum(rate(cairn_degraded_reads_total[{RATE}]))", "degraded reads"),
            q(f"sum(rate(cairn_degraded_writes_total[{RATE}]))", "degraded writes"),
        ], unit="ops", description="Reads rebuilt from parity; writes made with fewer data shards because nodes were down."),
        timeseries("Open multipart uploads", [q("cairn_multipart_uploads_open", "open")]),
    ]
    return dashboard("cairn-s3", "Cairn / S3 traffic & latency", "The gateway's S3 API: requests, errors, latency, erasure coding.",
                     panels, [prom_var("operation", "Operation", "label_values(cairn_s3_requests_total, operation)")])


def watch() -> dict:
    inst = '{instance=~"$instance"}'
    panels = [
        row("Checkpoints"),
        stat("Seen", [q(f"sum(increase(cairn_watch_checkpoints_seen_total{inst}[$__range]))", "seen")], w=6,
             graph=False, description="Checkpoints detected in the time range."),
        stat("Committed", [q(f"sum(increase(cairn_watch_checkpoints_committed_total{inst}[$__range]))", "committed")],
             w=6, graph=False),
        stat("Failed", [q(f"sum(increase(cairn_watch_checkpoints_failed_total{inst}[$__range]))", "failed")], w=6,
             graph=False, thresholds=_thresholds((1, "red"))),
        stat("Upload retries", [q(f"sum(increase(cairn_watch_upload_retries_total{inst}[$__range]))", "retries")],
             w=6, graph=False, thresholds=_thresholds((1, "yellow"))),
        timeseries("Checkpoint events", [
            q(f"sum by (instance) (increase(cairn_watch_checkpoints_seen_total{inst}[{RATE}]))", "{{instance}} seen"),
            q(f"sum by (instance) (increase(cairn_watch_checkpoints_committed_total{inst}[{RATE}]))",
              "{{instance}} committed"),
            q(f"sum by (instance) (increase(cairn_watch_checkpoints_failed_total{inst}[{RATE}]))",
              "{{instance}} failed"),
        ], description="Checkpoints detected, committed (manifest written) and failed."),
        timeseries("Upload retries", [
            q(f"sum by (instance) (increase(cairn_watch_upload_retries_total{inst}[{RATE}]))", "{{instance}}"),
        ], description="Retries after S3 or I/O failures (e.g. the gateway restarting or a node rebooting)."),
        row("Delay"),
        timeseries("Commit delay (last hour)", [
            q(hq(0.5, "cairn_watch_commit_delay_seconds", "instance", inst, "1h"), "{{instance}} p50"),
            q(hq(0.99, "cairn_watch_commit_delay_seconds", "instance", inst, "1h"), "{{instance}} p99"),
            q(f"sum by (instance) (increase(cairn_watch_commit_delay_seconds_sum{inst}[1h])) "
              f"/ sum by (instance) (increase(cairn_watch_commit_delay_seconds_count{inst}[1h]))",
              "{{instance}} mean"),
        ], unit="s", w=24, description="From a checkpoint's last write on disk to its committed manifest."),
    ]
    return dashboard("cairn-watch", "Cairn / Checkpoint pipeline",
                     "`cairn watch` on the training machines: checkpoints seen, committed, failed, and how long a commit takes.",
                     panels, [prom_var("instance", "Watcher", "label_values(cairn_watch_checkpoints_seen_total, instance)")])


DASHBOARDS = {
    "cairn-overview.json": overview,
    "cairn-node.json": node,
    "cairn-s3.json": s3,
    "cairn-watch.json": watch,
}


def render(make) -> str:
    return json.dumps(make(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    OUT.mkdir(exist_ok=True)
    stale = []
    for name, make in DASHBOARDS.items():
        text = render(make)
        path = OUT / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date (run {Path(__file__).name}): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
