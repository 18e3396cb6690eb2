"""One torch module to one ONNX graph, checked against torch (used by `imagegen export` and
`training.selection`).

Each graph is exported in eval mode with a dynamic batch axis, then run through ONNX Runtime
and compared with torch on random inputs; a graph that differs by more than the tolerance,
depends on its batch, or leaves [0, 1] is refused.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from training.families.base import ExportSpec

OPSET = 17
TOLERANCE = 1e-4


class ExportError(Exception):
    """The exported graph is not faithful to the checkpoint, or the repository is unusable."""


def export_graph(spec: ExportSpec, path: Path) -> None:
    dynamic = {name: {0: "batch"} for name in (*spec.input_names, *spec.output_names)}
    spec.module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            spec.module,
            spec.example_inputs,
            str(path),
            input_names=list(spec.input_names),
            output_names=list(spec.output_names),
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )
    onnx.checker.check_model(onnx.load(str(path)))


def random_feeds(
    spec: ExportSpec, batch: int, rng: np.random.Generator, num_classes: int
) -> dict[str, np.ndarray]:
    feeds: dict[str, np.ndarray] = {}
    for name, example in zip(spec.input_names, spec.example_inputs, strict=True):
        if example.dtype == torch.int64:
            feeds[name] = rng.integers(0, num_classes, size=batch).astype(np.int64)
        elif name == "image":
            feeds[name] = rng.random((batch, *example.shape[1:]), dtype=np.float32)
        else:
            feeds[name] = rng.standard_normal((batch, *example.shape[1:]), dtype=np.float32)
    return feeds


def check_parity(
    spec: ExportSpec, path: Path, num_classes: int, seed: int = 0, tolerance: float = TOLERANCE
) -> float:
    """Max |ORT - torch| over random inputs; raises ExportError past the tolerance, when an
    image differs alone and inside a batch, or (for images) leaves [0, 1]."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    worst = 0.0
    for batch in (1, 7):
        feeds = random_feeds(spec, batch, rng, num_classes)
        got = session.run(list(spec.output_names), feeds)
        with torch.no_grad():
            want = spec.module(*[torch.from_numpy(feeds[n]) for n in spec.input_names])
        want = want if isinstance(want, tuple) else (want,)
        for name, g, w in zip(spec.output_names, got, want, strict=True):
            diff = float(np.max(np.abs(g - w.numpy())))
            worst = max(worst, diff)
            if diff > tolerance:
                raise ExportError(
                    f"{path.name}: output {name!r} differs from torch by {diff:.2e} (> {tolerance})"
                )
            if name == "image" and (g.min() < 0.0 or g.max() > 1.0):
                raise ExportError(f"{path.name}: image values leave [0, 1] ({g.min():.3f}..{g.max():.3f})")
        if batch > 1:  # batch independence: the last item alone equals the last item of the batch
            alone = session.run(list(spec.output_names), {k: v[-1:] for k, v in feeds.items()})
            for name, a, g in zip(spec.output_names, alone, got, strict=True):
                if np.max(np.abs(a[0] - g[-1])) > max(tolerance, 1e-6):
                    raise ExportError(f"{path.name}: output {name!r} depends on the rest of the batch")
    return worst
