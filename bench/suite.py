"""The benchmark's convolution shapes, and their request bodies, FLOPs and memory traffic.

Everything here is numpy and the standard library, so tests can import the same shapes. Shapes
are NCHW float32 with no bias and no activation, so clconv and PyTorch do the same arithmetic.
"""

from __future__ import annotations

import base64
import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Shape4 = tuple[int, int, int, int]
Pair = tuple[int, int]

FLOAT32_BYTES = 4

# DeepBench rows sampled per run, evenly spaced over the eligible rows.
DEEPBENCH_SAMPLE = 20
# Eligible DeepBench rows have at most this many multiply-accumulates (4 GFLOP). A run then
# stays under 2 s at any rate above 2 GFLOP/s, far below PyTorch's on x86 CPUs with AVX2. The cap
# is that tight so the slowest OpenCL runtime keeps the whole benchmark near 10 minutes on 2 cores.
DEEPBENCH_MAX_MACS = 2_000_000_000
# Eligible rows also need at most this much memory for input, weight and output in float32.
DEEPBENCH_MAX_BYTES = 2 * 1024**3
# DeepBench's problem list is external data; CLCONV_SUITES_DIR names its folder (default: the
# shared suites folder beside the repository, as the tests use).
DEFAULT_DEEPBENCH_CSV = (
    Path(os.environ.get("CLCONV_SUITES_DIR", Path(__file__).resolve().parents[2] / "shared/suites"))
    / "deepbench_conv.csv"
)


@dataclass(frozen=True)
class Layer:
    """One convolution as PyTorch runs it (``conv2d`` or ``conv_transpose2d``).

    ``weight_shape`` is [K, C/groups, kh, kw] for conv2d and [C, K/groups, kh, kw] for
    conv_transpose2d, as in PyTorch.
    """

    weight_shape: Shape4
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    groups: int = 1
    transposed: bool = False

    def output_shape(self, in_shape: Shape4) -> Shape4:
        n, _, h, w = in_shape
        kh, kw = self.weight_shape[2], self.weight_shape[3]
        if self.transposed:
            k = self.weight_shape[1] * self.groups
            sizes = [
                (size - 1) * s - 2 * p + d * (kernel - 1) + 1
                for size, kernel, s, p, d in zip(
                    (h, w), (kh, kw), self.stride, self.padding, self.dilation, strict=True
                )
            ]
        else:
            k = self.weight_shape[0]
            sizes = [
                (size + 2 * p - d * (kernel - 1) - 1) // s + 1
                for size, kernel, s, p, d in zip(
                    (h, w), (kh, kw), self.stride, self.padding, self.dilation, strict=True
                )
            ]
        return (n, k, sizes[0], sizes[1])

    def macs(self, in_shape: Shape4) -> int:
        """Multiply-accumulates as clconv's planner counts them, padding taps included:
        output elements x C/groups x kh x kw for conv2d, and input elements x K/groups x kh x kw
        for conv_transpose2d."""
        _, _, kh, kw = self.weight_shape
        if self.transposed:
            return math.prod(in_shape) * self.weight_shape[1] * kh * kw
        return math.prod(self.output_shape(in_shape)) * self.weight_shape[1] * kh * kw


@dataclass(frozen=True)
class Case:
    """One benchmark shape: the clconv operation, its input and the layers PyTorch runs."""

    name: str
    title: str  # the model or source and the layer, without shapes
    group: str  # "base", "batch" or "deepbench"
    op: str  # the clconv operation: conv2d, conv_transpose2d or spatially_separable_conv2d
    input_shape: Shape4
    layers: tuple[Layer, ...]

    def shapes(self) -> list[tuple[Shape4, Shape4]]:
        """Input and output shape of every layer, in order."""
        result = []
        shape = self.input_shape
        for layer in self.layers:
            out = layer.output_shape(shape)
            result.append((shape, out))
            shape = out
        return result

    @property
    def output_shape(self) -> Shape4:
        return self.shapes()[-1][1]

    @property
    def label(self) -> str:
        """The title with the input shape and output channels, such as ``..., 1×64×56×56→64``."""
        shape = "×".join(str(size) for size in self.input_shape)
        return f"{self.title}, {shape}→{self.output_shape[1]}"

    @property
    def macs(self) -> int:
        pairs = zip(self.layers, self.shapes(), strict=True)
        return sum(layer.macs(in_shape) for layer, (in_shape, _) in pairs)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def min_bytes(self) -> int:
        """Compulsory float32 traffic: each layer reads its input and weight once and writes its
        output once (an intermediate is written and read back)."""
        total = 0
        for layer, (in_shape, out_shape) in zip(self.layers, self.shapes(), strict=True):
            elements = math.prod(in_shape) + math.prod(layer.weight_shape) + math.prod(out_shape)
            total += elements * FLOAT32_BYTES
        return total

    @property
    def arithmetic_intensity(self) -> float:
        """FLOPs per byte of compulsory traffic."""
        return self.flops / self.min_bytes


