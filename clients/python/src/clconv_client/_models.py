"""Result types returned by the client: convolution results, plans and device listings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ConvResult", "Device", "DeviceList", "PlanResult"]


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(str(item) for item in value or ())


def _device_id(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("id", ""))
    return str(value or "")


@dataclass(frozen=True, eq=False)
class ConvResult:
    """The output of one operation or pipeline and what the server measured while running it.

    ``timings`` contains milliseconds measured with OpenCL profiling events on the server, keyed
    ``queue``, ``upload``, ``compute``, ``download`` and ``total``. ``device`` is the device id
    (``raw["device"]`` has its name and platform). ``algorithm`` lists the kernels chosen, one per
    step. ``flops`` is 2·MACs plus one per output element for each bias. ``raw`` is the whole
    response body except ``output``.
    """

    output: np.ndarray
    timings: dict[str, float]
    device: str
    algorithm: tuple[str, ...]
    flops: int
    macs: int
    params: int
    raw: dict[str, Any]

    @classmethod
    def from_response(cls, body: dict[str, Any]) -> ConvResult:
        """Build a result from a decoded response whose ``output`` is already an array."""
        raw = {key: value for key, value in body.items() if key != "output"}
        return cls(
            output=body["output"],
            timings={key: float(value) for key, value in body.get("timings_ms", {}).items()},
            device=_device_id(body.get("device")),
            algorithm=_strings(body.get("algorithm")),
            flops=int(body.get("flops", 0)),
            macs=int(body.get("macs", 0)),
            params=int(body.get("params", 0)),
            raw=raw,
        )


@dataclass(frozen=True)
class PlanResult:
    """The plan of a request from ``POST /v1/plan``; nothing ran on the device.

    ``receptive_field`` and ``effective_stride`` are (height, width) in input pixels.
    ``bytes_moved`` has ``upload`` and ``download`` byte counts. ``raw`` is the whole response.
    """

    output_shape: tuple[int, ...]
    dtype: str
    macs: int
    flops: int
    params: int
    receptive_field: tuple[float, ...]
    effective_stride: tuple[float, ...]
    bytes_moved: dict[str, int]
    algorithm: tuple[str, ...]
    device: str
    raw: dict[str, Any]

    @classmethod
    def from_response(cls, body: dict[str, Any]) -> PlanResult:
        return cls(
            output_shape=tuple(int(size) for size in body.get("output_shape", ())),
            dtype=str(body.get("dtype", "")),
            macs=int(body.get("macs", 0)),
            flops=int(body.get("flops", 0)),
            params=int(body.get("params", 0)),
            receptive_field=tuple(float(size) for size in body.get("receptive_field", ())),
            effective_stride=tuple(float(size) for size in body.get("effective_stride", ())),
            bytes_moved={key: int(value) for key, value in body.get("bytes_moved", {}).items()},
            algorithm=_strings(body.get("algorithm")),
            device=_device_id(body.get("device")),
            raw=body,
        )


@dataclass(frozen=True)
class Device:
    """One OpenCL device as ``GET /v1/devices`` lists it. Memory sizes are in bytes."""

    id: str
    name: str
    vendor: str
    platform: str
    type: str
    compute_units: int
    global_mem_bytes: int
    local_mem_bytes: int
    max_work_group_size: int
    fp16: bool
    fp64: bool
    driver_version: str
    opencl_version: str
    default: bool
    raw: dict[str, Any]

    @classmethod
    def from_response(cls, body: dict[str, Any]) -> Device:
        return cls(
            id=str(body.get("id", "")),
            name=str(body.get("name", "")),
            vendor=str(body.get("vendor", "")),
            platform=str(body.get("platform", "")),
            type=str(body.get("type", "")),
            compute_units=int(body.get("compute_units", 0)),
            global_mem_bytes=int(body.get("global_mem_bytes", 0)),
            local_mem_bytes=int(body.get("local_mem_bytes", 0)),
            max_work_group_size=int(body.get("max_work_group_size", 0)),
            fp16=bool(body.get("fp16", False)),
            fp64=bool(body.get("fp64", False)),
            driver_version=str(body.get("driver_version", "")),
            opencl_version=str(body.get("opencl_version", "")),
            default=bool(body.get("default", False)),
            raw=body,
        )


@dataclass(frozen=True)
class DeviceList:
    """The server's devices, its default device id, and the platforms it skipped with reasons."""

    default: str | None
    devices: tuple[Device, ...]
    skipped: tuple[dict[str, Any], ...]
    raw: dict[str, Any]

    @classmethod
    def from_response(cls, body: dict[str, Any]) -> DeviceList:
        return cls(
            default=body.get("default"),
            devices=tuple(Device.from_response(item) for item in body.get("devices", ())),
            skipped=tuple(body.get("skipped", ())),
            raw=body,
        )

    def __getitem__(self, device_id: str) -> Device:
        """Return the device with this id; raise ``KeyError`` if none has it."""
        for device in self.devices:
            if device.id == device_id:
                return device
        raise KeyError(device_id)
