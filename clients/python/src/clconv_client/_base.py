"""Shared parts of ``Client`` and ``AsyncClient``: options, request bodies, responses, retries.

Retries: convolutions are pure, so a request may be sent again safely. A call is retried, at most
``max_retries`` times, when the connection fails (connect, read or write error, or the server
closing the connection without a response) and when the server returns 429 or 503 with a
``Retry-After`` header. Nothing else is retried: no other 4xx or 5xx, and no timeout.
"""

from __future__ import annotations

import email.utils
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import httpx
import numpy as np

from clconv_client._exceptions import (
    APIError,
    ConnectionError,
    TimeoutError,
    error_class_for_status,
)
from clconv_client._steps import (
    STEP_CLASSES,
    Step,
    step_body,
)
from clconv_client._transport import Encoding, TensorSpec, check_encoding, decode_body, encode_body
from clconv_client._version import __version__

logger = logging.getLogger("clconv_client")

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_RETRIES = 3
DEFAULT_MAX_BACKOFF_S = 10.0
# Backoff after a connection failure: 0.25 s, 0.5 s, 1 s, ... up to max_backoff.
FIRST_BACKOFF_S = 0.25
RETRY_AFTER_STATUSES = frozenset({429, 503})
RETRIED_TRANSPORT_ERRORS = (httpx.NetworkError, httpx.RemoteProtocolError)
OPERATIONS = (*STEP_CLASSES, "pipeline")


@dataclass(frozen=True)
class PreparedRequest:
    method: str
    path: str
    content: bytes | None
    headers: dict[str, str]
    timeout: httpx.Timeout


def _as_array(value: Any) -> np.ndarray:
    return np.asarray(value)


def _as_spec(value: Any, dtype: str) -> TensorSpec:
    """Turn an array, a ``TensorSpec`` or a shape such as ``(1, 3, 224, 224)`` into a spec."""
    if isinstance(value, TensorSpec):
        return value
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return TensorSpec(tuple(int(size) for size in value.shape), dtype)
    if isinstance(value, Sequence) and all(isinstance(size, (int, np.integer)) for size in value):
        return TensorSpec(tuple(int(size) for size in value), dtype)
    expected = "an array, a TensorSpec or a shape such as (1, 3, 224, 224)"
    raise TypeError(f"a tensor to plan must be {expected}, got {type(value).__name__}")


def _parse_retry_after(value: str | None) -> float | None:
    """Return the wait in seconds from a ``Retry-After`` value (seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def api_error(response: httpx.Response) -> APIError:
    """Build the typed error for an error response, keeping the server's code, message, field."""
    status = response.status_code
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or "http_error")
        message = str(error.get("message") or response.reason_phrase)
        field = error.get("field")
    else:
        code = "http_error"
        excerpt = response.text[:200] if body is None else str(body)[:200]
        message = f"{response.request.method} {response.request.url} returned {status}: {excerpt}"
        field = None
    error_class = error_class_for_status(status)
    return error_class(
        message,
        status=status,
        code=code,
        field=None if field is None else str(field),
        request_id=response.headers.get("x-request-id"),
        body=body,
    )


