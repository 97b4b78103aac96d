"""Start-up tuning through a real server: ready at once with safe settings, then the
measured table in /readyz detail and the choice in force (tiny model, CPU)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_process import start_server


def tuning_detail(url: str, timeout_s: float = 180.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        detail = httpx.get(f"{url}/readyz", timeout=5).json()
        if detail["tuning"]["state"] not in ("pending", "running"):
            return detail
        time.sleep(0.2)
    raise TimeoutError(f"tuning not done in {timeout_s}s: {detail}")


def test_cpu_tuning_runs_after_ready_and_shows_its_table(
    tiny_model_dir: str, tmp_path: Path
) -> None:
    server = start_server(tiny_model_dir, tmp_path, "--max-batch-size", "4")
    try:
        first = httpx.get(f"{server.url}/readyz", timeout=5).json()
        assert first["ready"] is True
        # Speech is served while tuning is still under way.
        speech = httpx.post(
            f"{server.url}/v1/audio/speech",
            json={"model": "tts-1", "input": "served during tuning.", "voice": "alloy"},
            timeout=60,
        )
        assert speech.status_code == 200
        detail = tuning_detail(server.url)
        tuning = detail["tuning"]
        assert tuning["state"] == "done", tuning
        table = tuning["batching"]["audio_s_per_s_median"]
        assert {"1", "2"} <= set(table)
        assert detail["max_batch_size"] == tuning["batching"]["choice"]
        assert detail["request_share"] == tuning["batching"]["request_share"]
        metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
        assert f"voicefleet_max_batch_size {float(detail['max_batch_size'])}" in metrics
        assert 'voicefleet_precision_info{dtype="' in metrics
    finally:
        server.stop()


@pytest.mark.parametrize(
    "flags", [["--no-autotune"], ["--max-batch-size", "1", "--dtype", "float32"]]
)
def test_nothing_to_tune_says_off(tiny_model_dir: str, tmp_path: Path, flags: list[str]) -> None:
    server = start_server(tiny_model_dir, tmp_path, *flags)
    try:
        detail = httpx.get(f"{server.url}/readyz", timeout=5).json()
        assert detail["tuning"] == {"state": "off"}
        metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
        assert 'voicefleet_precision_info{dtype="float32"} 1.0' in metrics
    finally:
        server.stop()
