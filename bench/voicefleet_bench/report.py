"""Presenting a benchmark run: the stdout table and the PNG (latency and throughput vs load).

Input is the JSON-ready dict `voicefleet bench` writes (schema in bench/README.md).
matplotlib is imported lazily with the Agg backend, so reports work headless.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def _fmt(value: Any, spec: str = ".2f", scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value * scale, spec)


def stage_label(stage: Mapping[str, Any]) -> str:
    if stage.get("offered_rate_rps") is not None:
        return f"{stage['offered_rate_rps']:g} rps"
    return f"c={stage.get('concurrency')}"


def format_table(stages: Sequence[Mapping[str, Any]]) -> str:
    """One row per stage: load, ok/errors, throughput, RTF, latency and TTFA percentiles,
    mean batch size and padding waste (server side), peak RSS."""
    header = (
        f"{'load':>9} {'ok':>5} {'err':>4} {'audio/s':>8} {'rtf':>6} "
        f"{'p50 s':>7} {'p95 s':>7} {'p99 s':>7} {'ttfa50':>7} {'ttfa95':>7} "
        f"{'batch':>6} {'pad%':>5} {'rss MB':>7} {'vram MB':>8}  errors"
    )
    lines = [header, "-" * len(header)]
    for st in stages:
        lat, ttfa = st.get("latency_s") or {}, st.get("ttfa_s") or {}
        server = st.get("server") or {}
        batch = server.get("batch_size") or {}
        pad = server.get("padding_waste") or {}
        peak = server.get("peak") or {}
        req = st.get("requests") or {}
        errors = ", ".join(f"{k}: {v}" for k, v in sorted((req.get("errors") or {}).items()))
        lines.append(
            f"{stage_label(st):>9} {req.get('ok', 0):>5} "
            f"{req.get('sent', 0) - req.get('ok', 0):>4} "
            f"{_fmt(st.get('throughput_audio_s_per_s')):>8} {_fmt(st.get('rtf'), '.3f'):>6} "
            f"{_fmt(lat.get('p50')):>7} {_fmt(lat.get('p95')):>7} {_fmt(lat.get('p99')):>7} "
            f"{_fmt(ttfa.get('p50')):>7} {_fmt(ttfa.get('p95')):>7} "
            f"{_fmt(batch.get('mean')):>6} {_fmt(pad.get('mean'), '.0f', 100):>5} "
            f"{_fmt(peak.get('rss_bytes'), '.0f', 1 / 2**20):>7} "
            f"{_fmt(peak.get('gpu_memory_used_bytes') or None, '.0f', 1 / 2**20):>8}  {errors}"
        )
    return "\n".join(lines)


def format_batch_histogram(stage: Mapping[str, Any]) -> str:
    """`size<=le: count` pairs of the server's batch-size histogram for one stage."""
    batch = ((stage.get("server") or {}).get("batch_size")) or {}
    parts = [f"<={b['le']}: {b['count']:g}" for b in batch.get("buckets", []) if b["count"]]
    return ", ".join(parts) if parts else "(no batches reported)"


def plot(report: Mapping[str, Any], path: str, title: str | None = None) -> None:
    """Latency (p50/p95/p99, TTFA p95) and throughput against offered load, one PNG (~50 KB)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = list(report.get("stages") or [])
    open_loop = [s for s in stages if s.get("offered_rate_rps") is not None]
    use = open_loop or stages
    xs = [
        s["offered_rate_rps"] if s.get("offered_rate_rps") is not None
        else s.get("concurrency") or 0
        for s in use
    ]
    xlabel = "offered load (requests/s)" if open_loop else "concurrency (requests in flight)"

    def series(key: str, q: str) -> list[float]:
        return [((s.get(key) or {}).get(q) or math.nan) for s in use]

    fig, (ax_lat, ax_thr) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=80)
    for q, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^-")):
        ax_lat.plot(xs, series("latency_s", q), style, label=f"latency {q}", markersize=4)
    ax_lat.plot(xs, series("ttfa_s", "p95"), "x--", label="TTFA p95", markersize=4)
    ax_lat.set_xlabel(xlabel)
    ax_lat.set_ylabel("seconds")
    ax_lat.set_yscale("log")
    ax_lat.grid(True, alpha=0.3)
    ax_lat.legend(fontsize=7)
    thr = [s.get("throughput_audio_s_per_s") or 0.0 for s in use]
    ax_thr.plot(xs, thr, "o-", label="throughput", markersize=4)
    offered = [s.get("offered_audio_s_per_s") or math.nan for s in use]
    if any(not math.isnan(v) for v in offered):
        ax_thr.plot(xs, offered, ":", color="grey", label="offered (audio s/s)")
    batch = [((s.get("server") or {}).get("batch_size") or {}).get("mean") for s in use]
    if any(b is not None for b in batch):
        ax_b = ax_thr.twinx()
        ax_b.plot(xs, [b if b is not None else math.nan for b in batch], "d--", color="tab:red",
                  markersize=4, label="mean batch")
        ax_b.set_ylabel("mean batch size", color="tab:red")
    ax_thr.set_xlabel(xlabel)
    ax_thr.set_ylabel("audio seconds per wall second")
    ax_thr.grid(True, alpha=0.3)
    ax_thr.legend(fontsize=7, loc="upper left")
    model = (report.get("target") or {}).get("model", "")
    fig.suptitle(title or f"voicefleet bench: {model}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
