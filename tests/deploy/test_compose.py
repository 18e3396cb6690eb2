"""docker-compose.yml, Prometheus and Grafana: valid, self-consistent, and complete on disk.

No Docker engine runs here, so the stack is checked statically: the compose file against the
Compose specification's JSON schema (vendored in check-jsonschema as `vendor.compose-spec`),
every file it builds from or mounts, the Prometheus targets against the compose services, and
the Grafana dashboard's queries against the metric names of docs/design.md.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# docs/design.md's metrics, with their labels. Histograms also expose _bucket{le}, _sum, _count.
METRICS = {
    "imagegen_requests_total": {"route", "model", "status"},
    "imagegen_request_seconds": {"route", "model"},
    "imagegen_inference_seconds": {"model", "provider"},
    "imagegen_batch_size": {"model"},
    "imagegen_queue_depth": {"model"},
    "imagegen_images_total": {"model"},
    "imagegen_model_ready": {"model"},
    # Beyond docs/design.md: a request's time split into waiting and encoding (service/metrics.py).
    "imagegen_queue_seconds": {"model"},
    "imagegen_encode_seconds": {"model"},
    # and the requests the early-retry hold paced (service/dataplane/admission.py)
    "imagegen_early_retries_held_total": {"route"},
}
# no dashboard panel yet
BEYOND_DESIGN = {"imagegen_queue_seconds", "imagegen_encode_seconds", "imagegen_early_retries_held_total"}
HISTOGRAMS = {
    "imagegen_request_seconds",
    "imagegen_inference_seconds",
    "imagegen_batch_size",
    "imagegen_queue_seconds",
    "imagegen_encode_seconds",
}
# Labels Prometheus adds to every scraped series (scrape job, target and our static label).
TARGET_LABELS = {"job", "instance", "image"}
GRAFANA_DIR = Path("deploy/grafana")


def _check_jsonschema() -> str:
    beside_python = Path(sys.executable).with_name("check-jsonschema")
    found = str(beside_python) if beside_python.exists() else shutil.which("check-jsonschema")
    assert found, "check-jsonschema not found: pip install -e '.[dev]' installs it"
    return found


def _validate_compose(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_check_jsonschema(), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _container_port(service: dict) -> int:
    """The port the container listens on: its published port's container side, or what it exposes."""
    if "ports" not in service:
        return int(str(service["expose"][0]))
    host_and_container = service["ports"][0]
    return int(str(host_and_container).split(":")[-1].split("/")[0])


def _host_port(service: dict) -> int:
    """`[address:]host:container` -> host."""
    return int(str(service["ports"][0]).split(":")[-2])


def _default(value: str) -> str:
    """`${VAR:-default}` -> what compose uses when VAR is unset; anything else as it is."""
    match = re.fullmatch(r"\$\{\w+:-([^}]*)\}", value)
    return match.group(1) if match else value


def _volume_sources(service: dict) -> list[tuple[str, str]]:
    """(source, container path) of each volume, sources with their defaults filled in."""
    sources = []
    for volume in service.get("volumes", []):
        source, target = re.split(r":(?=/)", volume, maxsplit=1)
        sources.append((_default(source), target.split(":")[0]))
    return sources


def _bind_mounts(service: dict) -> list[tuple[str, str]]:
    """(host path, container path) of each bind mount (a volume whose source is a path)."""
    return [(source, target) for source, target in _volume_sources(service) if source.startswith((".", "/"))]


def _dashboard(root: Path) -> dict:
    return json.loads((root / GRAFANA_DIR / "dashboards" / "imagegen.json").read_text())


def _exprs(dashboard: dict) -> list[str]:
    return [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]


