"""The server sizes oneDNN's kernel cache for the loaded model before its first call."""

from __future__ import annotations

import os

import pytest
from voicefleet_server.config import ServerSettings
from voicefleet_server.engine import shapes
from voicefleet_server.metrics import Metrics
from voicefleet_server.serving.runtime import ModelRuntime, State
from voicefleet_server.serving.voices import VoiceLibrary


async def test_the_kernel_cache_is_sized_for_the_models_buckets(
    tiny_model_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    settings = ServerSettings(model=tiny_model_dir, autotune=False, model_workers=2)
    metrics = Metrics()
    runtime = ModelRuntime(settings, metrics, VoiceLibrary(settings, metrics, None))
    runtime.start()
    assert runtime._load_task is not None
    await runtime._load_task
    try:
        assert runtime.state is State.READY
        module = runtime.model().model  # type: ignore[attr-defined]
        assert runtime._engine is not None
        want = shapes.kernel_cache_capacity(module, len(runtime._engine.call_threads))
        assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == str(want)
    finally:
        await runtime.close()
