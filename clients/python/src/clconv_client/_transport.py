"""Request and response bodies: tensors as JSON lists, base64 or a binary frame.

A request body is built as plain JSON values with numpy arrays (and ``TensorSpec`` shapes) in
place of tensors. ``encode_body`` replaces each array with a clconv tensor object:

- ``json``: ``{"shape", "dtype", "data": [flat list]}``;
- ``base64``: ``{"shape", "dtype", "base64": "<little-endian C-order bytes>"}``;
- ``binary``: ``{"shape", "dtype", "binary_data_size": nbytes}`` in a JSON header, followed by
  the raw bytes of every such tensor, in the order the tensors appear in the header (depth-first,
  document order). The header's byte length travels in ``Inference-Header-Content-Length``.

``decode_body`` reverses this for responses, framed or not, and returns numpy arrays in native
byte order.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from clconv_client._exceptions import ResponseDecodeError

Encoding = Literal["binary", "base64", "json"]
ENCODINGS: tuple[str, ...] = ("binary", "base64", "json")
HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_CONTENT_TYPE = "application/octet-stream"
JSON_CONTENT_TYPE = "application/json"


@dataclass(frozen=True)
class TensorSpec:
    """A tensor's shape and dtype without values, as ``POST /v1/plan`` accepts."""

    shape: tuple[int, ...]
    dtype: str = "float32"

    def to_json(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class EncodedBody:
    """Bytes ready to send, with the headers that describe them."""

    content: bytes
    headers: dict[str, str]


def check_encoding(encoding: str) -> Encoding:
    """Return ``encoding`` if it is one of ``binary``, ``base64``, ``json``; else raise."""
    if encoding not in ENCODINGS:
        raise ValueError(f"transport must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
    return encoding  # type: ignore[return-value]


def _little_endian(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))


def encode_body(body: Mapping[str, Any], encoding: Encoding) -> EncodedBody:
    """Serialise ``body``, turning numpy arrays into tensor objects in the given encoding."""
    chunks: list[bytes] = []

    def convert(value: Any) -> Any:
        if isinstance(value, TensorSpec):
            return value.to_json()
        if isinstance(value, np.ndarray):
            return _encode_array(value, encoding, chunks)
        if isinstance(value, Mapping):
            return {key: convert(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [convert(item) for item in value]
        return value

    header = json.dumps(convert(body), allow_nan=True, separators=(",", ":")).encode("utf-8")
    if encoding != "binary" or not chunks:
        return EncodedBody(header, {"Content-Type": JSON_CONTENT_TYPE})
    headers = {"Content-Type": BINARY_CONTENT_TYPE, HEADER_LENGTH: str(len(header))}
    return EncodedBody(b"".join([header, *chunks]), headers)


def _encode_array(array: np.ndarray, encoding: Encoding, chunks: list[bytes]) -> dict[str, Any]:
    tensor: dict[str, Any] = {"shape": list(array.shape), "dtype": array.dtype.name}
    if encoding == "json":
        tensor["data"] = array.reshape(-1).tolist()
        return tensor
    raw = _little_endian(array).tobytes()
    if encoding == "base64":
        tensor["base64"] = base64.b64encode(raw).decode("ascii")
    else:
        tensor["binary_data_size"] = len(raw)
        chunks.append(raw)
    return tensor


def decode_body(content: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
    """Parse a response body; every tensor object with values becomes a numpy array."""
    declared = headers.get(HEADER_LENGTH)
    if declared is None:
        header_bytes, binary = content, b""
    else:
        length = _parse_header_length(declared, len(content))
        header_bytes, binary = content[:length], content[length:]

    try:
        document = json.loads(header_bytes)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ResponseDecodeError(f"the response body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise ResponseDecodeError(
            f"the response body must be a JSON object, got {type(document).__name__}"
        )

    offset = 0

    def convert(value: Any) -> Any:
        nonlocal offset
        if isinstance(value, dict):
            if _is_tensor(value):
                array, offset = _decode_tensor(value, binary, offset)
                return array
            return {key: convert(item) for key, item in value.items()}
        if isinstance(value, list):
            return [convert(item) for item in value]
        return value

    decoded: dict[str, Any] = convert(document)
    if offset != len(binary):
        sizes = (
            f"the binary section holds {len(binary)} bytes but the header's tensors use {offset}"
        )
        raise ResponseDecodeError(f"{sizes}, so the response framing is inconsistent")
    return decoded


def _parse_header_length(declared: str, total: int) -> int:
    if not declared.strip().isdigit() or int(declared) > total:
        limit = f"a byte count within the {total}-byte body"
        raise ResponseDecodeError(f"{HEADER_LENGTH} is {declared!r}, which is not {limit}")
    return int(declared)


def _is_tensor(value: dict[str, Any]) -> bool:
    if "shape" not in value or "dtype" not in value:
        return False
    return any(key in value for key in ("data", "base64", "binary_data_size"))


def _decode_tensor(tensor: dict[str, Any], binary: bytes, offset: int) -> tuple[np.ndarray, int]:
    try:
        dtype = np.dtype(tensor["dtype"]).newbyteorder("<")
        shape = tuple(int(size) for size in tensor["shape"])
    except (TypeError, ValueError) as error:
        raise ResponseDecodeError(
            f"a response tensor has an invalid dtype or shape: {error}"
        ) from None

    if "binary_data_size" in tensor:
        size = int(tensor["binary_data_size"])
        if offset + size > len(binary):
            needed = f"bytes {offset}..{offset + size}"
            message = f"a response tensor needs {needed} of a {len(binary)}-byte binary section"
            raise ResponseDecodeError(message)
        flat = np.frombuffer(binary, dtype=dtype, count=size // dtype.itemsize, offset=offset)
        offset += size
    elif "base64" in tensor:
        flat = np.frombuffer(base64.b64decode(tensor["base64"]), dtype=dtype)
    else:
        flat = np.asarray(tensor["data"], dtype=dtype).reshape(-1)

    if flat.size != int(np.prod(shape)):
        raise ResponseDecodeError(
            f"a response tensor of shape {list(shape)} carries {flat.size} values"
        )
    # astype copies, so the array owns writable memory in native byte order.
    return flat.reshape(shape).astype(dtype.newbyteorder("=")), offset
