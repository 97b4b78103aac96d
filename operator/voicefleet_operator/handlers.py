"""kopf handlers for VoiceService: create/update/resume and a periodic loop converge the
children to the spec and refresh status; a second loop per object runs the memory guard.

Thin by intent: what to build lives in `manifests`, what to restart in `guard`, how status
reads in `status`; this module sequences API calls (`kube`, `scrape`) around them.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import kopf
import urllib3

from voicefleet_operator import autoscalers, cache, guard, manifests, naming, scrape, status
from voicefleet_operator import retry as retry_module
from voicefleet_operator.config import OperatorConfig
from voicefleet_operator.kube import ApiException, Kube
from voicefleet_operator.metrics import OperatorMetrics
from voicefleet_operator.spec import ServiceSpec, SpecError, check_name, parse_spec

RESOURCE = (naming.GROUP, naming.VERSION, naming.PLURAL)
# What a failed API call looks like from the official client: an HTTP error or no answer.
API_ERRORS = (ApiException, urllib3.exceptions.HTTPError, OSError)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Keep kopf's bookkeeping in our own annotations; `.status` stays ours and schema-clean.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=naming.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=naming.GROUP, key="last-handled-configuration"
    )
    # Tests (and embedders) may hand in their own config and client through the memo.
    if memo.get("config") is None:
        memo.config = OperatorConfig.from_env()
    if not memo.config.cluster_scanning:
        settings.scanning.disabled = True
    if memo.get("kube") is None:
        memo.kube = await asyncio.to_thread(Kube.from_environment)
    # Shared by reference with every object's copy of the memo: see `end_loops`.
    memo.exiting = threading.Event()
    if memo.get("metrics") is None:
        memo.metrics = OperatorMetrics()
        if memo.config.metrics_port:
            memo.metrics.serve(memo.config.metrics_port)


@kopf.on.cleanup()
async def end_loops(memo: kopf.Memo, **_: Any) -> None:
    """A daemon kopf spawns while it is already stopping (an event processed late) never
    gets its stop signal and would hold the exit for kopf's 5 s hung-task timeout; every
    loop also watches this operator-wide flag."""
    exiting: threading.Event | None = memo.get("exiting")
    if exiting is not None:
        exiting.set()


def _running(stopped: kopf.DaemonStopped, memo: kopf.Memo) -> bool:
    exiting: threading.Event | None = memo.get("exiting")
    return not stopped and not (exiting is not None and exiting.is_set())


@dataclass
class PassResult:
    """What one reconcile pass found, for status and logs."""

    spec_error: str | None = None
    api_error: str | None = None
    # (reason, message) of something the cluster lacks for this spec (KEDA).
    blocked: tuple[str, str] | None = None
    deployment: Mapping[str, Any] | None = None
    cache: status.CacheView | None = None
    changes: list[str] = field(default_factory=list)


def _api_error(exc: Exception) -> str:
    if isinstance(exc, ApiException):
        return f"API answered {exc.status} {exc.reason}: {(exc.body or '')[:300]}"
    return f"API unreachable: {exc}"


def _converge(kube: Kube, config: OperatorConfig, body: kopf.Body) -> PassResult:
    """Blocking: build every child, create or patch it, and read the server Deployment."""
    name, namespace = body.metadata["name"], body.metadata["namespace"]
    result = PassResult()
    try:
        check_name(name)
        spec = parse_spec(body.get("spec") or {}, default_image=config.server_image)
        check_name(name, spec)
    except SpecError as exc:
        # Keep whatever children the last good spec made; say what to fix.
        result.spec_error = str(exc)
    else:
        try:
            _apply_children(kube, config, body, spec, result)
        except API_ERRORS as exc:
            result.api_error = _api_error(exc)
    try:
        result.deployment = kube.get("apps/v1", "deployments", namespace, naming.server_name(name))
    except API_ERRORS as exc:
        result.api_error = result.api_error or _api_error(exc)
    return result


KEDA_MISSING = (
    "KedaMissing",
    "autoscaling.mode is keda, but this cluster serves no keda.sh/v1alpha1 ScaledObject:"
    " install KEDA (https://keda.sh) or choose mode hpa or none. Until then the previous"
    " autoscaler, if any, stays in place.",
)


def _apply_children(
    kube: Kube, config: OperatorConfig, body: kopf.Body, spec: ServiceSpec, result: PassResult
) -> None:
    name, namespace = body.metadata["name"], body.metadata["namespace"]
    if spec.redis.managed:
        secret = manifests.redis_secret(name, namespace, secrets.token_hex(24))
        kopf.adopt(secret, owner=body)
        if kube.create_once(secret):
            result.changes.append(f"created Secret {secret['metadata']['name']}")
    # Before the Deployment: its pods mount the claim and wait for the fetch.
    _apply_model_cache(kube, body, spec, result)
    keda_ready = spec.autoscaling.mode != "keda" or kube.serves(
        autoscalers.KEDA_API_VERSION, "scaledobjects")
    if not keda_ready:
        result.blocked = KEDA_MISSING
    for child in manifests.children(spec, name, namespace, redis_image=config.redis_image):
        if child["kind"] == "ScaledObject" and not keda_ready:
            continue
        kopf.adopt(child, owner=body)
        outcome = kube.ensure(child)
        label = f"{child['kind']} {child['metadata']['name']}"
        if outcome.action == "created":
            result.changes.append(f"created {label}")
        elif outcome.action == "patched":
            result.changes.append(f"patched {label} ({', '.join(outcome.drifted[:5])})")
    # The other modes' autoscalers go once the wanted one is in place, so that the count is
    # never left to two autoscalers, nor dropped to none when KEDA is missing.
    if keda_ready:
        for api_version, plural, kind in autoscalers.retired(spec):
            if kube.delete_owned(api_version, plural, namespace, naming.server_name(name),
                                 body.metadata["uid"]):
                result.changes.append(
                    f"deleted {kind} {naming.server_name(name)}"
                    f" (autoscaling.mode is {spec.autoscaling.mode})"
                )


def _apply_model_cache(
    kube: Kube, body: kopf.Body, spec: ServiceSpec, result: PassResult
) -> None:
    """The cache's claim (created once) and fetch Job (replaced when the model or revision
    changes, deleted when the cache is turned off); what they look like goes to status."""
    name, namespace, uid = body.metadata["name"], body.metadata["namespace"], body.metadata["uid"]
    job_name = naming.model_fetch_name(name)
    target = cache.plan(spec, name)
    if target is None:
        # The claim stays (it holds data; it goes with the VoiceService): only the Job goes.
        if kube.delete_owned("batch/v1", "jobs", namespace, job_name, uid):
            result.changes.append(f"deleted Job {job_name} (no model cache any more)")
        return
    live_claim = kube.get("v1", "persistentvolumeclaims", namespace, target.claim)
    claim = cache.claim(spec, name, namespace)
    if live_claim is None and claim is not None:
        kopf.adopt(claim, owner=body)
        if kube.create_once(claim):
            result.changes.append(f"created PersistentVolumeClaim {target.claim}")
        live_claim = kube.get("v1", "persistentvolumeclaims", namespace, target.claim)
    job = cache.fetch_job(spec, name, namespace)
    assert job is not None  # a plan means a Job
    kopf.adopt(job, owner=body)
    live_job = kube.get("batch/v1", "jobs", namespace, job_name)
    if (
        live_job is not None
        and cache.job_outdated(job, live_job)
        and kube.delete_owned("batch/v1", "jobs", namespace, job_name, uid)
    ):
        result.changes.append(f"deleted Job {job_name} (the spec wants {target.label})")
        live_job = None
    if live_job is None and kube.create_once(job):
        result.changes.append(f"created Job {job_name} (fetches {target.label})")
    result.cache = status.CacheView(target, job_name, live_job, live_claim)


def _object_lock(memo: kopf.Memo) -> asyncio.Lock:
    # kopf gives every object its own shallow copy of the memo: one lock per VoiceService,
    # so the update handler and the periodic loop never interleave their writes.
    if memo.get("lock") is None:
        memo.lock = asyncio.Lock()
    lock: asyncio.Lock = memo.lock
    return lock


async def _update_status(
    memo: kopf.Memo,
    body: kopf.Body,
    compute: Callable[[Mapping[str, Any]], dict[str, Any]],
) -> None:
    """Read-modify-write of `.status`; call with the object's lock held.

    Two writers (reconcile and guard) share the `conditions` list and a merge patch replaces
    lists whole, so each reads the freshest status from the API rather than the watched
    body, which can lag behind the other writer's last patch.
    """
    kube: Kube = memo.kube
    namespace, name = body.metadata["namespace"], body.metadata["name"]
    fresh = await asyncio.to_thread(kube.get, naming.API_VERSION, naming.PLURAL, namespace, name)
    if fresh is None:
        return  # deleted meanwhile; its children go with it
    current = dict(fresh.get("status") or {})
    new = compute(current)
    if status.needs_update(current, new):
        await asyncio.to_thread(
            kube.patch_status, naming.API_VERSION, naming.PLURAL, namespace, name, new
        )


async def reconcile(body: kopf.Body, memo: kopf.Memo, logger: logging.Logger | Any) -> PassResult:
    """One level-based pass: children to spec, then status from what is there now."""
    async with _object_lock(memo):
        result = await asyncio.to_thread(_converge, memo.kube, memo.config, body)
        for change in result.changes:
            logger.info(change)

        def compute(current: Mapping[str, Any]) -> dict[str, Any]:
            return status.reconciled_status(
                current,
                name=body.metadata["name"],
                namespace=body.metadata["namespace"],
                generation=body.metadata.get("generation"),
                deployment=result.deployment,
                spec_error=result.spec_error,
                api_error=result.api_error,
                now=datetime.datetime.now(datetime.UTC),
                blocked=result.blocked,
                cache_view=result.cache,
            )

        try:
            await _update_status(memo, body, compute)
        except API_ERRORS as exc:
            result.api_error = result.api_error or _api_error(exc)
        _observe(memo, body, result)
    return result


def _observe(memo: kopf.Memo, body: kopf.Body, result: PassResult) -> None:
    metrics: OperatorMetrics | None = memo.get("metrics")
    if metrics is None:
        return
    namespace, name = body.metadata["namespace"], body.metadata["name"]
    metrics.observe_service(namespace, name, body.get("spec") or {}, result.deployment)
    for kind, error in (("spec", result.spec_error), ("api", result.api_error)):
        if error:
            metrics.reconcile_errors.labels(namespace, name, kind).inc()


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE)
async def converge_on_change(
    body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, retry: int = 0, **_: Any
) -> None:
    result = await reconcile(body, memo, logger)
    if result.spec_error:
        # Not an exception: retrying cannot fix a spec; the user must edit it.
        logger.error(f"Invalid VoiceService spec: {result.spec_error}")
        kopf.warn(body, reason="InvalidSpec", message=result.spec_error)
    if result.api_error:
        # Each call already retried within itself; back off further across kopf's retries
        # (the periodic loop keeps converging meanwhile).
        config: OperatorConfig = memo.config
        delay = retry_module.handler_delay(
            retry, base=config.retry_base_delay, cap=config.retry_max_delay
        )
        raise kopf.TemporaryError(result.api_error, delay=delay)


async def _pause(stopped: kopf.DaemonStopped, memo: kopf.Memo, seconds: float) -> None:
    """Sleep up to `seconds`, waking within a fraction of a second once stopped.

    Plain sleeps rather than `stopped.wait(t)`: that spawns a helper task which, when kopf
    cancels the daemon at exit, ends in a TimeoutError that kopf re-raises at shutdown.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while _running(stopped, memo) and (left := deadline - loop.time()) > 0:
        await asyncio.sleep(min(left, 0.25))


