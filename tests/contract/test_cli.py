"""The `imagegen` command in a serving-only install: serve and sample work; train, export and
evaluate say in one line which extra to install and exit 2 (no traceback)."""

from __future__ import annotations

import re
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# the [train] extra's packages (and their dist-info), not onnxruntime, which serving needs
TRAINING_ONLY = re.compile(r"^(torch|torchgen|functorch|onnx|onnxscript|scipy|safetensors)([-_.]|$)")


@pytest.fixture(scope="module")
def serving_only_site(tmp_path_factory) -> Path:
    """A site-packages of links to everything installed except the [train] extra's packages."""
    target = tmp_path_factory.mktemp("serving-site")
    for packages in site.getsitepackages():
        for entry in Path(packages).iterdir():
            name = entry.name.lower()
            if TRAINING_ONLY.match(name) or entry.suffix == ".pth":
                continue
            link = target / entry.name
            if not link.exists():
                link.symlink_to(entry)
    return target


def _imagegen(site_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # -S: no site-packages but ours, so the [train] extra is really absent
    env = {"PYTHONPATH": f"{REPO}:{site_dir}", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-S", "-m", "imagegen.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_serving_only_site_really_lacks_torch(serving_only_site: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-S", "-c", "import torch"],
        env={"PYTHONPATH": str(serving_only_site)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "No module named 'torch'" in done.stderr


@pytest.mark.parametrize("command", ["train", "export", "evaluate"])
def test_training_commands_help_works_without_torch(serving_only_site: Path, command: str) -> None:
    done = _imagegen(serving_only_site, command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: imagegen {command} ")
    assert "--data-dir" in done.stdout
    assert (
        done.stdout.strip()
        .splitlines()[-1]
        .endswith("pip install -e '.[train]' (from the repository's checkout)")
    )


@pytest.mark.parametrize("command", ["train", "export", "evaluate"])
def test_training_commands_name_the_extra_and_exit_2(serving_only_site: Path, command: str) -> None:
    done = _imagegen(serving_only_site, command, "--data-dir", "x")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    # The hint installs from the checkout: `pip install 'imagegen[train]'` would fetch an
    # unrelated package of that name from the index.
    assert len(lines) == 1 and "pip install -e '.[train]'" in lines[0], done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", ["serve", "sample"])
def test_serving_commands_work_without_torch(serving_only_site: Path, command: str) -> None:
    done = _imagegen(serving_only_site, command, "--help")
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    environ = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGEN_")} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "imagegen.cli", *args], capture_output=True, text=True, timeout=60, env=environ
    )


def test_version() -> None:
    done = _cli("--version")
    assert done.returncode == 0 and re.match(r"^imagegen \d+\.\d+", done.stdout), done.stdout


def test_serve_refuses_a_missing_or_empty_models_dir_naming_path_and_flag(tmp_path: Path) -> None:
    missing = _cli("serve", "--models-dir", str(tmp_path / "nowhere"), "--port", "0")
    assert missing.returncode == 2
    assert str((tmp_path / "nowhere").resolve()) in missing.stderr and "--models-dir" in missing.stderr
    empty = _cli("serve", "--port", "0", env={"IMAGEGEN_MODELS_DIR": str(tmp_path)})
    assert empty.returncode == 2
    assert "holds no model folder" in empty.stderr and "IMAGEGEN_MODELS_DIR" in empty.stderr


def test_errors_name_the_flag_the_user_typed() -> None:
    done = _cli("serve", "--provider", "gpu")
    assert done.returncode == 2
    assert "--provider:" in done.stderr and "IMAGEGEN_PROVIDER" not in done.stderr
    by_env = _cli("serve", env={"IMAGEGEN_PROVIDER": "gpu"})
    assert by_env.returncode == 2 and "IMAGEGEN_PROVIDER:" in by_env.stderr


def test_a_misspelt_variable_is_warned_about_with_the_closest_name(tmp_path: Path) -> None:
    done = _cli("serve", "--models-dir", str(tmp_path / "nowhere"), env={"IMAGEGEN_MODEL_DIR": "models"})
    assert "IMAGEGEN_MODEL_DIR is not a setting" in done.stderr
    assert "did you mean IMAGEGEN_MODELS_DIR?" in done.stderr
