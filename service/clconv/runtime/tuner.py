"""Tuning passes: time every applicable conv2d algorithm of a stage on a device, keep the fastest.

A pass builds each candidate's kernels and uploads random data of the stage's shape once. It
runs a few warm-up launches, then times several launches by their OpenCL profiling events, and
the candidate's time is the median. A candidate that needs a zero-padding stage in front (the
output-channel-vector direct kernel) is timed with that stage, as a request would run it. Each
launch takes the device's lock on its own, as a request does, so a pass running beside a server
delays a request by at most one launch.

``LazyTuner`` runs passes in one background thread for the server's ``CLCONV_TUNE=lazy`` mode.
"""

from __future__ import annotations

import logging
import queue
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pyopencl as cl

from clconv import __version__
from clconv.core.algorithms import applicable, rule_choice
from clconv.core.planner import RequestPlan, choose_by_rule, device_bytes, select_algorithms
from clconv.core.stages import ConvStage, OpPlan
from clconv.core.tensors import DTYPES, Tensor
from clconv.errors import DeviceError
from clconv.runtime.devices import Device
from clconv.runtime.executor import NS_PER_MS, bind_args
from clconv.runtime.launches import Launch, plan_launches
from clconv.runtime.tuning import DeviceKey, ShapeClass, TuningDatabase, shape_class

logger = logging.getLogger("clconv.tuning")

WARMUP_LAUNCHES = 2
TIMED_LAUNCHES = 5
# Maximum shape classes waiting for the lazy tuner. Further ones are dropped, and a later
# request of a dropped class queues it again.
MAX_PENDING = 64
# How long the lazy tuner waits for the device's lock before it checks for shutdown again.
LOCK_POLL_S = 0.1


@dataclass
class Measurement:
    """The outcome of one tuning pass over a stage's candidates.

    ``timings_ms`` contains the median kernel time of every candidate measured, including any
    padding stage it needs; ``failed`` the reason of every candidate that could not be built or
    run; ``unmeasured`` the candidates left when the budget ran out.
    """

    shape: ShapeClass
    rule: str
    candidates: list[str]
    timings_ms: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    unmeasured: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def winner(self) -> str | None:
        if not self.timings_ms:
            return None
        return min(self.timings_ms, key=lambda name: self.timings_ms[name])

    @property
    def speedup(self) -> float | None:
        """The rule's time over the winner's; None when the rule's choice was not measured."""
        winner = self.winner
        if winner is None or self.rule not in self.timings_ms:
            return None
        return self.timings_ms[self.rule] / self.timings_ms[winner]

    def entry(self, stage: ConvStage, budget_s: float) -> dict[str, Any]:
        """Build the database entry of this measurement; only valid when there is a winner."""
        return {
            "shape_class": {
                **{name: getattr(self.shape, name) for name in self.shape.__dataclass_fields__}
            },
            "winner": self.winner,
            "rule": self.rule,
            "timings_ms": self.timings_ms,
            "failed": self.failed,
            "unmeasured": self.unmeasured,
            "measured_on": {
                "in_shape": list(stage.in_shape),
                "weight_shape": list(stage.weight_shape),
                "out_shape": list(stage.out_shape),
                "groups": stage.groups,
            },
            "warmup_launches": WARMUP_LAUNCHES,
            "timed_launches": TIMED_LAUNCHES,
            "budget_s": budget_s,
            "elapsed_s": round(self.elapsed_s, 3),
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "clconv_version": __version__,
        }


class BudgetExhausted(Exception):
    """The pass's time budget ran out or it was asked to stop."""


def candidate_order(stage: ConvStage, rule: str) -> list[str]:
    """List the applicable algorithms with the rule's choice first, so that a pass cut short by
    its budget has measured the baseline."""
    names = applicable(stage)
    return [rule, *(name for name in names if name != rule)] if rule in names else names


