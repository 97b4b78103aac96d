"""The job chunk stores against real servers: S3 on moto's standalone server, Redis on
redis-server. Presigned URLs are fetched with plain urllib, as a client would."""

from __future__ import annotations

import logging
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis_support import RedisServer, redis_server  # noqa: F401  (fixture)
from s3_support import BUCKET, MotoServer, moto_server  # noqa: F401  (fixture)
from voicefleet_server.metrics import Metrics
from voicefleet_server.serving.errors import StorageUnavailable
from voicefleet_server.serving.objectstore import (
    PART_BYTES,
    RedisChunkStore,
    S3ChunkStore,
    S3Location,
)
from voicefleet_server.serving.redis_link import RedisLink


@pytest.fixture
def s3_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:  # noqa: F811
    for name, value in moto_server.env().items():
        monkeypatch.setenv(name, value)
    yield moto_server


def _store(**kwargs: object) -> S3ChunkStore:
    return S3ChunkStore(S3Location.parse(f"s3://{BUCKET}/t-{uuid.uuid4().hex[:8]}"), **kwargs)  # type: ignore[arg-type]


def _download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bytes(response.read())


async def test_s3_chunks_put_get_list_delete(s3_env: MotoServer) -> None:
    store = _store()
    try:
        await store.put("job_a", 0, b"zero")
        await store.put("job_a", 2, b"two")
        await store.put("job_b", 0, b"other job")
        assert await store.get("job_a", 0) == b"zero"
        assert await store.get("job_a", 1) is None
        assert await store.stored("job_a", 3) == {0, 2}
        assert await store.stored("job_a", 2) == {0}
        assert store.up is True
        prefix = store.location.prefix
        assert s3_env.keys(prefix + "job_a/") == [
            f"{prefix}job_a/chunk-00000.flac",
            f"{prefix}job_a/chunk-00002.flac",
        ]
        await store.delete("job_a", 3)
        assert s3_env.keys(prefix + "job_a/") == []
        assert await store.stored("job_a", 3) == set()
        assert await store.get("job_b", 0) == b"other job"  # another job is untouched
    finally:
        await store.close()


async def test_presigned_links_download_with_plain_http_and_expire(s3_env: MotoServer) -> None:
    store = _store(url_ttl_s=600)
    try:
        await store.put("job_a", 0, b"chunk zero")
        await store.put("job_a", 1, b"chunk one")
        before = time.time()
        links = await store.chunk_links("job_a", [0, 1])
        assert _download(links[0].url) == b"chunk zero"
        assert _download(links[1].url) == b"chunk one"
        assert before + 590 < links[0].expires_at < time.time() + 610
        assert "X-Amz-Signature=" in links[0].url and "X-Amz-Expires=600" in links[0].url
        # Reused while young: a status poll signs nothing new.
        assert (await store.chunk_links("job_a", [0]))[0] == links[0]
    finally:
        await store.close()


async def test_old_links_are_signed_again(s3_env: MotoServer) -> None:
    """(moto checks neither signatures nor expiry; MinIO in the e2e suite does.)"""
    store = _store(url_ttl_s=2)
    try:
        await store.put("job_a", 0, b"soon gone")
        link = (await store.chunk_links("job_a", [0]))[0]
        assert "X-Amz-Expires=2&" in link.url
        time.sleep(1.1)  # past half its life: a client polling now gets a fresh one
        fresh = (await store.chunk_links("job_a", [0]))[0]
        assert fresh.expires_at > link.expires_at
        assert _download(fresh.url) == b"soon gone"
    finally:
        await store.close()


