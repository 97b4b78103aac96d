"""How good one returned segment of audio looks, measured without a reference.

Pure functions over a float waveform: a blind SNR estimate, the share of clipped samples,
the share of silent frames, and audio seconds per input character; `assess` turns them
into anomaly kinds against `QualityLimits`. Nothing here blocks or changes audio: the
caller counts and logs what it finds.

SNR is WADA-SNR: C. Kim and R. M. Stern, "Robust Signal-to-Noise Ratio Estimation Based
on Waveform Amplitude Distribution Analysis", Proc. Interspeech 2008, pp. 2598-2601.
Clean speech amplitudes follow a Gamma distribution of shape 0.4; adding Gaussian noise
moves G = log E|z| - E log|z| along a curve that depends only on the SNR, so measuring G
and inverting the curve estimates the SNR. Our curve is computed from that model by
numerical integration (`wada_curve`); it agrees with the table of the authors' MATLAB
release to within 0.003 (under 0.15 dB) up to 30 dB.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

# ---- WADA-SNR --------------------------------------------------------------------------

GAMMA_SHAPE = 0.4  # Kim & Stern's shape parameter of clean-speech amplitudes
WADA_DB = np.arange(-20, 101, dtype=np.float64)
# wada_curve(WADA_DB), rounded; tests/unit/test_quality.py recomputes it.
WADA_G = np.array(
    [
        0.409435, 0.409459, 0.409497, 0.409556, 0.409644, 0.409777, 0.409974, 0.410264,
        0.410687, 0.411292, 0.412148, 0.413339, 0.414969, 0.417163, 0.420066, 0.423838,
        0.428653, 0.434691, 0.442128, 0.451129, 0.461838, 0.474369, 0.488796, 0.505153,
        0.523425, 0.543553, 0.565437, 0.588936, 0.613884, 0.640090, 0.667350, 0.695455,
        0.724195, 0.753370, 0.782789, 0.812277, 0.841676, 0.870844, 0.899660, 0.928018,
        0.955831, 0.983027, 1.009547, 1.035348, 1.060395, 1.084664, 1.108142, 1.130820,
        1.152698, 1.173779, 1.194072, 1.213588, 1.232342, 1.250352, 1.267636, 1.284214,
        1.300108, 1.315338, 1.329927, 1.343897, 1.357271, 1.370070, 1.382316, 1.394031,
        1.405235, 1.415950, 1.426194, 1.435987, 1.445349, 1.454296, 1.462848, 1.471019,
        1.478828, 1.486289, 1.493417, 1.500228, 1.506734, 1.512950, 1.518887, 1.524559,
        1.529977, 1.535152, 1.540095, 1.544816, 1.549326, 1.553633, 1.557747, 1.561676,
        1.565428, 1.569012, 1.572435, 1.575704, 1.578826, 1.581808, 1.584655, 1.587375,
        1.589972, 1.592452, 1.594821, 1.597084, 1.599244, 1.601307, 1.603278, 1.605160,
        1.606957, 1.608673, 1.610312, 1.611878, 1.613373, 1.614800, 1.616164, 1.617466,
        1.618709, 1.619897, 1.621031, 1.622114, 1.623148, 1.624136, 1.625079, 1.625980,
        1.626840,
    ]
)  # fmt: skip
_EPS = 1e-10


def wada_curve(snr_db: Iterable[float], shape: float = GAMMA_SHAPE) -> np.ndarray:
    """G = log E|z| - E log|z| for z = x + n: x a two-sided Gamma(shape) amplitude, n unit
    Gaussian noise, at each SNR = E[x^2] / E[n^2] in dB. Numerical integration (a few
    seconds); the server uses the precomputed `WADA_G`."""
    import warnings

    from scipy import integrate, special

    def log_abs_given(x: float) -> float:  # E log|x + n|, a log singularity at n = -x
        def density(t: float) -> float:
            return math.log(abs(t)) * math.exp(-((t - x) ** 2) / 2) / math.sqrt(2 * math.pi)

        lo, hi = x - 12.0, x + 12.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", integrate.IntegrationWarning)
            if lo < 0 < hi:
                return float(
                    integrate.quad(density, lo, 0, limit=200)[0]
                    + integrate.quad(density, 0, hi, limit=200)[0]
                )
            return float(integrate.quad(density, lo, hi, limit=200)[0])

    grid = np.concatenate([[0.0], np.logspace(-6, math.log10(40.0), 1500)])
    table = np.array([log_abs_given(x) for x in grid])

    def expected_log_abs(x: np.ndarray) -> np.ndarray:
        out = np.interp(x, grid, table)
        far = x > grid[-1]
        out[far] = np.log(x[far]) - 1.0 / (2.0 * x[far] ** 2)
        return out

    def expected_abs(x: np.ndarray) -> np.ndarray:  # E|x + n|, closed form
        return np.sqrt(2 / np.pi) * np.exp(-(x**2) / 2) + x * special.erf(x / np.sqrt(2))

    # x = s * g, g ~ Gamma(shape); with u = g**shape the weight has no singularity at 0.
    u = np.logspace(-12, math.log10(4.0), 200_000)
    weight = np.exp(-(u ** (1 / shape))) / special.gamma(shape + 1)
    norm = integrate.trapezoid(weight, u)
    curve = []
    for db in snr_db:
        scale = math.sqrt(10 ** (db / 10) / (shape * (shape + 1)))  # E[x^2] = snr
        x = scale * u ** (1 / shape)
        mean_abs = integrate.trapezoid(expected_abs(x) * weight, u) / norm
        mean_log = integrate.trapezoid(expected_log_abs(x) * weight, u) / norm
        curve.append(math.log(mean_abs) - mean_log)
    return np.array(curve)


def wada_snr(wave: np.ndarray) -> float:
    """Blind SNR estimate in dB (WADA-SNR, Kim & Stern 2008), clamped to [-20, 100]."""
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    if peak <= 0.0 or not math.isfinite(peak):
        return float(WADA_DB[0])
    magnitude = np.maximum(np.abs(wave, dtype=np.float64) / peak, _EPS)
    g = math.log(max(float(magnitude.mean()), _EPS)) - float(np.log(magnitude).mean())
    return float(np.interp(g, WADA_G, WADA_DB))


# ---- the other measures ----------------------------------------------------------------

CLIP_LEVEL = 0.999  # |x| at or above this counts as clipped (the engine clips to [-1, 1])
SILENT_PEAK = 1e-4  # below this the whole segment is silent (the engine's own test)
FRAME_S = 0.02
SILENT_FRAME_DBFS = -50.0


def clipping_ratio(wave: np.ndarray) -> float:
    if wave.size == 0:
        return 0.0
    return float(np.count_nonzero(np.abs(wave) >= CLIP_LEVEL)) / wave.size


def silence_ratio(wave: np.ndarray, sampling_rate: int) -> float:
    """Share of 20 ms frames whose RMS is below -50 dBFS."""
    frame = max(1, int(FRAME_S * sampling_rate))
    frames = wave.size // frame
    if frames == 0:
        return 1.0
    blocks = wave[: frames * frame].astype(np.float64).reshape(frames, frame)
    rms = np.sqrt(np.mean(blocks * blocks, axis=1))
    return float(np.count_nonzero(rms < 10 ** (SILENT_FRAME_DBFS / 20))) / frames


@dataclass(frozen=True, slots=True)
class QualityLimits:
    """Where a measure becomes an anomaly (server settings --quality-*)."""

    min_snr_db: float = 25.0
    # Measured on the bundled voice (docs/observability.md): no clipped samples, at most
    # 38 % silent frames, 0.046-0.066 s per character; doubling the gain of speech
    # clips ~1 % of its samples.
    max_clipping_ratio: float = 0.001
    max_silence_ratio: float = 0.8
    min_seconds_per_char: float = 0.02
    # Digits expand when spoken ("2024-12-01" is ~0.3 s a character): runaway output
    # (a decoder that never stops) is many times longer.
    max_seconds_per_char: float = 0.4
    # Duration checks skip segments shorter than this many characters ("Hi.", "OK"):
    # their fixed lead-in and tail dominate the ratio.
    min_chars_for_duration: int = 8


@dataclass(frozen=True, slots=True)
class SegmentQuality:
    seconds: float
    snr_db: float | None  # None when there is no signal to estimate it from
    clipping_ratio: float
    silence_ratio: float
    seconds_per_char: float | None
    anomalies: tuple[str, ...]


def assess(
    wave: np.ndarray,
    sampling_rate: int,
    characters: int,
    limits: QualityLimits,
    *,
    speed: float = 1.0,
    nonfinite: bool = False,
) -> SegmentQuality:
    """Measure one segment and name its anomalies.

    `characters` is the length of the segment's input text and `speed` the speed the
    client asked for (seconds per character are compared at speed 1). `nonfinite` says
    that NaN/inf samples were already replaced upstream (the engine's guard does).
    """
    anomalies: list[str] = []
    finite = np.isfinite(wave)
    if nonfinite or not bool(finite.all()):
        anomalies.append("nan")
        wave = np.where(finite, wave, 0.0)
    seconds = wave.size / sampling_rate
    silent_share = silence_ratio(wave, sampling_rate)
    clipped = clipping_ratio(wave)
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    silent = peak < SILENT_PEAK
    if silent or silent_share > limits.max_silence_ratio:
        anomalies.append("silence")
    if clipped > limits.max_clipping_ratio:
        anomalies.append("clipping")
    snr = None if silent else wada_snr(wave)
    if snr is not None and snr < limits.min_snr_db:
        anomalies.append("low_snr")
    per_char = seconds * speed / characters if characters > 0 else None
    if per_char is not None and not silent and characters >= limits.min_chars_for_duration:
        if per_char < limits.min_seconds_per_char:
            anomalies.append("too_short")
        elif per_char > limits.max_seconds_per_char:
            anomalies.append("too_long")
    return SegmentQuality(seconds, snr, clipped, silent_share, per_char, tuple(anomalies))
