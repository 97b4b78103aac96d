"""The VoiceService spec as typed, checked values.

A real API server defaults and validates with the CRD schema; this module repeats the
defaults (so objects that skipped defaulting behave the same; the serving ones come from
voicefleet/defaults.py, as the server's flags do) and checks what the schema cannot:
quantities that parse to zero, cross-field rules, names too long for children.
Every problem is a `SpecError` whose message goes to the `Degraded` condition verbatim.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from voicefleet import defaults
from voicefleet_operator import naming
from voicefleet_operator.fields import (
    SpecError,
    choice,
    integer,
    object_list,
    parse_quantity,
    parse_resource_quantity,
    section,
    string,
    string_map,
)
from voicefleet_operator.podsettings import PodSettings, parse_pod

__all__ = [
    "ServiceSpec",
    "SpecError",
    "check_name",
    "parse_quantity",
    "parse_resource_quantity",
    "parse_spec",
]

DTYPES = ("auto", "float16", "bfloat16", "float32")
METRICS = ("queuedAudioSeconds", "cpu")
DEFAULT_TARGETS = {"queuedAudioSeconds": "30", "cpu": "70"}
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
# hpa: the operator's HorizontalPodAutoscaler; keda: a KEDA ScaledObject on the same signal;
# none: no autoscaler, spec.replicas (what `kubectl scale vsvc/NAME` sets).
AUTOSCALING_MODES = ("hpa", "keda", "none")
# surge: one extra pod first (never below capacity, needs a spare GPU); frugal: one pod
# down first (never needs a spare GPU).
ROLLOUT_STRATEGIES = ("surge", "frugal")
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
# The server drives one device; more GPUs per pod would sit idle.
MAX_GPUS = 1
ACCESS_MODES = ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod")
DEFAULT_CACHE_SIZE = "10Gi"
# Every server pod mounts the cache, on whichever node it runs.
DEFAULT_ACCESS_MODES = ("ReadWriteMany",)
_EXTENDED_RESOURCE = re.compile(
    r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


@dataclass(frozen=True)
class ModelCacheSpec:
    """A volume the model is fetched into once; server pods mount it read-only."""

    size: str
    storage_class: str | None
    access_modes: tuple[str, ...]
    existing_claim: str | None


@dataclass(frozen=True)
class ModelSpec:
    variant: str
    revision: str | None
    dtype: str
    cache: ModelCacheSpec | None = None


@dataclass(frozen=True)
class BatchingSpec:
    window_ms: int
    max_batch_size: int
    max_queue: int


@dataclass(frozen=True)
class VramSpec:
    budget: str | None
    watermark_percent: int
    sustain_seconds: int


@dataclass(frozen=True)
class AutoscalingSpec:
    min_replicas: int
    max_replicas: int
    metric: str
    target: str
    mode: str = "hpa"
    prometheus_url: str | None = None


@dataclass(frozen=True)
class RedisSpec:
    enabled: bool
    url: str | None

    @property
    def managed(self) -> bool:
        """The operator runs a private Redis only when Redis is wanted and none is given."""
        return self.enabled and not self.url


@dataclass(frozen=True)
class AuthSpec:
    """Where the server's API key lives: a key of a Secret in the service's namespace."""

    secret: str
    key: str


@dataclass(frozen=True)
class S3StorageSpec:
    """Long-form job audio in S3-compatible storage (`spec.storage.s3`). Endpoint and region
    reach the pods as boto3's standard variables; keys, when given, as a mounted Secret."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    credentials_secret: str | None = None
    access_key_id_key: str = "AWS_ACCESS_KEY_ID"
    secret_access_key_key: str = "AWS_SECRET_ACCESS_KEY"

    @property
    def url(self) -> str:
        """The server's `--job-storage` value."""
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


@dataclass(frozen=True)
class ResourcesSpec:
    gpus: int
    requests: Mapping[str, str]
    limits: Mapping[str, str]
    gpu_resource: str = DEFAULT_GPU_RESOURCE


