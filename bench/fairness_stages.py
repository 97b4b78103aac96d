#!/usr/bin/env python
"""Where a one-liner's time goes under long-form load, stage by stage, in process.

`fairness.py` and `vs_piper.py` time one-liners through HTTP, where the client, the event
loop and the server's helper processes share the cores with the model. This script runs
the server's own runtime (`ModelRuntime`, the default voice unless `--model`, defaults,
tuning done first) without HTTP and times each probe's stages, idle and while a long text
renders (sent again whenever it finishes), alternating over rounds:
- prep: sentence splitting and normalization (the prep threads);
- tokens: phonemes to ids (the text thread; espeak-ng for Piper voices);
- engine: queued to rendered (a newcomer preempts long-form work at its next point);
- total: the three.
Loaded minus idle, per stage, says which stage the loaded overhead comes from.
RATIO = loaded p95 / idle p95 of the total (the in-process counterpart of `fairness.py`).

    .venv/bin/python bench/fairness_stages.py --json bench/results/fairness_stages.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence

from voicefleet_bench import harness, stats, texts

STAGES = ("prep", "tokens", "engine", "total")


async def measure(args: argparse.Namespace) -> dict[str, object]:
    from voicefleet_server.config import ServerSettings
    from voicefleet_server.metrics import Metrics
    from voicefleet_server.serving.runtime import ModelRuntime, State
    from voicefleet_server.serving.voices import VoiceLibrary

    settings = ServerSettings(**({"model": args.model} if args.model else {}))
    metrics = Metrics()
    runtime = ModelRuntime(settings, metrics, VoiceLibrary(settings, metrics, None))
    runtime.start()
    while runtime.state is State.LOADING:
        await asyncio.sleep(0.2)
    if runtime.state is not State.READY:
        raise RuntimeError(f"the model did not load: {runtime.failure}")
    while runtime.tuning.state in ("pending", "running"):
        await asyncio.sleep(0.2)
    voice = runtime.model().voices[0]
    rng = stats.rng_for(7, "fairness_stages")
    probes = [texts.sentence(rng, 5, 9) for _ in range(args.probes)]
    long_text = texts.very_long_text(10, seed=88)

    async def speak(text: str) -> dict[str, float]:
        started = time.perf_counter()
        segments = await runtime.segments(text)
        prepared = time.perf_counter()
        items = await runtime.items(segments, voice, speed=1.0, seed=None)
        tokenized = time.perf_counter()
        await asyncio.gather(*runtime.submit(items))
        rendered = time.perf_counter()
        return {
            "prep": prepared - started,
            "tokens": tokenized - prepared,
            "engine": rendered - tokenized,
            "total": rendered - started,
        }

    async def probe_all() -> list[dict[str, float]]:
        rows = []
        for text in probes:
            rows.append(await speak(text))
            await asyncio.sleep(args.gap_s)  # one caller at a time, as fairness.py's probes
        return rows

    async def while_busy(
        phase: Callable[[], Awaitable[list[dict[str, float]]]],
    ) -> list[dict[str, float]]:
        async def keep_busy() -> None:
            while True:
                await speak(long_text)

        busy = asyncio.create_task(keep_busy())
        await asyncio.sleep(0.5)  # the long text is rendering
        try:
            return await phase()
        finally:
            busy.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await busy

    _, readiness = runtime.readiness()  # what tuning chose, as /readyz shows it
    phases: dict[str, list[dict[str, float]]] = {"idle": [], "loaded": []}
    try:
        for round_ in range(args.rounds):
            phases["idle"] += await probe_all()
            phases["loaded"] += await while_busy(probe_all)
            await asyncio.sleep(1.5)  # the abandoned long text's segment in flight ends
            print(f"round {round_ + 1}: " + summary_line(phases))
    finally:
        await runtime.close()
    return {
        "model": args.model or "(default voice)",
        "readiness": readiness,
        "stages_s": {
            name: {stage: stats.summarize(r[stage] for r in rows) for stage in STAGES}
            for name, rows in phases.items()
        },
        "loaded_minus_idle_mean_ms": {
            stage: 1e3 * (mean(phases["loaded"], stage) - mean(phases["idle"], stage))
            for stage in STAGES
        },
    }


def mean(rows: Sequence[dict[str, float]], stage: str) -> float:
    return sum(r[stage] for r in rows) / len(rows)


def summary_line(phases: dict[str, list[dict[str, float]]]) -> str:
    return "; ".join(
        f"{name} "
        + " ".join(
            f"{stage} {1e3 * mean(rows, stage):.1f}/"
            f"{1e3 * stats.percentile([r[stage] for r in rows], 95):.1f}"
            for stage in STAGES
        )
        + " ms (mean/p95)"
        for name, rows in phases.items()
        if rows
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="what to serve (default: the server's default voice)")
    parser.add_argument("--probes", type=int, default=40, help="one-liners per phase a round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--gap-s", type=float, default=0.02, help="pause between probes")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    harness.line_buffered_stdout()
    detail = asyncio.run(measure(args))
    totals: dict[str, dict[str, dict[str, float | int | None]]] = detail["stages_s"]  # type: ignore[assignment]
    idle_p95, loaded_p95 = totals["idle"]["total"]["p95"], totals["loaded"]["total"]["p95"]
    harness.report_ratio(
        "in_process_one_liner_p95_loaded_vs_idle",
        stats.ratio(loaded_p95, idle_p95),
        target="(diagnostic) where fairness.py's loaded overhead comes from",
        json_path=args.json,
        detail={**detail, "machine": harness.machine(), "config": vars(args)},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
