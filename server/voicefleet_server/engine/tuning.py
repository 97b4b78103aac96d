"""Device-aware batch limits, chosen from measurement at start-up.

CPU: batching VITS can lose to batch 1 on few cores (measured: batch 16 gives less
audio per second than batch 1 on 2 cores), so the engine measures a few batch sizes
and keeps the fastest. CUDA: the padded-token budget comes from the VRAM budget by
profiling probe batches (as vLLM profiles memory), and the allocator is capped at the
budget so a misestimate is a recoverable OOM inside it, not a neighbour's crash.
The choices themselves are pure functions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from voicefleet_server.engine.model import SpeechModel, SynthesisItem

log = logging.getLogger(__name__)

PROBE_TEXT = "The quick brown fox jumps over the lazy dog near the riverbank today."


def choose_batch_limit(audio_per_second: Mapping[int, float], ceiling: int) -> int:
    """The measured batch size with the most audio per wall second (ties: the smaller),
    never above `ceiling`. With no measurement, trust the ceiling."""
    candidates = {b: v for b, v in audio_per_second.items() if b <= ceiling}
    if not candidates:
        return ceiling
    return max(sorted(candidates), key=lambda b: candidates[b])


def measure_cpu_batching(
    model: SpeechModel, ceiling: int, sizes: Sequence[int] = (1, 2, 4, 8)
) -> dict[int, float]:
    """Audio seconds per wall second at increasing batch sizes; stops once it drops."""
    tokens = model.tokenize(PROBE_TEXT)
    results: dict[int, float] = {}
    for size in (s for s in sizes if s <= ceiling):
        items = [SynthesisItem(token_ids=tokens, seed=i) for i in range(size)]
        model.synthesize(items[:1])  # settle caches/allocations for this shape family
        started = time.perf_counter()
        waves = model.synthesize(items)
        wall = time.perf_counter() - started
        results[size] = sum(len(w) for w in waves) / model.sampling_rate / wall
        if size > 1 and results[size] < max(results.values()):
            break
    return results


@dataclass(frozen=True, slots=True)
class MemoryProfile:
    baseline_bytes: int
    bytes_per_padded_token: float


def token_budget(profile: MemoryProfile, budget_bytes: int, headroom: float = 0.9) -> int:
    """Padded tokens per batch that fit in `headroom` of the budget, given the profile."""
    usable = budget_bytes * headroom - profile.baseline_bytes
    if usable <= 0 or profile.bytes_per_padded_token <= 0:
        return 0
    return int(usable / profile.bytes_per_padded_token)


def profile_cuda_memory(
    model: SpeechModel, device: str, probe_batches: Sequence[int] = (1, 4, 16)
) -> MemoryProfile:
    """Peak memory of probe batches, fitted as baseline + slope * padded tokens."""
    tokens = model.tokenize(PROBE_TEXT)
    torch.cuda.synchronize(device)
    baseline = int(torch.cuda.memory_allocated(device))
    slope = 0.0
    for size in probe_batches:
        torch.cuda.reset_peak_memory_stats(device)
        model.synthesize([SynthesisItem(token_ids=tokens, seed=i) for i in range(size)])
        torch.cuda.synchronize(device)
        peak = int(torch.cuda.max_memory_allocated(device))
        slope = max(slope, (peak - baseline) / (size * len(tokens)))
    # The CUDA context and allocator fragmentation sit outside torch's counters.
    reserved_overhead = int(torch.cuda.memory_reserved(device)) - baseline
    return MemoryProfile(
        baseline_bytes=baseline + max(reserved_overhead, 0) // 4, bytes_per_padded_token=slope
    )


def cap_cuda_allocator(device: str, budget_bytes: int) -> None:
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = min(1.0, budget_bytes / total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    log.info("capped the CUDA allocator at %.1f%% of %d bytes", fraction * 100, total)
