"""Fault injection through a real server: a model that raises, runs out of memory, returns
NaN or hangs, on marked requests only (`--fault-injection`, a test-only setting)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from hardening_figures import add
from hardening_support import BATCH_TIMEOUT_S, auth
from server_process import ServerProcess


@pytest.fixture
def faulty(hardened: tuple[ServerProcess, Path]) -> ServerProcess:
    return hardened[0]


def post(url: str, text: str, seed: int, fault: str | None = None) -> httpx.Response:
    body = {
        "model": "tts-1",
        "voice": "alloy",
        "input": text,
        "response_format": "pcm",
        "seed": seed,
    }
    headers = auth() | ({"X-Voicefleet-Fault": fault} if fault else {})
    return httpx.post(f"{url}/v1/audio/speech", json=body, headers=headers, timeout=60)


def together(url: str, calls: list[tuple[str, int, str | None]]) -> list[httpx.Response]:
    """Send calls at the same moment, so they share a batch."""
    results: list[httpx.Response | None] = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def call(index: int) -> None:
        text, seed, fault = calls[index]
        barrier.wait()
        results[index] = post(url, text, seed, fault)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    add("requests_lost", sum(r is None for r in results))
    assert all(r is not None for r in results), "a request got no answer"
    return [r for r in results if r is not None]


def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_a_raising_item_fails_its_request_alone(faulty: ServerProcess) -> None:
    add("faults_injected")  # before anything can fail: "faults survived" counts the rest
    mates = [(f"Batch mate number {i} speaks.", 100 + i, None) for i in range(4)]
    responses = together(faulty.url, [("This one breaks the model.", 1, "raise"), *mates])
    # Counted before the checks below, which stop the test at the first wrong answer.
    add("requests_lost", sum(r.status_code not in (200, 500) for r in responses))
    bad, *good = responses
    assert bad.status_code == 500, bad.text
    error = bad.json()["error"]
    assert error["code"] == "synthesis_failed" and "injected fault" in error["message"]
    assert [r.status_code for r in good] == [200] * 4
    # Each mate got its own audio: its solo render, up to what bfloat16 kernels round
    # differently with another batch shape. On this random-weight model a rounding step can
    # grow through the vocoder over a stretch (seen: 2.4 % of one mate's samples, the same
    # on the engine of `b50d104`; in float32 batched and solo renders agree to 1e-5:
    # tests/unit/test_hifigan.py). Another caller's audio has another length (these four
    # differ) or differs almost everywhere.
    for (text, seed, _), response in zip(mates, good, strict=True):
        solo = np.frombuffer(post(faulty.url, text, seed).content, dtype="<i2")
        batched = np.frombuffer(response.content, dtype="<i2")
        assert len(batched) == len(solo), f"seed {seed}: audio of another length"
        differing = float(np.mean(batched != solo))
        assert differing < 0.05, f"seed {seed}: {differing:.1%} of samples differ from solo"
    add("faults_survived")


def test_a_simulated_cuda_oom_splits_the_batch_and_every_request_succeeds(
    faulty: ServerProcess,
) -> None:
    add("faults_injected")
    before = metric(faulty.url, "voicefleet_oom_splits_total")
    for attempt in range(3):  # the burst must land in one batch; on a busy machine, retry
        mates = [(f"Mate {i} of attempt {attempt}.", 200 + i, None) for i in range(3)]
        responses = together(faulty.url, [("This one needs memory.", 2, "oom"), *mates])
        assert [r.status_code for r in responses] == [200] * 4, [r.text for r in responses]
        if metric(faulty.url, "voicefleet_oom_splits_total") > before:
            break
    assert metric(faulty.url, "voicefleet_oom_splits_total") > before
    add("faults_survived")


def test_nan_output_is_rerun_in_float32(faulty: ServerProcess) -> None:
    add("faults_injected")
    before = metric(faulty.url, "voicefleet_fp32_reruns_total")
    response = post(faulty.url, "First sentence. Second sentence.", 3, "nan")
    assert response.status_code == 200 and len(response.content) > 0
    assert metric(faulty.url, "voicefleet_fp32_reruns_total") >= before + 2
    add("faults_survived")


def test_a_caller_who_hangs_up_leaves_nothing_queued(faulty: ServerProcess) -> None:
    """A whole-file request whose client closes the connection is dropped at once: its
    segments leave the queue while the worker is still busy, instead of rendering later
    for nobody ahead of the callers who wait."""
    hold = threading.Thread(target=post, args=(faulty.url, "Hold the worker.", 21, "hang=2.2"))
    hold.start()
    time.sleep(0.3)  # the held call is on the worker; what comes next queues
    sentences = " ".join(f"Queued sentence number {n} waits here." for n in range(12))
    gave_up = threading.Thread(target=lambda: _hang_up_after(faulty.url, sentences, 0.8))
    gave_up.start()
    assert _wait_for(lambda: metric(faulty.url, "voicefleet_queue_depth") >= 2, 2)
    gave_up.join(10)
    assert _wait_for(lambda: metric(faulty.url, "voicefleet_queue_depth") == 0, 1.0)
    assert hold.is_alive()  # emptied by the hang-up, not by the worker getting to it
    hold.join(30)


def _hang_up_after(url: str, text: str, seconds: float) -> None:
    body = {"model": "tts-1", "voice": "alloy", "input": text, "response_format": "pcm",
            "seed": 22}  # fmt: skip
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/audio/speech", json=body, headers=auth(),
                   timeout=httpx.Timeout(30, read=seconds))  # fmt: skip


def test_a_hang_gets_504_the_worker_recovers_and_liveness_reflects_the_stuck_thread(
    faulty: ServerProcess,
) -> None:
    add("faults_injected")
    hang_s = 2 * BATCH_TIMEOUT_S + 3  # still stuck when the second deadline passes
    started = time.monotonic()
    stuck = post(faulty.url, "This one never returns.", 4, f"hang={hang_s}")
    assert stuck.status_code == 504, stuck.text
    assert stuck.json()["error"]["code"] == "synthesis_timeout"
    assert time.monotonic() - started < hang_s
    # A fresh worker serves the next request while the old thread is still stuck.
    assert post(faulty.url, "Life goes on.", 5).status_code == 200
    # Stuck for longer than a second deadline: liveness (and readiness) fail.
    assert _wait_for(lambda: httpx.get(f"{faulty.url}/healthz").status_code == 500, hang_s)
    assert httpx.get(f"{faulty.url}/readyz").status_code == 503
    assert metric(faulty.url, "voicefleet_stuck_workers") == 1
    # Once the stuck call returns, its thread exits and the pod is healthy again.
    assert _wait_for(lambda: httpx.get(f"{faulty.url}/healthz").status_code == 200, 30)
    assert httpx.get(f"{faulty.url}/readyz").status_code == 200
    assert post(faulty.url, "Healthy again.", 6).status_code == 200
    add("faults_survived")


def test_fault_header_is_ignored_without_the_setting(server: ServerProcess) -> None:
    response = post(server.url, "Production ignores the header.", 7, "raise")
    assert response.status_code == 200


def test_unknown_fault_is_a_400(faulty: ServerProcess) -> None:
    response = post(faulty.url, "Hello.", 8, "explode")
    assert response.status_code == 400 and "unknown fault" in response.json()["error"]["message"]


def _wait_for(condition: object, timeout: float) -> bool:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_fault_setting_is_off_by_default(tmp_path: Path) -> None:
    from voicefleet_server.config import ServerSettings

    assert ServerSettings().fault_injection is False
