"""The SpeechT5 family (`SpeechT5ForTextToSpeech` + `SpeechT5HifiGan`): speech in any voice
given a speaker embedding (an x-vector, see `speaker_encoder`).

transformers' `generate_speech` batches, but its prenet dropout (applied at inference,
by design) draws one mask from the global RNG for the whole batch, its length limit
follows the padded batch, and its postnet and vocoder hear the padding. So
`batched_speecht5_generate` runs the same modules with a dropout mask per item drawn
from that item's seeded generator, a length limit per item, and masked postnet and
vocoder: a seeded item renders the same whatever its batch mates (up to float kernel
differences between batch shapes, which the tests measure).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional

from voicefleet_server.engine.device import Precision
from voicefleet_server.engine.guard import guarded_render
from voicefleet_server.engine.hifigan import masked_hifigan
from voicefleet_server.engine.model import SynthesisItem, TextProfile, Voice, padded_token_batch

log = logging.getLogger(__name__)

# transformers' generate_speech defaults: stop once the stop-token probability summed
# over a step's frames reaches 0.5, and never run past 20 frames per input token.
STOP_THRESHOLD = 0.5
MAX_LEN_RATIO = 20.0
# Built-in voices: <model dir>/speaker_embeddings/<name>.npy (x-vectors, as in the
# cmu-arctic-xvectors data set); without any, one deterministic "default" vector.
EMBEDDINGS_DIR = "speaker_embeddings"


@torch.inference_mode()
def batched_speecht5_generate(
    model: Any,  # a transformers SpeechT5ForTextToSpeech; its submodules are used directly
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    speaker_embeddings: torch.Tensor,
    seeds: Sequence[int],
    autocast: contextlib.AbstractContextManager[object] | None = None,
    *,
    threshold: float = STOP_THRESHOLD,
    max_len_ratio: float = MAX_LEN_RATIO,
) -> tuple[torch.Tensor, list[int]]:
    """Autoregressive mel generation with per-item voices, seeds and stopping.

    Returns (spectrogram [B, frames, mel bins] after the postnet, frames per item); rows
    are zero past their length.
    """
    config = model.config
    device = input_ids.device
    batch = input_ids.shape[0]
    bins = int(config.num_mel_bins)
    reduction = int(config.reduction_factor)
    dropout = float(config.speech_decoder_prenet_dropout)
    heavy = autocast if autocast is not None else contextlib.nullcontext()
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    token_counts = [int(n) for n in attention_mask.sum(dim=1).tolist()]
    max_steps = [max(1, int(n * max_len_ratio / reduction)) for n in token_counts]

    with heavy:
        encoded = model.speecht5.encoder(
            input_values=input_ids, attention_mask=attention_mask, return_dict=True
        ).last_hidden_state
    prenet = model.speecht5.decoder.prenet
    postnet = model.speech_decoder_postnet
    speakers = functional.normalize(speaker_embeddings.float(), dim=-1)

    previous = torch.zeros(batch, bins, device=device)
    steps: list[torch.Tensor] = []
    stopped_at: list[int | None] = [None] * batch
    past = None
    for step in range(max(max_steps)):
        # The decoder prenet on the newest frame only (transformers recomputes it over the
        # whole sequence and keeps the last row: the same values).
        hidden = previous
        for layer in prenet.layers:
            hidden = functional.relu(layer(hidden))
            # As transformers' `_consistent_dropout`: keep with probability p, scale by
            # 1 / (1 - p) -- but one mask per item, from the item's own generator.
            keep = torch.stack(
                [torch.rand(hidden.shape[1], generator=g) < dropout for g in generators]
            ).to(device)
            hidden = torch.where(keep, hidden, 0.0) / (1 - dropout)
        hidden = prenet.final_layer(hidden)
        hidden = hidden + prenet.encode_positions.alpha * prenet.encode_positions.pe[0, step]
        hidden = functional.relu(prenet.speaker_embeds_layer(torch.cat([hidden, speakers], -1)))
        with heavy:
            decoded = model.speecht5.decoder.wrapped_decoder(
                hidden_states=hidden.unsqueeze(1),
                attention_mask=None,
                encoder_hidden_states=encoded,
                encoder_attention_mask=attention_mask,
                past_key_values=past,
                use_cache=True,
                return_dict=True,
            )
        last = decoded.last_hidden_state.squeeze(1).float()
        past = decoded.past_key_values
        spectrum = postnet.feat_out(last).view(batch, reduction, bins)
        steps.append(spectrum)
        previous = spectrum[:, -1, :]
        stop = torch.sigmoid(postnet.prob_out(last)).sum(dim=-1).tolist()
        for i in range(batch):
            if stopped_at[i] is None and (stop[i] >= threshold or step + 1 >= max_steps[i]):
                stopped_at[i] = step + 1
        if all(s is not None for s in stopped_at):
            break

    frames = [int(s or 1) * reduction for s in stopped_at]
    spectrogram = torch.cat(steps, dim=1)
    mask = (
        (
            torch.arange(spectrogram.shape[1], device=device).unsqueeze(0)
            < torch.tensor(frames, device=device).unsqueeze(1)
        )
        .unsqueeze(-1)
        .to(spectrogram.dtype)
    )
    spectrogram = spectrogram * mask
    # The postnet's convolutions, zeroed past each item's end as its solo run's padding is.
    residual = spectrogram.transpose(1, 2)
    channel_mask = mask.transpose(1, 2)
    for layer in postnet.layers:
        residual = layer(residual) * channel_mask
    return (spectrogram + residual.transpose(1, 2)) * mask, frames


def stretch(spectrogram: torch.Tensor, speed: float) -> torch.Tensor:
    """Change the speaking rate by resampling mel frames in time ([frames, bins] in and
    out): SpeechT5 has no duration control, and this keeps the pitch."""
    if abs(speed - 1.0) < 1e-3 or spectrogram.shape[0] < 2:
        return spectrogram
    target = max(1, round(spectrogram.shape[0] / speed))
    resized = functional.interpolate(
        spectrogram.T.unsqueeze(0), size=target, mode="linear", align_corners=True
    )
    return resized.squeeze(0).T


def vocode(vocoder: Any, spectrograms: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """`SpeechT5HifiGan` over a padded batch of [frames, bins] spectrograms, masked so
    each waveform equals its solo rendering."""
    lengths = torch.tensor([s.shape[0] for s in spectrograms], device=spectrograms[0].device)
    padded = torch.nn.utils.rnn.pad_sequence(list(spectrograms), batch_first=True)
    if vocoder.config.normalize_before:
        padded = (padded - vocoder.mean) / vocoder.scale
    positions = torch.arange(padded.shape[1], device=padded.device).unsqueeze(0)
    padded = padded * (positions < lengths.unsqueeze(1)).unsqueeze(-1).to(padded.dtype)
    waveform = masked_hifigan(vocoder, padded.transpose(1, 2), None, lengths).squeeze(1)
    hop = int(np.prod(vocoder.config.upsample_rates))
    return [waveform[i, : int(n) * hop] for i, n in enumerate(lengths.tolist())]


class SpeechT5Synthesizer:
    """A loaded SpeechT5 checkpoint and vocoder behind the engine's `SpeechModel` interface."""

    family = "speecht5"

    def __init__(
        self,
        source: str,
        vocoder: str,
        precision: Precision,
        revision: str | None = None,
    ) -> None:
        from transformers import SpeechT5ForTextToSpeech, SpeechT5HifiGan, SpeechT5Tokenizer

        started = time.perf_counter()
        self.name = Path(source).name if Path(source).exists() else source
        self.device = precision.device
        self.precision = precision
        self.tokenizer = SpeechT5Tokenizer.from_pretrained(source, revision=revision or "main")
        model: Any = SpeechT5ForTextToSpeech.from_pretrained(source, revision=revision or "main")
        self.model = model.to(self.device).eval()
        vocoder_model: Any = SpeechT5HifiGan.from_pretrained(vocoder)
        self.vocoder = vocoder_model.to(self.device).eval()
        config = self.model.config
        if int(self.vocoder.config.model_in_dim) != int(config.num_mel_bins):
            raise ValueError(
                f"vocoder {vocoder!r} takes {self.vocoder.config.model_in_dim} mel bins; "
                f"the model makes {config.num_mel_bins}"
            )
        self.embedding_dim = int(config.speaker_embedding_dim)
        # A checkpoint may declare a shorter length limit (the tiny test model does).
        self.max_len_ratio = float(getattr(config, "voicefleet_max_len_ratio", MAX_LEN_RATIO))
        self.sampling_rate = int(self.vocoder.config.sampling_rate)
        self.pad_token_id = int(self.tokenizer.pad_token_id or 1)
        # Ids that say nothing: specials, unknown characters and the word-boundary piece.
        self._silent = {*self.tokenizer.all_special_ids, self.tokenizer.unk_token_id}
        self._silent.add(self.tokenizer.convert_tokens_to_ids("\u2581"))
        self.voices, self._embeddings = _builtin_voices(source, self.embedding_dim)
        # SpeechT5's TTS checkpoints read English, one sentencepiece character at a time;
        # characters without a piece become <unk>, which says nothing.
        specials = set(self.tokenizer.all_special_tokens)
        pieces = {" " if piece == "\u2581" else piece for piece in self.tokenizer.get_vocab()}
        vocabulary = frozenset(p for p in pieces if len(p) == 1 and p not in specials)
        self.text_profile = TextProfile("en", False, vocabulary, False)
        # Autoregressive decoding predicts no per-token durations: no word timestamps.
        self.silent_tokens: frozenset[int] | None = None
        self.break_tokens: frozenset[int] = frozenset()
        self.frame_samples = int(np.prod(self.vocoder.config.upsample_rates))
        log.info(
            "loaded %s (%s parameters) + vocoder %s on %s, precision %s in %.2fs",
            source,
            f"{sum(p.numel() for p in self.model.parameters()):,}",
            vocoder,
            self.device,
            precision.label,
            time.perf_counter() - started,
        )

    def tokenize(self, text: str) -> list[int]:
        ids = list(self.tokenizer(text)["input_ids"])
        return ids if any(i not in self._silent for i in ids) else []

    def warm_up(self) -> None:
        ids = self.tokenize("warm up.") or [4, 2]
        self.synthesize([SynthesisItem(token_ids=ids, seed=0)])

    def synthesize(self, items: Sequence[SynthesisItem]) -> list[np.ndarray]:
        for item in items:
            if item.seed is None:
                item.seed = random.getrandbits(63)
        return guarded_render(self._run, items, self.precision.autocast)

    def embedding_of(self, item: SynthesisItem) -> np.ndarray:
        if item.speaker_embedding is not None:
            vector = np.asarray(item.speaker_embedding, dtype=np.float32).reshape(-1)
            if vector.shape[0] != self.embedding_dim:
                raise ValueError(
                    f"speaker embedding has {vector.shape[0]} values; the model takes "
                    f"{self.embedding_dim}"
                )
            return vector
        return self._embeddings[item.speaker_index % len(self._embeddings)]

    def _run(
        self, items: Sequence[SynthesisItem], autocast: torch.dtype | None
    ) -> list[np.ndarray]:
        input_ids, attention_mask = padded_token_batch(items, self.pad_token_id)
        speakers = torch.from_numpy(np.stack([self.embedding_of(item) for item in items]))
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        heavy = None if autocast is None else torch.autocast(device_type, dtype=autocast)
        spectrogram, frames = batched_speecht5_generate(
            self.model,
            input_ids.to(self.device),
            attention_mask.to(self.device),
            speakers.to(self.device),
            [int(item.seed or 0) for item in items],
            heavy,
            max_len_ratio=self.max_len_ratio,
        )
        with torch.inference_mode():
            mels = [
                stretch(spectrogram[i, :n], item.speed)
                for i, (item, n) in enumerate(zip(items, frames, strict=True))
            ]
            with heavy if heavy is not None else contextlib.nullcontext():
                waves = vocode(self.vocoder, mels)
        return [w.float().cpu().numpy().copy() for w in waves]


def is_speecht5(source: str, revision: str | None = None) -> bool:
    """Whether `source` is a SpeechT5 text-to-speech checkpoint (by its config's model_type)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source, revision=revision or "main")
    return str(getattr(config, "model_type", "")) == "speecht5"


def _builtin_voices(source: str, dim: int) -> tuple[list[Voice], list[np.ndarray]]:
    directory = Path(source) / EMBEDDINGS_DIR
    files = sorted(directory.glob("*.npy")) if directory.is_dir() else []
    # "default" first: OpenAI's voice names map onto built-in voices in order.
    files.sort(key=lambda path: path.stem != "default")
    vectors: list[np.ndarray] = []
    names: list[str] = []
    for path in files:
        vector = np.load(path).astype(np.float32).reshape(-1)
        if vector.shape[0] != dim:
            log.warning("ignoring %s: %d values, the model takes %d", path, vector.shape[0], dim)
            continue
        names.append(path.stem)
        vectors.append(vector)
    if not vectors:
        names = ["default"]
        vectors = [np.random.default_rng(0).standard_normal(dim).astype(np.float32)]
    voices = [Voice(id=n, name=n, speaker_index=i) for i, n in enumerate(names)]
    return voices, vectors
