"""Timers: the machine's measured FMA peak and copy bandwidth, PyTorch, and clconv on a device.

clconv kernels are timed two ways. ``ResidentRequest`` uploads a request's input and weights
once and launches its already-built kernels repeatedly, reading each launch's OpenCL profiling
event, so kernel times carry no upload. ``execute`` from ``clconv.runtime.executor`` runs whole
requests (upload, kernels, download) for the end-to-end time.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyopencl as cl
import torch

from bench.suite import Case
from clconv.core.planner import RequestPlan
from clconv.runtime.devices import Device
from clconv.runtime.executor import bind_args
from clconv.runtime.launches import Launch, plan_launches

NS_PER_MS = 1e6

# Matrix size of the FMA peak measurement: 2 * 4096^3 FLOP, about 1 s per product on 2 cores.
PEAK_MATMUL_SIZE = 4096
# Bytes per buffer in the bandwidth measurement, well past any last-level cache.
COPY_BYTES = 512 * 1024**2


@dataclass
class Stats:
    """Median, quartiles and extremes of repeated measurements (ms, or a rate where stated)."""

    median: float
    p25: float
    p75: float
    min: float
    max: float
    runs: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        if len(samples) == 1:
            value = samples[0]
            return cls(value, value, value, value, value, 1)
        p25, _, p75 = statistics.quantiles(samples, n=4, method="inclusive")
        median = statistics.median(samples)
        return cls(median, p25, p75, min(samples), max(samples), len(samples))

    def as_dict(self) -> dict[str, float | int]:
        return {
            "median": self.median,
            "p25": self.p25,
            "p75": self.p75,
            "min": self.min,
            "max": self.max,
            "runs": self.runs,
        }


EMPTY_KERNEL = "__kernel void empty(__global float* x) { }"


def measure_launch_overhead(device: Device, runs: int = 200) -> dict[str, dict[str, float | int]]:
    """Per-launch cost of an empty kernel on ``device``, in microseconds.

    ``round_trip_us``: host wall time to enqueue one launch and wait for it, as a request with
    a single kernel pays. ``stream_us``: device time per launch when ``runs`` launches are
    queued back to back with no host wait (first start to last end, divided by the count), as
    the kernels of one multi-stage request run. ``kernel_us``: an empty kernel's own
    profiled duration.
    """
    program = cl.Program(device.context, EMPTY_KERNEL).build()
    kernel = cl.Kernel(program, "empty")
    buffer = cl.Buffer(device.context, cl.mem_flags.READ_WRITE, size=4)
    kernel.set_args(buffer)
    queue = device.queue
    with device.lock:
        for _ in range(10):
            cl.enqueue_nd_range_kernel(queue, kernel, (1,), None)
        queue.finish()
        round_trips = []
        for _ in range(runs):
            started = time.perf_counter()
            cl.enqueue_nd_range_kernel(queue, kernel, (1,), None).wait()
            round_trips.append((time.perf_counter() - started) * 1e6)
        events = [cl.enqueue_nd_range_kernel(queue, kernel, (1,), None) for _ in range(runs)]
        events[-1].wait()
        queue.finish()
    span_ns = events[-1].profile.end - events[0].profile.start
    durations = [float(event.profile.end - event.profile.start) / 1e3 for event in events]
    buffer.release()
    return {
        "round_trip_us": Stats.of(round_trips).as_dict(),
        "stream_us": Stats.of([span_ns / 1e3 / runs]).as_dict(),
        "kernel_us": Stats.of(durations).as_dict(),
    }


def measure_peak_gflops(runs: int = 5) -> Stats:
    """Time a float32 ``torch.matmul`` of two 4096x4096 matrices; return the rates of the
    runs in GFLOP/s."""
    size = PEAK_MATMUL_SIZE
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    torch.matmul(a, b)
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        torch.matmul(a, b)
        rates.append(2 * size**3 / (time.perf_counter() - started) / 1e9)
    return Stats.of(rates)


def measure_copy_gbs(runs: int = 10) -> Stats:
    """Time ``Tensor.copy_`` of a 512 MiB float32 tensor and return the rates of the runs in
    GB/s. Each run counts the read and the write (2 x 512 MiB), as STREAM's copy does."""
    elements = COPY_BYTES // 4
    source = torch.rand(elements)
    target = torch.empty(elements)
    target.copy_(source)
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        target.copy_(source)
        rates.append(2 * COPY_BYTES / (time.perf_counter() - started) / 1e9)
    return Stats.of(rates)


