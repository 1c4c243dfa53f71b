"""The binary framing on /v1: a JSON header, then raw tensor bytes, in requests and responses.

The unit tests at the top check that decoding shares memory with the request body, so the
device upload is the only copy of a tensor. The rest run against the live server and compare
with PyTorch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clconv.api.binary import attach_binary_tensors, frame_response, split_body
from clconv.core.planner import parse_request
from clconv.core.tensors import RAW_BYTES_KEY, decode_tensor, encode_tensor
from support import FLOAT32_ATOL, FLOAT32_RTOL, FLOAT64_ATOL, FLOAT64_RTOL, tensor_json

HEADER_LENGTH = "Inference-Header-Content-Length"


def binary_tensor(array: np.ndarray) -> dict[str, Any]:
    return {"shape": list(array.shape), "dtype": str(array.dtype), "binary_data_size": array.nbytes}


def framed(header: dict[str, Any], *arrays: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """Build a framed body: the JSON header, then each array's little-endian bytes in order."""
    encoded = json.dumps(header).encode()
    parts = [
        encoded,
        *(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes() for a in arrays),
    ]
    return b"".join(parts), {HEADER_LENGTH: str(len(encoded))}


def unframe(response: httpx.Response) -> tuple[dict[str, Any], np.ndarray]:
    """Split a framed response into its header and its output array."""
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers[HEADER_LENGTH])
    header = json.loads(response.content[:length])
    output = header["output"]
    assert output["binary_data_size"] == len(response.content) - length
    dtype = np.dtype(output["dtype"]).newbyteorder("<")
    array = np.frombuffer(response.content, dtype=dtype, offset=length).reshape(output["shape"])
    return header, array


def tolerances(dtype: str) -> dict[str, float]:
    if dtype == "float64":
        return {"rtol": FLOAT64_RTOL, "atol": FLOAT64_ATOL}
    return {"rtol": FLOAT32_RTOL, "atol": FLOAT32_ATOL}


def random(rng: np.random.Generator, *shape: int, dtype: str = "float32") -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------------------------------------
# Decoding without copies (no server)


def test_decoded_tensors_share_body_memory() -> None:
    rng = np.random.default_rng(0)
    x = random(rng, 1, 2, 5, 5)
    w = random(rng, 3, 2, 3, 3)
    # An odd header length puts the tensors at unaligned offsets, which must not force a copy.
    raw, headers = framed({"input": binary_tensor(x), "weight": binary_tensor(w), "pad": "x"}, x, w)
    header, binary = split_body(raw, int(headers[HEADER_LENGTH]))
    assert attach_binary_tensors(header, binary) == 2
    body_bytes = np.frombuffer(raw, dtype=np.uint8)

    tensor = decode_tensor(header["input"], "input")
    assert tensor.encoding == "binary"
    assert tensor.array is not None
    np.testing.assert_array_equal(tensor.array, x)
    assert np.shares_memory(tensor.array, body_bytes)
    # The executor uploads np.ascontiguousarray(array): that must still be the body's memory.
    assert np.shares_memory(np.ascontiguousarray(tensor.array), body_bytes)

    del header["pad"]
    plan = parse_request("conv2d", header)
    assert plan.input.array is not None
    assert np.shares_memory(plan.input.array, body_bytes)


def test_pipeline_bytes_follow_document_order() -> None:
    rng = np.random.default_rng(1)
    x = random(rng, 1, 2, 6, 6)
    w1 = random(rng, 4, 2, 3, 3)
    w2 = random(rng, 3, 4, 1, 1)
    header = {
        "input": binary_tensor(x),
        "steps": [
            {"op": "conv2d", "weight": binary_tensor(w1)},
            {"op": "conv2d", "weight": binary_tensor(w2)},
        ],
    }
    raw, headers = framed(header, x, w1, w2)
    decoded, binary = split_body(raw, int(headers[HEADER_LENGTH]))
    assert attach_binary_tensors(decoded, binary) == 3
    second = decode_tensor(decoded["steps"][1]["weight"], "steps[1].weight")
    assert second.array is not None
    np.testing.assert_array_equal(second.array, w2)


