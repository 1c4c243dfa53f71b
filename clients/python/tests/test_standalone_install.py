"""The package installs into a fresh virtual environment on its own and imports there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_installs_into_fresh_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    # pip reads the machine's pip configuration (index URLs, find-links). Short timeouts and no
    # retries let an offline machine fall through to local indexes quickly instead of stalling.
    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--retries",
            "0",
            "--timeout",
            "10",
            str(PACKAGE_ROOT),
        ],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stdout + install.stderr

    probe = (
        "import clconv_client, httpx, numpy;"
        "from importlib.metadata import requires;"
        "names = sorted(r.split('>')[0] for r in requires('clconv-client'));"
        "print(clconv_client.__version__, names)"
    )
    imported = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.split() == ["0.1.0", "['httpx',", "'numpy']"]

    typed = venv.glob("lib/python*/site-packages/clconv_client/py.typed")
    assert list(typed), "py.typed is missing from the installed package"
