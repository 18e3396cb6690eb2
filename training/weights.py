"""Training weights kept beside each exported model version, so a shipped model can be trained on.

`imagegen export` writes `models/<id>/<version>/training.safetensors`: every net the family
trains (generator, discriminator, the generator's moving average, a vae's encoder: all of
`Model.state_dict()`), with the checkpoint's family, configs and progress as JSON metadata.
`imagegen train --resume-from models/<id>` rebuilds the model from it and continues (more
epochs, or new images: fine-tuning). Optimiser moments are not kept (they would triple the
file); Adam rebuilds them within a few hundred steps. A gan's or evaluator's moving-average generator
is what the ONNX file beside it draws, weight for weight, so when it is there it is not stored
twice: the metadata names the file (`average_in`, with its sha256) and loading reads the average
back from it (an evaluator-emoji file fell from 11.1 to 7.8 MB, under the 10 MB file limit).

safetensors holds tensors and strings only, so loading it cannot run code (unlike unpickling).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from imagegen.contract.manifest import MANIFEST_NAME, Manifest, sha256_file
from training.checkpoint import build_model
from training.families import get_family
from training.families.adversarial import GeneratorCritic
from training.families.base import FamilyModel
from training.families.layers import ConvGenerator

WEIGHTS_NAME = "training.safetensors"
# checkpoint fields kept as metadata (everything but tensors and optimiser/RNG state)
METADATA_FIELDS = ("family", "model_config", "run_config", "dataset", "epoch", "step", "duration_s", "torch")


class WeightsError(ValueError):
    """No usable training weights where they were asked for."""


AVERAGE = "generator_ema."


def onnx_weights(path: Path) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in onnx.load(str(path)).graph.initializer}


def generator_weights(model: GeneratorCritic, path: Path) -> dict[str, np.ndarray]:
    """The ONNX file's value of each generator weight and batch-norm statistic, by torch name;
    raises WeightsError naming what is missing or mis-shaped.

    Every parameter and buffer keeps its torch name except a bias-free Linear, which the
    exporter turns into a MatMul on the transposed weight under a generated name (matched here
    by its transposed shape, only when that match is unique)."""
    weights = onnx_weights(path)
    state = {k: v for k, v in model.generator.state_dict().items() if not k.endswith("num_batches_tracked")}
    found = {k: weights[f"generator.{k}"] for k in state if f"generator.{k}" in weights}
    unnamed = {k: v for k, v in weights.items() if not k.startswith("generator.")}
    for name, tensor in state.items():
        if name not in found and tensor.dim() == 2:
            matches = [k for k, v in unnamed.items() if v.shape == tuple(reversed(tensor.shape))]
            if len(matches) == 1:
                found[name] = unnamed.pop(matches[0]).T
    wrong = [k for k in state if k not in found or tuple(found[k].shape) != tuple(state[k].shape)]
    if wrong:
        raise WeightsError(f"{path} lacks or mis-shapes {len(wrong)} generator weights (first: {wrong[:3]})")
    return found


def copy_weights(generator: ConvGenerator, found: dict[str, np.ndarray]) -> None:
    with torch.no_grad():
        for name, tensor in generator.state_dict().items():
            if name in found:
                tensor.copy_(torch.tensor(found[name]))


def holds_average(model: FamilyModel, onnx_path: Path) -> bool:
    """Whether the ONNX file holds the model's moving-average generator exactly."""
    if not isinstance(model, GeneratorCritic) or model.generator_ema is None:
        return False
    try:
        found = generator_weights(model, onnx_path)
    except WeightsError:
        return False
    average = model.generator_ema.state_dict()
    return all(np.array_equal(found[name], average[name].detach().cpu().numpy()) for name in found)


