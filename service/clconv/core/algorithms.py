"""The conv2d algorithms, which of them can compute a given stage, and the rule that picks one.

Every algorithm that applies to a stage is a candidate. ``rule_choice`` gives the first choice
instantly from the stage's shape and the device's profile. The runtime's selector
(``clconv.runtime.selection``) may replace it with a winner measured by a tuning pass. A
request can also name an algorithm itself in the ``algorithm`` field.
"""

from __future__ import annotations

import math
from typing import Final

from clconv.core.stages import ConvStage, ConvTransposeStage, Shape4

POINTWISE: Final = "conv2d_pointwise"
POINTWISE_4X16: Final = "conv2d_pointwise_4x16"
POINTWISE_LOCAL: Final = "conv2d_pointwise_local"
DEPTHWISE: Final = "conv2d_depthwise"
DIRECT: Final = "conv2d_direct"
DIRECT_OC: Final = "conv2d_direct_oc"
DIRECT_OC_8X4: Final = "conv2d_direct_oc_8x4"
WINOGRAD_F2: Final = "conv2d_winograd_f2"
WINOGRAD_F4: Final = "conv2d_winograd_f4"

# Description of each conv2d algorithm, for error messages and listings.
CONV2D_ALGORITHMS: Final[dict[str, str]] = {
    POINTWISE: "1x1 stride-1 unpadded convolution as a GEMM, 8 channels x 8 positions per "
    "work-item",
    POINTWISE_4X16: "the same GEMM with 4 channels x 16 positions per work-item",
    POINTWISE_LOCAL: "the same GEMM tiled in local memory, 64 x 64 per work-group (for GPUs)",
    DEPTHWISE: "one input channel per group, depth multiplier up to 4",
    DIRECT_OC: "direct convolution, 8 output channels x 8 columns per work-item",
    DIRECT_OC_8X4: "direct convolution, 8 output channels x 4 columns per work-item",
    DIRECT: "direct convolution vectorised along output columns; any shape",
    WINOGRAD_F2: "Winograd F(2x2, 3x3): 3x3, stride 1, filters transformed once",
    WINOGRAD_F4: "Winograd F(4x4, 3x3): 3x3, stride 1, fewer multiplications than F(2x2)",
}

# Transposed convolution: a gather over each output phase's taps (any settings), or one
# convolution of the input per phase, all phases as the output channels of one conv2d that
# writes each value to its place (dilation 1).
TRANSPOSED_GATHER: Final = "conv_transpose2d_gather"
TRANSPOSED_PHASES: Final = "conv_transpose2d_phases"
CONV_TRANSPOSE2D_ALGORITHMS: Final[dict[str, str]] = {
    TRANSPOSED_PHASES: "one conv2d_direct_oc over the input with a sub-kernel per output phase "
    "as its output channels, each written in place; dilation 1, kernel larger than stride",
    TRANSPOSED_GATHER: "gather over the taps of each output phase, 8 channels x 8 columns per "
    "work-item; any settings",
}

# Output tile size M of each Winograd variant F(M x M, 3 x 3).
WINOGRAD_TILE: Final[dict[str, int]] = {WINOGRAD_F2: 2, WINOGRAD_F4: 4}
# GEMM tile of each pointwise variant: (output channels, 8-wide position vectors).
POINTWISE_TILE: Final[dict[str, tuple[int, int]]] = {POINTWISE: (8, 1), POINTWISE_4X16: (4, 2)}
# Output columns per work-item of each direct_oc variant (8 output channels each).
DIRECT_OC_COLUMNS: Final[dict[str, int]] = {DIRECT_OC: 8, DIRECT_OC_8X4: 4}

# conv2d_direct_oc computes 8 output channels per vector, so below 8 channels per group its lanes
# would sit idle. From 8 to 256 it ran 1.05x to 3.3x faster than conv2d_direct in a same-run
# comparison on Intel's runtime and PoCL 3.1 (2-core AMD EPYC, AVX2).
MIN_CHANNELS_FOR_CHANNEL_VECTORS: Final = 8

