"""Spec parsing: CRD defaults repeated, and the errors a schema cannot catch."""

from __future__ import annotations

from decimal import Decimal

import pytest
from voicefleet_operator.spec import (
    SpecError,
    check_name,
    parse_quantity,
    parse_resource_quantity,
    parse_spec,
)

from voicefleet import defaults

IMAGE = "example.test/server:1"


def test_defaults_match_the_crd() -> None:
    spec = parse_spec({"model": {"variant": "facebook/mms-tts-eng"}}, default_image=IMAGE)
    assert spec.model.dtype == "auto"
    assert spec.model.revision is None
    # The numbers the server's own flags default to (one source: voicefleet/defaults.py).
    assert (spec.batching.window_ms, spec.batching.max_batch_size, spec.batching.max_queue) == (
        defaults.BATCH_WINDOW_MS,
        defaults.MAX_BATCH_SIZE,
        defaults.MAX_QUEUE,
    )
    assert spec.vram.watermark_percent == defaults.VRAM_WATERMARK_PERCENT
    assert spec.vram.sustain_seconds == 60
    assert spec.vram.budget is None
    assert (spec.autoscaling.min_replicas, spec.autoscaling.max_replicas) == (1, 4)
    assert spec.autoscaling.metric == "queuedAudioSeconds"
    assert spec.autoscaling.target == "30"
    assert spec.redis.enabled and spec.redis.managed
    assert spec.resources.gpus == 1
    assert spec.image == IMAGE
    assert spec.drain_seconds == defaults.DRAIN_SECONDS


def test_budget_is_checked_and_passed_on_as_written() -> None:
    spec = parse_spec(
        {"model": {"variant": "m"}, "vram": {"budget": "1.5Gi"}}, default_image=IMAGE
    )
    assert spec.vram.budget == "1.5Gi"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("8Gi", Decimal(8 * 2**30)), ("500M", Decimal(500 * 10**6)), ("30", Decimal(30)),
     ("1.5Gi", Decimal(3 * 2**29)), (7, Decimal(7))],
)
def test_parse_quantity(value: object, expected: Decimal) -> None:
    assert parse_quantity(value, "x") == expected


@pytest.mark.parametrize("value", ["8 GB", "-1Gi", "Gi", "8Xi", "", "250m", True, None])
def test_parse_quantity_rejects_naming_the_field(value: object) -> None:
    with pytest.raises(SpecError, match=r"^spec\.vram\.budget must be a quantity such as 8Gi"):
        parse_quantity(value, "spec.vram.budget")


