"""The ``clconv devices``, ``conv`` and ``plan`` commands, run as subprocesses against a server.

Results are checked against PyTorch; the progress output is checked against a local HTTP server
that responds slowly.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from support import FLOAT32_ATOL, FLOAT32_RTOL

CLI_TIMEOUT_S = 300


def run_cli(*arguments: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clconv", *arguments],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        cwd=cwd,
    )


def save(path: Path, array: np.ndarray) -> str:
    np.save(path, array)
    return str(path)


def random_array(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def assert_close(actual: np.ndarray, expected: torch.Tensor) -> None:
    expected_array = expected.numpy()
    assert actual.shape == expected_array.shape
    assert actual.dtype == expected_array.dtype
    np.testing.assert_allclose(actual, expected_array, rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)


def test_devices_table(server_url: str) -> None:
    listing = run_cli("devices", "--url", server_url)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "TYPE", "NAME"]
    assert set(lines[1]) <= {"-", " "}
    assert any(line.startswith("*") for line in lines[2:])
    assert "default: " in listing.stdout
    assert listing.stderr == ""


def test_devices_json(server_url: str) -> None:
    listing = run_cli("devices", "--url", server_url, "--json")
    assert listing.returncode == 0, listing.stderr
    body = json.loads(listing.stdout)
    assert body["default"] in [device["id"] for device in body["devices"]]


def test_conv2d_matches_torch(server_url: str, device_id: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = random_array(rng, 1, 4, 12, 10)
    weight = random_array(rng, 6, 2, 3, 3)
    bias = random_array(rng, 6)
    out = tmp_path / "y.npy"
    result = run_cli(
        "conv",
        "conv2d",
        "--input",
        save(tmp_path / "x.npy", x),
        "--weight",
        save(tmp_path / "w.npy", weight),
        "--bias",
        save(tmp_path / "b.npy", bias),
        "--param",
        "stride=2",
        "--param",
        "padding=1,2",
        "--param",
        "groups=2",
        "--param",
        "activation=relu",
        "--device",
        device_id,
        "--out",
        str(out),
        "--url",
        server_url,
    )
    assert result.returncode == 0, result.stderr
    expected = F.relu(
        F.conv2d(
            torch.from_numpy(x),
            torch.from_numpy(weight),
            torch.from_numpy(bias),
            stride=2,
            padding=(1, 2),
            groups=2,
        )
    )
    assert_close(np.load(out), expected)
    assert f"device        {device_id}" in result.stdout
    assert str(out) in result.stdout


def test_conv_json_summary(server_url: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = random_array(rng, 1, 2, 6, 6)
    weight = random_array(rng, 3, 2, 3, 3)
    out = tmp_path / "y.npy"
    result = run_cli(
        "conv",
        "conv2d",
        "--input",
        save(tmp_path / "x.npy", x),
        "--weight",
        save(tmp_path / "w.npy", weight),
        "--param",
        "padding=same",
        "--out",
        str(out),
        "--url",
        server_url,
        "--json",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["output_shape"] == [1, 3, 6, 6]
    assert summary["output_file"] == str(out)
    assert "output" not in summary
    assert summary["timings_ms"]["total"] >= 0
    assert_close(np.load(out), F.conv2d(torch.from_numpy(x), torch.from_numpy(weight), padding=1))


def test_conv_transpose2d(server_url: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = random_array(rng, 1, 3, 5, 5)
    weight = random_array(rng, 3, 2, 3, 3)
    out = tmp_path / "y.npy"
    result = run_cli(
        "conv",
        "conv_transpose2d",
        "--input",
        save(tmp_path / "x.npy", x),
        "--weight",
        save(tmp_path / "w.npy", weight),
        "--param",
        "stride=2",
        "--param",
        "output_padding=1",
        "--out",
        str(out),
        "--url",
        server_url,
    )
    assert result.returncode == 0, result.stderr
    expected = F.conv_transpose2d(
        torch.from_numpy(x), torch.from_numpy(weight), stride=2, output_padding=1
    )
    assert_close(np.load(out), expected)


def test_depthwise_separable_conv2d(server_url: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    x = random_array(rng, 1, 3, 8, 8)
    depthwise_weight = random_array(rng, 3, 1, 3, 3)
    pointwise_weight = random_array(rng, 5, 3, 1, 1)
    out = tmp_path / "y.npy"
    result = run_cli(
        "conv",
        "depthwise_separable_conv2d",
        "--input",
        save(tmp_path / "x.npy", x),
        "--tensor",
        f"depthwise_weight={save(tmp_path / 'dw.npy', depthwise_weight)}",
        "--tensor",
        f"pointwise_weight={save(tmp_path / 'pw.npy', pointwise_weight)}",
        "--param",
        "padding=1",
        "--out",
        str(out),
        "--url",
        server_url,
    )
    assert result.returncode == 0, result.stderr
    hidden = F.conv2d(torch.from_numpy(x), torch.from_numpy(depthwise_weight), padding=1, groups=3)
    assert_close(np.load(out), F.conv2d(hidden, torch.from_numpy(pointwise_weight)))


def test_spatially_separable_conv2d(server_url: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    x = random_array(rng, 1, 2, 9, 9)
    vertical_weight = random_array(rng, 3, 2, 3, 1)
    horizontal_weight = random_array(rng, 4, 3, 1, 3)
    out = tmp_path / "y.npy"
    result = run_cli(
        "conv",
        "spatially_separable_conv2d",
        "--input",
        save(tmp_path / "x.npy", x),
        "--tensor",
        f"vertical_weight={save(tmp_path / 'v.npy', vertical_weight)}",
        "--tensor",
        f"horizontal_weight={save(tmp_path / 'h.npy', horizontal_weight)}",
        "--out",
        str(out),
        "--url",
        server_url,
    )
    assert result.returncode == 0, result.stderr
    hidden = F.conv2d(torch.from_numpy(x), torch.from_numpy(vertical_weight))
    assert_close(np.load(out), F.conv2d(hidden, torch.from_numpy(horizontal_weight)))


def test_plan_from_shapes(server_url: str) -> None:
    result = run_cli(
        "plan",
        "conv2d",
        "--input-shape",
        "1,3,224,224",
        "--shape",
        "weight=16,3,3,3",
        "--param",
        "stride=2",
        "--url",
        server_url,
    )
    assert result.returncode == 0, result.stderr
    rows = dict(line.split(None, 2)[-2:] for line in result.stdout.splitlines() if line)
    assert "[1, 16, 111, 111] float32" in result.stdout
    assert rows["params"] == f"{16 * 3 * 3 * 3:,}"


def test_plan_from_npy_headers(server_url: str, tmp_path: Path) -> None:
    x = np.zeros((2, 3, 20, 20), np.float64)
    weight = np.zeros((4, 3, 5, 5), np.float64)
    result = run_cli(
        "plan",
        "conv2d",
        "--input",
        save(tmp_path / "x.npy", x),
        "--weight",
        save(tmp_path / "w.npy", weight),
        "--url",
        server_url,
        "--json",
    )
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["output_shape"] == [2, 4, 16, 16]
    assert plan["dtype"] == "float64"
    assert plan["macs"] == 2 * 4 * 16 * 16 * 3 * 5 * 5


def test_server_rejection_exit_status(server_url: str, tmp_path: Path) -> None:
    x = save(tmp_path / "x.npy", np.ones((1, 1, 4, 4), np.float32))
    weight = save(tmp_path / "w.npy", np.ones((1, 1, 3, 3), np.float32))
    arguments = ["--input", x, "--weight", weight, "--param", "stride=0", "--url", server_url]
    result = run_cli("conv", "conv2d", *arguments, "--out", str(tmp_path / "y.npy"))
    assert result.returncode == 1
    assert "422 invalid_value (field stride)" in result.stderr
    assert not (tmp_path / "y.npy").exists()


def test_unreachable_server_exit_status(tmp_path: Path) -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as probe:
        closed_port = probe.server_address[1]
    result = run_cli("devices", "--url", f"http://127.0.0.1:{closed_port}")
    assert result.returncode == 3
    assert "cannot reach" in result.stderr


def test_usage_errors_exit_status(server_url: str, tmp_path: Path) -> None:
    x = save(tmp_path / "x.npy", np.ones((1, 1, 4, 4), np.float32))
    cases = {
        "missing file": ["conv", "conv2d", "--input", str(tmp_path / "none.npy")],
        "param without value": ["conv", "conv2d", "--input", x, "--param", "stride"],
        "tensor as param": ["conv", "conv2d", "--input", x, "--param", "weight=1"],
        "unknown tensor": ["conv", "conv2d", "--input", x, "--tensor", "kernel=w.npy"],
    }
    for label, arguments in cases.items():
        result = run_cli(*arguments, "--out", str(tmp_path / "y.npy"), "--url", server_url)
        assert result.returncode == 2, label
        assert result.stderr.startswith("clconv: "), label
    both = run_cli("plan", "conv2d", "--input", x, "--input-shape", "1,1,4,4", "--url", server_url)
    assert both.returncode == 2
    bad_shape = run_cli("plan", "conv2d", "--input-shape", "1,0,4,4", "--url", server_url)
    assert bad_shape.returncode == 2
    assert "positive" in bad_shape.stderr


class SlowDevicesHandler(BaseHTTPRequestHandler):
    """Responds to ``GET /v1/devices`` after ``delay_s`` seconds."""

    delay_s = 0.0

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        time.sleep(self.delay_s)
        content = json.dumps({"default": None, "devices": [], "skipped": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)


def slow_server(delay_s: float) -> Iterator[str]:
    handler = type("Handler", (SlowDevicesHandler,), {"delay_s": delay_s})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def slow_url() -> Iterator[str]:
    yield from slow_server(1.6)


@pytest.fixture
def fast_url() -> Iterator[str]:
    yield from slow_server(0.0)


def test_progress_on_slow_call(slow_url: str) -> None:
    result = run_cli("devices", "--url", slow_url)
    assert result.returncode == 0, result.stderr
    assert "GET /v1/devices: still running after 1 s" in result.stderr
    assert "GET /v1/devices: finished in" in result.stderr


def test_progress_quiet(slow_url: str) -> None:
    result = run_cli("devices", "--url", slow_url, "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_no_progress_on_fast_call(fast_url: str) -> None:
    result = run_cli("devices", "--url", fast_url)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_timeout_exit_status(slow_url: str) -> None:
    result = run_cli("devices", "--url", slow_url, "--timeout", "0.3", "--quiet")
    assert result.returncode == 3
    assert "did not answer within 0.3 s" in result.stderr


def test_progress_spinner_on_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from clconv import cli_client

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(cli_client, "PROGRESS_DELAY_S", 0.05)
    stream = Terminal()
    with cli_client.Progress("POST /v1/conv2d", stream=stream):
        time.sleep(0.4)
    text = stream.getvalue()
    assert "\r| POST /v1/conv2d" in text
    assert text.endswith("\r\x1b[K")
    assert "\n" not in text


def test_api_key_option_reaches_keyed_server(tmp_path: Path) -> None:
    from servers import running_server

    with running_server({"CLCONV_API_KEYS": "cli-secret"}, tmp_path) as server:
        rejected = run_cli("devices", "--url", server.url)
        assert rejected.returncode == 1
        assert "401" in rejected.stderr

        accepted = run_cli("devices", "--url", server.url, "--api-key", "cli-secret", "--json")
        assert accepted.returncode == 0, accepted.stderr
        assert json.loads(accepted.stdout)["default"]
