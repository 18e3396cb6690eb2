"""The Open Inference Protocol's handlers, shared by HTTP (service/http/routers/oip.py) and gRPC
(service/oip/grpc_server.py): health, metadata, configuration and inference, over the same
registry and per-model batchers as our own API. Nothing here knows a transport.

Inference takes the model's own inputs (`z` FP32 [N, latent_dim], `label` INT64 [N]) and returns
`image` FP32 [N, C, H, W] in [0, 1]. An extension: the request parameter `seeds` (and optionally
`labels`) instead of `z`, so a client need not reimplement the sampling contract; the images are
then exactly /sample's for the same seeds and classes (the same ImageRequest path).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, TypedDict, cast

import numpy as np

from imagegen.contract.manifest import Manifest
from imagegen.contract.sampling import MAX_SEED, default_labels
from imagegen.contract.triton_config import PLATFORM, model_config
from service.dataplane.admission import Ticket
from service.engine.batching import BatcherStopped, Job, QueueFull
from service.engine.generation import ImageRequest, TensorRequest
from service.errors import ServiceError
from service.oip.errors import ProtocolError, from_service_error
from service.oip.tensors import Tensor
from service.settings import Settings
from service.store.registry import Registry, ServedModel

log = logging.getLogger("imagegen.oip")

SERVER_NAME = "imagegen"
# binary_tensor_data: HTTP tensors as raw bytes after the JSON header; model_configuration:
# GET /v2/models/<id>/config; imagegen_seeds: the `seeds` / `labels` request parameters.
EXTENSIONS = ("binary_tensor_data", "model_configuration", "imagegen_seeds")
DATATYPES = {"z": "FP32", "label": "INT64", "image": "FP32"}
OUTPUT = "image"
# Request parameters: ours, the transport's, and Triton client options that change nothing here.
PARAMETERS = frozenset(["seeds", "labels", "binary_data_output", "priority", "timeout"])
_SEPARATORS = re.compile(r"[\s,]+")
# Reserved per response beyond its values (names, shape, ids), for the response-bytes bound.
RESPONSE_OVERHEAD_BYTES = 1024
RETRY_SOON = {"Retry-After": "1"}


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None = None  # HTTP's binary_data parameter; None: the request's default


@dataclass
class InferRequest:
    model_name: str
    model_version: str = ""
    id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[RequestedOutput] | None = None  # None: every output


@dataclass
class InferResponse:
    model_name: str
    model_version: str
    id: str
    outputs: list[Tensor]


class ServerMetadata(TypedDict):
    """The protocol's server metadata (JSON body and ServerMetadataResponse fields)."""

    name: str
    version: str
    extensions: list[str]


class TensorMetadata(TypedDict):
    name: str
    datatype: str
    shape: list[int]  # -1 for a variable dim


