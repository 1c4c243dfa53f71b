"""Helpers shared by the operation builders: tensor parameters, channel checks, padding
lowering and the receptive field of a chain of stages."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt

from clconv.core.fields import (
    Activation,
    Pads,
    parse_int,
    parse_padding,
    parse_padding_mode,
    parse_pair,
)
from clconv.core.stages import (
    ConvStage,
    ConvTransposeStage,
    OpPlan,
    PadStage,
    Shape4,
    Stage,
    conv_output_size,
)
from clconv.core.tensors import Tensor, decode_tensor
from clconv.errors import ValidationError


@dataclass(frozen=True)
class BuildContext:
    """Per-request build settings: the request dtype and whether tensors may come without
    values (``/v1/plan``)."""

    dtype: str
    allow_shape_only: bool


Builder = Callable[[dict[str, Any], str, Shape4, BuildContext], OpPlan]


def decode_param(
    body: dict[str, Any], key: str, prefix: str, ctx: BuildContext, *, required: bool
) -> Tensor | None:
    field = f"{prefix}{key}"
    if body.get(key) is None:
        if required:
            raise ValidationError(
                f"{field} is missing; give it as a tensor object", field, code="missing_field"
            )
        return None
    tensor = decode_tensor(body[key], field, allow_shape_only=ctx.allow_shape_only)
    if tensor.dtype != ctx.dtype:
        raise ValidationError(
            f"{field}.dtype is {tensor.dtype}, but input is {ctx.dtype}; send every tensor of a "
            "request in the same dtype",
            f"{field}.dtype",
            code="unsupported_dtype",
        )
    return tensor


def weight4(tensor: Tensor, field: str) -> Shape4:
    if len(tensor.shape) != 4:
        raise ValidationError(
            f"{field}.shape must have 4 dimensions [out, in/groups, kh, kw], got "
            f"{list(tensor.shape)}",
            f"{field}.shape",
            code="shape_mismatch",
        )
    if 0 in tensor.shape:
        raise ValidationError(
            f"{field}.shape {list(tensor.shape)} has a zero dimension; every weight dimension "
            "must be >= 1",
            f"{field}.shape",
            code="shape_mismatch",
        )
    return (tensor.shape[0], tensor.shape[1], tensor.shape[2], tensor.shape[3])


def check_bias(bias: Tensor | None, channels: int, field: str) -> None:
    if bias is not None and bias.shape != (channels,):
        raise ValidationError(
            f"{field}.shape must be [{channels}] (one value per output channel), got "
            f"{list(bias.shape)}",
            f"{field}.shape",
            code="shape_mismatch",
        )


def array(tensor: Tensor | None) -> npt.NDArray[Any] | None:
    return None if tensor is None else tensor.array


def param_count(*tensors: Tensor | None) -> int:
    return sum(t.numel for t in tensors if t is not None)


def reject_unknown(body: dict[str, Any], allowed: set[str], prefix: str) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ValidationError(
            f"{prefix}{unknown[0]} is not a field of this operation; the fields are "
            f"{', '.join(sorted(allowed))}",
            f"{prefix}{unknown[0]}",
        )


COMMON_FIELDS = {"input", "device", "output_encoding", "op"}


def pad_stage(in_shape: Shape4, mode: str, pads: Pads, field: str) -> PadStage:
    """Lower a non-zero padding mode to a stage that materialises the padded input."""
    n, c, h, w = in_shape
    for side, amount, size, axis in (
        ("top", pads.top, h, "H"),
        ("bottom", pads.bottom, h, "H"),
        ("left", pads.left, w, "W"),
        ("right", pads.right, w, "W"),
    ):
        # PyTorch's limits: reflect needs pad < size, circular needs pad <= size.
        if mode == "reflect" and amount >= size:
            raise ValidationError(
                f"{field} {side} = {amount} is too large for padding_mode 'reflect' on an input "
                f"of {axis} = {size}; reflect padding must be smaller than the input size",
                field,
            )
        if mode == "circular" and amount > size:
            raise ValidationError(
                f"{field} {side} = {amount} is too large for padding_mode 'circular' on an "
                f"input of {axis} = {size}; circular padding must be at most the input size",
                field,
            )
    out_shape = (n, c, h + pads.top + pads.bottom, w + pads.left + pads.right)
    return PadStage(in_shape, out_shape, mode, pads)


def conv_stage(
    in_shape: Shape4,
    weight: Tensor,
    weight_field: str,
    bias: Tensor | None,
    stride: tuple[int, int],
    pads: Pads,
    dilation: tuple[int, int],
    groups: int,
    activation: Activation,
    *,
    weight_array: npt.NDArray[Any] | None = None,
    weight_shape: Shape4 | None = None,
    channel_map: tuple[int, int] | None = None,
    prefix: str = "",
) -> ConvStage:
    """Check one convolution's channels and sizes, then build its stage."""
    n, c, h, w = in_shape
    k, cg, kh, kw = weight_shape or weight4(weight, weight_field)
    groups_field = f"{prefix}groups"
    if c % groups:
        raise ValidationError(
            f"input channels {c} are not divisible by groups {groups}; choose groups that "
            f"divides {c}",
            groups_field,
        )
    if k % groups:
        raise ValidationError(
            f"output channels {k} (weight.shape[0]) are not divisible by groups {groups}; "
            f"choose groups that divides {k}",
            groups_field,
        )
    if cg * groups != c:
        raise ValidationError(
            f"{weight_field}.shape[1] is {cg}, but input channels / groups = {c} / {groups} = "
            f"{c // groups}; the weight must be [out, in/groups, kh, kw]",
            f"{weight_field}.shape",
            code="shape_mismatch",
        )
    oh = conv_output_size(h, kh, stride[0], pads.top + pads.bottom, dilation[0])
    ow = conv_output_size(w, kw, stride[1], pads.left + pads.right, dilation[1])
    if oh <= 0 or ow <= 0:
        eff_h, eff_w = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
        raise ValidationError(
            f"the kernel ({eff_h}x{eff_w} after dilation) is larger than the padded input "
            f"({h + pads.top + pads.bottom}x{w + pads.left + pads.right}); use a smaller kernel "
            "or dilation, or more padding",
            f"{weight_field}.shape",
        )
    return ConvStage(
        in_shape=in_shape,
        out_shape=(n, k, oh, ow),
        weight_shape=(k, cg, kh, kw),
        weight=weight.array if weight_array is None else weight_array,
        bias=array(bias),
        has_bias=bias is not None,
        stride=stride,
        pads=pads,
        dilation=dilation,
        groups=groups,
        activation=activation,
        channel_map=channel_map,
    )


