"""The audio-quality measures on synthetic signals and on real speech (espeak-ng's own
WAV output), and the WADA-SNR curve recomputed from its model."""

from __future__ import annotations

import io
import shutil
import subprocess
import time
from collections.abc import Sequence

import numpy as np
import pytest
import soundfile as sf
from voicefleet_server.engine.quality import (
    WADA_DB,
    WADA_G,
    QualityLimits,
    assess,
    clipping_ratio,
    silence_ratio,
    wada_curve,
    wada_snr,
)

LIMITS = QualityLimits()
SENTENCE = (
    "The museum's new exhibition explores the history of flight, "
    "from early balloons to modern jet engines."
)


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, int]:
    """Real speech: espeak-ng (a formant synthesizer, run as a program)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/bootstrap.sh installs it)")
    wav = subprocess.run(
        ["espeak-ng", "--stdout", SENTENCE], capture_output=True, check=True, timeout=30
    ).stdout
    wave, rate = sf.read(io.BytesIO(wav), dtype="float32")
    return wave, int(rate)


def test_committed_curve_matches_its_model() -> None:
    picks = [0, 20, 40, 45, 50, 70, 120]  # -20, 0, 20, 25, 30, 50, 100 dB
    np.testing.assert_allclose(wada_curve(WADA_DB[picks]), WADA_G[picks], atol=2e-6)
    assert np.all(np.diff(WADA_G) > 0)


def test_pure_noise_is_the_floor() -> None:
    noise = np.random.default_rng(1).standard_normal(66_150).astype(np.float32) * 0.1
    assert wada_snr(noise) < 0  # the curve is flat down there: any value near -20..-10


@pytest.mark.parametrize("snr_db", [5.0, 10.0, 20.0, 30.0])
def test_estimates_the_snr_of_speech_in_noise(
    speech: tuple[np.ndarray, int], snr_db: float
) -> None:
    wave, _ = speech
    rng = np.random.default_rng(int(snr_db))
    noise = rng.standard_normal(wave.size) * np.sqrt(np.mean(wave**2) / 10 ** (snr_db / 10))
    assert wada_snr((wave + noise).astype(np.float32)) == pytest.approx(snr_db, abs=3.5)


def test_clean_speech_has_no_anomaly(speech: tuple[np.ndarray, int]) -> None:
    wave, rate = speech
    quality = assess(wave, rate, len(SENTENCE), LIMITS)
    assert quality.anomalies == ()
    assert quality.snr_db is not None and quality.snr_db > LIMITS.min_snr_db
    assert quality.clipping_ratio == 0.0
    assert 0.0 < quality.silence_ratio < 0.5
    assert quality.seconds_per_char == pytest.approx(wave.size / rate / len(SENTENCE))


def test_noise_is_low_snr(speech: tuple[np.ndarray, int]) -> None:
    _, rate = speech
    noise = np.random.default_rng(2).uniform(-0.3, 0.3, 3 * rate).astype(np.float32)
    assert assess(noise, rate, len(SENTENCE) // 2, LIMITS).anomalies == ("low_snr",)


def test_noisy_speech_is_low_snr(speech: tuple[np.ndarray, int]) -> None:
    wave, rate = speech
    noise = np.random.default_rng(3).standard_normal(wave.size) * np.sqrt(np.mean(wave**2) / 10)
    quality = assess((wave + noise).astype(np.float32), rate, len(SENTENCE), LIMITS)
    assert quality.anomalies == ("low_snr",)


def test_silence(speech: tuple[np.ndarray, int]) -> None:
    _, rate = speech
    quality = assess(np.zeros(3 * rate, np.float32), rate, 40, LIMITS)
    assert quality.anomalies == ("silence",)
    assert quality.snr_db is None
    assert silence_ratio(np.zeros(rate, np.float32), rate) == 1.0


def test_mostly_silent_speech(speech: tuple[np.ndarray, int]) -> None:
    wave, rate = speech
    padded = np.concatenate([wave[: rate // 2], np.zeros(10 * rate, np.float32)])
    assert "silence" in assess(padded, rate, 40, LIMITS).anomalies


def test_clipped_speech(speech: tuple[np.ndarray, int]) -> None:
    wave, rate = speech
    loud = np.clip(wave / np.abs(wave).max() * 2.0, -1.0, 1.0)
    quality = assess(loud, rate, len(SENTENCE), LIMITS)
    assert quality.anomalies == ("clipping",)
    assert clipping_ratio(loud) > LIMITS.max_clipping_ratio


def test_nan_is_reported_and_the_rest_still_measured(speech: tuple[np.ndarray, int]) -> None:
    wave, rate = speech
    broken = wave.copy()
    broken[1000:1100] = np.nan
    quality = assess(broken, rate, len(SENTENCE), LIMITS)
    assert quality.anomalies == ("nan",)
    assert quality.snr_db is not None and quality.snr_db > LIMITS.min_snr_db
    # Already zeroed upstream: the flag alone reports it.
    assert assess(wave, rate, len(SENTENCE), LIMITS, nonfinite=True).anomalies == ("nan",)


def test_truncated_and_runaway_durations(speech: tuple[np.ndarray, int]) -> None:
    wave, rate = speech
    assert assess(wave[: wave.size // 6], rate, len(SENTENCE), LIMITS).anomalies == ("too_short",)
    assert assess(np.tile(wave, 8), rate, len(SENTENCE), LIMITS).anomalies == ("too_long",)
    # Speed 3 makes speech 3x shorter: compared at speed 1 it is normal.
    fast = wave[: wave.size // 3]
    assert assess(fast, rate, len(SENTENCE), LIMITS, speed=3.0).anomalies == ()
    # Too few characters to judge the duration of.
    assert assess(np.tile(wave, 8), rate, 5, LIMITS).anomalies == ()


def test_thresholds_are_settings(speech: tuple[np.ndarray, int]) -> None:
    wave, rate = speech
    strict = QualityLimits(min_snr_db=101.0)
    assert assess(wave, rate, len(SENTENCE), strict).anomalies == ("low_snr",)


def test_cost_per_segment(speech: tuple[np.ndarray, int]) -> None:
    """Cheap: a small share of the audio's own duration (measured: see the print)."""
    wave, rate = speech
    runs = 50
    assess(wave, rate, len(SENTENCE), LIMITS)
    started = time.process_time()
    for _ in range(runs):
        assess(wave, rate, len(SENTENCE), LIMITS)
    per_segment = (time.process_time() - started) / runs
    audio_s = wave.size / rate
    print(f"quality check: {per_segment * 1e3:.2f} ms CPU per {audio_s:.1f} s segment")
    assert per_segment < 0.01 * audio_s  # under 1 % of real time, whatever the machine load