@dataclass(frozen=True)
class ServiceSpec:
    model: ModelSpec
    batching: BatchingSpec
    vram: VramSpec
    autoscaling: AutoscalingSpec
    redis: RedisSpec
    resources: ResourcesSpec
    image: str
    image_pull_policy: str | None = None
    drain_seconds: int = defaults.DRAIN_SECONDS
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Mapping[str, Any]] = ()
    auth: AuthSpec | None = None
    storage: S3StorageSpec | None = None
    # Server pods when autoscaling.mode is none (an autoscaler owns the count otherwise).
    replicas: int = 1
    rollout: str = "surge"
    pod: PodSettings = field(default_factory=PodSettings)


def _cache(model: Mapping[str, Any]) -> ModelCacheSpec | None:
    if model.get("cache") is None:
        return None
    cache = section(model, "cache", "spec.model")
    where = "spec.model.cache"
    size = cache.get("size")
    size = DEFAULT_CACHE_SIZE if size in (None, "") else str(size)
    if parse_quantity(size, f"{where}.size") < 2**20:
        raise SpecError(f"{where}.size must be at least 1Mi, got {size!r}")
    modes = cache.get("accessModes") or list(DEFAULT_ACCESS_MODES)
    if not isinstance(modes, list) or not all(m in ACCESS_MODES for m in modes):
        raise SpecError(f"{where}.accessModes must list some of {', '.join(ACCESS_MODES)};"
                        f" got {modes!r}")
    claim = string(cache, "existingClaim", where)
    if claim is not None and (len(claim) > 253 or not _DNS_SUBDOMAIN.match(claim)):
        raise SpecError(f"{where}.existingClaim must name a PersistentVolumeClaim, got {claim!r}")
    return ModelCacheSpec(
        size=size,
        storage_class=string(cache, "storageClassName", where),
        access_modes=tuple(dict.fromkeys(modes)),
        existing_claim=claim,
    )


def _model(raw: Mapping[str, Any]) -> ModelSpec:
    model = section(raw, "model")
    variant = string(model, "variant", "spec.model")
    if variant is None:
        raise SpecError("spec.model.variant is required (a Hugging Face id or a path)")
    return ModelSpec(
        variant=variant,
        revision=string(model, "revision", "spec.model"),
        dtype=choice(model, "dtype", "spec.model", DTYPES),
        cache=_cache(model),
    )


def _vram(raw: Mapping[str, Any]) -> VramSpec:
    vram = section(raw, "vram")
    budget = vram.get("budget")
    if budget is not None and budget != "":
        # Checked here, passed on as written: the server parses it with the same parser.
        if parse_quantity(budget, "spec.vram.budget") < 2**20:
            raise SpecError(f"spec.vram.budget must be at least 1Mi, got {budget!r}")
        budget = str(budget)
    else:
        budget = None
    return VramSpec(
        budget=budget,
        watermark_percent=integer(
            vram, "watermarkPercent", "spec.vram", defaults.VRAM_WATERMARK_PERCENT, 50, 99
        ),
        sustain_seconds=integer(vram, "sustainSeconds", "spec.vram", 60, 0, 86400),
    )


def _autoscaling(raw: Mapping[str, Any]) -> AutoscalingSpec:
    scaling = section(raw, "autoscaling")
    where = "spec.autoscaling"
    low = integer(scaling, "minReplicas", where, 1, 1, 1000)
    high = integer(scaling, "maxReplicas", where, 4, 1, 1000)
    if low > high:
        raise SpecError(f"{where}.minReplicas ({low}) must not exceed maxReplicas ({high})")
    metric = choice(scaling, "metric", where, METRICS)
    raw_target = scaling.get("target")
    target = DEFAULT_TARGETS[metric] if raw_target in (None, "") else str(raw_target).strip()
    if metric == "cpu":
        percent = target.removesuffix("%")
        if not percent.isdigit() or not 1 <= int(percent) <= 100:
            raise SpecError(
                f"{where}.target must be a CPU percentage 1-100 for metric cpu,"
                f" got {raw_target!r}"
            )
        target = percent
    elif parse_quantity(target, f"{where}.target") <= 0:
        raise SpecError(f"{where}.target must be above zero audio-seconds per pod")
    mode = choice(scaling, "mode", where, AUTOSCALING_MODES)
    url = string(scaling, "prometheusUrl", where)
    if url is not None and not url.startswith(("http://", "https://")):
        raise SpecError(f"{where}.prometheusUrl must start with http:// or https://, got {url!r}")
    if mode == "keda" and metric == "queuedAudioSeconds" and url is None:
        raise SpecError(
            f"{where}.prometheusUrl is required with mode keda and metric queuedAudioSeconds:"
            " KEDA reads the queued audio-seconds from that Prometheus"
        )
    return AutoscalingSpec(min_replicas=low, max_replicas=high, metric=metric, target=target,
                           mode=mode, prometheus_url=url)


