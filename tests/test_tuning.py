"""The tuning database, tuning passes and their use by the algorithm selector.

Database files here are written by hand in the stored format, so the fallback chain is checked
against files the code did not produce. Passes run on the real OpenCL devices; no test asserts
on a measured time, only on which candidates were measured and what was stored.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clconv.core.algorithms import (
    DIRECT,
    DIRECT_OC,
    POINTWISE,
    WINOGRAD_F2,
    WINOGRAD_F4,
    applicable,
    rule_choice,
)
from clconv.core.planner import parse_request
from clconv.core.stages import ConvStage
from clconv.runtime.devices import Device, discover_devices
from clconv.runtime.selection import Selector
from clconv.runtime.tuning import (
    FORMAT,
    DeviceKey,
    TuningDatabase,
    power_of_two_bucket,
    shape_class,
)
from clconv.settings import Settings, read_tuning_dir
from servers import running_server
from support import FLOAT32_ATOL, FLOAT32_RTOL, tensor_from_json, tensor_json

CLI_TIMEOUT_S = 600
LAZY_TIMEOUT_S = 180.0
# A regular 3x3 convolution whose rule choice on a CPU is Winograd F(4x4, 3x3).
SMALL_INPUT = (1, 16, 20, 20)
SMALL_WEIGHT = (16, 16, 3, 3)


def shape_only(*shape: int, dtype: str = "float32") -> dict[str, Any]:
    return {"shape": list(shape), "dtype": dtype}


def conv_stage(
    in_shape: tuple[int, ...],
    weight_shape: tuple[int, ...],
    dtype: str = "float32",
    **settings: Any,
) -> ConvStage:
    body = {
        "input": shape_only(*in_shape, dtype=dtype),
        "weight": shape_only(*weight_shape, dtype=dtype),
        **settings,
    }
    plan = parse_request("conv2d", body, allow_shape_only=True, select=False)
    stage = plan.stages[-1]
    assert isinstance(stage, ConvStage)
    return stage


def small_stage() -> ConvStage:
    return conv_stage(SMALL_INPUT, SMALL_WEIGHT, padding=1)


def device_entry(
    name: str, vendor: str, driver: str, kind: str = "cpu", platform_version: str = "OpenCL 3.0"
) -> dict[str, str]:
    return {
        "name": name,
        "vendor": vendor,
        "platform_version": platform_version,
        "driver_version": driver,
        "type": kind,
    }


def write_database_file(
    folder: Path,
    file_name: str,
    device: dict[str, str],
    entries: dict[str, str],
    measured_at: str = "2026-01-01T00:00:00+00:00",
) -> Path:
    """Write a tuning file by hand: ``entries`` maps a shape class key to its winner."""
    folder.mkdir(parents=True, exist_ok=True)
    document = {
        "format": FORMAT,
        "device": device,
        "entries": {
            key: {"winner": winner, "timings_ms": {winner: 1.0}, "measured_at": measured_at}
            for key, winner in entries.items()
        },
    }
    path = folder / file_name
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def local_device() -> Iterator[Device]:
    devices = [device for device in discover_devices().devices if not device.is_simulator]
    if not devices:
        pytest.fail("no OpenCL device found; the tests need at least one")
    yield devices[0]


def run_cli(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clconv", *arguments],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        env=env,
    )


def files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


# --- shape classes and settings -------------------------------------------------------------


def test_power_of_two_bucket() -> None:
    cases = {0: 1, 1: 1, 2: 2, 3: 4, 4: 4, 56: 64, 64: 64, 65: 128, 144: 256}
    for value, expected in cases.items():
        assert power_of_two_bucket(value) == expected, value


def test_shape_class_key_fields() -> None:
    key = shape_class(small_stage(), "float32").key
    assert key == "k3x3 s1x1 d1x1 regular cin16 cout16 out32x32 n1 float32 pad"


def test_shape_class_kinds() -> None:
    depthwise = conv_stage((1, 144, 56, 56), (144, 1, 3, 3), padding=1, groups=144)
    grouped = conv_stage((1, 128, 56, 56), (128, 4, 3, 3), padding=1, groups=32)
    multiplier = conv_stage((1, 8, 16, 16), (24, 1, 3, 3), groups=8)
    assert shape_class(depthwise, "float32").kind == "depthwise"
    assert shape_class(depthwise, "float32").channels_in == 1
    assert shape_class(depthwise, "float32").channels_out == 1
    assert shape_class(grouped, "float32").kind == "grouped"
    assert shape_class(grouped, "float32").channels_in == 4
    assert shape_class(multiplier, "float32").kind == "depthwise"
    assert shape_class(multiplier, "float32").channels_out == 4


def test_shape_class_buckets_nearby_shapes() -> None:
    base = shape_class(conv_stage((1, 64, 56, 56), (64, 64, 3, 3), padding=1), "float32")
    near = shape_class(conv_stage((1, 60, 50, 60), (40, 60, 3, 3), padding=1), "float32")
    assert near == base
    more_channels = shape_class(conv_stage((1, 65, 56, 56), (64, 65, 3, 3), padding=1), "float32")
    assert more_channels != base
    batch = shape_class(conv_stage((3, 64, 56, 56), (64, 64, 3, 3), padding=1), "float32")
    assert batch.batch == 4


def test_shape_class_separates_exact_features() -> None:
    base = shape_class(conv_stage((1, 64, 56, 56), (64, 64, 3, 3), padding=1), "float32")
    variants = {
        "unpadded": conv_stage((1, 64, 58, 58), (64, 64, 3, 3)),
        "stride": conv_stage((1, 64, 112, 112), (64, 64, 3, 3), padding=1, stride=2),
        "dilation": conv_stage((1, 64, 58, 58), (64, 64, 3, 3), padding=2, dilation=2),
        "kernel": conv_stage((1, 64, 56, 56), (64, 64, 5, 5), padding=2),
    }
    for label, stage in variants.items():
        assert shape_class(stage, "float32").key != base.key, label
    float64 = shape_class(
        conv_stage((1, 64, 56, 56), (64, 64, 3, 3), "float64", padding=1), "float64"
    )
    assert float64.key != base.key


def test_tuning_dir_setting(tmp_path: Path) -> None:
    assert read_tuning_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "clconv/tuning"
    assert read_tuning_dir({"HOME": str(tmp_path)}) == tmp_path / ".cache/clconv/tuning"
    assert read_tuning_dir({"CLCONV_TUNING_DIR": str(tmp_path / "db")}) == tmp_path / "db"
    assert read_tuning_dir({"CLCONV_TUNING_DIR": "off"}) is None
    assert Settings().tuning_dir is None
    settings = Settings.from_env({"CLCONV_TUNE": "lazy", "CLCONV_TUNE_BUDGET_S": "2.5"})
    assert settings.tune == "lazy"
    assert settings.tune_budget_s == 2.5
    with pytest.raises(ValueError, match="CLCONV_TUNE must be one of off, lazy"):
        Settings.from_env({"CLCONV_TUNE": "eager"})


# --- the database ----------------------------------------------------------------------------


def test_database_round_trip(tmp_path: Path) -> None:
    device = DeviceKey("Some CPU", "Some Vendor", "OpenCL 3.0", "1.2.3", "cpu")
    key = shape_class(small_stage(), "float32").key
    entry = {"winner": WINOGRAD_F2, "timings_ms": {WINOGRAD_F2: 1.0, DIRECT: 2.0}}
    path = TuningDatabase(tmp_path).record(device, key, entry)
    assert path.parent == tmp_path
    assert path.name.startswith("some-vendor_some-cpu_")

    reread = TuningDatabase(tmp_path)
    found = reread.lookup(device, key, applicable(small_stage()))
    assert found is not None
    assert found.winner == WINOGRAD_F2
    assert found.level == "tuned"
    assert reread.entries(device) == {key: entry}
    document = json.loads(path.read_text())
    assert document["format"] == FORMAT
    assert document["device"]["driver_version"] == "1.2.3"


def test_database_keeps_other_entries(tmp_path: Path) -> None:
    device = DeviceKey("Some CPU", "Some Vendor", "OpenCL 3.0", "1.2.3", "cpu")
    first = TuningDatabase(tmp_path)
    second = TuningDatabase(tmp_path)
    first.record(device, "class-a", {"winner": DIRECT})
    second.record(device, "class-b", {"winner": DIRECT_OC})
    assert set(TuningDatabase(tmp_path).entries(device)) == {"class-a", "class-b"}


def test_database_write_is_atomic(tmp_path: Path) -> None:
    device = DeviceKey("Some CPU", "Some Vendor", "OpenCL 3.0", "1.2.3", "cpu")
    database = TuningDatabase(tmp_path)
    path = database.record(device, "class-a", {"winner": DIRECT})
    before = path.read_bytes()
    with pytest.raises(TypeError):
        database.record(device, "class-b", {"winner": DIRECT, "unserialisable": object()})
    assert path.read_bytes() == before
    assert files_under(tmp_path) == [path]


def test_invalid_file_is_ignored(tmp_path: Path) -> None:
    device = DeviceKey("Some CPU", "Some Vendor", "OpenCL 3.0", "1.2.3", "cpu")
    (tmp_path / device.file_name()).write_text("{not json", encoding="utf-8")
    database = TuningDatabase(tmp_path)
    assert database.lookup(device, "class-a", [DIRECT]) is None
    database.record(device, "class-a", {"winner": DIRECT})
    found = TuningDatabase(tmp_path).lookup(device, "class-a", [DIRECT])
    assert found is not None
    assert found.winner == DIRECT


# --- the fallback chain ----------------------------------------------------------------------


def test_fallback_order(tmp_path: Path) -> None:
    stage = small_stage()
    key = shape_class(stage, "float32").key
    candidates = applicable(stage)
    device = DeviceKey("Model X", "Vendor A", "OpenCL 3.0", "2.0", "cpu")
    exact = write_database_file(
        tmp_path, "exact.json", device_entry("Model X", "Vendor A", "2.0"), {key: DIRECT}
    )
    architecture = write_database_file(
        tmp_path,
        "architecture.json",
        device_entry("Model X", "Vendor A", "1.0", platform_version="OpenCL 2.1"),
        {key: DIRECT_OC},
    )
    vendor = write_database_file(
        tmp_path, "vendor.json", device_entry("Model Y", "Vendor A", "2.0"), {key: WINOGRAD_F2}
    )
    # Neither another vendor nor another device type of the same vendor may serve the device.
    write_database_file(
        tmp_path, "other-vendor.json", device_entry("Model X", "Vendor B", "2.0"), {key: POINTWISE}
    )
    write_database_file(
        tmp_path, "other-type.json", device_entry("GPU Z", "Vendor A", "2.0", "gpu"), {key: DIRECT}
    )

    expected = [
        (exact, DIRECT, "tuned"),
        (architecture, DIRECT_OC, "tuned-architecture"),
        (vendor, WINOGRAD_F2, "vendor-default"),
    ]
    for path, winner, level in expected:
        found = TuningDatabase(tmp_path).lookup(device, key, candidates)
        assert found is not None, level
        assert (found.winner, found.level) == (winner, level)
        assert found.path == path
        path.unlink()
    # The other vendor's winner does apply to the stage, so only the match keeps it out.
    assert TuningDatabase(tmp_path).lookup(device, key, [*candidates, POINTWISE]) is None


def test_newest_entry_wins_within_level(tmp_path: Path) -> None:
    key = shape_class(small_stage(), "float32").key
    device = DeviceKey("Model X", "Vendor A", "OpenCL 3.0", "3.0", "cpu")
    older = device_entry("Model X", "Vendor A", "1.0")
    newer = device_entry("Model X", "Vendor A", "2.0")
    write_database_file(tmp_path, "a.json", newer, {key: DIRECT}, "2026-02-01T00:00:00+00:00")
    write_database_file(tmp_path, "b.json", older, {key: DIRECT_OC}, "2026-01-01T00:00:00+00:00")
    found = TuningDatabase(tmp_path).lookup(device, key, applicable(small_stage()))
    assert found is not None
    assert found.winner == DIRECT


def test_stale_winner_is_ignored(tmp_path: Path) -> None:
    stage = small_stage()
    key = shape_class(stage, "float32").key
    device = DeviceKey("Model X", "Vendor A", "OpenCL 3.0", "2.0", "cpu")
    assert POINTWISE not in applicable(stage)
    write_database_file(
        tmp_path, "exact.json", device_entry("Model X", "Vendor A", "2.0"), {key: POINTWISE}
    )
    write_database_file(
        tmp_path,
        "architecture.json",
        device_entry("Model X", "Vendor A", "1.0"),
        {key: "conv2d_removed_algorithm"},
    )
    vendor = write_database_file(
        tmp_path, "vendor.json", device_entry("Model Y", "Vendor A", "2.0"), {key: DIRECT}
    )
    found = TuningDatabase(tmp_path).lookup(device, key, applicable(stage))
    assert found is not None
    assert (found.winner, found.level, found.path) == (DIRECT, "vendor-default", vendor)
    vendor.unlink()
    assert TuningDatabase(tmp_path).lookup(device, key, applicable(stage)) is None


def test_selector_falls_back_to_rule(tmp_path: Path, local_device: Device) -> None:
    stage = small_stage()
    key = shape_class(stage, "float32").key
    described = local_device.describe()
    rule = rule_choice(stage, "gpu" if described["type"] == "gpu" else "cpu")
    selector = Selector(TuningDatabase(tmp_path))
    choice = selector.chooser(local_device, "float32")(stage)
    assert (choice.algorithm, choice.source) == (rule, "rule")

    same_vendor = device_entry("Another model", described["vendor"], "0", described["type"])
    write_database_file(tmp_path, "vendor.json", same_vendor, {key: DIRECT})
    selector = Selector(TuningDatabase(tmp_path))
    choice = selector.chooser(local_device, "float32")(stage)
    assert (choice.algorithm, choice.source) == (DIRECT, "vendor-default")
    assert Selector().chooser(local_device, "float32")(stage).source == "rule"


# --- clconv tune -----------------------------------------------------------------------------


def test_tune_cli_stores_winner(tmp_path: Path, device_id: str) -> None:
    body = {
        "op": "conv2d",
        "input": shape_only(1, 8, 12, 12),
        "weight": shape_only(8, 8, 3, 3),
        "padding": 1,
    }
    body_path = tmp_path / "small.json"
    body_path.write_text(json.dumps(body), encoding="utf-8")
    folder = tmp_path / "db"
    result = run_cli(
        "tune", str(body_path), "--device", device_id, "--budget-s", "300",
        "--tuning-dir", str(folder), "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    stage = conv_stage((1, 8, 12, 12), (8, 8, 3, 3), padding=1)
    candidates = applicable(stage)
    assert len(rows) == 1
    assert rows[0]["device"] == device_id
    assert rows[0]["winner"] in candidates
    assert sorted(rows[0]["timings_ms"]) == sorted(candidates)

    files = files_under(folder)
    assert len(files) == 1
    document = json.loads(files[0].read_text())
    entry = document["entries"][shape_class(stage, "float32").key]
    assert entry["winner"] == rows[0]["winner"]
    assert sorted(entry["timings_ms"]) == sorted(candidates)
    assert all(ms > 0 for ms in entry["timings_ms"].values())
    assert entry["rule"] == rule_choice(
        stage, "cpu" if document["device"]["type"] == "cpu" else "gpu"
    )
    assert entry["clconv_version"]
    assert entry["measured_at"]


def test_tune_cli_table(tmp_path: Path, local_device: Device) -> None:
    body = {"input": shape_only(1, 4, 8, 8), "weight": shape_only(4, 4, 1, 1)}
    body_path = tmp_path / "pointwise.json"
    body_path.write_text(json.dumps(body), encoding="utf-8")
    result = run_cli(
        "tune", str(body_path), "--device", local_device.id, "--budget-s", "60",
        "--tuning-dir", str(tmp_path / "db"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "DEVICE", "SHAPE", "SHAPE", "CLASS", "CANDIDATES", "(ms)", "WINNER", "RULE", "SPEED-UP",
    ]  # fmt: skip
    assert local_device.id in lines[2]
    assert "k1x1 s1x1 d1x1 regular cin4 cout4 out8x8 n1 float32 nopad" in lines[2]


def test_tune_cli_rejects_bad_input(tmp_path: Path) -> None:
    body_path = tmp_path / "bad.json"
    body_path.write_text(json.dumps({"input": shape_only(1, 4, 8, 8)}), encoding="utf-8")
    result = run_cli("tune", str(body_path), "--tuning-dir", str(tmp_path / "db"))
    assert result.returncode == 2
    assert "bad.json is not a valid conv2d body" in result.stderr
    result = run_cli("tune", "--device", "nowhere:7", "--tuning-dir", str(tmp_path / "db"))
    assert result.returncode == 2
    assert "device 'nowhere:7' is not available" in result.stderr
    assert not (tmp_path / "db").exists()


def test_tune_cli_off_switch_writes_nothing(tmp_path: Path, local_device: Device) -> None:
    body_path = tmp_path / "pointwise.json"
    body = {"input": shape_only(1, 4, 8, 8), "weight": shape_only(4, 4, 1, 1)}
    body_path.write_text(json.dumps(body), encoding="utf-8")
    cache = tmp_path / "cache"
    home = tmp_path / "home"
    cache.mkdir()
    home.mkdir()
    env = {
        "PATH": "/usr/bin:/bin",
        "XDG_CACHE_HOME": str(cache),
        "HOME": str(home),
        "CLCONV_TUNING_DIR": "off",
    }
    result = run_cli(
        "tune", str(body_path), "--device", local_device.id, "--budget-s", "60", env=env
    )
    assert result.returncode == 0, result.stderr
    assert "nothing was stored" in result.stderr
    # The program cache (CLCONV_CACHE_DIR) and PoCL's kernel cache live under the same cache
    # folder, so only the tuning database's folder is checked.
    assert not (cache / "clconv" / "tuning").exists()
    assert not (home / ".cache" / "clconv" / "tuning").exists()


# --- the server ------------------------------------------------------------------------------


def small_conv2d(device_id: str, seed: int = 0) -> tuple[dict[str, Any], torch.Tensor]:
    """A conv2d body of the small shape and PyTorch's output for it."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(SMALL_INPUT).astype(np.float32)
    weight = rng.standard_normal(SMALL_WEIGHT).astype(np.float32)
    body = {
        "input": tensor_json(x),
        "weight": tensor_json(weight),
        "padding": 1,
        "device": device_id,
    }
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(weight), padding=1)
    return body, expected


