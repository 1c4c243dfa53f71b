"""Every kernel file run on small shapes under the Oclgrind simulator, which reports invalid
memory accesses and data races on stderr (its exit status stays 0, so the log is parsed).

Oclgrind comes from Debian's ``oclgrind`` package, which ships the ICD library but no
``/etc/OpenCL/vendors`` entry, so the test writes its own vendors folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
OCLGRIND_ICD = Path("/usr/lib/oclgrind/liboclgrind-rt-icd.so")
KERNEL_FILES = sorted(
    path.name for path in (REPO_ROOT / "kernels").glob("*.cl") if path.name != "common.cl"
)
# Lines Oclgrind starts a report with; "Undefined external function" means a kernel could not
# be created at all.
ERROR_MARKERS = (
    "Invalid read",
    "Invalid write",
    "Invalid access",
    "data race",
    "Undefined external function",
    "Oclgrind - OpenCL runtime error detected",
    "Work-group divergence",
)
OUT_OF_BOUNDS_PROGRAM = """
import pyopencl as cl, numpy as np
context = cl.create_some_context(interactive=False)
queue = cl.CommandQueue(context)
program = cl.Program(context, "__kernel void k(__global float* x) { x[get_global_id(0) + 4] = 1; }")
buffer = cl.Buffer(context, cl.mem_flags.READ_WRITE, size=16)
program.build().k(queue, (4,), None, buffer)
queue.finish()
"""


@pytest.fixture(scope="module")
def oclgrind_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if not OCLGRIND_ICD.exists():
        pytest.fail(
            f"Oclgrind is not installed ({OCLGRIND_ICD} is missing); .ci/run installs it "
            "(apt-get install oclgrind)"
        )
    vendors = tmp_path_factory.mktemp("oclgrind-vendors")
    (vendors / "oclgrind.icd").write_text(f"{OCLGRIND_ICD}\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("CLCONV_")}
    env.update({"OCL_ICD_VENDORS": str(vendors), "OCLGRIND_DATA_RACES": "1"})
    return env


def oclgrind_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if any(m in line for m in ERROR_MARKERS)]


def test_oclgrind_reports_out_of_bounds(oclgrind_env: dict[str, str]) -> None:
    run = subprocess.run(
        [sys.executable, "-c", OUT_OF_BOUNDS_PROGRAM],
        env=oclgrind_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert any("Invalid write" in line for line in oclgrind_errors(run.stderr)), run.stderr


def test_kernels_clean_under_oclgrind(oclgrind_env: dict[str, str]) -> None:
    run = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "oclgrind_cases.py")],
        env=oclgrind_env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )
    assert run.returncode == 0, run.stderr
    assert oclgrind_errors(run.stderr) == [], run.stderr[:5000]
    report = json.loads(run.stdout)
    assert report["sources"] == KERNEL_FILES
    for case in report["cases"]:
        assert case["device"].startswith("oclgrind:"), case
        assert case["finite"], case
