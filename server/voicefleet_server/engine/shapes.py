"""Shape buckets: the lengths a model call runs at, rounded up so that kernels are reused.

On CPU, oneDNN builds (JIT-compiles) a kernel for every new shape a conv sees and keeps it
in a cache (`ONEDNN_PRIMITIVE_CACHE_CAPACITY`). With exact lengths nearly every request
brings new shapes, and building the kernels cost more than running them, bf16 ones on AMX
above all (bench/RESULTS.md, "Shape buckets"). So every length axis that runs through
convs is rounded up, here in one place:
- `TOKENS`: the token axis of a batch (text encoder, duration predictor);
- `FRAMES`: the frame axis (flows, and the vocoder's timeline; a batch whose timeline would
  pass the largest bucket is vocoded in several, engine/hifigan.py).

The padding is masked as any batch padding is (attention masks, and masks applied before
every conv), so an item's audio does not change. Start-up tuning builds every bucket's
kernels in idle gaps (engine/tuning.py), so requests find them built. A single item longer
than the largest frame bucket (~12 s of audio) runs at its exact length.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from torch import nn


@dataclass(frozen=True)
class Bucket:
    """Lengths rounded up to the next multiple of a tier's step: `tiers` are (up to, step)
    pairs in increasing order; lengths past the last tier are kept."""

    tiers: tuple[tuple[int, int], ...]

    def __call__(self, length: int) -> int:
        for up_to, step in self.tiers:
            if length <= up_to:
                return max(step, math.ceil(length / step) * step)
        return length

    @property
    def largest(self) -> int:
        """The longest length that is bucketed (no limit when nothing is)."""
        return self.tiers[-1][0] if self.tiers else sys.maxsize

    def lengths(self) -> list[int]:
        """Every bucket, shortest first (what a warm-up builds kernels for)."""
        found: list[int] = []
        low = 0
        for up_to, step in self.tiers:
            found.extend(range(max(step, math.ceil((low + 1) / step) * step), up_to + 1, step))
            low = up_to
        return found


# Steps grow with the length: padding is at most 15 frames up to 256 (~3 s of audio) and
# under 12 % past it, while the bucket count stays small (32 frame buckets; a Piper
# vocoder is 23 conv kernels a length, and a bf16 kernel for 1024 frames holds megabytes).
TOKENS = Bucket(tiers=((256, 16), (512, 32)))
FRAMES = Bucket(tiers=((256, 16), (512, 32), (1024, 64)))

_EXACT = Bucket(tiers=())

# oneDNN's kernel cache must hold every bucket's kernels, or calls rebuild them: the cap of
# 64 used before buckets existed (to keep one-off shapes from growing memory) cut bf16 to
# 7 audio s per s on AMX. Memory: docs/reliability.md.
KERNEL_CACHE_CAPACITY = 2048  # when the model is not known yet (bench scripts)


def kernels_per_shape(module: Any) -> int:
    """Kernels one call at one new shape builds: one per distinct conv configuration (layers
    alike share a kernel). 35 for a Piper medium voice, 57 for an mms-tts model."""
    return len(
        {
            (type(conv).__name__, conv.in_channels, conv.out_channels, conv.kernel_size,
             conv.stride, conv.padding, conv.dilation, conv.groups)
            for conv in module.modules()
            if isinstance(conv, nn.modules.conv._ConvNd)
        }
    )  # fmt: skip


def kernel_cache_capacity(module: Any, thread_counts: int) -> int:
    """A cache for every frame bucket's kernels at each thread count a call runs at (oneDNN
    builds kernels per thread count too), and a quarter more for the rest: other batch
    sizes, the precision trial's texts, weight reorders."""
    need = kernels_per_shape(module) * len(FRAMES.lengths()) * thread_counts
    return max(KERNEL_CACHE_CAPACITY, math.ceil(1.25 * need))


def size_kernel_cache(capacity: int = KERNEL_CACHE_CAPACITY) -> None:
    """Size oneDNN's kernel cache; it reads the setting when it builds its first kernel,
    so call this before the model's first call. An operator's own
    `ONEDNN_PRIMITIVE_CACHE_CAPACITY` wins."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(capacity))


def every_bucket() -> list[tuple[int, int]]:
    """(tokens, frames) pairs that cover every token and every frame bucket, one warm-up
    call each (there are fewer token buckets: the longest repeats)."""
    token_buckets = TOKENS.lengths()
    return [
        (token_buckets[min(i, len(token_buckets) - 1)], frame_bucket)
        for i, frame_bucket in enumerate(FRAMES.lengths())
    ]


def tokens(length: int) -> int:
    return TOKENS(length)


def frames(length: int) -> int:
    return FRAMES(length)


@contextlib.contextmanager
def exact_lengths() -> Iterator[None]:
    """Run the block at exact lengths (bench A/B: what the buckets buy)."""
    global TOKENS, FRAMES
    saved = TOKENS, FRAMES
    TOKENS = FRAMES = _EXACT
    try:
        yield
    finally:
        TOKENS, FRAMES = saved
