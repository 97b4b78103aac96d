"""The raw transformers VITS model in a plain loop: the physical limit the server is compared to.

Owns loading a VitsModel checkpoint, synthesizing a batch (outputs trimmed to
`sequence_lengths`), measuring audio-seconds per wall-second at a batch size, the
bf16-autocast decoder wrapper (casting the whole model to bf16 crashes the duration
predictor on CPU, see MODEL-NOTES), and quality measures between two waveforms.
torch and transformers are imported lazily so the load generator does not need them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass
class Vits:
    model: Any
    tokenizer: Any
    sampling_rate: int


def load(model_dir: str, threads: int | None = None) -> Vits:
    """Load a VITS checkpoint (save_pretrained layout) in float32, eval mode, on CPU."""
    import torch
    from transformers import AutoTokenizer, VitsModel

    if threads:
        torch.set_num_threads(threads)
    model = VitsModel.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return Vits(model, tokenizer, int(model.config.sampling_rate))


def autocast_decoder(vits: Vits, dtype_name: str = "bfloat16") -> None:
    """Run only the HiFi-GAN decoder under torch.autocast (CPU), returning float32 audio.

    The text encoder, duration predictor and flows stay in float32. Idempotent.
    """
    import torch

    inner = vits.model.decoder
    if getattr(inner, "autocast_dtype", None) is not None:
        return

    class AutocastDecoder(torch.nn.Module):
        def __init__(self, inner: Any, dtype: Any) -> None:
            super().__init__()
            self.inner = inner
            self.autocast_dtype = dtype

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            with torch.autocast("cpu", dtype=self.autocast_dtype):
                out = self.inner(*args, **kwargs)
            return out.float()

    vits.model.decoder = AutocastDecoder(inner, getattr(torch, dtype_name))


def synthesize(
    vits: Vits,
    texts: Sequence[str],
    *,
    seed: int | None = 0,
    deterministic: bool = False,
) -> list[FloatArray]:
    """One batched forward pass over `texts`; each waveform trimmed to its own length.

    `deterministic` sets both noise scales to 0 (same input, same output: used for quality).
    """
    import torch

    if seed is not None:
        torch.manual_seed(seed)
    inputs = vits.tokenizer(list(texts), return_tensors="pt", padding=True)
    model = vits.model
    saved = (model.noise_scale, model.noise_scale_duration)
    if deterministic:
        model.noise_scale = model.noise_scale_duration = 0.0
    try:
        with torch.inference_mode():
            out = model(**inputs)
    finally:
        model.noise_scale, model.noise_scale_duration = saved
    waves = out.waveform.float().cpu().numpy().astype(np.float64)
    lengths = out.sequence_lengths.cpu().tolist()
    return [waves[i, : int(lengths[i])] for i in range(len(texts))]


@dataclass
class LoopResult:
    batch_size: int
    items: int
    audio_s: float
    wall_s: float

    @property
    def throughput(self) -> float:
        """Audio seconds per wall second."""
        return self.audio_s / self.wall_s if self.wall_s > 0 else 0.0


def loop_throughput(
    vits: Vits, texts: Sequence[str], batch_size: int, *, min_seconds: float = 5.0,
    max_items: int | None = None,
) -> LoopResult:
    """Synthesize `texts` in batches of `batch_size` in a plain loop for at least `min_seconds`.

    Cycles through the texts, so every batch size sees the same work; at least one full pass
    over `texts` runs. One warm-up batch is not timed.
    """
    synthesize(vits, texts[:batch_size], seed=None)
    audio = 0.0
    items = 0
    start = time.perf_counter()
    i = 0
    while True:
        batch = [texts[(i + k) % len(texts)] for k in range(batch_size)]
        i += batch_size
        for wave in synthesize(vits, batch, seed=None):
            audio += len(wave) / vits.sampling_rate
        items += batch_size
        elapsed = time.perf_counter() - start
        if items >= len(texts) and elapsed >= min_seconds:
            break
        if max_items is not None and items >= max_items:
            break
    return LoopResult(batch_size, items, audio, time.perf_counter() - start)


def correlation(a: FloatArray, b: FloatArray) -> float:
    """Pearson correlation of two waveforms over their common length."""
    n = min(len(a), len(b))
    if n < 2:
        return float("nan")
    x, y = a[:n] - a[:n].mean(), b[:n] - b[:n].mean()
    denom = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denom) if denom > 0 else float("nan")


def snr_db(reference: FloatArray, test: FloatArray) -> float:
    """Signal-to-noise ratio of `test` against `reference` in dB (common length)."""
    n = min(len(reference), len(test))
    noise = float(((reference[:n] - test[:n]) ** 2).sum())
    signal = float((reference[:n] ** 2).sum())
    if noise == 0:
        return float("inf")
    return 10 * float(np.log10(signal / noise)) if signal > 0 else float("-inf")


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> FloatArray:
    """Triangular mel filters (HTK mel scale), shape [n_mels, n_fft // 2 + 1]."""
    def hz_to_mel(hz: FloatArray) -> FloatArray:
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    def mel_to_hz(mel: FloatArray) -> FloatArray:
        return 700.0 * (10 ** (mel / 2595.0) - 1.0)

    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(0.0, float(hz_to_mel(np.array(sample_rate / 2))), n_mels + 2))
    bank = np.zeros((n_mels, len(freqs)))
    for m in range(n_mels):
        left, centre, right = edges[m], edges[m + 1], edges[m + 2]
        rise = (freqs - left) / max(centre - left, 1e-9)
        fall = (right - freqs) / max(right - centre, 1e-9)
        bank[m] = np.clip(np.minimum(rise, fall), 0.0, None)
    return bank


def log_mel(wave: FloatArray, sample_rate: int, n_fft: int = 1024, hop: int = 256,
            n_mels: int = 80) -> FloatArray:
    """Log-mel spectrogram in dB, shape [frames, n_mels] (Hann window, no centring)."""
    if len(wave) < n_fft:
        wave = np.pad(wave, (0, n_fft - len(wave)))
    frames = 1 + (len(wave) - n_fft) // hop
    window = np.hanning(n_fft)
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spec = np.abs(np.fft.rfft(wave[idx] * window, axis=1)) ** 2
    mel = spec @ mel_filterbank(sample_rate, n_fft, n_mels).T
    return 10.0 * np.log10(np.maximum(mel, 1e-10))


def mel_distance_db(a: FloatArray, b: FloatArray, sample_rate: int) -> float:
    """Mean absolute difference of two log-mel spectrograms in dB (common frames)."""
    ma, mb = log_mel(a, sample_rate), log_mel(b, sample_rate)
    n = min(len(ma), len(mb))
    return float(np.abs(ma[:n] - mb[:n]).mean())