def assert_matches_torch(response: dict[str, Any], expected: torch.Tensor) -> None:
    output = tensor_from_json(response["output"])
    np.testing.assert_allclose(output, expected.numpy(), rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)


def test_server_uses_tuned_winner(tmp_path: Path, device_id: str) -> None:
    stage = small_stage()
    key = shape_class(stage, "float32").key
    folder = tmp_path / "db"
    with (
        running_server({"CLCONV_TUNING_DIR": str(folder)}, tmp_path) as server,
        httpx.Client(base_url=server.url, timeout=120.0) as http,
    ):
        described = next(
            d for d in http.get("/v1/devices").json()["devices"] if d["id"] == device_id
        )
        profile = "gpu" if described["type"] in ("gpu", "accelerator") else "cpu"
        assert rule_choice(stage, profile) != DIRECT_OC
        device = {name: described[name] for name in device_entry("", "", "")}
        write_database_file(folder, "by-hand.json", device, {key: DIRECT_OC})

        body, expected = small_conv2d(device_id)
        response = http.post("/v1/conv2d", json=body)
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["algorithm"] == ["pad_zeros", DIRECT_OC]
        assert result["algorithm_source"] == [None, "tuned"]
        assert result["steps"][0]["algorithm_source"] == [None, "tuned"]
        assert_matches_torch(result, expected)

        plan = http.post("/v1/plan", json={"op": "conv2d", **body}).json()
        assert plan["algorithm"] == ["pad_zeros", DIRECT_OC]
        assert plan["algorithm_source"] == [None, "tuned"]

        pinned = http.post("/v1/conv2d", json={**body, "algorithm": WINOGRAD_F4})
        assert pinned.status_code == 200, pinned.text
        assert pinned.json()["algorithm"] == [WINOGRAD_F4]
        assert pinned.json()["algorithm_source"] == ["request"]
        assert_matches_torch(pinned.json(), expected)


