"""The SpeechT5 family and the speaker encoder, on tiny random-weight checkpoints.

Checked against transformers' own `generate_speech` (with its prenet dropout drawn the
way ours is), for batch invariance, and for per-item speaker embeddings in one batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from voicefleet_server.engine.device import Precision
from voicefleet_server.engine.guard import guarded_render
from voicefleet_server.engine.model import SynthesisItem
from voicefleet_server.engine.speaker_encoder import SpeakerEncoder
from voicefleet_server.engine.speecht5 import (
    SpeechT5Synthesizer,
    batched_speecht5_generate,
    is_speecht5,
    vocode,
)

CPU = Precision("cpu", None)
TEXTS = ("Hello world.", "A longer line, to pad others.", "Short")


@pytest.fixture(scope="module")
def family_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from voicefleet_server.cli import make_tiny_model_main

    out = tmp_path_factory.mktemp("tiny-speecht5")
    assert make_tiny_model_main([str(out), "--family", "speecht5"]) == 0
    return out


@pytest.fixture(scope="module")
def synthesizer(family_dir: Path) -> SpeechT5Synthesizer:
    return SpeechT5Synthesizer(str(family_dir / "model"), str(family_dir / "vocoder"), CPU)


@pytest.fixture(scope="module")
def encoder(family_dir: Path) -> SpeakerEncoder:
    return SpeakerEncoder(str(family_dir / "speaker-encoder"), CPU)


def clips(rate: int) -> list[np.ndarray]:
    """Three unlike reference clips: a low hum, a high whistle, noise."""
    t = np.arange(2 * rate) / rate
    noise = np.random.default_rng(3).standard_normal(len(t))
    return [
        (0.5 * np.sin(2 * np.pi * 110 * t)).astype(np.float32),
        (0.3 * np.sin(2 * np.pi * 3000 * t) * np.sin(2 * np.pi * 3 * t)).astype(np.float32),
        (0.2 * noise).astype(np.float32),
    ]


@pytest.fixture(scope="module")
def embeddings(encoder: SpeakerEncoder) -> list[np.ndarray]:
    return [encoder.embed(clip) for clip in clips(encoder.sampling_rate)]


def items(synthesizer: SpeechT5Synthesizer, voices: list[np.ndarray | None]) -> list[SynthesisItem]:
    return [
        SynthesisItem(synthesizer.tokenize(text), seed=7 + i, speaker_embedding=voice)
        for i, (text, voice) in enumerate(zip(TEXTS, voices, strict=True))
    ]


def test_detects_the_family(family_dir: Path, tiny_model_dir: str) -> None:
    assert is_speecht5(str(family_dir / "model"))
    assert not is_speecht5(tiny_model_dir)


def test_loads_built_in_voices_and_tokenizes(synthesizer: SpeechT5Synthesizer) -> None:
    assert [v.id for v in synthesizer.voices] == ["default", "alt"]
    assert synthesizer.sampling_rate == 16000
    assert synthesizer.tokenize("Hello there.")
    assert synthesizer.tokenize("\u4f60\u597d") == []  # nothing in the alphabet


def test_embeddings_are_unit_length_deterministic_and_distinct(
    encoder: SpeakerEncoder, embeddings: list[np.ndarray]
) -> None:
    assert all(e.shape == (encoder.embedding_dim,) for e in embeddings)
    assert all(abs(float(np.linalg.norm(e)) - 1) < 1e-5 for e in embeddings)
    again = encoder.embed(clips(encoder.sampling_rate)[0])
    np.testing.assert_allclose(again, embeddings[0], atol=1e-6)
    assert min(float(np.abs(a - b).max()) for a, b in [embeddings[:2], embeddings[1:]]) > 1e-3


@pytest.fixture
def transformers_dropout(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[torch.Generator]]:
    """Make transformers' prenet dropout draw each step's mask as ours does."""
    from transformers.models.speecht5 import modeling_speecht5

    holder: list[torch.Generator] = []

    def dropout(self: object, inputs: torch.Tensor, p: float) -> torch.Tensor:
        keep = torch.rand(inputs.shape[-1], generator=holder[0]) < p
        return torch.where(keep, inputs, 0) / (1 - p)

    monkeypatch.setattr(
        modeling_speecht5.SpeechT5SpeechDecoderPrenet, "_consistent_dropout", dropout
    )
    yield holder


def test_matches_transformers_generate_speech(
    synthesizer: SpeechT5Synthesizer,
    embeddings: list[np.ndarray],
    transformers_dropout: list[torch.Generator],
) -> None:
    ids = torch.tensor([synthesizer.tokenize(TEXTS[0])])
    speaker = torch.tensor(embeddings[0]).unsqueeze(0)
    ratio = synthesizer.max_len_ratio
    ours, frames = batched_speecht5_generate(
        synthesizer.model, ids, torch.ones_like(ids), speaker, [5], max_len_ratio=ratio
    )
    transformers_dropout.append(torch.Generator().manual_seed(5))
    with torch.inference_mode():
        theirs = synthesizer.model.generate_speech(ids, speaker, maxlenratio=ratio)
    assert frames == [theirs.shape[0]]
    torch.testing.assert_close(ours[0], theirs, atol=1e-5, rtol=1e-4)
    with torch.inference_mode():
        reference = synthesizer.vocoder(theirs)
    torch.testing.assert_close(
        vocode(synthesizer.vocoder, [ours[0]])[0], reference, atol=1e-5, rtol=1e-4
    )


def test_batched_equals_solo(
    synthesizer: SpeechT5Synthesizer, embeddings: list[np.ndarray]
) -> None:
    voices: list[np.ndarray | None] = list(embeddings)
    batched = synthesizer.synthesize(items(synthesizer, voices))
    for item, wave in zip(items(synthesizer, voices), batched, strict=True):
        solo = synthesizer.synthesize([item])[0]
        assert solo.shape == wave.shape
        peak = float(np.abs(solo).max())
        assert peak > 1e-4
        # Different batch shapes pick different float kernels: equal up to rounding.
        assert float(np.abs(solo - wave).max()) <= 1e-4 * peak


def test_each_item_gets_its_own_speaker(
    synthesizer: SpeechT5Synthesizer, embeddings: list[np.ndarray]
) -> None:
    mixed = synthesizer.synthesize(items(synthesizer, list(embeddings)))
    shared = synthesizer.synthesize(items(synthesizer, [embeddings[0]] * 3))
    peak = max(float(np.abs(w).max()) for w in mixed)
    # Item 0 has the same voice in both batches; the others do not.
    assert float(np.abs(mixed[0] - shared[0]).max()) <= 1e-4 * peak
    for i in (1, 2):
        assert float(np.abs(mixed[i] - shared[i]).max()) > 1e-2 * peak
    # Built-in voices go by speaker_index when no embedding is given.
    default, alt = synthesizer.synthesize(
        [SynthesisItem(synthesizer.tokenize(TEXTS[0]), speaker_index=i, seed=1) for i in (0, 1)]
    )
    assert float(np.abs(default - alt).max()) > 1e-2 * peak


def test_speed_changes_duration(synthesizer: SpeechT5Synthesizer) -> None:
    tokens = synthesizer.tokenize(TEXTS[1])
    normal, fast = synthesizer.synthesize(
        [SynthesisItem(tokens, seed=1), SynthesisItem(tokens, seed=1, speed=2.0)]
    )
    assert abs(len(fast) / len(normal) - 0.5) < 0.05


def test_wrong_embedding_size_is_refused(synthesizer: SpeechT5Synthesizer) -> None:
    item = SynthesisItem(synthesizer.tokenize("hi"), speaker_embedding=np.ones(3, np.float32))
    with pytest.raises(ValueError, match="speaker embedding has 3 values"):
        synthesizer.synthesize([item])


def test_guard_reruns_bad_items_in_float32() -> None:
    def render(batch: object, autocast: torch.dtype | None) -> list[np.ndarray]:
        assert isinstance(batch, list)
        good = np.full(10, 0.5, np.float32)
        bad = np.full(10, np.nan, np.float32)
        if autocast is None:
            return [good for _ in batch]
        return [bad if i == 1 else good for i in range(len(batch))]

    batch = [SynthesisItem([1]), SynthesisItem([2])]
    waves = guarded_render(render, batch, torch.float16)
    assert [i.reran_fp32 for i in batch] == [False, True]
    assert all(np.isfinite(w).all() for w in waves)
