"""Overload behaviour, after each of which the server still serves a normal request.

A full device queue or budget of bytes in flight gets 503 with Retry-After. A request that
cannot start before its deadline gets 504. Work for a client that disconnected is dropped, and
SIGTERM lets running work finish.
"""

from __future__ import annotations

import base64
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from servers import Server, running_server, stop
from support import tensor_json

MAX_QUEUED = 1
# Twenty 3x3 convolutions of 128 channels on 96x96 run for about a second on a 2-core CPU
# (Intel's OpenCL runtime), long enough for other requests to find the device busy.
HEAVY_STEPS = 20


def heavy_pipeline() -> dict[str, Any]:
    weight = np.zeros((128, 128, 3, 3), dtype=np.float32)
    encoded = {
        "shape": list(weight.shape),
        "dtype": "float32",
        "base64": base64.b64encode(weight.tobytes()).decode(),
    }
    steps = [{"op": "conv2d", "weight": encoded, "padding": 1}] * HEAVY_STEPS
    image = np.zeros((1, 128, 96, 96), dtype=np.float32)
    return {"input": tensor_json(image), "steps": steps}


def small_conv2d() -> dict[str, Any]:
    return {
        "input": tensor_json(np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3), "json"),
        "weight": tensor_json(np.ones((1, 1, 2, 2), dtype=np.float32), "json"),
    }


