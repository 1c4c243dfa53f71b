"""Measure the first request after a server restart against steady-state requests.

For each CPU OpenCL device and each shape, this script gives a real ``clconv serve`` process
(127.0.0.1, free port) an empty cache folder as ``XDG_CACHE_HOME``, so clconv's, PyOpenCL's and
PoCL's on-disk caches all start empty. It then runs:

1. a cold process: the first request of the shape (every cache empty), then ``--steady`` more;
2. ``--rounds`` restarts on the same cache folder: the first request after each restart (warm
   disk cache, a new process), then ``--steady`` more.

Each request is timed twice: wall time in this client, from sending the body to the decoded
output, and the server's ``timings_ms.total`` (OpenCL events from the first upload queued to the
download's end). Program builds happen before the first upload, so only the wall time includes
them, while PoCL's per-launch work-group compile falls inside the server's total. Steady state is
the median over the requests that follow a first request in the warm rounds. The server's
start-up warm-up (``CLCONV_WARMUP``) stays on, as in production, and builds other shapes.

Usage: ``python bench/first_request.py [--steady 10] [--rounds 3] [--env KEY=VALUE] [--out F]``
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 300.0
# The acceptance target: the first request after a restart costs at most this many steady ones.
TARGET_RATIO = 2.0
# Variables that point a cache somewhere else or switch one off. They are removed from the
# server's environment so that every run starts from the empty folder. ``--env`` sets them.
CACHE_VARIABLES = ("POCL_CACHE_DIR", "POCL_KERNEL_CACHE", "PYOPENCL_NO_CACHE", "XDG_CACHE_HOME")


@dataclass(frozen=True)
class Shape:
    """One request: the endpoint, its tensors as (name, shape) and the other fields."""

    name: str
    op: str
    tensors: tuple[tuple[str, tuple[int, ...]], ...]
    fields: dict[str, Any]


SHAPES = (
    Shape(
        "ResNet-50 3x3, 1x64x56x56 -> 64",
        "conv2d",
        (("input", (1, 64, 56, 56)), ("weight", (64, 64, 3, 3))),
        {"padding": 1},
    ),
    Shape(
        "depthwise 3x3, 1x64x56x56, groups 64",
        "conv2d",
        (("input", (1, 64, 56, 56)), ("weight", (64, 1, 3, 3))),
        {"padding": 1, "groups": 64},
    ),
    Shape(
        "transposed 4x4 stride 2, 1x64x28x28 -> 32",
        "conv_transpose2d",
        (("input", (1, 64, 28, 28)), ("weight", (64, 32, 4, 4))),
        {"stride": 2, "padding": 1},
    ),
)


@dataclass
class Sample:
    """One request: wall time and server total in ms, the output, and the program counters'
    change on the device (``None`` where the server reports no counters)."""

    wall_ms: float
    server_ms: float
    output: np.ndarray
    programs: dict[str, int] | None


@dataclass
class Result:
    """Every sample of one device and shape."""

    device: str
    shape: Shape
    cold: Sample | None = None
    cold_steady: list[Sample] = field(default_factory=list)
    warm: list[Sample] = field(default_factory=list)
    warm_steady: list[Sample] = field(default_factory=list)
    cache_files: dict[str, int] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(cache_home: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("CLCONV_") and key not in CACHE_VARIABLES
    }
    env["XDG_CACHE_HOME"] = str(cache_home)
    env["CLCONV_LOG_LEVEL"] = "INFO"
    env.update(extra)
    return env


def start_server(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``python -m clconv serve`` and wait until ``/readyz`` returns 200."""
    port = free_port()
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "clconv", "serve", "--host", "127.0.0.1", "--port", str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO_ROOT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"clconv server exited with {process.returncode}; see {log_path}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop_server(process)
    raise RuntimeError(f"clconv server not ready within {START_TIMEOUT_S:.0f} s; see {log_path}")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def request_body(shape: Shape, device: str) -> bytes:
    rng = np.random.default_rng(0)
    body: dict[str, Any] = {**shape.fields, "device": device}
    for name, dims in shape.tensors:
        array = rng.standard_normal(dims, dtype=np.float32)
        body[name] = {
            "shape": list(dims),
            "dtype": "float32",
            "base64": base64.b64encode(array.tobytes()).decode("ascii"),
        }
    return json.dumps(body).encode()


