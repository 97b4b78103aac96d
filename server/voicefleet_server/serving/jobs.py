"""Long-form and multi-speaker jobs: accept at once, render in the background, serve chunks.

A job's segments go through the same engine as interactive speech, with deadlines ten
times looser (`JOB_SLO_SCALE`) so one-line requests keep priority, and at most
`job_window_segments` of them queued at a time (a 90-minute script never floods the
queue: interactive admission sees at most max_running_jobs x window job segments).
Chunks are stored as FLAC as they finish (objectstore.py: S3, Redis or this process) and
encoded into the job's format when fetched; with S3, clients get presigned URLs and the
whole result is assembled into one object when the job finishes.

With Redis, jobs are shared: any replica serves status and chunks; a replica that stops
heart-beating has its unfinished jobs resumed by another (missing chunks are rendered
again with the job's seed, so the audio is the same). Every job is seeded (a random seed
is drawn when the request has none) for exactly that reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import tempfile
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import numpy as np

from voicefleet_server.config import ServerSettings
from voicefleet_server.engine.model import SynthesisItem
from voicefleet_server.engine.textprep import PreparedText
from voicefleet_server.metrics import Metrics
from voicefleet_server.serving import requestid
from voicefleet_server.serving.audio import (
    FORMATS,
    AudioFormat,
    StreamEncoder,
    encode,
    join_with_pauses,
    to_pcm16,
    wav_header,
)
from voicefleet_server.serving.contentpolicy import ContentPolicy
from voicefleet_server.serving.dialogue import ChunkPlan, parse_script, plan_chunks
from voicefleet_server.serving.errors import (
    InputTooLarge,
    InvalidInput,
    NotFound,
    NotReady,
    Overloaded,
    StorageUnavailable,
    Unavailable,
)
from voicefleet_server.serving.objectstore import (
    ChunkStore,
    Link,
    MemoryChunkStore,
    RedisChunkStore,
    S3ChunkStore,
    S3Location,
    decode_chunk,
    encode_chunk,
    parse_job_storage,
)
from voicefleet_server.serving.redis_link import RedisDown, RedisLink
from voicefleet_server.serving.runtime import ModelRuntime, State, clean_text
from voicefleet_server.serving.specs import JobSpec
from voicefleet_server.serving.speech import SEGMENT_PAUSE_S, check_policy, check_target
from voicefleet_server.serving.store import JobRecord, JobStore, MemoryJobStore, RedisJobStore
from voicefleet_server.serving.tenancy import SYSTEM, Principal

log = logging.getLogger(__name__)
T = TypeVar("T")

JOB_SLO_SCALE = 10.0
# A job abandoned by this many replicas in a row is failed rather than passed on again.
MAX_RESUMES = 3
# A chunk or status read from a route waits this long for object storage (then 503): a
# client retries sooner than a job gives up.
READ_BUDGET_S = 5.0


class _Cancelled(Exception):
    pass


class _LostOwnership(Exception):
    pass


class _SegmentFailed(Exception):
    pass


@dataclass(frozen=True, slots=True)
class JobView:
    """What the API shows of a job: its record, and direct storage URLs of its finished
    chunks by index (S3; empty when chunks are served by the pods)."""

    record: JobRecord
    chunk_links: dict[int, Link] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JobAudio:
    """The whole result: a storage URL to redirect to, or bytes to stream."""

    media_type: str
    url: str | None = None
    body: AsyncIterator[bytes] | None = None


@dataclass(eq=False)
class _Run:
    """A job this replica is rendering (its record here is the freshest copy)."""

    record: JobRecord
    store: JobStore
    chunks: ChunkStore
    request: dict[str, Any]
    task: asyncio.Task[None] | None = None
    cancelled: bool = False
    epoch: int = 0


class JobService:
    def __init__(
        self,
        settings: ServerSettings,
        metrics: Metrics,
        runtime: ModelRuntime,
        link: RedisLink | None,
        replica: str,
        policy: ContentPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.metrics = metrics
        self.runtime = runtime
        self.link = link
        self.replica = replica
        self.storage = parse_job_storage(settings.job_storage, link is not None)
        self.memory_chunks = MemoryChunkStore()
        self.memory = MemoryJobStore(settings.job_ttl_s, on_evict=self.memory_chunks.drop)
        self.redis = RedisJobStore(link, settings.job_ttl_s) if link is not None else None
        self.redis_chunks = RedisChunkStore(link, settings.job_ttl_s) if link is not None else None
        self.s3 = (
            S3ChunkStore(
                self.storage,
                url_ttl_s=settings.job_url_ttl,
                retry_s=settings.job_storage_retry_s,
                url_endpoint=settings.job_url_endpoint,
                credentials_dir=settings.job_storage_credentials_dir,
            )
            if isinstance(self.storage, S3Location)
            else None
        )
        self._runs: dict[str, _Run] = {}
        self._slots = asyncio.Semaphore(settings.max_running_jobs)
        self._reaper: asyncio.Task[None] | None = None
        self._check: asyncio.Task[None] | None = None

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.redis is not None:
            self._reaper = loop.create_task(self._reap(), name="voicefleet-job-reaper")
        if self.s3 is not None:
            self._check = loop.create_task(
                self.s3.check(self.settings.job_ttl_s), name="voicefleet-storage-check"
            )

    async def close(self) -> None:
        """Shutting down: shared jobs are handed to other replicas, local ones fail."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        runs = list(self._runs.values())
        for run in runs:
            if run.task is not None:
                run.task.cancel()
        for run in runs:
            if run.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await run.task
        if self.s3 is not None:
            await self.s3.close()

    # ---- API -------------------------------------------------------------------------

    async def create(self, spec: JobSpec, principal: Principal) -> JobView:
        """Accept a job for `principal` (it belongs to that API key) and start it."""
        if self.runtime.draining:
            raise Unavailable("the server is draining", retry_after_s=5)
        if len(spec.input) > self.settings.job_max_input_chars:
            raise InputTooLarge(
                f"input is {len(spec.input)} characters; jobs take at most "
                f"{self.settings.job_max_input_chars} (about 90 minutes of speech)",
                param="input",
            )
        check_target(self.runtime, spec.model, spec.response_format)
        check_policy(self.policy, self.metrics, spec.input, "jobs")
        await self.runtime.ensure_voices(spec.voice, *spec.voices.values())
        self.runtime.resolve_voice(spec.voice, principal=principal)
        for label, name in spec.voices.items():
            self.runtime.resolve_voice(name, principal=principal, param=f"voices.{label}")
        request = asdict(spec)
        request["input"] = clean_text(spec.input)
        request["seed"] = spec.seed if spec.seed is not None else secrets.randbits(62)
        request["chunk_segments"] = self.settings.job_chunk_segments
        plan = await self._plan(request, count=True)
        if not plan:
            raise InvalidInput(
                "input contains nothing to say (no letters or digits)", param="input"
            )
        rate = self.runtime.sampling_rate
        record = JobRecord(
            id="job_" + uuid.uuid4().hex,
            status="queued",
            created_at=time.time(),
            response_format=spec.response_format,
            sample_rate=rate,
            seed=request["seed"],
            segments_total=sum(len(c.segments) for c in plan),
            chunk_segments=[len(c.segments) for c in plan],
            chunk_starts_turn=[c.starts_turn for c in plan],
            chunk_samples=[None] * len(plan),
            turn_pause_s=self.settings.job_turn_pause_ms / 1000.0,
            segment_pause_s=SEGMENT_PAUSE_S,
            owner=self.replica,
            key_id=principal.owner,
        )
        store: JobStore = self.memory
        if (
            self.storage != "memory"
            and self.redis is not None
            and self.link is not None
            and self.link.up
        ):
            try:
                record.shared = True
                record.storage = "s3" if self.s3 is not None else "redis"
                await self.redis.create(record, request)
                store = self.redis
            except RedisDown:
                record.shared = False
        if store is self.memory:
            # Redis is away (or not used): the record stays here; S3 still takes the audio.
            record.storage = "s3" if self.s3 is not None else "memory"
            await self.memory.create(record, request)
        self._launch(record, store, request)
        return JobView(record)

    async def status(self, job_id: str, principal: Principal) -> JobView:
        record, _ = await self._find(job_id, principal)
        return JobView(record, await self._links(record))

    async def chunk(self, job_id: str, index: int, principal: Principal) -> tuple[bytes, str]:
        record, store = await self._find(job_id, principal)
        if not 0 <= index < len(record.chunk_samples):
            raise NotFound(f"job {job_id} has chunks 0 to {len(record.chunk_samples) - 1}")
        if record.deleted:
            raise NotFound(f"the audio of job {job_id} was deleted")
        if record.chunk_samples[index] is None:
            raise NotReady(f"chunk {index} of job {job_id} is not rendered yet")
        chunks = self._chunks_for(record)
        if isinstance(chunks, S3ChunkStore):
            data = await chunks.get(job_id, index, budget_s=READ_BUDGET_S)
        else:
            data = await self._read(store, lambda _: chunks.get(job_id, index))
        if data is None:
            raise NotReady(f"chunk {index} of job {job_id} is being rendered again")
        fmt = FORMATS[record.response_format]
        pcm = await asyncio.to_thread(decode_chunk, data)
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32767.0
        body = await asyncio.to_thread(encode, samples, record.sample_rate, fmt)
        return body, fmt.media_type

    async def audio(self, job_id: str, principal: Principal) -> JobAudio:
        """The whole result: with S3 a presigned URL of the object assembled at the end;
        otherwise read chunk by chunk from the store (never whole in memory)."""
        record, _ = await self._find(job_id, principal)
        if record.deleted:
            raise NotFound(f"the audio of job {job_id} was deleted")
        if record.status != "succeeded":
            raise NotReady(
                f"job {job_id} is {record.status}; the whole audio exists once it has succeeded"
                " (finished chunks are served while it runs)"
            )
        fmt = FORMATS[record.response_format]
        chunks = self._chunks_for(record)
        if isinstance(chunks, S3ChunkStore):
            link = await chunks.result_link(job_id, fmt.name)
            return JobAudio(fmt.media_type, url=link.url)
        return JobAudio(fmt.media_type, body=_whole_audio(record, chunks, fmt))

    async def cancel(self, job_id: str, principal: Principal) -> JobView:
        """DELETE: stop the job if it is still rendering and remove its audio from storage.
        The record stays (status `cancelled` unless it had finished, `deleted: true`)
        until --job-ttl-s, so a client polling it sees what happened."""
        run = self._runs.get(job_id)
        visible = run is not None and principal.sees(run.record.key_id)
        if run is not None and visible and not run.record.terminal:
            run.cancelled = True  # its task removes the objects again once it has stopped
            if run.task is not None:
                run.task.cancel()
            view = _as_cancelled(run.record)
            await self._delete_audio(run.store, run.chunks, view)
            return JobView(view)
        record, store = await self._find(job_id, principal)
        chunks = self._chunks_for(record)
        if record.terminal:
            record.deleted = True
            # Nobody writes a finished record any more, so any replica may (the owner
            # fence still holds: `owner` is unchanged).
            await self._read(store, lambda s: s.save(record))
        else:  # rendered by another replica: it stops at its next chunk
            await self._read(store, lambda s: s.request_cancel(job_id))
            record = _as_cancelled(record)
        await self._delete_audio(store, chunks, record)
        return JobView(record)

    def detail(self) -> dict[str, object]:
        storage: dict[str, object] = (
            self.s3.detail() if self.s3 is not None else {"kind": str(self.storage)}
        )
        return {
            "running": sum(1 for r in self._runs.values() if r.record.status == "running"),
            "queued": sum(1 for r in self._runs.values() if r.record.status == "queued"),
            "storage": storage,
        }

    # ---- lookups ---------------------------------------------------------------------

    async def _find(self, job_id: str, principal: Principal) -> tuple[JobRecord, JobStore]:
        """The job and its store, if `principal` may see it; NotFound otherwise (the same
        answer as for a job that does not exist, so ids cannot be probed)."""
        record, store = await self._lookup(job_id)
        if not principal.sees(record.key_id):
            raise NotFound(f"no job {job_id!r} (unknown, or expired)", param="id")
        return record, store

    async def _lookup(self, job_id: str) -> tuple[JobRecord, JobStore]:
        run = self._runs.get(job_id)
        if run is not None:
            return run.record, run.store
        record = await self.memory.load(job_id)
        if record is not None:
            return record, self.memory
        if self.redis is not None:
            try:
                record = await self.redis.load(job_id)
                if (
                    record is not None
                    and not record.terminal
                    and await self.redis.cancel_requested(job_id)
                ):
                    record = _as_cancelled(record)
            except RedisDown as exc:
                raise Unavailable(
                    "jobs are kept in Redis, which is unreachable right now", retry_after_s=2
                ) from exc
            if record is not None:
                return record, self.redis
        raise NotFound(f"no job {job_id!r} (unknown, or expired)", param="id")

    async def _read(self, store: JobStore, op: Callable[[JobStore], Awaitable[T]]) -> T:
        try:
            return await op(store)
        except RedisDown as exc:
            raise Unavailable(
                "jobs are kept in Redis, which is unreachable right now", retry_after_s=2
            ) from exc

    def _chunks_for(self, record: JobRecord) -> ChunkStore:
        """The store holding this job's audio (named in its record)."""
        kind = record.storage or ("redis" if record.shared else "memory")
        if kind == "s3":
            if self.s3 is None:
                raise Unavailable(
                    "this job's audio is in object storage, which this replica is not "
                    "configured for (--job-storage)",
                    retry_after_s=5,
                )
            return self.s3
        if kind == "redis" and self.redis_chunks is not None:
            return self.redis_chunks
        return self.memory_chunks

    async def _links(self, record: JobRecord) -> dict[int, Link]:
        """Presigned URLs of the finished chunks when they are in S3."""
        if record.deleted or record.storage != "s3" or self.s3 is None:
            return {}
        done = [i for i, n in enumerate(record.chunk_samples) if n is not None]
        return await self.s3.chunk_links(record.id, done) if done else {}

    async def _delete_audio(self, store: JobStore, chunks: ChunkStore, record: JobRecord) -> None:
        count = len(record.chunk_samples)
        await self._read(store, lambda _: chunks.delete(record.id, count))

    # ---- rendering -------------------------------------------------------------------

    async def _plan(self, request: dict[str, Any], *, count: bool = False) -> list[ChunkPlan]:
        """The job's chunks. `count`: at creation, count the characters it drops (a job
        resumed or re-planned is not counted again)."""
        voices: dict[str, str] = request.get("voices") or {}
        turns = parse_script(request["input"], labels=voices.keys())
        speed = float(request.get("speed") or 1.0)
        prepared: list[PreparedText] = []

        def segment(text: str) -> list[str]:
            # Prepared by the runtime, exactly as a speech request would be; a turn with
            # nothing to say ("...") is a pause in a dialogue, not an error.
            turn = self.runtime.prepare(text, speed=speed, require_speech=False)
            prepared.append(turn)
            return turn.segments

        # Off the event loop: a 100k-character text takes about a second to prepare.
        plan = await asyncio.to_thread(plan_chunks, turns, int(request["chunk_segments"]), segment)
        if count:
            for turn in prepared:
                self.runtime.count_dropped(turn)
        return plan

    def _launch(self, record: JobRecord, store: JobStore, request: dict[str, Any]) -> None:
        chunks = self._chunks_for(record)
        run = _Run(record, store, chunks, request, epoch=self.link.epoch if self.link else 0)
        self._runs[record.id] = run
        run.task = asyncio.get_running_loop().create_task(self._run(run), name=f"job-{record.id}")
        run.task.add_done_callback(lambda _: self._runs.pop(record.id, None))

    async def _run(self, run: _Run) -> None:
        record = run.record
        # Logs about this job's audio (quality anomalies) name the job, not the request
        # that created it (this task's context was copied from that request).
        requestid.current.set(f"job-{record.id}")
        try:
            async with self._slots:
                if run.cancelled or await self._write(
                    run, lambda: run.store.cancel_requested(record.id)
                ):
                    raise _Cancelled
                record.status = "running"
                record.started_at = record.started_at or time.time()
                await self._save(run)
                plan = await self._plan(run.request)
                for attempt in range(3):
                    stored = await self._write(run, lambda: run.chunks.stored(record.id, len(plan)))
                    # A chunk counts once it is both stored and in the record; one stored
                    # by a replica that died before it could record it is rendered again.
                    missing = [
                        i
                        for i in range(len(plan))
                        if i not in stored or record.chunk_samples[i] is None
                    ]
                    if not missing:
                        break
                    if attempt:
                        log.warning(
                            "job %s: %d chunks lost from the store (Redis restart?); rendering "
                            "them again",
                            record.id,
                            len(missing),
                        )
                    for index in missing:
                        record.chunk_samples[index] = None
                    await self._render(run, plan, missing)
                else:
                    raise _SegmentFailed("chunks kept disappearing from the job store")
                if isinstance(run.chunks, S3ChunkStore):
                    await self._assemble(run, run.chunks)
                record.status = "succeeded"
                record.eta_s = 0.0
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not run.cancelled:  # shutting down
                await self._stop(run)
                raise
            if task is not None:
                task.uncancel()
            await self._cancelled(run)
        except _Cancelled:
            await self._cancelled(run)
        except StorageUnavailable as exc:
            log.warning("job %s failed: %s", record.id, exc.message)
            record.status = "failed"
            record.error = {"code": "storage_unavailable", "message": exc.message}
        except _LostOwnership:
            log.warning("job %s is owned by another replica now; stopping here", record.id)
            return
        except Unavailable:  # the engine stopped taking work (draining, shutting down)
            await self._stop(run)
            return
        except _SegmentFailed as exc:
            record.status = "failed"
            record.error = {"code": "synthesis_failed", "message": str(exc)}
        except Exception as exc:
            log.exception("job %s failed", record.id)
            record.status = "failed"
            record.error = {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}
        record.finished_at = time.time()
        record.waiting_for = None
        log.info("job %s %s", record.id, record.status)
        with contextlib.suppress(_LostOwnership):
            await self._save(run)

    async def _cancelled(self, run: _Run) -> None:
        """DELETE stopped the job: remove what it stored (chunks written after the DELETE
        handler removed the others, a part-assembled result)."""
        run.record.status = "cancelled"
        run.record.deleted = True
        try:
            await run.chunks.delete(run.record.id, len(run.record.chunk_samples))
        except (StorageUnavailable, RedisDown) as exc:
            log.warning(
                "job %s: could not delete its audio (%s); the bucket's lifecycle rule or the "
                "TTL removes it",
                run.record.id,
                exc,
            )

    async def _assemble(self, run: _Run, chunks: S3ChunkStore) -> None:
        """The whole result as one object (multipart upload), so `.../audio` can redirect."""
        record = run.record
        fmt = FORMATS[record.response_format]
        started = time.monotonic()
        size = await chunks.put_result(
            record.id, fmt.name, fmt.media_type, _whole_audio(record, chunks, fmt)
        )
        log.info(
            "job %s: whole result assembled in object storage (%d bytes, %.1f s)",
            record.id,
            size,
            time.monotonic() - started,
        )

    async def _stop(self, run: _Run) -> None:
        """This replica stops (drain or shutdown) with the job unfinished."""
        record = run.record
        if isinstance(run.store, RedisJobStore):
            log.info("job %s handed back for another replica to resume", record.id)
            with contextlib.suppress(RedisDown):
                await run.store.release(record.id)
            return
        record.status = "failed"
        record.finished_at = time.time()
        record.error = {
            "code": "server_shutdown",
            "message": "the server shut down before the job finished; submit it again",
        }
        await run.store.save(record)

    async def _render(self, run: _Run, plan: list[ChunkPlan], missing: list[int]) -> None:
        # Uploaded voices come from Redis (the job may have been created on another replica).
        voices: dict[str, str] = run.request.get("voices") or {}
        await self.runtime.ensure_voices(run.request["voice"], *voices.values())
        record = run.record
        window = self.settings.job_window_segments
        pending = deque(missing)
        inflight: deque[tuple[int, list[asyncio.Future[np.ndarray]]]] = deque()
        started, rendered = time.monotonic(), 0
        try:
            while pending or inflight:
                queued = sum(len(f) for _, f in inflight)
                while pending and (
                    not inflight or queued + len(plan[pending[0]].segments) <= window
                ):
                    items = await self._items(plan[pending[0]], run.request)
                    try:
                        futures = (
                            self.runtime.submit(items, slo_scale=JOB_SLO_SCALE) if items else []
                        )
                    except Overloaded as exc:
                        if inflight:
                            break
                        await asyncio.sleep(min(1.0, exc.retry_after_s))
                        continue
                    inflight.append((pending.popleft(), futures))
                    queued += len(futures)
                index, futures = inflight[0]
                try:
                    waves = list(await asyncio.gather(*futures))
                except Exception as exc:
                    raise _SegmentFailed(f"chunk {index} could not be rendered: {exc}") from exc
                inflight.popleft()
                pcm = to_pcm16(
                    join_with_pauses(waves, int(record.segment_pause_s * record.sample_rate))
                )
                data = await asyncio.to_thread(encode_chunk, pcm, record.sample_rate)
                # S3 retries within its own budget, then fails the job; Redis is waited for.
                await self._write(run, functools.partial(run.chunks.put, record.id, index, data))
                record.chunk_samples[index] = len(pcm) // 2
                rendered += len(plan[index].segments)
                record.segments_done = sum(
                    n
                    for n, s in zip(record.chunk_segments, record.chunk_samples, strict=True)
                    if s is not None
                )
                rate = rendered / max(1e-3, time.monotonic() - started)
                record.eta_s = round((record.segments_total - record.segments_done) / rate, 1)
                await self._save(run)
                if run.cancelled or await self._write(
                    run, lambda: run.store.cancel_requested(record.id)
                ):
                    raise _Cancelled
        finally:
            leftover = [f for _, futures in inflight for f in futures]
            if leftover:
                self.runtime.cancel(leftover)

    async def _items(self, chunk: ChunkPlan, request: dict[str, Any]) -> list[SynthesisItem]:
        voices: dict[str, str] = request.get("voices") or {}
        name = voices.get(chunk.speaker or "", request["voice"])
        return await self.runtime.items(
            chunk.segments,
            # Checked against its owner when the job was accepted.
            self.runtime.resolve_voice(name, principal=SYSTEM),
            speed=float(request["speed"]),
            seed=int(request["seed"]),
            first_index=chunk.first_segment,
        )

    async def _save(self, run: _Run) -> None:
        if not await self._write(run, lambda: run.store.save(run.record)):
            raise _LostOwnership

    async def _write(self, run: _Run, op: Callable[[], Awaitable[T]]) -> T:
        """Run a store operation; while Redis is away the job waits (visibly) for it."""
        while True:
            try:
                if self.link is not None and run.epoch != self.link.epoch and run.record.shared:
                    # Redis restarted: it may have lost the request; put it back first.
                    assert isinstance(run.store, RedisJobStore)
                    await run.store.put_request(run.record.id, run.request)
                    run.epoch = self.link.epoch
                result = await op()
                run.record.waiting_for = None
                return result
            except RedisDown:
                if run.record.waiting_for is None:
                    log.warning("job %s waits for Redis to come back", run.record.id)
                run.record.waiting_for = "redis"
                await asyncio.sleep(0.25)

    # ---- taking over jobs of replicas that went away -----------------------------------

    async def _reap(self) -> None:
        assert self.redis is not None and self.link is not None
        while True:
            await asyncio.sleep(self.link.heartbeat_s)
            if not self.link.up or self.runtime.state is not State.READY:
                continue
            try:
                for job_id, owner in await self.redis.orphans():
                    if job_id not in self._runs:
                        await self._adopt(job_id, owner)
            except RedisDown:
                continue
            except Exception:
                log.exception("job reaper failed; retrying")

    async def _adopt(self, job_id: str, owner: str) -> None:
        assert self.redis is not None
        if not await self.redis.claim(job_id, owner):
            return
        record = await self.redis.load(job_id)
        request = await self.redis.request(job_id)
        if record is None or request is None or record.terminal:
            await self.redis.forget(job_id)
            return
        if record.storage == "s3" and self.s3 is None:
            log.warning("job %s has its audio in S3; this replica has no --job-storage", job_id)
            await self.redis.release(job_id)
            return
        record.owner = self.replica
        record.resumes += 1
        if record.resumes > MAX_RESUMES:
            record.status = "failed"
            record.finished_at = time.time()
            record.error = {
                "code": "abandoned",
                "message": f"{MAX_RESUMES} replicas stopped while rendering this job",
            }
            await self.redis.save(record)
            return
        log.warning(
            "resuming job %s from replica %s (%d/%d chunks done)",
            job_id,
            owner or "?",
            record.chunks_done,
            len(record.chunk_samples),
        )
        if record.status == "running":
            record.status = "queued"
        self._launch(record, self.redis, request)


