"""Stages: the primitive device operations that every request is lowered to.

An operation (conv2d, a depthwise-separable pair, a rank-1 factored convolution, a pipeline) is a
linear chain of stages, and each stage reads the previous stage's output buffer. Stages carry
their weights on the host (``None`` in a plan-only request) and their shapes, so the planner can
count FLOPs and bytes before anything is allocated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy.typing as npt

from clconv.core.fields import NO_ACTIVATION, Activation, Pads

Shape4 = tuple[int, int, int, int]


def conv_output_size(size: int, kernel: int, stride: int, pad_total: int, dilation: int) -> int:
    """PyTorch's conv2d output size on one axis; may be <= 0 for an invalid request."""
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def conv_transpose_output_size(
    size: int, kernel: int, stride: int, pad_total: int, dilation: int, output_padding: int
) -> int:
    """PyTorch's conv_transpose2d output size on one axis."""
    return (size - 1) * stride - pad_total + dilation * (kernel - 1) + output_padding + 1


@dataclass
class PadStage:
    """Materialise padding of mode reflect, replicate or circular into a new buffer."""

    in_shape: Shape4
    out_shape: Shape4
    mode: str
    pads: Pads

    kind = "pad"

    @property
    def algorithm(self) -> str:
        return f"pad_{self.mode}"

    @property
    def macs(self) -> int:
        return 0

    @property
    def extra_flops(self) -> int:
        return 0


@dataclass
class ConvStage:
    """One 2-D convolution (PyTorch's conv2d with zero padding) on an NCHW buffer.

    ``channel_map`` reorders input channels for the second pass of a factored rank-1
    convolution: with ``(kg, cg)``, group ``g`` reads input channel
    ``((g // kg) * cg + ic) * kg + g % kg`` instead of ``g * C/groups + ic``.
    """

    in_shape: Shape4
    out_shape: Shape4
    weight_shape: Shape4
    weight: npt.NDArray[Any] | None
    bias: npt.NDArray[Any] | None
    has_bias: bool
    stride: tuple[int, int]
    pads: Pads
    dilation: tuple[int, int]
    groups: int
    activation: Activation = NO_ACTIVATION
    channel_map: tuple[int, int] | None = None
    algorithm: str = field(default="conv2d_direct")
    # The algorithm the request named in its ``algorithm`` field; None lets the selector choose.
    requested_algorithm: str | None = None
    # Where ``algorithm`` came from: "request", "rule", or a tuning database level (see
    # ``clconv.runtime.selection``).
    algorithm_source: str = "rule"

    kind = "conv2d"

    @property
    def macs(self) -> int:
        n, k, oh, ow = self.out_shape
        _, cg, kh, kw = self.weight_shape
        return n * k * oh * ow * cg * kh * kw

    @property
    def extra_flops(self) -> int:
        return math.prod(self.out_shape) if self.has_bias else 0


@dataclass
class ConvTransposeStage:
    """One transposed 2-D convolution (PyTorch's conv_transpose2d), computed as a gather."""

    in_shape: Shape4
    out_shape: Shape4
    weight_shape: Shape4
    weight: npt.NDArray[Any] | None
    bias: npt.NDArray[Any] | None
    has_bias: bool
    stride: tuple[int, int]
    pads: Pads
    dilation: tuple[int, int]
    output_padding: tuple[int, int]
    groups: int
    activation: Activation = NO_ACTIVATION
    algorithm: str = "conv_transpose2d_gather"
    # The algorithm the request named in its ``algorithm`` field; None lets the rule choose.
    requested_algorithm: str | None = None
    algorithm_source: str = "rule"

    kind = "conv_transpose2d"

    @property
    def macs(self) -> int:
        # Convention of fvcore and PyTorch's flop counter: every input element meets
        # K/groups * kh * kw weights, including taps later cropped by padding.
        n, c, h, w = self.in_shape
        _, kg, kh, kw = self.weight_shape
        return n * c * h * w * kg * kh * kw

    @property
    def extra_flops(self) -> int:
        return math.prod(self.out_shape) if self.has_bias else 0


Stage = PadStage | ConvStage | ConvTransposeStage


@dataclass
class OpPlan:
    """One operation of a request, lowered to stages, with the figures reported for it."""

    op: str
    field_prefix: str
    stages: list[Stage]
    params: int
    in_shape: Shape4
    out_shape: Shape4
    receptive_field: tuple[float, float]
    effective_stride: tuple[float, float]
