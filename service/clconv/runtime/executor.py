"""Run a validated plan on one device and time it with OpenCL profiling events.

One request holds its device's lock from the first upload to the download, so the events of a
request are not interleaved with another's and the timings are its own. A request waits for
the lock until its deadline, and gives up without running if its client has disconnected.
All commands go to the device's in-order queue without host waits in between; the host waits
once, on the download.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyopencl as cl

from clconv.core.planner import RequestPlan
from clconv.core.tensors import DTYPES
from clconv.errors import (
    ClientDisconnectedError,
    DeadlineExceededError,
    DeviceError,
)
from clconv.runtime.devices import Device
from clconv.runtime.launches import Launch, plan_launches

logger = logging.getLogger("clconv.runtime")

NS_PER_MS = 1e6
# How often a request waiting for its device checks its deadline and its client.
WAIT_POLL_S = 0.05
STATUS_NAMES = {
    value: f"CL_{name}"
    for name, value in vars(cl.status_code).items()
    if isinstance(value, int) and not name.startswith("_")
}


@dataclass
class StartConditions:
    """When a request may still start: before ``deadline`` (``time.monotonic()`` seconds) and
    while ``cancelled`` is not set. ``on_start`` runs once the device's lock is held."""

    deadline: float | None = None
    cancelled: threading.Event | None = None
    on_start: Callable[[], None] | None = None


@dataclass
class KernelTiming:
    """One kernel launch as it ran: name, stage index, time in ms from profiling, sizes."""

    name: str
    stage: int
    ms: float
    global_size: list[int]


@dataclass
class Execution:
    """A finished request: the output array and its timings in milliseconds."""

    output: npt.NDArray[Any]
    device: Device
    timings_ms: dict[str, float]
    kernels: list[KernelTiming] = field(default_factory=list)
    stage_ms: list[float] = field(default_factory=list)
    host_ms: float = 0.0


def execute(
    plan: RequestPlan, device: Device, conditions: StartConditions | None = None
) -> Execution:
    """Upload the input and weights, run every stage back to back, download the output.

    Raises ``DeadlineExceededError`` or ``ClientDisconnectedError`` if the request cannot start
    under ``conditions``, and ``DeviceError`` naming the OpenCL status if a call fails.
    """
    device.check_dtype(plan.dtype)
    started = time.perf_counter()
    dtype = DTYPES[plan.dtype]
    output = np.empty(plan.output_shape, dtype=dtype)
    if output.size == 0:
        zero = {"queue": 0.0, "upload": 0.0, "compute": 0.0, "download": 0.0, "total": 0.0}
        return Execution(output, device, zero, [], [0.0] * len(plan.stages))

    launches = plan_launches(plan.stages, plan.dtype == "float64")
    conditions = conditions or StartConditions()
    _acquire(device, conditions)
    try:
        if conditions.on_start is not None:
            conditions.on_start()
        return _run_locked(plan, device, launches, output, started)
    except cl.Error as error:
        _drain_queue(device)
        raise device_error(device, error) from error
    finally:
        device.lock.release()


def _drain_queue(device: Device) -> None:
    """Wait for commands a failed request left queued, so the next request starts clean."""
    try:
        device.queue.finish()
    except cl.Error as error:
        logger.error("draining the queue of device %s after a failure failed: %s", device.id, error)


def device_error(device: Device, error: cl.Error) -> DeviceError:
    """Describe a failed OpenCL call with the device, the API routine and the status name."""
    code = getattr(error, "code", None)
    status = STATUS_NAMES.get(code, "unknown status") if isinstance(code, int) else "no status"
    routine = getattr(error, "routine", None) or "an OpenCL call"
    return DeviceError(
        f"OpenCL failed on device {device.id} ({device.name}): {routine} returned {status} "
        f"({code}): {error}; retry, or choose another device in GET /v1/devices",
        "device",
    )


def _acquire(device: Device, conditions: StartConditions) -> None:
    """Take the device's lock, or raise once the deadline passes or the client is gone."""
    while True:
        if conditions.cancelled is not None and conditions.cancelled.is_set():
            raise ClientDisconnectedError(
                f"the client disconnected while its request waited for device {device.id}",
                None,
            )
        timeout = WAIT_POLL_S
        if conditions.deadline is not None:
            remaining = conditions.deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceededError(
                    f"the request did not start on device {device.id} before its deadline; "
                    "the device is busy, so retry later, send a longer X-Request-Timeout, or "
                    "raise CLCONV_REQUEST_TIMEOUT_S",
                    None,
                )
            timeout = min(timeout, remaining)
        if device.lock.acquire(timeout=timeout):
            return


