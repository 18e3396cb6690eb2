"""What compose exposes, and that it is secure by default (issue 16 rows 6 and 11; issue 26
item 6 and row 14).

The service publishes nothing itself: clients reach it only through nginx, over TLS; the gRPC
port is neither enabled nor published; the monitoring listens on 127.0.0.1; and no service can
start without the API key that the one-shot `secrets` service makes on first start (or is given).
The file is read as YAML and, where a Compose CLI is installed, as that CLI resolves it; the two
shell scripts compose runs are run here for real.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from service.settings import Settings
from tests.deploy.proxy import FIRST_START, SERVE_WITH_KEY, TEMPLATE, TLS_PORT, first_start, require_openssl
from tests.deploy.test_compose import _compose_cli

APPS = {"imagegen": "proxy", "imagegen-cpu": "proxy-cpu"}
KEY_VOLUME = "imagegen-secrets"
KEY_FILE = "/run/imagegen/api_key"


def _seconds(value: str) -> float:
    assert value.endswith("s"), value
    return float(value[:-1])


def _resolved(root: Path, profile: list[str], env: dict[str, str] | None = None) -> dict:
    """The file as the installed Compose CLI resolves it (variables, defaults, short syntax)."""
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no `docker compose` plugin or docker-compose installed (optional)")
    result = subprocess.run(
        [*cli, "-f", str(root / "docker-compose.yml"), *profile, "config"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GRAFANA_ADMIN_PASSWORD": "a-test-password", **(env or {})},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return yaml.safe_load(result.stdout)


def _published(service: dict) -> list[tuple[str, int]]:
    """(host address, container port) of each published port, in short or long syntax."""
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.append((port.get("host_ip", ""), int(port["target"])))
        else:
            parts = str(port).split("/")[0].split(":")
            ports.append((parts[0] if len(parts) == 3 else "", int(parts[-1])))
    return ports


def _check_exposure(services: dict) -> None:
    grpc_port = Settings.model_fields["grpc_port"].default
    assert grpc_port is None, "gRPC is on by default: compose would have to publish or route it"
    for name, service in services.items():
        env = service.get("environment") or {}
        assert "IMAGEGEN_GRPC_PORT" not in env, (
            f"{name} enables gRPC, which compose neither publishes nor routes"
        )
        for address, port in _published(service):
            if address == "127.0.0.1":
                continue
            # Beyond loopback only the proxies' TLS listener, on the port the template listens on.
            assert name in APPS.values() and port == TLS_PORT, f"{name} publishes {port} beyond loopback"
    for app in APPS:
        if app in services:
            assert "ports" not in services[app], f"{app} must not publish a port: the proxy does"
            assert [str(e) for e in services[app]["expose"]] == ["8000"], "only the HTTP port, to the network"


def test_only_the_tls_proxies_publish_beyond_loopback_and_no_grpc_port(compose: dict) -> None:
    _check_exposure(compose["services"])
    assert re.search(rf"^\s*listen\s+{TLS_PORT}\s+ssl;", TEMPLATE.read_text(), re.MULTILINE)


@pytest.mark.parametrize("profile", [[], ["--profile", "cpu"]], ids=["default", "cpu-profile"])
def test_the_resolved_file_publishes_the_same(root: Path, profile: list[str]) -> None:
    _check_exposure(_resolved(root, profile)["services"])


def test_services_are_reached_only_through_the_proxy(compose: dict) -> None:
    services = compose["services"]
    for app, proxy in APPS.items():
        expose = services[app]["expose"]
        assert services[proxy]["environment"]["IMAGEGEN_UPSTREAM"] == f"{app}:{expose[0]}"
        assert services[proxy]["image"].startswith("nginx:")  # the official image
        assert "./deploy/nginx/templates:/etc/nginx/templates:ro" in services[proxy]["volumes"]
        assert str(services[proxy]["ports"][0]).endswith(f":{TLS_PORT}")
        # The health check speaks TLS too: there is no plain-HTTP listener to ask.
        assert f"https://127.0.0.1:{TLS_PORT}/healthz" in services[proxy]["healthcheck"]["test"]


def _waits_for_secrets(service: dict) -> bool:
    return service.get("depends_on", {}).get("secrets") == {"condition": "service_completed_successfully"}


def test_no_service_starts_without_the_key(compose: dict) -> None:
    services = compose["services"]
    secrets = services["secrets"]
    assert secrets["restart"] == "no"
    assert secrets["entrypoint"][:2] == ["/bin/sh", "/deploy/first-start.sh"]
    assert (
        f"./{FIRST_START.relative_to(FIRST_START.parents[2])}:/deploy/first-start.sh:ro" in secrets["volumes"]
    )
    assert f"{KEY_VOLUME}:{Path(KEY_FILE).parent}" in secrets["volumes"]
    for app in APPS:
        service = services[app]
        # The entry point reads the key file and refuses to start without one
        # (test_serve_with_key_refuses_without_a_key); the command runs only after it.
        assert service["entrypoint"] == ["/bin/sh", "/deploy/serve-with-key.sh", KEY_FILE]
        assert service["command"] == ["imagegen", "serve"]
        assert "./deploy/compose/serve-with-key.sh:/deploy/serve-with-key.sh:ro" in service["volumes"]
        assert f"{KEY_VOLUME}:{Path(KEY_FILE).parent}:ro" in service["volumes"]
        assert _waits_for_secrets(service), f"{app} may start before the key exists"
        assert "IMAGEGEN_API_KEY" not in service["environment"]  # one source: the file
    for proxy in APPS.values():
        assert _waits_for_secrets(services[proxy]), f"{proxy} may start before its certificate exists"
    assert KEY_VOLUME in compose["volumes"]


def test_prometheus_scrapes_with_the_key(compose: dict, root: Path) -> None:
    prometheus = compose["services"]["prometheus"]
    assert f"{KEY_VOLUME}:{Path(KEY_FILE).parent}:ro" in prometheus["volumes"]
    config = yaml.safe_load((root / "deploy/prometheus/prometheus.yml").read_text())
    for job in config["scrape_configs"]:
        if job["job_name"] in APPS:
            assert job["authorization"] == {"type": "Bearer", "credentials_file": KEY_FILE}


def test_a_mounted_certificate_folder_replaces_the_volume(root: Path) -> None:
    services = _resolved(root, ["--profile", "cpu"], {"IMAGEGEN_TLS_DIR": "./my-certificates"})["services"]
    expected = str(root / "my-certificates")
    for name in ("proxy", "proxy-cpu", "secrets"):
        mounts = [
            v
            for v in services[name]["volumes"]
            if str(v).endswith(("/etc/nginx/tls:ro", "/etc/nginx/tls:rw"))
        ]
        if not mounts:  # long syntax
            mounts = [
                f"{v['source']}:{v['target']}" for v in services[name]["volumes"] if isinstance(v, dict)
            ]
            mounts = [m for m in mounts if m.endswith(":/etc/nginx/tls")]
        assert mounts and str(mounts[0]).startswith(expected + ":"), services[name]["volumes"]


def test_serve_with_key_refuses_without_a_key(tmp_path: Path) -> None:
    show = ["sh", "-c", 'printf %s "$IMAGEGEN_API_KEY"']
    empty = tmp_path / "empty"
    empty.write_text("")
    for missing in (tmp_path / "absent", empty):
        result = subprocess.run(
            ["sh", str(SERVE_WITH_KEY), str(missing), *show], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 78 and result.stdout == ""
        assert "refusing to serve without one" in result.stderr
    key = tmp_path / "api_key"
    key.write_text("k3y")
    result = subprocess.run(
        ["sh", str(SERVE_WITH_KEY), str(key), *show],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "IMAGEGEN_API_KEY": "another"},  # the file wins
    )
    assert result.returncode == 0 and result.stdout == "k3y", result.stderr


def _fingerprint(cert: Path) -> str:
    openssl = require_openssl()
    result = subprocess.run(
        [openssl, "x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout.strip()


def test_first_start_makes_the_key_and_certificate_once(tmp_path: Path) -> None:
    first = first_start(tmp_path)
    key = first.api_key
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert key in first.log  # printed on the start that made it...
    mode = stat.S_IMODE(first.key_file.stat().st_mode)
    assert mode == 0o440, oct(mode)
    if os.geteuid() == 0:  # the service's user owns it, Prometheus's group reads it
        assert (first.key_file.stat().st_uid, first.key_file.stat().st_gid) == (10001, 65534)
    assert stat.S_IMODE((first.tls_dir / "key.pem").stat().st_mode) == 0o600
    fingerprint = _fingerprint(first.cert)
    assert fingerprint.split("=")[1] in first.log

    again = first_start(tmp_path)
    assert again.api_key == key and key not in again.log  # ...and never again
    assert _fingerprint(again.cert) == fingerprint

    given = first_start(tmp_path, {"IMAGEGEN_API_KEY": "a-key-the-deployer-chose"})
    assert given.api_key == "a-key-the-deployer-chose" and "a-key-the-deployer-chose" not in given.log


def test_first_start_uses_a_mounted_certificate_as_it_is(tmp_path: Path) -> None:
    made = first_start(tmp_path / "elsewhere", {"IMAGEGEN_TLS_NAME": "imagegen.example"})
    mounted = tmp_path / "tls"
    mounted.mkdir()
    for name in ("cert.pem", "key.pem"):
        (mounted / name).write_bytes((made.tls_dir / name).read_bytes())
    used = first_start(tmp_path)
    assert _fingerprint(used.cert) == _fingerprint(made.cert)
    assert "imagegen.example" in used.log  # it reports the certificate it found


def test_monitoring_listens_on_loopback_and_grafana_has_no_default_password(compose: dict) -> None:
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        for port in services[name]["ports"]:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    password = services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    # `${VAR:?message}`: compose refuses to start without it; `${VAR:-admin}` would be a default.
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", password), password


def test_graceful_stop_ends_inside_the_stop_grace_period(compose: dict) -> None:
    default = Settings.model_fields["graceful_timeout"].default
    for name in APPS:
        service = compose["services"][name]
        grace = _seconds(service["stop_grace_period"])
        configured = float(service["environment"].get("IMAGEGEN_GRACEFUL_TIMEOUT", default))
        # uvicorn's bound + the batchers' drain + process exit must fit before SIGKILL.
        assert configured + 5 <= grace, f"{name}: graceful {configured}s vs stop grace {grace}s"
