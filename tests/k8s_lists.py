"""Kubernetes list-maps: lists that the API treats as maps keyed by a field (env by name,
volumeMounts by mountPath...). A repeated key is an error under server-side apply (Helm 4
applies that way) and silently drops an entry under client-side apply, so the chart and the
operator's builders are checked for repeats, list by list, without folding them into dicts.

Shared by tests/chart and tests/operator (this folder is on sys.path through its conftest).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

# Field name -> the key fields of its items, per the Kubernetes API's
# x-kubernetes-list-map-keys (or, where the API only says "must be unique", that field).
LIST_MAP_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "imagePullSecrets": ("name",),
    "resourceClaims": ("name",),
    "conditions": ("type",),
    "versions": ("name",),
}
# Ports are keyed by number and protocol (containers: containerPort, Services: port), and
# their names must be unique too: each is checked on its own.
PORT_KEYS: tuple[tuple[str, ...], ...] = (("containerPort", "protocol"), ("port", "protocol"),
                                          ("name",))


def _key(item: dict[str, Any], fields: tuple[str, ...]) -> tuple[Any, ...] | None:
    # Keyed by its first field (a container port has protocol but no `port`: not keyed by it).
    if fields[0] not in item:
        return None
    # protocol defaults to TCP where the API server fills it in.
    return tuple(item.get(f, "TCP" if f == "protocol" else None) for f in fields)


def _repeats(items: list[Any], fields: tuple[str, ...]) -> list[tuple[Any, ...]]:
    keys = [k for item in items if isinstance(item, dict) and (k := _key(item, fields))]
    return [key for key, count in Counter(keys).items() if count > 1]


def duplicate_list_map_keys(obj: Any, path: str = "") -> list[str]:
    """Every place in `obj` where a list-map repeats a key, as 'path: field=value'."""
    found: list[str] = []
    if isinstance(obj, dict):
        for name, value in obj.items():
            where = f"{path}.{name}"
            if isinstance(value, list):
                if name in LIST_MAP_KEYS:
                    keysets: tuple[tuple[str, ...], ...] = (LIST_MAP_KEYS[name],)
                elif name == "ports":
                    keysets = PORT_KEYS
                else:
                    keysets = ()
                for fields in keysets:
                    for key in _repeats(value, fields):
                        pairs = ", ".join(f"{f}={v}" for f, v in zip(fields, key, strict=True))
                        found.append(f"{where}: {pairs} repeated")
            found += duplicate_list_map_keys(value, where)
    elif isinstance(obj, list):
        for index, item in enumerate(obj):
            found += duplicate_list_map_keys(item, f"{path}[{index}]")
    return found
