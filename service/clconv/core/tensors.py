"""Tensor objects in JSON: decoding with validation, and encoding of results.

A tensor is ``{"shape": [...], "dtype": "float32", "data": [...]}`` (flat or nested, row-major)
or ``{"shape": [...], "dtype": "float32", "base64": "..."}`` (little-endian bytes, C order).
A request in the binary framing (``clconv.api.binary``) arrives as
``{"shape": [...], "dtype": "float32", "binary_data_size": n}``, and the API layer adds the
tensor's bytes under ``RAW_BYTES_KEY`` before ``decode_tensor`` runs.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from clconv.core.fields import describe
from clconv.errors import ValidationError

DTYPES: dict[str, np.dtype[Any]] = {
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
}
ENCODINGS = ("json", "base64", "binary")
# Internal key of a tensor object: a 1-D uint8 numpy array viewing the tensor's little-endian
# bytes. The binary framing sets it on requests and ``encode_tensor(..., "binary")`` on results.
# JSON cannot produce a numpy array, so a client cannot forge it.
RAW_BYTES_KEY = "_raw_bytes"


@dataclass(frozen=True)
class Tensor:
    """A decoded tensor: its shape and dtype, and its values unless only the shape was given."""

    shape: tuple[int, ...]
    dtype: str
    array: npt.NDArray[Any] | None
    encoding: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPES[self.dtype].itemsize


def decode_tensor(value: Any, field: str, *, allow_shape_only: bool = False) -> Tensor:
    """Decode and validate one tensor object; ``field`` names it in error messages."""
    if not isinstance(value, dict):
        raise ValidationError(
            f"{field} must be a tensor object {{'shape', 'dtype', 'data' or 'base64'}}, "
            f"got {describe(value)}",
            field,
            code="invalid_type",
        )
    shape = _decode_shape(value.get("shape"), f"{field}.shape")
    dtype = _decode_dtype(value.get("dtype", "float32"), f"{field}.dtype")
    has_data = "data" in value
    has_base64 = "base64" in value
    has_raw = RAW_BYTES_KEY in value
    if has_data + has_base64 + has_raw > 1:
        raise ValidationError(
            f"{field} has more than one of 'data', 'base64' and 'binary_data_size'; send "
            "exactly one of them",
            field,
        )
    if not has_data and not has_base64 and not has_raw:
        if allow_shape_only:
            return Tensor(shape, dtype, None, "json")
        if "binary_data_size" in value:
            raise ValidationError(
                f"{field} has binary_data_size, but the request has no binary section; send "
                "the Inference-Header-Content-Length header with the length of the JSON header",
                f"{field}.binary_data_size",
                code="missing_field",
            )
        raise ValidationError(
            f"{field} has no values; add 'data' (a list of numbers) or 'base64' "
            "(little-endian bytes)",
            f"{field}.data",
            code="missing_field",
        )
    if has_raw:
        array = _decode_raw_bytes(value[RAW_BYTES_KEY], shape, dtype, f"{field}.binary_data_size")
        return Tensor(shape, dtype, array, "binary")
    if has_base64:
        array = _decode_base64(value["base64"], shape, dtype, f"{field}.base64")
        return Tensor(shape, dtype, array, "base64")
    array = _decode_data(value["data"], shape, dtype, f"{field}.data")
    return Tensor(shape, dtype, array, "json")


def encode_tensor(array: npt.NDArray[Any], encoding: str) -> dict[str, Any]:
    """Encode a result array as a tensor object in ``json``, ``base64`` or ``binary`` encoding.

    A ``binary`` tensor carries ``binary_data_size`` and its bytes under ``RAW_BYTES_KEY``; the
    API layer moves those bytes into the binary section of the response.
    """
    body: dict[str, Any] = {"shape": list(array.shape), "dtype": str(array.dtype)}
    if encoding == "binary":
        little_endian = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        body["binary_data_size"] = little_endian.nbytes
        body[RAW_BYTES_KEY] = little_endian.reshape(-1).view(np.uint8)
    elif encoding == "base64":
        little_endian = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        body["base64"] = base64.b64encode(little_endian.tobytes()).decode("ascii")
    else:
        body["data"] = array.reshape(-1).tolist()
    return body


def _decode_shape(value: Any, field: str) -> tuple[int, ...]:
    if value is None:
        raise ValidationError(
            f"{field} is missing; give the tensor's dimensions as a list such as [1, 3, 32, 32]",
            field,
            code="missing_field",
        )
    if not isinstance(value, list):
        raise ValidationError(
            f"{field} must be a list of non-negative integers, got {describe(value)}",
            field,
            code="invalid_type",
        )
    for index, dim in enumerate(value):
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise ValidationError(
                f"{field}[{index}] must be a non-negative integer, got {describe(dim)}",
                field,
                code="invalid_type",
            )
        if dim < 0:
            raise ValidationError(
                f"{field}[{index}] must be >= 0, got {dim}; dimensions cannot be negative",
                field,
            )
    return tuple(value)


def _decode_dtype(value: Any, field: str) -> str:
    if not isinstance(value, str) or value not in DTYPES:
        raise ValidationError(
            f"{field} {value!r} is not supported; use one of {', '.join(DTYPES)}",
            field,
            code="unsupported_dtype",
        )
    return value


def _decode_base64(value: Any, shape: tuple[int, ...], dtype: str, field: str) -> npt.NDArray[Any]:
    if not isinstance(value, str):
        raise ValidationError(
            f"{field} must be a base64 string, got {describe(value)}", field, code="invalid_type"
        )
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValidationError(
            f"{field} is not valid base64 ({error}); encode the little-endian bytes with "
            "standard base64 (RFC 4648, with padding)",
            field,
        ) from None
    item = DTYPES[dtype].newbyteorder("<")
    expected = math.prod(shape) * item.itemsize
    if len(raw) != expected:
        raise ValidationError(
            f"{field} decodes to {len(raw)} bytes, but shape {list(shape)} of {dtype} needs "
            f"{expected}; send prod(shape) * {item.itemsize} bytes",
            field,
            code="shape_mismatch",
        )
    array = np.frombuffer(raw, dtype=item).reshape(shape)
    return array if item == DTYPES[dtype] else array.astype(DTYPES[dtype])


def _decode_raw_bytes(
    value: Any, shape: tuple[int, ...], dtype: str, field: str
) -> npt.NDArray[Any]:
    if not isinstance(value, np.ndarray) or value.dtype != np.uint8 or value.ndim != 1:
        raise ValidationError(
            f"{field.rsplit('.', 1)[0]}.{RAW_BYTES_KEY} is reserved for the binary framing; "
            "send 'data', 'base64' or 'binary_data_size' instead",
            field,
            code="invalid_type",
        )
    item = DTYPES[dtype].newbyteorder("<")
    expected = math.prod(shape) * item.itemsize
    if value.nbytes != expected:
        raise ValidationError(
            f"{field} is {value.nbytes} bytes, but shape {list(shape)} of {dtype} needs "
            f"{expected}; send prod(shape) * {item.itemsize} bytes",
            field,
            code="shape_mismatch",
        )
    # A view, not a copy: the values stay in the request body until the device upload.
    array = value.view(item).reshape(shape)
    return array if item == DTYPES[dtype] else array.astype(DTYPES[dtype])


def _decode_data(value: Any, shape: tuple[int, ...], dtype: str, field: str) -> npt.NDArray[Any]:
    if not isinstance(value, list):
        raise ValidationError(
            f"{field} must be a list of numbers (flat or nested), got {describe(value)}",
            field,
            code="invalid_type",
        )
    try:
        # No dtype here, so strings, None and ragged lists are caught below instead of cast.
        array = np.asarray(value)
    except ValueError:
        raise ValidationError(
            f"{field} is a ragged nested list; every row of a nested list must have the same "
            "length, or send a flat list",
            field,
            code="shape_mismatch",
        ) from None
    if array.dtype.kind not in "iuf" and array.size > 0:
        raise ValidationError(
            f"{field} must hold only numbers (NaN and Infinity allowed), got an entry "
            f"{describe(_first_non_number(value))}",
            field,
            code="invalid_type",
        )
    expected = math.prod(shape)
    if array.ndim > 1 and tuple(array.shape) != shape:
        raise ValidationError(
            f"{field} is nested as {list(array.shape)}, but shape is {list(shape)}; nest the "
            "list as the shape says, or send it flat",
            field,
            code="shape_mismatch",
        )
    if array.size != expected:
        raise ValidationError(
            f"{field} has {array.size} values, but shape {list(shape)} needs {expected}",
            field,
            code="shape_mismatch",
        )
    return np.ascontiguousarray(array, dtype=DTYPES[dtype]).reshape(shape)


def _first_non_number(value: Any) -> Any:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, bool) or not isinstance(item, int | float):
            return item
    return None
