"""Names and labels shared by every child of a VoiceService.

The API group, label keys and child names here are the ones DESIGN.md fixes; builders, the
guard's pod selection and the tests all read them from this one place.
"""

from __future__ import annotations

GROUP = "voicefleet.dev"
VERSION = "v1alpha1"
PLURAL = "voiceservices"
KIND = "VoiceService"
API_VERSION = f"{GROUP}/{VERSION}"

MANAGED_BY_KEY = "app.kubernetes.io/managed-by"
MANAGED_BY = "voicefleet"
SERVICE_KEY = "voicefleet.dev/service"
COMPONENT_KEY = "app.kubernetes.io/component"

SERVER = "server"
REDIS = "redis"
MODEL_FETCH = "model-fetch"

SERVER_PORT = 8000
REDIS_PORT = 6379
REDIS_PASSWORD_KEY = "password"

# Child names append at most this suffix; Service names must stay DNS-1035 labels (63 chars).
_LONGEST_SUFFIX = "-redis"
MAX_NAME_LENGTH = 63 - len(_LONGEST_SUFFIX)
# With a model cache, the fetch Job's name becomes a label value on its pods (63 chars).
_MODEL_FETCH_SUFFIX = "-model-fetch"
MAX_NAME_LENGTH_WITH_CACHE = 63 - len(_MODEL_FETCH_SUFFIX)


def labels(name: str, component: str) -> dict[str, str]:
    """Labels on every child object and pod template of VoiceService `name`."""
    return {
        MANAGED_BY_KEY: MANAGED_BY,
        SERVICE_KEY: name,
        COMPONENT_KEY: component,
        "app.kubernetes.io/name": "voicefleet",
        "app.kubernetes.io/instance": name,
    }


def selector(name: str, component: str) -> dict[str, str]:
    """The immutable subset of `labels` that Deployments, Services and PDBs select on."""
    return {SERVICE_KEY: name, COMPONENT_KEY: component}


def selector_string(name: str, component: str) -> str:
    """`selector` as a label selector string (status.selector, for the scale subresource)."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector(name, component).items()))


def server_name(name: str) -> str:
    """Deployment, Service, autoscaler (HPA or ScaledObject) and PDB of the server share the
    VoiceService's name."""
    return name


def models_claim_name(name: str) -> str:
    """The PersistentVolumeClaim the model cache lives on (unless spec names its own)."""
    return f"{name}-models"


def model_fetch_name(name: str) -> str:
    """The one-shot Job that fills the model cache."""
    return f"{name}{_MODEL_FETCH_SUFFIX}"


def redis_name(name: str) -> str:
    """Redis Deployment, Service, NetworkPolicy and password Secret."""
    return f"{name}-redis"


def endpoint(name: str, namespace: str) -> str:
    return f"http://{server_name(name)}.{namespace}.svc:{SERVER_PORT}"
