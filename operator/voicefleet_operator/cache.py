"""The model cache's children and the server pod's part in it, built by pure functions.

With `spec.model.cache` the operator makes a PersistentVolumeClaim `<name>-models` (unless
`existingClaim` names one) and a one-shot Job `<name>-model-fetch` that runs
`voicefleet fetch-model` into one directory of it per model and revision (the layout is
voicefleet/modelcache.py's). Server pods mount the claim read-only, load offline from it,
and wait in an init container (`voicefleet fetch-model --wait`) until the fetch's marker is
there, so no pod starts serving before the cache holds the model. A new variant or revision
means a new directory and a new Job (Job templates are immutable: the old one is deleted);
pods still running the old model keep their directory meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from voicefleet import modelcache
from voicefleet_operator import naming, pods
from voicefleet_operator.spec import ServiceSpec

MODELS_DIR = "/models"
MODELS_VOLUME = "models"
# Which model directory a fetch Job fills: a changed value means the Job must be replaced.
SLOT_ANNOTATION = f"{naming.GROUP}/model-cache-slot"
# A failed fetch is retried by the Job a few times, then stays Failed (ModelCached says why)
# until the Job is deleted: the next reconcile makes a fresh one.
FETCH_BACKOFF_LIMIT = 4
GATE_CONTAINER = "wait-for-model"
SCRATCH_DIR = "/cache"


@dataclass(frozen=True)
class CachePlan:
    """Where the spec's model lives in the cache, and how the server is pointed at it."""

    claim: str
    slot: str
    directory: str
    load: str  # VOICEFLEET_MODEL for the server
    hub: bool  # a Hugging Face id, stored in the Hub's cache layout (HF_HUB_CACHE)
    model: str
    revision: str | None

    @property
    def label(self) -> str:
        return f"{self.model}@{self.revision}" if self.revision else self.model


def plan(spec: ServiceSpec, name: str) -> CachePlan | None:
    cache = spec.model.cache
    if cache is None:
        return None
    slot = modelcache.slot_name(spec.model.variant, spec.model.revision)
    directory = f"{MODELS_DIR}/{slot}"
    return CachePlan(
        claim=cache.existing_claim or naming.models_claim_name(name),
        slot=slot,
        directory=directory,
        load=modelcache.load_target(spec.model.variant, directory),
        hub=modelcache.spelled_kind(spec.model.variant) == "hub",
        model=spec.model.variant,
        revision=spec.model.revision,
    )


def fetch_args(target: CachePlan) -> list[str]:
    args = ["--model", target.model]
    if target.revision:
        args += ["--revision", target.revision]
    return [*args, "--dir", target.directory]


def server_env(target: CachePlan) -> list[dict[str, Any]]:
    """Env the server needs to load from the cache, offline."""
    env = [{"name": "HF_HUB_OFFLINE", "value": "1"}]
    if target.hub:
        # from_pretrained finds the id (and its revision) in the Hub layout fetch-model wrote.
        env.append({"name": "HF_HUB_CACHE", "value": target.directory})
    return env


def volume(target: CachePlan, *, read_only: bool) -> dict[str, Any]:
    claim: dict[str, Any] = {"claimName": target.claim}
    if read_only:
        claim["readOnly"] = True
    return {"name": MODELS_VOLUME, "persistentVolumeClaim": claim}


def mount(*, read_only: bool) -> dict[str, Any]:
    found: dict[str, Any] = {"name": MODELS_VOLUME, "mountPath": MODELS_DIR}
    if read_only:
        found["readOnly"] = True
    return found


def gate_container(spec: ServiceSpec, target: CachePlan) -> dict[str, Any]:
    """The init container that holds a server pod until the cache holds its model."""
    container: dict[str, Any] = {
        "name": GATE_CONTAINER,
        "image": spec.image,
        "command": ["voicefleet", "fetch-model", *fetch_args(target), "--wait"],
        "volumeMounts": [mount(read_only=True)],
        # It only polls a file: a few MiB, no GPU.
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                      "limits": {"memory": "128Mi"}},
        "securityContext": dict(pods.CONTAINER_SECURITY),
    }
    if spec.image_pull_policy:
        container["imagePullPolicy"] = spec.image_pull_policy
    return container


