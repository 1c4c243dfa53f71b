"""Turn a request body into a validated plan: stages, shapes, algorithms, FLOPs and bytes.

Nothing here touches a device; the same plan serves ``/v1/plan`` and execution.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from clconv.core.algorithms import (
    DIRECT_OC_COLUMNS,
    TRANSPOSED_PHASES,
    WINOGRAD_TILE,
    phase_shapes,
    rule_choice,
    scratch_elements,
    transposed_rule_choice,
)
from clconv.core.builders_common import BuildContext
from clconv.core.fields import Pads, describe, require_dict
from clconv.core.ops import BUILDERS
from clconv.core.stages import ConvStage, ConvTransposeStage, OpPlan, PadStage, Shape4, Stage
from clconv.core.tensors import DTYPES, ENCODINGS, Tensor, decode_tensor
from clconv.errors import TooLargeError, ValidationError
from clconv.settings import Settings

OPERATIONS = (*BUILDERS, "pipeline")

# Kernels index buffers with 32-bit ints.
MAX_BUFFER_ELEMENTS = 2**31 - 1


@dataclass
class RequestPlan:
    """A validated request: its input, its operations lowered to stages, and options."""

    op: str
    input: Tensor
    ops: list[OpPlan]
    device_id: str | None
    output_encoding: str

    @property
    def dtype(self) -> str:
        return self.input.dtype

    @property
    def stages(self) -> list[Stage]:
        return [stage for op in self.ops for stage in op.stages]

    @property
    def output_shape(self) -> Shape4:
        return self.ops[-1].out_shape

    @property
    def itemsize(self) -> int:
        return DTYPES[self.dtype].itemsize


@dataclass(frozen=True)
class Choice:
    """A conv2d stage's algorithm and where the choice came from: "rule", or one of the
    selector's sources such as "tuned" (see ``clconv.runtime.selection``)."""

    algorithm: str
    source: str


# Picks the algorithm of one conv2d stage; the default is the device-independent rule.
Chooser = Callable[[ConvStage], Choice]


def choose_by_rule(stage: ConvStage) -> Choice:
    """Return the rule's choice for a CPU, for planning before the device is known."""
    return Choice(rule_choice(stage), "rule")


def parse_request(
    op: str, body: Any, *, allow_shape_only: bool = False, select: bool = True
) -> RequestPlan:
    """Validate ``body`` for operation ``op`` and lower it to stages.

    With ``select``, algorithms are chosen by ``rule_choice`` for a CPU; pass ``select=False``
    and call ``select_algorithms`` once the device is known to choose for that device."""
    body = require_dict(body, "body")
    if op not in OPERATIONS:
        raise ValidationError(
            f"op {op!r} is unknown; use one of {', '.join(OPERATIONS)}", "op", code="invalid_value"
        )
    if body.get("input") is None:
        raise ValidationError(
            "input is missing; give the input feature map as a tensor object [N, C, H, W]",
            "input",
            code="missing_field",
        )
    tensor = decode_tensor(body["input"], "input", allow_shape_only=allow_shape_only)
    in_shape = _input_shape(tensor)
    ctx = BuildContext(dtype=tensor.dtype, allow_shape_only=allow_shape_only)
    if op == "pipeline":
        ops = _parse_pipeline(body, in_shape, ctx)
    else:
        ops = [BUILDERS[op](body, "", in_shape, ctx)]
    device_id = body.get("device")
    if device_id is not None and not isinstance(device_id, str):
        raise ValidationError(
            f"device must be a device id string such as 'intel:0', got {describe(device_id)}",
            "device",
            code="invalid_type",
        )
    encoding = body.get("output_encoding") or ("base64" if tensor.encoding == "base64" else "json")
    if encoding not in ENCODINGS:
        raise ValidationError(
            f"output_encoding {encoding!r} is unknown; use one of {', '.join(ENCODINGS)}",
            "output_encoding",
        )
    plan = RequestPlan(op, tensor, ops, device_id, encoding)
    if select:
        select_algorithms(plan, choose_by_rule)
    return plan


