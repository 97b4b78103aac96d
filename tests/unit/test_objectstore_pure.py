"""The pure parts of the job object store: chunk codec, --job-storage parsing, lifecycle
rules and which S3 failures are worth a retry."""

from __future__ import annotations

import numpy as np
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from voicefleet_server.config import ServerSettings
from voicefleet_server.serving.objectstore import (
    S3Location,
    decode_chunk,
    encode_chunk,
    lifecycle_days,
    parse_job_storage,
    retryable,
)


def _speechlike(seconds: float, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)  # syllable-rate amplitude
    wave = envelope * (0.3 * np.sin(2 * np.pi * 180 * t) + 0.1 * np.sin(2 * np.pi * 720 * t))
    return np.rint(wave * 32767).astype("<i2").tobytes()


def test_chunks_round_trip_exactly_and_shrink() -> None:
    pcm = _speechlike(2.0)
    flac = encode_chunk(pcm, 16000)
    assert flac[:4] == b"fLaC"
    assert decode_chunk(flac) == pcm  # lossless, sample for sample
    assert len(flac) < len(pcm) / 2


def test_empty_chunk_round_trips() -> None:
    assert decode_chunk(encode_chunk(b"", 16000)) == b""


def test_s3_location_parsing() -> None:
    assert S3Location.parse("s3://voicefleet-jobs") == S3Location("voicefleet-jobs", "")
    loc = S3Location.parse("s3://voicefleet-jobs//team/a/")
    assert loc.prefix == "team/a/"
    assert loc.chunk_key("job_1", 7) == "team/a/job_1/chunk-00007.flac"
    assert loc.result_key("job_1", "mp3") == "team/a/job_1/audio.mp3"
    assert str(loc) == "s3://voicefleet-jobs/team/a/"
    for bad in ("voicefleet-jobs", "s3://vf", "s3://Upper-Case", "s3:///x", "gs://b/p"):
        with pytest.raises(ValueError):
            S3Location.parse(bad)


def test_job_storage_defaults_follow_redis() -> None:
    assert parse_job_storage(None, has_redis=True) == "redis"
    assert parse_job_storage(None, has_redis=False) == "memory"
    assert parse_job_storage("memory", has_redis=True) == "memory"
    assert parse_job_storage("s3://voicefleet-jobs/p", has_redis=False) == S3Location(
        "voicefleet-jobs", "p/"
    )
    with pytest.raises(ValueError, match="redis-url"):
        parse_job_storage("redis", has_redis=False)
    with pytest.raises(ValueError):
        parse_job_storage("disk", has_redis=True)


def test_lifecycle_days_finds_the_rule_that_covers_the_prefix() -> None:
    def rule(days: int, scope: str, status: str = "Enabled", **extra: str) -> dict:
        return {
            "Status": status,
            "Expiration": {"Days": days},
            "Filter": {"Prefix": scope, **extra},
        }

    assert lifecycle_days([], "jobs/") is None
    assert lifecycle_days([rule(1, "jobs/")], "jobs/") == 1
    assert lifecycle_days([rule(1, "")], "jobs/") == 1  # the whole bucket
    assert lifecycle_days([rule(1, "other/")], "jobs/") is None
    assert lifecycle_days([rule(1, "jobs/", status="Disabled")], "jobs/") is None
    assert lifecycle_days([rule(1, "jobs/", Tag="x")], "jobs/") is None
    assert lifecycle_days([rule(7, ""), rule(2, "jobs/")], "jobs/") == 2


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


def test_what_is_retried() -> None:
    assert retryable(EndpointConnectionError(endpoint_url="http://x"))
    assert retryable(_client_error("InternalError", 500))
    assert retryable(_client_error("SlowDown", 503))
    assert not retryable(_client_error("NoSuchBucket", 404))
    assert not retryable(_client_error("AccessDenied", 403))
    assert not retryable(NoCredentialsError())


def test_storage_settings() -> None:
    assert ServerSettings().job_url_ttl == 3600
    assert ServerSettings(job_url_ttl="10m").job_url_ttl == 600
    assert ServerSettings(job_url_ttl="2h").job_url_ttl == 7200
    assert ServerSettings(job_url_ttl="900").job_url_ttl == 900
    for bad in ("8d", "10s", "soon"):  # above S3's 7-day limit, below a minute, not a time
        with pytest.raises(ValueError):
            ServerSettings(job_url_ttl=bad)
    assert ServerSettings(job_storage="s3://voicefleet-jobs/a/b").job_storage
    with pytest.raises(ValueError, match="s3://BUCKET"):
        ServerSettings(job_storage="voicefleet-jobs")
    with pytest.raises(ValueError, match="needs --redis-url"):
        ServerSettings(job_storage="redis")
    assert ServerSettings(job_storage="redis", redis_url="redis://r:6379/0").job_storage
