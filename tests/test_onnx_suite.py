"""Run the ONNX backend tests for Conv and ConvTranspose through the HTTP API on every device.

The cases are the ONNX project's own node test data (suites `node`, `pytorch-converted` and
`pytorch-operator`) converted to numpy. Each `NAME.npz` contains `X`, `W`, an optional `B` and the
expected output `Y`. Each `NAME.json` contains the ONNX attributes with defaults filled in, where
`effective_pads` already resolves `auto_pad` and `output_shape`.

Only 2-D and 1-D cases are collected. A 1-D case runs as 2-D with H = 1. 3-D and DeformConv
cases have no endpoint in this API, so they are left out rather than skipped.
`test_suite_case_count` fails if the 2-D and 1-D cases ever stop adding up to 39.

The last test writes each device's worst absolute error to `build/onnx_summary.json`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from support import FLOAT32_ATOL, FLOAT32_RTOL, tensor_from_json, tensor_json

REPO_ROOT = Path(__file__).resolve().parent.parent
# The ONNX backend cases live outside the repository; CLCONV_SUITES_DIR points elsewhere.
SUITES_ROOT = Path(os.environ.get("CLCONV_SUITES_DIR", REPO_ROOT.parent / "shared" / "suites"))
SUITE_DIR = SUITES_ROOT / "onnx"
SUMMARY_PATH = REPO_ROOT / "build" / "onnx_summary.json"

EXPECTED_2D_CASES = 30
EXPECTED_1D_CASES = 9

ENDPOINTS = {"Conv": "/v1/conv2d", "ConvTranspose": "/v1/conv_transpose2d"}

# Maximum absolute error per device id and case name, filled in by test_onnx_case and written
# out by test_write_onnx_summary. The dict lives in one process, so pytest-xdist would split it.
worst_abs_errors: dict[str, dict[str, float]] = {}


def load_supported_cases() -> list[dict[str, Any]]:
    """Load the suite's 2-D and 1-D Conv and ConvTranspose cases, in index order.

    A missing suite directory gives an empty list, so that test_suite_case_count fails with the
    path in its message instead of the whole module failing to import.
    """
    index_path = SUITE_DIR / "index.json"
    if not index_path.is_file():
        return []
    cases: list[dict[str, Any]] = json.loads(index_path.read_text())
    return [
        case
        for case in cases
        if case["op"] in ENDPOINTS and len(case["shapes"]["X"]) in (3, 4)  # N, C, [H,] W
    ]


SUPPORTED_CASES = load_supported_cases()


def load_arrays(case: dict[str, Any]) -> dict[str, np.ndarray]:
    with np.load(SUITE_DIR / f"{case['name']}.npz") as archive:
        return {name: archive[name] for name in archive.files}


def case_to_request(
    case: dict[str, Any], arrays: dict[str, np.ndarray], device_id: str, encoding: str
) -> dict[str, Any]:
    """Build the request body for one ONNX case. A 1-D case becomes 2-D with H = 1."""
    attributes = case["attributes_resolved"]
    x, weight = arrays["X"], arrays["W"]
    spatial_rank = x.ndim - 2
    pads = list(attributes["effective_pads"])
    strides = list(attributes["strides"])
    dilations = list(attributes["dilations"])
    output_padding = list(attributes.get("output_padding", [0] * spatial_rank))
    begin_pads, end_pads = pads[:spatial_rank], pads[spatial_rank:]

    if spatial_rank == 1:
        x = x[:, :, np.newaxis, :]
        weight = weight[:, :, np.newaxis, :]
        strides, dilations = [1, *strides], [1, *dilations]
        output_padding = [0, *output_padding]
        begin_pads, end_pads = [0, *begin_pads], [0, *end_pads]

    if min(begin_pads) < 0:
        raise ValueError(
            f"{case['name']}: begin pads {begin_pads} are negative, the API needs >= 0"
        )

    if case["op"] == "ConvTranspose":
        # ONNX encodes an output_shape larger than the natural size as a negative end pad. The
        # extra rows and columns at the end receive only bias, which is what output_padding appends
        # when the end pad is 0. So the deficit moves into output_padding and the end pad becomes 0.
        for axis in range(2):
            if end_pads[axis] < 0:
                output_padding[axis] -= end_pads[axis]
                end_pads[axis] = 0
    elif min(end_pads) < 0:
        raise ValueError(f"{case['name']}: end pads {end_pads} are negative, the API needs >= 0")

    body: dict[str, Any] = {
        "device": device_id,
        "input": tensor_json(x, encoding),
        "weight": tensor_json(weight, encoding),
        "stride": strides,
        "padding": {
            "top": begin_pads[0],
            "bottom": end_pads[0],
            "left": begin_pads[1],
            "right": end_pads[1],
        },
        "dilation": dilations,
        "groups": attributes["group"],
    }
    if "B" in arrays:
        body["bias"] = tensor_json(arrays["B"], encoding)
    if case["op"] == "ConvTranspose":
        body["output_padding"] = output_padding
    return body


def expected_output(arrays: dict[str, np.ndarray]) -> np.ndarray:
    y = arrays["Y"]
    return y[:, :, np.newaxis, :] if y.ndim == 3 else y


def case_param(index: int, case: dict[str, Any]) -> Any:
    # Alternate the tensor encoding so both base64 and JSON `data` lists are exercised.
    encoding = "base64" if index % 2 == 0 else "json"
    return pytest.param(case, encoding, id=case["name"])


def test_suite_case_count() -> None:
    if not SUITE_DIR.is_dir() and not os.environ.get("CI"):
        pytest.skip(f"ONNX cases not found in {SUITE_DIR}; set CLCONV_SUITES_DIR (required in CI)")
    two_d = [case["name"] for case in SUPPORTED_CASES if len(case["shapes"]["X"]) == 4]
    one_d = [case["name"] for case in SUPPORTED_CASES if len(case["shapes"]["X"]) == 3]

    assert len(SUPPORTED_CASES) == EXPECTED_2D_CASES + EXPECTED_1D_CASES, (
        f"found {len(SUPPORTED_CASES)} 2-D and 1-D Conv/ConvTranspose cases in {SUITE_DIR}, "
        f"expected {EXPECTED_2D_CASES + EXPECTED_1D_CASES}"
    )
    assert len(two_d) == EXPECTED_2D_CASES, f"2-D cases: {two_d}"
    assert len(one_d) == EXPECTED_1D_CASES, f"1-D cases: {one_d}"


@pytest.mark.parametrize(
    ("case", "encoding"), [case_param(index, case) for index, case in enumerate(SUPPORTED_CASES)]
)
def test_onnx_case(
    client: httpx.Client, device_id: str, case: dict[str, Any], encoding: str
) -> None:
    arrays = load_arrays(case)
    expected = expected_output(arrays)
    body = case_to_request(case, arrays, device_id, encoding)

    response = client.post(ENDPOINTS[case["op"]], json=body)

    assert response.status_code == 200, response.text
    output = response.json()["output"]
    assert ("base64" if encoding == "base64" else "data") in output, sorted(output)
    actual = tensor_from_json(output)
    assert actual.dtype == np.float32
    assert actual.shape == expected.shape

    abs_error = float(np.abs(actual.astype(np.float64) - expected).max(initial=0.0))
    worst_abs_errors.setdefault(device_id, {})[case["name"]] = abs_error

    # Every output here is a float32 sum of at most 144 products, so a reordered sum is expected
    # to differ by a few ulps of max|Y|. The absolute floor scales with max|Y| because the integer
    # cases reach |Y| = 252, and a wrong tap or pad is off by whole products of X and W.
    atol = FLOAT32_ATOL * max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=FLOAT32_RTOL, atol=atol)


def test_write_onnx_summary(
    devices: dict[str, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    """Write each device's per-case errors and worst error to build/onnx_summary.json.

    It runs after test_onnx_case because pytest keeps file order within a module.
    """
    summary: dict[str, Any] = {"expected_cases": len(SUPPORTED_CASES), "devices": {}}
    for device_id in sorted(devices):
        errors = worst_abs_errors.get(device_id, {})
        worst_case = max(errors, key=errors.__getitem__, default=None)
        summary["devices"][device_id] = {
            "cases_run": len(errors),
            "worst_abs_error": errors[worst_case] if worst_case else None,
            "worst_case": worst_case,
            "abs_errors": errors,
        }

    SUMMARY_PATH.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY_PATH.write_text(json.dumps(summary, indent=2) + "\n")
    with capsys.disabled():
        print()
        for device_id, entry in summary["devices"].items():
            print(
                f"onnx suite on {device_id}: {entry['cases_run']}/{len(SUPPORTED_CASES)} cases, "
                f"worst abs error {entry['worst_abs_error']} ({entry['worst_case']})"
            )

    for device_id, entry in summary["devices"].items():
        missing = sorted({case["name"] for case in SUPPORTED_CASES} - set(entry["abs_errors"]))
        assert not missing, f"{device_id}: no error recorded for {missing}"