@kopf.on.delete(*RESOURCE, optional=True)
async def forget_metrics(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A deleted VoiceService's series go too (no finalizer: nothing to wait for)."""
    metrics: OperatorMetrics | None = memo.get("metrics")
    if metrics is not None:
        metrics.forget(body.metadata["namespace"], body.metadata["name"])


@kopf.daemon(*RESOURCE, cancellation_backoff=2, cancellation_timeout=5)
async def converge_periodically(
    stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger,
    **_: Any,
) -> None:
    """Recreates deleted children, reverts hand edits, keeps replica counts in status."""
    while _running(stopped, memo):
        await _pause(stopped, memo, memo.config.reconcile_interval)
        if not _running(stopped, memo):
            break
        result = await reconcile(body, memo, logger)
        if result.api_error:
            logger.warning(f"Periodic reconcile failed: {result.api_error}")


def _last_restart(current: Mapping[str, Any]) -> float | None:
    stamp = (current.get("memoryGuard") or {}).get("lastRestart")
    if not stamp:
        return None
    try:
        return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


async def guard_round(
    state: guard.GuardState,
    body: kopf.Body,
    memo: kopf.Memo,
    session: aiohttp.ClientSession,
    logger: logging.Logger | Any,
) -> guard.GuardState:
    """Read every server pod's memory once and restart at most one pod."""
    config: OperatorConfig = memo.config
    kube: Kube = memo.kube
    name, namespace = body.metadata["name"], body.metadata["namespace"]
    try:
        spec = parse_spec(body.get("spec") or {}, default_image=config.server_image)
    except SpecError:
        return state  # the reconciler reports it; no guard without a valid watermark
    policy = guard.Policy(
        watermark_percent=spec.vram.watermark_percent,
        sustain_seconds=spec.vram.sustain_seconds,
        cooldown_seconds=config.guard_cooldown,
    )
    pods = await asyncio.to_thread(
        kube.list_pods, namespace, naming.selector(name, naming.SERVER)
    )
    urls = {
        pod["metadata"]["name"]: url
        for pod in pods
        if (url := guard.metrics_url(pod, naming.SERVER_PORT)) is not None
    }
    readings = await scrape.read_pods(session, urls, config.guard_timeout)
    now = time.time()
    state, decision = guard.decide(
        state, readings, now, policy, restart_in_progress=guard.terminating(pods)
    )
    restarted: str | None = None
    if decision.restart is not None:
        outcome = await asyncio.to_thread(kube.evict, namespace, decision.restart, logger)
        if outcome in ("evicted", "deleted"):
            restarted = decision.restart
            state = guard.restarted(state, restarted, now)
            if (metrics := memo.get("metrics")) is not None:
                metrics.guard_restarts.labels(namespace, name).inc()
            logger.warning(decision.message)
            await asyncio.to_thread(
                kube.post_event, body, reason="MemoryGuardRestart",
                message=decision.message, type_="Warning",
            )
        else:
            logger.info(f"Restart of {decision.restart} not done yet: {outcome}.")

    def compute(current: Mapping[str, Any]) -> dict[str, Any]:
        return status.guard_status(
            current,
            over=decision.over,
            restarted=restarted,
            message=decision.message,
            now=datetime.datetime.now(datetime.UTC),
            generation=body.metadata.get("generation"),
        )

    async with _object_lock(memo):
        await _update_status(memo, body, compute)
    return state


@kopf.daemon(*RESOURCE, cancellation_backoff=2, cancellation_timeout=5)
async def memory_guard(
    stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger,
    **_: Any,
) -> None:
    """The NVML watermark: restart pods whose GPU memory stays above it."""
    # Resume the cool-down across operator restarts from what status remembers.
    state = guard.GuardState(last_restart=_last_restart(body.get("status") or {}))
    async with aiohttp.ClientSession() as session:
        while _running(stopped, memo):
            try:
                state = await guard_round(state, body, memo, session, logger)
            except API_ERRORS as exc:
                logger.warning(f"Memory guard round failed: {_api_error(exc)}")
            await _pause(stopped, memo, memo.config.guard_interval)
