"""Validate the depthwise-separable and spatially separable bodies and lower them to stages.

A depthwise-separable convolution is a depthwise step then a 1x1 pointwise step. A spatially
separable one is a kh x 1 pass then a 1 x kw pass, from explicit factors or from a rank-1
kh x kw weight factored by SVD.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from clconv.core.builders_common import (
    COMMON_FIELDS,
    BuildContext,
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
    NO_ACTIVATION,
    Pads,
    describe,
    parse_activation,
)
from clconv.core.stages import OpPlan, Shape4
from clconv.errors import NotSeparableError, ValidationError

DEFAULT_RANK1_TOLERANCE = 1e-4


# ---------------------------------------------------------------------------------------------
# depthwise_separable_conv2d


def build_depthwise_separable(
    body: dict[str, Any], prefix: str, in_shape: Shape4, ctx: BuildContext
) -> OpPlan:
    """Depthwise convolution (groups = C, depth multiplier m) then a 1x1 pointwise convolution."""
    reject_unknown(
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
    dw = decode_param(body, "depthwise_weight", prefix, ctx, required=True)
    pw = decode_param(body, "pointwise_weight", prefix, ctx, required=True)
    assert dw is not None and pw is not None  # required=True guarantees tensors
    dw_field, pw_field = f"{prefix}depthwise_weight", f"{prefix}pointwise_weight"
    cm, one, kh, kw = weight4(dw, dw_field)
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
    k, pw_in, pkh, pkw = weight4(pw, pw_field)
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
    dw_bias = decode_param(body, "depthwise_bias", prefix, ctx, required=False)
    check_bias(dw_bias, cm, f"{prefix}depthwise_bias")
    pw_bias = decode_param(body, "pointwise_bias", prefix, ctx, required=False)
    check_bias(pw_bias, k, f"{prefix}pointwise_bias")
    # groups is not a field here (reject_unknown rejects it), so it parses as 1 and the depthwise
    # step's groups come from the input's channels below.
    stride, dilation, _, pads, mode = parse_conv_settings(body, prefix, (kh, kw))
    dw_act = parse_activation(body, "depthwise_activation", f"{prefix}depthwise_activation")
    pw_act = parse_activation(body, "activation", f"{prefix}activation")

    stages, conv_in, conv_pads = lower_padding(in_shape, mode, pads, f"{prefix}padding")
    depthwise = conv_stage(
        conv_in, dw, dw_field, dw_bias, stride, conv_pads, dilation, c, dw_act, prefix=prefix
    )
    pointwise = conv_stage(
        depthwise.out_shape, pw, pw_field, pw_bias, (1, 1), Pads(), (1, 1), 1, pw_act
    )
    stages += [depthwise, pointwise]
    params = param_count(dw, dw_bias, pw, pw_bias)
    return finish("depthwise_separable_conv2d", prefix, stages, params, in_shape)


# ---------------------------------------------------------------------------------------------
# spatially_separable_conv2d


def build_spatially_separable(
    body: dict[str, Any], prefix: str, in_shape: Shape4, ctx: BuildContext
) -> OpPlan:
    """Lower a kh x 1 convolution then a 1 x kw convolution, from explicit factors or from a
    rank-1 kh x kw weight factored by SVD."""
    reject_unknown(
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


def _build_explicit_factors(
    body: dict[str, Any], prefix: str, in_shape: Shape4, ctx: BuildContext
) -> OpPlan:
    vertical = decode_param(body, "vertical_weight", prefix, ctx, required=True)
    horizontal = decode_param(body, "horizontal_weight", prefix, ctx, required=True)
    assert vertical is not None and horizontal is not None  # required=True guarantees tensors
    v_field, h_field = f"{prefix}vertical_weight", f"{prefix}horizontal_weight"
    m, _, kh, v_kw = weight4(vertical, v_field)
    k, _, h_kh, kw = weight4(horizontal, h_field)
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
    v_bias = decode_param(body, "vertical_bias", prefix, ctx, required=False)
    check_bias(v_bias, m, f"{prefix}vertical_bias")
    h_bias = decode_param(body, "horizontal_bias", prefix, ctx, required=False)
    check_bias(h_bias, k, f"{prefix}horizontal_bias")
    stride, dilation, groups, pads, mode = parse_conv_settings(body, prefix, (kh, kw))
    v_act = parse_activation(body, "vertical_activation", f"{prefix}vertical_activation")
    act = parse_activation(body, "activation", f"{prefix}activation")

    # Each factor is a convolution of its own, as in Inception's factorised layers. The vertical
    # one pads the input's H, and the horizontal one pads the W of the vertical result. That
    # differs from padding the input once a vertical bias or activation makes padded columns
    # non-zero.
    field = f"{prefix}padding"
    stages, first_in, first_pads = lower_padding(
        in_shape, mode, Pads(pads.top, pads.bottom, 0, 0), field
    )
    first = conv_stage(
        first_in,
        vertical,
        v_field,
        v_bias,
        (stride[0], 1),
        first_pads,
        (dilation[0], 1),
        groups,
        v_act,
        prefix=prefix,
    )
    stages.append(first)
    second_stages, second_in, second_pads = lower_padding(
        first.out_shape, mode, Pads(0, 0, pads.left, pads.right), field
    )
    stages += second_stages
    second = conv_stage(
        second_in,
        horizontal,
        h_field,
        h_bias,
        (1, stride[1]),
        second_pads,
        (1, dilation[1]),
        groups,
        act,
        prefix=prefix,
    )
    stages.append(second)
    params = param_count(vertical, v_bias, horizontal, h_bias)
    return finish("spatially_separable_conv2d", prefix, stages, params, in_shape)


def _build_factored(
    body: dict[str, Any], prefix: str, in_shape: Shape4, ctx: BuildContext
) -> OpPlan:
    weight = decode_param(body, "weight", prefix, ctx, required=True)
    assert weight is not None  # required=True guarantees a tensor
    w_field = f"{prefix}weight"
    k, cg, kh, kw = weight4(weight, w_field)
    bias = decode_param(body, "bias", prefix, ctx, required=False)
    check_bias(bias, k, f"{prefix}bias")
    tolerance = body.get("tolerance", DEFAULT_RANK1_TOLERANCE)
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or tolerance < 0:
        raise ValidationError(
            f"{prefix}tolerance must be a number >= 0, got {describe(tolerance)}",
            f"{prefix}tolerance",
        )
    stride, dilation, groups, pads, mode = parse_conv_settings(body, prefix, (kh, kw))
    act = parse_activation(body, "activation", f"{prefix}activation")

    # Validate channels and sizes on the equivalent kh x kw convolution first.
    stages, conv_in, conv_pads = lower_padding(in_shape, mode, pads, f"{prefix}padding")
    full = conv_stage(
        conv_in, weight, w_field, bias, stride, conv_pads, dilation, groups, act, prefix=prefix
    )
    c = conv_in[1]
    kg = k // groups
    vertical, horizontal = _factor_rank1(weight.array, float(tolerance), w_field, ctx.dtype)

    # Pass 1: input channel c (of group g = c // cg) feeds kg vertical filters, one per output
    # channel of its group, as a depthwise convolution with multiplier kg. Output channel
    # c * kg + j is u[g*kg + j, c % cg] applied to input channel c.
    first_weight = None if vertical is None else _first_pass_weight(vertical, groups)
    first = conv_stage(
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
    second = conv_stage(
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
        # With one output channel per group the reordering is the identity.
        channel_map=None if kg == 1 else (kg, cg),
        prefix=prefix,
    )
    if second.out_shape != full.out_shape:
        raise AssertionError(f"factored shape {second.out_shape} != {full.out_shape}")
    stages += [first, second]
    return finish("spatially_separable_conv2d", prefix, stages, param_count(weight, bias), in_shape)


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
