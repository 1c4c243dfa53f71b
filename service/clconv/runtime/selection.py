"""Per-device algorithm selection for conv2d stages.

The selector decides which algorithm computes a stage on a device. The algorithm the request
named comes first (``select_algorithms`` sets it before the selector runs). Next comes the
winner stored in the tuning database for the stage's shape class, along its fallback chain
(``tuned``, ``tuned-architecture``, ``vendor-default``; see ``clconv.runtime.tuning``). Last
comes ``clconv.core.algorithms.rule_choice`` for the device's profile. With a lazy tuner, a
shape class without an entry for this exact device is queued for tuning, and the request runs
with the best choice available now.
"""

from __future__ import annotations

import logging

from clconv.core.algorithms import applicable, rule_choice
from clconv.core.planner import Choice, Chooser
from clconv.core.stages import ConvStage
from clconv.runtime.devices import Device
from clconv.runtime.tuner import LazyTuner
from clconv.runtime.tuning import LEVEL_EXACT, DeviceKey, TuningDatabase, shape_class

logger = logging.getLogger("clconv.selection")

SOURCE_RULE = "rule"


def device_profile(device: Device) -> str:
    """Return the rule's device profile: "gpu" for GPUs and accelerators, "pocl" for PoCL's
    CPU device (which does not vectorise across work-items), else "cpu"."""
    if device.type_name in ("gpu", "accelerator"):
        return "gpu"
    if "portable computing language" in str(device.platform.name).lower():
        return "pocl"
    return "cpu"


class Selector:
    """Chooses conv2d algorithms per device, from the tuning database when there is one."""

    def __init__(
        self, database: TuningDatabase | None = None, tuner: LazyTuner | None = None
    ) -> None:
        self.database = database
        self.tuner = tuner

    def chooser(self, device: Device, dtype: str, *, lazy_tuning: bool = True) -> Chooser:
        """Return a function that picks the algorithm of a stage that will run on ``device`` in
        ``dtype``, and names where the choice came from. With ``lazy_tuning`` false it queues
        nothing for the lazy tuner."""
        profile = device_profile(device)
        database = self.database
        if database is None:

            def choose_by_rule(stage: ConvStage) -> Choice:
                return Choice(rule_choice(stage, profile), SOURCE_RULE)

            return choose_by_rule

        key = DeviceKey.of(device)
        # The simulator is far too slow to time kernels on; it still reads the database.
        tuner = None if device.is_simulator or not lazy_tuning else self.tuner

        def choose(stage: ConvStage) -> Choice:
            shape = shape_class(stage, dtype).key
            found = database.lookup(key, shape, applicable(stage))
            if tuner is not None and (found is None or found.level != LEVEL_EXACT):
                tuner.submit(device, stage, dtype, profile)
            if found is None:
                return Choice(rule_choice(stage, profile), SOURCE_RULE)
            return Choice(found.winner, found.level)

        return choose