def measure_stage(
    stage: ConvStage,
    dtype: str,
    device: Device,
    profile: str,
    budget_s: float,
    *,
    max_device_bytes: int | None = None,
    stop: threading.Event | None = None,
) -> Measurement:
    """Time every algorithm applicable to ``stage`` on ``device`` within ``budget_s`` seconds.

    Kernel builds count against the budget. Once it runs out the pass stops. The candidate in
    progress keeps the median of the launches it completed, if any, and the rest are listed in
    ``unmeasured``. A candidate whose build or launch fails, or that needs more than
    ``max_device_bytes`` of device memory, is logged and listed in ``failed``.
    """
    started = time.monotonic()
    deadline = started + budget_s
    rule = rule_choice(stage, profile)
    names = candidate_order(stage, rule)
    result = Measurement(shape_class(stage, dtype), rule, names)
    rng = np.random.default_rng(0)
    itemsize = DTYPES[dtype].itemsize
    input_array = _random(rng, stage.in_shape, dtype)
    weight = _random(rng, stage.weight_shape, dtype)
    bias = _random(rng, (stage.weight_shape[0],), dtype) if stage.has_bias else None
    for index, name in enumerate(names):
        if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
            result.unmeasured = names[index:]
            break
        plan = _single_stage_plan(stage, name, dtype, input_array, weight, bias)
        needed = device_bytes(plan)
        if max_device_bytes is not None and needed > max_device_bytes:
            result.failed[name] = (
                f"needs {needed} bytes of device memory, over the budget of {max_device_bytes}"
            )
            logger.warning("tuning on %s skips %s: %s", device.id, name, result.failed[name])
            continue
        samples: list[float] = []
        try:
            _time_launches(plan, device, itemsize, samples, deadline, stop)
        except (DeviceError, cl.Error) as error:
            message = error.message if isinstance(error, DeviceError) else str(error)
            result.failed[name] = message.strip().splitlines()[0][:300] if message else "failed"
            logger.warning("tuning on %s skips %s: %s", device.id, name, result.failed[name])
            continue
        except BudgetExhausted:
            if samples:
                result.timings_ms[name] = statistics.median(samples)
            result.unmeasured = names[index + 1 :] if samples else names[index:]
            break
        result.timings_ms[name] = statistics.median(samples)
    result.elapsed_s = time.monotonic() - started
    return result