# The depthwise kernel computes one channel per work-item, so it rereads an input channel once
# per output channel; past a small depth multiplier the direct kernel, which shares each input
# load among 8 output channels, is faster (a 1 -> 64 channel stem, say).
MAX_DEPTHWISE_MULTIPLIER: Final = 4

# Winograd pays a transform per tile and channel on the way in and out, so the GEMM in between
# only amortises them with enough channels on both sides.
MIN_WINOGRAD_CHANNELS: Final = 16


# Conditions each specialised algorithm needs, quoted when a request pins it where it cannot
# compute. The direct kernels and the transposed gather apply to every shape.
REQUIREMENTS: Final[dict[str, str]] = {
    POINTWISE: "a 1x1 kernel, stride 1, dilation 1 and no padding",
    POINTWISE_4X16: "a 1x1 kernel, stride 1, dilation 1 and no padding",
    POINTWISE_LOCAL: "a 1x1 kernel, stride 1, dilation 1 and no padding",
    DEPTHWISE: "groups equal to the input channels and a depth multiplier of at most "
    f"{MAX_DEPTHWISE_MULTIPLIER}",
    WINOGRAD_F2: "a 3x3 kernel and stride 1",
    WINOGRAD_F4: "a 3x3 kernel and stride 1",
    TRANSPOSED_PHASES: "dilation 1, a kernel larger than the stride on some axis and "
    "output_padding that stays within the phases",
}


def requirement(name: str) -> str:
    """Return the conditions algorithm ``name`` needs, for error messages."""
    return REQUIREMENTS.get(name, "nothing in particular")


def applicable(stage: ConvStage) -> list[str]:
    """Return every algorithm that computes ``stage`` exactly, most specialised first."""
    _, c, _, _ = stage.in_shape
    k, cg, kh, kw = stage.weight_shape
    unit = stage.stride == (1, 1) and stage.dilation == (1, 1) and not stage.pads.any
    names: list[str] = []
    if stage.channel_map is None and (kh, kw) == (1, 1) and unit:
        names += [POINTWISE, POINTWISE_4X16, POINTWISE_LOCAL]
    depthwise = stage.groups == c and cg == 1 and k // c <= MAX_DEPTHWISE_MULTIPLIER
    if stage.channel_map is None and depthwise:
        names.append(DEPTHWISE)
    if stage.channel_map is None and (kh, kw) == (3, 3) and stage.stride == (1, 1):
        names += [WINOGRAD_F4, WINOGRAD_F2]
    names += [DIRECT_OC, DIRECT_OC_8X4, DIRECT]
    return names


def rule_choice(stage: ConvStage, profile: str = "cpu") -> str:
    """Choose the algorithm for ``stage`` on a device of ``profile`` ("cpu", "pocl", "gpu")
    from its shape.

    In order: the GEMM for 1x1 stride-1 unpadded layers (in local memory on GPUs), and the
    depthwise kernel for one input channel per group with a small depth multiplier. Then
    Winograd F(4x4, 3x3) for 3x3 stride-1 layers with at least 16 input and output channels
    per group, or F(2x2, 3x3) where an output phase is under 8 wide or high (F(4x4)'s tiles
    would mostly overhang). Then the output-channel-vector direct kernel for 8 or more output
    channels per group, else the width-vector direct kernel.
    """
    names = applicable(stage)
    k, cg, _, _ = stage.weight_shape
    kg = k // stage.groups
    if POINTWISE in names:
        # NOTE: the local-memory GEMM is chosen for GPUs by design, not by measurement: no GPU
        # was reachable while it was written (it is checked on the CPU runtimes and Oclgrind).
        return POINTWISE_LOCAL if profile == "gpu" else POINTWISE
    if DEPTHWISE in names:
        return DEPTHWISE
    if WINOGRAD_F4 in names and min(cg, kg) >= MIN_WINOGRAD_CHANNELS:
        _, _, oh, ow = stage.out_shape
        phase_h = math.ceil(oh / stage.dilation[0])
        phase_w = math.ceil(ow / stage.dilation[1])
        return WINOGRAD_F4 if min(phase_h, phase_w) >= 8 else WINOGRAD_F2
    if kg >= MIN_CHANNELS_FOR_CHANNEL_VECTORS:
        return DIRECT_OC
    return DIRECT


