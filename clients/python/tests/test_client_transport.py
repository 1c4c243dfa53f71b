"""Tensor encodings and the binary framing, without a server."""

from __future__ import annotations

import base64
import json

import clconv_client
import numpy as np
import pytest
from clconv_client._transport import HEADER_LENGTH, TensorSpec, decode_body, encode_body


def split_frame(content: bytes, headers: dict[str, str]) -> tuple[dict[str, object], bytes]:
    length = int(headers[HEADER_LENGTH])
    return json.loads(content[:length]), content[length:]


def test_binary_frame_order_is_document_order() -> None:
    x = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
    first = np.full((2, 1, 1, 1), 7.0, np.float32)
    second = np.full((1, 2, 1, 1), 8.0, np.float32)
    body = {
        "input": x,
        "steps": [{"op": "conv2d", "weight": first}, {"op": "conv2d", "weight": second}],
        "output_encoding": "binary",
    }
    encoded = encode_body(body, "binary")
    header, binary = split_frame(encoded.content, encoded.headers)
    assert encoded.headers["Content-Type"] == "application/octet-stream"
    assert header["input"] == {"shape": [1, 1, 2, 3], "dtype": "float32", "binary_data_size": 24}
    assert binary == x.tobytes() + first.tobytes() + second.tobytes()


def test_binary_big_endian_input_sent_little_endian() -> None:
    x = np.arange(4, dtype=">f8").reshape(1, 1, 2, 2)
    encoded = encode_body({"input": x}, "binary")
    _, binary = split_frame(encoded.content, encoded.headers)
    assert binary == x.astype("<f8").tobytes()


def test_non_contiguous_input() -> None:
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)[:, :, ::2, ::2]
    encoded = encode_body({"input": x}, "base64")
    tensor = json.loads(encoded.content)["input"]
    assert base64.b64decode(tensor["base64"]) == np.ascontiguousarray(x).tobytes()


def test_json_encoding_keeps_nan() -> None:
    x = np.array([[[[np.nan, np.inf, -np.inf, 1.5]]]], np.float32)
    encoded = encode_body({"input": x}, "json")
    assert encoded.headers == {"Content-Type": "application/json"}
    decoded = json.loads(encoded.content)
    assert decoded["input"]["data"][3] == 1.5
    assert np.isnan(decoded["input"]["data"][0])


def test_shape_only_tensor() -> None:
    encoded = encode_body({"input": TensorSpec((1, 3, 8, 8))}, "binary")
    assert HEADER_LENGTH not in encoded.headers
    assert json.loads(encoded.content) == {"input": {"shape": [1, 3, 8, 8], "dtype": "float32"}}


@pytest.mark.parametrize("encoding", ["binary", "base64", "json"])
def test_round_trip(encoding: str) -> None:
    output = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    encoded = encode_body({"op": "conv2d", "output": output}, encoding)  # type: ignore[arg-type]
    decoded = decode_body(encoded.content, encoded.headers)
    assert decoded["op"] == "conv2d"
    assert decoded["output"].dtype == np.float64
    np.testing.assert_array_equal(decoded["output"], output)
    assert decoded["output"].flags.writeable


def test_decode_rejects_unclaimed_bytes() -> None:
    header = json.dumps({"output": {"shape": [1], "dtype": "float32", "binary_data_size": 4}})
    content = header.encode() + b"\0" * 8
    with pytest.raises(clconv_client.ResponseDecodeError, match="inconsistent"):
        decode_body(content, {HEADER_LENGTH: str(len(header))})


def test_decode_rejects_short_section() -> None:
    header = json.dumps({"output": {"shape": [4], "dtype": "float32", "binary_data_size": 16}})
    content = header.encode() + b"\0" * 4
    with pytest.raises(clconv_client.ResponseDecodeError, match="binary section"):
        decode_body(content, {HEADER_LENGTH: str(len(header))})


def test_decode_rejects_bad_header_length() -> None:
    with pytest.raises(clconv_client.ResponseDecodeError, match=HEADER_LENGTH):
        decode_body(b"{}", {HEADER_LENGTH: "abc"})


def test_decode_rejects_non_json() -> None:
    with pytest.raises(clconv_client.ResponseDecodeError, match="not valid JSON"):
        decode_body(b"<html>", {})


def test_unknown_transport_rejected() -> None:
    with pytest.raises(ValueError, match="transport must be one of"):
        clconv_client.Client(transport="msgpack")  # type: ignore[arg-type]


def test_invalid_timeout_rejected() -> None:
    with pytest.raises(ValueError, match="timeout"):
        clconv_client.Client(timeout=0)
