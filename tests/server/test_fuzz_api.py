"""Fuzz the HTTP API from its own OpenAPI schema (schemathesis) against the real server.

Every operation gets schema-valid and schema-violating cases; every answer must be below
500, and every error must be in OpenAI's shape. The budget is bounded (a fixed number of
derandomised examples per operation and mode), and the number of cases run is reported.
"""

from __future__ import annotations

import contextlib
from collections import Counter

import httpx
import requests
import schemathesis
from hardening_figures import record
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from server_process import ServerProcess

EXAMPLES_PER_OPERATION = 25


def problem_with(response: requests.Response) -> str | None:
    """Why an answer breaks the contract, or None."""
    if response.status_code >= 500:
        return f"server error {response.status_code}"
    if response.status_code < 400:
        return None
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code} not in OpenAI's error shape: {response.text[:200]!r}"
    if not (
        isinstance(error, dict)
        and isinstance(error.get("message"), str)
        and error["message"]
        and isinstance(error.get("type"), str)
        and "code" in error
    ):
        return f"{response.status_code} error lacks message/type/code: {error!r}"
    return None


def test_fuzz_the_api_from_its_openapi_schema(server: ServerProcess) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    session = requests.Session()
    statuses: Counter[int] = Counter()
    problems: list[str] = []
    jobs: list[str] = []
    operations = 0

    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Case) -> None:
                response = case.call(base_url=server.url, session=session, timeout=60)
                statuses[response.status_code] += 1
                problem = problem_with(response)
                if problem is not None:
                    problems.append(f"{case.method} {case.formatted_path}: {problem}")
                if case.path == "/v1/audio/jobs" and response.status_code == 202:
                    jobs.append(response.json()["id"])

            # Unsatisfiable: no schema-violating input exists (no parameters to break).
            with contextlib.suppress(Unsatisfiable):
                run()

    for job in jobs:  # leave the shared server idle for the tests after this one
        httpx.delete(f"{server.url}/v1/audio/jobs/{job}")
    cases = sum(statuses.values())
    record(
        "fuzz",
        {"cases": cases, "operations": operations, "statuses": dict(sorted(statuses.items()))},
    )
    print(f"fuzz: {cases} cases over {operations} operations, statuses {dict(statuses)}")
    assert not problems, "\n".join(problems[:20])
    assert cases >= operations * 10
    assert httpx.get(f"{server.url}/healthz").status_code == 200


SPEECH_EXAMPLES = 80


def test_fuzz_speech_text_formats_and_speeds_through_synthesis(server: ServerProcess) -> None:
    """The schema fuzz mostly meets validation; this one gets past it, into the segmenter,
    tokenizer, model and encoders, with arbitrary text."""
    session = requests.Session()
    statuses: Counter[int] = Counter()
    problems: list[str] = []

    @settings(
        max_examples=SPEECH_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(
        text=st.text(max_size=300)
        | st.text(alphabet=st.characters(codec="ascii"), max_size=300)
        | st.lists(st.sampled_from(["Hi", ".", "!", "?", " ", "...", "\n", "a", "42"])).map(
            "".join
        ),
        response_format=st.sampled_from(["wav", "pcm", "flac", "mp3", "opus"]),
        speed=st.floats(0.25, 4.0),
        stream_format=st.sampled_from([None, "audio", "sse"]),
        seed=st.none() | st.integers(0, 2**63 - 1),
    )
    def run(
        text: str, response_format: str, speed: float, stream_format: str | None, seed: int | None
    ) -> None:
        body = {
            "model": "tts-1",
            "voice": "alloy",
            "input": text,
            "response_format": response_format,
            "speed": speed,
            "seed": seed,
        }
        if stream_format is not None:
            body["stream_format"] = stream_format
        response = session.post(f"{server.url}/v1/audio/speech", json=body, timeout=60)
        statuses[response.status_code] += 1
        if response.status_code not in (200, 400):
            problems.append(f"{body!r}: {response.status_code} {response.text[:200]!r}")
        elif response.status_code == 200 and stream_format == "sse":
            if "speech.audio.done" not in response.text:
                problems.append(f"{body!r}: SSE stream without a done event")
        else:
            problem = problem_with(response)
            if problem is not None:
                problems.append(f"{body!r}: {problem}")

    run()
    cases = sum(statuses.values())
    record("fuzz_speech", {"cases": cases, "statuses": dict(sorted(statuses.items()))})
    assert not problems, "\n".join(problems[:20])
    assert statuses[200] > 0
