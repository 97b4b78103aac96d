"""The reduced-precision quality guard shared by every model family.

fp16/bf16 inference can overflow (NaN/inf) or collapse to silence for some inputs. A
family renders a batch once in reduced precision, re-renders only the bad items in
float32, marks them (`SynthesisItem.reran_fp32`, counted in metrics) and clips the rest;
samples still NaN/inf are zeroed and the item marked `nonfinite` (a quality anomaly).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from voicefleet_server.engine.model import SynthesisItem

SILENCE_PEAK = 1e-4

RenderFn = Callable[[Sequence[SynthesisItem], torch.dtype | None], list[np.ndarray]]


def sound(wave: np.ndarray) -> bool:
    """NaN/inf or an all-silent render are the failure modes of reduced precision."""
    return (
        wave.size > 0 and bool(np.isfinite(wave).all()) and float(np.abs(wave).max()) > SILENCE_PEAK
    )


def guarded_render(
    render: RenderFn, items: Sequence[SynthesisItem], autocast: torch.dtype | None
) -> list[np.ndarray]:
    """`render(items, autocast)`, with bad items re-rendered in float32, then clipped."""
    waves = render(items, autocast)
    bad = [i for i, w in enumerate(waves) if not sound(w)]
    if bad and autocast is not None:
        redone = render([items[i] for i in bad], None)
        for i, wave in zip(bad, redone, strict=True):
            items[i].reran_fp32 = True
            waves[i] = wave
    for item, wave in zip(items, waves, strict=True):
        # Still NaN/inf after any float32 re-run: zeroed below, reported as a quality anomaly.
        item.nonfinite = not bool(np.isfinite(wave).all())
    return [np.clip(np.nan_to_num(w, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0) for w in waves]
