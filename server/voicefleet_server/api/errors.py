"""One table from errors to HTTP answers, all in OpenAI's error shape.

Clients' mistakes are 4xx, load is 429/503 with Retry-After; nothing a client sends
can produce a 500 through these handlers (unexpected exceptions still answer in the
same shape, and are logged).
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from voicefleet_server.serving.errors import Overloaded, RateLimited, ServingError, Unavailable

log = logging.getLogger(__name__)


def error_response(
    status: int,
    message: str,
    type_: str,
    code: str | None = None,
    param: str | None = None,
    retry_after_s: float | None = None,
) -> JSONResponse:
    headers = (
        {} if retry_after_s is None else {"Retry-After": str(max(1, math.ceil(retry_after_s)))}
    )
    body = {"error": {"message": message, "type": type_, "code": code, "param": param}}
    return JSONResponse(body, status_code=status, headers=headers)


async def _serving_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServingError)
    retry = exc.retry_after_s if isinstance(exc, Overloaded | RateLimited | Unavailable) else None
    return error_response(exc.status, exc.message, exc.type, exc.code, exc.param, retry)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    location = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(location) or None
    kind = first.get("type", "")
    if kind == "json_invalid":
        message = "the request body is not valid JSON"
    elif kind == "extra_forbidden":
        message = f"unknown parameter {param!r}"
    elif kind == "missing":
        message = f"missing required parameter {param!r}"
    else:
        message = f"invalid {param or 'request'}: {first.get('msg', 'invalid value')}"
    return error_response(400, message, "invalid_request_error", "invalid_request", param)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(
        exc.status_code
    )
    return error_response(exc.status_code, str(exc.detail), "invalid_request_error", code)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal server error", "server_error", "internal_error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServingError, _serving_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
