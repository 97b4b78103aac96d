#!/usr/bin/env python
"""Script 4 - streaming: time to first audio of a multi-sentence text vs its first sentence alone.

On an idle server, per repetition: (a) a paragraph of --sentences sentences with
stream_format=audio, timed to its first audio byte (TTFA); (b) the paragraph's first
sentence alone, not streamed, timed to its last byte; (c) the paragraph again as SSE
(first `speech.audio.delta` event). Every request has its own seed: the result cache
(seeded, non-streamed requests) never answers, and each renders at lengths not seen
before. That matters on CPU: a request whose tensor shapes were just seen runs several
times faster than the first one with those shapes (measured: the first streamed request
of a text was 0.5-1.2 s to first audio, the same text again 0.05-0.13 s, tiny model), so
the order of (a), (b), (c) rotates between repetitions to spread what remains of it.
RATIO = median TTFA(stream) / median latency(first sentence alone); target <= 1.2.

    .venv/bin/python bench/streaming_ttfa.py                 # mms-size, ~2 min
    .venv/bin/python bench/streaming_ttfa.py --size tiny --reps 6
"""

from __future__ import annotations

import random
import statistics

from voicefleet_bench import drive, harness, texts


def main() -> int:
    parser = harness.script_parser(__doc__)
    parser.add_argument("--reps", type=int, default=6, help="repetitions (each: a, b, c)")
    parser.add_argument("--sentences", type=int, default=6, help="sentences in the paragraph")
    parser.add_argument("--serve-arg", action="append", default=[],
                        help="extra `voicefleet serve` argument (repeatable)")
    parser.add_argument("--threads", type=int, default=0,
                        help="server torch threads (OMP_NUM_THREADS; default: torch's default)")
    parser.add_argument("--json", help="write the ratio and details here")
    args = parser.parse_args()
    harness.line_buffered_stdout()

    model_dir = args.model or str(harness.ensure_model(args.size))
    rng = random.Random(4)
    plan: list[tuple[str, str, str | None]] = []
    seeds: list[int | None] = []
    for rep in range(args.reps):
        sentences = [texts.sentence(rng) for _ in range(args.sentences)]
        paragraph = " ".join(sentences)
        three: list[tuple[str, str, str | None]] = [
            ("stream", paragraph, "audio"), ("first", sentences[0], None),
            ("sse", paragraph, "sse"),
        ]
        shift = rep % 3
        plan += three[shift:] + three[:shift]
        seeds += [10_000 + 3 * rep + k for k in range(3)]
    with harness.ServerProcess(model_dir, args.serve_arg, name="streaming",
                env=harness.threads_env(args.threads)) as server:
        print(f"server ready in {server.startup_s:.1f} s, tuned at {server.tuned_s:.1f} s: "
              f"{server.tuning}")
        tuning = server.tuning
        results = drive.sequential(server.url, plan, seeds=seeds)
    ttfa = [r.ttfa_s for r in results if r.kind == "stream" and r.ok and r.ttfa_s]
    sse = [r.ttfa_s for r in results if r.kind == "sse" and r.ok and r.ttfa_s]
    first = [r.latency_s for r in results if r.kind == "first" and r.ok and r.latency_s]
    stream_total = [r.latency_s for r in results if r.kind == "stream" and r.ok and r.latency_s]
    errors = [f"{r.kind}: {r.status}" for r in results if not r.ok]
    for i in range(args.reps):
        by_kind = {r.kind: r for r in results[3 * i : 3 * i + 3]}
        a, b, c = by_kind["stream"], by_kind["first"], by_kind["sse"]
        print(f"rep {i + 1}: stream TTFA {a.ttfa_s or float('nan'):.2f} s "
              f"(whole {a.latency_s or float('nan'):.2f} s, {a.audio_s:.1f} s audio), "
              f"first sentence alone {b.latency_s or float('nan'):.2f} s "
              f"({b.audio_s:.1f} s audio), SSE TTFA {c.ttfa_s or float('nan'):.2f} s")
    if errors:
        print(f"errors: {errors}")
    value = statistics.median(ttfa) / statistics.median(first) if ttfa and first else None
    if sse and first:
        print(f"SSE: median TTFA / first sentence alone = "
              f"{statistics.median(sse) / statistics.median(first):.3f}")
    harness.report_ratio(
        "streaming_ttfa_vs_first_sentence_alone", value, target="<= 1.2", json_path=args.json,
        detail={"model": model_dir, "machine": harness.machine(), "ttfa_stream_s": ttfa,
                "serve_args": args.serve_arg, "tuning": tuning,
                "ttfa_sse_s": sse, "first_sentence_alone_s": first,
                "stream_whole_s": stream_total, "errors": errors, "seeds": seeds},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
