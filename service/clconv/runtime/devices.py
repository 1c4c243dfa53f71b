"""OpenCL platform and device discovery, and the per-device context, queue and program cache.

Each usable device gets one context and one in-order command queue with profiling enabled.
A device is usable when a small probe kernel builds and runs on it. PoCL's PyPI wheel, for one,
lists devices on recent x86 CPUs but fails every build (its LLVM 14 reports ``unknown target
CPU 'generic'``). Such devices are skipped with the reason logged.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyopencl as cl

from clconv.errors import DeviceUnavailableError, UnknownDeviceError, UnsupportedOnDeviceError
from clconv.runtime.icd import configure_icd_loader
from clconv.runtime.programs import BinaryStore, ProgramCache

logger = logging.getLogger("clconv.runtime")

# Intel's compiler prints informational output for every build; PyOpenCL turns any output into
# a CompilerWarning. Real build failures still raise and are reported with their log.
warnings.filterwarnings("ignore", category=cl.CompilerWarning)

PROBE_SOURCE = """
__kernel void probe(__global float* data) { data[get_global_id(0)] *= 2.0f; }
"""

# Known CPU runtimes, fastest first. In `make bench` on a 2-core AMD EPYC (AVX2), Intel's CPU
# runtime ran the base suite's kernels about twice as fast as PoCL 3.1 (geometric mean).
# Oclgrind is a simulator for checking kernels and never a default.
CPU_RUNTIME_RANK = (("intel", 0), ("pocl", 1), ("oclgrind", 9))

PLATFORM_SLUGS = (
    ("portable computing language", "pocl"),
    ("pocl", "pocl"),
    ("intel", "intel"),
    ("nvidia", "nvidia"),
    ("amd", "amd"),
    ("advanced micro devices", "amd"),
    ("oclgrind", "oclgrind"),
    ("apple", "apple"),
    ("rusticl", "rusticl"),
    ("clover", "clover"),
)


def platform_slug(name: str) -> str:
    """Return a short lowercase id for a platform name (``Intel(R) OpenCL`` -> ``intel``)."""
    lowered = name.lower()
    for needle, slug in PLATFORM_SLUGS:
        if needle in lowered:
            return slug
    return re.sub(r"[^a-z0-9]+", "-", lowered).strip("-") or "platform"


@dataclass
class Device:
    """One usable OpenCL device with its context, profiling queue and compiled programs."""

    id: str
    cl_device: cl.Device
    platform: cl.Platform
    context: cl.Context
    queue: cl.CommandQueue
    programs: ProgramCache
    lock: threading.Lock = field(default_factory=threading.Lock)
    is_default: bool = False
    consecutive_failures: int = 0
    disabled_reason: str | None = None

    @property
    def healthy(self) -> bool:
        return self.disabled_reason is None

    def record_success(self) -> None:
        self.consecutive_failures = 0

    def record_failure(self, message: str, max_failures: int) -> None:
        """Count a failed request; the ``max_failures``-th in a row takes the device out."""
        self.consecutive_failures += 1
        if self.healthy and self.consecutive_failures >= max_failures:
            self.disabled_reason = (
                f"{self.consecutive_failures} consecutive OpenCL failures, the last: {message}"
            )
            logger.error("taking device %s out of rotation: %s", self.id, self.disabled_reason)

    @property
    def name(self) -> str:
        return str(self.cl_device.name).strip()

    @property
    def type_name(self) -> str:
        kind = self.cl_device.type
        for bit, name in (
            (cl.device_type.GPU, "gpu"),
            (cl.device_type.ACCELERATOR, "accelerator"),
            (cl.device_type.CPU, "cpu"),
        ):
            if kind & bit:
                return name
        return "other"

    @property
    def is_simulator(self) -> bool:
        """Whether this is Oclgrind, which simulates each work-item for checking kernels."""
        return self.id.split(":")[0] == "oclgrind"

    @property
    def fp64(self) -> bool:
        return "cl_khr_fp64" in str(self.cl_device.extensions)

    def check_dtype(self, dtype: str) -> None:
        """Raise ``UnsupportedOnDeviceError`` for float64 on a device without cl_khr_fp64."""
        if dtype == "float64" and not self.fp64:
            raise UnsupportedOnDeviceError(
                f"device {self.id} ({self.name}) has no cl_khr_fp64, so float64 is not "
                "supported there; send float32 or choose a device with fp64 in GET /v1/devices",
                "input.dtype",
            )

    @property
    def fp16(self) -> bool:
        return "cl_khr_fp16" in str(self.cl_device.extensions)

    def describe(self) -> dict[str, Any]:
        """Return the device's entry for ``GET /v1/devices``."""
        dev = self.cl_device
        return {
            "id": self.id,
            "name": self.name,
            "vendor": str(dev.vendor).strip(),
            "platform": str(self.platform.name).strip(),
            "platform_version": str(self.platform.version).strip(),
            "type": self.type_name,
            "compute_units": int(dev.max_compute_units),
            "global_mem_bytes": int(dev.global_mem_size),
            "local_mem_bytes": int(dev.local_mem_size),
            "max_work_group_size": int(dev.max_work_group_size),
            "max_mem_alloc_bytes": int(dev.max_mem_alloc_size),
            "fp16": self.fp16,
            "fp64": self.fp64,
            "driver_version": str(dev.driver_version).strip(),
            "opencl_version": str(dev.version).strip(),
            "default": self.is_default,
            "healthy": self.healthy,
            "disabled_reason": self.disabled_reason,
            "programs": self.programs.counts(),
        }


