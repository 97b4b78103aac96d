"""Helpers for the job tests: submit, poll until a condition, decode audio."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import httpx
import soundfile as sf

TERMINAL = {"succeeded", "failed", "cancelled"}


def sentences(count: int, word: str = "Hello") -> str:
    return " ".join(f"{word} number {i}." for i in range(count))


def submit(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/audio/jobs", json={"response_format": "wav"} | body)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    assert job["status"] == "queued" and job["id"].startswith("job_")
    return job


def poll(
    client: httpx.Client,
    job_id: str,
    until: Callable[[dict[str, Any]], bool],
    timeout: float = 60,
    seen: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/v1/audio/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if seen is not None:
            seen.append(job)
        if until(job):
            return job
        assert time.monotonic() < deadline, f"job never reached the condition: {job}"
        time.sleep(0.05)


def finished(client: httpx.Client, job_id: str, timeout: float = 60) -> dict[str, Any]:
    return poll(client, job_id, lambda j: j["status"] in TERMINAL, timeout)


def wav_seconds(data: bytes) -> float:
    samples, rate = sf.read(io.BytesIO(data), dtype="int16")
    return len(samples) / rate
