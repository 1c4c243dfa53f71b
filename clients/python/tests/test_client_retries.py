"""Retry policy: connection failures and 429/503 with Retry-After are retried, nothing else.

The counting tests use ``httpx.MockTransport``; the end-to-end cases use a real HTTP server on
127.0.0.1 (``stub_server``).
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Callable
from typing import Any

import clconv_client
import httpx
import numpy as np
import pytest
from clconv_client import AsyncClient, Client
from stub_server import Reply, conv_response, error_body, stub_server

X = np.ones((1, 1, 4, 4), np.float32)
WEIGHT = np.ones((1, 1, 3, 3), np.float32)
OUTPUT = np.full((1, 1, 2, 2), 9.0, np.float32)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the client's waits between attempts instead of sleeping."""
    recorded: list[float] = []
    monkeypatch.setattr("clconv_client._client.time.sleep", recorded.append)
    return recorded


def mock_client(
    handler: Callable[[httpx.Request], httpx.Response], **options: Any
) -> tuple[Client, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    client = Client("http://clconv.test", http_transport=httpx.MockTransport(record), **options)
    return client, seen


def test_real_stub_503_retry_after_then_200() -> None:
    script = [
        Reply(503, error_body("device_error", "busy"), headers={"Retry-After": "0"}),
        Reply(200, conv_response(OUTPUT)),
    ]
    with stub_server(script) as stub, Client(stub.url) as stub_client:
        result = stub_client.conv2d(X, WEIGHT)
    np.testing.assert_array_equal(result.output, OUTPUT)
    assert stub.requests == ["POST /v1/conv2d", "POST /v1/conv2d"]


def test_real_stub_429_retry_after_then_200() -> None:
    script = [
        Reply(429, error_body("rate_limited", "slow down"), headers={"Retry-After": "0"}),
        Reply(200, conv_response(OUTPUT)),
    ]
    with stub_server(script) as stub, Client(stub.url) as stub_client:
        result = stub_client.conv2d(X, WEIGHT)
    np.testing.assert_array_equal(result.output, OUTPUT)
    assert len(stub.requests) == 2


def test_real_stub_dropped_connection_then_200() -> None:
    script = [Reply(drop_connection=True), Reply(200, conv_response(OUTPUT))]
    with stub_server(script) as stub, Client(stub.url, max_backoff=0.01) as stub_client:
        result = stub_client.conv2d(X, WEIGHT)
    np.testing.assert_array_equal(result.output, OUTPUT)
    assert len(stub.requests) == 2


def test_real_stub_async_retry() -> None:
    script = [
        Reply(503, error_body("device_error", "busy"), headers={"Retry-After": "0"}),
        Reply(drop_connection=True),
        Reply(200, conv_response(OUTPUT)),
    ]

    async def call(url: str) -> np.ndarray:
        async with AsyncClient(url, max_backoff=0.01) as async_client:
            return (await async_client.conv2d(X, WEIGHT)).output

    with stub_server(script) as stub:
        output = asyncio.run(call(stub.url))
    np.testing.assert_array_equal(output, OUTPUT)
    assert len(stub.requests) == 3


def test_real_stub_retry_after_is_waited() -> None:
    script = [
        Reply(503, error_body("device_error", "busy"), headers={"Retry-After": "1"}),
        Reply(200, conv_response(OUTPUT)),
    ]
    with stub_server(script) as stub, Client(stub.url) as stub_client:
        started = time.monotonic()
        stub_client.conv2d(X, WEIGHT)
        elapsed = time.monotonic() - started
    assert elapsed >= 0.9


def test_503_retries_are_bounded(sleeps: list[float]) -> None:
    def busy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json=error_body("busy", "busy"), headers={"Retry-After": "2"})

    client, seen = mock_client(busy, max_retries=3)
    with pytest.raises(clconv_client.ServiceUnavailableError):
        client.conv2d(X, WEIGHT)
    assert len(seen) == 4
    assert sleeps == [2.0, 2.0, 2.0]