def phase_kernel(kernel: tuple[int, int], stride: tuple[int, int]) -> tuple[int, int]:
    """Return the taps per axis of each phase's sub-kernel in ``conv_transpose2d_phases``,
    ceil(kernel / stride)."""
    return (-(-kernel[0] // stride[0]), -(-kernel[1] // stride[1]))


def transposed_applicable(stage: ConvTransposeStage) -> list[str]:
    """Return every algorithm that computes the transposed ``stage`` exactly.

    The per-phase convolution needs dilation 1 and a kernel larger than the stride on some
    axis, because with one tap per phase the gather is as direct. Its phases must also cover
    every output position, which a large output_padding can exceed."""
    names = [TRANSPOSED_GATHER]
    _, _, kh, kw = stage.weight_shape
    jh, jw = phase_kernel((kh, kw), stage.stride)
    _, _, h, w = stage.in_shape
    _, _, oh, ow = stage.out_shape
    covered = (
        oh + stage.pads.top <= (h + jh - 1) * stage.stride[0]
        and ow + stage.pads.left <= (w + jw - 1) * stage.stride[1]
    )
    if stage.dilation == (1, 1) and (jh, jw) != (1, 1) and covered:
        names.insert(0, TRANSPOSED_PHASES)
    return names


def transposed_rule_choice(stage: ConvTransposeStage, profile: str = "cpu") -> str:
    """Choose the per-phase convolution where it applies, else the gather.

    The "pocl" profile always gets the gather, because PoCL runs conv2d_direct_oc several
    times slower than Intel's runtime: U-Net's 4x4 stride-2 layer took 8.7 ms by phases
    against 5.4 ms gathered there."""
    names = transposed_applicable(stage)
    return TRANSPOSED_GATHER if profile == "pocl" else names[0]


def phase_shapes(stage: ConvTransposeStage) -> tuple[Shape4, Shape4, Shape4]:
    """Return the shapes inside ``conv_transpose2d_phases``: the zero-padded input, the
    stacked weight [GROUPS * SH * SW * K/groups, C/groups, JH, JW] and the stacked output
    [N, GROUPS * SH * SW * K/groups, QH, QW] with QH = H + JH - 1."""
    n, c, h, w = stage.in_shape
    _, kg, kh, kw = stage.weight_shape
    jh, jw = phase_kernel((kh, kw), stage.stride)
    sh, sw = stage.stride
    padded = (n, c, h + 2 * (jh - 1), w + 2 * (jw - 1))
    channels = stage.groups * sh * sw * kg
    weight = (channels, c // stage.groups, jh, jw)
    stacked = (n, channels, h + jh - 1, w + jw - 1)
    return padded, weight, stacked


def winograd_tiles(out_shape: Shape4, dilation: tuple[int, int], m: int) -> tuple[int, int, int]:
    """Return the tile grid of a Winograd stage with output tile ``m``: tiles per output phase
    along H and W, and the total over the dilation[0] * dilation[1] phases."""
    _, _, oh, ow = out_shape
    dh, dw = dilation
    th = math.ceil(math.ceil(oh / dh) / m)
    tw = math.ceil(math.ceil(ow / dw) / m)
    return th, tw, dh * dw * th * tw


def scratch_elements(stage: ConvStage | ConvTransposeStage) -> int:
    """Return the elements of device scratch memory the stage's algorithm needs beyond its
    output. Winograd needs the transformed input and the GEMM's output, (M + 2)^2 values per
    tile and channel each. The per-phase transposed convolution needs its padded input."""
    if isinstance(stage, ConvTransposeStage):
        if stage.algorithm != TRANSPOSED_PHASES:
            return 0
        return math.prod(phase_shapes(stage)[0])
    m = WINOGRAD_TILE.get(stage.algorithm)
    if m is None:
        return 0
    n, c, _, _ = stage.in_shape
    k = stage.out_shape[1]
    _, _, tiles = winograd_tiles(stage.out_shape, stage.dilation, m)
    return n * (m + 2) ** 2 * (c + k) * tiles