def _conv(
    name: str,
    title: str,
    input_shape: Shape4,
    weight_shape: Shape4,
    *,
    group: str = "base",
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    groups: int = 1,
) -> Case:
    layer = Layer(weight_shape, (stride, stride), (padding, padding), (dilation, dilation), groups)
    return Case(name, title, group, "conv2d", input_shape, (layer,))


def _batched(case: Case, batch: int) -> Case:
    _, c, h, w = case.input_shape
    return Case(
        f"{case.name}_n{batch}",
        case.title,
        "batch",
        case.op,
        (batch, c, h, w),
        case.layers,
    )


RESNET_3X3 = _conv("resnet50_3x3", "ResNet-50 3×3", (1, 64, 56, 56), (64, 64, 3, 3), padding=1)
RESNET_1X1 = _conv("resnet50_1x1", "ResNet-50 1×1", (1, 256, 56, 56), (64, 256, 1, 1))
MOBILENET_DEPTHWISE = _conv(
    "mobilenetv2_depthwise",
    "MobileNetV2 depthwise 3×3",
    (1, 144, 56, 56),
    (144, 1, 3, 3),
    padding=1,
    groups=144,
)

BASE_SUITE: tuple[Case, ...] = (
    RESNET_3X3,
    RESNET_1X1,
    MOBILENET_DEPTHWISE,
    _conv(
        "mobilenetv2_pointwise",
        "MobileNetV2 pointwise",
        (1, 144, 56, 56),
        (24, 144, 1, 1),
    ),
    _conv(
        "resnext_grouped",
        "ResNeXt grouped 3×3 g32",
        (1, 128, 56, 56),
        (128, 4, 3, 3),
        padding=1,
        groups=32,
    ),
    _conv(
        "deeplab_dilated",
        "DeepLab dilated 3×3 d2",
        (1, 256, 33, 33),
        (256, 256, 3, 3),
        padding=2,
        dilation=2,
    ),
    Case(
        "unet_transposed_4x4",
        "U-Net transposed 4×4 s2 p1",
        "base",
        "conv_transpose2d",
        (1, 128, 32, 32),
        (Layer((128, 64, 4, 4), (2, 2), (1, 1), transposed=True),),
    ),
    Case(
        "unet_transposed_2x2",
        "U-Net transposed 2×2 s2",
        "base",
        "conv_transpose2d",
        (1, 128, 32, 32),
        (Layer((128, 64, 2, 2), (2, 2), transposed=True),),
    ),
    _conv(
        "stem_7x7",
        "7×7 s2 p3 stem",
        (1, 3, 224, 224),
        (64, 3, 7, 7),
        stride=2,
        padding=3,
    ),
    Case(
        "separable_3x1_1x3",
        "3×1 + 1×3 factorised",
        "base",
        "spatially_separable_conv2d",
        (1, 64, 112, 112),
        (
            Layer((64, 64, 3, 1), padding=(1, 0)),
            Layer((64, 64, 1, 3), padding=(0, 1)),
        ),
    ),
)

BATCH_SUITE: tuple[Case, ...] = tuple(
    _batched(case, 8) for case in (RESNET_3X3, RESNET_1X1, MOBILENET_DEPTHWISE)
)


def deepbench_cases(
    path: Path = DEFAULT_DEEPBENCH_CSV,
    sample: int = DEEPBENCH_SAMPLE,
    max_macs: int = DEEPBENCH_MAX_MACS,
    max_bytes: int = DEEPBENCH_MAX_BYTES,
) -> list[Case]:
    """Read DeepBench's convolution list and return ``sample`` rows, in file order, evenly
    spaced over the rows within ``max_macs`` and ``max_bytes``. The same file gives the same
    rows."""
    with path.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    eligible = []
    for row in rows:
        case = _deepbench_case(row)
        if case.macs <= max_macs and case.min_bytes <= max_bytes:
            eligible.append(case)
    if len(eligible) <= sample:
        return eligible
    picks = sorted({round(i * (len(eligible) - 1) / (sample - 1)) for i in range(sample)})
    return [eligible[i] for i in picks]


