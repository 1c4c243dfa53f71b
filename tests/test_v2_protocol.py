"""The Open Inference Protocol (KServe v2) routes, called through NVIDIA's ``tritonclient``.

Every operation runs as a model with binary and JSON tensors and is compared with PyTorch.
Health, metadata and error cases use the client's own calls. A few checks that the client
cannot express (error bodies, version paths) use ``httpx`` directly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from support import FLOAT32_ATOL, FLOAT32_RTOL, FLOAT64_ATOL, FLOAT64_RTOL

MODELS = (
    "conv2d",
    "conv_transpose2d",
    "depthwise_separable_conv2d",
    "spatially_separable_conv2d",
)
TIMINGS = ("queue", "upload", "compute", "download", "total")


@pytest.fixture(scope="session")
def triton_client(server_url: str) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(url=server_url.removeprefix("http://"))
    yield client
    client.close()


def make_input(name: str, array: np.ndarray, *, binary: bool = True) -> triton.InferInput:
    datatype = {"float32": "FP32", "float64": "FP64"}[str(array.dtype)]
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def infer(
    client: triton.InferenceServerClient,
    model: str,
    arrays: dict[str, np.ndarray],
    parameters: dict[str, Any] | None = None,
    *,
    binary_inputs: bool = True,
    binary_output: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Run ``model`` and return its output and the whole response header."""
    inputs = [make_input(name, a, binary=binary_inputs) for name, a in arrays.items()]
    outputs = [triton.InferRequestedOutput("output", binary_data=binary_output)]
    result = client.infer(model, inputs, outputs=outputs, parameters=parameters)
    output = result.as_numpy("output")
    assert output is not None
    return output, result.get_response()


def random_arrays(shapes: dict[str, tuple[int, ...]], dtype: str = "float32") -> dict[str, Any]:
    rng = np.random.default_rng(sum(map(len, shapes)))
    return {name: rng.standard_normal(shape).astype(dtype) for name, shape in shapes.items()}


def torch_args(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(a) for name, a in arrays.items()}


def tolerances(dtype: str) -> dict[str, float]:
    if dtype == "float64":
        return {"rtol": FLOAT64_RTOL, "atol": FLOAT64_ATOL}
    return {"rtol": FLOAT32_RTOL, "atol": FLOAT32_ATOL}


Reference = Callable[[dict[str, torch.Tensor]], torch.Tensor]

# model, input shapes, request parameters, PyTorch reference
MODEL_CASES: list[tuple[str, dict[str, tuple[int, ...]], dict[str, Any], Reference]] = [
    (
        "conv2d",
        {"input": (2, 4, 11, 9), "weight": (6, 2, 3, 3), "bias": (6,)},
        {"stride": "[2, 1]", "padding": 2, "dilation": 2, "groups": 2, "activation": "relu"},
        lambda t: F.relu(
            F.conv2d(
                t["input"], t["weight"], t["bias"], stride=(2, 1), padding=2, dilation=2, groups=2
            )
        ),
    ),
    (
        "conv2d",
        {"input": (1, 3, 8, 8), "weight": (2, 3, 3, 3)},
        {
            "padding": "same",
            "padding_mode": "reflect",
            "activation": '{"name": "leaky_relu", "negative_slope": 0.2}',
        },
        lambda t: F.leaky_relu(
            F.conv2d(F.pad(t["input"], (1, 1, 1, 1), mode="reflect"), t["weight"]), 0.2
        ),
    ),
    (
        "conv_transpose2d",
        {"input": (1, 4, 5, 6), "weight": (4, 3, 3, 3), "bias": (3,)},
        {"stride": 2, "padding": 1, "output_size": "[10, 12]"},
        lambda t: F.conv_transpose2d(
            t["input"], t["weight"], t["bias"], stride=2, padding=1, output_padding=1
        ),
    ),
    (
        "depthwise_separable_conv2d",
        {
            "input": (1, 3, 9, 9),
            "depthwise_weight": (6, 1, 3, 3),
            "depthwise_bias": (6,),
            "pointwise_weight": (5, 6, 1, 1),
            "pointwise_bias": (5,),
        },
        {"stride": 2, "padding": 1, "depthwise_activation": "relu6"},
        lambda t: F.conv2d(
            F.relu6(
                F.conv2d(
                    t["input"],
                    t["depthwise_weight"],
                    t["depthwise_bias"],
                    stride=2,
                    padding=1,
                    groups=3,
                )
            ),
            t["pointwise_weight"],
            t["pointwise_bias"],
        ),
    ),
    (
        "spatially_separable_conv2d",
        {
            "input": (1, 2, 10, 8),
            "vertical_weight": (3, 2, 5, 1),
            "horizontal_weight": (4, 3, 1, 3),
            "horizontal_bias": (4,),
        },
        {"padding": "[2, 1]"},
        lambda t: F.conv2d(
            F.conv2d(t["input"], t["vertical_weight"], padding=(2, 0)),
            t["horizontal_weight"],
            t["horizontal_bias"],
            padding=(0, 1),
        ),
    ),
]