def program_counts(client: httpx.Client, device: str) -> dict[str, int] | None:
    """Return the device's ``programs`` counters from ``GET /v1/devices``, if it has them."""
    for entry in client.get("/v1/devices").json()["devices"]:
        if entry["id"] == device:
            counts = entry.get("programs")
            return dict(counts) if isinstance(counts, dict) else None
    raise RuntimeError(f"device {device} is not listed by the server")


def send(client: httpx.Client, shape: Shape, body: bytes, device: str) -> Sample:
    before = program_counts(client, device)
    started = time.perf_counter()
    response = client.post(
        f"/v1/{shape.op}", content=body, headers={"Content-Type": "application/json"}
    )
    response.raise_for_status()
    reply = response.json()
    output = reply["output"]
    array = np.frombuffer(base64.b64decode(output["base64"]), dtype="<f4")
    wall_ms = (time.perf_counter() - started) * 1e3
    after = program_counts(client, device)
    change = None
    if before is not None and after is not None:
        change = {key: after[key] - before.get(key, 0) for key in after}
    return Sample(wall_ms, float(reply["timings_ms"]["total"]), array, change)


def run_process(
    env: dict[str, str], log_path: Path, shape: Shape, device: str, steady: int
) -> tuple[Sample, list[Sample]]:
    """Start a server, send the first request and ``steady`` more, and stop it."""
    body = request_body(shape, device)
    process, url = start_server(env, log_path)
    try:
        with httpx.Client(base_url=url, timeout=600) as client:
            first = send(client, shape, body, device)
            rest = [send(client, shape, body, device) for _ in range(steady)]
    finally:
        stop_server(process)
    return first, rest


def count_cache_files(cache_home: Path) -> dict[str, int]:
    """Count the files in each cache folder under ``cache_home`` (clconv, pocl, pyopencl)."""
    counts: dict[str, int] = {}
    for folder in sorted(cache_home.iterdir()):
        if folder.is_dir():
            counts[folder.name] = sum(1 for path in folder.rglob("*") if path.is_file())
    return counts


def cpu_devices(env: dict[str, str], log_path: Path) -> list[str]:
    """Return the CPU device ids a server lists, without the Oclgrind simulator."""
    process, url = start_server({**env, "CLCONV_WARMUP": "0"}, log_path)
    try:
        listing = httpx.get(f"{url}/v1/devices", timeout=60).json()
    finally:
        stop_server(process)
    return [
        entry["id"]
        for entry in listing["devices"]
        if entry["type"] == "cpu" and "oclgrind" not in entry["platform"].lower()
    ]


def measure(device: str, shape: Shape, args: argparse.Namespace, extra: dict[str, str]) -> Result:
    cache_home = Path(tempfile.mkdtemp(prefix="clconv-first-request-"))
    log_path = cache_home / "server.log"
    env = server_env(cache_home, extra)
    result = Result(device, shape)
    try:
        result.cold, result.cold_steady = run_process(env, log_path, shape, device, args.steady)
        result.cache_files = count_cache_files(cache_home)
        for _ in range(args.rounds):
            first, rest = run_process(env, log_path, shape, device, args.steady)
            result.warm.append(first)
            result.warm_steady += rest
            if not np.array_equal(first.output, result.cold.output):
                difference = float(np.max(np.abs(first.output - result.cold.output)))
                print(
                    f"WARNING: {device} {shape.name}: output after the restart differs from "
                    f"the cold one by up to {difference:g}",
                    file=sys.stderr,
                )
    finally:
        if args.keep:
            print(f"kept {cache_home}", file=sys.stderr)
        else:
            shutil.rmtree(cache_home, ignore_errors=True)
    return result


def median(values: list[float]) -> float:
    return statistics.median(values)


