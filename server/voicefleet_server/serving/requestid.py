"""The id of the request being served, for logs that must name it (audio anomalies).

Set by the app's request middleware from a client's `X-Request-Id` (when it is a sane
token) or a fresh one, and echoed in the response header; a contextvar, so it follows the
request into the tasks it spawns. Jobs set their job id while they render.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

HEADER = "x-request-id"
_SANE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

current: ContextVar[str | None] = ContextVar("voicefleet_request_id", default=None)


def from_header(value: str | None) -> str:
    """The client's id when it is a plain token (no spaces, no control characters, at most
    128 characters: it ends up in logs), else a fresh one."""
    if value and _SANE.match(value):
        return value
    return uuid.uuid4().hex
