"""Size limits checked before a request allocates anything: tensor rank and elements, kernel
size, and the device memory a plan needs against the device's own capacity.

The body size is capped while it streams in (``clconv.api.bodies``); output and working memory
against fixed byte limits are checked by ``clconv.core.planner.check_limits``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from clconv.core.planner import RequestPlan, device_bytes
from clconv.core.stages import ConvStage, ConvTransposeStage
from clconv.errors import TooLargeError, ValidationError
from clconv.runtime.devices import Device
from clconv.settings import Settings

# The operations take tensors of rank 4 (NCHW) and 1 (biases); a longer shape is a mistake,
# and capping it keeps the element-count product cheap.
MAX_TENSOR_RANK = 8


def check_body_tensors(body: Any, settings: Settings) -> None:
    """Reject a tensor whose declared shape has too many dimensions, elements or kernel taps.

    Runs on the decoded JSON before any tensor is converted to an array. A shape that is not a
    list of non-negative integers is left to the full validation, which names the fault.
    """
    for tensor, field in _tensor_objects(body, ""):
        shape = tensor.get("shape")
        if not isinstance(shape, list):
            continue
        if len(shape) > MAX_TENSOR_RANK:
            raise ValidationError(
                f"{field}.shape has {len(shape)} dimensions, over the maximum of "
                f"{MAX_TENSOR_RANK}; the operations take NCHW tensors of rank 4",
                f"{field}.shape",
            )
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
            continue
        elements = math.prod(shape)
        if elements > settings.max_tensor_elements:
            raise TooLargeError(
                f"{field} has shape {shape}, {elements} elements, over the limit of "
                f"{settings.max_tensor_elements}; send a smaller tensor or raise "
                "CLCONV_MAX_TENSOR_ELEMENTS",
                f"{field}.shape",
            )
        if field.split(".")[-1].endswith("weight") and len(shape) == 4:
            kernel = max(shape[2], shape[3])
            if kernel > settings.max_kernel_size:
                raise TooLargeError(
                    f"{field} has a {shape[2]}x{shape[3]} kernel, over the limit of "
                    f"{settings.max_kernel_size} on each axis; use a smaller kernel or raise "
                    "CLCONV_MAX_KERNEL_SIZE",
                    f"{field}.shape",
                )


def _tensor_objects(value: Any, field: str) -> Iterator[tuple[dict[str, Any], str]]:
    """Yield every object with a ``shape`` key and its dotted path, depth first."""
    if isinstance(value, dict):
        if "shape" in value and field:
            yield value, field
            return
        for key, item in value.items():
            # Tensor values are lists of numbers, so there is nothing to find inside them.
            if key != "data" and isinstance(item, dict | list):
                yield from _tensor_objects(item, f"{field}.{key}" if field else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, dict | list):
                yield from _tensor_objects(item, f"{field}[{index}]")


def device_budget_bytes(device: Device, settings: Settings) -> int:
    """Device memory that requests on ``device`` may hold at once."""
    return int(int(device.cl_device.global_mem_size) * settings.device_memory_fraction)


def check_device_memory(plan: RequestPlan, device: Device, settings: Settings) -> int:
    """Reject a plan that cannot fit on ``device`` even when idle; return its device bytes.

    The whole request must fit in ``CLCONV_DEVICE_MEMORY_FRACTION`` of the device's global
    memory, and each buffer in the device's ``max_mem_alloc_size``.
    """
    needed = device_bytes(plan)
    budget = device_budget_bytes(device, settings)
    if needed > budget:
        raise TooLargeError(
            f"the request needs {needed} bytes of device memory, over the budget of {budget} "
            f"bytes on {device.id} ({settings.device_memory_fraction:g} of its "
            f"{int(device.cl_device.global_mem_size)} bytes of global memory); send a smaller "
            "input or batch, or raise CLCONV_DEVICE_MEMORY_FRACTION",
            "input",
        )
    max_alloc = int(device.cl_device.max_mem_alloc_size)
    for name, size in _buffer_bytes(plan):
        if size > max_alloc:
            raise TooLargeError(
                f"the {name} buffer needs {size} bytes, over the largest single allocation of "
                f"{max_alloc} bytes that {device.id} allows (CL_DEVICE_MAX_MEM_ALLOC_SIZE); send "
                "a smaller input or batch, or choose another device",
                "input",
            )
    return needed


def _buffer_bytes(plan: RequestPlan) -> Iterator[tuple[str, int]]:
    itemsize = plan.itemsize
    yield "input", plan.input.numel * itemsize
    for index, stage in enumerate(plan.stages):
        yield f"stage {index} output", math.prod(stage.out_shape) * itemsize
        if isinstance(stage, ConvStage | ConvTransposeStage):
            yield f"stage {index} weight", math.prod(stage.weight_shape) * itemsize