def _random(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> npt.NDArray[Any]:
    return rng.standard_normal(shape).astype(DTYPES[dtype])


def _single_stage_plan(
    stage: ConvStage,
    algorithm: str,
    dtype: str,
    input_array: npt.NDArray[Any],
    weight: npt.NDArray[Any],
    bias: npt.NDArray[Any] | None,
) -> RequestPlan:
    """Build a plan of ``stage`` alone with random data, computed by ``algorithm``."""
    candidate = replace(stage, weight=weight, bias=bias, requested_algorithm=algorithm)
    op = OpPlan(
        "conv2d", "", [candidate], 0, stage.in_shape, stage.out_shape, (1.0, 1.0), (1.0, 1.0)
    )
    tensor = Tensor(stage.in_shape, dtype, input_array, "json")
    plan = RequestPlan("conv2d", tensor, [op], None, "json")
    select_algorithms(plan, choose_by_rule)
    return plan


def _time_launches(
    plan: RequestPlan,
    device: Device,
    itemsize: int,
    samples: list[float],
    deadline: float,
    stop: threading.Event | None,
) -> None:
    """Build and upload ``plan`` once, then append the summed kernel time of each timed launch
    to ``samples``. Raises ``BudgetExhausted`` between launches once ``deadline`` passes."""
    launches = [launch for _, launch in plan_launches(plan.stages, plan.dtype == "float64")]
    kernels = [device.programs.kernel(x.source, x.kernel, x.defines) for x in launches]
    buffers: list[cl.Buffer] = []
    try:
        _bind(plan, device, launches, kernels, itemsize, buffers)
        for run in range(WARMUP_LAUNCHES + TIMED_LAUNCHES):
            if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                raise BudgetExhausted
            milliseconds = _launch_once(device, launches, kernels, stop)
            if run >= WARMUP_LAUNCHES:
                samples.append(milliseconds)
    finally:
        for buffer in buffers:
            buffer.release()


def _bind(
    plan: RequestPlan,
    device: Device,
    launches: list[Launch],
    kernels: list[cl.Kernel],
    itemsize: int,
    buffers: list[cl.Buffer],
) -> None:
    """Create the buffers (initialised from host memory, so nothing is enqueued) and chain the
    launches, each reading the previous one's output."""

    def upload(array: npt.NDArray[Any]) -> cl.Buffer:
        flags = cl.mem_flags.READ_ONLY | cl.mem_flags.COPY_HOST_PTR
        buffer = cl.Buffer(device.context, flags, hostbuf=np.ascontiguousarray(array))
        buffers.append(buffer)
        return buffer

    assert plan.input.array is not None  # _single_stage_plan always gives random data
    source = upload(plan.input.array)
    for launch, kernel in zip(launches, kernels, strict=True):
        size = max(launch.output_elements() * itemsize, 1)
        output = cl.Buffer(device.context, cl.mem_flags.READ_WRITE, size=size)
        buffers.append(output)
        weight = None if launch.weight is None else upload(launch.weight)
        bias = None if launch.bias is None else upload(launch.bias)
        bind_args(kernel, launch, source, weight, bias, output)
        source = output


def _launch_once(
    device: Device, launches: list[Launch], kernels: list[cl.Kernel], stop: threading.Event | None
) -> float:
    """Enqueue every launch once under the device's lock, wait, and return the summed kernel
    time in ms from the profiling events."""
    while not device.lock.acquire(timeout=LOCK_POLL_S):
        if stop is not None and stop.is_set():
            raise BudgetExhausted
    try:
        events = [
            cl.enqueue_nd_range_kernel(device.queue, kernel, launch.global_size, launch.local_size)
            for launch, kernel in zip(launches, kernels, strict=True)
        ]
        events[-1].wait()
    finally:
        device.lock.release()
    return sum(float(e.profile.end - e.profile.start) / NS_PER_MS for e in events)


@dataclass(frozen=True)
class _Job:
    device: Device
    stage: ConvStage
    dtype: str
    profile: str


class LazyTuner:
    """Tunes shape classes that missed the database, one at a time, in a background thread.

    ``submit`` queues a class at most once per device and process (a pass that found no winner
    is not retried until the server restarts), and drops it when ``MAX_PENDING`` classes wait.
    """

    def __init__(
        self,
        database: TuningDatabase,
        budget_s: float,
        max_device_bytes: Callable[[Device], int] | None = None,
    ) -> None:
        self.database = database
        self.budget_s = budget_s
        self._max_device_bytes = max_device_bytes
        self._queue: queue.Queue[_Job] = queue.Queue()
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._dropped = 0

    def submit(self, device: Device, stage: ConvStage, dtype: str, profile: str) -> None:
        """Queue the shape class of ``stage`` on ``device`` unless it was queued before."""
        key = (device.id, shape_class(stage, dtype).key)
        with self._lock:
            if self._stop.is_set() or key in self._seen:
                return
            if self._queue.qsize() >= MAX_PENDING:
                self._dropped += 1
                if self._dropped == 1 or self._dropped % 100 == 0:
                    logger.warning(
                        "lazy tuning queue full (%d shape classes); dropped %d so far, "
                        "the latest %s on %s",
                        MAX_PENDING,
                        self._dropped,
                        key[1],
                        device.id,
                    )
                return
            self._seen.add(key)
            logger.info("queued lazy tuning on %s of %s", device.id, key[1])
            # Keep only the shapes: the request's weights may be large and are not needed.
            light = replace(stage, weight=None, bias=None)
            self._queue.put(_Job(device, light, dtype, profile))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="clconv-lazy-tuner", daemon=True
                )
                self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop between launches and wait up to ``timeout_s`` for the thread to end."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                job = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self._tune(job)
            except Exception:
                # A failed pass must not end the thread; later classes are still tuned.
                logger.exception("lazy tuning on %s failed", job.device.id)

    def _tune(self, job: _Job) -> None:
        device = job.device
        key = shape_class(job.stage, job.dtype).key
        logger.info("tuning on %s started for %s (budget %.1f s)", device.id, key, self.budget_s)
        limit = None if self._max_device_bytes is None else self._max_device_bytes(device)
        result = measure_stage(
            job.stage,
            job.dtype,
            device,
            job.profile,
            self.budget_s,
            max_device_bytes=limit,
            stop=self._stop,
        )
        if self._stop.is_set():
            logger.info("tuning on %s stopped for %s: the server is shutting down", device.id, key)
            return
        winner = result.winner
        if winner is None:
            logger.warning(
                "tuning on %s found no winner for %s: %s",
                device.id,
                key,
                "; ".join(f"{name}: {why}" for name, why in result.failed.items()) or "no time",
            )
            return
        path = self.database.record(
            DeviceKey.of(device), key, result.entry(job.stage, self.budget_s)
        )
        logger.info(
            "tuning on %s finished for %s in %.1f s: winner %s (%.3f ms), rule %s (%s), "
            "stored in %s",
            device.id,
            key,
            result.elapsed_s,
            winner,
            result.timings_ms[winner],
            result.rule,
            _ms_text(result.timings_ms.get(result.rule)),
            path,
        )


def _ms_text(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.3f} ms"
