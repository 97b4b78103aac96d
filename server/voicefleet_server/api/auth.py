"""Optional API keys, read from `Authorization: Bearer <key>` as OpenAI clients send them.

Keys come from `--api-key` (comma-separated) and `--api-key-file` (one a line: a mounted
Kubernetes Secret, re-read when the kubelet updates it). With neither set the server is
open. Probes and metrics stay open for the cluster. Keys are compared as SHA-256 digests
with `hmac.compare_digest` (constant time, whatever the candidate's length), checked
against every key without stopping early, and never logged or echoed.

An accepted request carries its caller as a `Principal` (serving/tenancy.py) in the ASGI
scope's state: the key's owner id, and whether it is `--admin-api-key`, which is accepted
like any key and sees every key's voices and jobs.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from voicefleet_server.api.errors import error_response
from voicefleet_server.serving.tenancy import ANYONE, Principal, key_id

log = logging.getLogger(__name__)

# The cluster's probes and Prometheus carry no key; the playground page is static.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/"})
RELOAD_EVERY_S = 2.0


def parse_keys(text: str) -> list[str]:
    """Keys separated by commas or newlines; blank entries and `#` comment lines ignored."""
    keys: list[str] = []
    for line in text.splitlines():
        if line.strip().startswith("#"):
            continue
        keys.extend(k.strip() for k in line.split(",") if k.strip())
    return keys


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class ApiKeys:
    """The accepted keys (as digests), from the settings and, optionally, a file."""

    def __init__(self, inline: str | None, path: str | None, admin: str | None = None) -> None:
        self._inline = [_digest(k) for k in parse_keys(inline or "")]
        self._admin = _digest(admin) if admin else None
        self._path = Path(path) if path else None
        self._from_file: list[bytes] = []
        self._file_state: tuple[float, int] | None = None
        self._checked_at = 0.0
        if self._path is not None:
            # A Secret that is not mounted is a broken deployment: refuse to start open.
            if not self._reload():
                raise RuntimeError(f"cannot read API keys from {self._path}")
            if not self._from_file:
                raise RuntimeError(f"no API keys in {self._path}")
        log.info(
            "API keys: %s",
            "off"
            if not self.enabled
            else f"{len(self._inline) + len(self._from_file)} key(s)"
            + (" and an admin key" if self._admin else ""),
        )

    @property
    def enabled(self) -> bool:
        return bool(self._inline) or self._path is not None or self._admin is not None

    def _reload(self) -> bool:
        """Re-read the key file if it changed; False when it cannot be read (keys kept)."""
        assert self._path is not None
        try:
            stat = os.stat(self._path)
            state = (stat.st_mtime, stat.st_size)
            if state != self._file_state:
                self._from_file = [
                    _digest(k) for k in parse_keys(self._path.read_text(encoding="utf-8"))
                ]
                self._file_state = state
        except OSError as exc:
            log.warning("cannot read the API key file %s: %s", self._path, exc.strerror)
            return False
        return True

    def accepts(self, candidate: str) -> bool:
        return self.identify(candidate) is not None

    def identify(self, candidate: str) -> Principal | None:
        """The caller a key stands for, or None when it is not accepted."""
        if self._path is not None and time.monotonic() - self._checked_at > RELOAD_EVERY_S:
            self._checked_at = time.monotonic()
            self._reload()
        probe = _digest(candidate)
        match = False
        for key in (*self._inline, *self._from_file):
            match |= hmac.compare_digest(probe, key)
        admin = self._admin is not None and hmac.compare_digest(probe, self._admin)
        if not (match or admin):
            return None
        return Principal(key_id(candidate), admin=admin)


def caller(scope: Scope) -> Principal:
    """The principal the middleware accepted for this request (ANYONE with keys off)."""
    found = scope.get("state", {}).get(PRINCIPAL)
    return found if isinstance(found, Principal) else ANYONE


PRINCIPAL = "voicefleet.principal"


def bearer_token(authorization: bytes | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class ApiKeyMiddleware:
    """Answers 401 in OpenAI's shape before a request without a valid key reaches a route
    (and before its body is read)."""

    def __init__(self, app: ASGIApp, keys: ApiKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys.enabled or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        token = bearer_token(dict(scope.get("headers", [])).get(b"authorization"))
        principal = None if token is None else self.keys.identify(token)
        if token is None:
            response = error_response(
                401,
                "You didn't provide an API key. Send it as `Authorization: Bearer <key>`.",
                "invalid_request_error",
                "missing_api_key",
            )
        elif principal is None:
            response = error_response(
                401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
            )
        else:
            scope.setdefault("state", {})[PRINCIPAL] = principal
            await self.app(scope, receive, send)
            return
        response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)
