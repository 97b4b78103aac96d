"""Arrival traces: when requests come and how much speech each asks for.

A trace is a rate function (requests per second over time) plus the text mix of
`voicefleet bench` (one-liners, paragraphs, long texts; voicefleet_bench.texts). Arrivals
are a non-homogeneous Poisson process drawn by thinning from a seeded generator, so one
seed gives one trace. Rates are expressed in pods' worth of work (`load_pods`: 1.0 keeps one
pod exactly busy), which makes a trace portable between CPU and GPU measurements.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from voicefleet_bench.texts import DEFAULT_MIX, KINDS

# Words per sentence in voicefleet_bench.texts.sentence (inclusive).
_WORDS_LOW, _WORDS_HIGH = 8, 16
_WORDS_MEAN = (_WORDS_LOW + _WORDS_HIGH) / 2


@dataclass(frozen=True)
class Request:
    arrival: float
    kind: str
    # Audio seconds of each sentence (segment), in order.
    segments: tuple[float, ...]

    @property
    def audio_s(self) -> float:
        return sum(self.segments)


@dataclass(frozen=True)
class Trace:
    name: str
    duration_s: float
    # Offered work in pods' worth at time t (1.0 = one pod's peak throughput).
    load_pods: Callable[[float], float]
    peak_load_pods: float
    # Spike window, for recovery measurements; None for traces without one.
    spike: tuple[float, float] | None = None
    description: str = ""


def mean_sentences(mix: Mapping[str, float] = DEFAULT_MIX) -> float:
    return sum(w * (KINDS[k][0] + KINDS[k][1]) / 2 for k, w in mix.items())


def steady(load: float, duration_s: float = 3600.0) -> Trace:
    return Trace("steady", duration_s, lambda _t: load, load,
                 description=f"constant {load:g} pods' worth for {duration_s / 60:g} min")


def spike(
    base: float,
    factor: float = 10.0,
    start_s: float = 900.0,
    minutes: float = 10.0,
    duration_s: float = 3600.0,
    ramp_s: float = 60.0,
) -> Trace:
    """`base` load, rising to `factor` x base within `ramp_s` at `start_s` for `minutes`."""
    end_s = start_s + minutes * 60.0

    def load(t: float) -> float:
        if t < start_s or t >= end_s + ramp_s:
            return base
        if t < start_s + ramp_s:
            return base * (1 + (factor - 1) * (t - start_s) / ramp_s)
        if t < end_s:
            return base * factor
        return base * (factor - (factor - 1) * (t - end_s) / ramp_s)

    return Trace(
        "spike", duration_s, load, base * factor, spike=(start_s, end_s),
        description=f"{base:g} pods' worth, {factor:g}x for {minutes:g} min from"
        f" t={start_s / 60:g} min ({ramp_s:g} s ramp), {duration_s / 60:g} min in all",
    )


def diurnal(
    mean: float, swing: float = 0.8, period_s: float = 4 * 3600.0, duration_s: float | None = None
) -> Trace:
    """A day compressed into `period_s`: mean * (1 - swing * cos(2 pi t / period))."""
    duration = period_s if duration_s is None else duration_s

    def load(t: float) -> float:
        return mean * (1 - swing * math.cos(2 * math.pi * t / period_s))

    return Trace(
        "diurnal", duration, load, mean * (1 + swing),
        description=f"mean {mean:g} pods' worth, +/-{swing * 100:g} %, one day compressed"
        f" into {period_s / 3600:g} h",
    )


def generate(
    trace: Trace,
    audio_s_per_sentence: float,
    peak_throughput: float,
    seed: int,
    mix: Mapping[str, float] = DEFAULT_MIX,
) -> list[Request]:
    """Draw the requests of `trace` (thinning against the peak rate)."""
    rng = random.Random(seed)
    mean_audio = mean_sentences(mix) * audio_s_per_sentence
    # Requests per second that keep one pod exactly busy.
    per_pod_rps = peak_throughput / mean_audio
    peak_rps = trace.peak_load_pods * per_pod_rps
    kinds = list(mix)
    weights = [mix[k] for k in kinds]
    requests: list[Request] = []
    t = 0.0
    while True:
        t += rng.expovariate(peak_rps)
        if t >= trace.duration_s:
            break
        if rng.random() * peak_rps > trace.load_pods(t) * per_pod_rps:
            continue
        kind = rng.choices(kinds, weights)[0]
        low, high = KINDS[kind]
        segments = tuple(
            audio_s_per_sentence * rng.randint(_WORDS_LOW, _WORDS_HIGH) / _WORDS_MEAN
            for _ in range(rng.randint(low, high))
        )
        requests.append(Request(t, kind, segments))
    return requests
