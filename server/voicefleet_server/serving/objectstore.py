"""Where a job's audio lives: `ChunkStore`s in S3-compatible storage, Redis or this process.

Job records and progress stay in the `JobStore` (store.py); this module holds only audio.
Chunks are stored as FLAC: lossless, so the whole result and any response format are
built from exactly the samples the engine produced (a resumed or re-rendered job is
byte-identical), sample counts are exact (no codec delay to trim at the joins), and
speech shrinks to roughly half of raw PCM. S3 calls are blocking boto3 calls run on a
small thread pool, retried with backoff within a budget, then `StorageUnavailable`.
"""

from __future__ import annotations

import asyncio
import io
import logging
import random
import re
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import redis.asyncio as aioredis
import soundfile as sf

from voicefleet_server.serving.errors import StorageUnavailable
from voicefleet_server.serving.redis_link import RedisLink

log = logging.getLogger(__name__)
T = TypeVar("T")

CHUNK_EXT = "flac"
CHUNK_MEDIA_TYPE = "audio/flac"
# S3 wants every part but the last to be at least 5 MiB; 8 MiB keeps memory per upload small.
PART_BYTES = 8 << 20
# S3's SigV4 presigned URLs live at most 7 days.
MAX_URL_TTL_S = 7 * 86_400


# ---- the chunk codec --------------------------------------------------------------------


def encode_chunk(pcm16: bytes, sample_rate: int) -> bytes:
    """16-bit mono PCM -> FLAC bytes (lossless: `decode_chunk` gives the same PCM back).
    An empty chunk (a segment with nothing to say) is stored as zero bytes: libsndfile
    cannot read back a FLAC file without samples."""
    if not pcm16:
        return b""
    out = io.BytesIO()
    samples = np.frombuffer(pcm16, dtype="<i2")
    sf.write(out, samples, sample_rate, format="FLAC", subtype="PCM_16")
    return out.getvalue()


def decode_chunk(data: bytes) -> bytes:
    """FLAC bytes -> 16-bit mono PCM."""
    if not data:
        return b""
    samples, _ = sf.read(io.BytesIO(data), dtype="int16")
    return np.asarray(samples, dtype="<i2").tobytes()


# ---- where: --job-storage ---------------------------------------------------------------

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True, slots=True)
class S3Location:
    bucket: str
    prefix: str  # "" or ending in "/"

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """`s3://BUCKET/PREFIX` (the prefix is optional)."""
        if not url.startswith("s3://"):
            raise ValueError(f"expected s3://BUCKET/PREFIX, got {url!r}")
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not _BUCKET.match(bucket):
            raise ValueError(f"{bucket!r} is not a valid S3 bucket name")
        prefix = prefix.strip("/")
        return cls(bucket, prefix + "/" if prefix else "")

    def job_prefix(self, job_id: str) -> str:
        return f"{self.prefix}{job_id}/"

    def chunk_key(self, job_id: str, index: int) -> str:
        return f"{self.job_prefix(job_id)}chunk-{index:05d}.{CHUNK_EXT}"

    def result_key(self, job_id: str, ext: str) -> str:
        return f"{self.job_prefix(job_id)}audio.{ext}"

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def parse_job_storage(value: str | None, has_redis: bool) -> str | S3Location:
    """`--job-storage`: "memory", "redis" or an `S3Location`; unset: redis with Redis."""
    if value is None or value == "":
        return "redis" if has_redis else "memory"
    if value in ("memory", "redis"):
        if value == "redis" and not has_redis:
            raise ValueError("--job-storage redis needs --redis-url")
        return value
    return S3Location.parse(value)


@dataclass(frozen=True, slots=True)
class Link:
    """A URL clients download from directly, and when it stops working."""

    url: str
    expires_at: float


# ---- the interface ----------------------------------------------------------------------


class ChunkStore(Protocol):
    """A job's chunks (FLAC bytes) by index. Raises `RedisDown` (Redis) or
    `StorageUnavailable` (S3) when the storage cannot be reached."""

    kind: str  # "memory", "redis" or "s3"

    async def put(self, job_id: str, index: int, data: bytes) -> None: ...

    async def get(self, job_id: str, index: int) -> bytes | None: ...

    async def stored(self, job_id: str, count: int) -> set[int]:
        """Indexes (below `count`) of the chunks present."""
        ...

    async def delete(self, job_id: str, count: int) -> None:
        """Remove every object of the job (its chunks and, where kept, its whole result)."""
        ...


