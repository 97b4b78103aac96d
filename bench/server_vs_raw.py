#!/usr/bin/env python
"""Script 2 - server vs raw model loop: how much of the device's physical limit the server delivers.

Raw: transformers VitsModel called in a plain Python loop in this process, at batch sizes
1, 2, 4 (and more with --batch-sizes); the best is the device limit. Server: `voicefleet
serve` on the same checkpoint and precision, saturated by a closed loop (N requests always
in flight) of the same one-sentence texts. Raw and server are measured in alternating
rounds (the idle one uses no CPU) so machine noise hits both alike.
RATIO = server throughput / best raw throughput (audio seconds per wall second); target >= 0.9.

    .venv/bin/python bench/server_vs_raw.py                       # mms-size, fp32, ~4 min
    .venv/bin/python bench/server_vs_raw.py --size tiny --seconds 5   # smoke run
    .venv/bin/python bench/server_vs_raw.py --dtype bfloat16      # bf16 decoder on both sides
"""

from __future__ import annotations

import random

from voicefleet_bench import drive, harness, rawmodel, texts


def main() -> int:
    parser = harness.script_parser(__doc__)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="float32, or bfloat16 autocast (raw: decoder only) on both sides")
    parser.add_argument("--batch-sizes", default="1,2,4", help="raw loop batch sizes to try")
    parser.add_argument("--rounds", type=int, default=2, help="alternating raw/server rounds")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=0,
                        help="requests in flight against the server (default 2 x best batch, >= 4)")
    parser.add_argument("--sentences", type=int, default=8, help="distinct one-sentence texts")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads on both sides (default: torch's default)")
    parser.add_argument("--json", help="write the ratio and details here")
    args = parser.parse_args()
    harness.line_buffered_stdout()

    model_dir = args.model or str(harness.ensure_model(args.size))
    rng = random.Random(2)
    sentences = [texts.sentence(rng) for _ in range(args.sentences)]
    sizes = [int(b) for b in args.batch_sizes.split(",")]

    vits = rawmodel.load(model_dir, threads=args.threads or None)
    if args.dtype == "bfloat16":
        rawmodel.autocast_decoder(vits)
    raw: dict[int, list[rawmodel.LoopResult]] = {b: [] for b in sizes}
    server_stages = []
    serve_args = ["--dtype", args.dtype, "--max-queue", "10000"]
    with harness.ServerProcess(model_dir, serve_args, name="server-vs-raw",
                               env=harness.threads_env(args.threads)) as server:
        print(f"server ready in {server.startup_s:.1f} s: {server.url}")
        for r in range(args.rounds):
            for b in sizes:
                res = rawmodel.loop_throughput(vits, sentences, b, min_seconds=args.seconds)
                raw[b].append(res)
                print(f"round {r + 1}: raw batch {b}: {res.throughput:.2f} audio s/s "
                      f"({res.items} items, {res.wall_s:.1f} s)")
            best_b = max(sizes, key=lambda b: sum(x.audio_s for x in raw[b])
                         / sum(x.wall_s for x in raw[b]))
            conc = args.concurrency or max(4, 2 * best_b)
            stage = drive.closed_loop(server.url, [("short", s) for s in sentences],
                                      concurrency=conc, duration_s=args.seconds)
            server_stages.append(stage)
            batch = (stage["server"].get("batch_size") or {}).get("mean")
            print(f"round {r + 1}: server (c={conc}): {stage['throughput_audio_s_per_s']:.2f} "
                  f"audio s/s ({stage['requests']['ok']} ok, mean batch {batch})")

    raw_thr = {b: sum(x.audio_s for x in raw[b]) / sum(x.wall_s for x in raw[b]) for b in sizes}
    best = max(raw_thr, key=lambda b: raw_thr[b])
    srv_audio = sum(s["audio_s_total"] for s in server_stages)
    srv_wall = sum(s["wall_s"] for s in server_stages)
    srv_thr = srv_audio / srv_wall
    print("raw loop: " + ", ".join(f"batch {b}: {v:.2f}" for b, v in raw_thr.items())
          + f" audio s/s; best batch {best}")
    print(f"server at saturation: {srv_thr:.2f} audio s/s "
          f"(latency p95 of last round {server_stages[-1]['latency_s']['p95']:.2f} s)")
    harness.report_ratio(
        "server_vs_raw_loop_throughput", srv_thr / raw_thr[best], target=">= 0.9",
        json_path=args.json,
        detail={"model": model_dir, "dtype": args.dtype, "machine": harness.machine(),
                "raw_audio_s_per_s": raw_thr, "best_raw_batch": best,
                "server_audio_s_per_s": srv_thr, "server_stages": server_stages},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
