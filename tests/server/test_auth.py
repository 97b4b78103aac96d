"""API keys through a real server: `Authorization: Bearer`, 401 in OpenAI's shape, keys
from the command line and from a (rotating) Secret file, open probes, no key in the log."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import pytest
from hardening_figures import add
from hardening_support import FILE_KEY, INLINE_KEYS, auth
from server_process import ServerProcess
from voicefleet_server.api.auth import ApiKeys, parse_keys

SPEECH = {"model": "tts-1", "voice": "alloy", "input": "Who goes there?", "response_format": "pcm"}


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer"}, "missing_api_key"),
        ({"Authorization": f"Basic {INLINE_KEYS[0]}"}, "missing_api_key"),
        ({"Authorization": "Bearer wrong-key"}, "invalid_api_key"),
        ({"Authorization": f"Bearer {INLINE_KEYS[0]}x"}, "invalid_api_key"),
        ({"Authorization": f"Bearer {INLINE_KEYS[0][:-1]}"}, "invalid_api_key"),
        ({"Authorization": "Bearer " + "k" * 10_000}, "invalid_api_key"),
    ],
)
def test_requests_without_a_valid_key_get_401_in_openai_shape(
    hardened: tuple[ServerProcess, Path], headers: dict[str, str], code: str
) -> None:
    server, _ = hardened
    for method, path in (("POST", "/v1/audio/speech"), ("GET", "/v1/models"), ("POST", "/v1/x")):
        response = httpx.request(method, server.url + path, json=SPEECH, headers=headers)
        assert response.status_code == 401, (path, response.text)
        error = response.json()["error"]
        assert error["code"] == code and error["type"] == "invalid_request_error"
        assert response.headers["www-authenticate"] == "Bearer"
        assert INLINE_KEYS[0] not in response.text
    add("bad_inputs_tried")


def test_every_configured_key_works(hardened: tuple[ServerProcess, Path]) -> None:
    server, _ = hardened
    for key in (*INLINE_KEYS, FILE_KEY):
        response = httpx.post(f"{server.url}/v1/audio/speech", json=SPEECH, headers=auth(key))
        assert response.status_code == 200, response.text


def test_probes_and_metrics_stay_open(hardened: tuple[ServerProcess, Path]) -> None:
    server, _ = hardened
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(server.url + path).status_code == 200, path


def test_the_openai_client_sends_its_key(hardened: tuple[ServerProcess, Path]) -> None:
    server, _ = hardened
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=INLINE_KEYS[1], max_retries=0)
    audio = client.audio.speech.create(
        model="tts-1", voice="alloy", input="Keys work.", response_format="wav"
    )
    assert audio.content[:4] == b"RIFF"
    intruder = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        intruder.audio.speech.create(model="tts-1", voice="alloy", input="Let me in.")
    assert caught.value.code == "invalid_api_key"


def test_a_rotated_secret_file_is_picked_up(hardened: tuple[ServerProcess, Path]) -> None:
    server, key_file = hardened
    rotated = "vf-test-rotated-key-5555"
    key_file.write_text(f"{FILE_KEY}\n{rotated}\n")
    try:
        deadline = time.monotonic() + 15
        status = 0
        while time.monotonic() < deadline:
            status = httpx.get(f"{server.url}/v1/models", headers=auth(rotated)).status_code
            if status == 200:
                break
            time.sleep(0.25)
        assert status == 200
    finally:
        key_file.write_text(f"{FILE_KEY}\n")


def test_keys_never_reach_the_log(hardened: tuple[ServerProcess, Path]) -> None:
    server, _ = hardened
    httpx.get(f"{server.url}/v1/models", headers=auth("vf-wrong-key-in-log-check"))
    log = server.log()
    for key in (*INLINE_KEYS, FILE_KEY, "vf-wrong-key-in-log-check"):
        assert key not in log


def test_key_parsing_and_a_missing_secret_refuses_to_start(tmp_path: Path) -> None:
    assert parse_keys("a, b\n# comment\n\nc,") == ["a", "b", "c"]
    with pytest.raises(RuntimeError, match="cannot read"):
        ApiKeys(None, str(tmp_path / "absent"))
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    with pytest.raises(RuntimeError, match="no API keys"):
        ApiKeys(None, str(empty))
    keys = ApiKeys("one,two", None)
    assert keys.accepts("two") and not keys.accepts("three") and not keys.accepts("")
    assert not ApiKeys(None, None).enabled
