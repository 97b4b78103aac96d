"""The result cache of /v1/audio/speech: same model + text + voice + params + seed -> same file.

By default only seeded requests are cached: a seed promises the same audio, so serving
it from the cache is invisible, while an unseeded request asks for a fresh rendering
(VITS draws new noise each time). `--cache all` caches those too (repeated prompts,
IVR phrases); `--cache off` disables it. Entries live in Redis (shared, with a TTL) or,
without Redis or while it is down, in a bounded in-process LRU. A cache failure never
fails a request.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from voicefleet_server.config import ServerSettings
from voicefleet_server.metrics import Metrics
from voicefleet_server.serving.redis_link import RedisDown, RedisLink
from voicefleet_server.serving.runtime import ModelRuntime
from voicefleet_server.serving.specs import SpeechSpec

log = logging.getLogger(__name__)

# Files larger than this are not cached (a 4096-character request is ~1 MB of wav).
MAX_ENTRY_BYTES = 8 << 20


class _Lru:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self._bytes = 0

    def get(self, key: str) -> tuple[bytes, str] | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: str, body: bytes, media_type: str) -> None:
        if len(body) > self.max_bytes or key in self._entries:
            return
        self._entries[key] = (body, media_type)
        self._bytes += len(body)
        while self._bytes > self.max_bytes:
            _, (old, _) = self._entries.popitem(last=False)
            self._bytes -= len(old)


Render = Callable[[SpeechSpec], Awaitable[tuple[bytes, str]]]


class ResultCache:
    def __init__(
        self,
        settings: ServerSettings,
        metrics: Metrics,
        link: RedisLink | None,
        runtime: ModelRuntime,
    ) -> None:
        self.mode = settings.cache
        self.ttl_s = settings.cache_ttl_s
        self.settings = settings
        self.metrics = metrics
        self.link = link
        self.runtime = runtime
        self._local = _Lru(settings.cache_memory_mb << 20)

    def key(self, spec: SpeechSpec) -> str | None:
        """The cache key, or None when this request is not cached."""
        if self.mode == "off" or spec.stream_format is not None or spec.fault is not None:
            return None
        if self.mode == "seeded" and spec.seed is None:
            return None
        voice = self.runtime.resolve_voice(spec.voice, principal=spec.principal).id
        identity = [
            self.runtime.model_name,
            self.settings.revision,
            spec.input,
            voice,
            spec.response_format,
            round(spec.speed, 4),
            spec.seed,
        ]
        digest = hashlib.sha256(json.dumps(identity).encode()).hexdigest()
        return f"cache:{digest}"

    async def speak(self, spec: SpeechSpec, render: Render) -> tuple[bytes, str]:
        """`render(spec)`, answered from the cache when it can be."""
        key = self.key(spec)
        if key is None:
            return await render(spec)
        hit = await self._get(key)
        if hit is not None:
            self.metrics.cache_hits.inc()
            return hit
        self.metrics.cache_misses.inc()
        body, media_type = await render(spec)
        if len(body) <= MAX_ENTRY_BYTES:
            await self._put(key, body, media_type)
        return body, media_type

    def _shared(self) -> bool:
        return self.link is not None and self.link.up

    async def _get(self, key: str) -> tuple[bytes, str] | None:
        if self.link is not None and self._shared():
            full = self.link.key(key)

            async def op(client: aioredis.Redis) -> Any:
                return await client.get(full)

            try:
                data = await self.link.call(op)
            except RedisDown:
                return self._local.get(key)
            if data is None:
                return None
            media_type, _, body = bytes(data).partition(b"\n")
            return body, media_type.decode()
        return self._local.get(key)

    async def _put(self, key: str, body: bytes, media_type: str) -> None:
        if self.link is not None and self._shared():
            full, value = self.link.key(key), media_type.encode() + b"\n" + body

            async def op(client: aioredis.Redis) -> None:
                await client.set(full, value, ex=self.ttl_s)

            try:
                await self.link.call(op)
                return
            except RedisDown:
                pass
        self._local.put(key, body, media_type)