@pytest.mark.parametrize(
    ("model", "shapes", "parameters", "reference"),
    MODEL_CASES,
    ids=[f"{case[0]}-{index}" for index, case in enumerate(MODEL_CASES)],
)
def test_model_matches_pytorch(
    triton_client: triton.InferenceServerClient,
    device_id: str,
    devices: dict[str, Any],
    model: str,
    shapes: dict[str, tuple[int, ...]],
    parameters: dict[str, Any],
    reference: Reference,
) -> None:
    dtypes = ["float32", "float64"] if devices[device_id]["fp64"] else ["float32"]
    for dtype in dtypes:
        arrays = random_arrays(shapes, dtype)
        output, response = infer(triton_client, model, arrays, {**parameters, "device": device_id})
        expected = reference(torch_args(arrays)).numpy()
        assert output.dtype == np.dtype(dtype)
        np.testing.assert_allclose(output, expected, **tolerances(dtype))
        assert response["model_name"] == model
        assert response["outputs"][0]["datatype"] == ("FP64" if dtype == "float64" else "FP32")
        assert response["parameters"]["device"] == device_id


def test_spatially_separable_factors_single_weight(
    triton_client: triton.InferenceServerClient,
) -> None:
    rng = np.random.default_rng(11)
    column = rng.standard_normal((2, 1, 3, 1))
    row = rng.standard_normal((2, 1, 1, 3))
    weight = (column * row).astype(np.float32)  # rank 1 per 2-D slice: a separable kernel
    x = rng.standard_normal((1, 1, 7, 7)).astype(np.float32)
    output, _ = infer(
        triton_client,
        "spatially_separable_conv2d",
        {"input": x, "weight": weight},
        {"padding": 1, "tolerance": "1e-3"},
    )
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(weight), padding=1).numpy()
    np.testing.assert_allclose(output, expected, rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)


def test_json_tensors_both_ways(triton_client: triton.InferenceServerClient) -> None:
    arrays = random_arrays({"input": (1, 2, 6, 7), "weight": (3, 2, 3, 3), "bias": (3,)})
    output, response = infer(
        triton_client,
        "conv2d",
        arrays,
        {"padding": 1},
        binary_inputs=False,
        binary_output=False,
    )
    tensors = torch_args(arrays)
    expected = F.conv2d(tensors["input"], tensors["weight"], tensors["bias"], padding=1).numpy()
    np.testing.assert_allclose(output, expected, rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)
    assert "data" in response["outputs"][0]
    assert "binary_data_size" not in response["outputs"][0].get("parameters", {})


def test_binary_data_output_default(triton_client: triton.InferenceServerClient) -> None:
    # Without requested outputs, tritonclient sets the binary_data_output request parameter.
    arrays = random_arrays({"input": (1, 1, 5, 5), "weight": (1, 1, 3, 3)})
    inputs = [make_input(name, a) for name, a in arrays.items()]
    result = triton_client.infer("conv2d", inputs)
    output = result.as_numpy("output")
    assert output is not None
    tensors = torch_args(arrays)
    expected = F.conv2d(tensors["input"], tensors["weight"]).numpy()
    np.testing.assert_allclose(output, expected, rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)
    assert result.get_response()["outputs"][0]["parameters"]["binary_data_size"] == output.nbytes


def test_plain_int_and_json_string_parameters_agree(
    triton_client: triton.InferenceServerClient,
) -> None:
    arrays = random_arrays({"input": (1, 2, 9, 9), "weight": (2, 2, 3, 3)})
    as_int, _ = infer(triton_client, "conv2d", arrays, {"stride": 2, "padding": 1})
    as_json, _ = infer(triton_client, "conv2d", arrays, {"stride": "[2, 2]", "padding": "[1, 1]"})
    np.testing.assert_array_equal(as_int, as_json)

    leaky = {"activation": "leaky_relu", "negative_slope": 0.3}
    as_float, _ = infer(triton_client, "conv2d", arrays, leaky)
    as_string, _ = infer(triton_client, "conv2d", arrays, {**leaky, "negative_slope": "0.3"})
    np.testing.assert_array_equal(as_float, as_string)
    assert (as_float < 0).any()