def describe_programs(samples: list[Sample]) -> str:
    """Describe the programs each sample loaded or built, as ``disk 2, source 0``; restarts
    that differ are separated by semicolons. ``n/a``: the server reports no counters."""
    labels = {"loaded_from_disk": "disk", "built_from_source": "source"}
    texts: list[str] = []
    for sample in samples:
        if sample.programs is None:
            return "n/a"
        counts = sample.programs
        texts.append(", ".join(f"{labels[key]} {counts.get(key, 0)}" for key in labels))
    return "; ".join(dict.fromkeys(texts))


def render(results: list[Result], args: argparse.Namespace, load: tuple[float, float]) -> str:
    lines = [
        "| device | shape | cold first wall (ms) | warm first wall (ms) | steady wall (ms) "
        "| warm / steady wall | cold / steady wall | warm first server (ms) "
        "| steady server (ms) | warm / steady server | programs per warm first |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for result in results:
        assert result.cold is not None
        steady_wall = median([sample.wall_ms for sample in result.warm_steady])
        steady_server = median([sample.server_ms for sample in result.warm_steady])
        warm_wall = median([sample.wall_ms for sample in result.warm])
        warm_server = median([sample.server_ms for sample in result.warm])
        lines.append(
            f"| {result.device} | {result.shape.name} | {result.cold.wall_ms:.0f} "
            f"| {warm_wall:.0f} | {steady_wall:.0f} | {warm_wall / steady_wall:.2f}x "
            f"| {result.cold.wall_ms / steady_wall:.2f}x | {warm_server:.0f} "
            f"| {steady_server:.0f} | {warm_server / steady_server:.2f}x "
            f"| {describe_programs(result.warm)} |"
        )
    cache_notes = [
        f"- {result.device}, {result.shape.name}: "
        + (", ".join(f"{name} {count}" for name, count in result.cache_files.items()) or "none")
        for result in results
    ]
    settings = " ".join(args.env) or "none"
    header = [
        f"Command: `python bench/first_request.py {' '.join(sys.argv[1:])}`".replace("  ", " "),
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {_cpu_name()}, Python "
        f"{platform.python_version()}, Linux {platform.release()}. Extra server environment: "
        f"{settings}. The 1-minute load average was {load[0]:.1f} before the run and "
        f"{load[1]:.1f} after it.",
        "",
        f"Warm first: median of {args.rounds} restarts on the same cache folder. Steady: median "
        f"of the {args.steady} requests after each of those first requests. Target: warm first "
        f"at most {TARGET_RATIO:g}x steady wall time.",
        "",
    ]
    footer = [
        "",
        "Files in each cache folder under the empty `XDG_CACHE_HOME` after the cold process:",
        "",
        *cache_notes,
    ]
    return "\n".join([*header, *lines, *footer]) + "\n"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def parse_env(pairs: list[str]) -> dict[str, str]:
    extra: dict[str, str] = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise SystemExit(f"--env takes KEY=VALUE, got {pair!r}")
        extra[key] = value
    return extra


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steady", type=int, default=10, help="requests after each first one")
    parser.add_argument("--rounds", type=int, default=3, help="restarts on the warm cache")
    parser.add_argument(
        "--device", action="append", default=[], help="device id (default: every CPU device)"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        help="KEY=VALUE added to the server's environment, such as POCL_KERNEL_CACHE=0",
    )
    parser.add_argument("--keep", action="store_true", help="keep the cache folders and logs")
    parser.add_argument("--out", type=Path, help="also write the Markdown report to this file")
    args = parser.parse_args()
    extra = parse_env(args.env)

    load_before = os.getloadavg()[0]
    probe_home = Path(tempfile.mkdtemp(prefix="clconv-first-request-"))
    try:
        devices = args.device or cpu_devices(
            server_env(probe_home, extra), probe_home / "server.log"
        )
    finally:
        shutil.rmtree(probe_home, ignore_errors=True)
    results = []
    for device in devices:
        for shape in SHAPES:
            print(f"measuring {device}: {shape.name}", file=sys.stderr)
            results.append(measure(device, shape, args, extra))
    report = render(results, args, (load_before, os.getloadavg()[0]))
    print(report)
    if args.out is not None:
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