def _redis(raw: Mapping[str, Any]) -> RedisSpec:
    redis = section(raw, "redis")
    enabled = redis.get("enabled", True)
    if not isinstance(enabled, bool):
        raise SpecError(f"spec.redis.enabled must be true or false, got {enabled!r}")
    url = string(redis, "url", "spec.redis")
    if url is not None and not url.startswith(("redis://", "rediss://")):
        raise SpecError(f"spec.redis.url must start with redis:// or rediss://, got {url!r}")
    return RedisSpec(enabled=enabled, url=url if enabled else None)


_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
DEFAULT_API_KEY_KEY = "api-key"


def _auth(raw: Mapping[str, Any]) -> AuthSpec | None:
    auth = section(raw, "auth")
    ref = auth.get("apiKeySecretRef")
    if ref is None:
        return None
    if not isinstance(ref, Mapping):
        raise SpecError(f"spec.auth.apiKeySecretRef must be an object, got {ref!r}")
    name = string(ref, "name", "spec.auth.apiKeySecretRef")
    if name is None or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        raise SpecError(
            f"spec.auth.apiKeySecretRef.name must name a Secret (a DNS subdomain), got {name!r}"
        )
    key = string(ref, "key", "spec.auth.apiKeySecretRef") or DEFAULT_API_KEY_KEY
    if len(key) > 253 or not _SECRET_KEY.match(key):
        raise SpecError(
            f"spec.auth.apiKeySecretRef.key may hold only letters, digits, '-', '_' and '.',"
            f" got {key!r}"
        )
    return AuthSpec(secret=name, key=key)


# S3's bucket naming rules (3-63 characters, lower case, digits, dots and hyphens).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def _secret_key(ref: Mapping[str, Any], field: str, where: str, default: str) -> str:
    key = string(ref, field, where) or default
    if len(key) > 253 or not _SECRET_KEY.match(key):
        raise SpecError(
            f"{where}.{field} may hold only letters, digits, '-', '_' and '.', got {key!r}"
        )
    return key


def _storage(raw: Mapping[str, Any]) -> S3StorageSpec | None:
    s3 = section(raw, "storage").get("s3")
    if s3 is None:
        return None
    where = "spec.storage.s3"
    if not isinstance(s3, Mapping):
        raise SpecError(f"{where} must be an object, got {s3!r}")
    bucket = string(s3, "bucket", where)
    if bucket is None or not _BUCKET.match(bucket):
        raise SpecError(f"{where}.bucket must be an S3 bucket name, got {bucket!r}")
    prefix = (string(s3, "prefix", where) or "").strip("/")
    if len(prefix) > 512 or any(ord(c) < 32 for c in prefix):
        raise SpecError(f"{where}.prefix must be at most 512 printable characters")
    endpoint = string(s3, "endpointUrl", where)
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise SpecError(
            f"{where}.endpointUrl must start with http:// or https://, got {endpoint!r}"
        )
    region = string(s3, "region", where)
    if region is not None and not _REGION.match(region):
        raise SpecError(f"{where}.region must be a region name such as eu-west-1, got {region!r}")
    ref = s3.get("credentialsSecretRef")
    if ref is None:
        return S3StorageSpec(bucket, prefix, endpoint, region)
    ref_where = f"{where}.credentialsSecretRef"
    if not isinstance(ref, Mapping):
        raise SpecError(f"{ref_where} must be an object, got {ref!r}")
    name = string(ref, "name", ref_where)
    if name is None or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        raise SpecError(f"{ref_where}.name must name a Secret (a DNS subdomain), got {name!r}")
    return S3StorageSpec(
        bucket,
        prefix,
        endpoint,
        region,
        credentials_secret=name,
        access_key_id_key=_secret_key(ref, "accessKeyIdKey", ref_where, "AWS_ACCESS_KEY_ID"),
        secret_access_key_key=_secret_key(
            ref, "secretAccessKeyKey", ref_where, "AWS_SECRET_ACCESS_KEY"
        ),
    )


