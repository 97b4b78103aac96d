"""The text thread (phonemes, tokens) is shared by every request: a one-liner's tokens must
not wait for all of a long text's, which are made one segment at a time."""

from __future__ import annotations

import asyncio
import time

import pytest
from voicefleet_server.config import ServerSettings
from voicefleet_server.metrics import Metrics
from voicefleet_server.serving.runtime import ModelRuntime, State
from voicefleet_server.serving.voices import VoiceLibrary


async def test_a_short_texts_tokens_do_not_wait_for_a_long_texts(
    tiny_model_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = ServerSettings(model=tiny_model_dir, autotune=False)
    metrics = Metrics()
    runtime = ModelRuntime(settings, metrics, VoiceLibrary(settings, metrics, None))
    runtime.start()
    assert runtime._load_task is not None
    await runtime._load_task
    assert runtime.state is State.READY
    try:
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
    finally:
        await runtime.close()
