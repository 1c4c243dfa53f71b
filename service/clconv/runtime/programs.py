"""Kernel sources and the per-device cache of built programs.

Sources live in the ``kernels/`` folder (installed as the ``clconv.kernels`` package data).
``common.cl`` is prepended to every kernel file. Shape and tuning constants are passed as ``-D``
build options, so each distinct set of options is one program, built once per device and kept
for the life of the process.

With a ``BinaryStore`` (the ``CLCONV_CACHE_DIR`` setting), each program's binary is also kept on
disk, so a restarted server loads it in a few milliseconds instead of compiling the source again
(hundreds of milliseconds per program on the CPU runtimes). The store is clconv's own, because
PyOpenCL's binary cache skips PoCL and PoCL's source cache still parses and links the program.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import pyopencl as cl

from clconv.errors import DeviceError

logger = logging.getLogger("clconv.runtime")

COMMON_SOURCE = "common.cl"
# Part of every key. Raise it when the file layout, or what a binary depends on, changes.
BINARY_FORMAT = 1
BINARY_MAGIC = b"clconv-program-binary\n"


@cache
def load_source(name: str) -> str:
    """Return ``common.cl`` followed by the kernel file ``name`` from the kernels package."""
    folder = resources.files("clconv.kernels")
    common = (folder / COMMON_SOURCE).read_text(encoding="utf-8")
    body = (folder / name).read_text(encoding="utf-8")
    return f"{common}\n#line 1\n{body}"


@cache
def source_sha256(name: str) -> str:
    """Return the SHA-256 of the full source of ``name`` (``common.cl`` included)."""
    return hashlib.sha256(load_source(name).encode("utf-8")).hexdigest()


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


@dataclass(frozen=True)
class BinaryKey:
    """Everything a program binary depends on. A binary is reused only when all fields match,
    so a new driver, runtime version, kernel source or build option means a fresh build."""

    device: str
    vendor: str
    platform: str
    platform_version: str
    driver_version: str
    device_version: str
    source: str
    source_sha256: str
    options: tuple[str, ...]
    format: int = BINARY_FORMAT

    @classmethod
    def for_program(cls, device: cl.Device, source: str, options: tuple[str, ...]) -> BinaryKey:
        platform = device.platform
        return cls(
            device=str(device.name).strip(),
            vendor=str(device.vendor).strip(),
            platform=str(platform.name).strip(),
            platform_version=str(platform.version).strip(),
            driver_version=str(device.driver_version).strip(),
            device_version=str(device.version).strip(),
            source=source,
            source_sha256=source_sha256(source),
            options=options,
        )

    def header(self) -> bytes:
        """Return the key as one line of canonical JSON, which is stored before the binary."""
        fields = asdict(self)
        fields["options"] = list(self.options)
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("utf-8")

    def digest(self) -> str:
        """Return the SHA-256 of the header, which names the key's file."""
        return hashlib.sha256(self.header()).hexdigest()

    def describe(self) -> str:
        """Return a short form for log lines: the file's digest, device, source and options."""
        return f"{self.digest()[:16]} ({self.device}, {self.source}, {' '.join(self.options)})"


class InvalidBinaryError(Exception):
    """A stored binary file is truncated, corrupt or belongs to another key."""


