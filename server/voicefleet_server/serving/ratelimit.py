"""Per-client rate limits: a token bucket per API key (or client IP when there is none).

With Redis the bucket is one hash per client, refilled and spent by an atomic Lua script
on Redis's clock, so every replica draws from the same bucket. Without Redis, or while it
is down, each replica keeps its own buckets (the limit then holds per replica). Off
unless `--rate-limit-rps` is set.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import redis.asyncio as aioredis

from voicefleet_server.config import ServerSettings
from voicefleet_server.serving.errors import RateLimited
from voicefleet_server.serving.redis_link import RedisDown, RedisLink

_BUCKET = """
local now_t = redis.call('TIME')
local now = tonumber(now_t[1]) + tonumber(now_t[2]) / 1000000
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed, wait = 0, 0
if tokens >= 1 then tokens = tokens - 1; allowed = 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""


def client_identity(authorization: str | None, client_ip: str | None) -> str:
    """`key:<hash>` for a bearer token (never stored in clear), else `ip:<address>`."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return "key:" + hashlib.sha256(token.strip().encode()).hexdigest()[:32]
    return f"ip:{client_ip or 'unknown'}"


class RateLimiter:
    def __init__(self, settings: ServerSettings, link: RedisLink | None) -> None:
        self.rate = settings.rate_limit_rps
        self.burst = settings.rate_limit_burst
        self.link = link
        self._local: dict[str, tuple[float, float]] = {}
        self._script = link.client.register_script(_BUCKET) if link is not None else None

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    async def check(self, identity: str) -> None:
        """Spend one token of `identity`'s bucket, or raise `RateLimited`."""
        if not self.enabled:
            return
        wait = await self._shared(identity)
        if wait is None:
            wait = self._spend_local(identity)
        if wait > 0:
            raise RateLimited(
                f"rate limit of {self.rate:g} requests/s (burst {self.burst}) exceeded; "
                "retry after the indicated delay",
                retry_after_s=wait,
            )

    async def _shared(self, identity: str) -> float | None:
        if self.link is None or self._script is None or not self.link.up:
            return None
        keys, args = [self.link.key("ratelimit", identity)], [self.rate, self.burst]
        script = self._script

        async def op(_: aioredis.Redis) -> Any:
            return await script(keys=keys, args=args)

        try:
            allowed, wait = await self.link.call(op)
        except RedisDown:
            return None
        return 0.0 if int(allowed) else float(wait)

    def _spend_local(self, identity: str) -> float:
        now = time.monotonic()
        if len(self._local) > 10_000:  # forget clients whose buckets are full again
            full_after = self.burst / self.rate
            self._local = {k: v for k, v in self._local.items() if now - v[1] < full_after}
        tokens, last = self._local.get(identity, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1:
            self._local[identity] = (tokens - 1, now)
            return 0.0
        self._local[identity] = (tokens, now)
        return (1 - tokens) / self.rate
