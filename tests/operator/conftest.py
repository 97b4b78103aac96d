"""Fixtures that run the real operator (our kopf handlers) against kmock's Kubernetes
emulator, following ../shared/TESTING-K8S.md: discovery loaded, the CRD declared, a
kubeconfig pointing at the emulator, kopf in its own thread and event loop, and every test
object created only after kopf's watch is open.
"""

from __future__ import annotations

import asyncio
import threading
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import kmock as km
import kopf
import kubernetes
import pytest
import yaml
from operator_helpers import (
    FIGURES,
    KOPF_ERROR_BACKOFFS,
    NAMESPACE,
    TEST_BACKOFF,
    TEST_CONFIG,
    VS_RESOURCE,
    ObjectGetter,
    eventually,
)
from voicefleet_operator import handlers, naming
from voicefleet_operator.config import OperatorConfig
from voicefleet_operator.kube import Kube


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "chaos_scenario: a chaos scenario, counted in the figures when it starts")


@pytest.fixture(autouse=True)
def _count_chaos_scenarios(request: pytest.FixtureRequest) -> None:
    """Count a chaos scenario as run before anything in it can fail, so the figures say
    "N survived of M run" from what happened (`survived()` counts the other side)."""
    if request.node.get_closest_marker("chaos_scenario"):
        FIGURES["chaos scenarios run"] += 1


@pytest.fixture()
def emulator(kmock: km.KubernetesEmulator) -> km.KubernetesEmulator:
    kmock.resources.load_bundled()  # kopf waits for core and apiextensions discovery
    kmock.resources[VS_RESOURCE] = km.ResourceInfo(
        kind=naming.KIND,
        singular="voiceservice",
        namespaced=True,
        subresources={"status"},
        verbs={"get", "list", "watch", "create", "patch", "delete"},
    )
    return kmock


@pytest.fixture()
def kubeconfig(
    emulator: km.KubernetesEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": str(emulator.url)}}],
                "users": [{"name": "kmock", "user": {}}],
                "contexts": [
                    {"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}
                ],
                "current-context": "kmock",
            }
        )
    )
    # The kubernetes client reads $KUBECONFIG once, at import: patch its default too.
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    return path


@pytest.fixture()
def operator_config() -> OperatorConfig:
    return TEST_CONFIG


async def _until_guard_is_quiet(emulator: km.KubernetesEmulator, timeout: float = 5.0) -> None:
    """Wait until no memory guard lists pods any more (it does so every 0.2 s while alive)."""
    lists = emulator[km.action.LIST, km.resource("v1/pods")]
    deadline = time.monotonic() + timeout
    seen, quiet_since = len(list(lists)), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - quiet_since < 0.6:
        await asyncio.sleep(0.1)
        if (count := len(list(lists))) != seen:
            seen, quiet_since = count, time.monotonic()


class OperatorRun:
    """One operator instance (our kopf handlers) in its own thread and event loop.

    Tests that restart the operator start several in turn; each has its own API client, so
    what one instance retried can be told from another's.
    """

    def __init__(self, emulator: km.KubernetesEmulator, config: OperatorConfig) -> None:
        self.emulator = emulator
        self.kube = Kube.for_url(str(emulator.url), TEST_BACKOFF)
        settings = kopf.OperatorSettings()
        settings.scanning.disabled = True  # the emulator has no Namespace or CRD objects
        settings.posting.enabled = False  # kopf's events use generateName, unsupported there
        settings.watching.reconnect_backoff = 0.1
        settings.queueing.exit_timeout = 0.5  # do not wait for idle per-object workers
        # kopf retries its own failed API calls (5xx, 429) too; short delays for tests.
        settings.networking.error_backoffs = KOPF_ERROR_BACKOFFS
        self.settings = settings
        self.memo = kopf.Memo(config=config, kube=self.kube)
        self.stop_flag = threading.Event()
        self.ready = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="kopf-operator", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(
                kopf.operator(
                    registry=kopf.get_default_registry(),
                    settings=self.settings,
                    memo=self.memo,
                    standalone=True,
                    namespaces=[NAMESPACE],
                    stop_flag=self.stop_flag,
                    ready_flag=self.ready,
                )
            )
        except BaseException as exc:  # surfaced in the test, not lost in the thread
            self.errors.append(exc)

    async def start(self) -> OperatorRun:
        watches = self.emulator[km.action.WATCH, km.resource(VS_RESOURCE)]
        before = len(list(watches))
        self.thread.start()
        assert await asyncio.to_thread(self.ready.wait, 10), "kopf did not become ready"
        await eventually(lambda: len(list(watches)) > before)
        assert len(list(watches)) > before, "kopf never opened a watch on voiceservices"
        return self

    async def stop(self) -> None:
        self.stop_flag.set()
        await asyncio.to_thread(self.thread.join, 15)
        assert not self.thread.is_alive(), "kopf did not stop"
        assert not self.errors, "".join(traceback.format_exception(self.errors[0]))


