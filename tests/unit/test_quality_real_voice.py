"""The quality checks on the real voice (the bundled Piper voice, converted, rendered by our
VITS engine with seeded noise): normal speech over a varied text set raises anomalies for
under 1 % of segments, and noise, silence and clipping made from that voice are flagged."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from voicefleet_server.engine.device import Precision
from voicefleet_server.engine.model import SynthesisItem
from voicefleet_server.engine.piper import PiperSynthesizer
from voicefleet_server.engine.quality import QualityLimits, assess
from voicefleet_server.engine.segmenter import split_segments

TEXTS = Path(__file__).parents[1] / "data" / "quality_texts.txt"
LIMITS = QualityLimits()


def segments() -> list[str]:
    lines = [line.strip() for line in TEXTS.read_text().splitlines()]
    return [s for line in lines if line and not line.startswith("#") for s in split_segments(line)]


@pytest.fixture(scope="module")
def voice(piper_checkpoint_dir: str) -> Iterator[PiperSynthesizer]:
    synth = PiperSynthesizer(piper_checkpoint_dir, Precision("cpu", None))
    yield synth
    synth.close()


def render(voice: PiperSynthesizer, texts: list[str]) -> list[np.ndarray]:
    waves: list[np.ndarray] = []
    for start in range(0, len(texts), 4):
        batch = [
            SynthesisItem(voice.tokenize(text), seed=start + i)
            for i, text in enumerate(texts[start : start + 4])
        ]
        waves += voice.synthesize(batch)
    return waves


@pytest.mark.slow
@pytest.mark.timeout(1200)  # ~100 segments of real speech on a shared 2-core CPU
def test_normal_speech_rarely_raises_anomalies(voice: PiperSynthesizer) -> None:
    texts = segments()
    assert len(texts) >= 100
    found: Counter[str] = Counter()
    flagged = []
    snrs = []
    for text, wave in zip(texts, render(voice, texts), strict=True):
        quality = assess(wave, voice.sampling_rate, len(text), LIMITS)
        found.update(quality.anomalies)
        snrs.append(quality.snr_db)
        if quality.anomalies:
            flagged.append((text, quality.anomalies, quality.snr_db))
    rate = len(flagged) / len(texts)
    print(
        f"real voice: {len(flagged)} of {len(texts)} segments flagged ({rate:.1%}) {dict(found)}; "
        f"SNR min {min(s for s in snrs if s is not None):.1f} dB, "
        f"median {np.median([s for s in snrs if s is not None]):.1f} dB"
    )
    assert rate < 0.01, flagged


SENTENCES = [
    "The weather tomorrow will be cloudy with a chance of light rain in the afternoon.",
    "Please make sure all windows are closed before you leave the building.",
    "Learning a new language takes patience, practice, and a little courage.",
]


@pytest.fixture(scope="module")
def speech(voice: PiperSynthesizer) -> list[np.ndarray]:
    return render(voice, SENTENCES)


def test_the_voice_itself_is_clean(voice: PiperSynthesizer, speech: list[np.ndarray]) -> None:
    for text, wave in zip(SENTENCES, speech, strict=True):
        assert assess(wave, voice.sampling_rate, len(text), LIMITS).anomalies == ()


def test_noise_silence_and_clipping_made_from_the_voice_are_flagged(
    voice: PiperSynthesizer, speech: list[np.ndarray]
) -> None:
    rate = voice.sampling_rate
    rng = np.random.default_rng(7)
    for text, wave in zip(SENTENCES, speech, strict=True):
        chars = len(text)
        power = float(np.mean(wave**2))
        noisy = wave + rng.standard_normal(wave.size).astype(np.float32) * np.sqrt(power / 10)
        assert "low_snr" in assess(noisy, rate, chars, LIMITS).anomalies  # speech at 10 dB SNR
        noise = rng.standard_normal(wave.size).astype(np.float32) * np.sqrt(power)
        assert "low_snr" in assess(noise, rate, chars, LIMITS).anomalies  # noise, no speech
        silent = np.zeros_like(wave)
        assert assess(silent, rate, chars, LIMITS).anomalies == ("silence",)
        loud = np.clip(wave / np.abs(wave).max() * 3.0, -1.0, 1.0)
        assert "clipping" in assess(loud, rate, chars, LIMITS).anomalies
