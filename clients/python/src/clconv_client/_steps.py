"""The four convolution operations as step objects, and how each becomes a request body.

A step keeps its tensors as given (numpy arrays, anything ``numpy.asarray`` accepts, or shapes
when planning) and its settings under the PyTorch names, which are also the API's field names.
``Client.conv2d`` and the other methods build the same objects, so one mapping serves single
operations, pipeline steps and plans.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

__all__ = [
    "Activation",
    "Conv2d",
    "ConvTranspose2d",
    "DepthwiseSeparableConv2d",
    "IntPair",
    "Padding",
    "SpatiallySeparableConv2d",
    "Step",
    "step_body",
]

IntPair = int | Sequence[int]
"""An int for both axes, or ``(height, width)``."""

Padding = int | Sequence[int] | str | Mapping[str, int]
"""An int, ``(ph, pw)``, ``"same"``, ``"valid"`` or ``{"top", "bottom", "left", "right"}``."""

Activation = str | Mapping[str, Any] | None
"""``None``, ``"relu"``, ``"relu6"``, ``"leaky_relu"``, ``"sigmoid"``, ``"tanh"``, or
``{"name": "leaky_relu", "negative_slope": 0.2}``."""

TENSOR_FIELDS = frozenset(
    {
        "weight",
        "bias",
        "depthwise_weight",
        "depthwise_bias",
        "pointwise_weight",
        "pointwise_bias",
        "vertical_weight",
        "vertical_bias",
        "horizontal_weight",
        "horizontal_bias",
    }
)

TensorConverter = Callable[[Any], Any]


class _StepBase:
    """Shared ``to_body``: every field that is not ``None`` becomes a body field."""

    op: ClassVar[str]

    def to_body(self, convert_tensor: TensorConverter) -> dict[str, Any]:
        """Return ``{"op": ..., field: value}``, passing tensors through ``convert_tensor``."""
        body: dict[str, Any] = {"op": self.op}
        for item in fields(self):  # type: ignore[arg-type]
            value = getattr(self, item.name)
            if value is None:
                continue
            body[item.name] = convert_tensor(value) if item.name in TENSOR_FIELDS else value
        return body


@dataclass(eq=False)
class Conv2d(_StepBase):
    """A ``conv2d`` step: ``torch.nn.functional.conv2d`` plus ``padding_mode`` and an activation.

    ``weight`` is [K, C/groups, kh, kw] and ``bias`` [K].
    """

    op: ClassVar[str] = "conv2d"
    weight: Any
    bias: Any = None
    stride: IntPair = 1
    padding: Padding = 0
    dilation: IntPair = 1
    groups: int = 1
    padding_mode: str = "zeros"
    activation: Activation = None


@dataclass(eq=False)
class ConvTranspose2d(_StepBase):
    """A ``conv_transpose2d`` step, as in PyTorch, plus ``output_size`` and an activation.

    ``weight`` is [C, K/groups, kh, kw] and ``bias`` [K]. ``padding`` is an int, a pair or the
    ``{"top", "bottom", "left", "right"}`` object (not ``"same"`` or ``"valid"``).
    """

    op: ClassVar[str] = "conv_transpose2d"
    weight: Any
    bias: Any = None
    stride: IntPair = 1
    padding: Padding = 0
    output_padding: IntPair = 0
    groups: int = 1
    dilation: IntPair = 1
    output_size: Sequence[int] | None = None
    activation: Activation = None


@dataclass(eq=False)
class DepthwiseSeparableConv2d(_StepBase):
    """A depthwise convolution (groups = C) followed by a 1×1 pointwise convolution.

    ``depthwise_weight`` is [C·m, 1, kh, kw], ``pointwise_weight`` [K, C·m, 1, 1]. ``stride``,
    ``padding``, ``dilation`` and ``padding_mode`` apply to the depthwise step;
    ``depthwise_activation`` runs after it and ``activation`` after the pointwise step.
    """

    op: ClassVar[str] = "depthwise_separable_conv2d"
    depthwise_weight: Any
    pointwise_weight: Any
    depthwise_bias: Any = None
    pointwise_bias: Any = None
    stride: IntPair = 1
    padding: Padding = 0
    dilation: IntPair = 1
    padding_mode: str = "zeros"
    depthwise_activation: Activation = None
    activation: Activation = None


@dataclass(eq=False)
class SpatiallySeparableConv2d(_StepBase):
    """A kh×1 convolution followed by a 1×kw convolution, equal to one kh×kw convolution.

    Give either the factors, ``vertical_weight`` [M, C/groups, kh, 1] and
    ``horizontal_weight`` [K, M/groups, 1, kw], or one ``weight`` [K, C/groups, kh, kw]. The
    server factors ``weight`` by SVD, so each of its 2-D slices must be rank 1 within
    ``tolerance`` (relative; the server's default is 1e-4).
    """

    op: ClassVar[str] = "spatially_separable_conv2d"
    weight: Any = None
    bias: Any = None
    vertical_weight: Any = None
    vertical_bias: Any = None
    horizontal_weight: Any = None
    horizontal_bias: Any = None
    tolerance: float | None = None
    stride: IntPair = 1
    padding: Padding = 0
    dilation: IntPair = 1
    groups: int = 1
    padding_mode: str = "zeros"
    vertical_activation: Activation = None
    activation: Activation = None


Step = Conv2d | ConvTranspose2d | DepthwiseSeparableConv2d | SpatiallySeparableConv2d

STEP_CLASSES: dict[str, type[Step]] = {
    cls.op: cls
    for cls in (Conv2d, ConvTranspose2d, DepthwiseSeparableConv2d, SpatiallySeparableConv2d)
}


def step_body(step: Step | Mapping[str, Any], convert_tensor: TensorConverter) -> dict[str, Any]:
    """Return the body of one pipeline step given as a step object or a dict with ``op``.

    Raises ``TypeError`` for any other value and ``ValueError`` for a dict without a known ``op``.
    """
    if isinstance(step, _StepBase):
        return step.to_body(convert_tensor)
    if not isinstance(step, Mapping):
        expected = "a step object such as Conv2d or a dict with 'op'"
        raise TypeError(f"a pipeline step must be {expected}, got {type(step).__name__}")
    op = step.get("op")
    if op not in STEP_CLASSES:
        raise ValueError(
            f"a pipeline step dict needs 'op' set to one of {', '.join(STEP_CLASSES)}, got {op!r}"
        )
    return {
        key: convert_tensor(value) if key in TENSOR_FIELDS and value is not None else value
        for key, value in step.items()
    }