async def _pieces(total: int, piece: int = 1 << 20) -> AsyncIterator[bytes]:
    for start in range(0, total, piece):
        yield bytes([start // piece % 251]) * min(piece, total - start)


async def test_whole_result_is_one_multipart_object(s3_env: MotoServer) -> None:
    store = _store()
    total = PART_BYTES + 3 * (1 << 20) + 17  # two parts, the last one short
    try:
        size = await store.put_result("job_a", "wav", "audio/wav", _pieces(total))
        assert size == total
        head = s3_env.client().head_object(
            Bucket=BUCKET, Key=store.location.result_key("job_a", "wav")
        )
        assert head["ContentLength"] == total and head["ContentType"] == "audio/wav"
        assert head["ETag"].endswith('-2"')  # assembled from two parts
        assert await store.has_result("job_a", "wav")
        assert not await store.has_result("job_a", "mp3")
        expected = b"".join([p async for p in _pieces(total)])
        assert _download((await store.result_link("job_a", "wav")).url) == expected
        await store.delete("job_a", 0)
        assert s3_env.keys(store.location.job_prefix("job_a")) == []
    finally:
        await store.close()


async def test_a_failed_assembly_leaves_no_upload_behind(s3_env: MotoServer) -> None:
    store = _store()

    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * PART_BYTES  # one part uploaded ...
        raise RuntimeError("chunk missing")  # ... then the source fails

    try:
        with pytest.raises(RuntimeError):
            await store.put_result("job_a", "wav", "audio/wav", broken())
        uploads = s3_env.client().list_multipart_uploads(
            Bucket=BUCKET, Prefix=store.location.prefix
        )
        assert uploads.get("Uploads", []) == []
        assert not await store.has_result("job_a", "wav")
    finally:
        await store.close()


async def test_delete_aborts_an_unfinished_upload(s3_env: MotoServer) -> None:
    store = _store()
    key = store.location.result_key("job_a", "wav")
    s3_env.client().create_multipart_upload(Bucket=BUCKET, Key=key)  # a replica died mid-way
    try:
        await store.put("job_a", 0, b"c")
        await store.delete("job_a", 1)
        uploads = s3_env.client().list_multipart_uploads(
            Bucket=BUCKET, Prefix=store.location.prefix
        )
        assert uploads.get("Uploads", []) == []
        assert s3_env.keys(store.location.prefix) == []
    finally:
        await store.close()


async def test_a_missing_bucket_fails_at_once(s3_env: MotoServer) -> None:
    store = S3ChunkStore(S3Location.parse("s3://no-such-bucket/p"), retry_s=30)
    try:
        started = time.monotonic()
        with pytest.raises(StorageUnavailable) as failed:
            await store.put("job_a", 0, b"x")
        assert time.monotonic() - started < 10  # not retried for the 30 s budget
        assert "NoSuchBucket" in failed.value.message
        assert failed.value.code == "storage_unavailable"
        assert store.detail()["up"] is False
    finally:
        await store.close()


async def test_credentials_from_a_mounted_secret_follow_rotation(
    s3_env: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    (tmp_path / "AWS_ACCESS_KEY_ID").write_text("FIRSTKEY\n")
    (tmp_path / "AWS_SECRET_ACCESS_KEY").write_text("secret-one\n")
    store = _store(credentials_dir=str(tmp_path))
    try:
        await store.put("job_a", 0, b"x")
        link = (await store.chunk_links("job_a", [0]))[0]
        assert "X-Amz-Credential=FIRSTKEY" in link.url
        (tmp_path / "AWS_ACCESS_KEY_ID").write_text("SECONDKEY\n")
        store._stamp_checked = 0.0  # skip the 10 s between checks of the files
        link = (await store.chunk_links("job_a", [0]))[0]
        assert "X-Amz-Credential=SECONDKEY" in link.url
        assert _download(link.url) == b"x"
    finally:
        await store.close()


async def test_lifecycle_check_warns_without_a_rule(
    s3_env: MotoServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store()
    try:
        with caplog.at_level(logging.WARNING):
            await store.check(job_ttl_s=86_400)
        assert "no lifecycle rule expires" in caplog.text
        caplog.clear()
        s3_env.client().put_bucket_lifecycle_configuration(
            Bucket=BUCKET,
            LifecycleConfiguration={
                "Rules": [
                    {
                        "ID": "voicefleet-jobs",
                        "Filter": {"Prefix": store.location.prefix},
                        "Status": "Enabled",
                        "Expiration": {"Days": 1},
                        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                    }
                ]
            },
        )
        with caplog.at_level(logging.WARNING):
            await store.check(job_ttl_s=86_400)
        assert caplog.text == ""
    finally:
        s3_env.client().delete_bucket_lifecycle(Bucket=BUCKET)
        await store.close()


async def test_outage_is_retried_then_reported_and_recovery_is_seen(s3_env: MotoServer) -> None:
    """Last in this module: it stops the moto process (which comes back empty)."""
    store = _store(retry_s=1.5)
    try:
        await store.put("job_a", 0, b"before")
        s3_env.stop()
        started = time.monotonic()
        with pytest.raises(StorageUnavailable) as failed:
            await store.put("job_a", 1, b"during")
        waited = time.monotonic() - started
        assert 1.5 <= waited < 15  # retried for the budget, then gave up (never hangs)
        assert "unreachable for 1.5 s" in failed.value.message
        assert failed.value.retry_after_s > 0
        detail = store.detail()
        assert detail["up"] is False and "Connect" in str(detail["error"])
        # Reads from a route get a short budget of their own.
        started = time.monotonic()
        with pytest.raises(StorageUnavailable):
            await store.get("job_a", 0, budget_s=0.3)
        assert time.monotonic() - started < 10
    finally:
        s3_env.start()
    await store.put("job_a", 1, b"after")
    assert store.detail()["up"] is True
    assert await store.get("job_a", 1) == b"after"
    await store.close()


# ---- Redis ------------------------------------------------------------------------------


async def test_redis_chunks_put_get_list_delete_with_ttl(redis_server: RedisServer) -> None:  # noqa: F811
    link = RedisLink(redis_server.url, f"t{uuid.uuid4().hex[:6]}:", Metrics(), "r1")
    await link.start()
    store = RedisChunkStore(link, ttl_s=120)
    try:
        await store.put("job_a", 0, b"zero")
        await store.put("job_a", 3, b"three")
        assert await store.get("job_a", 3) == b"three"
        assert await store.get("job_a", 1) is None
        assert await store.stored("job_a", 4) == {0, 3}
        ttl = redis_server.client().ttl(f"{link.prefix}job:job_a:audio:0")
        assert 100 < ttl <= 120
        await store.delete("job_a", 4)
        assert await store.stored("job_a", 4) == set()
        assert redis_server.client().keys(f"{link.prefix}*audio*") == []
    finally:
        await link.close()
