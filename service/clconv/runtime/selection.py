"""Per-device algorithm selection for conv2d stages.

The selector answers "which algorithm computes this stage on this device": the algorithm the
request named, else the rule of ``clconv.core.algorithms.rule_choice`` for the device's profile.
"""

from __future__ import annotations

import logging

from clconv.core.algorithms import rule_choice
from clconv.core.planner import Choice, Chooser
from clconv.core.stages import ConvStage
from clconv.runtime.devices import Device

logger = logging.getLogger("clconv.selection")


def device_profile(device: Device) -> str:
    """The rule's device profile: "gpu" for GPUs and accelerators, else "cpu"."""
    return "gpu" if device.type_name in ("gpu", "accelerator") else "cpu"


class Selector:
    """Chooses conv2d algorithms per device."""

    def chooser(self, device: Device, dtype: str) -> Chooser:
        """A function that picks the algorithm of a stage that will run on ``device`` in
        ``dtype``, and names where the choice came from."""
        profile = device_profile(device)

        def choose(stage: ConvStage) -> Choice:
            return Choice(rule_choice(stage, profile), "rule")

        return choose