def test_lazy_mode_skips_warm_up_shapes(tmp_path: Path) -> None:
    env = {"CLCONV_TUNING_DIR": str(tmp_path / "db"), "CLCONV_TUNE": "lazy", "CLCONV_WARMUP": "1"}
    with running_server(env, tmp_path) as server:
        log = server.log()
    assert "warm-up built the common kernels" in log
    assert "queued lazy tuning" not in log


def test_lazy_mode_tunes_in_background(tmp_path: Path, device_id: str) -> None:
    folder = tmp_path / "db"
    env = {"CLCONV_TUNING_DIR": str(folder), "CLCONV_TUNE": "lazy", "CLCONV_TUNE_BUDGET_S": "20"}
    key = shape_class(small_stage(), "float32").key
    with running_server(env, tmp_path) as server:
        with httpx.Client(base_url=server.url, timeout=120.0) as http:
            body, expected = small_conv2d(device_id)
            first = http.post("/v1/conv2d", json=body)
            assert first.status_code == 200, first.text
            assert first.json()["algorithm_source"] == ["rule"]
            assert_matches_torch(first.json(), expected)

            deadline = time.monotonic() + LAZY_TIMEOUT_S
            result = first.json()
            # A winner that needs a zero-padding stage in front adds "pad_zeros" (source None).
            while result["algorithm_source"][-1] != "tuned" and time.monotonic() < deadline:
                time.sleep(1.0)
                response = http.post("/v1/conv2d", json=body)
                assert response.status_code == 200, response.text
                result = response.json()
            assert result["algorithm_source"][-1] == "tuned", server.log()
            assert_matches_torch(result, expected)

        files = files_under(folder)
        assert len(files) == 1
        entry = json.loads(files[0].read_text())["entries"][key]
        assert entry["winner"] == result["algorithm"][-1]
        assert entry["winner"] in applicable(small_stage())
        log = server.log()
        assert f"tuning on {device_id} started for {key}" in log
        assert f"tuning on {device_id} finished for {key}" in log


def test_server_off_switch_writes_nothing(tmp_path: Path, device_id: str) -> None:
    cache = tmp_path / "cache"
    home = tmp_path / "home"
    cache.mkdir()
    home.mkdir()
    env = {
        "CLCONV_TUNING_DIR": "off",
        "CLCONV_TUNE": "lazy",
        "XDG_CACHE_HOME": str(cache),
        "HOME": str(home),
    }
    with running_server(env, tmp_path) as server:
        with httpx.Client(base_url=server.url, timeout=120.0) as http:
            body, expected = small_conv2d(device_id)
            for _ in range(2):
                response = http.post("/v1/conv2d", json=body)
                assert response.status_code == 200, response.text
                assert response.json()["algorithm_source"] == ["rule"]
                assert_matches_torch(response.json(), expected)
            time.sleep(2.0)
        assert "CLCONV_TUNE=lazy is ignored" in server.log()
    # The program cache (CLCONV_CACHE_DIR) and PoCL's kernel cache live under the same cache
    # folder, so only the tuning database's folder is checked.
    assert not (cache / "clconv" / "tuning").exists()
    assert not (home / ".cache" / "clconv" / "tuning").exists()
