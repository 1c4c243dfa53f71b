"""Malformed requests against the live server: each gets the documented 4xx and error body.

The table ``BAD_REQUESTS`` is the heart of this file. Every row sends one request that breaks
the contract in docs/api.md and states the status, error code, field path and a piece of the
message that the server must return. After each row a small valid conv2d must still succeed,
and the whole table is also sent from 8 threads at once.

Messages are not fixed word for word, so a row checks only that the message contains the
offending value. Where the contract allows more than one reasonable code, field or value
format, the row lists the accepted alternatives as a tuple.
"""

from __future__ import annotations

import base64
import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest

from support import tensor_json

# Marks a key to delete from a base body in the body builders below.
DROP = object()

# Replaced at test time by the id of a listed device without fp64 support.
NO_FP64_DEVICE = "<device without fp64>"

Expected = str | tuple[str, ...]


@dataclass(frozen=True)
class BadRequest:
    """One malformed request and the error the contract requires for it.

    ``body`` is a JSON value to encode, raw bytes to send as they are, or ``None`` for no body.
    ``field`` is ``None`` when the contract names no field (routing errors). ``message`` is a
    substring that the message must contain, a tuple of which at least one must occur, or
    ``None`` when there is no offending value to echo.
    """

    label: str
    method: str
    path: str
    body: Any
    status: int
    code: Expected
    field: Expected | None
    message: Expected | None


