"""Operator-wide settings from VOICEFLEET_* environment variables."""

from __future__ import annotations

import pytest
from voicefleet_operator.config import DEFAULT_SERVER_IMAGE, OperatorConfig


def test_defaults_without_environment() -> None:
    config = OperatorConfig.from_env({})
    assert config.server_image == DEFAULT_SERVER_IMAGE
    assert config.redis_image.startswith("redis:")
    assert config.cluster_scanning is True
    assert config.guard_interval > 0 and config.guard_cooldown > config.guard_interval


def test_environment_overrides() -> None:
    config = OperatorConfig.from_env(
        {
            "VOICEFLEET_SERVER_IMAGE": "registry.test/server:2",
            "VOICEFLEET_REDIS_IMAGE": "redis:7.2",
            "VOICEFLEET_RECONCILE_INTERVAL_SECONDS": "30",
            "VOICEFLEET_GUARD_INTERVAL_SECONDS": "2.5",
            "VOICEFLEET_GUARD_COOLDOWN_SECONDS": "600",
            "VOICEFLEET_GUARD_TIMEOUT_SECONDS": "1",
            "VOICEFLEET_CLUSTER_SCANNING": "off",
            "VOICEFLEET_RETRY_BASE_SECONDS": "2",
            "VOICEFLEET_RETRY_MAX_SECONDS": "30",
        }
    )
    assert config == OperatorConfig(
        server_image="registry.test/server:2",
        redis_image="redis:7.2",
        reconcile_interval=30,
        guard_interval=2.5,
        guard_cooldown=600,
        guard_timeout=1,
        cluster_scanning=False,
        retry_base_delay=2,
        retry_max_delay=30,
    )


@pytest.mark.parametrize(
    "env",
    [{"VOICEFLEET_GUARD_INTERVAL_SECONDS": "0"}, {"VOICEFLEET_CLUSTER_SCANNING": "maybe"}],
)
def test_bad_values_fail_at_start(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="VOICEFLEET_"):
        OperatorConfig.from_env(env)
