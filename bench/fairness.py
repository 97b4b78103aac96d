#!/usr/bin/env python
"""Script 3 - fairness: one-line requests while a very long text is being synthesized vs idle.

Phase 1 (idle): one-line requests are sent one after the other and timed. Phase 2
(loaded): a very long text (default 40 sentences, streamed; re-submitted whenever it
finishes) keeps the server busy, and once its first audio has arrived the same one-liners
are sent again, one after the other. The long request is abandoned (connection closed)
when the probes are done. Probes are unseeded, so the result cache never answers them. The
two phases alternate over --rounds so machine noise hits both alike.
RATIO = p95 latency of one-liners during the long text / p95 when idle; target <= 1.5.

    .venv/bin/python bench/fairness.py                      # mms-size, ~3 min
    .venv/bin/python bench/fairness.py --size tiny --probes 10
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

from voicefleet_bench import harness, load, stats, texts


async def _probe(client: Any, target: load.Target, lines: list[str]) -> list[load.RequestResult]:
    """One request after the other. Unseeded, so the server's result cache (seeded requests
    only) never answers them: every probe is a fresh rendering."""
    out = []
    for line in lines:
        out.append(await load.send(client, target, "short", line, time.perf_counter()))
    return out


async def _round(url: str, lines: list[str], long_text: str) -> dict[str, Any]:
    async with load.new_client() as client:
        target = await load.discover(client, url, load.Target(url))
        idle = await _probe(client, target, lines)

        first_audio = asyncio.Event()
        long_first: list[float] = []
        long_requests = 0

        async def render_long() -> None:
            """Keep a long text rendering until cancelled (re-submitted if it finishes)."""
            nonlocal long_requests
            body = {"model": target.model, "input": long_text, "voice": target.voice,
                    "response_format": "pcm", "stream_format": "audio"}
            while True:
                long_requests += 1
                started = time.perf_counter()
                async with client.stream("POST", f"{url}/v1/audio/speech", json=body,
                                         timeout=target.timeout_s) as resp:
                    if resp.status_code != 200:
                        raise RuntimeError(f"long text refused: {resp.status_code}")
                    async for chunk in resp.aiter_bytes():
                        if chunk and not first_audio.is_set():
                            long_first.append(time.perf_counter() - started)
                            first_audio.set()

        long_task = asyncio.create_task(render_long())
        await asyncio.wait([long_task, asyncio.create_task(first_audio.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
        if long_task.done():
            long_task.result()  # raises why the long text failed
        loaded = await _probe(client, target, lines)
        long_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await long_task  # abandoned on purpose: closing the stream cancels its segments
    return {
        "idle": [r.latency_s for r in idle if r.ok],
        "loaded": [r.latency_s for r in loaded if r.ok],
        "errors": [str(r.status) for r in idle + loaded if not r.ok],
        "long_ttfa_s": long_first[0] if long_first else None,
        "long_requests": long_requests,
    }


def main() -> int:
    parser = harness.script_parser(__doc__)
    parser.add_argument("--probes", type=int, default=10, help="one-liners per phase and round")
    parser.add_argument("--rounds", type=int, default=2, help="idle/loaded rounds")
    parser.add_argument("--long-sentences", type=int, default=40,
                        help="sentences in the long text")
    parser.add_argument("--serve-arg", action="append", default=[],
                        help="extra `voicefleet serve` argument (repeatable), e.g. "
                        "--serve-arg=--max-batch-size=4")
    parser.add_argument("--threads", type=int, default=0,
                        help="server torch threads (OMP_NUM_THREADS; default: torch's default)")
    parser.add_argument("--json", help="write the ratio and details here")
    args = parser.parse_args()
    harness.line_buffered_stdout()

    model_dir = args.model or str(harness.ensure_model(args.size))
    rng = random.Random(3)
    lines = [texts.sentence(rng, 5, 9) for _ in range(args.probes)]
    long_text = texts.very_long_text(args.long_sentences, seed=33)
    serve_args = [*args.serve_arg, "--max-input-chars", str(max(4096, len(long_text) + 1))]
    rounds = []
    with harness.ServerProcess(model_dir, serve_args, name="fairness",
                env=harness.threads_env(args.threads)) as server:
        print(f"server ready in {server.startup_s:.1f} s, tuned at {server.tuned_s:.1f} s: "
              f"{server.tuning}")
        tuning = server.tuning
        for r in range(args.rounds):
            res = asyncio.run(_round(server.url, lines, long_text))
            # The abandoned long text's segment in flight ends before the next idle phase.
            assert server.proc is not None
            res["quiet_wait_s"] = round(harness.wait_until_quiet([server.proc.pid]), 2)
            rounds.append(res)
            print(f"round {r + 1}: idle p95 {stats.percentile(res['idle'], 95):.2f} s, "
                  f"during long text p95 {stats.percentile(res['loaded'], 95):.2f} s "
                  f"(long text submitted {res['long_requests']}x); errors {res['errors']}")
    idle = [x for r in rounds for x in r["idle"]]
    loaded = [x for r in rounds for x in r["loaded"]]
    print(f"one-liners idle: {stats.summarize(idle)}")
    print(f"one-liners during long text: {stats.summarize(loaded)}")
    harness.report_ratio(
        "fairness_p95_one_liners_loaded_vs_idle",
        stats.ratio(stats.percentile(loaded, 95), stats.percentile(idle, 95)),
        target="<= 1.5", json_path=args.json,
        detail={"model": model_dir, "machine": harness.machine(), "rounds": rounds,
                "serve_args": serve_args, "tuning": tuning,
                "idle": stats.summarize(idle), "loaded": stats.summarize(loaded)},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
