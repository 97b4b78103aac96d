"""The VoiceService spec as typed, checked values.

A real API server defaults and validates with the CRD schema; this module repeats the
defaults (so objects that skipped defaulting behave the same) and checks what the schema
cannot: quantities that parse to zero, cross-field rules, names too long for children.
Every problem is a `SpecError` whose message goes to the `Degraded` condition verbatim.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from voicefleet import defaults, quantity
from voicefleet_operator import naming

DTYPES = ("auto", "float16", "bfloat16", "float32")
METRICS = ("queuedAudioSeconds", "cpu")
DEFAULT_TARGETS = {"queuedAudioSeconds": "30", "cpu": "70"}
PULL_POLICIES = ("Always", "IfNotPresent", "Never")



class SpecError(ValueError):
    """The spec cannot be turned into children; the message tells the user what to fix."""


def parse_quantity(value: object, what: str) -> Decimal:
    """A non-negative Kubernetes quantity (`8Gi`, `500M`, `30`) as a number, read by the
    parser the server shares (voicefleet.quantity); `what` names the field in the error."""
    try:
        return quantity.parse_quantity(value)
    except quantity.QuantityError as exc:
        raise SpecError(f"{what} must be a quantity such as 8Gi: {exc}") from exc


def parse_resource_quantity(value: object, what: str) -> Decimal:
    """A resource request or limit: a quantity, or CPU millicores (`500m`), which only
    resources take (the shared parser is for memory sizes, where a milli-byte means nothing)."""
    text = str(value).strip() if isinstance(value, str) else value
    if isinstance(text, str) and text.endswith("m") and text[:-1] and text[-2].isdigit():
        return parse_quantity(text[:-1], what) / 1000
    return parse_quantity(value, what)


@dataclass(frozen=True)
class ModelSpec:
    variant: str
    revision: str | None
    dtype: str


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
class ResourcesSpec:
    gpus: int
    requests: Mapping[str, str]
    limits: Mapping[str, str]


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


def _section(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(f"spec.{key} must be an object, got {value!r}")
    return value


def _int(section: Mapping[str, Any], key: str, where: str, default: int, lo: int, hi: int) -> int:
    value = section.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{where}.{key} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise SpecError(f"{where}.{key} must be between {lo} and {hi}, got {value}")
    return value


def _str(section: Mapping[str, Any], key: str, where: str) -> str | None:
    value = section.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise SpecError(f"{where}.{key} must be a string, got {value!r}")
    return value


def _choice(section: Mapping[str, Any], key: str, where: str, choices: Sequence[str]) -> str:
    value = section.get(key) or choices[0]
    if value not in choices:
        raise SpecError(f"{where}.{key} must be one of {', '.join(choices)}; got {value!r}")
    return str(value)


def _string_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{where} must be an object, got {value!r}")
    return {str(k): str(v) for k, v in value.items()}


def _model(raw: Mapping[str, Any]) -> ModelSpec:
    model = _section(raw, "model")
    variant = _str(model, "variant", "spec.model")
    if variant is None:
        raise SpecError("spec.model.variant is required (a Hugging Face id or a path)")
    return ModelSpec(
        variant=variant,
        revision=_str(model, "revision", "spec.model"),
        dtype=_choice(model, "dtype", "spec.model", DTYPES),
    )


def _vram(raw: Mapping[str, Any]) -> VramSpec:
    vram = _section(raw, "vram")
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
        watermark_percent=_int(
            vram, "watermarkPercent", "spec.vram", defaults.VRAM_WATERMARK_PERCENT, 50, 99
        ),
        sustain_seconds=_int(vram, "sustainSeconds", "spec.vram", 60, 0, 86400),
    )


def _autoscaling(raw: Mapping[str, Any]) -> AutoscalingSpec:
    scaling = _section(raw, "autoscaling")
    low = _int(scaling, "minReplicas", "spec.autoscaling", 1, 1, 1000)
    high = _int(scaling, "maxReplicas", "spec.autoscaling", 4, 1, 1000)
    if low > high:
        raise SpecError(
            f"spec.autoscaling.minReplicas ({low}) must not exceed maxReplicas ({high})"
        )
    metric = _choice(scaling, "metric", "spec.autoscaling", METRICS)
    raw_target = scaling.get("target")
    target = DEFAULT_TARGETS[metric] if raw_target in (None, "") else str(raw_target).strip()
    if metric == "cpu":
        percent = target.removesuffix("%")
        if not percent.isdigit() or not 1 <= int(percent) <= 100:
            raise SpecError(
                f"spec.autoscaling.target must be a CPU percentage 1-100 for metric cpu,"
                f" got {raw_target!r}"
            )
        target = percent
    elif parse_quantity(target, "spec.autoscaling.target") <= 0:
        raise SpecError("spec.autoscaling.target must be above zero audio-seconds per pod")
    return AutoscalingSpec(min_replicas=low, max_replicas=high, metric=metric, target=target)


def _redis(raw: Mapping[str, Any]) -> RedisSpec:
    redis = _section(raw, "redis")
    enabled = redis.get("enabled", True)
    if not isinstance(enabled, bool):
        raise SpecError(f"spec.redis.enabled must be true or false, got {enabled!r}")
    url = _str(redis, "url", "spec.redis")
    if url is not None and not url.startswith(("redis://", "rediss://")):
        raise SpecError(f"spec.redis.url must start with redis:// or rediss://, got {url!r}")
    return RedisSpec(enabled=enabled, url=url if enabled else None)


_SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
DEFAULT_API_KEY_KEY = "api-key"


def _auth(raw: Mapping[str, Any]) -> AuthSpec | None:
    auth = _section(raw, "auth")
    ref = auth.get("apiKeySecretRef")
    if ref is None:
        return None
    if not isinstance(ref, Mapping):
        raise SpecError(f"spec.auth.apiKeySecretRef must be an object, got {ref!r}")
    name = _str(ref, "name", "spec.auth.apiKeySecretRef")
    if name is None or len(name) > 253 or not _SECRET_NAME.match(name):
        raise SpecError(
            f"spec.auth.apiKeySecretRef.name must name a Secret (a DNS subdomain), got {name!r}"
        )
    key = _str(ref, "key", "spec.auth.apiKeySecretRef") or DEFAULT_API_KEY_KEY
    if len(key) > 253 or not _SECRET_KEY.match(key):
        raise SpecError(
            f"spec.auth.apiKeySecretRef.key may hold only letters, digits, '-', '_' and '.',"
            f" got {key!r}"
        )
    return AuthSpec(secret=name, key=key)


def _resources(raw: Mapping[str, Any]) -> ResourcesSpec:
    resources = _section(raw, "resources")
    requests = _string_map(resources.get("requests"), "spec.resources.requests")
    limits = _string_map(resources.get("limits"), "spec.resources.limits")
    for where, table in (("requests", requests), ("limits", limits)):
        for key, value in table.items():
            parse_resource_quantity(value, f"spec.resources.{where}.{key}")
    return ResourcesSpec(
        gpus=_int(resources, "gpus", "spec.resources", 1, 0, 16),
        requests=requests,
        limits=limits,
    )


def _tolerations(raw: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    value = raw.get("tolerations") or []
    if not isinstance(value, list) or not all(isinstance(t, Mapping) for t in value):
        raise SpecError("spec.tolerations must be a list of toleration objects")
    return [dict(t) for t in value]


def check_name(name: str) -> None:
    """Children are named after the VoiceService; Service names allow 63 characters."""
    if len(name) > naming.MAX_NAME_LENGTH:
        raise SpecError(
            f"metadata.name is {len(name)} characters; VoiceService names may have at most"
            f" {naming.MAX_NAME_LENGTH} so that child Services stay valid DNS labels"
        )


def parse_spec(raw: Mapping[str, Any], *, default_image: str) -> ServiceSpec:
    """Turn a VoiceService `.spec` into checked values, or raise `SpecError`."""
    if not isinstance(raw, Mapping):
        raise SpecError("spec must be an object")
    image = _str(raw, "image", "spec") or default_image
    pull = _str(raw, "imagePullPolicy", "spec")
    if pull is not None and pull not in PULL_POLICIES:
        raise SpecError(f"spec.imagePullPolicy must be one of {', '.join(PULL_POLICIES)}")
    batching = _section(raw, "batching")
    return ServiceSpec(
        model=_model(raw),
        batching=BatchingSpec(
            window_ms=_int(
                batching, "windowMs", "spec.batching", defaults.BATCH_WINDOW_MS, 1, 10000
            ),
            max_batch_size=_int(
                batching, "maxBatchSize", "spec.batching", defaults.MAX_BATCH_SIZE, 1, 1024
            ),
            max_queue=_int(
                batching, "maxQueue", "spec.batching", defaults.MAX_QUEUE, 1, 1_000_000
            ),
        ),
        vram=_vram(raw),
        autoscaling=_autoscaling(raw),
        redis=_redis(raw),
        resources=_resources(raw),
        image=image,
        image_pull_policy=pull,
        drain_seconds=_int(raw, "drainSeconds", "spec", defaults.DRAIN_SECONDS, 0, 3600),
        node_selector=_string_map(raw.get("nodeSelector"), "spec.nodeSelector"),
        tolerations=_tolerations(raw),
        auth=_auth(raw),
    )