class MemoryChunkStore:
    """Chunks of this process's jobs; dropped with their records (`drop`)."""

    kind = "memory"

    def __init__(self) -> None:
        self._chunks: dict[str, dict[int, bytes]] = {}

    async def put(self, job_id: str, index: int, data: bytes) -> None:
        self._chunks.setdefault(job_id, {})[index] = data

    async def get(self, job_id: str, index: int) -> bytes | None:
        return self._chunks.get(job_id, {}).get(index)

    async def stored(self, job_id: str, count: int) -> set[int]:
        return {i for i in self._chunks.get(job_id, {}) if i < count}

    async def delete(self, job_id: str, count: int) -> None:
        self.drop(job_id)

    def drop(self, job_id: str) -> None:
        self._chunks.pop(job_id, None)

    def jobs(self) -> set[str]:
        return set(self._chunks)


class RedisChunkStore:
    """Chunks as Redis strings with the job's TTL (`job:{id}:audio:{n}`).

    (The key name differs from the raw-PCM `chunk:` keys of earlier versions, so a job
    resumed across an upgrade re-renders those chunks instead of misreading them.)"""

    kind = "redis"

    def __init__(self, link: RedisLink, ttl_s: int) -> None:
        self.link = link
        self.ttl_s = ttl_s

    def _key(self, job_id: str, index: int) -> str:
        return self.link.key("job", job_id, "audio", str(index))

    async def put(self, job_id: str, index: int, data: bytes) -> None:
        async def op(client: aioredis.Redis) -> None:
            await client.set(self._key(job_id, index), data, ex=self.ttl_s)

        await self.link.call(op)

    async def get(self, job_id: str, index: int) -> bytes | None:
        async def op(client: aioredis.Redis) -> Any:
            return await client.get(self._key(job_id, index))

        data = await self.link.call(op)
        return None if data is None else bytes(data)

    async def stored(self, job_id: str, count: int) -> set[int]:
        async def op(client: aioredis.Redis) -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                for index in range(count):
                    pipe.exists(self._key(job_id, index))
                return list(await pipe.execute())

        found = await self.link.call(op) if count else []
        return {i for i, present in enumerate(found) if present}

    async def delete(self, job_id: str, count: int) -> None:
        async def op(client: aioredis.Redis) -> None:
            keys = [self._key(job_id, i) for i in range(count)]
            for start in range(0, len(keys), 500):
                await client.delete(*keys[start : start + 500])

        if count:
            await self.link.call(op)


# ---- S3 ---------------------------------------------------------------------------------

_RETRYABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
    }
)


def retryable(exc: BaseException) -> bool:
    """Worth another try: the network, a timeout, throttling or a 5xx from the server."""
    from botocore.exceptions import (
        ClientError,
        ConnectionError,
        CredentialRetrievalError,
        HTTPClientError,
    )

    if isinstance(exc, HTTPClientError | ConnectionError | CredentialRetrievalError | OSError):
        return True
    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return status >= 500 or exc.response.get("Error", {}).get("Code") in _RETRYABLE_CODES
    return False


def describe(exc: BaseException) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', '?')}: {error.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


def _is_missing(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in (
        "NoSuchKey",
        "404",
        "NotFound",
    )


class _Credentials:
    """Keys from a mounted Secret (files AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
    optionally AWS_SESSION_TOKEN), re-read when the files change (a rotated Secret)."""

    NAMES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)

    def stamp(self) -> tuple[float, ...]:
        stamps: list[float] = []
        for name in self.NAMES:
            path = self.directory / name
            info = path.stat() if path.exists() else None
            stamps += (info.st_mtime, info.st_size) if info else (0.0, 0.0)
        return tuple(stamps)

    def read(self) -> dict[str, str]:
        found = {}
        for name in self.NAMES:
            path = self.directory / name
            if path.exists():
                found[name.lower()] = path.read_text().strip()
        if "aws_access_key_id" not in found or "aws_secret_access_key" not in found:
            raise StorageUnavailable(
                f"{self.directory} lacks AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY"
            )
        return found


