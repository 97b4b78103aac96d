"""Long-form jobs in-process (no Redis), through real uvicorn on the tiny model."""

from __future__ import annotations

import io

import httpx
import soundfile as sf
from jobs_support import finished, poll, sentences, submit, wav_seconds


def test_plain_job_reports_progress_serves_chunks_while_rendering_and_the_whole_audio(
    client: httpx.Client,
) -> None:
    job = submit(client, input=sentences(120), seed=7)
    assert job["segments_total"] == 120 and job["chunks_total"] == 15
    seen: list[dict] = []
    running = poll(client, job["id"], lambda j: 0 < j["chunks_done"] < j["chunks_total"], seen=seen)
    # A finished chunk is served while later ones are still rendering.
    first = running["chunks"][0]
    response = client.get(first["url"])
    assert response.status_code == 200 and response.headers["content-type"] == "audio/wav"
    assert abs(wav_seconds(response.content) - first["seconds"]) < 1e-3
    assert running["estimated_seconds_left"] is not None
    unfinished = running["chunks_total"] - 1
    if all(c["index"] != unfinished for c in running["chunks"]):
        pending = client.get(f"/v1/audio/jobs/{job['id']}/chunks/{unfinished}")
        assert pending.status_code in (200, 409)

    done = finished(client, job["id"])
    assert done["status"] == "succeeded", done
    assert done["progress"] == 1.0 and done["segments_done"] == 120
    progress = [j["progress"] for j in seen]
    assert progress == sorted(progress)
    whole = client.get(done["audio_url"])
    assert whole.status_code == 200
    # Chunks of one turn are joined with the segment pause (80 ms).
    expected = done["audio_seconds"] + (done["chunks_total"] - 1) * 0.08
    assert abs(wav_seconds(whole.content) - expected) < 0.01
    assert client.get(f"/v1/audio/jobs/{job['id']}/chunks/99").status_code == 404


def test_dialogue_job_has_one_chunk_per_turn_and_turn_pauses(client: httpx.Client) -> None:
    script = "Speaker 1: Hi there. How are you?\nSpeaker 2: Fine, thanks.\nSpeaker 1: Good."
    job = submit(client, input=script, voices={"Speaker 2": "echo"}, response_format="pcm")
    assert job["chunks_total"] == 3
    done = finished(client, job["id"])
    assert done["status"] == "succeeded", done
    whole = client.get(done["audio_url"]).content
    expected = done["audio_seconds"] + 2 * 0.4  # default --job-turn-pause-ms 400
    assert abs(len(whole) / 2 / 16000 - expected) < 0.01


def test_other_formats_decode(client: httpx.Client) -> None:
    job = submit(client, input=sentences(3), response_format="flac")
    done = finished(client, job["id"])
    samples, rate = sf.read(io.BytesIO(client.get(done["audio_url"]).content))
    assert rate == 16000 and len(samples) > 0
    chunk = client.get(done["chunks"][0]["url"])
    assert chunk.headers["content-type"] == "audio/flac"


def test_delete_stops_the_job_and_removes_its_audio(client: httpx.Client) -> None:
    job = submit(client, input=sentences(400))
    running = poll(client, job["id"], lambda j: j["chunks_done"] >= 1)
    first_chunk = running["chunks"][0]["url"]
    assert client.get(first_chunk).status_code == 200
    response = client.delete(f"/v1/audio/jobs/{job['id']}")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled" and response.json()["deleted"] is True
    done = finished(client, job["id"])
    # The record stays (a polling client sees what happened); the audio is gone.
    assert done["status"] == "cancelled" and done["deleted"] is True
    assert done["chunks"] == [] and done["audio_url"] is None
    gone = client.get(first_chunk)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
    assert client.get(f"/v1/audio/jobs/{job['id']}/audio").status_code == 404
    # Interactive speech is unaffected.
    speech = client.post(
        "/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": "Still here."}
    )
    assert speech.status_code == 200


def test_delete_of_a_finished_job_keeps_its_status(client: httpx.Client) -> None:
    job = submit(client, input=sentences(3))
    done = finished(client, job["id"])
    assert client.get(done["audio_url"]).status_code == 200
    deleted = client.delete(f"/v1/audio/jobs/{job['id']}").json()
    assert deleted["status"] == "succeeded" and deleted["deleted"] is True
    assert deleted["chunks"] == [] and deleted["audio_url"] is None
    assert client.get(done["audio_url"]).status_code == 404
    assert client.get(done["chunks"][0]["url"]).status_code == 404
    assert client.delete(f"/v1/audio/jobs/{job['id']}").status_code == 200  # idempotent


def test_input_over_the_cap_is_413_and_bad_jobs_are_400_or_404(client: httpx.Client) -> None:
    big = client.post("/v1/audio/jobs", json={"input": "a" * 100_001})
    assert big.status_code == 413
    error = big.json()["error"]
    assert error["code"] == "input_too_large" and "100000" in error["message"]
    bad_voice = client.post(
        "/v1/audio/jobs", json={"input": "Speaker 2: Hi.", "voices": {"Speaker 2": "nobody"}}
    )
    assert bad_voice.status_code == 400
    assert bad_voice.json()["error"]["param"] == "voices.Speaker 2"
    assert client.post("/v1/audio/jobs", json={"input": "  \n "}).status_code == 400
    assert client.post("/v1/audio/jobs", json={"input": "x", "bogus": 1}).status_code == 400
    missing = client.get("/v1/audio/jobs/job_doesnotexist")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert client.delete("/v1/audio/jobs/job_doesnotexist").status_code == 404
    # OpenAI's voice object works in jobs too; without its id it is a 400 naming the voice.
    no_id = client.post(
        "/v1/audio/jobs", json={"input": "Speaker 2: Hi.", "voices": {"Speaker 2": {"x": 1}}}
    )
    assert no_id.status_code == 400 and no_id.json()["error"]["param"] == "voices.Speaker 2"


def test_voices_as_openai_objects(client: httpx.Client) -> None:
    job = submit(
        client,
        input="Speaker 1: Hello.\nSpeaker 2: Hi there.",
        voice={"id": "alloy"},
        voices={"Speaker 1": {"id": "alloy"}, "Speaker 2": "echo"},
    )
    assert finished(client, job["id"])["status"] == "succeeded"


def test_readyz_reports_no_redis(client: httpx.Client) -> None:
    ready = client.get("/readyz").json()
    assert ready["redis"] == {"configured": False}
    assert "voicefleet_redis_up 0.0" in client.get("/metrics").text
