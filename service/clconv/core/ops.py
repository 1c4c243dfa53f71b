"""Validate each operation's request body and lower it to stages.

Every builder takes the body of one operation, the shape of its input and a field prefix (empty
for a single operation, ``steps[i].`` in a pipeline), and returns an ``OpPlan``. Argument names,
defaults and output sizes follow ``torch.nn.functional.conv2d`` and ``conv_transpose2d``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from clconv.core.fields import (
    NO_ACTIVATION,
    Activation,
    Pads,
    describe,
    parse_activation,
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
    conv_transpose_output_size,
)
from clconv.core.tensors import Tensor, decode_tensor
from clconv.errors import NotSeparableError, ValidationError

DEFAULT_RANK1_TOLERANCE = 1e-4


@dataclass(frozen=True)
class BuildContext:
    """What every builder needs besides its body: the request dtype and whether tensors may
    come without values (``/v1/plan``)."""

    dtype: str
    allow_shape_only: bool


Builder = Callable[[dict[str, Any], str, Shape4, BuildContext], OpPlan]


# ---------------------------------------------------------------------------------------------
# Shared helpers


def _decode_param(
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


def _weight4(tensor: Tensor, field: str) -> Shape4:
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


def _check_bias(bias: Tensor | None, channels: int, field: str) -> None:
    if bias is not None and bias.shape != (channels,):
        raise ValidationError(
            f"{field}.shape must be [{channels}] (one value per output channel), got "
            f"{list(bias.shape)}",
            f"{field}.shape",
            code="shape_mismatch",
        )


def _array(tensor: Tensor | None) -> npt.NDArray[Any] | None:
    return None if tensor is None else tensor.array


def _param_count(*tensors: Tensor | None) -> int:
    return sum(t.numel for t in tensors if t is not None)


def _reject_unknown(body: dict[str, Any], allowed: set[str], prefix: str) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ValidationError(
            f"{prefix}{unknown[0]} is not a field of this operation; the fields are "
            f"{', '.join(sorted(allowed))}",
            f"{prefix}{unknown[0]}",
        )


COMMON_FIELDS = {"input", "device", "output_encoding", "op"}


def _pad_stage(in_shape: Shape4, mode: str, pads: Pads, field: str) -> PadStage:
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


def _conv_stage(
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
    k, cg, kh, kw = weight_shape or _weight4(weight, weight_field)
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
        bias=_array(bias),
        has_bias=bias is not None,
        stride=stride,
        pads=pads,
        dilation=dilation,
        groups=groups,
        activation=activation,
        channel_map=channel_map,
    )


def _lower_padding(
    in_shape: Shape4, mode: str, pads: Pads, field: str
) -> tuple[list[Stage], Shape4, Pads]:
    """Return the stages that pad the input, the padded shape and the pads left for the conv."""
    if mode == "zeros" or not pads.any:
        return [], in_shape, pads
    stage = _pad_stage(in_shape, mode, pads, field)
    return [stage], stage.out_shape, Pads()


def _receptive_field(stages: list[Stage]) -> tuple[tuple[float, float], tuple[float, float]]:
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


def _finish(op: str, prefix: str, stages: list[Stage], params: int, in_shape: Shape4) -> OpPlan:
    receptive, stride = _receptive_field(stages)
    return OpPlan(op, prefix, stages, params, in_shape, stages[-1].out_shape, receptive, stride)


# ---------------------------------------------------------------------------------------------
# conv2d


def build_conv2d(body: dict[str, Any], prefix: str, in_shape: Shape4, ctx: BuildContext) -> OpPlan:
    """Regular, 1x1, grouped, depthwise (with a depth multiplier) and dilated convolution."""
    _reject_unknown(
        body,
        COMMON_FIELDS
        | {
            "weight",
            "bias",
            "stride",
            "padding",
            "dilation",
            "groups",
            "padding_mode",
            "activation",
            "negative_slope",
        },
        prefix,
    )
    weight = _decode_param(body, "weight", prefix, ctx, required=True)
    assert weight is not None  # required=True guarantees a tensor
    k, _, kh, kw = _weight4(weight, f"{prefix}weight")
    bias = _decode_param(body, "bias", prefix, ctx, required=False)
    _check_bias(bias, k, f"{prefix}bias")
    stride = parse_pair(body, "stride", f"{prefix}stride", default=1, minimum=1)
    dilation = parse_pair(body, "dilation", f"{prefix}dilation", default=1, minimum=1)
    groups = parse_int(body, "groups", f"{prefix}groups", default=1, minimum=1)
    pads = parse_padding(
        body,
        f"{prefix}padding",
        kernel=(kh, kw),
        stride=stride,
        dilation=dilation,
        allow_strings=True,
    )
    mode = parse_padding_mode(body, f"{prefix}padding_mode")
    activation = parse_activation(body, "activation", f"{prefix}activation")

    stages, conv_in, conv_pads = _lower_padding(in_shape, mode, pads, f"{prefix}padding")
    stages.append(
        _conv_stage(
            conv_in,
            weight,
            f"{prefix}weight",
            bias,
            stride,
            conv_pads,
            dilation,
            groups,
            activation,
            prefix=prefix,
        )
    )
    return _finish("conv2d", prefix, stages, _param_count(weight, bias), in_shape)


# ---------------------------------------------------------------------------------------------
# conv_transpose2d


def build_conv_transpose2d(
    body: dict[str, Any], prefix: str, in_shape: Shape4, ctx: BuildContext
) -> OpPlan:
    """Transposed convolution with stride, asymmetric padding, output_padding, dilation, groups."""
    _reject_unknown(
        body,
        COMMON_FIELDS
        | {
            "weight",
            "bias",
            "stride",
            "padding",
            "output_padding",
            "output_size",
            "dilation",
            "groups",
            "activation",
            "negative_slope",
        },
        prefix,
    )
    weight = _decode_param(body, "weight", prefix, ctx, required=True)
    assert weight is not None  # required=True guarantees a tensor
    weight_field = f"{prefix}weight"
    c_w, kg, kh, kw = _weight4(weight, weight_field)
    stride = parse_pair(body, "stride", f"{prefix}stride", default=1, minimum=1)
    dilation = parse_pair(body, "dilation", f"{prefix}dilation", default=1, minimum=1)
    groups = parse_int(body, "groups", f"{prefix}groups", default=1, minimum=1)
    pads = parse_padding(
        body,
        f"{prefix}padding",
        kernel=(kh, kw),
        stride=stride,
        dilation=dilation,
        allow_strings=False,
    )
    activation = parse_activation(body, "activation", f"{prefix}activation")
    if "padding_mode" in body and body["padding_mode"] not in (None, "zeros"):
        raise ValidationError(
            f"{prefix}padding_mode {body['padding_mode']!r} is not supported for "
            "conv_transpose2d; only 'zeros' is (as in PyTorch)",
            f"{prefix}padding_mode",
        )

    n, c, h, w = in_shape
    if c_w != c:
        raise ValidationError(
            f"{weight_field}.shape[0] is {c_w}, but the input has {c} channels; a transposed "
            "convolution's weight is [in, out/groups, kh, kw]",
            f"{weight_field}.shape",
            code="shape_mismatch",
        )
    if c % groups:
        raise ValidationError(
            f"input channels {c} are not divisible by groups {groups}; choose groups that "
            f"divides {c}",
            f"{prefix}groups",
        )
    k = kg * groups
    bias = _decode_param(body, "bias", prefix, ctx, required=False)
    _check_bias(bias, k, f"{prefix}bias")

    output_padding = _resolve_output_padding(
        body, prefix, in_shape, (kh, kw), stride, pads, dilation
    )
    oh = conv_transpose_output_size(
        h, kh, stride[0], pads.top + pads.bottom, dilation[0], output_padding[0]
    )
    ow = conv_transpose_output_size(
        w, kw, stride[1], pads.left + pads.right, dilation[1], output_padding[1]
    )
    if oh <= 0 or ow <= 0:
        raise ValidationError(
            f"the output would be {oh}x{ow}: padding {pads.top}+{pads.bottom} (H), "
            f"{pads.left}+{pads.right} (W) crops more than the transposed convolution produces; "
            "reduce the padding",
            f"{prefix}padding",
        )
    stage = ConvTransposeStage(
        in_shape=in_shape,
        out_shape=(n, k, oh, ow),
        weight_shape=(c_w, kg, kh, kw),
        weight=weight.array,
        bias=_array(bias),
        has_bias=bias is not None,
        stride=stride,
        pads=pads,
        dilation=dilation,
        output_padding=output_padding,
        groups=groups,
        activation=activation,
    )
    return _finish("conv_transpose2d", prefix, [stage], _param_count(weight, bias), in_shape)


def _resolve_output_padding(
    body: dict[str, Any],
    prefix: str,
    in_shape: Shape4,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pads: Pads,
    dilation: tuple[int, int],
) -> tuple[int, int]:
    """Return output_padding, from the field or derived from ``output_size`` as PyTorch does."""
    if body.get("output_size") is not None:
        if body.get("output_padding") not in (None, 0, [0, 0], [0]):
            raise ValidationError(
                f"{prefix}output_size and {prefix}output_padding are both given; give one of "
                "them (output_size determines output_padding)",
                f"{prefix}output_size",
            )
        return _output_padding_from_size(body, prefix, in_shape, kernel, stride, pads, dilation)
    output_padding = parse_pair(
        body, "output_padding", f"{prefix}output_padding", default=0, minimum=0
    )
    for axis, name in ((0, "H"), (1, "W")):
        if output_padding[axis] >= max(stride[axis], dilation[axis]):
            raise ValidationError(
                f"{prefix}output_padding {output_padding[axis]} on {name} must be smaller than "
                f"stride ({stride[axis]}) or dilation ({dilation[axis]}) on that axis, as "
                "PyTorch requires",
                f"{prefix}output_padding",
            )
    return output_padding


def _output_padding_from_size(
    body: dict[str, Any],
    prefix: str,
    in_shape: Shape4,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pads: Pads,
    dilation: tuple[int, int],
) -> tuple[int, int]:
    field = f"{prefix}output_size"
    value = body["output_size"]
    valid = (
        isinstance(value, list)
        and len(value) in (2, 4)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    )
    if not valid:
        raise ValidationError(
            f"{field} must be [H_out, W_out] or [N, C, H_out, W_out], got {describe(value)}",
            field,
            code="invalid_type",
        )
    size = value[-2:]
    result: list[int] = []
    for axis, name in ((0, "H"), (1, "W")):
        pad_total = (pads.top + pads.bottom) if axis == 0 else (pads.left + pads.right)
        smallest = conv_transpose_output_size(
            in_shape[2 + axis], kernel[axis], stride[axis], pad_total, dilation[axis], 0
        )
        largest = smallest + max(stride[axis], dilation[axis]) - 1
        if not smallest <= size[axis] <= largest:
            raise ValidationError(
                f"{field} {name} = {size[axis]} cannot be produced: valid sizes for this input, "
                f"stride and padding are {smallest} to {largest}",
                field,
            )
        result.append(size[axis] - smallest)
    return result[0], result[1]


# ---------------------------------------------------------------------------------------------
# depthwise_separable_conv2d


def build_depthwise_separable(
    body: dict[str, Any], prefix: str, in_shape: Shape4, ctx: BuildContext
) -> OpPlan:
    """Depthwise convolution (groups = C, depth multiplier m) then a 1x1 pointwise convolution."""
    _reject_unknown(
        body,
        COMMON_FIELDS
        | {
            "depthwise_weight",
            "depthwise_bias",
            "pointwise_weight",
            "pointwise_bias",
            "stride",
            "padding",
            "dilation",
            "padding_mode",
            "depthwise_activation",
            "activation",
            "negative_slope",
        },
        prefix,
    )
    dw = _decode_param(body, "depthwise_weight", prefix, ctx, required=True)
    pw = _decode_param(body, "pointwise_weight", prefix, ctx, required=True)
    assert dw is not None and pw is not None  # required=True guarantees tensors
    dw_field, pw_field = f"{prefix}depthwise_weight", f"{prefix}pointwise_weight"
    cm, one, kh, kw = _weight4(dw, dw_field)
    c = in_shape[1]
    if one != 1:
        raise ValidationError(
            f"{dw_field}.shape[1] must be 1 for a depthwise convolution, got {one}; the weight "
            "is [C * multiplier, 1, kh, kw]",
            f"{dw_field}.shape",
            code="shape_mismatch",
        )
    if cm % c:
        raise ValidationError(
            f"{dw_field}.shape[0] is {cm}, which is not a multiple of the input channels {c}; "
            "it must be C * multiplier",
            f"{dw_field}.shape",
            code="shape_mismatch",
        )
    k, pw_in, pkh, pkw = _weight4(pw, pw_field)
    if (pkh, pkw) != (1, 1):
        raise ValidationError(
            f"{pw_field}.shape must end in 1, 1 (a 1x1 kernel), got {list(pw.shape)}",
            f"{pw_field}.shape",
            code="shape_mismatch",
        )
    if pw_in != cm:
        raise ValidationError(
            f"{pw_field}.shape[1] is {pw_in}, but the depthwise step outputs {cm} channels; "
            "the pointwise weight is [out, C * multiplier, 1, 1]",
            f"{pw_field}.shape",
            code="shape_mismatch",
        )
    dw_bias = _decode_param(body, "depthwise_bias", prefix, ctx, required=False)
    _check_bias(dw_bias, cm, f"{prefix}depthwise_bias")
    pw_bias = _decode_param(body, "pointwise_bias", prefix, ctx, required=False)
    _check_bias(pw_bias, k, f"{prefix}pointwise_bias")
    stride = parse_pair(body, "stride", f"{prefix}stride", default=1, minimum=1)
    dilation = parse_pair(body, "dilation", f"{prefix}dilation", default=1, minimum=1)
    pads = parse_padding(
        body,
        f"{prefix}padding",
        kernel=(kh, kw),
        stride=stride,
        dilation=dilation,
        allow_strings=True,
    )
    mode = parse_padding_mode(body, f"{prefix}padding_mode")
    dw_act = parse_activation(body, "depthwise_activation", f"{prefix}depthwise_activation")
    pw_act = parse_activation(body, "activation", f"{prefix}activation")

    stages, conv_in, conv_pads = _lower_padding(in_shape, mode, pads, f"{prefix}padding")
    depthwise = _conv_stage(
        conv_in, dw, dw_field, dw_bias, stride, conv_pads, dilation, c, dw_act, prefix=prefix
    )
    pointwise = _conv_stage(
        depthwise.out_shape, pw, pw_field, pw_bias, (1, 1), Pads(), (1, 1), 1, pw_act
    )
    stages += [depthwise, pointwise]
    params = _param_count(dw, dw_bias, pw, pw_bias)
    return _finish("depthwise_separable_conv2d", prefix, stages, params, in_shape)


# ---------------------------------------------------------------------------------------------
# spatially_separable_conv2d


def build_spatially_separable(
    body: dict[str, Any], prefix: str, in_shape: Shape4, ctx: BuildContext
) -> OpPlan:
    """A kh x 1 convolution then a 1 x kw convolution, from explicit factors or from a rank-1
    kh x kw weight factored by SVD."""
    _reject_unknown(
        body,
        COMMON_FIELDS
        | {
            "weight",
            "bias",
            "tolerance",
            "vertical_weight",
            "vertical_bias",
            "vertical_activation",
            "horizontal_weight",
            "horizontal_bias",
            "stride",
            "padding",
            "dilation",
            "groups",
            "padding_mode",
            "activation",
            "negative_slope",
        },
        prefix,
    )
    has_full = body.get("weight") is not None
    has_factors = (
        body.get("vertical_weight") is not None or body.get("horizontal_weight") is not None
    )
    if has_full and has_factors:
        raise ValidationError(
            f"{prefix}weight and {prefix}vertical_weight/horizontal_weight are both given; send "
            "either one rank-1 weight or the two factors",
            f"{prefix}weight",
        )
    if not has_full and not has_factors:
        raise ValidationError(
            f"{prefix}weight is missing; send a rank-1 kh x kw weight, or vertical_weight "
            "[M, C/groups, kh, 1] and horizontal_weight [K, M/groups, 1, kw]",
            f"{prefix}weight",
            code="missing_field",
        )
    if has_full:
        return _build_factored(body, prefix, in_shape, ctx)
    return _build_explicit_factors(body, prefix, in_shape, ctx)


def _separable_settings(
    body: dict[str, Any], prefix: str, kernel: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int], int, Pads, str]:
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


def _build_explicit_factors(
    body: dict[str, Any], prefix: str, in_shape: Shape4, ctx: BuildContext
) -> OpPlan:
    vertical = _decode_param(body, "vertical_weight", prefix, ctx, required=True)
    horizontal = _decode_param(body, "horizontal_weight", prefix, ctx, required=True)
    assert vertical is not None and horizontal is not None  # required=True guarantees tensors
    v_field, h_field = f"{prefix}vertical_weight", f"{prefix}horizontal_weight"
    m, _, kh, v_kw = _weight4(vertical, v_field)
    k, _, h_kh, kw = _weight4(horizontal, h_field)
    if v_kw != 1:
        raise ValidationError(
            f"{v_field}.shape must be [M, C/groups, kh, 1], got {list(vertical.shape)}",
            f"{v_field}.shape",
            code="shape_mismatch",
        )
    if h_kh != 1:
        raise ValidationError(
            f"{h_field}.shape must be [K, M/groups, 1, kw], got {list(horizontal.shape)}",
            f"{h_field}.shape",
            code="shape_mismatch",
        )
    v_bias = _decode_param(body, "vertical_bias", prefix, ctx, required=False)
    _check_bias(v_bias, m, f"{prefix}vertical_bias")
    h_bias = _decode_param(body, "horizontal_bias", prefix, ctx, required=False)
    _check_bias(h_bias, k, f"{prefix}horizontal_bias")
    stride, dilation, groups, pads, mode = _separable_settings(body, prefix, (kh, kw))
    v_act = parse_activation(body, "vertical_activation", f"{prefix}vertical_activation")
    act = parse_activation(body, "activation", f"{prefix}activation")

    stages, conv_in, conv_pads = _lower_padding(in_shape, mode, pads, f"{prefix}padding")
    first = _conv_stage(
        conv_in,
        vertical,
        v_field,
        v_bias,
        (stride[0], 1),
        Pads(conv_pads.top, conv_pads.bottom, 0, 0),
        (dilation[0], 1),
        groups,
        v_act,
        prefix=prefix,
    )
    second = _conv_stage(
        first.out_shape,
        horizontal,
        h_field,
        h_bias,
        (1, stride[1]),
        Pads(0, 0, conv_pads.left, conv_pads.right),
        (1, dilation[1]),
        groups,
        act,
        prefix=prefix,
    )
    stages += [first, second]
    params = _param_count(vertical, v_bias, horizontal, h_bias)
    return _finish("spatially_separable_conv2d", prefix, stages, params, in_shape)


def _build_factored(
    body: dict[str, Any], prefix: str, in_shape: Shape4, ctx: BuildContext
) -> OpPlan:
    weight = _decode_param(body, "weight", prefix, ctx, required=True)
    assert weight is not None  # required=True guarantees a tensor
    w_field = f"{prefix}weight"
    k, cg, kh, kw = _weight4(weight, w_field)
    bias = _decode_param(body, "bias", prefix, ctx, required=False)
    _check_bias(bias, k, f"{prefix}bias")
    tolerance = body.get("tolerance", DEFAULT_RANK1_TOLERANCE)
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or tolerance < 0:
        raise ValidationError(
            f"{prefix}tolerance must be a number >= 0, got {describe(tolerance)}",
            f"{prefix}tolerance",
        )
    stride, dilation, groups, pads, mode = _separable_settings(body, prefix, (kh, kw))
    act = parse_activation(body, "activation", f"{prefix}activation")

    # Validate channels and sizes on the equivalent kh x kw convolution first.
    stages, conv_in, conv_pads = _lower_padding(in_shape, mode, pads, f"{prefix}padding")
    full = _conv_stage(
        conv_in, weight, w_field, bias, stride, conv_pads, dilation, groups, act, prefix=prefix
    )
    c = conv_in[1]
    kg = k // groups
    vertical, horizontal = _factor_rank1(weight.array, float(tolerance), w_field, ctx.dtype)

    # Pass 1: input channel c (of group g = c // cg) feeds kg vertical filters, one per output
    # channel of its group, as a depthwise convolution with multiplier kg. Output channel
    # c * kg + j holds u[g*kg + j, c % cg] applied to input channel c.
    first_weight = None if vertical is None else _first_pass_weight(vertical, groups)
    first = _conv_stage(
        conv_in,
        weight,
        w_field,
        None,
        (stride[0], 1),
        Pads(conv_pads.top, conv_pads.bottom, 0, 0),
        (dilation[0], 1),
        c,
        NO_ACTIVATION,
        weight_array=first_weight,
        weight_shape=(c * kg, 1, kh, 1),
        prefix=prefix,
    )
    # Pass 2: output channel o = g*kg + j sums the cg intermediates (g*cg + ic)*kg + j, one per
    # input channel of its group, each with its horizontal filter v[o, ic].
    second = _conv_stage(
        first.out_shape,
        weight,
        w_field,
        bias,
        (1, stride[1]),
        Pads(0, 0, conv_pads.left, conv_pads.right),
        (1, dilation[1]),
        k,
        act,
        weight_array=horizontal,
        weight_shape=(k, cg, 1, kw),
        channel_map=(kg, cg),
        prefix=prefix,
    )
    if second.out_shape != full.out_shape:
        raise AssertionError(f"factored shape {second.out_shape} != {full.out_shape}")
    stages += [first, second]
    return _finish(
        "spatially_separable_conv2d", prefix, stages, _param_count(weight, bias), in_shape
    )


def _factor_rank1(
    weight: npt.NDArray[Any] | None, tolerance: float, field: str, dtype: str
) -> tuple[npt.NDArray[Any] | None, npt.NDArray[Any] | None]:
    """Factor every [kh, kw] slice as u v^T by SVD in float64.

    Returns ``u`` as [K, Cg, kh] and ``v`` as [K, Cg, 1, kw] (the second pass's weight), or
    ``(None, None)`` for a plan-only request. Raises ``NotSeparableError`` with the worst slice's
    relative residual ``sqrt(sum(s[1:]^2)) / sqrt(sum(s^2))`` when it exceeds ``tolerance``.
    """
    if weight is None:
        return None, None
    w64 = weight.astype(np.float64)
    u, s, vt = np.linalg.svd(w64, full_matrices=False)
    energy = np.sqrt(np.sum(s**2, axis=-1))
    tail = np.sqrt(np.sum(s[..., 1:] ** 2, axis=-1))
    residual = np.divide(tail, energy, out=np.zeros_like(tail), where=energy > 0)
    worst = np.unravel_index(int(np.argmax(residual)), residual.shape)
    worst_value = float(residual[worst])
    if worst_value > tolerance:
        raise NotSeparableError(
            f"{field} is not separable: slice [{worst[0]}, {worst[1]}] has relative residual "
            f"{worst_value:.3g} after its rank-1 approximation, above tolerance {tolerance:g}; "
            "use /v1/conv2d for this weight, or raise tolerance to accept the approximation",
            field,
        )
    root = np.sqrt(s[..., 0])
    vertical = u[..., :, 0] * root[..., None]
    horizontal = (vt[..., 0, :] * root[..., None])[:, :, None, :]
    out_dtype = np.dtype(dtype)
    return vertical.astype(out_dtype), np.ascontiguousarray(horizontal, dtype=out_dtype)


def _first_pass_weight(vertical: npt.NDArray[Any], groups: int) -> npt.NDArray[Any]:
    """Arrange u [K, Cg, kh] as a depthwise weight [C * kg, 1, kh, 1] (channel c*kg + j)."""
    k, cg, kh = vertical.shape
    kg = k // groups
    # [groups, kg, cg, kh] -> [groups, cg, kg, kh] -> [C * kg, kh]
    arranged = vertical.reshape(groups, kg, cg, kh).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(arranged.reshape(groups * cg * kg, 1, kh, 1))


BUILDERS: dict[str, Builder] = {
    "conv2d": build_conv2d,
    "conv_transpose2d": build_conv_transpose2d,
    "depthwise_separable_conv2d": build_depthwise_separable,
    "spatially_separable_conv2d": build_spatially_separable,
}
