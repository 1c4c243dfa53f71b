"""Measure what the request encoding costs on a round trip through a live clconv server.

Starts ``python -m clconv serve`` on a free 127.0.0.1 port and posts one float32 tensor to the
hidden diagnostic endpoints. ``/v1/echo_raw`` sends the body back unparsed (the bare transport).
``/v1/echo`` decodes ``input`` exactly as an operation endpoint would and encodes it again in
the request's encoding. Each case is the median wall time of ``--repeats`` round trips, after
one warm-up, measured in this client with ``httpx``, and the cases alternate round by round. A
round trip includes sending the prepared request body and decoding the response into a numpy
array. Building the request body is not timed.

Usage: ``python bench/transport.py [--mib 64] [--json-list-mib 4] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import httpx
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
HEADER_LENGTH = "Inference-Header-Content-Length"
MIB = 1024 * 1024
# The acceptance target: binary framing costs less than this multiple of the bare echo.
TARGET_RATIO = 1.25


@dataclass(frozen=True)
class Case:
    """One echo measurement: what was sent, how much, and the median round trip."""

    name: str
    path: str
    mib: float
    median_ms: float
    min_ms: float


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(port: int) -> subprocess.Popen[bytes]:
    """Start a clconv server on 127.0.0.1 and wait until ``/healthz`` returns 200."""
    env = {**os.environ, "CLCONV_LOG_LEVEL": "WARNING"}
    process = subprocess.Popen(
        [sys.executable, "-m", "clconv", "serve", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=REPO_ROOT,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"clconv server exited with {process.returncode} at start-up")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise RuntimeError("clconv server did not become healthy within 120 s")


def framed_body(array: np.ndarray) -> tuple[bytes, dict[str, str]]:
    tensor = {"shape": list(array.shape), "dtype": "float32", "binary_data_size": array.nbytes}
    header = json.dumps({"input": tensor}).encode()
    headers = {HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"}
    return header + array.tobytes(), headers


def decode_framed(response: httpx.Response) -> np.ndarray:
    length = int(response.headers[HEADER_LENGTH])
    content = response.content
    output = json.loads(content[:length])["output"]
    return np.frombuffer(content, dtype="<f4", offset=length).reshape(output["shape"])


def decode_base64(response: httpx.Response) -> np.ndarray:
    output = response.json()["output"]
    flat = np.frombuffer(base64.b64decode(output["base64"]), dtype="<f4")
    return flat.reshape(output["shape"])


def decode_json_list(response: httpx.Response) -> np.ndarray:
    output = response.json()["output"]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


def time_round_trip(
    client: httpx.Client,
    path: str,
    content: bytes,
    headers: dict[str, str],
    decode: Callable[[httpx.Response], np.ndarray],
) -> tuple[float, np.ndarray]:
    """Post ``content`` once; return the round trip in milliseconds and the decoded output."""
    started = time.perf_counter()
    response = client.post(path, content=content, headers=headers)
    response.raise_for_status()
    output = decode(response)
    return (time.perf_counter() - started) * 1e3, output


def tensor_of(mib: float) -> np.ndarray:
    """Return a [1, 1, H, W] float32 tensor of ``mib`` MiB with W = 1024."""
    width = 1024
    height = max(1, round(mib * MIB / 4 / width))
    rng = np.random.default_rng(0)
    return rng.standard_normal((1, 1, height, width), dtype=np.float32)


def run_cases(url: str, mib: float, json_list_mib: float, repeats: int) -> list[Case]:
    big = tensor_of(mib)
    small = tensor_of(json_list_mib)
    framed, framed_headers = framed_body(big)
    base64_body = json.dumps(
        {
            "input": {
                "shape": list(big.shape),
                "dtype": "float32",
                "base64": base64.b64encode(big.tobytes()).decode("ascii"),
            }
        }
    ).encode()
    list_body = json.dumps(
        {"input": {"shape": list(small.shape), "dtype": "float32", "data": small.ravel().tolist()}}
    ).encode()
    json_headers = {"Content-Type": "application/json"}

    plan = [
        ("bare echo (body back unparsed)", "/v1/echo_raw", framed, framed_headers, big, mib),
        ("binary framing", "/v1/echo", framed, framed_headers, big, mib),
        ("base64 in JSON", "/v1/echo", base64_body, json_headers, big, mib),
        ("JSON list", "/v1/echo", list_body, json_headers, small, json_list_mib),
    ]
    raw_offset = int(framed_headers[HEADER_LENGTH])

    def decoder_for(name: str, path: str) -> Callable[[httpx.Response], np.ndarray]:
        if path == "/v1/echo_raw":
            return lambda response: np.frombuffer(response.content, dtype="<f4", offset=raw_offset)
        if name == "binary framing":
            return decode_framed
        if name == "base64 in JSON":
            return decode_base64
        return decode_json_list

    cases: list[Case] = []
    times: dict[str, list[float]] = {name: [] for name, *_ in plan}
    with httpx.Client(base_url=url, timeout=600) as client:
        # The warm-up round also checks that each echo returns the input unchanged.
        for name, path, content, headers, expected, _ in plan:
            _, output = time_round_trip(client, path, content, headers, decoder_for(name, path))
            np.testing.assert_array_equal(output.reshape(-1), expected.reshape(-1))
        # Cases alternate round by round, so load from other processes falls on all of them.
        for _ in range(repeats):
            for name, path, content, headers, _, _ in plan:
                elapsed, _ = time_round_trip(
                    client, path, content, headers, decoder_for(name, path)
                )
                times[name].append(elapsed)
    for name, path, _, _, _, size in plan:
        cases.append(Case(name, path, size, statistics.median(times[name]), min(times[name])))
        print(f"{name}: {size:g} MiB, median {cases[-1].median_ms:.1f} ms", file=sys.stderr)
    return cases


def render(cases: list[Case], args: argparse.Namespace, load: tuple[float, float]) -> str:
    """Write the Markdown report; ``load`` is the 1-minute load average before and after."""
    bare = cases[0].median_ms
    binary = cases[1].median_ms
    ratio = binary / bare
    verdict = "meets" if ratio < TARGET_RATIO else "misses"
    lines = [
        "# Transport benchmark",
        "",
        "Round trips of one float32 tensor through a local clconv server: the bare echo",
        "(`POST /v1/echo_raw`, the body sent back unparsed) against `POST /v1/echo`, which",
        "decodes `input` as an operation endpoint does and encodes it again in the request's",
        "encoding. Each figure is the median of the timed round trips after one warm-up, as",
        "seen by an `httpx` client in the same machine: sending the prepared body, receiving",
        "the response and decoding it into a numpy array. Building the request is not timed.",
        "The cases alternate round by round, so other load on the machine falls on all alike.",
        "",
        f"Command: `{' '.join(['python', 'bench/transport.py', *sys.argv[1:]])}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{_cpu_model()}, Python {platform.python_version()}, {platform.system()} "
        f"{platform.release()}; client and server on 127.0.0.1, sharing the CPUs. "
        f"Server: uvicorn {_version('uvicorn')} with {_http_implementation()}; client: "
        f"httpx {_version('httpx')}. The 1-minute load average was {load[0]:.1f} before the run "
        f"and {load[1]:.1f} after it, so other processes were competing for the CPUs.",
        "",
        "| encoding | endpoint | size (MiB) | median (ms) | min (ms) | MiB/s | vs bare |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for case in cases:
        per_mib = case.median_ms / case.mib
        lines.append(
            f"| {case.name} | `{case.path}` | {case.mib:g} | {case.median_ms:.1f} | "
            f"{case.min_ms:.1f} | {case.mib / case.median_ms * 1e3:.0f} | "
            f"{per_mib / (bare / cases[0].mib):.2f}x |"
        )
    lines += [
        "",
        "MiB/s is the tensor size divided by the round trip, in which the tensor crosses the",
        "socket twice. Client and server share the CPUs, so the spread between min and median",
        "shows how much the figures vary from run to run.",
        "",
        "`vs bare` compares milliseconds per MiB with the bare echo, so the JSON list row, sent",
        f"at {args.json_list_mib:g} MiB because it is too slow at {args.mib:g} MiB, stays "
        "comparable.",
        "",
        f"Binary framing at {args.mib:g} MiB takes {ratio:.2f}x the bare echo, which "
        f"{verdict} the target of less than {TARGET_RATIO}x.",
        "",
    ]
    return "\n".join(lines)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _http_implementation() -> str:
    # uvicorn's default (http="auto") uses httptools when it is installed, else h11.
    try:
        metadata.version("httptools")
    except metadata.PackageNotFoundError:
        return f"h11 {_version('h11')} (httptools is not installed)"
    return f"httptools {_version('httptools')}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, default=64, help="tensor size in MiB (default 64)")
    parser.add_argument(
        "--json-list-mib",
        type=float,
        default=4,
        help="tensor size in MiB for the JSON list case, which is slow (default 4)",
    )
    parser.add_argument(
        "--repeats", type=int, default=7, help="timed round trips per case (default 7)"
    )
    parser.add_argument("--out", type=Path, help="write the Markdown report to this file")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    port = _free_port()
    server = start_server(port)
    try:
        cases = run_cases(f"http://127.0.0.1:{port}", args.mib, args.json_list_mib, args.repeats)
    finally:
        server.terminate()
        server.wait(timeout=30)
    load = (load_before, os.getloadavg()[0])
    report = render(cases, args, load)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
