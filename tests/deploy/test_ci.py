""".ci/run: the CI entry point installs in the right order and runs the README's test command."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def test_ci_script_is_strict_executable_bash(root: Path) -> None:
    script = root / ".ci" / "run"
    assert os.access(script, os.X_OK), ".ci/run must be executable"
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in text
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True, timeout=30).returncode == 0


def test_ci_installs_torch_first_then_dev_extra_then_runs_pytest(root: Path) -> None:
    text = (root / ".ci" / "run").read_text()
    torch = text.index('TORCH_VERSION="2.13.0"')
    torch_install = text.index('pip install --quiet "${torch_args[@]}"')
    dev_install = text.index("step \"install -e .[dev]\" .venv/bin/python -m pip install --quiet -e '.[dev]'")
    tests = text.index('step "pytest" .venv/bin/python -m pytest -q')
    assert torch < torch_install < dev_install < tests
    assert "IMAGEGEN_DATA_DIR" in text and "IMAGEGEN_SHARED" in text
