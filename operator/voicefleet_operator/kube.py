"""The few Kubernetes API calls the operator makes, as plain dicts over the official client's
transport (auth, TLS, kubeconfig or in-cluster config).

Blocking by design (the official client is synchronous): handlers run these through
`asyncio.to_thread`. Writes are create or JSON merge patch, never PUT: a merge patch only
touches the fields we build, so defaults and other controllers' fields survive. 429 and 5xx
answers and lost connections are retried with backoff (`retry`); every write is safe to
repeat (a create whose first answer was lost comes back 409 and is compared instead).
"""

from __future__ import annotations

import datetime
import json
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import kubernetes
import urllib3

from voicefleet_operator import manifests
from voicefleet_operator.retry import (
    DEFAULT_BACKOFF,
    RETRYABLE_STATUSES,
    Backoff,
    jitter,
    parse_retry_after,
    retry_delay,
)

ApiException = kubernetes.client.ApiException
log = logging.getLogger(__name__)
MERGE_PATCH = "application/merge-patch+json"

# Kinds the operator writes, and their REST plural.
_PLURALS = {
    "Deployment": "deployments",
    "Service": "services",
    "Secret": "secrets",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "Event": "events",
    "Job": "jobs",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "NetworkPolicy": "networkpolicies",
    "ScaledObject": "scaledobjects",
}


def resource_path(api_version: str, plural: str, namespace: str, name: str | None = None) -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


def object_path(obj: Mapping[str, Any], *, named: bool = True) -> str:
    meta = obj["metadata"]
    return resource_path(
        obj["apiVersion"],
        _PLURALS[obj["kind"]],
        meta["namespace"],
        meta["name"] if named else None,
    )


