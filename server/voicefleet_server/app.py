"""The ASGI application and the process around it: lifespan, request metrics, and a
uvicorn server that drains on SIGTERM.

On SIGTERM the pod stops being ready and answers new speech requests with 503 +
Retry-After, finishes what it accepted (up to --drain-seconds), then exits. A second
signal exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voicefleet_server.api.auth import ApiKeyMiddleware, ApiKeys
from voicefleet_server.api.bodylimit import BodyLimitMiddleware
from voicefleet_server.api.errors import error_response, install_error_handlers
from voicefleet_server.api.routes import router
from voicefleet_server.config import ServerSettings
from voicefleet_server.metrics import Metrics
from voicefleet_server.serving import requestid
from voicefleet_server.serving.runtime import ModelRuntime, State
from voicefleet_server.serving.services import Services
from voicefleet_server.serving.speech import SpeechService

log = logging.getLogger(__name__)

# The floor of the body limit (a speech body of 4096 characters is ~20 KB); create_app
# raises it to fit the longest job input and a reference-audio upload.
MAX_BODY_BYTES = 1 << 20


class RequestMetricsMiddleware:
    """Counts requests by route template and status, and refuses oversized bodies early."""

    def __init__(
        self, app: ASGIApp, metrics: Metrics, max_body_bytes: int = MAX_BODY_BYTES
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            response = error_response(
                413,
                f"request body exceeds {self.max_body_bytes} bytes",
                "invalid_request_error",
                "request_too_large",
            )
            self.metrics.requests.labels(scope["path"], "413").inc()
            await response(scope, receive, send)
            return
        status = {"code": 500}
        # One id per request, for the logs that name it; echoed as X-Request-Id.
        sent_id = dict(scope.get("headers", [])).get(requestid.HEADER.encode())
        request_id = requestid.from_header(sent_id.decode("latin-1") if sent_id else None)
        token = requestid.current.set(request_id)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            requestid.current.reset(token)
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(path, str(status["code"])).inc()


def create_app(settings: ServerSettings) -> FastAPI:
    services = Services.create(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await services.start()
        try:
            yield
        finally:
            await services.close()

    app = FastAPI(
        title="voicefleet",
        version="0.1.0",
        description="Batched text-to-speech with an OpenAI-compatible API.",
        lifespan=lifespan,
    )
    # The one object routes reach (api/routes.py `services`).
    app.state.services = services
    install_error_handlers(app)
    app.include_router(router)
    # Job inputs may be far longer than speech inputs (JSON-escaped, up to 6 bytes a character).
    max_body = max(MAX_BODY_BYTES, settings.job_max_input_chars * 6 + (64 << 10))
    # Reference-audio uploads (POST /v1/audio/voices) plus their multipart framing.
    max_body = max(max_body, settings.voice_max_upload_bytes + (64 << 10))
    # Outermost first: count every answer; refuse declared oversized bodies; check the API
    # key before reading any body; then read the body within size and time limits.
    app.add_middleware(
        BodyLimitMiddleware, max_body_bytes=max_body, timeout_s=settings.body_timeout_s
    )
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    admin_key = settings.admin_api_key.get_secret_value() if settings.admin_api_key else None
    app.add_middleware(ApiKeyMiddleware, keys=ApiKeys(api_key, settings.api_key_file, admin_key))
    app.add_middleware(RequestMetricsMiddleware, metrics=services.metrics, max_body_bytes=max_body)
    return app


# After a failed model load the process exits non-zero (a broken voice file or a missing
# espeak-ng is a start-up failure, never a half-loaded pod); until then /healthz answers
# 500 with the reason, so a probe or a person can read why, as the log says too.
FAILED_LOAD_LINGER_S = 3.0


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose first SIGTERM/SIGINT drains instead of closing the listener,
    and which stops (`load_failed`) shortly after the model fails to load."""

    def __init__(
        self,
        config: uvicorn.Config,
        speech: SpeechService,
        drain_seconds: float,
        runtime: ModelRuntime | None = None,
    ) -> None:
        super().__init__(config)
        self._speech = speech
        self._runtime = runtime
        self._drain_seconds = drain_seconds
        self._drain_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.load_failed = False

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        if self._runtime is not None:
            self._watch_task = self._loop.create_task(self._exit_if_load_fails(self._runtime))
        await super().serve(sockets)

    async def _exit_if_load_fails(self, runtime: ModelRuntime) -> None:
        while runtime.state is State.LOADING and not self.should_exit:
            await asyncio.sleep(0.2)
        if runtime.state is State.FAILED:
            log.error(
                "start-up failed, exiting in %.0fs (GET /healthz says why until then): %s",
                FAILED_LOAD_LINGER_S,
                runtime.failure,
            )
            await asyncio.sleep(FAILED_LOAD_LINGER_S)
            self.load_failed = True
            self.should_exit = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if (
            self._drain_task is not None
            or self._loop is None
            or sig not in (signal.SIGTERM, signal.SIGINT)
        ):
            super().handle_exit(sig, frame)
            return
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        if self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        started = time.monotonic()
        log.info("draining: finishing accepted work for up to %.0fs", self._drain_seconds)
        self._speech.begin_drain()
        try:
            await asyncio.wait_for(self._speech.drained(), self._drain_seconds)
            log.info("drained in %.2fs", time.monotonic() - started)
        except TimeoutError:
            log.warning(
                "drain timed out after %.0fs; exiting with work in flight", self._drain_seconds
            )
        self.should_exit = True


def run(settings: ServerSettings) -> int:
    """Serve until stopped; the exit code: 0, or 1 when the model failed to load."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=max(1, int(settings.drain_seconds)),
    )
    services: Services = app.state.services
    server = DrainingServer(config, services.speech, settings.drain_seconds, services.runtime)
    server.run()
    return 1 if server.load_failed else 0