class BinaryStore:
    """Program binaries on disk, one file per ``BinaryKey`` under ``folder``.

    A file is the magic line, the key's JSON header line, the binary's SHA-256 line and the
    binary. It is written to a temporary file in the same folder and renamed into place, so
    readers, other processes included, see either no file or a complete one.

    NOTE: nothing evicts old files. The folder grows by one file per device and distinct set of
    build options (each new shape), and so does PoCL's kernel cache beside it.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def open(cls, folder: Path) -> BinaryStore | None:
        """Create ``folder`` (mode 0700) if needed and return a store for it, or log a warning
        and return ``None`` when it cannot be created or written."""
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not os.access(folder, os.W_OK | os.X_OK):
                raise PermissionError(f"no write permission on {folder}")
        except OSError as error:
            logger.warning(
                "program binary cache off: cannot use %s (%s); set CLCONV_CACHE_DIR to a "
                "writable folder, or to off",
                folder,
                error,
            )
            return None
        return cls(folder)

    def path(self, key: BinaryKey) -> Path:
        return self.folder / f"{key.digest()}.bin"

    def file_count(self) -> int:
        return sum(1 for _ in self.folder.glob("*.bin"))

    def load(self, key: BinaryKey) -> bytes | None:
        """Return the stored binary of ``key``, or ``None`` when there is no file.

        Raises ``InvalidBinaryError`` when the file does not hold a complete binary of ``key``.
        """
        try:
            content = self.path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise InvalidBinaryError(f"cannot read it: {error}") from error
        if not content.startswith(BINARY_MAGIC):
            raise InvalidBinaryError("it does not start with the clconv binary header")
        parts = content[len(BINARY_MAGIC) :].split(b"\n", 2)
        if len(parts) != 3:
            raise InvalidBinaryError("it is truncated")
        header, checksum, binary = parts
        if header != key.header():
            raise InvalidBinaryError("its key differs from the requested one")
        if hashlib.sha256(binary).hexdigest().encode("ascii") != checksum:
            raise InvalidBinaryError("its SHA-256 does not match the binary")
        return binary

    def save(self, key: BinaryKey, binary: bytes) -> None:
        """Write the binary of ``key`` atomically; log a warning and go on when that fails."""
        checksum = hashlib.sha256(binary).hexdigest().encode("ascii")
        content = BINARY_MAGIC + key.header() + b"\n" + checksum + b"\n" + binary
        target = self.path(key)
        try:
            # mkstemp creates the file with mode 0600.
            handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".bin")
            try:
                with os.fdopen(handle, "wb") as file:
                    file.write(content)
                os.replace(temporary, target)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as error:
            logger.warning("cannot store program binary %s: %s", key.describe(), error)

    def recent_headers(self, limit: int) -> list[dict[str, Any]]:
        """Return the key headers of up to ``limit`` stored binaries, most recently written
        first. Unreadable files are skipped, because ``load`` reports them when requested."""
        files = []
        for path in self.folder.glob("*.bin"):
            try:
                files.append((path.stat().st_mtime, path))
            except OSError:
                continue
        headers: list[dict[str, Any]] = []
        for _, path in sorted(files, reverse=True)[:limit]:
            try:
                with path.open("rb") as file:
                    magic = file.read(len(BINARY_MAGIC))
                    line = file.readline(1 << 16)
                if magic != BINARY_MAGIC:
                    continue
                header = json.loads(line)
            except (OSError, ValueError):
                continue
            if isinstance(header, dict):
                headers.append(header)
        return headers

    def discard(self, key: BinaryKey) -> None:
        try:
            self.path(key).unlink(missing_ok=True)
        except OSError as error:
            logger.warning("cannot remove program binary %s: %s", key.describe(), error)


class ProgramCache:
    """Built programs of one device, keyed by source file and build options.

    ``builds`` counts the programs this process created, ``hits`` the kernels served from them.
    Of the builds, ``source_builds`` compiled the OpenCL C source and ``disk_loads`` came from
    ``store``. ``disk_rejects`` counts stored binaries that were invalid or that the runtime
    rejected, each followed by a source build.
    """

    def __init__(
        self, context: cl.Context, device: cl.Device, store: BinaryStore | None = None
    ) -> None:
        self._context = context
        self._device = device
        self._store = store
        self._programs: dict[tuple[str, tuple[str, ...]], cl.Program] = {}
        self._lock = threading.Lock()
        self.builds = 0
        self.hits = 0
        self.source_builds = 0
        self.disk_loads = 0
        self.disk_rejects = 0

    def kernel(self, source: str, name: str, defines: dict[str, int | float | str]) -> cl.Kernel:
        """Return kernel ``name`` from ``source`` built with ``defines``; build it if needed."""
        options = tuple(format_options(defines))
        key = (source, options)
        with self._lock:
            program = self._programs.get(key)
            if program is None:
                program = self._load_or_build(source, options)
                self._programs[key] = program
                self.builds += 1
            else:
                self.hits += 1
        return cl.Kernel(program, name)

    def preload(self, limit: int, budget_s: float) -> int:
        """Load into memory the stored binaries of this device and of the current kernel
        sources, most recent first, at most ``limit`` of them and for at most ``budget_s``
        seconds. Run at start-up, before the server reports ready, so that the first request
        of a shape seen before a restart finds its programs built. Returns the count loaded."""
        if self._store is None:
            return 0
        started = time.perf_counter()
        loaded = 0
        for header in self._store.recent_headers(limit):
            if time.perf_counter() - started > budget_s:
                break
            source = header.get("source")
            options = header.get("options")
            if not isinstance(source, str) or not isinstance(options, list):
                continue
            try:
                key = BinaryKey.for_program(self._device, source, tuple(map(str, options)))
            except (OSError, ValueError):
                continue  # a kernel file this version no longer ships
            if json.loads(key.header()) != header:
                continue  # another device, driver or kernel source
            with self._lock:
                if (source, key.options) in self._programs:
                    continue
                program = self._load(key)
                if program is None:
                    continue
                self._programs[(source, key.options)] = program
                self.builds += 1
                self.disk_loads += 1
                loaded += 1
        return loaded

    def counts(self) -> dict[str, int]:
        """Return the counters of ``GET /v1/devices`` and ``/metrics``."""
        return {
            "built_from_source": self.source_builds,
            "loaded_from_disk": self.disk_loads,
            "rejected_from_disk": self.disk_rejects,
        }

    def _load_or_build(self, source: str, options: tuple[str, ...]) -> cl.Program:
        if self._store is None:
            program = self._build(source, list(options))
            self.source_builds += 1
            return program

        key = BinaryKey.for_program(self._device, source, options)
        loaded = self._load(key)
        if loaded is not None:
            self.disk_loads += 1
            return loaded
        program = self._build(source, list(options))
        self.source_builds += 1
        # PoCL 3.1 compiles once more when asked for the binary: about 100 ms per program on a
        # 2-core AMD EPYC, added to the request that builds a new shape.
        self._store.save(key, program.binaries[0])
        return program

    def _load(self, key: BinaryKey) -> cl.Program | None:
        """Return the program built from the stored binary of ``key``, or ``None`` after a miss
        or a rejected binary (whose file is then removed)."""
        assert self._store is not None
        started = time.perf_counter()
        try:
            binary = self._store.load(key)
            if binary is None:
                logger.debug("program binary cache miss: %s", key.describe())
                return None
            program: cl.Program = cl.Program(self._context, [self._device], [binary]).build(
                options=list(key.options)
            )
        except (InvalidBinaryError, cl.Error) as error:
            self.disk_rejects += 1
            reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else "no log"
            logger.warning(
                "rejected stored program binary %s, building from source instead: %s",
                key.describe(),
                reason,
            )
            self._store.discard(key)
            return None
        logger.debug(
            "program binary cache hit: %s loaded in %.3f s",
            key.describe(),
            time.perf_counter() - started,
        )
        return program

    def _build(self, source: str, options: list[str]) -> cl.Program:
        started = time.perf_counter()
        try:
            unbuilt = cl.Program(self._context, load_source(source))
            program: cl.Program
            if self._store is None:
                program = unbuilt.build(options=options)
            else:
                # clconv's store replaces PyOpenCL's binary cache, which would keep a second
                # copy of every binary; ``cache_dir=False`` is how PyOpenCL turns it off.
                program = unbuilt.build(options=options, cache_dir=False)  # type: ignore[arg-type]
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
