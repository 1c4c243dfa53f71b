"""Write the benchmark's results: ``results.json``, ``README.md`` tables and ``ratios.png``."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pyopencl as cl
import torch

from clconv.runtime.devices import Device

# A shape is memory-bound when its FLOPs per byte of compulsory float32 traffic (input, weight
# and output each moved once) are below this. The value is fixed so rows keep their class across
# machines, and the report prints the run's ridge point (measured peak / measured bandwidth)
# beside it. Shapes near the ridge, such as a 1x1 convolution to 24 channels (10 FLOP/byte),
# count as memory-bound too.
MEMORY_BOUND_INTENSITY = 16.0
# Relative error (max |ours - PyTorch| / max |PyTorch|) above which a row is flagged.
ERROR_FLAG = 1e-3


def describe_environment(devices: list[Device], command: str, duration_s: float) -> dict[str, Any]:
    """Machine, library and OpenCL platform facts for the report header."""
    cpuinfo = _read_key_values(Path("/proc/cpuinfo"))
    meminfo = _read_key_values(Path("/proc/meminfo"))
    flags = cpuinfo.get("flags", "").split()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "duration_s": duration_s,
        "cpu_model": cpuinfo.get("model name", platform.processor() or "unknown"),
        "cpu_family_model": f"family {cpuinfo.get('cpu family', '?')}, "
        f"model {cpuinfo.get('model', '?')}",
        "cpu_simd_flags": [f for f in flags if f.startswith(("avx", "fma", "sse4"))],
        "nproc": len(os.sched_getaffinity(0)),
        "memory": _memory_text(meminfo.get("MemTotal", "")),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "numpy": np.__version__,
        "pyopencl": cl.VERSION_TEXT,
        "devices": [device.describe() for device in devices],
    }


def _memory_text(mem_total: str) -> str:
    """Turn /proc/meminfo's ``24683784 kB`` into ``23.5 GiB``."""
    number, _, unit = mem_total.partition(" ")
    if not number.isdigit() or unit != "kB":
        return mem_total or "unknown"
    return f"{int(number) / 1024**2:.1f} GiB"


def _read_key_values(path: Path) -> dict[str, str]:
    """First value of each ``key : value`` line (the first CPU's entry in /proc/cpuinfo)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in values:
            values[key.strip()] = value.strip()
    return values


def reference_rates(document: dict[str, Any]) -> tuple[float, float]:
    """Measured peak GFLOP/s and copy GB/s: the best run before or after the suite, because
    load from other processes on a shared machine only lowers a rate."""
    ref = document["reference"]
    peak = max(ref[when]["peak_gflops"]["max"] for when in ref)
    copy = max(ref[when]["copy_gbs"]["max"] for when in ref)
    return peak, copy


def derive_rows(document: dict[str, Any], device_id: str) -> list[dict[str, Any]]:
    """Per-case figures on one device: rates, ratio to PyTorch, fractions of peak and bandwidth."""
    peak, copy = reference_rates(document)
    rows = []
    for case in document["cases"]:
        ours = case["devices"].get(device_id)
        if ours is None:
            continue
        kernel_ms = ours["kernel_ms"]["median"]
        torch_ms = case["torch_ms"]["median"]
        ours_gflops = case["flops"] / kernel_ms / 1e6
        torch_gflops = case["flops"] / torch_ms / 1e6
        memory_bound = case["arithmetic_intensity"] < MEMORY_BOUND_INTENSITY
        rows.append(
            {
                "case": case,
                "ours": ours,
                "kernel_ms": kernel_ms,
                "e2e_ms": ours["e2e_ms"]["median"],
                "torch_ms": torch_ms,
                "ratio": torch_ms / kernel_ms,
                "best_ratio": case["torch_ms"]["min"] / ours["kernel_ms"]["min"],
                "ours_gflops": ours_gflops,
                "torch_gflops": torch_gflops,
                "ours_peak": ours_gflops / peak,
                "torch_peak": torch_gflops / peak,
                "memory_bound": memory_bound,
                "ours_bandwidth": case["min_bytes"] / kernel_ms / 1e6 / copy,
                "torch_bandwidth": case["min_bytes"] / torch_ms / 1e6 / copy,
            }
        )
    return rows


def geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def summarize(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per device: geometric means of the PyTorch/ours ratio and where our time goes."""
    summary = {}
    for device in document["meta"]["devices"]:
        rows = derive_rows(document, device["id"])
        base = [row for row in rows if row["case"]["group"] == "base"]
        worst = sorted(rows, key=lambda row: row["ratio"])[:3]
        summary[device["id"]] = {
            "geomean_ratio_base": geometric_mean([row["ratio"] for row in base]),
            "geomean_best_ratio_base": geometric_mean([row["best_ratio"] for row in base]),
            "base_rows": len(base),
            "geomean_ratio_all": geometric_mean([row["ratio"] for row in rows]),
            "geomean_best_ratio_all": geometric_mean([row["best_ratio"] for row in rows]),
            "rows": len(rows),
            "worst": [{"name": row["case"]["name"], "ratio": row["ratio"]} for row in worst],
            "total_kernel_ms": sum(row["kernel_ms"] for row in rows),
            "total_e2e_ms": sum(row["e2e_ms"] for row in rows),
            "total_upload_ms": sum(row["ours"]["upload_ms"]["median"] for row in rows),
            "total_download_ms": sum(row["ours"]["download_ms"]["median"] for row in rows),
            "total_host_ms": sum(row["ours"]["host_ms"]["median"] for row in rows),
            "total_build_ms": sum(row["ours"]["build_ms"] for row in rows),
            "total_torch_ms": sum(row["torch_ms"] for row in rows),
        }
    return summary


