"""`voicefleet serve` pauses the garbage collector while it imports and loads (a faster
cold start: server/voicefleet_server/coldstart.py); whether the model loads or fails to, the
runtime must leave it collecting again."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from voicefleet_server import coldstart
from voicefleet_server.config import ServerSettings
from voicefleet_server.metrics import Metrics
from voicefleet_server.serving.runtime import ModelRuntime, State
from voicefleet_server.serving.voices import VoiceLibrary


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    yield
    gc.enable()


async def _load(model: str) -> ModelRuntime:
    settings = ServerSettings(model=model, autotune=False)
    metrics = Metrics()
    runtime = ModelRuntime(settings, metrics, VoiceLibrary(settings, metrics, None))
    coldstart.pause_collector()  # as serve_main does first thing
    assert not gc.isenabled()
    runtime.start()
    assert runtime._load_task is not None
    await runtime._load_task
    return runtime


async def test_the_collector_runs_again_once_the_model_has_loaded(tiny_model_dir: str) -> None:
    runtime = await _load(tiny_model_dir)
    assert runtime.state is State.READY
    assert gc.isenabled()
    await runtime.close()


async def test_the_collector_runs_again_when_the_model_fails_to_load(tmp_path: Path) -> None:
    runtime = await _load(str(tmp_path / "no-such-model"))
    assert runtime.state is State.FAILED
    assert gc.isenabled()
    await runtime.close()
