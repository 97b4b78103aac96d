"""Kubernetes resource quantities (`8Gi`, `500M`, `1.5Gi`, `30`): the one parser that the
server (`--vram-budget`) and the operator (`spec.vram.budget`) share, so both accept and
refuse exactly the same spellings."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_QUANTITY = re.compile(r"^(?P<number>\d+(?:\.\d+)?|\.\d+)(?P<suffix>[A-Za-z]*)$")

SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


class QuantityError(ValueError):
    """Not a non-negative Kubernetes quantity; the message shows what was given."""


def parse_quantity(value: object) -> Decimal:
    """A non-negative quantity as an exact number (`'8Gi'` -> 8589934592)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise QuantityError(f"not a quantity: {value!r} (expected e.g. 8Gi, 512Mi, 2G)")
    match = _QUANTITY.match(str(value).strip())
    if match is None or match["suffix"] not in SUFFIXES:
        raise QuantityError(f"not a quantity: {value!r} (expected e.g. 8Gi, 512Mi, 2G)")
    try:
        return Decimal(match["number"]) * SUFFIXES[match["suffix"]]
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise QuantityError(f"not a number: {value!r}") from exc


def parse_bytes(value: object) -> int:
    """A memory quantity in whole bytes (fractions of a byte round down)."""
    return int(parse_quantity(value))
