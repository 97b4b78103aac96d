"""Audio quality and GPU series through a real server: every returned segment is checked
(counted on /metrics), anomalies are logged with the request id the client sent (echoed as
X-Request-Id), and the GPU series are absent on this CPU-only machine."""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families
from server_process import ServerProcess

TWO_SENTENCES = "the quick brown fox jumps over the lazy dog. a train leaves the station on time."


def scrape(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = client.get("/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def checked(client: httpx.Client) -> float:
    return scrape(client)[("voicefleet_quality_check_seconds_count", ())]


def anomalies(client: httpx.Client) -> float:
    found = scrape(client)
    return sum(v for (name, _), v in found.items() if name == "voicefleet_output_anomalies_total")


def wait_checked(client: httpx.Client, at_least: float, timeout: float = 30) -> float:
    deadline = time.monotonic() + timeout
    while (count := checked(client)) < at_least:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} segments checked after {timeout}s, expected {at_least}")
        time.sleep(0.1)
    return count


def test_every_segment_is_checked_and_anomalies_name_the_request(
    client: httpx.Client, server: ServerProcess
) -> None:
    before, anomalous_before = checked(client), anomalies(client)
    response = client.post(
        "/v1/audio/speech",
        json={"model": "tts-1", "input": TWO_SENTENCES, "voice": "alloy", "response_format": "wav"},
        headers={"X-Request-Id": "quality-test-1"},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "quality-test-1"
    assert wait_checked(client, before + 2) == before + 2  # two segments, each once
    found = scrape(client)
    assert found[("voicefleet_output_snr_db_count", ())] >= 1
    raised = anomalies(client) - anomalous_before
    # The tiny model's random weights make noise, not speech: both segments are flagged
    # (and the response was not held back for it), each logged once with the request id.
    logged = [line for line in server.log().splitlines() if "request quality-test-1" in line]
    assert len(logged) == 2, logged
    assert all("low_snr" in line for line in logged)
    assert {"segment 0", "segment 1"} == {line.split(", ")[1].split(":")[0] for line in logged}
    assert raised >= 2


def test_request_ids_are_sane_tokens(client: httpx.Client) -> None:
    fresh = client.get("/healthz", headers={"X-Request-Id": "has spaces\tand tabs"})
    assigned = fresh.headers["x-request-id"]
    assert assigned != "has spaces\tand tabs" and len(assigned) == 32
    assert client.get("/healthz").headers["x-request-id"] != assigned


def test_gpu_series_absent_on_cpu(client: httpx.Client) -> None:
    names = {name for name, _ in scrape(client)}
    assert "voicefleet_gpu_memory_used_bytes" in names
    assert not {n for n in names if n.startswith("voicefleet_gpu_")} - {
        "voicefleet_gpu_memory_used_bytes",
        "voicefleet_gpu_memory_budget_bytes",
    }
