"""Client subcommands of ``clconv``: ``devices``, ``conv`` and ``plan`` against a running server.

These talk to the HTTP API with ``httpx`` directly, so the service does not depend on the SDK in
``clients/python``. Tensors travel in the binary framing: a JSON header of
``Inference-Header-Content-Length`` bytes, then each tensor's little-endian bytes in the order
the header names them. Output is a table by default and the response JSON with ``--json``.

Exit status: 0 on success, 1 when the server rejects or fails the request, 2 for invalid
arguments or unreadable files, 3 when the server cannot be reached or the call times out.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 60.0
# A call shows progress on stderr once it has run this long.
PROGRESS_DELAY_S = 1.0
HEADER_LENGTH = "Inference-Header-Content-Length"
CLIENT_COMMANDS = ("devices", "conv", "plan")
OPERATIONS = (
    "conv2d",
    "conv_transpose2d",
    "depthwise_separable_conv2d",
    "spatially_separable_conv2d",
)
TENSOR_NAMES = (
    "input",
    "weight",
    "bias",
    "depthwise_weight",
    "depthwise_bias",
    "pointwise_weight",
    "pointwise_bias",
    "vertical_weight",
    "vertical_bias",
    "horizontal_weight",
    "horizontal_bias",
)
RESERVED_PARAMS = frozenset({*TENSOR_NAMES, "op", "device", "output_encoding"})
EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_STATUS_HELP = (
    "exit status: 0 success, 1 the server rejected or failed the request, "
    + "2 invalid arguments or unreadable files, "
    + "3 the server was unreachable or did not answer in time"
)


class UsageError(Exception):
    """An invalid argument or an unreadable input file; exits with status 2."""


class ServerRejected(Exception):
    """The server returned an error status; exits with status 1."""

    def __init__(self, status: int, code: str, message: str, field: str | None) -> None:
        where = f" (field {field})" if field else ""
        super().__init__(f"{status} {code}{where}: {message}")


# Argument parsing.


def add_client_commands(commands: Any) -> None:
    """Add the ``devices``, ``conv`` and ``plan`` subparsers to ``clconv``'s subparsers."""
    devices = commands.add_parser(
        "devices", help="list the OpenCL devices of a running server", epilog=EXIT_STATUS_HELP
    )
    _add_connection_options(devices, with_device=False)

    conv = commands.add_parser(
        "conv",
        help="run an operation on .npy files and write the output .npy",
        description="Send .npy tensors to a running server, run OP and save the output.",
        epilog=EXIT_STATUS_HELP,
    )
    conv.add_argument("op", choices=OPERATIONS, metavar="OP", help=", ".join(OPERATIONS))
    conv.add_argument("--input", required=True, type=Path, help="input .npy, [N, C, H, W]")
    _add_tensor_options(conv)
    conv.add_argument("--out", required=True, type=Path, help="where to write the output .npy")
    _add_connection_options(conv)

    plan = commands.add_parser(
        "plan",
        help="report output shape, FLOPs, params and algorithm without running",
        description="Ask a running server what OP would do; only shapes are sent.",
        epilog=EXIT_STATUS_HELP,
    )
    plan.add_argument("op", choices=OPERATIONS, metavar="OP", help=", ".join(OPERATIONS))
    plan.add_argument("--input", type=Path, help="input .npy (only its header is read)")
    plan.add_argument("--input-shape", help="input shape instead of --input, such as 1,3,224,224")
    plan.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME=DIMS",
        help="a tensor's shape instead of its file, such as weight=16,3,3,3 (repeatable)",
    )
    plan.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        help="dtype of tensors given by shape (default: the input file's, else float32)",
    )
    _add_tensor_options(plan)
    _add_connection_options(plan)


def _add_tensor_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weight", type=Path, help="weight .npy")
    parser.add_argument("--bias", type=Path, help="bias .npy")
    parser.add_argument(
        "--tensor",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="another tensor by its API name, such as depthwise_weight=dw.npy (repeatable)",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an API setting such as stride=2, padding=1,2, padding=same or activation=relu; "
        "VALUE is JSON, a comma-separated list of numbers, or a string (repeatable)",
    )