def test_response_reports_timings_and_request_id(
    triton_client: triton.InferenceServerClient, client: httpx.Client
) -> None:
    arrays = random_arrays({"input": (1, 2, 6, 6), "weight": (3, 2, 3, 3), "bias": (3,)})
    inputs = [make_input(name, a) for name, a in arrays.items()]
    outputs = [triton.InferRequestedOutput("output", binary_data=True)]
    result = triton_client.infer("conv2d", inputs, outputs=outputs, request_id="req-7")
    response = result.get_response()
    assert response["id"] == "req-7"
    assert response["model_version"] == "1"
    parameters = response["parameters"]
    for name in TIMINGS:
        assert parameters[f"timing_{name}_ms"] >= 0
    assert parameters["timing_compute_ms"] > 0
    shapes = {name: {"shape": list(a.shape), "dtype": "float32"} for name, a in arrays.items()}
    plan = client.post("/v1/plan", json={"op": "conv2d", **shapes}).json()
    assert json.loads(parameters["algorithm"]) == plan["algorithm"]
    macs = 3 * 4 * 4 * 2 * 3 * 3
    assert parameters["macs"] == macs
    assert parameters["flops"] == 2 * macs + 3 * 4 * 4
    assert parameters["params"] == 3 * 2 * 3 * 3 + 3
    kernels = json.loads(parameters["kernels"])
    assert kernels
    assert all(kernel["ms"] >= 0 for kernel in kernels)


# ---------------------------------------------------------------------------------------------
# Health and metadata


def test_server_health(triton_client: triton.InferenceServerClient) -> None:
    assert triton_client.is_server_live()
    assert triton_client.is_server_ready()


def test_server_metadata(triton_client: triton.InferenceServerClient) -> None:
    metadata = triton_client.get_server_metadata()
    assert metadata["name"] == "clconv"
    assert metadata["version"]
    assert "binary_tensor_data" in metadata["extensions"]


@pytest.mark.parametrize("model", MODELS)
def test_model_ready_and_metadata(triton_client: triton.InferenceServerClient, model: str) -> None:
    assert triton_client.is_model_ready(model)
    assert triton_client.is_model_ready(model, model_version="1")
    metadata = triton_client.get_model_metadata(model)
    assert metadata["name"] == model
    assert metadata["versions"] == ["1"]
    inputs = {tensor["name"]: tensor for tensor in metadata["inputs"]}
    assert inputs["input"] == {"name": "input", "datatype": "FP32", "shape": [-1, -1, -1, -1]}
    for tensor in metadata["inputs"]:
        assert tensor["datatype"] == "FP32"
        assert set(tensor["shape"]) == {-1}
    assert metadata["outputs"] == [
        {"name": "output", "datatype": "FP32", "shape": [-1, -1, -1, -1]}
    ]
    assert triton_client.get_model_metadata(model, model_version="1") == metadata


def test_model_metadata_names_inputs(triton_client: triton.InferenceServerClient) -> None:
    names = [t["name"] for t in triton_client.get_model_metadata("conv2d")["inputs"]]
    assert names == ["input", "weight", "bias"]
    metadata = triton_client.get_model_metadata("depthwise_separable_conv2d")
    names = [t["name"] for t in metadata["inputs"]]
    assert names == [
        "input",
        "depthwise_weight",
        "depthwise_bias",
        "pointwise_weight",
        "pointwise_bias",
    ]


# ---------------------------------------------------------------------------------------------
# Errors


def client_error(call: Callable[[], Any]) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


def test_unknown_model_not_found(triton_client: triton.InferenceServerClient) -> None:
    assert not triton_client.is_model_ready("conv3d")
    error = client_error(lambda: triton_client.get_model_metadata("conv3d"))
    assert error.status() == "404"
    assert "conv3d" in error.message()
    arrays = random_arrays({"input": (1, 1, 4, 4), "weight": (1, 1, 3, 3)})
    error = client_error(lambda: infer(triton_client, "conv3d", arrays))
    assert error.status() == "404"


def test_unknown_version_not_found(triton_client: triton.InferenceServerClient) -> None:
    assert not triton_client.is_model_ready("conv2d", model_version="2")
    error = client_error(lambda: triton_client.get_model_metadata("conv2d", model_version="2"))
    assert error.status() == "404"
    assert "version" in error.message()


BAD_PARAMETERS = [
    # parameters, text the message must contain
    ({"stride": 0}, "stride"),
    ({"stride": "[2,"}, "stride"),
    ({"stride": "2.5"}, "stride"),
    ({"negative_slope": "steep", "activation": "leaky_relu"}, "negative_slope"),
    ({"padding": "sideways"}, "padding"),
    ({"groups": 5}, "groups"),
    ({"activation": "swish"}, "activation"),
    ({"dilation": '{"h": 2}'}, "dilation"),
    ({"no_such_setting": 1}, "no_such_setting"),
    ({"weight": "[1]"}, "weight"),
]


