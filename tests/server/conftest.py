"""Fixtures: one shared real server on the tiny model, and an HTTP client for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hardening_support import start_hardened
from server_process import ServerProcess, start_server


@pytest.fixture(scope="session")
def server(
    tiny_model_dir: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The shared server: batching on (no CPU autotune, so batches really form)."""
    proc = start_server(
        tiny_model_dir,
        tmp_path_factory.mktemp("logs"),
        "--no-autotune",
        "--max-batch-size",
        "8",
        "--batch-window-ms",
        "30",
    )
    yield proc
    proc.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


@pytest.fixture(scope="session")
def hardened(
    tiny_model_dir: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, Path]]:
    """A server with API keys, fault injection and short deadlines (hardening tests);
    also yields its API key file, which tests may rewrite as a rotated Secret."""
    proc, key_file = start_hardened(tiny_model_dir, tmp_path_factory.mktemp("hardened"))
    yield proc, key_file
    proc.stop()
