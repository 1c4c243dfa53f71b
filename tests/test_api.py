"""HTTP behaviour beyond numerics: devices, plan, encodings, NaN, empty batches, headers."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from support import tensor_from_json, tensor_json

DEVICE_FIELDS = {
    "id",
    "name",
    "vendor",
    "platform",
    "platform_version",
    "type",
    "compute_units",
    "global_mem_bytes",
    "local_mem_bytes",
    "max_work_group_size",
    "fp16",
    "fp64",
    "driver_version",
    "opencl_version",
    "default",
}


def small_conv_body(**extra: Any) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 6, 7)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    return {"input": tensor_json(x), "weight": tensor_json(w), **extra}


def test_devices_lists_required_fields(client: httpx.Client) -> None:
    listing = client.get("/v1/devices").json()
    assert listing["devices"], "no device listed"
    for device in listing["devices"]:
        assert set(device) >= DEVICE_FIELDS, DEVICE_FIELDS - set(device)
        assert device["type"] in {"cpu", "gpu", "accelerator", "other"}
        assert device["compute_units"] >= 1
    defaults = [d["id"] for d in listing["devices"] if d["default"]]
    assert defaults == [listing["default"]]


def test_default_device_prefers_intel_cpu(client: httpx.Client) -> None:
    listing = client.get("/v1/devices").json()
    ids = [d["id"] for d in listing["devices"]]
    if any(d["type"] == "gpu" for d in listing["devices"]):
        pytest.skip("a GPU is present, so it is the default")
    if "intel:0" in ids:
        assert listing["default"] == "intel:0"


def test_plan_with_shape_only_tensors(client: httpx.Client) -> None:
    body = {
        "op": "conv2d",
        "input": {"shape": [2, 64, 56, 56], "dtype": "float32"},
        "weight": {"shape": [128, 32, 3, 3], "dtype": "float32"},
        "bias": {"shape": [128], "dtype": "float32"},
        "stride": 2,
        "padding": 1,
        "groups": 2,
    }
    plan = client.post("/v1/plan", json=body).json()
    assert plan["output_shape"] == [2, 128, 28, 28]
    macs = 2 * 128 * 28 * 28 * 32 * 3 * 3
    assert plan["macs"] == macs
    assert plan["flops"] == 2 * macs + 2 * 128 * 28 * 28
    assert plan["params"] == 128 * 32 * 3 * 3 + 128
    assert plan["receptive_field"] == [3, 3]
    assert plan["effective_stride"] == [2, 2]
    # 64 output channels per group take the output-channel-vector kernel, which reads an
    # explicitly zero-padded input.
    assert plan["algorithm"] == ["pad_zeros", "conv2d_direct_oc"]
    assert plan["bytes_moved"]["download"] == 2 * 128 * 28 * 28 * 4
    assert plan["device"]["id"]


def test_plan_pipeline_receptive_field(client: httpx.Client) -> None:
    shape_only = {"shape": [8, 8, 3, 3], "dtype": "float32"}
    body = {
        "op": "pipeline",
        "input": {"shape": [1, 8, 64, 64], "dtype": "float32"},
        "steps": [
            {"op": "conv2d", "weight": shape_only, "padding": 1},
            {"op": "conv2d", "weight": shape_only, "padding": 2, "dilation": 2},
            {"op": "conv2d", "weight": shape_only, "padding": 4, "dilation": 4},
        ],
    }
    plan = client.post("/v1/plan", json=body).json()
    # Doubling dilation rates grow the receptive field exponentially: 3, 7, 15.
    assert plan["receptive_field"] == [15, 15]
    assert plan["output_shape"] == [1, 8, 64, 64]
    assert len(plan["steps"]) == 3


def test_plan_picks_algorithm_per_family(client: httpx.Client) -> None:
    def plan_of(weight: list[int], **settings: Any) -> list[str]:
        body = {
            "op": "conv2d",
            "input": {"shape": [1, 8, 16, 16], "dtype": "float32"},
            "weight": {"shape": weight, "dtype": "float32"},
            **settings,
        }
        response = client.post("/v1/plan", json=body)
        assert response.status_code == 200, response.text
        algorithm: list[str] = response.json()["algorithm"]
        return algorithm

    assert plan_of([4, 8, 1, 1]) == ["conv2d_pointwise"]
    assert plan_of([16, 1, 3, 3], groups=8) == ["conv2d_depthwise"]
    assert plan_of([4, 8, 3, 3], padding=1) == ["conv2d_direct"]
    assert plan_of([8, 8, 3, 3], padding=1) == ["pad_zeros", "conv2d_direct_oc"]
    assert plan_of([8, 8, 3, 3]) == ["conv2d_direct_oc"]
    assert plan_of([4, 8, 3, 3], padding=1, padding_mode="reflect") == [
        "pad_reflect",
        "conv2d_direct",
    ]


def test_output_encoding_follows_input(client: httpx.Client) -> None:
    as_json = client.post("/v1/conv2d", json=small_conv_body()).json()["output"]
    assert "base64" in as_json
    body = small_conv_body(output_encoding="json")
    assert "data" in client.post("/v1/conv2d", json=body).json()["output"]

    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    w = rng.standard_normal((1, 2, 1, 1)).astype(np.float32)
    nested = {"shape": [1, 2, 4, 4], "dtype": "float32", "data": x.tolist()}
    body = {"input": nested, "weight": tensor_json(w, "json")}
    output = client.post("/v1/conv2d", json=body).json()["output"]
    assert "data" in output
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(w)).numpy()
    np.testing.assert_allclose(tensor_from_json(output), expected, rtol=1e-5, atol=1e-6)


def test_nan_and_inf_propagate(client: httpx.Client, device_id: str) -> None:
    x = np.ones((1, 1, 5, 5), dtype=np.float32)
    x[0, 0, 0, 0] = np.nan
    x[0, 0, 4, 4] = np.inf
    w = np.ones((1, 1, 3, 3), dtype=np.float32)
    for encoding in ("json", "base64"):
        body = {
            "input": tensor_json(x, encoding),
            "weight": tensor_json(w, encoding),
            "padding": 1,
            "activation": "relu",
            "device": device_id,
        }
        response = client.post("/v1/conv2d", content=_dumps_nan(body))
        assert response.status_code == 200, response.text
        output = tensor_from_json(response.json()["output"])
        expected = F.relu(F.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=1)).numpy()
        np.testing.assert_array_equal(np.isnan(output), np.isnan(expected))
        np.testing.assert_array_equal(np.isinf(output), np.isinf(expected))
        finite = np.isfinite(expected)
        np.testing.assert_allclose(output[finite], expected[finite], rtol=1e-6)


def _dumps_nan(body: dict[str, Any]) -> bytes:
    return json.dumps(body, allow_nan=True).encode()


def test_zero_batch_gives_empty_output(client: httpx.Client, device_id: str) -> None:
    body = {
        "input": {"shape": [0, 3, 8, 8], "dtype": "float32", "data": []},
        "weight": tensor_json(np.ones((4, 3, 3, 3), dtype=np.float32)),
        "device": device_id,
    }
    response = client.post("/v1/conv2d", json=body)
    assert response.status_code == 200, response.text
    output = response.json()["output"]
    assert output["shape"] == [0, 4, 6, 6]
    assert output["data"] == []
    body_t = {
        "input": {"shape": [0, 3, 8, 8], "dtype": "float32", "base64": ""},
        "weight": tensor_json(np.ones((3, 2, 2, 2), dtype=np.float32)),
        "stride": 2,
        "device": device_id,
    }
    response = client.post("/v1/conv_transpose2d", json=body_t)
    assert response.status_code == 200, response.text
    assert response.json()["output"]["shape"] == [0, 2, 16, 16]


def test_response_reports_flops_params_and_timings(client: httpx.Client) -> None:
    rng = np.random.default_rng(3)
    bias = rng.standard_normal(3).astype(np.float32)
    response = client.post("/v1/conv2d", json=small_conv_body(bias=tensor_json(bias)))
    result = response.json()
    macs = 1 * 3 * 4 * 5 * 2 * 3 * 3
    assert result["macs"] == macs
    assert result["flops"] == 2 * macs + 3 * 4 * 5
    assert result["params"] == 3 * 2 * 3 * 3 + 3
    assert result["algorithm"] == ["conv2d_direct"]
    assert [kernel["name"] for kernel in result["kernels"]] == ["conv2d_direct"]
    assert result["kernels"][0]["ms"] > 0
    timings = result["timings_ms"]
    assert math.isclose(result["timings_ms"]["compute"], result["kernels"][0]["ms"])
    header = response.headers["Server-Timing"]
    for name in ("queue", "upload", "compute", "download", "total"):
        assert f"{name};dur=" in header
        assert timings[name] >= 0
    assert response.headers["X-Request-ID"]


def test_request_id_is_echoed(client: httpx.Client) -> None:
    response = client.post(
        "/v1/conv2d", json=small_conv_body(), headers={"X-Request-ID": "test-id-42"}
    )
    assert response.headers["X-Request-ID"] == "test-id-42"


def test_pipeline_reports_each_step(client: httpx.Client) -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 2, 9, 9)).astype(np.float32)
    w1 = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((3, 4, 1, 1)).astype(np.float32)
    body = {
        "input": tensor_json(x),
        "steps": [
            {"op": "conv2d", "weight": tensor_json(w1), "activation": "relu"},
            {"op": "conv2d", "weight": tensor_json(w2)},
        ],
    }
    result = client.post("/v1/pipeline", json=body).json()
    assert [step["op"] for step in result["steps"]] == ["conv2d", "conv2d"]
    assert result["steps"][0]["output_shape"] == [1, 4, 7, 7]
    assert result["steps"][1]["algorithm"] == ["conv2d_pointwise"]
    assert all(step["compute_ms"] > 0 for step in result["steps"])


def test_concurrent_requests_on_every_device(client: httpx.Client, devices: dict[str, Any]) -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 4, 12, 12)).astype(np.float32)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=1).numpy()

    def call(index: int) -> np.ndarray:
        device = sorted(devices)[index % len(devices)]
        body = {"input": tensor_json(x), "weight": tensor_json(w), "padding": 1, "device": device}
        response = client.post("/v1/conv2d", json=body)
        assert response.status_code == 200, response.text
        return tensor_from_json(response.json()["output"])

    with ThreadPoolExecutor(max_workers=6) as pool:
        outputs = list(pool.map(call, range(24)))
    for output in outputs:
        np.testing.assert_allclose(output, expected, rtol=1e-4, atol=1e-4)


def test_cli_help_lists_serve() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "clconv", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "--host" in result.stdout
    assert "127.0.0.1" in result.stdout
    assert "8000" in result.stdout


def test_unknown_clconv_device_fails_start(tmp_path: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "CLCONV_DEVICE": "nosuch:7"}
    result = subprocess.run(
        [sys.executable, "-m", "clconv", "serve", "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert result.returncode != 0
    assert "nosuch:7" in result.stderr
    assert "intel:0" in result.stderr or "pocl:0" in result.stderr


def test_wrong_method_names_allowed_one(client: httpx.Client) -> None:
    response = client.get("/v1/conv2d")
    assert response.status_code == 405
    error = response.json()["error"]
    assert error["code"] == "method_not_allowed"
    assert "use POST" in error["message"]
