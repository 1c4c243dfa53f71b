"""Prometheus /metrics after traffic, and readiness (/readyz and /v2/health/ready): not
before the warm-up has built the common kernels, and not after shutdown begins."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from clconv.engine import Engine
from clconv.settings import Settings
from servers import running_server
from support import tensor_json

STAGES = ("queue", "upload", "compute", "download")


def small_conv2d() -> dict[str, Any]:
    return {
        "input": tensor_json(np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3), "json"),
        "weight": tensor_json(np.ones((1, 1, 2, 2), dtype=np.float32), "json"),
    }


def sample(text: str, name: str, **labels: str) -> float:
    """Return the value of one series; fail when it is missing."""
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            return float(match.group(3))
    raise AssertionError(f"series {name} {labels} not found in /metrics")


def test_metrics_after_traffic(client: httpx.Client, device_id: str) -> None:
    before = client.get("/metrics").text
    requests_before = _optional(before, "clconv_requests_total", operation="conv2d", status="200")
    body = {**small_conv2d(), "device": device_id}
    for _ in range(3):
        assert client.post("/v1/conv2d", json=body).status_code == 200
    assert client.post("/v1/conv2d", json={"input": 1}).status_code == 422

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    total = sample(text, "clconv_requests_total", operation="conv2d", status="200")
    assert total - requests_before == 3
    assert sample(text, "clconv_requests_total", operation="conv2d", status="422") >= 1
    assert sample(text, "clconv_request_duration_seconds_count", operation="conv2d") >= 4
    for stage in STAGES:
        count = sample(
            text, "clconv_device_stage_duration_seconds_count", operation="conv2d", stage=stage
        )
        assert count >= 3, stage
    assert sample(text, "clconv_request_body_bytes_total", operation="conv2d") > 0
    assert sample(text, "clconv_response_body_bytes_total", operation="conv2d") > 0
    assert sample(text, "clconv_device_running_requests", device=device_id) == 0
    assert sample(text, "clconv_device_queued_requests", device=device_id) == 0
    assert sample(text, "clconv_device_memory_reserved_bytes", device=device_id) == 0
    assert sample(text, "clconv_device_memory_budget_bytes", device=device_id) > 0
    assert sample(text, "clconv_device_healthy", device=device_id) == 1
    assert sample(text, "clconv_inflight_body_bytes") == 0


def _optional(text: str, name: str, **labels: str) -> float:
    try:
        return sample(text, name, **labels)
    except AssertionError:
        return 0.0


def test_ready_after_warm_up(client: httpx.Client) -> None:
    deadline = time.monotonic() + 60
    while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.get("/readyz").json() == {"status": "ready"}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert sample(client.get("/metrics").text, "clconv_ready") == 1


def test_listening_only_after_warm_up(tmp_path: Path) -> None:
    env = {"CLCONV_WARMUP": "1"}
    with running_server(env, tmp_path, ready_path="/healthz") as server:
        # The first response the server sends already reports ready.
        assert httpx.get(f"{server.url}/readyz").json() == {"status": "ready"}
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
        log = server.log()
        assert "warm-up built the common kernels" in log
        assert log.index("warm-up built the common kernels") < log.index("Uvicorn running on")


def test_engine_readiness_states() -> None:
    engine = Engine(Settings(warmup=False))
    assert not engine.serving
    engine.start()
    assert engine.ready
    assert not engine.serving, "ready before the warm-up ran"
    engine.warm_up()
    assert engine.serving
    engine.begin_shutdown()
    assert engine.stopping
    assert not engine.serving
    assert engine.ready, "liveness stays up while requests drain"
