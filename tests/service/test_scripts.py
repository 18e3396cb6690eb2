"""The curl examples in scripts/ run against the live server and write what they say they write."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.service.conftest import REPO, Server, decode_png

SCRIPTS = sorted(
    p for p in (REPO / "scripts").glob("*.sh") if not p.name.startswith("_")
)  # _common.sh is sourced
EXPECTED = {
    "generate.sh": ["generate-3.png", "generate-3-grid.png", "generate-class.png"],
    "sample.sh": ["sample-42.png", "sample-grid.png", "sample-random.png"],
    "images.sh": ["images.json", "images.npy"],
    "models.sh": ["models.json", "model.json"],
    "metrics.sh": ["metrics.txt"],
}


def test_every_endpoint_has_a_script() -> None:
    assert {p.name for p in SCRIPTS} >= {
        "generate.sh",
        "sample.sh",
        "images.sh",
        "models.sh",
        "health.sh",
        "metrics.sh",
        "errors.sh",
    }
    for script in SCRIPTS:
        text = script.read_text()
        assert os.access(script, os.X_OK), f"{script.name} is not executable"
        assert "set -euo pipefail" in text, script.name


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_runs_against_the_server(
    script: Path, server: Server, conditional: dict, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "IMAGEGEN_URL": server.url,
        "IMAGEGEN_OUT_DIR": str(tmp_path),
        "MODEL": conditional["id"],
    }
    done = subprocess.run(
        ["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for name in EXPECTED.get(script.name, []):
        assert (tmp_path / name).stat().st_size > 0, name
        if name.endswith(".png"):
            assert decode_png((tmp_path / name).read_bytes()).size > 0
        if name.endswith(".npy"):
            assert np.load(tmp_path / name).dtype == np.float32
    if script.name == "sample.sh":
        assert "-> 304" in done.stdout
    if script.name == "errors.sh":
        assert "HTTP 5" not in done.stdout and done.stdout.count("-> HTTP 4") == 7
