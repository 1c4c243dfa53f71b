"""conv2d_depthwise tile configurations and code paths against PyTorch, on every device.

``depthwise_tile`` picks the kernel's tile (VW output columns per vector, RB output rows per
work-item) from the output shape and dtype. The numerical cases run every tile the rule can
pick. Within those tiles they cover every path of the kernel: stride-1 tiles that reuse input
rows, the row-by-row path (stride 2, dilation 2, partial row blocks), interior and edge
columns, vectors that reach past either end of the input buffer, and partial last vectors.
Each case also checks the launch geometry that the server reports, so a change to the rule
that leaves a tile untested fails here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clconv.runtime.launches import depthwise_tile
from support import tensor_from_json, tensor_json

SEED = 20261205
ACTIVATIONS: tuple[Any, ...] = (
    "relu",
    "relu6",
    {"name": "leaky_relu", "negative_slope": 0.2},
    "sigmoid",
    "tanh",
)


@dataclass
class DepthwiseCase:
    """Depthwise conv2d request: input [n, channels, h, w], weight [channels * mult, 1, kh, kw]"""

    name: str
    n: int
    channels: int
    h: int
    w: int
    kernel: tuple[int, int] = (3, 3)
    mult: int = 1
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    # (top, bottom, left, right) zero padding.
    pads: tuple[int, int, int, int] = (1, 1, 1, 1)
    bias: bool = False
    activation: Any = None
    dtype: str = "float32"
    expected_tile: tuple[int, int] = field(default=(8, 8))


CASES = [
    # VW = 8, RB = 8: the MobileNetV2 layer, then shapes that mix full and partial row blocks,
    # left and right edge columns and a partial last vector (OW = 21).
    DepthwiseCase("mobilenetv2-144x56x56", 1, 144, 56, 56),
    DepthwiseCase("s1-edges-partial-block", 1, 3, 20, 21),
    DepthwiseCase("s1-batch3", 3, 2, 17, 26, bias=True, activation="relu"),
    DepthwiseCase("s1-kernel5x5-valid", 1, 2, 19, 40, kernel=(5, 5), pads=(0, 0, 0, 0)),
    DepthwiseCase("s1-kernel9x2-taller-than-rb", 1, 2, 24, 18, kernel=(9, 2), pads=(4, 4, 0, 1)),
    DepthwiseCase("s1-asymmetric-pads", 1, 3, 15, 23, kernel=(3, 5), pads=(2, 0, 0, 3)),
    DepthwiseCase("s1-large-left-pad", 1, 2, 12, 14, pads=(0, 0, 11, 2)),
    DepthwiseCase("stride2", 1, 4, 17, 19, stride=(2, 2)),
    DepthwiseCase("stride2x1", 1, 2, 21, 18, stride=(2, 1), bias=True),
    DepthwiseCase("stride1x3", 1, 2, 18, 40, stride=(1, 3), pads=(1, 0, 2, 1)),
    # Row reuse with strided columns: SH = 1 with SW = 2 or 3 on tiles with interior columns.
    DepthwiseCase("stride1x2-interior", 1, 2, 20, 70, stride=(1, 2)),
    DepthwiseCase("stride1x3-interior", 2, 2, 12, 90, stride=(1, 3), kernel=(5, 3), mult=2),
    DepthwiseCase("dilation2", 1, 3, 18, 20, dilation=(2, 2), pads=(2, 2, 2, 2)),
    DepthwiseCase("dilation1x2-stride2", 1, 2, 23, 30, dilation=(1, 2), stride=(2, 2)),
    DepthwiseCase("w6-narrower-than-vector", 1, 3, 11, 6),
    DepthwiseCase("mult2", 1, 3, 16, 16, mult=2, bias=True),
    DepthwiseCase("mult3", 2, 2, 13, 17, mult=3),
    DepthwiseCase("mult4", 1, 5, 10, 24, mult=4, activation="relu6"),
    DepthwiseCase("batch0", 0, 3, 12, 12),
    # RB = OH when the output has fewer than 8 rows.
    DepthwiseCase("oh5", 1, 3, 5, 30, expected_tile=(8, 5)),
    DepthwiseCase("oh1-from-kernel3-valid", 2, 2, 3, 19, pads=(0, 0, 1, 1), expected_tile=(8, 1)),
    DepthwiseCase("mobilenet-7x7", 1, 16, 7, 7, bias=True, expected_tile=(8, 7)),
    # VW = 4: outputs at most 4 columns wide.
    DepthwiseCase("ow4", 1, 3, 12, 4, expected_tile=(4, 8)),
    DepthwiseCase("ow3-w3", 3, 2, 9, 3, mult=2, expected_tile=(4, 8)),
    DepthwiseCase(
        "ow1-stride2",
        1,
        2,
        10,
        2,
        stride=(2, 2),
        pads=(0, 0, 0, 0),
        kernel=(2, 2),
        expected_tile=(4, 5),
    ),
    # VW = 4 for float64, on every path.
    DepthwiseCase("f64-s1", 1, 3, 20, 21, bias=True, dtype="float64", expected_tile=(4, 8)),
    DepthwiseCase(
        "f64-stride1x2", 1, 2, 12, 40, stride=(1, 2), dtype="float64", expected_tile=(4, 8)
    ),
    DepthwiseCase(
        "f64-stride2-mult2",
        2,
        2,
        17,
        19,
        mult=2,
        stride=(2, 2),
        dtype="float64",
        expected_tile=(4, 8),
    ),
    DepthwiseCase(
        "f64-dilation2-asym",
        1,
        2,
        14,
        15,
        dilation=(2, 2),
        pads=(3, 1, 0, 2),
        activation="tanh",
        dtype="float64",
        expected_tile=(4, 8),
    ),
    DepthwiseCase("f64-ow3", 1, 2, 6, 3, dtype="float64", expected_tile=(4, 6)),
]
# Bias with each activation, on a stride-1 shape with edge columns and a depth multiplier.
CASES += [
    DepthwiseCase(
        f"bias-{activation if isinstance(activation, str) else activation['name']}",
        1,
        3,
        11,
        13,
        mult=2,
        bias=True,
        activation=activation,
    )
    for activation in ACTIVATIONS
]


def apply_activation(y: torch.Tensor, activation: Any) -> torch.Tensor:
    if activation is None:
        return y
    name = activation["name"] if isinstance(activation, dict) else activation
    if name == "relu":
        return F.relu(y)
    if name == "relu6":
        return F.relu6(y)
    if name == "leaky_relu":
        return F.leaky_relu(y, activation["negative_slope"])
    if name == "sigmoid":
        return torch.sigmoid(y)
    if name == "tanh":
        return torch.tanh(y)
    raise ValueError(name)


def output_size(size: int, pad_total: int, kernel: int, stride: int, dilation: int) -> int:
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def test_tile_rule() -> None:
    assert depthwise_tile(56, 56, use_double=False) == (8, 8)
    assert depthwise_tile(112, 112, use_double=False) == (8, 8)
    assert depthwise_tile(7, 7, use_double=False) == (8, 7)
    assert depthwise_tile(1, 5, use_double=False) == (8, 1)
    assert depthwise_tile(9, 4, use_double=False) == (4, 8)
    assert depthwise_tile(9, 1, use_double=False) == (4, 8)
    assert depthwise_tile(56, 56, use_double=True) == (4, 8)
    assert depthwise_tile(3, 2, use_double=True) == (4, 3)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_depthwise_matches_pytorch(
    client: Any, device_id: str, devices: dict[str, Any], case: DepthwiseCase
) -> None:
    if case.dtype == "float64" and not devices[device_id]["fp64"]:
        pytest.skip(f"{device_id} has no cl_khr_fp64")
    top, bottom, left, right = case.pads
    kh, kw = case.kernel
    out_h = output_size(case.h, top + bottom, kh, case.stride[0], case.dilation[0])
    out_w = output_size(case.w, left + right, kw, case.stride[1], case.dilation[1])
    tile = depthwise_tile(out_h, out_w, case.dtype == "float64")
    assert tile == case.expected_tile, "the case no longer selects the tile it was written for"

    rng = np.random.default_rng([SEED, CASES.index(case)])
    dtype = np.dtype(case.dtype)
    k = case.channels * case.mult
    x = rng.standard_normal((case.n, case.channels, case.h, case.w)).astype(dtype)
    weight = rng.standard_normal((k, 1, kh, kw)).astype(dtype)
    bias = rng.standard_normal(k).astype(dtype) if case.bias else None
    body: dict[str, Any] = {
        "input": tensor_json(x),
        "weight": tensor_json(weight),
        "stride": list(case.stride),
        "dilation": list(case.dilation),
        "padding": {"top": top, "bottom": bottom, "left": left, "right": right},
        "groups": case.channels,
        "activation": case.activation,
        "device": device_id,
    }
    if bias is not None:
        body["bias"] = tensor_json(bias)

    response = client.post("/v1/conv2d", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["algorithm"] == ["conv2d_depthwise"]
    width, rows = tile
    if case.n == 0:
        # An empty batch launches nothing.
        assert result["kernels"] == []
    else:
        (kernel,) = result["kernels"]
        global_size = [math.ceil(out_w / width), math.ceil(out_h / rows), case.n * k]
        assert kernel["global_size"] == global_size

    xt = F.pad(torch.from_numpy(x.astype(np.float64)), (left, right, top, bottom))
    bt = None if bias is None else torch.from_numpy(bias.astype(np.float64))
    wt = torch.from_numpy(weight.astype(np.float64))
    y = F.conv2d(xt, wt, bt, stride=case.stride, dilation=case.dilation, groups=case.channels)
    expected = apply_activation(y, case.activation).numpy()
    output = tensor_from_json(result["output"])
    assert output.shape == expected.shape
    assert str(output.dtype) == case.dtype
    scale = max(float(np.abs(expected).max()), 1.0) if expected.size else 1.0
    if case.dtype == "float64":
        np.testing.assert_allclose(output, expected, rtol=1e-9, atol=1e-10 * scale)
    else:
        np.testing.assert_allclose(output, expected, rtol=1e-4, atol=2e-5 * scale)
