"""Admission control and graceful drain, each on its own real server process."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from hardening_figures import record
from server_process import start_server

TEXT = "A sentence to keep the model busy for a moment. " * 6


def post(url: str, text: str = TEXT, timeout: float = 120) -> httpx.Response:
    body = {"model": "tts-1", "voice": "alloy", "input": text, "response_format": "pcm"}
    return httpx.post(f"{url}/v1/audio/speech", json=body, timeout=timeout)


def test_overload_gets_429_with_retry_after_and_never_500(
    tiny_model_dir: str, tmp_path: Path
) -> None:
    server = start_server(
        tiny_model_dir,
        tmp_path,
        "--no-autotune",
        "--max-batch-size",
        "1",
        "--max-queue",
        "8",
    )
    try:
        with ThreadPoolExecutor(24) as pool:
            responses = list(pool.map(lambda _: post(server.url), range(24)))
        statuses = Counter(r.status_code for r in responses)
        record("overload_quick", {"requests": len(responses), "max_queue": 8,
                                  "statuses": dict(sorted(statuses.items()))})
        assert set(statuses) <= {200, 429}, statuses
        assert statuses[429] > 0 and statuses[200] > 0, statuses
        for response in responses:
            if response.status_code == 429:
                assert int(response.headers["Retry-After"]) >= 1
                assert response.json()["error"]["code"] == "queue_full"
        # Once the burst is over the server admits work again.
        assert post(server.url, "Back to normal.").status_code == 200
    finally:
        server.stop()


def test_sigterm_drains_accepted_work_refuses_new_work_and_exits(
    tiny_model_dir: str, tmp_path: Path
) -> None:
    server = start_server(
        tiny_model_dir,
        tmp_path,
        "--no-autotune",
        "--max-batch-size",
        "1",
        "--drain-seconds",
        "60",
    )
    try:
        results: list[httpx.Response] = []
        lock = threading.Lock()

        def accepted_call() -> None:
            response = post(server.url)
            with lock:
                results.append(response)

        threads = [threading.Thread(target=accepted_call) for _ in range(6)]
        for thread in threads:
            thread.start()
        _wait_for_inflight(server.url, 6)
        server.terminate(signal.SIGTERM)
        _wait_until_not_ready(server.url)
        refused = post(server.url, "Too late.")
        assert refused.status_code == 503
        assert int(refused.headers["Retry-After"]) >= 1
        for thread in threads:
            thread.join(120)
        assert [r.status_code for r in results] == [200] * 6, (
            "an accepted request was lost in the drain"
        )
        assert all(len(r.content) > 0 for r in results)
        assert server.process.wait(30) == 0
    finally:
        server.stop()


def _wait_for_inflight(url: str, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in httpx.get(f"{url}/metrics").text.splitlines():
            if line.startswith("voicefleet_inflight_requests ") and float(line.split()[1]) >= count:
                return
        time.sleep(0.05)
    raise AssertionError(f"{count} requests never got in flight")


def _wait_until_not_ready(url: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/readyz").status_code == 503:
            return
        time.sleep(0.02)
    raise AssertionError("server stayed ready after SIGTERM")
