"""Each exception type, from the real server where it can produce the status, else a stub."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import clconv_client
import numpy as np
import pytest
from clconv_client import Client
from clconv_client._exceptions import error_class_for_status
from stub_server import Reply, error_body, free_port, stub_server

X = np.ones((1, 1, 4, 4), np.float32)
WEIGHT = np.ones((1, 1, 3, 3), np.float32)


def test_validation_error_from_server(client: Client) -> None:
    with pytest.raises(clconv_client.ValidationError) as caught:
        client.conv2d(X, WEIGHT, stride=0)
    error = caught.value
    assert error.status == 422
    assert error.code == "invalid_value"
    assert error.field == "stride"
    assert "stride" in error.message
    assert error.request_id
    assert str(error).startswith("422 invalid_value (field stride): ")


def test_unknown_device_is_validation_error(client: Client) -> None:
    with pytest.raises(clconv_client.ValidationError) as caught:
        client.conv2d(X, WEIGHT, device="nvidia:9")
    assert caught.value.code == "unknown_device"
    assert caught.value.field == "device"


def test_not_found_from_server(server_url: str) -> None:
    with (
        Client(f"{server_url}/no-such-prefix") as wrong_client,
        pytest.raises(clconv_client.NotFoundError) as caught,
    ):
        wrong_client.devices()
    assert caught.value.status == 404
    assert caught.value.code == "not_found"
    assert caught.value.field == "path"


def test_payload_too_large_from_server(client: Client) -> None:
    # The planned output is 64 * 8192 * 8192 float32 values (16 GiB), over the server's default
    # output limit of 1 GiB; planning allocates nothing.
    with pytest.raises(clconv_client.PayloadTooLargeError) as caught:
        client.plan("conv2d", (1, 64, 8192, 8192), weight=(64, 64, 1, 1))
    assert caught.value.status == 413
    assert caught.value.code == "too_large"


def raised_by_stub(
    script: list[Reply],
    call: Callable[[Client], object],
    error_class: type[clconv_client.ClconvError],
    **options: Any,
) -> tuple[Any, list[str]]:
    """Run ``call`` on a client of a stub server; return the error raised and the requests."""
    with (
        stub_server(script) as stub,
        Client(stub.url, **options) as stub_client,
        pytest.raises(error_class) as caught,
    ):
        call(stub_client)
    return caught.value, stub.requests


def run_conv2d(stub_client: Client) -> object:
    return stub_client.conv2d(X, WEIGHT)


def list_devices(stub_client: Client) -> object:
    return stub_client.devices()


def test_bad_request_from_stub() -> None:
    body = error_body("malformed_json", "the body is not valid JSON", "body")
    error, requests = raised_by_stub([Reply(400, body)], run_conv2d, clconv_client.BadRequestError)
    assert error.status == 400
    assert error.code == "malformed_json"
    assert error.message == "the body is not valid JSON"
    assert error.field == "body"
    assert len(requests) == 1


def test_server_error_not_retried() -> None:
    message = "clEnqueueNDRangeKernel failed on intel:0: CL_OUT_OF_RESOURCES"
    error, requests = raised_by_stub(
        [Reply(500, error_body("device_error", message))], run_conv2d, clconv_client.ServerError
    )
    assert type(error) is clconv_client.ServerError
    assert error.code == "device_error"
    assert error.message == message
    assert len(requests) == 1


def test_service_unavailable_without_retry_after() -> None:
    body = error_body("device_error", "no usable device")
    error, requests = raised_by_stub(
        [Reply(503, body)], list_devices, clconv_client.ServiceUnavailableError
    )
    assert error.status == 503
    assert isinstance(error, clconv_client.ServerError)
    assert len(requests) == 1


def test_error_body_not_json() -> None:
    reply = Reply(502, None, headers={"Content-Type": "text/plain"})
    error, _ = raised_by_stub([reply], list_devices, clconv_client.ServerError)
    assert error.status == 502
    assert error.code == "http_error"
    assert error.field is None


def test_other_status_is_api_error() -> None:
    body = error_body("method_not_allowed", "GET /v1/conv2d: Method Not Allowed", "path")
    error, _ = raised_by_stub([Reply(405, body)], list_devices, clconv_client.APIError)
    assert type(error) is clconv_client.APIError
    assert error.code == "method_not_allowed"


def test_connection_error_on_closed_port() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with (
        Client(url, max_retries=2, max_backoff=0.01) as closed_client,
        pytest.raises(clconv_client.ConnectionError) as caught,
    ):
        closed_client.conv2d(X, WEIGHT)
    assert "3 attempt(s)" in caught.value.message
    assert caught.value.url == f"{url}/v1/conv2d"
    assert isinstance(caught.value, clconv_client.TransportError)


def test_timeout_error_not_retried() -> None:
    reply = Reply(200, {"default": None, "devices": []}, delay_s=1.5)
    error, requests = raised_by_stub([reply], list_devices, clconv_client.TimeoutError, timeout=0.3)
    assert "timed out after 0.3 s" in error.message
    assert len(requests) == 1


def test_per_call_timeout_override() -> None:
    listing = {"default": None, "devices": [], "skipped": []}
    with stub_server([Reply(200, listing, delay_s=0.5)]) as stub:
        with Client(stub.url, timeout=0.1) as slow_client:
            assert slow_client.devices(timeout=5.0).devices == ()
        with (
            Client(stub.url, timeout=5.0) as patient_client,
            pytest.raises(clconv_client.TimeoutError),
        ):
            patient_client.devices(timeout=0.1)


def test_async_timeout_error() -> None:
    async def call(url: str) -> None:
        async with clconv_client.AsyncClient(url, timeout=0.3) as slow_client:
            await slow_client.devices()

    with (
        stub_server([Reply(200, {}, delay_s=1.5)]) as stub,
        pytest.raises(clconv_client.TimeoutError),
    ):
        asyncio.run(call(stub.url))
    assert len(stub.requests) == 1


def test_broken_framing_is_decode_error() -> None:
    reply = Reply(200, {"op": "conv2d"}, headers={"Inference-Header-Content-Length": "99999"})
    error, _ = raised_by_stub([reply], run_conv2d, clconv_client.ResponseDecodeError)
    assert "Inference-Header-Content-Length" in error.message


def test_wait_until_ready_times_out() -> None:
    def wait(stub_client: Client) -> object:
        stub_client.wait_until_ready(timeout=0.5, interval=0.05)
        return None

    reply = Reply(503, {"status": "unavailable"})
    error, requests = raised_by_stub([reply], wait, clconv_client.TimeoutError)
    assert "not ready within 0.5 s" in error.message
    assert len(requests) > 1


def test_status_classes() -> None:
    expected = {
        400: clconv_client.BadRequestError,
        404: clconv_client.NotFoundError,
        405: clconv_client.APIError,
        413: clconv_client.PayloadTooLargeError,
        422: clconv_client.ValidationError,
        429: clconv_client.APIError,
        500: clconv_client.ServerError,
        502: clconv_client.ServerError,
        503: clconv_client.ServiceUnavailableError,
    }
    for status, error_class in expected.items():
        assert error_class_for_status(status) is error_class, status


def test_hierarchy() -> None:
    for name in clconv_client.__all__:
        value = getattr(clconv_client, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, clconv_client.ClconvError), name
    assert issubclass(clconv_client.ServiceUnavailableError, clconv_client.ServerError)
    assert issubclass(clconv_client.ServerError, clconv_client.APIError)
    assert issubclass(clconv_client.TimeoutError, clconv_client.TransportError)
    assert issubclass(clconv_client.ConnectionError, clconv_client.TransportError)
