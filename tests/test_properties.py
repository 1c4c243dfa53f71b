"""Property tests: random small shapes and settings for conv2d and conv_transpose2d on the
server's default device, against PyTorch in float64. Hypothesis draws 50 cases per operation;
every new shape builds new kernels, so each case takes up to a few hundred milliseconds."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from support import tensor_from_json, tensor_json

EXAMPLES = 50
# No example database: it would write a .hypothesis folder into the repository.
PROPERTY_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)


def check_against_torch(response: httpx.Response, expected: torch.Tensor) -> None:
    assert response.status_code == 200, response.text
    output = tensor_from_json(response.json()["output"])
    assert list(output.shape) == list(expected.shape)
    # float32 products summed in another order than the float64 oracle: a few ulps of the
    # largest partial sum.
    scale = max(float(expected.abs().max()) if expected.numel() else 1.0, 1.0)
    np.testing.assert_allclose(output, expected.numpy(), rtol=1e-4, atol=2e-5 * scale)


@st.composite
def conv2d_cases(draw: st.DrawFn) -> dict[str, Any]:
    groups = draw(st.integers(1, 2))
    channels = groups * draw(st.integers(1, 3))
    out_channels = groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    return {
        "batch": draw(st.integers(1, 2)),
        "channels": channels,
        "out_channels": out_channels,
        "size": (draw(st.integers(1, 9)), draw(st.integers(1, 9))),
        "kernel": kernel,
        "stride": [draw(st.integers(1, 3)), draw(st.integers(1, 3))],
        "padding": [draw(st.integers(0, 2)), draw(st.integers(0, 2))],
        "dilation": [draw(st.integers(1, 2)), draw(st.integers(1, 2))],
        "groups": groups,
        "bias": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


@given(case=conv2d_cases())
@PROPERTY_SETTINGS
def test_conv2d_matches_torch(client: httpx.Client, case: dict[str, Any]) -> None:
    for axis in range(2):
        span = case["dilation"][axis] * (case["kernel"][axis] - 1) + 1
        assume(case["size"][axis] + 2 * case["padding"][axis] >= span)
    rng = np.random.default_rng(case["seed"])
    image = rng.standard_normal((case["batch"], case["channels"], *case["size"]), np.float32)
    weight_shape = (case["out_channels"], case["channels"] // case["groups"], *case["kernel"])
    weight = rng.standard_normal(weight_shape, np.float32)
    bias = rng.standard_normal(case["out_channels"], np.float32) if case["bias"] else None
    body: dict[str, Any] = {
        "input": tensor_json(image),
        "weight": tensor_json(weight),
        "stride": case["stride"],
        "padding": case["padding"],
        "dilation": case["dilation"],
        "groups": case["groups"],
    }
    if bias is not None:
        body["bias"] = tensor_json(bias)

    expected = F.conv2d(
        torch.from_numpy(image).double(),
        torch.from_numpy(weight).double(),
        None if bias is None else torch.from_numpy(bias).double(),
        stride=case["stride"],
        padding=case["padding"],
        dilation=case["dilation"],
        groups=case["groups"],
    )
    check_against_torch(client.post("/v1/conv2d", json=body), expected)


@given(case=conv2d_cases(), output_padding=st.tuples(st.integers(0, 2), st.integers(0, 2)))
@PROPERTY_SETTINGS
def test_conv_transpose2d_matches_torch(
    client: httpx.Client, case: dict[str, Any], output_padding: tuple[int, int]
) -> None:
    for axis in range(2):
        limit = max(case["stride"][axis], case["dilation"][axis])
        assume(output_padding[axis] < limit)
        out = (
            (case["size"][axis] - 1) * case["stride"][axis]
            - 2 * case["padding"][axis]
            + case["dilation"][axis] * (case["kernel"][axis] - 1)
            + output_padding[axis]
            + 1
        )
        assume(out >= 1)
    rng = np.random.default_rng(case["seed"])
    image = rng.standard_normal((case["batch"], case["channels"], *case["size"]), np.float32)
    weight_shape = (case["channels"], case["out_channels"] // case["groups"], *case["kernel"])
    weight = rng.standard_normal(weight_shape, np.float32)
    bias = rng.standard_normal(case["out_channels"], np.float32) if case["bias"] else None
    body: dict[str, Any] = {
        "input": tensor_json(image),
        "weight": tensor_json(weight),
        "stride": case["stride"],
        "padding": case["padding"],
        "output_padding": list(output_padding),
        "dilation": case["dilation"],
        "groups": case["groups"],
    }
    if bias is not None:
        body["bias"] = tensor_json(bias)

    expected = F.conv_transpose2d(
        torch.from_numpy(image).double(),
        torch.from_numpy(weight).double(),
        None if bias is None else torch.from_numpy(bias).double(),
        stride=case["stride"],
        padding=case["padding"],
        output_padding=output_padding,
        dilation=case["dilation"],
        groups=case["groups"],
    )
    check_against_torch(client.post("/v1/conv_transpose2d", json=body), expected)