def test_raw_bytes_key_rejected_from_json() -> None:
    value = {"shape": [2], "dtype": "float32", RAW_BYTES_KEY: [0, 0, 0, 0, 0, 0, 0, 0]}
    with pytest.raises(Exception, match="reserved for the binary framing"):
        decode_tensor(value, "input")


def test_frame_response_round_trip() -> None:
    array = np.arange(6, dtype=np.float64).reshape(2, 3)
    body = {"op": "conv2d", "output": encode_tensor(array, "binary")}
    content, length = frame_response(body)
    header = json.loads(content[:length])
    assert header["output"] == {"shape": [2, 3], "dtype": "float64", "binary_data_size": 48}
    decoded = np.frombuffer(content, dtype="<f8", offset=length).reshape(2, 3)
    np.testing.assert_array_equal(decoded, array)


# ---------------------------------------------------------------------------------------------
# Operations over HTTP


def test_conv2d_binary_round_trip(
    client: httpx.Client, device_id: str, devices: dict[str, Any]
) -> None:
    for dtype in ("float32", "float64"):
        if dtype == "float64" and not devices[device_id]["fp64"]:
            continue
        rng = np.random.default_rng(2)
        x = random(rng, 2, 3, 9, 8, dtype=dtype)
        w = random(rng, 4, 3, 3, 3, dtype=dtype)
        b = random(rng, 4, dtype=dtype)
        header = {
            "input": binary_tensor(x),
            "weight": binary_tensor(w),
            "bias": binary_tensor(b),
            "stride": [2, 1],
            "padding": 1,
            "device": device_id,
        }
        content, headers = framed(header, x, w, b)
        response = client.post("/v1/conv2d", content=content, headers=headers)
        assert response.status_code == 200, response.text
        result, output = unframe(response)
        expected = F.conv2d(
            torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride=(2, 1), padding=1
        ).numpy()
        np.testing.assert_allclose(output, expected, **tolerances(dtype))
        assert result["output"]["dtype"] == dtype
        assert result["device"]["id"] == device_id
        assert result["timings_ms"]["total"] > 0
        assert "total;dur=" in response.headers["Server-Timing"]


OPERATION_CASES = [
    (
        "conv_transpose2d",
        {"input": (1, 3, 5, 5), "weight": (3, 2, 3, 3), "bias": (2,)},
        {"stride": 2, "padding": 1, "output_padding": 1},
        lambda t, s: F.conv_transpose2d(
            t["input"], t["weight"], t["bias"], stride=2, padding=1, output_padding=1
        ),
    ),
    (
        "depthwise_separable_conv2d",
        {"input": (1, 3, 8, 8), "depthwise_weight": (6, 1, 3, 3), "pointwise_weight": (4, 6, 1, 1)},
        {"padding": 1},
        lambda t, s: F.conv2d(
            F.conv2d(t["input"], t["depthwise_weight"], padding=1, groups=3),
            t["pointwise_weight"],
        ),
    ),
    (
        "spatially_separable_conv2d",
        {"input": (1, 2, 9, 7), "vertical_weight": (3, 2, 3, 1), "horizontal_weight": (4, 3, 1, 3)},
        {"padding": 1},
        lambda t, s: F.conv2d(
            F.conv2d(t["input"], t["vertical_weight"], padding=(1, 0)),
            t["horizontal_weight"],
            padding=(0, 1),
        ),
    ),
]


@pytest.mark.parametrize(
    ("op", "shapes", "settings", "reference"),
    OPERATION_CASES,
    ids=[case[0] for case in OPERATION_CASES],
)
def test_operation_binary_round_trip(
    client: httpx.Client,
    device_id: str,
    op: str,
    shapes: dict[str, tuple[int, ...]],
    settings: dict[str, Any],
    reference: Any,
) -> None:
    rng = np.random.default_rng(3)
    arrays = {name: random(rng, *shape) for name, shape in shapes.items()}
    header = {name: binary_tensor(a) for name, a in arrays.items()}
    content, headers = framed({**header, **settings, "device": device_id}, *arrays.values())
    response = client.post(f"/v1/{op}", content=content, headers=headers)
    assert response.status_code == 200, response.text
    _, output = unframe(response)
    expected = reference({name: torch.from_numpy(a) for name, a in arrays.items()}, settings)
    np.testing.assert_allclose(output, expected.numpy(), rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)


