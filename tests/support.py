"""Helpers shared by the tests: tensor encoding and the PyTorch oracle's tolerances."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

# Tolerances against PyTorch CPU: float32 sums of up to a few thousand products differ by
# reassociation only, so a relative bound scaled by the reduction length is enough.
FLOAT32_RTOL = 1e-4
FLOAT32_ATOL = 1e-4
FLOAT64_RTOL = 1e-10
FLOAT64_ATOL = 1e-10


def tensor_json(array: np.ndarray, encoding: str = "base64") -> dict[str, Any]:
    """Encode a numpy array as a clconv tensor object."""
    array = np.ascontiguousarray(array)
    body: dict[str, Any] = {"shape": list(array.shape), "dtype": str(array.dtype)}
    if encoding == "base64":
        body["base64"] = base64.b64encode(array.astype(array.dtype.newbyteorder("<")).tobytes())
        body["base64"] = body["base64"].decode("ascii")
    else:
        body["data"] = array.reshape(-1).tolist()
    return body


def tensor_from_json(body: dict[str, Any]) -> np.ndarray:
    """Decode a clconv tensor object into a numpy array."""
    dtype = np.dtype(body["dtype"]).newbyteorder("<")
    if "base64" in body:
        flat = np.frombuffer(base64.b64decode(body["base64"]), dtype=dtype)
    else:
        flat = np.asarray(body["data"], dtype=dtype).reshape(-1)
    return flat.reshape(body["shape"]).astype(dtype.newbyteorder("="))