def tensor(*shape: int, dtype: str = "float32", encoding: str = "json") -> dict[str, Any]:
    """Build a small tensor with distinct values, as JSON data or base64."""
    size = math.prod(shape)
    values = (np.arange(size, dtype=dtype) / max(size, 1)).reshape(shape)
    return tensor_json(values, encoding)


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``overrides`` applied. An override of ``DROP`` deletes the key."""
    body = dict(base)
    for key, value in overrides.items():
        if value is DROP:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def conv2d(**overrides: Any) -> dict[str, Any]:
    return merge({"input": tensor(1, 1, 4, 4), "weight": tensor(1, 1, 3, 3)}, overrides)


def conv_transpose2d(**overrides: Any) -> dict[str, Any]:
    return merge({"input": tensor(1, 1, 3, 3), "weight": tensor(1, 1, 3, 3)}, overrides)


def depthwise(**overrides: Any) -> dict[str, Any]:
    base = {
        "input": tensor(1, 2, 5, 5),
        "depthwise_weight": tensor(2, 1, 3, 3),
        "pointwise_weight": tensor(4, 2, 1, 1),
    }
    return merge(base, overrides)


def spatial(**overrides: Any) -> dict[str, Any]:
    base = {
        "input": tensor(1, 1, 5, 5),
        "vertical_weight": tensor(1, 1, 3, 1),
        "horizontal_weight": tensor(1, 1, 1, 3),
    }
    return merge(base, overrides)


def pipeline(steps: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    return merge({"input": tensor(1, 1, 6, 6), "steps": steps}, overrides)


def shape_only(*shape: int) -> dict[str, Any]:
    return {"shape": list(shape), "dtype": "float32"}


def with_fields(base: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """Return a copy of a tensor object with fields replaced or (with ``DROP``) removed."""
    return merge(base, fields)


def not_rank_one_weight() -> dict[str, Any]:
    """Build a [2, 1, 3, 3] weight whose slices have relative residuals 0.0995 and 0.447.

    The relative residual of a slice W is ||W - s1·u1·v1ᵀ||_F / ||W||_F. Slice 0 is
    diag(1, 0.1, 0) with residual 0.1/sqrt(1.01) = 0.0995, and slice 1 is diag(1, 0.5, 0) with
    residual 0.5/sqrt(1.25) = 0.447, so the worst slice is slice 1.
    """
    weight = np.zeros((2, 1, 3, 3), dtype=np.float32)
    weight[0, 0] = np.diag([1.0, 0.1, 0.0])
    weight[1, 0] = np.diag([1.0, 0.5, 0.0])
    return tensor_json(weight, "json")


def base64_of(byte_count: int) -> str:
    return base64.b64encode(bytes(range(byte_count))).decode("ascii")


CONV2D = "/v1/conv2d"
TRANSPOSE = "/v1/conv_transpose2d"
DEPTHWISE = "/v1/depthwise_separable_conv2d"
SPATIAL = "/v1/spatially_separable_conv2d"
PIPELINE = "/v1/pipeline"
PLAN = "/v1/plan"

GROUPS_CODES = ("invalid_value", "shape_mismatch")
TYPE_CODES = ("invalid_type", "invalid_value")
MISSING_CODES = ("missing_field", "invalid_value")
DTYPE_CODES = ("unsupported_dtype", "invalid_value")

# fmt: off
BAD_REQUESTS: list[BadRequest] = [
    # The body itself.
    BadRequest("json_truncated", "POST", CONV2D, b'{"input": {"shape": [1, 1',
               400, "malformed_json", "body", None),
    BadRequest("json_trailing_comma", "POST", CONV2D, b'{"input": 1,}',
               400, "malformed_json", "body", None),
    BadRequest("body_empty", "POST", CONV2D, b"",
               400, "malformed_json", "body", None),
    BadRequest("body_not_utf8", "POST", CONV2D, b"\xff\xfe\x00{",
               400, "malformed_json", "body", None),
    BadRequest("body_is_array", "POST", CONV2D, [conv2d()],
               400, "malformed_json", "body", None),
    BadRequest("body_is_string", "POST", CONV2D, "conv2d",
               400, "malformed_json", "body", None),
    BadRequest("body_is_null", "POST", CONV2D, None,
               400, "malformed_json", "body", None),
    # Required tensors.
    BadRequest("input_missing", "POST", CONV2D, conv2d(input=DROP),
               422, "missing_field", "input", None),
    BadRequest("weight_missing", "POST", CONV2D, conv2d(weight=DROP),
               422, "missing_field", "weight", None),
    BadRequest("input_not_object", "POST", CONV2D, conv2d(input=[1.0, 2.0]),
               422, "invalid_type", "input", None),
    BadRequest("input_shape_missing", "POST", CONV2D,
               conv2d(input={"dtype": "float32", "data": [1.0]}),
               422, "missing_field", "input.shape", None),
    # Shapes and data.
    BadRequest("input_rank_3", "POST", CONV2D, conv2d(input=tensor(1, 4, 4)),
               422, ("shape_mismatch", "invalid_value"), "input.shape", ("3", "[1, 4, 4]")),
    BadRequest("weight_rank_5", "POST", CONV2D, conv2d(weight=tensor(1, 1, 1, 3, 3)),
               422, ("shape_mismatch", "invalid_value"), "weight.shape",
               ("5", "[1, 1, 1, 3, 3]")),
    BadRequest("shape_negative_dim", "POST", CONV2D,
               conv2d(input={"shape": [1, -1, 4, 4], "dtype": "float32", "data": []}),
               422, "invalid_value", "input.shape", "-1"),
    BadRequest("shape_fractional_dim", "POST", CONV2D,
               conv2d(input={"shape": [1, 1, 2.5, 2], "dtype": "float32", "data": [0.0] * 5}),
               422, TYPE_CODES, "input.shape", "2.5"),
    BadRequest("shape_not_list", "POST", CONV2D,
               conv2d(input={"shape": "1x1x4x4", "dtype": "float32", "data": [0.0] * 16}),
               422, "invalid_type", "input.shape", "1x1x4x4"),
    BadRequest("data_flat_short", "POST", CONV2D,
               conv2d(input=with_fields(tensor(1, 1, 3, 3), data=[0.5] * 8)),
               422, "shape_mismatch", "input.data", "8"),
    BadRequest("weight_data_long", "POST", CONV2D,
               conv2d(weight=with_fields(tensor(1, 1, 3, 3), data=[0.5] * 10)),
               422, "shape_mismatch", "weight.data", "10"),
    BadRequest("data_nested_ragged", "POST", CONV2D,
               conv2d(input={"shape": [1, 1, 2, 2], "dtype": "float32",
                             "data": [[[[1.0, 2.0], [3.0]]]]},
                      weight=tensor(1, 1, 1, 1)),
               422, ("shape_mismatch", "invalid_value"), "input.data", None),
    BadRequest("data_string_entry", "POST", CONV2D,
               conv2d(input=with_fields(tensor(1, 1, 2, 2), data=[1.0, 2.0, "x7", 4.0]),
                      weight=tensor(1, 1, 1, 1)),
               422, "invalid_type", "input.data", "x7"),
    BadRequest("data_null_entry", "POST", CONV2D,
               conv2d(input=with_fields(tensor(1, 1, 2, 2), data=[1.0, None, 3.0, 4.0]),
                      weight=tensor(1, 1, 1, 1)),
               422, "invalid_type", "input.data", ("null", "None")),
    BadRequest("dtype_unknown", "POST", CONV2D,
               conv2d(input=with_fields(tensor(1, 1, 4, 4), dtype="int32")),
               422, DTYPE_CODES, "input.dtype", "int32"),
    BadRequest("dtype_mixed_weight", "POST", CONV2D,
               conv2d(weight=tensor(1, 1, 3, 3, dtype="float64")),
               422, DTYPE_CODES, "weight.dtype", "float64"),
    BadRequest("dtype_mixed_bias", "POST", CONV2D,
               conv2d(bias=tensor(1, dtype="float64")),
               422, DTYPE_CODES, "bias.dtype", "float64"),
    BadRequest("base64_malformed", "POST", CONV2D,
               conv2d(input=with_fields(tensor(1, 1, 2, 2, encoding="base64"),
                                        base64="@@not*base64@@"),
                      weight=tensor(1, 1, 1, 1)),
               422, "invalid_value", "input.base64", None),
    BadRequest("base64_wrong_length", "POST", CONV2D,
               conv2d(input=with_fields(tensor(1, 1, 2, 2, encoding="base64"),
                                        base64=base64_of(12)),
                      weight=tensor(1, 1, 1, 1)),
               422, "shape_mismatch", "input.base64", "12"),
    BadRequest("data_and_base64", "POST", CONV2D,
               conv2d(input=with_fields(tensor(1, 1, 2, 2), base64=base64_of(16)),
                      weight=tensor(1, 1, 1, 1)),
               422, "invalid_value", "input", "base64"),
    BadRequest("neither_data_nor_base64", "POST", CONV2D,
               conv2d(input=shape_only(1, 1, 4, 4)),
               422, MISSING_CODES, "input", ("data", "base64")),
    # Channels and groups.
    BadRequest("groups_not_dividing_input", "POST", CONV2D,
               conv2d(input=tensor(1, 3, 4, 4), weight=tensor(2, 1, 3, 3), groups=2),
               422, GROUPS_CODES, "groups", "3"),
    BadRequest("groups_not_dividing_output", "POST", CONV2D,
               conv2d(input=tensor(1, 4, 4, 4), weight=tensor(3, 2, 3, 3), groups=2),
               422, GROUPS_CODES, "groups", "3"),
    BadRequest("weight_in_channels_wrong", "POST", CONV2D,
               conv2d(input=tensor(1, 4, 4, 4), weight=tensor(2, 3, 3, 3)),
               422, "shape_mismatch", "weight.shape", "3"),
    BadRequest("bias_shape_wrong", "POST", CONV2D,
               conv2d(weight=tensor(2, 1, 3, 3), bias=tensor(3)),
               422, "shape_mismatch", "bias.shape", "3"),
    BadRequest("groups_zero", "POST", CONV2D, conv2d(groups=0),
               422, "invalid_value", "groups", "0"),
    # Stride, dilation, padding.
    BadRequest("stride_zero", "POST", CONV2D, conv2d(stride=0),
               422, "invalid_value", "stride", "0"),
    BadRequest("stride_negative", "POST", CONV2D, conv2d(stride=[1, -2]),
               422, "invalid_value", "stride", "-2"),
    BadRequest("stride_three_values", "POST", CONV2D, conv2d(stride=[1, 2, 3]),
               422, TYPE_CODES, "stride", "3"),
    BadRequest("stride_string", "POST", CONV2D, conv2d(stride="two"),
               422, "invalid_type", "stride", "two"),
    BadRequest("stride_fractional", "POST", CONV2D, conv2d(stride=1.5),
               422, TYPE_CODES, "stride", "1.5"),
    BadRequest("dilation_zero", "POST", CONV2D, conv2d(dilation=[1, 0]),
               422, "invalid_value", "dilation", "0"),
    BadRequest("padding_negative_int", "POST", CONV2D, conv2d(padding=-1),
               422, "invalid_value", "padding", "-1"),
    BadRequest("padding_negative_pair", "POST", CONV2D, conv2d(padding=[1, -2]),
               422, "invalid_value", "padding", "-2"),
    BadRequest("padding_negative_key", "POST", CONV2D,
               conv2d(padding={"top": 0, "bottom": -3, "left": 0, "right": 0}),
               422, "invalid_value", "padding", "-3"),
    BadRequest("padding_unknown_string", "POST", CONV2D, conv2d(padding="full"),
               422, "invalid_value", "padding", "full"),
    BadRequest("padding_unknown_key", "POST", CONV2D,
               conv2d(padding={"top": 1, "bottom": 1, "left": 1, "right": 1, "middle": 1}),
               422, "invalid_value", "padding", "middle"),
    BadRequest("padding_missing_key", "POST", CONV2D,
               conv2d(padding={"top": 1, "bottom": 1, "left": 1}),
               422, MISSING_CODES, "padding", "right"),
    BadRequest("padding_same_strided", "POST", CONV2D, conv2d(padding="same", stride=2),
               422, "invalid_value", "padding", "same"),
    BadRequest("kernel_larger_than_input", "POST", CONV2D,
               conv2d(input=tensor(1, 1, 3, 3), weight=tensor(1, 1, 5, 5)),
               422, ("shape_mismatch", "invalid_value"), "weight", "5"),
    BadRequest("padding_mode_unknown", "POST", CONV2D, conv2d(padding_mode="mirror"),
               422, "invalid_value", "padding_mode", "mirror"),
    # Activation.
    BadRequest("activation_unknown", "POST", CONV2D, conv2d(activation="gelu"),
               422, "invalid_value", "activation", "gelu"),
    BadRequest("activation_object_unknown", "POST", CONV2D,
               conv2d(activation={"name": "swish"}),
               422, "invalid_value", "activation", "swish"),
    BadRequest("negative_slope_string", "POST", CONV2D,
               conv2d(activation="leaky_relu", negative_slope="steep"),
               422, "invalid_type", "negative_slope", "steep"),
    BadRequest("negative_slope_in_object", "POST", CONV2D,
               conv2d(activation={"name": "leaky_relu", "negative_slope": "steep"}),
               422, "invalid_type", "activation", "steep"),
    # Device and output encoding.
    BadRequest("device_unknown", "POST", CONV2D, conv2d(device="nosuch:9"),
               422, "unknown_device", "device", "nosuch:9"),
    BadRequest("output_encoding_unknown", "POST", CONV2D, conv2d(output_encoding="hex"),
               422, "invalid_value", "output_encoding", "hex"),
    BadRequest("float64_without_fp64", "POST", CONV2D,
               conv2d(input=tensor(1, 1, 4, 4, dtype="float64"),
                      weight=tensor(1, 1, 3, 3, dtype="float64"), device=NO_FP64_DEVICE),
               422, ("unsupported_on_device", "unsupported_dtype"), "input.dtype", "float64"),
    # 1 x 1 input padded by 100000 on each side gives a 200001 x 200001 output (about
    # 149 GiB in float32), far above any output limit.
    BadRequest("output_too_large", "POST", CONV2D,
               conv2d(input=tensor(1, 1, 1, 1), weight=tensor(1, 1, 1, 1), padding=100000),
               413, "too_large", None, ("200001", "100000", "160001600004")),
    # conv_transpose2d.
    # The field itself is the mistake here, so a message that names the field is enough.
    BadRequest("transpose_padding_mode", "POST", TRANSPOSE,
               conv_transpose2d(padding_mode="reflect"),
               422, "invalid_value", "padding_mode", ("reflect", "padding_mode")),
    BadRequest("transpose_output_padding", "POST", TRANSPOSE,
               conv_transpose2d(stride=2, dilation=1, output_padding=2),
               422, "invalid_value", "output_padding", "2"),
    # H_out can only be 7 or 8 here: (3 - 1)*2 + (3 - 1) + 1 plus an output padding below 2.
    BadRequest("transpose_output_size_unreachable", "POST", TRANSPOSE,
               conv_transpose2d(stride=2, output_size=[20, 20]),
               422, "invalid_value", "output_size", "20"),
    BadRequest("transpose_padding_same", "POST", TRANSPOSE, conv_transpose2d(padding="same"),
               422, "invalid_value", "padding", "same"),
    # depthwise_separable_conv2d.
    BadRequest("depthwise_second_dim_not_1", "POST", DEPTHWISE,
               depthwise(depthwise_weight=tensor(2, 5, 3, 3)),
               422, "shape_mismatch", "depthwise_weight.shape", "5"),
    BadRequest("pointwise_not_1x1", "POST", DEPTHWISE,
               depthwise(pointwise_weight=tensor(4, 2, 3, 3)),
               422, "shape_mismatch", "pointwise_weight.shape", "3"),
    BadRequest("pointwise_in_channels", "POST", DEPTHWISE,
               depthwise(pointwise_weight=tensor(4, 5, 1, 1)),
               422, "shape_mismatch", "pointwise_weight.shape", "5"),
    BadRequest("pointwise_missing", "POST", DEPTHWISE, depthwise(pointwise_weight=DROP),
               422, "missing_field", "pointwise_weight", None),
    # spatially_separable_conv2d. 0.447 is the relative residual of the worst slice, and the
    # other slice's 0.0995 is not enough.
    BadRequest("weight_not_rank_1", "POST", SPATIAL,
               spatial(vertical_weight=DROP, horizontal_weight=DROP,
                       weight=not_rank_one_weight()),
               422, "not_separable", "weight", ("0.447", "4.47e-01")),
    BadRequest("weight_and_vertical_weight", "POST", SPATIAL,
               spatial(weight=tensor(1, 1, 3, 3)),
               422, "invalid_value", ("weight", "vertical_weight"), None),
    BadRequest("vertical_weight_not_column", "POST", SPATIAL,
               spatial(vertical_weight=tensor(1, 1, 3, 2)),
               422, "shape_mismatch", "vertical_weight.shape", "2"),
    # pipeline.
    BadRequest("pipeline_no_steps", "POST", PIPELINE, pipeline([]),
               422, "invalid_value", "steps", None),
    BadRequest("pipeline_unknown_op", "POST", PIPELINE,
               pipeline([{"op": "conv3d", "weight": tensor(1, 1, 3, 3)}]),
               422, "invalid_value", "steps[0].op", "conv3d"),
    BadRequest("pipeline_channels_break", "POST", PIPELINE,
               pipeline([{"op": "conv2d", "weight": tensor(2, 1, 1, 1)},
                         {"op": "conv2d", "weight": tensor(1, 3, 1, 1)}]),
               422, "shape_mismatch", "steps[1]", "3"),
    BadRequest("pipeline_step_stride_zero", "POST", PIPELINE,
               pipeline([{"op": "conv2d", "weight": tensor(1, 1, 3, 3), "stride": 0}]),
               422, "invalid_value", "steps[0].stride", "0"),
    # plan.
    BadRequest("plan_unknown_op", "POST", PLAN,
               {"op": "conv1d", "input": shape_only(1, 1, 4, 4),
                "weight": shape_only(1, 1, 3, 3)},
               422, "invalid_value", "op", "conv1d"),
    BadRequest("plan_op_missing", "POST", PLAN,
               {"input": shape_only(1, 1, 4, 4), "weight": shape_only(1, 1, 3, 3)},
               422, "missing_field", "op", None),
    BadRequest("plan_padding_negative", "POST", PLAN,
               {"op": "conv2d", "input": shape_only(1, 1, 4, 4),
                "weight": shape_only(1, 1, 3, 3), "padding": -4},
               422, "invalid_value", "padding", "-4"),
    # Routing.
    BadRequest("get_on_post_route", "GET", CONV2D, None,
               405, "method_not_allowed", None, None),
    BadRequest("post_on_get_route", "POST", "/v1/devices", {},
               405, "method_not_allowed", None, None),
    BadRequest("unknown_route", "POST", "/v1/conv3d", conv2d(),
               404, "not_found", None, None),
    BadRequest("unknown_version", "GET", "/v2/devices", None,
               404, "not_found", None, None),
]
# fmt: on


def as_tuple(expected: Expected) -> tuple[str, ...]:
    return (expected,) if isinstance(expected, str) else expected


def field_matches(actual: str, expected: str) -> bool:
    """Accept the expected path itself or a deeper path below it (``padding.bottom``)."""
    return actual == expected or actual.startswith((expected + ".", expected + "["))


def substitute_device(body: Any, device_id: str) -> Any:
    if isinstance(body, dict) and body.get("device") == NO_FP64_DEVICE:
        return {**body, "device": device_id}
    return body


def send(http: httpx.Client, row: BadRequest, body: Any) -> httpx.Response:
    """Send a row's request: bytes go as they are, anything else as JSON."""
    if row.method == "GET":
        return http.request(row.method, row.path)
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http.request(
        row.method, row.path, content=content, headers={"content-type": "application/json"}
    )