def test_guard_marks_items_still_nonfinite_after_the_float32_rerun() -> None:
    import torch
    from voicefleet_server.engine.guard import guarded_render
    from voicefleet_server.engine.model import SynthesisItem

    def render(batch: Sequence[SynthesisItem], autocast: torch.dtype | None) -> list[np.ndarray]:
        # Two tokens render fine; one token renders NaN in any precision.
        return [
            np.full(100, 0.5 if len(item.token_ids) == 2 else np.nan, np.float32) for item in batch
        ]

    items = [SynthesisItem([1, 2]), SynthesisItem([3])]
    waves = guarded_render(render, items, torch.bfloat16)
    assert [i.nonfinite for i in items] == [False, True]
    assert [i.reran_fp32 for i in items] == [False, True]
    assert np.all(waves[1] == 0.0)


def test_limits_come_from_flags_and_environment() -> None:
    from voicefleet_server.cli import settings_from

    settings = settings_from(
        ["--quality-min-snr-db", "30"], {"VOICEFLEET_QUALITY_MAX_CLIPPING_RATIO": "0.01"}
    )
    assert settings.quality_limits == QualityLimits(min_snr_db=30.0, max_clipping_ratio=0.01)
    assert settings_from([], {}).quality_limits == QualityLimits()  # defaults agree
