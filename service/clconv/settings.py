"""Server settings, read once from ``CLCONV_*`` environment variables at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024
LOG_FORMATS = ("text", "json")
# Values of CLCONV_CACHE_DIR that switch the on-disk program cache off.
CACHE_OFF_VALUES = ("off", "0", "false", "no", "none")
TUNE_MODES = ("off", "lazy")
# CLCONV_TUNING_DIR values that switch the tuning database off.
TUNING_OFF_VALUES = ("off", "none", "0", "false", "no")


@dataclass(frozen=True)
class Settings:
    """Configuration of one clconv process.

    Sizes are in bytes. ``device`` is a device id from ``GET /v1/devices`` (``intel:0``) or
    ``None`` for the automatic choice (GPU, then accelerator, then the fastest CPU runtime).
    ``cache_dir`` is the folder of compiled program binaries kept across restarts, or ``None``
    for no such cache: the default here, so that code building ``Settings()`` itself (the
    benchmarks) measures real builds. ``from_env`` defaults it to ``default_cache_dir()``.
    ``tuning_dir`` is the tuning database's folder, ``None`` for no database; ``from_env``
    defaults it to the user's cache folder, while ``Settings()`` leaves it off so that tests
    and embedded engines write nothing.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    device: str | None = None
    max_body_bytes: int = 512 * MIB
    max_output_bytes: int = 1024 * MIB
    max_work_bytes: int = 2048 * MIB
    log_level: str = "INFO"
    log_format: str = "text"
    max_tensor_elements: int = 2**28
    max_kernel_size: int = 64
    device_memory_fraction: float = 0.5
    max_queued: int = 16
    max_inflight_bytes: int = 2048 * MIB
    request_timeout_s: float = 60.0
    api_keys: tuple[str, ...] = ()
    max_device_failures: int = 3
    warmup: bool = True
    cache_dir: str | None = None
    tuning_dir: Path | None = None
    tune: str = "off"
    tune_budget_s: float = 10.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from the ``CLCONV_*`` variables named after each field in capitals
        (``CLCONV_MAX_BODY_BYTES`` sets ``max_body_bytes``); ``CLCONV_API_KEYS`` is a
        comma-separated list. An invalid value raises ``ValueError`` naming the variable."""
        env = os.environ if environ is None else environ
        defaults = cls()
        log_format = env.get("CLCONV_LOG_FORMAT", defaults.log_format).strip().lower()
        if log_format not in LOG_FORMATS:
            raise ValueError(
                f"CLCONV_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}"
            )
        keys = tuple(key.strip() for key in env.get("CLCONV_API_KEYS", "").split(","))
        tune = env.get("CLCONV_TUNE", defaults.tune).strip().lower() or defaults.tune
        if tune not in TUNE_MODES:
            raise ValueError(f"CLCONV_TUNE must be one of {', '.join(TUNE_MODES)}, got {tune!r}")
        return cls(
            device=env.get("CLCONV_DEVICE") or None,
            max_body_bytes=_read_int(env, "CLCONV_MAX_BODY_BYTES", defaults.max_body_bytes),
            max_output_bytes=_read_int(env, "CLCONV_MAX_OUTPUT_BYTES", defaults.max_output_bytes),
            max_work_bytes=_read_int(env, "CLCONV_MAX_WORK_BYTES", defaults.max_work_bytes),
            log_level=env.get("CLCONV_LOG_LEVEL", defaults.log_level).upper(),
            log_format=log_format,
            max_tensor_elements=_read_int(
                env, "CLCONV_MAX_TENSOR_ELEMENTS", defaults.max_tensor_elements
            ),
            max_kernel_size=_read_int(env, "CLCONV_MAX_KERNEL_SIZE", defaults.max_kernel_size),
            device_memory_fraction=_read_fraction(
                env, "CLCONV_DEVICE_MEMORY_FRACTION", defaults.device_memory_fraction
            ),
            max_queued=_read_int(env, "CLCONV_MAX_QUEUED", defaults.max_queued),
            max_inflight_bytes=_read_int(
                env, "CLCONV_MAX_INFLIGHT_BYTES", defaults.max_inflight_bytes
            ),
            request_timeout_s=_read_seconds(
                env, "CLCONV_REQUEST_TIMEOUT_S", defaults.request_timeout_s
            ),
            api_keys=tuple(key for key in keys if key),
            max_device_failures=_read_int(
                env, "CLCONV_MAX_DEVICE_FAILURES", defaults.max_device_failures
            ),
            warmup=_read_flag(env, "CLCONV_WARMUP", defaults.warmup),
            cache_dir=_read_cache_dir(env),
            tuning_dir=read_tuning_dir(env),
            tune=tune,
            tune_budget_s=_read_seconds(env, "CLCONV_TUNE_BUDGET_S", defaults.tune_budget_s),
        )


def default_cache_dir(env: Mapping[str, str]) -> str:
    """Return ``$XDG_CACHE_HOME/clconv``, or ``~/.cache/clconv`` when that variable is unset
    or relative (the XDG base directory specification ignores relative paths)."""
    xdg = env.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return str(base / "clconv")


def _read_cache_dir(env: Mapping[str, str]) -> str | None:
    raw = env.get("CLCONV_CACHE_DIR", "").strip()
    if raw.lower() in CACHE_OFF_VALUES:
        return None
    if raw == "":
        return default_cache_dir(env)
    return str(Path(raw).expanduser())


def read_tuning_dir(env: Mapping[str, str]) -> Path | None:
    """Return the folder ``CLCONV_TUNING_DIR`` names. Unset or empty means
    ``$XDG_CACHE_HOME/clconv/tuning`` (else ``~/.cache/clconv/tuning``), and ``off`` means no
    tuning database. Without ``XDG_CACHE_HOME`` and a home folder the database is off too."""
    raw = env.get("CLCONV_TUNING_DIR", "").strip()
    if raw.lower() in TUNING_OFF_VALUES:
        return None
    if raw:
        return Path(raw).expanduser()
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]) / "clconv" / "tuning"
    try:
        home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    except RuntimeError:
        return None
    return home / ".cache" / "clconv" / "tuning"


def _read_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def _read_float(env: Mapping[str, str], name: str, default: float, unit: str) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be {unit}, got {raw!r}") from None
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {raw!r}")
    return value


def _read_seconds(env: Mapping[str, str], name: str, default: float) -> float:
    return _read_float(env, name, default, "a number of seconds")


def _read_fraction(env: Mapping[str, str], name: str, default: float) -> float:
    value = _read_float(env, name, default, "a fraction such as 0.5")
    if value > 1:
        raise ValueError(f"{name} must be in (0, 1], got {value}")
    return value


def _read_flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be 1 or 0 (true or false), got {raw!r}")
