"""Work for a caller who hangs up is dropped, not finished.

A whole-file answer is sent only once every segment is rendered, so a client that closes
its connection (a timeout, a cancelled page) would otherwise keep the model busy with audio
nobody receives, ahead of the requests that are still waiting. Streams need none of this:
their generator is closed when the client goes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import Response

_T = TypeVar("_T")

# nginx's status for "client closed request": nobody receives it, but access logs and
# request metrics tell a hang-up from an answer.
CLIENT_CLOSED_REQUEST = 499


def hung_up() -> Response:
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def unless_disconnected(request: Request, work: Awaitable[_T]) -> _T | None:
    """Await `work`; None if the client disconnected first, in which case `work` was
    cancelled (and with it the request's queued segments). Once the request body has been
    read, the server's next ASGI message for it is `http.disconnect`."""
    task = asyncio.ensure_future(work)

    async def hang_up() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        task.cancel()

    watcher = asyncio.ensure_future(hang_up())
    try:
        return await task
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled():
            return None  # the client hung up (this handler itself was not cancelled)
        raise
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
