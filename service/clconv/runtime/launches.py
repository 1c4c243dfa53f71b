"""Lower each stage to one kernel launch: source, build options, global size, packed weights.

Weights are repacked on the host into the blocked layouts the kernels document in their headers.
Everything here is host-side numpy work done before the device lock is taken.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from clconv.core.algorithms import (
    DIRECT_OC_COLUMNS,
    POINTWISE_LOCAL,
    POINTWISE_TILE,
    TRANSPOSED_PHASES,
    WINOGRAD_TILE,
    phase_shapes,
    winograd_tiles,
)
from clconv.core.fields import Activation, Pads
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


# Kernel argument roles, in the order a kernel takes them: the previous launch's output (or the
# request input), the packed weight, the bias (NULL when absent) and this launch's output.
CONV_ARGS = ("src", "weight", "bias", "dst")
COPY_ARGS = ("src", "dst")


@dataclass
class Launch:
    """One kernel launch of a stage, ready to enqueue. A stage lowers to one launch, or to
    several (Winograd: input transform, GEMM, output transform), each reading the previous
    launch's output."""

    stage: Stage
    source: str
    kernel: str
    defines: dict[str, int | float | str]
    global_size: tuple[int, ...]
    weight: npt.NDArray[Any] | None
    bias: npt.NDArray[Any] | None
    args: tuple[str, ...] = CONV_ARGS
    # Elements of this launch's output buffer; None means the stage's output shape.
    out_elements: int | None = field(default=None)
    # Work-group size; None lets the OpenCL runtime choose.
    local_size: tuple[int, ...] | None = None

    def output_elements(self) -> int:
        if self.out_elements is not None:
            return self.out_elements
        return math.prod(self.stage.out_shape)


def _channel_block(channels: int, limit: int = MAX_CHANNEL_BLOCK) -> int:
    """Return the smallest power of two >= channels, at most ``limit``."""
    block = 1
    while block < min(channels, limit):
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


def plan_launches(stages: list[Stage], use_double: bool) -> list[tuple[int, Launch]]:
    """Lower ``stages`` to their launches, each with the index of the stage it belongs to."""
    return [
        (index, launch)
        for index, stage in enumerate(stages)
        for launch in plan_stage(stage, use_double)
    ]


def plan_stage(stage: Stage, use_double: bool) -> list[Launch]:
    """Choose the kernels for ``stage`` (by its algorithm) and prepare their launches."""
    base: dict[str, int | float | str] = {"USE_DOUBLE": int(use_double)}
    if isinstance(stage, PadStage):
        return [_pad_launch(stage, base)]
    if isinstance(stage, ConvTransposeStage):
        if stage.algorithm == TRANSPOSED_PHASES:
            return _transpose_phase_launches(stage, base)
        return [_transpose_launch(stage, base)]
    if stage.algorithm == POINTWISE_LOCAL:
        return [_pointwise_local_launch(stage, base)]
    if stage.algorithm in POINTWISE_TILE:
        return [_pointwise_launch(stage, base, *POINTWISE_TILE[stage.algorithm])]
    if stage.algorithm == "conv2d_depthwise":
        return [_depthwise_launch(stage, base)]
    if stage.algorithm in DIRECT_OC_COLUMNS:
        return [_direct_oc_launch(stage, base, DIRECT_OC_COLUMNS[stage.algorithm])]
    if stage.algorithm in WINOGRAD_TILE:
        return _winograd_launches(stage, base, WINOGRAD_TILE[stage.algorithm])
    return [_direct_launch(stage, base)]


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
    global_size = (math.ceil(ow / 4), oh, n * c)
    return Launch(stage, "pad.cl", "pad_nchw", defines, global_size, None, None, COPY_ARGS)


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


def _direct_oc_launch(stage: ConvStage, base: dict[str, int | float | str], columns: int) -> Launch:
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
            "OWB": columns,
        }
    )
    if stage.channel_map is not None:
        defines |= {"CHANNEL_MAP_KG": stage.channel_map[0], "CHANNEL_MAP_CG": stage.channel_map[1]}
    global_size = (math.ceil(ow / columns), oh, n * stage.groups * blocks)
    return Launch(
        stage, "conv2d_direct_oc.cl", "conv2d_direct_oc", defines, global_size, weight, stage.bias
    )