def has_error_body(response: httpx.Response) -> bool:
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(error, dict) and all(key in error for key in ("code", "message", "field"))


def error_problems(row: BadRequest, response: httpx.Response) -> list[str]:
    """List every way a response differs from the row's expected error; empty if none."""
    summary = f"{row.method} {row.path} -> {response.status_code} {response.text[:600]}"
    if response.status_code >= 500:
        return [f"server error: {summary}"]
    problems = []
    if response.status_code != row.status:
        problems.append(f"status {response.status_code}, expected {row.status}")
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return [*problems, f"no error object in the body: {summary}"]
    if not isinstance(error, dict):
        return [*problems, f"error is not an object: {summary}"]

    for key in ("code", "message", "field"):
        if key not in error:
            problems.append(f"error.{key} missing")
    code = error.get("code")
    message = error.get("message")
    field = error.get("field")
    if code not in as_tuple(row.code):
        problems.append(f"code {code!r}, expected one of {as_tuple(row.code)}")
    if not isinstance(message, str) or not message:
        problems.append(f"message {message!r} is not a non-empty string")
    if row.field is not None:
        accepted = as_tuple(row.field)
        if not isinstance(field, str) or not any(field_matches(field, f) for f in accepted):
            problems.append(f"field {field!r}, expected {accepted} or a path below it")
    if row.message is not None and isinstance(message, str):
        values = as_tuple(row.message)
        if not any(value in message for value in values):
            problems.append(f"message {message!r} contains none of {values}")
    if problems:
        problems.append(f"response: {summary}")
    return problems


