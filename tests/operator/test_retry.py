"""API retries: the pure backoff decision, and `Kube` retrying real HTTP answers from
kmock's emulator (500s, 429 with Retry-After) until the call passes or it gives up."""

from __future__ import annotations

import asyncio

import kmock as km
import pytest
from operator_helpers import FIGURES, NAMESPACE, FaultInjector
from voicefleet_operator.kube import ApiException, Kube
from voicefleet_operator.retry import (
    Backoff,
    handler_delay,
    parse_retry_after,
    retry_delay,
)

pytestmark = pytest.mark.timeout(20)

POLICY = Backoff(attempts=4, base=0.5, cap=2.0, jitter=0.2, max_retry_after=10.0)


def test_delays_grow_exponentially_then_give_up() -> None:
    delays = [retry_delay(POLICY, attempt, 503) for attempt in range(1, 6)]
    assert delays == [0.5, 1.0, 2.0, None, None]


def test_cap_and_jitter() -> None:
    long = Backoff(attempts=10, base=0.5, cap=2.0, jitter=0.2)
    assert retry_delay(long, 8, 500) == 2.0
    assert retry_delay(long, 8, 500, rand=0.5) == pytest.approx(2.2)


def test_only_transient_answers_are_retried() -> None:
    for status in (429, 500, 502, 503, 504, None):
        assert retry_delay(POLICY, 1, status) is not None, status
    for status in (400, 401, 403, 404, 409, 422):
        assert retry_delay(POLICY, 1, status) is None, status
    # The eviction API's 429 is a PodDisruptionBudget's answer: its caller opts out.
    assert retry_delay(POLICY, 1, 429, retryable={500, 503}) is None


def test_retry_after_is_a_floor_unless_too_long() -> None:
    assert retry_delay(POLICY, 1, 429, 3.0) == 3.0
    assert retry_delay(POLICY, 3, 429, 1.0) == 2.0
    assert retry_delay(POLICY, 1, 429, 60.0) is None  # left to kopf's slower retry
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert parse_retry_after("-1") is None and parse_retry_after(None) is None


def test_handler_delay_backs_off_across_kopf_retries() -> None:
    assert [handler_delay(r, base=5, cap=60) for r in range(6)] == [5, 10, 20, 40, 60, 60]


@pytest.fixture()
def kube(emulator: km.KubernetesEmulator) -> Kube:
    sleeps: list[float] = []
    client = Kube.for_url(str(emulator.url), Backoff(attempts=4, base=0.01, cap=0.05))
    client._sleep = sleeps.append  # type: ignore[method-assign]  # record, don't wait
    client.sleeps = sleeps  # type: ignore[attr-defined]
    return client


SECRETS = f"/api/v1/namespaces/{NAMESPACE}/secrets"


def secret(name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": NAMESPACE}, "stringData": {"k": "v"}}


async def test_kube_retries_5xx_and_429_then_succeeds(
    emulator: km.KubernetesEmulator, kube: Kube
) -> None:
    faults = FaultInjector(emulator)
    faults.add("GET", r"/secrets/s1$", 500, times=2)
    faults.add("GET", r"/secrets/s1$", 429, times=1, retry_after="1")
    await asyncio.to_thread(kube.create_once, secret("s1"))
    found = await asyncio.to_thread(kube.get, "v1", "secrets", NAMESPACE, "s1")
    assert found is not None and found["metadata"]["name"] == "s1"
    assert kube.retried == 3 and kube.gave_up == 0
    assert kube.sleeps[2] >= 1.0  # type: ignore[attr-defined]  # Retry-After honoured
    assert not faults.unretried()
    FIGURES["API errors injected"] += len(faults.injected)
    FIGURES["API errors retried to success"] += len(faults.injected) - len(faults.unretried())


async def test_kube_gives_up_after_its_attempts_and_never_retries_a_404(
    emulator: km.KubernetesEmulator, kube: Kube
) -> None:
    faults = FaultInjector(emulator)
    faults.add("GET", r"/secrets/s2$", 503, times=10)
    with pytest.raises(ApiException) as error:
        await asyncio.to_thread(kube.request, "GET", f"{SECRETS}/s2")
    assert error.value.status == 503
    assert (kube.retried, kube.gave_up) == (3, 1)
    assert len(faults.injected) == 4
    assert await asyncio.to_thread(kube.get, "v1", "secrets", NAMESPACE, "absent") is None
    assert kube.retried == 3  # the 404 was an answer, not retried


async def test_a_create_whose_answer_was_lost_is_not_duplicated(
    emulator: km.KubernetesEmulator, kube: Kube
) -> None:
    # kmock stores the object, then the injected 500 loses the answer; the retried POST
    # meets a 409 and `ensure` compares with what is there instead.
    faults = FaultInjector(emulator)
    faults.add("POST", r"/secrets$", 500, times=1)
    created = await asyncio.to_thread(kube.create_once, secret("s3"))
    assert created is False  # the retry met the object its first attempt made: 409
    posts = [r for r in emulator if r.method == "POST"]
    assert len(posts) == 2
    assert len([k for k in emulator.objects if k[2] == "s3"]) == 1
    # `ensure` takes the same path: a lost create answer ends in a compare, not a copy.
    faults.add("POST", r"/secrets$", 500, times=1)
    outcome = await asyncio.to_thread(kube.ensure, secret("s4"))
    assert outcome.action == "unchanged"
    assert len([k for k in emulator.objects if k[2] == "s4"]) == 1
