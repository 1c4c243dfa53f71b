"""The binary framing shared by ``/v1`` and ``/v2``: a JSON header followed by raw tensor bytes.

This is the binary tensor data extension of the Open Inference Protocol (KServe v2). A request
or response with the ``Inference-Header-Content-Length: L`` header carries ``L`` bytes of JSON
and then a binary section. Each tensor in the binary section has its byte count in
``binary_data_size``, and the tensors follow each other in the order the header names them.

Decoding copies no tensor: ``split_body`` keeps a memoryview of the body and ``BinarySection``
hands out ``np.frombuffer`` views of it, which ``decode_tensor`` reinterprets in place. The one
copy of an input on its way to the device is the OpenCL upload. Everything here is pure: no I/O
and no web framework.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from clconv.core.fields import describe, json_type
from clconv.core.tensors import RAW_BYTES_KEY
from clconv.errors import MalformedBodyError, ValidationError

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_MEDIA_TYPE = "application/octet-stream"
SIZE_KEY = "binary_data_size"


class MalformedBinaryError(MalformedBodyError):
    """400: the binary framing is inconsistent (header length, or the sizes of the tensors)."""

    code = "malformed_binary"


def parse_header_length(value: str, body_length: int) -> int:
    """Parse the ``Inference-Header-Content-Length`` header against the body's length."""
    text = value.strip()
    if not text.isdigit():
        raise MalformedBinaryError(
            f"{HEADER_LENGTH} must be a non-negative integer, got {value!r}; set it to the "
            "byte length of the JSON header",
            HEADER_LENGTH,
        )
    length = int(text)
    if length > body_length:
        raise MalformedBinaryError(
            f"{HEADER_LENGTH} is {length}, but the body has only {body_length} bytes; set it to "
            "the byte length of the JSON header at the start of the body",
            HEADER_LENGTH,
        )
    return length


def split_body(raw: bytes, header_length: int) -> tuple[Any, memoryview]:
    """Decode the JSON header of a framed body and return it with a view of the binary section."""
    try:
        header = json.loads(raw[:header_length])
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MalformedBodyError(
            f"the first {header_length} bytes of the body ({HEADER_LENGTH}) are not valid JSON "
            f"({error}); put the JSON header first and set {HEADER_LENGTH} to its byte length",
            "body",
        ) from None
    return header, memoryview(raw)[header_length:]


def parse_json_body(raw: bytes) -> Any:
    """Decode a body that is JSON only; ``json`` accepts ``NaN`` and ``Infinity``."""
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MalformedBodyError(
            f"the body is not valid JSON ({error}); send a JSON object with "
            "Content-Type: application/json",
            "body",
        ) from None


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise MalformedBodyError(
            f"the body must be a JSON object, got a JSON {json_type(body)}", "body"
        )
    return body


class BinarySection:
    """Hands out consecutive slices of a binary section as uint8 arrays that share its memory."""

    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.offset = 0

    def take(self, size: Any, field: str) -> npt.NDArray[np.uint8]:
        """Return the next ``size`` bytes; ``field`` names the ``binary_data_size`` at fault."""
        if isinstance(size, bool) or not isinstance(size, int):
            raise ValidationError(
                f"{field} must be a byte count (a non-negative integer), got {describe(size)}",
                field,
                code="invalid_type",
            )
        if size < 0:
            raise ValidationError(f"{field} must be >= 0, got {size}", field)
        end = self.offset + size
        if end > len(self.data):
            raise MalformedBinaryError(
                f"{field} is {size}, but only {len(self.data) - self.offset} bytes of the binary "
                f"section are left after the tensors before it (the section has "
                f"{len(self.data)} bytes); tensors must follow each other in header order",
                field,
            )
        view = np.frombuffer(self.data, dtype=np.uint8, count=size, offset=self.offset)
        self.offset = end
        return view

    def finish(self) -> None:
        """Reject bytes that no tensor claimed, which means the sizes or the order are wrong."""
        left = len(self.data) - self.offset
        if left:
            raise MalformedBinaryError(
                f"the binary section has {len(self.data)} bytes, but the header's "
                f"binary_data_size values add up to {self.offset}; {left} bytes are unclaimed",
                "body",
            )


def attach_binary_tensors(header: Any, binary: memoryview) -> int:
    """Give every tensor object with ``binary_data_size`` its bytes; return how many there were.

    Tensors take their bytes in document order, depth first, which is the order ``json.loads``
    keeps: ``input``, then ``weight``, then the steps of a pipeline in turn.
    """
    section = BinarySection(binary)
    count = 0
    for tensor, field in _sized_objects(header, ""):
        size_field = f"{field}.{SIZE_KEY}" if field else SIZE_KEY
        tensor[RAW_BYTES_KEY] = section.take(tensor[SIZE_KEY], size_field)
        count += 1
    section.finish()
    return count


def _sized_objects(value: Any, field: str) -> Iterator[tuple[dict[str, Any], str]]:
    if isinstance(value, dict):
        if SIZE_KEY in value:
            yield value, field
            return
        for key, item in value.items():
            # Tensor values are lists of numbers, so there is nothing to find inside them.
            if key != "data" and isinstance(item, dict | list):
                yield from _sized_objects(item, f"{field}.{key}" if field else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, dict | list):
                yield from _sized_objects(item, f"{field}[{index}]")


def has_binary_tensors(body: Any) -> bool:
    """Report whether a decoded body (a response) contains a tensor with bytes to send raw."""
    return any(RAW_BYTES_KEY in tensor for tensor, _ in _sized_objects(body, ""))


def frame_response(body: Any) -> tuple[bytes, int]:
    """Move every tensor's ``RAW_BYTES_KEY`` bytes into a binary section after the JSON header.

    Return the framed body and the header length for ``Inference-Header-Content-Length``. Each
    tensor keeps its ``binary_data_size`` in the header.
    """
    buffers: list[npt.NDArray[np.uint8]] = []
    for tensor, _ in _sized_objects(body, ""):
        raw = tensor.pop(RAW_BYTES_KEY, None)
        if raw is not None:
            buffers.append(raw)
    return frame(body, buffers)


def frame(header: Any, buffers: list[npt.NDArray[np.uint8]]) -> tuple[bytes, int]:
    """Serialise ``header`` as JSON and append ``buffers``; return the body and header length.

    The join copies each buffer once. Streaming the buffers instead would save that copy, but
    ASGI servers expect ``bytes`` bodies.
    """
    encoded = json.dumps(header, allow_nan=True, separators=(",", ":")).encode()
    parts: list[bytes | memoryview] = [encoded, *(buffer.data for buffer in buffers)]
    return b"".join(parts), len(encoded)
