"""What the dashboard and alert tests compare: metric names a PromQL expression reads, and
the sample names the server and the operator export, derived from their own registries."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.registry import CollectorRegistry

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "charts" / "voicefleet" / "files" / "grafana" / "voicefleet.json"

# Grafana's variables, as the dashboard would expand them with "All" selected.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$namespace": ".*", "$service": ".*"}
_KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "inf", "nan", "atan2",
}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"' + r"|'(?:[^'\\]|\\.)*'")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*")


def expand(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers that are not functions,
    aggregations, keywords, label names (in matchers and grouping clauses) or durations."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    names = set()
    for match in _IDENTIFIER.finditer(text):
        token = match.group(0)
        if token.lower() in _KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue
        names.add(token)
    return names


def sample_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name a registry can expose (counters as _total, histograms as
    _bucket/_sum/_count), from the metric families it collects."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
        "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    }
    names = set()
    for family in registry.collect():
        for suffix in suffixes.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def exported_names() -> set[str]:
    """What a GPU server pod and the operator export (a GPU report attached, so the
    GPU series that are absent on CPU are collected too)."""
    from voicefleet_operator.metrics import OperatorMetrics
    from voicefleet_server.metrics import GpuReport, Metrics

    server = Metrics()
    server.gpu.read = lambda: GpuReport(0.5, 60.0, 200.0, 1 << 30, "device")
    return sample_names(server.registry) | sample_names(OperatorMetrics().registry)


def dashboard_targets(dashboard: dict[str, Any] | None = None) -> list[tuple[str, str, str]]:
    """(panel title, legend, expression) of every query of the dashboard."""
    board = dashboard if dashboard is not None else json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target.get("legendFormat", ""), target["expr"])
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]
