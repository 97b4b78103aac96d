"""What one server pod can do, read from measurements: `voicefleet bench` JSON
(schema voicefleet-bench/1, bench/README.md) for throughput, batching curve and audio per
sentence, and a start-up measurement for model load + warm-up.

Nothing here is invented: every number carries its provenance into the simulator's output.
Parameters that cannot be measured on one machine (image pull, node provisioning) are
explicit arguments with documented defaults.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class PodCapacity:
    """Throughput of one pod by batch size, in audio seconds per wall second."""

    # (batch size, audio-s/s) measured points, ascending by batch size.
    curve: tuple[tuple[float, float], ...]
    max_batch_size: int
    # Audio seconds of one sentence (= one segment) and sentences per text kind.
    audio_s_per_sentence: float
    provenance: str

    def throughput(self, batch_size: int) -> float:
        """Piecewise-linear in the measured points, flat beyond them."""
        points = self.curve
        if batch_size <= points[0][0]:
            return points[0][1]
        for (b0, t0), (b1, t1) in itertools.pairwise(points):
            if batch_size <= b1:
                return t0 + (t1 - t0) * (batch_size - b0) / (b1 - b0)
        return points[-1][1]

    @property
    def peak_throughput(self) -> float:
        return max(self.throughput(b) for b in range(1, self.max_batch_size + 1))


@dataclass(frozen=True)
class StartupModel:
    """Seconds from pod creation to Ready: scheduling + image pull (parameters) + model
    load and warm-up (measured) + readiness-probe detection (up to one probe period)."""

    load_and_warmup_s: float
    image_pull_s: float = 60.0
    scheduling_s: float = 2.0
    readiness_period_s: float = 5.0
    provenance: str = ""
    measured_runs: tuple[float, ...] = field(default_factory=tuple)

    @property
    def pending_s(self) -> float:
        """Time in phase Pending (scheduling and image pull)."""
        return self.scheduling_s + self.image_pull_s


def _saturated_points(stages: Sequence[Mapping[str, Any]]) -> list[tuple[float, float]]:
    """(mean batch size, throughput) of the stages that ran at capacity.

    A stage is at capacity when it delivered less than 90 % of the audio offered to it;
    below that, throughput only says how much was asked for.
    """
    points: list[tuple[float, float]] = []
    for stage in stages:
        offered = float(stage.get("offered_audio_s_per_s") or 0.0)
        done = float(stage.get("throughput_audio_s_per_s") or 0.0)
        batch = (stage.get("server") or {}).get("batch_size") or {}
        mean_batch = float(batch.get("mean") or 1.0)
        if offered > 0 and done < 0.9 * offered and done > 0:
            points.append((max(mean_batch, 1.0), done))
    return points


def capacity_from_bench(report: Mapping[str, Any], source: str = "") -> PodCapacity:
    """Build a `PodCapacity` from a voicefleet-bench/1 report."""
    if report.get("schema") != "voicefleet-bench/1":
        raise ValueError(f"not a voicefleet-bench/1 report: schema={report.get('schema')!r}")
    stages = report.get("stages") or []
    points = _saturated_points(stages)
    summary = report.get("summary") or {}
    if not points:
        capacity = float(summary.get("capacity_audio_s_per_s") or 0.0)
        if capacity <= 0:
            raise ValueError("the bench report has no stage at capacity and no summary capacity")
        points = [(1.0, capacity)]
    # One point per batch size: keep the best throughput seen at that mean batch size.
    by_batch: dict[float, float] = {}
    for b, t in points:
        key = round(b, 1)
        by_batch[key] = max(by_batch.get(key, 0.0), t)
    curve = tuple(sorted(by_batch.items()))
    max_batch = max(1, round(max(b for b, _ in curve)))
    # Audio per sentence: the one-sentence "short" kind when it was measured.
    sentence_s = 0.0
    for stage in stages:
        short = (stage.get("by_kind") or {}).get("short") or {}
        mean = (short.get("audio_s") or {}).get("mean")
        if mean:
            sentence_s = float(mean)
            break
    if sentence_s <= 0:
        raise ValueError("the bench report has no per-kind audio for one-sentence texts")
    machine = report.get("client_machine") or {}
    target = report.get("target") or {}
    provenance = (
        f"voicefleet bench report {source or '(inline)'} created {report.get('created_utc')}"
        f" against model {target.get('model')!r} on {machine.get('cpu')!r}"
        f" ({machine.get('cpu_count')} CPUs); capacity points (batch, audio-s/s): "
        + ", ".join(f"({b:g}, {t:.2f})" for b, t in curve)
        + f"; audio per sentence {sentence_s:.2f} s"
    )
    return PodCapacity(curve, max_batch, sentence_s, provenance)


def load_capacity(path: str | Path, label: str = "") -> PodCapacity:
    return capacity_from_bench(json.loads(Path(path).read_text()), label or str(path))


def load_startup(path: str | Path, image_pull_s: float = 60.0, label: str = "") -> StartupModel:
    """Read the start-up measurement written by `autoscale_sim.py measure-startup`."""
    raw = json.loads(Path(path).read_text())
    runs = tuple(float(r) for r in raw["ready_s"])
    median = sorted(runs)[len(runs) // 2]
    provenance = (
        f"{label or path}: `voicefleet serve` to GET /readyz 200, {len(runs)} runs, median"
        f" {median:.1f} s ({raw.get('model', '?')} on {raw.get('machine', '?')});"
        f" image pull {image_pull_s:g} s is a parameter, not measured"
    )
    return StartupModel(
        load_and_warmup_s=median, image_pull_s=image_pull_s, provenance=provenance,
        measured_runs=runs,
    )
