"""Parsers for the scalar settings shared by every operation: stride, padding, dilation,
groups, padding_mode and activation. Each raises ``ValidationError`` naming the field."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from clconv.errors import ValidationError

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
ACTIVATIONS = ("relu", "relu6", "leaky_relu", "sigmoid", "tanh")
DEFAULT_NEGATIVE_SLOPE = 0.01


@dataclass(frozen=True)
class Pads:
    """Explicit padding in pixels on each side of H (top, bottom) and W (left, right)."""

    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0

    @property
    def any(self) -> bool:
        return bool(self.top or self.bottom or self.left or self.right)


@dataclass(frozen=True)
class Activation:
    """A fused epilogue applied to each output element after the bias."""

    name: str = "none"
    negative_slope: float = DEFAULT_NEGATIVE_SLOPE


NO_ACTIVATION = Activation()


JSON_TYPE_NAMES = {
    type(None): "null",
    bool: "boolean",
    int: "number",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}


def json_type(value: Any) -> str:
    """Return the JSON name of a decoded value's type (``null``, ``string``, ``array``...)."""
    return JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def describe(value: Any) -> str:
    """Return a short ``type value`` text, in JSON terms, for an offending value."""
    text = json.dumps(value, allow_nan=True, default=repr)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{json_type(value)} {text}"


def require_dict(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(
            f"{field} must be a JSON object, got {describe(value)}", field, code="invalid_type"
        )
    return value


def parse_pair(
    body: dict[str, Any], key: str, field: str, *, default: int, minimum: int
) -> tuple[int, int]:
    """Parse an int or a list of one or two ints (H, W), each at least ``minimum``."""
    value = body.get(key, default)
    if value is None:
        value = default
    items = value if isinstance(value, list) else [value]
    if len(items) not in (1, 2):
        raise ValidationError(
            f"{field} must be an int or a list [h, w], got a list of {len(items)} values: "
            f"{value!r}",
            field,
        )
    pair: list[int] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int):
            raise ValidationError(
                f"{field} must be an int or a list of two ints, got {describe(item)}",
                field,
                code="invalid_type",
            )
        if item < minimum:
            raise ValidationError(
                f"{field} must be >= {minimum}, got {item}; pass {key} >= {minimum}", field
            )
        pair.append(item)
    if len(pair) == 1:
        pair.append(pair[0])
    return pair[0], pair[1]


def parse_int(body: dict[str, Any], key: str, field: str, *, default: int, minimum: int) -> int:
    value = body.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(
            f"{field} must be an integer, got {describe(value)}", field, code="invalid_type"
        )
    if value < minimum:
        raise ValidationError(f"{field} must be >= {minimum}, got {value}", field)
    return value


def parse_padding(
    body: dict[str, Any],
    field: str,
    *,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    allow_strings: bool,
) -> Pads:
    """Parse ``padding``: int, ``[ph, pw]``, ``{"top","bottom","left","right"}``, or, where
    ``allow_strings``, ``"same"`` (stride 1 only, extra pixel at the end as PyTorch pads) and
    ``"valid"``."""
    value = body.get("padding", 0)
    if value is None:
        value = 0
    if isinstance(value, str):
        return _parse_padding_string(value, field, kernel, stride, dilation, allow_strings)
    if isinstance(value, dict):
        return _parse_padding_object(value, field)
    ph, pw = parse_pair(body, "padding", field, default=0, minimum=0)
    return Pads(ph, ph, pw, pw)


def _parse_padding_string(
    value: str,
    field: str,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    allow_strings: bool,
) -> Pads:
    if not allow_strings:
        raise ValidationError(
            f"{field} {value!r} is not supported here; give an int, [ph, pw] or "
            "{'top', 'bottom', 'left', 'right'}",
            field,
        )
    if value == "valid":
        return Pads()
    if value != "same":
        raise ValidationError(
            f"{field} {value!r} is unknown; use 'same', 'valid', an int, [ph, pw] or "
            "{'top', 'bottom', 'left', 'right'}",
            field,
        )
    if stride != (1, 1):
        raise ValidationError(
            f"{field} 'same' needs stride 1, got stride {list(stride)}; give explicit padding "
            "for strided convolutions (as PyTorch requires)",
            field,
        )
    total_h = dilation[0] * (kernel[0] - 1)
    total_w = dilation[1] * (kernel[1] - 1)
    return Pads(total_h // 2, total_h - total_h // 2, total_w // 2, total_w - total_w // 2)


def _parse_padding_object(value: dict[str, Any], field: str) -> Pads:
    sides = ("top", "bottom", "left", "right")
    unknown = sorted(set(value) - set(sides))
    if unknown:
        raise ValidationError(
            f"{field} has unknown key {unknown[0]!r}; the object takes top, bottom, left, right",
            f"{field}.{unknown[0]}",
        )
    amounts: list[int] = []
    for side in sides:
        if side not in value:
            raise ValidationError(
                f"{field}.{side} is missing; an asymmetric padding object needs all of top, "
                "bottom, left, right",
                f"{field}.{side}",
                code="missing_field",
            )
        amount = value[side]
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise ValidationError(
                f"{field}.{side} must be an integer, got {describe(amount)}",
                f"{field}.{side}",
                code="invalid_type",
            )
        if amount < 0:
            raise ValidationError(
                f"{field}.{side} must be >= 0, got {amount}; negative padding (cropping) is not "
                "supported",
                f"{field}.{side}",
            )
        amounts.append(amount)
    return Pads(*amounts)


def parse_padding_mode(body: dict[str, Any], field: str) -> str:
    value = body.get("padding_mode", "zeros")
    if value is None:
        value = "zeros"
    if value not in PADDING_MODES:
        raise ValidationError(
            f"{field} {value!r} is unknown; use one of {', '.join(PADDING_MODES)}", field
        )
    return str(value)


def parse_activation(body: dict[str, Any], key: str, field: str) -> Activation:
    """Parse an activation given as a name or ``{"name", "negative_slope"}``; a top-level
    ``negative_slope`` applies to ``leaky_relu`` given by name."""
    value = body.get(key)
    if value is None or value == "none":
        return NO_ACTIVATION
    slope_value: Any = body.get("negative_slope", DEFAULT_NEGATIVE_SLOPE)
    slope_field = field.rsplit(key, 1)[0] + "negative_slope"
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"name", "negative_slope"})
        if unknown:
            raise ValidationError(
                f"{field} has unknown key {unknown[0]!r}; the object takes name and negative_slope",
                f"{field}.{unknown[0]}",
            )
        name = value.get("name")
        if "negative_slope" in value:
            slope_value = value["negative_slope"]
            slope_field = f"{field}.negative_slope"
        field = f"{field}.name"
    else:
        name = value
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValidationError(
            f"{field} {name!r} is unknown; use one of {', '.join(ACTIVATIONS)} or null", field
        )
    if (
        isinstance(slope_value, bool)
        or not isinstance(slope_value, int | float)
        or not math.isfinite(slope_value)
    ):
        raise ValidationError(
            f"{slope_field} must be a finite number, got {describe(slope_value)}",
            slope_field,
            code="invalid_type",
        )
    return Activation(name, float(slope_value))
