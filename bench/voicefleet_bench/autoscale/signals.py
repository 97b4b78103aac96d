"""The scaling signals compared, and how each reaches the HPA.

Each signal is a per-pod value plus the path it takes to the HPA: Prometheus scrapes of the
server's /metrics averaged by prometheus-adapter (the chart's metricsQuery,
`avg_over_time(...[1m])`), or metrics-server for CPU (a Resource metric, with the HPA's
set-aside rule for pods that are not Ready yet).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Source = Literal["prometheus", "metrics-server"]


@dataclass(frozen=True)
class Signal:
    name: str
    label: str
    unit: str
    # Which pod gauge it reads: "inflight", "queue_depth", "queued_audio_s" or "busy".
    gauge: str
    source: Source
    target: float
    # Resource metric semantics (CPU): unready pods set aside.
    cpu: bool = False

    def with_target(self, target: float) -> Signal:
        return Signal(self.name, self.label, self.unit, self.gauge, self.source, target,
                      self.cpu)


# Targets here are starting points; autoscale_sim.py sweeps them per signal and compares
# every signal at its best target.
SIGNALS: dict[str, Signal] = {
    s.name: s
    for s in (
        Signal("inflight", "requests in flight per pod", "requests", "inflight",
               "prometheus", 4.0),
        Signal("cpu", "CPU utilisation (metrics-server)", "%", "busy", "metrics-server",
               70.0, cpu=True),
        Signal("gpu", "GPU utilisation (DCGM via adapter)", "%", "busy", "prometheus", 70.0),
        Signal("queue_depth", "queue depth per pod", "segments", "queue_depth",
               "prometheus", 8.0),
        Signal("queued_audio", "queued audio-seconds per pod", "audio-s", "queued_audio_s",
               "prometheus", 30.0),
    )
}
