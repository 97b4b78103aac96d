"""Two seeded renders of the same request compared as audio: equal up to float rounding.

A CPU pod's model workers share the cores, and a call's intra-op thread count follows how
many calls run beside it (engine/batcher.py); reductions split across another number of
threads round differently (at most 8e-5 on the mms-size model, 1e-5 on the tiny one). A
seeded request therefore returns the same audio to within one 16-bit step on a few
samples, not always to the bit. Anything else (another length, other words, other noise)
differs by far more.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf


def samples(data: bytes) -> np.ndarray:
    """16-bit samples of a WAV file, or of raw little-endian PCM."""
    if data[:4] == b"RIFF":
        audio, _ = sf.read(io.BytesIO(data), dtype="int16")
        return np.asarray(audio)
    return np.frombuffer(data, dtype="<i2")


def assert_same_render(actual: bytes, expected: bytes) -> None:
    assert_same_samples(samples(actual), samples(expected))


def assert_same_samples(actual: np.ndarray, expected: np.ndarray) -> None:
    """Decoded renders (16-bit integers, or floats in [-1, 1] as soundfile reads them)."""
    a, e = (_steps(x) for x in (actual, expected))
    assert a.shape == e.shape, f"{a.shape} samples vs {e.shape}"
    steps = np.abs(a - e)
    off = float(np.mean(steps > 0)) if steps.size else 0.0
    assert steps.max(initial=0) <= 1 and off < 0.01, (
        f"{off:.2%} of samples differ, by up to {steps.max(initial=0)} steps"
    )


def _steps(audio: np.ndarray) -> np.ndarray:
    if np.issubdtype(audio.dtype, np.floating):
        return np.rint(audio * 32768).astype(np.int64)
    return audio.astype(np.int64)
