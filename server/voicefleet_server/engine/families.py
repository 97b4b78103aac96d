"""Model-family selection: the one place that knows which families exist.

`load_family` looks at a checkpoint and loads the family that reads it, returning it as a
`SpeechModel` (engine/model.py) plus, for families that clone voices from reference audio,
the speaker encoder that makes their embeddings. Nothing above the engine names a family
class: a new family (e.g. Piper) is one more branch here, behind the same interface.
"""

from __future__ import annotations

from dataclasses import dataclass

from voicefleet_server.engine.device import Precision
from voicefleet_server.engine.model import SpeechModel
from voicefleet_server.engine.piper import PiperSynthesizer, is_piper_source
from voicefleet_server.engine.speaker_encoder import SpeakerEncoder
from voicefleet_server.engine.speecht5 import SpeechT5Synthesizer, is_speecht5
from voicefleet_server.engine.vits import VitsSynthesizer


@dataclass(frozen=True, slots=True)
class LoadedFamily:
    """A loaded model and, when its family is conditioned on speaker vectors, the encoder
    that turns reference audio into one (None: this model cannot clone voices)."""

    model: SpeechModel
    encoder: SpeakerEncoder | None = None


def load_family(
    source: str,
    precision: Precision,
    *,
    revision: str | None = None,
    vocoder: str,
    speaker_encoder: str,
) -> LoadedFamily:
    """Load `source` with the family that reads it (blocking: call it off the event loop).

    `vocoder` and `speaker_encoder` are read by SpeechT5 only. The model is not warmed up
    here (the caller warms it up before tuning); the encoder is, since nothing else will.
    Piper voices (a .onnx, a directory holding one, a converted checkpoint, or a bundled
    voice's name) are converted on first use and cached; `revision` does not apply to them.
    """
    if is_piper_source(source):
        return LoadedFamily(PiperSynthesizer(source, precision))
    if is_speecht5(source, revision):
        model = SpeechT5Synthesizer(source, vocoder, precision, revision)
        encoder = SpeakerEncoder(speaker_encoder, precision)
        if encoder.embedding_dim != model.embedding_dim:
            raise ValueError(
                f"speaker encoder {speaker_encoder!r} makes {encoder.embedding_dim}-d "
                f"embeddings; the model takes {model.embedding_dim}"
            )
        encoder.warm_up()
        return LoadedFamily(model, encoder)
    return LoadedFamily(VitsSynthesizer(source, precision, revision))
