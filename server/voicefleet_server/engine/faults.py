"""Test-only fault injection: a `SpeechModel` wrapper that misbehaves on marked items.

With `--fault-injection` (off by default; never turn it on in production) a speech request
may carry `X-Voicefleet-Fault: raise | oom | nan | hang[=seconds]`, and its items are marked.
Any batch holding a marked item then fails the way real models fail: an exception, a CUDA
out-of-memory error, NaN output in reduced precision, or a call that never returns. With
the setting off the wrapper is never built and the header is never read, so production
paths pay nothing for it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from voicefleet_server.engine.model import SpeechModel, SynthesisItem, TextProfile, Voice

log = logging.getLogger(__name__)

FAULT_HEADER = "x-voicefleet-fault"
FAULT_KINDS = ("raise", "oom", "nan", "hang")
DEFAULT_HANG_S = 60.0


class InjectedFault(RuntimeError):
    """The failure a `raise` fault produces."""


def parse_fault(value: str) -> str:
    """Normalise a header value (`raise`, `oom`, `nan`, `hang` or `hang=<seconds>`)."""
    kind, _, argument = value.strip().lower().partition("=")
    if kind not in FAULT_KINDS or (argument and kind != "hang"):
        raise ValueError(f"unknown fault {value!r}; use one of {', '.join(FAULT_KINDS)}")
    if argument:
        try:
            seconds = float(argument)
        except ValueError:
            raise ValueError(f"hang takes a number of seconds, not {argument!r}") from None
        if not 0 <= seconds <= 3600:
            raise ValueError("hang takes 0 to 3600 seconds")
        return f"hang={seconds:g}"
    return kind


def _hang_seconds(fault: str) -> float:
    _, _, argument = fault.partition("=")
    return float(argument) if argument else DEFAULT_HANG_S


class FaultInjectingModel:
    """Wraps a model; items without a fault go straight through to it.

    - `raise`: any batch holding the item raises (the engine isolates it by splitting);
    - `oom`: any batch of more than one item holding it raises `torch.OutOfMemoryError`,
      as a batch too large for the device would (alone, the item renders);
    - `nan`: the item's reduced-precision output is NaN (families that re-run such items
      in float32, like VITS, then do so; on a float32-only model it has no effect);
    - `hang[=s]`: the call blocks for s seconds (default 60) before carrying on.
    """

    def __init__(self, inner: SpeechModel) -> None:
        self.inner = inner
        self._released = threading.Event()
        run: Callable[[Sequence[SynthesisItem], Any], list[np.ndarray]] | None = getattr(
            inner, "_run", None
        )
        if callable(run):
            patched: Any = inner
            patched._run = self._nan_in_reduced_precision(run)

    # The `SpeechModel` interface, delegated.
    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def family(self) -> str:
        return self.inner.family

    @property
    def sampling_rate(self) -> int:
        return self.inner.sampling_rate

    @property
    def voices(self) -> Sequence[Voice]:
        return self.inner.voices

    @property
    def device(self) -> str:
        return self.inner.device

    @property
    def text_profile(self) -> TextProfile:
        return self.inner.text_profile

    @property
    def silent_tokens(self) -> frozenset[int] | None:
        return self.inner.silent_tokens

    @property
    def break_tokens(self) -> frozenset[int]:
        return self.inner.break_tokens

    @property
    def frame_samples(self) -> int:
        return self.inner.frame_samples

    def tokenize(self, text: str) -> list[int]:
        return self.inner.tokenize(text)

    def warm_up(self) -> None:
        self.inner.warm_up()

    def release(self) -> None:
        """Let every hanging call go on (at shutdown)."""
        self._released.set()

    def synthesize(self, items: Sequence[SynthesisItem]) -> list[np.ndarray]:
        faults = [item.fault for item in items if item.fault is not None]
        for fault in faults:
            if fault.startswith("hang"):
                log.warning("injected fault: hanging for %ss", _hang_seconds(fault))
                self._released.wait(_hang_seconds(fault))
        if "raise" in faults:
            raise InjectedFault(f"injected fault: raise (batch of {len(items)})")
        if "oom" in faults and len(items) > 1:
            raise torch.OutOfMemoryError(
                f"CUDA out of memory (injected fault: oom, batch of {len(items)})"
            )
        return self.inner.synthesize(items)

    @staticmethod
    def _nan_in_reduced_precision(
        run: Callable[[Sequence[SynthesisItem], Any], list[np.ndarray]],
    ) -> Callable[[Sequence[SynthesisItem], Any], list[np.ndarray]]:
        def wrapped(items: Sequence[SynthesisItem], autocast: Any) -> list[np.ndarray]:
            waves = run(items, autocast)
            if autocast is not None:
                for index, item in enumerate(items):
                    if item.fault == "nan":
                        waves[index] = np.full_like(waves[index], np.nan)
            return waves

        return wrapped
