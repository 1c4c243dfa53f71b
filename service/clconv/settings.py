"""Server settings, read once from ``CLCONV_*`` environment variables at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Configuration of one clconv process.

    Sizes are in bytes. ``device`` is a device id from ``GET /v1/devices`` (``intel:0``) or
    ``None`` for the automatic choice (GPU, then accelerator, then the fastest CPU runtime).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    device: str | None = None
    max_body_bytes: int = 512 * MIB
    max_output_bytes: int = 1024 * MIB
    max_work_bytes: int = 2048 * MIB
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``CLCONV_DEVICE``, ``CLCONV_MAX_BODY_BYTES``,
        ``CLCONV_MAX_OUTPUT_BYTES``, ``CLCONV_MAX_WORK_BYTES`` and ``CLCONV_LOG_LEVEL``."""
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            device=env.get("CLCONV_DEVICE") or None,
            max_body_bytes=_read_bytes(env, "CLCONV_MAX_BODY_BYTES", defaults.max_body_bytes),
            max_output_bytes=_read_bytes(env, "CLCONV_MAX_OUTPUT_BYTES", defaults.max_output_bytes),
            max_work_bytes=_read_bytes(env, "CLCONV_MAX_WORK_BYTES", defaults.max_work_bytes),
            log_level=env.get("CLCONV_LOG_LEVEL", defaults.log_level).upper(),
        )


def _read_bytes(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number of bytes, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value
