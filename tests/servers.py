"""Start a clconv server with its own ``CLCONV_*`` settings on a free loopback port.

The session server of ``conftest.py`` runs with the defaults; tests of limits, overload and
API keys need their own. Warm-up is off unless the test sets ``CLCONV_WARMUP``, so a server
is ready within the time device discovery takes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


@dataclass
class Server:
    """A running server: its base URL, process and log file (stdout and stderr)."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_server(
    env: dict[str, str], log_dir: Path, ready_path: str = "/readyz"
) -> Iterator[Server]:
    """Run ``python -m clconv serve`` with ``env`` added to the environment; stop it after."""
    port = free_port()
    log_path = log_dir / f"server-{port}.log"
    full_env = {key: value for key, value in os.environ.items() if not key.startswith("CLCONV_")}
    full_env.setdefault("CLCONV_WARMUP", "0")
    # A tuning database in the user's cache would change the algorithms the tests expect.
    full_env.setdefault("CLCONV_TUNING_DIR", "off")
    full_env.update(env)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "clconv", "serve", "--host", "127.0.0.1", "--port", str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=REPO_ROOT,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    try:
        _wait_ready(server, ready_path)
        yield server
    finally:
        stop(server)


def stop(server: Server, sig: int = signal.SIGTERM) -> int:
    """Send ``sig`` to the server, wait for it to exit and return its exit status."""
    process = server.process
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def _wait_ready(server: Server, path: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"clconv server exited with {server.process.returncode}; log:\n{server.log()}"
            )
        try:
            if httpx.get(f"{server.url}{path}", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{server.url}{path} not 200 after {START_TIMEOUT_S} s:\n{server.log()}")
