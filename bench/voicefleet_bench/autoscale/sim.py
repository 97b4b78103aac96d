"""Discrete-event simulation of one VoiceService under an HPA.

Pods go Pending (scheduling, image pull) -> Starting (container up, /metrics served,
model loading) -> Ready (after the readiness probe notices /readyz) -> Terminating (out
of the Service at once, finishes its queue after the preStop pause). Each Ready pod runs
the server's engine in miniature: admission control (a request whose segments would push
the queue past `max_queue` gets 429), earliest-deadline-first segments (segment k of a
request is due (k + 1) * 0.5 s after arrival), batches of up to `max_batch_size` whose
duration follows the measured batching curve. The Service spreads requests uniformly at
random over Ready pods (kube-proxy). Prometheus scrapes every pod every `scrape_s`; the
adapter averages the last `adapter_window_s`; metrics-server samples CPU every `scrape_s`;
the HPA syncs every `sync_s` (voicefleet_bench.autoscale.hpa).

Deterministic for a seed: every random draw comes from generators seeded from it.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from dataclasses import dataclass, field

from voicefleet_bench.autoscale.capacity import PodCapacity, StartupModel
from voicefleet_bench.autoscale.hpa import (
    Behavior,
    HpaController,
    PodSample,
    replicas_for_pod_metric,
)
from voicefleet_bench.autoscale.signals import Signal
from voicefleet_bench.autoscale.traces import Request

# What the operator deploys: batching.maxQueue's CRD default (the server's own is 256),
# Engine.segment_slo_s, the preStop pause.
MAX_QUEUE_SEGMENTS = 512
SEGMENT_SLO_S = 0.5
PRESTOP_S = 5.0

_ARRIVAL, _BATCH_DONE, _RUNNING, _LOADED, _READY, _SCRAPE, _MS_SCRAPE, _SYNC, _SAMPLE, \
    _END = range(10)


@dataclass(frozen=True)
class SimConfig:
    signal: Signal
    capacity: PodCapacity
    startup: StartupModel
    behavior: Behavior = field(default_factory=Behavior)
    min_replicas: int = 1
    max_replicas: int = 50
    initial_replicas: int | None = None
    max_queue: int = MAX_QUEUE_SEGMENTS
    scrape_s: float = 15.0
    adapter_window_s: float = 60.0
    sync_s: float = 15.0
    sample_s: float = 5.0
    tolerance: float = 0.1
    # Client retries after a 429/503 (the OpenAI SDK retries twice), `retry_s` apart.
    retries: int = 2
    retry_s: float = 1.0
    seed: int = 0


@dataclass
class _Pod:
    id: int
    created: float
    state: str = "pending"  # pending, starting, ready, terminating, gone
    queue: list[tuple[float, int, int, int, float]] = field(default_factory=list)
    queued_audio: float = 0.0
    inflight: int = 0
    busy: bool = False
    busy_since: float = 0.0
    busy_total: float = 0.0
    samples: deque[tuple[float, float, float, float, float]] = field(default_factory=deque)
    last_scrape: tuple[float, float] = (0.0, 0.0)
    ms_value: float | None = None
    ms_last: tuple[float, float] = (0.0, 0.0)
    ended: float | None = None
    end_requested: bool = False

    def busy_until(self, now: float) -> float:
        return self.busy_total + (now - self.busy_since if self.busy else 0.0)


@dataclass
class SimResult:
    config: SimConfig
    duration_s: float
    arrivals: list[float]
    ttfa: list[float]  # NaN when rejected or unfinished
    rejected: list[bool]
    series: dict[str, list[float]]
    gpu_seconds: float
    pods_created: int


def simulate(requests: list[Request], duration_s: float, config: SimConfig) -> SimResult:
    """Run one simulation; `requests` from traces.generate, sorted by arrival."""
    cap = config.capacity
    rng = random.Random(config.seed * 7919 + 17)
    signal = config.signal
    hpa = HpaController(config.min_replicas, config.max_replicas, config.behavior,
                        config.tolerance)
    events: list[tuple[float, int, int, int]] = []
    seq = 0

    def push(t: float, kind: int, arg: int = 0) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, arg))

    pods: list[_Pod] = []
    ready: list[int] = []  # ids of pods in the Service's endpoints
    n = len(requests)
    ttfa = [math.nan] * n
    remaining = [len(r.segments) for r in requests]
    rejected = [False] * n
    attempts = [0] * n
    series: dict[str, list[float]] = {k: [] for k in (
        "t", "pods", "ready", "desired", "queue_segments", "queued_audio_s", "metric",
        "busy", "queue_cv", "queue_max")}
    last_metric = [math.nan]
    desired_now = [0]

    def start_pod(now: float, warm: bool = False) -> None:
        pod = _Pod(len(pods), now)
        pods.append(pod)
        if warm:
            pod.state = "ready"
            ready.append(pod.id)
            push(now + rng.uniform(0, config.scrape_s), _SCRAPE, pod.id)
            return
        push(now + config.startup.pending_s, _RUNNING, pod.id)

    def start_batch(pod: _Pod, now: float) -> None:
        if pod.busy or not pod.queue:
            return
        size = min(cap.max_batch_size, len(pod.queue))
        batch = [heapq.heappop(pod.queue) for _ in range(size)]
        audio = sum(item[4] for item in batch)
        pod.queued_audio -= audio
        pod.busy = True
        pod.busy_since = now
        pod_batches[pod.id] = batch
        push(now + audio / cap.throughput(size), _BATCH_DONE, pod.id)

    pod_batches: dict[int, list[tuple[float, int, int, int, float]]] = {}

    def finish_if_drained(pod: _Pod, now: float) -> None:
        if pod.state == "terminating" and pod.end_requested and not pod.busy and not pod.queue:
            pod.state = "gone"
            pod.ended = now

    def delete_pod(pod: _Pod, now: float) -> None:
        if pod.id in ready:
            ready.remove(pod.id)
        if pod.state in ("pending", "starting"):
            pod.state = "gone"
            pod.ended = now
            return
        pod.state = "terminating"
        push(now + PRESTOP_S, _END, pod.id)

    def gauge(pod: _Pod) -> tuple[float, float, float]:
        return float(pod.inflight), float(len(pod.queue)), pod.queued_audio

    def metric_value(pod: _Pod, now: float) -> float | None:
        if signal.source == "metrics-server":
            return pod.ms_value
        cutoff = now - config.adapter_window_s
        values = [s for s in pod.samples if s[0] > cutoff]
        if not values:
            return None
        index = {"inflight": 1, "queue_depth": 2, "queued_audio_s": 3, "busy": 4}[signal.gauge]
        return sum(v[index] for v in values) / len(values)

    def hpa_sync(now: float) -> None:
        live = [p for p in pods if p.state in ("pending", "starting", "ready")]
        current = len(live)
        samples = [
            PodSample(
                None if p.state == "pending" else metric_value(p, now),
                ready=p.state == "ready",
                pending=p.state == "pending",
            )
            for p in live
        ]
        known = [s.value for s in samples if s.value is not None]
        last_metric[0] = sum(known) / len(known) if known else math.nan
        proposal = replicas_for_pod_metric(
            samples, signal.target, current, cpu=signal.cpu, tolerance=config.tolerance
        )
        desired = hpa.decide(now, current, proposal)
        desired_now[0] = desired
        if desired > current:
            for _ in range(desired - current):
                start_pod(now)
        elif desired < current:
            # ReplicaSet order: unscheduled/not-ready pods first, then the newest.
            order = sorted(live, key=lambda p: (p.state == "ready", -p.created))
            for pod in order[: current - desired]:
                delete_pod(pod, now)

    initial = config.initial_replicas or config.min_replicas
    for _ in range(initial):
        start_pod(0.0, warm=True)
    desired_now[0] = initial
    for i, r in enumerate(requests):
        push(r.arrival, _ARRIVAL, i)
    push(rng.uniform(0, config.sync_s), _SYNC)
    push(rng.uniform(0, config.scrape_s), _MS_SCRAPE)
    push(0.0, _SAMPLE)

    while events:
        now, _, kind, arg = heapq.heappop(events)
        if now > duration_s:
            break
        if kind == _ARRIVAL:
            req = requests[arg]
            segs = req.segments
            pod = pods[ready[rng.randrange(len(ready))]] if ready else None
            if pod is None or (pod.queue and len(pod.queue) + len(segs) > config.max_queue):
                if attempts[arg] < config.retries:
                    attempts[arg] += 1
                    push(now + config.retry_s * attempts[arg], _ARRIVAL, arg)
                else:
                    rejected[arg] = True
                continue
            for k, audio in enumerate(segs):
                heapq.heappush(pod.queue, (now + (k + 1) * SEGMENT_SLO_S, arg, arg, k, audio))
                pod.queued_audio += audio
            pod.inflight += 1
            start_batch(pod, now)
        elif kind == _BATCH_DONE:
            pod = pods[arg]
            pod.busy_total += now - pod.busy_since
            pod.busy = False
            for _, _, ri, k, _ in pod_batches.pop(arg):
                if k == 0:
                    ttfa[ri] = now - requests[ri].arrival
                remaining[ri] -= 1
                if remaining[ri] == 0:
                    pod.inflight -= 1
            start_batch(pod, now)
            finish_if_drained(pod, now)
        elif kind == _RUNNING:
            pod = pods[arg]
            if pod.state == "pending":
                pod.state = "starting"
                push(now + rng.uniform(0, config.scrape_s), _SCRAPE, pod.id)
                push(now + config.startup.load_and_warmup_s, _LOADED, pod.id)
        elif kind == _LOADED:
            pod = pods[arg]
            if pod.state == "starting":
                push(now + rng.uniform(0, config.startup.readiness_period_s), _READY, pod.id)
        elif kind == _READY:
            pod = pods[arg]
            if pod.state == "starting":
                pod.state = "ready"
                ready.append(pod.id)
        elif kind == _SCRAPE:
            pod = pods[arg]
            if pod.state in ("starting", "ready", "terminating"):
                inflight, depth, audio = gauge(pod)
                busy_total = pod.busy_until(now)
                t0, b0 = pod.last_scrape
                frac = (busy_total - b0) / (now - t0) if now > t0 else 0.0
                pod.last_scrape = (now, busy_total)
                pod.samples.append((now, inflight, depth, audio, 100.0 * frac))
                while pod.samples and pod.samples[0][0] <= now - 600.0:
                    pod.samples.popleft()
                push(now + config.scrape_s, _SCRAPE, pod.id)
        elif kind == _MS_SCRAPE:
            for pod in pods:
                if pod.state in ("starting", "ready"):
                    busy_total = pod.busy_until(now)
                    t0, b0 = pod.ms_last
                    if t0 > pod.created and now > t0:
                        pod.ms_value = 100.0 * (busy_total - b0) / (now - t0)
                    pod.ms_last = (now, busy_total)
            push(now + config.scrape_s, _MS_SCRAPE)
        elif kind == _SYNC:
            hpa_sync(now)
            push(now + config.sync_s, _SYNC)
        elif kind == _SAMPLE:
            live = [p for p in pods if p.state != "gone"]
            series["t"].append(now)
            series["pods"].append(float(len(live)))
            series["ready"].append(float(len(ready)))
            series["desired"].append(float(desired_now[0]))
            series["queue_segments"].append(float(sum(len(p.queue) for p in live)))
            series["queued_audio_s"].append(sum(p.queued_audio for p in live))
            series["metric"].append(last_metric[0])
            series["busy"].append(float(sum(p.busy for p in live)))
            # Spread of queued audio over the pods in the Service (routing imbalance).
            loads = [pods[i].queued_audio for i in ready]
            mean = sum(loads) / len(loads) if loads else 0.0
            var = sum((x - mean) ** 2 for x in loads) / len(loads) if loads else 0.0
            series["queue_cv"].append(math.sqrt(var) / mean if mean > 0 else 0.0)
            series["queue_max"].append(max(loads, default=0.0))
            push(now + config.sample_s, _SAMPLE)
        elif kind == _END:
            pod = pods[arg]
            pod.end_requested = True
            finish_if_drained(pod, now)

    gpu_seconds = sum((p.ended if p.ended is not None else duration_s) - p.created for p in pods)
    return SimResult(
        config=config,
        duration_s=duration_s,
        arrivals=[r.arrival for r in requests],
        ttfa=ttfa,
        rejected=rejected,
        series=series,
        gpu_seconds=gpu_seconds,
        pods_created=len(pods),
    )
