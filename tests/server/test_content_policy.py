"""--blocked-terms-file through real uvicorn: speech, captioned speech and jobs refuse a
blocked term with 400 content_policy_violation (never naming it), counted per route; the
file is re-read when it changes, as a mounted ConfigMap is updated."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server_process import ServerProcess, start_server

BLOCKED = "forbiddenword"


@pytest.fixture(scope="module")
def policed(
    tiny_model_dir: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, Path]]:
    workdir = tmp_path_factory.mktemp("policy")
    terms = workdir / "blocked-terms.txt"
    terms.write_text(f"# blocked\n{BLOCKED}\n/\\bsecret\\s+plan\\b/\n", encoding="utf-8")
    server = start_server(
        tiny_model_dir, workdir, "--no-autotune", "--blocked-terms-file", str(terms)
    )
    yield server, terms
    server.stop()


def rejections(client: httpx.Client) -> dict[str, float]:
    found = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("voicefleet_content_policy_rejections_total{"):
            route = line.split('route="')[1].split('"')[0]
            found[route] = float(line.rsplit(" ", 1)[1])
    return found


def ask(client: httpx.Client, route: str, text: str) -> httpx.Response:
    body = {"model": "tts-1", "voice": "alloy", "input": text, "response_format": "wav"}
    return client.post(route, json=body)


ROUTES = {
    "speech": "/v1/audio/speech",
    "captioned_speech": "/v1/audio/captioned_speech",
    "jobs": "/v1/audio/jobs",
}


def test_blocked_terms_are_refused_on_every_route(policed: tuple[ServerProcess, Path]) -> None:
    server, _ = policed
    with httpx.Client(base_url=server.url, timeout=60) as client:
        before = rejections(client)
        assert set(before) == set(ROUTES)
        for route in ROUTES.values():
            for text in (f"Say {BLOCKED.upper()} now.", "Our SECRET   plan is simple."):
                response = ask(client, route, text)
                assert response.status_code == 400, (route, response.text)
                error = response.json()["error"]
                assert error["code"] == "content_policy_violation" and error["param"] == "input"
                assert BLOCKED not in response.text.lower() and "secret" not in response.text
            # A near miss is fine: terms match whole words.
            assert ask(client, route, f"Say un{BLOCKED}ly now.").status_code in (200, 202)
        after = rejections(client)
        assert {r: after[r] - before[r] for r in ROUTES} == {r: 2.0 for r in ROUTES}


def test_the_file_is_reread_when_it_changes(policed: tuple[ServerProcess, Path]) -> None:
    server, terms = policed
    with httpx.Client(base_url=server.url, timeout=60) as client:
        assert ask(client, ROUTES["speech"], "A brandnewterm here.").status_code == 200
        # As the kubelet updates a ConfigMap: a new file swapped in under the same path.
        fresh = terms.with_name("blocked-terms.v2")
        fresh.write_text(f"{BLOCKED}\nbrandnewterm\n", encoding="utf-8")
        os.replace(fresh, terms)
        deadline = time.monotonic() + 20
        while ask(client, ROUTES["speech"], "A brandnewterm here.").status_code != 400:
            assert time.monotonic() < deadline, "the changed file was never re-read"
            time.sleep(0.5)
        assert ask(client, ROUTES["speech"], f"Say {BLOCKED}.").status_code == 400
