"""Every operation on ``Client`` and ``AsyncClient`` against a real server, PyTorch as the oracle.

Each convolution runs on every device the server lists and, for conv2d, over every transport.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import clconv_client
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from clconv_client import (
    AsyncClient,
    Client,
    Conv2d,
    ConvResult,
    ConvTranspose2d,
    DepthwiseSeparableConv2d,
    SpatiallySeparableConv2d,
)

# Results differ from PyTorch CPU by summation order only. That error grows with the size of the
# partial sums, so the absolute bound is scaled by the largest expected magnitude.
FLOAT32_TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}
FLOAT64_TOLERANCE = {"rtol": 1e-10, "atol": 1e-10}
TRANSPORTS = ("binary", "base64", "json")


def random_array(rng: np.random.Generator, *shape: int, dtype: Any = np.float32) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


def torch_tensor(array: np.ndarray | None) -> torch.Tensor | None:
    return None if array is None else torch.from_numpy(array)


def assert_matches(result: ConvResult, expected: torch.Tensor, label: str) -> None:
    expected_array = expected.numpy()
    tolerance = FLOAT64_TOLERANCE if expected_array.dtype == np.float64 else FLOAT32_TOLERANCE
    scale = max(1.0, float(np.abs(expected_array).max(initial=0.0)))
    tolerance = {"rtol": tolerance["rtol"], "atol": tolerance["atol"] * scale}
    assert isinstance(result.output, np.ndarray), label
    assert result.output.shape == expected_array.shape, label
    assert result.output.dtype == expected_array.dtype, label
    np.testing.assert_allclose(result.output, expected_array, **tolerance, err_msg=label)


def assert_result_fields(result: ConvResult, device_id: str) -> None:
    assert result.device == device_id
    assert result.algorithm, "algorithm is empty"
    assert result.flops > 0
    assert result.macs > 0
    assert result.params > 0
    assert result.timings["total"] >= 0.0
    assert "output" not in result.raw
    assert result.raw["op"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_conv2d_transports(client: Client, device_ids: list[str], transport: str) -> None:
    rng = np.random.default_rng(1)
    x = random_array(rng, 2, 4, 11, 9)
    weight = random_array(rng, 6, 2, 3, 3)
    bias = random_array(rng, 6)
    expected = F.conv2d(
        torch.from_numpy(x),
        torch.from_numpy(weight),
        torch.from_numpy(bias),
        stride=(2, 1),
        padding=1,
        dilation=(1, 2),
        groups=2,
    )
    for device_id in device_ids:
        result = client.conv2d(
            x,
            weight,
            bias,
            stride=(2, 1),
            padding=1,
            dilation=(1, 2),
            groups=2,
            device=device_id,
            transport=transport,  # type: ignore[arg-type]
        )
        assert_matches(result, expected, f"{device_id} {transport}")
        assert_result_fields(result, device_id)


def test_conv2d_padding_mode_activation(client: Client, device_ids: list[str]) -> None:
    rng = np.random.default_rng(2)
    x = random_array(rng, 1, 3, 8, 8)
    weight = random_array(rng, 4, 3, 3, 3)
    padded = F.pad(torch.from_numpy(x), (2, 2, 2, 2), mode="reflect")
    expected = F.leaky_relu(F.conv2d(padded, torch.from_numpy(weight)), negative_slope=0.2)
    for device_id in device_ids:
        result = client.conv2d(
            x,
            weight,
            padding=2,
            padding_mode="reflect",
            activation={"name": "leaky_relu", "negative_slope": 0.2},
            device=device_id,
        )
        assert_matches(result, expected, device_id)


def test_conv2d_float64(client: Client, device_ids: list[str]) -> None:
    rng = np.random.default_rng(3)
    x = random_array(rng, 1, 2, 7, 7, dtype=np.float64)
    weight = random_array(rng, 3, 2, 3, 3, dtype=np.float64)
    expected = F.relu(F.conv2d(torch.from_numpy(x), torch.from_numpy(weight), padding="same"))
    fp64_devices = [device.id for device in client.devices().devices if device.fp64]
    if not fp64_devices:
        pytest.skip("no device reports cl_khr_fp64")
    for device_id in fp64_devices:
        result = client.conv2d(x, weight, padding="same", activation="relu", device=device_id)
        assert_matches(result, expected, device_id)


def test_conv2d_client_default_device(server_url: str, device_ids: list[str]) -> None:
    rng = np.random.default_rng(4)
    x = random_array(rng, 1, 1, 5, 5)
    weight = random_array(rng, 1, 1, 3, 3)
    for device_id in device_ids:
        with Client(server_url, device=device_id) as pinned:
            assert pinned.conv2d(x, weight).device == device_id


def test_conv_transpose2d(client: Client, device_ids: list[str]) -> None:
    rng = np.random.default_rng(5)
    x = random_array(rng, 2, 4, 5, 6)
    weight = random_array(rng, 4, 3, 3, 2)
    bias = random_array(rng, 6)
    expected = F.conv_transpose2d(
        torch.from_numpy(x),
        torch.from_numpy(weight),
        torch.from_numpy(bias),
        stride=2,
        padding=(1, 0),
        output_padding=1,
        groups=2,
        dilation=(1, 2),
    )
    for device_id in device_ids:
        result = client.conv_transpose2d(
            x,
            weight,
            bias,
            stride=2,
            padding=(1, 0),
            output_padding=1,
            groups=2,
            dilation=(1, 2),
            device=device_id,
        )
        assert_matches(result, expected, device_id)
        assert_result_fields(result, device_id)


def test_conv_transpose2d_output_size(client: Client) -> None:
    rng = np.random.default_rng(6)
    x = random_array(rng, 1, 2, 4, 4)
    weight = random_array(rng, 2, 3, 3, 3)
    expected = F.conv_transpose2d(
        torch.from_numpy(x), torch.from_numpy(weight), stride=2, output_padding=1
    )
    result = client.conv_transpose2d(x, weight, stride=2, output_size=(10, 10))
    assert_matches(result, expected, "output_size")


def test_depthwise_separable_conv2d(client: Client, device_ids: list[str]) -> None:
    rng = np.random.default_rng(7)
    x = random_array(rng, 1, 3, 9, 9)
    depthwise_weight = random_array(rng, 6, 1, 3, 3)
    depthwise_bias = random_array(rng, 6)
    pointwise_weight = random_array(rng, 5, 6, 1, 1)
    pointwise_bias = random_array(rng, 5)
    hidden = F.relu6(
        F.conv2d(
            torch.from_numpy(x),
            torch.from_numpy(depthwise_weight),
            torch.from_numpy(depthwise_bias),
            stride=2,
            padding=1,
            groups=3,
        )
    )
    expected = torch.sigmoid(
        F.conv2d(hidden, torch.from_numpy(pointwise_weight), torch.from_numpy(pointwise_bias))
    )
    for device_id in device_ids:
        result = client.depthwise_separable_conv2d(
            x,
            depthwise_weight,
            pointwise_weight,
            depthwise_bias=depthwise_bias,
            pointwise_bias=pointwise_bias,
            stride=2,
            padding=1,
            depthwise_activation="relu6",
            activation="sigmoid",
            device=device_id,
        )
        assert_matches(result, expected, device_id)
        assert_result_fields(result, device_id)


def test_spatially_separable_factors(client: Client, device_ids: list[str]) -> None:
    rng = np.random.default_rng(8)
    x = random_array(rng, 1, 2, 10, 8)
    vertical_weight = random_array(rng, 3, 2, 5, 1)
    vertical_bias = random_array(rng, 3)
    horizontal_weight = random_array(rng, 4, 3, 1, 3)
    horizontal_bias = random_array(rng, 4)
    hidden = F.conv2d(
        torch.from_numpy(x),
        torch.from_numpy(vertical_weight),
        torch.from_numpy(vertical_bias),
        padding=(2, 0),
    )
    expected = torch.tanh(
        F.conv2d(
            hidden,
            torch.from_numpy(horizontal_weight),
            torch.from_numpy(horizontal_bias),
            padding=(0, 1),
        )
    )
    for device_id in device_ids:
        result = client.spatially_separable_conv2d(
            x,
            vertical_weight=vertical_weight,
            vertical_bias=vertical_bias,
            horizontal_weight=horizontal_weight,
            horizontal_bias=horizontal_bias,
            padding=(2, 1),
            activation="tanh",
            device=device_id,
        )
        assert_matches(result, expected, device_id)
        assert_result_fields(result, device_id)


def test_spatially_separable_rank_one_weight(client: Client, device_ids: list[str]) -> None:
    rng = np.random.default_rng(9)
    x = random_array(rng, 1, 3, 12, 12)
    column = rng.standard_normal((4, 3, 3, 1))
    row = rng.standard_normal((4, 3, 1, 3))
    weight = (column * row).astype(np.float32)
    bias = random_array(rng, 4)
    expected = F.conv2d(
        torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias), stride=2, padding=1
    )
    for device_id in device_ids:
        result = client.spatially_separable_conv2d(
            x, weight, bias, stride=2, padding=1, tolerance=1e-3, device=device_id
        )
        assert_matches(result, expected, device_id)


def pipeline_case() -> tuple[np.ndarray, list[Any], torch.Tensor]:
    """Four steps mixing step objects and dicts, with the PyTorch result."""
    rng = np.random.default_rng(10)
    x = random_array(rng, 1, 3, 16, 16)
    conv_weight = random_array(rng, 8, 3, 3, 3)
    depthwise_weight = random_array(rng, 8, 1, 3, 3)
    pointwise_weight = random_array(rng, 4, 8, 1, 1)
    vertical_weight = random_array(rng, 4, 4, 3, 1)
    horizontal_weight = random_array(rng, 4, 4, 1, 3)
    transpose_weight = random_array(rng, 4, 2, 2, 2)
    steps: list[Any] = [
        Conv2d(conv_weight, stride=2, padding=1, activation="relu"),
        {
            "op": "depthwise_separable_conv2d",
            "depthwise_weight": depthwise_weight,
            "pointwise_weight": pointwise_weight,
            "padding": 1,
        },
        SpatiallySeparableConv2d(
            vertical_weight=vertical_weight, horizontal_weight=horizontal_weight, padding=1
        ),
        ConvTranspose2d(transpose_weight, stride=2),
    ]
    hidden = F.relu(F.conv2d(torch.from_numpy(x), torch.from_numpy(conv_weight), None, 2, 1))
    hidden = F.conv2d(hidden, torch.from_numpy(depthwise_weight), padding=1, groups=8)
    hidden = F.conv2d(hidden, torch.from_numpy(pointwise_weight))
    hidden = F.conv2d(hidden, torch.from_numpy(vertical_weight), padding=(1, 0))
    hidden = F.conv2d(hidden, torch.from_numpy(horizontal_weight), padding=(0, 1))
    expected = F.conv_transpose2d(hidden, torch.from_numpy(transpose_weight), stride=2)
    return x, steps, expected


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_pipeline(client: Client, device_ids: list[str], transport: str) -> None:
    x, steps, expected = pipeline_case()
    for device_id in device_ids:
        result = client.pipeline(
            x,
            steps,
            device=device_id,
            transport=transport,  # type: ignore[arg-type]
        )
        assert_matches(result, expected, f"{device_id} {transport}")
        assert len(result.raw["steps"]) == 4


def test_pipeline_rejects_empty(client: Client) -> None:
    with pytest.raises(ValueError, match="at least one step"):
        client.pipeline(np.zeros((1, 1, 3, 3), np.float32), [])


def test_pipeline_rejects_unknown_op(client: Client) -> None:
    with pytest.raises(ValueError, match="'op'"):
        client.pipeline(np.zeros((1, 1, 3, 3), np.float32), [{"op": "pool"}])


def test_pipeline_step_error_field(client: Client) -> None:
    steps = [Conv2d(np.ones((2, 1, 1, 1), np.float32)), Conv2d(np.ones((2, 5, 1, 1), np.float32))]
    with pytest.raises(clconv_client.ValidationError) as caught:
        client.pipeline(np.ones((1, 1, 3, 3), np.float32), steps)
    assert caught.value.field is not None
    assert caught.value.field.startswith("steps[1]")


def test_client_shared_between_threads(client: Client) -> None:
    rng = np.random.default_rng(11)
    inputs = [random_array(rng, 1, 2, 6 + index, 6) for index in range(8)]
    weight = random_array(rng, 3, 2, 3, 3)
    outputs: dict[int, np.ndarray] = {}
    failures: list[BaseException] = []

    def run(index: int) -> None:
        try:
            outputs[index] = client.conv2d(inputs[index], weight, padding=1).output
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    for index, x in enumerate(inputs):
        expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(weight), padding=1)
        np.testing.assert_allclose(outputs[index], expected.numpy(), **FLOAT32_TOLERANCE)


def test_async_client_operations(server_url: str, device_ids: list[str]) -> None:
    rng = np.random.default_rng(12)
    x = random_array(rng, 1, 4, 8, 8)
    weight = random_array(rng, 4, 4, 3, 3)
    transpose_weight = random_array(rng, 4, 2, 3, 3)
    depthwise_weight = random_array(rng, 4, 1, 3, 3)
    pointwise_weight = random_array(rng, 3, 4, 1, 1)
    vertical_weight = random_array(rng, 2, 4, 3, 1)
    horizontal_weight = random_array(rng, 5, 2, 1, 3)
    x_torch = torch.from_numpy(x)

    async def run_all() -> dict[str, Any]:
        async with AsyncClient(server_url, device=device_ids[-1]) as async_client:
            await async_client.wait_until_ready(timeout=30)
            results = await asyncio.gather(
                async_client.conv2d(x, weight, padding=1),
                async_client.conv_transpose2d(x, transpose_weight, stride=2),
                async_client.depthwise_separable_conv2d(
                    x, depthwise_weight, pointwise_weight, padding=1
                ),
                async_client.spatially_separable_conv2d(
                    x, vertical_weight=vertical_weight, horizontal_weight=horizontal_weight
                ),
                async_client.pipeline(x, [Conv2d(weight, padding=1), Conv2d(weight)]),
            )
            plan = await async_client.plan("conv2d", x, weight=weight, padding=1)
            devices = await async_client.devices()
            return {"results": results, "plan": plan, "devices": devices}

    outcome = asyncio.run(run_all())
    conv, transpose, depthwise, spatial, pipeline = outcome["results"]
    weight_torch = torch.from_numpy(weight)
    assert_matches(conv, F.conv2d(x_torch, weight_torch, padding=1), "conv2d")
    assert_matches(
        transpose,
        F.conv_transpose2d(x_torch, torch.from_numpy(transpose_weight), stride=2),
        "conv_transpose2d",
    )
    depthwise_expected = F.conv2d(
        F.conv2d(x_torch, torch.from_numpy(depthwise_weight), padding=1, groups=4),
        torch.from_numpy(pointwise_weight),
    )
    assert_matches(depthwise, depthwise_expected, "depthwise_separable_conv2d")
    spatial_expected = F.conv2d(
        F.conv2d(x_torch, torch.from_numpy(vertical_weight)), torch.from_numpy(horizontal_weight)
    )
    assert_matches(spatial, spatial_expected, "spatially_separable_conv2d")
    pipeline_expected = F.conv2d(F.conv2d(x_torch, weight_torch, padding=1), weight_torch)
    assert_matches(pipeline, pipeline_expected, "pipeline")
    for result in outcome["results"]:
        assert result.device == device_ids[-1]
    assert outcome["plan"].output_shape == (1, 4, 8, 8)
    assert [device.id for device in outcome["devices"].devices] == device_ids


def test_async_client_errors(server_url: str) -> None:
    async def run_invalid() -> None:
        async with AsyncClient(server_url) as async_client:
            await async_client.conv2d(
                np.ones((1, 1, 4, 4), np.float32), np.ones((1, 1, 3, 3), np.float32), stride=0
            )

    with pytest.raises(clconv_client.ValidationError) as caught:
        asyncio.run(run_invalid())
    assert caught.value.field == "stride"
    assert caught.value.code == "invalid_value"


def test_depthwise_step_object_matches_method(client: Client) -> None:
    rng = np.random.default_rng(13)
    x = random_array(rng, 1, 2, 6, 6)
    depthwise_weight = random_array(rng, 2, 1, 3, 3)
    pointwise_weight = random_array(rng, 3, 2, 1, 1)
    direct = client.depthwise_separable_conv2d(x, depthwise_weight, pointwise_weight)
    step = DepthwiseSeparableConv2d(depthwise_weight, pointwise_weight)
    piped = client.pipeline(x, [step])
    np.testing.assert_allclose(piped.output, direct.output, **FLOAT32_TOLERANCE)