def test_pipeline_binary_weights(client: httpx.Client, device_id: str) -> None:
    rng = np.random.default_rng(4)
    x = random(rng, 1, 2, 10, 10)
    w1 = random(rng, 4, 2, 3, 3)
    b1 = random(rng, 4)
    w2 = random(rng, 3, 4, 1, 1)
    header = {
        "input": binary_tensor(x),
        "steps": [
            {"op": "conv2d", "weight": binary_tensor(w1), "bias": binary_tensor(b1)},
            {"op": "conv2d", "weight": binary_tensor(w2), "activation": "relu"},
        ],
        "device": device_id,
    }
    content, headers = framed(header, x, w1, b1, w2)
    response = client.post("/v1/pipeline", content=content, headers=headers)
    assert response.status_code == 200, response.text
    result, output = unframe(response)
    tx = torch.from_numpy(x)
    step1 = F.conv2d(tx, torch.from_numpy(w1), torch.from_numpy(b1))
    expected = F.relu(F.conv2d(step1, torch.from_numpy(w2))).numpy()
    np.testing.assert_allclose(output, expected, rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)
    assert [step["op"] for step in result["steps"]] == ["conv2d", "conv2d"]


def test_mixed_binary_and_json_tensors(client: httpx.Client) -> None:
    rng = np.random.default_rng(5)
    x = random(rng, 1, 2, 6, 6)
    w = random(rng, 3, 2, 3, 3)
    header = {"input": binary_tensor(x), "weight": tensor_json(w, "json")}
    content, headers = framed(header, x)
    response = client.post("/v1/conv2d", content=content, headers=headers)
    assert response.status_code == 200, response.text
    _, output = unframe(response)
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(w)).numpy()
    np.testing.assert_allclose(output, expected, rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)


def test_output_encoding_overrides_binary_default(client: httpx.Client) -> None:
    rng = np.random.default_rng(6)
    x = random(rng, 1, 1, 5, 5)
    w = random(rng, 1, 1, 3, 3)
    for encoding, key in (("json", "data"), ("base64", "base64")):
        header = {
            "input": binary_tensor(x),
            "weight": binary_tensor(w),
            "output_encoding": encoding,
        }
        content, headers = framed(header, x, w)
        response = client.post("/v1/conv2d", content=content, headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        assert HEADER_LENGTH.lower() not in response.headers
        assert key in response.json()["output"]


def test_json_request_with_binary_output(client: httpx.Client) -> None:
    rng = np.random.default_rng(7)
    x = random(rng, 1, 2, 5, 5)
    w = random(rng, 2, 2, 3, 3)
    body = {"input": tensor_json(x), "weight": tensor_json(w), "output_encoding": "binary"}
    response = client.post("/v1/conv2d", json=body)
    assert response.status_code == 200, response.text
    _, output = unframe(response)
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(w)).numpy()
    np.testing.assert_allclose(output, expected, rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)


def test_zero_batch_binary(client: httpx.Client) -> None:
    x = np.zeros((0, 2, 5, 5), dtype=np.float32)
    w = np.ones((3, 2, 3, 3), dtype=np.float32)
    content, headers = framed({"input": binary_tensor(x), "weight": binary_tensor(w)}, x, w)
    response = client.post("/v1/conv2d", content=content, headers=headers)
    assert response.status_code == 200, response.text
    _, output = unframe(response)
    assert output.shape == (0, 3, 3, 3)


