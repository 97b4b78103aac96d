"""Chaos against kmock's emulator, with the real operator: API errors injected, the operator
killed mid-reconcile and restarted, children deleted or edited, VoiceServices deleted, a bad
spec next to good ones. Each test checks convergence and that no duplicate or orphan is
left, and records its figures for the terminal summary (see docs/reliability-operator.md).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import kmock as km
import pytest
from operator_helpers import (
    FIGURES,
    NAMESPACE,
    FaultInjector,
    ObjectGetter,
    duplicates,
    eventually,
    settles,
    survived,
    voiceservice,
)

pytestmark = [pytest.mark.timeout(45), pytest.mark.chaos_scenario]

VS = "voicefleet.dev/v1alpha1/voiceservices"
VS_PATH = f"/apis/voicefleet.dev/v1alpha1/namespaces/{NAMESPACE}/voiceservices"
MERGE = "application/merge-patch+json"
KOPF_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"
Api = Callable[..., Awaitable[Any]]
# Starts an operator instance (conftest's OperatorRun: .kube, .stop()).
Start = Callable[[], Awaitable[Any]]


def children(name: str) -> list[tuple[str, str]]:
    return [
        ("apps/v1/deployments", name),
        ("v1/services", name),
        ("autoscaling/v2/horizontalpodautoscalers", name),
        ("policy/v1/poddisruptionbudgets", name),
        ("apps/v1/deployments", f"{name}-redis"),
        ("v1/services", f"{name}-redis"),
        ("networking.k8s.io/v1/networkpolicies", f"{name}-redis"),
        ("v1/secrets", f"{name}-redis"),
    ]


def path_of(resource: str, name: str) -> str:
    group_version, plural = resource.rsplit("/", 1)
    base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    return f"{base}/namespaces/{NAMESPACE}/{plural}/{name}"


def condition(get_object: ObjectGetter, name: str, type_: str) -> dict[str, Any]:
    conditions = get_object(VS, name)["status"]["conditions"]
    return next((c for c in conditions if c["type"] == type_), {})


async def converged(get_object: ObjectGetter, name: str, timeout: float = 15.0) -> None:
    """Every child exists and status says the spec was reconciled without error."""
    for resource, child in children(name):
        assert await eventually(lambda r=resource, c=child: get_object(r, c), timeout=timeout)
    assert await eventually(
        lambda: condition(get_object, name, "Degraded")["status"] == "False"
        and get_object(VS, name)["status"]["observedGeneration"] == 1,
        timeout=timeout,
    )
    assert condition(get_object, name, "Degraded")["status"] == "False"
    # And kopf has recorded the create handler as done (stopping before that races it).
    assert await eventually(
        lambda: "voicefleet.dev/last-handled-configuration"
        in get_object(VS, name)["metadata"].get("annotations", {}),
        timeout=timeout,
    )


def record_duplicates(emulator: km.KubernetesEmulator, *names: str) -> None:
    found = [d for name in names for d in duplicates(emulator, name)]
    FIGURES["duplicate children found"] += len(found)
    assert found == []


# --- Kubernetes API errors --------------------------------------------------------------

async def test_api_errors_are_retried_with_backoff_and_converge(
    emulator: km.KubernetesEmulator, start_operator: Start, api: Api, get_object: ObjectGetter
) -> None:
    faults = FaultInjector(emulator)
    # Our client: reads of children, lost create answers, rate-limited creates; the status
    # read-modify-write. kopf: its annotation patches on the VoiceService.
    faults.add("GET", r"/deployments/tts$", 500, times=4, every=2)
    faults.add("POST", r"/horizontalpodautoscalers$", 500, times=1)
    faults.add("POST", r"/services$", 429, times=1, retry_after="1")
    faults.add("GET", r"/poddisruptionbudgets/tts$", 503, times=2)
    faults.add("PATCH", r"/voiceservices/tts/status$", 503, times=2)
    faults.add("GET", r"/voiceservices/tts$", 500, times=2)
    faults.add("PATCH", r"/voiceservices/tts$", 429, times=1, retry_after="1")
    run = await start_operator()
    await api("POST", VS_PATH, voiceservice())
    await converged(get_object, "tts")
    assert await eventually(lambda: all(f.times == 0 for f in faults.faults))
    assert [f for f in faults.faults if f.times] == []

    # A longer outage of one resource: calls give up, Degraded says so, then it heals.
    faults.add("GET", r"/deployments/tts$", 500, times=10_000)
    degraded = await eventually(
        lambda: condition(get_object, "tts", "Degraded")["reason"] == "ReconcileFailed"
        and condition(get_object, "tts", "Degraded")
    )
    assert degraded["status"] == "True" and "500" in degraded["message"]
    faults.clear()
    assert await eventually(lambda: condition(get_object, "tts", "Degraded")["status"] == "False")

    assert await eventually(lambda: not faults.unretried())
    assert faults.unretried() == []
    assert run.kube.retried > 0 and run.kube.gave_up > 0
    statuses = sorted({i.status for i in faults.injected})
    assert statuses == [429, 500, 503]
    FIGURES["API errors injected"] += len(faults.injected)
    FIGURES["API errors retried to success"] += len(faults.injected) - len(faults.unretried())
    record_duplicates(emulator, "tts")
    survived("Kubernetes API 500/503/429 (Retry-After) on reads, creates, patches, status")


# --- Operator killed and restarted ------------------------------------------------------

async def test_operator_killed_mid_reconcile_then_restarted_converges_without_duplicates(
    emulator: km.KubernetesEmulator,
    kubeconfig: Path,
    start_operator: Start,
    api: Api,
    get_object: ObjectGetter,
    tmp_path: Path,
) -> None:
    # The first operator is a real process (`voicefleet operator`), SIGKILLed while its
    # first reconcile waits for the API to answer the HPA's create (already stored: the
    # answer is what never arrives). Its successor finds a half-built service.
    arrived = asyncio.Event()
    release = asyncio.Event()
    armed = [True]

    async def stall(request: km.Request) -> None:
        if not armed[0]:
            raise NotImplementedError
        armed[0] = False
        arrived.set()
        await asyncio.wait_for(release.wait(), 30)
        raise NotImplementedError  # then let the emulator answer (to nobody)

    emulator["post", km.resource("autoscaling/v2/horizontalpodautoscalers")] << stall
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "VOICEFLEET_SERVER_IMAGE": "example.test/voicefleet-server:test",
        "VOICEFLEET_RECONCILE_INTERVAL_SECONDS": "0.5",
        "VOICEFLEET_CLUSTER_SCANNING": "false",
    }
    log = (tmp_path / "operator.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "voicefleet"), "operator", "--standalone",
        "--namespace", NAMESPACE, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await api("POST", VS_PATH, voiceservice())
        await asyncio.wait_for(arrived.wait(), 30)
        process.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(process.wait(), 10) == -signal.SIGKILL
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        log.close()
        release.set()

    # Killed mid-way: some children exist, the PDB does not, nor any reconciled status
    # (the memory guard, a separate loop, may have written its part).
    password = get_object("v1/secrets", "tts-redis")["stringData"]["password"]
    get_object("apps/v1/deployments", "tts")
    with pytest.raises(KeyError):
        get_object("policy/v1/poddisruptionbudgets", "tts")
    assert "observedGeneration" not in get_object(VS, "tts").get("status", {})

    await start_operator()
    await converged(get_object, "tts")
    # Created once each: the successor met 409s, compared and patched, created nothing twice.
    creates = [r for r in emulator if r.method == "POST" and r.name is None
               and r.resource is not None and r.resource.plural != "events"]
    created = {(str(r.resource), (r.data or {}).get("metadata", {}).get("name")) for r in creates}
    assert len(created) == len(children("tts")) + 1  # + the VoiceService the test made
    # The generated Redis password survived: running pods keep talking to Redis.
    assert get_object("v1/secrets", "tts-redis")["stringData"]["password"] == password
    record_duplicates(emulator, "tts")
    FIGURES["operator kills (SIGKILL mid-reconcile) survived"] += 1
    survived("operator SIGKILLed mid-reconcile, restarted: converged, no duplicates")


async def test_restarting_a_converged_operator_writes_nothing(
    emulator: km.KubernetesEmulator, start_operator: Start, api: Api, get_object: ObjectGetter
) -> None:
    first = await start_operator()
    await api("POST", VS_PATH, voiceservice())
    await converged(get_object, "tts")
    await first.stop()
    mark = max(r.id for r in emulator)
    await start_operator()
    # Two periodic passes and the resume handler later: reads only.
    await asyncio.sleep(1.2)
    # (The Redis Secret's create is re-sent each pass and answered 409: the operator may
    # not read Secrets, so that is how it learns the Secret is still there.)
    writes = [f"{r.method.value} {r.url.path}" for r in emulator
              if r.id > mark and r.method in ("POST", "PATCH", "PUT", "DELETE")
              and r.resource is not None
              and r.resource.plural not in ("voiceservices", "secrets")]
    assert writes == []
    record_duplicates(emulator, "tts")
    FIGURES["operator restarts survived"] += 1
    survived("operator restarted over a converged service: no child writes")


# --- Children deleted or edited ---------------------------------------------------------

async def test_every_child_deleted_or_edited_is_restored(
    operator: km.KubernetesEmulator, api: Api, get_object: ObjectGetter
) -> None:
    await api("POST", VS_PATH, voiceservice())
    await converged(get_object, "tts")
    secret = get_object("v1/secrets", "tts-redis")
    restored = [(r, n) for r, n in children("tts") if r != "v1/secrets"]
    for resource, name in restored:
        await api("DELETE", path_of(resource, name))
    came_back = [
        await settles(lambda r=resource, n=name: get_object(r, n))
        for resource, name in restored
    ]
    FIGURES["children deleted"] += len(restored)
    FIGURES["children deleted and restored"] += sum(came_back)
    assert came_back == [True] * len(restored), list(zip(restored, came_back, strict=True))
    assert get_object("v1/secrets", "tts-redis") == secret  # never rewritten

    # Hand edits of fields the operator owns: an extra env var, a Service selector, an HPA
    # bound, a Redis flag. Each is reverted; fields it does not own are left alone.
    deployment = get_object("apps/v1/deployments", "tts")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    edits = [
        ("apps/v1/deployments", "tts", {"spec": {"template": {"spec": {"containers": [
            {**container, "env": [*container["env"], {"name": "HACK", "value": "1"}]}]}}}}),
        ("v1/services", "tts", {"spec": {"selector": {"voicefleet.dev/service": "other"}}}),
        ("autoscaling/v2/horizontalpodautoscalers", "tts", {"spec": {"maxReplicas": 99}}),
        ("apps/v1/deployments", "tts", {"metadata": {"annotations": {"team": "speech"}}}),
    ]
    for resource, name, patch in edits:
        await api("PATCH", path_of(resource, name), patch, MERGE)
    # One check per edit of an owned field: is it back to the spec's value?
    reverted_checks = [
        lambda: get_object("apps/v1/deployments", "tts")["spec"]["template"]["spec"][
            "containers"][0]["env"] == container["env"],
        lambda: get_object("v1/services", "tts")["spec"]["selector"][
            "voicefleet.dev/service"] == "tts",
        lambda: get_object("autoscaling/v2/horizontalpodautoscalers", "tts")["spec"][
            "maxReplicas"] == 4,
    ]
    reverted = [await settles(check) for check in reverted_checks]
    FIGURES["hand edits of owned fields"] += len(reverted_checks)
    FIGURES["hand edits reverted"] += sum(reverted)
    assert reverted == [True] * len(reverted_checks)
    assert get_object("apps/v1/deployments", "tts")["metadata"]["annotations"]["team"] == "speech"
    record_duplicates(operator, "tts")
    survived("every child deleted at once, hand edits made: all restored or reverted")


# --- VoiceService deleted ---------------------------------------------------------------

def collect_garbage(emulator: km.KubernetesEmulator) -> int:
    """Kubernetes' garbage collector, which kmock lacks: delete every object whose owner
    (by uid) no longer exists, until nothing more goes. Returns how many it deleted."""
    deleted = 0
    while True:
        live = {obj.raw.get("metadata", {}).get("uid") for obj in emulator.objects.values()
                if not obj.deleted}
        orphans = [obj for obj in emulator.objects.values() if not obj.deleted
                   and (refs := obj.raw.get("metadata", {}).get("ownerReferences"))
                   and not any(ref.get("uid") in live for ref in refs)]
        if not orphans:
            return deleted
        for obj in orphans:
            obj.delete()
            deleted += 1


def left_behind(emulator: km.KubernetesEmulator, name: str) -> list[str]:
    return [f"{obj.raw.get('kind')} {obj.raw['metadata']['name']}"
            for obj in emulator.objects.values()
            if not obj.deleted
            and (obj.raw.get("metadata", {}).get("labels") or {}).get(
                "voicefleet.dev/service") == name]


async def test_deleted_voiceservices_leave_no_orphans(
    emulator: km.KubernetesEmulator, start_operator: Start, api: Api, get_object: ObjectGetter
) -> None:
    run = await start_operator()
    bodies = {name: voiceservice(name) for name in ("live", "offline")}
    for body in bodies.values():
        await api("POST", VS_PATH, body)
    for name, body in bodies.items():
        await converged(get_object, name)
        # Only kopf's own finalizer (its per-object daemons need one); none of ours.
        assert get_object(VS, name)["metadata"]["finalizers"] == [KOPF_FINALIZER]
        for resource, child in children(name):
            owners = get_object(resource, child)["metadata"]["ownerReferences"]
            assert owners == [{
                "apiVersion": "voicefleet.dev/v1alpha1", "kind": "VoiceService",
                "name": name, "uid": body["metadata"]["uid"],
                "controller": True, "blockOwnerDeletion": True,
            }], (resource, child)

    # Deleted while the operator runs: kopf stops the daemons and lets it go at once.
    await api("DELETE", f"{VS_PATH}/live")
    assert await eventually(lambda: (VS, NAMESPACE, "live") not in emulator.objects
                     or emulator.objects[VS, NAMESPACE, "live"].deleted)
    # Deleted while the operator is down: Terminating until an operator releases it.
    await run.stop()
    await api("DELETE", f"{VS_PATH}/offline")
    assert get_object(VS, "offline")["metadata"]["deletionTimestamp"]
    await start_operator()
    assert await eventually(lambda: emulator.objects[VS, NAMESPACE, "offline"].deleted)
    collected = collect_garbage(emulator)
    assert collected == 2 * len(children("live"))
    await asyncio.sleep(1.0)  # two periodic passes after the collection: nothing comes back
    orphans = left_behind(emulator, "live") + left_behind(emulator, "offline")
    FIGURES["orphans left after VoiceService deletion"] += len(orphans)
    FIGURES["children garbage-collected through ownerReferences"] += collected
    assert orphans == []
    survived("VoiceService deleted (operator running, and operator down): no orphans")


# --- One bad spec among good ones -------------------------------------------------------

async def test_a_bad_spec_degrades_only_its_own_service(
    operator: km.KubernetesEmulator, api: Api, get_object: ObjectGetter
) -> None:
    bad = {
        "bad-range": voiceservice("bad-range", autoscaling={"minReplicas": 5, "maxReplicas": 2}),
        "bad-shape": voiceservice("bad-shape", batching="fast"),
    }
    for body in bad.values():
        await api("POST", VS_PATH, body)
    await api("POST", VS_PATH, voiceservice("good"))
    await converged(get_object, "good")
    for name in bad:
        degraded = await eventually(
            lambda n=name: condition(get_object, n, "Degraded")["status"] == "True"
            and condition(get_object, n, "Degraded")
        )
        assert degraded["reason"] == "InvalidSpec", name
        assert ("apps/v1/deployments", NAMESPACE, name) not in operator.objects

    # The good one is still served: a deleted child returns, a spec change lands.
    await api("DELETE", path_of("apps/v1/deployments", "good"))
    assert await eventually(lambda: get_object("apps/v1/deployments", "good"))
    await api("PATCH", f"{VS_PATH}/good", {"spec": {"autoscaling": {"maxReplicas": 7}}}, MERGE)
    assert await eventually(lambda: get_object("autoscaling/v2/horizontalpodautoscalers", "good")[
        "spec"]["maxReplicas"] == 7)
    isolated = [
        name for name in bad
        if condition(get_object, name, "Degraded")["status"] == "True"
        and ("apps/v1/deployments", NAMESPACE, name) not in operator.objects
    ]
    FIGURES["bad specs isolated (Degraded, others served)"] += len(isolated)
    assert isolated == list(bad)
    record_duplicates(operator, "good")
    survived("two bad specs beside a good VoiceService: only they are Degraded")
