"""The model repository on disk: scan `<models_dir>/<id>/manifest.json`, validate, verify sha256.

This module only reads files; it loads no session. A model whose manifest does not parse, whose
id does not match its folder, whose ONNX file is missing or has the wrong sha256, or whose Triton
config.pbtxt does not describe it (service/store/config_check.py) is returned with a reason, so the
registry can report it and serve the others.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from imagegen.contract.manifest import MANIFEST_NAME, Manifest, sha256_file
from imagegen.contract.triton_config import CONFIG_NAME
from service.store.config_check import config_problem

log = logging.getLogger("imagegen.repository")


@dataclass(frozen=True)
class RepositoryEntry:
    """One folder of the repository: a valid manifest + verified ONNX path, or the reason it is not."""

    id: str
    directory: Path
    manifest: Manifest | None = None
    onnx_path: Path | None = None
    error: str | None = None


def scan(models_dir: Path) -> list[RepositoryEntry]:
    """Every model folder under `models_dir`, sorted by id. A missing folder is an empty repository."""
    if not models_dir.is_dir():
        return []
    entries = []
    for directory in sorted(p for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (directory / MANIFEST_NAME).is_file():
            continue  # not a model folder (e.g. a scratch directory)
        entries.append(check(directory))
    return entries


def check(directory: Path) -> RepositoryEntry:
    """Validate one model folder: manifest schema, id == folder name, ONNX present, sha256 matches."""
    model_id = directory.name
    try:
        manifest = Manifest.read(directory)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "manifest"
        return RepositoryEntry(model_id, directory, error=f"invalid manifest: {where}: {first['msg']}")
    except OSError as exc:  # str(exc) would name the absolute path: the reason is public
        reason = exc.strerror or "I/O error"
        return RepositoryEntry(model_id, directory, error=f"unreadable manifest: {reason}")
    except ValueError:
        return RepositoryEntry(model_id, directory, error="invalid manifest: not UTF-8 JSON")
    if manifest.id != model_id:
        return RepositoryEntry(
            model_id, directory, error=f"manifest id {manifest.id!r} does not match folder {model_id!r}"
        )
    onnx_path = manifest.onnx_path(directory)
    if not onnx_path.is_file():
        return RepositoryEntry(model_id, directory, manifest, error=f"missing ONNX file {manifest.onnx.file}")
    digest = sha256_file(onnx_path)
    if digest != manifest.onnx.sha256:
        return RepositoryEntry(
            model_id,
            directory,
            manifest,
            error=f"sha256 mismatch for {manifest.onnx.file}: manifest {manifest.onnx.sha256[:12]}..., "
            f"file {digest[:12]}...",
        )
    problem = _config_problem(directory, manifest)
    if problem is not None:
        return RepositoryEntry(model_id, directory, manifest, error=problem)
    return RepositoryEntry(model_id, directory, manifest, onnx_path)


def _config_problem(directory: Path, manifest: Manifest) -> str | None:
    """Triton's config.pbtxt checked against the manifest (service/store/config_check.py); a folder
    without one is served (repositories exported before it existed), and logged once."""
    path = directory / CONFIG_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        _log_missing_config_once(directory.name)
        return None
    except OSError as exc:  # str(exc) would name the absolute path: the reason is public
        return f"unreadable {CONFIG_NAME}: {exc.strerror or 'I/O error'}"
    except UnicodeDecodeError:
        return f"{CONFIG_NAME} is not UTF-8 text"
    return config_problem(text, manifest)


_missing_config_logged: set[str] = set()  # model ids, so a rescan or load does not repeat it


def _log_missing_config_once(model_id: str) -> None:
    if model_id not in _missing_config_logged:
        _missing_config_logged.add(model_id)
        log.warning(
            "model %s has no %s: served, but Triton pointed at this repository would have to guess "
            "its configuration (write it with python -m imagegen.contract.triton_config <models dir>)",
            model_id,
            CONFIG_NAME,
        )


def model_folders(models_dir: Path) -> list[str]:
    """The ids of the model folders under `models_dir` (those with a manifest), sorted."""
    if not models_dir.is_dir():
        return []
    return sorted(
        p.name for p in models_dir.iterdir() if not p.name.startswith(".") and (p / MANIFEST_NAME).is_file()
    )


def read_manifests(models_dir: Path) -> dict[str, Manifest | None]:
    """Each model folder's manifest (None when it does not parse), read without verifying
    anything: enough to resolve a model name, at the cost of one small file per model."""
    manifests: dict[str, Manifest | None] = {}
    for model_id in model_folders(models_dir):
        try:
            manifests[model_id] = Manifest.read(models_dir / model_id)
        except (OSError, ValueError):  # pydantic's ValidationError is a ValueError
            manifests[model_id] = None
    return manifests
