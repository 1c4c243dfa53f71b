"""The tuning database: measured conv2d winners per device and shape class, as JSON files.

Each device has one file in the tuning folder (``CLCONV_TUNING_DIR``), named after its vendor,
name and a hash of its identity (name, vendor, platform version, driver version). The file maps
a shape class key (``ShapeClass.key``) to the winner of a tuning pass, the time of every
candidate measured, the date and the clconv version. A lookup walks a fallback chain:

1. ``tuned``: an entry of this exact device and driver;
2. ``tuned-architecture``: an entry of a device with the same vendor and name, any driver or
   platform version;
3. ``vendor-default``: an entry of any device of the same vendor and device type;

and the caller falls back to ``rule_choice`` when none has an applicable winner. Within a level
the most recently measured entry wins. A winner that is not among the stage's applicable
algorithms (a renamed or narrowed kernel) is skipped, and the chain goes on.

Files are written atomically (a temporary file in the same folder, then ``os.replace``), so a
reader sees the old file or the new one. The database rereads files whose modification time
changed, at most once per ``RELOAD_INTERVAL_S``, so a running server picks up ``clconv tune``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clconv.core.stages import ConvStage
from clconv.runtime.devices import Device

logger = logging.getLogger("clconv.tuning")

FORMAT = "clconv-tuning/1"
# The levels of the fallback chain, most specific first.
LEVEL_EXACT = "tuned"
LEVEL_ARCHITECTURE = "tuned-architecture"
LEVEL_VENDOR = "vendor-default"
LEVELS = (LEVEL_EXACT, LEVEL_ARCHITECTURE, LEVEL_VENDOR)
# A lookup relists the folder at most this often, so most lookups make no file system calls.
RELOAD_INTERVAL_S = 1.0


def power_of_two_bucket(value: int) -> int:
    """Round ``value`` up to a power of two (0 and 1 give 1): 3 -> 4, 64 -> 64, 65 -> 128."""
    return 1 << (max(value, 1) - 1).bit_length()


@dataclass(frozen=True)
class ShapeClass:
    """The features of a conv2d stage that decide its fastest algorithm.

    Channel counts per group, the output size and the batch are rounded up to powers of two, so
    that nearby shapes share a measurement. Kernel size, stride, dilation, the kind of
    grouping, the dtype and whether the stage pads are kept exactly.
    """

    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    kind: str  # "regular", "grouped" or "depthwise", with "+channel_map" for a permuted pass
    channels_in: int  # C / groups, bucketed
    channels_out: int  # K / groups, bucketed
    output: tuple[int, int]  # output height and width, each bucketed
    batch: int  # bucketed
    dtype: str
    padded: bool

    @property
    def key(self) -> str:
        """The class as one string, such as
        ``k3x3 s1x1 d1x1 regular cin64 cout64 out64x64 n1 float32 pad``."""
        return (
            f"k{self.kernel[0]}x{self.kernel[1]} s{self.stride[0]}x{self.stride[1]} "
            f"d{self.dilation[0]}x{self.dilation[1]} {self.kind} cin{self.channels_in} "
            f"cout{self.channels_out} out{self.output[0]}x{self.output[1]} n{self.batch} "
            f"{self.dtype} {'pad' if self.padded else 'nopad'}"
        )


def shape_class(stage: ConvStage, dtype: str) -> ShapeClass:
    """Classify ``stage`` computed in ``dtype``."""
    n, c, _, _ = stage.in_shape
    k, cg, kh, kw = stage.weight_shape
    _, _, oh, ow = stage.out_shape
    if stage.groups == 1:
        kind = "regular"
    elif stage.groups == c and cg == 1:
        kind = "depthwise"
    else:
        kind = "grouped"
    if stage.channel_map is not None:
        kind += "+channel_map"
    return ShapeClass(
        kernel=(kh, kw),
        stride=stage.stride,
        dilation=stage.dilation,
        kind=kind,
        channels_in=power_of_two_bucket(cg),
        channels_out=power_of_two_bucket(k // stage.groups),
        output=(power_of_two_bucket(oh), power_of_two_bucket(ow)),
        batch=power_of_two_bucket(n),
        dtype=dtype,
        padded=stage.pads.any,
    )


@dataclass(frozen=True)
class DeviceKey:
    """The identity of a device across processes: ``Device.describe()``'s name, vendor,
    platform version and driver version, plus the type for the vendor-default level."""

    name: str
    vendor: str
    platform_version: str
    driver_version: str
    type: str

    @property
    def identity(self) -> tuple[str, str, str, str]:
        return (self.name, self.vendor, self.platform_version, self.driver_version)

    @property
    def architecture(self) -> tuple[str, str]:
        return (self.vendor, self.name)

    @property
    def vendor_class(self) -> tuple[str, str]:
        return (self.vendor, self.type)

    def file_name(self) -> str:
        """``<vendor>_<name>_<hash of the identity>.json``, readable and unique per driver."""
        digest = hashlib.sha256("\0".join(self.identity).encode()).hexdigest()[:12]
        return f"{_slug(self.vendor)}_{_slug(self.name)}_{digest}.json"

    @classmethod
    def of(cls, device: Device) -> DeviceKey:
        described = device.describe()
        return cls(
            name=described["name"],
            vendor=described["vendor"],
            platform_version=described["platform_version"],
            driver_version=described["driver_version"],
            type=described["type"],
        )

    @classmethod
    def from_json(cls, value: Any) -> DeviceKey:
        if not isinstance(value, dict):
            raise ValueError(f"device must be an object, got {type(value).__name__}")
        fields = ("name", "vendor", "platform_version", "driver_version", "type")
        missing = [name for name in fields if not isinstance(value.get(name), str)]
        if missing:
            raise ValueError(f"device is missing the string field {missing[0]!r}")
        return cls(*(value[name] for name in fields))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "device"


@dataclass(frozen=True)
class Found:
    """A database hit: the stored winner, the fallback level it came from and its file."""

    winner: str
    level: str
    path: Path


@dataclass
class _DeviceFile:
    device: DeviceKey
    entries: dict[str, dict[str, Any]]
    mtime_ns: int


class TuningDatabase:
    """The tuning files of one folder, cached in memory; safe to use from several threads."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._files: dict[Path, _DeviceFile] = {}
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._invalid: set[tuple[Path, int]] = set()

    def lookup(self, device: DeviceKey, key: str, applicable: list[str]) -> Found | None:
        """Find the stored winner for shape class ``key`` on ``device`` along the fallback
        chain, skipping winners not in ``applicable``. Return None when no level has one."""
        self._refresh()
        with self._lock:
            files = list(self._files.items())
        for level in LEVELS:
            hits: list[tuple[str, str, Path]] = []
            for path, stored in files:
                if not _matches(level, stored.device, device):
                    continue
                entry = stored.entries.get(key)
                if entry is None:
                    continue
                winner = entry.get("winner")
                if winner not in applicable:
                    logger.debug(
                        "ignoring stored winner %r of %s in %s: not applicable (%s)",
                        winner,
                        key,
                        path,
                        ", ".join(applicable),
                    )
                    continue
                hits.append((str(entry.get("measured_at", "")), str(winner), path))
            if hits:
                _, winner, path = max(hits)
                return Found(winner, level, path)
        return None

    def record(self, device: DeviceKey, key: str, entry: dict[str, Any]) -> Path:
        """Store ``entry`` for shape class ``key`` in ``device``'s file and write the file
        atomically; return its path. The file is reread first, so entries that other
        processes wrote meanwhile are kept.

        NOTE: there is no file lock, so when two processes write one device's file at the same
        moment, the entry of the first can be lost.
        """
        path = self.folder / device.file_name()
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            entries: dict[str, dict[str, Any]] = {}
            if path.exists():
                try:
                    entries = _read_file(path).entries
                except (OSError, ValueError) as error:
                    logger.warning("replacing unreadable tuning file %s: %s", path, error)
            entries[key] = entry
            document = {"format": FORMAT, "device": asdict(device), "entries": entries}
            write_json_atomically(path, document)
            self._files[path] = _DeviceFile(device, entries, path.stat().st_mtime_ns)
        return path

    def entries(self, device: DeviceKey) -> dict[str, dict[str, Any]]:
        """Return a copy of every entry stored for this exact device."""
        self._refresh(force=True)
        with self._lock:
            stored = self._files.get(self.folder / device.file_name())
            return dict(stored.entries) if stored is not None else {}

    def _refresh(self, force: bool = False) -> None:
        """Reread files that appeared or changed since the last check; drop vanished ones."""
        now = time.monotonic()
        with self._lock:
            if not force and now - self._checked_at < RELOAD_INTERVAL_S:
                return
            self._checked_at = now
            try:
                paths = sorted(self.folder.glob("*.json"))
            except OSError as error:
                logger.warning("cannot list the tuning folder %s: %s", self.folder, error)
                return
            for removed in set(self._files) - set(paths):
                del self._files[removed]
            for path in paths:
                self._reload(path)

    def _reload(self, path: Path) -> None:
        try:
            mtime_ns = path.stat().st_mtime_ns
        except OSError:
            self._files.pop(path, None)
            return
        stored = self._files.get(path)
        if stored is not None and stored.mtime_ns == mtime_ns:
            return
        try:
            self._files[path] = _read_file(path)
        except (OSError, ValueError) as error:
            self._files.pop(path, None)
            # Log each broken version of a file once, not on every reload.
            if (path, mtime_ns) not in self._invalid:
                self._invalid.add((path, mtime_ns))
                logger.warning("ignoring invalid tuning file %s: %s", path, error)