def test_compose_matches_the_compose_spec_schema(root: Path) -> None:
    result = _validate_compose(root / "docker-compose.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def _compose_cli() -> list[str] | None:
    """A Compose implementation that can parse the file without an engine, if one is installed."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


@pytest.mark.parametrize("profile", [[], ["--profile", "cpu"]], ids=["default", "cpu-profile"])
def test_compose_cli_accepts_the_file(root: Path, profile: list[str]) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no `docker compose` plugin or docker-compose installed (optional)")
    result = subprocess.run(
        [*cli, "-f", str(root / "docker-compose.yml"), *profile, "config", "--quiet"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GRAFANA_ADMIN_PASSWORD": "a-test-password"},  # required, no default
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_a_broken_compose_file(root: Path, tmp_path: Path) -> None:
    # A control: the schema check must actually catch mistakes (here a misspelt key).
    broken = yaml.safe_load((root / "docker-compose.yml").read_text())
    broken["services"]["proxy"]["portz"] = broken["services"]["proxy"].pop("ports")
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    assert _validate_compose(path).returncode != 0


def test_services_and_profiles(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == {
        "secrets",
        "imagegen",
        "imagegen-cpu",
        "proxy",
        "proxy-cpu",
        "prometheus",
        "grafana",
    }
    assert "profiles" not in services["secrets"], "every profile needs the key and the certificate"
    assert "profiles" not in services["imagegen"], "the GPU service is the default stack"
    assert "profiles" not in services["proxy"]
    assert services["imagegen-cpu"]["profiles"] == ["cpu"] and services["proxy-cpu"]["profiles"] == ["cpu"]
    assert "profiles" not in services["prometheus"] and "profiles" not in services["grafana"]
    # Prometheus must start with either imagegen service, so it may not depend on one.
    assert set(services["prometheus"].get("depends_on", {})) <= {"secrets"}
    assert _host_port(services["proxy"]) != _host_port(services["proxy-cpu"])


def test_gpu_service_reserves_one_nvidia_gpu(compose: dict) -> None:
    devices = compose["services"]["imagegen"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "deploy" not in compose["services"]["imagegen-cpu"]


def test_builds_name_existing_dockerfile_targets(compose: dict, root: Path, dockerfile_stages) -> None:
    expected = {"imagegen": "gpu", "imagegen-cpu": "cpu"}
    for name, target in expected.items():
        build = compose["services"][name]["build"]
        context = root / build["context"]
        assert (context / build.get("dockerfile", "Dockerfile")).is_file()
        assert build["target"] == target and target in dockerfile_stages
        port = _container_port(compose["services"][name])
        expose = [e.args for e in dockerfile_stages[target].all("EXPOSE")]
        assert str(port) in " ".join(expose), f"{name} publishes {port}, the image exposes {expose}"
    assert dockerfile_stages["<default>"] is dockerfile_stages["gpu"]


def test_every_service_has_a_healthcheck(compose: dict) -> None:
    for name, service in compose["services"].items():
        if service.get("restart") == "no":
            continue  # a one-shot job (secrets): others wait for its exit status instead
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name}: no healthcheck"
    for name in ("imagegen", "imagegen-cpu"):
        assert compose["services"][name]["healthcheck"]["test"] == ["CMD", "python", "/app/healthcheck.py"]


def test_mounted_files_exist(compose: dict, root: Path) -> None:
    mounts = [m for service in compose["services"].values() for m in _bind_mounts(service)]
    assert mounts
    for source, _ in mounts:
        assert (root / source).exists(), f"compose mounts {source}, which does not exist"
    for volume, _ in (m for service in compose["services"].values() for m in _volume_sources(service)):
        assert volume.startswith((".", "/")) or volume in compose.get("volumes", {}), volume


def test_prometheus_scrapes_both_services(compose: dict, root: Path) -> None:
    prometheus = compose["services"]["prometheus"]
    mounted = dict(_bind_mounts(prometheus))
    config_path = "./deploy/prometheus/prometheus.yml"
    assert mounted[config_path] == "/etc/prometheus/prometheus.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    config = yaml.safe_load((root / config_path).read_text())
    targets = {
        target: job.get("metrics_path", "/metrics")
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    for name in ("imagegen", "imagegen-cpu"):
        target = f"{name}:{_container_port(compose['services'][name])}"
        assert targets.get(target) == "/metrics", f"Prometheus does not scrape {target}/metrics"


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (optional: Debian's `prometheus` package has it)")
    return promtool


def test_promtool_accepts_the_config(root: Path) -> None:
    result = subprocess.run(
        [_promtool(), "check", "config", "--syntax-only", str(root / "deploy/prometheus/prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_parses_every_dashboard_query(root: Path, tmp_path: Path) -> None:
    # Each panel query becomes a recording rule, so Prometheus's own PromQL parser checks it;
    # Grafana's variables are replaced by what Grafana would substitute.
    promtool = _promtool()
    exprs = [e.replace("$__rate_interval", "1m").replace("$model", ".*") for e in _exprs(_dashboard(root))]
    rules = {
        "groups": [
            {"name": "dashboard", "rules": [{"record": f"q{i}", "expr": e} for i, e in enumerate(exprs)]}
        ]
    }
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and f"{len(exprs)} rules found" in result.stdout, (
        result.stdout + result.stderr
    )


def test_grafana_provisioning_points_at_prometheus_and_the_dashboards(compose: dict, root: Path) -> None:
    grafana = compose["services"]["grafana"]
    mounted = dict(_bind_mounts(grafana))
    assert mounted["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboards_in_container = mounted["./deploy/grafana/dashboards"]

    datasource_files = sorted((root / GRAFANA_DIR / "provisioning" / "datasources").glob("*.yml"))
    assert datasource_files
    datasources = [d for f in datasource_files for d in yaml.safe_load(f.read_text())["datasources"]]
    prometheus_port = _container_port(compose["services"]["prometheus"])
    assert {"type": "prometheus", "url": f"http://prometheus:{prometheus_port}"}.items() <= datasources[
        0
    ].items()

    provider_files = sorted((root / GRAFANA_DIR / "provisioning" / "dashboards").glob("*.yml"))
    assert provider_files
    providers = [p for f in provider_files for p in yaml.safe_load(f.read_text())["providers"]]
    assert [p["options"]["path"] for p in providers] == [dashboards_in_container]

    uids = {d["uid"] for d in datasources}
    dashboard = _dashboard(root)
    for panel in dashboard["panels"]:
        for ref in [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]:
            assert ref is None or ref["uid"] in uids, (
                f"panel {panel['title']!r} uses unknown datasource {ref}"
            )


def test_dashboard_has_the_required_panels(root: Path) -> None:
    dashboard = _dashboard(root)
    titles = " | ".join(panel["title"].lower() for panel in dashboard["panels"])
    for wanted in ("request rate", "p50", "p99", "batch size", "queue depth", "images per second"):
        assert wanted in titles, f"no panel for {wanted!r}: {titles}"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exprs = " ".join(_exprs(dashboard))
    for metric in METRICS.keys() - BEYOND_DESIGN:
        assert metric in exprs, f"{metric} is on no panel"


def test_dashboard_queries_use_only_known_metrics_and_labels(root: Path) -> None:
    dashboard = _dashboard(root)
    variables = [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    for expr in _exprs(dashboard) + variables:
        for name in re.findall(r"\b(imagegen_\w+)", expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert base in METRICS, f"unknown metric {name} in {expr}"
            assert base == name or base in HISTOGRAMS, f"{name}: {base} is not a histogram"
            labels = METRICS[base] | TARGET_LABELS | ({"le"} if name.endswith("_bucket") else set())
            selector = re.search(rf"{name}\{{([^}}]*)\}}", expr)
            used = re.findall(r"(\w+)\s*[=!]~?", selector.group(1)) if selector else []
            assert set(used) <= labels, f"{name} has no label(s) {set(used) - labels}: {expr}"
        for grouping in re.findall(r"\bby \(([^)]*)\)", expr):
            group_labels = {label.strip() for label in grouping.split(",")}
            names = {re.sub(r"_(bucket|sum|count)$", "", n) for n in re.findall(r"\b(imagegen_\w+)", expr)}
            allowed = set.union(*(METRICS[n] for n in names)) | TARGET_LABELS | {"le"}
            assert group_labels <= allowed, f"grouping by unknown label(s) {group_labels - allowed}: {expr}"


def test_dashboard_metrics_are_the_ones_the_service_registers() -> None:
    # The service's own metric definitions (torch-free), so a rename there fails here too.
    from service.metrics import Metrics

    kinds = {"counter": "_total", "histogram": "", "gauge": ""}
    registered = {}
    for family in Metrics().registry.collect():
        registered[family.name + kinds[family.type]] = family.type
    assert set(registered) == set(METRICS), f"service registers {sorted(registered)}"
    assert {name for name, kind in registered.items() if kind == "histogram"} == HISTOGRAMS