def _as_cancelled(record: JobRecord) -> JobRecord:
    """How a job that DELETE has stopped looks (its owner may not have saved that yet)."""
    if record.terminal and record.deleted:
        return record
    view = JobRecord.from_json(record.to_json())
    if not view.terminal:
        view.status = "cancelled"
    view.deleted = True
    return view


def _gap(record: JobRecord, index: int) -> int:
    """Silence (samples) before chunk `index` in the whole audio."""
    if index == 0:
        return 0
    pause = record.turn_pause_s if record.chunk_starts_turn[index] else record.segment_pause_s
    return int(pause * record.sample_rate)


async def _whole_audio(
    record: JobRecord, store: ChunkStore, fmt: AudioFormat
) -> AsyncIterator[bytes]:
    rate = record.sample_rate

    async def pieces() -> AsyncIterator[bytes]:
        for index in range(len(record.chunk_samples)):
            data = await store.get(record.id, index)
            if data is None:
                raise RuntimeError(f"chunk {index} of job {record.id} is missing from the store")
            pcm = await asyncio.to_thread(decode_chunk, data)
            yield b"\0\0" * _gap(record, index) + pcm

    if fmt.name in ("wav", "pcm"):
        if fmt.name == "wav":
            total = sum(s or 0 for s in record.chunk_samples)
            total += sum(_gap(record, i) for i in range(len(record.chunk_samples)))
            yield wav_header(rate, total)
        async for piece in pieces():
            yield piece
        return
    if fmt.streams_whole:  # FLAC needs its length up front: spool to disk, not memory.
        with tempfile.TemporaryFile() as spool:
            whole = StreamEncoder(fmt, rate, out=spool)
            async for piece in pieces():
                samples = np.frombuffer(piece, dtype="<i2").astype(np.float32) / 32767.0
                await asyncio.to_thread(whole.feed, samples)
            await asyncio.to_thread(whole.finish)
            spool.seek(0)
            while block := await asyncio.to_thread(spool.read, 1 << 16):
                yield block
        return
    encoder = StreamEncoder(fmt, rate)
    async for piece in pieces():
        samples = np.frombuffer(piece, dtype="<i2").astype(np.float32) / 32767.0
        out = await asyncio.to_thread(encoder.feed, samples)
        if out:
            yield out
    tail = encoder.finish()
    if tail:
        yield tail