@pytest.mark.parametrize(
    ("parameters", "named"),
    BAD_PARAMETERS,
    ids=[row[1] + str(i) for i, row in enumerate(BAD_PARAMETERS)],
)
def test_bad_parameter_rejected(
    triton_client: triton.InferenceServerClient, parameters: dict[str, Any], named: str
) -> None:
    arrays = random_arrays({"input": (1, 2, 6, 6), "weight": (2, 2, 3, 3)})
    error = client_error(lambda: infer(triton_client, "conv2d", arrays, parameters))
    assert error.status() == "400"
    assert named in error.message()


def test_bad_tensors_rejected(triton_client: triton.InferenceServerClient) -> None:
    rng = np.random.default_rng(12)
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    w = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)

    unknown = [make_input("input", x), make_input("kernel", w)]
    error = client_error(lambda: triton_client.infer("conv2d", unknown))
    assert error.status() == "400"
    assert "kernel" in error.message()

    half = triton.InferInput("weight", list(w.shape), "FP16")
    half.set_data_from_numpy(w.astype(np.float16), binary_data=True)
    error = client_error(lambda: triton_client.infer("conv2d", [make_input("input", x), half]))
    assert error.status() == "400"
    assert "FP16" in error.message()

    mixed = [make_input("input", x), make_input("weight", w.astype(np.float64))]
    error = client_error(lambda: triton_client.infer("conv2d", mixed))
    assert error.status() == "400"
    assert "weight" in error.message()

    missing = [make_input("input", x)]
    error = client_error(lambda: triton_client.infer("conv2d", missing))
    assert error.status() == "400"
    assert "weight" in error.message()

    mismatched = [make_input("input", x), make_input("weight", w[:, :1])]
    error = client_error(lambda: triton_client.infer("conv2d", mismatched))
    assert error.status() == "400"
    assert "weight" in error.message()


def test_error_body_is_a_string(client: httpx.Client) -> None:
    body = {
        "inputs": [
            {"name": "input", "shape": [1, 1, 3, 3], "datatype": "FP32", "data": [0.0] * 9},
            {"name": "weight", "shape": [1, 1, 3, 3], "datatype": "FP32", "data": [0.0] * 9},
        ],
        "parameters": {"binary_data_output": "yes"},
    }
    response = client.post("/v2/models/conv2d/infer", json=body)
    assert response.status_code == 400
    assert isinstance(response.json()["error"], str)
    assert "binary_data_output" in response.json()["error"]

    body["parameters"] = {"priority": 1}
    response = client.post("/v2/models/conv2d/infer", json=body)
    assert response.status_code == 400
    assert "priority" in response.json()["error"]

    response = client.post("/v2/models/nope/infer", json=body)
    assert response.status_code == 404
    assert set(response.json()) == {"error"}

    response = client.post("/v2/models/conv2d/infer", content=b"{not json")
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]


def test_binary_size_mismatch_rejected(client: httpx.Client) -> None:
    header = {
        "inputs": [
            {
                "name": "input",
                "shape": [1, 1, 3, 3],
                "datatype": "FP32",
                "parameters": {"binary_data_size": 36},
            },
            {
                "name": "weight",
                "shape": [1, 1, 3, 3],
                "datatype": "FP32",
                "parameters": {"binary_data_size": 36},
            },
        ]
    }
    encoded = json.dumps(header).encode()
    headers = {"Inference-Header-Content-Length": str(len(encoded))}
    response = client.post("/v2/models/conv2d/infer", content=encoded + bytes(40), headers=headers)
    assert response.status_code == 400
    assert "binary_data_size" in response.json()["error"]

    # A JSON body whose inputs claim binary data, without the header that frames it.
    response = client.post("/v2/models/conv2d/infer", content=encoded)
    assert response.status_code == 400
    assert "Inference-Header-Content-Length" in response.json()["error"]


def test_json_request_over_httpx(client: httpx.Client) -> None:
    body = {
        "id": "plain-json",
        "inputs": [
            {"name": "input", "shape": [1, 1, 3, 3], "datatype": "FP32", "data": list(range(9))},
            {"name": "weight", "shape": [1, 1, 1, 1], "datatype": "FP32", "data": [2.0]},
        ],
        "parameters": {"device": "nosuch:9"},
    }
    response = client.post("/v2/models/conv2d/versions/1/infer", json=body)
    assert response.status_code == 400, response.text
    assert "nosuch:9" in response.json()["error"]

    del body["parameters"]
    response = client.post("/v2/models/conv2d/versions/1/infer", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["id"] == "plain-json"
    assert result["outputs"][0]["data"] == [2.0 * v for v in range(9)]
    assert result["outputs"][0]["shape"] == [1, 1, 3, 3]


def test_health_bodies(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    ready = client.get("/v2/models/conv2d/ready")
    assert ready.status_code == 200
    assert ready.json() == {"name": "conv2d", "ready": True}
