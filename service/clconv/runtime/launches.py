"""Lower each stage to one kernel launch: source, build options, global size, packed weights.

Weights are repacked on the host into the blocked layouts the kernels document in their headers.
Everything here is host-side numpy work done before the device lock is taken.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from clconv.core.fields import Activation
from clconv.core.stages import ConvStage, ConvTransposeStage, PadStage, Stage

ACTIVATION_CODES = {"none": 0, "relu": 1, "relu6": 2, "leaky_relu": 3, "sigmoid": 4, "tanh": 5}
PAD_MODE_CODES = {"zeros": 0, "reflect": 1, "replicate": 2, "circular": 3}

# Output channels per work-item in the direct and pointwise kernels; 8 float4 accumulators fit
# in registers on AVX2/AVX-512 CPUs and most GPUs.
MAX_CHANNEL_BLOCK = 8


# conv2d_direct_oc: 8 output channels per vector (one AVX2 float register) and 8 output
# columns per work-item, so 8 accumulators plus operands fit AVX2's 16 vector registers.
CHANNEL_VECTOR = 8
OUTPUT_COLUMN_BLOCK = 8

# conv2d_depthwise: output rows per work-item (see depthwise_tile).
DEPTHWISE_ROWS = 8


@dataclass
class Launch:
    """One kernel launch of a stage, ready to enqueue."""

    stage: Stage
    source: str
    kernel: str
    defines: dict[str, int | float | str]
    global_size: tuple[int, ...]
    weight: npt.NDArray[Any] | None
    bias: npt.NDArray[Any] | None


def _channel_block(channels: int) -> int:
    """Smallest power of two >= channels, at most MAX_CHANNEL_BLOCK."""
    block = 1
    while block < min(channels, MAX_CHANNEL_BLOCK):
        block *= 2
    return block


def _epilogue_defines(activation: Activation, has_bias: bool) -> dict[str, int | float | str]:
    return {
        "ACTIVATION": ACTIVATION_CODES[activation.name],
        "NEGATIVE_SLOPE": float(activation.negative_slope),
        "HAS_BIAS": int(has_bias),
    }


def _pack_blocked(
    weight: npt.NDArray[Any], groups: int, block: int, *, transposed: bool
) -> tuple[npt.NDArray[Any], int]:
    """Repack a weight so each block of ``block`` output channels is the innermost axis.

    conv2d weight [K, Cg, kh, kw] -> [G][KB][Cg][kh][kw][block]
    conv_transpose2d weight [C, Kg, kh, kw] -> [G][KB][Cg][kh][kw][block]
    Output channels past the true count are zero.
    """
    if transposed:
        c, kg, kh, kw = weight.shape
        cg = c // groups
        grouped = weight.reshape(groups, cg, kg, kh, kw).transpose(0, 2, 1, 3, 4)
    else:
        k, cg, kh, kw = weight.shape
        kg = k // groups
        grouped = weight.reshape(groups, kg, cg, kh, kw)
    blocks = math.ceil(kg / block)
    padded = np.zeros((groups, blocks * block, cg, kh, kw), dtype=weight.dtype)
    padded[:, :kg] = grouped
    packed = padded.reshape(groups, blocks, block, cg, kh, kw).transpose(0, 1, 3, 4, 5, 2)
    return np.ascontiguousarray(packed), blocks


def plan_launch(stage: Stage, use_double: bool) -> Launch:
    """Choose the kernel for ``stage`` (by its algorithm) and prepare its launch."""
    base: dict[str, int | float | str] = {"USE_DOUBLE": int(use_double)}
    if isinstance(stage, PadStage):
        return _pad_launch(stage, base)
    if isinstance(stage, ConvTransposeStage):
        return _transpose_launch(stage, base)
    if stage.algorithm == "conv2d_pointwise":
        return _pointwise_launch(stage, base)
    if stage.algorithm == "conv2d_depthwise":
        return _depthwise_launch(stage, base)
    if stage.algorithm == "conv2d_direct_oc":
        return _direct_oc_launch(stage, base)
    return _direct_launch(stage, base)


def _shape_defines(stage: ConvStage | ConvTransposeStage) -> dict[str, int | float | str]:
    n, c, h, w = stage.in_shape
    _, k, oh, ow = stage.out_shape
    kh, kw = stage.weight_shape[2], stage.weight_shape[3]
    return {
        "N": n,
        "C_IN": c,
        "H": h,
        "W": w,
        "K": k,
        "OH": oh,
        "OW": ow,
        "KH": kh,
        "KW": kw,
        "SH": stage.stride[0],
        "SW": stage.stride[1],
        "DH": stage.dilation[0],
        "DW": stage.dilation[1],
        "PAD_TOP": stage.pads.top,
        "PAD_LEFT": stage.pads.left,
    }


def _pad_launch(stage: PadStage, base: dict[str, int | float | str]) -> Launch:
    n, c, h, w = stage.in_shape
    _, _, oh, ow = stage.out_shape
    defines = base | {
        "H": h,
        "W": w,
        "OH": oh,
        "OW": ow,
        "PAD_TOP": stage.pads.top,
        "PAD_LEFT": stage.pads.left,
        "PAD_MODE": PAD_MODE_CODES[stage.mode],
    }
    return Launch(stage, "pad.cl", "pad_nchw", defines, (math.ceil(ow / 4), oh, n * c), None, None)


def _direct_launch(stage: ConvStage, base: dict[str, int | float | str]) -> Launch:
    n, _, _, _ = stage.in_shape
    _, _, oh, ow = stage.out_shape
    k, cg, _, _ = stage.weight_shape
    kg = k // stage.groups
    block = _channel_block(kg)
    weight, blocks = _pack_blocked(_require(stage.weight), stage.groups, block, transposed=False)
    defines = (
        base
        | _shape_defines(stage)
        | _epilogue_defines(stage.activation, stage.has_bias)
        | {"GROUPS": stage.groups, "CIN_PG": cg, "KOUT_PG": kg, "OCB": block, "KB": blocks}
    )
    if stage.channel_map is not None:
        defines |= {"CHANNEL_MAP_KG": stage.channel_map[0], "CHANNEL_MAP_CG": stage.channel_map[1]}
    global_size = (math.ceil(ow / 4), oh, n * stage.groups * blocks)
    return Launch(
        stage, "conv2d_direct.cl", "conv2d_direct", defines, global_size, weight, stage.bias
    )


def _direct_oc_launch(stage: ConvStage, base: dict[str, int | float | str]) -> Launch:
    n, _, hp, wp = stage.in_shape
    _, k, oh, ow = stage.out_shape
    _, cg, _, _ = stage.weight_shape
    if stage.pads.any:
        raise ValueError("conv2d_direct_oc needs its input padded by an earlier stage")
    kg = k // stage.groups
    weight, blocks = _pack_blocked(
        _require(stage.weight), stage.groups, CHANNEL_VECTOR, transposed=False
    )
    defines = (
        base
        | _shape_defines(stage)
        | _epilogue_defines(stage.activation, stage.has_bias)
        | {
            "HP": hp,
            "WP": wp,
            "GROUPS": stage.groups,
            "CIN_PG": cg,
            "KOUT_PG": kg,
            "KB": blocks,
            "OWB": OUTPUT_COLUMN_BLOCK,
        }
    )
    if stage.channel_map is not None:
        defines |= {"CHANNEL_MAP_KG": stage.channel_map[0], "CHANNEL_MAP_CG": stage.channel_map[1]}
    global_size = (math.ceil(ow / OUTPUT_COLUMN_BLOCK), oh, n * stage.groups * blocks)
    return Launch(
        stage, "conv2d_direct_oc.cl", "conv2d_direct_oc", defines, global_size, weight, stage.bias
    )


def _pointwise_launch(stage: ConvStage, base: dict[str, int | float | str]) -> Launch:
    n, c, h, w = stage.in_shape
    k, cg, _, _ = stage.weight_shape
    kg = k // stage.groups
    block = _channel_block(kg)
    weight, blocks = _pack_blocked(_require(stage.weight), stage.groups, block, transposed=False)
    positions = h * w
    defines = (
        base
        | _epilogue_defines(stage.activation, stage.has_bias)
        | {
            "N": n,
            "C_IN": c,
            "K": k,
            "P": positions,
            "GROUPS": stage.groups,
            "CIN_PG": cg,
            "KOUT_PG": kg,
            "OCB": block,
            "KB": blocks,
        }
    )
    global_size = (math.ceil(positions / 8), n * stage.groups * blocks)
    return Launch(
        stage, "conv2d_pointwise.cl", "conv2d_pointwise", defines, global_size, weight, stage.bias
    )


def depthwise_tile(out_height: int, out_width: int, use_double: bool) -> tuple[int, int]:
    """Choose conv2d_depthwise's tile: (VW output columns per vector, RB output rows).

    VW = 8 fills an AVX2 register with float32. float64 and outputs at most 4 columns wide use
    VW = 4, so a double vector still fits one AVX2 register and narrow rows waste fewer lanes.
    RB = 8 rows per work-item lets the stride-1 path load each input row once for KH output
    rows, and shorter outputs use their full height. In interleaved timings of MobileNetV2's
    144x56x56 3x3 layer on a 2-core AMD EPYC (Zen 3, AVX2), VW = 8 with RB = 8 was fastest on
    both PoCL 3.1 and Intel's CPU runtime.
    """
    width = 4 if use_double or out_width <= 4 else 8
    rows = max(1, min(DEPTHWISE_ROWS, out_height))
    return width, rows


def _depthwise_launch(stage: ConvStage, base: dict[str, int | float | str]) -> Launch:
    n, c, _, _ = stage.in_shape
    _, k, oh, ow = stage.out_shape
    width, rows = depthwise_tile(oh, ow, bool(base["USE_DOUBLE"]))
    defines = (
        base
        | _shape_defines(stage)
        | _epilogue_defines(stage.activation, stage.has_bias)
        | {"MULT": k // c, "VW": width, "RB": rows}
    )
    weight = np.ascontiguousarray(_require(stage.weight))
    global_size = (math.ceil(ow / width), math.ceil(oh / rows), n * k)
    return Launch(
        stage, "conv2d_depthwise.cl", "conv2d_depthwise", defines, global_size, weight, stage.bias
    )


def _transpose_launch(stage: ConvTransposeStage, base: dict[str, int | float | str]) -> Launch:
    n, c, _, _ = stage.in_shape
    _, _, oh, ow = stage.out_shape
    _, kg, _, _ = stage.weight_shape
    weight, blocks = _pack_blocked(
        _require(stage.weight), stage.groups, CHANNEL_VECTOR, transposed=True
    )
    columns_per_phase = math.ceil(ow / stage.stride[1])
    column_blocks = math.ceil(columns_per_phase / OUTPUT_COLUMN_BLOCK)
    defines = (
        base
        | _shape_defines(stage)
        | _epilogue_defines(stage.activation, stage.has_bias)
        | {
            "GROUPS": stage.groups,
            "CIN_PG": c // stage.groups,
            "KOUT_PG": kg,
            "KB": blocks,
            "QW": columns_per_phase,
            "QB": column_blocks,
            # Valid taps on an axis repeat every stride / gcd(stride, dilation) taps.
            "STEP_Y": stage.stride[0] // math.gcd(stage.stride[0], stage.dilation[0]),
            "STEP_X": stage.stride[1] // math.gcd(stage.stride[1], stage.dilation[1]),
        }
    )
    global_size = (stage.stride[1] * column_blocks, oh, n * stage.groups * blocks)
    return Launch(
        stage,
        "conv_transpose2d.cl",
        "conv_transpose2d_gather",
        defines,
        global_size,
        weight,
        stage.bias,
    )


def _require(weight: npt.NDArray[Any] | None) -> npt.NDArray[Any]:
    if weight is None:
        raise ValueError("a stage without weight values cannot run; plan-only requests never do")
    return weight
