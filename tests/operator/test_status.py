"""Status: conditions from the Deployment, spec errors and the guard."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from voicefleet_operator import cache, status

T0 = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)


def conditions(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in result["conditions"]}


def deployment(replicas: int, ready: int, updated: int | None = None) -> dict[str, Any]:
    return {
        "metadata": {"generation": 2},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": 2,
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": replicas if updated is None else updated,
        },
    }


def reconciled(current: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "tts",
        "namespace": "speech",
        "generation": 3,
        "deployment": None,
        "spec_error": None,
        "api_error": None,
        "now": T0,
    }
    base.update(kwargs)
    return status.reconciled_status(current, **base)


def test_fresh_service_is_progressing() -> None:
    result = reconciled({})
    assert result["endpoint"] == "http://tts.speech.svc:8000"
    assert result["observedGeneration"] == 3
    assert (result["replicas"], result["readyReplicas"]) == (0, 0)
    found = conditions(result)
    assert [c["type"] for c in result["conditions"]] == [
        "Ready", "Progressing", "Degraded", "MemoryPressure"
    ]
    assert found["Ready"]["status"] == "False"
    assert found["Progressing"]["status"] == "True"
    assert found["Degraded"]["status"] == "False"
    assert found["MemoryPressure"]["status"] == "False"
    assert found["Ready"]["observedGeneration"] == 3


def test_ready_when_pods_ready_and_rollout_done() -> None:
    found = conditions(reconciled({}, deployment=deployment(2, 2)))
    assert found["Ready"]["status"] == "True"
    assert found["Progressing"]["status"] == "False"
    assert found["Progressing"]["reason"] == "Complete"


def test_rollout_in_progress() -> None:
    result = reconciled({}, deployment=deployment(3, 2, updated=1))
    found = conditions(result)
    assert (result["replicas"], result["readyReplicas"]) == (3, 2)
    assert found["Ready"]["status"] == "True"
    assert found["Progressing"]["reason"] == "RollingOut"
    assert "2/3" in found["Progressing"]["message"]


def test_spec_error_is_degraded_with_the_message() -> None:
    found = conditions(reconciled({}, spec_error="spec.vram.budget must be at least 1Mi"))
    assert found["Degraded"]["status"] == "True"
    assert found["Degraded"]["reason"] == "InvalidSpec"
    assert found["Degraded"]["message"] == "spec.vram.budget must be at least 1Mi"


def test_api_error_is_degraded() -> None:
    found = conditions(reconciled({}, api_error="API answered 403 Forbidden"))
    assert found["Degraded"]["reason"] == "ReconcileFailed"


def test_transition_time_moves_only_on_flips() -> None:
    first = reconciled({})
    again = reconciled(first, now=T1)
    assert again == first  # nothing changed: no patch needed
    assert not status.needs_update(first, again)
    flipped = reconciled(first, now=T1, deployment=deployment(1, 1))
    found = conditions(flipped)
    assert found["Ready"]["lastTransitionTime"] == "2025-01-01T00:05:00Z"
    assert found["Degraded"]["lastTransitionTime"] == "2025-01-01T00:00:00Z"


def test_reconcile_keeps_the_guards_condition() -> None:
    pressured = status.guard_status(
        reconciled({}), over=["p"], restarted=None, message="p at 95%", now=T0, generation=3
    )
    current = {**reconciled({}), **pressured}
    found = conditions(reconciled(current, now=T1))
    assert found["MemoryPressure"]["status"] == "True"


def test_guard_status_counts_restarts() -> None:
    current: dict[str, Any] = {"memoryGuard": {"restarts": 2}}
    result = status.guard_status(
        current, over=["p"], restarted="p", message="Restarting p", now=T1, generation=None
    )
    assert result["memoryGuard"] == {
        "restarts": 3,
        "lastRestart": "2025-01-01T00:05:00Z",
        "lastRestartPod": "p",
        "overWatermark": ["p"],
    }
    found = conditions(result)
    assert found["MemoryPressure"]["status"] == "True"
    assert found["MemoryPressure"]["reason"] == "AboveWatermark"
    calm = status.guard_status(result, over=[], restarted=None, message="ok", now=T1,
                               generation=None)
    assert calm["memoryGuard"]["restarts"] == 3
    assert conditions(calm)["MemoryPressure"]["status"] == "False"


def cache_view(job: dict[str, Any] | None, claim: dict[str, Any] | None) -> status.CacheView:
    target = cache.CachePlan(claim="tts-models", slot="m-x@v2-0123456789",
                             directory="/models/m-x@v2-0123456789", load="m/x", hub=True,
                             model="m/x", revision="v2")
    return status.CacheView(target, "tts-model-fetch", job, claim)


BOUND = {"status": {"phase": "Bound"}}


@pytest.mark.parametrize(("job", "claim", "flag", "reason", "says"), [
    (None, None, "False", "ClaimMissing", "tts-models does not exist"),
    (None, {"status": {"phase": "Pending"}}, "False", "ClaimPending", "access modes"),
    (None, BOUND, "False", "Fetching", "Job tts-model-fetch is fetching m/x@v2"),
    ({"status": {"active": 1}}, BOUND, "False", "Fetching", "server pods wait"),
    ({"status": {"succeeded": 1}}, BOUND, "True", "Cached", "m/x@v2 is cached (claim"),
    ({"status": {"conditions": [{"type": "Failed", "status": "True",
                                 "message": "BackoffLimitExceeded"}]}},
     BOUND, "False", "FetchFailed", "delete the Job to fetch again"),
])
def test_model_cached_condition(job: Any, claim: Any, flag: str, reason: str, says: str) -> None:
    found = conditions(reconciled({}, cache_view=cache_view(job, claim)))["ModelCached"]
    assert (found["status"], found["reason"]) == (flag, reason)
    assert says in found["message"]


def test_model_cached_goes_with_the_cache_but_not_on_a_bad_spec() -> None:
    cached = reconciled({}, cache_view=cache_view({"status": {"succeeded": 1}}, BOUND))
    assert "ModelCached" in conditions(cached)
    assert "ModelCached" in conditions(reconciled(cached, spec_error="spec.model: bad"))
    assert "ModelCached" in conditions(reconciled(cached, api_error="API answered 500"))
    assert "ModelCached" not in conditions(reconciled(cached))


def test_missing_keda_degrades_and_status_carries_the_selector() -> None:
    result = reconciled({}, blocked=("KedaMissing", "install KEDA"))
    found = conditions(result)["Degraded"]
    assert (found["status"], found["reason"], found["message"]) == (
        "True", "KedaMissing", "install KEDA")
    assert result["selector"] == (
        "app.kubernetes.io/component=server,voicefleet.dev/service=tts")
