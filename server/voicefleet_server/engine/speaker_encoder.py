"""The speaker encoder: reference audio in, a unit-length x-vector out.

Wraps a transformers x-vector model (`WavLMForXVector`, e.g. microsoft/wavlm-base-plus-sv)
and its feature extractor. It knows nothing about uploads, hashing or caching (the
serving layer's voice library does); it only turns a mono float waveform at its own
sampling rate into the embedding SpeechT5 is conditioned on.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np
import torch

from voicefleet_server.engine.device import Precision

log = logging.getLogger(__name__)


class SpeakerEncoder:
    def __init__(self, source: str, precision: Precision, revision: str | None = None) -> None:
        from transformers import AutoFeatureExtractor, WavLMForXVector

        started = time.perf_counter()
        self.source = source
        self.device = precision.device
        self.feature_extractor: Any = AutoFeatureExtractor.from_pretrained(
            source, revision=revision or "main"
        )
        model: Any = WavLMForXVector.from_pretrained(source, revision=revision or "main")
        # Always float32: an embedding is computed once per voice and then reused, so
        # its precision matters more than its speed.
        self.model = model.to(self.device).eval()
        self.sampling_rate = int(self.feature_extractor.sampling_rate)
        self.embedding_dim = int(self.model.config.xvector_output_dim)
        self._lock = threading.Lock()
        log.info(
            "loaded speaker encoder %s (%d-d x-vectors, %d Hz) in %.2fs",
            source,
            self.embedding_dim,
            self.sampling_rate,
            time.perf_counter() - started,
        )

    def embed(self, waveform: np.ndarray) -> np.ndarray:
        """The L2-normalised embedding of a mono float waveform at `sampling_rate`."""
        inputs = self.feature_extractor(
            waveform.astype(np.float32),
            sampling_rate=self.sampling_rate,
            return_tensors="pt",
            return_attention_mask=True,
        )
        with self._lock, torch.inference_mode():
            embeddings = self.model(**{k: v.to(self.device) for k, v in inputs.items()}).embeddings
            vector = torch.nn.functional.normalize(embeddings.float(), dim=-1)[0]
        return vector.cpu().numpy().astype(np.float32)

    def warm_up(self) -> None:
        self.embed(np.random.default_rng(0).standard_normal(self.sampling_rate).astype(np.float32))
