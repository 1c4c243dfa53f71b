"""``clconv tune``: measure the conv2d algorithms of some shapes on local devices and store the
winners in the tuning database.

Shapes come from request-body JSON files (any operation, as sent to ``POST /v1/plan``: tensors
may give only their ``shape``) and from a built-in list of common layers. Every conv2d stage of
every shape is tuned once per device and shape class.

Exit status: 0 when every shape class got a winner, 1 when some got none (every candidate
failed), 2 for invalid arguments, unreadable files or a device that is not available.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_NO_WINNER = 1
EXIT_USAGE = 2
DEFAULT_BUDGET_S = 10.0
ALGORITHM_PREFIX = "conv2d_"


def _shape_only(*shape: int) -> dict[str, Any]:
    return {"shape": list(shape), "dtype": "float32"}


# Layers of the benchmark's base suite (bench/suite.py) that run conv2d stages, as shape-only
# request bodies. The transposed convolutions are left out because they have one algorithm.
BUILTIN_SHAPES: dict[str, dict[str, Any]] = {
    "resnet50_3x3": {
        "op": "conv2d",
        "input": _shape_only(1, 64, 56, 56),
        "weight": _shape_only(64, 64, 3, 3),
        "padding": 1,
    },
    "resnet50_1x1": {
        "op": "conv2d",
        "input": _shape_only(1, 256, 56, 56),
        "weight": _shape_only(64, 256, 1, 1),
    },
    "mobilenetv2_depthwise": {
        "op": "conv2d",
        "input": _shape_only(1, 144, 56, 56),
        "weight": _shape_only(144, 1, 3, 3),
        "padding": 1,
        "groups": 144,
    },
    "mobilenetv2_pointwise": {
        "op": "conv2d",
        "input": _shape_only(1, 144, 56, 56),
        "weight": _shape_only(24, 144, 1, 1),
    },
    "resnext_grouped": {
        "op": "conv2d",
        "input": _shape_only(1, 128, 56, 56),
        "weight": _shape_only(128, 4, 3, 3),
        "padding": 1,
        "groups": 32,
    },
    "deeplab_dilated": {
        "op": "conv2d",
        "input": _shape_only(1, 256, 33, 33),
        "weight": _shape_only(256, 256, 3, 3),
        "padding": 2,
        "dilation": 2,
    },
    "stem_7x7": {
        "op": "conv2d",
        "input": _shape_only(1, 3, 224, 224),
        "weight": _shape_only(64, 3, 7, 7),
        "stride": 2,
        "padding": 3,
    },
    "separable_3x1_1x3": {
        "op": "spatially_separable_conv2d",
        "input": _shape_only(1, 64, 112, 112),
        "vertical_weight": _shape_only(64, 64, 3, 1),
        "horizontal_weight": _shape_only(64, 64, 1, 3),
        "padding": 1,
    },
}


class UsageError(Exception):
    """An invalid argument, an unreadable file or an unknown device; exits with status 2."""


def add_tune_command(commands: Any) -> None:
    """Add the ``tune`` subparser to ``clconv``'s subparsers."""
    tune = commands.add_parser(
        "tune",
        help="measure the conv2d algorithms of shapes on local devices and store the winners",
        description=(
            "Time every applicable conv2d algorithm of each shape on each local OpenCL device "
            "and store the fastest in the tuning database (CLCONV_TUNING_DIR), which a server "
            "reads before its rule. Without FILE, tunes the built-in shapes: "
            + ", ".join(BUILTIN_SHAPES)
            + "."
        ),
        epilog=(
            "exit status: 0 every shape class got a winner, 1 some got none, "
            "2 invalid arguments, unreadable files or an unknown device"
        ),
    )
    tune.add_argument(
        "files",
        nargs="*",
        type=Path,
        metavar="FILE",
        help="request body JSON with 'op' (default conv2d); tensors may give only 'shape'",
    )
    tune.add_argument(
        "--builtin",
        action="store_true",
        help="also tune the built-in shapes when FILE is given",
    )
    tune.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="ID",
        help="device id such as intel:0 (repeatable; default every device but the simulator)",
    )
    tune.add_argument(
        "--budget-s",
        type=float,
        default=DEFAULT_BUDGET_S,
        help=f"seconds of measurement per shape class and device (default {DEFAULT_BUDGET_S:g})",
    )
    tune.add_argument(
        "--tuning-dir",
        default=None,
        help="database folder (overrides CLCONV_TUNING_DIR; 'off' measures without storing)",
    )
    tune.add_argument("--json", action="store_true", help="print the results as JSON")


@dataclass
class _Shape:
    label: str
    op: str
    body: dict[str, Any]


def _load_shapes(args: argparse.Namespace) -> list[_Shape]:
    shapes: list[_Shape] = []
    for path in args.files:
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as error:
            raise UsageError(f"cannot read {path}: {error}") from None
        except json.JSONDecodeError as error:
            raise UsageError(f"{path} is not valid JSON: {error}") from None
        if not isinstance(body, dict):
            raise UsageError(f"{path} must hold a request body object, not {type(body).__name__}")
        op = body.pop("op", "conv2d")
        shapes.append(_Shape(path.name, str(op), body))
    if not args.files or args.builtin:
        shapes += [
            _Shape(name, body["op"], {k: v for k, v in body.items() if k != "op"})
            for name, body in BUILTIN_SHAPES.items()
        ]
    return shapes


