"""The protocol-independent entry point: devices, planning and execution of request bodies.

HTTP (``clconv.api``) and any other adapter call ``Engine.run``, ``Engine.plan`` and
``Engine.devices`` with decoded JSON bodies and turn ``ClconvError`` into their own error
responses. Nothing here imports a web framework.
"""

from __future__ import annotations

import logging
from typing import Any

from clconv.core.fields import describe
from clconv.core.planner import (
    OPERATIONS,
    RequestPlan,
    check_limits,
    parse_request,
    specialize_for_device,
    summarize,
)
from clconv.core.tensors import encode_tensor
from clconv.errors import DeviceError, UnsupportedOnDeviceError, ValidationError
from clconv.runtime.devices import Device, DeviceRegistry, discover_devices
from clconv.runtime.executor import Execution, execute
from clconv.settings import Settings

logger = logging.getLogger("clconv.engine")


class Engine:
    """Owns the device registry; turns request bodies into results."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._registry: DeviceRegistry | None = None

    def start(self) -> None:
        """Discover devices and choose the default; raises if ``CLCONV_DEVICE`` is unknown."""
        self._registry = discover_devices(self.settings.device)
        if not self._registry.devices:
            logger.error("no usable OpenCL device; every convolution request will fail")

    @property
    def started(self) -> bool:
        return self._registry is not None

    @property
    def ready(self) -> bool:
        return self._registry is not None and bool(self._registry.devices)

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
        plan = parse_request(op, body, allow_shape_only=True)
        device = self._device_for(plan)
        specialize_for_device(plan, vectorizes_work_items=device.vectorizes_work_items)
        check_limits(plan, self.settings)
        return {"op": op, **summarize(plan), "device": _device_ref(device)}

    def run(self, op: str, body: Any) -> dict[str, Any]:
        """Validate, plan and execute one request; return the response body."""
        plan = parse_request(op, body)
        device = self._device_for(plan)
        specialize_for_device(plan, vectorizes_work_items=device.vectorizes_work_items)
        check_limits(plan, self.settings)
        execution = execute(plan, device)
        return _response(plan, execution)

    def _device_for(self, plan: RequestPlan) -> Device:
        device = self.registry.get(plan.device_id)
        if plan.dtype == "float64" and not device.fp64:
            raise UnsupportedOnDeviceError(
                f"device {device.id} ({device.name}) has no cl_khr_fp64, so float64 is not "
                "supported there; send float32 or choose a device with fp64 in GET /v1/devices",
                "input.dtype",
            )
        return device


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
