"""Helpers shared by the operator tests (imported by conftest.py and test modules; a
plain module because tests/ is not a package)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kmock as km
from figures_plugin import group
from voicefleet_operator import naming
from voicefleet_operator.config import OperatorConfig
from voicefleet_operator.retry import Backoff

NAMESPACE = "default"
VS_RESOURCE = f"{naming.GROUP}/{naming.VERSION}/{naming.PLURAL}"

ObjectGetter = Callable[[str, str], dict[str, Any]]

# Short loops keep the suite fast; the code paths are the production ones.
TEST_CONFIG = OperatorConfig(
    server_image="example.test/voicefleet-server:test",
    reconcile_interval=0.5,
    guard_interval=0.2,
    guard_cooldown=60.0,
    guard_timeout=0.5,
    retry_base_delay=0.2,
    retry_max_delay=1.0,
)
# Our client's retries within one call, and kopf's for its own calls: the production
# shapes (exponential, Retry-After honoured) at test speed.
TEST_BACKOFF = Backoff(attempts=5, base=0.05, cap=0.4, max_retry_after=2.0)
KOPF_ERROR_BACKOFFS = (0.05, 0.1, 0.2, 0.4, 0.8)


def voiceservice(name: str = "tts", **spec: Any) -> dict[str, Any]:
    """A VoiceService as a user would apply it (uid included: kopf.adopt needs one)."""
    spec.setdefault("model", {"variant": "facebook/mms-tts-eng"})
    return {
        "apiVersion": naming.API_VERSION,
        "kind": naming.KIND,
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": str(uuid.uuid4()),
            "generation": 1,
            # kopf guards its patches with a JSON-patch `test` of resourceVersion; the
            # emulator never sets one, so the object brings its own.
            "resourceVersion": "1",
        },
        "spec": spec,
    }


class TimedOut(AssertionError):
    """`eventually` gave up; the message says what the check last returned or raised."""


async def eventually(
    check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05
) -> Any:
    """Poll `check` until it returns something truthy without raising; return that.

    Raises `TimedOut` after `timeout` seconds, naming what the last call returned or the
    exception it raised, so a check that never holds fails the test wherever it is called
    (with or without `assert`).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (KeyError, AssertionError, TypeError, IndexError, StopIteration) as exc:
            last = f"raised {type(exc).__name__}: {exc}"
        else:
            if result:
                return result
            last = f"returned {result!r}"
        if time.monotonic() > deadline:
            raise TimedOut(f"not true after {timeout:g} s; the check last {last}")
        await asyncio.sleep(interval)


async def settles(
    check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05
) -> bool:
    """Like `eventually`, but answers whether `check` came true in time instead of raising:
    for figures that count how many of several things happened (assert on the count)."""
    try:
        await eventually(check, timeout, interval)
    except TimedOut:
        return False
    return True


# Figures the reliability tests count: the `operator` group of the suite's figures plugin
# (tests/figures_plugin.py), printed after every run and written for `make figures`.
FIGURES = group("operator")


def survived(scenario: str) -> None:
    """Record a chaos scenario whose assertions all held (call it last in the test). Tests
    marked `chaos_scenario` are counted as run when they start (tests/operator/conftest.py)."""
    FIGURES.setdefault("chaos scenarios survived (which)", []).append(scenario)
    FIGURES["chaos scenarios survived"] += 1


@dataclass
class Fault:
    """Answer `status` instead of serving: every `every`-th request matching `method` and
    `path` (a regex searched in the URL path), `times` times in all."""

    method: str
    path: str
    status: int
    times: int
    every: int = 1
    retry_after: str | None = None
    seen: int = 0

    def hits(self, request: km.Request) -> bool:
        if request.method.value.upper() != self.method.upper() or self.times <= 0:
            return False
        if not re.search(self.path, str(request.url.path)):
            return False
        self.seen += 1
        return self.seen % self.every == 0


@dataclass
class Injected:
    id: int
    method: str
    path: str
    status: int


class FaultInjector:
    """Makes kmock's emulator answer API errors for selected requests.

    A reaction on every request, ahead of the emulator's own serving (which kmock registers
    as fallbacks): a request that hits a fault gets a Kubernetes `Status` error body (and
    Retry-After for 429); any other one passes on (NotImplementedError is kmock's "not
    mine"). kmock applies a write before any reaction answers, so an injected error on a
    create or patch is the harder case of a write that happened but whose answer was lost.
    """

    def __init__(self, emulator: km.KubernetesEmulator) -> None:
        self.emulator = emulator
        self.faults: list[Fault] = []
        self.injected: list[Injected] = []

    def add(self, method: str, path: str, status: int, *, times: int, every: int = 1,
            retry_after: str | None = None) -> Fault:
        fault = Fault(method, path, status, times, every, retry_after)
        self.faults.append(fault)
        # One reaction per fault: kmock keeps the headers a reaction once answered with.
        self.emulator << (lambda request: self._react(fault, request))
        return fault

    def clear(self) -> None:
        for fault in self.faults:
            fault.times = 0

    def _react(self, fault: Fault, request: km.Request) -> km.Response:
        if not fault.hits(request):
            raise NotImplementedError  # not injected: the next reaction or the emulator
        fault.times -= 1
        self.injected.append(
            Injected(request.id, request.method.value.upper(), str(request.url.path),
                     fault.status)
        )
        reason = {429: "TooManyRequests", 503: "ServiceUnavailable"}.get(
            fault.status, "InternalError")
        headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
        return km.Response(
            status=fault.status,
            headers=headers,
            payload={"apiVersion": "v1", "kind": "Status", "status": "Failure",
                     "reason": reason, "code": fault.status,
                     "message": f"injected by the test ({fault.status})"},
        )

    def unretried(self) -> list[Injected]:
        """Injected errors after which the same method and path never came again and
        passed: an error the operator gave up on rather than retried."""
        injected_ids = {i.id for i in self.injected}
        later = [(r.id, r.method.value.upper(), str(r.url.path)) for r in self.emulator
                 if r.id not in injected_ids]
        return [
            i for i in self.injected
            if not any(rid > i.id and m == i.method and p == i.path for rid, m, p in later)
        ]


def duplicates(emulator: km.KubernetesEmulator, service: str) -> list[str]:
    """Live objects of one kind labelled for `service` beyond the one expected per name
    role: any kind with more objects than the operator builds of it."""
    expected = {"Deployment": 2, "Service": 2, "Secret": 1, "HorizontalPodAutoscaler": 1,
                "PodDisruptionBudget": 1, "NetworkPolicy": 1, "Job": 1,
                "PersistentVolumeClaim": 1, "ScaledObject": 1}
    counts: Counter[str] = Counter()
    for obj in emulator.objects.values():
        if obj.deleted:
            continue
        labels = (obj.raw.get("metadata") or {}).get("labels") or {}
        if labels.get(naming.SERVICE_KEY) == service and obj.raw.get("kind") in expected:
            counts[obj.raw["kind"]] += 1
    return [f"{kind} x{n}" for kind, n in counts.items() if n > expected[kind]]
