#!/usr/bin/env python3
"""Render docs/images/dashboard.png: the chart's Grafana dashboard drawn from a real
Prometheus that scraped a real `voicefleet serve` through a load pattern.

    .venv/bin/python scripts/dashboard_picture.py [--model DIR] [--out PNG] [--scale 1.0]

Starts the server (the default voice unless --model), an operator metrics endpoint with
one VoiceService's replica figures, and Debian's prometheus scraping both every second;
drives idle / moderate / idle / overload / idle phases (with a few bad requests); then
draws every panel from query_range (voicefleet_bench.dashboard). Prints what it counted.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "server"), str(ROOT / "operator"), str(ROOT / "bench")]

from voicefleet_bench.dashboard import render  # noqa: E402
from voicefleet_bench.prometheus import Target, free_port, start_prometheus, wait_for  # noqa: E402
from voicefleet_bench.texts import make_text  # noqa: E402
from voicefleet_operator.metrics import OperatorMetrics  # noqa: E402

DASHBOARD = ROOT / "charts" / "voicefleet" / "files" / "grafana" / "voicefleet.json"


def start_server(model: str | None, port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "voicefleet", "serve", "--host", "127.0.0.1"]
    # Batching on (no CPU autotune, which picks batch 1 here) so its panel shows something.
    command += ["--port", str(port), "--max-queue", "48", "--batch-window-ms", "20"]
    command += ["--no-autotune", "--max-batch-size", "4"]
    if model:
        command += ["--model", model]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "VOICEFLEET_LOG_LEVEL": "warning"}
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


def drive(url: str, seconds: float, workers: int, counts: dict[int, int]) -> None:
    """`workers` clients sending back to back for `seconds`; every 10th request is bad."""
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        n = 0
        while time.monotonic() < stop:
            n += 1
            kind = rng.choice(["short", "short", "paragraph"])
            body = {"model": "tts-1", "input": make_text(kind, rng), "voice": "alloy"}
            if n % 10 == 0:
                body["voice"] = "no-such-voice"  # a 400 for the errors panel
            try:
                code = httpx.post(f"{url}/v1/audio/speech", json=body, timeout=120).status_code
            except httpx.HTTPError:
                code = 0
            with lock:
                counts[code] = counts.get(code, 0) + 1
            if code == 429:
                time.sleep(0.5)

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(client, range(workers)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model to serve (default: the server's default voice)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "images" / "dashboard.png"))
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every phase length")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="voicefleet-dashboard-"))
    port = free_port()
    server = start_server(args.model, port, work / "server.log")
    url = f"http://127.0.0.1:{port}"
    operator = OperatorMetrics()
    operator_port = free_port()
    operator.serve(operator_port, "127.0.0.1")
    prometheus = None
    try:
        wait_for(
            lambda: (
                server.poll() is None and httpx.get(f"{url}/readyz", timeout=2).status_code == 200
            ),
            600,
            "server ready",
            every=1,
        )
        labels = {"namespace": "tts", "voicefleet_dev_service": "demo", "pod": "demo-0"}
        prometheus = start_prometheus(
            [Target(f"127.0.0.1:{port}", labels), Target(f"127.0.0.1:{operator_port}", {}, True)],
            work,
        )
        operator.observe_service(
            "tts", "demo", {"autoscaling": {"maxReplicas": 2}}, {"status": {"replicas": 1}}
        )
        counts: dict[int, int] = {}
        started = time.time()
        for phase, seconds, workers in (
            ("idle", 20, 0),
            ("moderate", 45, 2),
            ("idle", 20, 0),
            ("overload", 45, 12),
            ("idle", 30, 0),
        ):
            print(f"{phase}: {seconds * args.scale:.0f} s, {workers} clients", flush=True)
            if workers == 0:
                time.sleep(seconds * args.scale)
            else:
                drive(url, seconds * args.scale, workers, counts)
            operator.observe_service(
                "tts", "demo", {"autoscaling": {"maxReplicas": 2}},
                {"status": {"replicas": 1, "readyReplicas": 1}},
            )  # fmt: skip
        end = time.time()
        drawn = render(prometheus, DASHBOARD, started, end, Path(args.out))
        peak = prometheus.query(
            f"max_over_time(sum(voicefleet_queued_audio_seconds)[{int(end - started)}s:1s])",
            end,
        )
        print(f"answers by status: {dict(sorted(counts.items()))}")
        print(f"queued audio-seconds peak: {float(peak[0]['value'][1]):.1f} s")
        print(f"series drawn per panel: {drawn}")
        print(f"wrote {args.out}")
    finally:
        if prometheus is not None:
            prometheus.stop()
        server.terminate()
        server.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
