"""The operator's own /metrics, scraped over HTTP while it runs against kmock's emulator:
replica figures per VoiceService, a memory-guard restart counted, series gone on delete."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import kmock as km
import pytest
from operator_helpers import NAMESPACE, TEST_CONFIG, eventually, voiceservice
from prometheus_client.parser import text_string_to_metric_families
from test_operator_guard import (  # noqa: F401  (fake_pods is a fixture)
    PODS_PATH,
    VS_PATH,
    Api,
    FakePod,
    create_pods,
    evictions,
    fake_pods,
)
from voicefleet_operator.config import OperatorConfig
from voicefleet_operator.metrics import service_figures

pytestmark = pytest.mark.timeout(30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


PORT = free_port()


@pytest.fixture()
def operator_config() -> OperatorConfig:
    return OperatorConfig(**{**TEST_CONFIG.__dict__, "metrics_port": PORT})


def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{PORT}/metrics", timeout=2).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("voicefleet_operator_")
    }


SERVICE = (("namespace", NAMESPACE), ("voicefleet_dev_service", "tts"))


async def test_replicas_and_guard_restarts_are_exported(
    operator: km.KubernetesEmulator,
    api: Api,
    fake_pods: tuple[int, dict[str, FakePod]],  # noqa: F811
) -> None:
    port, pods = fake_pods

    def evict(request: km.Request) -> dict[str, Any]:
        name = str(request.url.path).split("/")[-2]
        operator.objects["v1/pods", NAMESPACE, name].delete()
        return {"apiVersion": "v1", "kind": "Status", "status": "Success", "code": 201}

    operator[f"post {PODS_PATH}/tts-hot/eviction"] << evict
    await create_pods(api, port, pods)
    await api(
        "POST",
        VS_PATH,
        voiceservice(
            vram={"watermarkPercent": 90, "sustainSeconds": 1},
            autoscaling={"minReplicas": 1, "maxReplicas": 5},
        ),
    )
    seen = await eventually(
        lambda: (
            scrape().get(("voicefleet_operator_guard_restarts_total", SERVICE)) == 1 and scrape()
        ),
        timeout=15,
    )
    assert evictions(operator) == ["tts-hot"]
    assert seen[("voicefleet_operator_service_max_replicas", SERVICE)] == 5
    assert ("voicefleet_operator_service_replicas", SERVICE) in seen

    await api("DELETE", f"{VS_PATH}/tts")
    await eventually(lambda: ("voicefleet_operator_service_max_replicas", SERVICE) not in scrape())


def test_service_figures() -> None:
    deployment = {"spec": {"replicas": 3}, "status": {"replicas": 3, "readyReplicas": 2}}
    assert service_figures({"autoscaling": {"maxReplicas": 4}}, deployment) == {
        "replicas": 3,
        "ready_replicas": 2,
        "max_replicas": 4,
    }
    # Without an autoscaler the fleet is what spec.replicas says.
    assert service_figures({"autoscaling": {"mode": "none"}, "replicas": 2}, None) == {
        "replicas": 0,
        "ready_replicas": 0,
        "max_replicas": 2,
    }
