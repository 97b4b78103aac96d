"""The batched VITS path against transformers' own forward, on the tiny checkpoint."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, VitsModel
from voicefleet_server.engine import shapes, vits
from voicefleet_server.engine.device import Precision, resolve_precision
from voicefleet_server.engine.hifigan import masked_hifigan
from voicefleet_server.engine.model import SynthesisItem
from voicefleet_server.engine.vits import VitsSynthesizer, batched_vits_inference

FP32 = Precision("cpu", None)


def test_matches_transformers_forward_when_noise_is_off(tiny_model_dir: str) -> None:
    model = VitsModel.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model.noise_scale = model.noise_scale_duration = 0.0
    encoded = tokenizer(["hello there, general kenobi."], return_tensors="pt")
    with torch.inference_mode():
        reference = model(**encoded)
    waveform, lengths, _ = batched_vits_inference(
        model, encoded["input_ids"], encoded["attention_mask"], None, [1.0], [0]
    )
    assert torch.equal(lengths, reference.sequence_lengths)
    # The engine's vocoder sums in another order (channels-last, polyphase upsampling:
    # engine/hifigan.py): equal up to float32 rounding, well under one 16-bit step.
    # Its frame axis is rounded up to a shape bucket (engine/shapes.py): a longer row.
    samples = reference.waveform.shape[1]
    assert waveform.shape[1] >= samples
    assert torch.allclose(waveform[:, :samples], reference.waveform, atol=1e-4)


def test_batched_output_equals_solo_output(tiny_model_dir: str) -> None:
    synth = VitsSynthesizer(tiny_model_dir, FP32)
    short = SynthesisItem(synth.tokenize("a short one."), seed=11)
    long = SynthesisItem(
        synth.tokenize("and a much longer sentence that pads the short one a lot."), seed=12
    )
    solo = synth.synthesize([SynthesisItem(short.token_ids, seed=11)])[0]
    batched = synth.synthesize([long, short])[1]
    assert len(batched) == len(solo)
    # Batch invariance: the masked decoder keeps padding out of the short item's tail.
    assert np.max(np.abs(batched - solo)) < 1e-3


def test_shape_buckets_do_not_change_an_items_audio(tiny_model_dir: str) -> None:
    synth = VitsSynthesizer(tiny_model_dir, FP32)
    ids = synth.tokenize("a short one, and then some.")
    assert shapes.tokens(len(ids)) > len(ids)  # the bucket adds padding tokens
    bucketed = synth.synthesize([SynthesisItem(ids, seed=11)])[0]
    with shapes.exact_lengths():
        exact = synth.synthesize([SynthesisItem(ids, seed=11)])[0]
    assert len(bucketed) == len(exact)
    assert np.max(np.abs(bucketed - exact)) < 1e-4


def test_seed_reproduces_and_different_seeds_differ(tiny_model_dir: str) -> None:
    synth = VitsSynthesizer(tiny_model_dir, FP32)
    tokens = synth.tokenize("same words twice.")
    first, second, other = (synth.synthesize([SynthesisItem(tokens, seed=s)])[0] for s in (5, 5, 6))
    assert np.array_equal(first, second)
    assert len(first) != len(other) or not np.allclose(first, other)


def test_speed_changes_duration_per_item(tiny_model_dir: str) -> None:
    synth = VitsSynthesizer(tiny_model_dir, FP32)
    tokens = synth.tokenize("speed test sentence.")
    slow, normal, fast = synth.synthesize(
        [SynthesisItem(tokens, speed=s, seed=1) for s in (0.5, 1.0, 2.0)]
    )
    assert len(slow) > len(normal) > len(fast)


def test_a_batch_mixes_speakers(tiny_multispeaker_dir: str) -> None:
    synth = VitsSynthesizer(tiny_multispeaker_dir, FP32)
    assert [v.id for v in synth.voices] == ["speaker-0", "speaker-1", "speaker-2"]
    tokens = synth.tokenize("who is speaking?")
    mixed = synth.synthesize([SynthesisItem(tokens, speaker_index=i, seed=3) for i in range(3)])
    solo = [synth.synthesize([SynthesisItem(tokens, speaker_index=i, seed=3)])[0] for i in range(3)]
    for got, want in zip(mixed, solo, strict=True):
        assert len(got) == len(want) and np.max(np.abs(got - want)) < 1e-3
    assert not np.allclose(solo[0][: len(solo[1])], solo[1][: len(solo[0])])


def test_empty_or_unpronounceable_text_has_no_tokens(tiny_model_dir: str) -> None:
    synth = VitsSynthesizer(tiny_model_dir, FP32)
    assert synth.tokenize("") == []
    assert synth.tokenize("日本語") == []
    assert synth.tokenize("ok") != []


class _ReducedPrecisionBreaks(VitsSynthesizer):
    """Reduced precision yields NaN for every item, as an fp16 overflow would."""

    def _run(self, items, autocast):  # type: ignore[no-untyped-def]
        waves = super()._run(items, autocast)
        return [np.full_like(w, np.nan) for w in waves] if autocast is not None else waves


def test_nan_output_is_rerun_in_float32(tiny_model_dir: str) -> None:
    precision = Precision("cpu", torch.bfloat16)
    synth = _ReducedPrecisionBreaks(tiny_model_dir, precision)
    items = [SynthesisItem(synth.tokenize("fine words."), seed=1)]
    wave = synth.synthesize(items)[0]
    assert items[0].reran_fp32
    reference = VitsSynthesizer(tiny_model_dir, FP32).synthesize(
        [SynthesisItem(items[0].token_ids, seed=1)]
    )[0]
    assert np.isfinite(wave).all() and np.allclose(wave, reference, atol=1e-5)


def test_precision_choice() -> None:
    assert resolve_precision("cpu", "float32").autocast is None
    assert resolve_precision("cuda", "auto").autocast == torch.float16
    # On CPU `auto` starts in float32; start-up tuning switches only by measurement.
    assert resolve_precision("cpu", "auto").autocast is None
    assert resolve_precision("cpu", "bfloat16").autocast == torch.bfloat16
    with pytest.raises(ValueError, match="float16 is not supported on CPU"):
        resolve_precision("cpu", "float16")


def test_on_cpu_bf16_autocast_leaves_the_text_encoder_in_float32(
    tiny_model_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bf16 in the text encoder shifted predicted durations of fresh mms-size renders (a
    changed rendering, correlation 0.69 with float32): on CPU only the decoder autocasts."""
    synth = VitsSynthesizer(tiny_model_dir, Precision("cpu", torch.bfloat16))
    seen: dict[str, bool] = {}
    encoder = synth.model.text_encoder
    encoder.register_forward_pre_hook(
        lambda *_: seen.update(encoder=torch.is_autocast_enabled("cpu"))
    )

    def vocoder(*args: Any) -> torch.Tensor:
        seen.update(decoder=torch.is_autocast_enabled("cpu"))
        return masked_hifigan(*args)

    monkeypatch.setattr(vits, "masked_hifigan", vocoder)
    synth.synthesize([SynthesisItem(synth.tokenize("fine words."), seed=1)])
    assert seen == {"encoder": False, "decoder": True}


