"""Request bodies are read in full before any route sees them, within a size and a time limit.

The Content-Length check (app.py) refuses a declared oversized body at once; this catches
what it cannot: chunked bodies with no length (counted as they arrive, 413 as soon as
they pass the limit) and slow-loris clients that trickle a body (408 after
`--body-timeout-s`), so neither can hold a connection and a coroutine for ever. The limit
(app.py) is 1 MiB raised to fit the longest job input and a reference-audio upload: about
10 MB with the default settings. Buffering a body that size costs nothing the JSON or
multipart parser would not spend anyway.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voicefleet_server.api.errors import error_response


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers", [])) if scope["type"] == "http" else {}
        if b"content-length" not in headers and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # the client left before finishing its request
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        await self._refuse(
                            scope,
                            receive,
                            send,
                            413,
                            f"request body exceeds {self.max_body_bytes} bytes",
                            "request_too_large",
                        )
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await self._refuse(
                scope,
                receive,
                send,
                408,
                f"the request body did not arrive within {self.timeout_s:g}s",
                "request_timeout",
            )
            return
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(
        scope: Scope, receive: Receive, send: Send, status: int, message: str, code: str
    ) -> None:
        response = error_response(status, message, "invalid_request_error", code)
        # The rest of the body is never read: the connection cannot be reused.
        response.headers["Connection"] = "close"
        await response(scope, receive, send)
