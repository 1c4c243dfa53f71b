"""Seeded parameter sweep of every convolution family against PyTorch CPU, on every device.

Each case builds a request body and the matching PyTorch computation in float64 from the same
float32 (or float64) values. Cases come from a fixed seed, so a failure reproduces by its id.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from support import tensor_from_json, tensor_json

SEED = 20261204
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
ACTIVATIONS: tuple[Any, ...] = (
    None,
    "relu",
    "relu6",
    {"name": "leaky_relu", "negative_slope": 0.2},
    "sigmoid",
    "tanh",
)


@dataclass
class Case:
    """A request for one operation and the oracle that computes its expected output."""

    name: str
    op: str
    body: dict[str, Any]
    oracle: Callable[[], torch.Tensor]
    dtype: str = "float32"


def apply_activation(y: torch.Tensor, activation: Any) -> torch.Tensor:
    if activation is None:
        return y
    name = activation["name"] if isinstance(activation, dict) else activation
    if name == "relu":
        return F.relu(y)
    if name == "relu6":
        return F.relu6(y)
    if name == "leaky_relu":
        return F.leaky_relu(y, activation.get("negative_slope", 0.01))
    if name == "sigmoid":
        return torch.sigmoid(y)
    if name == "tanh":
        return torch.tanh(y)
    raise ValueError(name)


def t64(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(array, dtype=np.float64))


def encode(array: np.ndarray, index: int) -> dict[str, Any]:
    """Alternate base64 and JSON data lists so both encodings are covered."""
    return tensor_json(array, "base64" if index % 2 == 0 else "json")


# ---------------------------------------------------------------------------------------------
# conv2d


def random_conv2d_case(rng: np.random.Generator, index: int, dtype: str) -> Case:
    while True:
        n = int(rng.choice([0, 1, 1, 2, 3])) if index % 9 else 0
        kind = rng.choice(["regular", "grouped", "depthwise", "pointwise", "dilated", "wide"])
        groups = 1
        cg = int(rng.integers(1, 5))
        if kind in ("grouped", "wide"):
            groups = int(rng.integers(2, 4)) if kind == "grouped" else int(rng.integers(1, 3))
        c = cg * groups
        k = groups * int(rng.integers(1, 6))
        if kind == "wide":
            # 8 or more output channels per group select the output-channel-vector kernel.
            k = groups * int(rng.integers(8, 41))
        if kind == "depthwise":
            c = int(rng.integers(1, 7))
            groups, cg, k = c, 1, c * int(rng.integers(1, 4))
        kh, kw = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        if kind == "pointwise":
            kh = kw = 1
        stride = [int(rng.integers(1, 4)), int(rng.integers(1, 4))]
        dilation = [1, 1]
        if kind == "dilated" or rng.random() < 0.2:
            dilation = [int(rng.integers(1, 4)), int(rng.integers(1, 4))]
        h, w = int(rng.integers(1, 20)), int(rng.integers(1, 24))
        padding_form = rng.choice(["int", "pair", "object", "same", "valid"])
        mode = str(rng.choice(PADDING_MODES))
        if padding_form == "int":
            padding: Any = int(rng.integers(0, 4))
        elif padding_form == "pair":
            padding = [int(rng.integers(0, 4)), int(rng.integers(0, 4))]
        elif padding_form == "object":
            padding = {side: int(rng.integers(0, 4)) for side in ("top", "bottom", "left", "right")}
        elif padding_form == "same":
            padding, stride = "same", [1, 1]
        else:
            padding = "valid"
        pads = resolve_pads(padding, (kh, kw), dilation)
        if not pads_valid(pads, mode, h, w):
            continue
        eff_h, eff_w = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
        if eff_h > h + pads[2] + pads[3] or eff_w > w + pads[0] + pads[1]:
            continue
        break

    np_dtype = np.dtype(dtype)
    x = rng.standard_normal((n, c, h, w)).astype(np_dtype)
    weight = rng.standard_normal((k, cg, kh, kw)).astype(np_dtype)
    bias = rng.standard_normal(k).astype(np_dtype) if rng.random() < 0.6 else None
    activation = ACTIVATIONS[int(rng.integers(0, len(ACTIVATIONS)))]
    body: dict[str, Any] = {
        "input": encode(x, index),
        "weight": encode(weight, index),
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
        "groups": groups,
        "padding_mode": mode,
        "activation": activation,
    }
    if bias is not None:
        body["bias"] = encode(bias, index)

    def oracle() -> torch.Tensor:
        xt = F.pad(t64(x), pads, mode="constant" if mode == "zeros" else mode)
        bt = None if bias is None else t64(bias)
        y = F.conv2d(xt, t64(weight), bt, stride=stride, dilation=dilation, groups=groups)
        return apply_activation(y, activation)

    name = (
        f"conv2d-{index}-{kind}-n{n}c{c}k{k}-{h}x{w}-k{kh}x{kw}-s{stride[0]}{stride[1]}"
        f"-d{dilation[0]}{dilation[1]}-g{groups}-{padding_form}-{mode}-{dtype}"
    )
    return Case(name, "conv2d", body, oracle, dtype)


def resolve_pads(
    padding: Any, kernel: tuple[int, int], dilation: list[int]
) -> tuple[int, int, int, int]:
    """Return F.pad order (left, right, top, bottom), with 'same' padded as PyTorch pads it."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        total_h, total_w = dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1)
        return (total_w // 2, total_w - total_w // 2, total_h // 2, total_h - total_h // 2)
    if isinstance(padding, dict):
        return (padding["left"], padding["right"], padding["top"], padding["bottom"])
    if isinstance(padding, list):
        return (padding[1], padding[1], padding[0], padding[0])
    return (padding, padding, padding, padding)


def pads_valid(pads: tuple[int, int, int, int], mode: str, h: int, w: int) -> bool:
    sizes = (w, w, h, h)
    if mode == "reflect":
        return all(p < s for p, s in zip(pads, sizes, strict=True))
    if mode == "circular":
        return all(p <= s for p, s in zip(pads, sizes, strict=True))
    return True


# ---------------------------------------------------------------------------------------------
# conv_transpose2d


def random_transpose_case(rng: np.random.Generator, index: int, dtype: str) -> Case:
    while True:
        n = int(rng.choice([0, 1, 2])) if index % 7 else 0
        groups = int(rng.choice([1, 1, 2, 3]))
        c = groups * int(rng.integers(1, 4))
        kg = int(rng.integers(1, 6))
        k = kg * groups
        kh, kw = int(rng.integers(1, 6)), int(rng.integers(1, 5))
        stride = [int(rng.integers(1, 4)), int(rng.integers(1, 4))]
        dilation = [int(rng.integers(1, 3)), int(rng.integers(1, 3))]
        h, w = int(rng.integers(1, 12)), int(rng.integers(1, 14))
        output_padding = [
            int(rng.integers(0, max(stride[0], dilation[0]))),
            int(rng.integers(0, max(stride[1], dilation[1]))),
        ]
        form = rng.choice(["int", "pair", "object"])
        if form == "int":
            padding: Any = int(rng.integers(0, 3))
            pads = (padding,) * 4
        elif form == "pair":
            padding = [int(rng.integers(0, 3)), int(rng.integers(0, 3))]
            pads = (padding[0], padding[0], padding[1], padding[1])
        else:
            padding = {side: int(rng.integers(0, 3)) for side in ("top", "bottom", "left", "right")}
            pads = (padding["top"], padding["bottom"], padding["left"], padding["right"])
        full_h = (h - 1) * stride[0] + dilation[0] * (kh - 1) + 1 + output_padding[0]
        full_w = (w - 1) * stride[1] + dilation[1] * (kw - 1) + 1 + output_padding[1]
        if full_h - pads[0] - pads[1] > 0 and full_w - pads[2] - pads[3] > 0:
            break

    np_dtype = np.dtype(dtype)
    x = rng.standard_normal((n, c, h, w)).astype(np_dtype)
    weight = rng.standard_normal((c, kg, kh, kw)).astype(np_dtype)
    bias = rng.standard_normal(k).astype(np_dtype) if rng.random() < 0.6 else None
    activation = ACTIVATIONS[int(rng.integers(0, len(ACTIVATIONS)))]
    use_output_size = index % 4 == 3
    body: dict[str, Any] = {
        "input": encode(x, index),
        "weight": encode(weight, index),
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
        "groups": groups,
        "activation": activation,
    }
    if use_output_size:
        body["output_size"] = [full_h - pads[0] - pads[1], full_w - pads[2] - pads[3]]
    else:
        body["output_padding"] = output_padding
    if bias is not None:
        body["bias"] = encode(bias, index)

    def oracle() -> torch.Tensor:
        # Full transposed convolution without padding, then crop each side: this is the
        # definition of (possibly asymmetric) padding for a transposed convolution.
        bt = None if bias is None else t64(bias)
        y = F.conv_transpose2d(
            t64(x),
            t64(weight),
            bt,
            stride=stride,
            output_padding=output_padding,
            dilation=dilation,
            groups=groups,
        )
        y = y[:, :, pads[0] : y.shape[2] - pads[1], pads[2] : y.shape[3] - pads[3]]
        return apply_activation(y, activation)

    name = (
        f"conv_transpose2d-{index}-n{n}c{c}k{k}-{h}x{w}-k{kh}x{kw}-s{stride[0]}{stride[1]}"
        f"-d{dilation[0]}{dilation[1]}-op{output_padding[0]}{output_padding[1]}-g{groups}-{form}"
        f"{'-output_size' if use_output_size else ''}-{dtype}"
    )
    return Case(name, "conv_transpose2d", body, oracle, dtype)


# ---------------------------------------------------------------------------------------------
# depthwise separable, spatially separable, pipeline


def random_depthwise_separable_case(rng: np.random.Generator, index: int, dtype: str) -> Case:
    np_dtype = np.dtype(dtype)
    n, c, m = int(rng.integers(1, 3)), int(rng.integers(1, 6)), int(rng.integers(1, 3))
    k = int(rng.integers(1, 9))
    kh, kw = int(rng.integers(1, 6)), int(rng.integers(1, 6))
    h, w = int(rng.integers(max(kh, 3), 20)), int(rng.integers(max(kw, 3), 20))
    stride = [int(rng.integers(1, 3)), int(rng.integers(1, 3))]
    mode = str(rng.choice(PADDING_MODES))
    padding = [min(kh // 2, h - 1), min(kw // 2, w - 1)]
    x = rng.standard_normal((n, c, h, w)).astype(np_dtype)
    dw = rng.standard_normal((c * m, 1, kh, kw)).astype(np_dtype)
    dw_bias = rng.standard_normal(c * m).astype(np_dtype)
    pw = rng.standard_normal((k, c * m, 1, 1)).astype(np_dtype)
    pw_bias = rng.standard_normal(k).astype(np_dtype)
    body = {
        "input": encode(x, index),
        "depthwise_weight": encode(dw, index),
        "depthwise_bias": encode(dw_bias, index),
        "pointwise_weight": encode(pw, index),
        "pointwise_bias": encode(pw_bias, index),
        "stride": stride,
        "padding": padding,
        "padding_mode": mode,
        "depthwise_activation": "relu6",
        "activation": "relu",
    }

    def oracle() -> torch.Tensor:
        pads = (padding[1], padding[1], padding[0], padding[0])
        xt = F.pad(t64(x), pads, mode="constant" if mode == "zeros" else mode)
        y = F.relu6(F.conv2d(xt, t64(dw), t64(dw_bias), stride=stride, groups=c))
        return F.relu(F.conv2d(y, t64(pw), t64(pw_bias)))

    name = f"depthwise_separable-{index}-n{n}c{c}m{m}k{k}-{h}x{w}-k{kh}x{kw}-{mode}-{dtype}"
    return Case(name, "depthwise_separable_conv2d", body, oracle, dtype)


def random_spatially_separable_case(rng: np.random.Generator, index: int, dtype: str) -> Case:
    np_dtype = np.dtype(dtype)
    n = int(rng.integers(1, 3))
    groups = int(rng.choice([1, 2]))
    cg = int(rng.integers(1, 4))
    c = cg * groups
    kh, kw = int(rng.integers(2, 8)), int(rng.integers(1, 8))
    h, w = int(rng.integers(kh, 24)), int(rng.integers(kw, 24))
    stride = [int(rng.integers(1, 3)), int(rng.integers(1, 3))]
    dilation = [int(rng.integers(1, 3)), 1]
    eff_h = dilation[0] * (kh - 1) + 1
    padding = [eff_h // 2, kw // 2]
    mode = str(rng.choice(["zeros", "replicate"]))
    x = rng.standard_normal((n, c, h + eff_h, w)).astype(np_dtype)
    pads = (padding[1], padding[1], padding[0], padding[0])
    common = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    common["padding_mode"] = mode

    if index % 2 == 0:
        # One rank-1 weight, factored by the server.
        k = groups * int(rng.integers(1, 4))
        u = rng.standard_normal((k, cg, kh, 1))
        v = rng.standard_normal((k, cg, 1, kw))
        weight = (u * v).astype(np_dtype)
        bias = rng.standard_normal(k).astype(np_dtype)
        body = {"input": encode(x, index), "weight": encode(weight, index)}
        body |= {"bias": encode(bias, index), "activation": "tanh", **common}

        def oracle() -> torch.Tensor:
            xt = F.pad(t64(x), pads, mode="constant" if mode == "zeros" else mode)
            y = F.conv2d(
                xt, t64(weight), t64(bias), stride=stride, dilation=dilation, groups=groups
            )
            return torch.tanh(y)

        form = "rank1"
    else:
        mid = groups * int(rng.integers(1, 4))
        k = groups * int(rng.integers(1, 4))
        vertical = rng.standard_normal((mid, cg, kh, 1)).astype(np_dtype)
        horizontal = rng.standard_normal((k, mid // groups, 1, kw)).astype(np_dtype)
        v_bias = rng.standard_normal(mid).astype(np_dtype)
        body = {
            "input": encode(x, index),
            "vertical_weight": encode(vertical, index),
            "vertical_bias": encode(v_bias, index),
            "horizontal_weight": encode(horizontal, index),
            "vertical_activation": "relu",
            **common,
        }

        def oracle() -> torch.Tensor:
            # Two convolutions, each padding its own input: H before the vertical one, W
            # before the horizontal one.
            torch_mode = "constant" if mode == "zeros" else mode
            xt = F.pad(t64(x), (0, 0, pads[2], pads[3]), mode=torch_mode)
            y = F.relu(
                F.conv2d(
                    xt,
                    t64(vertical),
                    t64(v_bias),
                    stride=(stride[0], 1),
                    dilation=(dilation[0], 1),
                    groups=groups,
                )
            )
            y = F.pad(y, (pads[0], pads[1], 0, 0), mode=torch_mode)
            return F.conv2d(y, t64(horizontal), stride=(1, stride[1]), groups=groups)

        form = "factors"
    name = f"spatially_separable-{index}-{form}-n{n}c{c}g{groups}-k{kh}x{kw}-{mode}-{dtype}"
    return Case(name, "spatially_separable_conv2d", body, oracle, dtype)


def pipeline_case(rng: np.random.Generator, index: int, dtype: str) -> Case:
    np_dtype = np.dtype(dtype)
    x = rng.standard_normal((2, 3, 17, 15)).astype(np_dtype)
    w1 = rng.standard_normal((8, 3, 3, 3)).astype(np_dtype)
    dw = rng.standard_normal((8, 1, 3, 3)).astype(np_dtype)
    pw = rng.standard_normal((6, 8, 1, 1)).astype(np_dtype)
    wt = rng.standard_normal((6, 4, 2, 2)).astype(np_dtype)
    u, v = rng.standard_normal((4, 4, 5, 1)), rng.standard_normal((4, 4, 1, 5))
    rank1 = (u * v).astype(np_dtype)
    body = {
        "input": encode(x, index),
        "steps": [
            {"op": "conv2d", "weight": encode(w1, index), "padding": 1, "activation": "relu"},
            {
                "op": "depthwise_separable_conv2d",
                "depthwise_weight": encode(dw, index),
                "pointwise_weight": encode(pw, index),
                "stride": 2,
                "padding": 1,
            },
            {"op": "conv_transpose2d", "weight": encode(wt, index), "stride": 2},
            {"op": "spatially_separable_conv2d", "weight": encode(rank1, index), "padding": 2},
        ],
    }

    def oracle() -> torch.Tensor:
        y = F.relu(F.conv2d(t64(x), t64(w1), padding=1))
        y = F.conv2d(F.conv2d(y, t64(dw), stride=2, padding=1, groups=8), t64(pw))
        y = F.conv_transpose2d(y, t64(wt), stride=2)
        return F.conv2d(y, t64(rank1), padding=2)

    return Case(f"pipeline-{index}-{dtype}", "pipeline", body, oracle, dtype)


def build_cases() -> list[Case]:
    rng = np.random.default_rng(SEED)
    cases: list[Case] = []
    for index in range(44):
        cases.append(random_conv2d_case(rng, index, "float32"))
    for index in range(22):
        cases.append(random_transpose_case(rng, index, "float32"))
    for index in range(6):
        cases.append(random_depthwise_separable_case(rng, index, "float32"))
    for index in range(8):
        cases.append(random_spatially_separable_case(rng, index, "float32"))
    cases.append(pipeline_case(rng, 0, "float32"))
    for index in range(100, 108):
        cases.append(random_conv2d_case(rng, index, "float64"))
    for index in range(100, 104):
        cases.append(random_transpose_case(rng, index, "float64"))
    cases.append(random_depthwise_separable_case(rng, 100, "float64"))
    cases.append(random_spatially_separable_case(rng, 100, "float64"))
    cases.append(random_spatially_separable_case(rng, 101, "float64"))
    cases.append(pipeline_case(rng, 100, "float64"))
    return cases


CASES = build_cases()
WORST_ERRORS: dict[str, tuple[float, str]] = {}


def tolerance(dtype: str, expected: torch.Tensor) -> tuple[float, float]:
    """Return (rtol, atol) for comparing with the float64 oracle.

    Float32 sums of O(100) unit-variance products differ from it by a few ulps of the largest
    partial sum. Float64 results differ by rounding only."""
    scale = float(expected.abs().max()) if expected.numel() else 1.0
    if dtype == "float64":
        return 1e-9, 1e-10 * max(scale, 1.0)
    return 1e-4, 2e-5 * max(scale, 1.0)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_matches_pytorch(client: Any, device_id: str, devices: dict[str, Any], case: Case) -> None:
    if case.dtype == "float64" and not devices[device_id]["fp64"]:
        pytest.skip(f"{device_id} has no cl_khr_fp64")
    response = client.post(f"/v1/{case.op}", json={**case.body, "device": device_id})
    assert response.status_code == 200, response.text
    result = response.json()
    output = tensor_from_json(result["output"])
    expected = case.oracle()

    assert list(output.shape) == list(expected.shape)
    assert str(output.dtype) == case.dtype
    rtol, atol = tolerance(case.dtype, expected)
    np.testing.assert_allclose(output, expected.numpy(), rtol=rtol, atol=atol)
    error = float(np.max(np.abs(output - expected.numpy()))) if output.size else 0.0
    key = f"{device_id}/{case.dtype}"
    if error >= WORST_ERRORS.get(key, (-1.0, ""))[0]:
        WORST_ERRORS[key] = (error, case.name)

    timings = result["timings_ms"]
    assert set(timings) == {"queue", "upload", "compute", "download", "total"}
    assert all(value >= 0 for value in timings.values())
    assert math.isclose(
        timings["total"],
        timings["queue"] + timings["upload"] + timings["compute"] + timings["download"],
        rel_tol=1e-6,
        abs_tol=1e-6,
    )
    assert result["device"]["id"] == device_id
    assert "Server-Timing" in response.headers


def test_sweep_summary(device_id: str) -> None:
    """Print the worst error per device and dtype (shown with -s or in the closing note)."""
    float32 = WORST_ERRORS.get(f"{device_id}/float32")
    if float32 is None:
        pytest.skip("the sweep did not run before this test (select the whole module)")
    for key in sorted(k for k in WORST_ERRORS if k.startswith(device_id)):
        error, name = WORST_ERRORS[key]
        print(f"sweep worst abs error {key}: {error:.3e} ({name})")
