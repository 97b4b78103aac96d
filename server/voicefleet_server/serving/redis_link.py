"""The pod's connection to Redis and what it knows about Redis's health.

One monitor task pings Redis (and refreshes this replica's heartbeat key) every few
seconds; every other use goes through `call`, which fails fast with `RedisDown` while
Redis is away, so callers degrade to in-process behaviour without waiting on timeouts.
`epoch` changes when Redis comes back as a different server (a restart may lose data).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from voicefleet_server.metrics import Metrics

log = logging.getLogger(__name__)
T = TypeVar("T")


class RedisDown(Exception):
    """Redis is not reachable now; the caller falls back to in-process behaviour."""


class RedisLink:
    def __init__(
        self, url: str, prefix: str, metrics: Metrics, replica: str, heartbeat_s: float = 2.0
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.replica = replica
        self.heartbeat_s = heartbeat_s
        metrics.redis_configured.set(1)
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=0.5,
            socket_timeout=2.0,
            # One immediate retry: the first use of a pooled connection after a Redis
            # restart fails, a fresh connection then succeeds.
            retry=Retry(NoBackoff(), 1),
        )
        self.up = False
        self.epoch = 0
        self.last_error: str | None = None
        self.down_since: float | None = time.time()
        self._run_id: str | None = None
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        metrics.redis_up.set(0)

    # ---- keys ------------------------------------------------------------------------

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def replica_key(self, replica: str) -> str:
        return self.key("replica", replica)

    @property
    def heartbeat_ttl_s(self) -> int:
        """A replica silent for this long is considered gone (its jobs are resumed)."""
        return max(2, round(self.heartbeat_s * 4))

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        await self.check()
        self._task = asyncio.get_running_loop().create_task(
            self._monitor(), name="voicefleet-redis"
        )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(RedisError, OSError):
            if self.up:
                await self.client.delete(self.replica_key(self.replica))
        await self.client.aclose()

    async def _monitor(self) -> None:
        while True:
            interval = self.heartbeat_s if self.up else min(0.5, self.heartbeat_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            await self.check()

    async def check(self) -> bool:
        """Ping Redis, refresh the heartbeat, and update `up`, `epoch` and the metric."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.set(self.replica_key(self.replica), str(time.time()), ex=self.heartbeat_ttl_s)
                pipe.info("server")
                _, info = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._mark_down(exc)
            return False
        run_id = str(info.get("run_id", ""))
        if run_id != self._run_id:
            if self._run_id is not None:
                log.warning("Redis is a new server (restarted); shared state may have been lost")
            self._run_id = run_id
            self.epoch += 1
        if not self.up:
            log.info("Redis is up at %s", self.url)
        self.up = True
        self.down_since = None
        self.last_error = None
        self._metrics.redis_up.set(1)
        return True

    def _mark_down(self, exc: BaseException) -> None:
        if self.up:
            log.warning("Redis is down (%s); degrading to in-process cache, jobs and limits", exc)
            self.down_since = time.time()
            self._wake.set()
        self.up = False
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._metrics.redis_up.set(0)

    # ---- use -------------------------------------------------------------------------

    async def call(self, op: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """Run `op` against Redis, or raise `RedisDown` at once while Redis is away."""
        if not self.up:
            raise RedisDown(self.last_error or "Redis is not reachable")
        try:
            return await op(self.client)
        except (RedisError, OSError) as exc:
            self._mark_down(exc)
            raise RedisDown(str(exc)) from exc

    def detail(self) -> dict[str, object]:
        detail: dict[str, object] = {"configured": True, "up": self.up}
        if not self.up:
            detail["mode"] = "degraded: cache bypassed, new jobs and rate limits in-process"
            detail["error"] = self.last_error
            if self.down_since is not None:
                detail["down_for_s"] = round(time.time() - self.down_since, 1)
        return detail
