#!/usr/bin/env python
"""Script 5 - CPU dtype: float32 vs a bf16-autocast decoder, throughput ratio and quality.

Two copies of the same VITS checkpoint run in one process: one all-float32, one with only
the HiFi-GAN decoder under torch.autocast("cpu", bfloat16) (casting the whole model to
bf16 crashes the duration predictor). Throughput (audio s per wall s, batch 1) is measured
in interleaved rounds so machine noise hits both alike; the ratio is bf16 / fp32 over all
rounds. Quality: with both noise scales at 0 the two produce the same lengths, compared by
waveform correlation, SNR and log-mel distance (dB).

    .venv/bin/python bench/cpu_dtype.py                # mms-size model, quick (~2 min)
    .venv/bin/python bench/cpu_dtype.py --rounds 6 --sentences 6 --json bench/out/dtype.json
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from voicefleet_bench import harness, rawmodel, texts


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", help="VITS checkpoint dir (default: random-weight mms size, built once)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument(
        "--sentences", type=int, default=4, help="sentences per round and per quality check"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--json", help="write the ratio and details here")
    args = parser.parse_args()
    harness.line_buffered_stdout()

    model_dir = args.model or str(harness.ensure_model("mms"))
    fp32 = rawmodel.load(model_dir, threads=args.threads or None)
    bf16 = rawmodel.load(model_dir)
    rawmodel.autocast_decoder(bf16, "bfloat16")
    rng = random.Random(5)
    sentences = [texts.sentence(rng) for _ in range(args.sentences)]

    # Quality first (deterministic: no noise), which also warms both models up.
    corr, snr, mel = [], [], []
    for text in sentences:
        (a,) = rawmodel.synthesize(fp32, [text], deterministic=True)
        (b,) = rawmodel.synthesize(bf16, [text], deterministic=True)
        if len(a) != len(b):
            print(f"length differs: fp32 {len(a)} vs bf16 {len(b)} samples")
        corr.append(rawmodel.correlation(a, b))
        snr.append(rawmodel.snr_db(a, b))
        mel.append(rawmodel.mel_distance_db(a, b, fp32.sampling_rate))

    audio = {"fp32": 0.0, "bf16": 0.0}
    wall = {"fp32": 0.0, "bf16": 0.0}
    per_round = []
    for r in range(args.rounds):
        order = [("fp32", fp32), ("bf16", bf16)]
        if r % 2:
            order.reverse()
        round_thr = {}
        for name, vits in order:
            a_s, start = 0.0, time.perf_counter()
            for i, text in enumerate(sentences):
                (wave,) = rawmodel.synthesize(vits, [text], seed=1000 * r + i)
                a_s += len(wave) / vits.sampling_rate
            w_s = time.perf_counter() - start
            audio[name] += a_s
            wall[name] += w_s
            round_thr[name] = a_s / w_s
        per_round.append(round_thr)
        print(f"round {r + 1}: fp32 {round_thr['fp32']:.2f}  bf16 {round_thr['bf16']:.2f} audio s/s"
              f"  (bf16/fp32 {round_thr['bf16'] / round_thr['fp32']:.2f})")

    thr = {k: audio[k] / wall[k] for k in audio}
    print(f"throughput: fp32 {thr['fp32']:.2f}, bf16-autocast decoder {thr['bf16']:.2f} "
          "audio s per wall s")
    print(f"quality vs fp32 (noise off, {len(sentences)} sentences): correlation median "
          f"{statistics.median(corr):.4f} (min {min(corr):.4f}), "
          f"SNR median {statistics.median(snr):.1f} dB, "
          f"log-mel distance median {statistics.median(mel):.3f} dB")
    value = thr["bf16"] / thr["fp32"]
    harness.report_ratio(
        "cpu_bf16_decoder_vs_fp32_throughput", value, target="> 1 with correlation > 0.99",
        json_path=args.json,
        detail={
            "model": model_dir, "machine": harness.machine(), "throughput": thr,
            "rounds": per_round, "round_ratio_median": statistics.median(
                p["bf16"] / p["fp32"] for p in per_round),
            "quality": {"correlation": corr, "snr_db": snr, "mel_distance_db": mel},
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
