"""`voicefleet bench`: drive a running server with open-loop load and report.

Builds the per-stage arrival schedules (Poisson, seeded), runs them one after the other
with a progress bar, and writes the table (stdout), the JSON (schema in bench/README.md)
and the PNG. A `--concurrency N` stage measures closed-loop saturation instead.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from voicefleet_bench import SCHEMA, harness, load, report, stats, texts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="voicefleet bench",
        description="Open-loop load test of a running voicefleet server (or any OpenAI-style "
        "/v1/audio/speech endpoint). Poisson arrivals at --rate, or one stage per rate of "
        "--sweep; reports throughput in audio seconds per wall second, latency and time to "
        "first audio percentiles, and the server's own batching and memory metrics.",
    )
    p.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of arrivals per stage")
    load_group = p.add_mutually_exclusive_group()
    load_group.add_argument("--rate", type=float, help="requests per second (default 1)")
    load_group.add_argument("--sweep", help="comma-separated rates, one stage each: 0.5,1,2,4")
    load_group.add_argument("--concurrency", type=int,
                            help="closed loop instead: keep N requests in flight (saturation)")
    p.add_argument("--mix", default=texts.format_mix(texts.DEFAULT_MIX),
                   help="text mix as kind=weight: short (1 sentence), paragraph (3-6), "
                   "long (20-30); default %(default)s")
    p.add_argument("--stream", action="store_true",
                   help="stream_format=audio: time to first audio is the first body byte")
    p.add_argument("--stream-format", choices=("audio", "sse"),
                   help="explicit stream format (overrides --stream)")
    p.add_argument("--format", default="pcm", help="response_format (default pcm)")
    p.add_argument("--model", help="model id to request (default: the first of /v1/models)")
    p.add_argument("--voice", help="voice (default: the first of /v1/audio/voices)")
    p.add_argument("--seed", type=int, default=0, help="seed of arrivals and texts")
    p.add_argument("--drain-timeout", type=float, default=120.0,
                   help="seconds to wait for answers after the last arrival of a stage")
    p.add_argument("--timeout", type=float, default=300.0, help="per-request timeout (s)")
    p.add_argument("--json", dest="json_path", help="write the full report here")
    p.add_argument("--plot", dest="plot_path", help="draw latency/throughput vs load here (PNG)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def parse_rates(args: argparse.Namespace) -> list[float]:
    if args.sweep:
        rates = [float(r) for r in args.sweep.split(",") if r.strip()]
        if not rates or any(r <= 0 for r in rates):
            raise ValueError(f"--sweep needs positive rates, got {args.sweep!r}")
        return rates
    rate = 1.0 if args.rate is None else args.rate
    if rate <= 0:
        raise ValueError("--rate must be positive")
    return [rate]


def make_arrivals(rate: float, duration: float, mix: dict[str, float], seed: int,
                  stage: int) -> list[load.Arrival]:
    """The seeded schedule of one stage: Poisson times, a kind per arrival, a text per kind."""
    times = stats.poisson_schedule(rate, duration, stats.rng_for(seed, f"times:{stage}"))
    text_rng = stats.rng_for(seed, f"texts:{stage}")
    kinds = texts.choose_kinds(mix, len(times), text_rng)
    return [
        load.Arrival(t, k, texts.make_text(k, text_rng))
        for t, k in zip(times, kinds, strict=True)
    ]


def text_stream(mix: dict[str, float], seed: int) -> Iterator[tuple[str, str]]:
    rng = stats.rng_for(seed, "closed")
    while True:
        (kind,) = texts.choose_kinds(mix, 1, rng)
        yield kind, texts.make_text(kind, rng)


def _ticker(bar: tqdm[Any]) -> Callable[[load.RequestResult], None]:
    def tick(_result: load.RequestResult) -> None:
        bar.update()

    return tick


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = args.url.rstrip("/")
    mix = texts.parse_mix(args.mix)
    stream_format = args.stream_format or ("audio" if args.stream else None)
    target = load.Target(url=url, response_format=args.format, stream_format=stream_format,
                         timeout_s=args.timeout)
    stages: list[dict[str, Any]] = []
    async with load.new_client() as client:
        await load.discover(client, url, target)
        if args.model:
            target.model = args.model
        if args.voice:
            target.voice = args.voice
        if args.concurrency:
            bar = tqdm(desc=f"c={args.concurrency}", unit="req", disable=args.no_progress,
                       file=sys.stderr)
            run_ = await load.run_closed_loop(
                client, target, text_stream(mix, args.seed), concurrency=args.concurrency,
                duration_s=args.duration, on_done=_ticker(bar),
            )
            bar.close()
            stages.append(load.stage_report(run_))
        else:
            for i, rate in enumerate(parse_rates(args)):
                arrivals = make_arrivals(rate, args.duration, mix, args.seed, i)
                bar = tqdm(total=len(arrivals), desc=f"{rate:g} rps", unit="req",
                           disable=args.no_progress, file=sys.stderr)
                run_ = await load.run_open_loop(
                    client, target, arrivals, offered_rate_rps=rate, duration_s=args.duration,
                    drain_timeout_s=args.drain_timeout, on_done=_ticker(bar),
                )
                bar.close()
                stages.append(load.stage_report(run_))
    return {
        "schema": SCHEMA,
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": ["voicefleet", "bench", *args.argv],
        "client_machine": harness.machine(),
        "target": {
            "url": url, "model": target.model, "voice": target.voice,
            "response_format": target.response_format, "stream_format": target.stream_format,
            "sample_rate": target.sample_rate,
        },
        "config": {
            "duration_s": args.duration, "mix": mix, "seed": args.seed,
            "rates_rps": None if args.concurrency else parse_rates(args),
            "concurrency": args.concurrency, "drain_timeout_s": args.drain_timeout,
        },
        "stages": stages,
        "summary": stats.capacity_digest(stages),
    }


def bench_main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    args.argv = list(argv)
    try:
        parse_rates(args)
        texts.parse_mix(args.mix)
    except ValueError as exc:
        parser.error(str(exc))
    result = asyncio.run(run(args))
    print(report.format_table(result["stages"]))
    for stage in result["stages"]:
        print(f"batch sizes at {report.stage_label(stage)}: {report.format_batch_histogram(stage)}")
    summary = result["summary"]
    best = max(result["stages"], key=lambda s: s["throughput_audio_s_per_s"])
    print(f"capacity: {summary['capacity_audio_s_per_s']:.2f} audio s per wall s "
          f"(at {report.stage_label(best)})")
    if args.json_path:
        Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_path).write_text(to_json(result))
    if args.plot_path:
        Path(args.plot_path).parent.mkdir(parents=True, exist_ok=True)
        report.plot(result, args.plot_path)
    ok = sum(s["requests"]["ok"] for s in result["stages"])
    return 0 if ok > 0 else 1


def to_json(result: dict[str, Any]) -> str:
    """Strict JSON (NaN and infinities become null)."""
    return json.dumps(_finite(result), indent=2, allow_nan=False) + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