def _deepbench_case(row: dict[str, str]) -> Case:
    value = {key: int(row[key]) for key in row if key not in ("set", "note")}
    n, c, h, w, k = value["N"], value["C"], value["H"], value["W"], value["K"]
    layer = Layer(
        (k, c, value["R_filter_h"], value["S_filter_w"]),
        (value["stride_h"], value["stride_w"]),
        (value["pad_h"], value["pad_w"]),
    )
    case = Case(
        f"deepbench_{row['set'].removesuffix('_set')}_{value['index']}",
        f"DeepBench {row['set'].removesuffix('_set')} #{value['index']}",
        "deepbench",
        "conv2d",
        (n, c, h, w),
        (layer,),
    )
    expected = (value["out_h"], value["out_w"])
    if case.output_shape[2:] != expected or case.macs != value["macs"]:
        raise ValueError(
            f"DeepBench row {row['set']} #{value['index']}: computed output "
            f"{case.output_shape[2:]} and {case.macs} MACs, but the file lists {expected} and "
            f"{value['macs']}; check the column order W,H,C,N,K,S_filter_w,R_filter_h"
        )
    return case


def describe_layers(case: Case) -> str:
    """Short text of each layer's kernel, stride, padding, dilation and groups."""
    parts = []
    for layer in case.layers:
        kh, kw = layer.weight_shape[2], layer.weight_shape[3]
        text = f"{'T' if layer.transposed else ''}{kh}×{kw}"
        if layer.stride != (1, 1):
            text += f" s{_pair_text(layer.stride)}"
        if layer.padding != (0, 0):
            text += f" p{_pair_text(layer.padding)}"
        if layer.dilation != (1, 1):
            text += f" d{_pair_text(layer.dilation)}"
        if layer.groups != 1:
            text += f" g{layer.groups}"
        parts.append(text)
    shape = "×".join(str(size) for size in case.input_shape)
    return f"{shape}→{case.output_shape[1]}, " + " + ".join(parts)


def _pair_text(pair: Pair) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]},{pair[1]}"


def make_arrays(case: Case, seed: int = 0) -> tuple[npt.NDArray[Any], list[npt.NDArray[Any]]]:
    """Random float32 input and weights, with weights scaled by 1/sqrt(fan-in) so outputs
    stay near unit size."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case.input_shape, dtype=np.float32)
    weights = []
    for layer in case.layers:
        _, per_group, kh, kw = layer.weight_shape
        fan_in = (
            (layer.weight_shape[0] // layer.groups if layer.transposed else per_group) * kh * kw
        )
        weight = rng.standard_normal(layer.weight_shape, dtype=np.float32)
        weights.append(weight / np.float32(math.sqrt(fan_in)))
    return x, weights


def tensor_object(array: npt.NDArray[Any]) -> dict[str, Any]:
    """Encode an array as an API tensor object with base64 data."""
    data = np.ascontiguousarray(array, dtype="<f4")
    return {
        "shape": list(array.shape),
        "dtype": "float32",
        "base64": base64.b64encode(data.tobytes()).decode("ascii"),
    }


def request_body(
    case: Case, x: npt.NDArray[Any], weights: Sequence[npt.NDArray[Any]], device: str
) -> dict[str, Any]:
    """Build the JSON-shaped request body of ``case`` for clconv operation ``case.op``."""
    body: dict[str, Any] = {"input": tensor_object(x), "device": device}
    if case.op == "spatially_separable_conv2d":
        vertical, horizontal = case.layers
        body |= {
            "vertical_weight": tensor_object(weights[0]),
            "horizontal_weight": tensor_object(weights[1]),
            "padding": [vertical.padding[0], horizontal.padding[1]],
            "groups": vertical.groups,
        }
        return body
    (layer,) = case.layers
    return body | {
        "weight": tensor_object(weights[0]),
        "stride": list(layer.stride),
        "padding": list(layer.padding),
        "dilation": list(layer.dilation),
        "groups": layer.groups,
    }
