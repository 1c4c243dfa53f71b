"""Hand a decoded request to the engine under the overload rules shared by ``/v1`` and ``/v2``.

The request's body bytes count as in flight while the engine works on it. Its deadline is the
server's ``CLCONV_REQUEST_TIMEOUT_S`` from arrival, or less when the client sends
``X-Request-Timeout`` or ``Request-Timeout`` (seconds). The deadline applies until the work
starts on a device, so a request still waiting then gets 504. A client that disconnects while
its request waits has the request dropped before it starts.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from contextlib import suppress
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from clconv.engine import Engine
from clconv.errors import ValidationError
from clconv.runtime.executor import StartConditions

TIMEOUT_HEADERS = ("x-request-timeout", "request-timeout")


def request_deadline(request: Request, server_timeout_s: float) -> float:
    """Return the ``time.monotonic()`` by which the request's work must start."""
    arrived = getattr(request.state, "arrived", None) or time.monotonic()
    timeout = server_timeout_s
    for header in TIMEOUT_HEADERS:
        raw = request.headers.get(header)
        if raw is None:
            continue
        try:
            requested = float(raw)
        except ValueError:
            requested = math.nan
        if not (requested > 0 and math.isfinite(requested)):
            raise ValidationError(
                f"the {header} header must be a positive number of seconds, got {raw!r}",
                header,
            )
        # A client may shorten the server's timeout, never extend it.
        timeout = min(timeout, requested)
    return float(arrived + timeout)


def check_declared_body(request: Request, engine: Engine) -> None:
    """Reject a body before it is read when its ``Content-Length`` would exceed the budget of
    bytes in flight (``CLCONV_MAX_INFLIGHT_BYTES``)."""
    declared = request.headers.get("content-length", "")
    engine.admission.check_body(int(declared) if declared.isdigit() else 0)


async def run_engine(request: Request, engine: Engine, op: str, body: Any) -> dict[str, Any]:
    """Run ``op`` on ``body`` in the thread pool with the request's deadline; drop the work if
    the client disconnects before it starts."""
    deadline = request_deadline(request, engine.settings.request_timeout_s)
    cancelled = threading.Event()
    watcher = asyncio.create_task(_watch_disconnect(request, cancelled))
    try:
        with engine.admission.hold_body(getattr(request.state, "body_bytes", 0)):
            conditions = StartConditions(deadline=deadline, cancelled=cancelled)
            result: dict[str, Any] = await run_in_threadpool(engine.run, op, body, conditions)
    finally:
        watcher.cancel()
        with suppress(asyncio.CancelledError):
            await watcher
    return result


async def _watch_disconnect(request: Request, cancelled: threading.Event) -> None:
    """Set ``cancelled`` when the server reports that the client disconnected.

    Once the body is read, the next ASGI message is ``http.disconnect``, so this waits on
    ``receive`` itself. ``Request.is_disconnected`` only peeks, and behind Starlette's
    ``BaseHTTPMiddleware`` the peek is cancelled before the message can arrive.
    """
    message = await request.receive()
    if message["type"] == "http.disconnect":
        cancelled.set()
