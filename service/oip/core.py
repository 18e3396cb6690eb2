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
from importlib import metadata
from typing import Any

from imagegen.contract.manifest import Manifest
from imagegen.contract.triton_config import PLATFORM, model_config
from service.dataplane.admission import Ticket
from service.dataplane.plane import Call, DataPlane
from service.oip.errors import ProtocolError
from service.oip.payload import read_payload
from service.oip.tensors import Tensor
from service.oip.types import (
    DATATYPES,
    OUTPUT,
    InferRequest,
    InferResponse,
    ModelMetadata,
    ServerMetadata,
    TensorMetadata,
)
from service.settings import Settings
from service.store.registry import Registry
from service.store.served import ServedModel

log = logging.getLogger("imagegen.oip")

SERVER_NAME = "imagegen"
# binary_tensor_data: HTTP tensors as raw bytes after the JSON header; model_configuration:
# GET /v2/models/<id>/config; imagegen_seeds: the `seeds` / `labels` request parameters.
EXTENSIONS = ("binary_tensor_data", "model_configuration", "imagegen_seeds")
# Reserved per response beyond its values (names, shape, ids), for the response-bytes bound.
RESPONSE_OVERHEAD_BYTES = 1024


def server_version() -> str:
    try:
        return metadata.version("imagegen")
    except metadata.PackageNotFoundError:
        return "0"


class InferenceService:
    def __init__(self, registry: Registry, settings: Settings, plane: DataPlane) -> None:
        self.registry = registry
        self.settings = settings
        self.plane = plane

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
            self.registry.refuse_while_reading()  # a ServiceError: the adapters map it (503 / UNAVAILABLE)
            raise ProtocolError("not_found", f"unknown model {name[:100]!r}; models: {self.registry.ids()}")
        if version and (served.manifest is None or version != str(served.manifest.version)):
            serving = "none" if served.manifest is None else str(served.manifest.version)
            raise ProtocolError(
                "not_found", f"model {name!r} has no version {version[:20]!r} (serving version {serving})"
            )
        return served

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

    def ready(self, call: Call, name: str, version: str = "") -> ServedModel:
        """The model, ready to serve (the call's model label); not_found or unavailable (loading,
        failed: service.errors' ModelUnavailable, which the adapters map) otherwise."""
        return self.plane.ready(call, self.find(name, version).id)

    async def infer(
        self, call: Call, served: ServedModel, request: InferRequest, *, bytes_per_value: int = 4
    ) -> tuple[InferResponse, Ticket]:
        """Validate the request against the model, then the data plane's path (admitted as our own
        image routes, run through the model's batcher, awaited with the client-gone probe).

        `bytes_per_value` is what one output value costs in the transport's encoding, for the
        response-bytes bound. The ticket still holds the response's bytes: the transport calls
        `ticket.response_sent()` once the response is out (or `release()` on any failure)."""
        manifest = self._manifest(served)
        payload = read_payload(served, request, self.settings.max_items)
        for output in request.outputs or ():
            if output.name != OUTPUT:
                raise ProtocolError("invalid", f"model {served.id!r} has no output {output.name[:60]!r}")
        image = manifest.image
        size = payload.n * image.channels * image.height * image.width * bytes_per_value
        images, ticket = await self.plane.execute(call, served, payload, size + RESPONSE_OVERHEAD_BYTES)
        tensor = Tensor(OUTPUT, DATATYPES[OUTPUT], tuple(images.shape), images)
        return InferResponse(served.id, str(manifest.version), request.id, [tensor]), ticket
