"""Measure a server pod's start-up: spawn `voicefleet serve`, poll GET /readyz until 200,
and read the phases the server logs (model load, CPU batch tuning, ready).

This is the "model load + warm-up" part of a pod's start-up; image pull and scheduling
are cluster properties and stay parameters of the simulator.
"""

from __future__ import annotations

import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

_LOADED = re.compile(r"loaded .* in ([0-9.]+)s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def measure_once(model: str, extra: list[str], timeout_s: float = 900.0) -> dict[str, Any]:
    port = _free_port()
    exe = Path(sys.executable).with_name("voicefleet")
    cmd = [str(exe), "serve", "--model", model, "--host", "127.0.0.1", "--port", str(port),
           *extra]
    with tempfile.TemporaryFile(mode="w+") as log:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            while not _ready(port):
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}")
                if time.monotonic() - started > timeout_s:
                    raise TimeoutError("server not ready in time")
                time.sleep(0.1)
            ready_s = time.monotonic() - started
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.seek(0)
        text = log.read()
    loaded = _LOADED.search(text)
    tuning = [line.split("INFO ", 1)[-1] for line in text.splitlines() if "batching" in line]
    return {
        "ready_s": round(ready_s, 2),
        "model_load_s": float(loaded.group(1)) if loaded else None,
        "log": tuning + [line.split("INFO ", 1)[-1] for line in text.splitlines()
                         if "ready:" in line],
    }


def measure(model: str, runs: int, extra: list[str]) -> dict[str, Any]:
    results = [measure_once(model, extra) for _ in range(runs)]
    load = os.getloadavg()
    return {
        "what": "seconds from exec of `voicefleet serve` to GET /readyz 200",
        "command": ["voicefleet", "serve", "--model", model, *extra],
        "model": model,
        "machine": f"{_cpu_name()}, {os.cpu_count()} CPUs, no GPU",
        "load_average_after": [round(x, 2) for x in load],
        "runs": results,
        "ready_s": [r["ready_s"] for r in results],
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
