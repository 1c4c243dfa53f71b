"""Exceptions raised by the clconv client.

Hierarchy::

    ClconvError                        base of everything this package raises
    ├── TransportError                 no usable HTTP response arrived
    │   ├── ConnectionError            connecting, sending or receiving failed
    │   └── TimeoutError               a connect, read, write or pool wait ran past the timeout
    ├── ResponseDecodeError            a response arrived but its body or framing is invalid
    └── APIError                       the server answered with a 4xx or 5xx status
        ├── BadRequestError            400: the body is not JSON or not a JSON object
        ├── NotFoundError              404: unknown path (wrong base URL or server version)
        ├── PayloadTooLargeError       413: body, output or working memory over a server limit
        ├── ValidationError            422: a field has a wrong type, value or shape
        └── ServerError                any 5xx, such as an OpenCL failure (code device_error)
            └── ServiceUnavailableError  503: the server is not ready or is overloaded

``APIError`` keeps the server's ``code``, ``message`` and ``field`` from its error body
``{"error": {"code", "message", "field"}}``. Statuses without their own class (405, 429 and
other 4xx) raise ``APIError`` itself.

``ConnectionError`` and ``TimeoutError`` shadow the built-in names inside this module only; they
do not derive from the built-ins, so catch them as ``clconv_client.ConnectionError``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIError",
    "BadRequestError",
    "ClconvError",
    "ConnectionError",
    "NotFoundError",
    "PayloadTooLargeError",
    "ResponseDecodeError",
    "ServerError",
    "ServiceUnavailableError",
    "TimeoutError",
    "TransportError",
    "ValidationError",
]


class ClconvError(Exception):
    """Base class of every exception the client raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TransportError(ClconvError):
    """No usable HTTP response: the request failed below the HTTP status level."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class ConnectionError(TransportError):
    """Connecting to the server, sending the request or reading the response failed."""


class TimeoutError(TransportError):
    """A connect, write, read or connection-pool wait took longer than the call's timeout."""


class ResponseDecodeError(ClconvError):
    """The server responded, but the body is not valid JSON or the binary framing is broken."""


class APIError(ClconvError):
    """The server returned an error status.

    ``status`` is the HTTP status. ``code``, ``message`` and ``field`` come from the server's
    error body, where ``field`` is a dotted path into the request such as ``steps[1].weight``,
    or ``None``. ``request_id`` is the server's ``X-Request-ID``, which its log lines carry.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str,
        field: str | None = None,
        request_id: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field
        self.request_id = request_id
        self.body = body

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        return f"{self.status} {self.code}{where}: {self.message}"


class BadRequestError(APIError):
    """400: the server could not read the body as a JSON object or a binary frame."""


class NotFoundError(APIError):
    """404: the path is unknown; check the base URL and the server version."""


class PayloadTooLargeError(APIError):
    """413: the body, the output or the working memory is over a limit set on the server."""


class ValidationError(APIError):
    """422: a field has a wrong type, value or shape, or the device cannot run the request."""


class ServerError(APIError):
    """5xx: the server failed, for example an OpenCL call on the device (``device_error``)."""


class ServiceUnavailableError(ServerError):
    """503: the server has no usable device yet or requests a retry later."""


_STATUS_CLASSES: dict[int, type[APIError]] = {
    400: BadRequestError,
    404: NotFoundError,
    413: PayloadTooLargeError,
    422: ValidationError,
    503: ServiceUnavailableError,
}


def error_class_for_status(status: int) -> type[APIError]:
    """Return the ``APIError`` subclass raised for an HTTP error status."""
    if status in _STATUS_CLASSES:
        return _STATUS_CLASSES[status]
    if status >= 500:
        return ServerError
    return APIError
