#!/usr/bin/env python
"""Script 6 - idle overhead: one request alone through the server vs the raw model call.

For each of --texts one-line texts (fresh: each rendered once per side, so every side sees
new tensor shapes): (a) transformers `VitsModel` called directly in this process on the
text, timed; (b) the engine's own model call in this process (`VitsSynthesizer.synthesize`:
per-item noise, masked decoder, float32 guard), timed; (c) the same text sent to an idle
`voicefleet serve` with the same checkpoint and precision (`--dtype float32` everywhere),
timed from request to last byte (WAV). The order of (a), (b), (c) rotates text by text, so
machine noise hits all alike; the idle sides use no CPU. All of the server's overheads
count: HTTP, tokenization, scheduling, encoding, quality checks.
The server's own model-call time for each request is read from its /metrics
(`voicefleet_batch_duration_seconds` sum, before and after): latency / that call is the
serving layer's overhead on exactly the same render, in the same process, immune to the
differences between processes that a shared machine adds (measured: up to 2x).
RATIO = median over texts of server latency / the server's own model call; target <= 1.1.
Also reported: median server latency / median (a), and / median (b).

    .venv/bin/python bench/idle_overhead.py --json bench/results/idle_overhead.json
    .venv/bin/python bench/idle_overhead.py --size tiny --texts 6
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time

import httpx
from voicefleet_bench import harness, metrics, peers, rawmodel, texts


def speak(peer: peers.Peer, text: str) -> peers.Timed:
    """One unseeded WAV request (the result cache never answers it), timed to its last byte."""

    async def go() -> peers.Timed:
        async with httpx.AsyncClient() as client:
            return await peers.speak(client, peer, text)

    return asyncio.run(go())


def model_call_seconds(url: str) -> float:
    snap = metrics.parse(httpx.get(f"{url}/metrics", timeout=10).text)
    return metrics.total(snap, "voicefleet_batch_duration_seconds_sum") or 0.0


def main() -> int:
    parser = harness.script_parser(__doc__)
    parser.add_argument("--texts", type=int, default=12, help="one-line texts (pairs)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads on both sides (default: torch's default)")
    parser.add_argument("--serve-arg", action="append", default=[],
                        help="extra `voicefleet serve` argument (repeatable)")
    parser.add_argument("--json", help="write the ratio and details here")
    args = parser.parse_args()
    harness.line_buffered_stdout()

    model_dir = args.model or str(harness.ensure_model(args.size))
    rng = random.Random(6)
    lines = [texts.sentence(rng, 6, 12) for _ in range(args.texts + 2)]
    vits = rawmodel.load(model_dir, threads=args.threads or None)
    from voicefleet_server.engine.device import Precision
    from voicefleet_server.engine.model import SynthesisItem
    from voicefleet_server.engine.vits import VitsSynthesizer

    engine_model = VitsSynthesizer(model_dir, Precision("cpu", None))
    raw: list[float] = []
    engine: list[float] = []
    served: list[float] = []
    own_call: list[float] = []
    audio: list[tuple[float, float]] = []
    with harness.ServerProcess(model_dir, ["--dtype", "float32", *args.serve_arg],
                               name="idle-overhead",
                               env=harness.threads_env(args.threads)) as server:
        print(f"server ready in {server.startup_s:.1f} s (tuned at {server.tuned_s:.1f} s)")
        # Warm-up, not counted: first calls pay for one-off set-up on both sides.
        rawmodel.synthesize(vits, [lines[0]], seed=None)
        engine_model.synthesize([SynthesisItem(engine_model.tokenize(lines[0]))])
        peer = peers.Peer("voicefleet", server.url, "voicefleet")
        speak(peer, lines[1])
        sides = ("raw", "engine", "server")
        for i, line in enumerate(lines[2:]):
            order = sides[i % 3:] + sides[: i % 3]
            for side in order:
                if side == "engine":
                    started = time.perf_counter()
                    engine_model.synthesize([SynthesisItem(engine_model.tokenize(line))])
                    engine.append(time.perf_counter() - started)
                elif side == "raw":
                    started = time.perf_counter()
                    (wave,) = rawmodel.synthesize(vits, [line], seed=None)
                    raw.append(time.perf_counter() - started)
                    raw_audio = len(wave) / vits.sampling_rate
                else:
                    before = model_call_seconds(server.url)
                    result = speak(peer, line)
                    own_call.append(model_call_seconds(server.url) - before)
                    if not result.ok:
                        raise RuntimeError(f"request failed: {result.status}")
                    served.append(result.latency_s)
                    server_audio = result.audio_s
            audio.append((raw_audio, server_audio))
            print(f"text {i + 1}: raw {raw[-1]:.3f} s ({raw_audio:.1f} s audio), engine call "
                  f"{engine[-1]:.3f} s, server {served[-1]:.3f} s (its model call "
                  f"{own_call[-1]:.3f} s; {server_audio:.1f} s audio)")
        tuning = server.tuning
    vs_raw = statistics.median(served) / statistics.median(raw)
    pairs = [s / r for s, r in zip(served, raw, strict=True)]
    overhead = [s / c for s, c in zip(served, own_call, strict=True) if c > 0]
    value = statistics.median(overhead)
    vs_engine = statistics.median(served) / statistics.median(engine)
    print(f"median: raw {statistics.median(raw):.3f} s, engine call "
          f"{statistics.median(engine):.3f} s, server {statistics.median(served):.3f} s; "
          f"per-text server/raw median {statistics.median(pairs):.3f}; "
          f"server / engine call {vs_engine:.3f}; server / raw call {vs_raw:.3f}; "
          f"server latency / its own model call, median {value:.3f}")
    harness.report_ratio(
        "idle_server_latency_vs_its_model_call", value, target="<= 1.1", json_path=args.json,
        detail={"model": model_dir, "dtype": "float32", "machine": harness.machine(),
                "raw_s": raw, "engine_call_s": engine, "server_s": served,
                "server_vs_engine_call": vs_engine, "server_vs_raw_call": vs_raw,
                "server_model_call_s": own_call, "latency_over_own_call": overhead,
                "per_text_ratio": pairs,
                "per_text_ratio_median": statistics.median(pairs),
                "audio_s_raw_server": audio, "server_tuning": tuning},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