def _paths(nulls: Mapping[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, value in nulls.items():
        out += _paths(value, f"{prefix}.{key}") if isinstance(value, Mapping) else [
            f"{prefix}.{key} (removed)"]
    return out


def _api_client(configuration: kubernetes.client.Configuration) -> kubernetes.client.ApiClient:
    # urllib3 would otherwise retry some answers on its own (429/503 with Retry-After),
    # unseen and uncounted; `Kube.request` owns every retry.
    configuration.retries = urllib3.Retry(total=0)
    return kubernetes.client.ApiClient(configuration)


@dataclass(frozen=True)
class Outcome:
    """What `ensure` did to one child: created, patched (with the drifted paths) or kept."""

    action: str
    obj: Mapping[str, Any]
    drifted: tuple[str, ...] = ()


class Kube:
    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        backoff: Backoff = DEFAULT_BACKOFF,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api = api_client
        self.backoff = backoff
        self._sleep = sleep
        # Failed attempts that were retried, and calls that gave up: for logs and tests.
        self.retried = 0
        self.gave_up = 0

    @classmethod
    def from_environment(cls) -> Kube:
        """In-cluster service account when inside a pod, else the kubeconfig."""
        try:
            kubernetes.config.load_incluster_config()
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()
        return cls(_api_client(kubernetes.client.Configuration.get_default_copy()))

    @classmethod
    def for_url(cls, url: str, backoff: Backoff = DEFAULT_BACKOFF) -> Kube:
        """A client for a local API server without auth (tests, `kubectl proxy`)."""
        configuration = kubernetes.client.Configuration(host=url.rstrip("/"))
        return cls(_api_client(configuration), backoff)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        retryable: Collection[int] = RETRYABLE_STATUSES,
    ) -> dict[str, Any]:
        """One API call; 429/5xx answers (those in `retryable`) and lost connections are
        retried with backoff, honouring Retry-After. Raises the last error on giving up."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._request_once(method, path, body, query, content_type)
            except ApiException as exc:
                headers = exc.headers or {}
                status: int | None = exc.status
                wait = parse_retry_after(headers.get("Retry-After"))
                error: Exception = exc
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                status, wait, error = None, None, exc
            delay = retry_delay(
                self.backoff, attempt, status, wait, retryable=retryable, rand=jitter()
            )
            if delay is None:
                if status is None or status in retryable:
                    self.gave_up += 1
                raise error
            self.retried += 1
            log.debug("%s %s failed (%s); retry %d in %.2fs", method, path,
                      status or error, attempt, delay)
            self._sleep(delay)

    def _request_once(
        self,
        method: str,
        path: str,
        body: Any,
        query: Mapping[str, str] | None,
        content_type: str,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        if query:
            path = f"{path}?{urlencode(query)}"
        _, url, headers, body, _ = self.api.param_serialize(
            method=method,
            resource_path=path,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(method, url, header_params=headers, body=body,
                                     _request_timeout=30)
        response.read()
        text = response.data.decode("utf-8") if response.data else ""
        if not 200 <= response.status <= 299:
            error = ApiException(status=response.status, reason=response.reason, body=text)
            error.headers = response.getheaders()  # case-insensitive
            raise error
        return json.loads(text) if text else {}

    def ensure(self, desired: Mapping[str, Any]) -> Outcome:
        """Create `desired`, or merge-patch it back where the live object drifted, removing
        what the operator wrote last time and builds no more (see manifests.LAST_APPLIED)."""
        desired = manifests.with_last_applied(desired)
        try:
            live = self.request("GET", object_path(desired))
        except ApiException as exc:
            if exc.status != 404:
                raise
            try:
                return Outcome("created", self.request("POST", object_path(desired, named=False),
                                                       desired))
            except ApiException as exc2:
                # Someone (a parallel handler, a retry) created it first: compare with theirs.
                if exc2.status != 409:
                    raise
                live = self.request("GET", object_path(desired))
        drifted = manifests.drift(desired, live)
        previous = manifests.last_applied(live)
        nulls = manifests.removals(previous, desired) if previous else {}
        # Only what is still there needs removing (a patch of absent keys changes nothing).
        nulls = manifests.present(nulls, live)
        if not drifted and not nulls:
            return Outcome("unchanged", live)
        patch = manifests.merge_patch(desired, nulls)
        patched = self.request("PATCH", object_path(desired), patch, content_type=MERGE_PATCH)
        return Outcome("patched", patched, tuple(drifted) + tuple(_paths(nulls)))

    def create_once(self, obj: Mapping[str, Any]) -> bool:
        """Create `obj` unless it exists (409 is the normal answer after the first time)."""
        try:
            self.request("POST", object_path(obj, named=False), obj)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def get(
        self, api_version: str, plural: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        try:
            return self.request("GET", resource_path(api_version, plural, namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def delete_owned(
        self, api_version: str, plural: str, namespace: str, name: str, owner_uid: str
    ) -> bool:
        """Delete the object if it exists and `owner_uid` owns it (never someone else's
        object of the same name); its dependents go in the background. True if deleted."""
        live = self.get(api_version, plural, namespace, name)
        if live is None:
            return False
        owners = (live.get("metadata") or {}).get("ownerReferences") or []
        if not any(ref.get("uid") == owner_uid for ref in owners):
            log.info("Not deleting %s %s/%s: not ours", plural, namespace, name)
            return False
        try:
            self.request("DELETE", resource_path(api_version, plural, namespace, name),
                         query={"propagationPolicy": "Background"})
        except ApiException as exc:
            if exc.status == 404:  # gone meanwhile
                return False
            raise
        return True

    def serves(self, api_version: str, plural: str) -> bool:
        """Whether the API server knows the resource (is that CRD installed?): discovery,
        which every authenticated client may read."""
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        try:
            found = self.request("GET", base)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return any(r.get("name") == plural for r in found.get("resources") or [])

    def patch_status(
        self, api_version: str, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        path = resource_path(api_version, plural, namespace, name) + "/status"
        self.request("PATCH", path, {"status": status}, content_type=MERGE_PATCH)

    def list_pods(self, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """Pods carrying all `labels`. Filtered here too: not every API emulator implements
        label selectors, and a wrong pod would be a wrong restart."""
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        found = self.request(
            "GET", resource_path("v1", "pods", namespace), query={"labelSelector": selector}
        )
        return [
            pod
            for pod in found.get("items") or []
            if all(((pod.get("metadata") or {}).get("labels") or {}).get(k) == v
                   for k, v in labels.items())
        ]

    def evict(self, namespace: str, pod: str, logger: logging.Logger | None = None) -> str:
        """Restart `pod` through the Eviction API so PodDisruptionBudgets hold.

        Returns "evicted", "blocked" (a budget refused it for now: 429), "gone", or
        "deleted" where the cluster has no eviction subresource (a plain delete, last resort).
        """
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod, "namespace": namespace},
        }
        path = resource_path("v1", "pods", namespace, pod)
        try:
            # 429 here is the PodDisruptionBudget saying "not now": an answer, not a fault.
            self.request("POST", f"{path}/eviction", body,
                         retryable=RETRYABLE_STATUSES - {429})
            return "evicted"
        except ApiException as exc:
            if exc.status == 429:
                return "blocked"
            # 404 means either the pod is gone or the subresource does not exist; 405 means
            # eviction is not allowed here. Both end in a delete attempt, which tells apart.
            if exc.status not in (404, 405):
                raise
            if logger is not None:
                logger.warning(f"Eviction of pod {pod} answered {exc.status}; deleting it.")
        try:
            self.request("DELETE", path)
        except ApiException as exc:
            if exc.status == 404:
                return "gone"
            raise
        return "deleted"

    def post_event(
        self,
        involved: Mapping[str, Any],
        *,
        reason: str,
        message: str,
        type_: str = "Normal",
    ) -> None:
        """A core/v1 Event on `involved`, named explicitly (no generateName needed)."""
        meta = involved.get("metadata") or {}
        now = datetime.datetime.now(datetime.UTC)
        # An old-style Event (no eventTime): the new style demands reporting fields too.
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.{time.time_ns():x}",
                "namespace": meta["namespace"],
            },
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": "voicefleet-operator"},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            self.request("POST", object_path(event, named=False), event)
        except ApiException as exc:
            if exc.status != 409:  # a retry of a post whose first answer was lost
                raise
