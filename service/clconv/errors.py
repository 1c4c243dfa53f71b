"""Errors raised by the clconv core, and the HTTP status each maps to.

Hierarchy::

    ClconvError                    base; carries code, message, field and an HTTP status
    ├── RequestError               the client's mistake (4xx)
    │   ├── MalformedBodyError     400: the body is not JSON or not a JSON object
    │   ├── ValidationError        422: a field has a wrong type, value or shape
    │   │   ├── NotSeparableError  422: a weight is not rank 1 within the tolerance
    │   │   ├── UnknownDeviceError 422: no device has the requested id
    │   │   └── UnsupportedOnDeviceError 422: the device lacks a feature (fp64)
    │   ├── UnauthorizedError      401: no API key was sent, and the server requires one
    │   ├── ForbiddenError         403: the API key sent is not one of the server's keys
    │   ├── UnsupportedMediaTypeError 415: a Content-Encoding the server does not decode
    │   ├── TooLargeError          413: a body, tensor, kernel, output or memory over a limit
    │   └── ClientDisconnectedError 499: the client went away before its work started
    ├── OverloadedError            503: a queue or byte budget is full; sends Retry-After
    ├── DeadlineExceededError      504: the work did not start before the request's deadline
    └── DeviceError                500: an OpenCL call failed on the server's side
        └── DeviceUnavailableError 503: the device was taken out of rotation after failures

Every message names the offending value and says how to fix it; ``field`` is a dotted path into
the request body such as ``steps[1].weight.shape``.
"""

from __future__ import annotations

from typing import Any


class ClconvError(Exception):
    """Base class: an error with a machine-readable code, a message and the field at fault."""

    status = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        field: str | None = None,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.headers = dict(headers or {})
        if code is not None:
            self.code = code

    def to_body(self) -> dict[str, Any]:
        """Return the JSON error body ``{"error": {"code", "message", "field"}}``."""
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


class RequestError(ClconvError):
    """A client mistake; always a 4xx."""

    status = 400
    code = "bad_request"


class MalformedBodyError(RequestError):
    status = 400
    code = "malformed_json"


class ValidationError(RequestError):
    status = 422
    code = "invalid_value"


class NotSeparableError(ValidationError):
    code = "not_separable"


class UnknownDeviceError(ValidationError):
    code = "unknown_device"


class UnsupportedOnDeviceError(ValidationError):
    code = "unsupported_on_device"


class TooLargeError(RequestError):
    status = 413
    code = "too_large"


class UnauthorizedError(RequestError):
    status = 401
    code = "unauthorized"


class ForbiddenError(RequestError):
    status = 403
    code = "forbidden"


class UnsupportedMediaTypeError(RequestError):
    status = 415
    code = "unsupported_media_type"


class ClientDisconnectedError(RequestError):
    """A client that closed the connection while its request waited (it never sees the 499)."""

    status = 499
    code = "client_disconnected"


class OverloadedError(ClconvError):
    """The server is at a configured capacity limit; the client should retry after a pause."""

    status = 503
    code = "overloaded"

    def __init__(self, message: str, field: str | None = None, *, retry_after_s: int = 1) -> None:
        super().__init__(message, field, headers={"Retry-After": str(retry_after_s)})


class DeadlineExceededError(ClconvError):
    status = 504
    code = "deadline_exceeded"


class DeviceError(ClconvError):
    """An OpenCL failure that is not the client's fault; names the device and the status."""

    status = 500
    code = "device_error"


class DeviceUnavailableError(DeviceError):
    status = 503
    code = "device_unavailable"
