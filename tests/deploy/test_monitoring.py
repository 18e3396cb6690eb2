"""The Grafana dashboard's queries against a real Prometheus scraping a real `imagegen serve`.

Optional: runs when a `prometheus` binary is found (PROMETHEUS_BIN, or on PATH; Debian's
`prometheus` package has one), else skips. It starts the service on the models in models/,
loads it with concurrent requests so the batcher forms batches, lets Prometheus scrape it every
second, and runs every dashboard query through the Prometheus HTTP API.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.deploy.test_compose import METRICS, _dashboard, _exprs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, deadline_s: float, process: subprocess.Popen | None = None) -> None:
    """Until `url` answers 200; fails at once if `process` (the server) exits first."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer 200 within {deadline_s} s")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def stack(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    prometheus = os.environ.get("PROMETHEUS_BIN") or shutil.which("prometheus")
    if not prometheus:
        pytest.skip("no prometheus binary (optional: PROMETHEUS_BIN or Debian's `prometheus` package)")
    if not any((root / "models").glob("*/manifest.json")):
        pytest.skip("no models in models/")
    work = tmp_path_factory.mktemp("monitoring")
    service_port, prometheus_port = _free_port(), _free_port()
    service_cmd = [sys.executable, "-m", "imagegen.cli", "serve", "--host", "127.0.0.1"]
    service_cmd += ["--port", str(service_port), "--models-dir", str(root / "models"), "--no-access-log"]
    service = subprocess.Popen(service_cmd, stdout=subprocess.DEVNULL, stderr=(work / "serve.log").open("w"))
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [
            {"job_name": "imagegen", "static_configs": [{"targets": [f"127.0.0.1:{service_port}"]}]}
        ],
    }
    (work / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    prom = subprocess.Popen(
        [
            prometheus,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(work / "prometheus.log").open("w"),
    )
    try:
        service_url, prometheus_url = (
            f"http://127.0.0.1:{service_port}",
            f"http://127.0.0.1:{prometheus_port}",
        )
        _wait(f"{service_url}/readyz", 120)
        _wait(f"{prometheus_url}/-/ready", 60)
        yield service_url, prometheus_url
    finally:
        _stop(prom)
        _stop(service)


async def _load(service_url: str, models: list[str], seconds: float) -> None:
    async with httpx.AsyncClient(base_url=service_url, timeout=60) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            calls = [client.get("/sample", params={"model": m, "seed": s}) for m in models for s in range(32)]
            calls.append(
                client.get("/sample", params={"model": "no-such-model"})
            )  # a 404 for the error panel
            await asyncio.gather(*calls)


def test_every_dashboard_query_returns_the_services_series(stack: tuple[str, str], root: Path) -> None:
    service_url, prometheus_url = stack
    listing = httpx.get(f"{service_url}/v1/models", timeout=10).json()
    models = [m["id"] for m in listing["models"]][:2]
    assert models, listing
    asyncio.run(_load(service_url, models, seconds=6))
    time.sleep(3)  # two more scrapes, so rate() sees the end of the load

    seen: set[str] = set()
    for expr in _exprs(_dashboard(root)):
        query = expr.replace("$__rate_interval", "30s").replace("$model", ".*")
        answer = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": query}, timeout=10).json()
        assert answer["status"] == "success", (query, answer)
        values = [float(series["value"][1]) for series in answer["data"]["result"]]
        if any(v == v for v in values):  # at least one non-NaN value
            seen |= {name for name in METRICS if name in query.replace("_bucket", "").replace("_sum", "")}
    assert seen == set(METRICS), f"no data for {set(METRICS) - seen}"
