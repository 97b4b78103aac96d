"""A VoiceService on a real cluster, from `helm install` to garbage collection.

The tests run in file order and share one VoiceService: install the chart (fixture), apply a
VoiceService on the CPU tiny-model image, wait for Ready, check its children, call the speech
API through a port-forward, then delete it and watch Kubernetes garbage-collect the children.
"""

from __future__ import annotations

import io
import json
import wave
from typing import Any

import httpx
import pytest
from e2e_support import SERVER_IMAGE, WITH_REDIS, Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

NAME = "tiny"
CHILD_KINDS = ["deployment", "service", "horizontalpodautoscaler", "poddisruptionbudget"]


def voice_service(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "voicefleet.dev/v1alpha1",
        "kind": "VoiceService",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            # baked into the server-cpu image by `voicefleet make-tiny-model`
            "model": {"variant": "/opt/models/tiny-vits", "dtype": "float32"},
            "batching": {"windowMs": 10, "maxBatchSize": 4, "maxQueue": 64},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 2, "metric": "cpu", "target": 80},
            "redis": {"enabled": WITH_REDIS},
            "image": SERVER_IMAGE,
            "imagePullPolicy": "IfNotPresent",
            "drainSeconds": 5,
            "resources": {"gpus": 0, "requests": {"cpu": "250m", "memory": "512Mi"},
                          "limits": {"memory": "2Gi"}},
        },
    }


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return {}


@pytest.fixture(scope="module")
def ready_service(cluster: Cluster, namespace: str, release: str) -> dict[str, Any]:
    cluster.apply(voice_service(namespace))

    def is_ready() -> dict[str, Any] | None:
        obj = cluster.get("voiceservice", NAME, namespace)
        return obj if condition(obj, "Ready").get("status") == "True" else None

    try:
        return cluster.wait_for("VoiceService Ready", is_ready, timeout=600)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{cluster.describe(namespace)}") from None


def test_operator_runs_hardened(cluster: Cluster, namespace: str, release: str) -> None:
    deploys = cluster.run("get", "deploy", "-n", namespace, "-l",
                          "app.kubernetes.io/component=operator", "-o", "json").stdout
    (deploy,) = json.loads(deploys)["items"]
    assert deploy["status"].get("availableReplicas") == 1
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert f"--namespace={namespace}" in container["args"]


def test_voice_service_becomes_ready(ready_service: dict[str, Any], namespace: str) -> None:
    status = ready_service["status"]
    assert status["observedGeneration"] == ready_service["metadata"]["generation"]
    assert status["readyReplicas"] >= 1
    assert status["endpoint"] == f"http://{NAME}.{namespace}.svc:8000"


def test_children_are_owned_by_the_voice_service(
    cluster: Cluster, namespace: str, ready_service: dict[str, Any]
) -> None:
    uid = ready_service["metadata"]["uid"]
    for kind in CHILD_KINDS:
        child = cluster.get(kind, NAME, namespace)
        assert child is not None, f"{kind}/{NAME} missing"
        owners = child["metadata"].get("ownerReferences") or []
        assert any(o["uid"] == uid and o["kind"] == "VoiceService" for o in owners), kind
        assert child["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "voicefleet"
        assert child["metadata"]["labels"]["voicefleet.dev/service"] == NAME
    hpa = cluster.get("horizontalpodautoscaler", NAME, namespace)
    assert hpa is not None
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 2)


def test_speech_through_a_port_forward(
    cluster: Cluster, namespace: str, ready_service: dict[str, Any]
) -> None:
    with cluster.port_forward(f"service/{NAME}", namespace, 8000) as port, httpx.Client(
        base_url=f"http://127.0.0.1:{port}", timeout=60
    ) as client:
        assert client.get("/readyz").status_code == 200
        model = client.get("/v1/models").json()["data"][0]["id"]
        voice = client.get("/v1/audio/voices").json()["data"][0]["id"]
        response = client.post("/v1/audio/speech", json={
            "model": model, "input": "Hello from a real cluster.", "voice": voice,
            "response_format": "wav", "seed": 7,
        })
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("audio/")
        with wave.open(io.BytesIO(response.content)) as wav:
            assert wav.getnframes() > 0 and wav.getframerate() > 0
        bad = client.post("/v1/audio/speech", json={"model": model, "input": "", "voice": voice})
        assert 400 <= bad.status_code < 500
        assert "error" in bad.json()
        metrics = client.get("/metrics").text
        assert "voicefleet_queued_audio_seconds" in metrics


def test_delete_garbage_collects_children(
    cluster: Cluster, namespace: str, ready_service: dict[str, Any]
) -> None:
    cluster.run("delete", "voiceservice", NAME, "-n", namespace, "--wait=true", timeout=180)

    def all_gone() -> bool:
        return all(cluster.get(kind, NAME, namespace) is None for kind in CHILD_KINDS)

    try:
        cluster.wait_for("children garbage-collected", all_gone, timeout=180)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{cluster.describe(namespace)}") from None

    def pods_gone() -> bool:
        return not cluster.run("get", "pods", "-n", namespace, "-l",
                               f"voicefleet.dev/service={NAME}", "-o", "name").stdout.strip()

    cluster.wait_for("server pods gone", pods_gone, timeout=180)