@dataclass
class DeviceRegistry:
    """Every usable device, the default one, and the platforms or devices that were skipped."""

    devices: list[Device]
    default_id: str | None
    skipped: list[dict[str, str]]

    def get(self, device_id: str | None) -> Device:
        """Return the device with ``device_id``, or the default one for ``None``."""
        requested = device_id or self.default_id
        for device in self.devices:
            if device.id == requested:
                if not device.healthy:
                    healthy = ", ".join(d.id for d in self.devices if d.healthy) or "none"
                    raise DeviceUnavailableError(
                        f"device {device.id} is out of rotation ({device.disabled_reason}); "
                        f"choose a healthy device ({healthy}) or restart the server",
                        "device",
                    )
                return device
        known = ", ".join(d.id for d in self.devices) or "none"
        raise UnknownDeviceError(
            f"device {requested!r} is not available; use one of: {known} (see GET /v1/devices)",
            "device",
        )


def _probe(device: cl.Device, context: cl.Context, queue: cl.CommandQueue) -> None:
    """Build and run a tiny kernel; raise ``cl.Error`` if the device cannot."""
    program = cl.Program(context, PROBE_SOURCE).build()
    data = np.arange(4, dtype=np.float32)
    buffer = cl.Buffer(context, cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR, hostbuf=data)
    program.probe(queue, (4,), None, buffer)
    cl.enqueue_copy(queue, data, buffer)
    if not np.array_equal(data, np.arange(4, dtype=np.float32) * 2):
        raise RuntimeError(f"probe kernel returned wrong values {data.tolist()}")


def _default_rank(device: Device) -> tuple[bool, int, int, str]:
    kind = device.cl_device.type
    if kind & cl.device_type.GPU:
        type_rank = 0
    elif kind & cl.device_type.ACCELERATOR:
        type_rank = 1
    else:
        type_rank = 2
    slug = device.id.split(":")[0]
    runtime_rank = dict(CPU_RUNTIME_RANK).get(slug, 5)
    # A simulator comes after every real device, whatever device type it reports.
    return (device.is_simulator, type_rank, runtime_rank, device.id)


