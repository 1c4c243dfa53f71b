"""Request bodies in and JSON responses out, shared by the ``/v1`` and ``/v2`` adapters.

A body is read as raw bytes with a size cap counted while streaming. It is JSON, or, with the
``Inference-Header-Content-Length`` header, a JSON header followed by a binary section
(``clconv.api.binary``). Responses are written with ``allow_nan=True`` because the request side
accepts ``NaN`` and ``Infinity``. Compressed bodies (``Content-Encoding`` other than
``identity``) are rejected with 415. Bodies over ``THREAD_DECODE_BYTES`` are decoded in the
thread pool so that a large JSON body does not block the event loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from clconv.api.binary import (
    BINARY_MEDIA_TYPE,
    HEADER_LENGTH,
    parse_header_length,
    parse_json_body,
    split_body,
)
from clconv.errors import TooLargeError, UnsupportedMediaTypeError

# Bodies up to this size decode in well under a millisecond, less than a thread hand-off costs.
THREAD_DECODE_BYTES = 64 * 1024


@dataclass
class RequestBody:
    """A read request: its decoded JSON (or JSON header) and, if framed, its binary section."""

    body: Any
    binary: memoryview | None

    @property
    def framed(self) -> bool:
        return self.binary is not None


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Serialise with NaN and Infinity allowed, as the request side accepts them."""
    content = json.dumps(body, allow_nan=True, separators=(",", ":"))
    return Response(content, status_code=status, media_type="application/json", headers=headers)


def framed_response(
    content: bytes, header_length: int, headers: dict[str, str] | None = None
) -> Response:
    """Return a body in the binary framing with its ``Inference-Header-Content-Length``."""
    all_headers = {**(headers or {}), HEADER_LENGTH: str(header_length)}
    return Response(content, media_type=BINARY_MEDIA_TYPE, headers=all_headers)


async def read_raw_body(request: Request, max_bytes: int) -> bytes:
    """Read the body, counting bytes as they arrive, and reject it once over ``max_bytes``.

    The byte count is stored in ``request.state.body_bytes``.
    """
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedMediaTypeError(
            f"Content-Encoding {encoding!r} is not supported; send the body uncompressed "
            "without a Content-Encoding header",
            "Content-Encoding",
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise TooLargeError(
            f"the body is {declared} bytes, over the limit of {max_bytes}; send a smaller "
            "request or raise CLCONV_MAX_BODY_BYTES",
            "body",
        )
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes:
            raise TooLargeError(
                f"the body exceeds the limit of {max_bytes} bytes; send a smaller request or "
                "raise CLCONV_MAX_BODY_BYTES",
                "body",
            )
        chunks.append(chunk)
    request.state.body_bytes = received
    # This join assembles the received chunks; decoding after it copies no tensor.
    return b"".join(chunks)


async def read_body(request: Request, max_bytes: int) -> RequestBody:
    """Read a JSON body, or a framed one when ``Inference-Header-Content-Length`` is set."""
    raw = await read_raw_body(request, max_bytes)
    header_length = request.headers.get(HEADER_LENGTH)
    if header_length is None:
        if len(raw) > THREAD_DECODE_BYTES:
            return RequestBody(await run_in_threadpool(parse_json_body, raw), None)
        return RequestBody(parse_json_body(raw), None)
    length = parse_header_length(header_length, len(raw))
    if length > THREAD_DECODE_BYTES:
        header, binary = await run_in_threadpool(split_body, raw, length)
    else:
        header, binary = split_body(raw, length)
    return RequestBody(header, binary)
