"""Every conv2d and conv_transpose2d algorithm the selector can pick, pinned with the request's
``algorithm`` field, on every device, in float32 and float64, against PyTorch in float64.

The shapes reach each kernel's edge paths: outputs that are not a multiple of a tile or vector
width, asymmetric padding, groups, and batches of 0, 1 and 3. They include dilation, which
Winograd splits into phases: a dilated width uses its per-tile transforms, else its row
transforms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clconv.core.algorithms import (
    CONV2D_ALGORITHMS,
    CONV_TRANSPOSE2D_ALGORITHMS,
    POINTWISE,
    POINTWISE_LOCAL,
    WINOGRAD_F4,
    applicable,
    rule_choice,
    transposed_applicable,
)
from clconv.core.planner import parse_request
from clconv.core.stages import ConvStage, ConvTransposeStage
from support import tensor_from_json, tensor_json

SEED = 7_2026


@dataclass(frozen=True)
class Shape:
    name: str
    input: tuple[int, int, int, int]
    weight: tuple[int, int, int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, bottom, left, right
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    bias: bool = True
    activation: str | None = "relu"


SHAPES = (
    Shape("resnet_like", (1, 32, 20, 20), (32, 32, 3, 3), padding=(1, 1, 1, 1)),
    Shape("odd_tiles", (3, 16, 11, 9), (24, 16, 3, 3), padding=(1, 1, 1, 1), activation="tanh"),
    Shape("asym_pad", (1, 16, 7, 13), (16, 16, 3, 3), padding=(0, 2, 1, 0), bias=False),
    Shape("dilated", (1, 16, 17, 15), (16, 16, 3, 3), padding=(2, 2, 2, 2), dilation=(2, 2)),
    Shape("dilated_mixed", (2, 8, 12, 19), (16, 8, 3, 3), padding=(1, 3, 3, 1), dilation=(1, 3)),
    # Dilation along H only: Winograd's row kernels with two phases.
    Shape("dilated_rows", (1, 16, 14, 10), (16, 16, 3, 3), padding=(2, 2, 1, 1), dilation=(2, 1)),
    Shape("grouped", (1, 32, 10, 10), (32, 8, 3, 3), padding=(1, 1, 1, 1), groups=4),
    Shape("tiny", (1, 4, 3, 3), (8, 4, 3, 3), padding=(1, 1, 1, 1), activation=None),
    Shape("empty_batch", (0, 16, 9, 9), (16, 16, 3, 3), padding=(1, 1, 1, 1)),
    Shape("pointwise", (2, 24, 9, 7), (40, 24, 1, 1)),
    Shape("pointwise_grouped", (1, 24, 5, 11), (12, 8, 1, 1), groups=3, activation="relu6"),
    Shape("depthwise", (2, 12, 15, 17), (12, 1, 3, 3), padding=(1, 1, 1, 1), groups=12),
    Shape(
        "depthwise_strided",
        (1, 8, 16, 21),
        (24, 1, 5, 5),
        stride=(2, 2),
        padding=(2, 1, 0, 2),
        dilation=(1, 2),
        groups=8,
    ),
    Shape("strided", (1, 8, 13, 14), (16, 8, 3, 3), stride=(2, 1), padding=(1, 1, 1, 1)),
)


def _arrays(shape: Shape, dtype: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal(shape.input).astype(dtype)
    w = rng.standard_normal(shape.weight).astype(dtype)
    b = rng.standard_normal(shape.weight[0]).astype(dtype) if shape.bias else None
    return x, w, b


def _body(shape: Shape, dtype: str, algorithm: str | None) -> dict[str, Any]:
    x, w, b = _arrays(shape, dtype)
    top, bottom, left, right = shape.padding
    body: dict[str, Any] = {
        "input": tensor_json(x),
        "weight": tensor_json(w),
        "stride": list(shape.stride),
        "padding": {"top": top, "bottom": bottom, "left": left, "right": right},
        "dilation": list(shape.dilation),
        "groups": shape.groups,
    }
    if b is not None:
        body["bias"] = tensor_json(b)
    if shape.activation is not None:
        body["activation"] = shape.activation
    if algorithm is not None:
        body["algorithm"] = algorithm
    return body


def _expected(shape: Shape, dtype: str) -> torch.Tensor:
    x, w, b = _arrays(shape, dtype)
    top, bottom, left, right = shape.padding
    padded = F.pad(torch.from_numpy(x).double(), (left, right, top, bottom))
    y = F.conv2d(
        padded,
        torch.from_numpy(w).double(),
        None if b is None else torch.from_numpy(b).double(),
        stride=shape.stride,
        dilation=shape.dilation,
        groups=shape.groups,
    )
    if shape.activation == "relu":
        return F.relu(y)
    if shape.activation == "relu6":
        return F.relu6(y)
    if shape.activation == "tanh":
        return torch.tanh(y)
    return y


def _candidates(shape: Shape) -> list[str]:
    plan = parse_request("conv2d", _body(shape, "float32", None))
    (stage,) = [s for s in plan.stages if isinstance(s, ConvStage)]
    return applicable(stage)


# Float64 runs on fewer shapes, because each distinct shape is a kernel build per device. These
# still reach every algorithm and the edge paths: overhanging tiles, dilation phases, groups.
FLOAT64_SHAPES = {
    "odd_tiles",
    "dilated_mixed",
    "dilated_rows",
    "grouped",
    "pointwise_grouped",
    "depthwise",
}

VARIANTS = [
    (shape, algorithm, dtype)
    for shape in SHAPES
    for algorithm in _candidates(shape)
    for dtype in ("float32", "float64")
    if dtype == "float32" or shape.name in FLOAT64_SHAPES
]


def test_every_algorithm_is_exercised() -> None:
    """Each algorithm the selector can pick is pinned by at least one shape above, in both
    dtypes."""
    for dtype in ("float32", "float64"):
        covered = {algorithm for _, algorithm, kind in VARIANTS if kind == dtype}
        assert covered == set(CONV2D_ALGORITHMS), dtype


def tolerance(algorithm: str, dtype: str, scale: float) -> tuple[float, float]:
    """(rtol, atol) against the float64 oracle. Winograd F(4x4, 3x3) in float32 loses about
    two more digits than a direct sum: its transforms scale values by up to 8 (A^T) and 4 (B^T)
    and subtract nearly equal terms. Measured worst relative error here: 1.4e-5 of the
    output's maximum with 256 channels."""
    if dtype == "float64":
        return 1e-9, 1e-10 * max(scale, 1.0)
    if algorithm == WINOGRAD_F4:
        return 1e-4, 1e-4 * max(scale, 1.0)
    return 1e-4, 2e-5 * max(scale, 1.0)


