"""The protocol-independent entry point: devices, planning and execution of request bodies.

HTTP (``clconv.api``) and any other adapter call ``Engine.run``, ``Engine.plan`` and
``Engine.devices`` with decoded JSON bodies and turn ``ClconvError`` into their own error
responses. Nothing here imports a web framework.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from clconv.admission import Admission
from clconv.core.fields import describe
from clconv.core.planner import (
    OPERATIONS,
    RequestPlan,
    check_limits,
    parse_request,
    select_algorithms,
    summarize,
)
from clconv.core.tensors import encode_tensor
from clconv.errors import ClconvError, DeviceError, ValidationError
from clconv.limits import check_body_tensors, check_device_memory, device_budget_bytes
from clconv.runtime.devices import Device, DeviceRegistry, discover_devices
from clconv.runtime.executor import Execution, StartConditions, execute
from clconv.runtime.selection import Selector, device_profile
from clconv.runtime.tuner import LazyTuner
from clconv.runtime.tuning import TuningDatabase
from clconv.settings import Settings

logger = logging.getLogger("clconv.engine")

# At start-up each device loads the most recently stored program binaries, so that the first
# request of a shape served before a restart does not load its programs (3 to 7 ms each on
# Intel's runtime). Bounded so that a large cache folder does not delay readiness.
PRELOAD_PROGRAMS = 64
PRELOAD_BUDGET_S = 5.0


class Engine:
    """Owns the device registry; turns request bodies into results."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.admission = Admission(settings)
        self.selector = _selector(settings)
        self._registry: DeviceRegistry | None = None
        self._warmed_up = threading.Event()
        self._stopping = threading.Event()

    def start(self) -> None:
        """Discover devices and choose the default; raises if ``CLCONV_DEVICE`` is unknown."""
        self._registry = discover_devices(self.settings.device, self.settings.cache_dir)
        if not self._registry.devices:
            logger.error("no usable OpenCL device; every convolution request will fail")

    @property
    def started(self) -> bool:
        return self._registry is not None

    @property
    def ready(self) -> bool:
        return self._registry is not None and bool(self._registry.devices)

    @property
    def serving(self) -> bool:
        """Whether the devices are up, the common kernels are built and no shutdown began."""
        return self.ready and self._warmed_up.is_set() and not self._stopping.is_set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def begin_shutdown(self) -> None:
        """Report not-ready from now on and stop lazy tuning; requests already admitted still
        finish."""
        self._stopping.set()
        if self.selector.tuner is not None:
            self.selector.tuner.stop()

    def warm_up(self) -> None:
        """Load the most recently stored program binaries of every device, then build the most
        common kernels by running a tiny request of each kind: conv2d 3x3 and 1x1 (pointwise),
        depthwise separable and transposed. The Oclgrind simulator is skipped: it is for
        checking kernels, not for serving.

        With ``CLCONV_WARMUP=0`` nothing is built and the server is ready at once.
        """
        if not self.settings.warmup:
            self._warmed_up.set()
            return
        started = time.perf_counter()
        for device in self.registry.devices:
            if device.is_simulator:
                continue
            preloaded = device.programs.preload(PRELOAD_PROGRAMS, PRELOAD_BUDGET_S)
            if preloaded:
                logger.info(
                    "preloaded %d stored programs on %s in %.2f s",
                    preloaded,
                    device.id,
                    time.perf_counter() - started,
                )
            for op, body in _warm_up_bodies(device.id):
                try:
                    # The warm-up's toy shapes are not worth a lazy tuning pass each.
                    self.run(op, body, lazy_tuning=False)
                except ClconvError as error:
                    logger.error("warm-up %s on %s failed: %s", op, device.id, error.message)
        self._warmed_up.set()
        counts = [device.programs.counts() for device in self.registry.devices]
        logger.info(
            "warm-up built the common kernels on %d devices in %.2f s: %d programs loaded from "
            "disk, %d built from source",
            len(self.registry.devices),
            time.perf_counter() - started,
            sum(count["loaded_from_disk"] for count in counts),
            sum(count["built_from_source"] for count in counts),
        )

    @property
    def registry(self) -> DeviceRegistry:
        if self._registry is None:
            raise DeviceError("the engine has not started; no devices are known yet", None)
        return self._registry

    def devices(self) -> dict[str, Any]:
        """Return the ``GET /v1/devices`` body."""
        registry = self.registry
        return {
            "default": registry.default_id,
            "devices": [device.describe() for device in registry.devices],
            "skipped": registry.skipped,
        }

    def plan(self, body: Any) -> dict[str, Any]:
        """Validate a body with ``op`` and report what running it would do; runs nothing."""
        op = body.get("op") if isinstance(body, dict) else None
        if not isinstance(op, str):
            raise ValidationError(
                f"op must name the operation to plan, got {describe(op)}; use one of "
                f"{', '.join(OPERATIONS)}",
                "op",
                code="missing_field" if op is None else "invalid_value",
            )
        plan, device = self.prepare(op, body, allow_shape_only=True)
        check_device_memory(plan, device, self.settings)
        return {"op": op, **summarize(plan), "device": _device_ref(device)}

    def run(
        self,
        op: str,
        body: Any,
        conditions: StartConditions | None = None,
        *,
        lazy_tuning: bool = True,
    ) -> dict[str, Any]:
        """Validate, plan, admit and execute one request; return the response body.

        Raises ``OverloadedError`` when the device's queue or memory budget is full, and the
        errors of ``execute`` when the request cannot start under ``conditions`` or fails.
        With ``lazy_tuning`` false, the request queues no shape class for lazy tuning.
        """
        plan, device = self.prepare(op, body, lazy_tuning=lazy_tuning)
        needed = check_device_memory(plan, device, self.settings)
        budget = device_budget_bytes(device, self.settings)
        conditions = conditions or StartConditions()
        with self.admission.admit(device.id, needed, budget) as ticket:
            conditions.on_start = ticket.start
            try:
                execution = execute(plan, device, conditions)
            except DeviceError as error:
                device.record_failure(error.message, self.settings.max_device_failures)
                raise
            device.record_success()
        return _response(plan, execution)

    def prepare(
        self, op: str, body: Any, *, allow_shape_only: bool = False, lazy_tuning: bool = True
    ) -> tuple[RequestPlan, Device]:
        """Validate ``body`` for ``op``, choose its device and the device's algorithms, and
        check the size limits. ``run`` executes the result, ``plan`` reports it, and the
        benchmark times it."""
        check_body_tensors(body, self.settings)
        plan = parse_request(op, body, allow_shape_only=allow_shape_only, select=False)
        device = self._device_for(plan, lazy_tuning)
        check_limits(plan, self.settings)
        return plan, device

    def _device_for(self, plan: RequestPlan, lazy_tuning: bool = True) -> Device:
        """Return the device the plan names (or the default), with the plan's algorithms
        chosen for it."""
        device = self.registry.get(plan.device_id)
        device.check_dtype(plan.dtype)
        chooser = self.selector.chooser(device, plan.dtype, lazy_tuning=lazy_tuning)
        select_algorithms(plan, chooser, device_profile(device))
        return device


