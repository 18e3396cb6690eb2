"""An inference request's payload, checked against its model: the Open Inference Protocol's
inputs (`z` FP32 [N, latent_dim], `label` INT64 [N]) as a TensorRequest, or the `seeds` (and
`labels`) parameters as the ImageRequest that /sample runs for the same seeds and classes.
Every mistake is a ProtocolError (`invalid`) naming what is wrong."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from imagegen.contract.sampling import MAX_SEED, default_labels
from service.engine.generation import ImageRequest, TensorRequest
from service.oip.errors import ProtocolError
from service.oip.tensors import Tensor
from service.oip.types import DATATYPES, InferRequest
from service.store.served import ServedModel

# Request parameters: ours, the transport's, and Triton client options that change nothing here.
PARAMETERS = frozenset(["seeds", "labels", "binary_data_output", "priority", "timeout"])
_SEPARATORS = re.compile(r"[\s,]+")


def read_payload(served: ServedModel, request: InferRequest, max_items: int) -> ImageRequest | TensorRequest:
    """The request's items for the model's batcher; ProtocolError when they are not valid."""
    payload, _ = Payloads(max_items)._payload(served, request)
    return payload


class Payloads:
    def __init__(self, max_items: int) -> None:
        self.max_items = max_items

    def _payload(
        self, served: ServedModel, request: InferRequest
    ) -> tuple[ImageRequest | TensorRequest, int]:
        unknown = sorted(set(request.parameters) - PARAMETERS)
        if unknown:
            raise ProtocolError(
                "invalid", f"unknown request parameter(s) {unknown[:5]}; known: {sorted(PARAMETERS)}"
            )
        inputs = self._inputs(served, request.inputs)
        seeds = self._int_list(request.parameters.get("seeds"), "seeds", 0, MAX_SEED)
        if seeds is None:
            if "labels" in request.parameters:
                raise ProtocolError(
                    "invalid", "the labels parameter goes with seeds; with z, send labels as the label input"
                )
            return self._tensor_request(served, inputs)
        return self._seed_request(served, inputs, seeds, request.parameters.get("labels"))

    def _inputs(self, served: ServedModel, tensors: list[Tensor]) -> dict[str, np.ndarray]:
        """Input name -> array, each an input of the model with the model's datatype."""
        manifest = served.require_manifest()
        found: dict[str, np.ndarray] = {}
        for tensor in tensors:
            if tensor.name not in manifest.inputs:
                raise ProtocolError(
                    "invalid",
                    f"model {served.id!r} has no input {tensor.name[:60]!r}; "
                    f"inputs: {sorted(manifest.inputs)}",
                )
            if tensor.name in found:
                raise ProtocolError("invalid", f"input {tensor.name!r} given more than once")
            expected = DATATYPES[tensor.name]
            if tensor.datatype != expected:
                raise ProtocolError(
                    "invalid", f"input {tensor.name!r} must be {expected}, got {tensor.datatype}"
                )
            found[tensor.name] = tensor.data
        return found

    def _tensor_request(
        self, served: ServedModel, inputs: dict[str, np.ndarray]
    ) -> tuple[TensorRequest, int]:
        manifest = served.require_manifest()
        missing = sorted(set(manifest.inputs) - set(inputs))
        if missing:
            raise ProtocolError(
                "invalid",
                f"missing input(s) {missing} of model {served.id!r} "
                "(or give the seeds parameter instead of z)",
            )
        feeds: dict[str, np.ndarray] = {}
        if "z" in inputs:
            z = inputs["z"]
            if z.ndim != 2 or z.shape[1] != manifest.latent_dim:
                raise ProtocolError(
                    "invalid", f"input 'z' must have shape [N, {manifest.latent_dim}], got {list(z.shape)}"
                )
            if not np.isfinite(z).all():
                raise ProtocolError("invalid", "input 'z' must be finite (no NaN or infinity)")
            feeds["z"] = np.ascontiguousarray(z, dtype=np.float32)
        if "label" in inputs:
            feeds["label"] = self._labels(served, inputs["label"])
        n = self._batch_size(feeds)
        return TensorRequest(feeds), n

    def _labels(self, served: ServedModel, label: np.ndarray) -> np.ndarray:
        # [N], or [N, 1] as Triton's config.pbtxt declares it (dims [1], reshaped to []).
        if label.ndim == 2 and label.shape[1] == 1:
            label = label[:, 0]
        if label.ndim != 1:
            raise ProtocolError(
                "invalid", f"input 'label' must have shape [N] or [N, 1], got {list(label.shape)}"
            )
        top = served.require_manifest().num_classes - 1
        if label.size and (label.min() < 0 or label.max() > top):
            raise ProtocolError("invalid", f"input 'label' values must be classes in [0, {top}]")
        return np.ascontiguousarray(label, dtype=np.int64)

    def _batch_size(self, feeds: dict[str, np.ndarray]) -> int:
        sizes = {name: len(value) for name, value in feeds.items()}
        if len(set(sizes.values())) > 1:
            raise ProtocolError("invalid", f"inputs differ in batch size: {sizes}")
        return self._check_n(next(iter(sizes.values())))

    def _check_n(self, n: int) -> int:
        if not 1 <= n <= self.max_items:
            raise ProtocolError(
                "invalid", f"a request holds 1 to {self.max_items} items (batch size), got {n}"
            )
        return n

    def _seed_request(
        self, served: ServedModel, inputs: dict[str, np.ndarray], seeds: list[int], labels_param: Any
    ) -> tuple[ImageRequest, int]:
        manifest = served.require_manifest()
        n = self._check_n(len(seeds))
        if "z" in inputs:
            raise ProtocolError("invalid", "give the z input or the seeds parameter, not both")
        labels = self._int_list(labels_param, "labels", 0, manifest.num_classes - 1)
        if labels is not None and "label" in inputs:
            raise ProtocolError("invalid", "give the label input or the labels parameter, not both")
        if labels is None and "label" in inputs:
            labels = self._labels(served, inputs["label"]).tolist()
        if labels is not None and not manifest.conditional:
            raise ProtocolError("invalid", f"model {served.id!r} is unconditional and takes no labels")
        if labels is None:
            labels = default_labels(seeds, manifest.num_classes)  # seed % num_classes, as /sample
        if len(labels) != n:
            raise ProtocolError("invalid", f"{len(labels)} labels for {n} seeds")
        return ImageRequest(tuple(seeds), tuple(labels), output="array"), n

    def _int_list(self, value: Any, name: str, low: int, high: int) -> list[int] | None:
        """A parameter holding integers: one int, a JSON list, or a string `"1,2,3"` (gRPC's
        parameters are scalars). None when absent."""
        if value is None:
            return None
        if isinstance(value, str):
            if len(value) > self.max_items * 22:
                raise ProtocolError("invalid", f"parameter {name!r} is too long")
            parts = [p for p in _SEPARATORS.split(value.strip().strip("[]")) if p]
            if not all(p.isascii() and p.isdigit() and len(p) <= 19 for p in parts):
                raise ProtocolError("invalid", f'parameter {name!r} must be integers, e.g. "1,2,3"')
            value = [int(p) for p in parts]
        elif isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise ProtocolError("invalid", f"parameter {name!r} must be an integer or a list of integers")
        if len(value) > self.max_items:
            raise ProtocolError("invalid", f"parameter {name!r}: at most {self.max_items} values")
        if not value:
            raise ProtocolError("invalid", f"parameter {name!r} is empty")
        if any(not low <= v <= high for v in value):
            raise ProtocolError("invalid", f"parameter {name!r}: values must be in [{low}, {high}]")
        return value