def save_weights(path: Path, model: FamilyModel, ckpt: dict[str, Any], beside: Path | None = None) -> Path:
    """Every net's weights and the run's progress; `beside`, the ONNX file in the same version,
    keeps the moving average instead of this file when it holds that average exactly."""
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    metadata = {key: json.dumps(ckpt[key]) for key in METADATA_FIELDS if key in ckpt}
    if beside is not None and holds_average(model, beside):
        tensors = {name: t for name, t in tensors.items() if not name.startswith(AVERAGE)}
        relative = os.path.relpath(beside, path.parent)
        metadata["average_in"] = json.dumps({"file": relative, "sha256": sha256_file(beside)})
    save_file(tensors, str(path), metadata=metadata)
    return path


def load_average(model: FamilyModel, path: Path, average_in: dict[str, str]) -> None:
    """Read the moving average that `save_weights` left in the ONNX file beside `path`."""
    if not isinstance(model, GeneratorCritic) or model.generator_ema is None:
        return  # trained on without the average (--set ema=0)
    onnx_path = path.parent / average_in["file"]
    if not onnx_path.exists() or sha256_file(onnx_path) != average_in["sha256"]:
        raise WeightsError(
            f"{path}: its generator's moving average is kept in {onnx_path}, which is "
            f"{'changed' if onnx_path.exists() else 'missing'}; keep the version's files together"
        )
    copy_weights(model.generator_ema, generator_weights(model, onnx_path))


def weights_path(source: str | Path) -> Path:
    """`models/<id>` (its current version), `models/<id>/<version>` or the file itself."""
    path = Path(source)
    if path.is_file():
        return path
    if (path / MANIFEST_NAME).exists():
        manifest = Manifest.read(path)
        path = path / str(manifest.version)
    candidate = path / WEIGHTS_NAME
    if not candidate.exists():
        raise WeightsError(
            f"no training weights at {candidate}: models exported before weights were kept beside "
            "them cannot be trained on (train from scratch, or export a run again)"
        )
    return candidate


def read_metadata(path: Path) -> dict[str, Any]:
    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
    missing = {"family", "model_config"} - set(raw)
    if missing:
        raise WeightsError(f"{path}: metadata lacks {sorted(missing)}; not written by imagegen export")
    return {key: json.loads(value) for key, value in raw.items()}


def first_shape_mismatch(saved: Mapping[str, torch.Tensor], wanted: Mapping[str, torch.Tensor]) -> str | None:
    """The first saved weight whose shape the model built now does not take, named with both
    shapes; None when every shape matches."""
    for name, tensor in saved.items():
        if name in wanted and wanted[name].shape != tensor.shape:
            return (
                f"{name} is {tuple(tensor.shape)}, the model with these settings wants "
                f"{tuple(wanted[name].shape)}"
            )
    return None


def load_weights(
    source: str | Path, config_changes: dict[str, Any] | None = None, family: str | None = None
) -> tuple[FamilyModel, dict[str, Any]]:
    """(model with the saved weights, the saved metadata). `config_changes` may change fields
    that do not change a weight's shape (lr, augment, ema ...); a shape change is refused,
    naming the first mismatched weight."""
    path = weights_path(source)
    meta = read_metadata(path)
    if family is not None and meta["family"] != family:
        raise WeightsError(f"{source} is a {meta['family']} model, not {family}")
    # fields added to the family since these weights were saved (a VAE's critic) may be set too
    fields = dataclasses.fields(get_family(meta["family"]).Config)
    known = set(meta["model_config"]) | {f.name for f in fields}
    unknown = set(config_changes or {}) - known
    if unknown:
        raise WeightsError(
            f"--set {sorted(unknown)}: not fields of the {meta['family']} model in {path}; "
            f"known: {sorted(known)}"
        )
    config = {**meta["model_config"], **(config_changes or {})}
    model = build_model(meta["family"], config)
    state = load_file(str(path))
    mismatch = first_shape_mismatch(state, model.state_dict())
    if mismatch:
        raise WeightsError(f"{path}: {mismatch}")
    try:
        model.load_state_dict(state)  # a gan switching its moving average on starts it here
    except RuntimeError as exc:
        raise WeightsError(f"{path}: {str(exc).splitlines()[0]}") from exc
    if "average_in" in meta:
        load_average(model, path, meta["average_in"])
    return model, {**meta, "path": str(path)}
