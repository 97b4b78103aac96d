"""Device-aware engine settings, chosen from measurement.

CPU: whether bf16 autocast beats float32, and the batch limit, are measured with the real
model on the engine's own worker thread, in idle gaps (`Engine.run_when_idle`): the pod is
ready at once with safe settings (float32, batch 1) and switches when a measurement says
so. Measured so that a noisy neighbour cannot fool it (bench finding F4): fresh texts of
varied lengths for every timed call, candidates interleaved over repeats, medians
compared, and the more aggressive choice must win by a margin. And measured on what serving
runs: calls run at bucketed shapes (engine/shapes.py) whose kernels are built before the
timing (each precision pair's text rendered once untimed; then every bucket's kernels at
the chosen precision, which requests find built too, before the batch trials).

CUDA: the padded-token budget comes from the VRAM budget by profiling probe batches (as
vLLM profiles memory), and the allocator is capped at the budget so a misestimate is a
recoverable OOM inside it, not a neighbour's crash. The choices are pure functions;
`tune_cpu` only gathers their inputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import random
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from voicefleet_server.engine import preempt, shapes
from voicefleet_server.engine.device import Precision, cpu_supports_bf16
from voicefleet_server.engine.model import SpeechModel, SynthesisItem

if TYPE_CHECKING:
    from voicefleet_server.engine.batcher import Engine

log = logging.getLogger(__name__)

PROBE_TEXT = "The quick brown fox jumps over the lazy dog near the riverbank today."
# Plain lowercase words: every character vocabulary (the tiny test model's too) and every
# phonemizer keeps them.
_PROBE_VOCABULARY = (
    "the morning train leaves the station on time with tired people going home to small "
    "towns along the coast where waves break on the sand and children play near old boats "
    "please check your order number before you call our support team about the delivery "
    "weather today will be mild with a gentle breeze from the west and clear skies tonight "
    "a quiet garden behind the library opens at noon for readers who like fresh air"
)


# ---- pure choices ------------------------------------------------------------------------


def probe_texts(seed: int, min_words: int = 4, max_words: int = 14) -> Iterator[str]:
    """An endless supply of fresh sentences of varied length (reproducible from `seed`)."""
    rng = random.Random(seed)
    vocabulary = _PROBE_VOCABULARY.split()
    while True:
        words = [rng.choice(vocabulary) for _ in range(rng.randint(min_words, max_words))]
        yield " ".join(words).capitalize() + "."


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two renderings of one text; 0 when their lengths differ by
    more than 1 % (a changed duration is a changed rendering) or either is constant."""
    if min(len(a), len(b)) == 0 or abs(len(a) - len(b)) > 0.01 * max(len(a), len(b)):
        return 0.0
    n = min(len(a), len(b))
    x, y = a[:n].astype(np.float64), b[:n].astype(np.float64)
    x, y = x - x.mean(), y - y.mean()
    denominator = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return 0.0 if denominator == 0 else float((x * y).sum() / denominator)


@dataclass(frozen=True, slots=True)
class PrecisionChoice:
    label: str  # "float32" or "bfloat16"
    speedup: float | None  # median over fresh texts of (bf16 audio/s) / (fp32 audio/s)
    correlation_min: float | None
    reason: str


def choose_precision(
    speedups: Sequence[float],
    correlations: Sequence[float],
    *,
    min_speedup: float = 1.10,
    min_correlation: float = 0.99,
) -> PrecisionChoice:
    """bf16 autocast only when it is clearly faster (median paired speed-up over fresh
    texts at least `min_speedup`) and every rendering correlates with float32's."""
    if not speedups:
        return PrecisionChoice("float32", None, None, "not measured")
    speedup = statistics.median(speedups)
    worst = min(correlations) if correlations else 0.0
    if speedup < min_speedup:
        return PrecisionChoice(
            "float32", speedup, worst, f"bf16 not {min_speedup:.2f}x faster ({speedup:.2f}x)"
        )
    if worst < min_correlation:
        return PrecisionChoice(
            "float32", speedup, worst, f"bf16 output differs (correlation {worst:.3f})"
        )
    return PrecisionChoice("bfloat16", speedup, worst, f"bf16 {speedup:.2f}x faster")


def choose_batch_limit(
    rates: Mapping[int, Sequence[float]], ceiling: int, margin: float = 0.2
) -> int:
    """The batch limit from audio-seconds-per-second samples by batch size.

    Sizes are considered from small to large; a larger size replaces the current choice
    only when its median beats the choice's median by `margin` (batching costs latency,
    so it has to pay clearly). Never above `ceiling`; with no measurement, 1.
    """
    medians = {b: statistics.median(v) for b, v in rates.items() if v and b <= ceiling}
    if not medians:
        return 1
    choice = min(medians)
    for size in sorted(medians):
        if medians[size] >= (1 + margin) * medians[choice]:
            choice = size
    return choice


