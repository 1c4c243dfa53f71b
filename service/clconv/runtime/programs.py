"""Kernel sources and the per-device cache of built programs.

Sources live in the ``kernels/`` folder (installed as the ``clconv.kernels`` package data).
``common.cl`` is prepended to every kernel file. Shape and tuning constants are passed as ``-D``
build options, so each distinct set of options is one program, built once per device and kept
for the life of the process.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import cache
from importlib import resources

import pyopencl as cl

from clconv.errors import DeviceError

logger = logging.getLogger("clconv.runtime")

COMMON_SOURCE = "common.cl"


@cache
def load_source(name: str) -> str:
    """Return ``common.cl`` followed by the kernel file ``name`` from the kernels package."""
    folder = resources.files("clconv.kernels")
    common = (folder / COMMON_SOURCE).read_text(encoding="utf-8")
    body = (folder / name).read_text(encoding="utf-8")
    return f"{common}\n#line 1\n{body}"


def format_options(defines: dict[str, int | float | str]) -> list[str]:
    """Turn ``{"KH": 3}`` into sorted ``-D KH=3`` options, so equal sets hit the cache."""
    options: list[str] = []
    for key in sorted(defines):
        value = defines[key]
        if isinstance(value, float):
            text = repr(value)
            if "e" not in text and "." not in text and "n" not in text:
                text += ".0"
        else:
            text = str(value)
        options.append(f"-D{key}={text}")
    return options


class ProgramCache:
    """Built programs of one device, keyed by source file and build options."""

    def __init__(self, context: cl.Context, device: cl.Device) -> None:
        self._context = context
        self._device = device
        self._programs: dict[tuple[str, tuple[str, ...]], cl.Program] = {}
        self._lock = threading.Lock()
        self.builds = 0
        self.hits = 0

    def kernel(self, source: str, name: str, defines: dict[str, int | float | str]) -> cl.Kernel:
        """Return kernel ``name`` from ``source`` built with ``defines``; build it if needed."""
        options = tuple(format_options(defines))
        key = (source, options)
        with self._lock:
            program = self._programs.get(key)
            if program is None:
                program = self._build(source, list(options))
                self._programs[key] = program
                self.builds += 1
            else:
                self.hits += 1
        return cl.Kernel(program, name)

    def _build(self, source: str, options: list[str]) -> cl.Program:
        started = time.perf_counter()
        try:
            program: cl.Program = cl.Program(self._context, load_source(source)).build(
                options=options
            )
        except cl.Error as error:
            log = str(error)
            logger.error(
                "build of %s failed on %s with options %s: %s",
                source,
                self._device.name,
                " ".join(options),
                log,
            )
            raise DeviceError(
                f"building kernel {source} failed on device {self._device.name.strip()} with "
                f"options {' '.join(options)}: {log[:2000]}",
                None,
            ) from error
        logger.debug(
            "built %s on %s in %.3f s", source, self._device.name, time.perf_counter() - started
        )
        return program
