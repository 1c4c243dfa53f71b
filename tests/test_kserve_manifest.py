"""The KServe InferenceService example: structure and agreement with the served protocol.

KServe's custom resource schema is not vendored offline, so this checks the fields KServe and
clconv both rely on, and that the probe paths it names return 200 from a live server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import yaml

MANIFEST = Path(__file__).resolve().parent.parent / "deploy" / "kserve" / "inferenceservice.yaml"


def load_manifest() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(MANIFEST.read_text())
    return document


def test_inferenceservice_kind_and_container() -> None:
    document = load_manifest()
    assert document["apiVersion"] == "serving.kserve.io/v1beta1"
    assert document["kind"] == "InferenceService"
    containers = document["spec"]["predictor"]["containers"]
    assert len(containers) == 1
    container = containers[0]
    assert container["name"] == "kserve-container"
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["CLCONV_PORT"] == "8080"
    assert container["ports"][0]["containerPort"] == 8080


def test_inferenceservice_probes_return_ok(client: httpx.Client) -> None:
    container = load_manifest()["spec"]["predictor"]["containers"][0]
    for probe in ("readinessProbe", "livenessProbe"):
        path = container[probe]["httpGet"]["path"]
        assert container[probe]["httpGet"]["port"] == 8080
        assert client.get(path).status_code == 200, path
