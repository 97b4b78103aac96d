"""The memory guard over time against kmock's emulator, with real /metrics servers on
loopback addresses: evictions leave pods terminating (as a real eviction does), so the
guard must wait for one to finish before the next; pods whose metrics cannot be read —
refused, erroring, too slow, or flapping between readable and not — are never evicted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import kmock as km
import pytest
from aiohttp import web
from operator_helpers import FIGURES, NAMESPACE, TEST_CONFIG, eventually, survived, voiceservice
from test_operator_guard import GIB, PODS_PATH, VS_PATH, common_free_port, pod_manifest
from voicefleet_operator.config import OperatorConfig

pytestmark = [pytest.mark.timeout(30), pytest.mark.chaos_scenario]

Api = Callable[..., Awaitable[Any]]
COOLDOWN = 0.3


@pytest.fixture()
def operator_config() -> OperatorConfig:
    # A short cool-down, so that only "one pod terminating at a time" holds evictions back.
    return OperatorConfig(**{**TEST_CONFIG.__dict__, "guard_cooldown": COOLDOWN})


@dataclass
class Pod:
    """A pod's /metrics: `mode` is hot, cool, error (503), slow (past the guard's
    timeout) or flap (hot, then 503, alternately)."""

    ip: str
    mode: str
    reads: int = 0
    last_unreadable: float = 0.0

    async def metrics(self, request: web.Request) -> web.Response:
        self.reads += 1
        mode = self.mode
        if mode == "flap":
            mode = "hot" if self.reads % 2 else "error"
        if mode == "error":
            self.last_unreadable = time.monotonic()
            return web.Response(status=503, text="not ready")
        if mode == "slow":
            await asyncio.sleep(0.8)  # past the guard's 0.5 s timeout
        used = 9.6 * GIB if mode in ("hot", "slow") else 4 * GIB
        return web.Response(text=f"voicefleet_gpu_memory_used_bytes {used:.0f}\n"
                                 f"voicefleet_gpu_memory_budget_bytes {10 * GIB}\n")


async def serve(pods: dict[str, Pod], port: int) -> list[web.AppRunner]:
    runners = []
    for pod in pods.values():
        app = web.Application()
        app.router.add_get("/metrics", pod.metrics)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, pod.ip, port).start()
        runners.append(runner)
    return runners


@dataclass
class Evictions:
    """Plays the API server's eviction: accepted, the pod starts terminating (it gets a
    deletionTimestamp and stays listed until the test lets it go, like the kubelet would).
    Records, for each eviction, how many other pods of the service were terminating."""

    emulator: km.KubernetesEmulator
    log: list[tuple[float, str, int]]

    def __call__(self, request: km.Request) -> dict[str, Any]:
        name = str(request.url.path).split("/")[-2]
        others = sum(
            1 for (res, _, n), obj in self.emulator.objects.items()
            if str(res) == str(km.resource("v1/pods")) and not obj.deleted and n != name
            and obj.raw["metadata"].get("deletionTimestamp")
        )
        self.log.append((time.monotonic(), name, others))
        self.emulator.objects["v1/pods", NAMESPACE, name].patch(
            {"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}})
        return {"apiVersion": "v1", "kind": "Status", "status": "Success", "code": 201}


@pytest.fixture()
async def pods_at(request: pytest.FixtureRequest) -> AsyncIterator[tuple[int, dict[str, Pod]]]:
    modes: dict[str, str] = request.param
    pods = {name: Pod(f"127.0.0.{10 + i}", mode) for i, (name, mode) in enumerate(modes.items())}
    port = common_free_port(*(p.ip for p in pods.values()))
    runners = await serve(pods, port)
    try:
        yield port, pods
    finally:
        for runner in runners:
            await runner.cleanup()


def install(operator: km.KubernetesEmulator, pods: dict[str, Pod]) -> Evictions:
    evictions = Evictions(operator, [])
    for name in pods:
        operator[f"post {PODS_PATH}/{name}/eviction"] << evictions
    return evictions


@pytest.mark.parametrize("pods_at", [{"tts-a": "hot", "tts-b": "hot", "tts-c": "hot"}],
                         indirect=True)
async def test_one_pod_terminating_at_a_time(
    operator: km.KubernetesEmulator, api: Api, pods_at: tuple[int, dict[str, Pod]]
) -> None:
    port, pods = pods_at
    evictions = install(operator, pods)
    for name, pod in pods.items():
        await api("POST", PODS_PATH, pod_manifest(name, pod.ip, port))
    await api("POST", VS_PATH, voiceservice(vram={"sustainSeconds": 0}))

    for expected in (1, 2, 3):
        assert await eventually(lambda e=expected: len(evictions.log) >= e, timeout=10)
        # Several rounds (0.2 s) and cool-downs (0.3 s) pass: the terminating pod holds
        # every other eviction back, however hot the others are.
        await asyncio.sleep(1.0)
        assert len(evictions.log) == expected
        # The kubelet finishes the pod; the Deployment's replacement would come up cool.
        victim = evictions.log[-1][1]
        operator.objects["v1/pods", NAMESPACE, victim].delete()

    names = [name for _, name, _ in evictions.log]
    FIGURES["guard evictions (emulator)"] += len(names)
    FIGURES["guard evictions while another pod was terminating"] += sum(
        o for _, _, o in evictions.log)
    assert sorted(names) == sorted(pods) and len(set(names)) == 3  # each once
    assert [others for _, _, others in evictions.log] == [0, 0, 0]
    gaps = [b[0] - a[0] for a, b in zip(evictions.log, evictions.log[1:], strict=False)]
    assert all(gap >= 1.0 for gap in gaps)
    survived("memory guard, three hot pods: evicted one at a time, each after the last ended")


@pytest.mark.parametrize(
    "pods_at",
    [{"tts-flap": "flap", "tts-error": "error", "tts-slow": "slow", "tts-gone": "hot"}],
    indirect=True,
)
async def test_unreadable_metrics_never_evict(
    operator: km.KubernetesEmulator, api: Api, pods_at: tuple[int, dict[str, Pod]]
) -> None:
    port, pods = pods_at
    evictions = install(operator, pods)
    for name, pod in pods.items():
        await api("POST", PODS_PATH, pod_manifest(name, pod.ip, port))
    # tts-gone's address has a server, but the pod says another port: connection refused.
    gone = pod_manifest("tts-gone", pods["tts-gone"].ip, port + 1 if port < 65535 else port - 1)
    operator.objects["v1/pods", NAMESPACE, "tts-gone"].patch({"spec": gone["spec"]})
    await api("POST", VS_PATH, voiceservice(vram={"sustainSeconds": 1}))

    # Two sustain periods of hot-or-unreadable readings: nothing is evicted.
    assert await eventually(lambda: pods["tts-flap"].reads >= 4 and pods["tts-slow"].reads >= 2)
    await asyncio.sleep(2.0)
    unreachable_evictions = len(evictions.log)
    unreadable_rounds = pods["tts-flap"].reads // 2 + pods["tts-error"].reads + pods[
        "tts-slow"].reads
    FIGURES["guard unreadable metrics reads (refused, 503, timeout, flapping)"] += (
        unreadable_rounds)
    FIGURES["guard evictions while metrics were unreachable"] += unreachable_evictions
    assert evictions.log == []
    assert pods["tts-gone"].reads == 0

    # The flapping pod turns steadily hot: now it is evicted, after `sustainSeconds`.
    pods["tts-flap"].mode = "hot"
    assert await eventually(lambda: evictions.log, timeout=10)
    assert [name for _, name, _ in evictions.log] == ["tts-flap"]
    # Not before a full `sustainSeconds` of readable, hot readings after the last 503.
    assert evictions.log[0][0] - pods["tts-flap"].last_unreadable >= 1.0
    survived("memory guard, metrics refused/503/slow/flapping: no eviction until steady")