@pytest.mark.parametrize(
    ("shape", "algorithm", "dtype"),
    VARIANTS,
    ids=[f"{shape.name}-{algorithm}-{dtype}" for shape, algorithm, dtype in VARIANTS],
)
def test_algorithm_matches_pytorch(
    client: Any,
    device_id: str,
    devices: dict[str, Any],
    shape: Shape,
    algorithm: str,
    dtype: str,
) -> None:
    if dtype == "float64" and not devices[device_id]["fp64"]:
        pytest.skip(f"{device_id} has no cl_khr_fp64")
    body = _body(shape, dtype, algorithm) | {"device": device_id}
    response = client.post("/v1/conv2d", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert algorithm in result["algorithm"]
    output = tensor_from_json(result["output"])
    expected = _expected(shape, dtype)
    assert list(output.shape) == list(expected.shape)
    scale = float(expected.abs().max()) if expected.numel() else 1.0
    rtol, atol = tolerance(algorithm, dtype, scale)
    np.testing.assert_allclose(output, expected.numpy(), rtol=rtol, atol=atol)


def test_winograd_f4_accuracy_at_scale(client: Any, device_id: str) -> None:
    """F(4x4, 3x3) on a wide layer (256 channels) stays within its documented tolerance."""
    shape = Shape("wide", (1, 256, 12, 12), (64, 256, 3, 3), padding=(1, 1, 1, 1))
    body = _body(shape, "float32", WINOGRAD_F4) | {"device": device_id}
    response = client.post("/v1/conv2d", json=body)
    assert response.status_code == 200, response.text
    output = tensor_from_json(response.json()["output"])
    expected = _expected(shape, "float32").numpy()
    scale = float(np.abs(expected).max())
    rtol, atol = tolerance(WINOGRAD_F4, "float32", scale)
    np.testing.assert_allclose(output, expected, rtol=rtol, atol=atol)


def test_rule_picks_winograd_for_resnet_layers(client: Any) -> None:
    body = {
        "op": "conv2d",
        "input": {"shape": [1, 64, 56, 56], "dtype": "float32"},
        "weight": {"shape": [64, 64, 3, 3], "dtype": "float32"},
        "padding": 1,
    }
    plan = client.post("/v1/plan", json=body).json()
    assert plan["algorithm"] == [WINOGRAD_F4]


def test_inapplicable_algorithm_is_422(client: Any) -> None:
    shape = Shape("k3", (1, 4, 6, 6), (4, 4, 3, 3))
    response = client.post("/v1/conv2d", json=_body(shape, "float32", "conv2d_pointwise"))
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == "algorithm"
    assert "'conv2d_pointwise'" in error["message"]
    assert "conv2d_winograd_f4" in error["message"]
    assert "conv2d_direct" in error["message"]
    assert "needs a 1x1 kernel" in error["message"]


def test_unknown_algorithm_is_422(client: Any) -> None:
    shape = Shape("k3", (1, 4, 6, 6), (4, 4, 3, 3))
    body = _body(shape, "float32", None) | {"algorithm": "fft"}
    response = client.post("/v1/conv2d", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == "algorithm"
    assert "fft" in error["message"]
    assert "'auto'" in error["message"]


def test_auto_is_the_default(client: Any) -> None:
    shape = Shape("k3", (1, 4, 6, 6), (4, 4, 3, 3))
    auto = client.post("/v1/conv2d", json=_body(shape, "float32", "auto"))
    default = client.post("/v1/conv2d", json=_body(shape, "float32", None))
    assert auto.status_code == default.status_code == 200
    assert auto.json()["algorithm"] == default.json()["algorithm"]


@dataclass(frozen=True)
class TransposedShape:
    name: str
    input: tuple[int, int, int, int]
    weight: tuple[int, int, int, int]  # [C, K/groups, kh, kw]
    stride: tuple[int, int]
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, bottom, left, right
    output_padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1


TRANSPOSED_SHAPES = (
    TransposedShape("unet_like", (1, 16, 6, 7), (16, 8, 4, 4), (2, 2), (1, 1, 1, 1)),
    TransposedShape("odd", (2, 6, 5, 7), (6, 4, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), groups=2),
    TransposedShape("asym", (1, 4, 6, 5), (4, 3, 5, 3), (3, 2), (2, 0, 1, 1), (1, 0)),
    TransposedShape("stride1", (1, 3, 4, 4), (3, 5, 3, 3), (1, 1), (1, 1, 1, 1)),
    TransposedShape("dilated", (1, 4, 5, 5), (4, 4, 3, 3), (2, 2), (1, 1, 1, 1), dilation=(2, 1)),
    TransposedShape("one_tap", (1, 4, 5, 5), (4, 2, 2, 2), (3, 3), output_padding=(2, 1)),
)


def _transposed_body(shape: TransposedShape, dtype: str, algorithm: str | None) -> dict[str, Any]:
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal(shape.input).astype(dtype)
    w = rng.standard_normal(shape.weight).astype(dtype)
    b = rng.standard_normal(shape.weight[1] * shape.groups).astype(dtype)
    top, bottom, left, right = shape.padding
    body: dict[str, Any] = {
        "input": tensor_json(x),
        "weight": tensor_json(w),
        "bias": tensor_json(b),
        "stride": list(shape.stride),
        "padding": {"top": top, "bottom": bottom, "left": left, "right": right},
        "output_padding": list(shape.output_padding),
        "dilation": list(shape.dilation),
        "groups": shape.groups,
        "activation": "relu",
    }
    if algorithm is not None:
        body["algorithm"] = algorithm
    return body


def _transposed_expected(shape: TransposedShape, dtype: str) -> torch.Tensor:
    body = _transposed_body(shape, dtype, None)
    x, w, b = (tensor_from_json(body[key]) for key in ("input", "weight", "bias"))
    top, bottom, left, right = shape.padding
    full = F.conv_transpose2d(
        torch.from_numpy(x).double(),
        torch.from_numpy(w).double(),
        torch.from_numpy(b).double(),
        stride=shape.stride,
        output_padding=shape.output_padding,
        dilation=shape.dilation,
        groups=shape.groups,
    )
    # Asymmetric padding crops each side on its own (ONNX pads); torch pads symmetrically.
    cropped = full[:, :, top : full.shape[2] - bottom, left : full.shape[3] - right]
    return F.relu(cropped)


def _transposed_candidates(shape: TransposedShape) -> list[str]:
    plan = parse_request("conv_transpose2d", _transposed_body(shape, "float32", None))
    (stage,) = plan.stages
    assert isinstance(stage, ConvTransposeStage)
    return transposed_applicable(stage)


TRANSPOSED_VARIANTS = [
    (shape, algorithm, dtype)
    for shape in TRANSPOSED_SHAPES
    for algorithm in _transposed_candidates(shape)
    for dtype in ("float32", "float64")
]


def test_every_transposed_algorithm_is_exercised() -> None:
    for dtype in ("float32", "float64"):
        covered = {name for _, name, kind in TRANSPOSED_VARIANTS if kind == dtype}
        assert covered == set(CONV_TRANSPOSE2D_ALGORITHMS), dtype


@pytest.mark.parametrize(
    ("shape", "algorithm", "dtype"),
    TRANSPOSED_VARIANTS,
    ids=[f"{shape.name}-{algorithm}-{dtype}" for shape, algorithm, dtype in TRANSPOSED_VARIANTS],
)
def test_transposed_algorithm_matches_pytorch(
    client: Any,
    device_id: str,
    devices: dict[str, Any],
    shape: TransposedShape,
    algorithm: str,
    dtype: str,
) -> None:
    if dtype == "float64" and not devices[device_id]["fp64"]:
        pytest.skip(f"{device_id} has no cl_khr_fp64")
    body = _transposed_body(shape, dtype, algorithm) | {"device": device_id}
    response = client.post("/v1/conv_transpose2d", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["algorithm"] == [algorithm]
    assert result["algorithm_source"] == ["request"]
    output = tensor_from_json(result["output"])
    expected = _transposed_expected(shape, dtype)
    assert list(output.shape) == list(expected.shape)
    scale = float(expected.abs().max())
    rtol, atol = tolerance(algorithm, dtype, scale)
    np.testing.assert_allclose(output, expected.numpy(), rtol=rtol, atol=atol)


def test_transposed_rule_by_device(client: Any, devices: dict[str, Any]) -> None:
    """The per-phase convolution on Intel's runtime, the gather on PoCL (measured faster
    there), for a U-Net 4x4 stride-2 layer."""
    body = {
        "op": "conv_transpose2d",
        "input": {"shape": [1, 128, 32, 32], "dtype": "float32"},
        "weight": {"shape": [128, 64, 4, 4], "dtype": "float32"},
        "stride": 2,
        "padding": 1,
    }
    for device_id, device in devices.items():
        plan = client.post("/v1/plan", json=body | {"device": device_id}).json()
        if "Portable Computing Language" in device["platform"]:
            assert plan["algorithm"] == ["conv_transpose2d_gather"], device_id
        elif device["type"] == "cpu":
            assert plan["algorithm"] == ["conv_transpose2d_phases"], device_id


def test_rule_picks_local_gemm_on_gpus() -> None:
    plan = parse_request(
        "conv2d", _body(Shape("pw", (1, 16, 4, 4), (8, 16, 1, 1)), "float32", None)
    )
    (stage,) = plan.stages
    assert isinstance(stage, ConvStage)
    assert rule_choice(stage, "gpu") == POINTWISE_LOCAL
    assert rule_choice(stage, "cpu") == POINTWISE