def request_share(seconds_per_call: Mapping[int, float], tolerance: float = 1.2) -> int:
    """The largest batch size whose call costs at most `tolerance` times a call of one
    (sizes measured contiguously from 1): how many of its own segments a request may put in
    one batch without delaying its first audio by more than that (scheduler.BatchLimits)."""
    single = seconds_per_call.get(1)
    share = 1
    if not single or single <= 0:
        return share
    for size in sorted(b for b in seconds_per_call if b > 1):
        if seconds_per_call[size] > tolerance * single:
            break
        share = size
    return share


def call_seconds_from_rates(rates: Mapping[int, Sequence[float]]) -> dict[int, float]:
    """Relative seconds per call of size b from audio-s-per-s medians: a call of b items
    of equal audio takes b / rate(b) (in units of one item's audio)."""
    return {b: b / statistics.median(v) for b, v in rates.items() if v and statistics.median(v)}


# ---- the CPU tuner -----------------------------------------------------------------------


class _HasPrecision(Protocol):
    precision: Precision


@dataclass(frozen=True, slots=True)
class TuningPlan:
    """How much to measure. The defaults keep an mms-size model's CPU tuning to roughly
    half a minute of model time, spent only while the pod is otherwise idle."""

    precision_pairs: int = 4
    min_speedup: float = 1.10
    min_correlation: float = 0.99
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8)
    rounds: int = 3
    margin: float = 0.2
    # Keep trying larger sizes while the newest is within this share of the best so far.
    explore_within: float = 0.1
    share_tolerance: float = 1.2
    seed: int = 7


@dataclass
class TuningReport:
    """What tuning measured and chose (shown in /readyz detail)."""

    state: str = "pending"  # pending, running, done, failed, off
    kernels: dict[str, Any] = field(default_factory=dict)
    precision: dict[str, Any] = field(default_factory=dict)
    batching: dict[str, Any] = field(default_factory=dict)
    started_at: float | None = None
    seconds: float | None = None
    error: str | None = None

    def detail(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state}
        if self.kernels:
            out["kernels"] = self.kernels
        if self.precision:
            out["precision"] = self.precision
        if self.batching:
            out["batching"] = self.batching
        if self.seconds is not None:
            out["seconds"] = round(self.seconds, 2)
        if self.error:
            out["error"] = self.error
        return out


def wants_precision_tuning(device: str, dtype: str, model: object) -> bool:
    """`--dtype auto` on a CPU with native bf16, for a model whose precision can switch."""
    return (
        dtype == "auto"
        and not device.startswith("cuda")
        and isinstance(getattr(model, "precision", None), Precision)
        and cpu_supports_bf16()
    )


