"""Where jobs live: a `JobStore` protocol with an in-process and a Redis implementation.

A job is a small JSON record (status, progress, owning replica, owning API key) and its
request (kept so another replica can resume it); its audio lives in a `ChunkStore`
(objectstore.py) named by the record's `storage`. In Redis every key has the job's TTL;
an `active` set lists unfinished jobs so replicas can find jobs whose owner stopped
heart-beating. Record writes are fenced by owner (a replica that lost a job to another
cannot overwrite it).
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

import redis.asyncio as aioredis

from voicefleet_server.serving.redis_link import RedisLink

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


@dataclass
class JobRecord:
    id: str
    status: str  # queued, running, succeeded, failed, cancelled
    created_at: float
    response_format: str
    sample_rate: int
    seed: int
    segments_total: int
    chunk_segments: list[int]  # segments per chunk
    chunk_starts_turn: list[bool]
    chunk_samples: list[int | None]  # None until the chunk is stored
    turn_pause_s: float
    segment_pause_s: float
    owner: str = ""  # the replica rendering it
    # The API key that made it (serving/tenancy.py: a hash of the key; "" with keys off).
    key_id: str = ""
    shared: bool = False  # lives in Redis (visible to every replica)
    updated_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    segments_done: int = 0
    error: dict[str, str] | None = None
    resumes: int = 0
    waiting_for: str | None = None  # "redis" while a shared job's writes wait for Redis
    eta_s: float | None = None
    storage: str = ""  # where the chunks are: "memory", "redis" or "s3" ("": before S3)
    deleted: bool = False  # DELETE removed the job's audio; the record stays until its TTL

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def chunks_done(self) -> int:
        return sum(1 for s in self.chunk_samples if s is not None)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | bytes) -> JobRecord:
        # Fields a newer replica added are ignored (rolling upgrades share one Redis).
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(data).items() if k in known})


class JobStore(Protocol):
    shared: bool

    async def create(self, record: JobRecord, request: dict[str, Any]) -> None: ...

    async def save(self, record: JobRecord) -> bool:
        """Write the record; False when another replica owns the job now."""
        ...

    async def load(self, job_id: str) -> JobRecord | None: ...

    async def request(self, job_id: str) -> dict[str, Any] | None: ...

    async def request_cancel(self, job_id: str) -> None: ...

    async def cancel_requested(self, job_id: str) -> bool: ...


class MemoryJobStore:
    """Jobs of this process only (no Redis, or Redis was down when they were accepted).

    Finished jobs are evicted after the TTL, or oldest first beyond `max_jobs`;
    `on_evict(job_id)` lets their audio go with them."""

    shared = False

    def __init__(
        self,
        ttl_s: float,
        max_jobs: int = 200,
        on_evict: Callable[[str], None] | None = None,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_jobs = max_jobs
        self.on_evict = on_evict
        self._records: OrderedDict[str, JobRecord] = OrderedDict()
        self._requests: dict[str, dict[str, Any]] = {}
        self._cancelled: set[str] = set()

    def _evict(self) -> None:
        now = time.time()
        finished = [r for r in self._records.values() if r.terminal]
        expired = [r.id for r in finished if now - (r.finished_at or now) > self.ttl_s]
        excess = len(self._records) - len(expired) - self.max_jobs
        expired += [r.id for r in finished if r.id not in expired][: max(0, excess)]
        for job_id in expired:
            self._records.pop(job_id, None)
            self._requests.pop(job_id, None)
            self._cancelled.discard(job_id)
            if self.on_evict is not None:
                self.on_evict(job_id)

    async def create(self, record: JobRecord, request: dict[str, Any]) -> None:
        self._evict()
        self._records[record.id] = record
        self._requests[record.id] = request

    async def save(self, record: JobRecord) -> bool:
        record.updated_at = time.time()
        if record.id in self._records:
            self._records[record.id] = record
        return True

    async def load(self, job_id: str) -> JobRecord | None:
        return self._records.get(job_id)

    async def request(self, job_id: str) -> dict[str, Any] | None:
        return self._requests.get(job_id)

    async def request_cancel(self, job_id: str) -> None:
        self._cancelled.add(job_id)

    async def cancel_requested(self, job_id: str) -> bool:
        return job_id in self._cancelled


# Save the record only while this replica owns the job (or nobody does: a restarted
# Redis lost the owner key); keep the `active` set in step with the status.
_SAVE = """
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[3])
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
if ARGV[4] == '1' then redis.call('SREM', KEYS[3], ARGV[5])
else redis.call('SADD', KEYS[3], ARGV[5]) end
return 1
"""

# Take over a job whose owner is gone: only if the owner is still the one we saw.
_CLAIM = """
local owner = redis.call('GET', KEYS[1])
if (owner or '') ~= ARGV[1] then return 0 end
if owner and redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""