def _upload(device: Device, array: npt.NDArray[Any] | None, events: list[cl.Event]) -> Any:
    if array is None:
        return None
    host = np.ascontiguousarray(array)
    buffer = cl.Buffer(device.context, cl.mem_flags.READ_ONLY, size=max(host.nbytes, 1))
    events.append(cl.enqueue_copy(device.queue, buffer, host, is_blocking=False))
    return buffer, host


def bind_args(
    kernel: cl.Kernel, launch: Launch, src: Any, weight: Any, bias: Any, dst: Any
) -> None:
    """Set ``kernel``'s arguments in the order of ``launch.args``; an absent bias is NULL."""
    buffers = {"src": src, "weight": weight, "bias": bias, "dst": dst}
    kernel.set_args(*(buffers[role] for role in launch.args))


def _run_locked(
    plan: RequestPlan,
    device: Device,
    launches: list[tuple[int, Launch]],
    output: npt.NDArray[Any],
    started: float,
) -> Execution:
    queue = device.queue
    itemsize = DTYPES[plan.dtype].itemsize
    kernels = [device.programs.kernel(x.source, x.kernel, x.defines) for _, x in launches]

    uploads: list[cl.Event] = []
    keep_alive: list[Any] = []
    current = _upload(device, plan.input.array, uploads)
    keep_alive.append(current)
    stage_buffers: list[Any] = []
    parameters: list[tuple[Any, Any]] = []
    for _, launch in launches:
        weight = _upload(device, launch.weight, uploads)
        bias = _upload(device, launch.bias, uploads)
        keep_alive += [weight, bias]
        parameters.append((weight, bias))

    kernel_events: list[cl.Event] = []
    source_buffer = current[0]
    for (_, launch), kernel, (weight, bias) in zip(launches, kernels, parameters, strict=True):
        out_bytes = launch.output_elements() * itemsize
        out_buffer = cl.Buffer(device.context, cl.mem_flags.READ_WRITE, size=out_bytes)
        stage_buffers.append(out_buffer)
        bind_args(
            kernel,
            launch,
            source_buffer,
            None if weight is None else weight[0],
            None if bias is None else bias[0],
            out_buffer,
        )
        kernel_events.append(
            cl.enqueue_nd_range_kernel(queue, kernel, launch.global_size, launch.local_size)
        )
        source_buffer = out_buffer

    download = cl.enqueue_copy(queue, output, source_buffer, is_blocking=False)
    download.wait()

    timings, kernel_timings = _collect_timings(uploads, kernel_events, download, launches)
    for buffer in stage_buffers:
        buffer.release()
    for item in keep_alive:
        if item is not None:
            item[0].release()
    host_ms = (time.perf_counter() - started) * 1e3
    stage_ms = [0.0] * len(plan.stages)
    for timing in kernel_timings:
        stage_ms[timing.stage] += timing.ms
    return Execution(output, device, timings, kernel_timings, stage_ms, host_ms)


def _collect_timings(
    uploads: list[cl.Event],
    kernel_events: list[cl.Event],
    download: cl.Event,
    launches: list[tuple[int, Launch]],
) -> tuple[dict[str, float], list[KernelTiming]]:
    """Sum event durations by kind. ``queue`` is the rest of the span from the first command
    being queued to the last one ending: time spent waiting rather than executing."""

    def duration(event: cl.Event) -> float:
        return float(event.profile.end - event.profile.start) / NS_PER_MS

    events = [*uploads, *kernel_events, download]
    first_queued = min(event.profile.queued for event in events)
    last_end = max(event.profile.end for event in events)
    total = float(last_end - first_queued) / NS_PER_MS
    upload = sum(duration(event) for event in uploads)
    compute = sum(duration(event) for event in kernel_events)
    download_ms = duration(download)
    timings = {
        "queue": max(total - upload - compute - download_ms, 0.0),
        "upload": upload,
        "compute": compute,
        "download": download_ms,
        "total": total,
    }
    kernel_timings = [
        KernelTiming(launch.kernel, index, duration(event), list(launch.global_size))
        for (index, launch), event in zip(launches, kernel_events, strict=True)
    ]
    return timings, kernel_timings