def test_resource_quantities_also_take_millicores() -> None:
    assert parse_resource_quantity("250m", "cpu") == Decimal("0.25")
    assert parse_resource_quantity("4Gi", "memory") == Decimal(4 * 2**30)
    for bad in ("m", "2 m", "lots"):
        with pytest.raises(SpecError, match="cpu must be a quantity"):
            parse_resource_quantity(bad, "cpu")
    spec = parse_spec({"model": {"variant": "m"}, "resources": {"requests": {"cpu": "500m"}}},
                      default_image=IMAGE)
    assert spec.resources.requests == {"cpu": "500m"}
    with pytest.raises(SpecError, match=r"spec\.resources\.limits\.memory must be a quantity"):
        parse_spec({"model": {"variant": "m"}, "resources": {"limits": {"memory": "16 GB"}}},
                   default_image=IMAGE)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "spec.model.variant is required"),
        ({"model": {"variant": "m", "dtype": "int8"}}, "spec.model.dtype must be one of"),
        ({"model": {"variant": "m"}, "batching": {"windowMs": 0}}, "windowMs must be between"),
        ({"model": {"variant": "m"}, "vram": {"budget": "0"}}, "at least 1Mi"),
        ({"model": {"variant": "m"}, "vram": {"budget": "lots"}}, "quantity such as 8Gi"),
        ({"model": {"variant": "m"}, "vram": {"watermarkPercent": 100}}, "between 50 and 99"),
        (
            {"model": {"variant": "m"}, "autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
            "minReplicas (5) must not exceed maxReplicas (2)",
        ),
        (
            {"model": {"variant": "m"}, "autoscaling": {"metric": "cpu", "target": "fast"}},
            "CPU percentage",
        ),
        ({"model": {"variant": "m"}, "autoscaling": {"target": "0"}}, "above zero"),
        ({"model": {"variant": "m"}, "redis": {"url": "http://x"}}, "redis://"),
        ({"model": {"variant": "m"}, "resources": {"gpus": -1}}, "gpus must be between"),
        ({"model": {"variant": "m"}, "batching": "fast"}, "spec.batching must be an object"),
        ({"model": {"variant": "m"}, "auth": {"apiKeySecretRef": "keys"}}, "must be an object"),
        ({"model": {"variant": "m"}, "auth": {"apiKeySecretRef": {}}}, "must name a Secret"),
        ({"model": {"variant": "m"}, "auth": {"apiKeySecretRef": {"name": "Keys!"}}},
         "must name a Secret"),
        ({"model": {"variant": "m"}, "auth": {"apiKeySecretRef": {"name": "k", "key": "a/b"}}},
         "may hold only"),
    ],
)
def test_invalid_specs_say_what_to_fix(raw: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_spec(raw, default_image=IMAGE)


def test_cpu_target_accepts_percent_forms() -> None:
    for target in (70, "70", "70%"):
        spec = parse_spec(
            {"model": {"variant": "m"}, "autoscaling": {"metric": "cpu", "target": target}},
            default_image=IMAGE,
        )
        assert spec.autoscaling.target == "70"


def test_external_redis_and_disabled_redis() -> None:
    external = parse_spec(
        {"model": {"variant": "m"}, "redis": {"url": "redis://r:6379/1"}}, default_image=IMAGE
    )
    assert not external.redis.managed and external.redis.url == "redis://r:6379/1"
    disabled = parse_spec(
        {"model": {"variant": "m"}, "redis": {"enabled": False, "url": "redis://r"}},
        default_image=IMAGE,
    )
    assert not disabled.redis.managed and disabled.redis.url is None


def test_long_names_are_rejected() -> None:
    check_name("a" * 57)
    with pytest.raises(SpecError, match="at most 57"):
        check_name("a" * 58)


def test_api_key_secret_ref() -> None:
    assert parse_spec({"model": {"variant": "m"}}, default_image=IMAGE).auth is None
    assert parse_spec({"model": {"variant": "m"}, "auth": {}}, default_image=IMAGE).auth is None
    spec = parse_spec({"model": {"variant": "m"}, "auth": {"apiKeySecretRef": {"name": "keys"}}},
                      default_image=IMAGE)
    assert spec.auth is not None and (spec.auth.secret, spec.auth.key) == ("keys", "api-key")
    spec = parse_spec(
        {"model": {"variant": "m"},
         "auth": {"apiKeySecretRef": {"name": "tts.keys", "key": "openai_key"}}},
        default_image=IMAGE,
    )
    assert spec.auth is not None and (spec.auth.secret, spec.auth.key) == ("tts.keys",
                                                                            "openai_key")


def test_s3_storage() -> None:
    assert parse_spec({"model": {"variant": "m"}}, default_image=IMAGE).storage is None
    spec = parse_spec({**M, "storage": {"s3": {"bucket": "voicefleet-jobs"}}},
                      default_image=IMAGE)
    assert spec.storage is not None
    assert (spec.storage.url, spec.storage.credentials_secret) == ("s3://voicefleet-jobs", None)
    spec = parse_spec({**M, "storage": {"s3": {
        "bucket": "voicefleet-jobs", "prefix": "/a/b/", "endpointUrl": "https://s3.example",
        "region": "eu-west-1", "credentialsSecretRef": {"name": "keys"}}}}, default_image=IMAGE)
    s3 = spec.storage
    assert s3 is not None and s3.url == "s3://voicefleet-jobs/a/b"
    assert (s3.endpoint_url, s3.region, s3.credentials_secret) == (
        "https://s3.example", "eu-west-1", "keys")
    assert (s3.access_key_id_key, s3.secret_access_key_key) == (
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@pytest.mark.parametrize(
    ("s3", "message"),
    [
        ({"prefix": "p"}, "bucket must be an S3 bucket name"),
        ({"bucket": "vf"}, "bucket must be an S3 bucket name"),
        ({"bucket": "Voicefleet"}, "bucket must be an S3 bucket name"),
        ({"bucket": "voicefleet-jobs", "endpointUrl": "minio:9000"}, "must start with http"),
        ({"bucket": "voicefleet-jobs", "region": "EU West"}, "region must be a region name"),
        ({"bucket": "voicefleet-jobs", "credentialsSecretRef": {}}, "must name a Secret"),
        ({"bucket": "voicefleet-jobs", "credentialsSecretRef": {
            "name": "k", "accessKeyIdKey": "a/b"}}, "accessKeyIdKey may hold only"),
        ("s3://voicefleet-jobs", "spec.storage.s3 must be an object"),
    ],
)
def test_invalid_s3_storage_says_what_to_fix(s3: object, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec({**M, "storage": {"s3": s3}}, default_image=IMAGE)


def test_new_fields_default_to_todays_behaviour() -> None:
    spec = parse_spec({"model": {"variant": "m"}}, default_image=IMAGE)
    assert spec.model.cache is None
    assert (spec.autoscaling.mode, spec.autoscaling.prometheus_url) == ("hpa", None)
    assert (spec.replicas, spec.rollout) == (1, "surge")
    assert spec.resources.gpu_resource == "nvidia.com/gpu"
    assert spec.pod.env == () and spec.pod.security_context == {}


def test_model_cache_settings() -> None:
    spec = parse_spec({"model": {"variant": "m", "cache": {}}}, default_image=IMAGE)
    assert spec.model.cache is not None
    assert (spec.model.cache.size, spec.model.cache.access_modes) == ("10Gi", ("ReadWriteMany",))
    assert spec.model.cache.existing_claim is None and spec.model.cache.storage_class is None
    spec = parse_spec({"model": {"variant": "m", "cache": {
        "size": "50Gi", "storageClassName": "nfs", "accessModes": ["ReadWriteOnce"],
        "existingClaim": "models"}}}, default_image=IMAGE)
    assert spec.model.cache is not None
    assert (spec.model.cache.size, spec.model.cache.storage_class,
            spec.model.cache.access_modes, spec.model.cache.existing_claim) == (
        "50Gi", "nfs", ("ReadWriteOnce",), "models")


M = {"model": {"variant": "m"}}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"model": {"variant": "m", "cache": {"size": "1k"}}}, "at least 1Mi"),
        ({"model": {"variant": "m", "cache": {"size": "lots"}}}, "cache.size must be a quantity"),
        ({"model": {"variant": "m", "cache": {"accessModes": ["ReadWriteSometimes"]}}},
         "accessModes must list some of"),
        ({"model": {"variant": "m", "cache": {"existingClaim": "My_Claim"}}},
         "must name a PersistentVolumeClaim"),
        ({"model": {"variant": "m", "cache": "yes"}}, "spec.model.cache must be an object"),
        ({**M, "autoscaling": {"mode": "auto"}}, "mode must be one of hpa, keda, none"),
        ({**M, "autoscaling": {"mode": "keda"}}, "prometheusUrl is required with mode keda"),
        ({**M, "autoscaling": {"mode": "keda", "prometheusUrl": "prometheus:9090"}},
         "must start with http:// or https://"),
        ({**M, "resources": {"gpus": 2}}, "the server uses one device"),
        ({**M, "resources": {"gpuResource": "gpu"}}, "extended resource name"),
        ({**M, "rollout": {"strategy": "yolo"}}, "strategy must be one of surge, frugal"),
        ({**M, "replicas": -1}, "spec.replicas must be between 0 and 1000"),
        ({**M, "pod": "big"}, "spec.pod must be an object"),
        ({**M, "pod": {"env": [{"name": "A"}, {"name": "A", "value": "2"}]}},
         "spec.pod.env: name 'A' appears twice"),
        ({**M, "pod": {"env": [{"value": "x"}]}}, r"spec.pod.env\[0\].name is required"),
        ({**M, "pod": {"volumeMounts": [{"name": "v"}]}}, "mountPath is required"),
        ({**M, "pod": {"volumeMounts": [{"name": "v", "mountPath": "/a"},
                                        {"name": "w", "mountPath": "/a"}]}},
         "mountPath '/a' appears twice"),
        ({**M, "pod": {"imagePullSecrets": ["regcred"]}}, "must be a list of objects"),
        ({**M, "pod": {"serviceAccountName": "Bad Name"}}, "lowercase DNS name"),
        ({**M, "pod": {"affinity": []}}, "spec.pod.affinity must be an object"),
    ],
)
def test_invalid_new_fields_say_what_to_fix(raw: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec(raw, default_image=IMAGE)


def test_keda_on_cpu_needs_no_prometheus() -> None:
    spec = parse_spec({**M, "autoscaling": {"mode": "keda", "metric": "cpu"}},
                      default_image=IMAGE)
    assert spec.autoscaling.mode == "keda" and spec.autoscaling.prometheus_url is None


def test_names_with_a_cache_leave_room_for_the_fetch_job() -> None:
    cached = parse_spec({"model": {"variant": "m", "cache": {}}}, default_image=IMAGE)
    plain = parse_spec(M, default_image=IMAGE)
    check_name("a" * 51, cached)
    check_name("a" * 57, plain)
    with pytest.raises(SpecError, match=r"with spec\.model\.cache names may have at most 51"):
        check_name("a" * 52, cached)
