"""OpenCL failures during a request: a clean DeviceError naming the device and the status, the
device still serving afterwards, and a device that keeps failing taken out of rotation.

The failure is injected in-process into the executor, as real OpenCL faults cannot be caused
on demand.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyopencl as cl
import pytest

from clconv.engine import Engine
from clconv.errors import DeviceError, DeviceUnavailableError
from clconv.runtime import executor
from clconv.settings import Settings
from support import tensor_json

MAX_FAILURES = 3


def small_conv2d() -> dict[str, Any]:
    return {
        "input": tensor_json(np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3), "json"),
        "weight": tensor_json(np.ones((1, 1, 2, 2), dtype=np.float32), "json"),
    }


def out_of_resources(*args: object) -> None:
    record = cl._cl._ErrorRecord(
        "clEnqueueNDRangeKernel", cl.status_code.OUT_OF_RESOURCES, "injected failure"
    )
    raise cl.RuntimeError(record)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    engine = Engine(Settings(max_device_failures=MAX_FAILURES, warmup=False))
    engine.start()
    yield engine


def test_opencl_error_names_device_and_status(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    device_id = engine.registry.default_id
    monkeypatch.setattr(executor, "_run_locked", out_of_resources)
    with pytest.raises(DeviceError) as caught:
        engine.run("conv2d", small_conv2d())
    error = caught.value
    assert error.status == 500
    assert error.code == "device_error"
    assert f"device {device_id}" in error.message
    assert "clEnqueueNDRangeKernel returned CL_OUT_OF_RESOURCES (-5)" in error.message
    assert not engine.registry.get(device_id).lock.locked()

    monkeypatch.undo()
    result = engine.run("conv2d", small_conv2d())
    assert result["output"]["data"] == [8.0, 12.0, 20.0, 24.0]
    assert engine.registry.get(device_id).consecutive_failures == 0


def test_failing_device_taken_out_of_rotation(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    device_id = engine.registry.default_id
    monkeypatch.setattr(executor, "_run_locked", out_of_resources)
    for _ in range(MAX_FAILURES):
        with pytest.raises(DeviceError):
            engine.run("conv2d", small_conv2d())
    monkeypatch.undo()

    with pytest.raises(DeviceUnavailableError) as caught:
        engine.run("conv2d", small_conv2d())
    assert caught.value.status == 503
    assert f"device {device_id} is out of rotation" in caught.value.message
    assert "3 consecutive OpenCL failures" in caught.value.message

    listed = {device["id"]: device for device in engine.devices()["devices"]}
    assert listed[device_id]["healthy"] is False
    assert "CL_OUT_OF_RESOURCES" in listed[device_id]["disabled_reason"]
    others = [device for device in listed.values() if device["id"] != device_id]
    assert all(device["healthy"] for device in others)
    for other in others:
        body = {**small_conv2d(), "device": other["id"]}
        assert engine.run("conv2d", body)["output"]["data"] == [8.0, 12.0, 20.0, 24.0]