# A 4 x 4 input of 0..15 and a 2 x 2 weight of ones, so each output is the sum of one window.
SMALL_INPUT = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
SMALL_WEIGHT = np.ones((1, 1, 2, 2), dtype=np.float32)
SMALL_EXPECTED = [10.0, 14.0, 18.0, 26.0, 30.0, 34.0, 42.0, 46.0, 50.0]


def assert_server_serves(http: httpx.Client) -> None:
    """Check that a small valid conv2d still returns the correct output."""
    body = {
        "input": tensor_json(SMALL_INPUT, "json"),
        "weight": tensor_json(SMALL_WEIGHT, "json"),
    }
    response = http.post(CONV2D, json=body)
    assert response.status_code == 200, f"valid conv2d failed: {response.text[:600]}"
    output = response.json()["output"]
    assert output["shape"] == [1, 1, 3, 3]
    assert np.allclose(np.asarray(output["data"]).reshape(-1), SMALL_EXPECTED)


@pytest.fixture(scope="session")
def no_fp64_device(devices: dict[str, dict[str, Any]]) -> str | None:
    """Return the id of a listed device without fp64, or ``None`` when every device has it."""
    for device_id, device in devices.items():
        if not device.get("fp64"):
            return device_id
    return None


def resolve_body(row: BadRequest, no_fp64_device: str | None) -> Any:
    """Return the body to send, or skip when the row needs a device that is not listed."""
    if isinstance(row.body, dict) and row.body.get("device") == NO_FP64_DEVICE:
        if no_fp64_device is None:
            pytest.skip("every listed device supports fp64, so no device can reject float64")
        return substitute_device(row.body, no_fp64_device)
    return row.body


