"""Schemathesis against the session server's OpenAPI schema: every declared operation, with
generated path parameters and bodies, returns no 5xx.

The ``/v1`` operation routes read their bodies by hand so that errors carry field paths, so
the schema declares no body for them. Those routes get requests without a body or with
whatever the schema allows. Their body validation is covered by test_bad_requests.py.

Each operation's Hypothesis strategy (``APIOperation.as_strategy``) is driven by ``given``
here. Schemathesis' pytest plugin (``schemathesis.pytest.from_fixture``) is not used, because
version 4.32 fails under pytest 9 with ``'Function' object has no attribute '_nodeid'``.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

EXAMPLES_PER_OPERATION = 15


def operations(server_url: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{server_url}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def test_schema_lists_operations(server_url: str) -> None:
    paths = httpx.get(f"{server_url}/openapi.json").json()["paths"]
    for path in ("/healthz", "/readyz", "/metrics", "/v1/devices", "/v1/conv2d", "/v2"):
        assert path in paths, path


def test_no_server_errors(server_url: str) -> None:
    found = operations(server_url)
    assert len(found) >= 10
    failures: list[str] = []
    for operation in found:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def call(case: Any) -> None:
            response = case.call(base_url=server_url, timeout=60)
            header_names = {name.lower() for name in response.headers}
            if response.status_code >= 500 or "x-request-id" not in header_names:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: "
                    f"{response.text[:300]}"
                )

        call()
    assert failures == []


@pytest.mark.parametrize("path", ["/v1/conv2d", "/v1/plan", "/v2/models/conv2d/infer"])
def test_undeclared_body_rejected_cleanly(client: httpx.Client, path: str) -> None:
    for content in (b"", b"null", b"[]", b'{"input": {}}', b"\xff\xfe"):
        response = client.post(path, content=content)
        assert 400 <= response.status_code < 500, (content, response.text)