def _matches(level: str, stored: DeviceKey, device: DeviceKey) -> bool:
    """Return whether an entry of ``stored`` serves ``device`` at ``level`` and no earlier
    level."""
    if level == LEVEL_EXACT:
        return stored.identity == device.identity
    if level == LEVEL_ARCHITECTURE:
        return stored.architecture == device.architecture and stored.identity != device.identity
    return stored.vendor_class == device.vendor_class and stored.architecture != (
        device.architecture
    )


def _read_file(path: Path) -> _DeviceFile:
    """Parse one tuning file; raise ``ValueError`` when it is not in ``FORMAT``."""
    mtime_ns = path.stat().st_mtime_ns
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON: {error}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"the format field must be {FORMAT!r}")
    device = DeviceKey.from_json(document.get("device"))
    entries = document.get("entries")
    if not isinstance(entries, dict) or not all(isinstance(e, dict) for e in entries.values()):
        raise ValueError("entries must be an object of objects keyed by shape class")
    return _DeviceFile(device, entries, mtime_ns)


def write_json_atomically(path: Path, document: Any) -> None:
    """Write ``document`` as JSON to a temporary file beside ``path``, flush it to disk and
    rename it over ``path``, so that readers never see a partial file."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(document, stream, indent=2, sort_keys=True)
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