# Speed targets on the fastest CPU OpenCL device, over the base suite: the geometric mean of
# the ratios, the lowest row, and the rows that must reach 1.0.
TARGET_GEOMEAN = 0.8
TARGET_ROW_FLOOR = 0.5
TARGET_ROWS = {"resnet50_3x3": 1.0, "mobilenetv2_depthwise": 1.0}


def acceptance(document: dict[str, Any], device_id: str) -> list[tuple[str, float, float, bool]]:
    """(check, measured, target, met) per target on ``device_id``. Each ratio is the lower of
    the median ratio and the best-run ratio, so neither a slow PyTorch median under load nor
    one lucky run passes a target."""
    base = [row for row in derive_rows(document, device_id) if row["case"]["group"] == "base"]
    if not base:
        return []

    def low(row: dict[str, Any]) -> float:
        return float(min(row["ratio"], row["best_ratio"]))

    geomean = geometric_mean([low(row) for row in base])
    lowest = min(base, key=low)
    checks = [
        (f"geometric mean over {len(base)} base shapes", geomean, TARGET_GEOMEAN),
        (f"lowest row ({lowest['case']['name']})", low(lowest), TARGET_ROW_FLOOR),
    ]
    for row in base:
        target = TARGET_ROWS.get(row["case"]["name"])
        if target is not None:
            checks.append((row["case"]["name"], low(row), target))
    return [(name, value, target, value >= target) for name, value, target in checks]


