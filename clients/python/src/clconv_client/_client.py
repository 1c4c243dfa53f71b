"""``Client`` and ``AsyncClient``: numpy arrays in, numpy arrays out, over the clconv /v1 API.

Each client owns one ``httpx`` client and so one connection pool; close it with ``close()``
(``aclose()``) or a ``with`` block. Neither keeps per-call state, so one ``Client`` may be shared
between threads and one ``AsyncClient`` between tasks of one event loop.

Retries: convolutions are pure, so a request may be sent again safely. A call is retried, at most
``max_retries`` times, when the connection fails (connect, read or write error, or the server
closing the connection without a response) and when the server returns 429 or 503 with a
``Retry-After`` header. Nothing else is retried: no other 4xx or 5xx, and no timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx

from clconv_client._base import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_BACKOFF_S,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT_S,
    BaseClient,
    PreparedRequest,
    api_error,
)
from clconv_client._exceptions import TimeoutError
from clconv_client._models import ConvResult, DeviceList, PlanResult
from clconv_client._steps import (
    Activation,
    Conv2d,
    ConvTranspose2d,
    DepthwiseSeparableConv2d,
    IntPair,
    Padding,
    SpatiallySeparableConv2d,
    Step,
)
from clconv_client._transport import Encoding

__all__ = ["AsyncClient", "Client"]


class Client(BaseClient):
    """A synchronous client for one clconv server.

    Args:
        base_url: the server's URL, such as ``http://127.0.0.1:8000`` (the default).
        timeout: seconds allowed for each of connecting, sending, waiting for the response and
            waiting for a pooled connection, per attempt (default 60). A call overrides it with
            its own ``timeout=``. Timeouts are not retried.
        transport: how tensors travel: ``"binary"`` (default; raw bytes after a JSON header),
            ``"base64"`` or ``"json"`` (number lists, the slowest). Responses use the same.
        max_retries: retries after a connection failure, or after 429/503 with ``Retry-After``
            (default 3; 0 turns retries off).
        max_backoff: the maximum wait between attempts in seconds (default 10). A larger
            ``Retry-After`` is capped at this value.
        device: the device id for every call that does not pass ``device=``, such as
            ``"intel:0"``; ``None`` (default) lets the server choose.
        headers: extra HTTP headers for every request.
        http_transport: an ``httpx.BaseTransport`` to send requests through, for tests
            (``httpx.MockTransport``) or custom networking.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: Encoding = "binary",
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_backoff: float = DEFAULT_MAX_BACKOFF_S,
        device: str | None = None,
        headers: Mapping[str, str] | None = None,
        http_transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url,
            timeout=timeout,
            transport=transport,
            max_retries=max_retries,
            max_backoff=max_backoff,
            device=device,
        )
        self._http = httpx.Client(
            base_url=self._base_url,
            headers={**self._headers, **(headers or {})},
            timeout=self._timeout,
            transport=http_transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool; the client cannot be used afterwards."""
        self._http.close()

    def _send(self, request: PreparedRequest) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    request.method,
                    request.path,
                    content=request.content,
                    headers=request.headers,
                    timeout=request.timeout,
                )
            except httpx.TransportError as error:
                delay = self._retry_delay_for_error(request, error, attempt)
            else:
                response_delay = self._retry_delay_for_response(response, attempt)
                if response_delay is None:
                    return response
                delay = response_delay
            time.sleep(delay)
            attempt += 1

    def _call(self, request: PreparedRequest) -> dict[str, Any]:
        return self._parse(self._send(request))

    def conv2d(
        self,
        input: Any,
        weight: Any,
        bias: Any = None,
        stride: IntPair = 1,
        padding: Padding = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        *,
        padding_mode: str = "zeros",
        activation: Activation = None,
        device: str | None = None,
        timeout: float | None = None,
        transport: Encoding | None = None,
    ) -> ConvResult:
        """Run a 2-D convolution, as ``torch.nn.functional.conv2d`` computes it.

        Args:
            input: [N, C, H, W] float32 or float64 array (all tensors share one dtype).
            weight: [K, C/groups, kh, kw].
            bias: [K], or ``None``.
            stride: int or (sh, sw), each >= 1 (default 1).
            padding: int, (ph, pw), ``"same"``, ``"valid"`` or
                ``{"top", "bottom", "left", "right"}`` in pixels (default 0).
            dilation: int or (dh, dw), each >= 1 (default 1).
            groups: divides both C and K (default 1).
            padding_mode: ``"zeros"`` (default), ``"reflect"``, ``"replicate"`` or
                ``"circular"``.
            activation: fused after the bias: ``None`` (default), ``"relu"``, ``"relu6"``,
                ``"leaky_relu"``, ``"sigmoid"``, ``"tanh"`` or
                ``{"name": "leaky_relu", "negative_slope": 0.2}``.
            device: device id such as ``"intel:0"``; default: the client's, else the server's.
            timeout: seconds for this call (see ``Client``); default: the client's.
            transport: ``"binary"``, ``"base64"`` or ``"json"``; default: the client's.

        Returns:
            ``ConvResult`` with ``output`` [N, K, H_out, W_out] in the input's dtype.

        Raises:
            ValidationError: a shape, value or dtype is invalid (the server's ``field``
                names it).
            PayloadTooLargeError: the body or output is over the server's limits.
            ServerError: the device failed. ConnectionError, TimeoutError: see ``Client``.
        """
        step = Conv2d(weight, bias, stride, padding, dilation, groups, padding_mode, activation)
        result = self._call(self._operation_request(step, input, device, transport, timeout))
        return ConvResult.from_response(result)

    def conv_transpose2d(
        self,
        input: Any,
        weight: Any,
        bias: Any = None,
        stride: IntPair = 1,
        padding: Padding = 0,
        output_padding: IntPair = 0,
        groups: int = 1,
        dilation: IntPair = 1,
        *,
        output_size: Sequence[int] | None = None,
        activation: Activation = None,
        device: str | None = None,
        timeout: float | None = None,
        transport: Encoding | None = None,
    ) -> ConvResult:
        """Run a transposed 2-D convolution, as ``torch.nn.functional.conv_transpose2d``.

        Args:
            input: [N, C, H, W].
            weight: [C, K/groups, kh, kw].
            bias: [K], or ``None``.
            stride: int or (sh, sw) (default 1).
            padding: int, (ph, pw) or ``{"top", "bottom", "left", "right"}`` (default 0).
            output_padding: int or (oh, ow), each smaller than the stride or the dilation on
                its axis (default 0).
            groups: divides both C and K (default 1).
            dilation: int or (dh, dw) (default 1).
            output_size: (H_out, W_out) or the full 4-D shape, picking output_padding for you.
            activation, device, timeout, transport: as for ``conv2d``.

        Returns:
            ``ConvResult`` with ``output`` [N, K, H_out, W_out], where
            ``H_out = (H-1)*sh - pad_top - pad_bottom + dh*(kh-1) + oh + 1``.

        Raises:
            The same errors as ``conv2d``.
        """
        step = ConvTranspose2d(
            weight, bias, stride, padding, output_padding, groups, dilation, output_size, activation
        )
        result = self._call(self._operation_request(step, input, device, transport, timeout))
        return ConvResult.from_response(result)

    def depthwise_separable_conv2d(
        self,
        input: Any,
        depthwise_weight: Any,
        pointwise_weight: Any,
        *,
        depthwise_bias: Any = None,
        pointwise_bias: Any = None,
        stride: IntPair = 1,
        padding: Padding = 0,
        dilation: IntPair = 1,
        padding_mode: str = "zeros",
        depthwise_activation: Activation = None,
        activation: Activation = None,
        device: str | None = None,
        timeout: float | None = None,
        transport: Encoding | None = None,
    ) -> ConvResult:
        """Run a depthwise convolution (groups = C) and then a 1×1 pointwise convolution.

        Args:
            input: [N, C, H, W].
            depthwise_weight: [C·m, 1, kh, kw] for a channel multiplier m.
            pointwise_weight: [K, C·m, 1, 1].
            depthwise_bias: [C·m], or ``None``. pointwise_bias: [K], or ``None``.
            stride, padding, dilation, padding_mode: of the depthwise step, as for ``conv2d``.
            depthwise_activation: after the depthwise step; activation: after the pointwise
                step; both as for ``conv2d`` (default ``None``).
            device, timeout, transport: as for ``conv2d``.

        Returns:
            ``ConvResult`` with ``output`` [N, K, H_out, W_out]; ``algorithm`` has one entry per
            step.

        Raises:
            The same errors as ``conv2d``.
        """
        step = DepthwiseSeparableConv2d(
            depthwise_weight,
            pointwise_weight,
            depthwise_bias,
            pointwise_bias,
            stride,
            padding,
            dilation,
            padding_mode,
            depthwise_activation,
            activation,
        )
        result = self._call(self._operation_request(step, input, device, transport, timeout))
        return ConvResult.from_response(result)

    def spatially_separable_conv2d(
        self,
        input: Any,
        weight: Any = None,
        bias: Any = None,
        *,
        vertical_weight: Any = None,
        vertical_bias: Any = None,
        horizontal_weight: Any = None,
        horizontal_bias: Any = None,
        tolerance: float | None = None,
        stride: IntPair = 1,
        padding: Padding = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        padding_mode: str = "zeros",
        vertical_activation: Activation = None,
        activation: Activation = None,
        device: str | None = None,
        timeout: float | None = None,
        transport: Encoding | None = None,
    ) -> ConvResult:
        """Run a kh×kw convolution as a kh×1 pass and then a 1×kw pass.

        Give either ``weight`` (with ``bias``), which the server factors by SVD, or the factors.

        Args:
            input: [N, C, H, W].
            weight: [K, C/groups, kh, kw] whose every 2-D slice is rank 1 within ``tolerance``.
            bias: [K], or ``None``.
            vertical_weight: [M, C/groups, kh, 1]; vertical_bias: [M], or ``None``.
            horizontal_weight: [K, M/groups, 1, kw]; horizontal_bias: [K], or ``None``.
            tolerance: relative rank-1 tolerance for ``weight``; ``None`` uses the server's
                default (1e-4).
            stride, padding, dilation, groups, padding_mode, activation: as for the equivalent
                kh×kw ``conv2d``; the vertical pass takes the height parts.
            vertical_activation: between the two passes (default ``None``).
            device, timeout, transport: as for ``conv2d``.

        Returns:
            ``ConvResult`` with ``output`` [N, K, H_out, W_out].

        Raises:
            ValidationError: also with code ``not_separable`` when ``weight`` is not rank 1;
                otherwise the same errors as ``conv2d``.
        """
        step = SpatiallySeparableConv2d(
            weight,
            bias,
            vertical_weight,
            vertical_bias,
            horizontal_weight,
            horizontal_bias,
            tolerance,
            stride,
            padding,
            dilation,
            groups,
            padding_mode,
            vertical_activation,
            activation,
        )
        result = self._call(self._operation_request(step, input, device, transport, timeout))
        return ConvResult.from_response(result)

    def pipeline(
        self,
        input: Any,
        steps: Iterable[Step | Mapping[str, Any]],
        *,
        device: str | None = None,
        timeout: float | None = None,
        transport: Encoding | None = None,
    ) -> ConvResult:
        """Run operations back to back on one device; intermediates stay on the device.

        Args:
            input: [N, C, H, W].
            steps: step objects (``Conv2d(weight, stride=2)`` and the other three classes) or
                dicts such as ``{"op": "conv2d", "weight": w, "stride": 2}`` with the fields of
                the matching method.
            device, timeout, transport: as for ``conv2d``.

        Returns:
            ``ConvResult`` of the last step; ``raw["steps"]`` describes each step.

        Raises:
            ValueError: ``steps`` is empty or a dict lacks a known ``op``. TypeError: a step is
                neither a step object nor a dict. Server errors as for ``conv2d``; their
                ``field`` names the step, such as ``steps[1].weight``.
        """
        request = self._pipeline_request(input, steps, device, transport, timeout)
        return ConvResult.from_response(self._call(request))

    def plan(
        self,
        op: str | Step,
        input: Any,
        *,
        dtype: str | None = None,
        device: str | None = None,
        timeout: float | None = None,
        **arguments: Any,
    ) -> PlanResult:
        """Report the output shape, FLOPs, parameters and algorithm of a request; runs nothing.

        Only shapes travel, so tensors may be arrays, shapes such as ``(8, 3, 3, 3)`` or
        ``TensorSpec`` objects.

        Args:
            op: ``"conv2d"``, ``"conv_transpose2d"``, ``"depthwise_separable_conv2d"``,
                ``"spatially_separable_conv2d"``, ``"pipeline"``, or a step object such as
                ``Conv2d((8, 3, 3, 3), stride=2)``.
            input: the input array or its shape [N, C, H, W].
            dtype: ``"float32"`` or ``"float64"``; default: the input array's dtype, or
                ``"float32"`` when the input is a shape.
            device: as for ``conv2d``. timeout: as for ``conv2d``.
            **arguments: the keyword arguments of the matching method (``weight=``,
                ``stride=``, ...), or ``steps=[...]`` for ``"pipeline"``.

        Returns:
            ``PlanResult``.

        Raises:
            ValueError: unknown ``op``. TypeError: an argument the operation does not take.
            ValidationError and the other ``APIError`` types as for ``conv2d``.
        """
        request = self._plan_request(op, input, dtype, device, timeout, arguments)
        return PlanResult.from_response(self._call(request))

    def devices(self, *, timeout: float | None = None) -> DeviceList:
        """List the server's OpenCL devices, its default device and any skipped platforms.

        Raises:
            ServiceUnavailableError, ConnectionError, TimeoutError: as for ``conv2d``.
        """
        return DeviceList.from_response(self._call(self._get("/v1/devices", timeout)))

    def wait_until_ready(self, timeout: float = 60.0, *, interval: float = 0.25) -> None:
        """Poll ``GET /healthz`` until the server has a usable device.

        Connection failures and 503 responses count as "not ready yet" and are polled again.

        Args:
            timeout: seconds to keep trying (default 60).
            interval: seconds between polls (default 0.25).

        Raises:
            TimeoutError: the server was not ready within ``timeout`` seconds.
            APIError: the server returned another error status, such as 404.
        """
        deadline = time.monotonic() + timeout
        last_problem = "no answer yet"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"{self._base_url} was not ready within {timeout} s ({last_problem})",
                    url=f"{self._base_url}/healthz",
                )
            try:
                response = self._http.get("/healthz", timeout=min(remaining, self._timeout))
            except httpx.TransportError as error:
                last_problem = f"{type(error).__name__}: {error}"
            else:
                if response.status_code == 200:
                    return
                if response.status_code != 503:
                    raise api_error(response)
                last_problem = f"503: {response.text[:200]}"
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


class AsyncClient(BaseClient):
    """An ``asyncio`` client for one clconv server; each method mirrors ``Client``'s.

    Takes the same arguments as ``Client``, except that ``http_transport`` is an
    ``httpx.AsyncBaseTransport``.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: Encoding = "binary",
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_backoff: float = DEFAULT_MAX_BACKOFF_S,
        device: str | None = None,
        headers: Mapping[str, str] | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url,
            timeout=timeout,
            transport=transport,
            max_retries=max_retries,
            max_backoff=max_backoff,
            device=device,
        )
        self._http = httpx.AsyncClient(
            base_url=self._base_url,
            headers={**self._headers, **(headers or {})},
            timeout=self._timeout,
            transport=http_transport,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool; the client cannot be used afterwards."""
        await self._http.aclose()

    async def _send(self, request: PreparedRequest) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    request.method,
                    request.path,
                    content=request.content,
                    headers=request.headers,
                    timeout=request.timeout,
                )
            except httpx.TransportError as error:
                delay = self._retry_delay_for_error(request, error, attempt)
            else:
                response_delay = self._retry_delay_for_response(response, attempt)
                if response_delay is None:
                    return response
                delay = response_delay
            await asyncio.sleep(delay)
            attempt += 1

    async def _call(self, request: PreparedRequest) -> dict[str, Any]:
        return self._parse(await self._send(request))

    async def conv2d(
        self,
        input: Any,
        weight: Any,
        bias: Any = None,
        stride: IntPair = 1,
        padding: Padding = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        *,
        padding_mode: str = "zeros",
        activation: Activation = None,
        device: str | None = None,
        timeout: float | None = None,
        transport: Encoding | None = None,
    ) -> ConvResult:
        step = Conv2d(weight, bias, stride, padding, dilation, groups, padding_mode, activation)
        request = self._operation_request(step, input, device, transport, timeout)
        return ConvResult.from_response(await self._call(request))

    async def conv_transpose2d(
        self,
        input: Any,
        weight: Any,
        bias: Any = None,
        stride: IntPair = 1,
        padding: Padding = 0,
        output_padding: IntPair = 0,
        groups: int = 1,
        dilation: IntPair = 1,
        *,
        output_size: Sequence[int] | None = None,
        activation: Activation = None,
        device: str | None = None,
        timeout: float | None = None,
        transport: Encoding | None = None,
    ) -> ConvResult:
        step = ConvTranspose2d(
            weight, bias, stride, padding, output_padding, groups, dilation, output_size, activation
        )
        request = self._operation_request(step, input, device, transport, timeout)
        return ConvResult.from_response(await self._call(request))

    async def depthwise_separable_conv2d(
        self,
        input: Any,
        depthwise_weight: Any,
        pointwise_weight: Any,
        *,
        depthwise_bias: Any = None,
        pointwise_bias: Any = None,
        stride: IntPair = 1,
        padding: Padding = 0,
        dilation: IntPair = 1,
        padding_mode: str = "zeros",
        depthwise_activation: Activation = None,
        activation: Activation = None,
        device: str | None = None,
        timeout: float | None = None,
        transport: Encoding | None = None,
    ) -> ConvResult:
        step = DepthwiseSeparableConv2d(
            depthwise_weight,
            pointwise_weight,
            depthwise_bias,
            pointwise_bias,
            stride,
            padding,
            dilation,
            padding_mode,
            depthwise_activation,
            activation,
        )
        request = self._operation_request(step, input, device, transport, timeout)
        return ConvResult.from_response(await self._call(request))

    async def spatially_separable_conv2d(
        self,
        input: Any,
        weight: Any = None,
        bias: Any = None,
        *,
        vertical_weight: Any = None,
        vertical_bias: Any = None,
        horizontal_weight: Any = None,
        horizontal_bias: Any = None,
        tolerance: float | None = None,
        stride: IntPair = 1,
        padding: Padding = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        padding_mode: str = "zeros",
        vertical_activation: Activation = None,
        activation: Activation = None,
        device: str | None = None,
        timeout: float | None = None,
        transport: Encoding | None = None,
    ) -> ConvResult:
        step = SpatiallySeparableConv2d(
            weight,
            bias,
            vertical_weight,
            vertical_bias,
            horizontal_weight,
            horizontal_bias,
            tolerance,
            stride,
            padding,
            dilation,
            groups,
            padding_mode,
            vertical_activation,
            activation,
        )
        request = self._operation_request(step, input, device, transport, timeout)
        return ConvResult.from_response(await self._call(request))

    async def pipeline(
        self,
        input: Any,
        steps: Iterable[Step | Mapping[str, Any]],
        *,
        device: str | None = None,
        timeout: float | None = None,
        transport: Encoding | None = None,
    ) -> ConvResult:
        request = self._pipeline_request(input, steps, device, transport, timeout)
        return ConvResult.from_response(await self._call(request))

    async def plan(
        self,
        op: str | Step,
        input: Any,
        *,
        dtype: str | None = None,
        device: str | None = None,
        timeout: float | None = None,
        **arguments: Any,
    ) -> PlanResult:
        request = self._plan_request(op, input, dtype, device, timeout, arguments)
        return PlanResult.from_response(await self._call(request))

    async def devices(self, *, timeout: float | None = None) -> DeviceList:
        return DeviceList.from_response(await self._call(self._get("/v1/devices", timeout)))

    async def wait_until_ready(self, timeout: float = 60.0, *, interval: float = 0.25) -> None:
        deadline = time.monotonic() + timeout
        last_problem = "no answer yet"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"{self._base_url} was not ready within {timeout} s ({last_problem})",
                    url=f"{self._base_url}/healthz",
                )
            try:
                response = await self._http.get("/healthz", timeout=min(remaining, self._timeout))
            except httpx.TransportError as error:
                last_problem = f"{type(error).__name__}: {error}"
            else:
                if response.status_code == 200:
                    return
                if response.status_code != 503:
                    raise api_error(response)
                last_problem = f"503: {response.text[:200]}"
            await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))


# The async methods share the sync methods' contracts, so help() shows the same text for both.
for _name in (
    "conv2d",
    "conv_transpose2d",
    "depthwise_separable_conv2d",
    "spatially_separable_conv2d",
    "pipeline",
    "plan",
    "devices",
    "wait_until_ready",
):
    _sync_doc = getattr(Client, _name).__doc__
    getattr(AsyncClient, _name).__doc__ = f"Awaitable form of ``Client.{_name}``.\n\n{_sync_doc}"
