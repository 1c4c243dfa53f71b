"""The Open Inference Protocol (KServe v2) over HTTP: a second adapter over ``Engine.run``.

Each operation is a model with one version, ``1``. Its tensors are named inputs with the
``/v1`` field names (``input``, ``weight``, ``bias``, ``depthwise_weight``...), its settings
travel as request ``parameters`` and its result is the output ``output``. The protocol allows
only scalar parameters, so a string that starts with ``[`` or ``{`` is decoded as JSON, as in
``"stride": "[2, 2]"``, and a string that is a number becomes that number. Numbers, other
strings and booleans pass through as they are. Tensors
arrive as JSON ``data`` or in the binary tensor data extension (``clconv.api.binary``).

Errors are ``{"error": "message"}``. An unknown model or version gets 404, and a body or
tensor over a size limit 413. A missing or wrong API key gets 401 or 403, a compressed body
415, and every other client mistake 400. The server's side gets 500 for device
failures, 503 (with ``Retry-After``) when overloaded, and 504 when the work did not start
before the deadline.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from clconv import __version__
from clconv.api.binary import BinarySection, frame, require_object
from clconv.api.bodies import RequestBody, framed_response, json_response, read_body
from clconv.api.dispatch import check_declared_body, run_engine
from clconv.core.fields import describe
from clconv.core.tensors import RAW_BYTES_KEY
from clconv.engine import Engine
from clconv.errors import (
    ClconvError,
    ForbiddenError,
    RequestError,
    TooLargeError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
    ValidationError,
)
from clconv.settings import Settings

logger = logging.getLogger("clconv.api.v2")

MODEL_VERSION = "1"
PLATFORM = "clconv_opencl"
OUTPUT_NAME = "output"
DATATYPES = {"FP32": "float32", "FP64": "float64"}
V2_DATATYPES = {dtype: name for name, dtype in DATATYPES.items()}

# Each model's input tensors and their ranks. As in /v1, biases are optional, and
# spatially_separable_conv2d takes either the two factors or one ``weight``.
MODEL_INPUTS: dict[str, dict[str, int]] = {
    "conv2d": {"input": 4, "weight": 4, "bias": 1},
    "conv_transpose2d": {"input": 4, "weight": 4, "bias": 1},
    "depthwise_separable_conv2d": {
        "input": 4,
        "depthwise_weight": 4,
        "depthwise_bias": 1,
        "pointwise_weight": 4,
        "pointwise_bias": 1,
    },
    "spatially_separable_conv2d": {
        "input": 4,
        "vertical_weight": 4,
        "vertical_bias": 1,
        "horizontal_weight": 4,
        "horizontal_bias": 1,
        "weight": 4,
        "bias": 1,
    },
}
# A decimal number as a string: "2", "-0.5", "1e-3".
NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
# /v1 body keys that this adapter sets itself, so a request parameter may not.
ADAPTER_KEYS = {"input", "op", "output_encoding", "steps"}


class ModelNotFoundError(RequestError):
    status = 404
    code = "not_found"


# Client errors that keep their own status; the protocol turns every other one into 400.
KEPT_4XX_ERRORS = (
    ModelNotFoundError,
    TooLargeError,
    UnauthorizedError,
    ForbiddenError,
    UnsupportedMediaTypeError,
)


@dataclass
class InferRequest:
    """A decoded ``infer`` request: the ``/v1`` body and which outputs to send in binary."""

    id: str | None
    body: dict[str, Any]
    outputs: dict[str, bool]


def create_router(engine: Engine, settings: Settings) -> APIRouter:
    """Build the ``/v2`` routes over ``engine``."""
    router = APIRouter(prefix="/v2", tags=["Open Inference Protocol (v2)"])

    @router.get("", summary="Server metadata: name, version and protocol extensions")
    async def server_metadata() -> Response:
        return json_response(
            {"name": "clconv", "version": __version__, "extensions": ["binary_tensor_data"]}
        )

    @router.get("/health/live", summary="200 while the server process runs")
    async def live() -> Response:
        return json_response({"live": True})

    @router.get(
        "/health/ready",
        summary="200 once the common kernels are built, until shutdown; else 400 (as the "
        "protocol says)",
    )
    async def ready() -> Response:
        return json_response({"ready": engine.serving}, 200 if engine.serving else 400)

    async def model_metadata(request: Request, name: str, version: str | None = None) -> Response:
        try:
            check_model(name, version)
        except ClconvError as error:
            return error_response(request, error)
        return json_response(describe_model(name))

    async def model_ready(request: Request, name: str, version: str | None = None) -> Response:
        try:
            check_model(name, version)
        except ClconvError as error:
            return error_response(request, error)
        serving = engine.serving
        return json_response({"name": name, "ready": serving}, 200 if serving else 400)

    async def infer(request: Request, name: str, version: str | None = None) -> Response:
        try:
            check_model(name, version)
            request.state.operation = name
            check_declared_body(request, engine)
            received = await read_body(request, settings.max_body_bytes)
            inference = parse_infer_request(name, received)
            result = await run_engine(request, engine, name, inference.body)
        except ClconvError as error:
            return error_response(request, error)
        timings = result["timings_ms"]
        request.state.result = {key: result[key] for key in ("device", "algorithm", "timings_ms")}
        server_timing = ", ".join(f"{k};dur={v:.3f}" for k, v in timings.items())
        headers = {"Server-Timing": server_timing}
        # Writing a large output as a JSON list takes long enough to stall the event loop.
        response: Response = await run_in_threadpool(
            infer_response, name, inference, result, headers
        )
        return response

    for suffix in ("", "/versions/{version}"):
        base = "/models/{name}" + suffix
        router.add_api_route(base, model_metadata, methods=["GET"], summary="Model metadata")
        router.add_api_route(f"{base}/ready", model_ready, methods=["GET"], summary="Model ready")
        router.add_api_route(
            f"{base}/infer", infer, methods=["POST"], summary="Run the model's operation"
        )
    return router


def check_model(name: str, version: str | None) -> None:
    if name not in MODEL_INPUTS:
        raise ModelNotFoundError(
            f"model {name!r} not found; the models are {', '.join(MODEL_INPUTS)}", "model"
        )
    if version is not None and version != MODEL_VERSION:
        raise ModelNotFoundError(
            f"model {name} has no version {version!r}; the only version is {MODEL_VERSION}",
            "version",
        )


def describe_model(name: str) -> dict[str, Any]:
    """Return the model metadata; -1 marks a dynamic dimension, FP64 is accepted as well."""
    inputs = [
        {"name": tensor, "datatype": "FP32", "shape": [-1] * rank}
        for tensor, rank in MODEL_INPUTS[name].items()
    ]
    return {
        "name": name,
        "versions": [MODEL_VERSION],
        "platform": PLATFORM,
        "inputs": inputs,
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, -1, -1, -1]}],
    }


def error_response(request: Request, error: ClconvError) -> Response:
    """Log a rejected request and return ``{"error": message}`` with the protocol's status."""
    request_id = getattr(request.state, "request_id", None)
    log = logger.warning if error.status < 500 else logger.error
    log(
        "request %s %s rejected: %s %s (field %s): %s",
        request_id,
        request.url.path,
        error.status,
        error.code,
        error.field,
        error.message,
        extra={"request_id": request_id, "error_code": error.code},
    )
    status = error.status
    if 400 <= status < 500 and not isinstance(error, KEPT_4XX_ERRORS):
        status = 400
    message = error.message
    if error.field and error.field not in message:
        message = f"{message} (field {error.field})"
    return json_response({"error": message}, status, error.headers or None)


