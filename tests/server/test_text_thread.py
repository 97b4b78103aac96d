"""The text thread (phonemes, tokens) is shared by every request: a one-liner's tokens must
not wait for all of a long text's, which are made one segment at a time; nor may its
preparation (sentences, normalization) wait for a long text's."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import pytest
from voicefleet_server.config import ServerSettings
from voicefleet_server.metrics import Metrics
from voicefleet_server.serving.runtime import ModelRuntime, State
from voicefleet_server.serving.voices import VoiceLibrary


@pytest.fixture
async def runtime(tiny_model_dir: str) -> AsyncIterator[ModelRuntime]:
    settings = ServerSettings(model=tiny_model_dir, autotune=False)
    metrics = Metrics()
    loaded = ModelRuntime(settings, metrics, VoiceLibrary(settings, metrics, None))
    loaded.start()
    assert loaded._load_task is not None
    await loaded._load_task
    assert loaded.state is State.READY
    try:
        yield loaded
    finally:
        await loaded.close()


async def test_a_short_texts_preparation_does_not_wait_for_a_long_texts(
    runtime: ModelRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepare = runtime.prepare
    long_started = threading.Event()

    def slow_for_long_texts(text: str, **kwargs: float) -> object:
        if len(text) > 100:
            long_started.set()
            time.sleep(1.0)  # a long text's sentence splitting, made plain
        return prepare(text, **kwargs)

    monkeypatch.setattr(runtime, "prepare", slow_for_long_texts)
    long_text = " ".join(f"Long sentence number {i} is here." for i in range(10))
    long_segments = asyncio.create_task(runtime.segments(long_text))
    assert await asyncio.wait_for(asyncio.to_thread(long_started.wait, 5), 6)
    assert await runtime.segments("A short one.") == ["A short one."]
    assert not long_segments.done()  # the short text was prepared beside the long one
    assert len(await long_segments) >= 1


async def test_a_short_texts_tokens_do_not_wait_for_a_long_texts(
    runtime: ModelRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = runtime.model()
    tokenized: list[str] = []
    tokenize = model.tokenize

    def slow_tokenize(text: str) -> list[int]:
        time.sleep(0.02)  # espeak-ng's few ms a sentence, made plain
        tokenized.append(text)
        return tokenize(text)

    monkeypatch.setattr(model, "tokenize", slow_tokenize)
    voice = model.voices[0]
    long_text = [f"long sentence number {i}." for i in range(10)]
    long_items = asyncio.create_task(runtime.items(long_text, voice, speed=1.0, seed=None))
    while not tokenized:  # the long text is on the text thread
        await asyncio.sleep(0.001)
    (short,) = await runtime.items(["a short one."], voice, speed=1.0, seed=None)
    assert short.token_ids
    assert not long_items.done()
    assert len(await long_items) == len(long_text)
    # It waited for at most the segment in progress and the one queued beside it.
    assert tokenized.index("a short one.") <= 3, tokenized
