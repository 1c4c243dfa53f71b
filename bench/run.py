"""Benchmark clconv's OpenCL kernels against PyTorch CPU on every CPU OpenCL device.

Runs the suite of ``bench/suite.py`` through clconv's core (no HTTP) and, in the same process,
the same convolutions in PyTorch with one thread per CPU, then writes ``README.md``,
``results.json`` and ``ratios.png`` to ``--out``. Usage: ``python bench/run.py --out DIR``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script: make the repository root importable so ``bench.*`` resolves.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Measure cold builds: without these, PyOpenCL's binary cache (used for Intel's runtime) and
# PoCL's kernel cache make every build after the first benchmark run a disk read. Both are
# read when pyopencl is imported and when PoCL starts, so they are set before either. Set
# them to 0 or 1 in the environment to measure cached builds instead.
os.environ.setdefault("PYOPENCL_NO_CACHE", "1")
os.environ.setdefault("POCL_KERNEL_CACHE", "0")

import numpy as np
import torch

from bench import report
from bench.measure import (
    ResidentRequest,
    Stats,
    measure_copy_gbs,
    measure_launch_overhead,
    measure_peak_gflops,
    time_host_calls,
    torch_forward,
)
from bench.suite import (
    BASE_SUITE,
    BATCH_SUITE,
    DEFAULT_DEEPBENCH_CSV,
    Case,
    deepbench_cases,
    describe_layers,
    make_arrays,
    request_body,
)
from clconv.core.planner import summarize
from clconv.engine import Engine
from clconv.runtime.devices import Device
from clconv.runtime.executor import execute
from clconv.settings import Settings

logger = logging.getLogger("bench")

# Timed runs per shape; fewer only when a shape would exceed SHAPE_BUDGET_S.
RUNS = 30
MIN_RUNS = 5
# Untimed runs of each kind before timing (the first request also builds the program).
WARMUP_RUNS = 2
# Wall-time budget of one shape's timed runs on PyTorch and every device together, in s.
SHAPE_BUDGET_S = 10.0
# Timed runs per block: each side runs this many calls back to back, as a steady stream of
# requests would. Timing PyTorch one call at a time between OpenCL launches inflated its median
# about 6x (ResNet-50 3x3: 13.1 ms interleaved, 2.0 ms in blocks, same machine and hour). The
# likely cause is OpenMP threads that had gone to sleep or met the OpenCL runtime's threads.
BLOCK = 5
# Pause between PyTorch and OpenCL work. PyTorch's OpenMP workers spin after a call (about
# 10 ms of CPU time within the next 20 ms, measured with 2 threads), which would slow whatever
# runs next.
SETTLE_S = 0.02


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder for the report")
    parser.add_argument(
        "--deepbench",
        type=Path,
        default=DEFAULT_DEEPBENCH_CSV,
        help=f"DeepBench convolution list (CSV); default {DEFAULT_DEEPBENCH_CSV}",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="run only these case names (for a quick check; the report then covers only them)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    command = " ".join([Path(sys.executable).name, *sys.argv])

    started = time.perf_counter()
    torch.set_num_threads(os.cpu_count() or 1)
    settings = Settings()
    engine = Engine(settings)
    engine.start()
    devices = [device for device in engine.registry.devices if device.type_name == "cpu"]
    if not devices:
        logger.error("no CPU OpenCL device found; see the discovery log above")
        return 1

    if not args.deepbench.is_file():
        parser.error(f"DeepBench list {args.deepbench} not found; pass its path with --deepbench")
    cases = [*BASE_SUITE, *BATCH_SUITE, *deepbench_cases(args.deepbench)]
    if args.only:
        unknown = sorted(set(args.only) - {case.name for case in cases})
        if unknown:
            parser.error(f"unknown case names {unknown}; known: {[c.name for c in cases]}")
        cases = [case for case in cases if case.name in args.only]

    reference = {"start": _measure_reference()}
    overhead = {device.id: measure_launch_overhead(device) for device in devices}
    results = []
    for index, case in enumerate(cases, start=1):
        logger.info("case %d/%d: %s", index, len(cases), case.name)
        results.append(run_case(case, devices, engine))
    reference["end"] = _measure_reference()

    document = {
        "meta": report.describe_environment(devices, command, time.perf_counter() - started),
        "reference": reference,
        "launch_overhead": overhead,
        "settings": {
            "runs": RUNS,
            "min_runs": MIN_RUNS,
            "warmup_runs": WARMUP_RUNS,
            "shape_budget_s": SHAPE_BUDGET_S,
            "settle_s": SETTLE_S,
            "block": BLOCK,
            "pyopencl_no_cache": os.environ.get("PYOPENCL_NO_CACHE", ""),
            "pocl_kernel_cache": os.environ.get("POCL_KERNEL_CACHE", ""),
            "torch_threads": torch.get_num_threads(),
            "memory_bound_intensity": report.MEMORY_BOUND_INTENSITY,
        },
        "cases": results,
    }
    report.write(document, args.out)
    logger.info("wrote %s in %.0f s", args.out, time.perf_counter() - started)
    return 0


def _measure_reference() -> dict[str, Any]:
    peak = measure_peak_gflops()
    copy = measure_copy_gbs()
    logger.info("measured peak %.1f GFLOP/s, copy %.1f GB/s", peak.median, copy.median)
    return {"peak_gflops": peak.as_dict(), "copy_gbs": copy.as_dict()}


class DeviceRun:
    """One case prepared on one device: the plan, the resident kernels, warm-up results, and
    the timings collected so far."""

    def __init__(self, case: Case, device: Device, engine: Engine, body: dict[str, Any]):
        self.device = device
        # The engine's own planning: the device's algorithms, as a request to it would get.
        self.plan, planned_device = engine.prepare(case.op, body)
        if planned_device is not device:
            raise RuntimeError(f"{case.name}: planned for {planned_device.id}, not {device.id}")
        self.summary = summarize(self.plan)
        if self.summary["macs"] != case.macs:
            raise RuntimeError(
                f"{case.name}: clconv plans {self.summary['macs']} MACs but the suite computes "
                f"{case.macs}; the request body does not match the suite's layers"
            )
        self.resident = ResidentRequest(self.plan, device)
        warm = [sum(self.resident.launch()) for _ in range(WARMUP_RUNS)]
        self.kernel_estimate_ms = min(warm)
        first = execute(self.plan, device)
        self.execute_estimate_ms = first.host_ms
        self.output = first.output
        self.launches: list[list[float]] = []
        self.timings: list[dict[str, float]] = []
        self.host_ms: list[float] = []

    def time_block(self, count: int) -> None:
        """Launch the resident kernels ``count`` times back to back after one untimed launch,
        then run ``count`` whole requests, and keep the times."""
        self.resident.launch()
        for _ in range(count):
            self.launches.append(self.resident.launch())
        for _ in range(count):
            execution = execute(self.plan, self.device)
            self.timings.append(execution.timings_ms)
            self.host_ms.append(execution.host_ms)

    def results(self, expected: np.ndarray) -> dict[str, Any]:
        """Release the resident buffers and return the device's entry in the case's results."""
        self.resident.release()
        kernel_names = [launch.kernel for launch in self.resident.launches]
        per_kernel = [
            {"name": name, "median_ms": Stats.of([sample[i] for sample in self.launches]).median}
            for i, name in enumerate(kernel_names)
        ]
        scale = float(np.max(np.abs(expected))) or 1.0
        error = float(np.max(np.abs(self.output - expected))) / scale

        def timing(key: str) -> dict[str, float | int]:
            return Stats.of([timings[key] for timings in self.timings]).as_dict()

        return {
            "algorithm": self.summary["algorithm"],
            "kernel_ms": Stats.of([sum(sample) for sample in self.launches]).as_dict(),
            "kernels": per_kernel,
            "execute_kernel_ms": timing("compute"),
            "e2e_ms": timing("total"),
            "upload_ms": timing("upload"),
            "download_ms": timing("download"),
            "queue_ms": timing("queue"),
            "host_ms": Stats.of(self.host_ms).as_dict(),
            "build_ms": self.resident.build_ms,
            "programs_built": self.resident.programs_built,
            "prepare_ms": self.resident.prepare_ms,
            "max_relative_error": error,
        }


def run_case(case: Case, devices: list[Device], engine: Engine) -> dict[str, Any]:
    """Time ``case`` in PyTorch and on every device; return its results entry.

    The timed runs are interleaved in rounds: each round times a block of ``BLOCK`` PyTorch
    calls, then a block of kernel launches and one of whole requests on each device, so load
    from other processes on a shared machine falls on all of them alike, while each side runs
    back to back as under a steady stream of requests.
    """
    x, weights = make_arrays(case)
    forward = torch_forward(case, torch.from_numpy(x), [torch.from_numpy(w) for w in weights])
    expected = forward().numpy()
    torch_estimate_ms = min(time_host_calls(forward, WARMUP_RUNS))
    time.sleep(SETTLE_S)

    prepared = [
        DeviceRun(case, device, engine, request_body(case, x, weights, device.id))
        for device in devices
    ]
    round_s = (
        torch_estimate_ms / 1e3
        + (1 + len(prepared)) * SETTLE_S / BLOCK
        + sum((run.kernel_estimate_ms + run.execute_estimate_ms) / 1e3 for run in prepared)
    )
    runs = max(MIN_RUNS, min(RUNS, int(SHAPE_BUDGET_S / round_s)))
    rounds = max(1, round(runs / BLOCK))
    runs = rounds * BLOCK

    load_before = _load_average()
    torch_samples = []
    for _ in range(rounds):
        forward()
        torch_samples += time_host_calls(forward, BLOCK)
        time.sleep(SETTLE_S)
        for run in prepared:
            run.time_block(BLOCK)
            time.sleep(SETTLE_S)

    return {
        "name": case.name,
        "title": case.title,
        "label": case.label,
        "group": case.group,
        "op": case.op,
        "description": describe_layers(case),
        "input_shape": list(case.input_shape),
        "output_shape": list(case.output_shape),
        "macs": case.macs,
        "flops": case.flops,
        "min_bytes": case.min_bytes,
        "arithmetic_intensity": case.arithmetic_intensity,
        "runs": runs,
        "load_average": [load_before, _load_average()],
        "torch_ms": Stats.of(torch_samples).as_dict(),
        "devices": {run.device.id: run.results(expected) for run in prepared},
    }


def _load_average() -> float:
    """Read the 1-minute load average; NaN where /proc/loadavg is missing."""
    try:
        return float(Path("/proc/loadavg").read_text(encoding="ascii").split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


if __name__ == "__main__":
    sys.exit(main())