# ---------------------------------------------------------------------------------------------
# Requests


def parse_infer_request(model: str, received: RequestBody) -> InferRequest:
    """Turn a v2 ``infer`` request into a ``/v1`` body for ``Engine.run``."""
    header = require_object(received.body)
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ValidationError(f"id must be a string, got {describe(request_id)}", "id")
    body: dict[str, Any] = {"output_encoding": "binary"}
    body.update(_decode_inputs(model, header.get("inputs"), received.binary))
    binary_default = _decode_parameters(model, header.get("parameters"), body)
    outputs = _decode_outputs(header.get("outputs"), binary_default)
    return InferRequest(request_id, body, outputs)


def _decode_inputs(model: str, inputs: Any, binary: memoryview | None) -> dict[str, Any]:
    if not isinstance(inputs, list) or not inputs:
        raise ValidationError(
            f"inputs must be a non-empty list of tensors, got {describe(inputs)}", "inputs"
        )
    section = BinarySection(binary) if binary is not None else None
    tensors: dict[str, Any] = {}
    for index, item in enumerate(inputs):
        field = f"inputs[{index}]"
        if not isinstance(item, dict):
            raise ValidationError(f"{field} must be a tensor object, got {describe(item)}", field)
        name = item.get("name")
        if name not in MODEL_INPUTS[model]:
            raise ValidationError(
                f"{field}.name {name!r} is not an input of model {model}; its inputs are "
                f"{', '.join(MODEL_INPUTS[model])}",
                f"{field}.name",
            )
        if name in tensors:
            raise ValidationError(
                f"{field}.name {name!r} appears twice; send each input once", f"{field}.name"
            )
        tensors[name] = _decode_input(item, field, name, section)
    if section is not None:
        section.finish()
    return tensors