def test_table_has_distinct_rows() -> None:
    labels = [row.label for row in BAD_REQUESTS]
    assert len(labels) == len(set(labels)), "duplicate labels in BAD_REQUESTS"
    assert len(BAD_REQUESTS) >= 40


@pytest.mark.parametrize("row", BAD_REQUESTS, ids=[row.label for row in BAD_REQUESTS])
def test_bad_request(client: httpx.Client, no_fp64_device: str | None, row: BadRequest) -> None:
    body = resolve_body(row, no_fp64_device)

    response = send(client, row, body)

    assert response.status_code < 500, f"server error: {response.text[:600]}"
    problems = error_problems(row, response)
    assert not problems, "\n".join(problems)
    assert_server_serves(client)


def test_bad_requests_concurrently(server_url: str, no_fp64_device: str | None) -> None:
    rows = [
        row
        for row in BAD_REQUESTS
        if not (isinstance(row.body, dict) and row.body.get("device") == NO_FP64_DEVICE)
        or no_fp64_device is not None
    ]

    def run(row: BadRequest) -> tuple[BadRequest, httpx.Response]:
        body = substitute_device(row.body, no_fp64_device or "")
        with httpx.Client(base_url=server_url, timeout=300.0) as http:
            return row, send(http, row, body)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(run, rows))

    not_4xx = [
        f"{row.label}: {response.status_code} {response.text[:300]}"
        for row, response in results
        if not 400 <= response.status_code < 500
    ]
    assert not not_4xx, "responses outside 4xx under concurrency:\n" + "\n".join(not_4xx)
    no_error_body = [
        f"{row.label}: {response.text[:300]}"
        for row, response in results
        if not has_error_body(response)
    ]
    assert not no_error_body, "responses without an error object:\n" + "\n".join(no_error_body)
    with httpx.Client(base_url=server_url, timeout=300.0) as http:
        assert_server_serves(http)