def _resources(raw: Mapping[str, Any]) -> ResourcesSpec:
    resources = section(raw, "resources")
    requests = string_map(resources.get("requests"), "spec.resources.requests")
    limits = string_map(resources.get("limits"), "spec.resources.limits")
    for where, table in (("requests", requests), ("limits", limits)):
        for key, value in table.items():
            parse_resource_quantity(value, f"spec.resources.{where}.{key}")
    gpu_resource = string(resources, "gpuResource", "spec.resources") or DEFAULT_GPU_RESOURCE
    if not _EXTENDED_RESOURCE.match(gpu_resource) or len(gpu_resource) > 253:
        raise SpecError(
            "spec.resources.gpuResource must be an extended resource name such as"
            f" nvidia.com/gpu or nvidia.com/mig-1g.10gb, got {gpu_resource!r}"
        )
    gpus = resources.get("gpus", 1)
    if isinstance(gpus, int) and not isinstance(gpus, bool) and gpus > MAX_GPUS:
        raise SpecError(
            f"spec.resources.gpus is {gpus}, but the server uses one device: give each pod"
            " one GPU (or a slice of one, see gpuResource) and scale out with replicas"
        )
    return ResourcesSpec(
        gpus=integer(resources, "gpus", "spec.resources", 1, 0, MAX_GPUS),
        requests=requests,
        limits=limits,
        gpu_resource=gpu_resource,
    )


def _rollout(raw: Mapping[str, Any]) -> str:
    return choice(section(raw, "rollout"), "strategy", "spec.rollout", ROLLOUT_STRATEGIES)


def check_name(name: str, spec: ServiceSpec | None = None) -> None:
    """Children are named after the VoiceService: Service names allow 63 characters, and
    with a model cache the fetch Job's name labels its pods (63 characters too)."""
    if len(name) > naming.MAX_NAME_LENGTH:
        raise SpecError(
            f"metadata.name is {len(name)} characters; VoiceService names may have at most"
            f" {naming.MAX_NAME_LENGTH} so that child Services stay valid DNS labels"
        )
    if spec is not None and spec.model.cache is not None and (
        len(name) > naming.MAX_NAME_LENGTH_WITH_CACHE
    ):
        raise SpecError(
            f"metadata.name is {len(name)} characters; with spec.model.cache names may have"
            f" at most {naming.MAX_NAME_LENGTH_WITH_CACHE} (the Job"
            f" {naming.model_fetch_name(name)!r} labels its pods with its name)"
        )


def parse_spec(raw: Mapping[str, Any], *, default_image: str) -> ServiceSpec:
    """Turn a VoiceService `.spec` into checked values, or raise `SpecError`."""
    if not isinstance(raw, Mapping):
        raise SpecError("spec must be an object")
    image = string(raw, "image", "spec") or default_image
    pull = string(raw, "imagePullPolicy", "spec")
    if pull is not None and pull not in PULL_POLICIES:
        raise SpecError(f"spec.imagePullPolicy must be one of {', '.join(PULL_POLICIES)}")
    batching = section(raw, "batching")
    return ServiceSpec(
        model=_model(raw),
        batching=BatchingSpec(
            window_ms=integer(
                batching, "windowMs", "spec.batching", defaults.BATCH_WINDOW_MS, 1, 10000
            ),
            max_batch_size=integer(
                batching, "maxBatchSize", "spec.batching", defaults.MAX_BATCH_SIZE, 1, 1024
            ),
            max_queue=integer(
                batching, "maxQueue", "spec.batching", defaults.MAX_QUEUE, 1, 1_000_000
            ),
        ),
        vram=_vram(raw),
        autoscaling=_autoscaling(raw),
        redis=_redis(raw),
        resources=_resources(raw),
        image=image,
        image_pull_policy=pull,
        drain_seconds=integer(raw, "drainSeconds", "spec", defaults.DRAIN_SECONDS, 0, 3600),
        node_selector=string_map(raw.get("nodeSelector"), "spec.nodeSelector"),
        tolerations=object_list(raw.get("tolerations"), "spec.tolerations"),
        auth=_auth(raw),
        storage=_storage(raw),
        replicas=integer(raw, "replicas", "spec", 1, 0, 1000),
        rollout=_rollout(raw),
        pod=parse_pod(raw),
    )
