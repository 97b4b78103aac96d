"""Text users really send, through the real HTTP server: normalization, the vocabulary
check's 400s and its count of dropped characters, and sentence segmentation."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from jobs_support import finished, submit
from same_render import assert_same_render
from server_process import ServerProcess, start_server

BASE = {"model": "tts-1", "voice": "alloy", "response_format": "pcm"}


def speech(client: httpx.Client, text: str, **extra: object) -> httpx.Response:
    return client.post("/v1/audio/speech", json=BASE | {"input": text} | extra)


def dropped_total(client: httpx.Client) -> float:
    metrics = client.get("/metrics").text
    match = re.search(r"^voicefleet_dropped_characters_total ([0-9.e+]+)$", metrics, re.M)
    assert match, "voicefleet_dropped_characters_total is not exported"
    return float(match.group(1))


@pytest.fixture(scope="module")
def english(
    tiny_model_dir: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The tiny model told it reads English (its tokenizer does not say)."""
    proc = start_server(
        tiny_model_dir, tmp_path_factory.mktemp("english"), "--no-autotune", "--language", "en"
    )
    yield proc
    proc.stop()


def test_mostly_foreign_text_is_a_400_naming_the_characters(client: httpx.Client) -> None:
    for response in (
        speech(client, "Привет, мир! Hi."),
        client.post("/v1/audio/jobs", json={"input": "Привет, мир! Hi."}),
    ):
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "unsupported_characters"
        assert error["type"] == "invalid_request_error" and error["param"] == "input"
        assert "'П' (U+041F)" in error["message"] and "'и' (U+0438)" in error["message"]


def test_a_few_unknown_characters_are_spoken_without_them_and_counted(
    client: httpx.Client,
) -> None:
    before = dropped_total(client)
    response = speech(client, "Café déjà vu, naïve.")
    assert response.status_code == 200 and len(response.content) > 0
    assert dropped_total(client) - before == 4  # é é à ï


@pytest.mark.parametrize("text", ["...", " !? ", "— —"])
def test_text_with_nothing_to_say_is_a_400(client: httpx.Client, text: str) -> None:
    response = speech(client, text)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "input" and "nothing to say" in error["message"]


def test_abbreviations_and_decimals_do_not_end_segments(client: httpx.Client) -> None:
    text = "I met Dr. Smith in the U.S. yesterday. It cost 3.5 dollars, e.g. a lot."
    job = submit(client, input=text)
    assert job["segments_total"] == 2
    assert finished(client, job["id"])["status"] == "succeeded"


def test_numbers_are_read_as_words_when_the_language_is_known(english: ServerProcess) -> None:
    with httpx.Client(base_url=english.url, timeout=60) as client:
        written = speech(client, "It cost $3.50 on 2024-03-01.", seed=3)
        said = speech(
            client,
            "It cost three dollars and fifty cents on March first, twenty twenty four.",
            seed=3,
        )
        assert written.status_code == said.status_code == 200
        # Same words, same seed: the same audio (unnormalized, the tiny vocabulary would
        # keep the digits and drop '$': other tokens, other audio).
        assert_same_render(written.content, said.content)
