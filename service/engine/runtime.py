"""ONNX Runtime: one session per model, providers from settings, IO binding on CUDA.

`ModelRuntime.load()` checks that the graph's inputs and outputs are the ones the manifest
declares, then warms the session; `run(feeds)` is synchronous and is only ever called from a
worker thread (the batcher's), never on the event loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import onnxruntime as ort

from imagegen.contract.manifest import Manifest
from service.errors import ModelLoadError

log = logging.getLogger("imagegen.runtime")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
_ONNX_TYPES = {"z": "tensor(float)", "label": "tensor(int64)"}
OUTPUT = "image"


class ProviderError(Exception):
    """The requested execution provider cannot be had (e.g. provider=cuda on a machine without one)."""


def resolve_provider(setting: str) -> str:
    """'cuda' or 'cpu' for a settings value of auto / cuda / cpu. Sessions confirm it at load."""
    available = ort.get_available_providers()
    if setting == "cpu":
        return "cpu"
    if setting == "cuda" and CUDA not in available:
        raise ProviderError(
            f"provider=cuda but onnxruntime offers only {available}; install onnxruntime-gpu "
            "(pip install 'imagegen[gpu]') on a machine with an NVIDIA GPU, or use provider=cpu"
        )
    return "cuda" if CUDA in available else "cpu"


@dataclass
class RuntimeOptions:
    provider: str  # "cuda" or "cpu", from resolve_provider
    strict: bool  # True when the user asked for cuda explicitly: a CPU fallback is an error
    cpu_threads: int


def _dims(shape: list[object]) -> list[int]:
    """ONNX shape with symbolic / unknown dims as -1, as the manifest writes them."""
    return [d if isinstance(d, int) and d > 0 else -1 for d in shape]


class ModelRuntime:
    """A loaded, verified, warmed ONNX Runtime session for one model."""

    def __init__(self, session: ort.InferenceSession, manifest: Manifest, provider: str) -> None:
        self.session = session
        self.manifest = manifest
        self.provider = provider
        self._use_binding = provider == "cuda"

    @classmethod
    def load(cls, onnx_path: Path, manifest: Manifest, options: RuntimeOptions) -> ModelRuntime:
        session, got = open_session(onnx_path, options, manifest.id)
        _check_signature(session, manifest)
        runtime = cls(session, manifest, got)
        runtime.warm()
        return runtime

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """One session run: feeds as the manifest declares them -> float32 NCHW images."""
        if self._use_binding:
            binding = self.session.io_binding()
            for name, value in feeds.items():
                binding.bind_cpu_input(name, value)
            binding.bind_output(OUTPUT, "cuda")
            self.session.run_with_iobinding(binding)
            return cast(np.ndarray, binding.copy_outputs_to_cpu()[0])  # onnxruntime is untyped
        return cast(np.ndarray, self.session.run([OUTPUT], feeds)[0])

    def warm(self) -> None:
        """Run once so the first request pays no allocation or kernel-selection cost; check the output."""
        feeds: dict[str, np.ndarray] = {}
        if "z" in self.manifest.inputs:
            feeds["z"] = np.zeros((2, self.manifest.latent_dim), dtype=np.float32)
        if "label" in self.manifest.inputs:
            feeds["label"] = np.zeros(2, dtype=np.int64)
        try:
            out = self.run(feeds)
        except Exception as exc:
            # The library's words (and any path in them) go to the log; clients see ours.
            log.warning("model %s: warm-up run failed: %s", self.manifest.id, _first_line(exc))
            raise ModelLoadError("warm-up run failed (details in the server log)") from exc
        image = self.manifest.image
        expected = (2, image.channels, image.height, image.width)
        if out.shape != expected:
            raise ModelLoadError(f"warm-up output shape {out.shape}, manifest says {expected}")
        if not np.isfinite(out).all():
            raise ModelLoadError("warm-up output contains NaN or infinity")


def open_session(onnx_path: Path, options: RuntimeOptions, model_id: str) -> tuple[ort.InferenceSession, str]:
    """An ONNX Runtime session of `onnx_path` on the provider of `options` ("cuda" or "cpu", the
    one it got); with provider=auto a CUDA provider that cannot start means CPU. Every session of
    the service (models and their encoders) is made here."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = options.cpu_threads
    # One batch at a time per model: parallelism comes from the batch, not from inter-op threads.
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    providers: list[object] = [CPU]
    if options.provider == "cuda":
        providers = [(CUDA, {"cudnn_conv_algo_search": "HEURISTIC"}), CPU]
    try:
        session = _session(onnx_path, so, providers)
    except ModelLoadError:
        if options.provider != "cuda" or options.strict:
            raise
        session = _session(onnx_path, so, [CPU])
    got = "cuda" if session.get_providers()[0] == CUDA else "cpu"
    if got != options.provider:
        if options.strict:
            raise ModelLoadError(f"provider=cuda requested but the session runs on {session.get_providers()}")
        log.warning("model %s: CUDA unavailable for this session, running on CPU", model_id)
    return session, got


def _session(onnx_path: Path, so: ort.SessionOptions, providers: list[object]) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(onnx_path), sess_options=so, providers=providers)
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
        # onnxruntime's message names the absolute path: it goes to the log, not to clients.
        name = f"{onnx_path.parent.name}/{onnx_path.name}"
        log.warning("onnxruntime cannot load %s: %s", onnx_path, _first_line(exc))
        raise ModelLoadError(f"onnxruntime cannot load {name} (details in the server log)") from exc


def _check_signature(session: ort.InferenceSession, manifest: Manifest) -> None:
    """The graph's inputs/outputs must be exactly the manifest's names, dims and dtypes."""
    graph_inputs = {i.name: i for i in session.get_inputs()}
    if set(graph_inputs) != set(manifest.inputs):
        raise ModelLoadError(
            f"manifest inputs {sorted(manifest.inputs)} do not match the ONNX graph's {sorted(graph_inputs)}"
        )
    for name, node in graph_inputs.items():
        if _dims(node.shape) != manifest.inputs[name]:
            raise ModelLoadError(
                f"input {name}: manifest dims {manifest.inputs[name]}, ONNX graph {_dims(node.shape)}"
            )
        if node.type != _ONNX_TYPES[name]:
            raise ModelLoadError(f"input {name}: ONNX type {node.type}, expected {_ONNX_TYPES[name]}")
    graph_outputs = {o.name: o for o in session.get_outputs()}
    if OUTPUT not in graph_outputs:
        raise ModelLoadError(f"the ONNX graph has no output {OUTPUT!r} (outputs: {sorted(graph_outputs)})")
    dims = _dims(graph_outputs[OUTPUT].shape)
    if dims != manifest.outputs[OUTPUT]:
        # Exporters sometimes leave spatial dims symbolic; only a contradiction is an error.
        if len(dims) != 4 or any(
            d not in (-1, m) for d, m in zip(dims, manifest.outputs[OUTPUT], strict=True)
        ):
            raise ModelLoadError(f"output image: manifest dims {manifest.outputs[OUTPUT]}, ONNX graph {dims}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
