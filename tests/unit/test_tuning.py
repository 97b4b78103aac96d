"""Tuning: the pure choices, and `tune_cpu` end to end on a real engine with a fake model
whose cost per call is scripted and read through an injected clock (no wall-clock timing)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
import torch
from voicefleet_server.engine import shapes
from voicefleet_server.engine.batcher import Engine
from voicefleet_server.engine.device import Precision
from voicefleet_server.engine.model import SynthesisItem, Voice
from voicefleet_server.engine.scheduler import BatchLimits
from voicefleet_server.engine.tuning import (
    MemoryProfile,
    TuningReport,
    call_seconds_from_rates,
    choose_batch_limit,
    choose_precision,
    correlation,
    probe_texts,
    request_share,
    token_budget,
    tune_cpu,
)
from voicefleet_server.metrics import Metrics

# ---- pure choices ------------------------------------------------------------------------


def test_a_larger_batch_must_win_by_the_margin() -> None:
    base = [1.0, 1.0, 1.0]
    assert choose_batch_limit({1: base, 2: [1.15] * 3}, ceiling=16, margin=0.2) == 1
    assert choose_batch_limit({1: base, 2: [1.25] * 3}, ceiling=16, margin=0.2) == 2
    assert choose_batch_limit({1: base, 2: [1.3] * 3, 4: [1.4] * 3}, ceiling=16) == 2
    assert choose_batch_limit({1: base, 2: [1.3] * 3, 4: [1.6] * 3}, ceiling=16) == 4


def test_medians_ignore_one_wild_measurement() -> None:
    # Bench finding F4: batch 1 measured once at a tenth of its speed chose batch 8.
    rates = {1: [2.4, 0.24, 2.5], 2: [1.9, 2.0, 1.8], 8: [1.2, 2.6, 1.1]}
    assert choose_batch_limit(rates, ceiling=16) == 1


def test_never_above_the_ceiling_and_one_without_measurements() -> None:
    assert choose_batch_limit({1: [1.0], 8: [9.0]}, ceiling=4) == 1
    assert choose_batch_limit({}, ceiling=6) == 1


def test_request_share_is_the_largest_batch_costing_little_more_than_one() -> None:
    assert request_share({1: 1.0, 2: 1.1, 4: 1.19, 8: 1.5, 16: 1.1}, tolerance=1.2) == 4
    assert request_share({1: 1.0, 2: 1.9, 4: 3.8}) == 1  # a CPU: a batch costs its parts
    assert request_share({}) == 1


def test_call_seconds_follow_from_rates() -> None:
    # A batch of 4 at twice the audio per second of batch 1 takes twice as long.
    seconds = call_seconds_from_rates({1: [2.0, 2.0], 4: [4.0]})
    assert seconds[4] / seconds[1] == 2.0


def test_bf16_only_when_clearly_faster_and_alike() -> None:
    assert choose_precision([1.3, 1.4, 1.2], [0.999] * 3).label == "bfloat16"
    assert choose_precision([1.05, 1.08, 1.3], [0.999] * 3).label == "float32"
    differs = choose_precision([1.5, 1.6, 1.5], [0.999, 0.69, 0.999])
    assert differs.label == "float32" and "differs" in differs.reason
    assert choose_precision([], []).label == "float32"


def test_correlation_of_renderings() -> None:
    wave = np.sin(np.arange(4000) * 0.05)
    assert correlation(wave, wave + 1e-4 * np.cos(np.arange(4000))) > 0.999
    assert correlation(wave, -wave) < -0.999
    assert correlation(wave, np.concatenate([wave, wave[:400]])) == 0.0  # length changed
    assert correlation(wave, np.zeros(4000)) == 0.0


def test_probe_texts_are_fresh_and_varied() -> None:
    texts = probe_texts(1)
    batch = [next(texts) for _ in range(30)]
    assert len(set(batch)) == 30
    assert len({len(t.split()) for t in batch}) > 4
    assert next(probe_texts(1)) == batch[0]  # reproducible


def test_token_budget_fits_within_headroom_of_the_budget() -> None:
    profile = MemoryProfile(baseline_bytes=1_000, bytes_per_padded_token=10.0)
    tokens = token_budget(profile, budget_bytes=11_000, headroom=1.0)
    assert tokens == 1_000
    assert profile.baseline_bytes + tokens * profile.bytes_per_padded_token <= 11_000


def test_no_budget_left_after_the_model_gives_zero() -> None:
    assert token_budget(MemoryProfile(5_000, 1.0), budget_bytes=4_000) == 0


# ---- tune_cpu on a real engine -------------------------------------------------------------

SECONDS_PER_TOKEN = 0.01


class ScriptedModel:
    """Renders 10 samples (at 1 kHz) per token; each call advances `now` by
    `wall_per_audio_s(batch size, autocast) * audio seconds`, scaled by `slow(call index)`."""

    name = "scripted"
    family = "scripted"
    sampling_rate = 1000
    voices: Sequence[Voice] = (Voice("default", "default"),)
    device = "cpu"

    def __init__(
        self,
        wall_per_audio_s: Callable[[int, torch.dtype | None], float],
        *,
        bf16_differs: bool = False,
        slow: Callable[[int], float] = lambda _: 1.0,
    ) -> None:
        self.wall_per_audio_s = wall_per_audio_s
        self.bf16_differs = bf16_differs
        self.slow = slow
        self.precision = Precision("cpu", None)
        self.now = 0.0
        self.calls: list[tuple[int, str]] = []

    def clock(self) -> float:
        return self.now

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def warm_up(self) -> None:
        pass

    def synthesize(self, items: Sequence[SynthesisItem]) -> list[np.ndarray]:
        waves = []
        for item in items:
            t = np.arange(len(item.token_ids) * 10)
            wave = np.sin(t * 0.05 + (item.seed or 0)).astype(np.float32)
            if self.bf16_differs and self.precision.autocast is not None:
                wave = np.random.default_rng(0).standard_normal(len(t)).astype(np.float32)
            waves.append(wave)
        audio_s = sum(len(w) for w in waves) / self.sampling_rate
        factor = self.wall_per_audio_s(len(items), self.precision.autocast)
        self.now += factor * audio_s * self.slow(len(self.calls))
        self.calls.append((len(items), self.precision.label))
        return waves


async def tune(
    model: ScriptedModel, *, tune_precision: bool = False, ceiling: int = 16
) -> tuple[TuningReport, Engine]:
    engine = Engine(model, BatchLimits(1, 1 << 40, 0.0), max_queue=64, metrics=Metrics())  # type: ignore[arg-type]
    engine.start()
    report = TuningReport()
    try:
        await asyncio.wait_for(
            tune_cpu(
                engine,
                model,  # type: ignore[arg-type]
                tune_precision=tune_precision,
                ceiling=ceiling,
                report=report,
                clock=model.clock,
            ),
            30,
        )
    finally:
        await engine.close()
    return report, engine


def cpu_like(size: int, autocast: torch.dtype | None) -> float:
    """A batch of n costs more than n single calls (mms on 2 cores: batch 2 gave 0.8x)."""
    return 0.4 * (1 + 0.3 * (size - 1))


def gpu_like(size: int, autocast: torch.dtype | None) -> float:
    """A call costs about the same whatever the batch size."""
    return 0.4 * size**-0.8


async def test_cpu_like_device_keeps_batch_one_and_stops_exploring() -> None:
    model = ScriptedModel(cpu_like)
    report, engine = await tune(model)
    assert report.state == "done", report.error
    assert engine.limits.max_batch_size == 1
    assert engine.limits.request_share == 1
    assert {size for size, _ in model.calls} == {1, 2}  # 2 lost clearly: 4 and 8 not tried
    assert report.detail()["batching"]["choice"] == 1
    assert engine.metrics.max_batch_size._value.get() == 1


async def test_gpu_like_device_batches_and_lets_a_request_fill_cheap_places() -> None:
    model = ScriptedModel(gpu_like)
    report, engine = await tune(model)
    assert engine.limits.max_batch_size == 8
    # A call of 2 costs 2**0.2 = 1.15x a call of one, of 4 1.32x: share 2 at tolerance 1.2.
    assert engine.limits.request_share == 2
    assert set(report.batching["audio_s_per_s_median"]) == {1, 2, 4, 8}


async def test_the_ceiling_bounds_what_is_tried() -> None:
    model = ScriptedModel(gpu_like)
    _, engine = await tune(model, ceiling=3)
    assert {size for size, _ in model.calls} == {1, 2, 3}
    assert engine.limits.max_batch_size == 3


async def test_cold_calls_and_a_noisy_neighbour_do_not_fool_it() -> None:
    """The first call of each size is cold (5x), and one timed batch-1 call is hit by a
    neighbour (20x): warm-ups absorb the first, the median the second. Batch 2 gives 9 %
    less audio per second than batch 1 here; a mean would have chosen it."""
    seen: set[int] = set()

    def wall(size: int, autocast: torch.dtype | None) -> float:
        cold = 5.0 if size not in seen else 1.0
        seen.add(size)
        return 0.4 * (1 + 0.1 * (size - 1)) * cold

    # Calls: 0-1 warm sizes 1 and 2, then 2 is the first timed batch-1 call.
    model = ScriptedModel(wall, slow=lambda index: 20.0 if index == 2 else 1.0)
    report, engine = await tune(model)
    assert model.calls[2][0] == 1
    assert engine.limits.max_batch_size == 1, report.batching


async def test_a_machine_that_slows_down_later_does_not_fool_it() -> None:
    """Every batch size gives the same audio per second at any moment, but the machine
    runs at half speed after the first duel (1 against 2). Pooling batch 1's samples from
    every duel would set its slow later ones against batch 2's early fast ones and choose 2;
    each duel decided on its own side-by-side samples keeps 1."""
    # Calls 0-1 warm sizes 1 and 2; 2-7 are the first duel's timed calls.
    model = ScriptedModel(lambda size, autocast: 0.4, slow=lambda index: 1.0 if index < 8 else 2.0)
    report, engine = await tune(model)
    assert {size for size, _ in model.calls} == {1, 2, 4, 8}  # no duel lost clearly
    assert engine.limits.max_batch_size == 1, report.batching


async def test_bf16_chosen_when_faster_and_alike_and_applied() -> None:
    model = ScriptedModel(lambda size, autocast: 0.25 if autocast is not None else 0.4)
    report, engine = await tune(model, tune_precision=True, ceiling=1)
    assert report.precision["choice"] == "bfloat16"
    assert model.precision.autocast == torch.bfloat16
    exported = engine.metrics.registry.get_sample_value
    assert exported("voicefleet_precision_info", {"dtype": "bfloat16"}) == 1
    assert exported("voicefleet_precision_info", {"dtype": "float32"}) is None
    assert min(report.precision["correlations"]) > 0.99


async def test_bf16_refused_when_its_output_differs() -> None:
    model = ScriptedModel(
        lambda size, autocast: 0.2 if autocast is not None else 0.4, bf16_differs=True
    )
    report, engine = await tune(model, tune_precision=True, ceiling=1)
    assert report.precision["choice"] == "float32"
    assert model.precision.autocast is None
    exported = engine.metrics.registry.get_sample_value
    assert exported("voicefleet_precision_info", {"dtype": "float32"}) == 1


async def test_bf16_refused_when_not_clearly_faster() -> None:
    model = ScriptedModel(lambda size, autocast: 0.38 if autocast is not None else 0.4)
    report, _ = await tune(model, tune_precision=True, ceiling=1)
    assert report.precision["choice"] == "float32"
    assert model.precision.autocast is None


async def test_precision_trials_are_warmed_then_interleaved() -> None:
    model = ScriptedModel(lambda size, autocast: 0.4)
    await tune(model, tune_precision=True, ceiling=1)
    labels = [label for _, label in model.calls]
    # Each pair: both arms render the text once untimed (its kernels built), then timed,
    # in alternating order (AB AB, BA BA, ...) so drift hits both alike.
    ab, ba = ["float32", "bfloat16"], ["bfloat16", "float32"]
    assert labels[:16] == (ab + ab + ba + ba) * 2


async def test_batch_trials_use_fresh_texts() -> None:
    lengths: list[tuple[int, ...]] = []

    class Recording(ScriptedModel):
        def synthesize(self, items: Sequence[SynthesisItem]) -> list[np.ndarray]:
            lengths.append(tuple(len(i.token_ids) for i in items))
            return super().synthesize(items)

    await tune(Recording(gpu_like), ceiling=4)
    assert len(lengths) == len(set(lengths))  # no call repeats another's shapes


async def test_a_failing_model_leaves_the_settings_and_says_why() -> None:
    class Broken(ScriptedModel):
        def synthesize(self, items: Sequence[SynthesisItem]) -> list[np.ndarray]:
            raise RuntimeError("kernel exploded")

    report, engine = await tune(Broken(cpu_like))
    assert report.state == "failed" and "kernel exploded" in (report.error or "")
    assert engine.limits.max_batch_size == 1


class KernelWarming(ScriptedModel):
    """Records every shape bucket it is asked to build kernels for, and when."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.warmed: list[tuple[str, int, int, int]] = []  # (precision, tokens, frames, calls)

    def warm_kernels(self, tokens: int, frames: int) -> None:
        self.warmed.append((self.precision.label, tokens, frames, len(self.calls)))