def discover_devices(preferred: str | None = None, cache_dir: str | None = None) -> DeviceRegistry:
    """Find every OpenCL platform and device, probe each, and choose the default.

    ``preferred`` (the ``CLCONV_DEVICE`` setting) names the default device by id; an unknown id
    raises ``UnknownDeviceError``. Otherwise the default is a GPU, then an accelerator, then the
    fastest CPU runtime. ``cache_dir`` (the ``CLCONV_CACHE_DIR`` setting) is where program
    binaries are kept across restarts; ``None`` keeps them in memory only.
    """
    configure_icd_loader()
    store = _open_binary_store(cache_dir)
    started = time.perf_counter()
    devices: list[Device] = []
    skipped: list[dict[str, str]] = []
    try:
        platforms = cl.get_platforms()
    except cl.Error as error:
        logger.error("no OpenCL platform found: %s", error)
        platforms = []

    used_ids: set[str] = set()
    for platform in platforms:
        platform_name = str(platform.name).strip()
        try:
            cl_devices = platform.get_devices()
        except cl.Error as error:
            skipped.append({"platform": platform_name, "reason": f"get_devices failed: {error}"})
            logger.warning("skipping platform %s: get_devices failed: %s", platform_name, error)
            continue
        slug = platform_slug(platform_name)
        for index, cl_device in enumerate(cl_devices):
            device_id = f"{slug}:{index}"
            while device_id in used_ids:
                index += 1
                device_id = f"{slug}:{index}"
            label = f"{platform_name} / {str(cl_device.name).strip()}"
            try:
                context = cl.Context([cl_device])
                queue = cl.CommandQueue(
                    context, properties=cl.command_queue_properties.PROFILING_ENABLE
                )
                _probe(cl_device, context, queue)
            except (cl.Error, RuntimeError) as error:
                reason = str(error).strip().splitlines()[0][:300]
                skipped.append({"platform": platform_name, "device": label, "reason": reason})
                logger.warning("skipping device %s: probe kernel failed: %s", label, reason)
                continue
            used_ids.add(device_id)
            programs = ProgramCache(context, cl_device, store)
            device = Device(device_id, cl_device, platform, context, queue, programs)
            devices.append(device)
            logger.info(
                "found device %s: %s (%s, %s, driver %s)",
                device_id,
                label,
                device.type_name,
                "fp64" if device.fp64 else "no fp64",
                str(cl_device.driver_version).strip(),
            )

    default_id = _choose_default(devices, preferred)
    logger.info(
        "device discovery took %.2f s: %d usable, %d skipped, default %s",
        time.perf_counter() - started,
        len(devices),
        len(skipped),
        default_id,
    )
    return DeviceRegistry(devices, default_id, skipped)


def _open_binary_store(cache_dir: str | None) -> BinaryStore | None:
    """Open clconv's program binary store and point PoCL's kernel cache into the same folder.

    PoCL reads ``POCL_CACHE_DIR`` when the first OpenCL call of the process loads it, so this
    must run before that call. A ``POCL_CACHE_DIR`` set by the user is left unchanged.
    """
    if cache_dir is None:
        logger.info("program binary cache off: each process compiles its programs from source")
        return None
    folder = Path(cache_dir)
    store = BinaryStore.open(folder / "programs")
    if store is None:
        return None
    if os.environ.get("POCL_CACHE_DIR"):
        pocl_cache = os.environ["POCL_CACHE_DIR"]
    else:
        # PoCL's kernel cache stores each built program and the work-group function compiled
        # at a kernel's first launch with each local size. A restart on this folder skips both.
        pocl_cache = str(folder / "pocl")
        os.environ["POCL_CACHE_DIR"] = pocl_cache
    pocl_note = ""
    if os.environ.get("POCL_KERNEL_CACHE", "").strip() == "0":
        pocl_note = " (off: POCL_KERNEL_CACHE=0)"
    logger.info(
        "program binary cache %s contains %d binaries; PoCL kernel cache %s%s",
        store.folder,
        store.file_count(),
        pocl_cache,
        pocl_note,
    )
    return store


def _choose_default(devices: list[Device], preferred: str | None) -> str | None:
    if not devices:
        return None
    if preferred:
        chosen = next((d for d in devices if d.id == preferred), None)
        if chosen is None:
            known = ", ".join(d.id for d in devices)
            raise UnknownDeviceError(
                f"CLCONV_DEVICE {preferred!r} matches no usable device; use one of: {known}",
                "CLCONV_DEVICE",
            )
        reason = "chosen by CLCONV_DEVICE"
    else:
        chosen = min(devices, key=_default_rank)
        reason = "GPU, then accelerator, then fastest CPU runtime"
    chosen.is_default = True
    logger.info("default device %s (%s): %s", chosen.id, chosen.name, reason)
    return chosen.id