def _decode_input(
    item: dict[str, Any], field: str, name: str, section: BinarySection | None
) -> dict[str, Any]:
    datatype = item.get("datatype")
    if datatype not in DATATYPES:
        raise ValidationError(
            f"{field}.datatype of {name} is {datatype!r}, which is not supported; use "
            f"{' or '.join(DATATYPES)}",
            f"{field}.datatype",
        )
    tensor: dict[str, Any] = {"shape": item.get("shape"), "dtype": DATATYPES[datatype]}

    parameters = item.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ValidationError(
            f"{field}.parameters must be an object, got {describe(parameters)}",
            f"{field}.parameters",
        )
    if "binary_data_size" not in parameters:
        if "data" in item:
            tensor["data"] = item["data"]
        return tensor

    size_field = f"{field}.parameters.binary_data_size"
    if section is None:
        raise ValidationError(
            f"{size_field} is set for {name}, but the request has no binary section; send the "
            "Inference-Header-Content-Length header with the length of the JSON header",
            size_field,
        )
    if "data" in item:
        raise ValidationError(
            f"{field} ({name}) has both data and binary_data_size; send exactly one", field
        )
    # A view of the request body: the device upload is the first copy of these bytes.
    tensor[RAW_BYTES_KEY] = section.take(parameters["binary_data_size"], size_field)
    return tensor


def _decode_parameters(model: str, parameters: Any, body: dict[str, Any]) -> bool:
    """Copy the convolution settings into ``body``; return ``binary_data_output``."""
    if parameters is None:
        return False
    if not isinstance(parameters, dict):
        raise ValidationError(
            f"parameters must be an object, got {describe(parameters)}", "parameters"
        )
    binary_default = False
    for key, value in parameters.items():
        if key == "binary_data_output":
            if not isinstance(value, bool):
                raise ValidationError(
                    f"binary_data_output must be a boolean, got {describe(value)}", key
                )
            binary_default = value
            continue
        if key in MODEL_INPUTS[model] or key in ADAPTER_KEYS:
            raise ValidationError(
                f"parameter {key!r} is not a setting of model {model}; tensors go in inputs",
                key,
            )
        body[key] = _decode_parameter(key, value)
    return binary_default