def write(document: dict[str, Any], out: Path) -> None:
    """Write results.json, ratios.png and README.md into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    document["summary"] = summarize(document)
    (out / "results.json").write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    plot_ratios(document, out / "ratios.png")
    (out / "README.md").write_text(render_markdown(document), encoding="utf-8")


def plot_ratios(document: dict[str, Any], path: Path) -> None:
    """Horizontal bars of PyTorch time / our kernel time per case and device, log scale."""
    matplotlib.use("Agg")  # write files only; build machines have no display
    import matplotlib.pyplot as plt

    devices = [device["id"] for device in document["meta"]["devices"]]
    cases = document["cases"]
    height = 0.8 / max(len(devices), 1)
    figure, axes = plt.subplots(figsize=(10, 1.5 + 0.36 * len(cases) * max(len(devices), 1) / 1.6))
    positions = np.arange(len(cases))
    summary = document["summary"]
    for index, device_id in enumerate(devices):
        rows = {row["case"]["name"]: row for row in derive_rows(document, device_id)}
        medians = [rows[c["name"]]["ratio"] if c["name"] in rows else np.nan for c in cases]
        bests = [rows[c["name"]]["best_ratio"] if c["name"] in rows else np.nan for c in cases]
        offsets = positions + (index - (len(devices) - 1) / 2) * height
        geomean = summary[device_id]["geomean_ratio_base"]
        bars = axes.barh(
            offsets,
            medians,
            height=height,
            label=f"{device_id}, median (base-suite geomean {geomean:.2f})",
        )
        axes.scatter(
            bests,
            offsets,
            marker="o",
            s=14,
            color=bars.patches[0].get_facecolor() if bars.patches else None,
            edgecolors="black",
            linewidths=0.6,
            zorder=3,
            label=f"{device_id}, best runs",
        )
    axes.axvline(1.0, color="black", linewidth=0.8)
    for index in range(1, len(cases)):
        if cases[index]["group"] != cases[index - 1]["group"]:
            axes.axhline(index - 0.5, color="gray", linewidth=0.8, linestyle="--")
    axes.set_xscale("log")
    axes.set_yticks(positions, [case["name"] for case in cases], fontsize=8)
    axes.set_ylim(len(cases) - 0.5, -0.5)  # first case at the top
    axes.set_xlabel("PyTorch time / clconv kernel time (> 1: clconv faster), log scale")
    axes.set_title(f"clconv OpenCL vs PyTorch {document['meta']['torch']} CPU, float32")
    axes.grid(axis="x", which="both", linewidth=0.3)
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=2, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _ms(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _rate(stats: dict[str, float]) -> str:
    return f"{stats['median']:.1f}, best {stats['max']:.1f}"


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%" if value >= 0.1 else f"{100 * value:.1f}%"


def render_markdown(document: dict[str, Any]) -> str:
    """Render README.md: set-up, reference rates, method, summary and one table per device."""
    lines = [
        *_header_lines(document),
        *_reference_lines(document),
        *_method_lines(document["settings"]),
        *_summary_lines(document),
    ]
    for device in document["meta"]["devices"]:
        lines += _device_table(document, device["id"])
    return "\n".join(lines) + "\n"


def _header_lines(document: dict[str, Any]) -> list[str]:
    meta = document["meta"]
    lines = [
        "# Benchmark: clconv OpenCL kernels vs PyTorch CPU",
        "",
        "Generated by `make bench`, which runs `.venv/bin/python bench/run.py --out "
        "docs/benchmarks`; the shapes are in `bench/suite.py`. Raw numbers, with quartiles, "
        "are in `results.json`.",
        "",
        f"- Date: {meta['date']}; the run took {meta['duration_s'] / 60:.1f} min.",
        f"- Command: `{meta['command']}`",
        f"- CPU: {meta['cpu_model']} ({meta['cpu_family_model']}), {meta['nproc']} logical CPUs, "
        f"SIMD flags {', '.join(meta['cpu_simd_flags'])}; memory {meta['memory']}.",
        f"- OS: {meta['os']}; Python {meta['python']}, PyTorch {meta['torch']} (CPU capability "
        f"{meta['torch_cpu_capability']}, {document['settings']['torch_threads']} threads), "
        f"numpy {meta['numpy']}, pyopencl {meta['pyopencl']}.",
        "",
        "| device | platform | platform version | driver | OpenCL version | compute units |",
        "|---|---|---|---|---|---|",
    ]
    for device in meta["devices"]:
        lines.append(
            f"| `{device['id']}` | {device['platform']} | {device['platform_version']} | "
            f"{device['driver_version']} | {device['opencl_version']} | "
            f"{device['compute_units']} |"
        )
    return lines


def _reference_lines(document: dict[str, Any]) -> list[str]:
    peak, copy = reference_rates(document)
    ref = document["reference"]
    loads = [load for case in document["cases"] for load in case["load_average"]]
    return [
        "",
        "## Reference rates, measured in the same run",
        "",
        f"- FMA peak: float32 `torch.matmul` of two 4096×4096 matrices, 5 runs before the "
        f"suite (median {_rate(ref['start']['peak_gflops'])} GFLOP/s) and 5 after (median "
        f"{_rate(ref['end']['peak_gflops'])}). The fractions below use the best run, "
        f"{peak:.1f} GFLOP/s, because load from other processes only lowers a rate.",
        f"- Memory bandwidth: `Tensor.copy_` of 512 MiB, counting read and write, 10 runs "
        f"before (median {_rate(ref['start']['copy_gbs'])} GB/s) and 10 after (median "
        f"{_rate(ref['end']['copy_gbs'])}); the fractions use the best run, {copy:.1f} GB/s.",
        f"- 1-minute load average while the suite ran: {min(loads):.1f} to {max(loads):.1f} "
        f"on {document['meta']['nproc']} logical CPUs, this benchmark included.",
        f"- Ridge point: {peak / copy:.1f} FLOP/byte. Rows whose arithmetic intensity (FLOPs per "
        f"byte of input, weight and output, each moved once) is below "
        f"{MEMORY_BOUND_INTENSITY:g} count as memory-bound and also get a bandwidth fraction.",
        *_overhead_lines(document),
    ]


def _overhead_lines(document: dict[str, Any]) -> list[str]:
    overhead = document.get("launch_overhead")
    if not overhead:
        return []
    lines = [
        "",
        "Per-launch overhead of an empty kernel, in µs (medians; `bench/measure.py` "
        "`measure_launch_overhead`). A request queues all its kernels without host waits "
        "between them, so it pays one round trip plus one streamed launch per further kernel.",
        "",
        "| device | enqueue + wait, host | back to back, device | empty kernel itself |",
        "|---|--:|--:|--:|",
    ]
    for device_id, figures in overhead.items():
        lines.append(
            f"| `{device_id}` | {figures['round_trip_us']['median']:.1f} | "
            f"{figures['stream_us']['median']:.1f} | {figures['kernel_us']['median']:.1f} |"
        )
    return lines


def _method_lines(settings: dict[str, Any]) -> list[str]:
    return [
        "",
        "## Method",
        "",
        f"- Kernel time: clconv's kernels for the request, built once, with input and weights "
        f"uploaded once and left on the device; the sum of the request's kernel times from "
        f"OpenCL profiling events, median of {settings['runs']} launches after "
        f"{settings['warmup_runs']} warm-up launches. Shapes whose rounds would take over "
        f"{settings['shape_budget_s']:g} s in all get fewer, at least {settings['min_runs']} "
        f"(the `runs` column).",
        "- End-to-end: `clconv.runtime.executor.execute` on the parsed plan, the same number of "
        "times; `timings_ms.total`, from the first upload being queued to the download's end. "
        "Request decoding, weight repacking on the host and response encoding are not in it.",
        "- PyTorch: `torch.nn.functional.conv2d` / `conv_transpose2d` under `torch.no_grad()`, "
        "`time.perf_counter` around each call, the same number of runs after warm-up.",
        f"- Timed runs are interleaved in rounds: {settings['block']} PyTorch calls back to "
        f"back, then on each device one untimed launch, {settings['block']} timed launches and "
        f"{settings['block']} requests, with {1e3 * settings['settle_s']:.0f} ms pauses between "
        f"blocks. Load from other processes falls on every side alike, and each side runs as "
        f"under a steady stream of requests. (Timing single PyTorch calls between OpenCL "
        f"launches made PyTorch look up to 6x slower than it is.)",
        "- Ratio: PyTorch median / our kernel median, so above 1 means clconv's kernels are "
        "faster. The geometric means in the summary are over the base suite's shapes "
        "(the first 10 rows) and over all rows.",
        f"- Build: wall time to build the request's OpenCL programs from source, paid once per "
        f"distinct shape and device in a process (`cached` where an earlier row built the same "
        f"program). PyOpenCL's and PoCL's disk caches were off for this run "
        f"(PYOPENCL_NO_CACHE={settings['pyopencl_no_cache']}, "
        f"POCL_KERNEL_CACHE={settings['pocl_kernel_cache']}); with them on, a restarted "
        f"service reads earlier builds from disk.",
        "- Our kernel times come from device profiling events; PyTorch's are host wall times, "
        "so they also hold its per-call dispatch cost (tens of microseconds).",
        "- Under load, PyTorch's medians suffer most: its OpenMP threads meet at the end of "
        "every call, so a call waits whenever another process holds one of the cores. The "
        "best-run ratio is the closer estimate of an idle machine; the acceptance figures "
        "quote the lower of the two.",
        "- Float32, no bias, no activation. Each row's output was checked against PyTorch; "
        f"rows marked ! differ by more than {ERROR_FLAG:g} relative to the output's maximum.",
        "- The machine is shared: compare numbers within a run, not across runs.",
    ]


def _summary_lines(document: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Summary",
        "",
        "Ratios are PyTorch time / our kernel time: medians, and in brackets the best runs. "
        "Times are summed over the device's rows; e2e includes upload and download, and "
        "build is paid once per distinct shape in a process.",
        "",
        "| device | geomean ratio, base suite | geomean ratio, all rows | worst rows (ratio) | "
        "kernel ms | e2e ms | upload + download ms | build ms | PyTorch ms |",
        "|---|---|---|---|--:|--:|--:|--:|--:|",
    ]
    for device_id, summary in document["summary"].items():
        worst = ", ".join(f"{w['name']} ({w['ratio']:.2f})" for w in summary["worst"])
        transfers = summary["total_upload_ms"] + summary["total_download_ms"]
        lines.append(
            f"| `{device_id}` | {summary['geomean_ratio_base']:.2f} "
            f"({summary['geomean_best_ratio_base']:.2f}), {summary['base_rows']} shapes | "
            f"{summary['geomean_ratio_all']:.2f} ({summary['geomean_best_ratio_all']:.2f}), "
            f"{summary['rows']} shapes | {worst} | {summary['total_kernel_ms']:.0f} | "
            f"{summary['total_e2e_ms']:.0f} | {transfers:.0f} | "
            f"{summary['total_build_ms']:.0f} | {summary['total_torch_ms']:.0f} |"
        )
    lines += ["", "![PyTorch time / clconv kernel time per shape](ratios.png)", ""]
    lines += [
        "### Targets",
        "",
        "Each ratio here is the lower of the median ratio and the best-run ratio.",
        "",
        "| device | check | ratio | target | met |",
        "|---|---|--:|--:|---|",
    ]
    for device_id in document["summary"]:
        for name, value, target, met in acceptance(document, device_id):
            lines.append(
                f"| `{device_id}` | {name} | {value:.2f} | {target:g} | {'yes' if met else 'no'} |"
            )
    lines.append("")
    return lines


def _device_table(document: dict[str, Any], device_id: str) -> list[str]:
    lines = [
        f"## `{device_id}`",
        "",
        "| shape | algorithm | runs | MFLOP | kernel ms | e2e ms | PyTorch ms | ratio | "
        "ratio, best runs | GFLOP/s ours | GFLOP/s PyTorch | peak ours | peak PyTorch | "
        "bandwidth ours | bandwidth PyTorch | build ms |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in derive_rows(document, device_id):
        case = row["case"]
        ours = row["ours"]
        if case["group"] == "deepbench":
            name = f"{case['title']}: {case['description']}"
        else:
            name = case["label"]
        flag = " !" if ours["max_relative_error"] > ERROR_FLAG else ""
        bandwidth = (
            (_pct(row["ours_bandwidth"]), _pct(row["torch_bandwidth"]))
            if row["memory_bound"]
            else ("", "")
        )
        build = f"{ours['build_ms']:.0f}" if ours["programs_built"] else "cached"
        algorithm = ", ".join(ours["algorithm"]).replace("conv2d_", "").replace("_gather", "")
        lines.append(
            f"| {name}{flag} | {algorithm} | {case['runs']} | {case['flops'] / 1e6:.0f} | "
            f"{_ms(row['kernel_ms'])} | {_ms(row['e2e_ms'])} | {_ms(row['torch_ms'])} | "
            f"{row['ratio']:.2f} | {row['best_ratio']:.2f} | {row['ours_gflops']:.1f} | "
            f"{row['torch_gflops']:.1f} | "
            f"{_pct(row['ours_peak'])} | {_pct(row['torch_peak'])} | {bandwidth[0]} | "
            f"{bandwidth[1]} | {build} |"
        )
    lines.append("")
    return lines
