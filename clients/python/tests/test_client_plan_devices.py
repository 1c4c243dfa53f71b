"""``plan``, ``devices`` and ``wait_until_ready`` against a real server."""

from __future__ import annotations

import clconv_client
import numpy as np
import pytest
from clconv_client import Client, Conv2d, TensorSpec


def test_plan_from_shapes(client: Client) -> None:
    plan = client.plan("conv2d", (1, 3, 32, 32), weight=(8, 3, 3, 3), stride=2)
    assert plan.output_shape == (1, 8, 15, 15)
    assert plan.dtype == "float32"
    assert plan.macs == 8 * 15 * 15 * 3 * 3 * 3
    assert plan.flops == 2 * plan.macs
    assert plan.params == 8 * 3 * 3 * 3
    assert plan.receptive_field == (3.0, 3.0)
    assert plan.effective_stride == (2.0, 2.0)
    assert plan.bytes_moved["download"] == 8 * 15 * 15 * 4
    assert plan.algorithm
    assert plan.device


def test_plan_from_arrays_keeps_dtype(client: Client) -> None:
    x = np.zeros((1, 2, 10, 10), np.float64)
    weight = np.zeros((4, 2, 3, 3), np.float64)
    plan = client.plan("conv2d", x, weight=weight, bias=np.zeros(4, np.float64), padding="same")
    assert plan.output_shape == (1, 4, 10, 10)
    assert plan.dtype == "float64"
    assert plan.flops == 2 * plan.macs + 4 * 10 * 10


def test_plan_step_object(client: Client) -> None:
    plan = client.plan(Conv2d(TensorSpec((6, 3, 5, 5)), padding=2), (2, 3, 20, 20))
    assert plan.output_shape == (2, 6, 20, 20)


def test_plan_every_operation(client: Client) -> None:
    cases = {
        "conv_transpose2d": ({"weight": (4, 2, 3, 3), "stride": 2}, (1, 2, 17, 17)),
        "depthwise_separable_conv2d": (
            {"depthwise_weight": (4, 1, 3, 3), "pointwise_weight": (8, 4, 1, 1), "padding": 1},
            (1, 8, 8, 8),
        ),
        "spatially_separable_conv2d": (
            {"vertical_weight": (3, 4, 3, 1), "horizontal_weight": (5, 3, 1, 3)},
            (1, 5, 6, 6),
        ),
        "pipeline": (
            {"steps": [Conv2d((8, 4, 3, 3), stride=2), {"op": "conv2d", "weight": (2, 8, 1, 1)}]},
            (1, 2, 3, 3),
        ),
    }
    for op, (arguments, expected_shape) in cases.items():
        plan = client.plan(op, (1, 4, 8, 8), **arguments)
        assert plan.output_shape == expected_shape, op


def test_plan_rejects_unknown_op(client: Client) -> None:
    with pytest.raises(ValueError, match="op must be one of"):
        client.plan("maxpool", (1, 1, 4, 4))


def test_plan_rejects_unknown_argument(client: Client) -> None:
    with pytest.raises(TypeError):
        client.plan("conv2d", (1, 1, 4, 4), weight=(1, 1, 3, 3), kernel_size=3)


def test_plan_server_validation(client: Client) -> None:
    with pytest.raises(clconv_client.ValidationError) as caught:
        client.plan("conv2d", (1, 3, 8, 8), weight=(4, 5, 3, 3))
    assert caught.value.status == 422
    assert caught.value.code == "shape_mismatch"
    assert caught.value.field is not None


def test_devices(client: Client) -> None:
    listing = client.devices()
    assert listing.devices
    assert listing.default in [device.id for device in listing.devices]
    default = listing[listing.default or ""]
    assert default.default
    for device in listing.devices:
        assert device.name
        assert device.platform
        assert device.compute_units > 0
        assert device.global_mem_bytes > 0
        assert device.max_work_group_size > 0
        assert device.raw["id"] == device.id


def test_devices_lookup_unknown(client: Client) -> None:
    with pytest.raises(KeyError):
        client.devices()["nvidia:7"]


def test_wait_until_ready(server_url: str) -> None:
    with Client(server_url) as sdk_client:
        sdk_client.wait_until_ready(timeout=10)
