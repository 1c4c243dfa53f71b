"""A scripted HTTP server on 127.0.0.1 for retry, timeout and error-status tests.

Each request takes the next ``Reply`` from the script (the last one repeats). A reply can set the
status, headers and body, sleep before responding, or drop the connection without a response,
which the client sees as a connection failure.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    drop_connection: bool = False


@dataclass
class StubServer:
    url: str
    requests: list[str]


def conv_response(output: np.ndarray) -> dict[str, Any]:
    """A minimal successful operation response with ``output`` as a JSON tensor."""
    return {
        "op": "conv2d",
        "output": {
            "shape": list(output.shape),
            "dtype": str(output.dtype),
            "data": output.ravel().tolist(),
        },
        "device": {"id": "stub:0", "name": "stub", "platform": "stub"},
        "algorithm": ["stub"],
        "macs": 1,
        "flops": 2,
        "params": 1,
        "timings_ms": {"total": 0.1},
    }


def error_body(code: str, message: str, field_name: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field_name}}


@contextmanager
def stub_server(script: Sequence[Reply]) -> Iterator[StubServer]:
    """Serve ``script`` on a free port of 127.0.0.1 until the block ends."""
    requests: list[str] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _reply(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            with lock:
                index = min(len(requests), len(script) - 1)
                requests.append(f"{self.command} {self.path}")
            reply = script[index]
            time.sleep(reply.delay_s)
            if reply.drop_connection:
                self.close_connection = True
                return
            content = b"" if reply.body is None else json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(content)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(content)

        do_GET = _reply
        do_POST = _reply

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield StubServer(f"http://127.0.0.1:{server.server_address[1]}", requests)
    finally:
        server.shutdown()
        server.server_close()
