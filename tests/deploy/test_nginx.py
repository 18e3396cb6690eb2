"""The reverse proxy and what compose exposes (issue 16, rows 6 and 11).

nginx (official image) stands in front of each imagegen service; its config is checked by
`nginx -t` when nginx is installed here (`apt-get install nginx`), and its limits are compared
with the service's settings. Compose publishes the service only through the proxy, Prometheus
and Grafana only on 127.0.0.1, and Grafana's admin password only from the environment.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from service.settings import Settings

TEMPLATE = Path("deploy/nginx/templates/default.conf.template")


def _directive(config: str, name: str) -> str:
    match = re.search(rf"^\s*{name}\s+([^;]+);", config, re.MULTILINE)
    assert match, f"{name} missing from the nginx config"
    return match.group(1).strip()


def _seconds(value: str) -> float:
    assert value.endswith("s"), value
    return float(value[:-1])


def _rendered(root: Path, upstream: str) -> str:
    """What the image's entrypoint renders: ${IMAGEGEN_UPSTREAM} replaced, nginx's $vars kept."""
    return (root / TEMPLATE).read_text().replace("${IMAGEGEN_UPSTREAM}", upstream)


def test_nginx_accepts_the_config(root: Path, tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )
    if nginx is None:
        pytest.skip("nginx is not installed (apt-get install -y nginx): `nginx -t` cannot run")
    (tmp_path / "logs").mkdir()
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "default.conf").write_text(_rendered(root, "127.0.0.1:8000"))
    # The image's nginx.conf in miniature: the template lands in the http block via conf.d.
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  include {tmp_path}/conf.d/*.conf;\n}}\n"
    )
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    # A control: nginx -t does reject a broken copy.
    (tmp_path / "conf.d" / "default.conf").write_text(
        _rendered(root, "127.0.0.1:8000") + "\nbogus_directive 1;\n"
    )
    broken = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert broken.returncode != 0


def test_proxy_limits_are_the_services_own(root: Path) -> None:
    config = (root / TEMPLATE).read_text()
    defaults = Settings.model_fields
    assert _seconds(_directive(config, "client_header_timeout")) == defaults["header_timeout"].default
    assert _seconds(_directive(config, "keepalive_timeout")) == defaults["keepalive_timeout"].default
    assert _directive(config, "client_max_body_size") == "1m"
    if "max_body_bytes" in defaults:
        assert defaults["max_body_bytes"].default == 1 << 20
    assert _directive(config, "server_tokens") == "off"
    assert re.search(r"limit_conn\s+per_client\s+\d+;", config)
    assert _directive(config, "proxy_buffering") == "on"


def test_services_are_reached_only_through_the_proxy(compose: dict, root: Path) -> None:
    services = compose["services"]
    for app, proxy in (("imagegen", "proxy"), ("imagegen-cpu", "proxy-cpu")):
        assert "ports" not in services[app], f"{app} must not publish a host port: the proxy does"
        expose = services[app]["expose"]
        assert services[proxy]["environment"]["IMAGEGEN_UPSTREAM"] == f"{app}:{expose[0]}"
        assert services[proxy]["image"].startswith("nginx:")  # the official image
        assert "./deploy/nginx/templates:/etc/nginx/templates:ro" in services[proxy]["volumes"]
        assert re.search(r"listen\s+8080;", (root / TEMPLATE).read_text())
        assert str(services[proxy]["ports"][0]).endswith(":8080")


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
    for name in ("imagegen", "imagegen-cpu"):
        service = compose["services"][name]
        grace = _seconds(service["stop_grace_period"])
        configured = float(service["environment"].get("IMAGEGEN_GRACEFUL_TIMEOUT", default))
        # uvicorn's bound + the batchers' drain + process exit must fit before SIGKILL.
        assert configured + 5 <= grace, f"{name}: graceful {configured}s vs stop grace {grace}s"