def assert_still_serving(url: str) -> None:
    response = httpx.post(f"{url}/v1/conv2d", json=small_conv2d(), timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["output"]["data"] == [8.0, 12.0, 20.0, 24.0]


def wait_until_running(url: str, timeout_s: float = 30.0) -> None:
    """Poll /metrics until a request runs on some device."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in httpx.get(f"{url}/metrics").text.splitlines():
            if line.startswith("clconv_device_running_requests{") and line.endswith(" 1.0"):
                return
        time.sleep(0.02)
    raise AssertionError(f"no request started running within {timeout_s} s")


class Background:
    """One request sent from a thread; ``response`` is set when it finishes."""

    def __init__(self, url: str, path: str, body: bytes) -> None:
        self.response: httpx.Response | None = None
        self.thread = threading.Thread(target=self._send, args=(url + path, body))
        self.thread.start()

    def _send(self, url: str, body: bytes) -> None:
        headers = {"Content-Type": "application/json"}
        self.response = httpx.post(url, content=body, headers=headers, timeout=120)

    def join(self) -> httpx.Response:
        self.thread.join(timeout=120)
        assert self.response is not None
        return self.response


@pytest.fixture(scope="module")
def heavy_body() -> bytes:
    return json.dumps(heavy_pipeline()).encode()


@pytest.fixture(scope="module")
def busy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"CLCONV_MAX_QUEUED": str(MAX_QUEUED), "CLCONV_LOG_FORMAT": "json"}
    with running_server(env, tmp_path_factory.mktemp("overload")) as server:
        yield server


def test_full_queue_gets_503_with_retry_after(busy_server: Server, heavy_body: bytes) -> None:
    senders = [Background(busy_server.url, "/v1/pipeline", heavy_body) for _ in range(6)]
    responses = [sender.join() for sender in senders]
    statuses = sorted(response.status_code for response in responses)
    assert 200 in statuses
    assert 503 in statuses, statuses
    assert set(statuses) <= {200, 503}, statuses
    rejected = next(response for response in responses if response.status_code == 503)
    assert rejected.headers["Retry-After"] == "1"
    error = rejected.json()["error"]
    assert error["code"] == "overloaded"
    assert "CLCONV_MAX_QUEUED" in error["message"]
    assert error["field"] == "device"
    assert_still_serving(busy_server.url)


def test_deadline_passed_gets_504(busy_server: Server, heavy_body: bytes) -> None:
    heavy = Background(busy_server.url, "/v1/pipeline", heavy_body)
    wait_until_running(busy_server.url)
    response = httpx.post(
        f"{busy_server.url}/v1/conv2d",
        json=small_conv2d(),
        headers={"X-Request-Timeout": "0.1"},
        timeout=60,
    )
    assert response.status_code == 504, response.text
    error = response.json()["error"]
    assert error["code"] == "deadline_exceeded"
    assert "X-Request-Timeout" in error["message"]
    assert heavy.join().status_code == 200
    assert_still_serving(busy_server.url)


def test_request_timeout_header_on_v2(busy_server: Server, heavy_body: bytes) -> None:
    heavy = Background(busy_server.url, "/v1/pipeline", heavy_body)
    wait_until_running(busy_server.url)
    inputs = [
        {"name": "input", "datatype": "FP32", "shape": [1, 1, 3, 3], "data": [0.0] * 9},
        {"name": "weight", "datatype": "FP32", "shape": [1, 1, 2, 2], "data": [0.0] * 4},
    ]
    response = httpx.post(
        f"{busy_server.url}/v2/models/conv2d/infer",
        json={"inputs": inputs},
        headers={"Request-Timeout": "0.1"},
        timeout=60,
    )
    assert response.status_code == 504, response.text
    assert "deadline" in response.json()["error"]
    assert heavy.join().status_code == 200


@pytest.mark.parametrize("value", ["soon", "0", "-1", "nan"])
def test_invalid_timeout_header_rejected(busy_server: Server, value: str) -> None:
    response = httpx.post(
        f"{busy_server.url}/v1/conv2d",
        json=small_conv2d(),
        headers={"X-Request-Timeout": value},
        timeout=60,
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == "x-request-timeout"
    assert repr(value) in error["message"]
    assert_still_serving(busy_server.url)


def test_disconnected_client_work_dropped(busy_server: Server, heavy_body: bytes) -> None:
    heavy = Background(busy_server.url, "/v1/pipeline", heavy_body)
    wait_until_running(busy_server.url)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{busy_server.url}/v1/conv2d",
            json=small_conv2d(),
            headers={"X-Request-ID": "gone-client-1"},
            timeout=0.3,
        )
    assert heavy.join().status_code == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "client_disconnected" not in busy_server.log():
        time.sleep(0.1)
    lines = [json.loads(line) for line in busy_server.log().splitlines() if line.startswith("{")]
    dropped = [line for line in lines if line.get("request_id") == "gone-client-1"]
    assert [line.get("error_code") for line in dropped] == ["client_disconnected", None]
    assert dropped[-1]["status"] == 499
    assert "timings_ms" not in dropped[-1]
    assert_still_serving(busy_server.url)


def test_json_log_lines_carry_request_fields(busy_server: Server) -> None:
    response = httpx.post(
        f"{busy_server.url}/v1/conv2d",
        json=small_conv2d(),
        headers={"X-Request-ID": "json-log-1"},
        timeout=60,
    )
    assert response.status_code == 200
    lines = [json.loads(line) for line in busy_server.log().splitlines() if line.startswith("{")]
    line = next(line for line in lines if line.get("request_id") == "json-log-1")
    assert line["operation"] == "conv2d"
    assert line["status"] == 200
    assert line["device"] == response.json()["device"]["id"]
    assert line["algorithm"] == "+".join(response.json()["algorithm"])
    assert set(line["timings_ms"]) >= {"queue", "upload", "compute", "download"}


def test_inflight_bytes_over_limit_gets_503(tmp_path: Path) -> None:
    with running_server({"CLCONV_MAX_INFLIGHT_BYTES": "2000"}, tmp_path) as server:
        body = small_conv2d()
        body["input"] = tensor_json(np.zeros((1, 1, 30, 30), dtype=np.float32), "json")
        response = httpx.post(f"{server.url}/v1/conv2d", json=body, timeout=60)
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "1"
        error = response.json()["error"]
        assert error["code"] == "overloaded"
        assert "limit of 2000" in error["message"]
        assert "CLCONV_MAX_INFLIGHT_BYTES" in error["message"]
        assert_still_serving(server.url)


def test_sigterm_drains_running_request(tmp_path: Path, heavy_body: bytes) -> None:
    with running_server({}, tmp_path) as server:
        heavy = Background(server.url, "/v1/pipeline", heavy_body)
        wait_until_running(server.url)
        # uvicorn re-raises the signal after its graceful shutdown, so the status is -15.
        assert stop(server, signal.SIGTERM) in (0, -signal.SIGTERM)
        assert heavy.join().status_code == 200
        assert "not ready from now on" in server.log()


LOAD_SECONDS = 4.0
LOAD_THREADS = 16
LOAD_MAX_QUEUED = 2


def test_load_sheds_with_retry_after(tmp_path: Path) -> None:
    """A short closed-loop load test: more clients than the queue admits get 503 with
    Retry-After, every admitted request succeeds, and the server stays responsive."""
    image = np.ones((1, 64, 64, 64), dtype=np.float32)
    weight = np.ones((128, 64, 3, 3), dtype=np.float32)
    body = json.dumps(
        {"input": tensor_json(image), "weight": tensor_json(weight), "padding": 1}
    ).encode()
    env = {"CLCONV_MAX_QUEUED": str(LOAD_MAX_QUEUED)}
    statuses: list[int] = []
    retry_after: list[str | None] = []
    latencies: dict[int, list[float]] = {200: [], 503: []}
    lock = threading.Lock()

    with running_server(env, tmp_path) as server:
        stop_at = time.monotonic() + LOAD_SECONDS

        def client_loop() -> None:
            with httpx.Client(base_url=server.url, timeout=60) as http:
                while time.monotonic() < stop_at:
                    started = time.perf_counter()
                    response = http.post(
                        "/v1/conv2d", content=body, headers={"Content-Type": "application/json"}
                    )
                    elapsed = time.perf_counter() - started
                    with lock:
                        statuses.append(response.status_code)
                        latencies.setdefault(response.status_code, []).append(elapsed)
                        if response.status_code == 503:
                            retry_after.append(response.headers.get("Retry-After"))
                        if response.status_code == 200:
                            output = response.json()["output"]
                            assert output["shape"] == [1, 128, 64, 64]

                    if response.status_code == 503:
                        time.sleep(0.05)

        threads = [threading.Thread(target=client_loop) for _ in range(LOAD_THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert_still_serving(server.url)

    ok = statuses.count(200)
    shed = statuses.count(503)
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    assert ok > 0
    assert shed > 0
    assert retry_after == ["1"] * shed
    median_ok_ms = 1e3 * sorted(latencies[200])[len(latencies[200]) // 2]
    median_shed_ms = 1e3 * sorted(latencies[503])[len(latencies[503]) // 2]
    print(
        f"\nload: {LOAD_THREADS} clients for {LOAD_SECONDS:.0f} s, CLCONV_MAX_QUEUED="
        f"{LOAD_MAX_QUEUED}, conv2d 1x64x64x64 * 128x64x3x3: {ok} x 200 "
        f"({ok / LOAD_SECONDS:.1f}/s, median {median_ok_ms:.0f} ms), {shed} x 503 "
        f"(median {median_shed_ms:.0f} ms)"
    )