@pytest.mark.parametrize("tune_precision", [True, False])
async def test_every_shape_bucket_is_warmed_at_the_chosen_precision_before_batch_trials(
    tune_precision: bool,
) -> None:
    # bf16 clearly faster: it is chosen, and only its kernels are built for every bucket.
    model = KernelWarming(lambda size, autocast: 0.25 if autocast is not None else 0.4)
    report, engine = await tune(model, tune_precision=tune_precision, ceiling=2)
    assert report.state == "done", report.error
    chosen = "bfloat16" if tune_precision else "float32"
    assert {p for p, *_ in model.warmed} == {chosen}
    threads = engine.call_threads
    frames = [f for _, _, f, _ in model.warmed]
    assert frames == [f for f in shapes.FRAMES.lengths() for _ in threads]
    assert {t for _, t, _, _ in model.warmed} == set(shapes.TOKENS.lengths())
    # After the precision trial (if any), before the batch trials.
    trial_calls = 16 if tune_precision else 0
    assert all(calls == trial_calls for *_, calls in model.warmed)
    assert len(model.calls) > trial_calls
    assert report.kernels["buckets"] == len(shapes.FRAMES.lengths())
    assert report.detail()["kernels"]["threads"] == threads


async def test_kernels_are_warmed_at_every_thread_count_a_call_may_run_at() -> None:
    seen: list[int] = []

    class Counting(KernelWarming):
        def warm_kernels(self, tokens: int, frames: int) -> None:
            seen.append(torch.get_num_threads())

    model = Counting(cpu_like)
    engine = Engine(model, BatchLimits(1, 1 << 40, 0.0), max_queue=64, metrics=Metrics(), workers=2)  # type: ignore[arg-type]
    cores = torch.get_num_threads()
    assert engine.call_threads == sorted({cores, max(1, cores // 2)}, reverse=True)
    engine.start()
    try:
        report = TuningReport()
        await asyncio.wait_for(
            tune_cpu(
                engine,
                model,  # type: ignore[arg-type]
                tune_precision=False,
                ceiling=1,
                report=report,
                clock=model.clock,
            ),
            30,
        )
    finally:
        await engine.close()
    assert report.state == "done", report.error
    assert seen == engine.call_threads * len(shapes.FRAMES.lengths())
    assert torch.get_num_threads() == cores  # the caller's own setting is untouched
