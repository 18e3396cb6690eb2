"""Start a training run from the weights of an exported model (`imagegen train --init-from`).

What a family exports (its sampler: the generator, or the vae's decoder) is what gets loaded;
nets that are not exported (a gan's discriminator, a vae's encoder) start fresh. The ONNX
file keeps the torch names of the weights, with two exceptions matched only when the match is
unique: a module reached through a wrapper may keep its own, shorter path (matched by suffix
and shape), and a bias-free Linear becomes a MatMul on the transposed weight under a generated
name (matched by transposed shape).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from imagegen.contract.manifest import MANIFEST_NAME, Manifest


class WarmStartError(ValueError):
    """The exported model does not hold the weights this run's sampler needs."""


def _onnx_weights(path: Path) -> dict[str, np.ndarray]:
    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:  # noqa: BLE001 - onnx raises several types for a bad file
        raise WarmStartError(f"cannot read {path} as ONNX: {exc}") from exc
    return {init.name: numpy_helper.to_array(init) for init in graph.initializer}


def _is_bookkeeping(name: str) -> bool:
    return name.endswith("num_batches_tracked")


def load_exported_weights(sampler: nn.Module, path: str | Path) -> list[str]:
    """Copy every parameter and buffer of `sampler` from the ONNX file at `path` (in place)
    and return their names. Raises WarmStartError naming what is missing or mis-shaped, so
    a model of another size or family is refused rather than loaded in part."""
    path = exported_onnx_path(path)
    weights = _onnx_weights(path)
    state = {k: v for k, v in sampler.state_dict().items() if not _is_bookkeeping(k)}
    found: dict[str, np.ndarray] = {}
    for name, tensor in state.items():
        if name in weights:
            if tuple(weights[name].shape) != tuple(tensor.shape):
                raise WarmStartError(
                    f"{path}: {name} has shape {list(weights[name].shape)}, this run needs "
                    f"{list(tensor.shape)} (same family and size settings are required)"
                )
            found[name] = weights[name]
    unnamed = {k: v for k, v in weights.items() if k not in state}
    for name, tensor in state.items():
        if name in found:
            continue
        # a module reached through a wrapper keeps its own path in the file (prior.mu.weight
        # for the sampler's latent.prior.mu.weight)
        nested = [
            k for k, v in unnamed.items()
            if name.endswith("." + k) and tuple(v.shape) == tuple(tensor.shape)
        ]
        if len(nested) == 1:
            found[name] = unnamed.pop(nested[0])
        elif tensor.dim() == 2:
            want = tuple(reversed(tensor.shape))
            matches = [k for k, v in unnamed.items() if tuple(v.shape) == want]
            if len(matches) == 1:
                found[name] = unnamed.pop(matches[0]).T
    missing = [k for k in state if k not in found]
    if missing:
        raise WarmStartError(
            f"{path} lacks {len(missing)} of this run's {len(state)} sampler weights "
            f"(first: {missing[:3]}); export it from a run of the same family and size settings"
        )
    with torch.no_grad():
        for name, tensor in state.items():
            tensor.copy_(torch.tensor(found[name]))
    return list(state)


def exported_onnx_path(path: str | Path) -> Path:
    """The ONNX file meant by `path`: itself, or for a model directory (models/<id>) the file
    of its manifest's current version."""
    path = Path(path)
    return _current_onnx(path) if path.is_dir() else path


def _current_onnx(model_dir: Path) -> Path:
    if not (model_dir / MANIFEST_NAME).exists():
        raise WarmStartError(f"{model_dir} has no {MANIFEST_NAME}; pass a model directory or an .onnx file")
    return Manifest.read(model_dir).onnx_path(model_dir)
