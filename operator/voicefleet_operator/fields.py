"""Reading typed fields out of a raw VoiceService spec: integers in range, strings, choices,
string maps, lists of objects and quantities, each failing with a `SpecError` that names the
field (the message goes to the `Degraded` condition verbatim).

Shared by `spec` (the whole spec) and `podsettings` (spec.pod); no Kubernetes knowledge here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from voicefleet import quantity


class SpecError(ValueError):
    """The spec cannot be turned into children; the message tells the user what to fix."""


def section(raw: Mapping[str, Any], key: str, where: str = "spec") -> Mapping[str, Any]:
    """An optional object field (absent or null reads as empty)."""
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{where}.{key} must be an object, got {value!r}")
    return value


def integer(
    section: Mapping[str, Any], key: str, where: str, default: int, lo: int, hi: int
) -> int:
    value = section.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{where}.{key} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise SpecError(f"{where}.{key} must be between {lo} and {hi}, got {value}")
    return value


def string(section: Mapping[str, Any], key: str, where: str) -> str | None:
    """An optional string; empty reads as unset."""
    value = section.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise SpecError(f"{where}.{key} must be a string, got {value!r}")
    return value


def choice(section: Mapping[str, Any], key: str, where: str, choices: Sequence[str]) -> str:
    """One of `choices`; unset reads as the first."""
    value = section.get(key) or choices[0]
    if value not in choices:
        raise SpecError(f"{where}.{key} must be one of {', '.join(choices)}; got {value!r}")
    return str(value)


def string_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{where} must be an object, got {value!r}")
    return {str(k): str(v) for k, v in value.items()}


def object_list(
    value: Any, where: str, *, required: Sequence[str] = (), unique: str | None = None
) -> tuple[dict[str, Any], ...]:
    """A list of objects, each with the `required` string keys, none repeating `unique`
    (a repeated list-map key is an error under server-side apply)."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        raise SpecError(f"{where} must be a list of objects")
    seen: set[str] = set()
    for index, item in enumerate(value):
        for key in required:
            if not isinstance(item.get(key), str) or not item.get(key):
                raise SpecError(f"{where}[{index}].{key} is required (a string)")
        if unique is not None and (key_value := item.get(unique)) is not None:
            if key_value in seen:
                raise SpecError(f"{where}: {unique} {key_value!r} appears twice")
            seen.add(key_value)
    return tuple(dict(item) for item in value)


def parse_quantity(value: object, what: str) -> Decimal:
    """A non-negative Kubernetes quantity (`8Gi`, `500M`, `30`) as a number, read by the
    parser the server shares (voicefleet.quantity); `what` names the field in the error."""
    try:
        return quantity.parse_quantity(value)
    except quantity.QuantityError as exc:
        raise SpecError(f"{what} must be a quantity such as 8Gi: {exc}") from exc


def parse_resource_quantity(value: object, what: str) -> Decimal:
    """A resource request or limit: a quantity, or CPU millicores (`500m`), which only
    resources take (the shared parser is for memory sizes, where a milli-byte means nothing)."""
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, str) and len(text) > 1 and text.endswith("m") and text[-2].isdigit():
        return parse_quantity(text[:-1], what) / 1000
    return parse_quantity(value, what)