def select_algorithms(plan: RequestPlan, choose: Chooser, profile: str = "cpu") -> None:
    """Set every conv2d stage's algorithm and its source (the requested one, else ``choose``'s),
    then give the stages whose kernel reads its input without bounds checks a padding stage in
    front."""
    for stage in plan.stages:
        if isinstance(stage, ConvTransposeStage):
            stage.algorithm = stage.requested_algorithm or transposed_rule_choice(stage, profile)
            stage.algorithm_source = "rule" if stage.requested_algorithm is None else "request"
            continue
        if not isinstance(stage, ConvStage):
            continue
        if stage.requested_algorithm is not None:
            stage.algorithm = stage.requested_algorithm
            stage.algorithm_source = "request"
        else:
            choice = choose(stage)
            stage.algorithm = choice.algorithm
            stage.algorithm_source = choice.source
    _insert_explicit_padding(plan)


def _input_shape(tensor: Tensor) -> Shape4:
    if len(tensor.shape) != 4:
        raise ValidationError(
            f"input.shape must have 4 dimensions [N, C, H, W], got {list(tensor.shape)}; "
            "reshape a single image to [1, C, H, W]",
            "input.shape",
            code="shape_mismatch",
        )
    n, c, h, w = tensor.shape
    if c == 0 or h == 0 or w == 0:
        raise ValidationError(
            f"input.shape {list(tensor.shape)} has a zero channel or spatial dimension; only the "
            "batch N may be 0",
            "input.shape",
            code="shape_mismatch",
        )
    return (n, c, h, w)


def _parse_pipeline(body: dict[str, Any], in_shape: Shape4, ctx: BuildContext) -> list[OpPlan]:
    unknown = sorted(set(body) - {"op", "input", "steps", "device", "output_encoding"})
    if unknown:
        raise ValidationError(
            f"{unknown[0]} is not a field of a pipeline; it takes input, steps, device and "
            "output_encoding, and each step takes its own settings",
            unknown[0],
        )
    steps = body.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ValidationError(
            f"steps must be a non-empty list of operations, got {describe(steps)}",
            "steps",
            code="missing_field" if steps is None else "invalid_value",
        )
    ops: list[OpPlan] = []
    shape = in_shape
    for index, step in enumerate(steps):
        prefix = f"steps[{index}]."
        step = require_dict(step, f"steps[{index}]")
        name = step.get("op")
        if name not in BUILDERS:
            raise ValidationError(
                f"steps[{index}].op {name!r} is unknown; use one of {', '.join(BUILDERS)}",
                f"{prefix}op",
            )
        for key in ("input", "device", "output_encoding"):
            if key in step:
                raise ValidationError(
                    f"steps[{index}].{key} is not allowed in a step; a step reads the previous "
                    f"step's output, and {key} belongs at the top level",
                    f"{prefix}{key}",
                )
        op_plan = BUILDERS[name](step, prefix, shape, ctx)
        ops.append(op_plan)
        shape = op_plan.out_shape
    return ops


def _insert_explicit_padding(plan: RequestPlan) -> None:
    """Give every ``conv2d_direct_oc`` stage (either tile) a zero-padding stage in front,
    because that kernel reads its taps without bounds checks."""
    for op in plan.ops:
        stages: list[Stage] = []
        for stage in op.stages:
            unpadded_kernel = isinstance(stage, ConvStage) and stage.algorithm in DIRECT_OC_COLUMNS
            if unpadded_kernel and stage.pads.any:
                padded = _padded_shape(stage.in_shape, stage.pads)
                stages.append(PadStage(stage.in_shape, padded, "zeros", stage.pads))
                stage = replace(stage, in_shape=padded, pads=Pads())
            stages.append(stage)
        op.stages = stages


def _padded_shape(shape: Shape4, pads: Pads) -> Shape4:
    n, c, h, w = shape
    return (n, c, h + pads.top + pads.bottom, w + pads.left + pads.right)


