"""The on-disk program binary cache (``CLCONV_CACHE_DIR``) across real server restarts.

Each test starts ``clconv serve`` processes on one temporary cache folder and reads the program
counters of ``GET /v1/devices`` and the server log. Warm-up is off (``tests/servers.py``), so
only the test's own requests build programs. Speed is measured by ``bench/first_request.py``,
not here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from clconv.settings import Settings
from servers import Server, running_server
from support import tensor_from_json, tensor_json


def request_bodies(device_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Return a padded conv2d (two programs: pad and conv) and a conv_transpose2d request."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 3, 11, 9)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    wt = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    return [
        (
            "conv2d",
            {
                "input": tensor_json(x),
                "weight": tensor_json(w),
                "padding": 1,
                "padding_mode": "reflect",
                "device": device_id,
            },
        ),
        (
            "conv_transpose2d",
            {"input": tensor_json(x), "weight": tensor_json(wt), "stride": 2, "device": device_id},
        ),
    ]


def device_ids(server: Server) -> list[str]:
    """Return every device the server lists except the Oclgrind simulator."""
    listing = httpx.get(f"{server.url}/v1/devices", timeout=30).json()
    return [d["id"] for d in listing["devices"] if "oclgrind" not in d["platform"].lower()]


def program_counts(server: Server) -> dict[str, dict[str, int]]:
    listing = httpx.get(f"{server.url}/v1/devices", timeout=30).json()
    return {device["id"]: device["programs"] for device in listing["devices"]}


def run_requests(server: Server, devices: list[str]) -> dict[tuple[str, str], np.ndarray]:
    """Send every request body on every device; return the outputs by (device, operation)."""
    outputs = {}
    with httpx.Client(base_url=server.url, timeout=300) as client:
        for device_id in devices:
            for op, body in request_bodies(device_id):
                response = client.post(f"/v1/{op}", json=body)
                assert response.status_code == 200, response.text
                outputs[(device_id, op)] = tensor_from_json(response.json()["output"])
    return outputs


def corrupt(path: Path) -> None:
    """Flip one byte near the end of the file, inside the stored binary."""
    content = bytearray(path.read_bytes())
    content[-16] ^= 0xFF
    path.write_bytes(bytes(content))


def test_restart_loads_programs_from_disk(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {"CLCONV_CACHE_DIR": str(cache), "CLCONV_LOG_LEVEL": "DEBUG"}
    with running_server(env, tmp_path) as server:
        devices = device_ids(server)
        first = run_requests(server, devices)
        cold = program_counts(server)

    binaries = sorted((cache / "programs").glob("*.bin"))
    assert binaries, "the first server stored no program binary"
    assert (cache / "programs").stat().st_mode & 0o777 == 0o700
    for path in binaries:
        assert path.stat().st_mode & 0o777 == 0o600, path
    for device_id in devices:
        assert cold[device_id]["built_from_source"] >= 2, cold[device_id]
        assert cold[device_id]["loaded_from_disk"] == 0, cold[device_id]
    if any(d.startswith("pocl:") for d in devices) and not os.environ.get("POCL_CACHE_DIR"):
        assert any((cache / "pocl").rglob("*")), "PoCL's kernel cache is not under the folder"

    with running_server(env, tmp_path) as server:
        second = run_requests(server, devices)
        warm = program_counts(server)
        metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
        log = server.log()

    for device_id in devices:
        assert warm[device_id]["loaded_from_disk"] == cold[device_id]["built_from_source"]
        assert warm[device_id]["built_from_source"] == 0, warm[device_id]
        assert warm[device_id]["rejected_from_disk"] == 0, warm[device_id]
        loaded = float(warm[device_id]["loaded_from_disk"])
        assert f'clconv_programs_total{{device="{device_id}",origin="disk"}} {loaded}' in metrics
        assert f'clconv_programs_total{{device="{device_id}",origin="source"}} 0.0' in metrics
    assert "program binary cache hit" in log
    assert "program binary cache miss" not in log
    assert second.keys() == first.keys()
    for key, output in first.items():
        np.testing.assert_array_equal(second[key], output, err_msg=str(key))


def test_warm_up_preloads_stored_programs(tmp_path: Path) -> None:
    """With warm-up on, a restarted server loads the stored binaries before it reports ready,
    so the requests it served before the restart find their programs built."""
    cache = tmp_path / "cache"
    env = {"CLCONV_CACHE_DIR": str(cache)}
    with running_server(env, tmp_path) as server:
        devices = device_ids(server)
        first = run_requests(server, devices)
        cold = program_counts(server)

    with running_server(env | {"CLCONV_WARMUP": "1"}, tmp_path) as server:
        ready = program_counts(server)
        second = run_requests(server, devices)
        after = program_counts(server)
        log = server.log()

    assert "preloaded" in log
    for device_id in devices:
        assert ready[device_id]["loaded_from_disk"] >= cold[device_id]["built_from_source"]
        assert after[device_id] == ready[device_id], device_id
    for key, output in first.items():
        np.testing.assert_array_equal(second[key], output, err_msg=str(key))


def test_corrupt_binary_rejected_and_rebuilt(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {"CLCONV_CACHE_DIR": str(cache)}
    with running_server(env, tmp_path) as server:
        devices = device_ids(server)
        first = run_requests(server, devices)
    binaries = sorted((cache / "programs").glob("*.bin"))
    assert binaries, "the first server stored no program binary"
    for path in binaries:
        corrupt(path)

    with running_server(env, tmp_path) as server:
        second = run_requests(server, devices)
        counts = program_counts(server)
        log = server.log()
    for device_id in devices:
        assert counts[device_id]["rejected_from_disk"] >= 2, counts[device_id]
        assert counts[device_id]["built_from_source"] >= 2, counts[device_id]
        assert counts[device_id]["loaded_from_disk"] == 0, counts[device_id]
    assert "WARNING" in log
    assert "rejected stored program binary" in log
    for key, output in first.items():
        np.testing.assert_array_equal(second[key], output, err_msg=str(key))

    # The rebuilt binaries replaced the corrupt files, so a third server loads them all.
    with running_server(env, tmp_path) as server:
        run_requests(server, devices)
        counts = program_counts(server)
    for device_id in devices:
        assert counts[device_id]["built_from_source"] == 0, counts[device_id]
        assert counts[device_id]["rejected_from_disk"] == 0, counts[device_id]


def test_cache_off_writes_nothing(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    env = {"CLCONV_CACHE_DIR": "off", "XDG_CACHE_HOME": str(xdg)}
    with running_server(env, tmp_path) as server:
        devices = device_ids(server)
        run_requests(server, devices)
        counts = program_counts(server)
        log = server.log()
    for device_id in devices:
        assert counts[device_id]["loaded_from_disk"] == 0, counts[device_id]
        assert counts[device_id]["built_from_source"] >= 2, counts[device_id]
    assert not (xdg / "clconv").exists(), "CLCONV_CACHE_DIR=off still wrote a cache folder"
    assert "program binary cache off" in log


def test_unusable_cache_dir_still_serves(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder's parent should be\n")
    env = {"CLCONV_CACHE_DIR": str(blocker / "cache")}
    with running_server(env, tmp_path) as server:
        devices = device_ids(server)
        run_requests(server, devices)
        log = server.log()
    assert "program binary cache off: cannot use" in log
    assert blocker.read_text().startswith("a file")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"XDG_CACHE_HOME": "/srv/cache"}, "/srv/cache/clconv"),
        ({"XDG_CACHE_HOME": "relative/cache"}, str(Path.home() / ".cache" / "clconv")),
        ({}, str(Path.home() / ".cache" / "clconv")),
        ({"CLCONV_CACHE_DIR": "/var/cache/clconv"}, "/var/cache/clconv"),
        ({"CLCONV_CACHE_DIR": "off", "XDG_CACHE_HOME": "/srv/cache"}, None),
        ({"CLCONV_CACHE_DIR": "0"}, None),
    ],
)
def test_cache_dir_setting(env: dict[str, str], expected: str | None) -> None:
    assert Settings.from_env(env).cache_dir == expected


def test_settings_default_has_no_cache_dir() -> None:
    assert Settings().cache_dir is None