def claim(spec: ServiceSpec, name: str, namespace: str) -> dict[str, Any] | None:
    """The cache's PersistentVolumeClaim, or None when the spec names an existing one.

    Created once and never patched: a claim's spec is immutable after binding (bar growing
    it, which needs a storage class that allows expansion)."""
    cache = spec.model.cache
    if cache is None or cache.existing_claim:
        return None
    body: dict[str, Any] = {
        "accessModes": list(cache.access_modes),
        "resources": {"requests": {"storage": cache.size}},
    }
    if cache.storage_class:
        body["storageClassName"] = cache.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": naming.models_claim_name(name),
            "namespace": namespace,
            "labels": naming.labels(name, naming.MODEL_FETCH),
        },
        "spec": body,
    }


def fetch_job(spec: ServiceSpec, name: str, namespace: str) -> dict[str, Any] | None:
    """The one-shot Job that fills the cache (None without a cache)."""
    target = plan(spec, name)
    if target is None:
        return None
    pod = spec.pod
    ours_env = [
        # Hub downloads and locks need a writable home; the image may set offline mode.
        {"name": "HF_HOME", "value": f"{SCRATCH_DIR}/huggingface"},
        {"name": "HF_HUB_OFFLINE", "value": "0"},
        {"name": "HOME", "value": SCRATCH_DIR},
    ]
    ours_mounts = [mount(read_only=False), {"name": "scratch", "mountPath": SCRATCH_DIR}]
    ours_volumes = [volume(target, read_only=False), {"name": "scratch", "emptyDir": {}}]
    container: dict[str, Any] = {
        "name": "fetch",
        "image": spec.image,
        "command": ["voicefleet", "fetch-model", *fetch_args(target)],
        "env": pods.merged_env(ours_env, pod),
        "volumeMounts": pods.merged_mounts(ours_mounts, pod),
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"},
                      "limits": {"memory": "1Gi"}},
        "securityContext": dict(pods.CONTAINER_SECURITY),
    }
    if spec.image_pull_policy:
        container["imagePullPolicy"] = spec.image_pull_policy
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": pods.merged_volumes(ours_volumes, pod),
        # The image's group owns what the fetch writes on a fresh volume; only the volume's
        # root is checked, so a full cache is not walked again on every start.
        "securityContext": pods.security_context(
            pod, {"fsGroup": pods.IMAGE_UID, "fsGroupChangePolicy": "OnRootMismatch"}),
        **pods.pod_fields(pod, scheduling=False),
    }
    # Same nodes as the server pods: a zonal volume is then made in a zone they can reach.
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in spec.tolerations]
    labels = naming.labels(name, naming.MODEL_FETCH)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": naming.model_fetch_name(name),
            "namespace": namespace,
            "labels": labels,
            "annotations": {SLOT_ANNOTATION: target.slot},
        },
        "spec": {
            "backoffLimit": FETCH_BACKOFF_LIMIT,
            "template": {
                "metadata": {
                    "labels": pods.merged_map(pod.labels, labels),
                    "annotations": dict(pod.annotations),
                },
                "spec": pod_spec,
            },
        },
    }


def job_outdated(desired: Mapping[str, Any], live: Mapping[str, Any]) -> bool:
    """Whether the live Job fetches another model or revision than `desired`: its template
    is immutable, so it must be deleted and made again. (Other changes, such as the image,
    do not matter to a fetch that already ran.)"""
    def slot(job: Mapping[str, Any]) -> Any:
        return ((job.get("metadata") or {}).get("annotations") or {}).get(SLOT_ANNOTATION)

    return slot(desired) != slot(live)


def job_state(job: Mapping[str, Any] | None) -> tuple[str, str]:
    """("missing" | "running" | "succeeded" | "failed", detail) of a fetch Job."""
    if job is None:
        return "missing", ""
    status = job.get("status") or {}
    if int(status.get("succeeded") or 0) > 0:
        return "succeeded", ""
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            return "failed", str(condition.get("message") or condition.get("reason") or "")
    return "running", ""