def check_limits(plan: RequestPlan, settings: Settings) -> None:
    """Reject with 413, before anything is allocated, a request whose output or device working
    memory exceeds the configured limits."""
    itemsize = plan.itemsize
    out_bytes = math.prod(plan.output_shape) * itemsize
    if out_bytes > settings.max_output_bytes:
        raise TooLargeError(
            f"the output {list(plan.output_shape)} would take {out_bytes} bytes, over the limit "
            f"of {settings.max_output_bytes}; send a smaller input or less padding, or raise "
            "CLCONV_MAX_OUTPUT_BYTES",
            "input",
        )
    for stage in plan.stages:
        if math.prod(stage.out_shape) > MAX_BUFFER_ELEMENTS:
            raise TooLargeError(
                f"an intermediate of shape {list(stage.out_shape)} has more than 2^31 - 1 "
                "elements, which the kernels cannot index; split the batch",
                "input",
            )
    work = device_bytes(plan)
    if work > settings.max_work_bytes:
        raise TooLargeError(
            f"the request needs {work} bytes of device memory, over the limit of "
            f"{settings.max_work_bytes}; send a smaller input or batch, or raise "
            "CLCONV_MAX_WORK_BYTES",
            "input",
        )


def device_bytes(plan: RequestPlan) -> int:
    """Device memory of a request: input, weights and biases, every stage's output and the
    scratch buffers of its algorithm."""
    itemsize = plan.itemsize
    total = plan.input.numel * itemsize
    for stage in plan.stages:
        total += math.prod(stage.out_shape) * itemsize + _weight_bytes(stage, itemsize)
        if isinstance(stage, ConvStage | ConvTransposeStage):
            total += scratch_elements(stage) * itemsize
    return total


def _weight_bytes(stage: Stage, itemsize: int) -> int:
    if isinstance(stage, ConvStage):
        k, cg, kh, kw = stage.weight_shape
        m = WINOGRAD_TILE.get(stage.algorithm)
        # Winograd uploads the transformed filters: (M + 2)^2 values per channel pair.
        taps = kh * kw if m is None else (m + 2) ** 2
        return (k * cg * taps + k) * itemsize
    if isinstance(stage, ConvTransposeStage):
        if stage.algorithm == TRANSPOSED_PHASES:
            # The per-phase weights: ceil(kh / sh) * ceil(kw / sw) taps per phase.
            return (math.prod(phase_shapes(stage)[1]) + stage.out_shape[1]) * itemsize
        return (math.prod(stage.weight_shape) + stage.out_shape[1]) * itemsize
    return 0


def summarize(plan: RequestPlan) -> dict[str, Any]:
    """Figures for ``/v1/plan`` and every response: shapes, MACs, FLOPs, params, bytes."""
    macs = sum(stage.macs for stage in plan.stages)
    flops = 2 * macs + sum(stage.extra_flops for stage in plan.stages)
    receptive, jump = _chain_receptive_field(plan.ops)
    itemsize = plan.itemsize
    uploaded = plan.input.numel * itemsize + sum(
        _weight_bytes(stage, itemsize) for stage in plan.stages
    )
    downloaded = math.prod(plan.output_shape) * itemsize
    return {
        "output_shape": list(plan.output_shape),
        "dtype": plan.dtype,
        "macs": macs,
        "flops": flops,
        "params": sum(op.params for op in plan.ops),
        "receptive_field": list(receptive),
        "effective_stride": list(jump),
        "bytes_moved": {"upload": uploaded, "download": downloaded},
        "device_bytes": device_bytes(plan),
        "algorithm": [stage.algorithm for stage in plan.stages],
        "algorithm_source": _algorithm_sources(plan.stages),
        "steps": [
            {
                "op": op.op,
                "output_shape": list(op.out_shape),
                "macs": sum(stage.macs for stage in op.stages),
                "params": op.params,
                "algorithm": [stage.algorithm for stage in op.stages],
                "algorithm_source": _algorithm_sources(op.stages),
            }
            for op in plan.ops
        ],
    }


def _algorithm_sources(stages: list[Stage]) -> list[str | None]:
    """Return where each stage's algorithm came from, None for padding stages."""
    return [
        stage.algorithm_source if isinstance(stage, ConvStage | ConvTransposeStage) else None
        for stage in stages
    ]


def _chain_receptive_field(
    ops: list[OpPlan],
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Compose the per-operation receptive fields and strides along a pipeline."""
    field = [1.0, 1.0]
    jump = [1.0, 1.0]
    for op in ops:
        for axis in (0, 1):
            field[axis] += (op.receptive_field[axis] - 1) * jump[axis]
            jump[axis] *= op.effective_stride[axis]
    return (field[0], field[1]), (jump[0], jump[1])
