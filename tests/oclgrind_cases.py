"""Run one small request per kernel file on the Oclgrind simulator and print a JSON report.

Run by ``test_oclgrind.py`` in a subprocess whose ``OCL_ICD_VENDORS`` names only Oclgrind, so
Oclgrind is the one OpenCL platform. Prints ``{"sources": [...], "cases": [...]}`` on stdout;
Oclgrind writes what it detects to stderr.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import numpy as np

from clconv.engine import Engine
from clconv.runtime import programs
from clconv.settings import Settings

# Reflect padding is left out: Debian's Oclgrind 21.10 cannot run the ``llvm.abs.i32``
# intrinsic that its compiler emits for ``abs()`` in pad.cl, and fails to create the kernel.
CASES: list[tuple[str, dict[str, Any]]] = [
    ("conv2d", {"input": (1, 3, 6, 6), "weight": (4, 3, 3, 3), "padding": 1,
                "padding_mode": "replicate"}),
    ("conv2d", {"input": (1, 3, 6, 6), "weight": (4, 3, 3, 3), "padding": 1,
                "padding_mode": "circular"}),
    ("conv2d", {"input": (1, 8, 6, 6), "weight": (16, 8, 3, 3), "bias": (16,), "padding": 1}),
    ("conv2d", {"input": (2, 16, 8, 8), "weight": (32, 16, 3, 3), "stride": 2}),
    ("conv2d", {"input": (1, 4, 5, 7), "weight": (6, 4, 1, 1), "bias": (6,)}),
    ("conv2d", {"input": (1, 4, 5, 5), "weight": (4, 1, 3, 3), "groups": 4, "dilation": 2,
                "padding": 2}),
    ("conv2d", {"input": (1, 20, 5, 3), "weight": (6, 20, 1, 1), "bias": (6,),
                "algorithm": "conv2d_pointwise_local"}),
    ("conv2d", {"input": (1, 4, 7, 6), "weight": (4, 4, 3, 3), "bias": (4,), "padding": 1,
                "algorithm": "conv2d_winograd_f4"}),
    ("conv2d", {"input": (1, 4, 9, 7), "weight": (8, 2, 3, 3), "groups": 2, "dilation": 2,
                "padding": 2, "algorithm": "conv2d_winograd_f2"}),
    ("conv_transpose2d", {"input": (1, 4, 4, 4), "weight": (4, 3, 3, 3), "stride": 2,
                          "output_padding": 1}),
    ("conv_transpose2d", {"input": (1, 4, 3, 5), "weight": (4, 2, 2, 3), "groups": 2,
                          "bias": (4,)}),
    ("conv_transpose2d", {"input": (1, 4, 4, 4), "weight": (4, 3, 3, 3), "stride": 2,
                          "padding": 1, "algorithm": "conv_transpose2d_gather"}),
    ("depthwise_separable_conv2d", {"input": (1, 4, 5, 5), "depthwise_weight": (4, 1, 3, 3),
                                    "pointwise_weight": (6, 4, 1, 1), "padding": 1}),
]  # fmt: skip


def tensor(shape: tuple[int, ...], rng: np.random.Generator) -> dict[str, Any]:
    data = rng.standard_normal(math.prod(shape)).tolist()
    return {"shape": list(shape), "dtype": "float32", "data": data}


def main() -> int:
    sources: set[str] = set()
    build_kernel = programs.ProgramCache.kernel

    def recording_kernel(self: programs.ProgramCache, source: str, *args: Any) -> Any:
        sources.add(source)
        return build_kernel(self, source, *args)

    programs.ProgramCache.kernel = recording_kernel  # type: ignore[method-assign]
    engine = Engine(Settings(warmup=False))
    engine.start()
    rng = np.random.default_rng(0)
    report: list[dict[str, Any]] = []
    for op, fields in CASES:
        body = {
            key: tensor(value, rng) if isinstance(value, tuple) else value
            for key, value in fields.items()
        }
        result = engine.run(op, body)
        report.append(
            {
                "op": op,
                "device": result["device"]["id"],
                "kernels": [kernel["name"] for kernel in result["kernels"]],
                "finite": bool(np.all(np.isfinite(result["output"]["data"]))),
            }
        )
    json.dump({"sources": sorted(sources), "cases": report}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
