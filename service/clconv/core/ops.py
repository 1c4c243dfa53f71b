"""Validate the conv2d and conv_transpose2d request bodies and lower them to stages.

Every builder takes the body of one operation, the shape of its input and a field prefix (empty
for a single operation, ``steps[i].`` in a pipeline), and returns an ``OpPlan``. Argument names,
defaults and output sizes follow ``torch.nn.functional.conv2d`` and ``conv_transpose2d``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clconv.core.algorithms import (
    CONV2D_ALGORITHMS,
    CONV_TRANSPOSE2D_ALGORITHMS,
    applicable,
    requirement,
    transposed_applicable,
)
from clconv.core.builders_common import (
    COMMON_FIELDS,
    BuildContext,
    Builder,
    array,
    check_bias,
    conv_stage,
    decode_param,
    finish,
    lower_padding,
    param_count,
    parse_conv_settings,
    reject_unknown,
    weight4,
)
from clconv.core.fields import (
    Pads,
    describe,
    parse_activation,
    parse_int,
    parse_padding,
    parse_pair,
)
from clconv.core.separable import build_depthwise_separable, build_spatially_separable
from clconv.core.stages import ConvTransposeStage, OpPlan, Shape4, conv_transpose_output_size
from clconv.errors import ValidationError

# ---------------------------------------------------------------------------------------------
# conv2d


def build_conv2d(body: dict[str, Any], prefix: str, in_shape: Shape4, ctx: BuildContext) -> OpPlan:
    """Regular, 1x1, grouped, depthwise (with a depth multiplier) and dilated convolution."""
    reject_unknown(
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
            "algorithm",
        },
        prefix,
    )
    weight = decode_param(body, "weight", prefix, ctx, required=True)
    assert weight is not None  # required=True guarantees a tensor
    k, _, kh, kw = weight4(weight, f"{prefix}weight")
    requested = parse_algorithm(body, f"{prefix}algorithm")
    bias = decode_param(body, "bias", prefix, ctx, required=False)
    check_bias(bias, k, f"{prefix}bias")
    stride, dilation, groups, pads, mode = parse_conv_settings(body, prefix, (kh, kw))
    activation = parse_activation(body, "activation", f"{prefix}activation")

    stages, conv_in, conv_pads = lower_padding(in_shape, mode, pads, f"{prefix}padding")
    stage = conv_stage(
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
    if requested is not None:
        check_applicable(requested, applicable(stage), f"{prefix}algorithm", "convolution")
        stage.requested_algorithm = requested
    stages.append(stage)
    return finish("conv2d", prefix, stages, param_count(weight, bias), in_shape)


def parse_algorithm(
    body: dict[str, Any], field: str, names: Mapping[str, str] = CONV2D_ALGORITHMS
) -> str | None:
    """Parse the optional ``algorithm`` field: 'auto' (the default) or one of ``names``.
    Return None for 'auto', which lets the selector choose."""
    value = body.get("algorithm")
    if value is None or value == "auto":
        return None
    if not isinstance(value, str) or value not in names:
        raise ValidationError(
            f"{field} must be 'auto' or one of {', '.join(names)}, got {describe(value)}",
            field,
            code="invalid_value" if isinstance(value, str) else "invalid_type",
        )
    return value


def check_applicable(requested: str, candidates: list[str], field: str, kind: str) -> None:
    """Raise a 422 naming what ``requested`` needs when it is not among ``candidates``, the
    algorithms that can compute this ``kind`` of stage."""
    if requested not in candidates:
        raise ValidationError(
            f"{field} {requested!r} cannot compute this {kind}: it needs "
            f"{requirement(requested)}; use 'auto' or one of {', '.join(candidates)}",
            field,
        )


# ---------------------------------------------------------------------------------------------
# conv_transpose2d


def build_conv_transpose2d(
    body: dict[str, Any], prefix: str, in_shape: Shape4, ctx: BuildContext
) -> OpPlan:
    """Transposed convolution with stride, asymmetric padding, output_padding, dilation, groups."""
    reject_unknown(
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
            "padding_mode",
            "activation",
            "negative_slope",
            "algorithm",
        },
        prefix,
    )
    weight = decode_param(body, "weight", prefix, ctx, required=True)
    assert weight is not None  # required=True guarantees a tensor
    weight_field = f"{prefix}weight"
    c_w, kg, kh, kw = weight4(weight, weight_field)
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
    bias = decode_param(body, "bias", prefix, ctx, required=False)
    check_bias(bias, k, f"{prefix}bias")

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
        bias=array(bias),
        has_bias=bias is not None,
        stride=stride,
        pads=pads,
        dilation=dilation,
        output_padding=output_padding,
        groups=groups,
        activation=activation,
    )
    requested = parse_algorithm(body, f"{prefix}algorithm", CONV_TRANSPOSE2D_ALGORITHMS)
    if requested is not None:
        candidates = transposed_applicable(stage)
        check_applicable(requested, candidates, f"{prefix}algorithm", "transposed convolution")
        stage.requested_algorithm = requested
    return finish("conv_transpose2d", prefix, [stage], param_count(weight, bias), in_shape)


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


BUILDERS: dict[str, Builder] = {
    "conv2d": build_conv2d,
    "conv_transpose2d": build_conv_transpose2d,
    "depthwise_separable_conv2d": build_depthwise_separable,
    "spatially_separable_conv2d": build_spatially_separable,
}
