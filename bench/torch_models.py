"""The shipped models as torch eager modules, with the very weights of their ONNX files.

The manifest records the family and its config (`training.config`); the family rebuilds the
sampler, and its state is filled from the ONNX initializers, which the exporter names after
the module's parameters. Nothing is read from training runs, so this works on a fresh clone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from imagegen.contract.manifest import Manifest
from imagegen.contract.sampling import latents
from training.checkpoint import build_model


class WeightsMismatch(Exception):
    pass


def _initializers(path: Path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def load_torch_sampler(model_dir: Path) -> tuple[torch.nn.Module, Manifest]:
    """(sampler in eval mode, manifest) for `models/<id>`."""
    manifest = Manifest.read(model_dir)
    family_model = build_model(manifest.family, manifest.training.config)
    sampler = family_model.sampler().eval()
    weights = _initializers(manifest.onnx_path(model_dir))
    state = sampler.state_dict()
    used: set[str] = set()
    missing = []
    for name, tensor in state.items():
        array = weights.get(name)
        if array is not None and tuple(array.shape) == tuple(tensor.shape):
            state[name] = torch.from_numpy(array.copy()).to(tensor.dtype)
            used.add(name)
        elif not name.endswith("num_batches_tracked"):
            missing.append(name)
    for name in missing[:]:
        # The exporter turns a Linear into MatMul with the weight transposed under a generic
        # name; take it when exactly one unused initializer has the transposed shape.
        shape = tuple(state[name].shape)
        found = [k for k, a in weights.items()
                 if k not in used and len(shape) == 2 and a.shape == shape[::-1]]
        if len(found) == 1:
            state[name] = torch.from_numpy(weights[found[0]].T.copy()).to(state[name].dtype)
            used.add(found[0])
            missing.remove(name)
    if missing:
        raise WeightsMismatch(
            f"{manifest.id}: {len(missing)} tensors not found in the ONNX file, e.g. {missing[:3]}"
        )
    sampler.load_state_dict(state)
    return sampler, manifest


def torch_inputs(manifest: Manifest, seeds: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, ...]:
    feeds = []
    if "z" in manifest.inputs:
        feeds.append(torch.from_numpy(latents((int(s) for s in seeds), manifest.latent_dim)))
    if "label" in manifest.inputs:
        feeds.append(torch.from_numpy(labels.astype(np.int64)))
    return tuple(feeds)