def _add_connection_options(parser: argparse.ArgumentParser, *, with_device: bool = True) -> None:
    parser.add_argument("--url", default=DEFAULT_URL, help=f"server URL (default {DEFAULT_URL})")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds to wait for connecting and for the response (default {DEFAULT_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help="API key sent as 'Authorization: Bearer KEY' to a server started with "
        "CLCONV_API_KEYS (default: the CLCONV_API_KEY environment variable, else none)",
    )
    parser.add_argument("--json", action="store_true", help="print the response as JSON")
    parser.add_argument("--quiet", action="store_true", help="show no progress on stderr")
    if with_device:
        parser.add_argument(
            "--device", help="device id such as intel:0 (default: the server's default)"
        )


def parse_param(text: str) -> tuple[str, Any]:
    """Split ``KEY=VALUE``; VALUE is JSON, a comma-separated list of numbers, or a string."""
    key, separator, raw = text.partition("=")
    key = key.strip()
    if not separator or not key:
        raise UsageError(f"--param {text!r} is not KEY=VALUE; write it like stride=2")
    if key in RESERVED_PARAMS:
        hint = "pass tensors with --input, --weight, --bias or --tensor NAME=FILE"
        raise UsageError(f"--param {key} is not a setting; {hint}, and the device with --device")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        pass
    if "," in raw:
        try:
            return key, [_parse_number(part) for part in raw.split(",")]
        except ValueError:
            pass
    return key, raw


def _parse_number(text: str) -> int | float:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        return float(text)


def parse_shape(text: str, option: str) -> tuple[int, ...]:
    """Parse ``1,3,224,224`` (or ``1x3x224x224``) into positive sizes."""
    parts = text.replace("x", ",").split(",")
    try:
        shape = tuple(int(part) for part in parts)
    except ValueError:
        raise UsageError(f"{option} {text!r} is not a shape; write it like 1,3,224,224") from None
    if any(size <= 0 for size in shape):
        raise UsageError(f"{option} {text!r} has a size below 1; every size must be positive")
    return shape


def _named_tensor_files(args: argparse.Namespace) -> dict[str, Path]:
    files: dict[str, Path] = {}
    if args.weight is not None:
        files["weight"] = args.weight
    if args.bias is not None:
        files["bias"] = args.bias
    for item in args.tensor:
        name, separator, path = item.partition("=")
        if not separator or name not in TENSOR_NAMES or name == "input":
            names = ", ".join(name for name in TENSOR_NAMES if name != "input")
            raise UsageError(f"--tensor {item!r} must be NAME=FILE with NAME one of {names}")
        files[name] = Path(path)
    return files


def _load_npy(path: Path, *, header_only: bool = False) -> np.ndarray:
    """Read a .npy file; with ``header_only`` the data is memory-mapped and never read."""
    try:
        array = np.load(path, mmap_mode="r" if header_only else None, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {path} as a .npy array: {error}") from None
    if not isinstance(array, np.ndarray):
        raise UsageError(f"{path} is not a single .npy array; save it with numpy.save")
    return array


def _params(args: argparse.Namespace) -> dict[str, Any]:
    return dict(parse_param(text) for text in args.param)


# Request bodies and the binary framing.


def _tensor_header(array: np.ndarray, chunks: list[bytes]) -> dict[str, Any]:
    raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    chunks.append(raw)
    return {"shape": list(array.shape), "dtype": array.dtype.name, "binary_data_size": len(raw)}


def frame_request(
    tensors: dict[str, np.ndarray],
    params: dict[str, Any],
    device: str | None,
) -> tuple[bytes, dict[str, str]]:
    """Build a framed request body; the bytes follow in the order the header lists tensors."""
    chunks: list[bytes] = []
    header: dict[str, Any] = {
        name: _tensor_header(array, chunks) for name, array in tensors.items()
    }
    header.update(params)
    if device:
        header["device"] = device
    header["output_encoding"] = "binary"
    encoded = json.dumps(header, allow_nan=True, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(encoded))}
    return b"".join([encoded, *chunks]), headers


def decode_output(response: httpx.Response) -> tuple[dict[str, Any], np.ndarray]:
    """Split a response into its JSON body (without ``output``) and the output array."""
    declared = response.headers.get(HEADER_LENGTH)
    content = response.content
    length = int(declared) if declared is not None else len(content)
    body = json.loads(content[:length])
    tensor = body.pop("output")
    dtype = np.dtype(tensor["dtype"]).newbyteorder("<")
    if "binary_data_size" in tensor:
        raw = content[length : length + int(tensor["binary_data_size"])]
        flat = np.frombuffer(raw, dtype=dtype)
    elif "base64" in tensor:
        flat = np.frombuffer(base64.b64decode(tensor["base64"]), dtype=dtype)
    else:
        flat = np.asarray(tensor["data"], dtype=dtype).reshape(-1)
    output = flat.reshape(tensor["shape"]).astype(dtype.newbyteorder("="))
    return body, output


# Progress on stderr.


class Progress:
    """Show that a call is running once it has taken more than ``PROGRESS_DELAY_S``.

    On a terminal a spinner with the elapsed seconds redraws one line and is erased at the end.
    On a pipe or file one line is written when the delay passes and one when the call ends.
    """

    FRAMES = "|/-\\"

    def __init__(self, label: str, stream: IO[str] | None = None, enabled: bool = True) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = 0.0

    def __enter__(self) -> Progress:
        self._started = time.monotonic()
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._done.set()
        if self.enabled:
            self._thread.join()

    def _is_tty(self) -> bool:
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def _run(self) -> None:
        if self._done.wait(PROGRESS_DELAY_S):
            return
        if self._is_tty():
            for frame in itertools.cycle(self.FRAMES):
                elapsed = time.monotonic() - self._started
                self.stream.write(f"\r{frame} {self.label} {elapsed:5.1f} s")
                self.stream.flush()
                if self._done.wait(0.1):
                    break
            self.stream.write("\r\x1b[K")
        else:
            self.stream.write(f"clconv: {self.label}: still running after {PROGRESS_DELAY_S:g} s\n")
            self.stream.flush()
            self._done.wait()
            elapsed = time.monotonic() - self._started
            self.stream.write(f"clconv: {self.label}: finished in {elapsed:.1f} s\n")
        self.stream.flush()


# HTTP.


def _request(
    args: argparse.Namespace,
    method: str,
    path: str,
    *,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """Send one request with progress shown; raise ``ServerRejected`` on an error status."""
    import httpx

    url = f"{args.url.rstrip('/')}{path}"
    api_key = args.api_key or os.environ.get("CLCONV_API_KEY")
    if api_key:
        headers = {**(headers or {}), "Authorization": f"Bearer {api_key}"}
    with Progress(f"{method} {path}", enabled=not args.quiet):
        response = httpx.request(
            method, url, content=content, headers=headers, timeout=args.timeout
        )
    if response.status_code >= 400:
        raise _rejected(response)
    return response


def _rejected(response: httpx.Response) -> ServerRejected:
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    return ServerRejected(
        response.status_code,
        str(error.get("code") or "http_error"),
        str(error.get("message") or response.text[:200]),
        error.get("field"),
    )


# Commands.


def run_devices(args: argparse.Namespace) -> int:
    listing = _request(args, "GET", "/v1/devices").json()
    if args.json:
        print(json.dumps(listing, indent=2))
        return EXIT_OK
    rows = [
        [
            ("*" if device.get("default") else " ") + str(device.get("id")),
            str(device.get("type")),
            str(device.get("name")),
            str(device.get("platform")),
            str(device.get("compute_units")),
            f"{int(device.get('global_mem_bytes', 0)) / 2**30:.1f} GiB",
            "yes" if device.get("fp64") else "no",
            str(device.get("driver_version")),
        ]
        for device in listing.get("devices", [])
    ]
    header = ["ID", "TYPE", "NAME", "PLATFORM", "CUS", "GLOBAL MEM", "FP64", "DRIVER"]
    print(format_table(header, rows))
    print(f"default: {listing.get('default')} (marked *)")
    for skipped in listing.get("skipped", []):
        print(f"skipped {skipped.get('platform')}: {skipped.get('reason')}")
    return EXIT_OK


def run_conv(args: argparse.Namespace) -> int:
    tensors = {"input": _load_npy(args.input)}
    for name, path in _named_tensor_files(args).items():
        tensors[name] = _load_npy(path)
    content, headers = frame_request(tensors, _params(args), args.device)
    response = _request(args, "POST", f"/v1/{args.op}", content=content, headers=headers)
    body, output = decode_output(response)
    try:
        np.save(args.out, output)
    except OSError as error:
        raise UsageError(f"cannot write {args.out}: {error}") from None
    if args.json:
        print(
            json.dumps({**body, "output_file": str(args.out), "output_shape": list(output.shape)})
        )
        return EXIT_OK
    device = body.get("device", {})
    timings = body.get("timings_ms", {})
    rows = [
        ["op", str(body.get("op"))],
        ["device", f"{device.get('id')} ({device.get('name')}, {device.get('platform')})"],
        ["algorithm", " + ".join(body.get("algorithm", []))],
        ["output", f"{list(output.shape)} {output.dtype} -> {args.out}"],
        ["flops", f"{body.get('flops', 0):,}"],
        ["params", f"{body.get('params', 0):,}"],
        ["timings (ms)", "  ".join(f"{k} {v:.3f}" for k, v in timings.items())],
    ]
    print(format_table(None, rows))
    return EXIT_OK


def _plan_tensors(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Collect every tensor's shape and dtype from .npy headers and shape options."""
    shapes: dict[str, tuple[tuple[int, ...], str | None]] = {}
    if args.input is not None and args.input_shape is not None:
        raise UsageError("pass --input or --input-shape, not both")
    if args.input is not None:
        array = _load_npy(args.input, header_only=True)
        shapes["input"] = (array.shape, array.dtype.name)
    elif args.input_shape is not None:
        shapes["input"] = (parse_shape(args.input_shape, "--input-shape"), None)
    else:
        raise UsageError("plan needs --input FILE or --input-shape such as 1,3,224,224")
    for name, path in _named_tensor_files(args).items():
        array = _load_npy(path, header_only=True)
        shapes[name] = (array.shape, array.dtype.name)
    for item in args.shape:
        name, separator, dims = item.partition("=")
        if not separator or name not in TENSOR_NAMES:
            raise UsageError(f"--shape {item!r} must be NAME=DIMS such as weight=16,3,3,3")
        shapes[name] = (parse_shape(dims, f"--shape {name}"), None)

    default_dtype = args.dtype or shapes["input"][1] or "float32"
    return {
        name: {"shape": list(shape), "dtype": dtype or default_dtype}
        for name, (shape, dtype) in shapes.items()
    }


def run_plan(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"op": args.op, **_plan_tensors(args), **_params(args)}
    if args.device:
        body["device"] = args.device
    content = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    plan = _request(args, "POST", "/v1/plan", content=content, headers=headers).json()
    if args.json:
        print(json.dumps(plan))
        return EXIT_OK
    device = plan.get("device", {})
    moved = plan.get("bytes_moved", {})
    rows = [
        ["op", str(plan.get("op"))],
        ["output shape", f"{plan.get('output_shape')} {plan.get('dtype', '')}"],
        ["macs", f"{plan.get('macs', 0):,}"],
        ["flops", f"{plan.get('flops', 0):,}"],
        ["params", f"{plan.get('params', 0):,}"],
        ["receptive field", str(plan.get("receptive_field"))],
        ["effective stride", str(plan.get("effective_stride"))],
        ["bytes moved", "  ".join(f"{k} {v:,}" for k, v in moved.items())],
        ["algorithm", " + ".join(plan.get("algorithm", []))],
        ["device", f"{device.get('id')} ({device.get('name')})"],
    ]
    print(format_table(None, rows))
    return EXIT_OK


def format_table(header: Sequence[str] | None, rows: Sequence[Sequence[str]]) -> str:
    """Align columns with two spaces between them; ``header`` is underlined when given."""
    lines = [list(header)] if header else []
    lines.extend(list(row) for row in rows)
    if not lines:
        return ""
    widths = [max(len(line[index]) for line in lines) for index in range(len(lines[0]))]
    rendered = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    ]
    if header:
        rendered.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(rendered)


COMMANDS = {"devices": run_devices, "conv": run_conv, "plan": run_plan}


def _fail(message: str, status: int) -> int:
    print(f"clconv: {message}", file=sys.stderr)
    return status


def run_client_command(args: argparse.Namespace) -> int:
    """Run ``devices``, ``conv`` or ``plan``; print errors on stderr and return the exit status."""
    # NOTE: httpx is only in the `test` extra of the clconv distribution, not in its
    # dependencies, so an installation without it gets this message instead of a traceback.
    try:
        import httpx
    except ImportError:
        return _fail(
            "the client commands need httpx; install it with `pip install httpx`", EXIT_USAGE
        )
    if not args.timeout > 0:
        return _fail(
            f"--timeout must be a positive number of seconds, got {args.timeout}", EXIT_USAGE
        )
    try:
        return COMMANDS[args.command](args)
    except UsageError as error:
        return _fail(str(error), EXIT_USAGE)
    except ServerRejected as error:
        return _fail(f"the server rejected the request: {error}", EXIT_REJECTED)
    except httpx.TimeoutException:
        hint = "pass a larger --timeout if the call needs longer"
        return _fail(
            f"{args.url} did not answer within {args.timeout:g} s; {hint}", EXIT_UNREACHABLE
        )
    except httpx.TransportError as error:
        hint = "start a server with `clconv serve` or pass --url"
        return _fail(
            f"cannot reach {args.url} ({type(error).__name__}: {error}); {hint}", EXIT_UNREACHABLE
        )
    except (ValueError, KeyError) as error:
        return _fail(f"the server's response could not be read: {error!r}", EXIT_REJECTED)
