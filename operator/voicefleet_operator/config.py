"""Operator-wide settings that are not part of any VoiceService: default images and the
reconcile and memory-guard timings. Read once from `VOICEFLEET_*` environment variables at
start-up so the Helm chart (or a test) can tune them without code."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_SERVER_IMAGE = "ghcr.io/voicefleet/voicefleet-server:0.1.0"
DEFAULT_REDIS_IMAGE = "redis:7.4-alpine"


@dataclass(frozen=True)
class OperatorConfig:
    server_image: str = DEFAULT_SERVER_IMAGE
    redis_image: str = DEFAULT_REDIS_IMAGE
    # How often every VoiceService is re-converged (recreate deleted children, revert
    # hand edits, refresh status) on top of the create/update events.
    reconcile_interval: float = 15.0
    # How often the memory guard reads every server pod's /metrics.
    guard_interval: float = 5.0
    # Least time between two guard restarts in one VoiceService: a restarted pod needs
    # minutes to load its model, and restarting its neighbours meanwhile cuts capacity.
    guard_cooldown: float = 300.0
    # A /metrics read slower than this counts as unreachable (and never triggers a restart).
    guard_timeout: float = 2.0
    # After a reconcile whose API calls kept failing (each call already retried a few times),
    # kopf re-runs the handler after base, 2x base, 4x base ... seconds, at most max.
    retry_base_delay: float = 5.0
    retry_max_delay: float = 120.0
    # kopf lists namespaces and CRDs cluster-wide to follow them appearing. Turn it off where
    # the operator's RBAC is namespace-scoped (or against an API emulator without them).
    cluster_scanning: bool = True
    # Port of the operator's own Prometheus /metrics (0: not served).
    metrics_port: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env
        default = cls()

        def number(key: str, fallback: float) -> float:
            raw = env.get(key)
            if raw is None or raw == "":
                return fallback
            value = float(raw)
            if value <= 0:
                raise ValueError(f"{key} must be positive, got {raw!r}")
            return value

        def flag(key: str, fallback: bool) -> bool:
            raw = env.get(key, "").strip().lower()
            if raw == "":
                return fallback
            if raw in {"1", "true", "yes", "on"}:
                return True
            if raw in {"0", "false", "no", "off"}:
                return False
            raise ValueError(f"{key} must be true or false, got {raw!r}")

        return cls(
            server_image=env.get("VOICEFLEET_SERVER_IMAGE") or default.server_image,
            redis_image=env.get("VOICEFLEET_REDIS_IMAGE") or default.redis_image,
            reconcile_interval=number(
                "VOICEFLEET_RECONCILE_INTERVAL_SECONDS", default.reconcile_interval
            ),
            guard_interval=number("VOICEFLEET_GUARD_INTERVAL_SECONDS", default.guard_interval),
            guard_cooldown=number("VOICEFLEET_GUARD_COOLDOWN_SECONDS", default.guard_cooldown),
            guard_timeout=number("VOICEFLEET_GUARD_TIMEOUT_SECONDS", default.guard_timeout),
            retry_base_delay=number("VOICEFLEET_RETRY_BASE_SECONDS", default.retry_base_delay),
            retry_max_delay=number("VOICEFLEET_RETRY_MAX_SECONDS", default.retry_max_delay),
            cluster_scanning=flag("VOICEFLEET_CLUSTER_SCANNING", default.cluster_scanning),
            metrics_port=int(env.get("VOICEFLEET_METRICS_PORT") or default.metrics_port),
        )
