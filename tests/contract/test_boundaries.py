"""The package boundaries of docs/design.md: `service/` and `training/` never import each other, the
contract imports neither (nor torch), and the serving side runs without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def imported_packages(package: str) -> dict[str, set[str]]:
    """Top-level packages each module of `package` imports (statically, lazy imports included)."""
    return {mod: {name.split(".")[0] for name in names} for mod, names in imported_modules(package).items()}


def _offenders(package: str, forbidden: set[str]) -> list[str]:
    return [f"{mod} imports {sorted(names & forbidden)}" for mod, names in imported_packages(package).items()
            if names & forbidden]


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("service", {"training", "torch"}), ("training", {"service"})],
)
def test_one_side_never_imports_the_other(package: str, forbidden: set[str]) -> None:
    assert _offenders(package, forbidden) == []


def test_the_contract_imports_neither_side_nor_torch() -> None:
    contract = {
        mod: names for mod, names in imported_packages("imagegen").items() if "contract" in mod
    }
    assert contract, "no contract modules found"
    bad = {mod: names & {"service", "training", "torch", "onnx"} for mod, names in contract.items()}
    assert {mod: names for mod, names in bad.items() if names} == {}


def test_the_checker_sees_a_forbidden_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the check above must be able to fail: a module importing the other side is reported
    (tmp_path / "service").mkdir()
    (tmp_path / "service" / "bad.py").write_text("def f():\n    from training.trainer import train\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert _offenders("service", {"training"}) == ["service/bad.py imports ['training']"]


def test_serving_loads_no_torch_and_no_training_at_run_time() -> None:
    code = (
        "import sys, imagegen.cli, imagegen.contract.manifest, imagegen.contract.sampling, "
        "service.app, service.commands, service.store.lifecycle; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'training')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def imported_modules(folder: str) -> dict[str, set[str]]:
    """Full names of the modules each module under `folder` imports (lazy imports included)."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / folder).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        found[str(path.relative_to(REPO))] = names
    return found


def _layer_offenders(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{mod} imports {bad}"
        for mod, names in imported_modules(folder).items()
        if (bad := sorted(n for n in names if n.split(".")[0] in forbidden or n.startswith(forbidden)))
    ]


# The service's layers, inner to outer: engine -> store -> data plane -> protocol / HTTP edge. A
# layer imports only those inside it, and nothing below the HTTP edge knows the web framework.
_WEB = ("fastapi", "starlette", "uvicorn", "service.http", "service.app")


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("service/engine", (*_WEB, "service.store", "service.dataplane", "service.oip", "grpc")),
        ("service/store", (*_WEB, "service.dataplane", "service.oip", "grpc")),
        ("service/dataplane", (*_WEB, "service.oip", "grpc")),
        ("service/oip", _WEB),
    ],
)
def test_each_layer_imports_only_the_layers_inside_it(folder: str, forbidden: tuple[str, ...]) -> None:
    assert _layer_offenders(folder, forbidden) == []


def test_the_layer_check_sees_an_outward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "service" / "engine").mkdir(parents=True)
    (tmp_path / "service" / "engine" / "bad.py").write_text("from service.http.delivery import CALL\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert _layer_offenders("service/engine", _WEB) == [
        "service/engine/bad.py imports ['service.http.delivery', 'service.http.delivery.CALL']"
    ]