def lower_padding(
    in_shape: Shape4, mode: str, pads: Pads, field: str
) -> tuple[list[Stage], Shape4, Pads]:
    """Return the stages that pad the input, the padded shape and the pads left for the conv."""
    if mode == "zeros" or not pads.any:
        return [], in_shape, pads
    stage = pad_stage(in_shape, mode, pads, field)
    return [stage], stage.out_shape, Pads()


def receptive_field(stages: list[Stage]) -> tuple[tuple[float, float], tuple[float, float]]:
    """Receptive field (input pixels seen by one output pixel) and effective stride (input
    pixels between neighbouring outputs) of a chain of stages, per axis (H, W)."""
    field_hw = [1.0, 1.0]
    jump = [1.0, 1.0]
    for stage in stages:
        if isinstance(stage, PadStage):
            continue
        for axis in (0, 1):
            kernel = stage.weight_shape[2 + axis]
            effective = stage.dilation[axis] * (kernel - 1) + 1
            if isinstance(stage, ConvTransposeStage):
                taps = math.ceil(effective / stage.stride[axis])
                field_hw[axis] += (taps - 1) * jump[axis]
                jump[axis] /= stage.stride[axis]
            else:
                field_hw[axis] += (effective - 1) * jump[axis]
                jump[axis] *= stage.stride[axis]
    return (field_hw[0], field_hw[1]), (jump[0], jump[1])


def finish(op: str, prefix: str, stages: list[Stage], params: int, in_shape: Shape4) -> OpPlan:
    receptive, stride = receptive_field(stages)
    return OpPlan(op, prefix, stages, params, in_shape, stages[-1].out_shape, receptive, stride)


def parse_conv_settings(
    body: dict[str, Any], prefix: str, kernel: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int], int, Pads, str]:
    """Parse stride, dilation, groups, padding (every form, "same" sized for ``kernel``) and
    padding_mode, the settings every conv2d-family operation shares."""
    stride = parse_pair(body, "stride", f"{prefix}stride", default=1, minimum=1)
    dilation = parse_pair(body, "dilation", f"{prefix}dilation", default=1, minimum=1)
    groups = parse_int(body, "groups", f"{prefix}groups", default=1, minimum=1)
    pads = parse_padding(
        body,
        f"{prefix}padding",
        kernel=kernel,
        stride=stride,
        dilation=dilation,
        allow_strings=True,
    )
    mode = parse_padding_mode(body, f"{prefix}padding_mode")
    return stride, dilation, groups, pads, mode
