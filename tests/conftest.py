"""Shared fixtures: one real uvicorn server on 127.0.0.1 for the whole session.

Tests that run convolutions take the ``device_id`` fixture, which is parametrised over every
OpenCL device the server lists, except the Oclgrind simulator, so each check runs on every
installed platform.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVER_START_TIMEOUT_S = 120.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_healthy(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"clconv server exited with {process.returncode}; log:\n{log_path.read_text()}"
            )
        try:
            if httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"clconv server not healthy after {SERVER_START_TIMEOUT_S} s")


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start ``python -m clconv serve`` on a free loopback port and stop it after the session."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    env = dict(os.environ)
    env.pop("CLCONV_DEVICE", None)
    # A tuning database in the user's cache would change the algorithms the tests expect.
    env["CLCONV_TUNING_DIR"] = "off"
    env.pop("CLCONV_TUNE", None)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "clconv", "serve", "--host", "127.0.0.1", "--port", str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO_ROOT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(url, process, log_path)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def client(server_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server_url, timeout=300.0) as http:
        yield http


def _listed_devices() -> list[dict[str, Any]]:
    """Ask a short-lived server for its devices, so tests can be parametrised by device id."""
    url = os.environ.get("CLCONV_TEST_DEVICES_FROM")
    if url:
        return list(httpx.get(f"{url}/v1/devices", timeout=30).json()["devices"])
    from clconv.runtime.devices import discover_devices

    return [device.describe() for device in discover_devices().devices]


def _is_simulator(device: dict[str, Any]) -> bool:
    """Oclgrind simulates every work-item and is far too slow for the whole suite; its own
    checks are in test_oclgrind.py."""
    return "oclgrind" in str(device.get("platform", "")).lower()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "device_id" in metafunc.fixturenames:
        devices = [device for device in _listed_devices() if not _is_simulator(device)]
        if not devices:
            raise pytest.UsageError("no OpenCL device found; the tests need at least one")
        ids = [device["id"] for device in devices]
        metafunc.parametrize("device_id", ids, ids=ids)


@pytest.fixture(scope="session")
def devices(client: httpx.Client) -> dict[str, dict[str, Any]]:
    listing = client.get("/v1/devices").json()
    return {device["id"]: device for device in listing["devices"]}