def torch_forward(
    case: Case, x: torch.Tensor, weights: Sequence[torch.Tensor]
) -> Callable[[], torch.Tensor]:
    """Build a closure that runs ``case``'s layers with ``torch.nn.functional``, without
    autograd."""

    def forward() -> torch.Tensor:
        with torch.no_grad():
            value = x
            for layer, weight in zip(case.layers, weights, strict=True):
                function = (
                    torch.nn.functional.conv_transpose2d
                    if layer.transposed
                    else torch.nn.functional.conv2d
                )
                value = function(
                    value,
                    weight,
                    stride=layer.stride,
                    padding=layer.padding,
                    dilation=layer.dilation,
                    groups=layer.groups,
                )
            return value

    return forward


def time_host_calls(function: Callable[[], Any], runs: int) -> list[float]:
    """Wall time of each of ``runs`` calls, in ms (``time.perf_counter``)."""
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1e3)
    return samples


class ResidentRequest:
    """A request's kernels built and its buffers uploaded once on one device, for timing
    repeated launches.

    Arguments are bound with ``clconv.runtime.executor.bind_args``, as a request binds them,
    and each launch reads the previous launch's output.
    """

    def __init__(self, plan: RequestPlan, device: Device) -> None:
        self.device = device
        started = time.perf_counter()
        self.launches: list[Launch] = [
            launch for _, launch in plan_launches(plan.stages, plan.dtype == "float64")
        ]
        self.prepare_ms = (time.perf_counter() - started) * 1e3

        builds_before = device.programs.builds
        started = time.perf_counter()
        self.kernels = [
            device.programs.kernel(launch.source, launch.kernel, launch.defines)
            for launch in self.launches
        ]
        self.build_ms = (time.perf_counter() - started) * 1e3
        self.programs_built = device.programs.builds - builds_before

        self._buffers: list[cl.Buffer] = []
        assert plan.input.array is not None  # parse_request without allow_shape_only decodes it
        source = self._upload(plan.input.array)
        for launch, kernel in zip(self.launches, self.kernels, strict=True):
            itemsize = 8 if plan.dtype == "float64" else 4
            out_bytes = launch.output_elements() * itemsize
            output = cl.Buffer(device.context, cl.mem_flags.READ_WRITE, size=out_bytes)
            self._buffers.append(output)
            weight = None if launch.weight is None else self._upload(launch.weight)
            bias = None if launch.bias is None else self._upload(launch.bias)
            bind_args(kernel, launch, source, weight, bias, output)
            source = output
        device.queue.finish()

    def _upload(self, array: npt.NDArray[Any] | None) -> cl.Buffer:
        if array is None:
            raise ValueError("a stage without weight values cannot run")
        host = np.ascontiguousarray(array)
        flags = cl.mem_flags.READ_ONLY | cl.mem_flags.COPY_HOST_PTR
        buffer = cl.Buffer(self.device.context, flags, hostbuf=host)
        self._buffers.append(buffer)
        return buffer

    def launch(self) -> list[float]:
        """Enqueue every stage's kernel once, wait, and return each kernel's time in ms from
        its profiling event."""
        queue = self.device.queue
        with self.device.lock:
            events = [
                cl.enqueue_nd_range_kernel(queue, kernel, launch.global_size, launch.local_size)
                for launch, kernel in zip(self.launches, self.kernels, strict=True)
            ]
            events[-1].wait()
        return [float(e.profile.end - e.profile.start) / NS_PER_MS for e in events]

    def release(self) -> None:
        for buffer in self._buffers:
            buffer.release()
        self._buffers = []