class RedisJobStore:
    """Jobs in Redis, visible to every replica. Raises `RedisDown` when Redis is away."""

    shared = True

    def __init__(self, link: RedisLink, ttl_s: int) -> None:
        self.link = link
        self.ttl_s = ttl_s
        self._save = link.client.register_script(_SAVE)
        self._claim = link.client.register_script(_CLAIM)

    def _key(self, job_id: str, *parts: str) -> str:
        return self.link.key("job", job_id, *parts)

    @property
    def active_key(self) -> str:
        return self.link.key("jobs", "active")

    async def create(self, record: JobRecord, request: dict[str, Any]) -> None:
        payload = json.dumps(request, separators=(",", ":"))

        async def op(client: aioredis.Redis) -> None:
            await client.set(self._key(record.id, "request"), payload, ex=self.ttl_s)

        await self.link.call(op)
        await self.save(record)

    async def put_request(self, job_id: str, request: dict[str, Any]) -> None:
        payload = json.dumps(request, separators=(",", ":"))

        async def op(client: aioredis.Redis) -> None:
            await client.set(self._key(job_id, "request"), payload, ex=self.ttl_s)

        await self.link.call(op)

    async def save(self, record: JobRecord) -> bool:
        record.updated_at = time.time()
        keys = [self._key(record.id), self._key(record.id, "owner"), self.active_key]
        args: list[str | int] = [
            record.owner,
            record.to_json(),
            self.ttl_s,
            "1" if record.terminal else "0",
            record.id,
        ]

        async def op(_: aioredis.Redis) -> Any:
            return await self._save(keys=keys, args=args)

        return bool(await self.link.call(op))

    async def load(self, job_id: str) -> JobRecord | None:
        async def op(client: aioredis.Redis) -> Any:
            return await client.get(self._key(job_id))

        data = await self.link.call(op)
        return None if data is None else JobRecord.from_json(data)

    async def request(self, job_id: str) -> dict[str, Any] | None:
        async def op(client: aioredis.Redis) -> Any:
            return await client.get(self._key(job_id, "request"))

        data = await self.link.call(op)
        return None if data is None else dict(json.loads(data))

    async def request_cancel(self, job_id: str) -> None:
        async def op(client: aioredis.Redis) -> None:
            await client.set(self._key(job_id, "cancel"), "1", ex=self.ttl_s)

        await self.link.call(op)

    async def cancel_requested(self, job_id: str) -> bool:
        async def op(client: aioredis.Redis) -> Any:
            return await client.exists(self._key(job_id, "cancel"))

        return bool(await self.link.call(op))

    # ---- ownership -------------------------------------------------------------------

    async def orphans(self) -> list[tuple[str, str]]:
        """(job id, owner seen) of unfinished jobs whose owner stopped heart-beating."""

        async def op(client: aioredis.Redis) -> list[tuple[str, str]]:
            ids = sorted(_text(m) for m in await client.smembers(self.active_key))
            if not ids:
                return []
            owners = await client.mget([self._key(i, "owner") for i in ids])
            found = []
            for job_id, raw in zip(ids, owners, strict=True):
                owner = "" if raw is None else _text(raw)
                if owner == self.link.replica:
                    continue
                if not owner or not await client.exists(self.link.replica_key(owner)):
                    found.append((job_id, owner))
            return found

        return await self.link.call(op)

    async def claim(self, job_id: str, previous_owner: str) -> bool:
        keys = [self._key(job_id, "owner"), self.link.replica_key(previous_owner or "-")]
        args: list[str | int] = [previous_owner, self.link.replica, self.ttl_s]

        async def op(_: aioredis.Redis) -> Any:
            return await self._claim(keys=keys, args=args)

        return bool(await self.link.call(op))

    async def release(self, job_id: str) -> None:
        """Give the job up (draining): another replica resumes it without waiting."""

        async def op(client: aioredis.Redis) -> None:
            key = self._key(job_id, "owner")
            if _text(await client.get(key) or b"") == self.link.replica:
                await client.delete(key)

        await self.link.call(op)

    async def forget(self, job_id: str) -> None:
        async def op(client: aioredis.Redis) -> None:
            await client.srem(self.active_key, job_id)

        await self.link.call(op)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
