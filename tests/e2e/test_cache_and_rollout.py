"""The model cache and a frugal rollout on a real cluster (run with --e2e, see conftest.py).

One VoiceService on the CPU tiny-model image with a model cache: the fetch Job copies the
baked-in checkpoint into a claim, the server pod waits for it in its init container and
loads the copy offline; `kubectl scale` sizes it (mode none, scale subresource); a spec
change rolls it out frugally (never more server pods than replicas); a new revision fetches
again into a new directory; deleting it takes the claim and the Job with it.

The claim is ReadWriteOnce (what kind's local-path provisioner offers): every pod of the
test runs on one node. Set VOICEFLEET_E2E_STORAGE_CLASS to use another class.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import httpx
import pytest
from e2e_support import SERVER_IMAGE, Cluster

from voicefleet import modelcache

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

NAME = "cached"
MODEL = "/opt/models/tiny-vits"  # baked into the server-cpu image
SERVER_PODS = f"voicefleet.dev/service={NAME},app.kubernetes.io/component=server"


def voice_service(namespace: str, revision: str = "r1") -> dict[str, Any]:
    cache: dict[str, Any] = {"size": "1Gi", "accessModes": ["ReadWriteOnce"]}
    if os.environ.get("VOICEFLEET_E2E_STORAGE_CLASS"):
        cache["storageClassName"] = os.environ["VOICEFLEET_E2E_STORAGE_CLASS"]
    return {
        "apiVersion": "voicefleet.dev/v1alpha1",
        "kind": "VoiceService",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "model": {"variant": MODEL, "revision": revision, "dtype": "float32",
                      "cache": cache},
            "batching": {"windowMs": 10, "maxBatchSize": 4, "maxQueue": 64},
            "autoscaling": {"mode": "none"},
            "replicas": 1,
            "rollout": {"strategy": "frugal"},
            "redis": {"enabled": False},
            "image": SERVER_IMAGE,
            "imagePullPolicy": "IfNotPresent",
            "drainSeconds": 2,
            "resources": {"gpus": 0, "requests": {"cpu": "100m", "memory": "384Mi"},
                          "limits": {"memory": "2Gi"}},
        },
    }


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return {}


def settled(cluster: Cluster, namespace: str, replicas: int) -> dict[str, Any] | None:
    """The VoiceService once its spec is observed, the model cached and `replicas` pods ready
    on the latest spec."""
    obj = cluster.get("voiceservice", NAME, namespace)
    if obj is None:
        return None
    status = obj.get("status") or {}
    done = (status.get("observedGeneration") == obj["metadata"]["generation"]
            and condition(obj, "ModelCached").get("status") == "True"
            and condition(obj, "Progressing").get("reason") == "Complete"
            and status.get("readyReplicas") == replicas)
    return obj if done else None


def wait_settled(cluster: Cluster, namespace: str, replicas: int) -> dict[str, Any]:
    try:
        return cluster.wait_for(f"{NAME}: cached, {replicas} pods ready",
                                lambda: settled(cluster, namespace, replicas), timeout=600)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{cluster.describe(namespace)}") from None


def server_pods(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    out = cluster.run("get", "pods", "-n", namespace, "-l", SERVER_PODS, "-o", "json").stdout
    return [p for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")]


@pytest.fixture(scope="module")
def cached(cluster: Cluster, namespace: str, release: str) -> dict[str, Any]:
    cluster.apply(voice_service(namespace))
    return wait_settled(cluster, namespace, 1)


def test_the_fetch_job_filled_the_claim_before_the_server_started(
    cluster: Cluster, namespace: str, cached: dict[str, Any]
) -> None:
    job = cluster.get("job", f"{NAME}-model-fetch", namespace)
    assert job is not None and job["status"].get("succeeded") == 1
    claim = cluster.get("pvc", f"{NAME}-models", namespace)
    assert claim is not None and claim["status"]["phase"] == "Bound"
    (pod,) = server_pods(cluster, namespace)
    (gate,) = pod["status"]["initContainerStatuses"]
    assert gate["state"]["terminated"]["exitCode"] == 0
    slot = modelcache.slot_name(MODEL, "r1")
    # The server started only once the copy was complete (the marker is written last).
    marker = json.loads(cluster.run(
        "exec", "-n", namespace, pod["metadata"]["name"], "-c", "server", "--",
        "cat", f"/models/{slot}/{modelcache.MARKER}").stdout)
    assert (marker["model"], marker["revision"]) == (MODEL, "r1")
    (server,) = pod["status"]["containerStatuses"]
    assert server["state"]["running"]["startedAt"] >= marker["fetchedAt"]
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["VOICEFLEET_MODEL"] == f"/models/{slot}/tiny-vits"
    assert env["HF_HUB_OFFLINE"] == "1"


def test_the_copy_serves_under_the_models_own_name(
    cluster: Cluster, namespace: str, cached: dict[str, Any]
) -> None:
    with cluster.port_forward(f"service/{NAME}", namespace, 8000) as port, httpx.Client(
        base_url=f"http://127.0.0.1:{port}", timeout=60
    ) as client:
        assert client.get("/v1/models").json()["data"][0]["id"] == "tiny-vits"
        response = client.post("/v1/audio/speech", json={
            "model": "tiny-vits", "input": "Loaded from the cache.", "voice": "alloy",
            "response_format": "wav"})
        assert response.status_code == 200, response.text


def test_kubectl_scale_then_a_frugal_rollout_never_adds_a_pod(
    cluster: Cluster, namespace: str, cached: dict[str, Any]
) -> None:
    cluster.run("scale", f"voiceservice/{NAME}", "-n", namespace, "--replicas=2")
    wait_settled(cluster, namespace, 2)
    scale = json.loads(cluster.run("get", "--raw", f"/apis/voicefleet.dev/v1alpha1/namespaces/"
                                   f"{namespace}/voiceservices/{NAME}/scale").stdout)
    assert scale["spec"]["replicas"] == 2 and scale["status"]["replicas"] == 2
    assert scale["status"]["selector"] == (
        f"app.kubernetes.io/component=server,voicefleet.dev/service={NAME}")

    # Watch the pod count while a spec change rolls the Deployment.
    most: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            most.append(len(server_pods(cluster, namespace)))
            stop.wait(1.0)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        before = {p["metadata"]["name"] for p in server_pods(cluster, namespace)}
        cluster.run("patch", "voiceservice", NAME, "-n", namespace, "--type=merge", "-p",
                    json.dumps({"spec": {"batching": {"windowMs": 20}}}))
        cluster.wait_for("rollout started", lambda: {
            p["metadata"]["name"] for p in server_pods(cluster, namespace)} != before,
            timeout=120)
        wait_settled(cluster, namespace, 2)
    finally:
        stop.set()
        watcher.join(10)
    assert most and max(most) <= 2, f"frugal rollout ran {max(most)} pods for 2 replicas"
    after = {p["metadata"]["name"] for p in server_pods(cluster, namespace)}
    assert not after & before  # every pod was replaced


def test_a_new_revision_fetches_again(
    cluster: Cluster, namespace: str, cached: dict[str, Any]
) -> None:
    first = cluster.get("job", f"{NAME}-model-fetch", namespace)
    assert first is not None
    cluster.run("patch", "voiceservice", NAME, "-n", namespace, "--type=merge", "-p",
                json.dumps({"spec": {"model": {"revision": "r2"}}}))
    obj = wait_settled(cluster, namespace, 2)
    job = cluster.get("job", f"{NAME}-model-fetch", namespace)
    assert job is not None and job["metadata"]["uid"] != first["metadata"]["uid"]
    slot = modelcache.slot_name(MODEL, "r2")
    assert f"/models/{slot}" in job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert slot in condition(obj, "ModelCached")["message"]
    for pod in server_pods(cluster, namespace):
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["VOICEFLEET_MODEL"] == f"/models/{slot}/tiny-vits"


def test_delete_takes_the_claim_and_the_job(
    cluster: Cluster, namespace: str, cached: dict[str, Any]
) -> None:
    cluster.run("delete", "voiceservice", NAME, "-n", namespace, "--wait=true", timeout=180)

    def gone() -> bool:
        return all(cluster.get(kind, name, namespace) is None for kind, name in (
            ("deployment", NAME), ("job", f"{NAME}-model-fetch"), ("pvc", f"{NAME}-models")))

    try:
        cluster.wait_for("deployment, Job and claim garbage-collected", gone, timeout=300)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{cluster.describe(namespace)}") from None
