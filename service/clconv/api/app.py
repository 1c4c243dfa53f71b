"""The HTTP adapter: FastAPI routes over ``clconv.engine.Engine``.

Bodies are read as raw bytes (with a size cap counted while streaming), decoded with the standard
``json`` module, which accepts ``NaN`` and ``Infinity``, and handed to the engine. A body may
instead use the binary framing of ``clconv.api.binary``. Responses are written with
``allow_nan=True`` so NaN results survive. Every ``ClconvError`` becomes its status and
``{"error": {"code", "message", "field"}}``; so do routing errors. The Open Inference Protocol
routes under ``/v2`` live in ``clconv.api.v2`` and have their own error body.

The middleware assigns the request id, checks the API key when ``CLCONV_API_KEYS`` is set
(``clconv.api.security``), records Prometheus metrics and logs one line per request. Overload
rules (queues, deadlines, bytes in flight) are applied in ``clconv.api.dispatch``.
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
from prometheus_client import CONTENT_TYPE_LATEST
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
from clconv.api.dispatch import check_declared_body, run_engine
from clconv.api.observability import Metrics
from clconv.api.playground import mount_playground
from clconv.api.security import check_api_key, is_open_path
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
    headers = dict(error.headers)
    if request_id:
        headers["X-Request-ID"] = request_id
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

    metrics = Metrics(engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logger.info("clconv %s starting", __version__)
        if not engine.started:
            await run_in_threadpool(engine.start)
        # Uvicorn binds its socket after the lifespan start-up, so the server accepts
        # connections only once the common kernels are built and the first requests are fast.
        await run_in_threadpool(engine.warm_up)
        yield
        engine.begin_shutdown()
        logger.info("clconv stopping")

    app = FastAPI(
        title="clconv",
        version=__version__,
        summary="OpenCL convolutions behind a REST API, with device-measured timings.",
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.settings = settings
    app.state.metrics = metrics
    _install_error_handlers(app)
    _install_request_middleware(app, settings, metrics)
    _add_routes(app, engine, settings, metrics)
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
            extra={"request_id": request_id, "error_code": error.code},
        )
        return error_response(error, request_id)

    @app.exception_handler(StarletteHTTPException)
    async def routing_error(request: Request, error: StarletteHTTPException) -> Response:
        code = ROUTING_CODES.get(error.status_code, "http_error")
        message = f"{request.method} {request.url.path}: {error.detail}"
        if error.status_code == 404:
            message += "; see /docs for the endpoints"
        elif (
            error.status_code == 405
            and error.headers
            and "allow" in {name.lower() for name in error.headers}
        ):
            allowed = next(v for k, v in error.headers.items() if k.lower() == "allow")
            message += f"; use {allowed}"
        body = {"error": {"code": code, "message": message, "field": "path"}}
        return json_response(body, error.status_code)


def _install_request_middleware(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
    @app.middleware("http")
    async def request_id_auth_and_log(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex[:16]
        request.state.request_id = request_id
        request.state.arrived = time.monotonic()
        started = time.perf_counter()
        try:
            if settings.api_keys and not is_open_path(request.url.path):
                check_api_key(request.headers.get("authorization"), settings.api_keys)
            response = await call_next(request)
        except ClconvError as error:
            logger.warning(
                "request %s %s rejected: %s %s",
                request_id,
                request.url.path,
                error.status,
                error.code,
                extra={"request_id": request_id, "error_code": error.code},
            )
            if request.url.path.startswith("/v2"):
                response = json_response({"error": error.message}, error.status, error.headers)
            else:
                response = error_response(error)
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
        _record(request, response, time.perf_counter() - started, metrics)
        return response


def _record(request: Request, response: Response, duration_s: float, metrics: Metrics) -> None:
    """Count the request in the metrics and write its log line."""
    state = request.state
    operation = getattr(state, "operation", None) or "other"
    result = getattr(state, "result", None) or {}
    timings = result.get("timings_ms")
    bytes_out = int(response.headers.get("content-length", "0") or 0)

    metrics.observe(
        operation,
        response.status_code,
        duration_s,
        getattr(state, "body_bytes", 0),
        bytes_out,
        timings,
    )

    device = result.get("device", {}).get("id")
    algorithm = "+".join(result.get("algorithm", [])) or None
    details = ""
    if timings:
        stage_times = " ".join(f"{k}={v:.3f}ms" for k, v in timings.items())
        details = f" op {operation} device {device} algorithm {algorithm}: {stage_times}"
    logger.info(
        "request %s %s %s -> %d in %.1f ms%s",
        state.request_id,
        request.method,
        request.url.path,
        response.status_code,
        duration_s * 1e3,
        details,
        extra={
            "request_id": state.request_id,
            "method": request.method,
            "path": request.url.path,
            "operation": operation,
            "device": device,
            "algorithm": algorithm,
            "status": response.status_code,
            "duration_ms": round(duration_s * 1e3, 3),
            "timings_ms": timings,
        },
    )


def _add_routes(app: FastAPI, engine: Engine, settings: Settings, metrics: Metrics) -> None:
    @app.get("/healthz", summary="Liveness: 200 once devices are up")
    async def healthz() -> Response:
        if not engine.ready:
            return json_response({"status": "unavailable", "reason": "no usable device"}, 503)
        return json_response({"status": "ok"})

    @app.get("/readyz", summary="Readiness: 200 once the common kernels are built, until shutdown")
    async def readyz() -> Response:
        if engine.serving:
            return json_response({"status": "ready"})
        if engine.stopping:
            reason = "shutting down"
        elif not engine.ready:
            reason = "no usable device"
        else:
            reason = "building the common kernels"
        return json_response({"status": "not_ready", "reason": reason}, 503)

    @app.get("/metrics", summary="Prometheus metrics in the text exposition format")
    async def prometheus_metrics() -> Response:
        exposition = await run_in_threadpool(metrics.render)
        return Response(exposition, media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/devices", summary="List every usable OpenCL device and the default")
    async def list_devices(request: Request) -> Response:
        request.state.operation = "devices"
        return json_response(engine.devices())

    @app.post("/v1/plan", summary="Output shape, FLOPs, params and algorithm; runs nothing")
    async def plan(request: Request) -> Response:
        request.state.operation = "plan"
        body = await read_json_body(request, settings.max_body_bytes)
        result = await run_in_threadpool(engine.plan, body)
        return json_response(result)

    for op in OPERATIONS:
        _add_operation_route(app, engine, settings, op)


def _add_operation_route(app: FastAPI, engine: Engine, settings: Settings, op: str) -> None:
    async def run_operation(request: Request) -> Response:
        request.state.operation = op
        check_declared_body(request, engine)
        body = await read_json_body(request, settings.max_body_bytes)
        result = await run_engine(request, engine, op, body)
        request.state.result = {key: result[key] for key in ("device", "algorithm", "timings_ms")}
        headers = {"Server-Timing": server_timing(result["timings_ms"])}
        # Encoding a large output as JSON takes long enough to stall the event loop.
        response: Response = await run_in_threadpool(native_response, result, headers)
        return response

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
