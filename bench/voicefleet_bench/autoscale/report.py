"""Scores of a simulation run (SLO share, rejections, recovery, GPU-minutes), the markdown
table that compares runs, and the over-time plots (replicas, queue, latency per signal).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from voicefleet_bench.autoscale.sim import SimResult

BIN_S = 30.0


@dataclass(frozen=True)
class Score:
    name: str
    requests: int
    slo_share: float  # share of offered requests answered with TTFA <= SLO
    p95_ttfa_s: float  # over answered requests
    rejected: int
    rejected_share: float
    recovery_s: float | None  # None: no spike in the trace; inf: never recovered
    gpu_minutes: float
    peak_pods: int


def _p95(values: Sequence[float]) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def counted(result: SimResult, tail_s: float = 120.0) -> list[int]:
    """Requests that arrived early enough to have finished before the run ended."""
    limit = result.duration_s - tail_s
    return [i for i, t in enumerate(result.arrivals) if t < limit]


def bin_health(result: SimResult, slo_s: float, bin_s: float = BIN_S) -> list[tuple[float, float]]:
    """(bin start, share of that bin's arrivals within the SLO) for every bin with arrivals."""
    bins: dict[int, list[bool]] = {}
    for i in counted(result):
        ok = not result.rejected[i] and result.ttfa[i] <= slo_s
        bins.setdefault(int(result.arrivals[i] // bin_s), []).append(ok)
    return [(b * bin_s, sum(v) / len(v)) for b, v in sorted(bins.items())]


RECOVERY_BIN_S = 60.0
RECOVERY_HORIZON_S = 600.0


def recovery_seconds(
    result: SimResult, slo_s: float, spike: tuple[float, float],
    bin_s: float = RECOVERY_BIN_S,
) -> float:
    """Seconds from the spike's start to the end of the last unhealthy minute between
    the start and 10 minutes after the spike's end.

    A minute is unhealthy when the share of its arrivals answered within the SLO falls
    below 95 %, or 10 points below the pre-spike share where that was lower (random
    routing alone leaves a tail on busy pods; the pre-spike level is the reference).
    """
    start, end = spike
    health = bin_health(result, slo_s, bin_s)
    before = [share for t, share in health if t + bin_s <= start and t >= start / 2]
    baseline = sum(before) / len(before) if before else 1.0
    floor = min(0.95, baseline - 0.10)
    bad = [t for t, share in health
           if t + bin_s > start and t < end + RECOVERY_HORIZON_S and share < floor]
    if not bad:
        return 0.0
    return max(bad) + bin_s - start


def score(name: str, result: SimResult, slo_s: float,
          spike: tuple[float, float] | None) -> Score:
    idx = counted(result)
    answered = [result.ttfa[i] for i in idx if not result.rejected[i] and
                not math.isnan(result.ttfa[i])]
    ok = sum(1 for t in answered if t <= slo_s)
    rejected = sum(1 for i in idx if result.rejected[i])
    total = max(1, len(idx))
    return Score(
        name=name,
        requests=len(idx),
        slo_share=ok / total,
        p95_ttfa_s=_p95(answered),
        rejected=rejected,
        rejected_share=rejected / total,
        recovery_s=None if spike is None else recovery_seconds(result, slo_s, spike),
        gpu_minutes=result.gpu_seconds / 60.0,
        peak_pods=int(max(result.series["pods"], default=0)),
    )


def _fmt_recovery(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.0f}"


def markdown_table(rows: Sequence[tuple[str, Score]], first: str = "signal") -> str:
    head = (f"| {first} | requests | within SLO | p95 TTFA (s) | rejected (429/503) |"
            " recovery (s) | GPU-minutes | peak pods |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = [
        f"| {label} | {s.requests} | {100 * s.slo_share:.1f} % | {s.p95_ttfa_s:.2f} |"
        f" {s.rejected} ({100 * s.rejected_share:.1f} %) | {_fmt_recovery(s.recovery_s)} |"
        f" {s.gpu_minutes:.0f} | {s.peak_pods} |"
        for label, s in rows
    ]
    return head + "\n".join(lines) + "\n"


def plot_pareto(
    points: dict[str, list[tuple[float, Score]]], path: str | Path, title: str
) -> None:
    """Share within the SLO against GPU-minutes, one line per signal over its targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.5), dpi=72)
    for name, rows in points.items():
        xs = [s.gpu_minutes for _, s in rows]
        ys = [100 * s.slo_share for _, s in rows]
        ax.plot(xs, ys, marker="o", lw=1.0, label=name)
        for (target, _), x, y in zip(rows, xs, ys, strict=True):
            ax.annotate(f"{target:g}", (x, y), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xlabel("GPU-minutes (pods x time, start-up and drain included)")
    ax.set_ylabel("requests with first audio within SLO (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def plot_runs(
    runs: Sequence[tuple[str, SimResult]], slo_s: float, path: str | Path, title: str,
    spike: tuple[float, float] | None = None,
) -> None:
    """Replicas, queued audio and per-bin p95 TTFA over time, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(8.0, 7.0), sharex=True, dpi=72)
    for label, result in runs:
        minutes = [t / 60 for t in result.series["t"]]
        axes[0].step(minutes, result.series["pods"], where="post", label=label, lw=1.2)
        axes[1].plot(minutes, result.series["queued_audio_s"], lw=1.0, label=label)
        p95: dict[int, list[float]] = {}
        for i in counted(result, 0.0):
            value = math.inf if result.rejected[i] else result.ttfa[i]
            p95.setdefault(int(result.arrivals[i] // BIN_S), []).append(value)
        xs = sorted(p95)
        ys = [min(_p95(p95[b]), 1e4) for b in xs]
        axes[2].plot([(b + 0.5) * BIN_S / 60 for b in xs], ys, lw=1.0, label=label)
    axes[0].set_ylabel("pods (all phases)")
    axes[1].set_ylabel("queued audio-s (all pods)")
    axes[2].set_ylabel("p95 TTFA per 30 s (s)")
    axes[2].set_yscale("log")
    axes[2].axhline(slo_s, color="k", ls="--", lw=0.8, label=f"SLO {slo_s:g} s")
    axes[2].set_xlabel("minutes (rejected requests count as infinite TTFA, clipped)")
    for ax in axes:
        if spike is not None:
            ax.axvspan(spike[0] / 60, spike[1] / 60, color="0.9", zorder=0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=3, loc="upper right")
    axes[2].legend(fontsize=7, loc="upper right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