class S3ChunkStore:
    """Chunks and whole results in a bucket, served to clients through presigned URLs.

    Endpoint, region and credentials come from boto3's standard configuration
    (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, web identity),
    or keys from `credentials_dir`. Every call runs on this store's own threads, so
    a slow bucket never stalls the event loop or the default executor."""

    kind = "s3"

    def __init__(
        self,
        location: S3Location,
        *,
        url_ttl_s: int = 3600,
        retry_s: float = 30.0,
        url_endpoint: str | None = None,
        credentials_dir: str | None = None,
        threads: int = 8,
    ) -> None:
        self.location = location
        self.url_ttl_s = min(url_ttl_s, MAX_URL_TTL_S)
        self.retry_s = retry_s
        self.url_endpoint = url_endpoint
        self._credentials = _Credentials(credentials_dir) if credentials_dir else None
        self._threads = threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="voicefleet-s3")
        self._clients: tuple[Any, Any] | None = None  # (for calls, for presigning)
        self._stamp: tuple[float, ...] = ()
        self._stamp_checked = 0.0
        self._lock = threading.Lock()
        self.generation = 0
        self._links: OrderedDict[str, Link] = OrderedDict()
        self.up: bool | None = None  # None until the first call
        self.last_error: str | None = None
        self.failing_since: float | None = None

    # ---- plumbing ------------------------------------------------------------------

    def _make_clients(self) -> tuple[Any, Any]:
        import boto3
        from botocore.config import Config

        keys = self._credentials.read() if self._credentials else {}
        config = Config(
            signature_version="s3v4",
            connect_timeout=2,
            read_timeout=20,
            # Our own loop retries with backoff and a deadline; botocore's would add
            # its own waits on top of it.
            retries={"total_max_attempts": 1},
            max_pool_connections=self._threads,
        )
        session = boto3.session.Session(**keys)
        client = session.client("s3", config=config)
        signer = (
            session.client("s3", config=config, endpoint_url=self.url_endpoint)
            if self.url_endpoint
            else client
        )
        return client, signer

    def _client(self, signer: bool = False) -> Any:
        """The boto3 clients (thread-safe), rebuilt when a mounted Secret changes."""
        self._check_rotation()
        with self._lock:
            if self._clients is None:
                self._clients = self._make_clients()
            return self._clients[1 if signer else 0]

    def _check_rotation(self) -> None:
        """At most every 10 s: have the mounted key files changed? (a few stat calls)"""
        with self._lock:
            now = time.monotonic()
            if self._credentials is None or now - self._stamp_checked <= 10:
                return
            self._stamp_checked = now
            stamp = self._credentials.stamp()
            if stamp != self._stamp:
                self._stamp, self._clients = stamp, None
                self.generation += 1  # links signed with the old keys are not reused

    async def _call(self, what: str, fn: Callable[[Any], T], budget_s: float | None = None) -> T:
        """Run `fn(client)` on the pool; retry what is worth retrying until the budget is
        spent (exponential backoff with jitter), then raise `StorageUnavailable`."""
        budget = self.retry_s if budget_s is None else budget_s
        deadline = time.monotonic() + budget
        delay = 0.1
        loop = asyncio.get_running_loop()
        while True:
            try:
                result = await loop.run_in_executor(self._pool, lambda: fn(self._client()))
            except StorageUnavailable:
                raise
            except Exception as exc:
                self._failed(exc)
                left = deadline - time.monotonic()
                if not retryable(exc):
                    raise StorageUnavailable(
                        f"object storage refused {what}: {describe(exc)}"
                    ) from exc
                if left <= 0:
                    raise StorageUnavailable(
                        f"object storage unreachable for {budget:g} s ({what}: {describe(exc)})",
                        retry_after_s=5,
                    ) from exc
                await asyncio.sleep(min(left, random.uniform(delay / 2, delay)))
                delay = min(delay * 2, 5.0)
            else:
                if self.up is not True:
                    log.info("object storage %s is reachable", self.location)
                self.up, self.last_error, self.failing_since = True, None, None
                return result

    def _failed(self, exc: BaseException) -> None:
        if self.up is not False:
            log.warning("object storage %s failing: %s", self.location, describe(exc))
            self.failing_since = time.time()
        self.up = False
        self.last_error = describe(exc)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def detail(self) -> dict[str, object]:
        detail: dict[str, object] = {"kind": "s3", "location": str(self.location), "up": self.up}
        if self.up is False:
            detail["error"] = self.last_error
            if self.failing_since is not None:
                detail["failing_for_s"] = round(time.time() - self.failing_since, 1)
        return detail

    # ---- chunks ----------------------------------------------------------------------

    async def put(self, job_id: str, index: int, data: bytes) -> None:
        key = self.location.chunk_key(job_id, index)
        await self._call(
            f"PUT {key}",
            lambda c: c.put_object(
                Bucket=self.location.bucket, Key=key, Body=data, ContentType=CHUNK_MEDIA_TYPE
            ),
        )

    async def get(self, job_id: str, index: int, budget_s: float | None = None) -> bytes | None:
        key = self.location.chunk_key(job_id, index)
        return await self._call(f"GET {key}", lambda c: self._get(c, key), budget_s)

    def _get(self, client: Any, key: str) -> bytes | None:
        try:
            response = client.get_object(Bucket=self.location.bucket, Key=key)
        except Exception as exc:
            if _is_missing(exc):
                return None
            raise
        return bytes(response["Body"].read())

    async def stored(self, job_id: str, count: int) -> set[int]:
        prefix = self.location.job_prefix(job_id) + "chunk-"
        keys = await self._call(f"LIST {prefix}", lambda c: self._list(c, prefix))
        found = set()
        for key in keys:
            match = re.search(r"chunk-(\d+)\." + CHUNK_EXT + "$", key)
            if match and int(match.group(1)) < count:
                found.add(int(match.group(1)))
        return found

    def _list(self, client: Any, prefix: str) -> list[str]:
        keys: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=self.location.bucket, Prefix=prefix
        ):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys

    async def delete(self, job_id: str, count: int) -> None:
        prefix = self.location.job_prefix(job_id)
        await self._call(f"DELETE {prefix}*", lambda c: self._delete(c, prefix))
        for index in range(count):
            self._links.pop(f"{self.generation}:{self.location.chunk_key(job_id, index)}", None)

    def _delete(self, client: Any, prefix: str) -> None:
        bucket = self.location.bucket
        # Unfinished multipart uploads (a replica died while assembling) hold parts too.
        uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
        for upload in uploads.get("Uploads", []):
            client.abort_multipart_upload(
                Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        keys = self._list(client, prefix)
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})

    # ---- URLs ------------------------------------------------------------------------

    async def chunk_links(self, job_id: str, indexes: Sequence[int]) -> dict[int, Link]:
        keys = {i: self.location.chunk_key(job_id, i) for i in indexes}
        found = await self._links_for(list(keys.values()))
        return {i: found[k] for i, k in keys.items()}

    async def result_link(self, job_id: str, ext: str) -> Link:
        key = self.location.result_key(job_id, ext)
        return (await self._links_for([key]))[key]

    async def _links_for(self, keys: list[str]) -> dict[str, Link]:
        """Presigned GET URLs; one is reused while more than half its lifetime is left
        (signing is cheap but not free, and a status poll lists every chunk)."""
        self._check_rotation()
        now = time.time()
        found: dict[str, Link] = {}
        todo = []
        for key in keys:
            link = self._links.get(f"{self.generation}:{key}")
            if link is not None and link.expires_at - now > self.url_ttl_s / 2:
                found[key] = link
            else:
                todo.append(key)
        if todo:
            ttl = self.url_ttl_s

            def sign(_: Any) -> dict[str, Link]:
                signer = self._client(signer=True)
                return {
                    key: Link(
                        signer.generate_presigned_url(
                            "get_object",
                            Params={"Bucket": self.location.bucket, "Key": key},
                            ExpiresIn=ttl,
                        ),
                        now + ttl,
                    )
                    for key in todo
                }

            # Signing is local (no request), so it cannot fail for the network.
            generation = self.generation
            signed = await asyncio.get_running_loop().run_in_executor(self._pool, sign, None)
            found.update(signed)
            self._links.update({f"{generation}:{k}": link for k, link in signed.items()})
            while len(self._links) > 100_000:
                self._links.popitem(last=False)
        return found

    # ---- the whole result ------------------------------------------------------------

    async def put_result(
        self, job_id: str, ext: str, media_type: str, body: AsyncIterator[bytes]
    ) -> int:
        """Upload the whole result as one object (multipart, `PART_BYTES` parts, so it is
        never held whole in memory); an upload that fails is aborted. Returns its size."""
        bucket, key = self.location.bucket, self.location.result_key(job_id, ext)
        created = await self._call(
            f"CREATE UPLOAD {key}",
            lambda c: c.create_multipart_upload(Bucket=bucket, Key=key, ContentType=media_type),
        )
        upload_id = created["UploadId"]
        parts: list[dict[str, Any]] = []
        size = 0

        async def send(data: bytes) -> None:
            number = len(parts) + 1
            answer = await self._call(
                f"UPLOAD PART {number} of {key}",
                lambda c: c.upload_part(
                    Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
                ),
            )
            parts.append({"PartNumber": number, "ETag": answer["ETag"]})

        try:
            buffer = bytearray()
            async for piece in body:
                buffer += piece
                size += len(piece)
                while len(buffer) >= PART_BYTES:
                    await send(bytes(buffer[:PART_BYTES]))
                    del buffer[:PART_BYTES]
            if buffer or not parts:
                await send(bytes(buffer))
            await self._call(
                f"COMPLETE UPLOAD {key}",
                lambda c: c.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                ),
            )
        except BaseException:
            try:
                await self._call(
                    f"ABORT UPLOAD {key}",
                    lambda c: c.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id),
                    budget_s=2.0,
                )
            except Exception:  # the bucket's lifecycle rule cleans up what is left
                log.warning("could not abort the upload of %s", key)
            raise
        self._links.pop(f"{self.generation}:{key}", None)
        return size

    async def has_result(self, job_id: str, ext: str) -> bool:
        key = self.location.result_key(job_id, ext)

        def head(client: Any) -> bool:
            try:
                client.head_object(Bucket=self.location.bucket, Key=key)
            except Exception as exc:
                if _is_missing(exc):
                    return False
                raise
            return True

        return await self._call(f"HEAD {key}", head)

    # ---- start-up check --------------------------------------------------------------

    async def check(self, job_ttl_s: int) -> None:
        """Reach the bucket once and warn when no lifecycle rule expires the job objects
        (they would outlive their records forever). Never raises: a bucket that is down at
        start-up may be up by the first job."""
        try:
            rules = await self._call("GET LIFECYCLE", self._lifecycle, budget_s=3.0)
        except StorageUnavailable as exc:
            log.warning("object storage check failed: %s", exc)
            return
        days = lifecycle_days(rules, self.location.prefix)
        want = -(-job_ttl_s // 86_400)
        if days is None:
            log.warning(
                "no lifecycle rule expires %s; job audio stays until DELETE (docs/jobs.md has "
                "the rule: expire after %d day(s))",
                self.location,
                want,
            )
        elif days > want:
            log.warning(
                "the lifecycle rule on %s expires objects after %d days, jobs after %d",
                self.location,
                days,
                want,
            )

    def _lifecycle(self, client: Any) -> list[dict[str, Any]]:
        from botocore.exceptions import ClientError

        try:
            answer = client.get_bucket_lifecycle_configuration(Bucket=self.location.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchLifecycleConfiguration":
                return []
            raise
        return list(answer.get("Rules", []))


def lifecycle_days(rules: list[dict[str, Any]], prefix: str) -> int | None:
    """Fewest days after which an enabled rule expires every object under `prefix`."""
    days = []
    for rule in rules:
        if rule.get("Status") != "Enabled" or "Days" not in rule.get("Expiration", {}):
            continue
        scope = rule.get("Filter", {}).get("Prefix", rule.get("Prefix", ""))
        if "Filter" in rule and set(rule["Filter"]) - {"Prefix"}:
            continue  # tag or size filters: not every job object matches
        if prefix.startswith(scope):
            days.append(int(rule["Expiration"]["Days"]))
    return min(days) if days else None
