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

SERVER_PORT = 8000
REDIS_PORT = 6379
REDIS_PASSWORD_KEY = "password"

# Child names append at most this suffix; Service names must stay DNS-1035 labels (63 chars).
_LONGEST_SUFFIX = "-redis"
MAX_NAME_LENGTH = 63 - len(_LONGEST_SUFFIX)


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


def server_name(name: str) -> str:
    """Deployment, Service, HPA and PDB of the server share the VoiceService's name."""
    return name


def redis_name(name: str) -> str:
    """Redis Deployment, Service and password Secret."""
    return f"{name}-redis"


def endpoint(name: str, namespace: str) -> str:
    return f"http://{server_name(name)}.{namespace}.svc:{SERVER_PORT}"
