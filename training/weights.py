"""Training weights kept beside each exported model version, so a shipped model can be trained on.

`imagegen export` writes `models/<id>/<version>/training.safetensors`: every net the family
trains (generator, discriminator, the generator's moving average, a vae's encoder: all of
`Model.state_dict()`), with the checkpoint's family, configs and progress as JSON metadata.
`imagegen train --resume-from models/<id>` rebuilds the model from it and continues (more
epochs, or new images: fine-tuning). Optimiser moments are not kept (they would triple the
file); Adam rebuilds them within a few hundred steps.

safetensors holds tensors and strings only, so loading it cannot run code (unlike unpickling).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from imagegen.contract.manifest import MANIFEST_NAME, Manifest
from training.checkpoint import build_model
from training.families import get_family
from training.families.base import FamilyModel

WEIGHTS_NAME = "training.safetensors"
# checkpoint fields kept as metadata (everything but tensors and optimiser/RNG state)
METADATA_FIELDS = ("family", "model_config", "run_config", "dataset", "epoch", "step", "duration_s", "torch")


class WeightsError(ValueError):
    """No usable training weights where they were asked for."""


def save_weights(path: Path, model: FamilyModel, ckpt: dict[str, Any]) -> Path:
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    metadata = {key: json.dumps(ckpt[key]) for key in METADATA_FIELDS if key in ckpt}
    save_file(tensors, str(path), metadata=metadata)
    return path


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
    expected = model.state_dict()
    for name, tensor in state.items():
        if name in expected and expected[name].shape != tensor.shape:
            raise WeightsError(
                f"{path}: {name} is {tuple(tensor.shape)}, the model with these settings wants "
                f"{tuple(expected[name].shape)}"
            )
    try:
        model.load_state_dict(state)  # a gan switching its moving average on starts it here
    except RuntimeError as exc:
        raise WeightsError(f"{path}: {str(exc).splitlines()[0]}") from exc
    return model, {**meta, "path": str(path)}
