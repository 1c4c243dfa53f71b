"""Register the OpenCL runtimes that pip installs with the ICD loader.

The ICD loader bundled with PyOpenCL's wheels (ocl-icd) reads ``OCL_ICD_VENDORS`` once, when
the first OpenCL call enumerates platforms. Intel's CPU runtime wheel (``intel-opencl-rt``)
ships an ``.icd`` file whose path is a build-time placeholder, so the loader cannot find it. This
module writes a vendors folder that names the real ``libintelocl.so`` (and PoCL's wheel library
where that is installed), copies the system's own ``/etc/OpenCL/vendors`` entries beside it
(``OCL_ICD_VENDORS`` replaces that folder, it does not add to it), and points the variable there.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

logger = logging.getLogger("clconv.runtime")

SYSTEM_VENDORS = Path("/etc/OpenCL/vendors")


@dataclass
class IcdSetup:
    """Result of ``configure_icd_loader``: the vendors folder and the entries written to it."""

    vendors_dir: str | None
    entries: dict[str, str] = field(default_factory=dict)
    user_override: bool = False


def _find_distribution_file(distribution: str, filename: str) -> Path | None:
    """Return the installed path of ``filename`` from a pip distribution, if present."""
    try:
        files = metadata.files(distribution) or []
    except metadata.PackageNotFoundError:
        return None
    for entry in files:
        if entry.name == filename:
            path = Path(str(entry.locate())).resolve()
            if path.exists():
                return path
    return None


def _find_intel_cpu_runtime() -> Path | None:
    found = _find_distribution_file("intel-opencl-rt", "libintelocl.so")
    if found is not None:
        return found
    candidate = Path(sys.prefix) / "lib" / "libintelocl.so"
    return candidate if candidate.exists() else None


def _find_pocl_wheel_runtime() -> Path | None:
    # NOTE: checked against the x86-64 wheel's file list only; the ARM default path that uses
    # this wheel has not run on an ARM machine.
    try:
        files = metadata.files("pocl-binary-distribution") or []
    except metadata.PackageNotFoundError:
        return None
    for entry in files:
        # The wheel (3.0) ships pyopencl/.libs/libpocl-<hash>.so beside its own pocl.icd.
        if entry.name.startswith("libpocl") and ".so" in entry.name:
            path = Path(str(entry.locate())).resolve()
            if path.exists():
                return path
    return None


def configure_icd_loader(cache_dir: Path | None = None) -> IcdSetup:
    """Point ``OCL_ICD_VENDORS`` at a folder naming every runtime we can find.

    Call once at start-up, before the first OpenCL call in the process. A user-set
    ``OCL_ICD_VENDORS`` is respected and left unchanged.
    """
    if os.environ.get("OCL_ICD_VENDORS"):
        logger.info(
            "OCL_ICD_VENDORS is set to %s by the user; using it unchanged",
            os.environ["OCL_ICD_VENDORS"],
        )
        return IcdSetup(os.environ["OCL_ICD_VENDORS"], user_override=True)

    entries: dict[str, str] = {}
    intel = _find_intel_cpu_runtime()
    if intel is not None:
        entries["clconv-intel-cpu.icd"] = str(intel)
    else:
        logger.info("Intel CPU OpenCL runtime (intel-opencl-rt) is not installed; skipping it")
    pocl = _find_pocl_wheel_runtime()
    if pocl is not None:
        entries["clconv-pocl-wheel.icd"] = str(pocl)

    if SYSTEM_VENDORS.is_dir():
        for icd in sorted(SYSTEM_VENDORS.glob("*.icd")):
            try:
                entries[icd.name] = icd.read_text().strip()
            except OSError as error:
                logger.warning("cannot read system ICD file %s: %s", icd, error)

    if not entries:
        logger.warning("no OpenCL runtime found: install intel-opencl-rt or a system ICD")
        return IcdSetup(None)

    base = cache_dir or Path(tempfile.gettempdir()) / f"clconv-{os.getuid()}"
    vendors = base / "icd-vendors"
    vendors.mkdir(parents=True, exist_ok=True)
    for stale in vendors.glob("*.icd"):
        if stale.name not in entries:
            stale.unlink()
    for name, library in entries.items():
        (vendors / name).write_text(library + "\n")
    # The loader reads this variable itself; it must be set before PyOpenCL's first call.
    os.environ["OCL_ICD_VENDORS"] = str(vendors)
    logger.info("ICD vendors folder %s lists %s", vendors, ", ".join(entries.values()))
    return IcdSetup(str(vendors), entries)
