"""The HTTP adapter: FastAPI routes over ``clconv.engine.Engine``.

Bodies are read as raw bytes (with a size cap counted while streaming), decoded with the standard
``json`` module, which accepts ``NaN`` and ``Infinity``, and handed to the engine. A body may
instead use the binary framing of ``clconv.api.binary``. Responses are written with
``allow_nan=True`` so NaN results survive. Every ``ClconvError`` becomes its status and
``{"error": {"code", "message", "field"}}``; so do routing errors. The Open Inference Protocol
routes under ``/v2`` live in ``clconv.api.v2`` and have their own error body.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from clconv import __version__
from clconv.api import v2
from clconv.api.binary import (
    attach_binary_tensors,
    frame_response,
    has_binary_tensors,
    require_object,
)
from clconv.api.bodies import framed_response, json_response, read_body, read_raw_body
from clconv.api.playground import mount_playground
from clconv.core.tensors import ENCODINGS, decode_tensor, encode_tensor
from clconv.engine import Engine
from clconv.errors import ClconvError, ValidationError
from clconv.settings import Settings

logger = logging.getLogger("clconv.api")

OPERATIONS = (
    "conv2d",
    "conv_transpose2d",
    "depthwise_separable_conv2d",
    "spatially_separable_conv2d",
    "pipeline",
)
ROUTING_CODES = {404: "not_found", 405: "method_not_allowed"}


def error_response(error: ClconvError, request_id: str | None = None) -> Response:
    headers = {"X-Request-ID": request_id} if request_id else None
    return json_response(error.to_body(), error.status, headers)


async def read_json_body(request: Request, max_bytes: int) -> dict[str, Any]:
    """Read a JSON object body; a framed body gets its binary tensors attached.

    A framed request's response is framed too unless the body sets ``output_encoding``.
    """
    received = await read_body(request, max_bytes)
    body = require_object(received.body)
    if received.binary is not None:
        attach_binary_tensors(body, received.binary)
        if body.get("output_encoding") is None:
            body["output_encoding"] = "binary"
    return body


def native_response(result: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    """Send a result as JSON, or framed when a tensor in it has ``binary`` encoding."""
    if has_binary_tensors(result):
        content, header_length = frame_response(result)
        return framed_response(content, header_length, headers)
    return json_response(result, headers=headers)


def server_timing(timings: dict[str, float]) -> str:
    return ", ".join(f"{name};dur={value:.3f}" for name, value in timings.items())


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """Build the FastAPI application; devices are discovered in the lifespan start-up."""
    settings = settings or Settings.from_env()
    engine = engine or Engine(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logger.info("clconv %s starting", __version__)
        if not engine.started:
            await run_in_threadpool(engine.start)
        yield
        logger.info("clconv stopping")

    app = FastAPI(
        title="clconv",
        version=__version__,
        summary="OpenCL convolutions behind a REST API, with device-measured timings.",
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.settings = settings
    _install_error_handlers(app)
    _install_request_logging(app)
    _add_routes(app, engine, settings)
    _add_echo_routes(app, settings)
    app.include_router(v2.create_router(engine, settings))
    mount_playground(app)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ClconvError)
    async def clconv_error(request: Request, error: ClconvError) -> Response:
        request_id = getattr(request.state, "request_id", None)
        log = logger.warning if error.status < 500 else logger.error
        log(
            "request %s %s rejected: %s %s (field %s): %s",
            request_id,
            request.url.path,
            error.status,
            error.code,
            error.field,
            error.message,
        )
        return error_response(error, request_id)

    @app.exception_handler(StarletteHTTPException)
    async def routing_error(request: Request, error: StarletteHTTPException) -> Response:
        code = ROUTING_CODES.get(error.status_code, "http_error")
        message = f"{request.method} {request.url.path}: {error.detail}"
        if error.status_code == 404:
            message += "; see /docs for the endpoints"
        body = {"error": {"code": code, "message": message, "field": "path"}}
        return json_response(body, error.status_code)


def _install_request_logging(app: FastAPI) -> None:
    @app.middleware("http")
    async def request_id_and_log(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex[:16]
        request.state.request_id = request_id
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:
            logger.exception("request %s %s failed", request_id, request.url.path)
            body = {
                "error": {
                    "code": "internal_error",
                    "message": f"internal error while serving request {request_id}; see the "
                    "server log",
                    "field": None,
                }
            }
            response = json_response(body, 500)
        response.headers["X-Request-ID"] = request_id
        logger.info(
            "request %s %s %s -> %d in %.1f ms",
            request_id,
            request.method,
            request.url.path,
            response.status_code,
            (time.perf_counter() - started) * 1e3,
        )
        return response


def _add_routes(app: FastAPI, engine: Engine, settings: Settings) -> None:
    @app.get("/healthz", summary="Liveness and readiness: 200 once devices are up")
    async def healthz() -> Response:
        if not engine.ready:
            return json_response({"status": "unavailable", "reason": "no usable device"}, 503)
        return json_response({"status": "ok"})

    @app.get("/v1/devices", summary="List every usable OpenCL device and the default")
    async def list_devices() -> Response:
        return json_response(engine.devices())

    @app.post("/v1/plan", summary="Output shape, FLOPs, params and algorithm; runs nothing")
    async def plan(request: Request) -> Response:
        body = await read_json_body(request, settings.max_body_bytes)
        result = await run_in_threadpool(engine.plan, body)
        return json_response(result)

    for op in OPERATIONS:
        _add_operation_route(app, engine, settings, op)


def _add_operation_route(app: FastAPI, engine: Engine, settings: Settings, op: str) -> None:
    async def run_operation(request: Request) -> Response:
        body = await read_json_body(request, settings.max_body_bytes)
        result = await run_in_threadpool(engine.run, op, body)
        timings = result["timings_ms"]
        logger.info(
            "request %s op %s device %s algorithm %s: %s",
            getattr(request.state, "request_id", None),
            op,
            result["device"]["id"],
            "+".join(result["algorithm"]),
            " ".join(f"{k}={v:.3f}ms" for k, v in timings.items()),
        )
        return native_response(result, headers={"Server-Timing": server_timing(timings)})

    # TODO: publish request-body JSON schemas in OpenAPI; the body is decoded by hand so that
    # errors carry field paths, and /docs shows no body model yet.
    app.add_api_route(
        f"/v1/{op}",
        run_operation,
        methods=["POST"],
        summary=f"Run {op} on an OpenCL device",
        name=op,
    )


def _add_echo_routes(app: FastAPI, settings: Settings) -> None:
    """Diagnostic endpoints that measure transport alone (``bench/transport.py``)."""

    @app.post("/v1/echo", include_in_schema=False)
    async def echo(request: Request) -> Response:
        # Decodes and re-encodes ``input`` exactly as an operation endpoint would, runs nothing.
        body = await read_json_body(request, settings.max_body_bytes)
        tensor = decode_tensor(body.get("input"), "input")
        encoding = body.get("output_encoding") or tensor.encoding
        if encoding not in ENCODINGS:
            raise ValidationError(
                f"output_encoding {encoding!r} is unknown; use one of {', '.join(ENCODINGS)}",
                "output_encoding",
            )
        assert tensor.array is not None  # decode_tensor without allow_shape_only has values
        return native_response({"output": encode_tensor(tensor.array, encoding)})

    @app.post("/v1/echo_raw", include_in_schema=False)
    async def echo_raw(request: Request) -> Response:
        # The baseline for /v1/echo: the same size-capped read, and the bytes back unparsed.
        raw = await read_raw_body(request, settings.max_body_bytes)
        media_type = request.headers.get("content-type", "application/octet-stream")
        return Response(raw, media_type=media_type)
