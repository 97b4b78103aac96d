"""When to retry a failed Kubernetes API call, and after how long: pure functions, no I/O.

The API server answers 429 (API priority and fairness, or a client-side rate limit) and 5xx
(etcd leader changes, webhook timeouts, upgrades) in normal operation; both mean "try
again". `Kube` retries such answers a few times within one call (exponential backoff with
jitter, never shorter than the server's Retry-After); when a call still fails, the handler
raises kopf's TemporaryError with `handler_delay`, a slower backoff across kopf retries.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass

# Answers that say nothing about the request itself: the same request may succeed later.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Backoff:
    """Retries of one API call: `attempts` tries in all, delays base * 2^n capped at `cap`,
    each stretched by up to `jitter` (a fraction) so that replicas do not retry in step."""

    attempts: int = 4
    base: float = 0.5
    cap: float = 8.0
    jitter: float = 0.2
    # A Retry-After longer than this is not waited out inside one call: the call fails and
    # kopf's own (slower) retry takes over, so a handler never blocks for minutes.
    max_retry_after: float = 10.0


DEFAULT_BACKOFF = Backoff()


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the API server sends an integer); None if absent or a date."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def retry_delay(
    policy: Backoff,
    attempt: int,
    status: int | None,
    retry_after: float | None = None,
    *,
    retryable: Collection[int] = RETRYABLE_STATUSES,
    rand: float = 0.0,
) -> float | None:
    """Seconds to wait before trying again after failed attempt number `attempt` (1-based),
    or None to give up now.

    `status` is the HTTP status, or None when no answer came (refused, reset, timed out).
    `rand` in [0, 1) picks the jitter; callers pass `random.random()`.
    """
    if attempt >= policy.attempts:
        return None
    if status is not None and status not in retryable:
        return None
    delay = min(policy.cap, policy.base * 2 ** (attempt - 1)) * (1 + policy.jitter * rand)
    if retry_after is not None:
        if retry_after > policy.max_retry_after:
            return None
        delay = max(delay, retry_after)
    return delay


def handler_delay(retry: int, *, base: float = 5.0, cap: float = 120.0) -> float:
    """kopf's delay before re-running a handler whose API calls kept failing: `retry` is
    kopf's count of earlier retries (0 on the first failure)."""
    return float(min(cap, base * 2 ** max(0, retry)))


def jitter() -> float:
    return random.random()