# Winograd transforms over four tiles of a tile row per work-item when the width is not
# dilated. Against the per-tile kernels on ResNet-50's 64x56x56 layer (Intel runtime, same run):
# F(2x2) input 0.79 -> 0.49 ms and output 0.56 -> 0.27 ms, F(4x4) output 0.39 -> 0.35 ms and
# input unchanged. False keeps the per-tile kernels for every stage (for comparisons).
WINOGRAD_ROW_KERNELS = True

# The GEMM tile of Winograd's middle step (conv2d_pointwise): output channels and 8-wide
# position vectors per work-item.
POINTWISE_CHANNELS, POINTWISE_VECTORS = POINTWISE_TILE["conv2d_pointwise"]


def _pointwise_launch(
    stage: ConvStage, base: dict[str, int | float | str], channels: int, vectors: int
) -> Launch:
    n, c, h, w = stage.in_shape
    k, cg, _, _ = stage.weight_shape
    kg = k // stage.groups
    block = _channel_block(kg, channels)
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
            "PV": vectors,
        }
    )
    global_size = (math.ceil(positions / (8 * vectors)), n * stage.groups * blocks)
    return Launch(
        stage, "conv2d_pointwise.cl", "conv2d_pointwise", defines, global_size, weight, stage.bias
    )


# conv2d_pointwise_local: a work-group of LOCAL_SIDE x LOCAL_SIDE work-items, each computing
# LOCAL_OUTPUTS x LOCAL_OUTPUTS outputs, stages LOCAL_CHANNELS input channels at a time. That is
# a 64 x 64 tile and 8 KiB of local memory in float32, under the 32 KiB of local memory that the
# OpenCL full profile guarantees.
LOCAL_SIDE = 16
LOCAL_OUTPUTS = 4
LOCAL_CHANNELS = 16


def _pointwise_local_launch(stage: ConvStage, base: dict[str, int | float | str]) -> Launch:
    n, c, h, w = stage.in_shape
    k, cg, _, _ = stage.weight_shape
    kg = k // stage.groups
    weight = _require(stage.weight).reshape(stage.groups, kg, cg).transpose(0, 2, 1)
    positions = h * w
    tile = LOCAL_SIDE * LOCAL_OUTPUTS
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
            "LS": LOCAL_SIDE,
            "WPT": LOCAL_OUTPUTS,
            "TC": LOCAL_CHANNELS,
        }
    )
    global_size = (
        math.ceil(positions / tile) * LOCAL_SIDE,
        n * stage.groups * math.ceil(kg / tile) * LOCAL_SIDE,
    )
    return Launch(
        stage,
        "conv2d_pointwise_local.cl",
        "conv2d_pointwise_local",
        defines,
        global_size,
        np.ascontiguousarray(weight),
        stage.bias,
        local_size=(LOCAL_SIDE, LOCAL_SIDE),
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


# Filter transforms G (A x 3) of F(2, 3) and F(4, 3), for the points 0, 1, -1 (, 2, -2).
_WINOGRAD_G = {
    2: np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]),
    4: np.array(
        [
            [1 / 4, 0, 0],
            [-1 / 6, -1 / 6, -1 / 6],
            [-1 / 6, 1 / 6, -1 / 6],
            [1 / 24, 1 / 12, 1 / 6],
            [1 / 24, -1 / 12, 1 / 6],
            [0, 0, 1],
        ]
    ),
}


