"""Pure statistics for benchmark reports: percentiles, summaries, the Poisson arrival schedule,
audio length from returned bytes, and the capacity / batching-curve digest of a sweep.

Nothing here does I/O, so all of it is unit-tested directly.
"""

from __future__ import annotations

import io
import math
import random
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between ranks (numpy's default).

    NaN for an empty sequence.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0..100")
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    frac = pos - low
    return ordered[low] + (ordered[high] - ordered[low]) * frac


def summarize(values: Iterable[float]) -> dict[str, float | int | None]:
    """count, mean, p50, p95, p99, max of `values` (None where there is no value)."""
    data = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not data:
        return {"count": 0, "mean": None, "p50": None, "p95": None, "p99": None, "max": None}
    return {
        "count": len(data),
        "mean": sum(data) / len(data),
        "p50": percentile(data, 50),
        "p95": percentile(data, 95),
        "p99": percentile(data, 99),
        "max": max(data),
    }


def poisson_schedule(rate: float, duration: float, rng: random.Random) -> list[float]:
    """Arrival offsets (seconds from 0) of a Poisson process of `rate` per second over `duration`.

    Inter-arrival gaps are exponential with mean 1/rate; this is the open-loop load: arrivals
    never wait for responses.
    """
    if rate <= 0 or duration <= 0:
        return []
    times: list[float] = []
    t = rng.expovariate(rate)
    while t < duration:
        times.append(t)
        t += rng.expovariate(rate)
    return times


def wav_data_bytes(data: bytes) -> tuple[int, int, int, int]:
    """(sample_rate, channels, bits_per_sample, data_bytes) of a RIFF/WAVE byte string.

    The data size is what follows the `data` chunk header in the bytes we actually have, so a
    streamed WAV with a placeholder size (0xFFFFFFFF) still measures right.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE stream")
    pos = 12
    rate = channels = bits = 0
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        body = pos + 8
        if chunk_id == b"fmt ":
            _fmt, channels, rate, _byte_rate, _align, bits = struct.unpack(
                "<HHIIHH", data[body : body + 16]
            )
        elif chunk_id == b"data":
            return rate, channels, bits, len(data) - body
        pos = body + size + (size & 1)
    raise ValueError("WAVE stream has no data chunk")


def audio_seconds(data: bytes, response_format: str, sample_rate: int) -> float:
    """Length in seconds of audio returned by the server.

    pcm is 16-bit little-endian mono at `sample_rate`; wav is measured from its header;
    flac/mp3/opus are decoded with soundfile when it is installed.
    """
    if response_format == "pcm":
        return len(data) / 2 / sample_rate
    if response_format == "wav":
        rate, channels, bits, nbytes = wav_data_bytes(data)
        return nbytes / (max(bits, 8) // 8) / max(channels, 1) / (rate or sample_rate)
    import soundfile  # optional: compressed formats only

    info = soundfile.info(io.BytesIO(data))
    return float(info.frames) / float(info.samplerate)


def capacity_digest(stages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Summarise a sweep for capacity planning (issue 8's simulator reads this).

    capacity: the best measured throughput (audio s per wall s) over all stages;
    saturation_rate_rps: the offered rate of the stage that reached it;
    batching_curve: per stage, mean batch size against throughput and latency, sorted by
    offered rate; service_s_per_audio_s: 1 / capacity.
    """
    curve: list[dict[str, Any]] = []
    best: Mapping[str, Any] | None = None
    for stage in stages:
        thr = stage.get("throughput_audio_s_per_s") or 0.0
        if best is None or thr > (best.get("throughput_audio_s_per_s") or 0.0):
            best = stage
        server = stage.get("server") or {}
        curve.append(
            {
                "offered_rate_rps": stage.get("offered_rate_rps"),
                "offered_audio_s_per_s": stage.get("offered_audio_s_per_s"),
                "throughput_audio_s_per_s": thr,
                "mean_batch_size": (server.get("batch_size") or {}).get("mean"),
                "mean_padding_waste": (server.get("padding_waste") or {}).get("mean"),
                "latency_p95_s": (stage.get("latency_s") or {}).get("p95"),
                "ttfa_p95_s": (stage.get("ttfa_s") or {}).get("p95"),
                "error_rate": stage.get("error_rate"),
            }
        )
    curve.sort(key=lambda p: p["offered_rate_rps"] or 0.0)
    capacity = (best or {}).get("throughput_audio_s_per_s") or 0.0
    return {
        "capacity_audio_s_per_s": capacity,
        "service_s_per_audio_s": (1.0 / capacity) if capacity > 0 else None,
        "saturation_rate_rps": (best or {}).get("offered_rate_rps"),
        "mean_audio_s_per_request": (best or {}).get("audio_s_per_request", {}).get("mean"),
        "batching_curve": curve,
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def rng_for(seed: int, stream: str) -> random.Random:
    """An independent, reproducible random stream per purpose (schedule, texts)."""
    return random.Random(f"{seed}:{stream}")
