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
from operator_helpers import NAMESPACE, TEST_CONFIG, VS_RESOURCE, ObjectGetter, eventually
from voicefleet_operator import handlers, naming
from voicefleet_operator.config import OperatorConfig
from voicefleet_operator.kube import Kube


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


@pytest.fixture()
async def operator(
    emulator: km.KubernetesEmulator, kubeconfig: Path, operator_config: OperatorConfig
) -> AsyncIterator[km.KubernetesEmulator]:
    """The operator running in its own thread until the test ends; yields the emulator."""
    assert handlers.RESOURCE  # the handlers module is imported: kopf's registry is filled
    settings = kopf.OperatorSettings()
    settings.scanning.disabled = True  # the emulator has no Namespace or CRD objects
    settings.posting.enabled = False  # kopf's events use generateName, unsupported there
    settings.watching.reconnect_backoff = 0.1
    settings.queueing.exit_timeout = 0.5  # do not wait for idle per-object workers
    memo = kopf.Memo(config=operator_config, kube=Kube.for_url(str(emulator.url)))
    stop = threading.Event()
    ready = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(
                kopf.operator(
                    registry=kopf.get_default_registry(),
                    settings=settings,
                    memo=memo,
                    standalone=True,
                    namespaces=[NAMESPACE],
                    stop_flag=stop,
                    ready_flag=ready,
                )
            )
        except BaseException as exc:  # surfaced in the test, not lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="kopf-operator", daemon=True)
    thread.start()
    try:
        assert await asyncio.to_thread(ready.wait, 10), "kopf did not become ready"
        watches = emulator[km.action.WATCH, km.resource(VS_RESOURCE)]
        await eventually(lambda: len(list(watches)) > 0)
        assert list(watches), "kopf never opened a watch on voiceservices"
        yield emulator
        # Delete what the test created first: kopf then stops each object's daemons
        # gracefully, instead of waiting 5 s for "hung" tasks when the operator exits.
        for resource, namespace, name in list(emulator.objects.keys()):
            if str(resource) == str(km.resource(VS_RESOURCE)) and not emulator.objects[
                resource, namespace, name
            ].deleted:
                path = f"/apis/{VS_RESOURCE.rsplit('/', 1)[0]}/namespaces/{namespace}/"
                async with emulator.request("DELETE", f"{path}{naming.PLURAL}/{name}"):
                    pass
        await _until_guard_is_quiet(emulator)
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 15)
    assert not thread.is_alive(), "kopf did not stop"
    assert not errors, "".join(traceback.format_exception(errors[0]))


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
