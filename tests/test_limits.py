"""Size limits that reject a request before anything is allocated: body encoding, tensor rank
and elements, kernel size, and device memory (a fraction of global memory, and the largest
single allocation). Each rejection names the limit, the value and the setting that raises it,
and the server keeps serving afterwards."""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from servers import Server, running_server
from support import tensor_json

MAX_TENSOR_ELEMENTS = 100_000
MAX_KERNEL_SIZE = 5
DEVICE_MEMORY_FRACTION = 1e-6


def small_conv2d() -> dict[str, Any]:
    return {
        "input": tensor_json(np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3), "json"),
        "weight": tensor_json(np.ones((1, 1, 2, 2), dtype=np.float32), "json"),
    }


def shape_only(*shape: int) -> dict[str, Any]:
    return {"shape": list(shape), "dtype": "float32"}


def assert_still_serving(http: httpx.Client) -> None:
    response = http.post("/v1/conv2d", json=small_conv2d())
    assert response.status_code == 200, response.text
    assert response.json()["output"]["data"] == [8.0, 12.0, 20.0, 24.0]


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "CLCONV_MAX_TENSOR_ELEMENTS": str(MAX_TENSOR_ELEMENTS),
        "CLCONV_MAX_KERNEL_SIZE": str(MAX_KERNEL_SIZE),
        "CLCONV_DEVICE_MEMORY_FRACTION": str(DEVICE_MEMORY_FRACTION),
    }
    with running_server(env, tmp_path_factory.mktemp("limits")) as server:
        yield server


@pytest.fixture(scope="module")
def limited_client(limited: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=limited.url, timeout=60.0) as http:
        yield http


def test_gzip_body_rejected_with_415(client: httpx.Client) -> None:
    content = gzip.compress(json.dumps(small_conv2d()).encode())
    response = client.post(
        "/v1/conv2d",
        content=content,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert response.status_code == 415
    error = response.json()["error"]
    assert error["code"] == "unsupported_media_type"
    assert error["field"] == "Content-Encoding"
    assert "'gzip'" in error["message"]
    assert_still_serving(client)


def test_gzip_body_rejected_on_v2(client: httpx.Client) -> None:
    response = client.post(
        "/v2/models/conv2d/infer",
        content=gzip.compress(b"{}"),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert response.status_code == 415
    assert "Content-Encoding" in response.json()["error"]


def test_rank_over_maximum_rejected(client: httpx.Client) -> None:
    body = small_conv2d()
    body["input"] = {"shape": [1] * 9, "dtype": "float32", "data": [1.0]}
    response = client.post("/v1/conv2d", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == "input.shape"
    assert "9 dimensions" in error["message"]
    assert "maximum of 8" in error["message"]
    assert_still_serving(client)


def test_tensor_elements_over_limit(limited_client: httpx.Client) -> None:
    body = small_conv2d()
    body["input"] = {"shape": [1, 1, 400, 400], "dtype": "float32", "base64": ""}
    response = limited_client.post("/v1/conv2d", json=body)
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "too_large"
    assert error["field"] == "input.shape"
    assert "160000 elements" in error["message"]
    assert f"limit of {MAX_TENSOR_ELEMENTS}" in error["message"]
    assert "CLCONV_MAX_TENSOR_ELEMENTS" in error["message"]
    assert_still_serving(limited_client)


def test_tensor_elements_checked_in_pipeline_steps(limited_client: httpx.Client) -> None:
    body = {
        "input": small_conv2d()["input"],
        "steps": [{"op": "conv2d", "weight": shape_only(1000, 1000, 1, 1)}],
    }
    response = limited_client.post("/v1/pipeline", json=body)
    assert response.status_code == 413
    assert response.json()["error"]["field"] == "steps[0].weight.shape"
    assert_still_serving(limited_client)


def test_kernel_size_over_limit(limited_client: httpx.Client) -> None:
    body = small_conv2d()
    body["weight"] = tensor_json(np.ones((1, 1, 7, 3), dtype=np.float32), "json")
    response = limited_client.post("/v1/conv2d", json=body)
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["field"] == "weight.shape"
    assert "7x3 kernel" in error["message"]
    assert f"limit of {MAX_KERNEL_SIZE}" in error["message"]
    assert "CLCONV_MAX_KERNEL_SIZE" in error["message"]
    assert_still_serving(limited_client)


def test_kernel_size_over_limit_on_v2(limited_client: httpx.Client) -> None:
    inputs = [
        {"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": [0.0] * 64},
        {"name": "weight", "datatype": "FP32", "shape": [1, 1, 6, 6], "data": [0.0] * 36},
    ]
    response = limited_client.post("/v2/models/conv2d/infer", json={"inputs": inputs})
    assert response.status_code == 413
    assert "CLCONV_MAX_KERNEL_SIZE" in response.json()["error"]


def test_device_memory_over_budget(limited_client: httpx.Client) -> None:
    listing = limited_client.get("/v1/devices").json()
    device = next(d for d in listing["devices"] if d["id"] == listing["default"])
    budget = int(device["global_mem_bytes"] * DEVICE_MEMORY_FRACTION)
    # The input and the same-sized output together take 8 bytes per element.
    side = math.isqrt(budget // 8) + 2
    assert side * side <= MAX_TENSOR_ELEMENTS, "the budget is too large for the element cap"
    body = {"op": "conv2d", "input": shape_only(1, 1, side, side), "weight": shape_only(1, 1, 1, 1)}
    response = limited_client.post("/v1/plan", json=body)
    assert response.status_code == 413
    error = response.json()["error"]
    assert f"budget of {budget} bytes" in error["message"]
    assert device["id"] in error["message"]
    assert "CLCONV_DEVICE_MEMORY_FRACTION" in error["message"]
    smaller = {**body, "input": shape_only(1, 1, 8, 8)}
    assert limited_client.post("/v1/plan", json=smaller).status_code == 200
    assert_still_serving(limited_client)


def test_buffer_over_max_mem_alloc(tmp_path: Path) -> None:
    env = {
        "CLCONV_MAX_TENSOR_ELEMENTS": str(2**45),
        "CLCONV_MAX_WORK_BYTES": str(2**50),
        "CLCONV_DEVICE_MEMORY_FRACTION": "1",
    }
    with running_server(env, tmp_path) as server, httpx.Client(base_url=server.url) as http:
        devices = http.get("/v1/devices").json()["devices"]
        device = next(
            (d for d in devices if d["max_mem_alloc_bytes"] < d["global_mem_bytes"] // 2), None
        )
        if device is None:
            pytest.skip("no device allows less than half its global memory in one buffer")
        max_alloc = device["max_mem_alloc_bytes"]
        # A strided 1x1 convolution: the input buffer is over the largest allocation, while
        # input and output together stay under global memory.
        side = math.isqrt(max_alloc // 4) + 16
        body = {
            "op": "conv2d",
            "input": shape_only(1, 1, side, side),
            "weight": shape_only(1, 1, 1, 1),
            "stride": 16,
            "device": device["id"],
        }
        response = http.post("/v1/plan", json=body)
        assert response.status_code == 413, response.text
        message = response.json()["error"]["message"]
        assert "input buffer" in message
        assert f"largest single allocation of {max_alloc} bytes" in message
        assert "CL_DEVICE_MAX_MEM_ALLOC_SIZE" in message
        assert_still_serving(http)
