"""Python client for clconv, the OpenCL convolution service.

Example::

    import numpy as np
    import clconv_client

    with clconv_client.Client("http://127.0.0.1:8000") as client:
        result = client.conv2d(x, w, stride=2, padding=1)
        result.output, result.timings["compute"]
"""

from clconv_client._client import AsyncClient, Client
from clconv_client._exceptions import (
    APIError,
    BadRequestError,
    ClconvError,
    ConnectionError,
    NotFoundError,
    PayloadTooLargeError,
    ResponseDecodeError,
    ServerError,
    ServiceUnavailableError,
    TimeoutError,
    TransportError,
    ValidationError,
)
from clconv_client._models import ConvResult, Device, DeviceList, PlanResult
from clconv_client._steps import (
    Conv2d,
    ConvTranspose2d,
    DepthwiseSeparableConv2d,
    SpatiallySeparableConv2d,
)
from clconv_client._transport import TensorSpec
from clconv_client._version import __version__

__all__ = [
    "APIError",
    "AsyncClient",
    "BadRequestError",
    "ClconvError",
    "Client",
    "ConnectionError",
    "Conv2d",
    "ConvResult",
    "ConvTranspose2d",
    "DepthwiseSeparableConv2d",
    "Device",
    "DeviceList",
    "NotFoundError",
    "PayloadTooLargeError",
    "PlanResult",
    "ResponseDecodeError",
    "ServerError",
    "ServiceUnavailableError",
    "SpatiallySeparableConv2d",
    "TensorSpec",
    "TimeoutError",
    "TransportError",
    "ValidationError",
    "__version__",
]