@dataclass(frozen=True, slots=True)
class _Sample:
    audio_s: float
    wall_s: float
    waves: list[np.ndarray] = field(compare=False, repr=False)

    @property
    def rate(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s > 0 else 0.0


Clock = Callable[[], float]


def _render(
    model: SpeechModel,
    texts: Sequence[str],
    seed: int,
    precision: Precision | None = None,
    clock: Clock = time.perf_counter,
) -> _Sample:
    """One timed model call on `texts` (on the worker thread), optionally at `precision`."""
    items = [
        SynthesisItem(token_ids=model.tokenize(t) or [0], seed=seed + i)
        for i, t in enumerate(texts)
    ]
    with _precision_set(model, precision):
        paused = preempt.paused_seconds()
        started = clock()
        waves = model.synthesize(items)
        # Urgent requests served at this call's preemption points are not its time.
        wall = clock() - started - (preempt.paused_seconds() - paused)
    return _Sample(sum(len(w) for w in waves) / model.sampling_rate, wall, waves)


@contextlib.contextmanager
def _precision_set(model: SpeechModel, precision: Precision | None) -> Iterator[None]:
    """The block runs the model at `precision` (None: the one in force)."""
    holder: Any = model
    saved = holder.precision if precision is not None else None
    if precision is not None:
        holder.precision = precision
    try:
        yield
    finally:
        if precision is not None:
            holder.precision = saved


class _WarmsKernels(Protocol):
    def warm_kernels(self, tokens: int, frames: int) -> None: ...


async def tune_cpu(
    engine: Engine,
    model: SpeechModel,
    *,
    tune_precision: bool,
    ceiling: int,
    report: TuningReport,
    plan: TuningPlan = TuningPlan(),
    on_precision: Callable[[str], None] | None = None,
    clock: Clock = time.perf_counter,
) -> TuningReport:
    """Measure precision (when asked) then the batch limit, in the engine's idle gaps, and
    apply both (model precision; `engine.set_limits`). Fills `report` as it goes.
    `clock` times each model call (tests pass a model-driven one)."""
    render = functools.partial(_render, clock=clock)
    report.state = "running"
    report.started_at = time.monotonic()
    texts = probe_texts(plan.seed)
    try:
        if tune_precision:
            choice = await _tune_precision(engine, model, texts, plan, report, render)
            if choice.label == "bfloat16":
                typed: _HasPrecision = model  # type: ignore[assignment]
                typed.precision = Precision(typed.precision.device, torch.bfloat16)
            engine.metrics.set_precision(choice.label)
            if on_precision is not None:
                on_precision(choice.label)
        await _warm_kernels(engine, model, report)
        if ceiling > 1:
            await _tune_batching(engine, model, texts, plan, ceiling, report, render)
        report.state = "done"
    except Exception as exc:
        report.state = "failed"
        report.error = f"{type(exc).__name__}: {exc}"
        log.warning("tuning stopped (%s); keeping the settings in force", report.error)
    report.seconds = time.monotonic() - report.started_at
    return report


def _precision_arms(device: str) -> dict[str, Precision]:
    return {"float32": Precision(device, None), "bfloat16": Precision(device, torch.bfloat16)}


async def _warm_kernels(engine: Engine, model: SpeechModel, report: TuningReport) -> None:
    """Build every shape bucket's kernels (engine/shapes.py) at the precision in force and
    at every thread count a call may run at, one bucket per idle gap: requests then find
    their kernels built (building them cost more than running them, bf16's on AMX above
    all: bench/RESULTS.md, "Shape buckets"), and batching is compared on what serving
    runs, not on kernel building."""
    if not hasattr(model, "warm_kernels"):
        return
    warm: _WarmsKernels = model  # type: ignore[assignment]
    buckets = shapes.every_bucket()
    threads = engine.call_threads
    started = time.monotonic()
    report.kernels = {"threads": threads, "buckets": 0, "of": len(buckets)}
    for done, (tokens, frames) in enumerate(buckets, start=1):
        for count in threads:
            await engine.run_when_idle(
                functools.partial(warm.warm_kernels, tokens, frames), threads=count
            )
        report.kernels["buckets"] = done  # progress, for /readyz
    report.kernels["seconds"] = round(time.monotonic() - started, 2)


async def _tune_precision(
    engine: Engine,
    model: SpeechModel,
    texts: Iterator[str],
    plan: TuningPlan,
    report: TuningReport,
    render: Callable[..., _Sample],
) -> PrecisionChoice:
    arms = _precision_arms(model.device)
    speedups: list[float] = []
    correlations: list[float] = []
    rates: dict[str, list[float]] = {name: [] for name in arms}
    for i in range(plan.precision_pairs):
        text = next(texts)
        order = list(arms) if i % 2 == 0 else list(reversed(arms))
        samples: dict[str, _Sample] = {}
        # Untimed first: each arm builds the kernels of the text's shapes (engine/shapes.py),
        # so the pair compares rendering, not kernel building.
        for name in order:
            await engine.run_when_idle(
                functools.partial(render, model, [text], 1000 + i, arms[name])
            )
        for name in order:  # the same fresh text and seed for both: paired, comparable
            samples[name] = await engine.run_when_idle(
                functools.partial(render, model, [text], 1000 + i, arms[name])
            )
            rates[name].append(samples[name].rate)
        speedups.append(samples["bfloat16"].rate / max(samples["float32"].rate, 1e-9))
        correlations.append(correlation(samples["float32"].waves[0], samples["bfloat16"].waves[0]))
    choice = choose_precision(
        speedups, correlations, min_speedup=plan.min_speedup, min_correlation=plan.min_correlation
    )
    report.precision = {
        "choice": choice.label,
        "reason": choice.reason,
        "speedup_median": _round(choice.speedup),
        "speedups": [round(x, 3) for x in speedups],
        "correlations": [round(x, 4) for x in correlations],
        "audio_s_per_s": {k: [round(x, 3) for x in v] for k, v in rates.items()},
    }
    log.info("CPU precision: %s (%s)", choice.label, choice.reason)
    return choice


async def _tune_batching(
    engine: Engine,
    model: SpeechModel,
    texts: Iterator[str],
    plan: TuningPlan,
    ceiling: int,
    report: TuningReport,
    render: Callable[..., _Sample],
) -> None:
    sizes = sorted(
        {b for b in plan.batch_sizes if b < ceiling} | {min(ceiling, max(plan.batch_sizes))}
    )
    rates: dict[int, list[float]] = {}
    warmed: set[int] = set()
    best = sizes[0]
    seed = 5000

    async def timed(size: int) -> float:
        nonlocal seed
        batch = [next(texts) for _ in range(size)]
        seed += size
        sample = await engine.run_when_idle(functools.partial(render, model, batch, seed))
        return sample.rate

    for size in sizes[1:]:
        # Warm every candidate, then interleave the best so far with the next size over
        # several rounds (alternating who goes first), each call on fresh texts. Each
        # duel is decided on its own samples only: they were taken side by side, so the
        # machine's speed that minute weighs on both alike; samples from an earlier duel
        # were not, and a VM that slows down later would favour whoever was timed early.
        for candidate in (best, size):
            if candidate not in warmed:
                await timed(candidate)
                warmed.add(candidate)
        duel: dict[int, list[float]] = {best: [], size: []}
        for r in range(plan.rounds):
            for candidate in (best, size) if r % 2 == 0 else (size, best):
                duel[candidate].append(await timed(candidate))
        for candidate, samples in duel.items():
            rates.setdefault(candidate, []).extend(samples)
        best = choose_batch_limit(duel, ceiling, plan.margin)
        explored = statistics.median(duel[size])
        if explored < (1 - plan.explore_within) * statistics.median(duel[best]):
            break  # clearly losing: larger sizes would only cost more start-up time
        report.batching = _batching_detail(rates, best, plan)  # progress, for /readyz
    choice = best
    share = min(choice, request_share(call_seconds_from_rates(rates), plan.share_tolerance))
    report.batching = _batching_detail(rates, choice, plan) | {"request_share": share}
    engine.set_limits(
        dataclasses.replace(engine.limits, max_batch_size=choice, request_share=share)
    )
    log.info(
        "CPU batching: median audio s/s by batch size %s; using %d (request share %d)",
        report.batching["audio_s_per_s_median"],
        choice,
        share,
    )


def _batching_detail(
    rates: Mapping[int, Sequence[float]], choice: int, plan: TuningPlan
) -> dict[str, Any]:
    return {
        "choice": choice,
        "margin": plan.margin,
        "audio_s_per_s_median": {
            b: round(statistics.median(v), 3) for b, v in sorted(rates.items())
        },
        "audio_s_per_s": {b: [round(x, 3) for x in v] for b, v in sorted(rates.items())},
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# ---- CUDA --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemoryProfile:
    baseline_bytes: int
    bytes_per_padded_token: float
    # Wall seconds of one call by probe batch size (same text in every item).
    seconds_by_batch: Mapping[int, float] = field(default_factory=dict)


def token_budget(profile: MemoryProfile, budget_bytes: int, headroom: float = 0.9) -> int:
    """Padded tokens per batch that fit in `headroom` of the budget, given the profile."""
    usable = budget_bytes * headroom - profile.baseline_bytes
    if usable <= 0 or profile.bytes_per_padded_token <= 0:
        return 0
    return int(usable / profile.bytes_per_padded_token)


def profile_cuda_memory(
    model: SpeechModel, device: str, probe_batches: Sequence[int] = (1, 4, 16)
) -> MemoryProfile:
    """Peak memory of probe batches, fitted as baseline + slope * padded tokens; each probe
    is also timed (after an untimed run of the same shape) for `request_share`."""
    tokens = model.tokenize(PROBE_TEXT)
    torch.cuda.synchronize(device)
    baseline = int(torch.cuda.memory_allocated(device))
    slope = 0.0
    seconds: dict[int, float] = {}
    for size in probe_batches:
        items = [SynthesisItem(token_ids=tokens, seed=i) for i in range(size)]
        torch.cuda.reset_peak_memory_stats(device)
        model.synthesize(items)
        torch.cuda.synchronize(device)
        peak = int(torch.cuda.max_memory_allocated(device))
        slope = max(slope, (peak - baseline) / (size * len(tokens)))
        started = time.perf_counter()
        model.synthesize(items)
        torch.cuda.synchronize(device)
        seconds[size] = time.perf_counter() - started
    # The CUDA context and allocator fragmentation sit outside torch's counters.
    reserved_overhead = int(torch.cuda.memory_reserved(device)) - baseline
    return MemoryProfile(
        baseline_bytes=baseline + max(reserved_overhead, 0) // 4,
        bytes_per_padded_token=slope,
        seconds_by_batch=seconds,
    )


def cap_cuda_allocator(device: str, budget_bytes: int) -> None:
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = min(1.0, budget_bytes / total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    log.info("capped the CUDA allocator at %.1f%% of %d bytes", fraction * 100, total)