def test_plan_accepts_framed_body(client: httpx.Client) -> None:
    x = np.zeros((1, 2, 8, 8), dtype=np.float32)
    header = {"op": "conv2d", "input": binary_tensor(x), "weight": {"shape": [4, 2, 3, 3]}}
    content, headers = framed(header, x)
    response = client.post("/v1/plan", content=content, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["output_shape"] == [1, 4, 6, 6]


# ---------------------------------------------------------------------------------------------
# Framing errors


def conv_header(x: np.ndarray, w: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {"input": binary_tensor(x), "weight": binary_tensor(w), **extra}


X = np.ones((1, 1, 4, 4), dtype=np.float32)
W = np.ones((1, 1, 3, 3), dtype=np.float32)
X_BYTES = X.tobytes()
W_BYTES = W.tobytes()


def _header(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


@dataclass(frozen=True)
class FramingError:
    """A framed request that breaks the framing, and the error the server must return.

    ``length`` overrides the Inference-Header-Content-Length value, which is otherwise the
    length of ``header``.
    """

    label: str
    header: bytes
    binary: bytes
    status: int
    code: str
    field: str
    length: str | None = None


def with_input(**changes: Any) -> bytes:
    return _header({"input": {**binary_tensor(X), **changes}, "weight": binary_tensor(W)})


FRAMING_ERRORS = [
    FramingError(
        "length_not_integer",
        _header(conv_header(X, W)),
        X_BYTES + W_BYTES,
        400,
        "malformed_binary",
        HEADER_LENGTH,
        length="12abc",
    ),
    FramingError(
        "length_over_body",
        _header(conv_header(X, W)),
        X_BYTES + W_BYTES,
        400,
        "malformed_binary",
        HEADER_LENGTH,
        length="999999",
    ),
    FramingError("header_not_json", b"{not json", X_BYTES, 400, "malformed_json", "body"),
    FramingError("header_not_object", b"[1, 2]", X_BYTES, 400, "malformed_json", "body"),
    FramingError(
        "section_too_short",
        _header(conv_header(X, W)),
        X_BYTES,
        400,
        "malformed_binary",
        "weight.binary_data_size",
    ),
    FramingError(
        "unclaimed_bytes",
        _header(conv_header(X, W)),
        X_BYTES + W_BYTES + b"\0" * 8,
        400,
        "malformed_binary",
        "body",
    ),
    FramingError(
        "size_not_shape",
        with_input(binary_data_size=60),
        X_BYTES[:60] + W_BYTES,
        422,
        "shape_mismatch",
        "input.binary_data_size",
    ),
    FramingError(
        "size_negative",
        with_input(binary_data_size=-4),
        W_BYTES,
        422,
        "invalid_value",
        "input.binary_data_size",
    ),
    FramingError(
        "size_not_integer",
        with_input(binary_data_size="64"),
        X_BYTES + W_BYTES,
        422,
        "invalid_type",
        "input.binary_data_size",
    ),
    FramingError(
        "data_and_binary",
        with_input(data=[1.0] * 16),
        X_BYTES + W_BYTES,
        422,
        "invalid_value",
        "input",
    ),
]


@pytest.mark.parametrize("case", FRAMING_ERRORS, ids=[case.label for case in FRAMING_ERRORS])
def test_framing_error(client: httpx.Client, case: FramingError) -> None:
    length = case.length if case.length is not None else str(len(case.header))
    response = client.post(
        "/v1/conv2d", content=case.header + case.binary, headers={HEADER_LENGTH: length}
    )
    assert response.status_code == case.status, response.text
    error = response.json()["error"]
    assert error["code"] == case.code, error
    assert error["field"] == case.field, error
    assert error["message"]


def test_binary_size_without_header(client: httpx.Client) -> None:
    response = client.post("/v1/conv2d", json=conv_header(X, W))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "missing_field"
    assert error["field"] == "input.binary_data_size"
    assert HEADER_LENGTH in error["message"]


# ---------------------------------------------------------------------------------------------
# Diagnostic echo endpoints


def test_echo_returns_input_in_each_encoding(client: httpx.Client) -> None:
    rng = np.random.default_rng(8)
    x = random(rng, 1, 2, 3, 4)
    content, headers = framed({"input": binary_tensor(x)}, x)
    response = client.post("/v1/echo", content=content, headers=headers)
    assert response.status_code == 200, response.text
    _, output = unframe(response)
    np.testing.assert_array_equal(output, x)
    for encoding in ("json", "base64"):
        response = client.post("/v1/echo", json={"input": tensor_json(x, encoding)})
        assert response.status_code == 200, response.text
        assert response.json()["output"] == tensor_json(x, encoding)


def test_echo_raw_returns_body_unparsed(client: httpx.Client) -> None:
    content = b"\x00not json at all\xff"
    response = client.post("/v1/echo_raw", content=content)
    assert response.status_code == 200
    assert response.content == content


def test_echo_routes_hidden_from_openapi(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/echo" not in paths
    assert "/v1/echo_raw" not in paths
    assert "/v1/conv2d" in paths
