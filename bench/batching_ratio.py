#!/usr/bin/env python
"""Script 1 - batched vs one-at-a-time: the same server binary and load, two batching settings.

Server A runs `--max-batch-size 1 --batch-window-ms 0` (one segment per model call);
server B runs the engine's defaults (on CPU it measures batch sizes at start-up and keeps
the fastest). With --forced N a third server C runs `--max-batch-size N --no-autotune`,
showing what batching does on this device when it is not tuned away. All servers are up
at once (an idle one uses no CPU) and take the same closed-loop load (N requests in
flight, the same seeded text mix) in alternating rounds, so machine noise hits each alike.
RATIO = throughput(B) / throughput(A); the p95 latency ratio B / A is printed too.

    .venv/bin/python bench/batching_ratio.py                  # mms-size, ~4 min
    .venv/bin/python bench/batching_ratio.py --size tiny --seconds 8
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

from voicefleet_bench import drive, harness, stats, texts


def main() -> int:
    parser = harness.script_parser(__doc__)
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per stage")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    parser.add_argument("--mix", default="short=0.8,paragraph=0.2", help="text mix")
    parser.add_argument("--forced", type=int, default=8,
                        help="also run --max-batch-size N --no-autotune (0: skip)")
    parser.add_argument("--dtype", default="auto", help="server --dtype for every variant")
    parser.add_argument("--threads", type=int, default=0,
                        help="server torch threads (OMP_NUM_THREADS; default: torch's default)")
    parser.add_argument("--json", help="write the ratio and details here")
    args = parser.parse_args()
    harness.line_buffered_stdout()

    model_dir = args.model or str(harness.ensure_model(args.size))
    mix = texts.parse_mix(args.mix)
    rng = random.Random(1)
    work = [(k, texts.make_text(k, rng)) for k in texts.choose_kinds(mix, 200, rng)]
    variants = {
        "one_at_a_time": ["--max-batch-size", "1", "--batch-window-ms", "0"],
        "defaults": [],
    }
    if args.forced > 1:
        variants[f"forced_batch_{args.forced}"] = ["--max-batch-size", str(args.forced),
                                                   "--no-autotune"]
    stages: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    with contextlib.ExitStack() as stack:
        servers = {}
        for name, extra in variants.items():
            srv = stack.enter_context(harness.ServerProcess(
                model_dir, [*extra, "--dtype", args.dtype, "--max-queue", "10000"],
                name=f"batching-{name}", env=harness.threads_env(args.threads)))
            servers[name] = srv
            choice = (srv.tuning or {}).get("batching", {}).get("choice")
            print(f"{name}: ready in {srv.startup_s:.1f} s, tuned at {srv.tuned_s:.1f} s "
                  f"(batch limit chosen: {choice}); tuning {srv.tuning}")
        for r in range(args.rounds):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for name in order:
                stage = drive.closed_loop(servers[name].url, work, concurrency=args.concurrency,
                                          duration_s=args.seconds)
                stages[name].append(stage)
                batch = (stage["server"].get("batch_size") or {}).get("mean")
                print(f"round {r + 1} {name}: {stage['throughput_audio_s_per_s']:.2f} audio s/s, "
                      f"p95 {stage['latency_s']['p95']:.2f} s, mean batch "
                      f"{batch if batch is None else round(batch, 2)}")

    summary = {}
    for name, runs in stages.items():
        audio = sum(s["audio_s_total"] for s in runs)
        wall = sum(s["wall_s"] for s in runs)
        p95 = stats.percentile([s["latency_s"]["p95"] for s in runs], 50)
        summary[name] = {"throughput": audio / wall, "p95_latency_s": p95}
        print(f"{name}: {audio / wall:.2f} audio s/s, p95 latency (median of rounds) {p95:.2f} s")
    base, dflt = summary["one_at_a_time"], summary["defaults"]
    p95_ratio = dflt["p95_latency_s"] / base["p95_latency_s"]
    print(f"p95 latency ratio defaults / one-at-a-time = {p95_ratio:.3f}")
    for name in variants:
        if name.startswith("forced"):
            print(f"throughput ratio {name} / one-at-a-time = "
                  f"{summary[name]['throughput'] / base['throughput']:.3f}, p95 ratio "
                  f"{summary[name]['p95_latency_s'] / base['p95_latency_s']:.3f}")
    harness.report_ratio(
        "batched_defaults_vs_one_at_a_time_throughput", dflt["throughput"] / base["throughput"],
        target="> 1 where batching pays (GPU); ~1 on CPU where the engine tunes it away",
        json_path=args.json,
        detail={"model": model_dir, "machine": harness.machine(), "summary": summary,
                "p95_ratio": p95_ratio, "stages": stages,
                "tuning": {name: srv.tuning for name, srv in servers.items()}},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