class _TransformCache:
    """Transformed, packed Winograd filters by weight content, least recently used first out,
    bounded by bytes. A client that sends the same weights with every request (the usual case
    for a model's layer) pays the transform once."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._entries: OrderedDict[tuple[Any, ...], tuple[npt.NDArray[Any], int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, weight: npt.NDArray[Any], groups: int, m: int) -> tuple[npt.NDArray[Any], int]:
        digest = hashlib.blake2b(np.ascontiguousarray(weight).data, digest_size=16).digest()
        key = (digest, weight.shape, weight.dtype.str, groups, m, POINTWISE_CHANNELS)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry
        entry = _transform_filters(weight, groups, m)
        with self._lock:
            self.misses += 1
            if key not in self._entries:
                self._entries[key] = entry
                self._bytes += entry[0].nbytes
                while self._bytes > self._max_bytes and len(self._entries) > 1:
                    _, (old, _) = self._entries.popitem(last=False)
                    self._bytes -= old.nbytes
        return entry


WINOGRAD_FILTER_CACHE = _TransformCache(max_bytes=256 * 2**20)


def _transform_filters(
    weight: npt.NDArray[Any], groups: int, m: int
) -> tuple[npt.NDArray[Any], int]:
    """U = G g G^T for every (output, input) channel pair, in float64, laid out as the weight of
    a grouped 1x1 convolution with A*A*groups groups: [A*A*K, C/groups, 1, 1], then packed
    for conv2d_pointwise."""
    g = _WINOGRAD_G[m]
    a = m + 2
    k, cg, _, _ = weight.shape
    # G g G^T per channel pair as two batched matrix products: [K, Cg, A, A].
    u = g @ weight.astype(np.float64) @ g.T
    u = u.transpose(2, 3, 0, 1).reshape(a * a * k, cg, 1, 1).astype(weight.dtype)
    kg = k // groups
    return _pack_blocked(
        u, a * a * groups, _channel_block(kg, POINTWISE_CHANNELS), transposed=False
    )


def _winograd_launches(
    stage: ConvStage, base: dict[str, int | float | str], m: int
) -> list[Launch]:
    """Lower a Winograd F(m x m, 3 x 3) stage to its input transform, the GEMM (the pointwise
    kernel with (m + 2)^2 * groups groups) and its output transform."""
    n, c, h, w = stage.in_shape
    _, k, oh, ow = stage.out_shape
    _, cg, kh, kw = stage.weight_shape
    if (kh, kw) != (3, 3) or stage.stride != (1, 1) or stage.channel_map is not None:
        raise ValueError("Winograd stages need a 3x3 kernel, stride 1 and no channel map")
    a = m + 2
    th, tw, tiles = winograd_tiles(stage.out_shape, stage.dilation, m)
    packed, blocks = WINOGRAD_FILTER_CACHE.get(_require(stage.weight), stage.groups, m)

    transform = base | {
        "C_IN": c,
        "H": h,
        "W": w,
        "K": k,
        "OH": oh,
        "OW": ow,
        "PAD_TOP": stage.pads.top,
        "PAD_LEFT": stage.pads.left,
        "DH": stage.dilation[0],
        "DW": stage.dilation[1],
        "WINO_M": m,
        "TH": th,
        "TW": tw,
        "TILES": tiles,
    }

    kg = k // stage.groups
    block = _channel_block(kg, POINTWISE_CHANNELS)
    gemm_groups = a * a * stage.groups
    gemm = base | {
        "N": n,
        "C_IN": a * a * c,
        "K": a * a * k,
        "P": tiles,
        "GROUPS": gemm_groups,
        "CIN_PG": cg,
        "KOUT_PG": kg,
        "OCB": block,
        "KB": blocks,
        "PV": POINTWISE_VECTORS,
    }

    output = transform | _epilogue_defines(stage.activation, stage.has_bias) | {"WINO_OUTPUT": 1}
    source = "conv2d_winograd.cl"
    if stage.dilation[1] == 1 and WINOGRAD_ROW_KERNELS:
        # Four tiles of a tile row per work-item: whole input and output rows move as runs.
        rows = stage.dilation[0] * th
        source = "conv2d_winograd_row.cl"
        input_kernel, output_kernel = "winograd_input_row", "winograd_output_row"
        input_size: tuple[int, ...] = (math.ceil(tw / 4), rows, c * n)
        output_size: tuple[int, ...] = (math.ceil(tw / 4), rows, k * n)
    else:
        input_kernel, output_kernel = "winograd_input", "winograd_output"
        input_size, output_size = (tiles, c, n), (tiles, k, n)

    return [
        Launch(
            stage,
            source,
            input_kernel,
            transform,
            input_size,
            None,
            None,
            COPY_ARGS,
            n * a * a * c * tiles,
        ),
        Launch(
            stage,
            "conv2d_pointwise.cl",
            "conv2d_pointwise",
            gemm,
            (math.ceil(tiles / (8 * POINTWISE_VECTORS)), n * gemm_groups * blocks),
            packed,
            None,
            CONV_ARGS,
            n * a * a * k * tiles,
        ),
        Launch(
            stage,
            source,
            output_kernel,
            output,
            output_size,
            None,
            stage.bias,
            ("src", "bias", "dst"),
        ),
    ]


def _stack_phase_weights(stage: ConvTransposeStage) -> npt.NDArray[Any]:
    """Build the conv2d weight of ``conv_transpose2d_phases``.

    For output phase (ry, rx) and group g, output channel (g * SH * SW + ry * SW + rx) *
    K/groups + k contains the taps w[c, k, ry + j * SH, rx + i * SW] flipped (tap
    (JH - 1 - j, JW - 1 - i)), zero past the kernel. A cross-correlation over the input padded
    by J - 1 then gives that phase's rows and columns of the uncropped transposed convolution.
    """
    weight = _require(stage.weight)
    c, kg, kh, kw = weight.shape
    sh, sw = stage.stride
    _, (_, cg, jh, jw), _ = phase_shapes(stage)
    padded = np.zeros((c, kg, jh * sh, jw * sw), dtype=weight.dtype)
    padded[:, :, :kh, :kw] = weight
    split = padded.reshape(stage.groups, cg, kg, jh, sh, jw, sw)[:, :, :, ::-1, :, ::-1, :]
    stacked = split.transpose(0, 4, 6, 2, 1, 3, 5)
    return np.ascontiguousarray(stacked.reshape(stage.groups * sh * sw * kg, cg, jh, jw))


def _transpose_phase_launches(
    stage: ConvTransposeStage, base: dict[str, int | float | str]
) -> list[Launch]:
    """Pad the input by J - 1 and run one conv2d_direct_oc with every phase's sub-kernel as
    output channels. That kernel writes each phase's values to their place in the transposed
    convolution's output, cropped, with bias and activation."""
    padded, weight_shape, stacked = phase_shapes(stage)
    _, k, oh, ow = stage.out_shape
    jh, jw = weight_shape[2], weight_shape[3]
    pads = Pads(jh - 1, jh - 1, jw - 1, jw - 1)
    pad = _pad_launch(PadStage(stage.in_shape, padded, "zeros", pads), base)

    conv = ConvStage(
        in_shape=padded,
        out_shape=stacked,
        weight_shape=weight_shape,
        weight=_stack_phase_weights(stage),
        bias=stage.bias,
        has_bias=stage.has_bias,
        stride=(1, 1),
        pads=Pads(),
        dilation=(1, 1),
        groups=stage.groups,
        activation=stage.activation,
        algorithm="conv2d_direct_oc",
    )
    (direct,) = plan_stage(conv, bool(base["USE_DOUBLE"]))

    phases: dict[str, int | float | str] = {
        "PHASE_SH": stage.stride[0],
        "PHASE_SW": stage.stride[1],
        "T_KOUT_PG": k // stage.groups,
        "T_OH": oh,
        "T_OW": ow,
        "T_PAD_TOP": stage.pads.top,
        "T_PAD_LEFT": stage.pads.left,
    }

    return [
        replace(pad, stage=stage, out_elements=math.prod(padded)),
        replace(direct, stage=stage, defines=direct.defines | phases, out_elements=None),
    ]


def _require(weight: npt.NDArray[Any] | None) -> npt.NDArray[Any]:
    if weight is None:
        raise ValueError("a stage without weight values cannot run; plan-only requests never do")
    return weight