def test_retry_after_capped_by_max_backoff(sleeps: list[float]) -> None:
    def busy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json=error_body("busy", "busy"), headers={"Retry-After": "600"})

    client, seen = mock_client(busy, max_retries=1, max_backoff=5.0)
    with pytest.raises(clconv_client.ServiceUnavailableError):
        client.devices()
    assert len(seen) == 2
    assert sleeps == [5.0]


def test_retry_after_http_date(sleeps: list[float]) -> None:
    later = email.utils.formatdate(time.time() + 3, usegmt=True)
    replies = iter(
        [
            httpx.Response(503, json=error_body("busy", "busy"), headers={"Retry-After": later}),
            httpx.Response(200, json={"default": None, "devices": [], "skipped": []}),
        ]
    )
    client, seen = mock_client(lambda request: next(replies))
    client.devices()
    assert len(seen) == 2
    assert len(sleeps) == 1
    assert 1.0 <= sleeps[0] <= 3.0


def test_max_retries_zero(sleeps: list[float]) -> None:
    def busy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json=error_body("busy", "busy"), headers={"Retry-After": "0"})

    client, seen = mock_client(busy, max_retries=0)
    with pytest.raises(clconv_client.ServiceUnavailableError):
        client.devices()
    assert len(seen) == 1
    assert sleeps == []


@pytest.mark.parametrize("status", [400, 404, 405, 413, 422, 500, 502])
def test_no_retry_on_other_statuses(status: int, sleeps: list[float]) -> None:
    def failing(request: httpx.Request) -> httpx.Response:
        body = error_body("some_code", "some message")
        return httpx.Response(status, json=body, headers={"Retry-After": "0"})

    client, seen = mock_client(failing)
    with pytest.raises(clconv_client.APIError) as caught:
        client.conv2d(X, WEIGHT)
    assert caught.value.status == status
    assert len(seen) == 1
    assert sleeps == []


@pytest.mark.parametrize("status", [429, 503])
def test_no_retry_without_retry_after(status: int, sleeps: list[float]) -> None:
    client, seen = mock_client(lambda request: httpx.Response(status, json=error_body("x", "y")))
    with pytest.raises(clconv_client.APIError):
        client.conv2d(X, WEIGHT)
    assert len(seen) == 1


def test_connection_failures_retried_with_backoff(sleeps: list[float]) -> None:
    def reject_connection(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection reject_connectiond", request=request)

    client, seen = mock_client(reject_connection, max_retries=3, max_backoff=0.6)
    with pytest.raises(clconv_client.ConnectionError) as caught:
        client.conv2d(X, WEIGHT)
    assert len(seen) == 4
    assert sleeps == [0.25, 0.5, 0.6]
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


def test_connection_failure_then_success(sleeps: list[float]) -> None:
    attempts: list[int] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        if len(attempts) == 1:
            raise httpx.RemoteProtocolError("server disconnected", request=request)
        return httpx.Response(200, json=conv_response(OUTPUT))

    client, seen = mock_client(flaky)
    result = client.conv2d(X, WEIGHT)
    np.testing.assert_array_equal(result.output, OUTPUT)
    assert len(seen) == 2
    assert sleeps == [0.25]


def test_read_timeout_not_retried(sleeps: list[float]) -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    client, seen = mock_client(slow)
    with pytest.raises(clconv_client.TimeoutError):
        client.conv2d(X, WEIGHT)
    assert len(seen) == 1
    assert sleeps == []


def test_async_retries_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []

    async def record_sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr("clconv_client._client.asyncio.sleep", record_sleep)
    seen: list[httpx.Request] = []

    def reject_connection(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raise httpx.ConnectError("connection reject_connectiond", request=request)

    async def call() -> None:
        transport = httpx.MockTransport(reject_connection)
        async with AsyncClient("http://clconv.test", http_transport=transport) as async_client:
            await async_client.devices()

    with pytest.raises(clconv_client.ConnectionError):
        asyncio.run(call())
    assert len(seen) == 4
    assert waits == [0.25, 0.5, 1.0]