def _conv_input_shapes(model: Any) -> tuple[dict[str, set[tuple[int, ...]]], list[Any]]:
    """Every conv's input shapes, recorded by hooks (returned to be removed)."""
    seen: dict[str, set[tuple[int, ...]]] = {}
    hooks = [
        module.register_forward_pre_hook(
            lambda _m, args, name=name: seen.setdefault(name, set()).add(tuple(args[0].shape))
        )
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Conv1d | torch.nn.ConvTranspose1d)
    ]
    return seen, hooks


@pytest.mark.parametrize("checkpoint", ["tiny_model_dir", "tiny_multispeaker_dir"])
def test_warming_a_bucket_runs_every_conv_a_render_in_it_runs(
    checkpoint: str, request: pytest.FixtureRequest
) -> None:
    """Start-up tuning warms each shape bucket so that requests find their kernels built:
    every conv a render runs (duration predictor included) must run at the same shapes."""
    synth = VitsSynthesizer(request.getfixturevalue(checkpoint), FP32)
    rendered, hooks = _conv_input_shapes(synth.model)
    synth.synthesize([SynthesisItem(synth.tokenize("a few fine words."), seed=1)])
    for hook in hooks:
        hook.remove()

    def length(stage: str) -> int:  # the render's (bucketed) length in that stage
        return max(
            shape[-1]
            for name, found in rendered.items()
            if name.startswith(stage)
            for shape in found
        )

    assert any(name.startswith("duration_predictor.") for name in rendered)
    warmed, _ = _conv_input_shapes(synth.model)
    synth.warm_kernels(length("duration_predictor."), length("flow."))
    missing = {
        name: found for name, found in rendered.items() if not found <= warmed.get(name, set())
    }
    assert not missing


def test_token_durations_sum_to_the_audio_and_match_solo(tiny_model_dir: str) -> None:
    synth = VitsSynthesizer(tiny_model_dir, FP32)
    short = SynthesisItem(synth.tokenize("a short one."), seed=11)
    long = SynthesisItem(
        synth.tokenize("and a much longer sentence that pads the short one a lot."), seed=12
    )
    solo = SynthesisItem(short.token_ids, seed=11)
    (solo_wave,) = synth.synthesize([solo])
    waves = synth.synthesize([long, short])
    for item, wave in [(solo, solo_wave), (long, waves[0]), (short, waves[1])]:
        assert item.token_samples is not None
        assert len(item.token_samples) == len(item.token_ids)
        assert sum(item.token_samples) == len(wave)
        assert all(n >= 0 for n in item.token_samples)
    # Batched = solo: padding does not move the short item's durations.
    assert short.token_samples == solo.token_samples


def test_silent_tokens_and_word_breaks(tiny_model_dir: str) -> None:
    synth = VitsSynthesizer(tiny_model_dir, FP32)
    vocab = synth.tokenizer.get_vocab()
    silent = synth.silent_tokens
    assert synth.pad_token_id in silent and vocab[" "] in silent and vocab[","] in silent
    assert all(vocab[c] not in silent for c in "ab" if c in vocab)
    # Spaces separate words; the blank between every two symbols and punctuation do not.
    assert vocab[" "] in synth.break_tokens
    assert synth.pad_token_id not in synth.break_tokens and vocab[","] not in synth.break_tokens
