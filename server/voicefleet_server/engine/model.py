"""The small interface every model family implements, and the items it synthesizes.

A family loads itself, warms up, says how its text must be prepared (`TextProfile`),
tokenizes a segment (so the scheduler can count padded tokens), and synthesizes a batch
of items, returning exactly one waveform per item. The engine knows nothing else about
the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch


@dataclass(frozen=True, slots=True)
class Voice:
    id: str
    name: str
    speaker_index: int = 0
    # Families conditioned on a speaker vector (SpeechT5) carry it here; VITS leaves it None.
    embedding: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class TextProfile:
    """What the server does to text before a family's `tokenize` (see engine/textprep.py).

    - `language`: num2words' code of the language the model reads ('en', 'de', 'pt_BR'),
      None when unknown (then numbers and abbreviations are left as written).
    - `reads_numbers`: the family's own front end already reads numbers, symbols and
      abbreviations (Piper voices: espeak-ng), so the server normalizes nothing.
    - `vocabulary`: the characters `tokenize` keeps; others are dropped (counted, and a
      request made mostly of them is refused). None: no check (phonemizing front ends).
    - `lowercase`: `tokenize` lower-cases a character before looking it up.
    """

    language: str | None = None
    reads_numbers: bool = False
    vocabulary: frozenset[str] | None = None
    lowercase: bool = False


@dataclass(slots=True)
class SynthesisItem:
    """One segment to render. `seed` makes its noise reproducible whatever its batch mates."""

    token_ids: list[int]
    speaker_index: int = 0
    speed: float = 1.0
    seed: int | None = None
    # Per-item speaker vector for families conditioned on one (SpeechT5); None: the
    # family's built-in voice `speaker_index`.
    speaker_embedding: np.ndarray | None = None
    # Filled in by families that predict durations (VITS, Piper): audio samples per token,
    # summing to the waveform's length. Word timestamps come from them.
    token_samples: list[int] | None = field(default=None)
    # Filled in by the model for observability: whether it needed the float32 re-run.
    reran_fp32: bool = field(default=False)
    # Set by the guard when the final render still held NaN/inf samples (zeroed).
    nonfinite: bool = field(default=False)
    # Input characters of the segment (audio seconds per character is a quality check).
    characters: int = field(default=0)
    # Test-only marker read by `engine.faults` (None unless --fault-injection is on).
    fault: str | None = field(default=None)


class SpeechModel(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def family(self) -> str: ...

    @property
    def sampling_rate(self) -> int: ...

    @property
    def voices(self) -> Sequence[Voice]: ...

    @property
    def device(self) -> str: ...

    @property
    def text_profile(self) -> TextProfile: ...

    @property
    def frame_samples(self) -> int:
        """Samples per frame of the model's acoustic output (the vocoder's hop): one frame
        is one output token in the usage the API reports."""
        ...

    @property
    def break_tokens(self) -> frozenset[int]:
        """Among `silent_tokens`, those that separate words (spaces, begin/end markers);
        the others (blanks, punctuation) belong to the word they follow."""
        ...

    @property
    def silent_tokens(self) -> frozenset[int] | None:
        """Token ids that make no sound (blanks, spaces, punctuation), for families that
        fill `SynthesisItem.token_samples`; None: this family predicts no per-token
        durations, so it cannot give word timestamps."""
        ...

    def tokenize(self, text: str) -> list[int]:
        """Token ids for one segment; empty when nothing in it is pronounceable."""
        ...

    def synthesize(self, items: Sequence[SynthesisItem]) -> list[np.ndarray]:
        """Render a batch: one float32 mono waveform in [-1, 1] per item, in order."""
        ...

    def warm_up(self) -> None: ...


class SynthesisError(RuntimeError):
    """An item could not be rendered (bad output that a float32 re-run did not fix)."""


class DeviceOutOfMemory(RuntimeError):
    """The device ran out of memory for this batch; the batcher splits and retries."""


class SynthesisTimeout(SynthesisError):
    """The model call running this item did not return within the batch deadline."""


def padded_token_batch(
    items: Sequence[SynthesisItem], pad_token_id: int, width: Callable[[int], int] = int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask) for a batch of tokenized segments, as wide
    as `width(longest)` (a shape bucket, engine/shapes.py; default: the longest)."""
    width_ = width(max(len(item.token_ids) for item in items))
    input_ids = torch.full((len(items), width_), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(items), width_), dtype=torch.long)
    for row, item in enumerate(items):
        input_ids[row, : len(item.token_ids)] = torch.tensor(item.token_ids)
        attention_mask[row, : len(item.token_ids)] = 1
    return input_ids, attention_mask