class ModelMetadata(TypedDict):
    """The protocol's model metadata (JSON body and ModelMetadataResponse fields)."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


def server_version() -> str:
    try:
        return metadata.version("imagegen")
    except metadata.PackageNotFoundError:
        return "0"


class InferenceService:
    def __init__(self, registry: Registry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings

    # -- server -------------------------------------------------------------------------------

    def server_live(self) -> bool:
        return True

    def server_ready(self) -> bool:
        """As /readyz: every model tried, and at least one ready."""
        reg = self.registry
        return reg.loaded and any(m.state == "ready" for m in reg.models.values())

    def server_metadata(self) -> ServerMetadata:
        return {"name": SERVER_NAME, "version": server_version(), "extensions": list(EXTENSIONS)}

    # -- models -------------------------------------------------------------------------------

    def find(self, name: str, version: str = "") -> ServedModel:
        """The model of that id (whatever its state) and, when given, that version; else not_found."""
        served = self.registry.models.get(name)
        if served is None:
            raise ProtocolError("not_found", f"unknown model {name[:100]!r}; models: {self.registry.ids()}")
        if version and (served.manifest is None or version != str(served.manifest.version)):
            serving = "none" if served.manifest is None else str(served.manifest.version)
            raise ProtocolError(
                "not_found", f"model {name!r} has no version {version[:20]!r} (serving version {serving})"
            )
        return served

    def ready(self, name: str, version: str = "") -> ServedModel:
        """The model, ready to serve; not_found or unavailable (loading, failed) otherwise."""
        served = self.find(name, version)
        try:
            return self.registry.get(served.id)
        except ServiceError as exc:
            raise from_service_error(exc) from None

    def model_ready(self, name: str, version: str = "") -> bool:
        return self.find(name, version).state == "ready"

    def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        manifest = self._manifest(self.find(name, version))
        inputs: list[TensorMetadata] = [
            {"name": n, "datatype": DATATYPES[n], "shape": manifest.inputs[n]}
            for n in sorted(manifest.inputs)
        ]
        return {
            "name": manifest.id,
            "versions": [str(manifest.version)],
            "platform": PLATFORM,
            "inputs": inputs,
            "outputs": [{"name": OUTPUT, "datatype": DATATYPES[OUTPUT], "shape": manifest.outputs[OUTPUT]}],
        }

    def model_config(self, name: str, version: str = "") -> dict[str, Any]:
        """Triton's ModelConfig for the model, with this server's own batch bound and delay."""
        manifest = self._manifest(self.find(name, version))
        s = self.settings
        return model_config(manifest, s.max_batch, int(s.max_delay_ms * 1000))

    def _manifest(self, served: ServedModel) -> Manifest:
        if served.manifest is None:
            raise ProtocolError("unavailable", f"model {served.id!r} failed to load: {served.reason}")
        return served.manifest

    def max_elements(self, served: ServedModel) -> int:
        """The most elements one input tensor may have: max_items rows of the widest input."""
        manifest = self._manifest(served)
        return self.settings.max_items * max(manifest.latent_dim, 1)

    # -- inference ------------------------------------------------------------------------------

    async def check_capacity(self, client: Any = None) -> None:
        """Before a request's body is read: a connection back before the Retry-After it was given
        waits until then, and a server full as a whole refuses (unavailable, with Retry-After)."""
        admission = self.registry.admission
        await admission.hold_early_retry(client)
        try:
            admission.check_total(client)
        except ServiceError as exc:
            raise from_service_error(exc) from None

    async def infer(
        self, served: ServedModel, request: InferRequest, *, client: Any = None, bytes_per_value: int = 4
    ) -> tuple[InferResponse, Ticket]:
        """Validate the request against the model, admit it (service/dataplane/admission.py, as our own image
        routes: unavailable with Retry-After when the model, the server or the response bytes in
        flight are at their bounds), run it through the model's batcher, answer.

        `client` identifies the connection (held when it retries early); `bytes_per_value` is what
        one output value costs in the transport's encoding, for the response-bytes bound. The
        ticket still holds the response's bytes: the transport calls `ticket.response_sent()` once
        the response is out (or on any failure after this returns)."""
        manifest = self._manifest(served)
        payload, n = self._payload(served, request)
        for output in request.outputs or ():
            if output.name != OUTPUT:
                raise ProtocolError("invalid", f"model {served.id!r} has no output {output.name[:60]!r}")
        ticket = self._admit(served, n, bytes_per_value, client)
        try:
            images = await self._run(served, payload, n)
        except BaseException:
            ticket.release()
            raise
        finally:
            ticket.images_done()
        tensor = Tensor(OUTPUT, DATATYPES[OUTPUT], tuple(images.shape), images)
        return InferResponse(served.id, str(manifest.version), request.id, [tensor]), ticket

    def _admit(self, served: ServedModel, n: int, bytes_per_value: int, client: Any) -> Ticket:
        image = self._manifest(served).image
        size = n * image.channels * image.height * image.width * bytes_per_value + RESPONSE_OVERHEAD_BYTES
        try:
            return self.registry.admission.admit(served.id, n, size, client)
        except ServiceError as exc:
            raise from_service_error(exc) from None

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
        manifest = self._manifest(served)
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
        manifest = self._manifest(served)
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
        top = self._manifest(served).num_classes - 1
        if label.size and (label.min() < 0 or label.max() > top):
            raise ProtocolError("invalid", f"input 'label' values must be classes in [0, {top}]")
        return np.ascontiguousarray(label, dtype=np.int64)

    def _batch_size(self, feeds: dict[str, np.ndarray]) -> int:
        sizes = {name: len(value) for name, value in feeds.items()}
        if len(set(sizes.values())) > 1:
            raise ProtocolError("invalid", f"inputs differ in batch size: {sizes}")
        return self._check_n(next(iter(sizes.values())))

    def _check_n(self, n: int) -> int:
        if not 1 <= n <= self.settings.max_items:
            raise ProtocolError(
                "invalid", f"a request holds 1 to {self.settings.max_items} items (batch size), got {n}"
            )
        return n

    def _seed_request(
        self, served: ServedModel, inputs: dict[str, np.ndarray], seeds: list[int], labels_param: Any
    ) -> tuple[ImageRequest, int]:
        manifest = self._manifest(served)
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
            if len(value) > self.settings.max_items * 22:
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
        if len(value) > self.settings.max_items:
            raise ProtocolError("invalid", f"parameter {name!r}: at most {self.settings.max_items} values")
        if not value:
            raise ProtocolError("invalid", f"parameter {name!r} is empty")
        if any(not low <= v <= high for v in value):
            raise ProtocolError("invalid", f"parameter {name!r}: values must be in [{low}, {high}]")
        return value

    async def _run(self, served: ServedModel, payload: ImageRequest | TensorRequest, n: int) -> np.ndarray:
        """Through the model's batcher, merged with our own API's requests into the same runs."""
        assert served.batcher is not None
        try:
            future = served.batcher.submit(Job(size=n, payload=payload))
        except QueueFull:
            raise ProtocolError(
                "unavailable", f"model {served.id!r} is at its queue limit; retry shortly", RETRY_SOON
            ) from None
        except BatcherStopped:
            raise ProtocolError("unavailable", "the server is shutting down", RETRY_SOON) from None
        try:
            # the batcher carries any result; both payloads here finish as the float32 array
            return cast(np.ndarray, await future)
        except Exception as exc:
            log.error("inference failed for %s: %s", served.id, exc, exc_info=exc)
            raise ProtocolError("internal", f"inference failed for model {served.id!r}") from None
