"""Errors raised by the clconv core, and the HTTP status each maps to.

Hierarchy::

    ClconvError                    base; carries code, message, field and an HTTP status
    ├── RequestError               the client's mistake (4xx)
    │   ├── MalformedBodyError     400: the body is not JSON or not a JSON object
    │   ├── ValidationError        422: a field has a wrong type, value or shape
    │   │   ├── NotSeparableError  422: a weight is not rank 1 within the tolerance
    │   │   ├── UnknownDeviceError 422: no device has the requested id
    │   │   └── UnsupportedOnDeviceError 422: the device lacks a feature (fp64)
    │   └── TooLargeError          413: output, working memory or body over a configured limit
    └── DeviceError                500: an OpenCL call failed on the server's side

Every message names the offending value and says how to fix it; ``field`` is a dotted path into
the request body such as ``steps[1].weight.shape``.
"""

from __future__ import annotations

from typing import Any


class ClconvError(Exception):
    """Base class: an error with a machine-readable code, a message and the field at fault."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, field: str | None = None, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
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


class DeviceError(ClconvError):
    """An OpenCL failure that is not the client's fault; names the device and the status."""

    status = 500
    code = "device_error"
