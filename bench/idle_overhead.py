#!/usr/bin/env python
"""Script 6 - idle overhead: one request alone through the server vs the raw model call.

For each of --texts one-line texts (fresh: each rendered once per side, so both see new
tensor shapes): (a) transformers `VitsModel` called directly in this process on the text,
timed; (b) the same text sent to an idle `voicefleet serve` with the same checkpoint and
precision (`--dtype float32` on both sides), timed from request to last byte (WAV). The
order of (a) and (b) alternates text by text, so machine noise hits both alike; the idle
side uses no CPU. The server's overheads all count: HTTP, tokenization, scheduling window,
per-item noise and masked decoder, encoding.
RATIO = median server latency / median raw call; target <= 1.1.

    .venv/bin/python bench/idle_overhead.py --json bench/results/idle_overhead.json
    .venv/bin/python bench/idle_overhead.py --size tiny --texts 6
"""

from __future__ import annotations

import random
import statistics
import time

from voicefleet_bench import drive, harness, rawmodel, texts


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
    raw: list[float] = []
    served: list[float] = []
    audio: list[tuple[float, float]] = []
    with harness.ServerProcess(model_dir, ["--dtype", "float32", *args.serve_arg],
                               name="idle-overhead",
                               env=harness.threads_env(args.threads)) as server:
        print(f"server ready in {server.startup_s:.1f} s (tuned at {server.tuned_s:.1f} s)")
        # Warm-up, not counted: first calls pay for one-off set-up on both sides.
        rawmodel.synthesize(vits, [lines[0]], seed=None)
        drive.sequential(server.url, [("short", lines[1], None)])
        for i, line in enumerate(lines[2:]):
            order = ("raw", "server") if i % 2 == 0 else ("server", "raw")
            for side in order:
                if side == "raw":
                    started = time.perf_counter()
                    (wave,) = rawmodel.synthesize(vits, [line], seed=None)
                    raw.append(time.perf_counter() - started)
                    raw_audio = len(wave) / vits.sampling_rate
                else:
                    (result,) = drive.sequential(server.url, [("short", line, None)])
                    if not result.ok or result.latency_s is None:
                        raise RuntimeError(f"request failed: {result.status}")
                    served.append(result.latency_s)
                    server_audio = result.audio_s
            audio.append((raw_audio, server_audio))
            print(f"text {i + 1}: raw {raw[-1]:.3f} s ({raw_audio:.1f} s audio), "
                  f"server {served[-1]:.3f} s ({server_audio:.1f} s audio)")
        tuning = server.tuning
    value = statistics.median(served) / statistics.median(raw)
    pairs = [s / r for s, r in zip(served, raw, strict=True)]
    print(f"median: raw {statistics.median(raw):.3f} s, server {statistics.median(served):.3f} s;"
          f" per-text ratio median {statistics.median(pairs):.3f}")
    harness.report_ratio(
        "idle_server_vs_raw_model_call", value, target="<= 1.1", json_path=args.json,
        detail={"model": model_dir, "dtype": "float32", "machine": harness.machine(),
                "raw_s": raw, "server_s": served, "per_text_ratio": pairs,
                "per_text_ratio_median": statistics.median(pairs),
                "audio_s_raw_server": audio, "server_tuning": tuning},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
