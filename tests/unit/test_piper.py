"""Piper voices on the VITS engine: conversion against onnxruntime, batching, round trip,
the phoneme-id format, multi-speaker mapping and broken voice files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from voicefleet_server.engine.device import Precision
from voicefleet_server.engine.model import SynthesisItem
from voicefleet_server.engine.piper import (
    BUNDLED_VOICE,
    PiperSynthesizer,
    bundled_voice_path,
    is_piper_source,
    phoneme_ids,
    piper_checkpoint,
    piper_voices,
)
from voicefleet_server.engine.piper_convert import (
    PiperVoiceError,
    build_model,
    cached_checkpoint,
    convert_piper,
    model_from_weights,
)
from voicefleet_server.engine.piper_model import PiperVitsModel
from voicefleet_server.engine.piper_onnx import read_onnx_weights, read_piper_config, voice_files
from voicefleet_server.engine.vits import batched_vits_inference

FP32 = Precision("cpu", None)
SENTENCES = ("The quick brown fox jumps over the lazy dog.", "Hello there, how are you?")


@pytest.fixture(scope="module")
def synth(piper_checkpoint_dir: str):  # type: ignore[no-untyped-def]
    s = PiperSynthesizer(piper_checkpoint_dir, FP32)
    yield s
    s.close()


def _render(model: object, ids: list[int]) -> np.ndarray:
    x = torch.tensor([ids])
    wave, lengths, _ = batched_vits_inference(model, x, torch.ones_like(x), None, [1.0], [0])
    return wave[0, : int(lengths[0])].numpy()


def test_converted_voice_equals_onnxruntime_at_noise_zero(
    piper_voice_onnx: str, piper_checkpoint_dir: str, synth: PiperSynthesizer
) -> None:
    import onnxruntime

    session = onnxruntime.InferenceSession(piper_voice_onnx, providers=["CPUExecutionProvider"])
    loaded = PiperVitsModel.from_pretrained(piper_checkpoint_dir).eval()  # save/load round trip
    loaded.noise_scale = loaded.noise_scale_duration = 0.0
    for text in SENTENCES:
        ids = synth.tokenize(text)
        reference = session.run(
            None,
            {
                "input": np.array([ids], dtype=np.int64),
                "input_lengths": np.array([len(ids)], dtype=np.int64),
                "scales": np.array([0.0, 1.0, 0.0], dtype=np.float32),  # noise, length, noise_w
            },
        )[0].reshape(-1)
        ours = _render(loaded, ids)
        assert len(ours) == len(reference)
        assert np.max(np.abs(ours - reference)) < 1e-3


def test_save_load_round_trip_is_exact(piper_voice_onnx: str, piper_checkpoint_dir: str) -> None:
    files = voice_files(piper_voice_onnx)
    assert files is not None
    fresh = build_model(files.onnx, read_piper_config(files.config))
    loaded = PiperVitsModel.from_pretrained(piper_checkpoint_dir)
    fresh_state, loaded_state = fresh.state_dict(), loaded.state_dict()
    assert fresh_state.keys() == loaded_state.keys()
    assert all(torch.equal(fresh_state[k], loaded_state[k]) for k in fresh_state)
    # Type-2 decoder blocks, no training-only modules.
    assert loaded.config.resblock_type == "2"
    assert not hasattr(loaded, "posterior_encoder")


def test_batched_item_equals_its_solo_render(synth: PiperSynthesizer) -> None:
    short = synth.tokenize("A short one.")
    long = synth.tokenize("And a much longer sentence that pads the short one a great deal.")
    solo = synth.synthesize([SynthesisItem(short, seed=11)])[0]
    batched = synth.synthesize([SynthesisItem(long, seed=12), SynthesisItem(short, seed=11)])[1]
    assert len(batched) == len(solo)
    assert np.max(np.abs(batched - solo)) < 1e-3
    # Near its end a padded item hears its batch mates' padding through an unmasked
    # decoder (measured: 1.5% of the tail's peak here). The masked decoder keeps it out:
    # the last 0.13 s match to float round-off (measured 2e-6 of the tail's peak).
    tail = int(0.13 * synth.sampling_rate)
    tail_peak = np.max(np.abs(solo[-tail:]))
    assert np.max(np.abs(batched[-tail:] - solo[-tail:])) < 2e-3 * tail_peak


def test_tokens_follow_pipers_layout(synth: PiperSynthesizer) -> None:
    id_map = synth.piper_config["phoneme_id_map"]
    ids = synth.tokenize("Hi.")
    assert ids[:2] == [*id_map["^"], *id_map["_"]] and ids[-1:] == id_map["$"]
    assert ids[2::2][:-1] == [id_map[p][0] for p in synth.phonemes("Hi.")]
    assert set(ids[3:-1:2]) == set(id_map["_"])
    assert synth.tokenize("") == [] and synth.tokenize("   ") == []


def test_phoneme_ids_drop_unknown_and_apply_phoneme_map() -> None:
    id_map = {"^": [1], "$": [2], "_": [0], " ": [3], "a": [4], "b": [5]}
    assert phoneme_ids("a?b", id_map, {}) == [1, 0, 4, 0, 5, 0, 2]
    assert phoneme_ids("c", id_map, {"c": ["a", "b"]}) == [1, 0, 4, 0, 5, 0, 2]
    assert phoneme_ids("???", id_map, {}) == []
    assert phoneme_ids(" ", id_map, {}) == []


def test_speed_and_length_scale_set_the_duration(synth: PiperSynthesizer) -> None:
    ids = synth.tokenize("Speed test sentence.")
    slow, normal, fast = synth.synthesize(
        [SynthesisItem(ids, speed=s, seed=1) for s in (0.75, 1.0, 1.5)]
    )
    assert len(slow) > len(normal) > len(fast)


def test_multi_speaker_voices_map_every_tensor(piper_voice_onnx: str) -> None:
    """No multi-speaker voice ships offline: add the tensors a multi-speaker Piper export
    has (speaker table, decoder/duration/flow conditioning) to the real voice's weights
    and check that every one lands in the model and speakers differ."""
    files = voice_files(piper_voice_onnx)
    assert files is not None
    weights = read_onnx_weights(files.onnx)
    rng = np.random.default_rng(0)
    gin, hidden = 64, 192
    extra = {
        "emb_g.weight": rng.normal(size=(3, gin)),
        "dec.cond.weight": rng.normal(size=(256, gin, 1)) * 0.1,
        "dec.cond.bias": np.zeros(256),
        "dp.cond.weight": rng.normal(size=(hidden, gin, 1)) * 0.1,
        "dp.cond.bias": np.zeros(hidden),
    }
    for flow in (0, 2, 4, 6):
        extra[f"flow.flows.{flow}.enc.cond_layer.weight"] = (
            rng.normal(size=(2 * hidden * 4, gin, 1)) * 0.01
        )
        extra[f"flow.flows.{flow}.enc.cond_layer.bias"] = np.zeros(2 * hidden * 4)
    weights.tensors.update({k: v.astype(np.float32) for k, v in extra.items()})
    piper = read_piper_config(files.config)
    piper.update(num_speakers=3, speaker_id_map={"ann": 0, "bob": 1, "cy": 2})
    model = model_from_weights(weights, piper, files.onnx)
    assert model.config.num_speakers == 3 and model.config.speaker_embedding_size == gin
    assert torch.equal(model.embed_speaker.weight, torch.from_numpy(extra["emb_g.weight"]).float())
    assert [v.id for v in piper_voices(piper)] == ["ann", "bob", "cy"]
    ids = [1, 0, 20, 0, 59, 0, 2]
    x = torch.tensor([ids] * 2)
    wave, _, _ = batched_vits_inference(
        model, x, torch.ones_like(x), torch.tensor([0, 2]), [1.0, 1.0], [3, 3]
    )
    assert not torch.allclose(wave[0], wave[1])


def test_sources_are_recognized(
    piper_voice_onnx: str, piper_checkpoint_dir: str, tiny_model_dir: str
) -> None:
    assert is_piper_source(piper_voice_onnx)
    assert is_piper_source(str(Path(piper_voice_onnx).parent))
    assert is_piper_source(piper_checkpoint_dir)
    assert not is_piper_source(tiny_model_dir)
    assert not is_piper_source("facebook/mms-tts-eng")
    assert piper_checkpoint(tiny_model_dir) is None


def test_onnx_is_converted_once_and_cached(
    piper_voice_onnx: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import voicefleet_server.engine.piper_convert as piper_convert

    voice = tmp_path / "voice"
    voice.mkdir()
    onnx = voice / "en_US-test-medium.onnx"
    onnx.symlink_to(piper_voice_onnx)
    shutil.copy(piper_voice_onnx + ".json", voice / "en_US-test-medium.onnx.json")
    files = voice_files(onnx)
    assert files is not None
    calls: list[Path] = []
    real = piper_convert.convert_piper

    def counting(path: Path, out: Path) -> Path:
        calls.append(path)
        return real(path, out)

    monkeypatch.setattr(piper_convert, "convert_piper", counting)
    first = cached_checkpoint(files, tmp_path / "cache")
    second = cached_checkpoint(files, tmp_path / "cache")
    assert first == second and len(calls) == 1
    assert sorted(p.name for p in first.iterdir()) == [
        "config.json",
        "model.safetensors",
        "piper.json",
    ]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.name]  # no scratch left
    # A changed voice (here: its config) is a different cache entry.
    config = json.loads((voice / "en_US-test-medium.onnx.json").read_text())
    config["inference"]["length_scale"] = 1.2
    (voice / "en_US-test-medium.onnx.json").write_text(json.dumps(config))
    third = cached_checkpoint(files, tmp_path / "cache")
    assert third != first and len(calls) == 2
    assert json.loads((third / "config.json").read_text())["speaking_rate"] == pytest.approx(
        1 / 1.2
    )


# ---- broken voices: fail naming the file, never half-load ---------------------------


def _voice_dir(tmp_path: Path, onnx_bytes: bytes | None, config: str | None) -> Path:
    if onnx_bytes is not None:
        (tmp_path / "bad.onnx").write_bytes(onnx_bytes)
    if config is not None:
        (tmp_path / "bad.onnx.json").write_text(config)
    return tmp_path / "bad.onnx"


def test_missing_onnx_json_is_named(tmp_path: Path, piper_voice_onnx: str) -> None:
    onnx = _voice_dir(tmp_path, b"whatever", None)
    with pytest.raises(PiperVoiceError, match=r"bad\.onnx\.json: missing"):
        piper_checkpoint(str(onnx))


def test_corrupt_onnx_is_named(tmp_path: Path, piper_voice_onnx: str) -> None:
    config = Path(piper_voice_onnx + ".json").read_text()
    onnx = _voice_dir(tmp_path, b"\x00not an onnx model" * 100, config)
    with pytest.raises(PiperVoiceError, match=r"bad\.onnx: not a readable ONNX model"):
        convert_piper(onnx, tmp_path / "out")


def test_an_onnx_that_is_not_a_piper_voice_is_named(tmp_path: Path, piper_voice_onnx: str) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="/relu/Relu")],
        "not-piper",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    config = Path(piper_voice_onnx + ".json").read_text()
    path = _voice_dir(tmp_path, helper.make_model(graph).SerializeToString(), config)
    onnx.checker.check_model(onnx.load(str(path)))
    with pytest.raises(PiperVoiceError, match=r"bad\.onnx: not a Piper VITS voice"):
        convert_piper(path, tmp_path / "out")


def test_a_config_without_phonemes_is_named(tmp_path: Path) -> None:
    path = _voice_dir(tmp_path, b"x", '{"audio": {}}')
    with pytest.raises(PiperVoiceError, match=r"bad\.onnx\.json: not a Piper voice config"):
        convert_piper(path, tmp_path / "out")


def test_convert_piper_command(
    piper_voice_onnx: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from voicefleet.cli import main

    out = tmp_path / "joe"
    assert main(["convert-piper", str(Path(piper_voice_onnx).parent), str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert piper_checkpoint(str(out)) == out
    broken = _voice_dir(tmp_path, b"x", None)
    assert main(["convert-piper", str(broken), str(tmp_path / "nope")]) == 1
    assert "bad.onnx.json: missing" in capsys.readouterr().err
    assert not (tmp_path / "nope").exists()


def test_text_profile_says_espeak_reads_the_text(synth: PiperSynthesizer) -> None:
    profile = synth.text_profile
    assert synth.phonemizes and profile.reads_numbers and profile.vocabulary is None
    assert profile.language == "en"
    # espeak-ng reads digits itself: "3" becomes phonemes, not silence.
    assert len(synth.tokenize("It costs 3 dollars.")) > len(synth.tokenize("It costs dollars."))


def test_the_bundled_voice_is_the_default_and_resolves_by_name(piper_voice_onnx: str) -> None:
    from voicefleet_server.config import ServerSettings

    assert ServerSettings().model == BUNDLED_VOICE == "en_US-joe-medium"
    assert bundled_voice_path(BUNDLED_VOICE) == Path(piper_voice_onnx)
    assert is_piper_source(BUNDLED_VOICE)
    assert bundled_voice_path("facebook/mms-tts-eng") is None