class BaseClient:
    """Options, request building, response parsing and the retry policy of both clients."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        transport: Encoding,
        max_retries: int,
        max_backoff: float,
        device: str | None,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {max_retries!r}")
        if max_backoff < 0:
            raise ValueError(f"max_backoff must be 0 or more seconds, got {max_backoff!r}")
        self._base_url = base_url.rstrip("/")
        self._timeout = float(timeout)
        self._transport = check_encoding(transport)
        self._max_retries = max_retries
        self._max_backoff = float(max_backoff)
        self._device = device
        self._headers = {"User-Agent": f"clconv-client/{__version__}"}

    @property
    def base_url(self) -> str:
        """The server's URL, such as ``http://127.0.0.1:8000``."""
        return self._base_url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._base_url!r}, transport={self._transport!r})"

    # Request building.

    def _timeout_for(self, timeout: float | None) -> httpx.Timeout:
        seconds = self._timeout if timeout is None else timeout
        if not seconds > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {seconds!r}")
        return httpx.Timeout(seconds)

    def _post(
        self,
        path: str,
        body: dict[str, Any],
        encoding: Encoding,
        timeout: float | None,
    ) -> PreparedRequest:
        encoded = encode_body(body, encoding)
        timeout_config = self._timeout_for(timeout)
        return PreparedRequest("POST", path, encoded.content, encoded.headers, timeout_config)

    def _run_request(
        self,
        op: str,
        input: Any,
        step_fields: dict[str, Any],
        device: str | None,
        transport: str | None,
        timeout: float | None,
    ) -> PreparedRequest:
        encoding = check_encoding(transport or self._transport)
        body: dict[str, Any] = {"input": _as_array(input), **step_fields}
        body.pop("op", None)
        chosen_device = device or self._device
        if chosen_device is not None:
            body["device"] = chosen_device
        body["output_encoding"] = encoding
        return self._post(f"/v1/{op}", body, encoding, timeout)

    def _operation_request(
        self,
        step: Step,
        input: Any,
        device: str | None,
        transport: str | None,
        timeout: float | None,
    ) -> PreparedRequest:
        fields = step.to_body(_as_array)
        return self._run_request(step.op, input, fields, device, transport, timeout)

    def _pipeline_request(
        self,
        input: Any,
        steps: Iterable[Step | Mapping[str, Any]],
        device: str | None,
        transport: str | None,
        timeout: float | None,
    ) -> PreparedRequest:
        bodies = [step_body(step, _as_array) for step in steps]
        if not bodies:
            raise ValueError("a pipeline needs at least one step")
        return self._run_request("pipeline", input, {"steps": bodies}, device, transport, timeout)

    def _plan_request(
        self,
        op: str | Step,
        input: Any,
        dtype: str | None,
        device: str | None,
        timeout: float | None,
        arguments: dict[str, Any],
    ) -> PreparedRequest:
        if dtype is None:
            dtype = input.dtype.name if isinstance(input, np.ndarray) else "float32"
        chosen_dtype = dtype

        def spec(value: Any) -> TensorSpec:
            return _as_spec(value, chosen_dtype)

        body: dict[str, Any]
        if op == "pipeline":
            unknown = sorted(set(arguments) - {"steps"})
            if unknown or "steps" not in arguments:
                received = sorted(arguments)
                message = (
                    f"plan('pipeline', ...) takes steps=[...] and nothing else, got {received}"
                )
                raise TypeError(message)
            steps = [step_body(step, spec) for step in arguments["steps"]]
            body = {"op": "pipeline", "input": spec(input), "steps": steps}
        else:
            if isinstance(op, str):
                if op not in STEP_CLASSES:
                    raise ValueError(f"op must be one of {', '.join(OPERATIONS)}, got {op!r}")
                step = STEP_CLASSES[op](**arguments)
            else:
                if arguments:
                    raise TypeError("plan(step, input) takes the settings from the step object")
                step = op
            body = {"op": step.op, "input": spec(input)}
            body.update((key, value) for key, value in step.to_body(spec).items() if key != "op")
        chosen_device = device or self._device
        if chosen_device is not None:
            body["device"] = chosen_device
        return self._post("/v1/plan", body, "json", timeout)

    def _get(self, path: str, timeout: float | None) -> PreparedRequest:
        return PreparedRequest("GET", path, None, {}, self._timeout_for(timeout))

    # Responses and retries.

    def _parse(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            raise api_error(response)
        return decode_body(response.content, response.headers)

    def _retry_delay_for_response(self, response: httpx.Response, attempt: int) -> float | None:
        """Return seconds to wait before retrying, or ``None`` to return this response."""
        if response.status_code not in RETRY_AFTER_STATUSES or attempt >= self._max_retries:
            return None
        retry_after = _parse_retry_after(response.headers.get("retry-after"))
        if retry_after is None:
            return None
        delay = min(retry_after, self._max_backoff)
        logger.warning(
            "%s %s returned %d with Retry-After %s; retry %d of %d in %.2f s",
            response.request.method,
            response.request.url,
            response.status_code,
            response.headers.get("retry-after"),
            attempt + 1,
            self._max_retries,
            delay,
        )
        return delay

    def _retry_delay_for_error(
        self, request: PreparedRequest, error: httpx.TransportError, attempt: int
    ) -> float:
        """Return seconds to wait before retrying after ``error``, or raise the typed error."""
        url = f"{self._base_url}{request.path}"
        if isinstance(error, httpx.TimeoutException):
            failure = f"{request.method} {url} timed out after {request.timeout.read} s"
            hint = "pass a larger timeout= if the call needs longer"
            raise TimeoutError(f"{failure} ({type(error).__name__}); {hint}", url=url) from error
        retriable = isinstance(error, RETRIED_TRANSPORT_ERRORS)
        if not retriable or attempt >= self._max_retries:
            attempts = attempt + 1
            failure = f"{request.method} {url} failed after {attempts} attempt(s)"
            hint = f"check that the server runs at {self._base_url}"
            message = f"{failure}: {type(error).__name__}: {error}; {hint}"
            raise ConnectionError(message, url=url) from error
        delay = min(FIRST_BACKOFF_S * 2.0**attempt, self._max_backoff)
        logger.warning(
            "%s %s failed (%s: %s); retry %d of %d in %.2f s",
            request.method,
            url,
            type(error).__name__,
            error,
            attempt + 1,
            self._max_retries,
            delay,
        )
        return delay
