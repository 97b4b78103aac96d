"""The services one server process runs, built and started together.

`Services` is the one object the HTTP layer holds (on `app.state.services`, reached by
routes through a single dependency): the model runtime and the services built on it,
plus the optional Redis link they share. Building them here keeps the wiring (who gets
which runtime, link and cache) in one place and out of both the app and the routes.
"""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass

from voicefleet_server.config import ServerSettings
from voicefleet_server.metrics import Metrics
from voicefleet_server.serving.cache import ResultCache
from voicefleet_server.serving.contentpolicy import ContentPolicy
from voicefleet_server.serving.jobs import JobService
from voicefleet_server.serving.ratelimit import RateLimiter
from voicefleet_server.serving.redis_link import RedisLink
from voicefleet_server.serving.runtime import ModelRuntime
from voicefleet_server.serving.speech import SpeechService
from voicefleet_server.serving.voices import VoiceLibrary


@dataclass(frozen=True, slots=True)
class Services:
    settings: ServerSettings
    metrics: Metrics
    # None without --redis-url: then cache, jobs, voices and rate limits stay in-process.
    redis: RedisLink | None
    runtime: ModelRuntime
    speech: SpeechService
    jobs: JobService
    rate_limiter: RateLimiter

    @classmethod
    def create(cls, settings: ServerSettings) -> Services:
        metrics = Metrics()
        replica = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        link = (
            RedisLink(
                settings.redis_url,
                settings.redis_prefix,
                metrics,
                replica,
                settings.job_heartbeat_s,
            )
            if settings.redis_url
            else None
        )
        runtime = ModelRuntime(settings, metrics, VoiceLibrary(settings, metrics, link))
        cache = ResultCache(settings, metrics, link, runtime)
        # Read once here (a configured file that is missing stops the start), re-read live.
        policy = ContentPolicy(settings.blocked_terms_file)
        return cls(
            settings=settings,
            metrics=metrics,
            redis=link,
            runtime=runtime,
            speech=SpeechService(settings, metrics, runtime, cache, policy),
            jobs=JobService(settings, metrics, runtime, link, replica, policy),
            rate_limiter=RateLimiter(settings, link),
        )

    async def start(self) -> None:
        """Start loading the model (in the background), connect Redis, start the job reaper."""
        self.runtime.start()
        if self.redis is not None:
            await self.redis.start()
        self.jobs.start()

    async def close(self) -> None:
        """Hand jobs back or fail them, stop the engine, then disconnect Redis."""
        await self.jobs.close()
        await self.runtime.close()
        if self.redis is not None:
            await self.redis.close()
