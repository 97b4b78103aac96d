"""The memory guard end to end: the real operator against kmock's emulator, pods whose
/metrics are served by small HTTP servers on loopback addresses (127.0.0.2, 127.0.0.3)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import kmock as km
import pytest
from aiohttp import web
from operator_helpers import NAMESPACE, ObjectGetter, eventually, voiceservice
from voicefleet_operator import naming

pytestmark = pytest.mark.timeout(30)

VS = "voicefleet.dev/v1alpha1/voiceservices"
VS_PATH = f"/apis/voicefleet.dev/v1alpha1/namespaces/{NAMESPACE}/voiceservices"
PODS_PATH = f"/api/v1/namespaces/{NAMESPACE}/pods"
GIB = 2**30
SUSTAIN = 1
Api = Callable[..., Awaitable[Any]]


@dataclass
class FakePod:
    """A server pod's /metrics: GPU memory used against its budget, and when it was read."""

    ip: str
    used: float
    budget: float = 10 * GIB
    reads: list[float] = field(default_factory=list)

    async def metrics(self, request: web.Request) -> web.Response:
        self.reads.append(time.monotonic())
        return web.Response(
            text=(
                "# TYPE voicefleet_gpu_memory_used_bytes gauge\n"
                f"voicefleet_gpu_memory_used_bytes {self.used:.0f}\n"
                "# TYPE voicefleet_gpu_memory_budget_bytes gauge\n"
                f"voicefleet_gpu_memory_budget_bytes {self.budget:.0f}\n"
            )
        )


def common_free_port(*hosts: str) -> int:
    """A port that is free on every one of `hosts` (each pod listens on its own IP)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        try:
            for host in hosts:
                with socket.socket() as other:
                    other.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no common free port")


@pytest.fixture()
async def fake_pods() -> AsyncIterator[tuple[int, dict[str, FakePod]]]:
    pods = {
        "tts-hot": FakePod("127.0.0.2", used=9.5 * GIB),  # 95% of budget: over 90%
        "tts-calm": FakePod("127.0.0.3", used=5 * GIB),  # 50%
    }
    port = common_free_port(*(p.ip for p in pods.values()))
    runners = []
    for pod in pods.values():
        app = web.Application()
        app.router.add_get("/metrics", pod.metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, pod.ip, port).start()
        runners.append(runner)
    try:
        yield port, pods
    finally:
        for runner in runners:
            await runner.cleanup()


def pod_manifest(name: str, ip: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": f"uid-{name}",
            "labels": naming.labels("tts", naming.SERVER),
        },
        "spec": {
            "containers": [
                {"name": "server", "ports": [{"name": "http", "containerPort": port}]}
            ]
        },
        "status": {"phase": "Running", "podIP": ip},
    }


async def create_pods(api: Api, port: int, pods: dict[str, FakePod]) -> None:
    for name, pod in pods.items():
        await api("POST", PODS_PATH, pod_manifest(name, pod.ip, port))
    # A pod that is Running but whose metrics cannot be read: never a reason to restart.
    await api("POST", PODS_PATH, pod_manifest("tts-silent", "127.0.0.4", port))
    # A Redis pod of the same service: not a server, never read.
    redis = pod_manifest("tts-redis-0", "127.0.0.5", port)
    redis["metadata"]["labels"] = naming.labels("tts", naming.REDIS)
    await api("POST", PODS_PATH, redis)


def evictions(emulator: km.KubernetesEmulator) -> list[str]:
    return [
        str(request.url.path).split("/")[-2]
        for request in emulator["post"]
        if str(request.url.path).endswith("/eviction")
    ]


async def test_only_the_pod_above_the_watermark_is_evicted_once(
    operator: km.KubernetesEmulator,
    api: Api,
    get_object: ObjectGetter,
    fake_pods: tuple[int, dict[str, FakePod]],
) -> None:
    port, pods = fake_pods

    # Play the API server's part: an accepted eviction deletes the pod.
    def evict(request: km.Request) -> dict[str, Any]:
        name = str(request.url.path).split("/")[-2]
        operator.objects["v1/pods", NAMESPACE, name].delete()
        return {"apiVersion": "v1", "kind": "Status", "status": "Success", "code": 201}

    operator[f"post {PODS_PATH}/tts-hot/eviction"] << evict
    operator[f"post {PODS_PATH}/tts-calm/eviction"] << evict

    await create_pods(api, port, pods)
    await api("POST", VS_PATH, voiceservice(vram={"watermarkPercent": 90,
                                                   "sustainSeconds": SUSTAIN}))

    assert await eventually(lambda: evictions(operator), timeout=10)
    evicted_at = time.monotonic()
    assert evictions(operator) == ["tts-hot"]
    # Not before the pressure was sustained: the first read of it was SUSTAIN seconds ago.
    assert evicted_at - pods["tts-hot"].reads[0] >= SUSTAIN
    assert pods["tts-calm"].reads, "the calm pod was never read"

    vs = await eventually(
        lambda: get_object(VS, "tts")["status"]["memoryGuard"]["restarts"] == 1
        and get_object(VS, "tts")
    )
    guard = vs["status"]["memoryGuard"]
    assert guard["lastRestartPod"] == "tts-hot"
    assert guard["lastRestart"].endswith("Z")
    events = [
        obj.raw for (resource, _, _), obj in operator.objects.items()
        if resource.plural == "events" and not obj.deleted
    ]
    assert [e["reason"] for e in events] == ["MemoryGuardRestart"]
    assert events[0]["involvedObject"]["name"] == "tts"
    assert "tts-hot" in events[0]["message"]

    # Keep running a while: the calm pod stays, nothing is evicted twice.
    await asyncio.sleep(1.0)
    assert evictions(operator) == ["tts-hot"]
    assert get_object("v1/pods", "tts-calm")
    assert get_object(VS, "tts")["status"]["memoryGuard"]["restarts"] == 1


async def test_memory_pressure_condition_and_delete_fallback(
    operator: km.KubernetesEmulator,
    api: Api,
    get_object: ObjectGetter,
    fake_pods: tuple[int, dict[str, FakePod]],
) -> None:
    port, pods = fake_pods
    await create_pods(api, port, pods)
    await api("POST", VS_PATH, voiceservice(vram={"sustainSeconds": SUSTAIN}))

    def pressure() -> dict[str, Any]:
        conditions = get_object(VS, "tts")["status"]["conditions"]
        return next(c for c in conditions if c["type"] == "MemoryPressure")

    seen = await eventually(lambda: pressure()["status"] == "True" and pressure())
    assert seen["reason"] == "AboveWatermark"
    assert "tts-hot" in seen["message"]

    # This emulator has no eviction subresource (404): the guard falls back to a delete.
    assert await eventually(lambda: operator.objects["v1/pods", NAMESPACE, "tts-hot"].deleted)
    deletes = [str(r.url.path) for r in operator["delete"]]
    assert deletes == [f"{PODS_PATH}/tts-hot"]
    calm = await eventually(lambda: pressure()["status"] == "False" and pressure())
    assert calm["reason"] == "BelowWatermark"
    assert get_object(VS, "tts")["status"]["memoryGuard"]["restarts"] == 1
