"""Optional API keys: 401 without a key, 403 with a wrong one, open health, readiness, metrics
and playground routes, and no key in the server log."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from clconv.cli import log_exposure
from clconv.settings import Settings
from servers import Server, running_server
from support import tensor_json

KEYS = ("first-test-key", "second-test-key")
WRONG_KEY = "wrong-test-key"


def small_conv2d() -> dict[str, Any]:
    return {
        "input": tensor_json(np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3), "json"),
        "weight": tensor_json(np.ones((1, 1, 2, 2), dtype=np.float32), "json"),
    }


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_still_serving(http: httpx.Client) -> None:
    response = http.post("/v1/conv2d", json=small_conv2d(), headers=bearer(KEYS[0]))
    assert response.status_code == 200, response.text
    assert response.json()["output"]["data"] == [8.0, 12.0, 20.0, 24.0]


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"CLCONV_API_KEYS": ",".join(KEYS)}
    with running_server(env, tmp_path_factory.mktemp("auth")) as server:
        yield server


@pytest.fixture(scope="module")
def http(keyed: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=keyed.url, timeout=60.0) as client:
        yield client


def test_missing_key_gets_401(http: httpx.Client) -> None:
    response = http.post("/v1/conv2d", json=small_conv2d())
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "X-Request-ID" in response.headers
    error = response.json()["error"]
    assert error["code"] == "unauthorized"
    assert error["field"] == "Authorization"
    assert "Authorization: Bearer <key>" in error["message"]
    assert_still_serving(http)


def test_wrong_scheme_gets_401(http: httpx.Client) -> None:
    response = http.get("/v1/devices", headers={"Authorization": f"Basic {KEYS[0]}"})
    assert response.status_code == 401
    assert "'Basic'" in response.json()["error"]["message"]
    assert_still_serving(http)


def test_wrong_key_gets_403(http: httpx.Client) -> None:
    response = http.post("/v1/conv2d", json=small_conv2d(), headers=bearer(WRONG_KEY))
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "forbidden"
    assert WRONG_KEY not in error["message"]
    assert_still_serving(http)


@pytest.mark.parametrize("key", KEYS)
def test_each_configured_key_accepted(http: httpx.Client, key: str) -> None:
    response = http.get("/v1/devices", headers=bearer(key))
    assert response.status_code == 200
    assert response.json()["devices"]


def test_v2_routes_need_key(http: httpx.Client) -> None:
    assert http.get("/v2/models/conv2d").status_code == 401
    response = http.get("/v2/models/conv2d", headers=bearer(WRONG_KEY))
    assert response.status_code == 403
    assert isinstance(response.json()["error"], str)
    assert http.get("/v2/models/conv2d", headers=bearer(KEYS[1])).status_code == 200


@pytest.mark.parametrize(
    "path", ["/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready", "/"]
)
def test_open_routes_need_no_key(http: httpx.Client, path: str) -> None:
    assert http.get(path).status_code == 200


def test_keys_never_logged(http: httpx.Client, keyed: Server) -> None:
    http.get("/v1/devices", headers=bearer(WRONG_KEY))
    http.get("/v1/devices", headers=bearer(KEYS[0]))
    log = keyed.log()
    assert "403" in log
    for key in (*KEYS, WRONG_KEY):
        assert key not in log


def test_exposed_bind_without_keys_warns(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("clconv.test")
    with caplog.at_level(logging.INFO, logger="clconv.test"):
        log_exposure(Settings(host="0.0.0.0"), logger)
        log_exposure(Settings(host="0.0.0.0", api_keys=KEYS), logger)
        log_exposure(Settings(host="127.0.0.1"), logger)
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "CLCONV_API_KEYS is not set" in warnings[0].getMessage()
    assert all(key not in caplog.text for key in KEYS)