def run_tune(args: argparse.Namespace) -> int:
    """Run ``clconv tune``; print errors on stderr and return the exit status."""
    try:
        return _tune(args)
    except UsageError as error:
        print(f"clconv: {error}", file=sys.stderr)
        return EXIT_USAGE


def _tune(args: argparse.Namespace) -> int:
    from clconv.core.planner import parse_request
    from clconv.core.stages import ConvStage
    from clconv.errors import ClconvError
    from clconv.limits import device_budget_bytes
    from clconv.runtime.devices import discover_devices
    from clconv.runtime.selection import device_profile
    from clconv.runtime.tuner import measure_stage
    from clconv.runtime.tuning import DeviceKey, TuningDatabase, shape_class
    from clconv.settings import Settings, read_tuning_dir

    if not args.budget_s > 0:
        raise UsageError(f"--budget-s must be a positive number of seconds, got {args.budget_s}")
    try:
        settings = Settings.from_env()
    except ValueError as error:
        raise UsageError(f"invalid setting: {error}") from None
    folder = settings.tuning_dir
    if args.tuning_dir is not None:
        folder = read_tuning_dir({"CLCONV_TUNING_DIR": args.tuning_dir})
    database = None if folder is None else TuningDatabase(folder)

    stages: list[tuple[str, ConvStage, str]] = []
    for shape in _load_shapes(args):
        try:
            plan = parse_request(shape.op, shape.body, allow_shape_only=True, select=False)
        except ClconvError as error:
            message = f"{shape.label} is not a valid {shape.op} body: {error.message}"
            raise UsageError(message) from None
        stages += [(shape.label, s, plan.dtype) for s in plan.stages if isinstance(s, ConvStage)]

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    registry = discover_devices()
    devices = [device for device in registry.devices if not device.is_simulator]
    if args.device:
        known = {device.id: device for device in registry.devices}
        unknown = [name for name in args.device if name not in known]
        if unknown:
            listed = ", ".join(known) or "none"
            raise UsageError(f"device {unknown[0]!r} is not available; use one of: {listed}")
        devices = [known[name] for name in args.device]
    if not devices:
        raise UsageError("no usable OpenCL device found; see `clconv devices` on a server")

    rows: list[dict[str, Any]] = []
    status = EXIT_OK
    for device in devices:
        done: set[str] = set()
        profile = device_profile(device)
        for label, stage, dtype in stages:
            key = shape_class(stage, dtype).key
            if key in done:
                continue
            done.add(key)
            if dtype == "float64" and not device.fp64:
                print(f"skipping {label} on {device.id}: no float64 support", file=sys.stderr)
                continue
            print(f"tuning {label} on {device.id}: {key}", file=sys.stderr, flush=True)
            result = measure_stage(
                stage,
                dtype,
                device,
                profile,
                args.budget_s,
                max_device_bytes=device_budget_bytes(device, settings),
            )
            stored = None
            if result.winner is None:
                status = EXIT_NO_WINNER
            elif database is not None:
                entry = result.entry(stage, args.budget_s)
                stored = str(database.record(DeviceKey.of(device), key, entry))
            rows.append(
                {
                    "device": device.id,
                    "shape": label,
                    "shape_class": key,
                    "timings_ms": result.timings_ms,
                    "failed": result.failed,
                    "unmeasured": result.unmeasured,
                    "winner": result.winner,
                    "rule": result.rule,
                    "speedup": result.speedup,
                    "stored_in": stored,
                }
            )

    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(_table(rows))
        if database is None:
            print("tuning database off: nothing was stored", file=sys.stderr)
        elif not any(row["stored_in"] for row in rows):
            print("no winner to store; raise --budget-s (builds count against it)", file=sys.stderr)
        else:
            print(f"stored in {database.folder}", file=sys.stderr)
        if not rows:
            print("the requests hold no conv2d stage to tune", file=sys.stderr)
    return status


def _short(name: str) -> str:
    return name.removeprefix(ALGORITHM_PREFIX)


def _table(rows: list[dict[str, Any]]) -> str:
    from clconv.cli_client import format_table

    lines = []
    for row in rows:
        times = sorted(row["timings_ms"].items(), key=lambda item: item[1])
        candidates = [f"{_short(name)} {ms:.3f}" for name, ms in times]
        candidates += [f"{_short(name)} failed" for name in row["failed"]]
        candidates += [f"{_short(name)} unmeasured" for name in row["unmeasured"]]
        speedup = row["speedup"]
        lines.append(
            [
                row["device"],
                row["shape"],
                row["shape_class"],
                ", ".join(candidates),
                _short(row["winner"]) if row["winner"] else "none",
                _short(row["rule"]),
                "-" if speedup is None else f"{speedup:.2f}x",
            ]
        )
    header = ["DEVICE", "SHAPE", "SHAPE CLASS", "CANDIDATES (ms)", "WINNER", "RULE", "SPEED-UP"]
    return format_table(header, lines)