def _decode_parameter(key: str, value: Any) -> Any:
    """Decode a number, list or object sent as a string; other values pass through unchanged.

    No setting takes a string that looks like a number, so ``"0.2"`` and ``"3"`` are numbers.
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    if NUMBER.fullmatch(text):
        return int(text) if text.lstrip("-").isdigit() else float(text)
    if text[:1] not in ("[", "{"):
        return value
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValidationError(
            f"parameter {key} {value!r} starts like JSON but is not valid JSON ({error}); send "
            'a list such as "[2, 2]", an object, or a plain value',
            key,
        ) from None


def _decode_outputs(outputs: Any, binary_default: bool) -> dict[str, bool]:
    if outputs is None:
        return {OUTPUT_NAME: binary_default}
    if not isinstance(outputs, list):
        raise ValidationError(f"outputs must be a list, got {describe(outputs)}", "outputs")
    requested: dict[str, bool] = {}
    for index, item in enumerate(outputs):
        field = f"outputs[{index}]"
        name = item.get("name") if isinstance(item, dict) else None
        if name != OUTPUT_NAME:
            raise ValidationError(
                f"{field}.name {name!r} is not an output; the only output is {OUTPUT_NAME!r}",
                f"{field}.name",
            )
        parameters = item.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ValidationError(
                f"{field}.parameters must be an object, got {describe(parameters)}",
                f"{field}.parameters",
            )
        unknown = sorted(set(parameters) - {"binary_data"})
        if unknown:
            raise ValidationError(
                f"{field}.parameters.{unknown[0]} is not supported; outputs take only binary_data",
                f"{field}.parameters.{unknown[0]}",
            )
        binary = parameters.get("binary_data", binary_default)
        if not isinstance(binary, bool):
            raise ValidationError(
                f"{field}.parameters.binary_data must be a boolean, got {describe(binary)}",
                f"{field}.parameters.binary_data",
            )
        requested[name] = binary
    return requested or {OUTPUT_NAME: binary_default}


# ---------------------------------------------------------------------------------------------
# Responses


def infer_response(
    model: str, inference: InferRequest, result: dict[str, Any], headers: dict[str, str]
) -> Response:
    """Encode the engine's result as a v2 response, framed when an output is binary."""
    output = result["output"]
    raw: npt.NDArray[np.uint8] = output[RAW_BYTES_KEY]
    entries: list[dict[str, Any]] = []
    buffers: list[npt.NDArray[np.uint8]] = []
    for name, binary in inference.outputs.items():
        entry: dict[str, Any] = {
            "name": name,
            "datatype": V2_DATATYPES[output["dtype"]],
            "shape": output["shape"],
        }
        if binary:
            entry["parameters"] = {"binary_data_size": raw.nbytes}
            buffers.append(raw)
        else:
            little_endian = np.dtype(output["dtype"]).newbyteorder("<")
            entry["data"] = raw.view(little_endian).tolist()
        entries.append(entry)
    response: dict[str, Any] = {"model_name": model, "model_version": MODEL_VERSION}
    if inference.id is not None:
        response["id"] = inference.id
    response["parameters"] = result_parameters(result)
    response["outputs"] = entries
    if buffers:
        content, header_length = frame(response, buffers)
        return framed_response(content, header_length, headers)
    return json_response(response, headers=headers)


def result_parameters(result: dict[str, Any]) -> dict[str, Any]:
    """Flatten the ``/v1`` report into scalar parameters; lists travel as JSON strings."""
    parameters: dict[str, Any] = {
        "device": result["device"]["id"],
        "device_name": result["device"]["name"],
        "algorithm": json.dumps(result["algorithm"]),
        "macs": result["macs"],
        "flops": result["flops"],
        "params": result["params"],
    }
    for name, value in result["timings_ms"].items():
        parameters[f"timing_{name}_ms"] = value
    parameters["kernels"] = json.dumps(result["kernels"])
    parameters["steps"] = json.dumps(result["steps"])
    return parameters
