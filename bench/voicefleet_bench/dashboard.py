"""Draw the chart's Grafana dashboard with matplotlib, from a Prometheus' own data.

No Grafana runs here: each panel of charts/voicefleet/files/grafana/voicefleet.json becomes
a subplot, each of its queries (Grafana variables expanded as "All") a query_range line.
docs/observability.md shows the picture; scripts/dashboard_picture.py makes it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from voicefleet_bench.prometheus import Prometheus

VARIABLES = {"$__rate_interval": "15s", "$namespace": ".*", "$service": ".*"}
_LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_SCALES = {"bytes": (2**30, "GiB"), "percentunit": (0.01, "%"), "s": (1, "s")}


def panels(path: Path) -> list[dict[str, Any]]:
    board = json.loads(path.read_text())
    return [p for p in board["panels"] if p.get("targets")]


def expand(expr: str, variables: Mapping[str, str] = VARIABLES) -> str:
    for name, value in variables.items():
        expr = expr.replace(name, value)
    return expr


def legend(template: str, labels: Mapping[str, str]) -> str:
    return _LEGEND_LABEL.sub(lambda m: labels.get(m.group(1), ""), template) or "value"


def render(
    prometheus: Prometheus, dashboard: Path, start: float, end: float, out: Path, step: float = 2
) -> dict[str, int]:
    """Write the panels as one PNG; returns how many series each panel drew."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = panels(dashboard)
    columns = 3
    rows = math.ceil(len(shown) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, 3.2 * rows), squeeze=False)
    drawn: dict[str, int] = {}
    for ax, panel in zip(axes.flat, shown, strict=False):
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        divisor, suffix = _SCALES.get(unit, (1, ""))
        count = 0
        for target in panel["targets"]:
            for series in prometheus.query_range(expand(target["expr"]), start, end, step):
                points = [(float(t) - start, float(v)) for t, v in series["values"]]
                points = [(t, v / divisor) for t, v in points if math.isfinite(v)]
                if not points:
                    continue
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, label=legend(target.get("legendFormat", ""), series["metric"]))
                count += 1
        drawn[panel["title"]] = count
        ax.set_title(panel["title"], fontsize=11)
        ax.set_xlim(0, end - start)
        ax.set_xlabel("seconds", fontsize=8)
        if suffix:
            ax.set_ylabel(suffix, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if count:
            ax.legend(fontsize=7, loc="upper right")
        else:
            why = "no data: absent on CPU" if panel["title"].startswith("GPU") else "no data"
            ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes,
                    color="grey")  # fmt: skip
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    fig.suptitle("voicefleet dashboard (rendered from a test Prometheus)", fontsize=13)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return drawn
