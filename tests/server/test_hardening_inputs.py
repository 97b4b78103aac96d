"""Abusive input through a real server, beyond test_speech_api's matrix: control
characters, invalid UTF-8, 10 MB bodies with and without Content-Length, slow bodies,
and SSE clients that hang up mid-stream (their work stops and their slot frees)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from hardening_figures import add, record
from hardening_support import BODY_TIMEOUT_S, auth
from server_process import ServerProcess

BASE = {"model": "tts-1", "voice": "alloy", "response_format": "pcm"}
TEN_MB = 10 * 2**20


def raw_post(client: httpx.Client, body: bytes, path: str = "/v1/audio/speech") -> httpx.Response:
    return client.post(path, content=body, headers={"content-type": "application/json"})


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text[:300]
    error = response.json()["error"]
    assert isinstance(error, dict) and error["message"] and error["type"]
    return error


# (body, expected status): JSON built by hand so that nothing cleans it up on the way.
ODD_TEXT = [
    ('{"input": "Hello\\u0000 world, \\u001b[31m red\\u0007 bell.", %s}', 200),
    ('{"input": "\\u0000\\u0001\\u0002\\u001f\\u007f", %s}', 400),
    ('{"input": "\\ud800 lone surrogate, then words.", %s}', 200),
    ('{"input": "\\udfff", %s}', 400),
    ('{"input": "Right-to-left \\u202e override and zero\\u200bwidth.", %s}', 200),
    ('{"input": "' + "\\ufeff" * 100 + '", %s}', 400),
]


@pytest.mark.parametrize(("template", "status"), ODD_TEXT)
def test_odd_text_is_spoken_or_refused_never_a_500(
    client: httpx.Client, template: str, status: int
) -> None:
    rest = json.dumps(BASE)[1:-1]
    response = raw_post(client, (template % rest).encode())
    if status == 200:
        assert response.status_code == 200, response.text[:300]
        assert len(response.content) > 0
    else:
        assert assert_openai_error(response, status)["param"] == "input"
    add("bad_inputs_tried")


@pytest.mark.parametrize(
    ("field", "value", "status"),
    [
        ("voice", "alloy\u0000", 400),
        ("voice", "\u001b[2J", 400),
        ("model", "tts-1\u0000", 404),
        ("response_format", "pcm\u0000", 400),
    ],
)
def test_control_characters_in_other_fields(
    client: httpx.Client, field: str, value: str, status: int
) -> None:
    response = client.post("/v1/audio/speech", json=BASE | {"input": "Hello.", field: value})
    assert assert_openai_error(response, status)["param"] == field
    add("bad_inputs_tried")


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "tts-1", "voice": "alloy", "input": "\xff\xfe bad bytes"}',
        b'{"model": "tts-1", "voice": "alloy", "input": "\xc3\x28 truncated"}',
        b'{"model": "tts-1", "voice": "\xf0\x28\x8c\x28", "input": "Hello."}',
    ],
)
def test_invalid_utf8_is_a_400(client: httpx.Client, body: bytes) -> None:
    assert_openai_error(raw_post(client, body), 400)
    add("bad_inputs_tried")


@pytest.mark.parametrize(
    "body",
    [
        # Python's JSON decoder lets UTF-8-encoded surrogates through ("surrogatepass"),
        # and detects a BOM and UTF-16 as RFC 8259 allows: a clean answer is what matters.
        b'{"model": "tts-1", "voice": "alloy", "input": "\xed\xa0\x80 surrogate, words."}',
        b'\xef\xbb\xbf{"model": "tts-1", "voice": "alloy", "input": "BOM first."}',
        '{"model": "tts-1", "voice": "alloy", "input": "Hello."}'.encode("utf-16"),
    ],
)
def test_odd_encodings_are_spoken_or_refused_never_a_500(client: httpx.Client, body: bytes) -> None:
    response = raw_post(client, body)
    assert response.status_code in (200, 400), response.text[:300]
    add("bad_inputs_tried")


@pytest.mark.parametrize("path", ["/v1/audio/speech", "/v1/audio/jobs"])
def test_ten_megabytes_with_content_length_are_refused_before_parsing(
    client: httpx.Client, path: str
) -> None:
    response = raw_post(client, b"x" * TEN_MB, path)
    assert assert_openai_error(response, 413)["code"] == "request_too_large"
    add("bad_inputs_tried")


@pytest.mark.parametrize("path", ["/v1/audio/speech", "/v1/audio/jobs"])
def test_ten_megabytes_chunked_are_refused_as_they_arrive(server: ServerProcess, path: str) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        piece = b'{"input": "' + b"a" * (64 * 1024 - 11)
        for _ in range(TEN_MB // len(piece)):
            sent += len(piece)
            yield piece

    with httpx.Client(base_url=server.url, timeout=30) as http:
        try:
            response = http.post(
                path, content=chunks(), headers={"content-type": "application/json"}
            )
        except httpx.TransportError:
            # The server answered 413 and closed while the client was still sending: an
            # httpx client cannot always read that answer. The raw-socket check below can.
            response = None
    if response is not None:
        assert "content-length" not in response.request.headers
        assert assert_openai_error(response, 413)["code"] == "request_too_large"
    status, _ = _chunked_over_socket(server.url, path, TEN_MB)
    assert status == 413
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    add("bad_inputs_tried")


def test_a_small_chunked_body_still_works(client: httpx.Client) -> None:
    body = json.dumps(BASE | {"input": "Sent in pieces."}).encode()
    pieces = iter([body[:10], body[10:30], body[30:]])
    response = client.post(
        "/v1/audio/speech", content=pieces, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200 and "content-length" not in response.request.headers


def test_a_slow_body_gets_408_and_the_connection_is_freed(
    hardened: tuple[ServerProcess, Path],
) -> None:
    server, _ = hardened
    host, port = _address(server.url)
    started = time.monotonic()
    with socket.create_connection((host, port), timeout=20) as sock:
        head = (
            "POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: {auth()['Authorization']}\r\nContent-Length: 200\r\n\r\n"
        )
        sock.sendall(head.encode())
        answer = b""
        sock.settimeout(0.5)
        # One byte every 0.3 s: the body would take a minute; the server gives it 2 s.
        while time.monotonic() - started < 20:
            try:
                sock.sendall(b" ")
            except OSError:
                break  # the server closed the connection
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                break
            answer += data
            if b"\r\n\r\n" in answer:
                break
            time.sleep(0.3)
        # The head may arrive without its body: read the answer to its end before judging it.
        answer = _rest_of_response(sock, answer)
    elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request_timeout" in answer
    assert BODY_TIMEOUT_S <= elapsed < BODY_TIMEOUT_S + 8
    add("bad_inputs_tried")


def test_sse_client_hanging_up_stops_its_work_and_frees_its_slot(server: ServerProcess) -> None:
    sentences = 95  # about 3,700 characters, under --max-input-chars
    text = " ".join(f"Sentence number {i} of a long stream." for i in range(sentences))
    before = _metrics(server.url)
    with (
        httpx.Client(base_url=server.url, timeout=30) as http,
        http.stream(
            "POST",
            "/v1/audio/speech",
            json=BASE | {"input": text, "stream_format": "sse", "seed": 1},
        ) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data:"):
                break  # first audio: now hang up
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = _metrics(server.url)
        if now["voicefleet_inflight_requests"] == 0 and now["voicefleet_queue_depth"] == 0:
            break
        time.sleep(0.05)
    assert now["voicefleet_inflight_requests"] == 0
    assert now["voicefleet_queue_depth"] == 0
    time.sleep(0.5)  # nothing left running: the count of rendered segments stays put
    after = _metrics(server.url)
    rendered = after["voicefleet_batch_size_sum"] - before["voicefleet_batch_size_sum"]
    assert rendered < sentences, f"all {sentences} segments rendered for a client that left"
    record("sse_hang_up_segments_rendered", {"rendered": int(rendered), "of": sentences})
    add("bad_inputs_tried")


def _metrics(url: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            values[name] = float(value)
    return values


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def _rest_of_response(sock: socket.socket, answer: bytes, timeout: float = 10) -> bytes:
    """`answer` (the bytes read so far) completed to a whole HTTP response: the head, then
    Content-Length bytes of body, or everything until the server closes when it sends no
    length. TimeoutError if the server stops sending before that."""
    sock.settimeout(timeout)
    while b"\r\n\r\n" not in answer:
        data = sock.recv(65536)
        if not data:
            return answer
        answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while length is None or len(body) < length:
        data = sock.recv(65536)
        if not data:
            break
        body += data
    return head + b"\r\n\r\n" + body


def _chunked_over_socket(url: str, path: str, total: int) -> tuple[int, int]:
    """Send `total` bytes chunked; return (status, bytes sent before the answer)."""
    host, port = _address(url)
    with socket.create_connection((host, port), timeout=20) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        )
        sock.sendall(head.encode())
        piece = b"a" * 65536
        chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        sent = 0
        sock.settimeout(0.01)
        answer = b""
        while sent < total:
            try:
                sock.sendall(chunk)
            except OSError:
                break
            sent += len(piece)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                break
            answer += data
            if b"\r\n\r\n" in answer:
                break
        sock.settimeout(10)
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
    return status, sent