async def delete_voiceservices(emulator: km.KubernetesEmulator) -> None:
    """Delete every live VoiceService: kopf then stops each object's daemons gracefully,
    instead of waiting 5 s for "hung" tasks when the operator exits."""
    for resource, namespace, name in list(emulator.objects.keys()):
        if str(resource) == str(km.resource(VS_RESOURCE)) and not emulator.objects[
            resource, namespace, name
        ].deleted:
            path = f"/apis/{VS_RESOURCE.rsplit('/', 1)[0]}/namespaces/{namespace}/"
            async with emulator.request("DELETE", f"{path}{naming.PLURAL}/{name}"):
                pass


@pytest.fixture()
async def start_operator(
    emulator: km.KubernetesEmulator, kubeconfig: Path, operator_config: OperatorConfig
) -> AsyncIterator[Callable[[], Awaitable[OperatorRun]]]:
    """Starts operator instances on demand (several in turn for restart tests); whatever is
    still running at the end is stopped after the test's VoiceServices are deleted."""
    # Importing our handlers module fills kopf's default registry; an operator started
    # with an empty one would watch nothing and every scenario would time out obscurely.
    registry = kopf.get_default_registry()
    registered = {h.fn for h in registry._changing.get_all_handlers()}
    assert handlers.converge_on_change in registered, "voicefleet handlers not registered"
    runs: list[OperatorRun] = []

    async def start() -> OperatorRun:
        run = OperatorRun(emulator, operator_config)
        runs.append(run)
        return await run.start()

    try:
        yield start
        if any(run.thread.is_alive() for run in runs):
            await delete_voiceservices(emulator)
            await _until_guard_is_quiet(emulator)
    finally:
        for run in runs:
            run.stop_flag.set()
        for run in runs:
            if run.thread.ident is not None:
                await run.stop()


@pytest.fixture()
async def operator(
    start_operator: Callable[[], Awaitable[OperatorRun]], emulator: km.KubernetesEmulator
) -> km.KubernetesEmulator:
    """The operator running in its own thread until the test ends; yields the emulator."""
    await start_operator()
    return emulator


@pytest.fixture()
def get_object(emulator: km.KubernetesEmulator) -> ObjectGetter:
    """The live stored object (raises KeyError while it does not exist or is deleted)."""

    def get(resource: str, name: str) -> dict[str, Any]:
        obj = emulator.objects[resource, NAMESPACE, name]
        if obj.deleted:
            raise KeyError(name)
        return dict(obj.raw)

    return get


@pytest.fixture()
def api(emulator: km.KubernetesEmulator) -> Iterator[Callable[..., Awaitable[Any]]]:
    """Plain HTTP calls to the emulator, the way kubectl would make them."""

    async def call(method: str, path: str, body: Any = None, content_type: str | None = None
                   ) -> Any:
        headers = {"Content-Type": content_type} if content_type else {}
        async with emulator.request(method, path, json=body, headers=headers) as response:
            assert response.status < 300, (response.status, await response.text())
            return await response.json()

    yield call
