"""Pure statistics of the benchmark harness: percentiles, schedules, audio lengths, digests."""

from __future__ import annotations

import io
import itertools
import math
import random
import struct
import wave

import pytest
from voicefleet_bench import stats


def test_percentile_matches_linear_interpolation() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert stats.percentile(values, 0) == 1.0
    assert stats.percentile(values, 100) == 4.0
    assert stats.percentile(values, 50) == pytest.approx(2.5)
    assert stats.percentile(list(range(101)), 95) == pytest.approx(95.0)
    assert stats.percentile([7.0], 99) == 7.0
    assert math.isnan(stats.percentile([], 50))
    with pytest.raises(ValueError):
        stats.percentile([1.0], 101)


def test_summarize_drops_missing_values() -> None:
    s = stats.summarize([1.0, 2.0, float("nan"), 3.0])
    assert s["count"] == 3
    assert s["mean"] == pytest.approx(2.0)
    assert s["p50"] == pytest.approx(2.0)
    assert s["max"] == 3.0
    assert stats.summarize([]) == {
        "count": 0, "mean": None, "p50": None, "p95": None, "p99": None, "max": None,
    }


def test_poisson_schedule_is_seeded_sorted_and_has_the_right_rate() -> None:
    a = stats.poisson_schedule(5.0, 200.0, random.Random(1))
    b = stats.poisson_schedule(5.0, 200.0, random.Random(1))
    assert a == b
    assert a == sorted(a)
    assert all(0 < t < 200.0 for t in a)
    assert 900 < len(a) < 1100  # mean 1000, sd ~32
    gaps = [y - x for x, y in itertools.pairwise(a)]
    assert sum(gaps) / len(gaps) == pytest.approx(0.2, rel=0.1)
    assert stats.poisson_schedule(0, 10, random.Random(0)) == []


def _wav(samples: int, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * samples)
    return buf.getvalue()


def test_audio_seconds_of_pcm_and_wav() -> None:
    assert stats.audio_seconds(b"\0\0" * 16000, "pcm", 16000) == pytest.approx(1.0)
    assert stats.audio_seconds(_wav(8000, 16000), "wav", 22050) == pytest.approx(0.5)


def test_streamed_wav_with_unknown_size_is_measured_from_bytes() -> None:
    data = bytearray(_wav(4000, 8000))
    data[4:8] = struct.pack("<I", 0xFFFFFFFF)
    data[40:44] = struct.pack("<I", 0xFFFFFFFF)
    assert stats.wav_data_bytes(bytes(data))[0] == 8000
    assert stats.audio_seconds(bytes(data), "wav", 16000) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        stats.wav_data_bytes(b"not a wav file")


def test_audio_seconds_of_flac_uses_soundfile() -> None:
    sf = pytest.importorskip("soundfile")
    import numpy as np

    buf = io.BytesIO()
    sf.write(buf, np.zeros(16000 * 2, dtype="float32"), 16000, format="FLAC")
    assert stats.audio_seconds(buf.getvalue(), "flac", 16000) == pytest.approx(2.0)


def _stage(rate: float, thr: float, batch: float | None) -> dict[str, object]:
    return {
        "offered_rate_rps": rate,
        "throughput_audio_s_per_s": thr,
        "latency_s": {"p95": 1.0 / thr},
        "ttfa_s": {"p95": 0.5},
        "audio_s_per_request": {"mean": 3.0},
        "server": {"batch_size": {"mean": batch} if batch else None},
    }


def test_capacity_digest_takes_the_best_stage_and_sorts_the_curve() -> None:
    digest = stats.capacity_digest([_stage(4, 6.0, 3.5), _stage(1, 3.0, 1.0), _stage(8, 5.0, 7.0)])
    assert digest["capacity_audio_s_per_s"] == 6.0
    assert digest["service_s_per_audio_s"] == pytest.approx(1 / 6)
    assert digest["saturation_rate_rps"] == 4
    assert digest["mean_audio_s_per_request"] == 3.0
    assert [p["offered_rate_rps"] for p in digest["batching_curve"]] == [1, 4, 8]
    assert [p["mean_batch_size"] for p in digest["batching_curve"]] == [1.0, 3.5, 7.0]
    empty = stats.capacity_digest([])
    assert empty["capacity_audio_s_per_s"] == 0.0
    assert empty["service_s_per_audio_s"] is None


def test_ratio_and_independent_rngs() -> None:
    assert stats.ratio(3.0, 2.0) == 1.5
    assert stats.ratio(1.0, 0.0) is None
    assert stats.ratio(None, 1.0) is None
    assert stats.rng_for(1, "a").random() == stats.rng_for(1, "a").random()
    assert stats.rng_for(1, "a").random() != stats.rng_for(1, "b").random()
