"""The VITS family (transformers `VitsModel`, e.g. facebook/mms-tts-*): load and batched synthesis.

`VitsModel.forward` takes one speaker and one speaking rate per call and draws noise
shaped by the whole batch, so a seeded item would sound different depending on its
batch mates. `batched_vits_inference` runs the same modules with per-item speakers,
speeds and noise drawn from each item's own generator: batches mix voices and speeds,
and a seed reproduces an item whatever it was batched with (up to the padding effect
near its end, which the engine measures). It is checked against `VitsModel.forward`
in the tests.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from voicefleet_server.engine import shapes
from voicefleet_server.engine.device import Precision
from voicefleet_server.engine.guard import guarded_render
from voicefleet_server.engine.hifigan import masked_hifigan
from voicefleet_server.engine.model import SynthesisItem, TextProfile, Voice, padded_token_batch
from voicefleet_server.engine.preempt import preemption_point
from voicefleet_server.engine.text import model_language, resolve_language
from voicefleet_server.engine.timestamps import break_ids, silent_ids

log = logging.getLogger(__name__)


class VitsOutput(NamedTuple):
    """`waveform` [B, samples] (each row's tail past `lengths` is not silence: trim it);
    `lengths` [B] samples; `token_samples` [B, T] samples of audio each input token lasts
    (the duration predictor's frames times the hop; a row sums to its length)."""

    waveform: torch.Tensor
    lengths: torch.Tensor
    token_samples: torch.Tensor


def _noise(generator: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float32)


@torch.inference_mode()
def batched_vits_inference(
    model: Any,  # a transformers VitsModel; its submodules are used directly
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    speaker_ids: torch.Tensor | None,
    speeds: Sequence[float],
    seeds: Sequence[int],
    autocast: contextlib.AbstractContextManager[object] | None = None,
) -> VitsOutput:
    """VitsModel inference with per-item speakers, speeds and seeded noise."""
    config = model.config
    device = input_ids.device
    batch = input_ids.shape[0]
    heavy = autocast if autocast is not None else contextlib.nullcontext()
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    input_mask = attention_mask.unsqueeze(-1).float()

    speaker = None
    if config.num_speakers > 1 and speaker_ids is not None:
        speaker = model.embed_speaker(speaker_ids).unsqueeze(-1)

    # The text encoder's output sets every duration. On CPU, bf16 there changed predicted
    # lengths (2 of 4 fresh mms-size renders; correlation with float32 fell to 0.69), so it
    # runs under autocast on CUDA only; the decoder, where the time goes, everywhere.
    with heavy if device.type == "cuda" else contextlib.nullcontext():
        encoded = model.text_encoder(
            input_ids=input_ids, padding_mask=input_mask, attention_mask=attention_mask
        )
    preemption_point()  # urgent work may run between stages (engine/preempt.py)
    hidden = encoded.last_hidden_state.float().transpose(1, 2)
    input_mask = input_mask.transpose(1, 2)
    prior_means = encoded.prior_means.float()
    prior_log_variances = encoded.prior_log_variances.float()

    log_duration = predict_log_durations(model, hidden, input_mask, speaker, generators)
    preemption_point()
    # The checkpoint's own rate (transformers' `speaking_rate`; a Piper voice's
    # 1/length_scale) times each item's requested speed.
    rate = float(getattr(config, "speaking_rate", 1.0) or 1.0)
    length_scale = torch.tensor([1.0 / (s * rate) for s in speeds], device=device)
    length_scale = length_scale.view(batch, 1, 1)
    duration = torch.ceil(torch.exp(log_duration) * input_mask * length_scale)
    predicted_lengths = torch.clamp_min(torch.sum(duration, [1, 2]), 1).long()
    frames = shapes.frames(int(predicted_lengths.max()))  # the flows' and vocoder's kernels
    indices = torch.arange(frames, device=device)
    output_mask = (indices.unsqueeze(0) < predicted_lengths.unsqueeze(1)).unsqueeze(1).float()

    # Expand each token's prior over its predicted frames (monotonic alignment).
    attn_mask = torch.unsqueeze(input_mask, 2) * torch.unsqueeze(output_mask, -1)
    cum_duration = torch.cumsum(duration, -1).view(batch * input_ids.shape[1], 1)
    valid = torch.arange(frames, device=device, dtype=duration.dtype).unsqueeze(0) < cum_duration
    valid = valid.float().view(batch, input_ids.shape[1], frames)
    path = valid - torch.nn.functional.pad(valid, [0, 0, 1, 0, 0, 0])[:, :-1]
    attn = path.unsqueeze(1).transpose(2, 3) * attn_mask
    prior_means = torch.matmul(attn.squeeze(1), prior_means).transpose(1, 2)
    prior_log_variances = torch.matmul(attn.squeeze(1), prior_log_variances).transpose(1, 2)

    noise = torch.zeros_like(prior_means, device="cpu")
    for i, length in enumerate(predicted_lengths.tolist()):
        noise[i, :, :length] = _noise(generators[i], (prior_means.shape[1], length))
    prior_latents = (
        prior_means + noise.to(device) * torch.exp(prior_log_variances) * model.noise_scale
    )
    latents = model.flow(prior_latents, output_mask, speaker, reverse=True)
    spectrogram = latents * output_mask
    preemption_point()
    with heavy:
        waveform = masked_hifigan(model.decoder, spectrogram, speaker, predicted_lengths)
    hop = int(np.prod(config.upsample_rates))
    return VitsOutput(
        waveform.squeeze(1).float(), predicted_lengths * hop, duration.squeeze(1).long() * hop
    )


def predict_log_durations(
    model: Any,
    hidden: torch.Tensor,
    input_mask: torch.Tensor,
    speaker: torch.Tensor | None,
    generators: Sequence[torch.Generator],
) -> torch.Tensor:
    """Log duration of each token (batch, 1, tokens), from the text encoder's `hidden`
    (batch, channels, tokens) under `input_mask` (batch, 1, tokens), with each item's
    seeded noise for the stochastic predictor. Stays in float32: its spline flows fail in
    reduced precision."""
    if not model.config.use_stochastic_duration_prediction:
        return model.duration_predictor(hidden, input_mask, speaker)
    dp = model.duration_predictor
    conditioning = dp.conv_pre(hidden)
    if speaker is not None:
        conditioning = conditioning + dp.cond(speaker)
    conditioning = dp.conv_dds(conditioning, input_mask)
    conditioning = dp.conv_proj(conditioning) * input_mask
    flows = list(reversed(dp.flows))
    flows = [*flows[:-2], flows[-1]]  # as transformers: the last-but-one flow is unused
    latents = torch.zeros(hidden.shape[0], 2, hidden.shape[2])
    for i, count in enumerate(input_mask.sum(dim=(1, 2)).tolist()):
        latents[i, :, : int(count)] = _noise(generators[i], (2, int(count)))
    latents = latents.to(hidden.device) * model.noise_scale_duration
    for flow in flows:
        latents = torch.flip(latents, [1])
        latents, _ = flow(latents, input_mask, global_conditioning=conditioning, reverse=True)
    log_duration, _ = torch.split(latents, [1, 1], dim=1)
    return log_duration


@torch.inference_mode()
def warm_kernels(
    model: Any,
    tokens: int,
    frames: int,
    autocast: contextlib.AbstractContextManager[object] | None = None,
) -> None:
    """Build the kernels a one-item call at these (bucketed) lengths runs: the text encoder
    and the duration predictor over `tokens`, the flows and the vocoder over `frames`
    (engine/shapes.py), with a speaker's conditioning where the model has speakers. On
    zeros: only the shapes matter, and oneDNN keeps the kernels for the requests that follow."""
    device = next(model.parameters()).device
    ids = torch.zeros(1, tokens, dtype=torch.long, device=device)
    present = torch.ones(1, tokens, dtype=torch.long, device=device)
    encoded = model.text_encoder(
        input_ids=ids, padding_mask=present.unsqueeze(-1).float(), attention_mask=present
    )
    speaker = None
    if model.config.num_speakers > 1:
        first = torch.zeros(1, dtype=torch.long, device=device)
        speaker = model.embed_speaker(first).unsqueeze(-1)
    hidden = encoded.last_hidden_state.float().transpose(1, 2)
    predict_log_durations(
        model, hidden, present.unsqueeze(1).float(), speaker, [torch.Generator().manual_seed(0)]
    )
    spectrogram = torch.zeros(1, model.config.flow_size, frames, device=device)
    model.flow(spectrogram, torch.ones(1, 1, frames, device=device), speaker, reverse=True)
    with autocast if autocast is not None else contextlib.nullcontext():
        masked_hifigan(model.decoder, spectrogram, speaker, torch.tensor([frames]))


def with_preemption_points(model: Any) -> Any:
    """`model` with a preemption point after each text-encoder layer and each flow.

    Between the stage boundaries alone, a batch of long segments ran the text encoder or
    the flows for 150-250 ms on one core, and a one-liner arriving meanwhile waited that
    long; a layer is a sixth to a quarter of a stage.
    """
    for layer in [*model.text_encoder.encoder.layers, *model.flow.flows]:
        layer.register_forward_hook(lambda *_: preemption_point())
    return model


class VitsSynthesizer:
    """A loaded VITS checkpoint behind the engine's `SpeechModel` interface."""

    family = "vits"
    # A subclass whose front end reads the text itself (espeak-ng reads numbers, symbols
    # and abbreviations: PiperSynthesizer) sets this; the server then normalizes nothing.
    phonemizes = False
    # Such a subclass may name the language it reads (an espeak-ng voice such as "en-us").
    language_tag: str | None = None

    def __init__(self, source: str, precision: Precision, revision: str | None = None) -> None:
        from transformers import AutoTokenizer, VitsModel

        started = time.perf_counter()
        self.name = _model_name(source)
        self.device = precision.device
        self.precision = precision
        self.tokenizer = AutoTokenizer.from_pretrained(source, revision=revision or "main")
        model: Any = VitsModel.from_pretrained(source, revision=revision or "main")
        self.model = with_preemption_points(model.to(self.device).eval())
        config = self.model.config
        self.sampling_rate = int(config.sampling_rate)
        self.pad_token_id = int(self.tokenizer.pad_token_id or 0)
        self.voices = _voices(config)
        self._text_profile = vits_text_profile(self.tokenizer, source)
        log.info(
            "loaded %s (%s parameters) on %s, precision %s in %.2fs",
            source,
            f"{sum(p.numel() for p in self.model.parameters()):,}",
            self.device,
            precision.label,
            time.perf_counter() - started,
        )

    @property
    def text_profile(self) -> TextProfile:
        if self.phonemizes:
            return TextProfile(resolve_language(self.language_tag), reads_numbers=True)
        return self._text_profile

    def token_symbols(self) -> Mapping[str, int | Sequence[int]]:
        """Symbol -> id of the model's input vocabulary."""
        return dict(self.tokenizer.get_vocab())

    @property
    def frame_samples(self) -> int:
        return int(np.prod(self.model.config.upsample_rates))

    def special_symbols(self) -> frozenset[str]:
        """Symbols of the vocabulary that are markers, not text (pad, unknown...)."""
        return frozenset(self.tokenizer.all_special_tokens)

    @functools.cached_property
    def silent_tokens(self) -> frozenset[int]:
        return silent_ids(self.token_symbols(), self.special_symbols())

    @functools.cached_property
    def break_tokens(self) -> frozenset[int]:
        # The pad is the blank between every two symbols (add_blank): not a word break.
        return break_ids(self.token_symbols(), self.special_symbols(), {self.pad_token_id})

    def tokenize(self, text: str) -> list[int]:
        ids = list(self.tokenizer(text)["input_ids"])
        # With add_blank the tokenizer interleaves pad ids: all-pad means nothing to say.
        return ids if any(i != self.pad_token_id for i in ids) else []

    def warm_up(self) -> None:
        ids = self.tokenize("warm up.") or [self.pad_token_id, 1, self.pad_token_id]
        self.synthesize([SynthesisItem(token_ids=ids, seed=0)])

    def warm_kernels(self, tokens: int, frames: int) -> None:
        """Build the kernels for one shape bucket at the precision in force (start-up
        tuning runs this over every bucket in idle gaps)."""
        warm_kernels(self.model, tokens, frames, self._autocast(self.precision.autocast))

    def _autocast(self, dtype: torch.dtype | None) -> torch.autocast | None:
        """The autocast region for the heavy stages at `dtype` (None: float32 throughout)."""
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        return None if dtype is None else torch.autocast(device_type, dtype=dtype)

    def synthesize(self, items: Sequence[SynthesisItem]) -> list[np.ndarray]:
        for item in items:
            if item.seed is None:
                item.seed = random.getrandbits(63)
        return guarded_render(self._run, items, self.precision.autocast)

    def _run(
        self, items: Sequence[SynthesisItem], autocast: torch.dtype | None
    ) -> list[np.ndarray]:
        input_ids, attention_mask = padded_token_batch(items, self.pad_token_id, shapes.tokens)
        speakers = torch.tensor([item.speaker_index for item in items], device=self.device)
        waveform, lengths, token_samples = batched_vits_inference(
            self.model,
            input_ids.to(self.device),
            attention_mask.to(self.device),
            speakers,
            [item.speed for item in items],
            [int(item.seed or 0) for item in items],
            self._autocast(autocast),
        )
        rows = waveform.cpu().numpy()
        durations = token_samples.cpu().tolist()
        for item, row in zip(items, durations, strict=True):
            # Word timestamps read these (engine/timestamps.py); padding tokens are cut off.
            item.token_samples = [int(n) for n in row[: len(item.token_ids)]]
        return [rows[i, : int(n)].copy() for i, n in enumerate(lengths.tolist())]


def vits_text_profile(tokenizer: Any, source: str) -> TextProfile:
    """How a `VitsTokenizer` reads text: MMS checkpoints name their language (ISO 639-3)
    and keep only their vocabulary's characters, lower-cased."""
    language = model_language(getattr(tokenizer, "language", None), source)
    if getattr(tokenizer, "phonemize", False):
        # The phonemizer package (espeak) reads the text: numbers included, and its
        # vocabulary is phonemes, not the characters users send.
        return TextProfile(language, reads_numbers=True)
    if getattr(tokenizer, "is_uroman", False) and _has_uroman():
        # uroman romanizes other scripts first: the vocabulary says nothing about them.
        return TextProfile(language)
    specials = set(tokenizer.all_special_tokens)
    vocabulary = frozenset(
        token for token in tokenizer.get_vocab() if len(token) == 1 and token not in specials
    )
    return TextProfile(language, False, vocabulary, bool(getattr(tokenizer, "normalize", False)))


def _has_uroman() -> bool:
    import importlib.util

    return importlib.util.find_spec("uroman") is not None


def _voices(config: object) -> list[Voice]:
    count = int(getattr(config, "num_speakers", 1) or 1)
    if count == 1:
        return [Voice(id="default", name="default", speaker_index=0)]
    # Checkpoints that name their speakers do so in id2label; transformers fills in
    # LABEL_n placeholders otherwise.
    labels = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    names = [labels.get(i, "") for i in range(count)]
    if len(set(names)) != count or any(not n or n.startswith("LABEL_") for n in names):
        names = [f"speaker-{i}" for i in range(count)]
    return [Voice(id=name, name=name, speaker_index=i) for i, name in enumerate(names)]


def _model_name(source: str) -> str:
    path = Path(source)
    return path.name if path.exists() else source
