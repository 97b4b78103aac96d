"""`voicefleet serve` pauses the garbage collector while it imports and loads (a faster
cold start: server/voicefleet_server/coldstart.py); once ready it must be collecting again."""

from __future__ import annotations

import httpx
from server_process import ServerProcess


def _young_collections(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith('python_gc_collections_total{generation="0"}'):
            return float(line.split()[-1])
    raise AssertionError("python_gc_collections_total is not exported")


def test_the_collector_runs_again_once_the_server_is_ready(
    server: ServerProcess, client: httpx.Client
) -> None:
    before = _young_collections(client)
    for _ in range(20):  # requests leave cyclic garbage behind (frames, tracebacks, tasks)
        response = client.post(
            "/v1/audio/speech",
            json={
                "model": "tts-1",
                "input": "Collect me.",
                "voice": "alloy",
                "response_format": "wav",
            },
        )
        assert response.status_code == 200, response.text
    assert _young_collections(client) > before