def _selector(settings: Settings) -> Selector:
    """Create the selector with the tuning database and lazy tuner that ``settings`` request."""
    if settings.tuning_dir is None:
        if settings.tune == "lazy":
            logger.warning(
                "CLCONV_TUNE=lazy is ignored because CLCONV_TUNING_DIR switches the tuning "
                "database off; algorithms come from the request or the rule"
            )
        else:
            logger.info("tuning database off; algorithms come from the request or the rule")
        return Selector()
    database = TuningDatabase(settings.tuning_dir)
    tuner = None
    if settings.tune == "lazy":
        tuner = LazyTuner(
            database,
            settings.tune_budget_s,
            lambda device: device_budget_bytes(device, settings),
        )
    logger.info(
        "tuning database %s; lazy tuning %s",
        settings.tuning_dir,
        f"on, {settings.tune_budget_s:g} s per shape class" if tuner is not None else "off",
    )
    return Selector(database, tuner)


def _warm_up_bodies(device_id: str) -> list[tuple[str, dict[str, Any]]]:
    def zeros(*shape: int) -> dict[str, Any]:
        count = 1
        for size in shape:
            count *= size
        return {"shape": list(shape), "dtype": "float32", "data": [0.0] * count}

    bodies: list[tuple[str, dict[str, Any]]] = [
        ("conv2d", {"input": zeros(1, 3, 8, 8), "weight": zeros(4, 3, 3, 3), "padding": 1}),
        ("conv2d", {"input": zeros(1, 4, 8, 8), "weight": zeros(8, 4, 1, 1)}),
        (
            "depthwise_separable_conv2d",
            {
                "input": zeros(1, 4, 8, 8),
                "depthwise_weight": zeros(4, 1, 3, 3),
                "pointwise_weight": zeros(8, 4, 1, 1),
                "padding": 1,
            },
        ),
        (
            "conv_transpose2d",
            {"input": zeros(1, 4, 4, 4), "weight": zeros(4, 3, 3, 3), "stride": 2},
        ),
    ]
    return [(op, {**body, "device": device_id}) for op, body in bodies]


def _device_ref(device: Device) -> dict[str, str]:
    return {"id": device.id, "name": device.name, "platform": str(device.platform.name).strip()}


def _response(plan: RequestPlan, execution: Execution) -> dict[str, Any]:
    summary = summarize(plan)
    steps = []
    stage_index = 0
    for op, step_summary in zip(plan.ops, summary["steps"], strict=True):
        count = len(op.stages)
        step_ms = execution.stage_ms[stage_index : stage_index + count]
        stage_index += count
        steps.append({**step_summary, "compute_ms": sum(step_ms)})
    return {
        "op": plan.op,
        "output": encode_tensor(execution.output, plan.output_encoding),
        "device": _device_ref(execution.device),
        "algorithm": summary["algorithm"],
        "algorithm_source": summary["algorithm_source"],
        "macs": summary["macs"],
        "flops": summary["flops"],
        "params": summary["params"],
        "timings_ms": execution.timings_ms,
        "kernels": [
            {"name": k.name, "stage": k.stage, "ms": k.ms, "global_size": k.global_size}
            for k in execution.kernels
        ],
        "steps": steps,
    }
