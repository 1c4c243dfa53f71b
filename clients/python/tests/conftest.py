"""Fixtures for the client tests: one real clconv server on 127.0.0.1 for the whole session.

The server is started the way users start it, ``python -m clconv serve``, so these tests need
the ``clconv`` service importable (``make install`` in the repository does that). Without it
every test that takes ``server_url`` is skipped with that reason.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import clconv_client
import httpx
import pytest
from stub_server import free_port

SERVER_START_TIMEOUT_S = 120.0


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
    if importlib.util.find_spec("clconv") is None:
        pytest.skip("the clconv service is not installed; run `make install` in the repository")
    port = free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    env = dict(os.environ)
    env.pop("CLCONV_DEVICE", None)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "clconv", "serve", "--host", "127.0.0.1", "--port", str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
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
def client(server_url: str) -> Iterator[clconv_client.Client]:
    with clconv_client.Client(server_url, timeout=300.0) as sdk_client:
        yield sdk_client


@pytest.fixture(scope="session")
def device_ids(client: clconv_client.Client) -> list[str]:
    """Every device the server lists; convolution tests run on each of them."""
    ids = [device.id for device in client.devices().devices]
    assert ids, "the server lists no OpenCL device; the tests need at least one"
    return ids
